//! Layer rules of `flatten` and `squash` on crafted layers: same-layer
//! whiteouts, opaque whiteouts in either order, cross-layer hardlinks whose
//! target is replaced, times outside 1970–2038, sparse files, `--tar` equal to
//! `--output`, reproducible squash.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// A layout at `root` whose image `t` has the given uncompressed layers.
fn image(root: &Path, layers: &[Vec<u8>]) {
    let ls: Vec<(Value, String)> = layers
        .iter()
        .map(|l| put_layer(root, OCI_GZIP, l))
        .collect();
    let mut m = put_image(root, "amd64", None, &ls, false);
    m["annotations"] = json!({"org.opencontainers.image.ref.name": "t"});
    write_layout_files(root, &json!({"schemaVersion": 2, "manifests": [m]}));
}

fn flatten(root: &Path, out: &Path) {
    let loc = format!("{}:t", root.display());
    ocikit_ok(["flatten", &loc, "--output", out.to_str().unwrap()]);
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

#[test]
fn same_layer_whiteout_keeps_the_new_path_and_lower_ones_go() {
    let d = tempfile::tempdir().unwrap();
    let l1 = tar(&[
        Entry::Dir("a/", 0o755),
        file("a/lower", "1"),
        file("a/gone", "1"),
    ]);
    // In one layer: `a/new` then its whiteout (kept); a whiteout then a
    // re-creation (kept); a whiteout of a lower file (removed).
    let l2 = tar(&[
        file("a/new", "2"),
        file("a/.wh.new", ""),
        file("a/.wh.lower", ""),
        file("a/lower", "again"),
        file("a/.wh.gone", ""),
    ]);
    let root = d.path().join("l");
    image(&root, &[l1, l2]);
    let out = d.path().join("out");
    flatten(&root, &out);
    assert_eq!(fs::read_to_string(out.join("a/new")).unwrap(), "2");
    assert_eq!(fs::read_to_string(out.join("a/lower")).unwrap(), "again");
    assert!(!exists(&out.join("a/gone")));
    assert!(!exists(&out.join("a/.wh.new")), "whiteouts never appear");
}

#[test]
fn opaque_whiteout_is_order_independent_and_keeps_same_layer_children() {
    for opaque_first in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let l1 = tar(&[
            Entry::Dir("d/", 0o755),
            file("d/old", "1"),
            Entry::Dir("d/sub/", 0o755),
            file("d/sub/old2", "1"),
            file("keep", "1"),
        ]);
        let mut e2 = vec![Entry::Dir("d/", 0o750), file("d/new", "2")];
        let opq = file("d/.wh..wh..opq", "");
        if opaque_first {
            e2.insert(0, opq);
        } else {
            e2.push(opq);
        }
        let root = d.path().join("l");
        image(&root, &[l1, tar(&e2)]);
        let out = d.path().join("out");
        flatten(&root, &out);
        let mut names: Vec<String> = fs::read_dir(out.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["new"], "opaque first: {opaque_first}");
        assert_eq!(
            fs::metadata(out.join("d")).unwrap().permissions().mode() & 0o7777,
            0o750
        );
        assert!(exists(&out.join("keep")));
    }
}

#[test]
fn hardlink_to_a_lower_file_keeps_the_old_content_when_the_target_is_replaced() {
    // R-L-14: L1 a=X, L2 b => a, L3 a=Y gives a=Y, b=X (two inodes).
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("l");
    image(
        &root,
        &[
            tar(&[file("a", "X")]),
            tar(&[Entry::Hardlink("b", "a")]),
            tar(&[file("a", "Y")]),
        ],
    );
    let out = d.path().join("out");
    flatten(&root, &out);
    assert_eq!(fs::read_to_string(out.join("a")).unwrap(), "Y");
    assert_eq!(fs::read_to_string(out.join("b")).unwrap(), "X");
    let (a, b) = (
        fs::metadata(out.join("a")).unwrap(),
        fs::metadata(out.join("b")).unwrap(),
    );
    assert_ne!(a.ino(), b.ino());
    assert_eq!(b.nlink(), 1);

    // Squash keeps the same meaning.
    ocikit_ok(["squash", &format!("{}:t", root.display()), "--tag", "sq"]);
    let out2 = d.path().join("out2");
    ocikit_ok([
        "flatten",
        &format!("{}:sq", root.display()),
        "--output",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(fs::read_to_string(out2.join("a")).unwrap(), "Y");
    assert_eq!(fs::read_to_string(out2.join("b")).unwrap(), "X");
}

#[test]
fn hardlinks_within_a_layer_share_an_inode_and_a_link_before_its_target_fails() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("l");
    image(
        &root,
        &[tar(&[file("f", "data"), Entry::Hardlink("g", "f")])],
    );
    let out = d.path().join("out");
    flatten(&root, &out);
    assert_eq!(
        fs::metadata(out.join("f")).unwrap().ino(),
        fs::metadata(out.join("g")).unwrap().ino()
    );

    let root2 = d.path().join("l2");
    image(
        &root2,
        &[tar(&[Entry::Hardlink("g", "f"), file("f", "data")])],
    );
    let err = fails(
        &[
            "flatten",
            &format!("{}:t", root2.display()),
            "--output",
            d.path().join("o2").to_str().unwrap(),
        ],
        &["\"g\"", "does not exist"],
    );
    assert!(err.contains("layer 1 of 1"), "{err}");
    assert!(!exists(&d.path().join("o2")));
}

/// A one-entry tar whose file has a PAX mtime (and a GNU header).
fn timed_file(name: &str, mtime: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("mtime", mtime.as_bytes())])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(1);
    h.set_mtime(0);
    b.append_data(&mut h, name, &b"x"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn times_before_1970_and_after_2038_with_nanoseconds_survive_flatten_and_tar() {
    let d = tempfile::tempdir().unwrap();
    let mut layer = timed_file("old", "-31536000.25");
    layer.truncate(layer.len() - 1024); // no end blocks: umoci writes layers like this
    let mut rest = timed_file("new", "4102444800.123456789");
    layer.append(&mut rest);
    let root = d.path().join("l");
    image(&root, &[layer]);
    let out = d.path().join("out");
    flatten(&root, &out);
    let old = fs::metadata(out.join("old")).unwrap();
    assert_eq!((old.mtime(), old.mtime_nsec()), (-31536001, 750_000_000));
    let new = fs::metadata(out.join("new")).unwrap();
    assert_eq!((new.mtime(), new.mtime_nsec()), (4102444800, 123_456_789));

    // The tar carries the same times (PAX), and is the same bytes every run.
    let t1 = d.path().join("t1.tar");
    let t2 = d.path().join("t2.tar");
    let loc = format!("{}:t", root.display());
    ocikit_ok(["flatten", &loc, "--tar", t1.to_str().unwrap()]);
    ocikit_ok(["flatten", &loc, "--tar", t2.to_str().unwrap()]);
    assert_eq!(fs::read(&t1).unwrap(), fs::read(&t2).unwrap());
    let mut a = tar::Archive::new(fs::File::open(&t1).unwrap());
    let mut seen = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mtime = e
            .pax_extensions()
            .unwrap()
            .and_then(|mut p| p.find(|r| r.as_ref().unwrap().key().unwrap() == "mtime"))
            .map(|r| r.unwrap().value().unwrap().to_string());
        seen.push((name, mtime));
    }
    assert_eq!(
        seen,
        vec![
            ("./".to_string(), None),
            ("new".to_string(), Some("4102444800.123456789".to_string())),
            ("old".to_string(), Some("-31536000.250000000".to_string())),
        ]
    );
}

#[test]
fn tar_output_extracted_equals_the_directory_output() {
    if !have("tar") {
        eprintln!("SKIPPING tar_output_extracted_equals_the_directory_output: no GNU tar");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("l");
    image(
        &root,
        &[
            tar(&[
                Entry::Dir("etc/", 0o755),
                file("etc/passwd", "root:x:0:0"),
                Entry::Symlink("etc/link", "/etc/passwd"),
                Entry::Dir("tmp/", 0o1777),
                Entry::File("bin/su", 0o4755, b"su".to_vec()),
                Entry::Hardlink("bin/su2", "bin/su"),
            ]),
            tar(&[file("etc/.wh.passwd", ""), file("etc/shadow", "s")]),
        ],
    );
    let out = d.path().join("out");
    flatten(&root, &out);
    let t = d.path().join("t.tar");
    ocikit_ok([
        "flatten",
        &format!("{}:t", root.display()),
        "--tar",
        t.to_str().unwrap(),
    ]);
    let x = d.path().join("x");
    fs::create_dir(&x).unwrap();
    run_ok(
        "tar",
        &[
            "--xattrs",
            "--same-owner",
            "-xpf",
            t.to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
        ],
    );
    let tree = |p: &Path| -> Vec<String> {
        let mut v = Vec::new();
        for e in walkdir::WalkDir::new(p).sort_by_file_name() {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            let rel = e.path().strip_prefix(p).unwrap().display().to_string();
            let content = if m.is_file() {
                sha256_hex(&fs::read(e.path()).unwrap())
            } else if m.file_type().is_symlink() {
                fs::read_link(e.path()).unwrap().display().to_string()
            } else {
                String::new()
            };
            v.push(format!(
                "{rel} {:o} {}:{} {} {} {content}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                if m.is_dir() { 0 } else { m.mtime() }
            ));
        }
        v
    };
    assert_eq!(tree(&out), tree(&x));
    assert!(!exists(&out.join("etc/passwd")));
    assert_eq!(
        fs::metadata(out.join("bin/su"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
}

#[test]
fn squash_is_reproducible_and_summarises_history() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("l");
    image(
        &root,
        &[
            tar(&[file("a", "1")]),
            tar(&[file("b", "2"), file(".wh.a", "")]),
        ],
    );
    let loc = format!("{}:t", root.display());
    ocikit_ok(["squash", &loc, "--tag", "s1"]);
    ocikit_ok(["squash", &loc, "--tag", "s2"]);
    let (e1, e2) = (index_entry(&root, "s1"), index_entry(&root, "s2"));
    assert_eq!(e1["digest"], e2["digest"]);
    let manifest: Value =
        serde_json::from_slice(&blob_bytes(&root, e1["digest"].as_str().unwrap())).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["layers"][0]["mediaType"], OCI_GZIP);
    let config: Value = serde_json::from_slice(&blob_bytes(
        &root,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(config["history"].as_array().unwrap().len(), 1);
    assert_eq!(
        config["config"]["Cmd"],
        json!(["/bin/hello"]),
        "other fields kept"
    );
    assert_eq!(config["history"][0]["created_by"], "ocikit squash");
    ocikit_ok(["verify", "--deep", root.to_str().unwrap()]);
    let out = d.path().join("out");
    ocikit_ok([
        "flatten",
        &format!("{}:s1", root.display()),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!exists(&out.join("a")));
    assert_eq!(fs::read_to_string(out.join("b")).unwrap(), "2");
}
