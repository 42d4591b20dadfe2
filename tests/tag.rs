//! `ocikit tag`, `untag` and `init`: the documented tag semantics, unknown
//! content tolerated, and every byte ocikit did not mean to change kept.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

const REF: &str = "org.opencontainers.image.ref.name";
const THING: &str = "application/vnd.example.thing+json";
/// The top-level unknown field's value, exactly as written.
const X_VENDOR: &str = r#"{"k": [1, 2.50, "\u00e9"]}"#;
/// The top-level annotations, exactly as written.
const TOP_ANN: &str = r#"{"org.example.top" :  "v\u00e9"}"#;

/// A hand-written layout: an unknown-media-type entry with unknown fields and
/// extra annotations, a pretty-printed tagged image, a compact tagged image,
/// and top-level fields ocikit does not know.
struct Fixture {
    _t: tempfile::TempDir,
    root: PathBuf,
    /// The simple image (tagged `latest`, pretty-printed entry).
    simple: Value,
    /// A second image (tagged `arm`, compact entry).
    arm: Value,
    /// The unknown blob (tagged `thing`).
    thing: Value,
    raw_thing: String,
    raw_latest: String,
    raw_arm: String,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("layout");
    let (simple, _, _) = build_simple(&root);
    let layer = put_layer(&root, OCI_GZIP, &tar(&[file("arm.txt", "arm\n")]));
    let arm = put_image(&root, "arm64", Some("v8"), &[layer], false);
    let thing = put_blob(
        &root,
        THING,
        br#"{"thing":"an artifact ocikit does not know"}"#,
    );

    let raw_thing = format!(
        r#"{{"mediaType":"{THING}","digest":"{}","size":{},"x-unknown":{{"nested":[true,null,2.5,"\u00e9"]}},"annotations":{{"com.example.note":"keep me","{REF}":"thing","com.example.z":"last"}},"x-after":"a","x-last":{{"b":[]}}}}"#,
        thing["digest"].as_str().unwrap(),
        thing["size"]
    );
    let raw_latest = format!(
        "{{\n      \"mediaType\" : \"{OCI_MANIFEST}\",\n      \"digest\" : \"{}\",\n      \"size\" : {},\n      \"annotations\" : {{ \"{REF}\" : \"latest\" }}\n    }}",
        simple["digest"].as_str().unwrap(),
        simple["size"]
    );
    let raw_arm = format!(
        r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"annotations":{{"{REF}":"arm"}}}}"#,
        arm["digest"].as_str().unwrap(),
        arm["size"]
    );
    let index = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"x-vendor\": {X_VENDOR},\n  \"mediaType\": \"{OCI_INDEX}\",\n  \"manifests\": [\n    {raw_thing},\n    {raw_latest},\n    {raw_arm}\n  ],\n  \"annotations\": {TOP_ANN}\n}}\n"
    );
    fs::write(root.join("index.json"), index).unwrap();
    assert_eq!(index_tags(&root), ["thing", "latest", "arm"]);
    Fixture {
        _t: t,
        root,
        simple,
        arm,
        thing,
        raw_thing,
        raw_latest,
        raw_arm,
    }
}

impl Fixture {
    fn loc(&self, r: &str) -> String {
        format!("{}:{r}", self.root.display())
    }
    fn at(&self, digest: &Value) -> String {
        format!("{}@{}", self.root.display(), digest.as_str().unwrap())
    }
    fn index_bytes(&self) -> Vec<u8> {
        fs::read(self.root.join("index.json")).unwrap()
    }
    fn index_text(&self) -> String {
        String::from_utf8(self.index_bytes()).unwrap()
    }
    fn entries(&self) -> Vec<Value> {
        index_json(&self.root)["manifests"]
            .as_array()
            .unwrap()
            .clone()
    }
    fn blobs(&self) -> BTreeMap<String, String> {
        snapshot(&self.root.join("blobs"))
    }
}

/// The raw text of every `manifests` entry of an index.json.
fn raw_entries(bytes: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Idx<'a> {
        #[serde(borrow)]
        manifests: Vec<&'a RawValue>,
    }
    let idx: Idx = serde_json::from_slice(bytes).unwrap();
    idx.manifests.iter().map(|r| r.get().to_string()).collect()
}

/// The top-level unknown fields and their order survive, byte for byte.
fn assert_top_level_kept(text: &str) {
    assert!(
        text.contains(&format!(r#""x-vendor":{X_VENDOR}"#)),
        "x-vendor changed:\n{text}"
    );
    assert!(
        text.contains(&format!(r#""annotations":{TOP_ANN}"#)),
        "top-level annotations changed:\n{text}"
    );
    let v: Value = serde_json::from_str(text).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "schemaVersion",
            "x-vendor",
            "mediaType",
            "manifests",
            "annotations"
        ]
    );
}

fn tag(src: &str, new: &str) -> std::process::Output {
    ocikit(["tag", src, new])
}

/// One line, `ocikit: error: …`.
fn assert_error(o: &std::process::Output, needle: &str) {
    assert_eq!(code(o), 2, "stdout {} stderr {}", stdout(o), stderr(o));
    let e = stderr(o);
    assert!(e.starts_with("ocikit: error: "), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains(needle), "{needle:?} not in {e}");
}

fn parsed(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap()
}

#[test]
fn new_tag_appends_an_entry_and_keeps_every_other_byte() {
    let f = fixture();
    let blobs = f.blobs();
    let o = tag(&f.loc("latest"), "stable");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(f.simple["digest"].as_str().unwrap()),
        "{}",
        stderr(&o)
    );

    let text = f.index_text();
    for raw in [&f.raw_thing, &f.raw_latest, &f.raw_arm] {
        assert!(
            text.contains(raw.as_str()),
            "entry not kept verbatim:\n{raw}\nin\n{text}"
        );
    }
    assert_top_level_kept(&text);
    let raws = raw_entries(text.as_bytes());
    assert_eq!(
        raws[..3],
        [f.raw_thing.clone(), f.raw_latest.clone(), f.raw_arm.clone()]
    );
    assert_eq!(raws.len(), 4);
    let new = parsed(&raws[3]);
    assert_eq!(new["digest"], f.simple["digest"]);
    assert_eq!(new["size"], f.simple["size"]);
    assert_eq!(new["mediaType"], OCI_MANIFEST);
    assert_eq!(new["annotations"], json!({REF: "stable"}));
    assert_eq!(index_tags(&f.root), ["thing", "latest", "arm", "stable"]);
    assert_eq!(f.blobs(), blobs, "a blob changed");

    let o = ocikit_ok(["cat", &f.loc("stable"), "manifest"]);
    assert_eq!(
        o.stdout,
        blob_bytes(&f.root, f.simple["digest"].as_str().unwrap())
    );
    let o = ocikit(["verify", &f.root.display().to_string()]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn edited_entry_keeps_unknown_fields_and_other_annotations() {
    let f = fixture();
    let blobs = f.blobs();
    let orig = parsed(&f.raw_thing);

    // Untag: no other entry has its digest, so it stays, untagged.
    ocikit_ok(["untag", &f.loc("thing")]);
    let text = f.index_text();
    assert!(
        text.contains(&f.raw_latest) && text.contains(&f.raw_arm),
        "{text}"
    );
    assert_top_level_kept(&text);
    let raws = raw_entries(text.as_bytes());
    assert_eq!(raws.len(), 3);
    assert_eq!(raws[1..], [f.raw_latest.clone(), f.raw_arm.clone()]);
    let edited = parsed(&raws[0]);
    let mut want = orig.clone();
    want["annotations"]
        .as_object_mut()
        .unwrap()
        .shift_remove(REF);
    assert_eq!(edited, want, "the untagged entry lost or changed a field");
    // The other fields keep their order (annotations may move).
    let order = |v: &Value| -> Vec<String> {
        v.as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "annotations")
            .cloned()
            .collect()
    };
    assert_eq!(
        order(&edited),
        order(&orig),
        "field order changed: {}",
        raws[0]
    );
    let ann: Vec<&String> = edited["annotations"].as_object().unwrap().keys().collect();
    assert_eq!(
        ann,
        ["com.example.note", "com.example.z"],
        "annotation order changed"
    );
    assert_eq!(index_tags(&f.root), ["latest", "arm"]);

    // Tag it again by digest: the untagged entry is reused, not duplicated.
    let o = tag(&f.at(&f.thing["digest"]), "thing2");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let raws = raw_entries(&f.index_bytes());
    assert_eq!(
        raws.len(),
        3,
        "an entry was added instead of reusing the untagged one"
    );
    assert_eq!(raws[1..], [f.raw_latest.clone(), f.raw_arm.clone()]);
    let mut want = orig.clone();
    want["annotations"][REF] = json!("thing2");
    assert_eq!(parsed(&raws[0]), want);
    assert_eq!(order(&parsed(&raws[0])), order(&orig));
    assert_eq!(index_tags(&f.root), ["thing2", "latest", "arm"]);
    assert_top_level_kept(&f.index_text());
    assert_eq!(f.blobs(), blobs, "a blob changed");
}

#[test]
fn tag_moves_the_name_and_drops_only_duplicate_digests() {
    let f = fixture();
    let blobs = f.blobs();

    // `latest` moves to the arm image. Its old entry has no duplicate: it stays, untagged.
    ocikit_ok(["tag", &f.loc("arm"), "latest"]);
    let raws = raw_entries(&f.index_bytes());
    assert_eq!(raws.len(), 4, "{raws:?}");
    assert_eq!(raws[0], f.raw_thing);
    assert_eq!(raws[2], f.raw_arm);
    let old = parsed(&raws[1]);
    assert_eq!(old["digest"], f.simple["digest"]);
    assert_eq!(old["size"], f.simple["size"]);
    assert_eq!(old["mediaType"], OCI_MANIFEST);
    assert!(
        old["annotations"].get(REF).is_none(),
        "old entry still tagged: {old}"
    );
    let new = parsed(&raws[3]);
    assert_eq!(
        (&new["digest"], &new["annotations"][REF]),
        (&f.arm["digest"], &json!("latest"))
    );
    assert_eq!(index_tags(&f.root), ["thing", "arm", "latest"]);
    let o = ocikit_ok(["cat", &f.loc("latest"), "manifest"]);
    assert_eq!(
        o.stdout,
        blob_bytes(&f.root, f.arm["digest"].as_str().unwrap())
    );
    assert_top_level_kept(&f.index_text());

    // Back to the simple image by digest: its untagged entry is reused, and the
    // arm entry that held `latest` is dropped (the `arm` entry has its digest).
    ocikit_ok(["tag", &f.at(&f.simple["digest"]), "latest"]);
    let raws = raw_entries(&f.index_bytes());
    assert_eq!(raws.len(), 3, "{raws:?}");
    assert_eq!([&raws[0], &raws[2]], [&f.raw_thing, &f.raw_arm]);
    assert_eq!(parsed(&raws[1]), parsed(&f.raw_latest));
    assert_eq!(index_tags(&f.root), ["thing", "latest", "arm"]);
    let raw_latest = raws[1].clone();

    // Moving `arm` onto the simple image (tagged `latest`) drops nothing of
    // the simple image and leaves the arm image untagged in place.
    ocikit_ok(["tag", &f.loc("latest"), "arm"]);
    let entries = f.entries();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[2]["digest"], f.arm["digest"]);
    assert!(entries[2]
        .get("annotations")
        .and_then(|a| a.get(REF))
        .is_none());
    assert_eq!(entries[3]["digest"], f.simple["digest"]);
    assert_eq!(index_tags(&f.root), ["thing", "latest", "arm"]);
    assert!(f.index_text().contains(&raw_latest));

    // Untag of a name whose image has another entry drops that entry.
    ocikit_ok(["untag", &f.loc("arm")]);
    let raws = raw_entries(&f.index_bytes());
    assert_eq!(raws.len(), 3, "{raws:?}");
    assert_eq!(raws[1], raw_latest);
    assert_eq!(index_tags(&f.root), ["thing", "latest"]);
    assert_eq!(f.blobs(), blobs, "a blob changed");
    assert_top_level_kept(&f.index_text());
}

#[test]
fn retagging_the_same_image_is_a_no_op() {
    let f = fixture();
    let path = f.root.join("index.json");
    let before = f.index_bytes();
    let ino = fs::metadata(&path).unwrap().ino();
    for (src, t) in [
        (f.loc("latest"), "latest"),
        (f.loc("arm"), "arm"),
        (f.at(&f.simple["digest"]), "latest"),
        (f.loc("thing"), "thing"),
    ] {
        let o = tag(&src, t);
        assert_eq!(code(&o), 0, "tag {src} {t}: {}", stderr(&o));
        assert_eq!(f.index_bytes(), before, "tag {src} {t} changed index.json");
        assert_eq!(
            fs::metadata(&path).unwrap().ino(),
            ino,
            "tag {src} {t} rewrote index.json"
        );
    }
}

#[test]
fn tag_by_digest_of_a_nested_platform_manifest() {
    let (_t, demo) = demo_copy();
    let before = fs::read(demo.join("index.json")).unwrap();
    let before_raws = raw_entries(&before);
    let blobs = snapshot(&demo.join("blobs"));
    let idx: Value = serde_json::from_slice(&blob_bytes(
        &demo,
        index_entry(&demo, "1.0")["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let arm = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["platform"]["architecture"] == "arm64")
        .unwrap()
        .clone();
    let digest = arm["digest"].as_str().unwrap();

    let o = ocikit(["tag", &format!("{}@{digest}", demo.display()), "arm-only"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let raws = raw_entries(&fs::read(demo.join("index.json")).unwrap());
    assert_eq!(raws.len(), 3);
    assert_eq!(raws[..2], before_raws[..], "existing entries changed");
    let new = parsed(&raws[2]);
    assert_eq!(new["mediaType"], OCI_MANIFEST);
    assert_eq!(new["digest"], digest);
    assert_eq!(new["size"], arm["size"]);
    assert_eq!(
        new["platform"],
        json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
    );
    assert_eq!(new["annotations"], json!({REF: "arm-only"}));
    assert_eq!(index_tags(&demo), ["1.0", "legacy", "arm-only"]);

    let loc = format!("{}:arm-only", demo.display());
    let o = ocikit_ok(["cat", &loc, "manifest"]);
    assert_eq!(o.stdout, blob_bytes(&demo, digest));
    let o = ocikit_ok(["inspect", &loc, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["digest"], digest);
    assert_eq!(v["platform"], "linux/arm64/v8");
    assert_eq!(snapshot(&demo.join("blobs")), blobs);
    let o = ocikit(["verify", &demo.display().to_string()]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn untag_of_a_missing_tag_lists_the_tags_and_changes_nothing() {
    let f = fixture();
    let before = f.index_bytes();
    let blobs = f.blobs();
    let o = ocikit(["untag", &f.loc("nope")]);
    assert_error(&o, "\"nope\"");
    assert!(stderr(&o).contains("thing, latest, arm"), "{}", stderr(&o));
    assert_eq!(f.index_bytes(), before);
    assert_eq!(f.blobs(), blobs);

    // Without a tag at all: a usage error.
    let o = ocikit(["untag", &f.root.display().to_string()]);
    assert_error(&o, "LAYOUT:TAG");
    assert_eq!(f.index_bytes(), before);
}

/// The layout minus the lock file (whether a refused edit creates it is not a change to the layout's content).
fn content(root: &Path) -> BTreeMap<String, String> {
    let mut s = snapshot(root);
    s.remove(".ocikit.lock");
    s
}

#[test]
fn invalid_tag_names_change_nothing() {
    let f = fixture();
    let before = content(&f.root);
    for bad in ["a b", "", "a..b", "x/", "é", "-bad"] {
        // `--` so that `-bad` reaches ocikit instead of being taken for an option.
        let o = ocikit(["tag", "--", &f.loc("latest"), bad]);
        assert_error(&o, "is not a valid tag");
        assert!(stderr(&o).contains(&format!("{bad:?}")), "{}", stderr(&o));
        assert_eq!(content(&f.root), before, "tag {bad:?} changed the layout");
    }
    // Without `--`, `-bad` is an unknown option: still exit 2, still no change.
    let o = ocikit(["tag", &f.loc("latest"), "-bad"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(content(&f.root), before);
    assert_eq!(index_tags(&f.root), ["thing", "latest", "arm"]);
}

#[test]
fn tag_and_untag_on_a_missing_or_non_layout_path() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("nope");
    let o = tag(&format!("{}:latest", missing.display()), "x");
    assert_error(&o, "nope");
    let o = ocikit(["untag", &format!("{}:latest", missing.display())]);
    assert_error(&o, "nope");
    assert!(!missing.exists(), "a failed tag created the layout path");

    let plain = t.path().join("plain");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("notes.txt"), "not a layout\n").unwrap();
    let before = snapshot(&plain);
    let o = tag(&format!("{}:latest", plain.display()), "x");
    assert_error(&o, "plain");
    assert_eq!(snapshot(&plain), before);

    // A tag that no image has.
    let f = fixture();
    let before = f.index_bytes();
    let o = tag(&f.loc("absent"), "x");
    assert_error(&o, "absent");
    assert_eq!(f.index_bytes(), before);
}

#[test]
fn init_on_an_existing_layout_is_a_no_op() {
    let f = fixture();
    let before = snapshot(&f.root);
    ocikit_ok(["init", &f.root.display().to_string()]);
    assert_eq!(snapshot(&f.root), before);

    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("simple");
    build_simple(&root);
    let before = snapshot(&root);
    ocikit_ok(["init", &root.display().to_string()]);
    assert_eq!(snapshot(&root), before);
}

#[test]
fn init_refuses_a_non_empty_non_layout() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("stuff");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("notes.txt"), "mine\n").unwrap();
    let before = snapshot(&dir);
    let o = ocikit(["init", &dir.display().to_string()]);
    assert_error(&o, "not empty");
    assert_eq!(snapshot(&dir), before);

    // A regular file in the way.
    let file = t.path().join("afile");
    fs::write(&file, "x").unwrap();
    let o = ocikit(["init", &file.display().to_string()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("ocikit: error: "), "{}", stderr(&o));
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

fn assert_fresh_layout(root: &Path) {
    assert_eq!(
        fs::read(root.join("oci-layout")).unwrap(),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert!(root.join("blobs/sha256").is_dir());
    let idx = index_json(root);
    assert_eq!(idx["schemaVersion"], 2);
    assert_eq!(idx["manifests"], json!([]));
    let o = ocikit_ok(["ls", &root.display().to_string(), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["images"], json!([]));
    let o = ocikit_ok(["ls", &root.display().to_string()]);
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    let o = ocikit(["verify", &root.display().to_string()]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn init_creates_a_layout() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("a/b/new");
    ocikit_ok(["init", &root.display().to_string()]);
    assert_fresh_layout(&root);
    // Again: nothing changes.
    let before = snapshot(&root);
    ocikit_ok(["init", &root.display().to_string()]);
    assert_eq!(snapshot(&root), before);

    // An existing empty directory is initialised too.
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    ocikit_ok(["init", &empty.display().to_string()]);
    assert_fresh_layout(&empty);

    // The new layout takes blobs and tags.
    let m = put_blob(
        &root,
        OCI_MANIFEST,
        &to_bytes(
            &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": put_blob(&root, OCI_EMPTY, b"{}"), "layers": []}),
        ),
    );
    ocikit_ok([
        "tag",
        &format!("{}@{}", root.display(), m["digest"].as_str().unwrap()),
        "first",
    ]);
    assert_eq!(index_tags(&root), ["first"]);
}
