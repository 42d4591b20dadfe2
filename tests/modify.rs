//! `ocikit mod`: new images from existing ones, offline. Oracles: umoci
//! unpacks every result to the tree `ocikit flatten` gives; skopeo reads
//! the OCI results; the digests are reproducible; the source never changes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

/// path → (kind, mode, size, content hash or link target), below `root`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        if rel.is_empty() {
            continue;
        }
        let meta = fs::symlink_metadata(e.path()).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let v = if meta.file_type().is_symlink() {
            format!("link {}", fs::read_link(e.path()).unwrap().display())
        } else if meta.is_dir() {
            format!("dir {mode:o}")
        } else if meta.is_file() {
            format!(
                "file {mode:o} {} {} nlink={}",
                meta.len(),
                sha256_hex(&fs::read(e.path()).unwrap()),
                meta.nlink()
            )
        } else {
            format!("other {mode:o}")
        };
        m.insert(rel, v);
    }
    m
}

fn flatten_tree(layout: &Path, tag: &str, scratch: &Path) -> BTreeMap<String, String> {
    let out = scratch.join(format!("flat-{tag}"));
    let _ = fs::remove_dir_all(&out);
    let o = ocikit([
        "flatten",
        &format!("{}:{tag}", s(layout)),
        "--output",
        &s(&out),
        "--rootless",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    tree(&out)
}

fn umoci_tree(layout: &Path, tag: &str, scratch: &Path) -> BTreeMap<String, String> {
    let bundle = scratch.join(format!("umoci-{tag}"));
    run_ok(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:{tag}", s(layout)),
            &s(&bundle),
        ],
    );
    tree(&bundle.join("rootfs"))
}

fn mod_ok(args: &[&str]) -> String {
    let mut all = vec!["mod"];
    all.extend_from_slice(args);
    let o = ocikit(all);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stderr(&o)
}

fn digest_of_tag(layout: &Path, tag: &str) -> String {
    index_entry(layout, tag)["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn manifest(layout: &Path, tag: &str) -> serde_json::Value {
    serde_json::from_slice(&blob_bytes(layout, &digest_of_tag(layout, tag))).unwrap()
}

fn config(layout: &Path, tag: &str) -> serde_json::Value {
    let m = manifest(layout, tag);
    serde_json::from_slice(&blob_bytes(layout, m["config"]["digest"].as_str().unwrap())).unwrap()
}

#[test]
fn every_mod_result_unpacks_in_umoci_as_flatten_gives_it() {
    if !tools(
        "every_mod_result_unpacks_in_umoci_as_flatten_gives_it",
        &["umoci"],
    ) {
        return;
    }
    let (t, demo) = demo_copy();
    let scratch = t.path();
    let cases: &[(&str, &[&str])] = &[
        (
            "repro",
            &["--time-max", "2023-01-01T00:00:00Z", "--normalize-layers"],
        ),
        (
            "slim",
            &["--rm-path", "/usr/share/demo", "--rm-path", "etc/motd"],
        ),
        ("gz", &["--compress", "gzip"]),
        ("plain", &["--compress", "none"]),
        ("noupdate", &["--rm-layer", "2", "--label", "stage=test"]),
    ];
    for (tag, edits) in cases {
        // umoci unpacks single manifests: the Docker-typed `legacy` (the
        // same layers as 1.0's first two).
        // umoci reads OCI types only: every case converts too.
        let mut args = vec![
            format!("{}:legacy", s(&demo)),
            "--tag".into(),
            tag.to_string(),
            "--to-oci".into(),
        ];
        args.extend(edits.iter().map(|e| e.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        mod_ok(&refs);
        let ours = flatten_tree(&demo, tag, scratch);
        let theirs = umoci_tree(&demo, tag, scratch);
        assert_eq!(ours, theirs, "{tag}: flatten and umoci unpack differ");
        assert!(!ours.is_empty());
    }
    // What the edits say happened, happened.
    let slim = flatten_tree(&demo, "slim", scratch);
    assert!(
        !slim.keys().any(|k| k.starts_with("usr/share/demo")),
        "{slim:?}"
    );
    assert!(!slim.contains_key("etc/motd"));
    assert!(slim.contains_key("etc/hostname"));
    let noupdate = flatten_tree(&demo, "noupdate", scratch);
    assert!(!noupdate.contains_key("etc/motd"), "layer 2 dropped");
    assert!(noupdate.contains_key("tmp/scratch.txt"), "its whiteout too");
    assert_eq!(
        config(&demo, "noupdate")["config"]["Labels"]["stage"],
        "test"
    );
    assert_eq!(
        config(&demo, "noupdate")["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let o = ocikit(["verify", "--deep", &s(&demo)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn same_input_and_edits_give_the_same_digests_and_the_source_stays() {
    let (t, demo) = demo_copy();
    let before = snapshot(&demo);
    let a = t.path().join("a");
    let b = t.path().join("b");
    let edits = [
        "--time-max",
        "@1600000000",
        "--normalize-layers",
        "--annotation",
        "k=v",
        "--env",
        "MODE=prod",
    ];
    for out in [&a, &b] {
        let mut args = vec![format!("{}:legacy", s(&demo)), "--tag".into(), "x".into()];
        args.push("--layout".into());
        args.push(s(out));
        args.extend(edits.iter().map(|e| e.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        mod_ok(&refs);
    }
    assert_eq!(digest_of_tag(&a, "x"), digest_of_tag(&b, "x"));
    assert_eq!(snapshot(&demo), before, "the source layout changed");
    let cfg = config(&a, "x");
    assert!(cfg["created"].as_str().unwrap() <= "2020-09-13T12:26:40Z");
    assert!(cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "MODE=prod"));
    let m = manifest(&a, "x");
    assert_eq!(m["annotations"]["k"], "v");
    for out in [&a, &b] {
        let o = ocikit(["verify", "--deep", &s(out)]);
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    }
}

#[test]
fn docker_refuses_zstd_and_media_types_convert() {
    let (_t, demo) = demo_copy();
    let before = snapshot(&demo);
    let o = ocikit([
        "mod",
        &format!("{}:1.0", s(&demo)),
        "--tag",
        "d",
        "--to-docker",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("zstd"), "{}", stderr(&o));
    let mut after = snapshot(&demo);
    after.retain(|k, _| !k.starts_with(".ocikit"));
    let mut before = before;
    before.retain(|k, _| !k.starts_with(".ocikit"));
    assert_eq!(
        after
            .keys()
            .filter(|k| !k.starts_with("blobs"))
            .collect::<Vec<_>>(),
        before
            .keys()
            .filter(|k| !k.starts_with("blobs"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        after.get("index.json"),
        before.get("index.json"),
        "nothing tagged"
    );

    mod_ok(&[
        &format!("{}:1.0", s(&demo)),
        "--tag",
        "d",
        "--to-docker",
        "--compress",
        "gzip",
    ]);
    let entry = index_entry(&demo, "d");
    assert_eq!(entry["mediaType"], DOCKER_LIST_TYPE);
    let ix: serde_json::Value =
        serde_json::from_slice(&blob_bytes(&demo, entry["digest"].as_str().unwrap())).unwrap();
    for e in ix["manifests"].as_array().unwrap() {
        assert_eq!(e["mediaType"], DOCKER_MANIFEST);
        let m: serde_json::Value =
            serde_json::from_slice(&blob_bytes(&demo, e["digest"].as_str().unwrap())).unwrap();
        assert_eq!(m["mediaType"], DOCKER_MANIFEST);
        assert_eq!(m["config"]["mediaType"], DOCKER_CONFIG);
        for l in m["layers"].as_array().unwrap() {
            assert_eq!(l["mediaType"], DOCKER_GZIP);
        }
    }
    let o = ocikit(["verify", "--deep", &s(&demo)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // The other way round: OCI types again.
    mod_ok(&[&format!("{}:legacy", s(&demo)), "--tag", "o", "--to-oci"]);
    let m = manifest(&demo, "o");
    assert_eq!(m["mediaType"], OCI_MANIFEST);
    assert_eq!(m["config"]["mediaType"], OCI_CONFIG);
    assert!(m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"] == OCI_GZIP));
    // The layers were only relabelled: the same blobs.
    let legacy = manifest(&demo, "legacy");
    let digests = |m: &serde_json::Value| -> Vec<String> {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(digests(&m), digests(&legacy));
}

const DOCKER_LIST_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[test]
fn referrers_are_left_behind_with_a_note() {
    let (_t, demo) = demo_copy();
    let err = mod_ok(&[&format!("{}:1.0", s(&demo)), "--tag", "n", "--label", "a=b"]);
    assert!(err.contains("referrers"), "{err}");
    assert!(err.contains("not copied"), "{err}");
}

#[test]
fn skopeo_reads_an_oci_mod_result() {
    if !tools("skopeo_reads_an_oci_mod_result", &["skopeo"]) {
        return;
    }
    let (t, demo) = demo_copy();
    mod_ok(&[
        &format!("{}:legacy", s(&demo)),
        "--tag",
        "o",
        "--to-oci",
        "--compress",
        "zstd",
        "--time-max",
        "@1600000000",
    ]);
    let copy = t.path().join("copy");
    run_ok(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:o", s(&demo)),
            &format!("oci:{}:o", s(&copy)),
        ],
    );
    assert_eq!(digest_of_tag(&copy, "o"), digest_of_tag(&demo, "o"));
}

#[test]
fn bad_edits_are_refused_and_tag_nothing() {
    let (_t, demo) = demo_copy();
    let index = fs::read(demo.join("index.json")).unwrap();
    for (args, says) in [
        (vec!["--rm-layer", "9"], "has 2 layers"),
        (vec!["--time-max", "yesterday"], "RFC 3339"),
        (vec!["--label", "novalue"], "KEY=VALUE"),
        (vec!["--annotation-index", "a=b"], "needs an index"),
    ] {
        let mut all = vec![
            "mod".to_string(),
            format!("{}:legacy", s(&demo)),
            "--tag".into(),
            "z".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let o = ocikit(&all);
        assert_eq!(code(&o), 2, "{all:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{all:?}: {}", stderr(&o));
        assert_eq!(fs::read(demo.join("index.json")).unwrap(), index);
    }
}

#[test]
fn a_failed_mod_leaves_the_layout_as_it_was() {
    let (_t, demo) = demo_copy();
    // legacy's second layer gets other bytes of the same size: its digest no
    // longer matches, found only while it is rewritten.
    let m = manifest(&demo, "legacy");
    let layer = &m["layers"][1];
    let path = blob_path(&demo, layer);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let strip = |mut m: BTreeMap<String, String>| {
        m.retain(|k, _| !k.starts_with(".ocikit"));
        m
    };
    let before = strip(snapshot(&demo));
    let o = ocikit([
        "mod",
        &format!("{}:legacy", s(&demo)),
        "--tag",
        "x",
        "--time-max",
        "@0",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(layer["digest"].as_str().unwrap()),
        "{}",
        stderr(&o)
    );
    assert_eq!(strip(snapshot(&demo)), before, "blobs or tags left behind");
}
