//! `ocikit referrers` and `ocikit attach`: OCI 1.1 referrers found in real
//! producers' layouts (oras/zot, notation, regclient), the demo's SBOM, and
//! artifacts attached by ocikit travelling through gc, copy, export and import.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

// ---------------------------------------------------------------- the expected set, from the files

/// One referrer as the layout's own files say: (what it refers to, its
/// digest, its artifact type or else its config's media type, its size).
type Edge = (String, String, Option<String>, i64);

/// A stored referrer: (digest, artifact type, size, annotations).
type Stored = (String, Option<String>, i64, Value);

/// Every stored JSON document with a `subject`, read straight from
/// `blobs/sha256`: subject digest → (digest, artifact type, size, annotations).
fn stored_referrers(root: &Path) -> BTreeMap<String, Vec<Stored>> {
    let mut m: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for e in fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let bytes = fs::read(e.path()).unwrap();
        if bytes.first() != Some(&b'{') {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        let Some(subject) = v["subject"]["digest"].as_str() else {
            continue;
        };
        let digest = format!("sha256:{}", e.file_name().to_string_lossy());
        let artifact_type = v["artifactType"]
            .as_str()
            .or_else(|| v["config"]["mediaType"].as_str())
            .map(str::to_string);
        m.entry(subject.to_string()).or_default().push((
            digest,
            artifact_type,
            bytes.len() as i64,
            v.get("annotations").cloned().unwrap_or(Value::Null),
        ));
    }
    m
}

/// The documents `referrers L:TAG` looks at: the tagged one and, for an
/// index, every entry below it.
fn subjects_of(root: &Path, digest: &str, out: &mut Vec<String>) {
    if out.iter().any(|d| d == digest) {
        return;
    }
    out.push(digest.to_string());
    let v: Value = serde_json::from_slice(&blob_bytes(root, digest)).unwrap();
    if let Some(list) = v["manifests"].as_array() {
        for e in list {
            subjects_of(root, e["digest"].as_str().unwrap(), out);
        }
    }
}

/// Every referrer reachable from `subjects`, recursively, as edges.
fn expected_edges(root: &Path, subjects: &[String]) -> BTreeSet<Edge> {
    let stored = stored_referrers(root);
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = subjects.to_vec();
    let mut done = BTreeSet::new();
    while let Some(s) = todo.pop() {
        if !done.insert(s.clone()) {
            continue;
        }
        for (d, t, size, _) in stored.get(&s).map(Vec::as_slice).unwrap_or(&[]) {
            out.insert((s.clone(), d.clone(), t.clone(), *size));
            todo.push(d.clone());
        }
    }
    out
}

/// The edges of a `referrers --json` document: each node with the subject or
/// parent it hangs under.
fn reported_edges(doc: &Value) -> BTreeSet<Edge> {
    fn walk(under: &str, nodes: &Value, nested: bool, out: &mut BTreeSet<Edge>) {
        for n in nodes.as_array().unwrap() {
            let d = n["digest"].as_str().unwrap().to_string();
            if nested {
                assert_eq!(
                    n["parent"], under,
                    "a nested referrer names its parent: {n}"
                );
            } else {
                assert_eq!(
                    n.get("parent"),
                    Some(&Value::Null),
                    "a first-level referrer has no parent: {n}"
                );
            }
            out.insert((
                under.to_string(),
                d.clone(),
                n["artifactType"].as_str().map(str::to_string),
                n["size"].as_i64().unwrap(),
            ));
            walk(&d, &n["referrers"], true, out);
        }
    }
    let mut out = BTreeSet::new();
    for s in doc["subjects"].as_array().unwrap() {
        walk(
            s["digest"].as_str().unwrap(),
            &s["referrers"],
            false,
            &mut out,
        );
    }
    out
}

fn referrers_json(args: &[&str]) -> Value {
    let mut a = vec!["referrers"];
    a.extend_from_slice(args);
    a.push("--json");
    serde_json::from_slice(&ocikit_ok(&a).stdout).unwrap()
}

/// Checks every tag of a corpus layout; returns how many referrers were found.
fn check_layout(root: &Path) -> usize {
    let mut found = 0;
    for tag in index_tags(root) {
        let entry = index_entry_first(root, &tag);
        let mut subjects = Vec::new();
        subjects_of(root, entry["digest"].as_str().unwrap(), &mut subjects);
        let expected = expected_edges(root, &subjects);
        let loc = format!("{}:{tag}", s(root));
        let doc = referrers_json(&[&loc]);
        let reported: Vec<String> = doc["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["digest"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(reported, subjects, "{loc}: the subjects looked at");
        assert_eq!(reported_edges(&doc), expected, "{loc}");
        // Annotations as stored.
        let stored = stored_referrers(root);
        for (_, d, _, _) in &expected {
            let ann = stored
                .values()
                .flatten()
                .find(|r| &r.0 == d)
                .map(|r| r.3.clone())
                .unwrap();
            let text = serde_json::to_string(&doc).unwrap();
            if let Some(obj) = ann.as_object() {
                for (k, v) in obj {
                    assert!(
                        text.contains(&format!("\"{k}\"")),
                        "{loc}: {d} annotation {k}"
                    );
                    assert!(
                        text.contains(&v.to_string()),
                        "{loc}: {d} annotation {k}={v}"
                    );
                }
            }
        }
        // The tree names every referrer; none found prints nothing.
        let tree = stdout(&ocikit_ok(["referrers", &loc]));
        for (_, d, _, _) in &expected {
            assert!(tree.contains(&d[..19]), "{loc}: tree lacks {d}:\n{tree}");
        }
        if expected.is_empty() {
            assert_eq!(tree, "", "{loc}: nothing to list prints nothing");
        }
        found += expected.len();
    }
    found
}

/// The first `index.json` entry tagged `tag` (corpus layouts repeat tags).
fn index_entry_first(root: &Path, tag: &str) -> Value {
    index_json(root)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .cloned()
        .unwrap()
}

fn corpus_or_skip() -> Option<PathBuf> {
    let c = corpus();
    if c.is_none() {
        eprintln!("SKIPPING: OCIKIT_CORPUS unset");
    }
    c
}

#[test]
fn oras_zot_layout_lists_its_referrers_nested_and_per_platform() {
    let Some(c) = corpus_or_skip() else { return };
    let root = c.join("oras/test/e2e/testdata/zot/command/artifacts");
    let found = check_layout(&root);
    assert!(
        found >= 8,
        "only {found} referrers found in {}",
        root.display()
    );

    // Spot checks from the files as read by hand.
    let doc = referrers_json(&[&format!("{}:foobar", s(&root))]);
    let sbom = &doc["subjects"][0]["referrers"][0];
    assert_eq!(
        sbom["digest"],
        "sha256:e2c6633a79985906f1ed55c592718c73c41e809fb9818de232a635904a74d48d"
    );
    // No artifactType: the config's media type stands in (OCI 1.1).
    assert_eq!(sbom["artifactType"], "test/sbom.file");
    let sig = &sbom["referrers"][0];
    assert_eq!(sig["artifactType"], "test/signature.file");
    assert_eq!(sig["parent"], sbom["digest"]);

    // An index: the index itself and each platform's manifest.
    let multi = format!("{}:multi", s(&root));
    let doc = referrers_json(&[&multi]);
    assert_eq!(doc["subjects"].as_array().unwrap().len(), 4);
    let amd64 = referrers_json(&[&multi, "--platform", "linux/amd64"]);
    assert_eq!(amd64["subjects"].as_array().unwrap().len(), 1);
    assert_eq!(
        amd64["subjects"][0]["referrers"][0]["digest"],
        "sha256:c5e00045954a70e3fd28307dd543d4cc158946117943700b8f520f72ddca031f"
    );
    let arm64 = ocikit_ok(["referrers", &multi, "--platform", "linux/arm64"]);
    assert_eq!(stdout(&arm64), "", "no referrer of the arm64 manifest");
    // The index referrer without artifactType has none.
    let idx = &doc["subjects"][0]["referrers"];
    assert!(idx
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["mediaType"] == OCI_INDEX && n.get("artifactType") == Some(&Value::Null)));

    // The filter applies at every depth.
    let v138 = format!("{}:v1.3.8", s(&root));
    let only = referrers_json(&[&v138, "--artifact-type", "sbom/file"]);
    let edges = reported_edges(&only);
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert!(edges.iter().all(|e| e.2.as_deref() == Some("sbom/file")));
}

#[test]
fn notation_layouts_list_their_signatures() {
    let Some(c) = corpus_or_skip() else { return };
    let dir = c.join("notation/test/e2e/testdata/registry/oci_layout");
    let mut total = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let root = e.unwrap().path();
        total += check_layout(&root);
    }
    assert!(
        total >= 8,
        "only {total} signatures found under {}",
        dir.display()
    );

    let root = dir.join("e2e-valid-multiple-signatures");
    let doc = referrers_json(&[&format!("{}:v1", s(&root))]);
    let sigs: BTreeSet<(String, String)> = doc["subjects"][0]["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["digest"].as_str().unwrap().to_string(),
                n["artifactType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let t = "application/vnd.cncf.notary.signature".to_string();
    assert_eq!(
        sigs,
        BTreeSet::from([
            (
                "sha256:90ceaff260d657d797c408ac73564a9c7bb9d86055877c2a811f0e63b8c6524f".into(),
                t.clone()
            ),
            (
                "sha256:c3ebe4a20b6832328fc5078a7795ddc1114b896e13fca2add38109c3866b5fbf".into(),
                t
            ),
        ])
    );
}

#[test]
fn regclient_layout_lists_its_referrers() {
    let Some(c) = corpus_or_skip() else { return };
    let found = check_layout(&c.join("regclient/testdata/testrepo"));
    assert!(found > 0, "regclient testrepo holds referrers");
}

// ---------------------------------------------------------------- the demo's SBOM

#[test]
fn demo_sbom_is_listed_under_its_platform() {
    let demo = demo();
    let stored = stored_referrers(&demo);
    assert_eq!(stored.len(), 1, "the demo stores one referrer: {stored:?}");
    let (subject, list) = stored.iter().next().unwrap();
    let (sbom, _, size, _) = &list[0];
    let doc = referrers_json(&[&format!("{}:1.0", s(&demo))]);
    let edges = reported_edges(&doc);
    assert_eq!(
        edges,
        BTreeSet::from([(
            subject.clone(),
            sbom.clone(),
            Some("application/spdx+json".to_string()),
            *size
        )])
    );
    let amd64 = doc["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["digest"] == *subject)
        .unwrap();
    assert_eq!(amd64["platform"], "linux/amd64");
    let tree = stdout(&ocikit_ok(["referrers", &format!("{}:1.0", s(&demo))]));
    assert!(
        tree.contains("linux/amd64") && tree.contains(&sbom[..19]),
        "{tree}"
    );
    assert!(tree.contains("application/spdx+json"), "{tree}");
    // None for arm64 or the legacy image: nothing printed, exit 0.
    for args in [
        vec![
            format!("{}:1.0", s(&demo)),
            "--platform".into(),
            "linux/arm64".into(),
        ],
        vec![format!("{}:legacy", s(&demo))],
    ] {
        let o = ocikit_ok(std::iter::once("referrers".to_string()).chain(args));
        assert_eq!(stdout(&o), "");
    }
}

// ---------------------------------------------------------------- attach

fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let a = dir.join("sbom.spdx.json");
    let b = dir.join("notes.txt");
    fs::write(&a, br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    fs::write(&b, b"built on a quiet afternoon\n").unwrap();
    (a, b)
}

fn attach(target: &str, artifact_type: &str, files: &[&Path], extra: &[&str]) -> String {
    let mut args = vec![
        "attach".to_string(),
        target.to_string(),
        "--artifact-type".into(),
        artifact_type.into(),
    ];
    args.extend(files.iter().map(|f| s(f)));
    args.extend(extra.iter().map(|x| x.to_string()));
    let out = stdout(&ocikit_ok(&args));
    let d = out.trim().to_string();
    assert!(d.starts_with("sha256:") && d.len() == 71, "{out:?}");
    d
}

fn verify_clean(loc: &str) {
    let o = ocikit(["verify", loc]);
    assert_eq!(code(&o), 0, "verify {loc}: {}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("0 errors, 0 warnings"),
        "{}",
        stdout(&o)
    );
}

/// Every referrer digest a `referrers --json` document names.
fn listed(doc: &Value) -> BTreeSet<String> {
    reported_edges(doc).into_iter().map(|e| e.1).collect()
}

#[test]
fn attach_writes_the_specified_manifest_and_it_travels() {
    let (t, demo) = demo_copy();
    let (a, b) = inputs(t.path());
    let tag = format!("{}:1.0", s(&demo));
    let index = index_entry(&demo, "1.0");
    let d = attach(
        &tag,
        "application/vnd.example.bundle",
        &[&a, &b],
        &["--annotation", "org.example.kind=test"],
    );

    // The bytes, as specified.
    let bytes = blob_bytes(&demo, &d);
    assert_eq!(digest_of(&bytes), d);
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], OCI_MANIFEST);
    assert_eq!(m["artifactType"], "application/vnd.example.bundle");
    assert_eq!(m["config"]["mediaType"], OCI_EMPTY);
    assert_eq!(m["config"]["digest"], EMPTY_DIGEST);
    assert_eq!(m["config"]["size"], 2);
    assert_eq!(blob_bytes(&demo, EMPTY_DIGEST), b"{}");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (l, f) in layers.iter().zip([&a, &b]) {
        let content = fs::read(f).unwrap();
        assert_eq!(l["mediaType"], "application/octet-stream");
        assert_eq!(l["digest"], digest_of(&content));
        assert_eq!(l["size"], content.len());
        assert_eq!(
            l["annotations"]["org.opencontainers.image.title"],
            f.file_name().unwrap().to_str().unwrap()
        );
        assert_eq!(blob_bytes(&demo, l["digest"].as_str().unwrap()), content);
    }
    // The subject of an index REF is the index itself.
    assert_eq!(m["subject"]["mediaType"], OCI_INDEX);
    assert_eq!(m["subject"]["digest"], index["digest"]);
    assert_eq!(m["subject"]["size"], index["size"]);
    assert!(
        m["subject"].get("annotations").is_none(),
        "{}",
        m["subject"]
    );
    // Only the annotations given: no creation time.
    assert_eq!(
        m["annotations"],
        serde_json::json!({"org.example.kind": "test"})
    );
    // Not tagged.
    assert_eq!(index_json(&demo), index_json(&common::demo()));
    verify_clean(&s(&demo));

    // Reproducible: the same inputs, the same digest, nothing new stored.
    let before = snapshot(&demo.join("blobs"));
    assert_eq!(
        attach(
            &tag,
            "application/vnd.example.bundle",
            &[&a, &b],
            &["--annotation", "org.example.kind=test"]
        ),
        d
    );
    assert_eq!(snapshot(&demo.join("blobs")), before);

    // referrers shows it under the index, with both layers.
    let doc = referrers_json(&[&tag]);
    let idx = &doc["subjects"][0];
    assert_eq!(idx["digest"], index["digest"]);
    let node = idx["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["digest"] == d.as_str())
        .unwrap_or_else(|| panic!("{d} not listed: {doc}"));
    assert_eq!(node["artifactType"], "application/vnd.example.bundle");
    assert_eq!(node["size"], bytes.len());
    assert_eq!(node["annotations"]["org.example.kind"], "test");
    let titles: Vec<&str> = node["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["sbom.spdx.json", "notes.txt"]);
    let tree = stdout(&ocikit_ok(["referrers", &tag]));
    assert!(tree.contains(&d[..19]) && tree.contains("application/vnd.example.bundle"));

    // gc keeps it.
    let o = ocikit_ok(["gc", &s(&demo)]);
    assert!(blob_files(&demo).contains(&blob_name(&d)), "{}", stdout(&o));
    for l in layers {
        assert!(blob_files(&demo).contains(&blob_name(l["digest"].as_str().unwrap())));
    }
    assert!(listed(&referrers_json(&[&tag])).contains(&d));
    verify_clean(&s(&demo));

    // copy carries it; --no-referrers does not.
    let out = t.path().join("copied");
    ocikit_ok(["copy", &tag, &s(&out)]);
    assert_eq!(blob_bytes(&out, &d), bytes);
    assert!(listed(&referrers_json(&[&format!("{}:1.0", s(&out))])).contains(&d));
    verify_clean(&s(&out));
    let bare = t.path().join("bare");
    ocikit_ok(["copy", &tag, &s(&bare), "--no-referrers"]);
    assert!(!blob_files(&bare).contains(&blob_name(&d)));
    assert_eq!(
        stdout(&ocikit_ok(["referrers", &format!("{}:1.0", s(&bare))])),
        ""
    );
    verify_clean(&s(&bare));

    // export to an oci-archive, then import: it comes along.
    let tar = t.path().join("demo.tar");
    ocikit_ok(["export", &tag, &format!("oci-archive:{}", s(&tar))]);
    verify_clean(&s(&tar));
    assert!(listed(&referrers_json(&[&format!("{}:1.0", s(&tar))])).contains(&d));
    let imported = t.path().join("imported");
    ocikit_ok(["import", &s(&tar), &s(&imported)]);
    assert_eq!(blob_bytes(&imported, &d), bytes);
    assert!(listed(&referrers_json(&[&format!("{}:1.0", s(&imported))])).contains(&d));
    verify_clean(&s(&imported));
}

#[test]
fn attach_to_a_manifest_without_annotations_has_none() {
    let (t, demo) = demo_copy();
    let (a, _) = inputs(t.path());
    let m = index_entry(&demo, "legacy");
    let d = attach(
        &format!("{}:legacy", s(&demo)),
        "application/vnd.example.sig",
        &[&a],
        &["--media-type", "application/vnd.example.sig.v1+json"],
    );
    let v: Value = serde_json::from_slice(&blob_bytes(&demo, &d)).unwrap();
    assert!(v.get("annotations").is_none(), "{v}");
    assert_eq!(v["subject"]["digest"], m["digest"]);
    assert_eq!(v["subject"]["mediaType"], DOCKER_MANIFEST);
    assert_eq!(
        v["layers"][0]["mediaType"],
        "application/vnd.example.sig.v1+json"
    );
    // An explicit creation time is kept, and changes the digest.
    let d2 = attach(
        &format!("{}:legacy", s(&demo)),
        "application/vnd.example.sig",
        &[&a],
        &[
            "--media-type",
            "application/vnd.example.sig.v1+json",
            "--annotation",
            "org.opencontainers.image.created=2024-01-01T00:00:00Z",
        ],
    );
    assert_ne!(d, d2);
    let v2: Value = serde_json::from_slice(&blob_bytes(&demo, &d2)).unwrap();
    assert_eq!(
        v2["annotations"]["org.opencontainers.image.created"],
        "2024-01-01T00:00:00Z"
    );
    verify_clean(&s(&demo));
}

#[test]
fn referrers_of_referrers_nest_and_the_filter_applies_at_every_depth() {
    let (t, demo) = demo_copy();
    let (a, b) = inputs(t.path());
    let tag = format!("{}:1.0", s(&demo));
    let sbom = attach(&tag, "application/x-sbom", &[&a], &[]);
    let other = attach(&tag, "application/x-other", &[&b], &[]);
    let sig = attach(
        &format!("{}@{sbom}", s(&demo)),
        "application/x-sig",
        &[&b],
        &[],
    );
    let sig_of_sig = attach(
        &format!("{}@{sig}", s(&demo)),
        "application/x-sig",
        &[&a],
        &[],
    );
    verify_clean(&s(&demo));

    let doc = referrers_json(&[&tag]);
    let idx = &doc["subjects"][0]["referrers"];
    let node = idx
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["digest"] == sbom.as_str())
        .unwrap();
    assert_eq!(node["referrers"][0]["digest"], sig.as_str());
    assert_eq!(node["referrers"][0]["parent"], sbom.as_str());
    assert_eq!(
        node["referrers"][0]["referrers"][0]["digest"],
        sig_of_sig.as_str()
    );
    assert_eq!(node["referrers"][0]["referrers"][0]["parent"], sig.as_str());
    assert!(listed(&doc).contains(&other));

    // In the tree the signature sits below the SBOM, indented further.
    let tree = stdout(&ocikit_ok(["referrers", &tag]));
    let line = |d: &str| {
        tree.lines()
            .enumerate()
            .find(|(_, l)| l.contains(&d[..19]))
            .unwrap_or_else(|| panic!("{d} not in\n{tree}"))
    };
    let indent = |l: &str| l.find("sha256:").unwrap();
    let (ls, lsbom) = line(&sbom);
    let (lg, lsig) = line(&sig);
    let (lgg, lsigsig) = line(&sig_of_sig);
    assert!(ls < lg && lg < lgg, "{tree}");
    assert!(
        indent(lsbom) < indent(lsig) && indent(lsig) < indent(lsigsig),
        "{tree}"
    );

    // Filtering: one type, at every depth.
    let sboms = referrers_json(&[&tag, "--artifact-type", "application/x-sbom"]);
    assert_eq!(listed(&sboms), BTreeSet::from([sbom.clone()]));
    let others = referrers_json(&[&tag, "--artifact-type", "application/x-other"]);
    assert_eq!(listed(&others), BTreeSet::from([other.clone()]));
    // The signatures hang under an SBOM, which the filter leaves out.
    let o = ocikit_ok(["referrers", &tag, "--artifact-type", "application/x-sig"]);
    assert_eq!(stdout(&o), "");
    // From the SBOM down, the signatures are found.
    let from_sbom = referrers_json(&[
        &format!("{}@{sbom}", s(&demo)),
        "--artifact-type",
        "application/x-sig",
    ]);
    assert_eq!(listed(&from_sbom), BTreeSet::from([sig, sig_of_sig]));
}

#[test]
fn attach_refusals_change_nothing() {
    let (t, demo) = demo_copy();
    let (a, _) = inputs(t.path());
    let loc = s(&demo);
    let tag = format!("{loc}:1.0");
    let dup = t.path().join("sub");
    fs::create_dir(&dup).unwrap();
    fs::write(dup.join("notes.txt"), b"x").unwrap();
    let missing = t.path().join("missing.bin");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                format!("{loc}:nope"),
                "--artifact-type".into(),
                "a/b".into(),
                s(&a),
            ],
            "nope",
        ),
        (
            vec![
                format!("{loc}@sha256:{}", "0".repeat(64)),
                "--artifact-type".into(),
                "a/b".into(),
                s(&a),
            ],
            "sha256:0000",
        ),
        (
            vec![
                tag.clone(),
                "--artifact-type".into(),
                "a/b".into(),
                s(&a),
                s(&missing),
            ],
            "missing.bin",
        ),
        (
            vec![
                tag.clone(),
                "--artifact-type".into(),
                "a/b".into(),
                s(t.path()),
            ],
            "regular file",
        ),
        (
            vec![
                tag.clone(),
                "--artifact-type".into(),
                "a/b".into(),
                s(&t.path().join("notes.txt")),
                s(&dup.join("notes.txt")),
            ],
            "same base name",
        ),
        (
            vec![
                tag.clone(),
                "--artifact-type".into(),
                "not a type".into(),
                s(&a),
            ],
            "media type",
        ),
        (
            vec![
                tag.clone(),
                "--artifact-type".into(),
                "a/b".into(),
                s(&a),
                "--annotation".into(),
                "novalue".into(),
            ],
            "KEY=VALUE",
        ),
    ];
    let before = snapshot(&demo);
    for (args, says) in &cases {
        let o = ocikit(std::iter::once("attach".to_string()).chain(args.iter().cloned()));
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert_eq!(snapshot(&demo), before, "{args:?} changed the layout");
    }

    // An index.json verify refuses (an entry with a negative size).
    let mut index = index_json(&demo);
    index["manifests"][1]["size"] = Value::from(-1);
    fs::write(demo.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let before = snapshot(&demo);
    let o = ocikit(["attach", &tag, "--artifact-type", "a/b", &s(&a)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(snapshot(&demo), before);

    // An archive is read-only.
    let tar = t.path().join("d.tar");
    ocikit_ok([
        "export",
        &format!("{}:legacy", s(&common::demo())),
        &s(&tar),
    ]);
    let o = ocikit([
        "attach",
        &format!("{}:legacy", s(&tar)),
        "--artifact-type",
        "a/b",
        &s(&a),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn referrers_errors_exit_2() {
    let demo = demo();
    let o = ocikit(["referrers", &format!("{}:nope", s(&demo))]);
    assert_eq!(code(&o), 2);
    assert_eq!(stdout(&o), "");
    let o = ocikit([
        "referrers",
        &format!("{}:1.0", s(&demo)),
        "--platform",
        "linux/s390x",
    ]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("s390x"), "{}", stderr(&o));
}

#[test]
fn attach_json_describes_what_was_written() {
    let (_t, demo) = demo_copy();
    let file = demo.parent().unwrap().join("note.txt");
    fs::write(&file, b"note\n").unwrap();
    let target = format!("{}:legacy", s(&demo));
    let o = ocikit([
        "attach",
        &target,
        "--artifact-type",
        "application/x-note",
        &s(&file),
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let digest = v["manifest"]["digest"].as_str().unwrap();
    // The digest names the stored manifest, whose subject is the one reported.
    let m: serde_json::Value = serde_json::from_slice(&blob_bytes(&demo, digest)).unwrap();
    assert_eq!(m["subject"]["digest"], v["subject"]["digest"]);
    assert_eq!(
        v["subject"]["digest"],
        index_entry(&demo, "legacy")["digest"]
    );
    assert_eq!(v["layers"][0]["digest"], digest_of(b"note\n"));
    assert_eq!(v["manifest"]["artifactType"], "application/x-note");
    // Without --json: the same digest, alone.
    let o = ocikit([
        "attach",
        &target,
        "--artifact-type",
        "application/x-note",
        &s(&file),
    ]);
    assert_eq!(stdout(&o).trim(), digest);
}
