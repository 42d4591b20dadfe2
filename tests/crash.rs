//! Kill harness: every writing command, SIGKILLed at a random moment, leaves a
//! layout that verifies, whose blobs all match their names and whose tags all
//! resolve; running the command again then gives exactly what an
//! uninterrupted run gives.
//!
//! Seeded: the seed is printed (run with `-- --nocapture` to see it and the
//! summaries); `OCIKIT_CRASH_SEED=N` replays a run, `OCIKIT_CRASH_KILLS=N` sets
//! the kills per command (default 20). Scratch space is on /dev/shm when it
//! exists, so the timings are the commands' and not the disk's.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------- randomness

/// splitmix64: small, seedable, good enough to pick delays and bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=n`.
    fn upto(&mut self, n: u64) -> u64 {
        self.next() % (n + 1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn seed_for(test: &str) -> u64 {
    let seed = match std::env::var("OCIKIT_CRASH_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("OCIKIT_CRASH_SEED={s:?} is not a number"))
        }
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        }
    };
    println!("crash: {test}: seed {seed} (OCIKIT_CRASH_SEED={seed} to replay)");
    seed
}

fn kills() -> usize {
    std::env::var("OCIKIT_CRASH_KILLS")
        .ok()
        .map(|v| v.trim().parse().expect("OCIKIT_CRASH_KILLS is a number"))
        .unwrap_or(20)
}

fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(t) = tempfile::tempdir_in(shm) {
            return t;
        }
    }
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------- scenarios

/// The medium source: images `img0`…`img3` (5–6 layers of 64 KiB – 1 MiB of
/// random bytes each, one 1 MiB layer shared by all) and `multi`, an index of
/// two 3-layer images (linux/amd64 and linux/arm64). About 35 blobs, 15 MB.
/// Its bytes do not depend on the seed.
fn build_medium(root: &Path) {
    let mut rng = Rng(0x0c1c_0c1c);
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let layer = |rng: &mut Rng, size: usize| {
        let d = put_blob(root, OCI_TAR, &rng.bytes(size));
        let diff = d["digest"].as_str().unwrap().to_string();
        (d, diff)
    };
    let base = layer(&mut rng, 1 << 20);
    let mut entries = Vec::new();
    for i in 0..4 {
        let mut layers = vec![base.clone()];
        for _ in 0..(4 + i % 2) {
            let size = 64 * 1024 + rng.upto(960 * 1024) as usize;
            layers.push(layer(&mut rng, size));
        }
        let mut m = put_image(root, "amd64", None, &layers, false);
        m["annotations"] = json!({"org.opencontainers.image.ref.name": format!("img{i}")});
        entries.push(m);
    }
    let mut platform_entries = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let layers: Vec<_> = (0..3)
            .map(|_| {
                let size = 64 * 1024 + rng.upto(448 * 1024) as usize;
                layer(&mut rng, size)
            })
            .collect();
        let mut m = put_image(root, arch, variant, &layers, false);
        let mut p = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            p["variant"] = json!(v);
        }
        m["platform"] = p;
        platform_entries.push(m);
    }
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": platform_entries});
    let mut idx_desc = put_blob(root, OCI_INDEX, &to_bytes(&idx));
    idx_desc["annotations"] = json!({"org.opencontainers.image.ref.name": "multi"});
    entries.push(idx_desc);
    write_layout_files(
        root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    );
}

/// The medium layout plus much garbage: 20 random blobs, two garbage images,
/// and two untagged `index.json` entries of their own images (pruned by
/// `gc --prune-untagged`).
fn build_garbage_layout(root: &Path) {
    build_medium(root);
    let mut rng = Rng(0x0009_a4ba);
    for _ in 0..20 {
        let size = 16 * 1024 + rng.upto(496 * 1024) as usize;
        put_blob(root, "application/octet-stream", &rng.bytes(size));
    }
    let image = |rng: &mut Rng| {
        let layers: Vec<_> = (0..3)
            .map(|_| {
                let d = put_blob(root, OCI_TAR, &rng.bytes(200 * 1024));
                let diff = d["digest"].as_str().unwrap().to_string();
                (d, diff)
            })
            .collect();
        put_image(root, "amd64", None, &layers, false)
    };
    image(&mut rng);
    image(&mut rng);
    let u1 = image(&mut rng);
    let u2 = image(&mut rng);
    let mut idx = index_json(root);
    let list = idx["manifests"].as_array_mut().unwrap();
    list.insert(1, u1);
    list.push(u2);
    fs::write(root.join("index.json"), to_bytes(&idx)).unwrap();
}

/// A small layout with tags `latest` and `t0`…`t9` on one image.
fn build_tag_layout(root: &Path) {
    let (m, _, _) = build_simple(root);
    let mut entries = vec![];
    for tag in std::iter::once("latest".to_string()).chain((0..10).map(|i| format!("t{i}"))) {
        let mut e = m.clone();
        e["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        entries.push(e);
    }
    write_layout_files(
        root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    );
}

/// What a command leaves: `index.json`'s bytes and the blob files.
#[derive(Debug, PartialEq)]
struct Outcome {
    index: String,
    blobs: BTreeSet<String>,
}

fn outcome(target: &Path) -> Outcome {
    Outcome {
        index: String::from_utf8_lossy(&fs::read(target.join("index.json")).unwrap()).into_owned(),
        blobs: blob_files(target),
    }
}

/// One command to kill: how to make a fresh target, and its arguments.
struct Scenario<'a> {
    name: &'a str,
    /// Makes the target under the given (empty) directory; returns its path.
    prepare: &'a dyn Fn(&Path) -> PathBuf,
    /// The command line for a target; `variant` picks among alternatives
    /// (tag and untag take turns).
    args: &'a dyn Fn(&Path, usize) -> Vec<String>,
    variants: usize,
    /// The target does not exist before the command (copy into a new directory).
    creates_target: bool,
    /// Whether running the variant again after it completed succeeds (`untag`
    /// of a tag that is gone is an error by design).
    idempotent: &'a dyn Fn(usize) -> bool,
}

fn run_ocikit(args: &[String]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ocikit")
}

/// The invariants after a kill: verify, blob contents, tags.
fn check_intact(target: &Path) -> Result<(), String> {
    let o = run_ocikit(&["verify".into(), s(target)]);
    if code(&o) != 0 {
        return Err(format!(
            "verify exit {}:\n{}{}",
            code(&o),
            stdout(&o),
            stderr(&o)
        ));
    }
    let blobs = target.join("blobs");
    for e in walkdir::WalkDir::new(&blobs) {
        let e = e.map_err(|e| e.to_string())?;
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(&blobs).unwrap().display().to_string();
        let Some(hex) = rel.strip_prefix("sha256/") else {
            return Err(format!("unexpected file under blobs/: {rel}"));
        };
        if !e.file_type().is_file() {
            return Err(format!("blobs/{rel} is not a regular file"));
        }
        let got = sha256_hex(&fs::read(e.path()).unwrap());
        if got != hex {
            return Err(format!("blobs/{rel} holds content with sha256 {got}"));
        }
    }
    let idx: Value = serde_json::from_slice(&fs::read(target.join("index.json")).unwrap())
        .map_err(|e| format!("index.json: {e}"))?;
    for e in idx["manifests"].as_array().into_iter().flatten() {
        if let Some(tag) = e["annotations"]["org.opencontainers.image.ref.name"].as_str() {
            let o = run_ocikit(&[
                "cat".into(),
                format!("{}:{tag}", s(target)),
                "manifest".into(),
            ]);
            if code(&o) != 0 {
                return Err(format!("tag {tag} does not resolve: {}", stderr(&o)));
            }
        }
    }
    Ok(())
}

fn run_scenario(sc: &Scenario) {
    let seed = seed_for(sc.name);
    let mut rng = Rng(seed);
    let n = kills();
    let work = scratch();
    let mut iteration = 0usize;
    let mut fresh = || {
        iteration += 1;
        let d = work.path().join(format!("it{iteration}"));
        fs::create_dir(&d).unwrap();
        let target = (sc.prepare)(&d);
        (d, target)
    };

    // Uninterrupted runs: the expected outcome and the typical duration (the
    // median of three runs, the longest over the variants).
    let mut want = Vec::new();
    let mut typical = Duration::ZERO;
    for v in 0..sc.variants {
        let mut took = Vec::new();
        for _ in 0..3 {
            let (d, target) = fresh();
            let args = (sc.args)(&target, v);
            let start = Instant::now();
            let o = run_ocikit(&args);
            took.push(start.elapsed());
            assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
            check_intact(&target).unwrap_or_else(|e| panic!("uninterrupted {args:?}: {e}"));
            let got = outcome(&target);
            if want.len() == v {
                want.push(got);
            } else {
                assert_eq!(got, want[v], "two uninterrupted runs of {args:?} differ");
            }
            fs::remove_dir_all(&d).unwrap();
        }
        took.sort();
        typical = typical.max(took[1]);
    }

    let (mut mid_run, mut absent, mut ok) = (0, 0, 0);
    let (mut leftovers, mut half_done, mut done_before) = (0, 0, 0);
    for k in 0..n {
        let v = k % sc.variants;
        let (d, target) = fresh();
        let args = (sc.args)(&target, v);
        let delay = Duration::from_micros(rng.upto(typical.as_micros() as u64));
        let context = format!(
            "crash: {}: seed {seed}, kill {k}, {args:?} killed after {delay:?} (typical {typical:?})",
            sc.name
        );
        let mut child = Command::new(bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ocikit");
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            mid_run += 1;
        } else {
            assert_eq!(status.code(), Some(0), "{context}: exit {status}");
        }

        if target.exists() {
            check_intact(&target).unwrap_or_else(|e| panic!("{context}: {e}"));
        } else {
            assert!(sc.creates_target, "{context}: the target vanished");
            absent += 1;
        }

        if sc.creates_target {
            // Sibling directories a killed run could not clean up.
            leftovers += fs::read_dir(&d)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() != "new")
                .count();
            if target.exists() && outcome(&target).index != want[v].index {
                half_done += 1;
            }
        }

        let finished = target.exists() && outcome(&target) == want[v];
        let o = run_ocikit(&args);
        if !(sc.idempotent)(v) && finished {
            // It had finished: running it again is an error by design.
            assert_eq!(
                code(&o),
                2,
                "{context}: the re-run after it had finished: {}{}",
                stdout(&o),
                stderr(&o)
            );
            done_before += 1;
        } else {
            assert_eq!(
                code(&o),
                0,
                "{context}: the re-run failed: {}{}",
                stdout(&o),
                stderr(&o)
            );
        }
        check_intact(&target).unwrap_or_else(|e| panic!("{context}: after the re-run: {e}"));
        assert_eq!(
            outcome(&target),
            want[v],
            "{context}: the re-run's result differs from an uninterrupted run's"
        );
        ok += 1;
        fs::remove_dir_all(&d).unwrap();
    }
    let mut note = format!("{mid_run} mid-run");
    if sc.creates_target {
        note.push_str(&format!(
            ", {absent} left no target, {half_done} left a layout without the image \
             under the name, {leftovers} left a sibling temporary directory"
        ));
    }
    if done_before > 0 {
        note.push_str(&format!(", {done_before} had already finished"));
    }
    println!(
        "crash: {}: {n} kills ({note}; typical run {typical:?}), {ok} ok",
        sc.name
    );
}

fn loc(target: &Path, tag: &str) -> String {
    format!("{}:{tag}", s(target))
}

// ---------------------------------------------------------------- the commands

#[test]
fn crash_copy_into_an_existing_layout() {
    let t = scratch();
    let src = t.path().join("src");
    build_medium(&src);
    run_scenario(&Scenario {
        name: "copy",
        prepare: &|d| {
            let l = d.join("target");
            build_simple(&l);
            l
        },
        args: &|l, _| vec!["copy".into(), loc(&src, "img0"), loc(l, "copied")],
        variants: 1,
        creates_target: false,
        idempotent: &|_| true,
    });
}

#[test]
fn crash_copy_into_a_new_directory() {
    let t = scratch();
    let src = t.path().join("src");
    build_medium(&src);
    run_scenario(&Scenario {
        name: "copy-new",
        prepare: &|d| d.join("new"),
        args: &|l, _| vec!["copy".into(), loc(&src, "img1"), s(l)],
        variants: 1,
        creates_target: true,
        idempotent: &|_| true,
    });
}

#[test]
fn crash_import() {
    let t = scratch();
    let src = t.path().join("src");
    build_medium(&src);
    let archive = t.path().join("two.tar");
    ocikit_ok([
        "export",
        &loc(&src, "img2"),
        &loc(&src, "multi"),
        &s(&archive),
    ]);
    run_scenario(&Scenario {
        name: "import",
        prepare: &|d| {
            let l = d.join("target");
            build_simple(&l);
            l
        },
        args: &|l, _| vec!["import".into(), s(&archive), s(l)],
        variants: 1,
        creates_target: false,
        idempotent: &|_| true,
    });
}

#[test]
fn crash_gc() {
    let t = scratch();
    let src = t.path().join("garbage");
    build_garbage_layout(&src);
    run_scenario(&Scenario {
        name: "gc",
        prepare: &|d| {
            let l = d.join("target");
            copy_tree(&src, &l);
            l
        },
        args: &|l, _| vec!["gc".into(), s(l), "--prune-untagged".into()],
        variants: 1,
        creates_target: false,
        idempotent: &|_| true,
    });
}

#[test]
fn crash_tag_and_untag() {
    let t = scratch();
    let src = t.path().join("tags");
    build_tag_layout(&src);
    run_scenario(&Scenario {
        name: "tag/untag",
        prepare: &|d| {
            let l = d.join("target");
            copy_tree(&src, &l);
            l
        },
        args: &|l, v| match v {
            0 => vec!["tag".into(), loc(l, "latest"), "fresh".into()],
            _ => vec!["untag".into(), loc(l, "t3")],
        },
        variants: 2,
        creates_target: false,
        idempotent: &|v| v == 0,
    });
}
