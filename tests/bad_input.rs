//! Hostile and broken input: every case builds a broken layout in a temporary
//! directory, runs the CLI on it and checks the exit code (2 operational error,
//! 1 negative finding), that the one-line error names the file, digest or ref at
//! fault, that nothing panics, and that the layout is left byte-for-byte as it
//! was.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------- running

/// Runs `ocikit ARGS`, checking it did not panic.
fn run(args: &[&str]) -> Run {
    run_checked(args)
}

/// `verify --json [--deep] ROOT`: the exit code and the parsed report.
fn verify_json(root: &Path, deep: bool) -> (i32, Value) {
    let root = s(root);
    let mut args = vec!["verify", "--json", root.as_str()];
    if deep {
        args.push("--deep");
    }
    let r = run(&args);
    assert!(
        r.code == 0 || r.code == 1,
        "verify {args:?} exited {}: {}",
        r.code,
        r.err
    );
    let v: Value = serde_json::from_str(&r.out).unwrap_or_else(|e| {
        panic!(
            "verify {args:?} printed no JSON ({e}):\n{}\n{}",
            r.out, r.err
        )
    });
    assert_eq!(v["schemaVersion"], 1);
    assert_eq!(v["ok"], r.code == 0, "{v:#}");
    let findings = v["findings"].as_array().expect("findings array");
    let errors = findings.iter().filter(|f| f["severity"] == "error").count();
    assert_eq!(v["errors"], errors, "{v:#}");
    assert_eq!(v["warnings"], findings.len() - errors, "{v:#}");
    (r.code, v)
}

fn findings(v: &Value) -> &Vec<Value> {
    v["findings"].as_array().expect("findings array")
}

/// The findings of one kind.
fn of_kind<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
    findings(v).iter().filter(|f| f["kind"] == kind).collect()
}

/// Asserts verify failed (exit 1) with an error `kind` about `digest` (when
/// given); returns that finding.
fn assert_finding(code: i32, v: &Value, kind: &str, digest: Option<&str>) -> Value {
    assert_eq!(code, 1, "verify should report an error:\n{v:#}");
    let f = of_kind(v, kind)
        .into_iter()
        .find(|f| digest.is_none_or(|d| f["digest"] == d))
        .unwrap_or_else(|| panic!("no {kind} finding for {digest:?}:\n{v:#}"))
        .clone();
    assert_eq!(f["severity"], "error", "{f:#}");
    if let Some(d) = digest {
        // The digest itself, or the blob's path (which spells its encoded part).
        let encoded = d.split_once(':').map_or(d, |(_, e)| e);
        assert!(
            f["message"].as_str().unwrap().contains(encoded),
            "the message should name {d}: {f:#}"
        );
    }
    f
}

/// The kinds of the error findings, sorted and deduplicated.
fn error_kinds(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = findings(v)
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k.dedup();
    k
}

// ---------------------------------------------------------------- building

/// A broken layout at `<tempdir>/layout`; the temporary directory may also hold
/// files outside the layout (sentinels, symlink targets).
struct Case {
    t: tempfile::TempDir,
    root: PathBuf,
    /// The digest (or file) at fault, as the builder reports it.
    culprit: String,
}

impl Case {
    fn root(&self) -> String {
        s(&self.root)
    }
    fn at(&self, reference: &str) -> String {
        format!("{}:{reference}", self.root())
    }
    /// Everything in the temporary directory, layout and outside files alike.
    fn snapshot(&self) -> BTreeMap<String, String> {
        light_snapshot(self.t.path())
    }
}

type Builder = fn(&Path) -> String;

fn build(f: Builder) -> Case {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("layout");
    let culprit = f(&root);
    Case { t, root, culprit }
}

/// Runs `f` on the case and asserts nothing in its temporary directory changed.
fn unchanged(c: &Case, f: impl FnOnce(&Case)) {
    let before = c.snapshot();
    f(c);
    assert_eq!(before, c.snapshot(), "ocikit changed {}", c.root.display());
}

/// Like [`snapshot`], but files over 64 MiB (the sparse "huge document"
/// files) are recorded by length and mtime instead of being read and hashed.
fn light_snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let meta = e.path().symlink_metadata().unwrap();
        let ft = meta.file_type();
        let v = if ft.is_symlink() {
            format!("link:{}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_dir() {
            "dir".to_string()
        } else if meta.len() > 64 << 20 {
            format!("len:{} mtime:{:?}", meta.len(), meta.modified().unwrap())
        } else {
            sha256_hex(&fs::read(e.path()).unwrap())
        };
        m.insert(rel, v);
    }
    m
}

fn tagged(desc: &Value, tag: &str) -> Value {
    let mut d = desc.clone();
    d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    d
}

fn index_of(entries: Vec<Value>) -> Value {
    json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
}

fn write_index(root: &Path, entries: Vec<Value>) {
    fs::write(root.join("index.json"), to_bytes(&index_of(entries))).unwrap();
}

fn simple_layer() -> Vec<u8> {
    tar(&[file("hello.txt", "hello\n")])
}

/// A one-image layout tagged `latest` whose layer descriptor and diff_id pass
/// through `edit` (which may also write blobs) before the config and manifest
/// are written. Returns the manifest descriptor.
fn image_with_layer(root: &Path, edit: impl FnOnce(&Path, &mut Value, &mut String)) -> Value {
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let (mut desc, mut diff_id) = put_layer(root, OCI_GZIP, &simple_layer());
    edit(root, &mut desc, &mut diff_id);
    let m = put_image(root, "amd64", None, &[(desc, diff_id)], false);
    write_layout_files(root, &index_of(vec![tagged(&m, "latest")]));
    m
}

const SENTINEL: &str = "OCIKIT-SENTINEL-do-not-read-4f1c9e";

/// A file outside the layout (next to it) whose content must never show up.
fn sentinel(root: &Path) -> PathBuf {
    let p = root.parent().unwrap().join("secret");
    fs::write(
        &p,
        format!("{{\"schemaVersion\":2,\"note\":\"{SENTINEL}\"}}"),
    )
    .unwrap();
    p
}

fn d(v: &Value) -> String {
    v["digest"].as_str().unwrap().to_string()
}

// ---- the broken layouts

fn missing_oci_layout(root: &Path) -> String {
    build_simple(root);
    fs::remove_file(root.join("oci-layout")).unwrap();
    "oci-layout".into()
}

fn layout_version_2(root: &Path) -> String {
    build_simple(root);
    fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    "oci-layout".into()
}

fn index_not_json(root: &Path) -> String {
    build_simple(root);
    fs::write(root.join("index.json"), b"{not json").unwrap();
    "index.json".into()
}

fn index_empty(root: &Path) -> String {
    build_simple(root);
    fs::write(root.join("index.json"), b"").unwrap();
    "index.json".into()
}

fn index_array(root: &Path) -> String {
    let (m, _, _) = build_simple(root);
    fs::write(
        root.join("index.json"),
        to_bytes(&json!([tagged(&m, "latest")])),
    )
    .unwrap();
    "index.json".into()
}

fn index_dir(root: &Path) -> String {
    build_simple(root);
    fs::remove_file(root.join("index.json")).unwrap();
    fs::create_dir(root.join("index.json")).unwrap();
    fs::write(root.join("index.json/.keep"), b"").unwrap();
    "index.json".into()
}

/// index.json holding an image manifest (the image's own manifest bytes).
fn index_is_a_manifest(root: &Path) -> String {
    let (m, _, _) = build_simple(root);
    fs::copy(blob_path(root, &m), root.join("index.json")).unwrap();
    "index.json".into()
}

/// The demo with the `1.0` entry (an image index) labelled as a manifest.
fn entry_manifest_but_index(root: &Path) -> String {
    build_demo(root);
    let mut idx: Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["mediaType"], OCI_INDEX);
    idx["manifests"][0]["mediaType"] = json!(OCI_MANIFEST);
    fs::write(root.join("index.json"), to_bytes(&idx)).unwrap();
    d(&idx["manifests"][0])
}

/// An entry labelled as a manifest whose blob is an index with no `mediaType`
/// of its own (only its shape, `manifests`, tells).
fn entry_manifest_but_index_shape(root: &Path) -> String {
    let (m, _, _) = build_simple(root);
    let mut entry = m.clone();
    entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let idx = put_blob(
        root,
        OCI_MANIFEST,
        &to_bytes(&json!({"schemaVersion": 2, "manifests": [entry]})),
    );
    write_index(root, vec![tagged(&idx, "latest")]);
    d(&idx)
}

/// An entry labelled as an index whose blob is a manifest.
fn entry_index_but_manifest(root: &Path) -> String {
    let (m, _, _) = build_simple(root);
    let mut e = tagged(&m, "latest");
    e["mediaType"] = json!(OCI_INDEX);
    write_index(root, vec![e]);
    d(&m)
}

/// A manifest that also has `manifests` (CVE-2021-41190).
fn ambiguous_manifest(root: &Path) -> String {
    let (m, cfg, layer) = build_simple(root);
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg,
        "layers": [layer],
        "manifests": [m],
    });
    let amb = put_blob(root, OCI_MANIFEST, &to_bytes(&doc));
    write_index(root, vec![tagged(&amb, "latest")]);
    d(&amb)
}

/// `index.json` itself with both `manifests` and `layers`.
fn ambiguous_index_json(root: &Path) -> String {
    let (m, _, layer) = build_simple(root);
    let mut idx = index_of(vec![tagged(&m, "latest")]);
    idx["layers"] = json!([layer]);
    fs::write(root.join("index.json"), to_bytes(&idx)).unwrap();
    "index.json".into()
}

/// A one-image layout whose index.json entry's digest is `bad(real digest)`.
fn entry_with_digest(root: &Path, bad: impl FnOnce(&str) -> String) -> String {
    let (m, _, _) = build_simple(root);
    let digest = bad(&d(&m));
    let mut e = tagged(&m, "latest");
    e["digest"] = json!(digest);
    write_index(root, vec![e]);
    digest
}

/// `sha256:../../../secret` resolves (if ever joined naively) to the sentinel
/// next to the layout.
fn digest_traversal(root: &Path) -> String {
    let r = entry_with_digest(root, |_| "sha256:../../../secret".into());
    sentinel(root);
    r
}

fn digest_wrong_length(root: &Path) -> String {
    entry_with_digest(root, |real| real[..70].to_string())
}

fn digest_uppercase(root: &Path) -> String {
    entry_with_digest(root, |real| {
        format!("sha256:{}", real[7..].to_ascii_uppercase())
    })
}

/// `foo:abc`: grammar-valid, unverifiable. A blob file exists at
/// `blobs/foo/abc` (holding the sentinel) and must not be read.
fn digest_unknown_algorithm(root: &Path) -> String {
    let r = entry_with_digest(root, |_| "foo:abc".into());
    fs::create_dir_all(root.join("blobs/foo")).unwrap();
    fs::write(
        root.join("blobs/foo/abc"),
        format!("{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"layers\":[],\"note\":\"{SENTINEL}\"}}"),
    )
    .unwrap();
    sentinel(root);
    r
}

/// A layer descriptor (inside a manifest) whose digest climbs out of the layout.
fn layer_digest_traversal(root: &Path) -> String {
    image_with_layer(root, |_, desc, _| {
        desc["digest"] = json!("sha256:../../../secret")
    });
    sentinel(root);
    "sha256:../../../secret".into()
}

/// The index.json entry says the manifest is one byte longer than it is.
fn manifest_size_off_by_one(root: &Path) -> String {
    let (m, _, _) = build_simple(root);
    let mut e = tagged(&m, "latest");
    e["size"] = json!(m["size"].as_u64().unwrap() + 1);
    write_index(root, vec![e]);
    d(&m)
}

fn layer_size_off_by_one(root: &Path) -> String {
    let mut digest = String::new();
    image_with_layer(root, |_, desc, _| {
        desc["size"] = json!(desc["size"].as_u64().unwrap() + 1);
        digest = d(desc);
    });
    digest
}

fn layer_wrong_content(root: &Path) -> String {
    let (_, _, layer) = build_simple(root);
    let p = blob_path(root, &layer);
    let mut bytes = fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    fs::write(&p, bytes).unwrap();
    d(&layer)
}

fn layer_truncated(root: &Path) -> String {
    let (_, _, layer) = build_simple(root);
    let p = blob_path(root, &layer);
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    d(&layer)
}

/// The layer is intact, but the config's diff_id is someone else's.
fn wrong_diff_id(root: &Path) -> String {
    let mut digest = String::new();
    image_with_layer(root, |_, desc, diff_id| {
        *diff_id = digest_of(b"not the layer's content");
        digest = d(desc);
    });
    digest
}

/// A layer labelled tar+gzip whose bytes are a plain tar.
fn gzip_not_gzip(root: &Path) -> String {
    let mut digest = String::new();
    image_with_layer(root, |root, desc, diff_id| {
        fs::remove_file(blob_path(root, desc)).unwrap();
        let plain = simple_layer();
        *desc = put_blob(root, OCI_GZIP, &plain);
        *diff_id = digest_of(&plain);
        digest = d(desc);
    });
    digest
}

/// A blob replaced by a symlink to a file outside the layout holding the very
/// same bytes.
fn symlink_blob(root: &Path, desc: &Value) {
    let p = blob_path(root, desc);
    let outside = root.parent().unwrap().join("outside-blob");
    fs::rename(&p, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &p).unwrap();
}

fn symlinked_layer(root: &Path) -> String {
    let (_, _, layer) = build_simple(root);
    symlink_blob(root, &layer);
    d(&layer)
}

fn symlinked_config(root: &Path) -> String {
    let (_, cfg, _) = build_simple(root);
    symlink_blob(root, &cfg);
    d(&cfg)
}

const HUGE: u64 = 300 << 20;

/// A config descriptor of 300 MiB naming a sparse file of that size.
fn huge_config(root: &Path) -> String {
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let (layer, _) = put_layer(root, OCI_GZIP, &simple_layer());
    let fake = digest_of(b"a 300 MiB config nobody should read");
    let f = fs::File::create(root.join("blobs/sha256").join(&fake[7..])).unwrap();
    f.set_len(HUGE).unwrap();
    let cfg = json!({"mediaType": OCI_CONFIG, "digest": fake, "size": HUGE});
    let manifest =
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [layer]});
    let m = put_blob(root, OCI_MANIFEST, &to_bytes(&manifest));
    write_layout_files(root, &index_of(vec![tagged(&m, "latest")]));
    fake
}

/// A 5 MiB index.json (valid JSON, padded with spaces).
fn huge_index_json(root: &Path) -> String {
    let (m, _, _) = build_simple(root);
    let mut bytes = to_bytes(&index_of(vec![tagged(&m, "latest")]));
    bytes.resize(5 << 20, b' ');
    fs::write(root.join("index.json"), bytes).unwrap();
    "index.json".into()
}

/// Every broken layout, for the no-panic sweep.
const ALL: &[(&str, Builder)] = &[
    ("missing oci-layout", missing_oci_layout),
    ("imageLayoutVersion 2.0.0", layout_version_2),
    ("index.json not JSON", index_not_json),
    ("index.json empty", index_empty),
    ("index.json an array", index_array),
    ("index.json a directory", index_dir),
    ("index.json a manifest", index_is_a_manifest),
    ("manifest entry, index blob", entry_manifest_but_index),
    (
        "manifest entry, index-shaped blob",
        entry_manifest_but_index_shape,
    ),
    ("index entry, manifest blob", entry_index_but_manifest),
    ("manifest with manifests", ambiguous_manifest),
    ("index.json with layers", ambiguous_index_json),
    ("digest ../../", digest_traversal),
    ("digest wrong length", digest_wrong_length),
    ("digest uppercase", digest_uppercase),
    ("digest foo:abc", digest_unknown_algorithm),
    ("layer digest ../../", layer_digest_traversal),
    ("manifest size +1", manifest_size_off_by_one),
    ("layer size +1", layer_size_off_by_one),
    ("layer wrong content", layer_wrong_content),
    ("layer truncated", layer_truncated),
    ("wrong diff_id", wrong_diff_id),
    ("gzip layer not gzip", gzip_not_gzip),
    ("symlinked layer", symlinked_layer),
    ("symlinked config", symlinked_config),
    ("300 MiB config", huge_config),
    ("5 MiB index.json", huge_index_json),
];

// ---------------------------------------------------------------- layout files

#[test]
fn missing_oci_layout_is_not_a_layout_for_readers_and_a_finding_for_verify() {
    let c = build(missing_oci_layout);
    unchanged(&c, |c| {
        let root = c.root();
        let at = c.at("latest");
        fails(&["ls", &root], &[&root, "oci-layout"]);
        fails(&["inspect", &at], &[&root, "oci-layout"]);
        fails(&["cat", &root, "index"], &[&root, "oci-layout"]);
        fails(&["cat", &at, "manifest"], &[&root, "oci-layout"]);
        // verify: index.json is there, so this is a (broken) layout: the
        // absence is a finding, and the rest is still checked.
        let (code, v) = verify_json(&c.root, false);
        let f = assert_finding(code, &v, "missing", None);
        assert_eq!(f["path"], "oci-layout", "{v:#}");
        assert!(f["message"].as_str().unwrap().contains("oci-layout"));
        assert_eq!(
            error_kinds(&v),
            ["missing"],
            "only oci-layout is wrong:\n{v:#}"
        );
        assert_eq!(v["blobsChecked"], 3, "the image is still verified:\n{v:#}");
    });
}

#[test]
fn unknown_layout_version_is_read_with_a_warning() {
    let c = build(layout_version_2);
    unchanged(&c, |c| {
        let root = c.root();
        let r = run(&["ls", &root]);
        assert_eq!(r.code, 0, "{}", r.err);
        assert!(r.out.contains("latest"), "{}", r.out);
        assert!(
            r.err.starts_with("ocikit: warning: ")
                && r.err.contains("2.0.0")
                && r.err.contains("oci-layout"),
            "{}",
            r.err
        );
        assert_eq!(r.err.lines().count(), 1, "{}", r.err);
        let r = run(&["inspect", &c.at("latest")]);
        assert_eq!(r.code, 0, "{}", r.err);
        assert!(r.err.contains("2.0.0"), "{}", r.err);
        let (code, v) = verify_json(&c.root, false);
        assert_eq!(code, 0, "a layout warning is not an error:\n{v:#}");
        let w = of_kind(&v, "layout");
        assert_eq!(w.len(), 1, "{v:#}");
        assert_eq!(w[0]["severity"], "warning");
        assert_eq!(w[0]["path"], "oci-layout");
        assert!(w[0]["message"].as_str().unwrap().contains("2.0.0"), "{v:#}");
    });
}

// ---------------------------------------------------------------- index.json

fn broken_index_json(b: Builder, reader_needles: &[&str], kind: &str) {
    let c = build(b);
    unchanged(&c, |c| {
        let root = c.root();
        let index = format!("{root}/index.json");
        let mut needles = vec![index.as_str()];
        needles.extend_from_slice(reader_needles);
        fails(&["ls", &root], &needles);
        fails(&["ls", "--json", &root], &needles);
        fails(&["inspect", &root], &needles);
        fails(&["inspect", &c.at("latest")], &needles);
        fails(&["cat", &c.at("latest"), "manifest"], &needles);
        let (code, v) = verify_json(&c.root, false);
        let f = assert_finding(code, &v, kind, None);
        assert_eq!(f["path"], "index.json", "{v:#}");
        assert!(
            f["message"].as_str().unwrap().contains("index.json"),
            "{f:#}"
        );
        assert_eq!(error_kinds(&v), [kind], "{v:#}");
    });
}

#[test]
fn index_json_not_json() {
    broken_index_json(index_not_json, &["not valid JSON"], "malformed");
}

#[test]
fn index_json_empty() {
    broken_index_json(index_empty, &["not valid JSON"], "malformed");
}

#[test]
fn index_json_is_an_array() {
    broken_index_json(index_array, &["not a JSON object"], "malformed");
}

#[test]
fn index_json_is_a_directory() {
    broken_index_json(index_dir, &["directory"], "non-regular");
}

#[test]
fn index_json_that_is_a_manifest() {
    let c = build(index_is_a_manifest);
    unchanged(&c, |c| {
        let root = c.root();
        let index = format!("{root}/index.json");
        fails(&["ls", &root], &[&index, "ambiguous"]);
        fails(&["inspect", &root], &[&index, "ambiguous"]);
        fails(&["cat", &c.at("latest"), "config"], &[&index, "ambiguous"]);
        let (code, v) = verify_json(&c.root, false);
        let f = assert_finding(code, &v, "mediatype-mismatch", None);
        assert_eq!(f["path"], "index.json", "{v:#}");
        assert!(
            f["message"]
                .as_str()
                .unwrap()
                .contains("not an image index"),
            "{f:#}"
        );
        assert_eq!(error_kinds(&v), ["mediatype-mismatch"], "{v:#}");
    });
}

#[test]
fn index_json_over_the_limit() {
    let c = build(huge_index_json);
    unchanged(&c, |c| {
        let root = c.root();
        let index = format!("{root}/index.json");
        for args in [
            vec!["ls", root.as_str()],
            vec!["cat", root.as_str(), "index"],
        ] {
            fails(
                &args,
                &[&index, "over the", "limit", &(5u64 << 20).to_string()],
            );
        }
        let (code, v) = verify_json(&c.root, false);
        let f = assert_finding(code, &v, "malformed", None);
        assert_eq!(f["path"], "index.json");
        assert!(f["message"].as_str().unwrap().contains("over the"), "{f:#}");
    });
}

#[test]
fn index_json_with_layers_is_rejected() {
    let c = build(ambiguous_index_json);
    unchanged(&c, |c| {
        let root = c.root();
        fails(
            &["ls", &root],
            &[&format!("{root}/index.json"), "ambiguous"],
        );
        fails(&["inspect", &c.at("latest")], &["index.json", "ambiguous"]);
        let (code, v) = verify_json(&c.root, false);
        let f = assert_finding(code, &v, "mediatype-mismatch", None);
        assert_eq!(f["path"], "index.json");
    });
}

// ---------------------------------------------------------------- kinds

#[test]
fn manifest_entry_whose_blob_is_an_index() {
    // The demo's `1.0` index relabelled (its own mediaType disagrees), and an
    // index with no mediaType of its own (its shape disagrees).
    for (b, tag) in [
        (entry_manifest_but_index as Builder, "1.0"),
        (entry_manifest_but_index_shape, "latest"),
    ] {
        let c = build(b);
        unchanged(&c, |c| {
            let (code, v) = verify_json(&c.root, false);
            let f = assert_finding(code, &v, "mediatype-mismatch", Some(&c.culprit));
            assert!(
                f["message"].as_str().unwrap().contains(OCI_MANIFEST),
                "{f:#}"
            );
            fails(
                &["inspect", &c.at(tag)],
                &[&c.culprit, "manifest", "ambiguous"],
            );
            fails(&["cat", &c.at(tag), "manifest"], &[&c.culprit, "ambiguous"]);
        });
    }
}

#[test]
fn index_entry_whose_blob_is_a_manifest() {
    let c = build(entry_index_but_manifest);
    unchanged(&c, |c| {
        let (code, v) = verify_json(&c.root, false);
        let f = assert_finding(code, &v, "mediatype-mismatch", Some(&c.culprit));
        assert!(f["message"].as_str().unwrap().contains(OCI_INDEX), "{f:#}");
        fails(&["inspect", &c.at("latest")], &[&c.culprit, "index"]);
        fails(&["cat", &c.at("latest"), "config"], &[&c.culprit]);
    });
}

#[test]
fn manifest_with_manifests_is_rejected() {
    // CVE-2021-41190: a document that is both an index and a manifest.
    let c = build(ambiguous_manifest);
    unchanged(&c, |c| {
        let (code, v) = verify_json(&c.root, false);
        let f = assert_finding(code, &v, "mediatype-mismatch", Some(&c.culprit));
        assert!(
            f["message"].as_str().unwrap().contains("ambiguous"),
            "{f:#}"
        );
        fails(&["inspect", &c.at("latest")], &[&c.culprit, "ambiguous"]);
        fails(
            &["cat", &c.at("latest"), "manifest"],
            &[&c.culprit, "ambiguous"],
        );
        fails(
            &["cat", &c.at("latest"), "config"],
            &[&c.culprit, "ambiguous"],
        );
    });
}

// ---------------------------------------------------------------- digests

/// No output of any command on `c` contains the sentinel.
fn never_leaks(c: &Case) {
    let root = c.root();
    let at = c.at("latest");
    for args in [
        vec!["ls", root.as_str()],
        vec!["ls", "--json", root.as_str()],
        vec!["inspect", at.as_str()],
        vec!["inspect", "--json", at.as_str()],
        vec!["cat", at.as_str(), "manifest"],
        vec!["cat", at.as_str(), "config"],
        vec!["verify", root.as_str()],
        vec!["verify", "--deep", "--json", root.as_str()],
        vec!["blob", root.as_str(), c.culprit.as_str()],
    ] {
        let r = run(&args);
        assert!(
            !r.out.contains(SENTINEL) && !r.err.contains(SENTINEL),
            "ocikit {args:?} printed the content of a file it must not read:\n{}\n{}",
            r.out,
            r.err
        );
    }
}

#[test]
fn invalid_digests_in_index_json() {
    for (b, why) in [
        (digest_traversal as Builder, "not a valid digest"),
        (digest_wrong_length, "not a valid sha256 digest"),
        (digest_uppercase, "not a valid sha256 digest"),
    ] {
        let c = build(b);
        unchanged(&c, |c| {
            let (code, v) = verify_json(&c.root, false);
            let f = assert_finding(code, &v, "malformed", Some(&c.culprit));
            assert!(f["message"].as_str().unwrap().contains(why), "{f:#}");
            fails(&["inspect", &c.at("latest")], &[&c.culprit, why]);
            fails(&["cat", &c.at("latest"), "manifest"], &[&c.culprit, why]);
            fails(&["blob", &c.root(), &c.culprit], &[&c.culprit, why]);
            // The digest is on the command line too.
            fails(
                &["inspect", &format!("{}@{}", c.root(), c.culprit)],
                &[&c.culprit],
            );
            // ls lists the entry as it is (it never reads it).
            let r = run(&["ls", &c.root()]);
            assert_eq!(r.code, 0, "{}", r.err);
            never_leaks(c);
        });
    }
}

#[test]
fn unknown_digest_algorithm_is_unsupported_and_not_read() {
    let c = build(digest_unknown_algorithm);
    unchanged(&c, |c| {
        let (code, v) = verify_json(&c.root, false);
        let f = assert_finding(code, &v, "unsupported", Some("foo:abc"));
        assert!(
            f["message"].as_str().unwrap().contains("cannot verify"),
            "{f:#}"
        );
        assert_eq!(error_kinds(&v), ["unsupported"], "{v:#}");
        fails(&["inspect", &c.at("latest")], &["foo:abc", "cannot verify"]);
        fails(
            &["blob", &c.root(), "foo:abc"],
            &["foo:abc", "cannot verify"],
        );
        never_leaks(c);
    });
}

#[test]
fn layer_digest_escaping_the_layout() {
    let c = build(layer_digest_traversal);
    unchanged(&c, |c| {
        for deep in [false, true] {
            let (code, v) = verify_json(&c.root, deep);
            let f = assert_finding(code, &v, "malformed", Some(&c.culprit));
            assert!(f["path"].as_str().unwrap().contains("layers[0]"), "{f:#}");
        }
        // inspect only lists layers: it shows the raw digest but reads nothing.
        let r = run(&["inspect", &c.at("latest")]);
        assert_eq!(r.code, 0, "{}", r.err);
        never_leaks(c);
    });
}

// ---------------------------------------------------------------- blobs

#[test]
fn manifest_size_off_by_one_is_a_size_mismatch() {
    let c = build(manifest_size_off_by_one);
    unchanged(&c, |c| {
        let (code, v) = verify_json(&c.root, false);
        assert_finding(code, &v, "size-mismatch", Some(&c.culprit));
        fails(
            &["inspect", &c.at("latest")],
            &[&c.culprit, "bytes but its descriptor says"],
        );
        fails(&["cat", &c.at("latest"), "manifest"], &[&c.culprit]);
    });
}

#[test]
fn layer_size_off_by_one_is_a_size_mismatch() {
    let c = build(layer_size_off_by_one);
    unchanged(&c, |c| {
        for deep in [false, true] {
            let (code, v) = verify_json(&c.root, deep);
            let f = assert_finding(code, &v, "size-mismatch", Some(&c.culprit));
            assert!(
                f["message"]
                    .as_str()
                    .unwrap()
                    .contains("does match the digest"),
                "{f:#}"
            );
            assert_eq!(error_kinds(&v), ["size-mismatch"], "{v:#}");
        }
    });
}

#[test]
fn layer_with_wrong_content() {
    let c = build(layer_wrong_content);
    unchanged(&c, |c| {
        for deep in [false, true] {
            let (code, v) = verify_json(&c.root, deep);
            assert_finding(code, &v, "digest-mismatch", Some(&c.culprit));
            assert_eq!(error_kinds(&v), ["digest-mismatch"], "deep={deep}: {v:#}");
        }
        fails(
            &["blob", &c.root(), &c.culprit],
            &[&c.culprit, "wrong content"],
        );
    });
}

#[test]
fn truncated_layer() {
    let c = build(layer_truncated);
    unchanged(&c, |c| {
        for deep in [false, true] {
            let (code, v) = verify_json(&c.root, deep);
            assert_finding(code, &v, "size-mismatch", Some(&c.culprit));
            assert_eq!(error_kinds(&v), ["size-mismatch"], "deep={deep}: {v:#}");
        }
    });
}

#[test]
fn wrong_diff_id_is_found_by_deep_verify_only() {
    let c = build(wrong_diff_id);
    unchanged(&c, |c| {
        let (code, v) = verify_json(&c.root, false);
        assert_eq!(code, 0, "the blobs themselves are intact:\n{v:#}");
        let (code, v) = verify_json(&c.root, true);
        let f = assert_finding(code, &v, "diffid-mismatch", Some(&c.culprit));
        assert!(
            f["message"]
                .as_str()
                .unwrap()
                .contains(&digest_of(b"not the layer's content")),
            "{f:#}"
        );
        assert_eq!(error_kinds(&v), ["diffid-mismatch"], "{v:#}");
    });
}

#[test]
fn gzip_layer_that_is_not_gzip() {
    let c = build(gzip_not_gzip);
    unchanged(&c, |c| {
        let (code, v) = verify_json(&c.root, false);
        assert_eq!(code, 0, "digest and size match:\n{v:#}");
        assert!(findings(&v).is_empty(), "{v:#}");
        let (code, v) = verify_json(&c.root, true);
        let f = assert_finding(code, &v, "bad-layer", Some(&c.culprit));
        // Regression: the message used the Debug form ("Gzip") and no colon.
        let msg = f["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!(
                "layer {}: its media type says gzip but its bytes are not compressed",
                c.culprit
            )),
            "{f:#}"
        );
        assert_eq!(error_kinds(&v), ["bad-layer"], "{v:#}");
    });
}

#[test]
fn symlinked_blobs_are_not_followed() {
    for b in [symlinked_layer as Builder, symlinked_config] {
        let c = build(b);
        unchanged(&c, |c| {
            let hex = &c.culprit[7..];
            let path = format!("{}/blobs/sha256/{hex}", c.root());
            for deep in [false, true] {
                let (code, v) = verify_json(&c.root, deep);
                let f = assert_finding(code, &v, "non-regular", Some(&c.culprit));
                let msg = f["message"].as_str().unwrap();
                assert!(msg.contains(&path) && msg.contains("symlink"), "{f:#}");
                assert_eq!(error_kinds(&v), ["non-regular"], "{v:#}");
            }
            let args = ["blob", &c.root(), &c.culprit];
            let r = run(&args);
            assert_error(&args, &r, &[&path, "symlink"]);
            assert!(r.out.is_empty(), "the target's bytes were printed");
        });
    }
    // The config is a document: inspect needs it and refuses the link.
    let c = build(symlinked_config);
    unchanged(&c, |c| {
        fails(&["inspect", &c.at("latest")], &[&c.culprit[7..], "symlink"]);
        fails(
            &["cat", &c.at("latest"), "config"],
            &[&c.culprit[7..], "symlink"],
        );
    });
}

/// Runs ocikit with its address space capped at 256 MiB, so reading or
/// mapping a 300 MiB file fails loudly (an allocation abort) instead of
/// quietly succeeding.
fn run_capped(args: &[&str]) -> (Run, Duration) {
    let start = Instant::now();
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 262144 && exec \"$0\" \"$@\"")
        .arg(bin())
        .args(args)
        .output()
        .unwrap();
    (Run::checked(args, &o), start.elapsed())
}

#[test]
fn huge_config_is_refused_without_reading_it() {
    let c = build(huge_config);
    unchanged(&c, |c| {
        let limit = ["over the", "limit", &HUGE.to_string()];
        let at = c.at("latest");
        for args in [
            vec!["inspect", at.as_str()],
            vec!["cat", at.as_str(), "config"],
        ] {
            let (r, took) = run_capped(&args);
            let mut needles = vec![&c.culprit[7..]];
            needles.extend(limit);
            assert_error(&args, &r, &needles);
            assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
        }
        let root = c.root();
        for deep in [false, true] {
            let mut args = vec!["verify", "--json", root.as_str()];
            if deep {
                args.push("--deep");
            }
            let (r, took) = run_capped(&args);
            assert_eq!(r.code, 1, "{}", r.err);
            assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
            let v: Value = serde_json::from_str(&r.out).unwrap();
            let f = assert_finding(r.code, &v, "malformed", Some(&c.culprit));
            let msg = f["message"].as_str().unwrap();
            assert!(limit.iter().all(|n| msg.contains(n)), "{f:#}");
        }
        // ls only summarises: best effort, no error.
        let (r, _) = run_capped(&["ls", &root]);
        assert_eq!(r.code, 0, "{}", r.err);
        // `blob` hashes the 300 MiB before printing anything, in bounded memory
        // (the sparse zeros do not hash to the made-up digest).
        let args = ["blob", root.as_str(), c.culprit.as_str()];
        let (r, _) = run_capped(&args);
        assert_error(&args, &r, &[&c.culprit, "wrong content"]);
        assert!(r.out.is_empty(), "unverified bytes were printed");
    });
}

// ---------------------------------------------------------------- tag, init

#[test]
fn tag_of_a_missing_ref_changes_nothing() {
    let (t, root) = demo_copy();
    let before = snapshot(t.path());
    let line = fails(
        &["tag", &format!("{}:nope", s(&root)), "new"],
        &["\"nope\"", "1.0", "legacy"],
    );
    assert!(line.contains(&s(&root)), "{line}");
    // Nothing may change, not even by creating the writer lock file
    // (regression: the lock used to be taken before the ref was resolved).
    assert_eq!(before, snapshot(t.path()));
    // An invalid new tag is refused before anything is looked at.
    fails(
        &["tag", &format!("{}:1.0", s(&root)), "bad tag"],
        &["\"bad tag\"", "not a valid tag"],
    );
    // untag of a tag that does not exist lists the tags.
    fails(
        &["untag", &format!("{}:nope", s(&root))],
        &["\"nope\"", "1.0", "legacy"],
    );
    assert_eq!(before, snapshot(t.path()));
}

#[test]
fn init_refuses_a_non_empty_directory() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("stuff");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("notes.txt"), b"mine\n").unwrap();
    let before = snapshot(t.path());
    fails(&["init", &s(&dir)], &[&s(&dir), "not empty"]);
    // A broken layout (index.json is a directory) is not silently "repaired".
    fs::remove_dir_all(&dir).unwrap();
    let c = build(index_dir);
    unchanged(&c, |c| {
        fails(&["init", &c.root()], &[&c.root(), "not empty"]);
    });
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("notes.txt"), b"mine\n").unwrap();
    assert_eq!(before, snapshot(t.path()));
    // A regular file is not a directory to initialise.
    let f = t.path().join("a-file");
    fs::write(&f, b"x").unwrap();
    fails(&["init", &s(&f)], &[&s(&f)]);
    assert_eq!(fs::read(&f).unwrap(), b"x");
}

// ---------------------------------------------------------------- references

#[test]
fn unknown_ref_lists_the_tags() {
    let demo_dir = s(&demo());
    let before = snapshot(&demo());
    for cmd in [vec!["inspect"], vec!["cat"]] {
        let loc = format!("{demo_dir}:nope");
        let mut args = cmd.clone();
        args.push(&loc);
        if cmd[0] == "cat" {
            args.push("manifest");
        }
        let line = fails(&args, &["\"nope\"", "1.0", "legacy", &demo_dir]);
        assert!(line.contains("available"), "{line}");
    }
    // A digest that is not in the layout.
    let absent = digest_of(b"absent");
    fails(
        &["inspect", &format!("{demo_dir}@{absent}")],
        &[&absent, "1.0", "legacy"],
    );
    assert_eq!(before, snapshot(&demo()));
}

#[test]
fn several_images_and_no_ref_lists_them() {
    let demo = s(&demo());
    for args in [
        vec!["inspect", demo.as_str()],
        vec!["cat", demo.as_str(), "config"],
    ] {
        let line = fails(&args, &["several images", "1.0", "legacy"]);
        assert!(line.contains(&demo), "{line}");
    }
}

#[test]
fn platform_not_in_the_index_lists_the_platforms() {
    let loc = format!("{}:1.0", s(&demo()));
    for args in [
        vec!["inspect", loc.as_str(), "--platform", "linux/s390x"],
        vec!["cat", loc.as_str(), "manifest", "--platform", "linux/s390x"],
    ] {
        fails(&args, &["linux/s390x", "linux/amd64", "linux/arm64/v8"]);
    }
}

#[test]
fn location_and_usage_errors() {
    fails(&["inspect", "x@sha256:abc"], &["sha256:abc", "digest"]);
    fails(
        &["inspect", "x@sha256:../../etc/passwd"],
        &["sha256:../../etc/passwd", "digest"],
    );
    let t = tempfile::tempdir().unwrap();
    let nowhere = s(&t.path().join("nowhere"));
    for args in [
        vec!["ls", nowhere.as_str()],
        vec!["inspect", nowhere.as_str()],
        vec!["verify", nowhere.as_str()],
        vec![
            "blob",
            nowhere.as_str(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        ],
    ] {
        fails(&args, &[&nowhere, "does not exist"]);
    }
    // An empty directory is not a layout: verify cannot run (2), not "1 finding".
    let empty = s(t.path());
    fails(&["verify", &empty], &[&empty, "not an OCI image layout"]);
    fails(
        &["verify", "--json", &empty],
        &[&empty, "not an OCI image layout"],
    );
    fails(&["ls", &empty], &[&empty, "oci-layout"]);
    assert_eq!(
        fs::read_dir(t.path()).unwrap().count(),
        0,
        "nothing was created"
    );
    // A reference where a whole location is expected.
    let demo_ref = format!("{}:1.0", s(&demo()));
    fails(&["verify", &demo_ref], &["drop the reference"]);
    fails(&["ls", &demo_ref], &["drop the reference"]);
    fails(&["untag", &s(&demo())], &["LAYOUT:TAG"]);
    // An invalid digest on the blob command line.
    fails(&["blob", &s(&demo()), "sha256:abc"], &["sha256:abc"]);
    // Usage errors (clap's): exit 2, one line naming the bad or missing value.
    for (args, needle) in [
        (vec!["inspect", "x", "--platform", "linux"], "linux"),
        (vec!["inspect", "x", "--platform", "linux//v7"], "linux//v7"),
        (vec!["cat", "x", "everything"], "everything"),
        (vec!["frobnicate"], "frobnicate"),
        (vec!["verify"], "<LOCATION>"),
        (vec!["tag", "x"], "<TAG>"),
    ] {
        let r = run(&args);
        assert_error(&args, &r, &[needle]);
        assert!(r.out.is_empty(), "{args:?}: {}", r.out);
    }
}

// ---------------------------------------------------------------- sweep

#[test]
fn no_read_command_panics_on_any_broken_layout() {
    for (name, b) in ALL {
        let c = build(*b);
        let before = c.snapshot();
        let root = c.root();
        let at = c.at("latest");
        for args in [
            vec!["ls", root.as_str()],
            vec!["ls", "--json", root.as_str()],
            vec!["inspect", root.as_str()],
            vec!["inspect", at.as_str()],
            vec!["inspect", "--json", at.as_str()],
            vec!["inspect", at.as_str(), "--platform", "linux/arm64"],
            vec!["cat", root.as_str(), "index"],
            vec!["cat", at.as_str(), "index"],
            vec!["cat", at.as_str(), "manifest"],
            vec!["cat", at.as_str(), "config"],
            vec!["blob", root.as_str(), c.culprit.as_str()],
            vec!["verify", root.as_str()],
            vec!["verify", "--deep", root.as_str()],
            vec!["verify", "--json", "--deep", root.as_str()],
        ] {
            let o = ocikit(&args);
            let r = Run {
                code: code(&o),
                out: stdout(&o),
                err: stderr(&o),
            };
            assert!(
                !r.err.contains("panicked") && (0..=2).contains(&r.code),
                "{name}: ocikit {args:?} exited {}:\n{}",
                r.code,
                r.err
            );
            if r.code == 2 {
                assert!(
                    r.err.contains("ocikit: error: "),
                    "{name}: {args:?}: {}",
                    r.err
                );
            }
        }
        assert_eq!(before, c.snapshot(), "{name}: the layout changed");
    }
}
