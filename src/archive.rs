//! Reading tar archives in place (oci-archive and docker-archive).
//!
//! One pass over the tar headers records where each member's bytes start;
//! reads are then positioned reads of that slice. A compressed archive (gzip
//! or zstd, detected by its bytes, never by its name) is decompressed once into
//! a temporary file, never into memory and never unpacked to a directory.
//!
//! # Security
//! Member names are normalised (`./` prefixes and `.` components dropped) and
//! rejected when absolute or containing `..`. Symlink members are resolved
//! relative to their directory, hardlinks relative to the archive root, always
//! inside the archive's own name space (never the file system), at most
//! [`MAX_LINK_HOPS`] hops. Two members with one name and different content are
//! an error (`docker load` takes the last, skopeo the first: a parser
//! differential). Decompression stops at a stated limit
//! ([`decompression_limit`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::HashMap;

use crate::digest::{Algorithm, Digest};
use crate::docker::{
    build_manifest, descriptor, layer_media_type, parse_manifest_json_noted, tag_annotations,
    ManifestItem, MAX_MANIFEST_JSON,
};
use crate::layout::IndexFile;
use crate::spec::{
    media_type, Compression, Descriptor, Kind, ANNOTATION_IMAGE_NAME, MAX_DOCUMENT_SIZE,
};
use crate::store::{Blob, BlobEntry, Store, StoreError};

/// Most links followed to reach a member.
pub const MAX_LINK_HOPS: usize = 8;

/// Why an archive cannot be read. Each names the archive and, where it
/// applies, the member.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// I/O error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The archive.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Permission denied reading the archive (an operational error).
    #[error("cannot read {}: permission denied", .0.display())]
    Denied(PathBuf),
    /// Zero bytes.
    #[error("{} is empty, not an archive", .0.display())]
    Empty(PathBuf),
    /// A valid tar archive with no member at all (only zero blocks).
    #[error("{} is an empty archive: it holds no image", .0.display())]
    NoImage(PathBuf),
    /// A FIFO, device or socket: never read (a pipe would block or be
    /// consumed, a device never ends).
    #[error("{} is not a regular file (pipes and devices are not read)", .0.display())]
    NotRegular(PathBuf),
    /// Not a tar stream.
    #[error("{} is {what}, not a tar archive", path.display())]
    NotTar {
        /// The file.
        path: PathBuf,
        /// What it looks like instead.
        what: &'static str,
    },
    /// Ends early or its tar structure is broken.
    #[error("{} is truncated or damaged: {detail}", path.display())]
    Damaged {
        /// The archive.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The compressed stream is broken.
    #[error("{} cannot be decompressed ({compression}): {source}", path.display())]
    Decompress {
        /// The archive.
        path: PathBuf,
        /// Its compression.
        compression: Compression,
        /// The error.
        source: io::Error,
    },
    /// Decompression would exceed the limit.
    #[error("{} decompresses to more than {limit} bytes; refusing (a decompression bomb?). Set OCIKIT_MAX_DECOMPRESSED to raise the limit", path.display())]
    TooLarge {
        /// The archive.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A member name that could write or read outside the archive.
    #[error("{}: member {member:?} {reason}", path.display())]
    BadName {
        /// The archive.
        path: PathBuf,
        /// The member name.
        member: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two members with one name and different content.
    #[error("{}: member {member:?} appears twice with different content", path.display())]
    Duplicate {
        /// The archive.
        path: PathBuf,
        /// The name.
        member: String,
    },
    /// A link that leaves the archive, loops, or goes too deep.
    #[error("{}: link {member:?} -> {target:?} {reason}", path.display())]
    BadLink {
        /// The archive.
        path: PathBuf,
        /// The link member.
        member: String,
        /// Its target.
        target: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A member the archive's own metadata names does not exist.
    #[error("{}: member {member:?} does not exist", path.display())]
    NoMember {
        /// The archive.
        path: PathBuf,
        /// The name.
        member: String,
    },
    /// A member that is not a regular file where one is needed.
    #[error("{}: member {member:?} is a directory, not a file", path.display())]
    NotAFile {
        /// The archive.
        path: PathBuf,
        /// The name.
        member: String,
    },
    /// The archive's image metadata is missing or wrong.
    #[error("{} {reason}", path.display())]
    Metadata {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A member larger than ocikit reads into memory.
    #[error("{}: member {member:?} is {size} bytes, over the {limit}-byte limit", path.display())]
    MemberTooLarge {
        /// The archive.
        path: PathBuf,
        /// The name.
        member: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// A regular file: where its bytes are in the (decompressed) tar.
    File {
        /// Offset of the data.
        offset: u64,
        /// Its size.
        size: u64,
    },
    /// A symlink or hardlink, its target already resolved to a member name.
    Link(String),
    /// A directory.
    Dir,
}

/// A tar archive, indexed.
pub struct Archive {
    path: PathBuf,
    file: Arc<File>,
    compression: Compression,
    members: BTreeMap<String, Member>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("path", &self.path)
            .field("compression", &self.compression)
            .field("members", &self.members.len())
            .finish()
    }
}

/// The most bytes a compressed archive may decompress to: 100 × its size, at
/// least 1 GiB; `OCIKIT_MAX_DECOMPRESSED` (bytes) overrides. Image archives
/// hold mostly compressed layers (ratio near 1); uncompressed docker layers
/// rarely pass 10; a bomb is in the thousands.
pub fn decompression_limit(compressed: u64) -> u64 {
    if let Some(v) = std::env::var("OCIKIT_MAX_DECOMPRESSED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return v;
    }
    compressed.saturating_mul(100).max(1 << 30)
}

/// Whether a 512-byte block is a tar header with a valid checksum.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .skip_while(|c| *c == ' ')
        .collect();
    let Ok(want) = u64::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u64 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u64
            }
        })
        .sum();
    sum == want
}

fn what_is(head: &[u8]) -> &'static str {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        "a zip file"
    } else if head.starts_with(b"BZh") {
        "bzip2 data (unsupported)"
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "xz data (unsupported)"
    } else if head.starts_with(b"{") || head.starts_with(b"[") {
        "JSON"
    } else {
        "not recognisable"
    }
}

/// Normalises a member name: drops `./` and `.` components and trailing `/`;
/// refuses absolute names, `..` components and empty names.
pub fn normalize_member(name: &str) -> Result<String, &'static str> {
    if name.starts_with('/') {
        return Err("is an absolute path");
    }
    let mut parts = Vec::new();
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err("contains '..'"),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("is empty");
    }
    Ok(parts.join("/"))
}

/// Resolves a link target against `base` (a directory, "" for the root),
/// inside the archive name space.
fn resolve_target(base: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl Archive {
    /// Opens and indexes an archive.
    ///
    /// # Errors
    /// See [`ArchiveError`].
    pub fn open(path: &Path) -> Result<Archive, ArchiveError> {
        let io_err = |source: io::Error| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                return ArchiveError::Denied(path.to_path_buf());
            }
            ArchiveError::Io {
                path: path.to_path_buf(),
                source,
            }
        };
        let mut file = open_nonblocking(path).map_err(io_err)?;
        // fstat on what was opened: no window between a check and the open.
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            return Err(ArchiveError::NotTar {
                path: path.to_path_buf(),
                what: "a directory",
            });
        }
        if !meta.is_file() {
            return Err(ArchiveError::NotRegular(path.to_path_buf()));
        }
        clear_nonblocking(&file).map_err(io_err)?;
        let len = meta.len();
        if len == 0 {
            return Err(ArchiveError::Empty(path.to_path_buf()));
        }
        let mut head = vec![0u8; 512.min(len as usize)];
        file.read_exact(&mut head).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        let (file, compression) = match Compression::sniff(&head) {
            Some(c) => (
                decompress_to_temp(path, file, c, decompression_limit(len))?,
                c,
            ),
            None => (file, Compression::None),
        };
        let mut archive = Archive {
            path: path.to_path_buf(),
            file: Arc::new(file),
            compression,
            members: BTreeMap::new(),
        };
        archive.index()?;
        Ok(archive)
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the archive as a whole was compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Every member, by normalised name.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    fn damaged(&self, detail: String) -> ArchiveError {
        ArchiveError::Damaged {
            path: self.path.clone(),
            detail,
        }
    }

    /// Whether the (decompressed) archive is at least the two end-of-archive
    /// blocks long and holds nothing but zero bytes: an empty tar. Only small
    /// files are read to tell (an empty tar from `tar cf x.tar -T /dev/null`
    /// is 10 KiB).
    fn all_zero(&self, len: u64) -> bool {
        const MAX: u64 = 1 << 20;
        if !(1024..=MAX).contains(&len) {
            return false;
        }
        let mut buf = vec![0u8; len as usize];
        self.file.read_at_full(&mut buf, 0) == buf.len() && buf.iter().all(|&b| b == 0)
    }

    fn index(&mut self) -> Result<(), ArchiveError> {
        let file_len = self
            .file
            .metadata()
            .map_err(|source| ArchiveError::Io {
                path: self.path.clone(),
                source,
            })?
            .len();
        let mut head = vec![0u8; 512.min(file_len as usize)];
        let n = self.file.read_at_full(&mut head, 0);
        if n == 512 && head.iter().all(|&b| b == 0) && self.all_zero(file_len) {
            return Err(ArchiveError::NoImage(self.path.clone()));
        }
        if n < 512 || !is_tar_header(&head) {
            let what = if self.compression == Compression::None {
                what_is(&head)
            } else {
                "compressed data that is not a tar stream"
            };
            return Err(ArchiveError::NotTar {
                path: self.path.clone(),
                what,
            });
        }
        let mut links: Vec<(String, String, bool)> = Vec::new();
        let file = self.file.clone();
        // The header pass reads sequentially from the start, whatever the
        // cursor (a freshly decompressed temp file's is at its end).
        (&*file).rewind().map_err(|source| ArchiveError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut tar = tar::Archive::new(&*file);
        let entries = tar
            .entries_with_seek()
            .map_err(|e| self.damaged(e.to_string()))?;
        // Where the last member's data (padded to 512) ends: the end-of-archive
        // marker must follow, or the archive was cut at a member boundary.
        let mut data_end = 0u64;
        for entry in entries {
            let entry = entry.map_err(|e| self.damaged(e.to_string()))?;
            let end = entry
                .raw_file_position()
                .saturating_add(entry.size().div_ceil(512) * 512);
            data_end = data_end.max(end);
            let raw = entry.path_bytes();
            let raw = String::from_utf8(raw.into_owned()).map_err(|_| ArchiveError::BadName {
                path: self.path.clone(),
                member: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                reason: "is not UTF-8",
            })?;
            let name = match normalize_member(&raw) {
                Ok(n) => n,
                Err(_) if raw.trim_start_matches("./").is_empty() || raw == "." => continue,
                Err(reason) => {
                    return Err(ArchiveError::BadName {
                        path: self.path.clone(),
                        member: raw,
                        reason,
                    })
                }
            };
            let kind = entry.header().entry_type();
            let member = match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let offset = entry.raw_file_position();
                    let size = entry.size();
                    if offset.checked_add(size).is_none_or(|end| end > file_len) {
                        return Err(self.damaged(format!(
                            "member {name:?} claims {size} bytes but the archive ends first"
                        )));
                    }
                    Member::File { offset, size }
                }
                tar::EntryType::Directory => Member::Dir,
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    links.push((name.clone(), target, kind == tar::EntryType::Symlink));
                    continue;
                }
                // Devices, FIFOs and other types have no place in an image
                // archive; they are ignored, never created.
                _ => continue,
            };
            self.insert(name, member)?;
        }
        let mut marker = [0u8; 512];
        let n = self.file.read_at_full(&mut marker, data_end);
        if n < 512 || marker.iter().any(|b| *b != 0) {
            return Err(self.damaged(format!(
                "it ends at byte {} without the tar end-of-archive marker after its last member (cut short?)",
                file_len
            )));
        }
        for (name, target, symlink) in links {
            let base = if symlink {
                name.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
            } else {
                ""
            };
            let resolved = resolve_target(base, &target).ok_or_else(|| ArchiveError::BadLink {
                path: self.path.clone(),
                member: name.clone(),
                target: target.clone(),
                reason: "points outside the archive",
            })?;
            self.insert(name, Member::Link(resolved))?;
        }
        Ok(())
    }

    fn insert(&mut self, name: String, member: Member) -> Result<(), ArchiveError> {
        match self.members.get(&name) {
            None => {
                self.members.insert(name, member);
                Ok(())
            }
            Some(old) if *old == member => Ok(()),
            Some(Member::Dir) if member == Member::Dir => Ok(()),
            Some(Member::File { offset, size }) => {
                if let Member::File {
                    offset: o2,
                    size: s2,
                } = member
                {
                    if *size == s2 && self.same_bytes(*offset, o2, s2)? {
                        return Ok(());
                    }
                }
                Err(ArchiveError::Duplicate {
                    path: self.path.clone(),
                    member: name,
                })
            }
            Some(_) => Err(ArchiveError::Duplicate {
                path: self.path.clone(),
                member: name,
            }),
        }
    }

    fn same_bytes(&self, a: u64, b: u64, size: u64) -> Result<bool, ArchiveError> {
        let h = |off: u64| {
            Blob::slice(self.file.clone(), off, size)
                .hash(Algorithm::Sha256)
                .map(|(d, _)| d)
                .map_err(|source| ArchiveError::Io {
                    path: self.path.clone(),
                    source,
                })
        };
        Ok(h(a)? == h(b)?)
    }

    /// Follows links from `name` to a regular file member.
    ///
    /// # Errors
    /// Missing members, directories, loops and over-long chains.
    pub fn resolve(&self, name: &str) -> Result<(u64, u64), ArchiveError> {
        let mut current = normalize_member(name).map_err(|reason| ArchiveError::BadName {
            path: self.path.clone(),
            member: name.to_string(),
            reason,
        })?;
        for _ in 0..=MAX_LINK_HOPS {
            match self.members.get(&current) {
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Link(target)) => current = target.clone(),
                Some(Member::Dir) => {
                    return Err(ArchiveError::NotAFile {
                        path: self.path.clone(),
                        member: current,
                    })
                }
                None => {
                    return Err(ArchiveError::NoMember {
                        path: self.path.clone(),
                        member: current,
                    })
                }
            }
        }
        Err(ArchiveError::BadLink {
            path: self.path.clone(),
            member: name.to_string(),
            target: current,
            reason: "is part of a loop or a chain of more than 8 links",
        })
    }

    /// Whether a member (after links) exists as a file.
    pub fn has_file(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    /// A member's bytes as a blob (a slice of the tar).
    ///
    /// # Errors
    /// As [`Archive::resolve`].
    pub fn blob(&self, name: &str) -> Result<Blob, ArchiveError> {
        let (offset, size) = self.resolve(name)?;
        Ok(Blob::slice(self.file.clone(), offset, size))
    }

    /// Reads a small member fully.
    ///
    /// # Errors
    /// As [`Archive::resolve`], plus [`ArchiveError::MemberTooLarge`].
    pub fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, ArchiveError> {
        let blob = self.blob(name)?;
        if blob.len() > limit {
            return Err(ArchiveError::MemberTooLarge {
                path: self.path.clone(),
                member: name.to_string(),
                size: blob.len(),
                limit,
            });
        }
        let mut out = Vec::with_capacity(blob.len() as usize);
        blob.copy_to(&mut out).map_err(|source| ArchiveError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(out)
    }

    /// The digest of a member's bytes.
    ///
    /// # Errors
    /// As [`Archive::resolve`], and read errors.
    pub fn digest(&self, name: &str) -> Result<Digest, ArchiveError> {
        self.blob(name)?
            .hash(Algorithm::Sha256)
            .map(|(d, _)| d)
            .map_err(|source| ArchiveError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// Opens `path` for reading with `O_NONBLOCK`, so that opening a FIFO with
/// no writer returns at once instead of blocking (symlinks are followed: an
/// archive may be reached through one).
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Clears `O_NONBLOCK` again on a file known to be regular.
fn clear_nonblocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows (open for the
    // whole call); F_GETFL/F_SETFL take and return plain integers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

trait ReadAtFull {
    fn read_at_full(&self, buf: &mut [u8], pos: u64) -> usize;
}

impl ReadAtFull for File {
    fn read_at_full(&self, buf: &mut [u8], pos: u64) -> usize {
        use std::os::unix::fs::FileExt;
        let mut n = 0;
        while n < buf.len() {
            match self.read_at(&mut buf[n..], pos + n as u64) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    }
}

/// Decompresses `file` into an anonymous temporary file, at most `limit` bytes.
fn decompress_to_temp(
    path: &Path,
    file: File,
    compression: Compression,
    limit: u64,
) -> Result<File, ArchiveError> {
    // An unnamed file (O_TMPFILE, or unlinked at once): it is only ever read
    // through this descriptor, so nothing is left in $TMPDIR however ocikit
    // ends, SIGKILL included.
    let temp_path = std::env::temp_dir();
    let out = tempfile::tempfile().map_err(|source| ArchiveError::Io {
        path: temp_path.clone(),
        source,
    })?;
    let decompress_err = |source| ArchiveError::Decompress {
        path: path.to_path_buf(),
        compression,
        source,
    };
    let reader = BufReader::with_capacity(256 << 10, file);
    let mut dec = crate::layer::decoder(reader, compression).map_err(decompress_err)?;
    let mut w = io::BufWriter::with_capacity(256 << 10, &out);
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        if crate::flatten::cancelled() {
            return Err(ArchiveError::Io {
                path: path.to_path_buf(),
                source: crate::flatten::interrupted(),
            });
        }
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(decompress_err(e)),
        };
        total += n as u64;
        if total > limit {
            return Err(ArchiveError::TooLarge {
                path: path.to_path_buf(),
                limit,
            });
        }
        w.write_all(&buf[..n]).map_err(|source| ArchiveError::Io {
            path: temp_path.to_path_buf(),
            source,
        })?;
    }
    w.flush().map_err(|source| ArchiveError::Io {
        path: temp_path.to_path_buf(),
        source,
    })?;
    drop(w);
    Ok(out)
}

/// What kind of image archive an [`ArchiveStore`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A tar of an OCI layout.
    Oci,
    /// `docker save` 25+ (and containerd exports): an OCI layout plus `manifest.json`.
    DockerOci,
    /// `manifest.json` only (`docker save` before 25, skopeo, go-containerregistry).
    DockerLegacy,
}

/// Which format the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `oci-archive:`
    Oci,
    /// `docker-archive:`
    Docker,
    /// Whatever it is.
    Any,
}

/// An image archive read as a store: blobs are slices of the tar; documents
/// that the archive lacks (legacy docker-archives have no manifest blob) are
/// built in memory, deterministically.
pub struct ArchiveStore {
    archive: Archive,
    format: ArchiveFormat,
    index: Vec<u8>,
    built: HashMap<Digest, Arc<[u8]>>,
    aliases: HashMap<Digest, String>,
    notes: Vec<String>,
    /// Compressed layers of legacy images: their digest was computed here,
    /// so only the config's DiffID can tell whether they are intact.
    diff_id_only: std::collections::HashSet<Digest>,
}

impl std::fmt::Debug for ArchiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveStore")
            .field("archive", &self.archive)
            .field("format", &self.format)
            .finish()
    }
}

fn meta_err(path: &Path, reason: String) -> ArchiveError {
    ArchiveError::Metadata {
        path: path.to_path_buf(),
        reason,
    }
}

impl ArchiveStore {
    /// Opens an image archive.
    ///
    /// # Errors
    /// Unreadable archives, and archives that are not image archives of the
    /// expected kind.
    pub fn open(path: &Path, expect: Expect) -> Result<ArchiveStore, ArchiveError> {
        let archive = Archive::open(path)?;
        // A metadata member that is there but is no file (a directory, a link
        // loop, a link to nothing) is named as what it is, not taken as absent.
        for name in ["oci-layout", "index.json", "manifest.json"] {
            if archive.members().contains_key(name) {
                archive.resolve(name)?;
            }
        }
        let has_layout = archive.has_file("oci-layout") && archive.has_file("index.json");
        let has_manifest = archive.has_file("manifest.json");
        let format = match (expect, has_layout, has_manifest) {
            (Expect::Oci, true, false) => ArchiveFormat::Oci,
            (Expect::Oci | Expect::Any | Expect::Docker, true, true) => ArchiveFormat::DockerOci,
            (Expect::Any, true, false) => ArchiveFormat::Oci,
            (Expect::Docker, true, false) => ArchiveFormat::Oci,
            (Expect::Docker | Expect::Any, false, true) => ArchiveFormat::DockerLegacy,
            (Expect::Oci, false, true) => {
                return Err(meta_err(
                    path,
                    "has no oci-layout and index.json; it is a docker-archive (use docker-archive:)".into(),
                ))
            }
            (_, false, false) => {
                return Err(meta_err(
                    path,
                    "has neither oci-layout and index.json nor manifest.json, so it is not an image archive (archives from Docker before 1.10 are not supported)".into(),
                ))
            }
        };
        let mut store = ArchiveStore {
            archive,
            format,
            index: Vec::new(),
            built: HashMap::new(),
            aliases: HashMap::new(),
            notes: Vec::new(),
            diff_id_only: std::collections::HashSet::new(),
        };
        match format {
            ArchiveFormat::Oci => store.load_oci_view()?,
            ArchiveFormat::DockerOci => {
                store.load_oci_view()?;
                store.add_docker_images()?;
            }
            ArchiveFormat::DockerLegacy => {
                store.index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec();
                store.add_docker_images()?;
            }
        }
        Ok(store)
    }

    /// The format found.
    pub fn format(&self) -> ArchiveFormat {
        self.format
    }

    /// Things ocikit did that the user should know (a manifest built for a
    /// legacy image, RepoTags it could not read).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// `index.json` as stored in the archive (`None` for legacy docker-archives,
    /// which have none).
    pub fn stored_index(&self) -> Option<Vec<u8>> {
        match self.format {
            ArchiveFormat::DockerLegacy => None,
            _ => self.archive.read("index.json", MAX_DOCUMENT_SIZE).ok(),
        }
    }

    /// The underlying archive.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    fn load_oci_view(&mut self) -> Result<(), ArchiveError> {
        let path = self.archive.path().to_path_buf();
        let layout = self.archive.read("oci-layout", 64 << 10)?;
        let v: serde_json::Value = serde_json::from_slice(&layout)
            .map_err(|e| meta_err(&path, format!("oci-layout is not valid JSON: {e}")))?;
        match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
            Some(crate::layout::IMAGE_LAYOUT_VERSION) => {}
            Some(other) => self.notes.push(format!(
                "oci-layout has imageLayoutVersion {other:?}; reading it as 1.0.0"
            )),
            None => {
                return Err(meta_err(
                    &path,
                    "oci-layout has no imageLayoutVersion".into(),
                ))
            }
        }
        self.index = self.archive.read("index.json", MAX_DOCUMENT_SIZE)?;
        Ok(())
    }

    /// Adds `manifest.json`'s images to the index. Where the archive has an
    /// OCI view (`index.json`: Docker 25+, containerd, podman), that view is
    /// the authority and `manifest.json` its legacy view: a legacy entry is
    /// paired with an OCI manifest by its config *and* its layer files (two
    /// manifests may share a config), and never adds or moves an image the
    /// OCI view already names or reaches. Legacy images with no manifest blob
    /// get one built.
    fn add_docker_images(&mut self) -> Result<(), ArchiveError> {
        let path = self.archive.path().to_path_buf();
        let bytes = self.archive.read("manifest.json", MAX_MANIFEST_JSON)?;
        let (items, notes) = parse_manifest_json_noted(&bytes).map_err(|e| meta_err(&path, e))?;
        self.notes.extend(notes);
        let mut index = IndexFile::parse(&self.index)
            .map_err(|e| meta_err(&path, format!("index.json {e}")))?;
        let reached = self.oci_view_manifests(&index);
        let mut changed = false;
        for (n, item) in items.iter().enumerate() {
            let tags = item.repo_tags.clone().unwrap_or_default();
            let named: Vec<(String, Option<BTreeMap<String, String>>)> = tags
                .iter()
                .map(|t| (t.clone(), tag_annotations(t)))
                .collect();
            // Every name this item carries is one the OCI view has already.
            let all_named = !named.is_empty()
                && named.iter().all(|(t, ann)| {
                    let full = ann.as_ref().and_then(|a| a.get(ANNOTATION_IMAGE_NAME));
                    index.entries.iter().any(|e| {
                        let d = &e.descriptor;
                        d.ref_name() == Some(t.as_str())
                            || full.is_some_and(|f| {
                                d.annotation(ANNOTATION_IMAGE_NAME) == Some(f.as_str())
                                    || d.ref_name() == Some(f.as_str())
                            })
                    })
                });
            // Readers that go by manifest.json must find every layer it names.
            if self.format == ArchiveFormat::DockerOci {
                self.check_layer_members(item)?;
            }
            let paired = self.paired_manifest(n, item)?;
            if all_named {
                continue;
            }
            let manifest = match paired {
                Some(d) => d,
                None => self.build_legacy(n, item)?,
            };
            if named.is_empty() {
                // An unnamed image the OCI view reaches is already there.
                if !reached.contains(&manifest.digest)
                    && !index
                        .entries
                        .iter()
                        .any(|e| e.descriptor.digest == manifest.digest)
                {
                    index.push(&manifest);
                    changed = true;
                }
                continue;
            }
            for (t, ann) in named {
                let Some(ann) = ann else {
                    self.notes.push(format!("manifest.json image {n}: RepoTag {t:?} is not a tagged docker reference; ignored"));
                    continue;
                };
                let full = ann.get(ANNOTATION_IMAGE_NAME).cloned();
                let present = index.entries.iter().any(|e| {
                    e.descriptor.annotation(ANNOTATION_IMAGE_NAME) == full.as_deref()
                        || e.descriptor.ref_name() == Some(t.as_str())
                });
                if !present {
                    let mut d = manifest.clone();
                    d.annotations = Some(ann);
                    index.push(&d);
                    changed = true;
                }
            }
        }
        if changed {
            self.index = index.to_bytes().into_bytes();
        }
        Ok(())
    }

    /// Digests of the manifests and indexes the OCI view reaches from
    /// `index.json` (through nested indexes).
    fn oci_view_manifests(&self, index: &IndexFile) -> std::collections::HashSet<String> {
        let mut seen = std::collections::HashSet::new();
        let mut queue: Vec<Descriptor> =
            index.entries.iter().map(|e| e.descriptor.clone()).collect();
        while let Some(d) = queue.pop() {
            if !seen.insert(d.digest.clone()) || seen.len() > 100_000 {
                continue;
            }
            if d.kind() != Kind::Index {
                continue;
            }
            let Ok(dg) = d.digest() else { continue };
            let Ok(bytes) = self.archive.read(&self.member_for(&dg), MAX_DOCUMENT_SIZE) else {
                continue;
            };
            if let Ok(crate::spec::Document::Index(idx)) =
                crate::spec::parse_document(&bytes, Kind::Index)
            {
                queue.extend(idx.entries().iter().cloned());
            }
        }
        seen
    }

    /// The OCI manifest a `manifest.json` item stands for: same config and
    /// the same layer files, in order. When manifests share the config but
    /// none has those layers, a note says the two views disagree.
    fn paired_manifest(
        &mut self,
        n: usize,
        item: &ManifestItem,
    ) -> Result<Option<Descriptor>, ArchiveError> {
        let candidates = self.stored_manifests_for(&item.config)?;
        let mut found = None;
        for (desc, man) in &candidates {
            let layers = man.layers.as_deref().unwrap_or(&[]);
            if layers.len() == item.layers.len()
                && item
                    .layers
                    .iter()
                    .zip(layers)
                    .all(|(p, l)| self.same_member(p, l))
            {
                found = Some(desc.clone());
                break;
            }
        }
        if found.is_none() && !candidates.is_empty() {
            self.notes.push(format!(
                "{}: manifest.json image {n} lists other layer files than its OCI manifest {} (the one sharing its config); ocikit reads the OCI view, docker load before 25 reads manifest.json",
                self.archive.path().display(),
                candidates.iter().map(|(d, _)| d.digest.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(found)
    }

    /// Whether the member `path` is the blob `desc` names (the same bytes of
    /// the archive), or both are absent for a foreign layer.
    fn same_member(&self, path: &str, desc: &Descriptor) -> bool {
        let Ok(digest) = desc.digest() else {
            return false;
        };
        match (
            self.archive.resolve(path),
            self.archive.resolve(&self.member_for(&digest)),
        ) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => desc.is_foreign(),
            _ => false,
        }
    }

    /// Every layer member `manifest.json` names exists (a layer LayerSources
    /// describes may be left out, as a foreign layer is): readers that go by
    /// `manifest.json` must find what ocikit read from the OCI view.
    fn check_layer_members(&self, item: &ManifestItem) -> Result<(), ArchiveError> {
        let mut diff_ids = None;
        for (i, layer) in item.layers.iter().enumerate() {
            match self.archive.resolve(layer) {
                Err(e @ ArchiveError::NoMember { .. }) => {
                    let Some(sources) = item.layer_sources.as_ref().filter(|s| !s.is_empty())
                    else {
                        return Err(e);
                    };
                    if diff_ids.is_none() {
                        let bytes = self.archive.read(&item.config, MAX_DOCUMENT_SIZE)?;
                        diff_ids = Some(
                            crate::spec::parse_config(&bytes)
                                .ok()
                                .and_then(|c| c.rootfs)
                                .and_then(|r| r.diff_ids)
                                .unwrap_or_default(),
                        );
                    }
                    let described = diff_ids
                        .as_ref()
                        .and_then(|d| d.get(i))
                        .is_some_and(|d| sources.contains_key(d));
                    if !described {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// The manifest blobs of the OCI view whose config is `config_member`,
    /// in member order.
    fn stored_manifests_for(
        &self,
        config_member: &str,
    ) -> Result<Vec<(Descriptor, crate::spec::ImageManifest)>, ArchiveError> {
        let mut out = Vec::new();
        if self.format != ArchiveFormat::DockerOci {
            return Ok(out);
        }
        let config = self.archive.digest(config_member)?.to_string();
        for (name, m) in self.archive.members() {
            let Member::File { size, .. } = m else {
                continue;
            };
            if !name.starts_with("blobs/") || *size > MAX_DOCUMENT_SIZE || *size < 2 {
                continue;
            }
            let Ok(bytes) = self.archive.read(name, MAX_DOCUMENT_SIZE) else {
                continue;
            };
            if bytes.first() != Some(&b'{') {
                continue;
            }
            let Ok(crate::spec::Document::Manifest(man)) =
                crate::spec::parse_document(&bytes, Kind::Unknown)
            else {
                continue;
            };
            if man.config.as_ref().map(|c| c.digest.as_str()) == Some(config.as_str()) {
                let digest = Digest::of_bytes(Algorithm::Sha256, &bytes);
                let mt = man
                    .media_type
                    .clone()
                    .unwrap_or_else(|| media_type::OCI_MANIFEST.to_string());
                out.push((descriptor(&mt, &digest, bytes.len() as u64), man));
            }
        }
        Ok(out)
    }

    /// Builds the manifest of a legacy docker-archive image.
    fn build_legacy(&mut self, n: usize, item: &ManifestItem) -> Result<Descriptor, ArchiveError> {
        let path = self.archive.path().to_path_buf();
        let config_bytes = self.archive.read(&item.config, MAX_DOCUMENT_SIZE)?;
        let config_digest = Digest::of_bytes(Algorithm::Sha256, &config_bytes);
        let cfg = crate::spec::parse_config(&config_bytes)
            .map_err(|e| meta_err(&path, format!("config {:?} {e}", item.config)))?;
        let diff_ids = cfg.rootfs.and_then(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != item.layers.len() {
            return Err(meta_err(
                &path,
                format!(
                    "image {n} lists {} layers but its config has {} diff_ids",
                    item.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        self.aliases
            .insert(config_digest.clone(), item.config.clone());
        let config = descriptor(
            media_type::OCI_CONFIG,
            &config_digest,
            config_bytes.len() as u64,
        );
        let mut layers = Vec::with_capacity(item.layers.len());
        for (layer, diff_id) in item.layers.iter().zip(&diff_ids) {
            // LayerSources describes the layer as distributed (foreign layers;
            // every layer since Docker 25). It stands for the member when the
            // member is absent (a foreign layer left out) or is that very blob;
            // an archive may also hold the layer uncompressed instead.
            if let Some(src) = item.layer_sources.as_ref().and_then(|m| m.get(diff_id)) {
                let d = src
                    .digest()
                    .map_err(|e| meta_err(&path, format!("LayerSources[{diff_id}]: {e}")))?;
                let member_size = self.archive.resolve(layer).ok().map(|(_, size)| size);
                if member_size.is_none() || member_size == Some(src.size.max(0) as u64) {
                    if member_size.is_some() {
                        self.aliases.insert(d, layer.clone());
                    }
                    layers.push(src.clone());
                    continue;
                }
            }
            let blob = self.archive.blob(layer)?;
            let mut head = [0u8; 4];
            let k = blob.read_at(&mut head, 0).unwrap_or(0);
            let compression = Compression::sniff(&head[..k]).unwrap_or(Compression::None);
            let digest = match compression {
                // An uncompressed layer's digest is its DiffID; every read checks it.
                Compression::None => Digest::parse(diff_id)
                    .map_err(|e| meta_err(&path, format!("config diff_id: {e}")))?,
                _ => {
                    let d = self.archive.digest(layer)?;
                    self.diff_id_only.insert(d.clone());
                    d
                }
            };
            self.aliases.insert(digest.clone(), layer.clone());
            layers.push(descriptor(
                layer_media_type(compression),
                &digest,
                blob.len(),
            ));
        }
        let bytes = build_manifest(&config, &layers);
        let digest = Digest::of_bytes(Algorithm::Sha256, &bytes);
        let size = bytes.len() as u64;
        self.notes.push(format!(
            "{}: image {n} ({}) has no manifest in the archive; ocikit built {digest} from its config and layers",
            path.display(),
            item.repo_tags.as_ref().and_then(|t| t.first()).map_or("untagged", String::as_str),
        ));
        self.built.insert(digest.clone(), Arc::from(bytes));
        Ok(descriptor(media_type::OCI_MANIFEST, &digest, size))
    }

    fn member_for(&self, digest: &Digest) -> String {
        self.aliases
            .get(digest)
            .cloned()
            .unwrap_or_else(|| digest.blob_path().to_string_lossy().into_owned())
    }
}

impl Store for ArchiveStore {
    fn diff_id_is_only_check(&self, digest: &Digest) -> bool {
        self.diff_id_only.contains(digest)
    }

    fn name(&self) -> String {
        self.archive.path().display().to_string()
    }

    fn index_bytes(&self) -> Result<Vec<u8>, StoreError> {
        Ok(self.index.clone())
    }

    fn open_blob(&self, digest: &Digest) -> Result<Blob, StoreError> {
        if let Some(b) = self.built.get(digest) {
            return Ok(Blob::memory(b.clone()));
        }
        let member = self.member_for(digest);
        match self.archive.blob(&member) {
            Ok(b) => Ok(b),
            Err(ArchiveError::NoMember { .. }) => Err(StoreError::Missing {
                digest: digest.clone(),
                path: self.blob_location(digest),
            }),
            Err(ArchiveError::NotAFile { .. }) => Err(StoreError::NotRegular {
                path: self.blob_location(digest),
                what: "directory",
            }),
            Err(e) => Err(StoreError::Io {
                path: self.blob_location(digest),
                source: io::Error::other(e.to_string()),
            }),
        }
    }

    fn blob_location(&self, digest: &Digest) -> PathBuf {
        PathBuf::from(format!(
            "{}:{}",
            self.archive.path().display(),
            self.member_for(digest)
        ))
    }

    fn list_blobs(&self) -> Result<Vec<BlobEntry>, StoreError> {
        let mut out = Vec::new();
        for (name, m) in self.archive.members() {
            let Some(rest) = name.strip_prefix("blobs/") else {
                continue;
            };
            let Member::File { size, .. } = m else {
                continue;
            };
            let digest = rest
                .split_once('/')
                .and_then(|(alg, enc)| Digest::parse(&format!("{alg}:{enc}")).ok());
            out.push(BlobEntry {
                digest,
                path: PathBuf::from(name),
                size: *size,
                regular: true,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(normalize_member("./a//b/./c").unwrap(), "a/b/c");
        assert_eq!(normalize_member("blobs/sha256/").unwrap(), "blobs/sha256");
        assert!(normalize_member("/etc/passwd").is_err());
        assert!(normalize_member("a/../../b").is_err());
        assert!(normalize_member("./").is_err());
        assert_eq!(
            resolve_target("x/y", "../z/layer.tar").as_deref(),
            Some("x/z/layer.tar")
        );
        assert_eq!(resolve_target("", "../x"), None);
        assert_eq!(resolve_target("a", "/abs"), None);
    }
}
