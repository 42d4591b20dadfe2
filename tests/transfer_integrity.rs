//! `export --checksum` and `--split`: the checksum file passes the real
//! `sha256sum -c`, split parts concatenate to the unsplit archive, readers
//! take `FILE.000` as the whole archive and refuse a part that does not match
//! `FILE.sha256`, naming it and writing nothing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// Lets `--split` take sizes below 1 MiB (the demo archive is ~23 KiB).
const OVERRIDE: &str = "OCIKIT_TEST_SPLIT_ANY_SIZE";

fn ocikit_small_split<const N: usize>(args: [&std::ffi::OsStr; N]) -> Output {
    Command::new(bin())
        .args(args)
        .env(OVERRIDE, "1")
        .output()
        .expect("run ocikit")
}

/// The demo exported as `demo.tar` split into 8 KiB parts with a checksum
/// file; returns the scratch directory and the (unwritten) `demo.tar` path.
fn split_demo_with_checksums() -> (tempfile::TempDir, PathBuf) {
    let (t, demo) = demo_copy();
    let file = t.path().join("demo.tar");
    let o = ocikit_small_split([
        "export".as_ref(),
        demo.as_os_str(),
        file.as_os_str(),
        "--split".as_ref(),
        "8K".as_ref(),
        "--checksum".as_ref(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    (t, file)
}

fn manifest_digests(layout: &Path) -> Vec<String> {
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut d: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    d.sort();
    d
}

fn parts_of(base: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|n| PathBuf::from(format!("{}.{n:03}", base.display())))
        .take_while(|p| p.exists())
        .collect()
}

#[test]
fn checksum_passes_sha256sum() {
    let (t, demo) = demo_copy();
    let file = t.path().join("demo.tar");
    let o = ocikit([
        "export".as_ref(),
        demo.as_os_str(),
        file.as_os_str(),
        std::ffi::OsStr::new("--checksum"),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sums = fs::read_to_string(t.path().join("demo.tar.sha256")).unwrap();
    assert!(sums.ends_with("  demo.tar\n"), "{sums}");
    let c = Command::new("sha256sum")
        .args(["-c", "demo.tar.sha256"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
    // The file is the archive: it imports to the demo's manifests.
    let layout = t.path().join("l");
    ocikit_ok(["import", &s(&file), &s(&layout)]);
    assert_eq!(manifest_digests(&layout), manifest_digests(&demo));
    // A changed byte is caught by the checksum file beside it.
    let mut bytes = fs::read(&file).unwrap();
    bytes[600] ^= 1;
    fs::write(&file, &bytes).unwrap();
    let o = ocikit(["verify", &s(&file)]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(said.contains("demo.tar: checksum mismatch"), "{said}");
}

#[test]
fn split_parts_read_as_one_archive() {
    let (t, demo) = demo_copy();
    let whole = t.path().join("whole.tar");
    let o = ocikit(["export", &s(&demo), &s(&whole)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let whole_bytes = fs::read(&whole).unwrap();
    let size = whole_bytes.len().div_ceil(3) as u64;
    let file = t.path().join("demo.tar");
    let size_arg = size.to_string();
    let o = ocikit_small_split([
        "export".as_ref(),
        demo.as_os_str(),
        file.as_os_str(),
        "--split".as_ref(),
        size_arg.as_ref(),
        "--checksum".as_ref(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!file.exists(), "no unsplit FILE is left");
    let parts = parts_of(&file);
    assert_eq!(parts.len(), 3);
    let mut joined = Vec::new();
    for p in &parts {
        let b = fs::read(p).unwrap();
        assert!(b.len() as u64 <= size);
        joined.extend(b);
    }
    assert!(
        joined == whole_bytes,
        "parts concatenate to the unsplit export"
    );
    let c = Command::new("sha256sum")
        .args(["-c", "demo.tar.sha256"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
    assert_eq!(
        fs::read_to_string(t.path().join("demo.tar.sha256"))
            .unwrap()
            .lines()
            .count(),
        3
    );

    let first = t.path().join("demo.tar.000");
    ocikit_ok(["verify", &s(&first)]);
    let layout = t.path().join("l");
    ocikit_ok(["import", &s(&first), &s(&layout)]);
    ocikit_ok(["verify", "--deep", &s(&layout)]);
    assert_eq!(manifest_digests(&layout), manifest_digests(&demo));

    // A split into fewer parts removes the older split's extra parts.
    let size_arg = (whole_bytes.len() as u64).to_string();
    let o = ocikit_small_split([
        "export".as_ref(),
        demo.as_os_str(),
        file.as_os_str(),
        "--split".as_ref(),
        size_arg.as_ref(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(parts_of(&file).len(), 1);
    assert!(stderr(&o).contains("demo.tar.001"), "{}", stderr(&o));
    assert!(!t.path().join("demo.tar.sha256").exists());
    assert_eq!(fs::read(&first).unwrap(), whole_bytes);
}

#[test]
fn corrupt_part_is_named_and_nothing_is_written() {
    let (t, file) = split_demo_with_checksums();
    assert_eq!(parts_of(&file).len(), 3);
    let second = t.path().join("demo.tar.001");
    let mut b = fs::read(&second).unwrap();
    b[100] ^= 0x20;
    fs::write(&second, &b).unwrap();

    let first = t.path().join("demo.tar.000");
    let o = ocikit(["verify", &s(&first)]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(said.contains("demo.tar.001: checksum mismatch"), "{said}");

    let layout = t.path().join("l");
    let o = ocikit(["import", &s(&first), &s(&layout)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("demo.tar.001: checksum mismatch"),
        "{}",
        stderr(&o)
    );
    assert!(!layout.exists(), "import wrote nothing");
}

#[test]
fn split_refuses_stdout_and_small_sizes() {
    let (_t, demo) = demo_copy();
    let o = ocikit([
        "export".as_ref(),
        demo.as_os_str(),
        "-".as_ref(),
        "--split".as_ref(),
        "1M".as_ref(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("standard output"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let o = ocikit([
        "export".as_ref(),
        demo.as_os_str(),
        "/nonexistent-dir/x.tar".as_ref(),
        "--split".as_ref(),
        "1000".as_ref(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("1 MiB"), "{}", stderr(&o));
}

#[test]
fn unlisted_and_missing_parts_are_named() {
    let (t, _) = split_demo_with_checksums();
    let sums = t.path().join("demo.tar.sha256");
    let text = fs::read_to_string(&sums).unwrap();
    let first = t.path().join("demo.tar.000");
    let import = |name: &str| {
        let layout = t.path().join(name);
        let o = ocikit(["import", &s(&first), &s(&layout)]);
        assert!(!layout.exists(), "import wrote nothing");
        o
    };
    // The last part's line removed: that part is named.
    let without_last: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    fs::write(&sums, without_last).unwrap();
    let o = import("a");
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("demo.tar.002: not listed in"),
        "{}",
        stderr(&o)
    );
    // The last part removed while listed: it is named as missing.
    fs::write(&sums, &text).unwrap();
    fs::remove_file(t.path().join("demo.tar.002")).unwrap();
    let o = import("b");
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("demo.tar.002: listed in") && stderr(&o).contains("missing"),
        "{}",
        stderr(&o)
    );
}
