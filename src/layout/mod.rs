//! The writable OCI image layout: `init`, `open`, the writer lock, the atomic
//! blob writer and `index.json` edits.
//!
//! # Safety of writes
//! - A blob is written to a temporary file under `.ocikit-tmp/` inside the
//!   layout, hashed while written, checked against the expected digest and size,
//!   fsynced, then renamed to `blobs/<alg>/<encoded>` and the directory fsynced.
//!   A crash leaves at most a stale temporary file (removed by `gc`).
//! - `index.json` is replaced by writing a temporary file, fsyncing and renaming.
//! - Writers hold an exclusive advisory lock on `.ocikit.lock` in the layout for
//!   their whole run, so concurrent writers take turns and none loses another's
//!   `index.json` change. The lock is advisory: other tools ignore it.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::digest::{Algorithm, Digest};
use crate::reference::{is_valid_ref_name, Reference};
use crate::resolve::{self, ResolveError};
use crate::spec::{
    self, Descriptor, DocumentError, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, MAX_DOCUMENT_SIZE,
};
use crate::store::{self, LayoutStore, Store, StoreError};
use crate::verified::{Mismatch, Verified};

/// The only `imageLayoutVersion` ocikit writes (and the only one the schema allows).
pub(crate) const IMAGE_LAYOUT_VERSION: &str = "1.0.0";
/// Name of the lock file in the layout root.
pub(crate) const LOCK_FILE: &str = ".ocikit.lock";
/// Name of the temporary directory in the layout root.
pub(crate) const TMP_DIR: &str = ".ocikit-tmp";

/// An error writing or opening a layout. Each names the path or ref at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// Reading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Resolving a reference failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// An I/O error while writing.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// `index.json` is one verify refuses (so no writer edits it), or an edit
    /// would make it one (so it is not written).
    #[error("{writing}{}: {detail}; nothing was changed", path.display())]
    InvalidIndex {
        /// The index file.
        path: PathBuf,
        /// `"refusing to write "` when the edit's result is at fault.
        writing: String,
        /// What is wrong, as verify says it.
        detail: String,
    },
    /// `tag` of a source whose descriptor verify refuses.
    #[error("refusing to tag {digest}: {detail}")]
    InvalidSource {
        /// The digest string of the source descriptor.
        digest: String,
        /// What is wrong with it.
        detail: String,
    },
    /// `init` on a directory that has other content.
    #[error("{} is not empty and is not an OCI image layout; refusing to initialise it", .0.display())]
    NotEmpty(PathBuf),
    /// `index.json` cannot be edited.
    #[error("{}: {source}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        source: DocumentError,
    },
    /// A blob written does not match what was expected.
    #[error("refusing to store blob: {0}")]
    Verify(StoreError),
    /// A tag shaped like a digest (`sha256:<hex>`): `L:TAG` and `L@DIGEST`
    /// would name different images.
    #[error("{0:?} is shaped like a digest; a tag must not be, or L:{0} and L@{0} would name different images")]
    DigestTag(String),
    /// A tag that ocikit will not write.
    #[error("{0:?} is not a valid tag (allowed: letters, digits and -._:@+/ between them)")]
    InvalidTag(String),
    /// Another process held the lock longer than the timeout.
    #[error("{} is locked by another writer{} and it did not finish within {:.1} s (--lock-timeout)", layout.display(), holder.map(|p| format!(" (pid {p})")).unwrap_or_default(), waited.as_secs_f64())]
    LockTimeout {
        /// The layout.
        layout: PathBuf,
        /// The pid holding the lock, if known.
        holder: Option<u32>,
        /// How long ocikit waited.
        waited: std::time::Duration,
    },
    /// `untag` of a tag that does not exist.
    #[error("{layout} has no tag {tag:?}{}", list_tags(.existing))]
    NoSuchTag {
        /// The layout.
        layout: String,
        /// The tag.
        tag: String,
        /// The tags that exist.
        existing: Vec<String>,
    },
}

fn list_tags(tags: &[String]) -> String {
    if tags.is_empty() {
        " (it has no tags)".to_string()
    } else {
        format!(" (tags: {})", tags.join(", "))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An OCI image layout directory that ocikit can read and write.
#[derive(Debug, Clone)]
pub struct Layout {
    store: LayoutStore,
    lock_policy: LockPolicy,
    cancel: crate::cancel::Cancel,
}

/// Warnings found while opening a layout (not errors: the layout is usable).
#[derive(Debug, Clone, Default)]
pub struct OpenWarnings {
    /// `imageLayoutVersion` when it is not `1.0.0`.
    pub layout_version: Option<String>,
}

fn check_oci_layout(root: &Path) -> Result<OpenWarnings, StoreError> {
    let path = root.join("oci-layout");
    let bytes =
        store::read_small_file(&path, crate::limits::MAX_SMALL_FILE).map_err(|e| match e {
            StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                StoreError::NotALayout {
                    path: root.to_path_buf(),
                    reason: "it has no oci-layout file".into(),
                }
            }
            e => e,
        })?;
    let bad = |reason: String| StoreError::NotALayout {
        path: root.to_path_buf(),
        reason,
    };
    spec::check_json(&bytes).map_err(|e| bad(format!("oci-layout {e}")))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("oci-layout is not valid JSON: {e}")))?;
    let version = v
        .as_object()
        .ok_or_else(|| bad("oci-layout is not a JSON object".into()))?
        .get("imageLayoutVersion")
        .ok_or_else(|| bad("oci-layout has no imageLayoutVersion".into()))?
        .as_str()
        .ok_or_else(|| bad("oci-layout's imageLayoutVersion is not a string".into()))?;
    Ok(OpenWarnings {
        layout_version: (version != IMAGE_LAYOUT_VERSION).then(|| version.to_string()),
    })
}

impl Layout {
    /// Opens an existing layout: `oci-layout` must be a regular file holding a
    /// JSON object with `imageLayoutVersion`. A version other than `1.0.0` is
    /// accepted (see [`Layout::open_with_warnings`]).
    ///
    /// # Errors
    /// [`StoreError::NotALayout`] and file errors.
    ///
    /// # Examples
    /// ```no_run
    /// let layout = ocikit::Layout::open("testdata/demo")?;
    /// let image = layout.resolve(Some(&ocikit::Reference::Tag("1.0".into())), &ocikit::PlatformChoice::Host)?;
    /// println!("{} layers", image.layers().len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(root: impl AsRef<Path>) -> Result<Layout, StoreError> {
        Layout::open_with_warnings(root).map(|(l, _)| l)
    }

    /// How this layout's writers wait for its lock (by default: silently, as
    /// long as it takes).
    pub fn with_lock_policy(mut self, policy: LockPolicy) -> Layout {
        self.lock_policy = policy;
        self
    }

    /// A token that stops this layout's blob writers at their next write.
    pub fn with_cancel(mut self, cancel: crate::cancel::Cancel) -> Layout {
        self.cancel = cancel;
        self
    }

    /// Like [`Layout::open`], also returning what is odd but tolerated.
    ///
    /// # Errors
    /// As [`Layout::open`].
    pub fn open_with_warnings(
        root: impl AsRef<Path>,
    ) -> Result<(Layout, OpenWarnings), StoreError> {
        let root = root.as_ref();
        let meta = fs::metadata(root).map_err(|e| StoreError::io(root, e))?;
        if !meta.is_dir() {
            return Err(StoreError::NotALayout {
                path: root.to_path_buf(),
                reason: "it is not a directory".into(),
            });
        }
        let warnings = check_oci_layout(root)?;
        Ok((
            Layout {
                store: LayoutStore::new(root),
                lock_policy: LockPolicy::default(),
                cancel: crate::cancel::Cancel::default(),
            },
            warnings,
        ))
    }

    /// Creates a layout at `root` (`oci-layout`, empty `index.json`, `blobs/`).
    /// On an existing valid layout it changes nothing; on a non-empty directory
    /// that is not a layout it fails.
    ///
    /// # Errors
    /// [`LayoutError::NotEmpty`] and I/O errors.
    pub fn init(root: impl AsRef<Path>) -> Result<Layout, LayoutError> {
        let root = root.as_ref();
        match fs::symlink_metadata(root) {
            Ok(m) if m.is_dir() => {
                if let Ok(l) = Layout::open(root) {
                    // Only a complete layout is left alone.
                    if l.store.index_bytes().is_ok() {
                        return Ok(l);
                    }
                }
                let mut entries = fs::read_dir(root).map_err(io_err(root))?;
                if entries.next().is_some() {
                    return Err(LayoutError::NotEmpty(root.to_path_buf()));
                }
            }
            Ok(_) => return Err(LayoutError::NotEmpty(root.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Built beside its final place and renamed in, so a crash never
                // leaves a half-made layout under the name.
                if let Some(l) = Layout::init_by_rename(root)? {
                    return Ok(l);
                }
                fs::create_dir_all(root).map_err(io_err(root))?;
            }
            Err(e) => return Err(io_err(root)(e)),
        }
        let layout = Layout {
            store: LayoutStore::new(root),
            lock_policy: LockPolicy::default(),
            cancel: crate::cancel::Cancel::default(),
        };
        let _lock = layout.lock()?;
        fs::create_dir_all(root.join("blobs").join("sha256")).map_err(io_err(root))?;
        layout.write_atomic(
            "oci-layout",
            format!("{{\"imageLayoutVersion\":\"{IMAGE_LAYOUT_VERSION}\"}}").as_bytes(),
        )?;
        layout.write_atomic("index.json", EMPTY_INDEX.as_bytes())?;
        Ok(layout)
    }

    /// Creates a complete layout in a sibling temporary directory and renames it
    /// to `root`. `None` when `root` appeared meanwhile (the caller goes on with
    /// the directory that is there).
    fn init_by_rename(root: &Path) -> Result<Option<Layout>, LayoutError> {
        let parent = match root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        let tmp = tempfile::Builder::new()
            .prefix(".ocikit-init-")
            .tempdir_in(&parent)
            .map_err(io_err(&parent))?;
        let staged = Layout {
            store: LayoutStore::new(tmp.path()),
            lock_policy: LockPolicy::default(),
            cancel: crate::cancel::Cancel::default(),
        };
        fs::create_dir_all(tmp.path().join("blobs").join("sha256")).map_err(io_err(tmp.path()))?;
        staged.write_atomic(
            "oci-layout",
            format!("{{\"imageLayoutVersion\":\"{IMAGE_LAYOUT_VERSION}\"}}").as_bytes(),
        )?;
        staged.write_atomic("index.json", EMPTY_INDEX.as_bytes())?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(new_dir_mode()))
                .map_err(io_err(tmp.path()))?;
        }
        let staged_path = tmp.keep();
        match fs::rename(&staged_path, root) {
            Ok(()) => {
                sync_dir(&parent)?;
                Ok(Some(Layout {
                    store: LayoutStore::new(root),
                    lock_policy: LockPolicy::default(),
                    cancel: crate::cancel::Cancel::default(),
                }))
            }
            Err(_) => {
                let _ = fs::remove_dir_all(&staged_path);
                Ok(None)
            }
        }
    }

    /// The layout's root directory.
    pub(crate) fn root(&self) -> &Path {
        self.store.root()
    }

    /// The read-only store over this layout.
    pub fn store(&self) -> &LayoutStore {
        &self.store
    }

    /// Takes the exclusive writer lock, waiting for other writers.
    ///
    /// # Errors
    /// I/O errors creating or locking the lock file.
    pub(crate) fn lock(&self) -> Result<LayoutLock, LayoutError> {
        let lock = self.lock_keeping_tmp()?;
        self.sweep_stale_tmp();
        Ok(lock)
    }

    /// [`Layout::lock`] without sweeping `.ocikit-tmp` (gc removes and
    /// reports those files itself).
    ///
    /// # Errors
    /// As [`Layout::lock`].
    pub(crate) fn lock_keeping_tmp(&self) -> Result<LayoutLock, LayoutError> {
        use std::os::unix::fs::FileExt;
        let path = self.root().join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let policy = Some(self.lock_policy);
        let timeout = self.lock_policy.timeout;
        let start = std::time::Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    if !told {
                        if let Some(notice) = policy.and_then(|p| p.on_wait) {
                            notice(self.root(), holder);
                        }
                        told = true;
                    }
                    match timeout {
                        None => {
                            file.lock().map_err(io_err(&path))?;
                            break;
                        }
                        Some(t) if start.elapsed() >= t => {
                            return Err(LayoutError::LockTimeout {
                                layout: self.root().to_path_buf(),
                                holder,
                                waited: t,
                            });
                        }
                        Some(t) => std::thread::sleep(
                            (t - start.elapsed()).min(std::time::Duration::from_millis(25)),
                        ),
                    }
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
            }
        }
        // Say who holds it, for writers that wait.
        let pid = std::process::id().to_string();
        let _ = file.set_len(0);
        let _ = file.write_at(pid.as_bytes(), 0);
        Ok(LayoutLock { _file: file })
    }

    /// Removes what is in `.ocikit-tmp` when the writer lock has just been
    /// taken: ocikit writers create named files there only while holding the
    /// lock, so whatever is there now was left by a writer that died (SIGKILL,
    /// a crash). A symlink in its place is never followed. Best effort: what
    /// cannot be removed stays for `gc`.
    fn sweep_stale_tmp(&self) {
        // write_atomic's temporaries in the root (`.index.json.XXXXXX`) are
        // made under the lock too.
        if let Ok(rd) = fs::read_dir(self.root()) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let ours = [".index.json.", ".oci-layout."]
                    .iter()
                    .any(|p| name.starts_with(p) && name.len() > p.len());
                if ours && e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let tmp = self.root().join(TMP_DIR);
        if !fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_dir()) {
            return;
        }
        let Ok(rd) = fs::read_dir(&tmp) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                _ => fs::remove_file(&p),
            };
        }
    }

    /// The layout's own temporary directory (`.ocikit-tmp`), created if
    /// missing; a symlink or file in its place is an error, never followed.
    ///
    /// # Errors
    /// [`LayoutError::Io`] naming the path.
    pub(crate) fn tmp_dir(&self) -> Result<PathBuf, LayoutError> {
        let tmp_dir = self.root().join(TMP_DIR);
        match fs::symlink_metadata(&tmp_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                // Never write through a symlink (or into a file) in its place.
                return Err(LayoutError::Io {
                    path: tmp_dir.clone(),
                    source: io::Error::other(
                        "is not a directory (a symlink is never followed); remove it",
                    ),
                });
            }
            Err(_) => match fs::create_dir(&tmp_dir) {
                Ok(()) => {}
                // Another writer thread made it first: fine if it is a directory.
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        && fs::symlink_metadata(&tmp_dir).is_ok_and(|m| m.is_dir()) => {}
                Err(e) => return Err(io_err(&tmp_dir)(e)),
            },
        }
        Ok(tmp_dir)
    }

    /// Starts writing a blob. `expected` is the digest and size the content must
    /// have; without it the blob is hashed with sha256 and stored under that.
    /// Call it with the writer lock held: the next writer to take the lock
    /// removes temporary files it finds (they can only be a dead writer's).
    ///
    /// # Errors
    /// I/O errors creating the temporary file.
    pub(crate) fn blob_writer(
        &self,
        expected: Option<(Digest, u64)>,
    ) -> Result<BlobWriter<'_>, LayoutError> {
        store::check_blob_dirs(self.root(), None)?;
        let tmp_dir = self.tmp_dir()?;
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(io_err(&tmp_dir))?;
        let buffered = BufWriter::with_capacity(crate::limits::IO_BUFFER, tmp);
        // The one verified stream: bounded to the expected size, digest
        // checked when finished.
        let out = match &expected {
            Some((d, size)) => Verified::expecting(buffered, d, Some(*size)),
            None => Verified::hashing(buffered, Algorithm::Sha256),
        };
        Ok(BlobWriter {
            layout: self,
            out,
            expected,
        })
    }

    /// Writes a small file in the root atomically (temp, fsync, rename, dir fsync).
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), LayoutError> {
        let root = self.root();
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .tempfile_in(root)
            .map_err(io_err(root))?;
        tmp.write_all(bytes).map_err(io_err(tmp.path()))?;
        let dest = root.join(name);
        set_mode(tmp.as_file(), tmp.path(), replacement_mode(&dest))?;
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        tmp.persist(&dest).map_err(|e| io_err(&dest)(e.error))?;
        sync_dir(root)?;
        Ok(())
    }

    /// Reads `index.json` for editing. Call with the lock held.
    ///
    /// The file must be one `verify` accepts at the top level (its own schema
    /// and every descriptor in it, see [`crate::graph::check_index`]): an edit
    /// carries every other entry along, so it must not build on entries no
    /// reader can trust.
    ///
    /// # Errors
    /// Unreadable `index.json`, or [`LayoutError::InvalidIndex`].
    /// Records `desc` (a document already stored) under `tag` in
    /// `index.json`, under `lock`: the name moves off any other entry (as
    /// [`Layout::tag`] moves it), and the docker form of the name goes into
    /// `io.containerd.image.name`. Returns the descriptor as recorded.
    ///
    /// # Errors
    /// An invalid `index.json`, write errors.
    pub(crate) fn publish(
        &self,
        lock: &LayoutLock,
        mut desc: Descriptor,
        tag: &str,
    ) -> Result<Descriptor, LayoutError> {
        let mut index = self.read_index(lock)?;
        let name = resolve::docker_name_of(tag);
        index.move_name(tag, name.as_deref());
        let ann = desc.annotations.get_or_insert_with(Default::default);
        ann.remove(spec::ANNOTATION_IMAGE_NAME);
        if let Some(n) = name {
            ann.insert(spec::ANNOTATION_IMAGE_NAME.to_string(), n);
        }
        ann.insert(spec::ANNOTATION_REF_NAME.to_string(), tag.to_string());
        index.push(&desc);
        self.write_index(lock, &index)?;
        Ok(desc)
    }

    pub(crate) fn read_index(&self, _lock: &LayoutLock) -> Result<IndexFile, LayoutError> {
        self.read_checked_index()
    }

    /// Refuses an `index.json` no writer edits (see [`Layout::read_index`]),
    /// without the lock: for writers that check before they read anything.
    ///
    /// # Errors
    /// As [`Layout::read_index`].
    pub(crate) fn check_index_json(&self) -> Result<(), LayoutError> {
        self.read_checked_index().map(|_| ())
    }

    /// Points the `index.json` entries `tag` names (as `L:TAG` reads) that
    /// hold `old` at `new` in place: digest, size and media type change, every
    /// other field (annotations, unknown fields) and the entry's position
    /// stay. `false` (nothing written) when no such entry is there any more.
    ///
    /// # Errors
    /// As [`Layout::read_index`] and [`Layout::write_index`].
    pub(crate) fn retarget(
        &self,
        tag: &str,
        old: &str,
        new: &Descriptor,
    ) -> Result<bool, LayoutError> {
        let lock = self.lock()?;
        let mut index = self.read_index(&lock)?;
        let descs: Vec<Descriptor> = index.entries.iter().map(|e| e.descriptor.clone()).collect();
        let found: Vec<usize> = resolve::match_tag(&descs, tag)
            .into_iter()
            .filter(|d| d.digest == old)
            .filter_map(|d| descs.iter().position(|e| std::ptr::eq(e, d)))
            .collect();
        if found.is_empty() {
            return Ok(false);
        }
        for i in found {
            if let Some(e) = index.entries.get_mut(i) {
                e.set_target(new);
            }
        }
        self.write_index(&lock, &index)?;
        Ok(true)
    }

    /// [`Layout::read_index`] without the lock (to refuse early).
    pub(crate) fn read_checked_index(&self) -> Result<IndexFile, LayoutError> {
        let bytes = self.store.index_bytes()?;
        self.check_index_bytes(&bytes, "")?;
        IndexFile::parse(&bytes).map_err(|source| LayoutError::Index {
            path: self.root().join("index.json"),
            source,
        })
    }

    fn check_index_bytes(&self, bytes: &[u8], writing: &str) -> Result<(), LayoutError> {
        let path = self.root().join("index.json");
        if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
            return Err(LayoutError::InvalidIndex {
                path,
                writing: writing.to_string(),
                detail: format!(
                    "it would be {} bytes, over the 4 MiB ({MAX_DOCUMENT_SIZE} bytes) every reader accepts",
                    bytes.len()
                ),
            });
        }
        if let Some(bad) = crate::graph::check_index(&self.store, bytes)
            .into_iter()
            .find(|i| !i.kind.is_warning())
        {
            return Err(LayoutError::InvalidIndex {
                path,
                writing: writing.to_string(),
                detail: bad.message,
            });
        }
        Ok(())
    }

    /// Replaces `index.json` atomically. Call with the lock held. A document
    /// a reader would refuse (over the 4 MiB cap, or failing the checks of
    /// [`Layout::read_index`]) is never written.
    ///
    /// # Errors
    /// [`LayoutError::InvalidIndex`] (nothing written) and I/O errors.
    pub(crate) fn write_index(
        &self,
        _lock: &LayoutLock,
        index: &IndexFile,
    ) -> Result<(), LayoutError> {
        let bytes = index.to_bytes();
        self.check_index_bytes(bytes.as_bytes(), "refusing to write ")?;
        self.write_atomic("index.json", bytes.as_bytes())
    }

    /// Resolves a reference to one image (see [`crate::resolve`]).
    ///
    /// # Errors
    /// See [`ResolveError`].
    pub fn resolve(
        &self,
        reference: Option<&Reference>,
        platform: &resolve::PlatformChoice,
    ) -> Result<resolve::Image, ResolveError> {
        resolve::resolve_image(&self.store, reference, platform)
    }

    /// Tags what `source` names as `new_tag` in `index.json`. If another entry
    /// holds `new_tag`, the name moves: that entry keeps its place untagged (so
    /// nothing it references becomes garbage), or is dropped when another entry
    /// lists the same digest. Returns the tagged descriptor.
    ///
    /// # Errors
    /// An invalid tag, an unresolvable source, or write errors.
    pub fn tag(
        &self,
        source: Option<&Reference>,
        new_tag: &str,
    ) -> Result<Descriptor, LayoutError> {
        if !is_valid_ref_name(new_tag) {
            return Err(LayoutError::InvalidTag(new_tag.to_string()));
        }
        // `L:sha256:…` and `L@sha256:…` must not name different images.
        if Digest::parse(new_tag).is_ok() {
            return Err(LayoutError::DigestTag(new_tag.to_string()));
        }
        // Check once before locking, so a bad reference or index changes
        // nothing (not even by creating the lock file); again under the lock,
        // where it counts.
        self.read_checked_index()?;
        check_source(&resolve::find_descriptor(&self.store, source)?)?;
        let lock = self.lock()?;
        let mut index = self.read_index(&lock)?;
        let target = resolve::find_descriptor(&self.store, source)?;
        check_source(&target)?;
        let target_digest = target.digest.clone();

        // The name as typed goes into ref.name; where it is written as a
        // docker reference, its normalised form into io.containerd.image.name.
        let name = resolve::docker_name_of(new_tag);
        let identity = name.as_deref().unwrap_or(new_tag);

        // Already tagged so: nothing to do.
        if index.entries.iter().any(|e| {
            e.descriptor.ref_name() == Some(new_tag)
                && e.descriptor.digest == target_digest
                && resolve::identity(&e.descriptor).is_some_and(|i| same_identity(i, identity))
        }) {
            return Ok(target);
        }
        index.move_name(new_tag, name.as_deref());
        // Reuse an untagged entry for the same digest rather than adding another.
        if let Some(e) = index
            .entries
            .iter_mut()
            .find(|e| e.descriptor.digest == target_digest && e.descriptor.ref_name().is_none())
        {
            e.set_annotation(ANNOTATION_IMAGE_NAME, name.as_deref());
            e.set_annotation(ANNOTATION_REF_NAME, Some(new_tag));
            return self.write_index(&lock, &index).map(|()| target);
        }
        let mut desc = target.clone();
        let ann = desc.annotations.get_or_insert_with(Default::default);
        ann.remove(ANNOTATION_IMAGE_NAME);
        if let Some(n) = &name {
            ann.insert(ANNOTATION_IMAGE_NAME.to_string(), n.clone());
        }
        ann.insert(ANNOTATION_REF_NAME.to_string(), new_tag.to_string());
        index.push(&desc);
        self.write_index(&lock, &index)?;
        Ok(desc)
    }

    /// Removes `tag` from `index.json`. The entry stays, untagged, unless another
    /// entry lists the same digest (then it is dropped); `gc` never deletes what an
    /// untagged entry references.
    ///
    /// # Errors
    /// [`LayoutError::NoSuchTag`] and write errors.
    pub fn untag(&self, tag: &str) -> Result<(), LayoutError> {
        // Check before locking, so a missing tag or an index.json verify
        // refuses changes nothing.
        let current = self.read_checked_index()?;
        self.untag_targets(&current, tag)?;
        let lock = self.lock()?;
        let mut index = self.read_index(&lock)?;
        let targets = self.untag_targets(&index, tag)?;
        index.untag_where(|d| {
            targets
                .iter()
                .any(|(digest, id)| &d.digest == digest && resolve::identity(d) == id.as_deref())
        });
        self.write_index(&lock, &index)
    }

    /// Takes the names in `tags` off `index.json` under the lock. Each name
    /// selects its entries exactly as [`Layout::untag`] does (as `L:TAG`
    /// resolves, refusing an ambiguous name before anything is written), but
    /// the selected entries are dropped rather than left untagged: an untagged
    /// entry keeps its blobs from gc, and prune's point is freeing them.
    /// Entries that were already untagged are left alone. Returns the names
    /// taken off; a name no longer in `index.json` is skipped.
    pub(crate) fn drop_tags(
        &self,
        tags: &std::collections::BTreeSet<&str>,
    ) -> Result<Vec<String>, LayoutError> {
        let lock = self.lock()?;
        let mut index = self.read_index(&lock)?;
        let present = index.tags();
        let mut gone = Vec::new();
        let mut targets = Vec::new();
        for tag in tags {
            if !present.iter().any(|t| t == tag) {
                continue;
            }
            targets.extend(self.untag_targets(&index, tag)?);
            gone.push((*tag).to_string());
        }
        if gone.is_empty() {
            return Ok(gone);
        }
        index.entries.retain(|e| {
            let d = &e.descriptor;
            !(d.ref_name().is_some()
                && targets.iter().any(|(digest, id)| {
                    &d.digest == digest && resolve::identity(d) == id.as_deref()
                }))
        });
        self.write_index(&lock, &index)?;
        Ok(gone)
    }

    /// The entries `untag TAG` takes the name off: those `TAG` resolves to
    /// (as `L:TAG` reads), by digest and identity. Entries of several
    /// identities are ambiguous: the error lists them.
    fn untag_targets(
        &self,
        index: &IndexFile,
        tag: &str,
    ) -> Result<Vec<(String, Option<String>)>, LayoutError> {
        let descs: Vec<Descriptor> = index.entries.iter().map(|e| e.descriptor.clone()).collect();
        let found = resolve::match_tag(&descs, tag);
        if found.is_empty() {
            return Err(LayoutError::NoSuchTag {
                layout: self.store.name(),
                tag: tag.to_string(),
                existing: index.tags(),
            });
        }
        let digests: std::collections::BTreeSet<&str> =
            found.iter().map(|d| d.digest.as_str()).collect();
        if digests.len() > 1 {
            return Err(LayoutError::Resolve(ResolveError::Ambiguous {
                location: self.store.name(),
                reference: Some(tag.to_string()),
                choices: found.iter().map(|d| resolve::entry_label(d)).collect(),
            }));
        }
        Ok(found
            .iter()
            .map(|d| (d.digest.clone(), resolve::identity(d).map(str::to_string)))
            .collect())
    }
}

/// Whether two identities (containerd names or `ref.name`s) name the same
/// image: equal, or equal once normalised as docker names.
pub(crate) fn same_identity(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (resolve::docker_name_of(a), resolve::docker_name_of(b)),
            (Some(x), Some(y)) if x == y
        )
}

/// Refuses a descriptor `tag` would copy into `index.json` that verify would
/// refuse there: an invalid digest, a negative size, no media type.
fn check_source(desc: &Descriptor) -> Result<(), LayoutError> {
    let bad = |detail: String| LayoutError::InvalidSource {
        digest: desc.digest.clone(),
        detail,
    };
    desc.digest().map_err(|e| bad(e.to_string()))?;
    if desc.size < 0 {
        return Err(bad(format!(
            "its descriptor's size {} is negative",
            desc.size
        )));
    }
    if desc.media_type.is_empty() {
        return Err(bad("its descriptor has no mediaType".into()));
    }
    Ok(())
}

/// The process's umask, read once without changing it (the `Umask:` line of
/// `/proc/self/status`); where that is unavailable, read by setting and
/// restoring it, which is racy only against another thread creating files
/// at that instant.
pub(crate) fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let from_proc = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        });
        from_proc.unwrap_or_else(|| {
            // umask(2) only swaps the process's mask; the old one is put
            // back at once.
            let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
            rustix::process::umask(old);
            old.as_raw_mode()
        })
    })
}

/// The mode a new file gets: 0666 less the umask, as `open(2)` would give it.
pub(crate) fn new_file_mode() -> u32 {
    0o666 & !umask()
}

/// The mode a new directory gets: 0777 less the umask.
pub(crate) fn new_dir_mode() -> u32 {
    0o777 & !umask()
}

/// The mode for a file about to replace `dest`: the existing regular file's
/// own mode (a private 0600 `index.json` stays private), else a new file's.
pub(crate) fn replacement_mode(dest: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_file() => m.permissions().mode() & 0o7777,
        _ => new_file_mode(),
    }
}

/// Temporary files are created 0600; what ocikit publishes gets the mode of
/// the file it replaces, else what the umask gives a new file (not a fixed
/// 0644, which would make a private layout world-readable).
fn set_mode(file: &File, path: &Path, mode: u32) -> Result<(), LayoutError> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), LayoutError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

const EMPTY_INDEX: &str = "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}";

/// How writers wait for a layout's lock.
#[derive(Debug, Clone, Copy, Default)]
pub struct LockPolicy {
    /// Give up after this long (`None`: wait as long as it takes).
    pub timeout: Option<std::time::Duration>,
    /// Called once when a writer starts waiting: the layout and, if known, the
    /// pid holding the lock (the CLI tells the user on a terminal).
    pub on_wait: Option<fn(&Path, Option<u32>)>,
}

/// The exclusive writer lock on a layout; released when dropped.
pub(crate) struct LayoutLock {
    _file: File,
}

/// Writes one blob atomically; see [`Layout::blob_writer`].
pub(crate) struct BlobWriter<'a> {
    layout: &'a Layout,
    out: Verified<BufWriter<tempfile::NamedTempFile>>,
    expected: Option<(Digest, u64)>,
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A signal stops the copy here; dropping the writer removes its
        // temporary file.
        self.layout.cancel.check()?;
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl BlobWriter<'_> {
    /// Checks the digest and size, fsyncs, and renames the blob into place.
    /// On a mismatch nothing is stored and the temporary file is removed.
    ///
    /// # Errors
    /// [`LayoutError::Verify`] on a digest or size mismatch; I/O errors.
    pub(crate) fn finish(self) -> Result<(Digest, u64), LayoutError> {
        let (out, actual, written) = self.out.finish().map_err(|m| {
            LayoutError::Verify(match (m, &self.expected) {
                (Mismatch::SizeMismatch { expected, actual }, Some((digest, _))) => {
                    StoreError::SizeMismatch {
                        digest: digest.clone(),
                        expected: expected as i64,
                        actual,
                    }
                }
                (Mismatch::DigestMismatch { expected, actual }, _) => {
                    StoreError::DigestMismatch { expected, actual }
                }
                (m, None) => StoreError::Io {
                    path: PathBuf::from(TMP_DIR),
                    source: io::Error::other(m.to_string()),
                },
            })
        })?;
        let tmp = out
            .into_inner()
            .map_err(|e| io_err(Path::new(TMP_DIR))(e.into_error()))?;
        let digest = match self.expected {
            Some((d, _)) => d,
            None => actual,
        };
        set_mode(tmp.as_file(), tmp.path(), new_file_mode())?;
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        let dest = self.layout.root().join(digest.blob_path());
        let dir = dest.parent().unwrap_or(self.layout.root()).to_path_buf();
        // Never write through a symlinked blobs/ or blobs/<alg>/.
        store::check_blob_dirs(self.layout.root(), Some(digest.algorithm().as_str()))?;
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        store::check_blob_dirs(self.layout.root(), Some(digest.algorithm().as_str()))?;
        tmp.persist(&dest).map_err(|e| io_err(&dest)(e.error))?;
        sync_dir(&dir)?;
        Ok((digest, written))
    }
}

mod index_file;
pub(crate) use index_file::IndexFile;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_writer_stores_verified_blobs_only() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::init(dir.path().join("l")).unwrap();
        let good = Digest::of_bytes(Algorithm::Sha256, b"content");
        let mut w = layout.blob_writer(Some((good.clone(), 7))).unwrap();
        w.write_all(b"content").unwrap();
        assert_eq!(w.finish().unwrap(), (good.clone(), 7));
        assert_eq!(
            fs::read(layout.root().join(good.blob_path())).unwrap(),
            b"content"
        );
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = fs::metadata(layout.root().join(good.blob_path())).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o777,
                new_file_mode(),
                "blobs get what the umask gives a new file"
            );
        }

        // Wrong content under an expected digest: refused, nothing stored, no temp left.
        let other = Digest::of_bytes(Algorithm::Sha256, b"other!!");
        let mut w = layout.blob_writer(Some((other.clone(), 7))).unwrap();
        w.write_all(b"content").unwrap();
        assert!(matches!(
            w.finish(),
            Err(LayoutError::Verify(StoreError::DigestMismatch { .. }))
        ));
        assert!(!layout.root().join(other.blob_path()).exists());
        // Wrong size: refused.
        let mut w = layout.blob_writer(Some((good.clone(), 8))).unwrap();
        w.write_all(b"content").unwrap();
        assert!(matches!(
            w.finish(),
            Err(LayoutError::Verify(StoreError::SizeMismatch { .. }))
        ));
        assert_eq!(
            fs::read_dir(layout.root().join(TMP_DIR)).unwrap().count(),
            0
        );

        // Unknown digest: hashed with sha256.
        let mut w = layout.blob_writer(None).unwrap();
        w.write_all(b"abc").unwrap();
        let (d, n) = w.finish().unwrap();
        assert_eq!((d, n), (Digest::of_bytes(Algorithm::Sha256, b"abc"), 3));

        // sha512 expected: hashed with sha512.
        let d512 = Digest::of_bytes(Algorithm::Sha512, b"x");
        let mut w = layout.blob_writer(Some((d512.clone(), 1))).unwrap();
        w.write_all(b"x").unwrap();
        w.finish().unwrap();
        assert!(layout.root().join(d512.blob_path()).is_file());
    }

    #[test]
    fn index_edits_keep_untouched_bytes() {
        let original = br#"{"schemaVersion":2, "x-top": {"keep": [1, 2.50]},
          "manifests":[ {"mediaType":"a/b","digest":"sha256:aa","size":1, "x":"\u00e9"},
                        {"mediaType":"a/b","digest":"sha256:bb","size":2,"annotations":{"z":"1","org.opencontainers.image.ref.name":"t"}} ]}"#;
        let mut idx = IndexFile::parse(original).unwrap();
        let out = idx.to_bytes();
        assert!(out.contains(r#"{"keep": [1, 2.50]}"#));
        assert!(out.contains(r#"{"mediaType":"a/b","digest":"sha256:aa","size":1, "x":"\u00e9"}"#));
        assert!(idx.untag_where(|d| d.ref_name() == Some("t")));
        let out = idx.to_bytes();
        assert!(out.contains(r#""annotations":{"z":"1"}"#), "{out}");
        assert!(out.contains(r#""x":"\u00e9"}"#));
        assert!(!idx.untag_where(|d| d.ref_name() == Some("t")));
    }
}
