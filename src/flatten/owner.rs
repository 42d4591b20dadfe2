//! Whose files these are: the owner policy, chosen once per flatten (in
//! the spirit of umoci's `pkg/fseval`, which swaps the calls that need root
//! for ones an unprivileged user can make).
//!
//! As root, owners are set with `chown` and device nodes are created. As an
//! unprivileged user (or with `--rootless`), owners are recorded instead: in
//! the `user.rootlesscontainers` xattr where a file can carry one, as umoci
//! does, and in the flatten's [`Record`](super::Record)s; device nodes are
//! skipped.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use rustix::fs::FileType;

use super::fs::{self, os_err};
use super::EntryResult;

/// The xattr in which rootless flattens record owners.
pub(super) const ROOTLESS_XATTR: &[u8] = b"user.rootlesscontainers";

/// What the applier does with the owners and devices an image asks for.
pub(super) trait OwnerPolicy: Sync {
    /// Gives the open file `fd` the owner `uid:gid`, or records it: returns
    /// the owner when it was recorded instead of set (the caller keeps a
    /// [`Record`](super::Record)). `set_xattr` stores an xattr on the file.
    fn set_owner(
        &self,
        fd: BorrowedFd<'_>,
        uid: u64,
        gid: u64,
        set_xattr: &dyn Fn(&[u8], &[u8]),
    ) -> EntryResult<Option<(u64, u64)>>;

    /// Like [`set_owner`](Self::set_owner) for `name` in `dir`, never
    /// following it (symlinks and nodes, which cannot be opened).
    fn set_owner_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        uid: u64,
        gid: u64,
    ) -> EntryResult<Option<(u64, u64)>>;

    /// Replaces `name` in `dir` with a device node; `false` when this
    /// policy skips devices (then nothing was touched).
    fn make_device(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        kind: FileType,
        major: u32,
        minor: u32,
    ) -> EntryResult<bool>;

    /// Why an xattr stored in a layer is not applied, if it is not.
    fn refuses_xattr(&self, name: &[u8]) -> Option<&'static str>;

    /// Whether an xattr already on a directory stays when the directory's
    /// xattrs are replaced by its entry's.
    fn keeps_xattr(&self, name: &[u8]) -> bool;
}

/// The policy for `rootless` (options or an unprivileged effective user).
pub(super) fn policy(rootless: bool) -> &'static dyn OwnerPolicy {
    if rootless {
        &Rootless
    } else {
        &Root
    }
}

/// Running as root: owners set, devices created.
struct Root;

impl OwnerPolicy for Root {
    fn set_owner(
        &self,
        fd: BorrowedFd<'_>,
        uid: u64,
        gid: u64,
        _set_xattr: &dyn Fn(&[u8], &[u8]),
    ) -> EntryResult<Option<(u64, u64)>> {
        let (u, g) = ids(uid, gid)?;
        fs::chown_fd(fd, u, g).map_err(|e| os_err("chown", e))?;
        Ok(None)
    }

    fn set_owner_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        uid: u64,
        gid: u64,
    ) -> EntryResult<Option<(u64, u64)>> {
        let (u, g) = ids(uid, gid)?;
        fs::chown_at(dir, name, u, g).map_err(|e| os_err("chown", e))?;
        Ok(None)
    }

    fn make_device(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        kind: FileType,
        major: u32,
        minor: u32,
    ) -> EntryResult<bool> {
        fs::make_node(dir, name, kind, major, minor)?;
        Ok(true)
    }

    fn refuses_xattr(&self, _name: &[u8]) -> Option<&'static str> {
        None
    }

    fn keeps_xattr(&self, _name: &[u8]) -> bool {
        false
    }
}

/// Unprivileged: owners recorded, devices skipped.
struct Rootless;

impl OwnerPolicy for Rootless {
    fn set_owner(
        &self,
        _fd: BorrowedFd<'_>,
        uid: u64,
        gid: u64,
        set_xattr: &dyn Fn(&[u8], &[u8]),
    ) -> EntryResult<Option<(u64, u64)>> {
        ids(uid, gid)?;
        if let Some(p) = rootless_payload(uid, gid) {
            set_xattr(ROOTLESS_XATTR, &p);
        }
        // Recorded even for 0:0, so that a reused inode never keeps a
        // deleted file's owner.
        Ok(Some((uid, gid)))
    }

    fn set_owner_at(
        &self,
        _dir: BorrowedFd<'_>,
        _name: &CStr,
        uid: u64,
        gid: u64,
    ) -> EntryResult<Option<(u64, u64)>> {
        ids(uid, gid)?;
        Ok(Some((uid, gid)))
    }

    fn make_device(
        &self,
        _dir: BorrowedFd<'_>,
        _name: &CStr,
        _kind: FileType,
        _major: u32,
        _minor: u32,
    ) -> EntryResult<bool> {
        Ok(false)
    }

    fn refuses_xattr(&self, name: &[u8]) -> Option<&'static str> {
        (name == ROOTLESS_XATTR)
            .then_some("user.rootlesscontainers stored in a layer is ignored in rootless mode")
    }

    fn keeps_xattr(&self, name: &[u8]) -> bool {
        name == ROOTLESS_XATTR
    }
}

/// An entry's owner as ids the kernel takes (not -1, which means "keep").
fn ids(uid: u64, gid: u64) -> EntryResult<(u32, u32)> {
    let uid = u32::try_from(uid)
        .ok()
        .filter(|&u| u != u32::MAX)
        .ok_or_else(|| format!("uid {uid} is out of range"))?;
    let gid = u32::try_from(gid)
        .ok()
        .filter(|&g| g != u32::MAX)
        .ok_or_else(|| format!("gid {gid} is out of range"))?;
    Ok((uid, gid))
}

/// The `user.rootlesscontainers` payload (protobuf `Resource{uid=1, gid=2}`,
/// 0 written as the no-op id 2^32-1), or `None` when both are 0.
pub(crate) fn rootless_payload(uid: u64, gid: u64) -> Option<Vec<u8>> {
    if uid == 0 && gid == 0 {
        return None;
    }
    let mut v = Vec::new();
    for (tag, id) in [(0x08u8, uid), (0x10u8, gid)] {
        let id = if id == 0 { u64::from(u32::MAX) } else { id };
        v.push(tag);
        let mut x = id;
        loop {
            let b = (x & 0x7f) as u8;
            x >>= 7;
            if x == 0 {
                v.push(b);
                break;
            }
            v.push(b | 0x80);
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a `user.rootlesscontainers` payload back into (uid, gid).
    fn parse_rootless_payload(b: &[u8]) -> Option<(u64, u64)> {
        let (mut uid, mut gid) = (0u64, 0u64);
        let mut i = 0;
        while i < b.len() {
            let tag = b[i];
            i += 1;
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let c = *b.get(i)?;
                i += 1;
                v |= u64::from(c & 0x7f) << shift;
                shift += 7;
                if c & 0x80 == 0 || shift > 63 {
                    break;
                }
            }
            let v = if v == u64::from(u32::MAX) { 0 } else { v };
            match tag {
                0x08 => uid = v,
                0x10 => gid = v,
                _ => return None,
            }
        }
        Some((uid, gid))
    }

    #[test]
    fn rootless_payload_round_trips() {
        assert_eq!(rootless_payload(0, 0), None);
        let p = rootless_payload(1234, 0).unwrap();
        assert_eq!(
            p,
            vec![0x08, 0xd2, 0x09, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f]
        );
        assert_eq!(parse_rootless_payload(&p), Some((1234, 0)));
    }
}
