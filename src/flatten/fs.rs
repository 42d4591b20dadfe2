//! Every file-system operation of flatten, on directory descriptors and
//! names (never on path strings resolved from the root), through rustix's
//! safe wrappers: no raw libc calls (`mod.rs` forbids them at compile time).
//!
//! Conventions: names are single components (`&CStr`), the last component
//! is never followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `unlinkat`), and
//! every descriptor is opened close-on-exec. Errors are either the raw
//! [`Errno`] (when the caller decides on it) or the entry-level reason
//! string `"<what>: <strerror> (os error N)"`, as before the rustix swap.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Timespec, Timestamps,
    XattrFlags,
};
use rustix::io::Errno;

use super::MAX_DEPTH;

/// File status, as `fstat`/`fstatat` return it.
pub(super) type Stat = rfs::Stat;

/// `"<what>: <error>"`, the reason text of a failed call.
pub(super) fn os_err(what: &str, e: Errno) -> String {
    format!("{what}: {}", io::Error::from(e))
}

/// Whether the effective user is root.
pub(super) fn euid_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

// ------------------------------------------------------------------ opening

/// Opens the directory `dir` (not following a final symlink) to hold as a
/// root descriptor.
pub(super) fn open_root(dir: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A second descriptor for `fd` (close-on-exec).
pub(super) fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, String> {
    rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| os_err("dup", e))
}

/// Creates the regular file `name` in `dir` for writing (mode 0600); fails
/// if anything is there.
pub(super) fn create_file(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_bits_retain(0o600),
    )?)
}

/// Opens the directory `name` in `dir` for reading, not following a symlink.
pub(super) fn open_subdir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `name` in `dir` as a path-only descriptor (a step
/// of the walk), not following a symlink.
pub(super) fn open_path_dir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// openat2 with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: the directory
/// `path` resolved inside `root`, as a path-only descriptor. The caller
/// walks by hand on any error (the walk is authoritative).
pub(super) fn openat2_in_root(root: BorrowedFd<'_>, path: &CStr) -> Result<OwnedFd, Errno> {
    rfs::openat2(
        root,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

// ------------------------------------------------------------------ status

/// `fstatat(AT_SYMLINK_NOFOLLOW)`; `None` when it fails (missing).
pub(super) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> Option<Stat> {
    stat_at_or_err(dir, name).ok()
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)`.
pub(super) fn stat_at_or_err(dir: BorrowedFd<'_>, name: &CStr) -> Result<Stat, Errno> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// `fstat`.
pub(super) fn fstat(fd: BorrowedFd<'_>) -> Result<Stat, String> {
    rfs::fstat(fd).map_err(|e| os_err("fstat", e))
}

/// Whether `st` is a directory.
pub(super) fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Whether `st` is a symlink.
pub(super) fn is_symlink(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Symlink
}

/// A symlink's target.
pub(super) fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<Vec<u8>, String> {
    rfs::readlinkat(dir, name, Vec::new())
        .map(CString::into_bytes)
        .map_err(|e| os_err("readlink", e))
}

// ------------------------------------------------------------------ creating

/// `mkdirat(dir, name, 0700)`.
pub(super) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    rfs::mkdirat(dir, name, Mode::from_bits_retain(0o700))
}

/// `symlinkat(target, dir, name)`.
pub(super) fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    rfs::symlinkat(target, dir, name)
}

/// `linkat(old_dir, old, new_dir, new, 0)`: never follows `old`.
pub(super) fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> Result<(), Errno> {
    rfs::linkat(old_dir, old, new_dir, new, AtFlags::empty())
}

/// `mknodat(dir, name, kind | 0600, makedev(major, minor))`.
pub(super) fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    kind: FileType,
    major: u32,
    minor: u32,
) -> Result<(), Errno> {
    rfs::mknodat(
        dir,
        name,
        kind,
        Mode::from_bits_retain(0o600),
        rfs::makedev(major, minor),
    )
}

/// Replaces `name` in `dir` with a new node (device or FIFO, mode 0600).
pub(super) fn make_node(
    dir: BorrowedFd<'_>,
    name: &CStr,
    kind: FileType,
    major: u32,
    minor: u32,
) -> Result<(), String> {
    remove_path(dir, name)?;
    mknod_at(dir, name, kind, major, minor).map_err(|e| os_err("create node", e))
}

/// `renameat2(RENAME_NOREPLACE)`.
pub(super) fn rename_noreplace(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> Result<(), Errno> {
    rfs::renameat_with(old_dir, old, new_dir, new, RenameFlags::NOREPLACE)
}

// ------------------------------------------------------------------ metadata

fn timestamps(sec: i64, nsec: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: i64::from(nsec) as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// `fchown` with validated ids.
pub(super) fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> Result<(), Errno> {
    rfs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
}

/// `fchownat(AT_SYMLINK_NOFOLLOW)` with validated ids.
pub(super) fn chown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> Result<(), Errno> {
    rfs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// `fchmod` with the mode bits as given.
pub(super) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
    rfs::fchmod(fd, Mode::from_bits_retain(mode))
}

/// `fchmodat(dir, name, mode, 0)`.
pub(super) fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<(), Errno> {
    rfs::chmodat(dir, name, Mode::from_bits_retain(mode), AtFlags::empty())
}

/// Sets access and modification times of an open file.
pub(super) fn times_fd(fd: BorrowedFd<'_>, sec: i64, nsec: u32) -> Result<(), Errno> {
    rfs::futimens(fd, &timestamps(sec, nsec))
}

/// Sets access and modification times by name, never following.
pub(super) fn times_at(dir: BorrowedFd<'_>, name: &CStr, sec: i64, nsec: u32) -> Result<(), Errno> {
    rfs::utimensat(dir, name, &timestamps(sec, nsec), AtFlags::SYMLINK_NOFOLLOW)
}

// ------------------------------------------------------------------ xattrs

/// `fsetxattr(fd, name, value, 0)`.
pub(super) fn set_xattr_fd(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> Result<(), Errno> {
    rfs::fsetxattr(fd, name, value, XattrFlags::empty())
}

/// `lsetxattr(path, name, value, 0)`: sets it on a symlink itself.
pub(super) fn set_xattr_link(path: &CStr, name: &CStr, value: &[u8]) -> Result<(), Errno> {
    rfs::lsetxattr(path, name, value, XattrFlags::empty())
}

/// The names of an open file's xattrs (none when they cannot be listed,
/// or take more than 64 KiB).
pub(super) fn list_xattrs(fd: BorrowedFd<'_>) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 64 << 10];
    match rfs::flistxattr(fd, &mut buf[..]) {
        Ok(n) if n > 0 => {
            buf.truncate(n);
            buf.split(|&b| b == 0)
                .filter(|n| !n.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        }
        _ => Vec::new(),
    }
}

/// `fremovexattr`, ignoring failure.
pub(super) fn remove_xattr(fd: BorrowedFd<'_>, name: &CStr) {
    let _ = rfs::fremovexattr(fd, name);
}

/// `/proc/self/fd/<dir>/<name>`, when `/proc` is procfs: a path naming
/// `name` through our own descriptor, for calls that have no `*at` form.
pub(super) fn proc_fd_path(dir: BorrowedFd<'_>, name: &CStr) -> Option<CString> {
    static PROCFS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *PROCFS
        .get_or_init(|| rfs::statfs(c"/proc").is_ok_and(|st| st.f_type == rfs::PROC_SUPER_MAGIC));
    if !ok {
        return None;
    }
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    CString::new(p).ok()
}

// ------------------------------------------------------------------ removing

/// `unlinkat(dir, name, 0)`.
pub(super) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    rfs::unlinkat(dir, name, AtFlags::empty())
}

/// `unlinkat(dir, name, 0)` or, for a directory, `AT_REMOVEDIR`; a missing
/// name is fine.
fn remove_name(dir: BorrowedFd<'_>, name: &CStr, directory: bool) -> Result<(), String> {
    let (flags, what) = if directory {
        (AtFlags::REMOVEDIR, "remove directory")
    } else {
        (AtFlags::empty(), "remove")
    };
    match rfs::unlinkat(dir, name, flags) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(os_err(what, e)),
    }
}

/// Names in a directory (not `.`/`..`), with whether each is a directory.
pub(super) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<(CString, bool)>, String> {
    let fd = rfs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_err("open directory", e))?;
    let entries = rfs::Dir::new(fd).map_err(|e| os_err("fdopendir", e))?;
    let mut out = Vec::new();
    // A read error ends the listing, as readdir's NULL did.
    for ent in entries.map_while(Result::ok) {
        let name = ent.file_name();
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        let is_dir = match ent.file_type() {
            FileType::Directory => true,
            FileType::Unknown => stat_at(dir, name).is_some_and(|st| is_dir(&st)),
            _ => false,
        };
        out.push((name.to_owned(), is_dir));
    }
    Ok(out)
}

/// Removes `name` in `dir` (recursively for directories), never following
/// symlinks. Missing is fine.
pub(super) fn remove_path(dir: BorrowedFd<'_>, name: &CStr) -> Result<(), String> {
    remove_path_keeping(dir, name, &mut |_, _| false)
}

/// Removes `name` in `dir` like [`remove_path`], sparing what `keep(parent
/// ino, name)` names inside a directory (which then stays, holding them).
pub(super) fn remove_path_keeping(
    dir: BorrowedFd<'_>,
    name: &CStr,
    keep: &mut dyn FnMut(u64, &[u8]) -> bool,
) -> Result<(), String> {
    let Some(st) = stat_at(dir, name) else {
        return Ok(());
    };
    if is_dir(&st) {
        let fd = open_subdir(dir, name).map_err(|e| format!("open directory to remove: {e}"))?;
        let kept = clear_dir(fd.as_fd(), keep)?;
        if !kept {
            remove_name(dir, name, true)?;
        }
    } else {
        remove_name(dir, name, false)?;
    }
    Ok(())
}

/// Removes a directory's contents without recursion on the call stack;
/// `keep(parent ino, name)` spares an entry (a directory that is kept is
/// still cleared of what it does not keep). Returns whether anything was kept.
pub(super) fn clear_dir(
    top: BorrowedFd<'_>,
    keep: &mut dyn FnMut(u64, &[u8]) -> bool,
) -> Result<bool, String> {
    struct Frame {
        fd: OwnedFd,
        ino: u64,
        names: Vec<(CString, bool)>,
        kept: bool,
        name_in_parent: Option<(CString, bool)>,
    }
    let fd = dup(top)?;
    let ino = fstat(fd.as_fd())?.st_ino;
    let names = list_dir(fd.as_fd())?;
    let mut stack = vec![Frame {
        fd,
        ino,
        names,
        kept: false,
        name_in_parent: None,
    }];
    loop {
        let depth = stack.len();
        let Some(top_frame) = stack.last_mut() else {
            return Ok(false);
        };
        if let Some((name, is_dir)) = top_frame.names.pop() {
            let keep_it = keep(top_frame.ino, name.to_bytes());
            let dfd = top_frame.fd.as_fd();
            if is_dir {
                if depth > MAX_DEPTH {
                    return Err("directory tree is too deep".into());
                }
                let fd = open_subdir(dfd, &name)
                    .map_err(|e| format!("open directory to remove: {e}"))?;
                let ino = fstat(fd.as_fd())?.st_ino;
                let names = list_dir(fd.as_fd())?;
                stack.push(Frame {
                    fd,
                    ino,
                    names,
                    kept: false,
                    name_in_parent: Some((name, keep_it)),
                });
            } else if keep_it {
                top_frame.kept = true;
            } else {
                remove_name(dfd, &name, false)?;
            }
            continue;
        }
        // Frame done.
        let Some(done) = stack.pop() else {
            return Ok(false);
        };
        let Some(parent) = stack.last_mut() else {
            return Ok(done.kept);
        };
        if let Some((name, keep_self)) = done.name_in_parent {
            drop(done.fd);
            if keep_self || done.kept {
                parent.kept = true;
            } else {
                remove_name(parent.fd.as_fd(), &name, true)?;
            }
        }
    }
}
