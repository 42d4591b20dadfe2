//! verify's structural checks that need no blob damage: embedded `data`,
//! the empty descriptor's identity, and the diff_ids count (without --deep).

mod common;

use std::fs;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

fn verify_kinds(root: &std::path::Path) -> (i32, Vec<(String, String)>) {
    let o = ocikit(["verify".as_ref(), "--json".as_ref(), root.as_os_str()]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", stderr(&o)));
    let kinds = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (code(&o), kinds)
}

/// A simple layout whose index.json entry carries `data`.
fn with_data(data: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("l");
    let (manifest, _, _) = build_simple(&root);
    let mut entry = manifest.clone();
    entry["data"] = json!(data);
    write_layout_files(&root, &json!({"schemaVersion": 2, "manifests": [entry]}));
    (t, root)
}

#[test]
fn embedded_data_must_match_size_and_digest() {
    let t = tempfile::tempdir().unwrap();
    let (manifest, _, _) = build_simple(&t.path().join("probe"));
    let bytes = fs::read(blob_path(&t.path().join("probe"), &manifest)).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    let (_t, root) = with_data(&b64(&bytes));
    assert_eq!(verify_kinds(&root), (0, vec![]), "valid data is fine");

    let (_t, root) = with_data("!!not base64!!");
    let (c, k) = verify_kinds(&root);
    assert_eq!((c, k[0].0.as_str()), (1, "malformed"), "{k:?}");
    assert!(k[0].1.contains("not valid base64"), "{k:?}");

    let (_t, root) = with_data(&b64(b"short"));
    let (c, k) = verify_kinds(&root);
    assert_eq!((c, k[0].0.as_str()), (1, "size-mismatch"), "{k:?}");
    assert!(k[0].1.contains("data is 5 bytes"), "{k:?}");

    let mut other = bytes.clone();
    other[0] ^= 1;
    let (_t, root) = with_data(&b64(&other));
    let (c, k) = verify_kinds(&root);
    assert_eq!((c, k[0].0.as_str()), (1, "digest-mismatch"), "{k:?}");
    assert!(k[0].1.contains("data does not hash to"), "{k:?}");
}

#[test]
fn empty_descriptor_must_be_the_empty_blob() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("l");
    fs::create_dir_all(&root).unwrap();
    // An artifact whose "empty" config is really "[]".
    let mut cfg = put_blob(&root, OCI_EMPTY, b"[]");
    cfg["mediaType"] = json!(OCI_EMPTY);
    let layer = put_blob(&root, "text/plain", b"hello");
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x.test",
                   "config": cfg, "layers": [layer]});
    let md = put_blob(&root, OCI_MANIFEST, &to_bytes(&m));
    write_layout_files(&root, &json!({"schemaVersion": 2, "manifests": [md]}));
    let (c, k) = verify_kinds(&root);
    assert_eq!(c, 1);
    let kinds: Vec<&str> = k.iter().map(|x| x.0.as_str()).collect();
    assert!(kinds.contains(&"schema-invalid"), "{k:?}");
    assert!(
        kinds.contains(&"malformed"),
        "the blob is not {{}} either: {k:?}"
    );
}

#[test]
fn diff_ids_count_is_checked_without_deep() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("l");
    fs::create_dir_all(&root).unwrap();
    let l1 = put_layer(&root, OCI_GZIP, &tar(&[file("a", "a\n")]));
    // The config lists two diff_ids for one layer.
    let extra = (l1.0.clone(), digest_of(b"not a layer"));
    let md = put_image(&root, "amd64", None, &[l1.clone(), extra], false);
    // Rewrite the manifest with only the first layer.
    let mbytes = fs::read(blob_path(&root, &md)).unwrap();
    let mut m: Value = serde_json::from_slice(&mbytes).unwrap();
    m["layers"] = json!([l1.0]);
    let md = put_blob(&root, OCI_MANIFEST, &to_bytes(&m));
    fs::remove_file(root.join("blobs/sha256").join(&digest_of(&mbytes)[7..])).unwrap();
    write_layout_files(&root, &json!({"schemaVersion": 2, "manifests": [md]}));
    let (c, k) = verify_kinds(&root);
    assert_eq!(c, 1, "{k:?}");
    assert_eq!(k[0].0, "schema-invalid", "{k:?}");
    assert!(
        k[0].1
            .contains("has 1 layer(s) but its config lists 2 diff_id(s)"),
        "{k:?}"
    );
}

#[test]
fn config_without_diff_ids_is_a_warning_not_an_error() {
    // zot writes configs with only architecture and os; their digests and sizes
    // are right, so the layout is valid, but the layers cannot be held to anything.
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("l");
    fs::create_dir_all(&root).unwrap();
    let layer = put_layer(&root, OCI_GZIP, &tar(&[file("a", "a\n")]));
    let cfg = put_blob(
        &root,
        OCI_CONFIG,
        br#"{"architecture":"amd64","os":"linux"}"#,
    );
    let m =
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [layer.0]});
    let md = put_blob(&root, OCI_MANIFEST, &to_bytes(&m));
    write_layout_files(&root, &json!({"schemaVersion": 2, "manifests": [md]}));
    let (c, k) = verify_kinds(&root);
    assert_eq!(c, 0, "{k:?}");
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(k[0].0, "layout");
    assert!(k[0].1.contains("lists no rootfs.diff_ids"), "{k:?}");
}
