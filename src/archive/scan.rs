//! [`Archive`]: one pass over the tar headers into an index of members,
//! then positioned reads of their bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{normalize_member, parts, ArchiveError, Member, OpenOptions, MAX_LINK_HOPS};
use crate::digest::{Algorithm, Digest};
use crate::spec::Compression;
use crate::store::Blob;

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
/// Resolves a link target against `base` (a directory, "" for the root),
/// inside the archive name space.
pub(super) fn resolve_target(base: &str, target: &str) -> Option<String> {
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
    /// Opens and indexes an archive, with the default limits.
    ///
    /// # Errors
    /// See [`ArchiveError`].
    pub fn open(path: &Path) -> Result<Archive, ArchiveError> {
        Archive::open_with(path, &OpenOptions::default())
    }

    /// Opens and indexes an archive; a compressed one is decompressed under
    /// `options`' cap, stopping when its token fires.
    ///
    /// # Errors
    /// See [`ArchiveError`].
    pub fn open_with(path: &Path, options: &OpenOptions) -> Result<Archive, ArchiveError> {
        let io_err = |source: io::Error| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                return ArchiveError::Denied(path.to_path_buf());
            }
            ArchiveError::Io {
                path: path.to_path_buf(),
                source,
            }
        };
        let mut file = match parts::open_checked(path)? {
            Some(joined) => joined,
            None => open_nonblocking(path).map_err(io_err)?,
        };
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
                decompress_to_temp(
                    path,
                    file,
                    c,
                    options.limits.decompression(len),
                    &options.cancel,
                )?,
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
    pub(crate) fn has_file(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    /// A member's bytes as a blob (a slice of the tar).
    ///
    /// # Errors
    /// As [`Archive::resolve`].
    pub(crate) fn blob(&self, name: &str) -> Result<Blob, ArchiveError> {
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
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    let flags = fcntl_getfl(file)?;
    fcntl_setfl(file, flags & !OFlags::NONBLOCK)?;
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
    cancel: &crate::cancel::Cancel,
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
    let reader = BufReader::with_capacity(crate::limits::IO_BUFFER, file);
    let mut dec = crate::layer::decoder(reader, compression).map_err(decompress_err)?;
    let mut w = io::BufWriter::with_capacity(crate::limits::IO_BUFFER, &out);
    let mut buf = vec![0u8; crate::limits::IO_BUFFER];
    let mut total = 0u64;
    loop {
        if let Err(source) = cancel.check() {
            return Err(ArchiveError::Io {
                path: path.to_path_buf(),
                source,
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
