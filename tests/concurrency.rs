//! Concurrent writers take turns on `.ocikit.lock` and lose no edit; readers
//! never see a partly written `index.json`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

fn spawn(args: &[String]) -> Child {
    Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ocikit")
}

/// Waits for every child, asserting each exited 0.
fn wait_all(children: Vec<(String, Child)>) {
    for (what, c) in children {
        let o = c.wait_with_output().unwrap();
        assert_eq!(code(&o), 0, "{what} failed: {}", stderr(&o));
    }
}

fn tag_args(root: &Path, tag: &str) -> Vec<String> {
    vec![
        "tag".into(),
        format!("{}:latest", root.display()),
        tag.into(),
    ]
}

fn untag_args(root: &Path, tag: &str) -> Vec<String> {
    vec!["untag".into(), format!("{}:{tag}", root.display())]
}

fn set(v: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

/// What a clean finish looks like: `verify` passes, every entry names the one
/// image, and no temporary `index.json` is left behind.
fn assert_clean(root: &Path, manifest: &Value) {
    let o = ocikit(["verify", &root.display().to_string()]);
    assert_eq!(code(&o), 0, "verify: {}{}", stdout(&o), stderr(&o));
    for e in index_json(root)["manifests"].as_array().unwrap() {
        assert_eq!(e["digest"], manifest["digest"], "{e}");
        assert_eq!(e["size"], manifest["size"], "{e}");
    }
    let leftovers: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".index.json"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn twenty_concurrent_tags_all_land() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("l");
    let (manifest, _, _) = build_simple(&root);
    let tags: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();

    let children: Vec<(String, Child)> = tags
        .iter()
        .map(|tg| (format!("tag {tg}"), spawn(&tag_args(&root, tg))))
        .collect();
    wait_all(children);

    let got = index_tags(&root);
    assert_eq!(got.len(), 21, "a tag is missing or doubled: {got:?}");
    let mut want = set(tags);
    want.insert("latest".into());
    assert_eq!(set(got.clone()), want);
    assert_eq!(got[0], "latest", "the untouched first entry moved");
    assert_clean(&root, &manifest);
}

#[test]
fn concurrent_tags_and_untags_give_the_exact_set() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("l");
    let (manifest, _, _) = build_simple(&root);
    let old: Vec<String> = (0..10).map(|i| format!("u{i:02}")).collect();
    for tg in &old {
        ocikit_ok(tag_args(&root, tg));
    }
    assert_eq!(index_tags(&root).len(), 11);

    let new: Vec<String> = (0..10).map(|i| format!("t{i:02}")).collect();
    let mut children = Vec::new();
    for (a, b) in new.iter().zip(&old) {
        children.push((format!("tag {a}"), spawn(&tag_args(&root, a))));
        children.push((format!("untag {b}"), spawn(&untag_args(&root, b))));
    }
    wait_all(children);

    let got = index_tags(&root);
    let mut want = set(new);
    want.insert("latest".into());
    assert_eq!(set(got.clone()), want);
    // Every untag removed a duplicate-digest entry, so nothing is left untagged.
    assert_eq!(
        index_json(&root)["manifests"].as_array().unwrap().len(),
        got.len(),
        "untagged or doubled entries remain: {}",
        String::from_utf8_lossy(&fs::read(root.join("index.json")).unwrap())
    );
    assert_eq!(got.len(), 11);
    assert_clean(&root, &manifest);
}

#[test]
fn readers_never_see_a_torn_index() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("l");
    let (manifest, _, _) = build_simple(&root);
    let tags: Vec<String> = (0..20).map(|i| format!("r{i:02}")).collect();
    let mut children: Vec<(String, Child)> = tags
        .iter()
        .map(|tg| (format!("tag {tg}"), spawn(&tag_args(&root, tg))))
        .collect();

    let mut reads = 0usize;
    let mut ls_runs = 0usize;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    loop {
        let running = children
            .iter_mut()
            .any(|(_, c)| c.try_wait().unwrap().is_none());
        let bytes = fs::read(root.join("index.json")).expect("index.json always exists");
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "read {reads}: torn index.json ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        reads += 1;
        let now: BTreeSet<String> = v["manifests"]
            .as_array()
            .expect("manifests is an array")
            .iter()
            .filter_map(|e| {
                e["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        // Writers only add tags: a read never loses one an earlier read saw.
        assert!(
            now.is_superset(&seen),
            "tags went missing: had {seen:?}, now {now:?}"
        );
        assert!(now.contains("latest"));
        seen = now;
        // ocikit's own readers get a whole index.json too.
        if reads.is_multiple_of(25) {
            let o = ocikit(["ls", &root.display().to_string(), "--json"]);
            assert_eq!(code(&o), 0, "ls during writes: {}", stderr(&o));
            serde_json::from_slice::<Value>(&o.stdout).expect("ls --json is JSON");
            ls_runs += 1;
        }
        if !running {
            break;
        }
    }
    eprintln!("{reads} reads of index.json and {ls_runs} ocikit ls runs during the writes");
    wait_all(children);
    assert!(reads > 1, "the reader loop never ran while writers did");
    let mut want = set(tags);
    want.insert("latest".into());
    assert_eq!(set(index_tags(&root)), want);
    assert_eq!(seen, want, "the last read after all writers finished");
    assert_clean(&root, &manifest);
}
