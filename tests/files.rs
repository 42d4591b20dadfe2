//! `ocikit get-file` and `ocikit files` on small crafted layouts: early
//! stops (and what is then not read), symlinks clamped at the image root,
//! loops, hardlinks, whiteouts, and the listing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// A layout at `dir` with one image tagged `t` of `layers` (gzip, base
/// first); returns `DIR:t`.
fn layout(dir: &Path, layers: &[Vec<u8>]) -> String {
    let dir = &dir.join("layout");
    write_layout_files(dir, &json!({"schemaVersion": 2, "manifests": []}));
    let ls: Vec<(Value, String)> = layers.iter().map(|t| put_layer(dir, OCI_GZIP, t)).collect();
    let mut m = put_image(dir, "amd64", None, &ls, false);
    m["annotations"] = json!({"org.opencontainers.image.ref.name": "t"});
    write_layout_files(dir, &json!({"schemaVersion": 2, "manifests": [m]}));
    format!("{}:t", s(dir))
}

/// The blob file of layer `i` (base first) of the layout's only image.
fn layer_blob(dir: &Path, i: usize) -> PathBuf {
    let dir = &dir.join("layout");
    let index = index_json(dir);
    let m: Value = serde_json::from_slice(&blob_bytes(
        dir,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    blob_path(dir, &m["layers"][i])
}

fn get_json(args: &[&str]) -> Value {
    let mut a = vec!["get-file"];
    a.extend_from_slice(args);
    a.push("--json");
    let o = ocikit_ok(&a);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn get(args: &[&str]) -> Vec<u8> {
    let mut a = vec!["get-file"];
    a.extend_from_slice(args);
    ocikit_ok(&a).stdout
}

fn three_layers(dir: &Path) -> String {
    let l0 = tar(&[
        Entry::Dir("etc/", 0o755),
        file("etc/base", "in the base\n"),
        file("etc/every", "base version\n"),
        file("etc/passwd", "root:x:0:0:image passwd:/root:/bin/sh\n"),
    ]);
    let l1 = tar(&[
        file("etc/middle", "in the middle\n"),
        file("etc/every", "middle version\n"),
    ]);
    let l2 = tar(&[
        file("top", "in the top layer\n"),
        file("etc/every", "top version\n"),
    ]);
    layout(dir, &[l0, l1, l2])
}

#[test]
fn get_file_stops_at_the_layer_that_decides() {
    let t = tempfile::tempdir().unwrap();
    let img = three_layers(t.path());
    let j = get_json(&[&img, "/top"]);
    assert_eq!(j["layers_read"], 1, "{j}");
    assert_eq!(j["layers"], 3);
    assert_eq!(j["layer"], 2);
    assert_eq!(j["type"], "file");
    assert_eq!(j["size"], 17);
    assert_eq!(j["mode"], "0644");
    assert_eq!(get(&[&img, "top"]), b"in the top layer\n");
    // Present in every layer: the newest wins, one layer read.
    assert_eq!(get(&[&img, "/etc/every"]), b"top version\n");
    assert_eq!(get_json(&[&img, "/etc/every"])["layers_read"], 1);
    assert_eq!(get_json(&[&img, "/etc/middle"])["layers_read"], 2);
    let j = get_json(&[&img, "/etc/base"]);
    assert_eq!(
        (j["layers_read"].clone(), j["layer"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(get(&[&img, "etc/base"]), b"in the base\n");
    // --output writes the bytes, atomically, with --json alongside.
    let out = t.path().join("out.txt");
    let o = ocikit_ok([
        "get-file",
        &img,
        "/etc/middle",
        "--output",
        &s(&out),
        "--json",
    ]);
    assert_eq!(fs::read(&out).unwrap(), b"in the middle\n");
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["path"], "/etc/middle");
    // --json alone prints no content.
    assert!(
        !String::from_utf8_lossy(&ocikit_ok(["get-file", &img, "/top", "--json"]).stdout)
            .contains("in the top layer")
    );
}

#[test]
fn a_corrupted_lower_layer_is_not_read_for_a_file_above_it() {
    let t = tempfile::tempdir().unwrap();
    let img = three_layers(t.path());
    let base = layer_blob(t.path(), 0);
    let mut bytes = fs::read(&base).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(&base, &bytes).unwrap();
    assert_eq!(get(&[&img, "/top"]), b"in the top layer\n");
    assert_eq!(get_json(&[&img, "/etc/middle"])["layers_read"], 2);
    // Reaching it reports it; so does the listing, which reads every layer.
    let r = run_checked(&["get-file", &img, "/etc/base"]);
    let line = assert_error(&["get-file"], &r, &["layer 1"]);
    assert!(r.out.is_empty(), "nothing printed: {}", r.out);
    assert!(
        line.contains("sha256") || line.contains("decompress") || line.contains("gzip"),
        "{line}"
    );
    fails(&["files", &img], &["layer 1"]);
}

#[test]
fn symlinks_resolve_inside_the_image_root() {
    let t = tempfile::tempdir().unwrap();
    let host_passwd = fs::read("/etc/passwd").unwrap_or_default();
    let img = layout(
        t.path(),
        &[
            tar(&[
                file("etc/passwd", "image passwd\n"),
                Entry::Symlink("abs-escape", "/../../etc/passwd"),
                Entry::Dir("a/", 0o755),
                Entry::Dir("a/b/", 0o755),
                Entry::Symlink("a/b/rel-escape", "../../../../../../etc/passwd"),
                Entry::Symlink("up", "/../.."),
                Entry::Symlink("etclink", "../../etc"),
            ]),
            tar(&[Entry::Symlink("chain", "a/b/rel-escape")]),
        ],
    );
    for p in [
        "/abs-escape",
        "/a/b/rel-escape",
        "/up/etc/passwd",
        "/up/up/up/etc/passwd",
        "/etclink/passwd",
        "/chain",
        "/../../../etc/passwd",
    ] {
        let got = get(&[&img, p]);
        assert_eq!(got, b"image passwd\n", "{p}");
        assert_ne!(got, host_passwd, "{p}");
    }
    let j = get_json(&[&img, "/chain"]);
    assert_eq!(j["path"], "/etc/passwd");
    assert_eq!(j["symlinks_followed"], 2);
    // --no-follow: the link itself (its target printed).
    assert_eq!(get(&[&img, "/chain", "--no-follow"]), b"a/b/rel-escape\n");
    let j = get_json(&[&img, "/chain", "--no-follow"]);
    assert_eq!(
        (j["type"].clone(), j["link"].clone()),
        (json!("symlink"), json!("a/b/rel-escape"))
    );
    // A symlink in a parent is followed even with --no-follow.
    assert_eq!(
        get(&[&img, "/etclink/passwd", "--no-follow"]),
        b"image passwd\n"
    );
    // A symlink to a directory is a directory.
    fails(
        &["get-file", &img, "/etclink"],
        &["/etclink", "is a directory"],
    );
}

#[test]
fn symlink_loops_are_an_error() {
    let t = tempfile::tempdir().unwrap();
    let img = layout(
        t.path(),
        &[tar(&[
            Entry::Symlink("l1", "l2"),
            Entry::Symlink("l2", "/l1"),
            Entry::Symlink("self", "self"),
            Entry::Symlink("dir", "dir/x"),
        ])],
    );
    for p in ["/l1", "/self", "/dir/f", "/l2/x"] {
        fails(
            &["get-file", &img, p],
            &[p, "too many levels of symbolic links"],
        );
    }
    // Without following, the link itself is fine.
    assert_eq!(get(&[&img, "/self", "--no-follow"]), b"self\n");
}

#[test]
fn hardlinks_return_their_targets_bytes() {
    let t = tempfile::tempdir().unwrap();
    let img = layout(
        t.path(),
        &[
            tar(&[
                file("data/orig", "original bytes\n"),
                file("data/later", "v1\n"),
            ]),
            tar(&[
                Entry::Hardlink("links/to-lower", "data/orig"),
                file("same/f", "same layer\n"),
                Entry::Hardlink("same/h", "same/f"),
                // Linked before the target changes: keeps the old content.
                Entry::Hardlink("links/old-later", "data/later"),
                file("data/later", "v2\n"),
            ]),
        ],
    );
    assert_eq!(get(&[&img, "/links/to-lower"]), b"original bytes\n");
    assert_eq!(get(&[&img, "/same/h"]), b"same layer\n");
    assert_eq!(get(&[&img, "/links/old-later"]), b"v1\n");
    assert_eq!(get(&[&img, "/data/later"]), b"v2\n");
    let j = get_json(&[&img, "/links/to-lower"]);
    assert_eq!(j["hardlink"], "/data/orig");
    assert_eq!(
        (j["layer"].clone(), j["content_layer"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(j["size"], 15);
    // The listing agrees.
    let o = ocikit_ok(["files", &img, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/links/old-later")
        .unwrap()
        .clone();
    assert_eq!(
        (e["type"].clone(), e["size"].clone(), e["hardlink"].clone()),
        (json!("file"), json!(3), json!("/data/later"))
    );
}

fn whiteout_image(dir: &Path) -> String {
    layout(
        dir,
        &[
            tar(&[
                file("gone", "deleted\n"),
                file("dir/a", "a\n"),
                file("dir/sub/b", "b\n"),
                file("opq/old", "old\n"),
                file("opq/sub/old", "old\n"),
                file("todir/x", "x\n"),
                file("parent/child", "child\n"),
                file("keep", "kept\n"),
            ]),
            tar(&[
                file(".wh.gone", ""),
                file("dir/.wh.sub", ""),
                Entry::Dir("opq/", 0o755),
                file("opq/.wh..wh..opq", ""),
                file("opq/new", "new\n"),
                file("parent", "now a file\n"),
                file(".wh.todir", ""),
                file("todir", "a file now\n"),
            ]),
        ],
    )
}

#[test]
fn whiteouts_and_opaque_directories_hide_lower_paths() {
    let t = tempfile::tempdir().unwrap();
    let img = whiteout_image(t.path());
    for p in [
        "/gone",
        "/dir/sub/b",
        "/dir/sub",
        "/opq/old",
        "/opq/sub/old",
        "/parent/child",
        "/todir/x",
        "/nothing/here",
    ] {
        let r = run_checked(&["get-file", &img, p]);
        assert_error(&["get-file", p], &r, &[p, "no such file"]);
        assert!(r.out.is_empty());
    }
    assert_eq!(get(&[&img, "/opq/new"]), b"new\n");
    assert_eq!(get(&[&img, "/parent"]), b"now a file\n");
    assert_eq!(get(&[&img, "/dir/a"]), b"a\n");
    assert_eq!(get(&[&img, "/keep"]), b"kept\n");
    // Deleted in the top layer: decided there, the base is not read.
    let r = run_checked(&["get-file", &img, "/gone"]);
    assert!(r.err.contains("whiteout"), "{}", r.err);
    fails(&["get-file", &img, "/dir"], &["/dir", "is a directory"]);
    fails(&["get-file", &img, "/"], &["is a directory"]);
}

#[test]
fn files_lists_the_flattened_tree() {
    let t = tempfile::tempdir().unwrap();
    let img = whiteout_image(t.path());
    let o = ocikit_ok(["files", &img]);
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "/dir\n/dir/a\n/keep\n/opq\n/opq/new\n/parent\n/todir\n"
    );
    let o = ocikit_ok(["files", &img, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["layers"], 2);
    let by: std::collections::BTreeMap<String, Value> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    assert_eq!(by["/dir"]["type"], "dir");
    // An implied directory: 0755, root, mtime 0, from the layer that implied it.
    assert_eq!(
        (
            by["/dir"]["mode"].clone(),
            by["/dir"]["mtime"].clone(),
            by["/dir"]["layer"].clone()
        ),
        (json!("0755"), json!(0), json!(0))
    );
    assert_eq!(by["/parent"]["layer"], 1);
    assert_eq!(by["/parent"]["size"], 11);
    assert_eq!(by["/keep"]["mtime"], 1_700_000_000);
    assert_eq!(by["/opq"]["layer"], 1);
    let o = ocikit_ok(["files", &img, "--long"]);
    let long = String::from_utf8(o.stdout).unwrap();
    assert!(
        long.lines().any(|l| l.starts_with("-rw-r--r-- 0/0")
            && l.contains(" /keep")
            && l.ends_with("[layer 0]")),
        "{long}"
    );
    assert!(
        long.lines()
            .any(|l| l.starts_with("drwxr-xr-x") && l.contains(" /opq ")),
        "{long}"
    );
    // Symlinks in the listing; a missing path.
    let t2 = tempfile::tempdir().unwrap();
    let img2 = layout(t2.path(), &[tar(&[Entry::Symlink("l", "/x/../y")])]);
    let o = ocikit_ok(["files", &img2, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["entries"][0]["link"], "/x/../y");
    assert_eq!(v["entries"][0]["type"], "symlink");
    fails(&["get-file", &img2, "/l"], &["/l", "no such file"]);
}

/// A whiteout written after a same-layer symlink that replaced its parent
/// is applied through that symlink (as flatten and umoci do): both
/// commands agree that the file behind the link is gone.
#[test]
fn whiteouts_through_a_same_layer_symlink() {
    let t = tempfile::tempdir().unwrap();
    let img = layout(
        t.path(),
        &[
            tar(&[
                file("etc/y", "bait\n"),
                file("etc/z", "stays\n"),
                file("r/d/y", "y\n"),
            ]),
            tar(&[
                file("r/.wh.d", ""),
                Entry::Symlink("r/d", "../etc"),
                file("r/d/.wh.y", ""),
            ]),
        ],
    );
    fails(&["get-file", &img, "/etc/y"], &["/etc/y", "no such file"]);
    fails(&["get-file", &img, "/r/d/y"], &["/r/d/y", "no such file"]);
    assert_eq!(get(&[&img, "/r/d/z"]), b"stays\n");
    let o = ocikit_ok(["files", &img]);
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "/etc\n/etc/z\n/r\n/r/d\n"
    );
}

/// `files` lists what `flatten` writes (paths and types) and `get-file`
/// returns every regular file's bytes as flatten wrote them.
fn assert_matches_flatten(img: &str) {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("rootfs");
    ocikit_ok(["flatten", "--rootless", img, "--output", &s(&out)]);
    let mut want = Vec::new();
    for e in walkdir::WalkDir::new(&out)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(&out).unwrap();
        if rel.as_os_str().is_empty() {
            continue;
        }
        let ft = e.file_type();
        let kind = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else {
            "file"
        };
        let p = format!("/{}", rel.display());
        if kind == "file" {
            assert_eq!(get(&[img, &p]), fs::read(e.path()).unwrap(), "get-file {p}");
        }
        want.push((p, kind.to_string()));
    }
    want.sort();
    let o = ocikit_ok(["files", img, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut got: Vec<(String, String)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, want, "files vs flatten of {img}");
}

/// Rules within one layer, checked against flatten: a whiteout hides lower
/// layers only, an opaque marker keeps what the layer wrote before it, a
/// non-directory over a parent removes what the layer wrote under it.
#[test]
fn same_layer_rules_agree_with_flatten() {
    let t = tempfile::tempdir().unwrap();
    let img = layout(
        t.path(),
        &[
            tar(&[
                file("w/lower", "lower\n"),
                file("o/lower", "lower\n"),
                file("o/sub/lower", "lower\n"),
                file("n/lower", "lower\n"),
                file("rd/old", "old\n"),
                file("f2d", "a file below\n"),
            ]),
            tar(&[
                file("w/same", "written, then whited out in its own layer\n"),
                file("w/.wh.same", ""),
                file("w/.wh.lower", ""),
                file("o/before", "before the marker\n"),
                file("o/sub/before", "before the marker\n"),
                file("o/.wh..wh..opq", ""),
                file("o/after", "after\n"),
                file("n/x", "under n, then n becomes a file\n"),
                file("n", "n is a file\n"),
                file("later/d/x", "x\n"),
                Entry::Symlink("later/l", "d"),
                file("later/l/y", "through a same-layer symlink\n"),
                // Deleted, then written under again: a fresh directory.
                file(".wh.rd", ""),
                file("rd/new", "new\n"),
                // A file of this layer, then an entry under it.
                file("f2d", "briefly a file\n"),
                file("f2d/inside", "inside\n"),
            ]),
        ],
    );
    assert_matches_flatten(&img);
    assert_eq!(
        get(&[&img, "/w/same"]),
        b"written, then whited out in its own layer\n"
    );
    assert_eq!(
        get(&[&img, "/later/d/y"]),
        b"through a same-layer symlink\n"
    );
    fails(&["get-file", &img, "/o/sub/lower"], &["no such file"]);
    fails(&["get-file", &img, "/n/x"], &["no such file"]);
    assert_eq!(get(&[&img, "/rd/new"]), b"new\n");
    fails(&["get-file", &img, "/rd/old"], &["no such file"]);
    assert_eq!(get(&[&img, "/f2d/inside"]), b"inside\n");
    fails(&["get-file", &img, "/f2d"], &["is a directory"]);
    for img in [
        three_layers(&t.path().join("3")),
        whiteout_image(&t.path().join("w")),
    ] {
        assert_matches_flatten(&img);
    }
}
