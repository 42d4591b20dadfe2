//! Read-only views of an image's flattened tree, without flattening it:
//! [`list`] (every path of the tree, `ocikit files`) and [`get_file`] (one
//! file's bytes, `ocikit get-file`).
//!
//! [`list`] applies the layers base first to an in-memory tree with the
//! rules flatten applies on disk (`flatten/apply.rs`): whiteouts and opaque
//! markers (classified by `whiteout::classify`) hide lower layers only,
//! parents resolve through symlinks inside the root, a non-directory in the
//! way of a parent is replaced by an implied directory (0755, root, mtime
//! 0), hardlinks take their target's record as it is at that point. Nodes
//! are compact records (no tar headers kept).
//!
//! [`get_file`] reads layers newest first and stops at the first layer that
//! decides the path (see docs/decisions.md, "get-file and files"). Every
//! layer it reads is read to its end, so its stored digest and DiffID are
//! checked; only the layers below the deciding one are never read.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;

use serde::Serialize;

use crate::cancel::Cancel;
use crate::flatten::clean_name;
use crate::image::{ImageError, Layer};
use crate::layer::{self, LayerError, Visit};
use crate::limits::{Limits, IO_BUFFER};
use crate::resolve::Image;
use crate::store::Store;
use crate::tarstream::{display_bytes, Entry, EntryKind};
use crate::whiteout::{self, Marker};

/// At most this many symlinks are followed while resolving one path (as
/// Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// Options of [`list`] and [`get_file`].
#[derive(Debug, Clone, Default)]
pub struct FilesOptions {
    /// The decompression cap.
    pub limits: Limits,
    /// Cancellation.
    pub cancel: Cancel,
}

/// Why a tree or a file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// The image's layer list is unusable.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A layer cannot be read.
    #[error("layer {} ({digest}) {source}", index + 1)]
    Layer {
        /// Position, base first, from 0.
        index: usize,
        /// The layer.
        digest: crate::digest::Digest,
        /// Why.
        source: LayerError,
    },
    /// An entry of a layer cannot be applied.
    #[error("layer {}: entry {entry:?}: {reason}", index + 1)]
    Entry {
        /// Position, base first, from 0.
        index: usize,
        /// The entry's name.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The path is not in the flattened tree.
    #[error("{path}: no such file in the image{}", why.as_deref().map(|w| format!(" ({w})")).unwrap_or_default())]
    NotFound {
        /// The path asked for.
        path: String,
        /// What hides it, when known.
        why: Option<String>,
    },
    /// The path is a directory.
    #[error("{path}: is a directory in the image")]
    IsDirectory {
        /// The path asked for.
        path: String,
    },
    /// Resolving the path followed too many symlinks.
    #[error("{path}: too many levels of symbolic links (more than {MAX_SYMLINKS}; a loop?)")]
    SymlinkLoop {
        /// The path asked for.
        path: String,
    },
    /// The path asked for is unusable.
    #[error("{path}: {reason}")]
    BadPath {
        /// The path asked for.
        path: String,
        /// Why.
        reason: String,
    },
    /// Interrupted.
    #[error("interrupted")]
    Interrupted,
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Io(#[from] io::Error),
}

/// The type of a path in the flattened tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A FIFO.
    Fifo,
}

impl FileType {
    fn of(kind: EntryKind) -> Option<FileType> {
        Some(match kind {
            EntryKind::Regular => FileType::File,
            EntryKind::Directory => FileType::Dir,
            EntryKind::Symlink => FileType::Symlink,
            EntryKind::Char => FileType::Char,
            EntryKind::Block => FileType::Block,
            EntryKind::Fifo => FileType::Fifo,
            EntryKind::Hardlink | EntryKind::Other(_) => return None,
        })
    }

    /// The `ls -l` type letter.
    pub fn letter(self) -> char {
        match self {
            FileType::File => '-',
            FileType::Dir => 'd',
            FileType::Symlink => 'l',
            FileType::Char => 'c',
            FileType::Block => 'b',
            FileType::Fifo => 'p',
        }
    }
}

/// A compact record of one path (no name; no tar header kept).
#[derive(Debug, Clone)]
struct Rec {
    kind: FileType,
    mode: u32,
    nsec: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    dev: (u32, u32),
    layer: u32,
    /// Symlink target.
    link: Option<Box<[u8]>>,
    /// For a path made by a hardlink entry: the path it links to.
    hardlink: Option<Box<[u8]>>,
}

impl Rec {
    fn of(e: &Entry, kind: FileType, layer: usize) -> Rec {
        Rec {
            kind,
            mode: e.mode & 0o7777,
            nsec: e.mtime_nsec,
            uid: e.uid,
            gid: e.gid,
            size: if kind == FileType::File { e.size } else { 0 },
            mtime: e.mtime,
            dev: match kind {
                FileType::Char | FileType::Block => (e.dev_major, e.dev_minor),
                _ => (0, 0),
            },
            layer: u32::try_from(layer).unwrap_or(u32::MAX),
            link: (kind == FileType::Symlink).then(|| e.link.clone().into_boxed_slice()),
            hardlink: None,
        }
    }

    fn implied(layer: usize) -> Rec {
        Rec {
            kind: FileType::Dir,
            mode: 0o755,
            nsec: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            dev: (0, 0),
            layer: u32::try_from(layer).unwrap_or(u32::MAX),
            link: None,
            hardlink: None,
        }
    }

    fn report(&self, path: &[u8]) -> FileEntry {
        FileEntry {
            path: display_path(path),
            kind: self.kind,
            mode: format!("{:04o}", self.mode),
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            mtime: self.mtime,
            mtime_nsec: self.nsec,
            link: self
                .link
                .as_deref()
                .map(|l| String::from_utf8_lossy(l).into_owned()),
            hardlink: self.hardlink.as_deref().map(display_path),
            device: matches!(self.kind, FileType::Char | FileType::Block)
                .then_some([self.dev.0, self.dev.1]),
            layer: self.layer as usize,
        }
    }
}

/// `/` and the path's components (lossy UTF-8).
fn display_path(p: &[u8]) -> String {
    format!(
        "/{}",
        String::from_utf8_lossy(p.strip_prefix(b"/").unwrap_or(p))
    )
}

/// One path of the flattened tree, as `files --json` and `get-file --json`
/// print it.
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// Absolute path in the image (`/` for the root; lossy UTF-8).
    pub path: String,
    /// The type (a hardlink has its target's).
    #[serde(rename = "type")]
    pub kind: FileType,
    /// Permission bits with setuid, setgid and sticky, 4 octal digits.
    pub mode: String,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Size of a regular file's content; 0 for other types.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// A symlink's target, as stored.
    pub link: Option<String>,
    /// For a path made by a hardlink entry: the path it links to.
    pub hardlink: Option<String>,
    /// (major, minor) of a device.
    pub device: Option<[u32; 2]>,
    /// The layer (base first, from 0) whose entry provided the path.
    pub layer: usize,
}

/// What [`list`] found.
#[derive(Debug, Clone, Serialize)]
pub struct FilesReport {
    /// Always [`crate::report::SCHEMA_VERSION`].
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// Layers applied.
    pub layers: usize,
    /// Every path of the tree but the root, sorted by path bytes.
    pub entries: Vec<FileEntry>,
    /// The root directory.
    pub root: FileEntry,
}

// ====================================================================== the in-memory tree

struct Node {
    rec: Rec,
    /// The layer whose entry last touched this node, plus one (0: none):
    /// "created in this layer" for the whiteout rules.
    touched: u32,
    children: Option<BTreeMap<Box<[u8]>, u32>>,
}

struct Tree {
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// The layer being applied, plus one.
    current: u32,
    layer: usize,
    duplicates: u64,
}

type R<T> = Result<T, String>;

impl Tree {
    fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                rec: Rec::implied(0),
                touched: 0,
                children: Some(BTreeMap::new()),
            }],
            free: Vec::new(),
            current: 0,
            layer: 0,
            duplicates: 0,
        }
    }

    fn alloc(&mut self, rec: Rec) -> u32 {
        let node = Node {
            children: (rec.kind == FileType::Dir).then(BTreeMap::new),
            rec,
            touched: self.current,
        };
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn child(&self, dir: u32, name: &[u8]) -> Option<u32> {
        self.nodes[dir as usize]
            .children
            .as_ref()
            .and_then(|c| c.get(name).copied())
    }

    fn is_dir(&self, n: u32) -> bool {
        self.nodes[n as usize].children.is_some()
    }

    fn touched_now(&self, n: u32) -> bool {
        self.nodes[n as usize].touched == self.current
    }

    /// Frees `n` and everything under it.
    fn free_subtree(&mut self, n: u32) {
        let mut stack = vec![n];
        while let Some(i) = stack.pop() {
            if let Some(c) = self.nodes[i as usize].children.take() {
                stack.extend(c.into_values());
            }
            self.free.push(i);
        }
    }

    /// Removes `name` from `dir` entirely.
    fn remove(&mut self, dir: u32, name: &[u8]) {
        let removed = self.nodes[dir as usize]
            .children
            .as_mut()
            .and_then(|c| c.remove(name));
        if let Some(n) = removed {
            self.free_subtree(n);
        }
    }

    /// Removes what was not touched in this layer under `dir` (directories
    /// holding something kept stay); whether anything was kept.
    fn clear_keeping(&mut self, dir: u32) -> bool {
        let names: Vec<(Box<[u8]>, u32)> = match &self.nodes[dir as usize].children {
            Some(c) => c.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            None => return false,
        };
        let mut kept = false;
        for (name, n) in names {
            let inside = self.is_dir(n) && self.clear_keeping(n);
            if inside || self.touched_now(n) {
                kept = true;
            } else {
                self.remove(dir, &name);
            }
        }
        kept
    }

    fn insert(&mut self, dir: u32, name: &[u8], rec: Rec) -> u32 {
        self.remove(dir, name);
        let n = self.alloc(rec);
        if let Some(c) = self.nodes[dir as usize].children.as_mut() {
            c.insert(name.into(), n);
        }
        n
    }

    /// The directory `comps` names, resolved in the root (symlinks
    /// followed, `..` clamped at the root); missing directories and
    /// non-directories in the way are made implied directories when
    /// `create`. `None` when absent and not creating.
    fn open_dir(&mut self, comps: &[Vec<u8>], create: bool) -> R<Option<u32>> {
        let mut stack: Vec<u32> = vec![0];
        let mut queue: std::collections::VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        let mut links = 0usize;
        let mut steps = 0usize;
        while let Some(c) = queue.pop_front() {
            steps += 1;
            if steps > 4 * 2048 {
                return Err("path resolution takes too many steps".into());
            }
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let cur = *stack.last().unwrap_or(&0);
            let next = match self.child(cur, &c) {
                Some(n) if self.is_dir(n) => n,
                Some(n) if self.nodes[n as usize].rec.kind == FileType::Symlink => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err("too many levels of symbolic links".into());
                    }
                    let target = self.nodes[n as usize].rec.link.clone().unwrap_or_default();
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        queue.push_front(t.to_vec());
                    }
                    continue;
                }
                _ if !create => return Ok(None),
                _ => {
                    let layer = self.layer;
                    self.insert(cur, &c, Rec::implied(layer))
                }
            };
            stack.push(next);
        }
        Ok(stack.last().copied())
    }

    fn apply(&mut self, e: &Entry) -> R<()> {
        let comps = clean_name(&e.path)?;
        let Some((base, parents)) = comps.split_last() else {
            if e.kind != EntryKind::Directory {
                return Err("an entry for the root directory must be a directory".into());
            }
            self.nodes[0].rec = Rec::of(e, FileType::Dir, self.layer);
            self.nodes[0].touched = self.current;
            return Ok(());
        };
        match whiteout::classify(base) {
            Marker::None => {}
            Marker::Opaque => {
                if let Some(d) = self.open_dir(parents, false)? {
                    self.clear_keeping(d);
                }
                return Ok(());
            }
            Marker::Delete(target) => {
                let Some(d) = self.open_dir(parents, false)? else {
                    return Ok(());
                };
                let Some(n) = self.child(d, target) else {
                    return Ok(());
                };
                if self.touched_now(n) {
                    return Ok(());
                }
                if !(self.is_dir(n) && self.clear_keeping(n)) {
                    self.remove(d, target);
                }
                return Ok(());
            }
            Marker::Metadata => return Ok(()),
            Marker::Invalid => return Err("invalid whiteout name".into()),
        }
        if let EntryKind::Other(_) = e.kind {
            return Ok(());
        }
        let Some(parent) = self.open_dir(parents, true)? else {
            return Err("cannot create its parent directory".into());
        };
        if let Some(n) = self.child(parent, base) {
            if self.touched_now(n) {
                self.duplicates += 1;
            }
        }
        let layer = self.layer;
        match e.kind {
            EntryKind::Directory => match self.child(parent, base) {
                Some(n) if self.is_dir(n) => {
                    self.nodes[n as usize].rec = Rec::of(e, FileType::Dir, layer);
                    self.nodes[n as usize].touched = self.current;
                }
                _ => {
                    self.insert(parent, base, Rec::of(e, FileType::Dir, layer));
                }
            },
            EntryKind::Hardlink => {
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
                let tdir = self.open_dir(tparents, false)?.ok_or_else(missing)?;
                let t = self.child(tdir, tbase).ok_or_else(missing)?;
                if self.is_dir(t) {
                    return Err("a hardlink to a directory".into());
                }
                if self.child(parent, base) == Some(t) {
                    return Ok(());
                }
                let mut rec = self.nodes[t as usize].rec.clone();
                rec.layer = u32::try_from(layer).unwrap_or(u32::MAX);
                rec.hardlink = Some(target.join(&b'/').into_boxed_slice());
                self.insert(parent, base, rec);
            }
            EntryKind::Symlink if e.link.is_empty() => {
                return Err("a symlink with an empty target".into())
            }
            kind => {
                if let Some(k) = FileType::of(kind) {
                    self.insert(parent, base, Rec::of(e, k, layer));
                }
            }
        }
        Ok(())
    }

    /// Every path but the root, sorted by path bytes.
    fn entries(&self) -> Vec<FileEntry> {
        let mut out = Vec::new();
        // Depth first, then sorted by path bytes ('-' sorts before '/').
        let mut stack: Vec<(u32, Vec<u8>)> = vec![(0, Vec::new())];
        let mut paths: Vec<(Vec<u8>, u32)> = Vec::new();
        while let Some((n, path)) = stack.pop() {
            if let Some(c) = &self.nodes[n as usize].children {
                for (name, &child) in c.iter().rev() {
                    let mut p = path.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(name);
                    stack.push((child, p));
                }
            }
            if n != 0 {
                paths.push((path, n));
            }
        }
        paths.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (p, n) in paths {
            out.push(self.nodes[n as usize].rec.report(&p));
        }
        out
    }
}

fn layer_err(l: &Layer) -> impl Fn(LayerError) -> FilesError + '_ {
    move |source| FilesError::Layer {
        index: l.index,
        digest: l.digest.clone(),
        source,
    }
}

fn not_stopped(l: &Layer, walked: Option<layer::LayerDigests>) -> Result<(), FilesError> {
    walked.map(|_| ()).ok_or_else(|| FilesError::Layer {
        index: l.index,
        digest: l.digest.clone(),
        source: LayerError::Io(io::Error::other("the walk stopped early")),
    })
}

/// The flattened tree's entries: the layers applied base first in memory.
///
/// # Errors
/// See [`FilesError`].
pub fn list(
    store: &dyn Store,
    image: &Image,
    options: &FilesOptions,
) -> Result<FilesReport, FilesError> {
    let layers = image.typed_layers(store)?;
    let mut tree = Tree::new();
    for l in &layers {
        tree.layer = l.index;
        tree.current = u32::try_from(l.index + 1).unwrap_or(u32::MAX);
        let mut failed: Option<FilesError> = None;
        let walked = l
            .walk(store, &options.limits, &(), |_, e| {
                if options.cancel.is_cancelled() {
                    failed = Some(FilesError::Interrupted);
                    return Ok(Visit::Stop);
                }
                if let Err(reason) = tree.apply(&e) {
                    failed = Some(FilesError::Entry {
                        index: l.index,
                        entry: e.display_name(),
                        reason,
                    });
                    return Ok(Visit::Stop);
                }
                Ok(Visit::Continue)
            })
            .map_err(layer_err(l))?;
        if let Some(f) = failed {
            return Err(f);
        }
        not_stopped(l, walked)?;
    }
    Ok(FilesReport {
        schema_version: crate::report::SCHEMA_VERSION,
        layers: layers.len(),
        entries: tree.entries(),
        root: tree.nodes[0].rec.report(b""),
    })
}

mod get;
pub use get::*;
