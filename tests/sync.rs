//! `ocikit sync`: which names a config copies, name by name; idempotence
//! (0 blobs written, byte-identical target); the dry run; a broken source
//! failing its entry only; globs of archives with `{{repo}}:{{tag}}`;
//! digest tags following their image; the platform filter; bad configs with
//! FILE:LINE:COL; the writer lock.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// An image with a distinct one-file layer; returns its manifest descriptor.
fn image(root: &Path, content: &str) -> Value {
    put_one_file_image(root, "2024-01-01T00:00:00Z", content).0
}

/// A cosign-style signature: a small artifact manifest (no subject).
fn signature(root: &Path, note: &str) -> Value {
    let empty = put_blob(root, OCI_EMPTY, b"{}");
    let blob = put_blob(
        root,
        "application/vnd.dev.cosign.simplesigning.v1+json",
        note.as_bytes(),
    );
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": empty,
        "layers": [blob],
    });
    put_blob(root, OCI_MANIFEST, &to_bytes(&m))
}

fn hex(desc: &Value) -> String {
    desc["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string()
}

fn digest(desc: &Value) -> String {
    desc["digest"].as_str().unwrap().to_string()
}

struct Fixture {
    dir: tempfile::TempDir,
    /// Tag → the digest index.json gives it.
    digests: BTreeMap<String, String>,
    /// The signature tags of `1.2.0` (kept) and `2.0.0` (dropped).
    sig_kept: String,
    sig_dropped: String,
}

impl Fixture {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// `src`: semver-ish tags, `latest`, the demo's `1.0` (index) and `legacy`,
/// a repository-qualified `app/web:1.5.0`, and two signature tags.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    write_layout_files(&root, &json!({"schemaVersion": 2, "manifests": []}));
    let mut entries = Vec::new();
    let mut digests = BTreeMap::new();
    let mut descs = BTreeMap::new();
    for tag in [
        "1.0.0",
        "1.2.0",
        "1.3.5-rc1",
        "2.0.0",
        "v1.4",
        "latest",
        "app/web:1.5.0",
    ] {
        let d = image(&root, &format!("content of {tag}\n"));
        let mut e = d.clone();
        e["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        entries.push(e);
        digests.insert(tag.to_string(), digest(&d));
        descs.insert(tag, d);
    }
    let sig_kept = format!("sha256-{}.sig", hex(&descs["1.2.0"]));
    let sig_dropped = format!("sha256-{}.sig", hex(&descs["2.0.0"]));
    for (tag, note) in [(&sig_kept, "sig of 1.2.0"), (&sig_dropped, "sig of 2.0.0")] {
        let d = signature(&root, note);
        let mut e = d.clone();
        e["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        entries.push(e);
        digests.insert(tag.clone(), digest(&d));
    }
    write_layout_files(&root, &json!({"schemaVersion": 2, "manifests": entries}));
    let demo = demo();
    for tag in ["1.0", "legacy"] {
        ocikit_ok([
            "copy",
            &format!("{}:{tag}", s(&demo)),
            &format!("{}:{tag}", s(&root)),
        ]);
        digests.insert(tag.to_string(), digest(&index_entry(&root, tag)));
    }
    Fixture {
        dir,
        digests,
        sig_kept,
        sig_dropped,
    }
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

/// Runs `ocikit sync CONFIG --json ARGS`, returning the exit code and document.
fn sync_json(config: &Path, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["sync".to_string(), s(config), "--json".to_string()];
    a.extend(args.iter().map(|x| x.to_string()));
    let o = ocikit(&a);
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
    assert_eq!(v["schemaVersion"], 1);
    (code(&o), v)
}

/// Source name → (status, target name, reason) of every image of every entry.
fn statuses(v: &Value) -> BTreeMap<String, (String, Option<String>, Option<String>)> {
    let mut m = BTreeMap::new();
    for e in v["entries"].as_array().unwrap() {
        for i in e["images"].as_array().unwrap() {
            let name = i["name"].as_str().unwrap().to_string();
            let prev = m.insert(
                name.clone(),
                (
                    i["status"].as_str().unwrap().to_string(),
                    i["targetName"].as_str().map(str::to_string),
                    i["reason"].as_str().map(str::to_string),
                ),
            );
            assert!(prev.is_none(), "{name} listed twice");
        }
    }
    m
}

fn set<I: IntoIterator<Item = S>, S: Into<String>>(i: I) -> BTreeSet<String> {
    i.into_iter().map(Into::into).collect()
}

fn tags_of(layout: &Path) -> BTreeSet<String> {
    let tags = index_tags(layout);
    let set: BTreeSet<String> = tags.iter().cloned().collect();
    assert_eq!(set.len(), tags.len(), "duplicate names in {tags:?}");
    set
}

const FILTERS: &str = r#"# versions from 1.2 up to 2, no release candidates
version: 1
defaults:
  digestTags: true
sync:
  - source: src
    target: mirror:{{repo}}:{{tag}}
    tags:
      allow: ['v?[0-9.]+(-.*)?']
      deny: ['.*-rc.*']
      semver: ">=1.2 <2"
"#;

fn expected_names(f: &Fixture) -> BTreeSet<String> {
    set([
        "src:1.2.0".to_string(),
        "src:v1.4".into(),
        "app/web:1.5.0".into(),
        format!("src:{}", f.sig_kept),
    ])
}

#[test]
fn filters_copy_exactly_the_expected_names_then_nothing() {
    let f = fixture();
    let cfg = write_config(f.dir.path(), "sync.yaml", FILTERS);
    let mirror = f.path("mirror");
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["dryRun"], false);
    assert_eq!(tags_of(&mirror), expected_names(&f));
    // Each name points at its source's digest.
    for (from, to) in [
        ("1.2.0", "src:1.2.0"),
        ("v1.4", "src:v1.4"),
        ("app/web:1.5.0", "app/web:1.5.0"),
        (f.sig_kept.as_str(), format!("src:{}", f.sig_kept).as_str()),
    ] {
        assert_eq!(digest(&index_entry(&mirror, to)), f.digests[from], "{to}");
    }
    let st = statuses(&v);
    let want: Vec<(&str, &str, Option<&str>, Option<&str>)> = vec![
        (
            "1.0.0",
            "filtered-out",
            None,
            Some("semver \">=1.2 <2\": out of range"),
        ),
        ("1.2.0", "copied", Some("src:1.2.0"), None),
        ("1.3.5-rc1", "filtered-out", None, Some("deny \".*-rc.*\"")),
        (
            "2.0.0",
            "filtered-out",
            None,
            Some("semver \">=1.2 <2\": out of range"),
        ),
        ("v1.4", "copied", Some("src:v1.4"), None),
        (
            "latest",
            "filtered-out",
            None,
            Some("not allowed by \"v?[0-9.]+(-.*)?\""),
        ),
        ("app/web:1.5.0", "copied", Some("app/web:1.5.0"), None),
        (
            "1.0",
            "filtered-out",
            None,
            Some("semver \">=1.2 <2\": out of range"),
        ),
        (
            "legacy",
            "filtered-out",
            None,
            Some("not allowed by \"v?[0-9.]+(-.*)?\""),
        ),
    ];
    for (name, status, target, reason) in want {
        let got = &st[name];
        assert_eq!(got.0, status, "{name}: {got:?}");
        assert_eq!(got.1.as_deref(), target, "{name}");
        assert_eq!(got.2.as_deref(), reason, "{name}");
    }
    let sig = format!("src:{}", f.sig_kept);
    assert_eq!(st[&f.sig_kept].0, "copied");
    assert_eq!(st[&f.sig_kept].1.as_deref(), Some(sig.as_str()));
    assert_eq!(st[&f.sig_dropped].0, "filtered-out");
    assert!(st[&f.sig_dropped]
        .2
        .as_deref()
        .unwrap()
        .starts_with("digest tag"));
    assert_eq!(st.len(), 11);
    let sum = &v["summary"];
    assert_eq!(
        (&sum["copied"], &sum["filteredOut"], &sum["failed"]),
        (&json!(4), &json!(7), &json!(0))
    );
    assert!(sum["blobs"].as_u64().unwrap() > 0);
    ocikit_ok(["verify", &s(&mirror)]);

    // Second run: every image up to date, nothing written.
    let snap = snapshot(&mirror);
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 0, "{v:#}");
    for (name, (status, ..)) in statuses(&v) {
        let want = if expected_names(&f)
            .iter()
            .any(|n| *n == name || *n == format!("src:{name}"))
        {
            "up-to-date"
        } else {
            "filtered-out"
        };
        assert_eq!(status, want, "{name}");
    }
    assert_eq!(v["summary"]["upToDate"], 4);
    assert_eq!(v["summary"]["blobs"], 0);
    assert_eq!(v["summary"]["bytes"], 0);
    assert_eq!(snapshot(&mirror), snap, "the second run changed the target");

    // The text output says the same.
    let o = ocikit_ok(["sync", &s(&cfg)]);
    let out = stdout(&o);
    assert!(
        out.contains("up to date src:1.2.0 -> mirror:src:1.2.0\n"),
        "{out}"
    );
    assert!(
        out.contains("filtered out src:1.3.5-rc1 (deny \".*-rc.*\")\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "sync: 0 copied (0 blobs, 0 bytes), 4 up to date, 7 filtered out, 0 failed\n"
        ),
        "{out}"
    );
    assert_eq!(snapshot(&mirror), snap);
}

#[test]
fn dry_run_writes_nothing_and_predicts_the_copy() {
    let f = fixture();
    let cfg = write_config(f.dir.path(), "sync.yaml", FILTERS);
    let mirror = f.path("mirror");
    let src_snap = snapshot(&f.path("src"));

    // Fresh target: not even created.
    let (rc, v) = sync_json(&cfg, &["--dry-run"]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["dryRun"], true);
    assert!(!mirror.exists(), "a dry run created the target");
    let st = statuses(&v);
    let would: BTreeSet<String> = st
        .values()
        .filter(|(status, ..)| status == "would-copy")
        .map(|(_, t, _)| t.clone().unwrap())
        .collect();
    assert_eq!(would, expected_names(&f));
    let o = ocikit_ok(["sync", &s(&cfg), "--dry-run"]);
    assert!(stdout(&o).contains("would copy src:1.2.0 -> mirror:src:1.2.0 ("));
    assert!(!mirror.exists());

    // An existing target holding part of it: byte-identical afterwards, and
    // the prediction (blobs not yet there) is what the real run writes.
    let part = write_config(
        f.dir.path(),
        "part.yaml",
        "sync:\n  - source: src\n    target: mirror:{{repo}}:{{tag}}\n    tags: {allow: ['1\\.2\\.0']}\n",
    );
    let (rc, _) = sync_json(&part, &[]);
    assert_eq!(rc, 0);
    assert_eq!(tags_of(&mirror), set(["src:1.2.0"]));
    let snap = snapshot(&mirror);
    let (rc, dry) = sync_json(&cfg, &["--dry-run"]);
    assert_eq!(rc, 0);
    assert_eq!(snapshot(&mirror), snap, "a dry run changed the target");
    let dst = statuses(&dry);
    assert_eq!(dst["1.2.0"].0, "up-to-date");
    let before = blob_files(&mirror);
    let (rc, real) = sync_json(&cfg, &[]);
    assert_eq!(rc, 0);
    // The counts are the blob files that appeared.
    let new: Vec<String> = blob_files(&mirror).difference(&before).cloned().collect();
    assert_eq!(real["summary"]["blobs"], new.len() as u64);
    let new_bytes: u64 = new
        .iter()
        .map(|b| fs::metadata(mirror.join("blobs").join(b)).unwrap().len())
        .sum();
    assert_eq!(real["summary"]["bytes"], new_bytes);
    let blobs = |v: &Value| -> BTreeMap<String, (u64, u64)> {
        v["entries"][0]["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_string(),
                    (i["blobs"].as_u64().unwrap(), i["bytes"].as_u64().unwrap()),
                )
            })
            .collect()
    };
    assert_eq!(blobs(&dry), blobs(&real));
    assert_eq!(dry["summary"]["wouldCopy"], 3);
    assert_eq!(real["summary"]["copied"], 3);
    assert_eq!(tags_of(&mirror), expected_names(&f));
    assert_eq!(snapshot(&f.path("src")), src_snap, "the source changed");
}

#[test]
fn a_broken_source_fails_its_entry_only() {
    let f = fixture();
    fs::write(f.path("bad.tar"), b"this is not a tar archive at all").unwrap();
    let cfg = write_config(
        f.dir.path(),
        "sync.yaml",
        "sync:\n  - source: bad.tar\n    target: mirror\n  - source: missing-dir\n    target: mirror\n  - source: src\n    target: mirror\n    tags: {allow: [latest]}\n",
    );
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 1, "{v:#}");
    let entries = v["entries"].as_array().unwrap();
    for (i, needle) in [(0, "bad.tar"), (1, "missing-dir")] {
        let errs = entries[i]["errors"].as_array().unwrap();
        assert_eq!(errs.len(), 1, "{v:#}");
        assert!(errs[0]["error"].as_str().unwrap().contains(needle), "{v:#}");
        assert!(entries[i]["images"].as_array().unwrap().is_empty());
    }
    assert_eq!(entries[2]["errors"], json!([]));
    assert_eq!(statuses(&v)["latest"].0, "copied");
    assert_eq!(v["summary"]["failed"], 2);
    assert_eq!(tags_of(&f.path("mirror")), set(["latest"]));
    let o = ocikit(["sync", &s(&cfg)]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("failed entry 1 bad.tar: "),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("up to date src:latest -> mirror:latest"));
}

#[test]
fn glob_of_archives_with_repo_and_tag() {
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("archives");
    fs::create_dir(&ar).unwrap();
    let demo = s(&demo());
    // Stored names: `1.0` (no repository), `acme/app:2.0`, and a
    // docker-archive RepoTag (containerd name docker.io/library/tool:3).
    ocikit_ok(["export", &format!("{demo}:1.0"), &s(&ar.join("one.tar"))]);
    ocikit_ok([
        "export",
        &format!("{demo}:legacy"),
        &format!("{}:acme/app:2.0", s(&ar.join("two.tar.gz"))),
    ]);
    ocikit_ok([
        "export",
        "--format",
        "docker-archive",
        &format!("{demo}:legacy"),
        &format!("{}:tool:3", s(&ar.join("three.tar"))),
    ]);
    fs::write(ar.join("notes.txt"), "not matched").unwrap();
    let cfg = write_config(
        t.path(),
        "sync.yaml",
        "sync:\n  - source: archives/*.tar*\n    target: mirror:{{repo}}:{{tag}}\n",
    );
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 0, "{v:#}");
    let mirror = t.path().join("mirror");
    assert_eq!(tags_of(&mirror), set(["one:1.0", "acme/app:2.0", "tool:3"]));
    let sources: Vec<&str> = v["entries"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            "archives/one.tar",
            "archives/three.tar",
            "archives/two.tar.gz"
        ]
    );
    assert_eq!(
        digest(&index_entry(&mirror, "one:1.0")),
        digest(&index_entry(&self::demo(), "1.0"))
    );
    // Again: all up to date.
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 0);
    assert_eq!(v["summary"]["upToDate"], 3);
    assert_eq!(v["summary"]["blobs"], 0);

    // A glob that matches nothing fails its entry, not the run.
    let cfg = write_config(
        t.path(),
        "none.yaml",
        "sync:\n  - source: archives/*.zip\n    target: mirror\n  - source: archives/one.tar\n    target: other\n",
    );
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 1);
    assert!(v["entries"][0]["errors"][0]["error"]
        .as_str()
        .unwrap()
        .contains("matches nothing"));
    assert_eq!(tags_of(&t.path().join("other")), set(["1.0"]));
}

#[test]
fn digest_tags_follow_their_image() {
    let f = fixture();
    let only = |digest_tags: bool, allow: &str| {
        format!(
            "sync:\n  - source: src\n    target: out-{digest_tags}-{allow}\n    digestTags: {digest_tags}\n    tags: {{allow: ['{allow}']}}\n"
        )
    };
    // Kept image: its signature follows (under its own tag).
    let cfg = write_config(f.dir.path(), "a.yaml", &only(true, "1.2.0"));
    assert_eq!(sync_json(&cfg, &[]).0, 0);
    assert_eq!(
        tags_of(&f.path("out-true-1.2.0")),
        set(["1.2.0".to_string(), f.sig_kept.clone()])
    );
    // Filtered-out image: its signature does not go either.
    let cfg = write_config(f.dir.path(), "b.yaml", &only(true, "latest"));
    let (_, v) = sync_json(&cfg, &[]);
    assert_eq!(tags_of(&f.path("out-true-latest")), set(["latest"]));
    let st = statuses(&v);
    for sig in [&f.sig_kept, &f.sig_dropped] {
        assert_eq!(st[sig].0, "filtered-out");
        assert!(st[sig].2.as_deref().unwrap().contains("is not synced"));
    }
    // Without digestTags a signature tag is a tag like any other.
    let cfg = write_config(f.dir.path(), "c.yaml", &only(false, "1.2.0"));
    let (_, v) = sync_json(&cfg, &[]);
    assert_eq!(tags_of(&f.path("out-false-1.2.0")), set(["1.2.0"]));
    assert!(statuses(&v)[&f.sig_kept]
        .2
        .as_deref()
        .unwrap()
        .starts_with("not allowed by"));
}

#[test]
fn platforms_choose_from_the_index() {
    let t = tempfile::tempdir().unwrap();
    let demo = demo();
    let cfg = write_config(
        t.path(),
        "sync.yaml",
        &format!(
            "defaults:\n  platforms: [linux/amd64]\n  referrers: false\nsync:\n  - source: {}:1.0\n    target: mirror\n",
            s(&demo)
        ),
    );
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 0, "{v:#}");
    let index: Value =
        serde_json::from_slice(&blob_bytes(&demo, &digest(&index_entry(&demo, "1.0")))).unwrap();
    let by_arch = |arch: &str| -> String {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .map(digest)
            .unwrap()
    };
    let mirror = t.path().join("mirror");
    let e = index_entry(&mirror, "1.0");
    assert_eq!(digest(&e), by_arch("amd64"));
    assert_eq!(e["mediaType"], OCI_MANIFEST);
    assert_eq!(
        index_json(&mirror)["manifests"].as_array().unwrap().len(),
        1
    );
    let blobs = blob_files(&mirror);
    assert!(blobs.contains(&blob_name(&by_arch("amd64"))));
    assert!(!blobs.contains(&blob_name(&by_arch("arm64"))));
    assert_eq!(
        v["entries"][0]["images"][0]["targetDigest"],
        by_arch("amd64")
    );
    // Again: up to date (the check compares the chosen manifest's digest).
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 0);
    assert_eq!(v["entries"][0]["images"][0]["status"], "up-to-date");
}

/// A bad config: exit 2, FILE:LINE:COL and what is wrong on stderr, nothing
/// written.
fn bad(dir: &Path, text: &str, needles: &[&str]) {
    let cfg = write_config(dir, "bad.yaml", text);
    let o = ocikit(["sync", &s(&cfg)]);
    assert_eq!(code(&o), 2, "{text}: {}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    for n in needles {
        assert!(err.contains(n), "{text}: {n:?} not in {err}");
    }
    assert!(stdout(&o).is_empty());
    assert!(!dir.join("mirror").exists());
}

#[test]
fn bad_configs_name_file_line_and_column() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let f = s(&d.join("bad.yaml"));
    bad(
        d,
        "sync:\n  - source: src\n    target: mirror\n    tgas: {allow: [x]}\n",
        &[&format!("{f}:4:5: unknown field `tgas`, expected one of")],
    );
    bad(
        d,
        "sync:\n  - source: src\n    target: mirror\n    referrers: sometimes\n",
        &[&format!("{f}:4:16: ")],
    );
    bad(
        d,
        "sync:\n  - source: src\n    target: mirror\n    platforms: linux/amd64\n",
        &[&format!("{f}:4:16: ")],
    );
    bad(
        d,
        "sync:\n  - source: src\n    target: mirror\n  - source: src\n    target: mirror\n    tags:\n      deny: ['(unclosed']\n",
        &[&format!("{f}:7:14: entry 2: tags.deny: bad regex \"(unclosed\": unclosed group")],
    );
    bad(
        d,
        "defaults:\n  tags: {semver: 'not a range'}\nsync: []\n",
        &[&format!(
            "{f}:2:18: defaults: tags.semver: bad range \"not a range\""
        )],
    );
    bad(
        d,
        "sync:\n  - source: src\n    target: 'mirror:{{repository}}:{{tag}}'\n",
        &[
            &format!("{f}:3:13: entry 1: target:"),
            "unknown variable \"repository\"",
        ],
    );
    bad(
        d,
        "sync:\n  - source: src\n",
        &[&format!("{f}:2:5: missing field `target`")],
    );
    bad(d, "sync: [\n", &[&format!("{f}:1:")]);
    bad(
        d,
        "version: 3\nsync: []\n",
        &[&format!("{f}:1:10: version 3")],
    );
    let o = ocikit(["sync", &s(&d.join("absent.yaml"))]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("absent.yaml"));
}

#[test]
fn json_configs_are_accepted() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(
        t.path(),
        "sync.json",
        &format!(
            "{{\n\t\"sync\": [\n\t\t{{\"source\": \"{}\", \"target\": \"mirror:{{{{tag}}}}\", \"tags\": {{\"deny\": [\"legacy\"]}}}}\n\t]\n}}\n",
            s(&demo())
        ),
    );
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(tags_of(&t.path().join("mirror")), set(["1.0"]));
    let cfg = write_config(
        t.path(),
        "bad.json",
        "{\"sync\": [{\"source\": \"x\", \"target\": \"y\", \"digestTags\": \"yes\"}]}",
    );
    let o = ocikit(["sync", &s(&cfg)]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains(&format!("{}:1:", s(&cfg))),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sync_waits_for_the_writer_lock() {
    let t = tempfile::tempdir().unwrap();
    let mirror = t.path().join("mirror");
    build_simple(&mirror);
    let cfg = write_config(
        t.path(),
        "sync.yaml",
        &format!(
            "sync:\n  - source: {}:legacy\n    target: mirror\n",
            s(&demo())
        ),
    );
    // With a timeout, the image fails naming the lock; nothing changes.
    let lock = hold_lock(&mirror);
    let snap = snapshot(&mirror);
    let start = Instant::now();
    let o = ocikit(["sync", &s(&cfg), "--lock-timeout", "0.2"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(start.elapsed() >= Duration::from_millis(200));
    let out = stdout(&o);
    assert!(out.contains("failed ") && out.contains("lock"), "{out}");
    assert_eq!(snapshot(&mirror), snap);

    // Without one it waits, then writes.
    let mut child = std::process::Command::new(bin())
        .args(["sync", &s(&cfg)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "sync finished while another process held the lock"
    );
    assert_eq!(
        snapshot(&mirror),
        snap,
        "sync wrote while the lock was held"
    );
    drop(lock);
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(index_tags(&mirror).contains(&"legacy".to_string()));
}

#[test]
fn a_damaged_image_fails_alone() {
    let f = fixture();
    // `latest`'s layer: same size, other bytes (found when it is written).
    let src = f.path("src");
    let m: Value = serde_json::from_slice(&blob_bytes(&src, &f.digests["latest"])).unwrap();
    let layer = digest(&m["layers"][0]);
    let path = src.join("blobs").join(blob_name(&layer));
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let cfg = write_config(
        f.dir.path(),
        "sync.yaml",
        "sync:\n  - source: src\n    target: mirror\n    tags: {allow: ['1\\.2\\.0', latest, v1\\.4]}\n",
    );
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 1, "{v:#}");
    let st = statuses(&v);
    assert_eq!(st["1.2.0"].0, "copied");
    assert_eq!(st["v1.4"].0, "copied");
    assert_eq!(st["latest"].0, "failed");
    assert!(
        st["latest"].2.as_deref().unwrap().contains(&layer),
        "{:?}",
        st["latest"]
    );
    assert_eq!(tags_of(&f.path("mirror")), set(["1.2.0", "v1.4"]));
    assert!(!blob_files(&f.path("mirror")).contains(&blob_name(&layer)));
    ocikit_ok(["verify", &s(&f.path("mirror"))]);
}

/// The demo's SBOM (a referrer of its amd64 manifest, not in index.json)
/// comes along by default, found by the one scan per source; `referrers:
/// false` leaves it out.
#[test]
fn referrers_follow_unless_turned_off() {
    let demo = demo();
    let sbom = blob_files(&demo)
        .into_iter()
        .find(|b| {
            let bytes = fs::read(demo.join("blobs").join(b)).unwrap();
            serde_json::from_slice::<Value>(&bytes)
                .is_ok_and(|v| v["artifactType"] == "application/spdx+json")
        })
        .expect("the demo's SBOM");
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(
        t.path(),
        "sync.yaml",
        &format!(
            "sync:\n  - source: {d}\n    target: with\n  - source: {d}\n    target: without\n    referrers: false\n",
            d = s(&demo)
        ),
    );
    let (rc, v) = sync_json(&cfg, &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(blob_files(&t.path().join("with")).contains(&sbom));
    assert!(!blob_files(&t.path().join("without")).contains(&sbom));
    assert_eq!(tags_of(&t.path().join("with")), set(["1.0", "legacy"]));
    assert_eq!(tags_of(&t.path().join("without")), set(["1.0", "legacy"]));
}

#[test]
fn a_name_moved_to_content_the_target_holds_is_copied_with_no_blob() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let one = image(&src, "one\n");
    let two = image(&src, "two\n");
    let tagged = |entries: &[(&str, &Value)]| {
        let list: Vec<Value> = entries
            .iter()
            .map(|(tag, d)| {
                let mut d = (*d).clone();
                d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
                d
            })
            .collect();
        write_layout_files(&src, &json!({"schemaVersion": 2, "manifests": list}));
    };
    tagged(&[("app", &one), ("next", &two)]);
    let config = write_config(
        t.path(),
        "s.yaml",
        "sync:\n  - source: src\n    target: mirror\n",
    );
    let (code, _) = sync_json(&config, &[]);
    assert_eq!(code, 0);
    let mirror = t.path().join("mirror");
    let blobs_before = blob_files(&mirror);
    // `app` now names what `next` named: the target has every blob already.
    tagged(&[("app", &two), ("next", &two)]);
    let (code, v) = sync_json(&config, &[]);
    assert_eq!(code, 0, "{v}");
    let st = statuses(&v);
    assert_eq!(st["app"].0, "copied", "{v}");
    assert_eq!(st["next"].0, "up-to-date", "{v}");
    let app = v["entries"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "app")
        .unwrap();
    assert_eq!(app["blobs"], 0, "{v}");
    assert_eq!(v["summary"]["blobs"], 0, "{v}");
    assert_eq!(blob_files(&mirror), blobs_before);
    assert_eq!(index_entry(&mirror, "app")["digest"], two["digest"]);
}
