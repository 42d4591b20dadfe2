//! The applier: one layer's entries after another onto the tree, with
//! every OCI rule (whiteouts and opaque whiteouts, hardlinks, symlinks
//! stored verbatim, type changes by unlink-and-recreate, devices and
//! FIFOs, modes, owners, xattrs and times, directories last). Every file
//! is reached through directory descriptors (see the module docs of
//! [`flatten`](super)); the calls themselves are in [`fs`](super::fs).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::Receiver;

use rustix::fs::FileType;
use rustix::io::Errno;

use super::fs::{self, os_err};
use super::pipeline::{Msg, Shared, Spooled};
use super::{clean_name, cstring, EntryResult, Record, Recorded, MAX_DEPTH, MAX_LINKS};
use crate::layer::{LayerDigests, LayerError};
use crate::tarstream::{display_bytes, Entry, EntryKind};
use crate::whiteout::{self, Marker};

#[derive(Debug, Clone)]
struct DirMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    nsec: u32,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DirMeta {
    fn implied() -> DirMeta {
        DirMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            nsec: 0,
            xattrs: Vec::new(),
        }
    }
}

fn meta_of(e: &Entry) -> DirMeta {
    DirMeta {
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        nsec: e.mtime_nsec,
        xattrs: e.xattrs.clone(),
    }
}

pub(super) struct Applier<'s> {
    shared: &'s Shared,
    root: OwnedFd,
    root_ino: u64,
    dev: u64,
    /// Directory metadata to set at the end, by inode.
    dirs: HashMap<u64, DirMeta>,
    /// (parent inode, name) of everything created in the current layer.
    created: HashSet<(u64, Vec<u8>)>,
    openat2: bool,
    devices_skipped: u64,
    duplicates: u64,
    unknown_types: u64,
    symlink_xattrs: u64,
    pub(super) recorded: Recorded,
}

impl<'s> Applier<'s> {
    pub(super) fn new(root: OwnedFd, shared: &'s Shared) -> Applier<'s> {
        let (root_ino, dev) = fs::fstat(root.as_fd())
            .map(|st| (st.st_ino, st.st_dev))
            .unwrap_or((0, 0));
        let mut dirs = HashMap::new();
        dirs.insert(root_ino, DirMeta::implied());
        Applier {
            shared,
            root,
            root_ino,
            dev,
            dirs,
            created: HashSet::new(),
            openat2: true,
            devices_skipped: 0,
            duplicates: 0,
            unknown_types: 0,
            symlink_xattrs: 0,
            recorded: HashMap::new(),
        }
    }

    pub(super) fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.devices_skipped > 0 {
            w.push(format!(
                "skipped {} device node(s): creating devices needs root (run as root without --rootless to create them)",
                self.devices_skipped
            ));
        }
        if self.duplicates > 0 {
            w.push(format!(
                "{} path(s) appear more than once in one layer; the last entry wins",
                self.duplicates
            ));
        }
        if self.unknown_types > 0 {
            w.push(format!(
                "skipped {} entr(y/ies) of unknown tar type",
                self.unknown_types
            ));
        }
        let skipped = self
            .shared
            .xattr_skipped
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let mut xs: Vec<_> = skipped.iter().collect();
        xs.sort();
        for (why, n) in xs {
            w.push(format!("skipped {n} xattr(s): {why}"));
        }
        if self.symlink_xattrs > 0 {
            w.push(format!(
                "skipped xattrs on {} symlink(s) (/proc is not procfs, so they cannot be set without following the link)",
                self.symlink_xattrs
            ));
        }
        w
    }

    /// Applies one layer's messages. Outer error: (entry name, reason).
    #[allow(clippy::type_complexity)]
    pub(super) fn apply_layer(
        &mut self,
        rx: &Receiver<Msg>,
    ) -> Result<Result<LayerDigests, LayerError>, (String, String)> {
        self.created.clear();
        loop {
            let msg = rx.recv().map_err(|_| {
                let why = if self.shared.cancel.is_cancelled() {
                    "interrupted"
                } else {
                    "the layer decoder stopped"
                };
                (String::new(), why.to_string())
            })?;
            match msg {
                Msg::Entry(e, spooled) => {
                    if self.shared.cancel.is_cancelled() {
                        return Err((String::new(), "interrupted".into()));
                    }
                    let name = e.display_name();
                    self.apply_entry(&e, spooled).map_err(|r| (name, r))?;
                }
                Msg::End(r) => return Ok(*r),
            }
        }
    }

    fn apply_entry(&mut self, e: &Entry, spooled: Option<Spooled>) -> EntryResult<()> {
        let comps = clean_name(&e.path)?;
        let Some((base, parents)) = comps.split_last() else {
            if e.kind != EntryKind::Directory {
                return Err("an entry for the root directory must be a directory".into());
            }
            self.dirs.insert(self.root_ino, meta_of(e));
            return Ok(());
        };
        match whiteout::classify(base) {
            Marker::None => {}
            Marker::Opaque => return self.opaque(parents),
            Marker::Delete(target) => return self.delete(parents, target),
            // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): never part of the tree.
            Marker::Metadata => return Ok(()),
            Marker::Invalid => return Err("invalid whiteout name".into()),
        }
        if let EntryKind::Other(_) = e.kind {
            self.unknown_types += 1;
            return Ok(());
        }
        let parent = match self.open_dir(parents, true)? {
            Some(p) => p,
            None => return Err("cannot create its parent directory".into()),
        };
        let pfd = parent.as_fd();
        let pino = fs::fstat(pfd)?.st_ino;
        let name = cstring(base)?;
        let key = (pino, base.clone());
        if self.created.contains(&key) {
            self.duplicates += 1;
        }
        match e.kind {
            EntryKind::Regular => self.regular(spooled, pfd, &name)?,
            EntryKind::Directory => self.directory(e, pfd, &name)?,
            EntryKind::Symlink => self.symlink(e, pfd, &name)?,
            EntryKind::Hardlink => self.hardlink(e, pfd, &name)?,
            EntryKind::Char | EntryKind::Block | EntryKind::Fifo => {
                if !self.node(e, pfd, &name)? {
                    return Ok(());
                }
            }
            EntryKind::Other(_) => {}
        }
        self.created.insert(key);
        Ok(())
    }

    /// Opens the directory named by `comps` (resolved in the root), creating
    /// missing directories (and replacing non-directories in the way, as
    /// umoci does) when `create`. `None` when absent and not creating.
    fn open_dir(&mut self, comps: &[Vec<u8>], create: bool) -> EntryResult<Option<OwnedFd>> {
        if comps.is_empty() {
            return fs::dup(self.root.as_fd()).map(Some);
        }
        if self.openat2 {
            let joined = comps.join(&b'/');
            let c = cstring(&joined)?;
            match fs::openat2_in_root(self.root.as_fd(), &c) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::NOSYS | Errno::PERM) => self.openat2 = false,
                Err(_) => {}
            }
        }
        self.walk(comps, create)
    }

    fn walk(&mut self, comps: &[Vec<u8>], create: bool) -> EntryResult<Option<OwnedFd>> {
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut queue: std::collections::VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        let mut links = 0usize;
        let mut steps = 0usize;
        while let Some(c) = queue.pop_front() {
            steps += 1;
            if steps > 4 * MAX_DEPTH {
                return Err("path resolution takes too many steps".into());
            }
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                stack.pop();
                continue;
            }
            if stack.len() >= MAX_DEPTH {
                return Err("the path is too deep".into());
            }
            let cur = stack.last().map_or(self.root.as_fd(), |f| f.as_fd());
            let name = cstring(&c)?;
            match fs::stat_at(cur, &name) {
                Some(st) if fs::is_dir(&st) => {}
                Some(st) if fs::is_symlink(&st) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err("too many levels of symbolic links".into());
                    }
                    let target = fs::readlink_at(cur, &name)?;
                    if target.starts_with(b"/") {
                        stack.clear();
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        queue.push_front(t.to_vec());
                    }
                    continue;
                }
                Some(_) => {
                    if !create {
                        return Ok(None);
                    }
                    fs::unlink_at(cur, &name)
                        .map_err(|e| os_err("remove a non-directory in the way", e))?;
                    mkdir_implied(&mut self.dirs, &mut self.created, cur, &name)?;
                }
                None => {
                    if !create {
                        return Ok(None);
                    }
                    mkdir_implied(&mut self.dirs, &mut self.created, cur, &name)?;
                }
            }
            let fd = fs::open_path_dir(cur, &name).map_err(|e| format!("open directory: {e}"))?;
            stack.push(fd);
        }
        match stack.pop() {
            Some(fd) => Ok(Some(fd)),
            None => self.open_dir(&[], create),
        }
    }

    /// `.wh..wh..opq`: hides every lower child of the directory `parents`.
    fn opaque(&mut self, parents: &[Vec<u8>]) -> EntryResult<()> {
        let Some(dir) = self.open_dir(parents, false)? else {
            return Ok(());
        };
        let created = &self.created;
        fs::clear_dir(dir.as_fd(), &mut |ino, name| {
            created.contains(&(ino, name.to_vec()))
        })?;
        Ok(())
    }

    /// `.wh.<target>`: deletes the lower `target` in the directory `parents`.
    fn delete(&mut self, parents: &[Vec<u8>], target: &[u8]) -> EntryResult<()> {
        let Some(dir) = self.open_dir(parents, false)? else {
            return Ok(());
        };
        let dfd = dir.as_fd();
        let pino = fs::fstat(dfd)?.st_ino;
        if self.created.contains(&(pino, target.to_vec())) {
            // Whiteouts hide lower layers only.
            return Ok(());
        }
        let name = cstring(target)?;
        let created = &self.created;
        fs::remove_path_keeping(dfd, &name, &mut |ino, n| {
            created.contains(&(ino, n.to_vec()))
        })?;
        Ok(())
    }

    /// Moves a spooled file (data and metadata already set) into place.
    fn regular(
        &mut self,
        spooled: Option<Spooled>,
        pfd: BorrowedFd<'_>,
        name: &CStr,
    ) -> EntryResult<()> {
        let sp = spooled.ok_or("a regular file without its data")?;
        let spool = self.shared.spool.as_fd();
        let rename = || fs::rename_noreplace(spool, &sp.name, pfd, name);
        match rename() {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                fs::remove_path(pfd, name)?;
                rename().map_err(|e| os_err("move the file into place", e))?;
            }
            Err(e) => return Err(os_err("move the file into place", e)),
        }
        if let Some(rec) = sp.record {
            self.recorded.insert((sp.dev, sp.ino), rec);
        }
        Ok(())
    }

    fn directory(&mut self, e: &Entry, pfd: BorrowedFd<'_>, name: &CStr) -> EntryResult<()> {
        match fs::stat_at(pfd, name) {
            Some(st) if fs::is_dir(&st) => {
                self.dirs.insert(st.st_ino, meta_of(e));
                return Ok(());
            }
            Some(_) => fs::remove_path(pfd, name)?,
            None => {}
        }
        fs::mkdir_at(pfd, name).map_err(|e| os_err("create directory", e))?;
        let st = fs::stat_at_or_err(pfd, name).map_err(|e| os_err("stat new directory", e))?;
        self.dirs.insert(st.st_ino, meta_of(e));
        Ok(())
    }

    fn symlink(&mut self, e: &Entry, pfd: BorrowedFd<'_>, name: &CStr) -> EntryResult<()> {
        if e.link.is_empty() {
            return Err("a symlink with an empty target".into());
        }
        let target = cstring(&e.link)?;
        fs::remove_path(pfd, name)?;
        fs::symlink_at(&target, pfd, name).map_err(|e| os_err("create symlink", e))?;
        if !e.xattrs.is_empty() {
            // A symlink cannot be opened for fsetxattr; lsetxattr through
            // /proc/self/fd/N/NAME names it from our own directory descriptor
            // without following it (only when /proc is really procfs).
            match fs::proc_fd_path(pfd, name) {
                Some(path) => {
                    let shared = self.shared;
                    shared.apply_xattrs(&e.xattrs, &|k, v| {
                        shared.set_xattr_with(k, v, &|cname, value| {
                            fs::set_xattr_link(&path, cname, value)
                        })
                    });
                }
                None => self.symlink_xattrs += 1,
            }
        }
        self.path_meta(e, pfd, name, false)
    }

    /// Owner and times by name, never following; mode too unless a symlink.
    fn path_meta(
        &mut self,
        e: &Entry,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        chmod: bool,
    ) -> EntryResult<()> {
        let owner = self.shared.owner;
        if let Some((uid, gid)) = owner.set_owner_at(pfd, name, e.uid, e.gid)? {
            if let Some(st) = fs::stat_at(pfd, name) {
                let rec = Record {
                    uid,
                    gid,
                    mode: None,
                };
                self.recorded.insert((st.st_dev, st.st_ino), rec);
            }
        }
        if chmod {
            fs::chmod_at(pfd, name, e.mode).map_err(|e| os_err("chmod", e))?;
        }
        fs::times_at(pfd, name, e.mtime, e.mtime_nsec).map_err(|e| os_err("set times", e))?;
        Ok(())
    }

    fn hardlink(&mut self, e: &Entry, pfd: BorrowedFd<'_>, name: &CStr) -> EntryResult<()> {
        let target = clean_name(&e.link).map_err(|r| format!("hardlink target: {r}"))?;
        let Some((tbase, tparents)) = target.split_last() else {
            return Err("a hardlink to the root directory".into());
        };
        let missing = || {
            format!(
                "hardlink target {:?} does not exist (links must follow their target)",
                display_bytes(&e.link)
            )
        };
        let Some(tdir) = self.open_dir(tparents, false)? else {
            return Err(missing());
        };
        let tname = cstring(tbase)?;
        let Some(tst) = fs::stat_at(tdir.as_fd(), &tname) else {
            return Err(missing());
        };
        if fs::is_dir(&tst) {
            return Err("a hardlink to a directory".into());
        }
        if let Some(st) = fs::stat_at(pfd, name) {
            if st.st_ino == tst.st_ino && st.st_dev == tst.st_dev {
                return Ok(());
            }
            fs::remove_path(pfd, name)?;
        }
        fs::link_at(tdir.as_fd(), &tname, pfd, name).map_err(|e| os_err("create hardlink", e))?;
        Ok(())
    }

    /// Devices and FIFOs; `false` when skipped.
    fn node(&mut self, e: &Entry, pfd: BorrowedFd<'_>, name: &CStr) -> EntryResult<bool> {
        let (major, minor) = (e.dev_major, e.dev_minor);
        let made = match e.kind {
            EntryKind::Char => {
                self.shared
                    .owner
                    .make_device(pfd, name, FileType::CharacterDevice, major, minor)?
            }
            EntryKind::Block => {
                self.shared
                    .owner
                    .make_device(pfd, name, FileType::BlockDevice, major, minor)?
            }
            _ => {
                fs::make_node(pfd, name, FileType::Fifo, major, minor)?;
                true
            }
        };
        if !made {
            self.devices_skipped += 1;
            return Ok(false);
        }
        self.path_meta(e, pfd, name, true)?;
        Ok(true)
    }

    /// Sets every directory's final metadata, children before parents.
    pub(super) fn finish_dirs(&mut self) -> Result<(), String> {
        struct Frame {
            fd: OwnedFd,
            ino: u64,
            subdirs: Vec<CString>,
        }
        let fd = fs::dup(self.root.as_fd())?;
        let subdirs = list_subdirs(fd.as_fd())?;
        let mut stack = vec![Frame {
            fd,
            ino: self.root_ino,
            subdirs,
        }];
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else { break };
            if let Some(name) = top.subdirs.pop() {
                if depth > MAX_DEPTH {
                    return Err("directory tree is too deep".into());
                }
                let fd = fs::open_subdir(top.fd.as_fd(), &name)
                    .map_err(|e| format!("open directory: {e}"))?;
                let st = fs::fstat(fd.as_fd())?;
                let subdirs = list_subdirs(fd.as_fd())?;
                stack.push(Frame {
                    fd,
                    ino: st.st_ino,
                    subdirs,
                });
                continue;
            }
            let Some(done) = stack.pop() else { break };
            let meta = self
                .dirs
                .get(&done.ino)
                .cloned()
                .unwrap_or_else(DirMeta::implied);
            self.apply_dir_meta(done.fd.as_fd(), &meta)?;
        }
        let _ = self.dev;
        Ok(())
    }

    fn apply_dir_meta(&mut self, fd: BorrowedFd<'_>, m: &DirMeta) -> Result<(), String> {
        let readable = self.shared.readable;
        if let Some((uid, gid)) = self.shared.owner_fd(fd, m.uid, m.gid)? {
            let st = fs::fstat(fd)?;
            let rec = Record {
                uid,
                gid,
                mode: readable.then_some(m.mode),
            };
            self.recorded.insert((st.st_dev, st.st_ino), rec);
        }
        let mode = if readable { m.mode | 0o700 } else { m.mode };
        fs::chmod_fd(fd, mode).map_err(|e| os_err("chmod directory", e))?;
        self.shared.xattrs_fd(fd, &m.xattrs, true);
        fs::times_fd(fd, m.mtime, m.nsec).map_err(|e| os_err("set directory times", e))?;
        Ok(())
    }
}

/// Creates a directory the image implies (mode and owner set at the end).
fn mkdir_implied(
    dirs: &mut HashMap<u64, DirMeta>,
    created: &mut HashSet<(u64, Vec<u8>)>,
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> EntryResult<()> {
    fs::mkdir_at(dir, name).map_err(|e| os_err("create directory", e))?;
    if let Some(st) = fs::stat_at(dir, name) {
        dirs.insert(st.st_ino, DirMeta::implied());
        let pino = fs::fstat(dir)?.st_ino;
        created.insert((pino, name.to_bytes().to_vec()));
    }
    Ok(())
}

/// The names of the directories in `dir`.
fn list_subdirs(dir: BorrowedFd<'_>) -> Result<Vec<CString>, String> {
    Ok(fs::list_dir(dir)?
        .into_iter()
        .filter(|(_, d)| *d)
        .map(|(n, _)| n)
        .collect())
}
