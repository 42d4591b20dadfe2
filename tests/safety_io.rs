//! Issue 12, data safety of inputs, outputs and messages: outputs inside a
//! source layout (item 5), FIFOs and devices as archives (7), write errors
//! on stdout (13), permission denied (15), control characters in messages
//! (16) and messages that misnamed the problem (19).

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A tag of the demo layout with one linux/amd64 image.
const ONE: &str = "legacy";

fn loc(l: &Path, r: &str) -> String {
    format!("{}:{r}", l.display())
}

/// The first blob file of a layout (sorted), as a path.
fn some_blob(l: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = fs::read_dir(l.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v[0].clone()
}

/// Asserts exit 2 with every needle in stderr.
fn refused(args: &[&str], needles: &[&str]) -> String {
    let o = ocikit(args);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "ocikit {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "ocikit {args:?}: want {n:?} in: {err}");
    }
    err
}

// ------------------------------------------------------------------ item 5

const INSIDE: &str = "is inside the source layout";

#[test]
fn export_over_the_source_index_json_is_refused() {
    let (_t, l) = demo_copy();
    let before = snapshot(&l);
    let out = s(&l.join("index.json"));
    refused(
        &["export", &loc(&l, "1.0"), &out],
        &["refusing to write", INSIDE],
    );
    assert_eq!(snapshot(&l), before);
}

#[test]
fn export_over_an_existing_blob_is_refused() {
    let (_t, l) = demo_copy();
    let before = snapshot(&l);
    let blob = s(&some_blob(&l));
    refused(&["export", &loc(&l, ONE), &blob], &[INSIDE]);
    // copy to an archive path inside the layout too, and through a symlink.
    refused(
        &["copy", &loc(&l, ONE), &s(&l.join("blobs/new.tar"))],
        &[INSIDE],
    );
    let link = l.parent().unwrap().join("link");
    std::os::unix::fs::symlink(&l, &link).unwrap();
    refused(
        &["export", &loc(&l, ONE), &s(&link.join("index.json"))],
        &[INSIDE],
    );
    assert_eq!(snapshot(&l), before);
}

#[test]
fn flatten_into_the_source_layout_is_refused() {
    let (_t, l) = demo_copy();
    let before = snapshot(&l);
    refused(
        &["flatten", &loc(&l, ONE), "--tar", &s(&l.join("index.json"))],
        &[INSIDE],
    );
    refused(
        &["flatten", &loc(&l, ONE), "--output", &s(&l.join("rootfs"))],
        &[INSIDE],
    );
    assert_eq!(snapshot(&l), before);
}

#[test]
fn writing_over_the_source_archive_is_refused() {
    let (t, l) = demo_copy();
    let a = t.path().join("a.tar");
    ocikit_ok(["export", &loc(&l, ONE), &s(&a)]);
    let bytes = fs::read(&a).unwrap();
    refused(&["export", &s(&a), &s(&a)], &["it is the source archive"]);
    let hard = t.path().join("hard.tar");
    fs::hard_link(&a, &hard).unwrap();
    refused(&["copy", &s(&a), &s(&hard)], &["it is the source archive"]);
    refused(
        &["flatten", &s(&a), "--tar", &s(&a)],
        &["it is the source archive"],
    );
    assert_eq!(fs::read(&a).unwrap(), bytes);
    // Beside it is fine.
    ocikit_ok(["export", &s(&a), &s(&t.path().join("b.tar"))]);
}

// ------------------------------------------------------------------ item 7

/// Runs ocikit with a deadline; kills it and fails if it does not exit by itself.
fn run_with_deadline(args: &[&str], secs: u64) -> (i32, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ocikit {args:?} did not exit within {secs} s (blocked?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const NOT_REGULAR: &str = "not a regular file (pipes and devices are not read)";

#[test]
fn a_fifo_as_an_archive_is_refused_without_blocking() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("img.tar");
    run_ok("mkfifo", &[&s(&f)]);
    let fifo = s(&f);
    let out = s(&t.path().join("out"));
    for args in [
        vec!["ls", &fifo],
        vec!["inspect", &fifo],
        vec!["import", &fifo, &out],
        vec!["copy", &fifo, &out],
        vec!["flatten", &fifo, "--output", &out],
        vec!["diff", &fifo, &fifo],
        vec!["verify", &fifo],
        vec!["ls", &format!("oci-archive:{fifo}")],
    ] {
        let (c, err) = run_with_deadline(&args, 5);
        assert_eq!(c, 2, "ocikit {args:?}: {err}");
        assert!(err.contains(NOT_REGULAR), "ocikit {args:?}: {err}");
        assert!(!Path::new(&out).exists());
    }
}

#[test]
fn devices_as_archives_say_what_they_are() {
    for dev in ["/dev/zero", "/dev/urandom", "/dev/null"] {
        let (c, err) = run_with_deadline(&["ls", dev], 5);
        assert_eq!(c, 2, "{dev}: {err}");
        assert!(err.contains(NOT_REGULAR), "{dev}: {err}");
        assert!(!err.contains("empty"), "{dev}: {err}");
    }
}

// ------------------------------------------------------------------ item 13

/// Runs ocikit with stdout on /dev/full.
fn to_dev_full(args: &[&str]) -> (i32, String) {
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(bin())
        .args(args)
        .stdout(full)
        .output()
        .unwrap();
    (code(&o), stderr(&o))
}

#[test]
fn a_full_stdout_is_an_error_for_every_command() {
    let (_t, l) = demo_copy();
    let l_s = s(&l);
    let one = loc(&l, ONE);
    let blob = some_blob(&l);
    let digest = format!("sha256:{}", blob.file_name().unwrap().to_string_lossy());
    for args in [
        vec!["ls", &l_s],
        vec!["ls", &l_s, "--json"],
        vec!["inspect", &one],
        vec!["cat", &l_s, "index"],
        vec!["cat", &one, "config"],
        vec!["blob", &l_s, &digest],
        vec!["export", &one, "-"],
        vec!["flatten", &one, "--tar", "-"],
        vec!["diff", &one, &one],
        vec!["verify", &l_s],
        vec!["verify", &l_s, "--json"],
        vec!["gc", &l_s, "--json", "--dry-run"],
        vec!["gc", &l_s, "--dry-run"],
        vec!["completions", "bash"],
        vec!["man"],
        vec!["--help"],
        vec!["--version"],
        vec!["ls", "--help"],
        vec!["help"],
    ] {
        let (c, err) = to_dev_full(&args);
        assert_eq!(c, 2, "ocikit {args:?} to /dev/full: {err}");
        assert!(
            err.contains("ocikit: error: cannot write to stdout: ")
                && err.contains("No space left on device"),
            "ocikit {args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "ocikit {args:?}: {err}");
    }
}

#[test]
fn export_to_a_closed_pipe_is_an_error() {
    let (_t, l) = demo_copy();
    for args in [
        vec!["export".to_string(), loc(&l, "1.0"), "-".into()],
        vec!["flatten".into(), loc(&l, ONE), "--tar".into(), "-".into()],
        vec!["ls".into(), s(&l)],
    ] {
        let mut child = Command::new(bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before anything is read (`| head -c 0`).
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert_eq!(code(&o), 2, "ocikit {args:?} | (closed): {err}");
        assert!(
            err.contains("cannot write to stdout: ") && err.contains("Broken pipe"),
            "ocikit {args:?}: {err}"
        );
    }
}

// ------------------------------------------------------------------ item 15

/// Runs ocikit as an unprivileged user: `nobody` through setpriv when the
/// tests run as root (root ignores permission bits), else as ourselves.
/// `None` (after saying why) when that is impossible.
fn as_unprivileged(test: &str, args: &[&str]) -> Option<(i32, String)> {
    let o = if is_root() {
        if !have("setpriv") {
            eprintln!("SKIPPING {test}: running as root and setpriv is not installed");
            return None;
        }
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(bin())
            .args(args)
            .output()
            .unwrap()
    } else {
        Command::new(bin()).args(args).output().unwrap()
    };
    Some((code(&o), stderr(&o)))
}

/// A demo copy readable by everyone, in a directory everyone can enter.
fn world_readable_demo() -> (tempfile::TempDir, PathBuf) {
    let (t, l) = demo_copy();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    run_ok("chmod", &["-R", "a+rX", &s(&l)]);
    (t, l)
}

const DENIED: &str = "permission denied";

fn assert_denied(test: &str, args: &[&str], file: &Path) -> bool {
    let Some((c, err)) = as_unprivileged(test, args) else {
        return false;
    };
    assert_eq!(c, 2, "ocikit {args:?}: {err}");
    let want = format!("cannot read {}: {DENIED}", file.display());
    assert!(
        err.contains(&want),
        "ocikit {args:?}: want {want:?} in: {err}"
    );
    assert!(!err.contains("malformed"), "ocikit {args:?}: {err}");
    true
}

#[test]
fn an_unreadable_blob_is_an_operational_error() {
    let test = "an_unreadable_blob_is_an_operational_error";
    let (_t, l) = world_readable_demo();
    // The manifest of the `legacy` image.
    let entry = index_entry(&l, ONE);
    let blob = blob_path(&l, &entry);
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o000)).unwrap();
    let l_s = s(&l);
    for args in [
        vec!["ls", l_s.as_str()],
        vec!["verify", &l_s],
        vec!["verify", &l_s, "--json"],
        vec!["inspect", &format!("{l_s}:{ONE}")],
    ] {
        if !assert_denied(test, &args, &blob) {
            return;
        }
    }
}

#[test]
fn an_unreadable_archive_is_an_operational_error() {
    let test = "an_unreadable_archive_is_an_operational_error";
    let (t, l) = world_readable_demo();
    let a = t.path().join("a.tar");
    ocikit_ok(["export", &loc(&l, ONE), &s(&a)]);
    fs::set_permissions(&a, fs::Permissions::from_mode(0o000)).unwrap();
    for args in [vec!["ls", &s(&a)], vec!["verify", &s(&a)]] {
        if !assert_denied(test, &args, &a) {
            return;
        }
    }
}

#[test]
fn an_unreadable_index_json_is_an_operational_error() {
    let test = "an_unreadable_index_json_is_an_operational_error";
    let (_t, l) = world_readable_demo();
    let index = l.join("index.json");
    fs::set_permissions(&index, fs::Permissions::from_mode(0o000)).unwrap();
    let l_s = s(&l);
    for args in [vec!["ls", l_s.as_str()], vec!["verify", &l_s]] {
        if !assert_denied(test, &args, &index) {
            return;
        }
    }
}

#[test]
fn an_unreadable_blobs_directory_is_an_operational_error() {
    let test = "an_unreadable_blobs_directory_is_an_operational_error";
    let (_t, l) = world_readable_demo();
    let blobs = l.join("blobs");
    fs::set_permissions(&blobs, fs::Permissions::from_mode(0o000)).unwrap();
    let l_s = s(&l);
    for args in [vec!["ls", l_s.as_str()], vec!["verify", &l_s]] {
        let Some((c, err)) = as_unprivileged(test, &args) else {
            return;
        };
        assert_eq!(c, 2, "ocikit {args:?}: {err}");
        assert!(
            err.contains("cannot read ") && err.contains(DENIED),
            "ocikit {args:?}: {err}"
        );
        assert!(!err.contains("malformed"), "ocikit {args:?}: {err}");
    }
}

// ------------------------------------------------------------------ item 16

#[test]
fn control_characters_in_names_are_escaped_in_errors() {
    let (_t, l) = demo_copy();
    let mut idx = index_json(&l);
    idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
        serde_json::json!("a\u{1b}[31mred\u{7}b\rc\u{0}d");
    fs::write(l.join("index.json"), to_bytes(&idx)).unwrap();
    let raw = |b: &[u8]| b.iter().any(|c| *c < 0x20 && *c != b'\n');
    for args in [
        vec!["inspect".to_string(), loc(&l, "nosuch")],
        vec!["tag".into(), loc(&l, "nosuch"), "x".into()],
        vec!["cat".into(), loc(&l, "nosuch"), "manifest".into()],
        vec!["ls".into(), s(&l)],
    ] {
        let o = ocikit(&args);
        assert!(!raw(&o.stderr), "ocikit {args:?}: {:?}", stderr(&o));
        assert!(!raw(&o.stdout), "ocikit {args:?}: {:?}", stdout(&o));
        let all = stdout(&o) + &stderr(&o);
        assert!(
            all.contains(r"a\u{1b}[31mred\u{7}b\rc\0d"),
            "ocikit {args:?}: {all}"
        );
    }
    // Data on stdout stays byte-exact.
    let o = ocikit_ok(["cat", &s(&l), "index"]);
    assert_eq!(o.stdout, fs::read(l.join("index.json")).unwrap());
}

// ------------------------------------------------------------------ item 19

/// A tar of the demo layout with `index.json` replaced by `member`.
fn demo_tar_with_index(dir: &Path, name: &str, member: tar::EntryType) -> PathBuf {
    let path = dir.join(name);
    let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
    for e in walkdir::WalkDir::new(demo()).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(demo()).unwrap();
        if rel.as_os_str().is_empty() || rel == Path::new("index.json") {
            continue;
        }
        b.append_path_with_name(e.path(), rel).unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(member);
    h.set_size(0);
    h.set_mode(0o755);
    match member {
        tar::EntryType::Symlink => b.append_link(&mut h, "index.json", "index.json").unwrap(),
        _ => b
            .append_data(&mut h, "index.json/", std::io::empty())
            .unwrap(),
    }
    b.finish().unwrap();
    path
}

#[test]
fn an_archive_index_json_loop_or_directory_is_named() {
    let t = tempfile::tempdir().unwrap();
    for (name, kind, what) in [
        ("loop.tar", tar::EntryType::Symlink, "loop"),
        ("dir.tar", tar::EntryType::Directory, "is a directory"),
    ] {
        let a = s(&demo_tar_with_index(t.path(), name, kind));
        for args in [vec!["ls", a.as_str()], vec!["verify", &a]] {
            let o = ocikit(&args);
            let all = stdout(&o) + &stderr(&o);
            assert_ne!(code(&o), 0, "ocikit {args:?}: {all}");
            assert!(
                all.contains("index.json") && all.contains(what),
                "ocikit {args:?}: want {what:?}: {all}"
            );
            assert!(!all.contains("has neither"), "ocikit {args:?}: {all}");
        }
    }
}

#[test]
fn not_valid_json_is_said_once() {
    let (_t, l) = demo_copy();
    fs::write(l.join("oci-layout"), b"nope").unwrap();
    let o = ocikit(["verify", &s(&l)]);
    let all = stdout(&o) + &stderr(&o);
    assert_eq!(code(&o), 1, "{all}");
    assert_eq!(all.matches("not valid JSON").count(), 1, "{all}");
    fs::write(l.join("oci-layout"), br#"{"a":1,"a":2}"#).unwrap();
    let o = ocikit(["verify", &s(&l)]);
    let all = stdout(&o) + &stderr(&o);
    assert!(all.contains("oci-layout has the key \"a\" twice"), "{all}");
}

/// A stderr that cannot be written (`2>/dev/full`) loses the message but the
/// exit code still says what happened: never a panic (exit 101).
#[test]
fn an_unwritable_stderr_never_panics() {
    for (args, want) in [
        (vec!["ls".to_string(), "/nonexistent-ocikit".into()], 2),
        (vec!["verify".to_string(), s(&demo())], 0),
    ] {
        let o = std::process::Command::new(bin())
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            )
            .status()
            .unwrap();
        assert_eq!(o.code(), Some(want), "{args:?}");
    }
}
