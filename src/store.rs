//! Read-only blob access: the [`Store`] trait and its layout-directory backend.
//!
//! Every file a store opens is opened as a regular file without following
//! symlinks (`O_NOFOLLOW`), re-checked after opening (same inode, still a
//! regular file), and its size is compared with what the caller expects before
//! anything is read.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::{self, Digest};
use crate::spec::MAX_DOCUMENT_SIZE;
use crate::verified::{Mismatch, Verified};

/// An error reading from a store. Every variant names the file or digest at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Permission denied (`EACCES`) reading a file or directory: an
    /// operational error (exit 2), never a fault of the layout.
    #[error("cannot read {}: permission denied", path.display())]
    Denied {
        /// The file (or the blob path below an unreadable directory).
        path: PathBuf,
    },
    /// The location is not an image layout (or archive) at all.
    #[error("{} is not an OCI image layout: {reason}", path.display())]
    NotALayout {
        /// The location.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A referenced blob is absent.
    #[error("blob {digest} is missing ({} does not exist)", path.display())]
    Missing {
        /// The blob.
        digest: Digest,
        /// Where it should be.
        path: PathBuf,
    },
    /// A file that must be a regular file is a symlink, directory or other.
    #[error("{} is a {what}, not a regular file (refusing to follow or read it)", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// A file is larger than ocikit will read into memory.
    #[error("{} is {size} bytes, over the {limit}-byte limit for JSON documents", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A blob's size differs from its descriptor's.
    #[error("blob {digest} is {actual} bytes but its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        expected: i64,
        /// The stored size.
        actual: u64,
    },
    /// A blob's content does not hash to its digest.
    #[error("blob {expected} has the wrong content: it hashes to {actual}")]
    DigestMismatch {
        /// The digest it is stored under.
        expected: Digest,
        /// What its bytes hash to.
        actual: Digest,
    },
    /// A digest whose algorithm ocikit cannot compute.
    #[error("blob {0} uses an algorithm ocikit cannot verify, so it is not read")]
    Unverifiable(Digest),
}

impl StoreError {
    /// An error reading a blob through [`Store::open_verified`]: a mismatch
    /// becomes [`StoreError::SizeMismatch`] or [`StoreError::DigestMismatch`].
    pub(crate) fn read(path: &Path, digest: &Digest, size: i64, e: io::Error) -> StoreError {
        match Mismatch::from_io(&e) {
            Some(Mismatch::SizeMismatch { actual, .. }) => StoreError::SizeMismatch {
                digest: digest.clone(),
                expected: size,
                actual: *actual,
            },
            Some(Mismatch::DigestMismatch { actual, .. }) => StoreError::DigestMismatch {
                expected: digest.clone(),
                actual: actual.clone(),
            },
            _ => StoreError::io(path, e),
        }
    }

    /// An I/O error reading `path`; permission denied becomes [`StoreError::Denied`].
    pub(crate) fn io(path: &Path, source: io::Error) -> StoreError {
        if source.kind() == io::ErrorKind::PermissionDenied {
            return StoreError::Denied {
                path: path.to_path_buf(),
            };
        }
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether this is [`StoreError::Denied`] (the CLI fails with exit 2
    /// rather than reporting the layout as damaged).
    pub(crate) fn is_denied(&self) -> bool {
        matches!(self, StoreError::Denied { .. })
    }
}

/// An open blob: a regular file, a slice of one (an archive member), or bytes
/// ocikit built (a manifest for a legacy docker-archive). Every read is a
/// positioned read inside the slice, so a blob can never read past its end.
#[derive(Clone)]
pub struct Blob {
    src: BlobSource,
    len: u64,
}

#[derive(Clone)]
enum BlobSource {
    File { file: Arc<File>, offset: u64 },
    Memory(Arc<[u8]>),
}

impl Blob {
    /// A whole file.
    pub(crate) fn from_file(file: File, len: u64) -> Blob {
        Blob::slice(Arc::new(file), 0, len)
    }

    /// `len` bytes of `file` from `offset`.
    pub(crate) fn slice(file: Arc<File>, offset: u64, len: u64) -> Blob {
        Blob {
            src: BlobSource::File { file, offset },
            len,
        }
    }

    /// Bytes in memory.
    pub(crate) fn memory(bytes: Arc<[u8]>) -> Blob {
        Blob {
            len: bytes.len() as u64,
            src: BlobSource::Memory(bytes),
        }
    }

    /// The stored size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads at `pos` within the blob (0 at its end).
    ///
    /// # Errors
    /// Read errors.
    pub(crate) fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if pos >= self.len {
            return Ok(0);
        }
        let want = buf.len().min((self.len - pos) as usize);
        match &self.src {
            BlobSource::File { file, offset } => file.read_at(&mut buf[..want], offset + pos),
            BlobSource::Memory(bytes) => {
                let start = pos as usize;
                buf[..want].copy_from_slice(&bytes[start..start + want]);
                Ok(want)
            }
        }
    }

    /// Hashes the whole blob.
    ///
    /// # Errors
    /// Read errors.
    pub fn hash(&self, algorithm: digest::Algorithm) -> io::Result<(Digest, u64)> {
        self.hash_with_progress(algorithm, &|_| {})
    }

    /// Hashes the whole blob, reporting bytes hashed to `progress`.
    ///
    /// # Errors
    /// Read errors.
    pub(crate) fn hash_with_progress(
        &self,
        algorithm: digest::Algorithm,
        progress: &dyn Fn(u64),
    ) -> io::Result<(Digest, u64)> {
        digest::hash_at(algorithm, &|buf, pos| self.read_at(buf, pos), progress)
    }

    /// A reader over the blob's bytes.
    pub(crate) fn into_reader(self) -> BlobReader {
        BlobReader { blob: self, pos: 0 }
    }

    /// Copies the whole blob to `out`; returns the bytes copied.
    ///
    /// # Errors
    /// Read or write errors.
    pub fn copy_to(&self, out: &mut dyn io::Write) -> io::Result<u64> {
        let mut buf = vec![0u8; crate::limits::IO_BUFFER];
        let mut pos = 0u64;
        loop {
            let n = match self.read_at(&mut buf, pos) {
                Ok(0) => return Ok(pos),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all(&buf[..n])?;
            pos += n as u64;
        }
    }
}

/// A reader over a [`Blob`].
pub struct BlobReader {
    blob: Blob,
    pos: u64,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.blob.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A file found under `blobs/`.
#[derive(Debug, Clone)]
pub struct BlobEntry {
    /// The digest its name spells, if it spells a valid one.
    pub digest: Option<Digest>,
    /// Its path relative to the store root.
    pub path: PathBuf,
    /// Its size (0 for non-regular files).
    pub size: u64,
    /// Whether it is a regular file (not a symlink, directory, …).
    pub regular: bool,
}

/// Read-only access to the content of a layout or archive.
pub trait Store: Send + Sync {
    /// How to name this store in messages (its path).
    fn name(&self) -> String;

    /// The raw bytes of `index.json`.
    ///
    /// # Errors
    /// Missing, non-regular, too large or unreadable `index.json`.
    fn index_bytes(&self) -> Result<Vec<u8>, StoreError>;

    /// Opens a blob as a regular file.
    ///
    /// # Errors
    /// [`StoreError::Missing`], [`StoreError::NotRegular`] or I/O errors.
    fn open_blob(&self, digest: &Digest) -> Result<Blob, StoreError>;

    /// Where a blob lives, for messages.
    fn blob_location(&self, digest: &Digest) -> PathBuf;

    /// Every file under `blobs/`, sorted by path.
    ///
    /// # Errors
    /// I/O errors listing the directory.
    fn list_blobs(&self) -> Result<Vec<BlobEntry>, StoreError>;

    /// Whether the layer blob `digest` has no digest of its own in this
    /// store, only the DiffID its config gives (a compressed layer of a legacy
    /// docker-archive: ocikit computed its digest from the very bytes). Such a
    /// layer is checked against its DiffID whenever it is copied.
    fn diff_id_is_only_check(&self, _digest: &Digest) -> bool {
        false
    }

    /// Opens a blob for reading through the one verified reader: its stored
    /// size must be the descriptor's `size` (checked before anything is read),
    /// the read is bounded to it, and the end of the stream fails unless the
    /// bytes hash to `digest`.
    ///
    /// # Errors
    /// [`StoreError::Unverifiable`], [`StoreError::SizeMismatch`], and the
    /// errors of [`Store::open_blob`]. Mismatches found while reading come
    /// back as [`crate::verified::Mismatch`] inside the read's `io::Error`.
    fn open_verified(
        &self,
        digest: &Digest,
        size: i64,
    ) -> Result<Verified<BlobReader>, StoreError> {
        if !digest.algorithm().is_verifiable() {
            return Err(StoreError::Unverifiable(digest.clone()));
        }
        let blob = self.open_blob(digest)?;
        if size < 0 || blob.len() != size as u64 {
            return Err(StoreError::SizeMismatch {
                digest: digest.clone(),
                expected: size,
                actual: blob.len(),
            });
        }
        let len = blob.len();
        Ok(Verified::expecting(blob.into_reader(), digest, Some(len)))
    }

    /// Reads a blob fully through [`Store::open_verified`]; a blob over
    /// `limit` bytes is refused before reading.
    ///
    /// # Errors
    /// Any [`StoreError`].
    fn read_verified(&self, digest: &Digest, size: i64, limit: u64) -> Result<Vec<u8>, StoreError> {
        let reader = self.open_verified(digest, size)?;
        if size as u64 > limit {
            return Err(StoreError::TooLarge {
                path: self.blob_location(digest),
                size: size as u64,
                limit,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        io::BufReader::with_capacity(crate::limits::IO_BUFFER, reader)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::read(&self.blob_location(digest), digest, size, e))?;
        Ok(bytes)
    }
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn index_bytes(&self) -> Result<Vec<u8>, StoreError> {
        (**self).index_bytes()
    }
    fn open_blob(&self, digest: &Digest) -> Result<Blob, StoreError> {
        (**self).open_blob(digest)
    }
    fn blob_location(&self, digest: &Digest) -> PathBuf {
        (**self).blob_location(digest)
    }
    fn list_blobs(&self) -> Result<Vec<BlobEntry>, StoreError> {
        (**self).list_blobs()
    }
    fn diff_id_is_only_check(&self, digest: &Digest) -> bool {
        (**self).diff_id_is_only_check(digest)
    }
}

/// What a file type is called in messages.
fn file_type_name(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// Opens `path` as a regular file: refuses symlinks (not followed, not read) and
/// anything but regular files, and re-checks the inode after opening so a file
/// swapped in between is noticed. A file replaced by an atomic rename in that
/// window (another writer's new `index.json`) is simply opened again.
/// Returns the file and its size.
///
/// # Errors
/// [`StoreError::NotRegular`], or [`StoreError::Io`] (with `NotFound` when absent).
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64), StoreError> {
    const ATTEMPTS: usize = 8;
    for _ in 1..ATTEMPTS {
        match open_regular_once(path) {
            Err(StoreError::NotRegular { what, .. }) if what == CHANGED => continue,
            other => return other,
        }
    }
    open_regular_once(path)
}

const CHANGED: &str = "file that changed while it was opened";

fn open_regular_once(path: &Path) -> Result<(File, u64), StoreError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let before = fs::symlink_metadata(path).map_err(|e| StoreError::io(path, e))?;
    if !before.file_type().is_file() {
        return Err(StoreError::NotRegular {
            path: path.to_path_buf(),
            what: file_type_name(&before.file_type()),
        });
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    let after = file.metadata().map_err(|e| StoreError::io(path, e))?;
    if !after.file_type().is_file() || after.ino() != before.ino() || after.dev() != before.dev() {
        return Err(StoreError::NotRegular {
            path: path.to_path_buf(),
            what: CHANGED,
        });
    }
    Ok((file, after.len()))
}

/// Checks that `root/blobs` and, with `alg`, `root/blobs/<alg>` are real
/// directories where they exist: a symlink in their place (say to another
/// layout's `blobs/`, a shared store) is refused, never followed, so no read,
/// write or delete ever reaches outside the layout root through it.
///
/// # Errors
/// [`StoreError::NotRegular`] naming the symlink (or other non-directory).
pub(crate) fn check_blob_dirs(root: &Path, alg: Option<&str>) -> Result<(), StoreError> {
    let blobs = root.join("blobs");
    let mut dirs = vec![blobs.clone()];
    if let Some(a) = alg {
        dirs.push(blobs.join(a));
    }
    for d in dirs {
        match fs::symlink_metadata(&d) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                return Err(StoreError::NotRegular {
                    path: d,
                    what: if m.file_type().is_symlink() {
                        "symlink (blob directories are never followed)"
                    } else {
                        "file where a blob directory belongs"
                    },
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(&d, e)),
        }
    }
    Ok(())
}

/// Reads a small regular file (`oci-layout`, `index.json`) with a size limit.
///
/// # Errors
/// As [`open_regular`], plus [`StoreError::TooLarge`].
pub(crate) fn read_small_file(path: &Path, limit: u64) -> Result<Vec<u8>, StoreError> {
    let (file, len) = open_regular(path)?;
    if len > limit {
        return Err(StoreError::TooLarge {
            path: path.to_path_buf(),
            size: len,
            limit,
        });
    }
    let mut v = Vec::with_capacity(len as usize);
    file.take(limit + 1)
        .read_to_end(&mut v)
        .map_err(|e| StoreError::io(path, e))?;
    if v.len() as u64 > limit {
        return Err(StoreError::TooLarge {
            path: path.to_path_buf(),
            size: v.len() as u64,
            limit,
        });
    }
    Ok(v)
}

/// A layout directory, read-only.
#[derive(Debug, Clone)]
pub struct LayoutStore {
    root: PathBuf,
}

impl LayoutStore {
    /// A store over `root`, without checking anything (see
    /// [`crate::layout::Layout::open`] for the checked way in).
    pub(crate) fn new(root: impl Into<PathBuf>) -> LayoutStore {
        LayoutStore { root: root.into() }
    }

    /// The layout's root directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
}

impl Store for LayoutStore {
    fn name(&self) -> String {
        self.root.display().to_string()
    }

    fn index_bytes(&self) -> Result<Vec<u8>, StoreError> {
        read_small_file(&self.root.join("index.json"), MAX_DOCUMENT_SIZE)
    }

    fn open_blob(&self, digest: &Digest) -> Result<Blob, StoreError> {
        check_blob_dirs(&self.root, Some(digest.algorithm().as_str()))?;
        let path = self.root.join(digest.blob_path());
        match open_regular(&path) {
            Ok((file, len)) => Ok(Blob::from_file(file, len)),
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::Missing {
                    digest: digest.clone(),
                    path,
                })
            }
            Err(e) => Err(e),
        }
    }

    fn blob_location(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.blob_path())
    }

    fn list_blobs(&self) -> Result<Vec<BlobEntry>, StoreError> {
        let blobs = self.root.join("blobs");
        let mut out = Vec::new();
        check_blob_dirs(&self.root, None)?;
        let algs = match fs::read_dir(&blobs) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StoreError::io(&blobs, e)),
        };
        for alg in algs {
            let alg = alg.map_err(|e| StoreError::io(&blobs, e))?;
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            let alg_type = alg
                .file_type()
                .map_err(|e| StoreError::io(&alg.path(), e))?;
            if alg_type.is_symlink() {
                check_blob_dirs(&self.root, Some(&alg_name))?;
            }
            if !alg_type.is_dir() {
                out.push(BlobEntry {
                    digest: None,
                    path: PathBuf::from("blobs").join(&alg_name),
                    size: 0,
                    regular: alg_type.is_file(),
                });
                continue;
            }
            for ent in fs::read_dir(alg.path()).map_err(|e| StoreError::io(&alg.path(), e))? {
                let ent = ent.map_err(|e| StoreError::io(&alg.path(), e))?;
                let name = ent.file_name().to_string_lossy().into_owned();
                let meta =
                    fs::symlink_metadata(ent.path()).map_err(|e| StoreError::io(&ent.path(), e))?;
                let digest = Digest::parse(&format!("{alg_name}:{name}"))
                    .ok()
                    .filter(|d| d.algorithm().as_str() == alg_name && d.encoded() == name);
                out.push(BlobEntry {
                    digest,
                    path: PathBuf::from("blobs").join(&alg_name).join(&name),
                    size: if meta.is_file() { meta.len() } else { 0 },
                    regular: meta.file_type().is_file(),
                });
            }
        }
        // Byte order of the whole path (a Path compares component by
        // component, which costs on 10,000s of blobs).
        out.sort_unstable_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn symlinked_blob_is_refused_and_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"{}").unwrap();
        let d = Digest::of_bytes(Algorithm::Sha256, b"{}");
        let p = dir.path().join("layout").join(d.blob_path());
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&secret, &p).unwrap();
        let store = LayoutStore::new(dir.path().join("layout"));
        match store.open_blob(&d) {
            Err(StoreError::NotRegular { what, .. }) => assert_eq!(what, "symlink"),
            other => panic!("{:?}", other.map(|b| b.len())),
        }
    }

    #[test]
    fn reads_survive_atomic_replacement() {
        // Regression: a writer renaming a new index.json into place between a
        // reader's lstat and open made the reader fail with "changed while it
        // was opened". A rename is a legitimate replacement: read the new file.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("index.json");
        fs::write(&target, b"{}").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (dir, target, stop) = (dir.path().to_path_buf(), target.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let tmp = dir.join(format!("tmp{}", i % 4));
                    fs::write(&tmp, b"{}").unwrap();
                    fs::rename(&tmp, &target).unwrap();
                    i += 1;
                }
            })
        };
        let mut failures = 0;
        for _ in 0..20_000 {
            if read_small_file(&target, 1024).is_err() {
                failures += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(
            failures, 0,
            "reads failed while the file was being replaced"
        );
    }

    #[test]
    fn read_verified_checks_size_then_digest() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of_bytes(Algorithm::Sha256, b"hello");
        let p = dir.path().join(d.blob_path());
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"hello").unwrap();
        let store = LayoutStore::new(dir.path());
        assert_eq!(store.read_verified(&d, 5, 100).unwrap(), b"hello");
        assert!(matches!(
            store.read_verified(&d, 4, 100),
            Err(StoreError::SizeMismatch { actual: 5, .. })
        ));
        assert!(matches!(
            store.read_verified(&d, 5, 4),
            Err(StoreError::TooLarge { .. })
        ));
        fs::write(&p, b"HELLO").unwrap();
        assert!(matches!(
            store.read_verified(&d, 5, 100),
            Err(StoreError::DigestMismatch { .. })
        ));
        let missing = Digest::of_bytes(Algorithm::Sha256, b"nope");
        assert!(matches!(
            store.read_verified(&missing, 4, 100),
            Err(StoreError::Missing { .. })
        ));
    }
}
