//! `ocikit prune`: what each retention policy keeps, name by name, on a
//! layout of 30 tags; the dry run; what gc frees after a real prune
//! (computed here from the layout files, never asked of ocikit); referrers;
//! idempotence.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const SEMVER: [&str; 12] = [
    "1.0.0", "v1.1.0", "1.2.0", "v1.2.5", "1.3.0", "1.4.0", "v1.5.0", "1.9.9", "2.0.0", "v2.1.0",
    "2.2.0", "2.3.0",
];

fn nightly(k: u32) -> String {
    format!("nightly-2024-01-{k:02}")
}

fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

struct Image {
    manifest: Value,
    blobs: Vec<String>,
}

/// An image with its own created time and a distinct one-file layer.
fn image(root: &Path, created: i64, content: &str) -> Image {
    let (manifest, blobs) = put_one_file_image(root, &rfc3339(created), content);
    Image { manifest, blobs }
}

/// A referrer of `subject`, stored but not in index.json; returns its blobs.
fn referrer(root: &Path, subject: &Value, note: &str) -> Vec<String> {
    let empty = put_blob(root, OCI_EMPTY, b"{}");
    let blob = put_blob(root, "text/plain", note.as_bytes());
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.note",
        "config": empty,
        "layers": [blob],
        "subject": subject,
    });
    let d = put_blob(root, OCI_MANIFEST, &to_bytes(&m));
    [&d, &empty, &blob]
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    /// Each tag's blobs.
    images: BTreeMap<String, Vec<String>>,
    /// Referrers: of nightly-17 (kept by the real prune) and nightly-01 (dropped).
    kept_referrer: Vec<String>,
    dropped_referrer: Vec<String>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// 30 tags: 12 semver (old, a day apart from 2023-01-01), 17 nightlies
/// (nightly-k created 18 − k days ago), and `latest` (an hour ago).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("l");
    write_layout_files(&root, &json!({"schemaVersion": 2, "manifests": []}));
    let now = now();
    let mut entries = Vec::new();
    let mut images = BTreeMap::new();
    let mut add = |name: String, created: i64, entries: &mut Vec<Value>| {
        let img = image(&root, created, &format!("content of {name}\n"));
        let mut d = img.manifest.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        entries.push(d);
        images.insert(name, img.blobs);
        img.manifest
    };
    for (i, v) in SEMVER.iter().enumerate() {
        add(
            v.to_string(),
            1_672_531_200 + i as i64 * 86_400,
            &mut entries,
        );
    }
    let mut subjects = BTreeMap::new();
    for k in 1..=17u32 {
        let m = add(nightly(k), now - i64::from(18 - k) * 86_400, &mut entries);
        subjects.insert(k, m);
    }
    add("latest".into(), now - 3600, &mut entries);
    let kept_referrer = referrer(&root, &subjects[&17], "kept");
    let dropped_referrer = referrer(&root, &subjects[&1], "dropped");
    write_layout_files(&root, &json!({"schemaVersion": 2, "manifests": entries}));
    assert_eq!(images.len(), 30);
    Fixture {
        _dir: dir,
        root,
        images,
        kept_referrer,
        dropped_referrer,
    }
}

fn all_tags() -> BTreeSet<String> {
    let mut s: BTreeSet<String> = SEMVER.iter().map(|s| s.to_string()).collect();
    s.extend((1..=17).map(nightly));
    s.insert("latest".into());
    s
}

/// `prune ROOT --match ^nightly- --keep-last 3 --json` (a real run), which
/// must succeed; its document.
fn keep_last_3_nightlies(root: &str) -> Value {
    let o = ocikit([
        "prune",
        root,
        "--match",
        "^nightly-",
        "--keep-last",
        "3",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// The text plan of `prune ROOT --dry-run ARGS`, which must succeed.
fn plan_text(root: &Path, args: &[&str]) -> String {
    let mut a = vec!["prune", root.to_str().unwrap(), "--dry-run"];
    a.extend_from_slice(args);
    let o = ocikit(&a);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
}

/// The names a dry run's plan drops, checking every tag appears once.
fn dropped(root: &Path, args: &[&str]) -> BTreeSet<String> {
    let mut a = vec!["prune", root.to_str().unwrap(), "--dry-run", "--json"];
    a.extend_from_slice(args);
    let o = ocikit(&a);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let plan = v["plan"].as_array().unwrap();
    let names: BTreeSet<String> = plan
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, all_tags());
    assert_eq!(plan.len(), 30);
    plan.iter()
        .filter(|d| d["drop"].as_bool().unwrap())
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

fn set<I: IntoIterator<Item = S>, S: Into<String>>(i: I) -> BTreeSet<String> {
    i.into_iter().map(Into::into).collect()
}

#[test]
fn policies_name_by_name() {
    let f = fixture();
    let r = &f.root;
    // Only nightlies are candidates; the 3 newest by created stay.
    assert_eq!(
        dropped(r, &["--match", "^nightly-", "--keep-last", "3"]),
        set((1..=14).map(nightly))
    );
    // Every tag is a candidate; semver tags in range stay.
    let mut expect = all_tags();
    for v in ["1.2.0", "v1.2.5", "1.3.0", "1.4.0", "v1.5.0", "1.9.9"] {
        expect.remove(v);
    }
    assert_eq!(dropped(r, &["--keep-semver", ">=1.2 <2"]), expect);
    assert_eq!(dropped(r, &["--keep-semver", ">=1.2, <2"]), expect);
    // The 2 highest versions; nightlies and latest are not matched.
    let mut expect = set(SEMVER);
    expect.remove("2.3.0");
    expect.remove("2.2.0");
    assert_eq!(
        dropped(
            r,
            &[
                "--match",
                "^v?[0-9]",
                "--keep-last",
                "2",
                "--sort",
                "semver"
            ]
        ),
        expect
    );
    // By created (semver tags were created in list order) the same two.
    assert_eq!(
        dropped(r, &["--match", "^v?[0-9]", "--keep-last", "2"]),
        expect
    );
    // Older than 250 h (10.4 days): nightly-1..7 (11 to 17 days old).
    assert_eq!(
        dropped(r, &["--match", "^nightly-", "--older-than", "250h"]),
        set((1..=7).map(nightly))
    );
    // Without --match, every old tag goes but the recent ones stay.
    let mut expect = set(SEMVER);
    expect.extend((1..=7).map(nightly));
    assert_eq!(dropped(r, &["--older-than", "250h"]), expect);
    // Policies must all agree: keep-last 3 or newer than 250 h keeps 8..17.
    assert_eq!(
        dropped(
            r,
            &[
                "--match",
                "^nightly-",
                "--keep-last",
                "3",
                "--older-than",
                "250h"
            ]
        ),
        set((1..=7).map(nightly))
    );
    // ^1.2 or the newest version.
    let expect = set(["1.0.0", "v1.1.0", "2.0.0", "v2.1.0", "2.2.0"]);
    assert_eq!(
        dropped(
            r,
            &[
                "--match",
                "^v?[0-9]",
                "--keep-semver",
                "^1.2",
                "--keep-last",
                "1",
                "--sort",
                "semver"
            ]
        ),
        expect
    );
    // A regex that matches nothing drops nothing.
    assert!(dropped(r, &["--match", "^nomatch$", "--keep-last", "0"]).is_empty());
}

#[test]
fn refusals_change_nothing() {
    let f = fixture();
    let before = snapshot(&f.root);
    for args in [
        vec![],
        vec!["--match", "^nightly-"],
        vec!["--keep-last", "1", "--match", "("],
        vec!["--keep-semver", "not a range"],
        vec!["--older-than", "10x"],
        vec!["--keep-last", "1", "--sort", "size"],
    ] {
        let mut a = vec!["prune", f.root.to_str().unwrap()];
        a.extend(args.iter().copied());
        let o = ocikit(&a);
        assert_eq!(code(&o), 2, "{args:?}: {}", stdout(&o));
    }
    assert_eq!(snapshot(&f.root), before);
}

#[test]
fn dry_run_changes_nothing() {
    let f = fixture();
    let before = snapshot(&f.root);
    let out = plan_text(&f.root, &["--keep-last", "1"]);
    assert!(
        out.contains("keep latest (in the last 1 by created)"),
        "{out}"
    );
    assert!(
        out.contains("drop 1.0.0 (not in the last 1 by created)"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 30, "{out}");
    let out = plan_text(&f.root, &["--match", "^nightly-", "--older-than", "250h"]);
    assert!(
        out.contains("drop nightly-2024-01-07 (older than 250h)"),
        "{out}"
    );
    assert!(
        out.contains("keep nightly-2024-01-08 (newer than 250h)"),
        "{out}"
    );
    assert!(
        out.contains("keep latest (not matched by --match)"),
        "{out}"
    );
    assert_eq!(snapshot(&f.root), before);
    assert!(!before.keys().any(|k| k.contains("lock")));
}

fn blob_files(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_str().unwrap()))
        .collect()
}

#[test]
fn prune_frees_what_no_kept_name_reaches_and_is_idempotent() {
    let f = fixture();
    let r = f.root.to_str().unwrap();
    let before = blob_files(&f.root);
    let dropped_names = set((1..=14).map(nightly));
    let mut reachable: BTreeSet<String> = f
        .images
        .iter()
        .filter(|(n, _)| !dropped_names.contains(*n))
        .flat_map(|(_, b)| b.iter().cloned())
        .collect();
    reachable.extend(f.kept_referrer.iter().cloned());
    let expect_removed: BTreeSet<String> = before.difference(&reachable).cloned().collect();
    // The dropped referrer's manifest and note go; its `{}` config is shared.
    assert!(expect_removed.contains(&f.dropped_referrer[0]));
    assert!(expect_removed.contains(&f.dropped_referrer[2]));
    assert!(!expect_removed.contains(&f.dropped_referrer[1]));
    assert_eq!(expect_removed.len(), 14 * 3 + 2);

    let v = keep_last_3_nightlies(r);
    assert_eq!(v["dryRun"], json!(false));
    assert_eq!(v["schemaVersion"], json!(1));
    let untagged: BTreeSet<String> = v["untagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert_eq!(untagged, dropped_names);
    let removed: BTreeSet<String> = v["gc"]["remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(removed, expect_removed);
    assert_eq!(v["gc"]["blobs"], json!(expect_removed.len()));
    assert_eq!(blob_files(&f.root), reachable);
    for k in f.kept_referrer.iter() {
        assert!(reachable.contains(k));
    }
    // The kept names are still there and every kept image verifies deep.
    let index: Value =
        serde_json::from_slice(&std::fs::read(f.root.join("index.json")).unwrap()).unwrap();
    let tags: BTreeSet<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expect_tags: BTreeSet<String> = all_tags().difference(&dropped_names).cloned().collect();
    assert_eq!(tags, expect_tags);
    let o = ocikit(["verify", r, "--deep"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));

    // Again: nothing to do.
    let snap = snapshot(&f.root);
    let v = keep_last_3_nightlies(r);
    assert_eq!(v["untagged"], json!([]));
    assert_eq!(v["gc"]["blobs"], json!(0));
    assert_eq!(v["gc"]["bytes"], json!(0));
    let after = snapshot(&f.root);
    let strip = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(k, _)| !k.contains("lock"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(strip(&after), strip(&snap));
    let o = ocikit(["prune", r, "--match", "^nightly-", "--keep-last", "3"]);
    assert!(
        stdout(&o).contains("untagged 0; gc removed 0 blobs, 0 bytes"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_damaged_graph_is_refused_before_any_name_is_taken_off() {
    let f = fixture();
    // A kept image's manifest is missing: gc (and so prune) refuses.
    let latest = &f.images["latest"][0];
    let hex = latest.strip_prefix("sha256:").unwrap();
    std::fs::remove_file(f.root.join("blobs/sha256").join(hex)).unwrap();
    let before = snapshot(&f.root);
    let o = ocikit([
        "prune",
        f.root.to_str().unwrap(),
        "--match",
        "^nightly-",
        "--keep-last",
        "3",
    ]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(stderr(&o).contains("untagged nothing"), "{}", stderr(&o));
    let strip = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(k, _)| !k.contains("lock"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(strip(&snapshot(&f.root)), strip(&before));
}

#[test]
fn an_index_is_as_new_as_its_newest_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("l");
    write_layout_files(&root, &json!({"schemaVersion": 2, "manifests": []}));
    let old = image(&root, 1_000_000, "old\n");
    let new = image(&root, 3_000_000, "new\n");
    let mid = image(&root, 2_000_000, "mid\n");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [old.manifest, new.manifest],
    });
    let mut multi = put_blob(&root, OCI_INDEX, &to_bytes(&index));
    multi["annotations"] = json!({"org.opencontainers.image.ref.name": "multi"});
    let mut single = mid.manifest.clone();
    single["annotations"] = json!({"org.opencontainers.image.ref.name": "single"});
    write_layout_files(
        &root,
        &json!({"schemaVersion": 2, "manifests": [single, multi]}),
    );
    let out = plan_text(&root, &["--keep-last", "1"]);
    assert!(
        out.contains("keep multi (in the last 1 by created)"),
        "{out}"
    );
    assert!(
        out.contains("drop single (not in the last 1 by created)"),
        "{out}"
    );
}
