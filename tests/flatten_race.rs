//! A directory of the tree being built is swapped for a symlink to a
//! sentinel directory outside it, again and again, while flatten writes
//! thousands of files into it (CVE-2018-15664-style TOCTOU; semantics.md
//! item 41). Whatever the interleaving, nothing may be written outside the
//! output: parents are opened with openat2(RESOLVE_IN_ROOT) or an
//! O_NOFOLLOW walk, never through a path string.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn many_files(n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, "a/", std::io::empty()).unwrap();
    let data = vec![b'x'; 512];
    for i in 0..n {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("a/f{i:05}"), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// The staging `rootfs/a` of a running flatten beside `out`, if any.
fn staged_a(dir: &Path) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with(".ocikit-flatten-") {
            return Some(e.path().join("rootfs/a"));
        }
    }
    None
}

#[test]
fn swapping_a_directory_for_a_symlink_never_lets_writes_out() {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("l");
    let layer = put_layer(&layout, OCI_TAR, &many_files(20_000));
    let mut m = put_image(&layout, "amd64", None, &[layer], false);
    m["annotations"] = json!({"org.opencontainers.image.ref.name": "t"});
    write_layout_files(&layout, &json!({"schemaVersion": 2, "manifests": [m]}));

    let work = d.path().join("work");
    let sentinel = d.path().join("sentinel");
    fs::create_dir_all(&work).unwrap();
    fs::create_dir_all(&sentinel).unwrap();
    fs::write(sentinel.join("keep"), "keep").unwrap();
    let before = snapshot(&sentinel);

    let mut swaps_total = 0usize;
    for round in 0..3 {
        let out = work.join(format!("out{round}"));
        let mut child = std::process::Command::new(bin())
            .args(["flatten", &format!("{}:t", layout.display())])
            .arg("--output")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (done, work, sentinel) = (done.clone(), work.clone(), sentinel.clone());
            std::thread::spawn(move || {
                let mut swaps = 0usize;
                let deadline = Instant::now() + Duration::from_secs(60);
                while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let Some(a) = staged_a(&work) else {
                        std::thread::yield_now();
                        continue;
                    };
                    let real = a.with_file_name("a.real");
                    if fs::symlink_metadata(&a).is_ok_and(|m| m.is_dir())
                        && fs::rename(&a, &real).is_ok()
                    {
                        if std::os::unix::fs::symlink(&sentinel, &a).is_ok() {
                            swaps += 1;
                            std::thread::sleep(Duration::from_micros(200));
                            let _ = fs::remove_file(&a);
                        }
                        let _ = fs::rename(&real, &a);
                    }
                }
                swaps
            })
        };
        let status = child.wait().unwrap();
        done.store(true, Ordering::SeqCst);
        swaps_total += swapper.join().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(!err.contains("panicked"), "{err}");
        // Either outcome is fine (the tree changed under it); escaping is not.
        assert!(
            status.code() == Some(0) || status.code() == Some(2),
            "{status:?} {err}"
        );
        assert_eq!(
            snapshot(&sentinel),
            before,
            "a write escaped into the sentinel"
        );
        let extra: Vec<_> = fs::read_dir(&sentinel)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(extra.len(), 1, "{extra:?}");
    }
    eprintln!("{swaps_total} swaps made during 3 flattens");
}
