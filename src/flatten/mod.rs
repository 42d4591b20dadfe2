//! Applying an image's layers to a directory: the rootfs.
//!
//! Layers are decoded in parallel (one worker per core, taking layers in
//! order) and streamed through bounded channels to one applier, which
//! applies them in order onto a fresh directory with every OCI rule:
//! whiteouts and opaque whiteouts (same-layer paths survive), hardlinks
//! (root-relative, to this or lower layers), symlinks stored verbatim, type
//! changes by unlink-and-recreate, devices and FIFOs, modes with
//! setuid/setgid/sticky, owners, xattrs and times (directories last).
//!
//! # Security
//! Nothing is resolved by path strings. The root is held as a directory
//! file descriptor; a parent directory is opened with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, or, where that is
//! unavailable or a directory is missing, by a component-wise walk with
//! `O_NOFOLLOW` that reads symlinks itself, re-roots absolute targets, clamps
//! `..` at the root and gives up after 40 links. The final component is never
//! followed: files are created `O_CREAT|O_EXCL|O_NOFOLLOW` after removing
//! what was there, metadata is set on the new descriptor or with
//! `AT_SYMLINK_NOFOLLOW`. Names that escape lexically (`../x`) are refused;
//! a leading `/` is dropped.
//!
//! # Layout
//! - `pipeline`: which layers to apply, the parallel decoders and the
//!   spool they write regular files into, the channels to the applier;
//! - `apply`: the applier, entries onto the tree;
//! - `fs`: every file-system call, through rustix's safe wrappers;
//! - `owner`: the owner policy (root: chown and devices; rootless:
//!   owners recorded, devices skipped).

// Every system call goes through rustix's safe wrappers (in `fs`).
#![forbid(unsafe_code)]

mod apply;
mod fs;
mod owner;
mod pipeline;

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::layer::LayerError;
use crate::resolve::{Image, ResolveError};
use crate::store::Store;

/// Longest path accepted in a layer entry, in bytes.
pub(crate) const MAX_PATH: usize = 4096;
/// Longest name component.
pub(crate) const MAX_NAME: usize = 255;
/// Symlinks followed while resolving one path (as Linux's ELOOP limit).
const MAX_LINKS: usize = 40;
/// Deepest directory the walk goes into.
const MAX_DEPTH: usize = 2048;

/// Why flattening failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlattenError {
    /// The image could not be resolved or its config read.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The image has no config (squash needs one to edit).
    #[error("the image has no config")]
    NoConfig,
    /// The image's config is not a JSON object.
    #[error("the config {digest} is not JSON: {reason}")]
    BadConfig {
        /// The config.
        digest: crate::Digest,
        /// The parser's complaint.
        reason: String,
    },
    /// Rewriting the image's documents failed.
    #[error(transparent)]
    Rewrite(#[from] crate::rewrite::RewriteError),
    /// The image's layers do not agree with its config, or one is no layer.
    #[error(transparent)]
    Layers(#[from] crate::image::ImageError),
    /// A layer is unreadable, or its digest or DiffID is wrong.
    #[error("layer {index} of {count} ({digest}) {source}")]
    Layer {
        /// 1-based position.
        index: usize,
        /// Layers in the image.
        count: usize,
        /// The layer's digest.
        digest: String,
        /// What went wrong.
        source: LayerError,
    },
    /// One entry cannot be applied.
    #[error("layer {index} of {count} ({digest}): entry {entry:?}: {reason}")]
    Entry {
        /// 1-based position.
        index: usize,
        /// Layers in the image.
        count: usize,
        /// The layer's digest.
        digest: String,
        /// The entry's name as stored.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// The output cannot be used or written.
    #[error("{}: {reason}", path.display())]
    Output {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// How to flatten.
#[derive(Clone, Default)]
pub struct FlattenOptions {
    /// Behave as an unprivileged user even as root: owners are recorded in
    /// the `user.rootlesscontainers` xattr (as umoci does) instead of set,
    /// device nodes are skipped. Implied when not running as root.
    pub rootless: bool,
    /// Build a tree the calling user can read back whole (for `--tar` and
    /// squash as non-root): files get at least `u+rw`, directories `u+rwx`,
    /// and the image's modes are recorded instead.
    pub keep_readable: bool,
    /// Told the total stored size of the layers, then each byte read.
    pub progress: Option<std::sync::Arc<dyn crate::progress::Progress + Send>>,
    /// Caps for every layer read (the decompression limit).
    pub limits: crate::limits::Limits,
    /// Stops the flatten at its next entry; it fails with "interrupted" and
    /// its staging directory is removed.
    pub cancel: crate::cancel::Cancel,
}

impl std::fmt::Debug for FlattenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlattenOptions")
            .field("rootless", &self.rootless)
            .field("keep_readable", &self.keep_readable)
            .field("progress", &self.progress.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

/// What a flatten did.
#[derive(Debug, Clone, Default)]
pub struct FlattenReport {
    /// Layers applied.
    pub layers: usize,
    /// Tar entries read.
    pub entries: u64,
    /// Decompressed bytes read.
    pub bytes: u64,
    /// Warnings (each kind once, with counts).
    pub warnings: Vec<String>,
}

/// Flattens `image` into the directory `out`, which must not exist or be
/// empty. The tree is built in a sibling temporary directory and renamed
/// into place only when every layer applied and verified.
///
/// # Errors
/// See [`FlattenError`]; on error `out` is left as it was.
pub fn flatten_to_dir(
    store: &dyn Store,
    image: &Image,
    out: &Path,
    options: &FlattenOptions,
) -> Result<FlattenReport, FlattenError> {
    let out_err = |reason: String| FlattenError::Output {
        path: out.to_path_buf(),
        reason,
    };
    let existing_empty = match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => {
            let mut rd = std::fs::read_dir(out).map_err(|e| out_err(e.to_string()))?;
            if rd.next().is_some() {
                return Err(out_err("exists and is not empty".into()));
            }
            true
        }
        Ok(_) => return Err(out_err("exists and is not a directory".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(out_err(e.to_string())),
    };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Missing parents are created, as `mkdir -p` would.
    std::fs::create_dir_all(&parent).map_err(|e| FlattenError::Output {
        path: parent.clone(),
        reason: format!("cannot create the parent directory: {e}"),
    })?;
    let staging = Staging::new(&parent)?;
    let report = flatten_into(store, image, &staging.root, &staging.spool, options, None)?;
    let renamed = std::fs::rename(&staging.root, out);
    drop(staging);
    if let Err(e) = renamed {
        return Err(out_err(if existing_empty {
            format!("cannot replace the empty directory: {e}")
        } else {
            format!("cannot rename the finished tree into place: {e}")
        }));
    }
    Ok(report)
}

/// A private temporary directory holding the tree being built (`rootfs`)
/// and the spool its files are written into first (`spool`), on one file
/// system so that files move into place by rename. Removed when dropped.
pub(crate) struct Staging {
    /// The temporary directory (mode 0700), held for its `Drop` (which
    /// removes it).
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
    /// The tree.
    pub root: PathBuf,
    /// The spool.
    pub spool: PathBuf,
}

impl Staging {
    /// Creates one in `parent` (prefix `.ocikit-flatten-`).
    ///
    /// # Errors
    /// [`FlattenError::Output`] when it cannot be created.
    pub(crate) fn new(parent: &Path) -> Result<Staging, FlattenError> {
        let err = |e: io::Error| FlattenError::Output {
            path: parent.to_path_buf(),
            reason: format!("cannot create a temporary directory: {e}"),
        };
        let dir = tempfile::Builder::new()
            .prefix(".ocikit-flatten-")
            .tempdir_in(parent)
            .map_err(err)?;
        let root = dir.path().join("rootfs");
        let spool = dir.path().join("spool");
        for d in [&root, &spool] {
            std::fs::create_dir(d).map_err(err)?;
        }
        Ok(Staging { dir, root, spool })
    }
}

/// Records kept for entries whose metadata could not be set on disk
/// (rootless owners, skipped devices): used when the tree is written as tar.
pub(crate) type Recorded = HashMap<(u64, u64), Record>;

/// What the image says about one inode where the disk says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// Owner (recorded when rootless).
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Permission bits, when a more permissive mode was set on disk so that
    /// the tree can be read back ([`FlattenOptions::keep_readable`]).
    pub mode: Option<u32>,
}

/// Applies `image`'s layers onto the existing empty directory `dir`.
/// `recorded` collects (dev, ino) → (uid, gid) for owners not set on disk.
///
/// # Errors
/// See [`FlattenError`]; `dir` is left partially filled on error.
pub(crate) fn flatten_into(
    store: &dyn Store,
    image: &Image,
    dir: &Path,
    spool: &Path,
    options: &FlattenOptions,
    recorded: Option<&mut Recorded>,
) -> Result<FlattenReport, FlattenError> {
    let inputs = pipeline::layer_inputs(store, image)?;
    let root = open_root(dir)?;
    let rootless = options.rootless || !fs::euid_is_root();
    let shared = pipeline::Shared {
        owner: owner::policy(rootless),
        limits: options.limits,
        cancel: options.cancel.clone(),
        readable: options.keep_readable && rootless,
        spool: open_root(spool)?,
        xattr_skipped: Mutex::new(HashMap::new()),
    };
    let mut applier = apply::Applier::new(root, &shared);
    let progress: &dyn crate::progress::Progress = match &options.progress {
        Some(p) => p.as_ref(),
        None => &(),
    };
    let mut report = FlattenReport {
        layers: inputs.len(),
        ..FlattenReport::default()
    };
    pipeline::run(
        store,
        &inputs,
        &shared,
        &mut applier,
        dir,
        progress,
        &mut report,
    )?;
    report.warnings = applier.warnings();
    if let Some(r) = recorded {
        r.extend(applier.recorded.drain());
    }
    Ok(report)
}

fn open_root(dir: &Path) -> Result<std::os::fd::OwnedFd, FlattenError> {
    let err = |reason: String| FlattenError::Output {
        path: dir.to_path_buf(),
        reason,
    };
    if dir.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(err("path holds a NUL byte".into()));
    }
    fs::open_root(dir).map_err(|e| err(e.to_string()))
}

/// Cleans an entry name into components: a leading `/` and `.` components
/// are dropped, `..` pops; a name that climbs above the root is refused.
pub fn clean_name(name: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if name.len() > MAX_PATH {
        return Err(format!(
            "the name is {} bytes long, over the {MAX_PATH}-byte limit",
            name.len()
        ));
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("the name leads outside the root (\"..\")".into());
                }
            }
            c => {
                if c.len() > MAX_NAME {
                    return Err(format!(
                        "a name component is {} bytes long, over the {MAX_NAME}-byte limit",
                        c.len()
                    ));
                }
                out.push(c.to_vec());
            }
        }
    }
    Ok(out)
}

fn cstring(b: &[u8]) -> Result<CString, String> {
    CString::new(b).map_err(|_| "the name holds a NUL byte".to_string())
}

type EntryResult<T> = Result<T, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_escapes_refused() {
        let c = |s: &str| clean_name(s.as_bytes());
        assert_eq!(
            c("/a/./b//c/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(c("a/../b").unwrap(), vec![b"b".to_vec()]);
        assert!(c("./").unwrap().is_empty());
        assert!(c("../x").is_err());
        assert!(c("a/../../x").is_err());
        assert!(c(&"x".repeat(256)).is_err());
        assert!(c(&"a/".repeat(3000)).is_err());
    }
}
