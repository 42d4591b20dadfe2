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

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use crate::digest::Digest;
use crate::layer::{self, LayerDigests, LayerError};
use crate::resolve::{self, Image, ResolveError};
use crate::spec::{Compression, Descriptor, Kind};
use crate::store::Store;
use crate::tarstream::{display_bytes, Entry, EntryKind, TarReader};

/// Longest path accepted in a layer entry, in bytes.
pub const MAX_PATH: usize = 4096;
/// Longest name component.
pub const MAX_NAME: usize = 255;
/// Symlinks followed while resolving one path (as Linux's ELOOP limit).
const MAX_LINKS: usize = 40;
/// Deepest directory the walk goes into.
const MAX_DEPTH: usize = 2048;
const CHUNK: usize = 256 << 10;
/// Entry headers queued per layer ahead of the applier (about 300 bytes
/// each): enough that a decoder working ahead rarely waits.
const CHANNEL: usize = 32768;

static CANCEL: AtomicBool = AtomicBool::new(false);

/// Asks running flattens, squashes and copies to stop (async-signal-safe: a
/// signal handler may call it). A flatten stops at the next entry, a copy at
/// its next write; they fail with "interrupted", and their staging
/// directories and temporary files are removed as on any other error.
pub fn cancel() {
    CANCEL.store(true, Ordering::SeqCst);
}

pub(crate) fn cancelled() -> bool {
    CANCEL.load(Ordering::Relaxed)
}

/// Why flattening failed.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// The image could not be resolved or its config read.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The image cannot be flattened as it is (not a layer image).
    #[error("{0}")]
    Image(String),
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
    pub progress: Option<std::sync::Arc<dyn crate::verify::Progress + Send>>,
}

impl std::fmt::Debug for FlattenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlattenOptions")
            .field("rootless", &self.rootless)
            .field("keep_readable", &self.keep_readable)
            .field("progress", &self.progress.is_some())
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

/// One layer to apply.
#[derive(Debug, Clone)]
struct LayerInput {
    descriptor: Descriptor,
    digest: Digest,
    diff_id: Option<Digest>,
    compression: Compression,
}

fn layer_inputs(store: &dyn Store, image: &Image) -> Result<Vec<LayerInput>, FlattenError> {
    let config = image.image_config(store)?;
    let diff_ids: Option<Vec<String>> = config.as_ref().map(|c| {
        c.rootfs
            .as_ref()
            .and_then(|r| r.diff_ids.clone())
            .unwrap_or_default()
    });
    let layers = image.layers();
    if let Some(ids) = &diff_ids {
        if ids.len() != layers.len() {
            return Err(FlattenError::Image(format!(
                "the config lists {} diff_ids for {} layers",
                ids.len(),
                layers.len()
            )));
        }
    }
    let mut out = Vec::with_capacity(layers.len());
    for (i, d) in layers.iter().enumerate() {
        let digest = resolve::descriptor_digest(d, &format!("layer {}", i + 1))?;
        let compression = match d.kind() {
            Kind::Layer { compression, .. } => compression,
            _ => {
                return Err(FlattenError::Image(format!(
                    "layer {} of {} ({digest}) has media type {:?}, which is not a layer type",
                    i + 1,
                    layers.len(),
                    d.media_type
                )))
            }
        };
        let diff_id = match &diff_ids {
            Some(ids) => Some(ids[i].parse::<Digest>().map_err(|e| {
                FlattenError::Image(format!("the config's diff_ids[{i}] {:?}: {e}", ids[i]))
            })?),
            None => None,
        };
        out.push(LayerInput {
            descriptor: d.clone(),
            digest,
            diff_id,
            compression,
        });
    }
    Ok(out)
}

/// A regular file's data, already written (with its metadata) into the
/// spool directory by a decoder; the applier renames it into place.
struct Spooled {
    name: CString,
    dev: u64,
    ino: u64,
    /// Owner (and mode) recorded instead of set.
    record: Option<Record>,
}

enum Msg {
    Entry(Box<Entry>, Option<Spooled>),
    End(Box<Result<LayerDigests, LayerError>>),
}

/// State the decoders and the applier share.
struct Shared {
    rootless: bool,
    readable: bool,
    spool: OwnedFd,
    xattr_skipped: Mutex<HashMap<String, u64>>,
}

impl Shared {
    fn skip(&self, why: String) {
        if let Ok(mut m) = self.xattr_skipped.lock() {
            *m.entry(why).or_default() += 1;
        }
    }

    /// Sets the owner on an open file (or records it when rootless, in the
    /// `user.rootlesscontainers` xattr and in the returned record).
    fn owner_fd(&self, fd: RawFd, uid: u64, gid: u64) -> EntryResult<Option<(u64, u64)>> {
        let (u, g) = ids(uid, gid)?;
        if self.rootless {
            if let Some(p) = rootless_payload(uid, gid) {
                self.set_xattr(fd, ROOTLESS_XATTR, &p);
            }
            // Recorded even for 0:0, so that a reused inode never keeps a
            // deleted file's owner.
            return Ok(Some((uid, gid)));
        }
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::fchown(fd, u, g) } != 0 {
            return Err(os_err("chown"));
        }
        Ok(None)
    }

    fn set_xattr(&self, fd: RawFd, name: &[u8], value: &[u8]) {
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        self.set_xattr_with(name, value, &|cname, value| unsafe {
            libc::fsetxattr(fd, cname.as_ptr(), value.as_ptr().cast(), value.len(), 0)
        })
    }

    fn set_xattr_with(&self, name: &[u8], value: &[u8], set: &dyn Fn(&CStr, &[u8]) -> i32) {
        let Ok(cname) = CString::new(name) else {
            self.skip("name holds a NUL byte".into());
            return;
        };
        let r = set(&cname, value);
        if r != 0 {
            let err = io::Error::last_os_error();
            let why = match err.raw_os_error() {
                Some(libc::ENOTSUP) => "the output file system does not support them".to_string(),
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    "not permitted (rootless or unprivileged)".to_string()
                }
                _ => format!("{err}"),
            };
            self.skip(why);
        }
    }

    /// Applies an entry's xattrs to an open file; `clear` first removes
    /// those already there (directories merged over lower ones).
    fn xattrs_fd(&self, fd: RawFd, xattrs: &[(Vec<u8>, Vec<u8>)], clear: bool) {
        if clear {
            let mut buf = vec![0u8; 64 << 10];
            // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
            let n = unsafe { libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                buf.truncate(n as usize);
                for name in buf.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    if self.rootless && name == ROOTLESS_XATTR {
                        continue;
                    }
                    if let Ok(c) = CString::new(name) {
                        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
                        unsafe { libc::fremovexattr(fd, c.as_ptr()) };
                    }
                }
            }
        }
        self.apply_xattrs(xattrs, &|name, value| self.set_xattr(fd, name, value));
    }

    /// The xattr policy: which of an entry's xattrs are applied (by `set`).
    fn apply_xattrs(&self, xattrs: &[(Vec<u8>, Vec<u8>)], set: &dyn Fn(&[u8], &[u8])) {
        for (k, v) in xattrs {
            match k.as_slice() {
                b"security.selinux" | b"system.nfs4_acl" => {
                    self.skip(format!("{} is host-specific", String::from_utf8_lossy(k)));
                }
                k if k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay.") => {
                    self.skip("overlayfs xattrs are not applied to a plain directory".into());
                }
                k if k == ROOTLESS_XATTR && self.rootless => {
                    self.skip(
                        "user.rootlesscontainers stored in a layer is ignored in rootless mode"
                            .into(),
                    );
                }
                k => set(k, v),
            }
        }
    }

    /// Writes a regular file's data into the spool and applies its metadata.
    fn spool<R: io::Read>(
        &self,
        tar: &mut TarReader<R>,
        e: &Entry,
        name: &str,
        buf: &mut [u8],
    ) -> Result<Spooled, String> {
        use std::os::unix::fs::FileExt;
        let cname = cstring(name.as_bytes())?;
        let fd = openat(
            self.spool.as_raw_fd(),
            &cname,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )
        .map_err(|e| format!("create spool file: {e}"))?;
        let mut file = File::from(fd);
        let map = e.sparse.clone().unwrap_or_default();
        let (mut frag, mut in_frag) = (0usize, 0u64);
        loop {
            let n = tar.read_data(buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            if e.sparse.is_none() {
                file.write_all(&buf[..n])
                    .map_err(|e| format!("write: {e}"))?;
                continue;
            }
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let Some(&(off, len)) = map.get(frag) else {
                    return Err("sparse data beyond its map".into());
                };
                let take = usize::try_from(len - in_frag)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                file.write_all_at(&rest[..take], off + in_frag)
                    .map_err(|e| format!("write: {e}"))?;
                in_frag += take as u64;
                rest = &rest[take..];
                if in_frag == len {
                    frag += 1;
                    in_frag = 0;
                }
            }
        }
        if e.sparse.is_some() {
            file.set_len(e.size).map_err(|e| format!("set size: {e}"))?;
        }
        let fd = file.as_raw_fd();
        let record = self.owner_fd(fd, e.uid, e.gid)?.map(|(uid, gid)| Record {
            uid,
            gid,
            mode: self.readable.then_some(e.mode),
        });
        let mode = if self.readable {
            e.mode | 0o600
        } else {
            e.mode
        };
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::fchmod(fd, mode as libc::mode_t) } != 0 {
            return Err(os_err("chmod"));
        }
        self.xattrs_fd(fd, &e.xattrs, false);
        let ts = timespec(e.mtime, e.mtime_nsec);
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::futimens(fd, ts.as_ptr()) } != 0 {
            return Err(os_err("set times"));
        }
        let st = fstat(fd)?;
        Ok(Spooled {
            name: cname,
            dev: st.st_dev,
            ino: st.st_ino,
            record,
        })
    }
}

/// Decodes layer `index` into `tx`, writing regular files' data into the
/// spool; stops early if the receiver is gone.
fn decode_layer(
    store: &dyn Store,
    input: &LayerInput,
    index: usize,
    shared: &Shared,
    progress: &dyn crate::verify::Progress,
    tx: &SyncSender<Msg>,
) {
    let result = (|| -> Result<Option<LayerDigests>, LayerError> {
        let limit = crate::archive::decompression_limit(input.descriptor.size.max(0) as u64);
        let mut buf = vec![0u8; CHUNK];
        // Holes of sparse files count towards the limit: a tiny sparse member
        // can claim terabytes, and `--tar` writes them out in full.
        let mut holes = 0u64;
        let walked = layer::walk_stored_layer(
            store,
            &input.digest,
            input.descriptor.size,
            input.compression,
            input.diff_id.as_ref(),
            progress,
            |tar, e| {
                if let Some(map) = &e.sparse {
                    let data: u64 = map.iter().map(|&(_, n)| n).sum();
                    holes = holes.saturating_add(e.size.saturating_sub(data));
                    if holes > limit {
                        return Err(LayerError::TooLarge { limit });
                    }
                }
                let whiteout = e
                    .path
                    .rsplit(|&c| c == b'/')
                    .find(|c| !c.is_empty())
                    .is_some_and(|b| b.starts_with(b".wh."));
                let spooled = if e.kind == EntryKind::Regular && !whiteout {
                    let name = format!("{index}-{}", tar.entries());
                    let s = shared.spool(tar, &e, &name, &mut buf).map_err(|reason| {
                        LayerError::Io(io::Error::other(format!(
                            "entry {:?}: {reason}",
                            e.display_name()
                        )))
                    })?;
                    Some(s)
                } else {
                    None
                };
                if cancelled() || tx.send(Msg::Entry(Box::new(e), spooled)).is_err() {
                    return Ok(layer::Visit::Stop);
                }
                Ok(layer::Visit::Continue)
            },
        )?;
        Ok(walked)
    })();
    match result {
        Ok(None) => {}
        Ok(Some(d)) => {
            let _ = tx.send(Msg::End(Box::new(Ok(d))));
        }
        Err(e) => {
            let _ = tx.send(Msg::End(Box::new(Err(e))));
        }
    }
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
pub struct Staging {
    /// The temporary directory (mode 0700).
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
    pub fn new(parent: &Path) -> Result<Staging, FlattenError> {
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
pub type Recorded = HashMap<(u64, u64), Record>;

/// What the image says about one inode where the disk says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
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
pub fn flatten_into(
    store: &dyn Store,
    image: &Image,
    dir: &Path,
    spool: &Path,
    options: &FlattenOptions,
    recorded: Option<&mut Recorded>,
) -> Result<FlattenReport, FlattenError> {
    let inputs = layer_inputs(store, image)?;
    let root = open_root(dir)?;
    // SAFETY: geteuid takes no arguments and cannot fail.
    let rootless = options.rootless || unsafe { libc::geteuid() } != 0;
    let shared = Shared {
        rootless,
        readable: options.keep_readable && rootless,
        spool: open_root(spool)?,
        xattr_skipped: Mutex::new(HashMap::new()),
    };
    let mut applier = Applier::new(root, &shared);
    let count = inputs.len();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
        .min(count.max(1));
    // Layers in flight: a decoder takes a layer only once the applier has
    // handed it out, and the applier hands out layer i + WINDOW only after
    // applying layer i. Each layer's channel is created then and dropped
    // once applied, so memory does not grow with the layer count.
    let window = workers * 2;
    let (job_tx, job_rx) = sync_channel::<(usize, SyncSender<Msg>)>(window + 1);
    let job_rx = Mutex::new(job_rx);
    let progress: &dyn crate::verify::Progress = match &options.progress {
        Some(p) => p.as_ref(),
        None => &(),
    };
    progress.begin(
        inputs
            .iter()
            .map(|i| u64::try_from(i.descriptor.size).unwrap_or(0))
            .sum(),
    );
    let mut report = FlattenReport {
        layers: count,
        ..FlattenReport::default()
    };
    let result = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let job = match job_rx.lock() {
                    Ok(g) => g.recv(),
                    Err(_) => break,
                };
                let Ok((i, tx)) = job else { break };
                decode_layer(store, &inputs[i], i, &shared, progress, &tx);
            });
        }
        // Hands layer `i` to the decoders; returns its receiving end.
        let hand_out = |i: usize| -> Option<Receiver<Msg>> {
            let (tx, rx) = sync_channel::<Msg>(CHANNEL);
            job_tx.send((i, tx)).ok().map(|()| rx)
        };
        let mut receivers = std::collections::VecDeque::with_capacity(window + 1);
        for i in 0..window.min(count) {
            receivers.extend(hand_out(i));
        }
        let result = (|| {
            for (i, input) in inputs.iter().enumerate() {
                if i + window < count {
                    receivers.extend(hand_out(i + window));
                }
                let Some(rx) = receivers.pop_front() else {
                    return Err(FlattenError::Output {
                        path: dir.to_path_buf(),
                        reason: format!("layer {} was never decoded", i + 1),
                    });
                };
                let digest = input.digest.to_string();
                let d =
                    applier
                        .apply_layer(&rx)
                        .map_err(|(entry, reason)| FlattenError::Entry {
                            index: i + 1,
                            count,
                            digest: digest.clone(),
                            entry,
                            reason,
                        })?;
                match d {
                    Ok(d) => {
                        report.entries += d.entries;
                        report.bytes += d.uncompressed_size;
                    }
                    Err(source) => {
                        return Err(FlattenError::Layer {
                            index: i + 1,
                            count,
                            digest,
                            source,
                        })
                    }
                }
            }
            applier
                .finish_dirs()
                .map_err(|reason| FlattenError::Output {
                    path: dir.to_path_buf(),
                    reason,
                })
        })();
        // Stop the workers: no more layers, and if the applier stopped
        // early, their sends fail.
        drop(job_tx);
        drop(receivers);
        result
    });
    result?;
    report.warnings = applier.warnings();
    if let Some(r) = recorded {
        r.extend(applier.recorded.drain());
    }
    Ok(report)
}

fn open_root(dir: &Path) -> Result<OwnedFd, FlattenError> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| FlattenError::Output {
        path: dir.to_path_buf(),
        reason: "path holds a NUL byte".into(),
    })?;
    // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(FlattenError::Output {
            path: dir.to_path_buf(),
            reason: io::Error::last_os_error().to_string(),
        });
    }
    // SAFETY: the descriptor was just returned by a successful syscall and nothing else owns it, so the OwnedFd is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ------------------------------------------------------------------ names

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

fn os_err(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

// ------------------------------------------------------------------ syscalls

fn fstatat(dir: RawFd, name: &CStr) -> Option<libc::stat> {
    // SAFETY: libc::stat is plain old data, for which all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is NUL-terminated, dir an open descriptor, and st is writable.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    (r == 0).then_some(st)
}

fn fstat(fd: RawFd) -> Result<libc::stat, String> {
    // SAFETY: libc::stat is plain old data, for which all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a descriptor the caller keeps open for this call, and st is writable.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(os_err("fstat"));
    }
    Ok(st)
}

fn is_type(st: &libc::stat, t: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == t
}

fn openat(dir: RawFd, name: &CStr, flags: i32, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned by a successful syscall and nothing else owns it, so the OwnedFd is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn readlinkat(dir: RawFd, name: &CStr) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 4097];
    // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(os_err("readlink"));
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn timespec(sec: i64, nsec: u32) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: i64::from(nsec) as _,
    };
    [t, t]
}

/// openat2 with RESOLVE_IN_ROOT; `None` when unavailable or failing (the
/// caller then walks by hand, which is authoritative).
fn openat2_in_root(root: RawFd, path: &CStr) -> Option<OwnedFd> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor was just returned by a successful syscall and nothing else owns it, so the OwnedFd is its only owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Names in a directory (not `.`/`..`), with whether each is a directory.
fn list_dir(dir: RawFd) -> Result<Vec<(CString, bool)>, String> {
    // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
    let fd = unsafe {
        libc::openat(
            dir,
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os_err("open directory"));
    }
    // SAFETY: fd is an open directory descriptor we own; on success the DIR* takes it over (closed by closedir), on failure we close it.
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        // SAFETY: fd is open and still ours, since fdopendir failed.
        unsafe { libc::close(fd) };
        return Err(os_err("fdopendir"));
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: d is a live DIR* from fdopendir, not yet closed; readdir64 returns null or a pointer valid until the next call on d.
        let ent = unsafe { libc::readdir64(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: ent is non-null and was returned by readdir64 on a live DIR*; its d_name is NUL-terminated, and it is read before the next readdir64 call.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        // SAFETY: ent is non-null and was returned by readdir64 on a live DIR*; its d_name is NUL-terminated, and it is read before the next readdir64 call.
        let dtype = unsafe { (*ent).d_type };
        let is_dir = match dtype {
            libc::DT_DIR => true,
            libc::DT_UNKNOWN => fstatat(dir, name).is_some_and(|st| is_type(&st, libc::S_IFDIR)),
            _ => false,
        };
        out.push((name.to_owned(), is_dir));
    }
    // SAFETY: d came from fdopendir, is closed exactly once here, and is not used afterwards.
    unsafe { libc::closedir(d) };
    Ok(out)
}

/// Removes `name` in `dir` (recursively for directories), never following
/// symlinks. Missing is fine.
fn remove_path(dir: RawFd, name: &CStr) -> Result<(), String> {
    remove_path_keeping(dir, name, &mut |_, _| false)
}

/// Removes `name` in `dir` like [`remove_path`], sparing what `keep(parent
/// ino, name)` names inside a directory (which then stays, holding them).
fn remove_path_keeping(
    dir: RawFd,
    name: &CStr,
    keep: &mut dyn FnMut(u64, &[u8]) -> bool,
) -> Result<(), String> {
    let Some(st) = fstatat(dir, name) else {
        return Ok(());
    };
    if is_type(&st, libc::S_IFDIR) {
        let fd = openat(
            dir,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| format!("open directory to remove: {e}"))?;
        let kept = clear_dir(fd.as_raw_fd(), keep)?;
        if !kept
            // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
            && unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) } != 0
            && errno() != libc::ENOENT
        {
            return Err(os_err("remove directory"));
        }
    // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
    } else if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } != 0 && errno() != libc::ENOENT {
        return Err(os_err("remove"));
    }
    Ok(())
}

/// Removes a directory's contents without recursion on the call stack;
/// `keep(parent ino, name)` spares an entry (a directory that is kept is
/// still cleared of what it does not keep). Returns whether anything was kept.
fn clear_dir(top: RawFd, keep: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<bool, String> {
    struct Frame {
        fd: OwnedFd,
        ino: u64,
        names: Vec<(CString, bool)>,
        kept: bool,
        name_in_parent: Option<(CString, bool)>,
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we hold open for the whole call; the result is checked before use.
    let dup = unsafe { libc::fcntl(top, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(os_err("dup"));
    }
    // SAFETY: the descriptor was just returned by a successful syscall and nothing else owns it, so the OwnedFd is its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(dup) };
    let ino = fstat(fd.as_raw_fd())?.st_ino;
    let names = list_dir(fd.as_raw_fd())?;
    let mut stack = vec![Frame {
        fd,
        ino,
        names,
        kept: false,
        name_in_parent: None,
    }];
    loop {
        let Some(top_frame) = stack.last_mut() else {
            return Ok(false);
        };
        if let Some((name, is_dir)) = top_frame.names.pop() {
            let keep_it = keep(top_frame.ino, name.to_bytes());
            let dfd = top_frame.fd.as_raw_fd();
            if is_dir {
                if stack.len() > MAX_DEPTH {
                    return Err("directory tree is too deep".into());
                }
                let fd = openat(
                    dfd,
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|e| format!("open directory to remove: {e}"))?;
                let ino = fstat(fd.as_raw_fd())?.st_ino;
                let names = list_dir(fd.as_raw_fd())?;
                stack.push(Frame {
                    fd,
                    ino,
                    names,
                    kept: false,
                    name_in_parent: Some((name, keep_it)),
                });
            } else if keep_it {
                top_frame.kept = true;
            // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
            } else if unsafe { libc::unlinkat(dfd, name.as_ptr(), 0) } != 0
                && errno() != libc::ENOENT
            {
                return Err(os_err("remove"));
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
            // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
            } else if unsafe {
                libc::unlinkat(parent.fd.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR)
            } != 0
                && errno() != libc::ENOENT
            {
                return Err(os_err("remove directory"));
            }
        }
    }
}

// ------------------------------------------------------------------ applier

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

const ROOTLESS_XATTR: &[u8] = b"user.rootlesscontainers";

/// The `user.rootlesscontainers` payload (protobuf `Resource{uid=1, gid=2}`,
/// 0 written as the no-op id 2^32-1), or `None` when both are 0.
pub fn rootless_payload(uid: u64, gid: u64) -> Option<Vec<u8>> {
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

/// Parses a `user.rootlesscontainers` payload back into (uid, gid).
pub fn parse_rootless_payload(b: &[u8]) -> Option<(u64, u64)> {
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

type EntryResult<T> = Result<T, String>;

struct Applier<'s> {
    shared: &'s Shared,
    root: OwnedFd,
    root_ino: u64,
    dev: u64,
    rootless: bool,
    /// Directory metadata to set at the end, by inode.
    dirs: HashMap<u64, DirMeta>,
    /// (parent inode, name) of everything created in the current layer.
    created: HashSet<(u64, Vec<u8>)>,
    openat2: bool,
    devices_skipped: u64,
    duplicates: u64,
    unknown_types: u64,
    symlink_xattrs: u64,
    recorded: Recorded,
}

impl<'s> Applier<'s> {
    fn new(root: OwnedFd, shared: &'s Shared) -> Applier<'s> {
        let rootless = shared.rootless;
        // SAFETY: libc::stat is plain old data, for which all-zero bytes are a valid value.
        let st = fstat(root.as_raw_fd()).unwrap_or_else(|_| unsafe { std::mem::zeroed() });
        let mut dirs = HashMap::new();
        dirs.insert(st.st_ino, DirMeta::implied());
        Applier {
            shared,
            root,
            root_ino: st.st_ino,
            dev: st.st_dev,
            rootless,
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

    fn warnings(&self) -> Vec<String> {
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
    fn apply_layer(
        &mut self,
        rx: &Receiver<Msg>,
    ) -> Result<Result<LayerDigests, LayerError>, (String, String)> {
        self.created.clear();
        loop {
            let msg = rx.recv().map_err(|_| {
                let why = if cancelled() {
                    "interrupted"
                } else {
                    "the layer decoder stopped"
                };
                (String::new(), why.to_string())
            })?;
            match msg {
                Msg::Entry(e, spooled) => {
                    if cancelled() {
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
        if let Some(target) = base.strip_prefix(b".wh.") {
            return self.whiteout(parents, target);
        }
        if let EntryKind::Other(_) = e.kind {
            self.unknown_types += 1;
            return Ok(());
        }
        let parent = match self.open_dir(parents, true)? {
            Some(p) => p,
            None => return Err("cannot create its parent directory".into()),
        };
        let pfd = parent.as_raw_fd();
        let pino = fstat(pfd)?.st_ino;
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
            // SAFETY: F_DUPFD_CLOEXEC on a descriptor we hold open for the whole call; the result is checked before use.
            let fd = unsafe { libc::fcntl(self.root.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
            if fd < 0 {
                return Err(os_err("dup"));
            }
            // SAFETY: the descriptor was just returned by a successful syscall and nothing else owns it, so the OwnedFd is its only owner.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        if self.openat2 {
            let joined = comps.join(&b'/');
            let c = cstring(&joined)?;
            if let Some(fd) = openat2_in_root(self.root.as_raw_fd(), &c) {
                return Ok(Some(fd));
            }
            if errno() == libc::ENOSYS || errno() == libc::EPERM {
                self.openat2 = false;
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
            let cur = stack
                .last()
                .map_or(self.root.as_raw_fd(), |f| f.as_raw_fd());
            let name = cstring(&c)?;
            let st = fstatat(cur, &name);
            match st {
                Some(st) if is_type(&st, libc::S_IFDIR) => {}
                Some(st) if is_type(&st, libc::S_IFLNK) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err("too many levels of symbolic links".into());
                    }
                    let target = readlinkat(cur, &name)?;
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
                    // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
                    if unsafe { libc::unlinkat(cur, name.as_ptr(), 0) } != 0 {
                        return Err(os_err("remove a non-directory in the way"));
                    }
                    self.mkdir_implied(cur, &name)?;
                }
                None => {
                    if !create {
                        return Ok(None);
                    }
                    self.mkdir_implied(cur, &name)?;
                }
            }
            let fd = openat(
                cur,
                &name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(|e| format!("open directory: {e}"))?;
            stack.push(fd);
        }
        match stack.pop() {
            Some(fd) => Ok(Some(fd)),
            None => self.open_dir(&[], create),
        }
    }

    fn mkdir_implied(&mut self, dir: RawFd, name: &CStr) -> EntryResult<()> {
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::mkdirat(dir, name.as_ptr(), 0o700) } != 0 {
            return Err(os_err("create directory"));
        }
        if let Some(st) = fstatat(dir, name) {
            self.dirs.insert(st.st_ino, DirMeta::implied());
            let pino = fstat(dir)?.st_ino;
            self.created.insert((pino, name.to_bytes().to_vec()));
        }
        Ok(())
    }

    fn whiteout(&mut self, parents: &[Vec<u8>], target: &[u8]) -> EntryResult<()> {
        if target == b".wh..opq" {
            let Some(dir) = self.open_dir(parents, false)? else {
                return Ok(());
            };
            let created = &self.created;
            clear_dir(dir.as_raw_fd(), &mut |ino, name| {
                created.contains(&(ino, name.to_vec()))
            })?;
            return Ok(());
        }
        if target.starts_with(b".wh.") {
            // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): never part of the tree.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err("invalid whiteout name".into());
        }
        let Some(dir) = self.open_dir(parents, false)? else {
            return Ok(());
        };
        let dfd = dir.as_raw_fd();
        let pino = fstat(dfd)?.st_ino;
        if self.created.contains(&(pino, target.to_vec())) {
            // Whiteouts hide lower layers only.
            return Ok(());
        }
        let name = cstring(target)?;
        let created = &self.created;
        remove_path_keeping(dfd, &name, &mut |ino, n| {
            created.contains(&(ino, n.to_vec()))
        })?;
        Ok(())
    }

    /// Moves a spooled file (data and metadata already set) into place.
    fn regular(&mut self, spooled: Option<Spooled>, pfd: RawFd, name: &CStr) -> EntryResult<()> {
        let sp = spooled.ok_or("a regular file without its data")?;
        let spool = self.shared.spool.as_raw_fd();
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        let rename = || unsafe {
            libc::renameat2(
                spool,
                sp.name.as_ptr(),
                pfd,
                name.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rename() != 0 {
            if errno() != libc::EEXIST {
                return Err(os_err("move the file into place"));
            }
            remove_path(pfd, name)?;
            if rename() != 0 {
                return Err(os_err("move the file into place"));
            }
        }
        if let Some(rec) = sp.record {
            self.recorded.insert((sp.dev, sp.ino), rec);
        }
        Ok(())
    }

    fn directory(&mut self, e: &Entry, pfd: RawFd, name: &CStr) -> EntryResult<()> {
        match fstatat(pfd, name) {
            Some(st) if is_type(&st, libc::S_IFDIR) => {
                self.dirs.insert(st.st_ino, meta_of(e));
                return Ok(());
            }
            Some(_) => remove_path(pfd, name)?,
            None => {}
        }
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o700) } != 0 {
            return Err(os_err("create directory"));
        }
        let st = fstatat(pfd, name).ok_or_else(|| os_err("stat new directory"))?;
        self.dirs.insert(st.st_ino, meta_of(e));
        Ok(())
    }

    fn symlink(&mut self, e: &Entry, pfd: RawFd, name: &CStr) -> EntryResult<()> {
        if e.link.is_empty() {
            return Err("a symlink with an empty target".into());
        }
        let target = cstring(&e.link)?;
        remove_path(pfd, name)?;
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::symlinkat(target.as_ptr(), pfd, name.as_ptr()) } != 0 {
            return Err(os_err("create symlink"));
        }
        if !e.xattrs.is_empty() {
            // A symlink cannot be opened for fsetxattr; lsetxattr through
            // /proc/self/fd/N/NAME names it from our own directory descriptor
            // without following it (only when /proc is really procfs).
            match proc_fd_path(pfd, name) {
                Some(path) => {
                    let shared = self.shared;
                    shared.apply_xattrs(&e.xattrs, &|k, v| {
                        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
                        shared.set_xattr_with(k, v, &|cname, value| unsafe {
                            libc::lsetxattr(
                                path.as_ptr(),
                                cname.as_ptr(),
                                value.as_ptr().cast(),
                                value.len(),
                                0,
                            )
                        })
                    });
                }
                None => self.symlink_xattrs += 1,
            }
        }
        self.path_meta(e, pfd, name, false)
    }

    /// Owner and times by name, never following; mode too unless a symlink.
    fn path_meta(&mut self, e: &Entry, pfd: RawFd, name: &CStr, chmod: bool) -> EntryResult<()> {
        let (uid, gid) = ids(e.uid, e.gid)?;
        if self.rootless {
            if let Some(st) = fstatat(pfd, name) {
                let rec = Record {
                    uid: e.uid,
                    gid: e.gid,
                    mode: None,
                };
                self.recorded.insert((st.st_dev, st.st_ino), rec);
            }
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        } else if unsafe { libc::fchownat(pfd, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) }
            != 0
        {
            return Err(os_err("chown"));
        }
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if chmod && unsafe { libc::fchmodat(pfd, name.as_ptr(), e.mode as libc::mode_t, 0) } != 0 {
            return Err(os_err("chmod"));
        }
        let ts = timespec(e.mtime, e.mtime_nsec);
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::utimensat(pfd, name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }
            != 0
        {
            return Err(os_err("set times"));
        }
        Ok(())
    }

    fn hardlink(&mut self, e: &Entry, pfd: RawFd, name: &CStr) -> EntryResult<()> {
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
        let Some(tst) = fstatat(tdir.as_raw_fd(), &tname) else {
            return Err(missing());
        };
        if is_type(&tst, libc::S_IFDIR) {
            return Err("a hardlink to a directory".into());
        }
        if let Some(st) = fstatat(pfd, name) {
            if st.st_ino == tst.st_ino && st.st_dev == tst.st_dev {
                return Ok(());
            }
            remove_path(pfd, name)?;
        }
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::linkat(tdir.as_raw_fd(), tname.as_ptr(), pfd, name.as_ptr(), 0) } != 0 {
            return Err(os_err("create hardlink"));
        }
        Ok(())
    }

    /// Devices and FIFOs; `false` when skipped.
    fn node(&mut self, e: &Entry, pfd: RawFd, name: &CStr) -> EntryResult<bool> {
        let kind = match e.kind {
            EntryKind::Char => libc::S_IFCHR,
            EntryKind::Block => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        if kind != libc::S_IFIFO && self.rootless {
            self.devices_skipped += 1;
            return Ok(false);
        }
        remove_path(pfd, name)?;
        let dev = libc::makedev(e.dev_major, e.dev_minor);
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::mknodat(pfd, name.as_ptr(), kind | 0o600, dev) } != 0 {
            return Err(os_err("create node"));
        }
        self.path_meta(e, pfd, name, true)?;
        Ok(true)
    }

    /// Sets every directory's final metadata, children before parents.
    fn finish_dirs(&mut self) -> Result<(), String> {
        struct Frame {
            fd: OwnedFd,
            ino: u64,
            subdirs: Vec<CString>,
        }
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we hold open for the whole call; the result is checked before use.
        let dup = unsafe { libc::fcntl(self.root.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(os_err("dup"));
        }
        // SAFETY: the descriptor was just returned by a successful syscall and nothing else owns it, so the OwnedFd is its only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        let subdirs = list_dir(fd.as_raw_fd())?
            .into_iter()
            .filter(|(_, d)| *d)
            .map(|(n, _)| n)
            .collect();
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
                let fd = openat(
                    top.fd.as_raw_fd(),
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|e| format!("open directory: {e}"))?;
                let st = fstat(fd.as_raw_fd())?;
                let subdirs = list_dir(fd.as_raw_fd())?
                    .into_iter()
                    .filter(|(_, d)| *d)
                    .map(|(n, _)| n)
                    .collect();
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
            self.apply_dir_meta(done.fd.as_raw_fd(), &meta)?;
        }
        let _ = self.dev;
        Ok(())
    }

    fn apply_dir_meta(&mut self, fd: RawFd, m: &DirMeta) -> Result<(), String> {
        let fake = Entry {
            path: Vec::new(),
            link: Vec::new(),
            kind: EntryKind::Directory,
            typeflag: b'5',
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime,
            mtime_nsec: m.nsec,
            size: 0,
            stored: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            sparse: None,
            offset: 0,
        };
        let readable = self.shared.readable;
        if let Some((uid, gid)) = self.shared.owner_fd(fd, fake.uid, fake.gid)? {
            let st = fstat(fd)?;
            let rec = Record {
                uid,
                gid,
                mode: readable.then_some(m.mode),
            };
            self.recorded.insert((st.st_dev, st.st_ino), rec);
        }
        let mode = if readable { m.mode | 0o700 } else { m.mode };
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::fchmod(fd, mode as libc::mode_t) } != 0 {
            return Err(os_err("chmod directory"));
        }
        self.shared.xattrs_fd(fd, &m.xattrs, true);
        let ts = timespec(m.mtime, m.nsec);
        // SAFETY: FFI call on descriptors that stay open for the whole call and on pointers into live, NUL-terminated CStrings or buffers passed with their true lengths; nothing is retained past the call.
        if unsafe { libc::futimens(fd, ts.as_ptr()) } != 0 {
            return Err(os_err("set directory times"));
        }
        Ok(())
    }
}

/// `/proc/self/fd/<dir>/<name>`, when `/proc` is procfs.
fn proc_fd_path(dir: RawFd, name: &CStr) -> Option<CString> {
    static PROCFS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *PROCFS.get_or_init(|| {
        // SAFETY: libc::stat is plain old data, for which all-zero bytes are a valid value.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: the path is a NUL-terminated literal and st is a valid, writable statfs.
        let r = unsafe { libc::statfs(c"/proc".as_ptr(), &mut st) };
        r == 0 && st.f_type == libc::PROC_SUPER_MAGIC
    });
    if !ok {
        return None;
    }
    let mut p = format!("/proc/self/fd/{dir}/").into_bytes();
    p.extend_from_slice(name.to_bytes());
    CString::new(p).ok()
}

fn ids(uid: u64, gid: u64) -> EntryResult<(libc::uid_t, libc::gid_t)> {
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
