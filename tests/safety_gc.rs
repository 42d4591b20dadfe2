//! Data safety of the commands that delete or rewrite (issue 12, items 1–4, 6,
//! 14 and 17): gc, tag and untag run only on a graph that verify accepts, never
//! reach outside the layout root, and never write a document a reader refuses.
//!
//! Every case asserts the whole layout tree is unchanged after a refusal
//! (`snapshot` compares every file's bytes).

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// A layout with two tagged images (`a`, and `b` behind a nested index) and
/// two garbage blobs. Returns (layout root, index.json value, nested index
/// descriptor, manifest B descriptor).
struct Fixture {
    root: std::path::PathBuf,
    index: Value,
    nested: Value,
    manifest_b: Value,
}

fn fixture(dir: &Path) -> Fixture {
    let root = dir.join("l");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let la = put_layer(&root, OCI_GZIP, &tar(&[file("a.txt", "image a\n")]));
    let ma = put_image(&root, "amd64", None, &[la], false);
    let lb = put_layer(&root, OCI_GZIP, &tar(&[file("b.txt", "image b\n")]));
    let mb = put_image(&root, "amd64", None, &[lb], false);
    let mut mb_entry = mb.clone();
    mb_entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let nested = put_blob(
        &root,
        OCI_INDEX,
        &to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [mb_entry]})),
    );
    put_blob(&root, "application/octet-stream", b"garbage one\n");
    put_blob(&root, "application/octet-stream", b"garbage two\n");
    let mut ea = ma.clone();
    ea["annotations"] = json!({"org.opencontainers.image.ref.name": "a"});
    let mut eb = nested.clone();
    eb["annotations"] = json!({"org.opencontainers.image.ref.name": "b"});
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [ea, eb]});
    write_layout_files(&root, &index);
    Fixture {
        root,
        index,
        nested,
        manifest_b: mb,
    }
}

/// Stores a nested index of `entries` and points index.json's entry `b` at it.
fn point_b_at_nested(f: &Fixture, entries: Vec<Value>) {
    let nested = put_blob(
        &f.root,
        OCI_INDEX,
        &to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})),
    );
    let mut idx = f.index.clone();
    let mut e = nested.clone();
    e["annotations"] = json!({"org.opencontainers.image.ref.name": "b"});
    idx["manifests"][1] = e;
    fs::write(f.root.join("index.json"), to_bytes(&idx)).unwrap();
}

/// Every file under `root` but the writer lock file, which a writer may create
/// before it refuses (it holds only a pid and is never layout content).
fn content(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut m = snapshot(root);
    m.remove(".ocikit.lock");
    m
}

/// Asserts `args` exits 2, names `needle` on stderr, and changes nothing under `root`.
fn refuses(root: &Path, args: &[&str], needle: &str) {
    let before = content(root);
    let o = ocikit(args);
    assert_eq!(
        code(&o),
        2,
        "{args:?} must refuse (exit 2):\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(needle),
        "{args:?}: stderr should name {needle:?}: {}",
        stderr(&o)
    );
    assert_eq!(
        content(root),
        before,
        "{args:?} changed the layout while refusing"
    );
}

fn gc_refuses(root: &Path, needle: &str) {
    refuses(root, &["gc", &s(root)], needle);
    refuses(root, &["gc", &s(root), "--prune-untagged"], needle);
}

// ------------------------------------------------ item 1: index.json verify refuses

type Mutation = Box<dyn Fn(&mut Value)>;

#[test]
fn gc_tag_untag_refuse_an_index_json_verify_refuses() {
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "schemaVersion \"2\"",
            Box::new(|v| v["schemaVersion"] = json!("2")),
        ),
        (
            "schemaVersion 2.0",
            Box::new(|v| v["schemaVersion"] = json!(2.0)),
        ),
        (
            "schemaVersion 3",
            Box::new(|v| v["schemaVersion"] = json!(3)),
        ),
        (
            "no schemaVersion",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("schemaVersion");
            }),
        ),
        ("mediaType 5", Box::new(|v| v["mediaType"] = json!(5))),
        ("annotations []", Box::new(|v| v["annotations"] = json!([]))),
        ("subject \"x\"", Box::new(|v| v["subject"] = json!("x"))),
        ("manifests null", Box::new(|v| v["manifests"] = Value::Null)),
        (
            "no manifests",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("manifests");
            }),
        ),
        ("manifests {}", Box::new(|v| v["manifests"] = json!({}))),
        ("stray config", Box::new(|v| v["config"] = json!({}))),
    ];
    for (what, mutate) in cases {
        let t = tempfile::tempdir().unwrap();
        let f = fixture(t.path());
        let mut idx = f.index.clone();
        mutate(&mut idx);
        fs::write(f.root.join("index.json"), to_bytes(&idx)).unwrap();
        // verify refuses it (a finding, exit 1) …
        let v = ocikit(["verify", &s(&f.root)]);
        assert_eq!(code(&v), 1, "{what}: verify must refuse:\n{}", stdout(&v));
        // … so gc, tag and untag must refuse it too, and change nothing.
        gc_refuses(&f.root, "index.json");
        refuses(
            &f.root,
            &["untag", &format!("{}:a", s(&f.root))],
            "index.json",
        );
        refuses(
            &f.root,
            &["tag", &format!("{}:a", s(&f.root)), "again"],
            "index.json",
        );
    }
}

// ------------------------------------------------ item 2: invalid descriptors

/// Descriptor corruptions that verify refuses.
fn bad_descriptors(d: &Value) -> Vec<(&'static str, Value)> {
    let digest = d["digest"].as_str().unwrap().to_string();
    let hex = digest.strip_prefix("sha256:").unwrap().to_string();
    let with = |k: &str, v: Value| {
        let mut d = d.clone();
        d[k] = v;
        d
    };
    vec![
        ("size -1", with("size", json!(-1))),
        (
            "upper-case hex",
            with("digest", json!(format!("sha256:{}", hex.to_uppercase()))),
        ),
        (
            "short hex",
            with("digest", json!(format!("sha256:{}", &hex[..63]))),
        ),
        (
            "sha512 with 64 hex",
            with("digest", json!(format!("sha512:{hex}"))),
        ),
        (
            "../ in the encoded part",
            with("digest", json!(format!("sha256:../../{hex}"))),
        ),
        ("no algorithm", with("digest", json!(hex.clone()))),
        ("no mediaType", {
            let mut d = d.clone();
            d.as_object_mut().unwrap().remove("mediaType");
            d
        }),
    ]
}

#[test]
fn gc_refuses_invalid_descriptors_in_index_json() {
    let t = tempfile::tempdir().unwrap();
    let base = fixture(t.path());
    for (what, bad) in bad_descriptors(&base.index["manifests"][1]) {
        let t = tempfile::tempdir().unwrap();
        let f = fixture(t.path());
        let mut idx = f.index.clone();
        idx["manifests"][1] = bad;
        fs::write(f.root.join("index.json"), to_bytes(&idx)).unwrap();
        let v = ocikit(["verify", &s(&f.root)]);
        assert_eq!(code(&v), 1, "{what}: verify must refuse:\n{}", stdout(&v));
        gc_refuses(&f.root, "manifests[1]");
        refuses(
            &f.root,
            &["untag", &format!("{}:a", s(&f.root))],
            "index.json",
        );
    }
}

#[test]
fn gc_refuses_invalid_descriptors_in_nested_indexes_and_manifests() {
    let t = tempfile::tempdir().unwrap();
    let base = fixture(t.path());
    // In the nested index: manifest B's descriptor.
    for (what, bad) in bad_descriptors(&base.manifest_b) {
        let t = tempfile::tempdir().unwrap();
        let f = fixture(t.path());
        let mut bad = bad;
        bad["platform"] = json!({"architecture": "amd64", "os": "linux"});
        point_b_at_nested(&f, vec![bad]);
        // The old nested index is now garbage; manifest B must survive.
        let v = ocikit(["verify", &s(&f.root)]);
        assert_eq!(code(&v), 1, "{what}: verify must refuse:\n{}", stdout(&v));
        gc_refuses(&f.root, "manifests[0]");
    }
    // In manifest B: its layer and config descriptors, and no config at all.
    let mb: Value = serde_json::from_slice(&blob_bytes(
        &base.root,
        base.manifest_b["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let mut cases: Vec<(String, Value)> = Vec::new();
    for (what, bad) in bad_descriptors(&mb["layers"][0]) {
        let mut m = mb.clone();
        m["layers"][0] = bad;
        cases.push((format!("layer: {what}"), m));
    }
    for (what, bad) in bad_descriptors(&mb["config"]) {
        let mut m = mb.clone();
        m["config"] = bad;
        cases.push((format!("config: {what}"), m));
    }
    let mut m = mb.clone();
    m.as_object_mut().unwrap().remove("config");
    cases.push(("no config".into(), m));
    for (what, m) in cases {
        let t = tempfile::tempdir().unwrap();
        let f = fixture(t.path());
        let md = put_blob(&f.root, OCI_MANIFEST, &to_bytes(&m));
        let mut idx = f.index.clone();
        let mut e = md.clone();
        e["annotations"] = json!({"org.opencontainers.image.ref.name": "b"});
        idx["manifests"][1] = e;
        fs::write(f.root.join("index.json"), to_bytes(&idx)).unwrap();
        let v = ocikit(["verify", &s(&f.root)]);
        assert_eq!(code(&v), 1, "{what}: verify must refuse:\n{}", stdout(&v));
        gc_refuses(&f.root, "manifests[1]");
    }
    let _ = base.nested;
}

// ------------------------------------------------ item 3: nesting at the cap

#[test]
fn gc_refuses_an_index_chain_deeper_than_verify_reads() {
    let t = tempfile::tempdir().unwrap();
    let f = fixture(t.path());
    // manifest B under 16 nested indexes.
    let mut child = f.manifest_b.clone();
    for _ in 0..16 {
        child = put_blob(
            &f.root,
            OCI_INDEX,
            &to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child]})),
        );
    }
    let mut idx = f.index.clone();
    child["annotations"] = json!({"org.opencontainers.image.ref.name": "deep"});
    idx["manifests"][1] = child;
    fs::write(f.root.join("index.json"), to_bytes(&idx)).unwrap();
    let v = ocikit(["verify", &s(&f.root)]);
    assert_eq!(code(&v), 1, "verify must refuse:\n{}", stdout(&v));
    assert!(stdout(&v).contains("nested more than"), "{}", stdout(&v));
    gc_refuses(&f.root, "nested more than");
}

// ------------------------------------------------ item 4: blobs/ as a symlink

#[test]
fn a_symlinked_blobs_directory_is_never_followed() {
    let t = tempfile::tempdir().unwrap();
    let other = fixture(&t.path().join("other"));
    let layout = t.path().join("shared");
    fs::create_dir_all(&layout).unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    // Only image a is named here: gc following the link would delete b.
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [other.index["manifests"][0].clone()]});
    fs::write(layout.join("index.json"), to_bytes(&idx)).unwrap();
    std::os::unix::fs::symlink(other.root.join("blobs"), layout.join("blobs")).unwrap();
    let other_before = snapshot(&other.root);
    let l = s(&layout);
    for args in [
        vec!["gc".to_string(), l.clone()],
        vec!["gc".to_string(), l.clone(), "--force".into()],
        vec!["cat".to_string(), format!("{l}:a"), "manifest".into()],
        vec![
            "blob".to_string(),
            l.clone(),
            other.manifest_b["digest"].as_str().unwrap().into(),
        ],
        vec!["inspect".to_string(), format!("{l}:a")],
    ] {
        let o = ocikit(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}{}", stdout(&o), stderr(&o));
        assert!(
            stderr(&o).contains("blobs") && stderr(&o).contains("symlink"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Writing through it is refused too.
    let (_d, demo) = demo_copy();
    let o = ocikit(["copy", &format!("{}:1.0", s(&demo)), &format!("oci:{l}:x")]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    let v = ocikit(["verify", &l]);
    assert_eq!(code(&v), 1, "{}", stdout(&v));
    assert_eq!(
        snapshot(&other.root),
        other_before,
        "the other layout changed"
    );
    // A symlinked algorithm directory likewise.
    let t2 = tempfile::tempdir().unwrap();
    let f2 = fixture(t2.path());
    let real = t2.path().join("elsewhere");
    fs::rename(f2.root.join("blobs/sha256"), &real).unwrap();
    std::os::unix::fs::symlink(&real, f2.root.join("blobs/sha256")).unwrap();
    let before = snapshot(&real);
    let o = ocikit(["gc", &s(&f2.root)]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(snapshot(&real), before);
}

// ------------------------------------------------ item 6: index.json over the cap

#[test]
fn tag_refuses_to_write_an_index_json_over_the_readers_cap() {
    let t = tempfile::tempdir().unwrap();
    let f = fixture(t.path());
    // Pad index.json to just under 4 MiB with an unknown top-level field.
    let mut idx = f.index.clone();
    let base_len = to_bytes(&idx).len() + r#","x-pad":"""#.len();
    let pad = (4 << 20) - 120 - base_len;
    idx["x-pad"] = json!("p".repeat(pad));
    let bytes = to_bytes(&idx);
    assert_eq!(bytes.len(), (4 << 20) - 120);
    fs::write(f.root.join("index.json"), &bytes).unwrap();
    let l = s(&f.root);
    ocikit_ok(["ls", &l]);
    refuses(
        &f.root,
        &[
            "tag",
            &format!("{l}:a"),
            "a-rather-long-new-tag-name-that-pushes-it-over",
        ],
        "4 MiB",
    );
    // Still readable and writable afterwards.
    ocikit_ok(["untag", &format!("{l}:a")]);
    ocikit_ok(["ls", &l]);
}

// ------------------------------------------------ item 17: tag validation

#[test]
fn tag_refuses_digest_shaped_tags_and_invalid_descriptors() {
    let t = tempfile::tempdir().unwrap();
    let f = fixture(t.path());
    let l = s(&f.root);
    let hex = "a".repeat(64);
    refuses(
        &f.root,
        &["tag", &format!("{l}:a"), &format!("sha256:{hex}")],
        "digest",
    );
    refuses(
        &f.root,
        &[
            "tag",
            &format!("{l}:a"),
            &format!("sha512:{}", "b".repeat(128)),
        ],
        "digest",
    );
    // A nested descriptor with a negative size, reachable by digest.
    let mut bad = f.manifest_b.clone();
    bad["size"] = json!(-5);
    let nested = put_blob(
        &f.root,
        OCI_INDEX,
        &to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [bad]})),
    );
    let mut idx = f.index.clone();
    idx["manifests"][1]["digest"] = nested["digest"].clone();
    idx["manifests"][1]["size"] = nested["size"].clone();
    fs::write(f.root.join("index.json"), to_bytes(&idx)).unwrap();
    let md = f.manifest_b["digest"].as_str().unwrap();
    refuses(&f.root, &["tag", &format!("{l}@{md}"), "copied"], "size");
}

// ------------------------------------------------ item 14: verify vs a concurrent gc

#[test]
fn verify_reports_no_missing_blob_a_concurrent_gc_removed() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("l");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let mut entries = Vec::new();
    let keep = put_image(
        &root,
        "amd64",
        None,
        &[put_layer(&root, OCI_TAR, &tar(&[file("k", "keep\n")]))],
        false,
    );
    let mut k = keep.clone();
    k["annotations"] = json!({"org.opencontainers.image.ref.name": "keep"});
    entries.push(k);
    let n_untagged = 150;
    let build = |root: &Path| {
        let mut e = entries.clone();
        for i in 0..n_untagged {
            let body = format!("untagged {i}\n");
            let layer = put_layer(
                root,
                OCI_TAR,
                &tar(&[Entry::File("u", 0o644, body.into_bytes())]),
            );
            e.push(put_image(root, "amd64", None, &[layer], false));
        }
        write_layout_files(
            root,
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": e}),
        );
    };
    for round in 0..6 {
        build(&root);
        ocikit_ok(["verify", &s(&root)]);
        let gc = std::process::Command::new(bin())
            .args(["gc", &s(&root), "--prune-untagged"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut verifies = 0;
        let mut gc = gc;
        loop {
            let o = ocikit(["verify", &s(&root)]);
            verifies += 1;
            assert_eq!(
                code(&o),
                0,
                "round {round}, verify {verifies} during gc reported findings on a layout valid before and after:\n{}{}",
                stdout(&o),
                stderr(&o)
            );
            if gc.try_wait().unwrap().is_some() {
                break;
            }
        }
        assert!(gc.wait().unwrap().success());
        ocikit_ok(["verify", &s(&root)]);
    }
}

#[test]
fn copy_into_a_layout_whose_index_json_verify_refuses_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let f = fixture(t.path());
    let mut idx = f.index.clone();
    idx["manifests"][1]["size"] = json!(-1);
    fs::write(f.root.join("index.json"), to_bytes(&idx)).unwrap();
    refuses(
        &f.root,
        &[
            "copy",
            &format!("{}:1.0", s(&demo())),
            &format!("oci:{}:x", s(&f.root)),
        ],
        "manifests[1]",
    );
}

/// Found by the long property run: an index entry of an unknown media type
/// with a size too large to sniff was a leaf gc never checked, so the
/// manifest behind it went unwalked and its blobs were deleted, while verify
/// reported the entry's size mismatch.
#[test]
fn gc_refuses_an_unknown_entry_whose_blob_size_disagrees() {
    let t = tempfile::tempdir().unwrap();
    let f = fixture(t.path());
    let mut bad = f.manifest_b.clone();
    bad["mediaType"] = json!("application/x-unknown");
    bad["size"] = json!(1u64 << 40);
    point_b_at_nested(&f, vec![bad]);
    let v = ocikit(["verify", &s(&f.root)]);
    assert_eq!(code(&v), 1, "{}", stdout(&v));
    gc_refuses(&f.root, "1099511627776");
}

/// Found by a CI run of the property test: a document descriptor claiming
/// i64::MAX bytes made verify's byte total overflow (a panic in debug
/// builds) once the other images' blobs were added to it.
#[test]
fn a_huge_descriptor_size_does_not_overflow_verify_totals() {
    let t = tempfile::tempdir().unwrap();
    let f = fixture(t.path());
    let mut idx = f.index.clone();
    // Two documents claiming i64::MAX bytes (2^64 - 2 together), then the
    // blobs of a valid third entry on top.
    idx["manifests"][0]["size"] = json!(i64::MAX);
    idx["manifests"][1]["size"] = json!(i64::MAX);
    idx["manifests"]
        .as_array_mut()
        .unwrap()
        .push(f.manifest_b.clone());
    fs::write(f.root.join("index.json"), to_bytes(&idx)).unwrap();
    let v = ocikit(["verify", &s(&f.root)]);
    assert_eq!(code(&v), 1, "{}{}", stdout(&v), stderr(&v));
    let v = ocikit(["verify", "--json", &s(&f.root)]);
    assert_eq!(code(&v), 1, "{}", stderr(&v));
    gc_refuses(&f.root, "9223372036854775807");
}
