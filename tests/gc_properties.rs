//! Property (issue 12): on a randomly corrupted layout — field types,
//! descriptor values, nesting — gc either refuses and deletes nothing, or
//! deletes exactly the blobs `verify` calls unreferenced. Corrupted documents
//! are stored under their new digests and their parents rewritten up to
//! `index.json`, so the corruption is what gc meets, not a digest mismatch.
//! And gc runs only when verify's errors, if any, concern leaves (configs and
//! layers), never the graph of indexes and manifests.
//!
//! CI runs 300 cases from a fixed seed (repeatable); `PROPTEST_GC_CASES=20000`
//! runs that many from a random seed, to explore.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::*;
use ocikit::gc::{gc, GcOptions};
use ocikit::graph::IssueKind;
use ocikit::verify::{verify_layout, VerifyOptions};
use ocikit::Layout;
use proptest::prelude::*;
use serde_json::{json, Value};

fn config(default: u32) -> ProptestConfig {
    cases_from("PROPTEST_GC_CASES", default)
}

/// The documents of the fixture, by role.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Doc {
    /// `index.json`.
    Top,
    /// The nested index tagged `b`.
    Nested,
    /// Manifest `a` (has a referrer).
    A,
    /// Manifest B, inside the nested index.
    B,
    /// The untagged manifest C.
    C,
}

struct Fixture {
    top: Value,
    nested: Value,
    docs: Vec<(Doc, Value)>,
}

fn doc_value(root: &Path, d: &Value) -> Value {
    serde_json::from_slice(&blob_bytes(root, d["digest"].as_str().unwrap())).unwrap()
}

/// index.json: a (manifest A, with a referrer), b (nested index → B),
/// an untagged manifest C; plus garbage and a shared layer.
fn build(root: &Path) -> Fixture {
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let shared = put_layer(root, OCI_TAR, &tar(&[file("shared", "shared\n")]));
    let mut descs = Vec::new();
    for name in ["a", "b", "c"] {
        let own = put_layer(root, OCI_GZIP, &tar(&[file("own", name)]));
        descs.push(put_image(
            root,
            "amd64",
            None,
            &[shared.clone(), own],
            false,
        ));
    }
    let mut b_entry = descs[1].clone();
    b_entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let nested_doc = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [b_entry]});
    let nested = put_blob(root, OCI_INDEX, &to_bytes(&nested_doc));
    // A referrer of A.
    let empty = put_blob(root, OCI_EMPTY, b"{}");
    let payload = put_blob(root, "text/plain", b"signature of a\n");
    let mut subject = descs[0].clone();
    subject.as_object_mut().unwrap().remove("annotations");
    put_blob(
        root,
        OCI_MANIFEST,
        &to_bytes(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": empty, "layers": [payload], "subject": subject,
        })),
    );
    put_blob(root, "application/octet-stream", b"garbage\n");
    let mut ea = descs[0].clone();
    ea["annotations"] = json!({"org.opencontainers.image.ref.name": "a"});
    let mut eb = nested.clone();
    eb["annotations"] = json!({"org.opencontainers.image.ref.name": "b"});
    let top = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [ea, eb, descs[2].clone()]});
    write_layout_files(root, &top);
    let docs = vec![
        (Doc::Top, top.clone()),
        (Doc::Nested, nested_doc),
        (Doc::A, doc_value(root, &descs[0])),
        (Doc::B, doc_value(root, &descs[1])),
        (Doc::C, doc_value(root, &descs[2])),
    ];
    Fixture { top, nested, docs }
}

/// A value to put somewhere a field of another type may be expected.
fn odd_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        Just(Some(json!(0))),
        Just(Some(json!(2))),
        Just(Some(json!(2.0))),
        Just(Some(json!(-1))),
        Just(Some(json!("2"))),
        Just(Some(json!("x"))),
        Just(Some(json!([]))),
        Just(Some(json!({}))),
        Just(Some(json!(true))),
        Just(Some(json!(OCI_INDEX))),
        Just(Some(json!(OCI_MANIFEST))),
        Just(Some(
            json!([{"mediaType": OCI_MANIFEST, "digest": "sha256:00", "size": 2}])
        )),
    ]
}

/// A corruption of one descriptor field, given the descriptor's digest hex.
#[derive(Debug, Clone)]
enum DescEdit {
    Digest(u8),
    Size(i64),
    Field(&'static str, Option<Value>),
}

fn desc_edit() -> impl Strategy<Value = DescEdit> {
    prop_oneof![
        (0u8..8).prop_map(DescEdit::Digest),
        prop_oneof![Just(-1i64), Just(0), Just(1), Just(1 << 40), Just(i64::MAX)]
            .prop_map(DescEdit::Size),
        (
            prop_oneof![
                Just("mediaType"),
                Just("digest"),
                Just("size"),
                Just("platform"),
                Just("annotations"),
                Just("data"),
                Just("urls"),
                Just("artifactType"),
            ],
            odd_value()
        )
            .prop_map(|(f, v)| DescEdit::Field(f, v)),
    ]
}

/// What to corrupt: a top-level field of a document, or one of its descriptors.
#[derive(Debug, Clone)]
enum Edit {
    Top(&'static str, Option<Value>),
    Descriptor(usize, DescEdit),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (
            prop_oneof![
                Just("schemaVersion"),
                Just("mediaType"),
                Just("manifests"),
                Just("config"),
                Just("layers"),
                Just("annotations"),
                Just("subject"),
                Just("artifactType"),
            ],
            odd_value()
        )
            .prop_map(|(f, v)| Edit::Top(f, v)),
        (0usize..4, desc_edit()).prop_map(|(i, e)| Edit::Descriptor(i, e)),
    ]
}

fn doc() -> impl Strategy<Value = Doc> {
    prop_oneof![
        Just(Doc::Top),
        Just(Doc::Nested),
        Just(Doc::A),
        Just(Doc::B),
        Just(Doc::C)
    ]
}

/// The descriptor slots of a document: entries of an index, config then
/// layers of a manifest.
fn slot(v: &mut Value, i: usize) -> Option<&mut Value> {
    if v.get("manifests").is_some_and(Value::is_array) {
        let n = v["manifests"].as_array()?.len();
        return v["manifests"].get_mut(i % n.max(1));
    }
    if i == 0 {
        return v.get_mut("config").filter(|c| c.is_object());
    }
    let n = v.get("layers")?.as_array()?.len();
    v["layers"].get_mut((i - 1) % n.max(1))
}

fn apply(v: &mut Value, e: &Edit, stored: &BTreeSet<String>) {
    let set = |obj: &mut Value, k: &str, val: &Option<Value>| {
        if let Some(o) = obj.as_object_mut() {
            match val {
                Some(x) => {
                    o.insert(k.to_string(), x.clone());
                }
                None => {
                    o.remove(k);
                }
            }
        }
    };
    match e {
        Edit::Top(k, val) => set(v, k, val),
        Edit::Descriptor(i, de) => {
            let Some(d) = slot(v, *i) else { return };
            let hex = d["digest"]
                .as_str()
                .and_then(|s| s.strip_prefix("sha256:"))
                .unwrap_or("00")
                .to_string();
            match de {
                DescEdit::Digest(k) => {
                    let other = stored.iter().next().cloned().unwrap_or_default();
                    let new = match k {
                        0 => format!("sha256:{}", hex.to_uppercase()),
                        1 => format!("sha256:{}", &hex[..hex.len().saturating_sub(1)]),
                        2 => format!("sha512:{hex}"),
                        3 => format!("sha256:../{hex}"),
                        4 => hex.clone(),
                        5 => format!("blake3:{hex}"),
                        6 => format!("sha256:{other}"),
                        _ => format!("sha256:{}", "0".repeat(64)),
                    };
                    d["digest"] = json!(new);
                }
                DescEdit::Size(n) => d["size"] = json!(n),
                DescEdit::Field(k, val) => set(d, k, val),
            }
        }
    }
}

/// Stores edited documents and rewrites their parents' descriptors up to
/// `index.json`.
fn store_edit(root: &Path, f: &Fixture, which: Doc, edited: Value) {
    let bytes = to_bytes(&edited);
    let repoint = |entry: &mut Value, bytes: &[u8]| {
        let d = put_blob(root, OCI_MANIFEST, bytes);
        entry["digest"] = d["digest"].clone();
        entry["size"] = d["size"].clone();
    };
    let mut top = f.top.clone();
    match which {
        Doc::Top => {
            fs::write(root.join("index.json"), &bytes).unwrap();
            return;
        }
        Doc::A => repoint(&mut top["manifests"][0], &bytes),
        Doc::C => repoint(&mut top["manifests"][2], &bytes),
        Doc::Nested => repoint(&mut top["manifests"][1], &bytes),
        Doc::B => {
            let mut nested = doc_value(root, &f.nested);
            repoint(&mut nested["manifests"][0], &bytes);
            repoint(&mut top["manifests"][1], &to_bytes(&nested));
        }
    }
    fs::write(root.join("index.json"), to_bytes(&top)).unwrap();
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn gc_refuses_or_deletes_exactly_what_verify_calls_unreferenced(
        which in doc(),
        edits in prop::collection::vec(edit(), 1..3),
    ) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("l");
        let f = build(&root);
        let stored: BTreeSet<String> = blob_files(&root)
            .into_iter()
            .map(|n| n.trim_start_matches("sha256/").to_string())
            .collect();
        let mut v = f.docs.iter().find(|(d, _)| *d == which).unwrap().1.clone();
        for e in &edits {
            apply(&mut v, e, &stored);
        }
        store_edit(&root, &f, which, v);

        let report = verify_layout(&root, &VerifyOptions::default()).unwrap();
        let unreferenced: BTreeSet<String> = report
            .findings
            .iter()
            .filter(|x| x.kind == IssueKind::Unreferenced)
            .filter_map(|x| x.digest.as_deref().map(blob_name))
            .collect();
        let before = snapshot(&root);
        let files_before = blob_files(&root);
        let layout = Layout::open(&root).unwrap();
        match gc(&layout, &GcOptions::default()) {
            Err(_) => {
                let mut after = snapshot(&root);
                after.remove(".ocikit.lock");
                prop_assert_eq!(after, before, "a refused gc changed the layout");
            }
            Ok(r) => {
                // gc ran, so verify must accept the graph of documents: its
                // only errors may be about leaves (configs and layers, which
                // reference nothing and which gc does not read).
                let graph_errors: Vec<&String> = report
                    .errors()
                    .filter(|x| !x.path.ends_with("> config") && !x.path.contains("> layers["))
                    .map(|x| &x.message)
                    .collect();
                prop_assert!(graph_errors.is_empty(),
                    "gc ran on a graph verify refuses: {:?}", graph_errors);
                let removed: BTreeSet<String> =
                    r.remove.iter().map(|x| blob_name(&x.digest)).collect();
                prop_assert_eq!(&removed, &unreferenced,
                    "gc removed other blobs than verify calls unreferenced; verify said {:?}",
                    report.findings.iter().map(|x| &x.message).collect::<Vec<_>>());
                let expected: BTreeSet<String> =
                    files_before.difference(&removed).cloned().collect();
                prop_assert_eq!(blob_files(&root), expected);
                // Nothing verify found reachable went missing.
                let again = verify_layout(&root, &VerifyOptions::default()).unwrap();
                let missing_before = report.findings.iter().filter(|x| x.kind == IssueKind::Missing).count();
                let missing_after = again.findings.iter().filter(|x| x.kind == IssueKind::Missing).count();
                prop_assert_eq!(missing_before, missing_after, "gc made reachable blobs missing");
            }
        }
    }
}
