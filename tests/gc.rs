//! `ocikit gc`: what it keeps (roots, nested indexes, referrers), what it
//! removes, what it refuses, its dry run and JSON, its agreement with
//! `umoci gc`, and the writer lock it shares with every other writing command.
//!
//! Expected blob sets are computed by hand from what each test builds: a test
//! never asks ocikit what is reachable.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::{json, Value};

type Names = BTreeSet<String>;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

// ---------------------------------------------------------------- helpers

fn gc(root: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["gc".to_string(), s(root)];
    args.extend(extra.iter().map(|a| a.to_string()));
    ocikit(&args)
}

fn gc_ok(root: &Path, extra: &[&str]) -> Output {
    let o = gc(root, extra);
    assert_eq!(
        code(&o),
        0,
        "ocikit gc {} {extra:?} failed:\n{}{}",
        root.display(),
        stdout(&o),
        stderr(&o)
    );
    o
}

fn assert_verifies(root: &Path) {
    let o = ocikit(["verify", &s(root)]);
    assert_eq!(
        code(&o),
        0,
        "verify {} after gc:\n{}{}",
        root.display(),
        stdout(&o),
        stderr(&o)
    );
}

fn desc_name(d: &Value) -> String {
    blob_name(d["digest"].as_str().unwrap())
}

fn union(sets: &[&Names]) -> Names {
    sets.iter().flat_map(|s| s.iter().cloned()).collect()
}

/// The blobs of an image manifest stored in `root`: itself, its config and layers.
fn image_names(root: &Path, manifest: &Value) -> Names {
    let m: Value =
        serde_json::from_slice(&blob_bytes(root, manifest["digest"].as_str().unwrap())).unwrap();
    let mut n = Names::new();
    n.insert(desc_name(manifest));
    n.insert(desc_name(&m["config"]));
    for l in m["layers"].as_array().unwrap() {
        n.insert(desc_name(l));
    }
    n
}

/// `n` unreferenced blobs with contents of their own.
fn put_garbage(root: &Path, tag: &str, n: usize) -> Names {
    (0..n)
        .map(|i| {
            let bytes = format!("garbage {tag} {i}\n").repeat(i + 1);
            desc_name(&put_blob(
                root,
                "application/octet-stream",
                bytes.as_bytes(),
            ))
        })
        .collect()
}

/// An image whose one layer and config belong to it alone (contents from
/// `name`); returns its manifest descriptor and its blobs.
fn put_own_image(root: &Path, name: &str, docker: bool) -> (Value, Names) {
    let layer_type = if docker { DOCKER_GZIP } else { OCI_GZIP };
    let layer = put_layer(
        root,
        layer_type,
        &tar(&[file("own.txt", &format!("image {name}\n"))]),
    );
    let m = put_image(root, "amd64", None, &[layer], docker);
    let n = image_names(root, &m);
    (m, n)
}

/// An artifact manifest whose `subject` is `subject`, with a config and a
/// payload of its own; returns its descriptor and its blobs.
fn put_referrer(root: &Path, subject: &Value, name: &str) -> (Value, Names) {
    let cfg = put_blob(
        root,
        "application/vnd.ocikit.test.config+json",
        format!("{{\"referrer\":\"{name}\"}}").as_bytes(),
    );
    let payload = put_blob(
        root,
        "application/vnd.ocikit.test.payload",
        format!("payload of {name}\n").as_bytes(),
    );
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.ocikit.test",
        "config": cfg,
        "layers": [payload],
        "subject": {"mediaType": subject["mediaType"], "digest": subject["digest"], "size": subject["size"]},
    });
    let d = put_blob(root, OCI_MANIFEST, &to_bytes(&m));
    let n = [desc_name(&d), desc_name(&cfg), desc_name(&payload)]
        .into_iter()
        .collect();
    (d, n)
}

fn tagged(desc: &Value, tag: &str) -> Value {
    let mut e = desc.clone();
    e["annotations"] = json!({ REF_NAME: tag });
    e
}

fn with_platform(desc: &Value, arch: &str) -> Value {
    let mut e = desc.clone();
    e["platform"] = json!({"architecture": arch, "os": "linux"});
    e
}

fn write_index(root: &Path, entries: Vec<Value>) {
    write_layout_files(
        root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    );
}

fn file_size(root: &Path, name: &str) -> u64 {
    fs::metadata(root.join("blobs").join(name)).unwrap().len()
}

/// A file in `.ocikit-tmp/` as a killed writer leaves it, an hour old.
fn put_stale_temp(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(".ocikit-tmp");
    fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    fs::write(&p, b"half a blob").unwrap();
    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    p
}

/// One `remove sha256:<hex> <size> <media type or -> (<why>)` line.
#[derive(Debug, Clone, PartialEq)]
struct PlanLine {
    size: u64,
    media_type: String,
    why: String,
}

/// A gc's text output: its blob lines (keyed by `alg/hex`), its other
/// `remove PATH (<why>)` lines (temporary files) and its last non-empty line.
struct Plan {
    blobs: BTreeMap<String, PlanLine>,
    others: Vec<String>,
    last: String,
}

fn parse_plan(out: &str) -> Plan {
    let mut blobs = BTreeMap::new();
    let mut others = Vec::new();
    for l in out.lines() {
        let Some(rest) = l.strip_prefix("remove ") else {
            continue;
        };
        let first = rest.split(' ').next().unwrap();
        if !(first.starts_with("sha256:") || first.starts_with("sha512:")) {
            assert!(rest.ends_with(')'), "malformed plan line {l:?}");
            others.push(first.to_string());
            continue;
        }
        let mut it = rest.splitn(4, ' ');
        let digest = it.next().unwrap();
        let size = it.next().unwrap_or_default();
        let mt = it.next().unwrap_or_default();
        let why = it.next().unwrap_or_default();
        assert!(
            why.starts_with('(') && why.ends_with(')') && !mt.is_empty(),
            "malformed plan line {l:?}"
        );
        let size = size
            .parse()
            .unwrap_or_else(|_| panic!("size in plan line {l:?}"));
        let prev = blobs.insert(
            blob_name(digest),
            PlanLine {
                size,
                media_type: mt.to_string(),
                why: why[1..why.len() - 1].to_string(),
            },
        );
        assert!(prev.is_none(), "blob listed twice: {l:?}");
    }
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_string();
    Plan {
        blobs,
        others,
        last,
    }
}

/// The summary line is `want`, optionally followed by a parenthesised note
/// (ocikit adds "(N kept)").
fn assert_final_line(last: &str, want: &str) {
    let ok = last == want
        || last
            .strip_prefix(want)
            .is_some_and(|rest| rest.starts_with(" (") && rest.ends_with(')'));
    assert!(ok, "final line {last:?}, expected {want:?}");
}

fn parse_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("gc --json printed no JSON ({e}):\n{}", stdout(o)))
}

/// The `remove` array of a gc JSON report, keyed by `alg/hex`.
fn json_removals(j: &Value) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for r in j["remove"].as_array().expect("remove is an array") {
        let d = r["digest"].as_str().expect("remove[].digest");
        assert!(
            m.insert(blob_name(d), r.clone()).is_none(),
            "listed twice: {r}"
        );
    }
    m
}

fn json_paths(j: &Value, key: &str) -> Vec<String> {
    j[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array in {j}"))
        .iter()
        .map(|v| {
            v.as_str()
                .or_else(|| v["path"].as_str())
                .unwrap_or_else(|| panic!("{key} item without a path: {v}"))
                .to_string()
        })
        .collect()
}

fn demo_ref(tag: &str) -> String {
    format!("{}:{tag}", s(&demo()))
}

/// The SBOM referrer of the demo (the one stored manifest with a `subject`):
/// its blobs (manifest, empty config, SBOM).
fn demo_referrer_names() -> Names {
    for e in fs::read_dir(demo().join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let bytes = fs::read(e.path()).unwrap();
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            if v.get("subject").is_some() {
                let d = json!({"digest": digest_of(&bytes)});
                return image_names(&demo(), &d);
            }
        }
    }
    panic!("the demo has no referrer");
}

// ---------------------------------------------------------------- 1. umoci

/// OCI media types only, no referrers: umoci and ocikit keep exactly the same
/// blobs, the ones computed by hand. Covers a tagged image, a tagged index
/// holding a nested index and a manifest, an untagged `index.json` entry, a
/// layer shared between a kept and a garbage image, plain garbage blobs, and a
/// garbage index over garbage manifests.
#[test]
fn umoci_and_ocikit_agree_without_referrers() {
    if !tools("umoci_and_ocikit_agree_without_referrers", &["umoci"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let (simple, _, simple_layer) = build_simple(&a);
    let hello_diff = digest_of(&tar(&[file("hello.txt", "hello\n")]));
    let mut keep = image_names(&a, &simple);

    let (ma, na) = put_own_image(&a, "nested-amd64", false);
    let (mb, nb) = put_own_image(&a, "nested-arm64", false);
    let mc = put_image(
        &a,
        "s390x",
        None,
        &[(simple_layer.clone(), hello_diff.clone())],
        false,
    );
    let inner = put_blob(
        &a,
        OCI_INDEX,
        &to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [with_platform(&ma, "amd64"), with_platform(&mb, "arm64")]})),
    );
    let outer = put_blob(
        &a,
        OCI_INDEX,
        &to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [inner, with_platform(&mc, "s390x")]})),
    );
    keep = union(&[&keep, &na, &nb, &image_names(&a, &mc)]);
    keep.insert(desc_name(&inner));
    keep.insert(desc_name(&outer));
    let (mu, nu) = put_own_image(&a, "untagged", false);
    keep = union(&[&keep, &nu]);

    let mut garbage = put_garbage(&a, "oci", 5);
    let (g1, ng1) = put_own_image(&a, "garbage-1", false);
    // A garbage manifest sharing the kept layer: the layer stays.
    let g2 = put_image(&a, "riscv64", None, &[(simple_layer, hello_diff)], false);
    let mut ng2 = image_names(&a, &g2);
    ng2.retain(|n| !keep.contains(n));
    assert_eq!(ng2.len(), 2, "garbage manifest and its own config");
    let gi = put_blob(
        &a,
        OCI_INDEX,
        &to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [g1, g2]})),
    );
    garbage = union(&[&garbage, &ng1, &ng2]);
    garbage.insert(desc_name(&gi));

    write_index(
        &a,
        vec![tagged(&simple, "latest"), tagged(&outer, "nested"), mu],
    );
    assert_eq!(blob_files(&a), union(&[&keep, &garbage]), "test setup");
    assert!(keep.is_disjoint(&garbage));
    let b = t.path().join("b");
    copy_tree(&a, &b);

    run_ok("umoci", &["gc", "--layout", &s(&a)]);
    gc_ok(&b, &[]);
    assert_eq!(blob_files(&b), keep, "ocikit gc kept a different set");
    assert_eq!(blob_files(&a), keep, "umoci gc kept a different set");
    assert_verifies(&b);
}

/// Docker schema2 manifests and manifest lists: ocikit keeps everything they
/// reference. umoci 0.4 does not walk Docker media types, so it deletes the
/// config and layers of a Docker manifest and the manifests of a Docker
/// manifest list (the image is then broken): this documents exactly that.
#[test]
fn docker_media_types_ocikit_keeps_what_umoci_deletes() {
    if !tools(
        "docker_media_types_ocikit_keeps_what_umoci_deletes",
        &["umoci"],
    ) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    ocikit_ok(["copy", &demo_ref("legacy"), &s(&a)]);
    let legacy = index_json(&a)["manifests"][0].clone();
    assert_eq!(legacy["mediaType"], DOCKER_MANIFEST);
    let legacy_names = image_names(&a, &legacy);
    assert_eq!(legacy_names.len(), 4);

    let (dm, ndm) = put_own_image(&a, "docker-list-amd64", true);
    let list = put_blob(
        &a,
        DOCKER_LIST,
        &to_bytes(&json!({"schemaVersion": 2, "mediaType": DOCKER_LIST,
            "manifests": [with_platform(&dm, "amd64")]})),
    );
    let mut garbage = put_garbage(&a, "docker", 4);
    let (_, ngd) = put_own_image(&a, "docker-garbage", true);
    garbage = union(&[&garbage, &ngd]);
    write_index(&a, vec![legacy.clone(), tagged(&list, "list")]);

    let mut keep = union(&[&legacy_names, &ndm]);
    keep.insert(desc_name(&list));
    assert_eq!(blob_files(&a), union(&[&keep, &garbage]), "test setup");
    let b = t.path().join("b");
    copy_tree(&a, &b);

    run_ok("umoci", &["gc", "--layout", &s(&a)]);
    gc_ok(&b, &[]);
    assert_eq!(blob_files(&b), keep, "ocikit gc");
    assert_verifies(&b);
    // umoci keeps only the blobs index.json names directly.
    let umoci_keeps: Names = [desc_name(&legacy), desc_name(&list)].into();
    assert_eq!(
        blob_files(&a),
        umoci_keeps,
        "umoci gc no longer drops what Docker manifests reference: update this test"
    );
}

/// With the demo's SBOM referrer (not listed in `index.json`): ocikit keeps it
/// and its blobs, umoci deletes them; otherwise both keep the same set.
#[test]
fn referrers_ocikit_keeps_what_umoci_deletes() {
    if !tools("referrers_ocikit_keeps_what_umoci_deletes", &["umoci"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    ocikit_ok(["copy", &demo_ref("1.0"), &s(&a)]);
    let all = blob_files(&a);
    let referrer = demo_referrer_names();
    assert!(referrer.is_subset(&all), "copy brought the referrer along");
    let mut garbage = put_garbage(&a, "referrers", 5);
    let (_, ng) = put_own_image(&a, "garbage", false);
    garbage = union(&[&garbage, &ng]);
    assert_eq!(blob_files(&a), union(&[&all, &garbage]), "test setup");
    let b = t.path().join("b");
    copy_tree(&a, &b);

    run_ok("umoci", &["gc", "--layout", &s(&a)]);
    gc_ok(&b, &[]);
    assert_eq!(
        blob_files(&b),
        all,
        "ocikit keeps the referrer and its blobs"
    );
    assert_verifies(&b);
    let umoci_keeps: Names = all.difference(&referrer).cloned().collect();
    assert_eq!(
        blob_files(&a),
        umoci_keeps,
        "umoci gc should delete exactly the referrer's three blobs"
    );
}

// ---------------------------------------------------------------- 2. dry run

/// `--dry-run` (text and JSON) changes nothing, lists exactly the garbage
/// (computed by hand) with sizes and total, and a real gc (text and JSON) then
/// removes exactly that list.
#[test]
fn dry_run_changes_nothing_and_lists_exactly_what_gc_removes() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    copy_tree(&demo(), &base);
    let kept = blob_files(&base);
    let random = put_garbage(&base, "dry", 4);
    let (gm, ng) = put_own_image(&base, "garbage", false);
    let (_, nr) = put_referrer(&base, &gm, "referrer-of-garbage");
    let garbage = union(&[&random, &ng, &nr]);
    let temp = put_stale_temp(&base, "blob-stale");
    let x = t.path().join("x");
    let y = t.path().join("y");
    copy_tree(&base, &x);
    copy_tree(&base, &y);
    let total: u64 = garbage.iter().map(|n| file_size(&base, n)).sum();

    // Text.
    let snap = snapshot(&base);
    let o = gc_ok(&base, &["--dry-run"]);
    assert_eq!(snapshot(&base), snap, "--dry-run changed the layout");
    let Plan {
        blobs: plan,
        others,
        last,
    } = parse_plan(&stdout(&o));
    assert!(
        others.iter().any(|p| p.ends_with(".ocikit-tmp/blob-stale")),
        "the stale temp file is not in the plan:\n{}",
        stdout(&o)
    );
    assert_eq!(
        plan.keys().cloned().collect::<Names>(),
        garbage,
        "dry-run plan:\n{}",
        stdout(&o)
    );
    for (n, p) in &plan {
        assert_eq!(p.size, file_size(&base, n), "size of {n}");
        assert!(!p.why.is_empty(), "no reason for {n}");
        if random.contains(n) {
            assert_eq!(p.media_type, "-", "{n} is not a document: no media type");
        }
        if *n == desc_name(&gm) {
            assert!(p.media_type == OCI_MANIFEST || p.media_type == "-", "{p:?}");
        }
    }
    assert_final_line(
        &last,
        &format!("would free {total} bytes in {} blobs", garbage.len()),
    );

    // JSON.
    let o = gc_ok(&base, &["--dry-run", "--json"]);
    assert_eq!(snapshot(&base), snap, "--dry-run --json changed the layout");
    let j = parse_json(&o);
    assert_eq!(j["schemaVersion"], 1);
    assert_eq!(j["dryRun"], true);
    let removals = json_removals(&j);
    assert_eq!(removals.keys().cloned().collect::<Names>(), garbage);
    for (n, r) in &removals {
        let p = &plan[n];
        assert_eq!(r["size"], p.size, "{r}");
        if p.media_type == "-" {
            assert!(r["mediaType"].is_null() || r["mediaType"] == "-", "{r}");
        } else {
            assert_eq!(r["mediaType"], p.media_type.as_str(), "{r}");
        }
        assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
        assert!(
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("blobs/{n}"))),
            "{r}"
        );
    }
    assert_eq!(j["bytes"], total);
    assert_eq!(j["blobs"], garbage.len());
    assert!(
        json_paths(&j, "tempFiles")
            .iter()
            .any(|p| p.ends_with(".ocikit-tmp/blob-stale")),
        "the stale temp file is not in the plan: {j}"
    );
    assert!(temp.exists());

    // A real gc, JSON: removes exactly the plan.
    let o = gc_ok(&x, &["--json"]);
    let jx = parse_json(&o);
    assert_eq!(jx["dryRun"], false);
    let real = json_removals(&jx);
    assert_eq!(
        real.keys().collect::<Vec<_>>(),
        removals.keys().collect::<Vec<_>>(),
        "real gc reports another list"
    );
    for (n, r) in &real {
        assert_eq!(r["size"], removals[n]["size"], "{r}");
        assert_eq!(r["mediaType"], removals[n]["mediaType"], "{r}");
        assert!(
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("blobs/{n}"))),
            "{r}"
        );
    }
    assert_eq!(jx["bytes"], total);
    assert_eq!(jx["blobs"], garbage.len());
    assert_eq!(blob_files(&x), kept, "real gc removed something else");
    assert!(!x.join(".ocikit-tmp/blob-stale").exists());
    assert_verifies(&x);

    // A real gc, text.
    let o = gc_ok(&y, &[]);
    let last = parse_plan(&stdout(&o)).last;
    assert_final_line(
        &last,
        &format!("freed {total} bytes in {} blobs", garbage.len()),
    );
    assert_eq!(blob_files(&y), kept);
    assert_verifies(&y);

    // Nothing left: a second gc frees nothing.
    let o = gc_ok(&y, &[]);
    let plan = parse_plan(&stdout(&o));
    assert!(plan.blobs.is_empty() && plan.others.is_empty());
    assert_final_line(&plan.last, "freed 0 bytes in 0 blobs");
}

// ---------------------------------------------------------------- 3. referrers

/// Referrer rules, on one layout:
/// - kept: referrers of a tagged manifest, a referrer of that referrer, a
///   tagged referrer (whose own subject is garbage), an untagged entry and its
///   referrer;
/// - removed: a referrer of a manifest never stored, a referrer of a garbage
///   manifest (and that manifest), the garbage subject of the tagged referrer.
///
/// Then `--prune-untagged` removes the untagged image with its referrer, and
/// `untag` + `--prune-untagged` removes a subject with its referrer chain.
#[test]
fn referrers_are_kept_only_through_a_reachable_subject() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let (k, _, _) = build_simple(&l);
    let nk = image_names(&l, &k);

    let (sub, ns) = put_own_image(&l, "subject", false);
    let (r1, nr1) = put_referrer(&l, &sub, "r1");
    let (_, nr1b) = put_referrer(&l, &sub, "r1b");
    let (_, nr2) = put_referrer(&l, &r1, "r2-of-r1");

    let absent =
        json!({"mediaType": OCI_MANIFEST, "digest": digest_of(b"never stored"), "size": 12});
    let (_, nr3) = put_referrer(&l, &absent, "r3-of-absent");
    let (gm, ngm) = put_own_image(&l, "garbage-subject", false);
    let (_, nrg) = put_referrer(&l, &gm, "rg-of-garbage");
    let (gs, ngs) = put_own_image(&l, "subject-of-tagged-referrer", false);
    let (rt, nrt) = put_referrer(&l, &gs, "rt-tagged");

    let (u, nu) = put_own_image(&l, "untagged", false);
    let (_, nru) = put_referrer(&l, &u, "ru-of-untagged");

    write_index(
        &l,
        vec![
            tagged(&k, "latest"),
            tagged(&sub, "s"),
            tagged(&rt, "t"),
            u.clone(),
        ],
    );

    let o = gc_ok(&l, &["--json"]);
    let want = union(&[&nk, &ns, &nr1, &nr1b, &nr2, &nrt, &nu, &nru]);
    assert_eq!(
        blob_files(&l),
        want,
        "gc kept a different set; report:\n{}",
        stdout(&o)
    );
    assert_eq!(
        json_removals(&parse_json(&o))
            .keys()
            .cloned()
            .collect::<Names>(),
        union(&[&nr3, &ngm, &nrg, &ngs]),
        "reported removals"
    );
    assert_verifies(&l);

    // The untagged entry goes, and its referrer with it.
    gc_ok(&l, &["--prune-untagged"]);
    let want = union(&[&nk, &ns, &nr1, &nr1b, &nr2, &nrt]);
    assert_eq!(blob_files(&l), want, "after --prune-untagged");
    assert_eq!(index_tags(&l), ["latest", "s", "t"]);
    assert_eq!(index_json(&l)["manifests"].as_array().unwrap().len(), 3);
    assert_verifies(&l);

    // Untag the subject: it and its referrers (and theirs) go.
    ocikit_ok(["untag", &format!("{}:s", s(&l))]);
    gc_ok(&l, &["--prune-untagged"]);
    assert_eq!(blob_files(&l), union(&[&nk, &nrt]), "after untag s");
    assert_eq!(index_tags(&l), ["latest", "t"]);
    assert_verifies(&l);
}

/// A subject reachable only through a tagged index (a platform manifest) keeps
/// its referrer; so does the index itself when it is a subject.
#[test]
fn referrers_of_content_inside_an_index_are_kept() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    let (ma, na) = put_own_image(&l, "amd64", false);
    let (mb, nb) = put_own_image(&l, "arm64", false);
    let idx = put_blob(
        &l,
        OCI_INDEX,
        &to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [with_platform(&ma, "amd64"), with_platform(&mb, "arm64")]})),
    );
    let (_, nra) = put_referrer(&l, &ma, "sbom-of-amd64");
    let (_, nri) = put_referrer(&l, &idx, "signature-of-index");
    let garbage = put_garbage(&l, "nested", 2);
    write_index(&l, vec![tagged(&idx, "multi")]);
    let mut want = union(&[&na, &nb, &nra, &nri]);
    want.insert(desc_name(&idx));
    gc_ok(&l, &[]);
    assert_eq!(blob_files(&l), want);
    assert!(want.is_disjoint(&garbage));
    assert_verifies(&l);
}

/// An untagged subject's referrer is kept while the entry is a root, and goes
/// with it under `--prune-untagged`; a referrer never keeps its subject: with
/// the subject garbage, a chain of referrers of it goes too.
#[test]
fn a_referrer_never_keeps_its_subject() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let (k, _, _) = build_simple(&l);
    let nk = image_names(&l, &k);
    let (sub, nsub) = put_own_image(&l, "subject", false);
    let (r1, nr1) = put_referrer(&l, &sub, "r1");
    let (_, nr2) = put_referrer(&l, &r1, "r2");
    // The subject is not in index.json at all.
    write_index(&l, vec![tagged(&k, "latest")]);
    let o = gc_ok(&l, &["--dry-run"]);
    let plan = parse_plan(&stdout(&o)).blobs;
    assert_eq!(
        plan.keys().cloned().collect::<Names>(),
        union(&[&nsub, &nr1, &nr2])
    );
    gc_ok(&l, &[]);
    assert_eq!(blob_files(&l), nk);
    assert_verifies(&l);
}

// ---------------------------------------------------------------- 4. untagged entries

/// Untagged `index.json` entries are roots; `--prune-untagged` drops them (and
/// then their blobs), keeping every other entry's bytes and the top level's
/// other fields.
#[test]
fn untagged_entries_are_roots_unless_pruned_and_other_entries_keep_their_bytes() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let (a, _, _) = build_simple(&l);
    let na = image_names(&l, &a);
    let (b, nb) = put_own_image(&l, "b", false);
    let (u, nu) = put_own_image(&l, "untagged", false);
    let hex = |d: &Value| d["digest"].as_str().unwrap().to_string();
    // Hand-written entries: unusual key order, spacing and unknown fields.
    let entry_a = format!(
        r#"{{"digest":"{}","size":{},"mediaType":"{OCI_MANIFEST}","x-vendor":{{"k":[1, 2,3]}},"annotations":{{"{REF_NAME}":"a","org.example":"kept"}}}}"#,
        hex(&a),
        a["size"]
    );
    let entry_b = format!(
        r#"{{ "mediaType" : "{OCI_MANIFEST}", "size": {}, "digest": "{}",
  "annotations": {{ "{REF_NAME}": "b" }} }}"#,
        b["size"],
        hex(&b)
    );
    let entry_u = format!(
        r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}}"#,
        hex(&u),
        u["size"]
    );
    // An untagged duplicate of a: pruning it must not remove a's blobs.
    let entry_u2 = format!(
        r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"annotations":{{"note":"dup"}}}}"#,
        hex(&a),
        a["size"]
    );
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{entry_a},{entry_u},{entry_b},{entry_u2}],"annotations":{{"org.example.top":"yes"}}}}"#
    );
    fs::write(l.join("index.json"), &index).unwrap();
    let mut garbage = put_garbage(&l, "untagged", 3);
    garbage.extend(put_own_image(&l, "garbage", false).1);

    gc_ok(&l, &[]);
    assert_eq!(
        blob_files(&l),
        union(&[&na, &nb, &nu]),
        "untagged entries are roots"
    );
    assert_eq!(
        fs::read_to_string(l.join("index.json")).unwrap(),
        index,
        "gc without --prune-untagged rewrote index.json"
    );

    let o = gc_ok(&l, &["--prune-untagged", "--json"]);
    assert_eq!(blob_files(&l), union(&[&na, &nb]));
    assert_eq!(
        json_removals(&parse_json(&o))
            .keys()
            .cloned()
            .collect::<Names>(),
        nu
    );
    let now = fs::read_to_string(l.join("index.json")).unwrap();
    assert!(now.contains(&entry_a), "entry a not verbatim:\n{now}");
    assert!(now.contains(&entry_b), "entry b not verbatim:\n{now}");
    assert!(
        !now.contains(&hex(&u)),
        "the untagged entry is still listed:\n{now}"
    );
    assert!(
        !now.contains("dup"),
        "the untagged duplicate is still listed:\n{now}"
    );
    let v: Value = serde_json::from_str(&now).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(v["annotations"], json!({"org.example.top": "yes"}));
    assert_eq!(v["schemaVersion"], 2);
    let leftovers: Vec<String> = fs::read_dir(&l)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".index.json") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert_verifies(&l);
}

/// An empty `index.json`: every blob is garbage.
#[test]
fn an_empty_index_means_every_blob_goes() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    ocikit_ok(["init", &s(&l)]);
    put_garbage(&l, "empty", 3);
    put_own_image(&l, "garbage", false);
    let o = gc_ok(&l, &[]);
    assert!(blob_files(&l).is_empty(), "{}", stdout(&o));
    assert!(
        l.join("blobs/sha256").is_dir(),
        "gc removed blobs/sha256 itself"
    );
    assert_verifies(&l);
}

/// Not a layout: exit 2, nothing created.
#[test]
fn gc_of_something_that_is_not_a_layout_fails() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("file"), "x").unwrap();
    let snap = snapshot(&d);
    let o = gc(&d, &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(snapshot(&d), snap);
    let o = gc(&t.path().join("absent"), &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(!t.path().join("absent").exists());
}

// ---------------------------------------------------------------- 5. temp and unknown files

/// Stale temporary files in `.ocikit-tmp/` go; files that are not blobs of a
/// known algorithm are never touched and are reported as left alone.
#[test]
fn stale_temp_files_go_and_unknown_files_stay() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let (k, _, _) = build_simple(&l);
    let nk = image_names(&l, &k);
    let garbage = put_garbage(&l, "unknown", 2);
    let t1 = put_stale_temp(&l, "blob-aaaa");
    let t2 = put_stale_temp(&l, "blob-bbbb");

    let upper = "A".repeat(64);
    let unknown = [
        "manifest.json".to_string(),
        "repositories".to_string(),
        "blobs/blake3/xyz".to_string(),
        "blobs/sha256/not-hex".to_string(),
        "blobs/sha256/abc123".to_string(),
        format!("blobs/sha256/{upper}"),
        ".umoci-foo/state".to_string(),
    ];
    for u in &unknown {
        let p = l.join(u);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("not ocikit's: {u}\n")).unwrap();
    }
    let snap_unknown: BTreeMap<String, String> = snapshot(&l)
        .into_iter()
        .filter(|(k, _)| unknown.iter().any(|u| k == u))
        .collect();
    assert_eq!(snap_unknown.len(), unknown.len());

    let o = gc_ok(&l, &["--json"]);
    let j = parse_json(&o);
    assert!(
        !t1.exists() && !t2.exists(),
        "stale temp files are still there"
    );
    let temps = json_paths(&j, "tempFiles");
    for n in ["blob-aaaa", "blob-bbbb"] {
        assert!(
            temps
                .iter()
                .any(|p| p.ends_with(&format!(".ocikit-tmp/{n}"))),
            "{n} not in tempFiles: {j}"
        );
    }
    let after = snapshot(&l);
    for (k, v) in &snap_unknown {
        assert_eq!(after.get(k), Some(v), "{k} was touched");
    }
    let mut want = nk.clone();
    want.extend(
        ["blake3/xyz", "sha256/not-hex", "sha256/abc123"]
            .map(String::from)
            .into_iter()
            .chain([format!("sha256/{upper}")]),
    );
    assert_eq!(blob_files(&l), want);
    assert!(garbage.is_disjoint(&blob_files(&l)));
    for item in j["leftAlone"].as_array().unwrap() {
        if item.is_object() {
            assert!(
                item["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "leftAlone item without a reason: {item}"
            );
        }
    }
    assert_verifies(&l);
    // Listed as left alone (docs/decisions.md: "non-digest names,
    // `manifest.json`, `.umoci-*` and anything else are left alone and listed").
    let left = json_paths(&j, "leftAlone");
    let missing: Vec<&str> = [
        "blobs/blake3/xyz",
        "blobs/sha256/not-hex",
        "blobs/sha256/abc123",
        "manifest.json",
        "repositories",
        ".umoci-foo",
    ]
    .into_iter()
    .filter(|u| !left.iter().any(|p| p.contains(u)))
    .collect();
    assert!(
        missing.is_empty(),
        "not reported as left alone: {missing:?}; leftAlone = {}",
        j["leftAlone"]
    );
}

/// `.ocikit-tmp` that is a symlink to a directory outside the layout: gc must
/// not follow it (it may refuse or leave it alone) and must never delete the
/// files it points to.
#[test]
fn a_symlinked_temp_dir_is_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let (k, _, _) = build_simple(&l);
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("blob-precious"), "not ocikit's\n").unwrap();
    fs::write(outside.join("notes.txt"), "not ocikit's either\n").unwrap();
    let _ = fs::remove_dir_all(l.join(".ocikit-tmp"));
    std::os::unix::fs::symlink(&outside, l.join(".ocikit-tmp")).unwrap();
    let before = snapshot(&outside);
    for extra in [&["--dry-run"][..], &[][..]] {
        let o = gc(&l, extra);
        assert!(
            code(&o) == 0 || code(&o) == 2,
            "gc {extra:?}: {}",
            stderr(&o)
        );
        assert_eq!(
            snapshot(&outside),
            before,
            "gc {extra:?} deleted files outside the layout through the .ocikit-tmp symlink:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    assert!(image_names(&l, &k).is_subset(&blob_files(&l)));
}

/// sha512 blobs are marked and swept like sha256 ones.
#[test]
fn sha512_blobs_are_marked_and_swept() {
    use sha2::Digest as _;
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let (k, _, _) = build_simple(&l);
    let put512 = |mt: &str, bytes: &[u8]| {
        let hex: String = sha2::Sha512::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let p = l.join("blobs/sha512").join(&hex);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        json!({"mediaType": mt, "digest": format!("sha512:{hex}"), "size": bytes.len()})
    };
    let layer_tar = tar(&[file("five-twelve.txt", "sha512 layer\n")]);
    let layer = put512(OCI_TAR, &layer_tar);
    let m = put_image(
        &l,
        "amd64",
        None,
        &[(layer.clone(), digest_of(&layer_tar))],
        false,
    );
    let g = put512("application/octet-stream", b"sha512 garbage\n");
    write_index(&l, vec![tagged(&k, "latest"), tagged(&m, "five")]);
    let want = union(&[&image_names(&l, &k), &image_names(&l, &m)]);
    assert!(want.contains(&desc_name(&layer)));

    gc_ok(&l, &[]);
    assert_eq!(blob_files(&l), want);
    assert!(!blob_path(&l, &g).exists());
    assert_verifies(&l);
}

// ---------------------------------------------------------------- 6. refusals

/// A layout with a good tagged image and garbage, plus what `damage` adds;
/// returns (layout, names of the good image, the garbage).
fn damaged_layout(dir: &Path, damage: impl FnOnce(&Path) -> Vec<Value>) -> (PathBuf, Names, Names) {
    let l = dir.join("l");
    let (k, _, _) = build_simple(&l);
    let nk = image_names(&l, &k);
    let mut garbage = put_garbage(&l, "damaged", 3);
    garbage.extend(put_own_image(&l, "garbage", false).1);
    let mut entries = vec![tagged(&k, "latest")];
    entries.extend(damage(&l));
    write_index(&l, entries);
    (l, nk, garbage)
}

/// The layout's files except `.ocikit.lock`: a gc that takes the writer lock
/// and then refuses may create it (or put its pid in it), and that is all it
/// may change.
fn snapshot_without_lock(l: &Path) -> BTreeMap<String, String> {
    let mut m = snapshot(l);
    m.remove(".ocikit.lock");
    m
}

/// gc refuses: exit 2, `culprit` and `words` in the message, nothing changed;
/// `gc --dry-run` refuses the same way. Returns the message.
fn assert_refuses(l: &Path, culprit: &str, words: &[&str]) -> String {
    for extra in [&[][..], &["--dry-run"][..], &["--json"][..]] {
        let snap = snapshot_without_lock(l);
        let o = gc(l, extra);
        let err = stderr(&o);
        assert_eq!(
            code(&o),
            2,
            "gc {extra:?} should refuse:\n{}{err}",
            stdout(&o)
        );
        assert!(
            err.contains(culprit),
            "the message does not name {culprit}: {err}"
        );
        for w in words {
            assert!(err.contains(w), "the message does not say {w:?}: {err}");
        }
        assert_eq!(
            snapshot_without_lock(l),
            snap,
            "a refused gc {extra:?} changed the layout"
        );
    }
    stderr(&gc(l, &[]))
}

fn hex_of(d: &Value) -> String {
    d["digest"].as_str().unwrap()[7..].to_string()
}

#[test]
fn refuses_a_missing_manifest_unless_forced() {
    let t = tempfile::tempdir().unwrap();
    let mut missing = Value::Null;
    let (l, nk, garbage) = damaged_layout(t.path(), |l| {
        let (m, _) = put_own_image(l, "will-be-missing", false);
        // Its config and layer stay (unreachable now that nothing names them
        // but the missing manifest); the manifest itself goes.
        fs::remove_file(blob_path(l, &m)).unwrap();
        missing = m.clone();
        vec![tagged(&m, "gone")]
    });
    let h = hex_of(&missing);
    assert_refuses(&l, &h, &["damaged", "--force"]);
    let o = gc_ok(&l, &["--force"]);
    let left = blob_files(&l);
    assert!(
        nk.is_subset(&left),
        "--force removed a reachable blob: {}",
        stdout(&o)
    );
    assert!(left.is_disjoint(&garbage), "--force left garbage: {left:?}");
}

#[test]
fn refuses_a_manifest_that_is_not_json_unless_forced() {
    let t = tempfile::tempdir().unwrap();
    let mut bad = Value::Null;
    let (l, nk, garbage) = damaged_layout(t.path(), |l| {
        bad = put_blob(l, OCI_MANIFEST, b"{\"schemaVersion\":2,\"config\":");
        vec![tagged(&bad, "bad")]
    });
    let h = hex_of(&bad);
    assert_refuses(&l, &h, &["damaged", "--force"]);
    gc_ok(&l, &["--force"]);
    let mut want = nk.clone();
    want.insert(desc_name(&bad));
    assert!(want.is_disjoint(&garbage));
    assert_eq!(
        blob_files(&l),
        want,
        "--force keeps what it can see, including the unparsable blob index.json names"
    );
}

#[test]
fn refuses_an_absent_index_unless_forced() {
    let t = tempfile::tempdir().unwrap();
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
    let bytes = to_bytes(&idx);
    let desc = json!({"mediaType": OCI_INDEX, "digest": digest_of(&bytes), "size": bytes.len()});
    let (l, nk, garbage) = damaged_layout(t.path(), |_| vec![tagged(&desc, "idx")]);
    assert_refuses(&l, &hex_of(&desc), &["damaged", "--force"]);
    gc_ok(&l, &["--force"]);
    let left = blob_files(&l);
    assert_eq!(left, nk);
    assert!(left.is_disjoint(&garbage));
}

#[test]
fn refuses_a_blob_path_that_is_a_directory() {
    let t = tempfile::tempdir().unwrap();
    let hex = sha256_hex(b"a directory");
    let (l, nk, garbage) = damaged_layout(t.path(), |l| {
        let d = l.join("blobs/sha256").join(&hex);
        fs::create_dir(&d).unwrap();
        fs::write(d.join("inside"), "x").unwrap();
        vec![]
    });
    assert_refuses(&l, &hex, &[]);
    // --force leaves it alone and collects the rest.
    gc_ok(&l, &["--force"]);
    assert!(l.join("blobs/sha256").join(&hex).join("inside").is_file());
    let mut want = nk.clone();
    want.insert(format!("sha256/{hex}/inside"));
    let left = blob_files(&l);
    assert_eq!(left, want);
    assert!(left.is_disjoint(&garbage));
}

/// A FIFO under a blob name: refused, never opened (gc would hang on it).
/// (`snapshot` would block reading the FIFO, so this compares blob names and
/// `index.json` instead.)
#[test]
fn refuses_a_fifo_among_the_blobs() {
    let t = tempfile::tempdir().unwrap();
    let hex = sha256_hex(b"a fifo");
    let (l, nk, garbage) = damaged_layout(t.path(), |l| {
        let p = l.join("blobs/sha256").join(&hex);
        let st = Command::new("mkfifo").arg(&p).status().unwrap();
        assert!(st.success());
        vec![]
    });
    let fifo = l.join("blobs/sha256").join(&hex);
    let index = fs::read(l.join("index.json")).unwrap();
    let before = blob_files(&l);
    for extra in [&[][..], &["--dry-run"][..], &["--force"][..]] {
        let mut args = vec!["gc".to_string(), s(&l)];
        args.extend(extra.iter().map(|a| a.to_string()));
        let o = with_watchdog(&args);
        if extra == ["--force"] {
            assert_eq!(code(&o), 0, "gc --force: {}", stderr(&o));
            assert_eq!(blob_files(&l), nk);
            assert!(nk.is_disjoint(&garbage));
        } else {
            assert_eq!(code(&o), 2, "gc {extra:?}: {}{}", stdout(&o), stderr(&o));
            assert!(stderr(&o).contains(&hex), "{}", stderr(&o));
            assert_eq!(blob_files(&l), before);
        }
        assert_eq!(fs::read(l.join("index.json")).unwrap(), index);
        assert!(fs::symlink_metadata(&fifo).is_ok(), "the FIFO was removed");
    }
}

/// Runs ocikit, killing it (and failing) if it takes over 20 s.
fn with_watchdog(args: &[String]) -> Output {
    let mut child = spawn_ocikit(args);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("ocikit {args:?} hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn refuses_a_symlinked_reachable_blob() {
    let t = tempfile::tempdir().unwrap();
    let mut layer_hex = String::new();
    let (l, _, _) = damaged_layout(t.path(), |l| {
        let (m, _) = put_own_image(l, "symlinked-layer", false);
        let man: Value =
            serde_json::from_slice(&blob_bytes(l, m["digest"].as_str().unwrap())).unwrap();
        let p = blob_path(l, &man["layers"][0]);
        let outside = l.parent().unwrap().join("outside-layer");
        fs::rename(&p, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &p).unwrap();
        layer_hex = hex_of(&man["layers"][0]);
        vec![tagged(&m, "sym")]
    });
    assert_refuses(&l, &layer_hex, &[]);
}

#[test]
fn refuses_a_symlink_among_unreachable_blobs() {
    let t = tempfile::tempdir().unwrap();
    let hex = sha256_hex(b"symlink target\n");
    let (l, _, _) = damaged_layout(t.path(), |l| {
        let outside = l.parent().unwrap().join("outside");
        fs::write(&outside, b"symlink target\n").unwrap();
        std::os::unix::fs::symlink(&outside, l.join("blobs/sha256").join(&hex)).unwrap();
        vec![]
    });
    assert_refuses(&l, &hex, &[]);
    assert!(l.parent().unwrap().join("outside").exists());
}

/// docs/decisions.md: a missing config, like a missing layer, is not damage:
/// it references nothing, so marking loses nothing without it. gc goes on and
/// removes only garbage.
#[test]
fn a_missing_config_is_not_damage() {
    let t = tempfile::tempdir().unwrap();
    let mut cfg = Value::Null;
    let (l, nk, garbage) = damaged_layout(t.path(), |l| {
        let (m, _) = put_own_image(l, "config-missing", false);
        let man: Value =
            serde_json::from_slice(&blob_bytes(l, m["digest"].as_str().unwrap())).unwrap();
        cfg = man["config"].clone();
        fs::remove_file(blob_path(l, &cfg)).unwrap();
        vec![tagged(&m, "nocfg")]
    });
    assert!(!hex_of(&cfg).is_empty());
    gc_ok(&l, &[]);
    let left = blob_files(&l);
    assert!(nk.is_subset(&left));
    assert!(left.is_disjoint(&garbage));
}

/// docs/decisions.md: a reachable manifest whose bytes do not match its
/// digest is damage (what it would keep is unknown).
#[test]
fn refuses_a_manifest_with_the_wrong_content() {
    let t = tempfile::tempdir().unwrap();
    let mut m = Value::Null;
    let (l, _, _) = damaged_layout(t.path(), |l| {
        let (own, _) = put_own_image(l, "tampered", false);
        let p = blob_path(l, &own);
        let mut bytes = fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 2] = b' '; // same size, still JSON, another hash
        fs::write(&p, &bytes).unwrap();
        m = own.clone();
        vec![tagged(&own, "tampered")]
    });
    assert_refuses(&l, &hex_of(&m), &[]);
}

/// docs/decisions.md: a missing layer is not damage (sparse layouts are
/// legal): gc collects the garbage and keeps the rest.
#[test]
fn a_missing_layer_is_not_damage() {
    let t = tempfile::tempdir().unwrap();
    let mut want = Names::new();
    let (l, nk, garbage) = damaged_layout(t.path(), |l| {
        let (m, nm) = put_own_image(l, "sparse", false);
        let man: Value =
            serde_json::from_slice(&blob_bytes(l, m["digest"].as_str().unwrap())).unwrap();
        let layer = &man["layers"][0];
        fs::remove_file(blob_path(l, layer)).unwrap();
        want = nm;
        want.remove(&desc_name(layer));
        vec![tagged(&m, "sparse")]
    });
    gc_ok(&l, &[]);
    let left = blob_files(&l);
    assert_eq!(left, union(&[&nk, &want]));
    assert!(left.is_disjoint(&garbage));
}

#[test]
fn refuses_when_the_lock_stays_held_past_the_timeout() {
    let t = tempfile::tempdir().unwrap();
    let (l, _, garbage) = damaged_layout(t.path(), |_| vec![]);
    let _lock = hold_lock(&l);
    let snap = snapshot(&l);
    let start = Instant::now();
    let o = gc(&l, &["--lock-timeout", "1"]);
    let took = start.elapsed();
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{}{err}", stdout(&o));
    assert!(
        err.contains("lock") && err.contains(&s(&l)),
        "the message should name the lock and the layout: {err}"
    );
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    assert_eq!(
        snapshot(&l),
        snap,
        "a gc that never got the lock changed the layout"
    );
    // A dry run takes no lock (it writes nothing): it plans, and changes nothing.
    let o = gc_ok(&l, &["--dry-run", "--lock-timeout", "1"]);
    assert_eq!(
        parse_plan(&stdout(&o))
            .blobs
            .keys()
            .cloned()
            .collect::<Names>(),
        garbage
    );
    assert_eq!(snapshot(&l), snap);
}

// ---------------------------------------------------------------- 7. concurrency

fn spawn_ocikit(args: &[String]) -> Child {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ocikit")
}

/// Two copies into one layout and a gc of it, all at once, five times: every
/// command succeeds, both new tags resolve, the layout verifies, the garbage is
/// gone and the blobs are exactly those of a sequential run.
#[test]
fn concurrent_copies_and_gc_lose_nothing() {
    let t = tempfile::tempdir().unwrap();
    let reference = t.path().join("reference");
    build_simple(&reference);
    ocikit_ok(["copy", &demo_ref("1.0"), &format!("{}:one", s(&reference))]);
    ocikit_ok([
        "copy",
        &demo_ref("legacy"),
        &format!("{}:two", s(&reference)),
    ]);
    let want = blob_files(&reference);

    for round in 0..5 {
        let l = t.path().join(format!("l{round}"));
        build_simple(&l);
        let garbage = put_garbage(&l, "concurrent", 4);
        let commands: Vec<Vec<String>> = vec![
            vec!["copy".into(), demo_ref("1.0"), format!("{}:one", s(&l))],
            vec!["copy".into(), demo_ref("legacy"), format!("{}:two", s(&l))],
            vec!["gc".into(), s(&l)],
        ];
        let children: Vec<(String, Child)> = commands
            .iter()
            .map(|c| (c.join(" "), spawn_ocikit(c)))
            .collect();
        for (what, c) in children {
            let o = c.wait_with_output().unwrap();
            assert_eq!(code(&o), 0, "round {round}: {what} failed: {}", stderr(&o));
        }
        for tag in ["latest", "one", "two"] {
            let o = ocikit(["cat", &format!("{}:{tag}", s(&l)), "manifest"]);
            assert_eq!(code(&o), 0, "round {round}: {tag}: {}", stderr(&o));
        }
        assert_verifies(&l);
        let have = blob_files(&l);
        assert!(
            have.is_disjoint(&garbage),
            "round {round}: gc did not run to the end"
        );
        assert_eq!(have, want, "round {round}");
        let tmp = l.join(".ocikit-tmp");
        if tmp.exists() {
            let left: Vec<_> = fs::read_dir(&tmp).unwrap().collect();
            assert!(left.is_empty(), "round {round}: temp files left: {left:?}");
        }
    }
}

// ---------------------------------------------------------------- 8. lock waits

/// A writer waits for the lock (then writes its pid into the lock file); with
/// `--lock-timeout` it gives up with exit 2, changing nothing. Every writing
/// command takes the lock.
#[test]
fn writers_wait_for_the_lock_and_time_out_when_asked() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    build_simple(&l);
    let archive = t.path().join("legacy.tar");
    ocikit_ok(["export", &demo_ref("legacy"), &s(&archive)]);

    // Waits.
    let lock = hold_lock(&l);
    let start = Instant::now();
    let mut child = spawn_ocikit(&["tag".into(), format!("{}:latest", s(&l)), "x".into()]);
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "tag finished while another process held the lock"
    );
    assert_eq!(
        index_tags(&l),
        ["latest"],
        "tag wrote while the lock was held"
    );
    drop(lock);
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(start.elapsed() >= Duration::from_millis(1000));
    assert_eq!(index_tags(&l), ["latest", "x"]);
    assert_eq!(
        fs::read_to_string(l.join(".ocikit.lock")).unwrap().trim(),
        pid.to_string(),
        "the lock file should hold the last writer's pid"
    );

    // Times out, for every writing command.
    let lock = hold_lock(&l);
    let snap = snapshot(&l);
    let lp = s(&l);
    let cases: Vec<Vec<String>> = vec![
        vec!["tag".into(), format!("{lp}:latest"), "y".into()],
        vec!["untag".into(), format!("{lp}:x")],
        vec!["copy".into(), demo_ref("legacy"), format!("{lp}:two")],
        vec!["import".into(), s(&archive), format!("{lp}:three")],
        vec!["gc".into(), lp.clone()],
        vec!["gc".into(), lp.clone(), "--prune-untagged".into()],
    ];
    for mut args in cases {
        args.extend(["--lock-timeout".into(), "0.2".into()]);
        let start = Instant::now();
        let o = ocikit(&args);
        let took = start.elapsed();
        assert_eq!(
            code(&o),
            2,
            "{args:?} should time out: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let err = stderr(&o);
        assert!(
            err.contains("lock") && err.contains(&lp),
            "{args:?}: the message should name the lock and the layout: {err}"
        );
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{args:?} took {took:?}"
        );
        assert_eq!(snapshot(&l), snap, "{args:?} changed the layout");
    }
    drop(lock);

    // Once free, the same commands run.
    ocikit_ok(["tag", &format!("{lp}:latest"), "y", "--lock-timeout", "0.2"]);
    ocikit_ok(["gc", &lp, "--lock-timeout", "0.2"]);
}

/// `--lock-timeout` values: nonsense is refused with exit 2 and a message,
/// never a panic; 0 means "do not wait".
#[test]
fn lock_timeout_values_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    build_simple(&l);
    let lp = s(&l);
    for (i, v) in [
        "-1",
        "nan",
        "inf",
        "abc",
        "1e30",
        "18446744073709551616",
        "1e-400",
    ]
    .into_iter()
    .enumerate()
    {
        let o = ocikit([
            "tag",
            &format!("{lp}:latest"),
            &format!("v{i}"),
            &format!("--lock-timeout={v}"),
        ]);
        let err = stderr(&o);
        assert!(
            code(&o) == 0 || code(&o) == 2,
            "--lock-timeout={v}: exit {} (a panic?): {err}",
            code(&o)
        );
        assert!(!err.contains("panicked"), "--lock-timeout={v}: {err}");
        if ["-1", "nan", "abc"].contains(&v) {
            assert_eq!(code(&o), 2, "--lock-timeout={v} should be refused");
            assert!(err.contains("lock-timeout"), "--lock-timeout={v}: {err}");
        }
    }
    // 0 with the lock held: no wait at all.
    let _lock = hold_lock(&l);
    let start = Instant::now();
    let o = ocikit([
        "tag",
        &format!("{lp}:latest"),
        "zero",
        "--lock-timeout",
        "0",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(3));
}

/// On a terminal, a waiting writer says once who holds the lock.
#[test]
fn a_waiting_writer_says_so_on_a_terminal() {
    if !tools("a_waiting_writer_says_so_on_a_terminal", &["script"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    build_simple(&l);
    let lock = hold_lock(&l);
    let cmd = format!("'{}' tag '{}:latest' z", bin().display(), s(&l));
    let child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    drop(lock);
    let o = child.wait_with_output().unwrap();
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(code(&o), 0, "{out}");
    let msg = format!(
        "ocikit: waiting for the lock on {} (held by pid {})",
        s(&l),
        std::process::id()
    );
    assert_eq!(
        out.matches(&msg).count(),
        1,
        "expected {msg:?} once in:\n{out}"
    );
    assert_eq!(index_tags(&l), ["latest", "z"]);
}
