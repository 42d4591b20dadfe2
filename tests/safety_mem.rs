//! Data safety, issue 12: memory bounds (items 8 and 9) and three messages
//! of item 19 (`diff --ignore ''`, `diff --platform` on single-platform
//! images, `flatten --tar /`).
//!
//! Peak RSS is measured per command with `/usr/bin/time -f %M` (KiB). The
//! heavy cases (1,000 layers, 10^6 entries) run only with
//! `OCIKIT_MEMORY_TESTS=1`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

const TIME: &str = "/usr/bin/time";

fn heavy() -> bool {
    if std::env::var("OCIKIT_MEMORY_TESTS").as_deref() == Ok("1") {
        true
    } else {
        eprintln!("skipping: set OCIKIT_MEMORY_TESTS=1");
        false
    }
}

/// Runs `ocikit ARGS` under `/usr/bin/time`; returns (exit code, stderr,
/// peak RSS in MiB), or None when /usr/bin/time is missing.
fn peak_rss(args: &[&str]) -> Option<(i32, String, u64)> {
    if !Path::new(TIME).exists() {
        eprintln!("skipping: {TIME} is not installed");
        return None;
    }
    let t = tempfile::tempdir().unwrap();
    let rss = t.path().join("rss");
    let o = Command::new(TIME)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    let kib: u64 = fs::read_to_string(&rss)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap();
    Some((code(&o), stderr(&o), kib / 1024))
}

/// A tar of regular files named by `names`, each holding `data`.
fn tar_of(names: impl IntoIterator<Item = String>, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for n in names {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, n, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Tags `desc` as `tag` in a fresh layout at `root`.
fn tag_one(root: &Path, tag: &str, desc: &Value) {
    let mut e = desc.clone();
    e["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    write_layout_files(
        root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e]}),
    );
}

/// A layout with one image of `n` tiny layers (one small file each).
fn many_layers(t: &tempfile::TempDir, n: usize) -> PathBuf {
    let root = t.path().join("many");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let layers: Vec<_> = (0..n)
        .map(|i| put_layer(&root, OCI_TAR, &tar_of([format!("f{i}")], b"x")))
        .collect();
    let m = put_image(&root, "amd64", None, &layers, false);
    tag_one(&root, "t", &m);
    root
}

/// flatten --output, flatten --tar - and squash of `n` tiny layers each
/// stay under `limit` MiB.
fn layers_bounded(n: usize, limit: u64) {
    let t = tempfile::tempdir().unwrap();
    let root = many_layers(&t, n);
    let src = format!("{}:t", s(&root));
    let out = t.path().join("rootfs");
    let runs: [Vec<&str>; 3] = [
        vec!["flatten", &src, "--output", out.to_str().unwrap()],
        vec!["flatten", &src, "--tar", "-"],
        vec!["squash", &src, "--tag", "sq"],
    ];
    for args in runs {
        let Some((c, err, mib)) = peak_rss(&args) else {
            return;
        };
        assert_eq!(c, 0, "{args:?}: {err}");
        eprintln!("{args:?}: {n} layers, peak RSS {mib} MiB");
        assert!(mib < limit, "{args:?}: {n} layers took {mib} MiB");
    }
    assert_eq!(fs::read_dir(&out).unwrap().count(), n);
}

/// Item 8: the old pipeline set up a ~2.2 MiB channel for every layer at
/// once (200 layers: ~450 MiB).
#[test]
fn flatten_and_squash_memory_does_not_grow_with_layers() {
    layers_bounded(200, 100);
}

#[test]
fn flatten_and_squash_1000_layers_under_100_mib() {
    if heavy() {
        layers_bounded(1000, 100);
    }
}

// ---------------------------------------------------------------- item 19

/// Two single-manifest amd64 layouts that differ in one file.
fn two_amd64(t: &tempfile::TempDir) -> (String, String) {
    let mut refs = Vec::new();
    for (name, data) in [("a", b"1"), ("b", b"2")] {
        let root = t.path().join(name);
        fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        let l = put_layer(&root, OCI_TAR, &tar_of(["f".to_string()], data));
        let m = put_image(&root, "amd64", None, &[l], false);
        tag_one(&root, "t", &m);
        refs.push(format!("{}:t", s(&root)));
    }
    (refs.remove(0), refs.remove(0))
}

#[test]
fn diff_refuses_an_empty_ignore_list() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = two_amd64(&t);
    for bad in ["", ",", "timestamps,", " , history"] {
        let o = ocikit(["diff", "--ignore", bad, &a, &b]);
        assert_eq!(code(&o), 2, "--ignore {bad:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("--ignore"), "{e}");
        assert!(e.contains("layer-boundaries"), "lists the values: {e}");
    }
    let o = ocikit(["diff", "--ignore", "timestamps,history", &a, &b]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

#[test]
fn diff_platform_absent_on_single_platform_images_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = two_amd64(&t);
    let o = ocikit(["diff", "--platform", "linux/arm64", &a, &b]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    let e = stderr(&o);
    assert!(!stdout(&o).contains("identical"), "{}", stdout(&o));
    assert!(e.contains("linux/arm64"), "{e}");
    assert!(e.contains("A"), "names the side: {e}");
    assert!(e.contains("linux/amd64"), "says what there is: {e}");
    // Only B lacks it: B is named.
    let root = t.path().join("c");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let l = put_layer(&root, OCI_TAR, &tar_of(["f".to_string()], b"1"));
    let m = put_image(&root, "arm64", None, &[l], false);
    tag_one(&root, "t", &m);
    let c = format!("{}:t", s(&root));
    let o = ocikit(["diff", "--platform", "linux/arm64", &c, &b]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("B"), "{}", stderr(&o));
    // The platform they have still compares.
    let o = ocikit(["diff", "--platform", "linux/amd64", &a, &b]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    // Every command that takes one image holds --platform to the same rule.
    let t2 = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "flatten".to_string(),
            a.clone(),
            "--platform".into(),
            "linux/arm64".into(),
            "--tar".into(),
            s(&t2.path().join("x.tar")),
        ],
        vec![
            "inspect".to_string(),
            a.clone(),
            "--platform".into(),
            "linux/arm64".into(),
        ],
        vec![
            "cat".to_string(),
            a.clone(),
            "config".into(),
            "--platform".into(),
            "linux/arm64".into(),
        ],
        vec![
            "export".to_string(),
            "--format".into(),
            "docker-archive".into(),
            a.clone(),
            s(&t2.path().join("y.tar")),
            "--platform".into(),
            "linux/arm64".into(),
        ],
    ] {
        let o = ocikit(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("linux/arm64"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert!(!t2.path().join("x.tar").exists() && !t2.path().join("y.tar").exists());
}

#[test]
fn flatten_tar_to_a_directory_says_so() {
    let t = tempfile::tempdir().unwrap();
    let (a, _) = two_amd64(&t);
    let dir = t.path().join("d");
    fs::create_dir(&dir).unwrap();
    for target in ["/", dir.to_str().unwrap()] {
        let o = ocikit(["flatten", &a, "--tar", target]);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("is a directory"), "{e}");
        assert!(e.contains("file") && e.contains('-'), "{e}");
        assert!(!e.contains("busy"), "{e}");
    }
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

// ---------------------------------------------------------------- item 9

/// A layout with one image of one layer: `n` empty files, in `order`.
fn entries_image(root: &Path, n: usize, reversed: bool) -> String {
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let names = (0..n).map(|i| format!("d{:04}/file-{i:07}", i / 1000));
    let tar = if reversed {
        tar_of(names.rev(), b"")
    } else {
        tar_of(names, b"")
    };
    let l = put_layer(root, OCI_TAR, &tar);
    let m = put_image(root, "amd64", None, &[l], false);
    tag_one(root, "t", &m);
    format!("{}:t", s(root))
}

/// `diff --ignore layer-boundaries` of two one-layer images of `n` empty
/// files each (the same files in another order) stays under `limit` MiB.
/// With `per_layer`, also without the flag (layer by layer).
fn diff_bounded(n: usize, limit: u64, per_layer: bool) {
    let t = tempfile::tempdir().unwrap();
    let a = entries_image(&t.path().join("a"), n, false);
    let b = entries_image(&t.path().join("b"), n, true);
    let runs: &[&[&str]] = if per_layer {
        &[&["--ignore", "layer-boundaries"], &[]]
    } else {
        &[&["--ignore", "layer-boundaries"]]
    };
    for extra in runs {
        let mut args = vec!["diff", &a, &b, "-q"];
        args.extend_from_slice(extra);
        let Some((c, err, mib)) = peak_rss(&args) else {
            return;
        };
        // Same entries, other tar bytes: identical as a rootfs, one
        // "(tar stream)" difference layer by layer.
        assert_eq!(c, if extra.is_empty() { 1 } else { 0 }, "{args:?}: {err}");
        eprintln!("{args:?}: 2 x {n} entries, peak RSS {mib} MiB");
        assert!(mib < limit, "{args:?}: 2 x {n} entries took {mib} MiB");
    }
}

/// Item 9: about 600 bytes per entry before (2 x 3 x 10^4 entries: about
/// 45 MiB); now about 140.
#[test]
fn diff_memory_per_entry_is_small() {
    diff_bounded(30_000, 30, false);
}

#[test]
fn diff_two_million_entries_under_400_mib() {
    if heavy() {
        diff_bounded(1_000_000, 400, true);
    }
}
