//! Signals through the run's cancellation token: the first SIGINT or
//! SIGTERM asks the command to stop at its next write; a second one ends
//! the process at once with status 130 (say, while it waits for a lock,
//! when nothing of its own is on disk).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn copy_waiting_for_a_lock(sig: libc::c_int) -> (std::process::ExitStatus, Vec<String>) {
    let (_t, demo) = demo_copy();
    let dst = demo.parent().unwrap().join("dst");
    assert_eq!(code(&ocikit(["init", &s(&dst)])), 0);
    let before = snapshot(&dst);
    let lock = hold_lock(&dst);
    let mut cmd = Command::new(bin());
    cmd.args(["copy", &s(&demo), &s(&dst)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    default_disposition(&mut cmd, sig);
    let mut child = cmd.spawn().unwrap();
    // Let it reach the lock and block there.
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the copy did not wait");
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, sig) };
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    unsafe { libc::kill(pid, sig) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after two signals"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(lock);
    let mut after = snapshot(&dst);
    after.remove(".ocikit.lock");
    let mut before = before;
    before.remove(".ocikit.lock");
    let changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    (status, changed)
}

#[test]
fn a_second_sigint_ends_a_waiting_copy_with_130_and_nothing_written() {
    let (status, changed) = copy_waiting_for_a_lock(libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(status.signal().is_none());
    assert!(changed.is_empty(), "{changed:?}");
}

#[test]
fn a_second_sigterm_does_too() {
    let (status, changed) = copy_waiting_for_a_lock(libc::SIGTERM);
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(changed.is_empty(), "{changed:?}");
}
