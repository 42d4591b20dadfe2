//! A streaming tar reader for layer contents, written for hostile input.
//!
//! The `tar` crate is used to *write* archives; layers are *read* with this
//! module because image layers come from every tar writer there is, and the
//! crate (0.4.46) refuses or misreads several that real tools produce (GNU
//! and PAX sparse 0.x/1.0 maps, repeated long-name or PAX headers, size
//! fields on hardlink and old-style directory entries, GNU volume labels).
//!
//! What it reads: V7, ustar (with prefix), star, GNU (long names and links,
//! old-style sparse with extension headers, dump directories, volume labels),
//! PAX local and global headers (`path`, `linkpath`, `size`, `uid`, `gid`,
//! `mtime`, `uname`, `gname`, `SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`, GNU
//! sparse 0.0, 0.1 and 1.0). Streams that end without the two zero blocks
//! end cleanly at a header boundary, or right after a member's complete data
//! without its padding (umoci 0.4.7 `insert` writes such layers); a stream
//! that ends inside a header or inside an entry's data is truncated.
//!
//! # Security
//! Extended headers are capped at [`MAX_EXTENDED`] bytes, sparse maps at
//! [`MAX_SPARSE`] fragments, and nothing is allocated from a size field
//! before that cap is checked. Names are returned as raw bytes; making them
//! safe is the caller's job (see `flatten`). Sizes of header-only types
//! (links, directories, devices, FIFOs) are ignored, as Go and POSIX do.

use std::io::{self, Read};

/// Largest PAX or GNU long-name/long-link payload accepted.
pub const MAX_EXTENDED: u64 = 1 << 20;
/// Largest number of fragments in a sparse map.
pub const MAX_SPARSE: usize = 1 << 16;
const BLOCK: usize = 512;

/// Why a tar stream cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// The stream is not a tar header where one should be.
    #[error("bad tar header at offset {offset}: {reason}")]
    Header {
        /// Byte offset of the header in the tar stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An extended (PAX/GNU) header is unreadable.
    #[error("bad {kind} header for entry at offset {offset}: {reason}")]
    Extended {
        /// `pax` or `GNU long name`, …
        kind: &'static str,
        /// Byte offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The stream ended inside a header or inside an entry's data.
    #[error("tar stream is truncated at offset {offset}{}", entry_suffix(.entry))]
    Truncated {
        /// Byte offset where more was expected.
        offset: u64,
        /// The entry being read, if any.
        entry: Option<String>,
    },
    /// Reading failed (this includes decompression errors below the reader).
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn entry_suffix(e: &Option<String>) -> String {
    e.as_ref()
        .map(|n| format!(" (inside entry {n:?})"))
        .unwrap_or_default()
}

/// The type of an entry, after V7/GNU/PAX conventions are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (`0`, NUL, `7`, and GNU sparse `S`).
    Regular,
    /// A hard link (`1`).
    Hardlink,
    /// A symbolic link (`2`).
    Symlink,
    /// A character device (`3`).
    Char,
    /// A block device (`4`).
    Block,
    /// A directory (`5`, GNU dump dir `D`, or V7 name ending in `/`).
    Directory,
    /// A FIFO (`6`).
    Fifo,
    /// Anything else (vendor types); its data is skipped.
    Other(u8),
}

/// One member of a tar stream.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name as stored (PAX `path`, GNU long name or header name+prefix).
    pub path: Vec<u8>,
    /// Link target for hard and symbolic links.
    pub link: Vec<u8>,
    /// The type.
    pub kind: EntryKind,
    /// Raw typeflag byte.
    pub typeflag: u8,
    /// Mode bits (permissions, setuid/setgid/sticky), file type bits removed.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch (may be negative).
    pub mtime: i64,
    /// Nanoseconds part of the modification time (from PAX).
    pub mtime_nsec: u32,
    /// Logical size of the file (for sparse files, the real size).
    pub size: u64,
    /// Bytes of data stored in the stream for this entry.
    pub stored: u64,
    /// Device numbers.
    pub dev_major: u32,
    /// Device numbers.
    pub dev_minor: u32,
    /// Extended attributes (SCHILY.xattr / LIBARCHIVE.xattr), in order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Sparse map: (offset, length) fragments of the stored data, if sparse.
    pub sparse: Option<Vec<(u64, u64)>>,
    /// Offset of the entry's first header in the stream.
    pub offset: u64,
}

impl Entry {
    /// The name for messages (lossy UTF-8, shortened past 200 characters).
    pub(crate) fn display_name(&self) -> String {
        display_bytes(&self.path)
    }
}

/// Lossy UTF-8, shortened for messages.
pub(crate) fn display_bytes(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 200 {
        let mut t: String = s.chars().take(200).collect();
        t.push('…');
        t
    } else {
        s.into_owned()
    }
}

/// Streams entries out of a tar byte stream.
pub struct TarReader<R> {
    inner: R,
    /// Bytes consumed so far.
    pos: u64,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    /// The current entry's name (for truncation messages).
    current: Option<String>,
    global: Vec<(Vec<u8>, Vec<u8>)>,
    done: bool,
    entries: u64,
}

impl<R: Read> TarReader<R> {
    /// A reader over `inner` (give it a buffered reader).
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            padding: 0,
            current: None,
            global: Vec::new(),
            done: false,
            entries: 0,
        }
    }

    /// Entries returned so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes of the tar stream consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Gives back the underlying reader (positioned after what was consumed).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads the current entry's stored data.
    ///
    /// # Errors
    /// I/O errors; a stream that ends early is [`TarError::Truncated`]
    /// (reported as `UnexpectedEof` with that message).
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                TarError::Truncated {
                    offset: self.pos,
                    entry: self.current.clone(),
                }
                .to_string(),
            ));
        }
        self.pos += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                return Err(TarError::Truncated {
                    offset: self.pos,
                    entry: self.current.clone(),
                });
            }
            self.pos += got as u64;
            n -= got as u64;
        }
        Ok(())
    }

    /// Skips up to `n` bytes of padding; `Ok(false)` when the stream ends
    /// inside it (a complete stream without padding or end blocks).
    fn skip_padding(&mut self, mut n: u64) -> Result<bool, TarError> {
        let mut buf = [0u8; BLOCK];
        while n > 0 {
            let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                return Ok(false);
            }
            self.pos += got as u64;
            n -= got as u64;
        }
        Ok(true)
    }

    /// Reads one block; `Ok(false)` at a clean end of stream.
    fn block(&mut self, b: &mut [u8; BLOCK]) -> Result<bool, TarError> {
        let mut got = 0;
        while got < BLOCK {
            let n = self.inner.read(&mut b[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        self.pos += got as u64;
        if got == 0 {
            return Ok(false);
        }
        if got < BLOCK {
            if self.pos == got as u64 {
                return Err(TarError::Header {
                    offset: 0,
                    reason: format!("not a tar archive (the whole stream is {got} bytes)"),
                });
            }
            return Err(TarError::Truncated {
                offset: self.pos,
                entry: None,
            });
        }
        Ok(true)
    }

    fn read_payload(
        &mut self,
        size: u64,
        kind: &'static str,
        offset: u64,
    ) -> Result<Vec<u8>, TarError> {
        if size > MAX_EXTENDED {
            return Err(TarError::Extended {
                kind,
                offset,
                reason: format!("{size} bytes is over the {MAX_EXTENDED}-byte limit"),
            });
        }
        let mut v = vec![0u8; size as usize];
        let mut got = 0;
        while got < v.len() {
            let n = self.inner.read(&mut v[got..])?;
            if n == 0 {
                return Err(TarError::Truncated {
                    offset: self.pos,
                    entry: None,
                });
            }
            got += n;
            self.pos += n as u64;
        }
        self.skip(pad(size))?;
        Ok(v)
    }

    /// The next entry, or `None` at the end of the archive (two zero blocks,
    /// one zero block, or a clean end of stream at a header boundary). The
    /// unread data of the previous entry is skipped.
    ///
    /// # Errors
    /// See [`TarError`].
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.done {
            return Ok(None);
        }
        let (rest, padding) = (self.remaining, self.padding);
        self.skip(rest)?;
        self.remaining = 0;
        self.padding = 0;
        // The last member's data is complete: a stream may end in its padding
        // (umoci 0.4.7 `insert` writes no padding and no end blocks). The
        // DiffID covers the exact bytes, so nothing is ambiguous.
        if !self.skip_padding(padding)? {
            self.done = true;
            self.current = None;
            return Ok(None);
        }
        self.current = None;

        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut first_offset: Option<u64> = None;
        let mut b = [0u8; BLOCK];
        loop {
            let offset = self.pos;
            if !self.block(&mut b)? {
                if first_offset.is_some() {
                    return Err(TarError::Truncated {
                        offset: self.pos,
                        entry: None,
                    });
                }
                self.done = true;
                return Ok(None);
            }
            if b.iter().all(|&x| x == 0) {
                if first_offset.is_some() {
                    return Err(TarError::Header {
                        offset,
                        reason: "extended header is not followed by an entry".into(),
                    });
                }
                self.done = true;
                return Ok(None);
            }
            first_offset.get_or_insert(offset);
            check_checksum(&b, offset)?;
            let typeflag = b[156];
            let size_field = numeric(&b[124..136], "size", offset)?;
            let size = u64::try_from(size_field).map_err(|_| TarError::Header {
                offset,
                reason: format!("negative size {size_field}"),
            })?;
            match typeflag {
                b'x' | b'X' => {
                    let data = self.read_payload(size, "pax", offset)?;
                    parse_pax(&data, &mut pax, offset)?;
                    continue;
                }
                b'g' => {
                    let data = self.read_payload(size, "pax global", offset)?;
                    let mut recs = Vec::new();
                    parse_pax(&data, &mut recs, offset)?;
                    for (k, v) in recs {
                        self.global.retain(|(gk, _)| *gk != k);
                        if !v.is_empty() {
                            self.global.push((k, v));
                        }
                    }
                    continue;
                }
                b'L' => {
                    let data = self.read_payload(size, "GNU long name", offset)?;
                    long_name = Some(cstr(&data).to_vec());
                    continue;
                }
                b'K' => {
                    let data = self.read_payload(size, "GNU long link", offset)?;
                    long_link = Some(cstr(&data).to_vec());
                    continue;
                }
                b'V' => {
                    // A GNU volume label names the archive, not a member.
                    self.skip(size + pad(size))?;
                    first_offset = None;
                    pax.clear();
                    long_name = None;
                    long_link = None;
                    continue;
                }
                _ => {}
            }
            let first = first_offset.unwrap_or(offset);
            let mut e = self.parse_header(&b, offset, first, size)?;
            // Globals first, then this entry's own records override them.
            let mut all = self.global.clone();
            all.extend(pax);
            apply_pax(&mut e, &all, offset)?;
            if let Some(n) = long_name {
                if !all.iter().any(|(k, _)| k == b"path") {
                    e.path = n;
                }
            }
            if let Some(l) = long_link {
                if !all.iter().any(|(k, _)| k == b"linkpath") {
                    e.link = l;
                }
            }
            if e.kind == EntryKind::Regular && e.typeflag != b'S' && e.path.ends_with(b"/") {
                // V7 and old writers mark directories with a trailing slash.
                e.kind = EntryKind::Directory;
            }
            if header_only(e.kind) && e.typeflag != b'D' {
                // A GNU dump directory ('D') carries its listing as data.
                e.stored = 0;
                e.size = 0;
            }
            // Old GNU sparse: the map lives in the header and extensions.
            if e.typeflag == b'S' {
                self.gnu_sparse(&b, &mut e, offset)?;
            }
            // PAX sparse 1.0: the map is at the start of the data.
            if is_sparse_1_0(&all) {
                self.current = Some(e.display_name());
                self.remaining = e.stored;
                self.padding = pad(e.stored);
                let map = self.sparse_1_0_map(offset)?;
                e.stored = self.remaining;
                e.sparse = Some(map);
            } else {
                self.remaining = e.stored;
                self.padding = pad(e.stored);
            }
            if let Some(map) = &e.sparse {
                check_sparse(map, e.size, e.stored, offset)?;
            }
            self.current = Some(e.display_name());
            self.entries += 1;
            return Ok(Some(e));
        }
    }

    fn parse_header(
        &mut self,
        b: &[u8; BLOCK],
        offset: u64,
        first: u64,
        size: u64,
    ) -> Result<Entry, TarError> {
        let typeflag = b[156];
        let ustar = &b[257..263] == b"ustar\0";
        let gnu = &b[257..265] == b"ustar  \0";
        let mut path = cstr(&b[0..100]).to_vec();
        if ustar {
            // star puts "tar\0" at 508 and uses a shorter prefix.
            let prefix = if &b[508..512] == b"tar\0" {
                cstr(&b[345..476])
            } else {
                cstr(&b[345..500])
            };
            if !prefix.is_empty() {
                let mut p = prefix.to_vec();
                p.push(b'/');
                p.extend_from_slice(&path);
                path = p;
            }
        }
        let kind = match typeflag {
            b'0' | 0 | b'7' | b'S' => EntryKind::Regular,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::Char,
            b'4' => EntryKind::Block,
            b'5' | b'D' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            other => EntryKind::Other(other),
        };
        let num = |r: std::ops::Range<usize>, what: &str| numeric(&b[r], what, offset);
        let mode = num(100..108, "mode")?;
        let uid = num(108..116, "uid")?;
        let gid = num(116..124, "gid")?;
        let mtime = num(136..148, "mtime")?;
        let (dev_major, dev_minor) = if ustar || gnu {
            (num(329..337, "devmajor")?, num(337..345, "devminor")?)
        } else {
            (0, 0)
        };
        let dev = |v: i128, what: &str| {
            u32::try_from(v).map_err(|_| TarError::Header {
                offset,
                reason: format!("{what} {v} is out of range"),
            })
        };
        let id = |v: i128, what: &str| {
            u64::try_from(v).map_err(|_| TarError::Header {
                offset,
                reason: format!("{what} {v} is out of range"),
            })
        };
        let is_dev = matches!(kind, EntryKind::Char | EntryKind::Block);
        Ok(Entry {
            path,
            link: cstr(&b[157..257]).to_vec(),
            kind,
            typeflag,
            mode: (mode & 0o7777) as u32,
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            mtime: i64::try_from(mtime).map_err(|_| TarError::Header {
                offset,
                reason: format!("mtime {mtime} is out of range"),
            })?,
            mtime_nsec: 0,
            size,
            stored: size,
            dev_major: if is_dev {
                dev(dev_major, "devmajor")?
            } else {
                0
            },
            dev_minor: if is_dev {
                dev(dev_minor, "devminor")?
            } else {
                0
            },
            xattrs: Vec::new(),
            sparse: None,
            offset: first,
        })
    }

    fn gnu_sparse(&mut self, b: &[u8; BLOCK], e: &mut Entry, offset: u64) -> Result<(), TarError> {
        let mut map = Vec::new();
        let push = |chunk: &[u8], map: &mut Vec<(u64, u64)>| -> Result<(), TarError> {
            let o = numeric(&chunk[0..12], "sparse offset", offset)?;
            let n = numeric(&chunk[12..24], "sparse length", offset)?;
            if chunk[..24].iter().all(|&c| c == 0) {
                return Ok(());
            }
            let (o, n) = (u64::try_from(o), u64::try_from(n));
            match (o, n) {
                (Ok(o), Ok(n)) => {
                    map.push((o, n));
                    Ok(())
                }
                _ => Err(TarError::Header {
                    offset,
                    reason: "negative sparse map value".into(),
                }),
            }
        };
        for i in 0..4 {
            push(&b[386 + i * 24..386 + (i + 1) * 24], &mut map)?;
        }
        let real = numeric(&b[483..495], "sparse real size", offset)?;
        e.size = u64::try_from(real).map_err(|_| TarError::Header {
            offset,
            reason: "negative sparse size".into(),
        })?;
        let mut extended = b[482] != 0;
        let mut x = [0u8; BLOCK];
        while extended {
            if !self.block(&mut x)? {
                return Err(TarError::Truncated {
                    offset: self.pos,
                    entry: Some(e.display_name()),
                });
            }
            for i in 0..21 {
                push(&x[i * 24..(i + 1) * 24], &mut map)?;
            }
            if map.len() > MAX_SPARSE {
                return Err(TarError::Header {
                    offset,
                    reason: format!("sparse map has over {MAX_SPARSE} fragments"),
                });
            }
            extended = x[504] != 0;
        }
        e.sparse = Some(map);
        Ok(())
    }

    /// Reads the decimal map at the start of a PAX 1.0 sparse member's data.
    fn sparse_1_0_map(&mut self, offset: u64) -> Result<Vec<(u64, u64)>, TarError> {
        let mut consumed: u64 = 0;
        let mut line = Vec::new();
        let mut next_number = |me: &mut Self, consumed: &mut u64| -> Result<u64, TarError> {
            line.clear();
            loop {
                let mut c = [0u8; 1];
                if me.read_data(&mut c).map_err(TarError::Io)? == 0 {
                    return Err(TarError::Header {
                        offset,
                        reason: "sparse map is cut short".into(),
                    });
                }
                *consumed += 1;
                if c[0] == b'\n' {
                    break;
                }
                if line.len() > 24 {
                    return Err(TarError::Header {
                        offset,
                        reason: "sparse map number is too long".into(),
                    });
                }
                line.push(c[0]);
            }
            std::str::from_utf8(&line)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| TarError::Header {
                    offset,
                    reason: format!("bad sparse map number {:?}", String::from_utf8_lossy(&line)),
                })
        };
        let count = next_number(self, &mut consumed)?;
        if count > MAX_SPARSE as u64 {
            return Err(TarError::Header {
                offset,
                reason: format!("sparse map has {count} fragments, over {MAX_SPARSE}"),
            });
        }
        let mut map = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let o = next_number(self, &mut consumed)?;
            let n = next_number(self, &mut consumed)?;
            map.push((o, n));
        }
        // The map is padded to a block boundary.
        let skip = pad(consumed);
        let mut sink = [0u8; BLOCK];
        let mut left = skip as usize;
        while left > 0 {
            let n = self.read_data(&mut sink[..left]).map_err(TarError::Io)?;
            if n == 0 {
                return Err(TarError::Truncated {
                    offset: self.pos,
                    entry: self.current.clone(),
                });
            }
            left -= n;
        }
        Ok(map)
    }
}

fn header_only(k: EntryKind) -> bool {
    matches!(
        k,
        EntryKind::Hardlink
            | EntryKind::Symlink
            | EntryKind::Char
            | EntryKind::Block
            | EntryKind::Directory
            | EntryKind::Fifo
    )
}

fn is_sparse_1_0(recs: &[(Vec<u8>, Vec<u8>)]) -> bool {
    recs.iter()
        .any(|(k, v)| k == b"GNU.sparse.major" && v == b"1")
}

fn check_sparse(map: &[(u64, u64)], size: u64, stored: u64, offset: u64) -> Result<(), TarError> {
    let bad = |reason: String| TarError::Header { offset, reason };
    if map.len() > MAX_SPARSE {
        return Err(bad(format!("sparse map has over {MAX_SPARSE} fragments")));
    }
    let mut end = 0u64;
    let mut total = 0u64;
    for &(o, n) in map {
        let e = o
            .checked_add(n)
            .ok_or_else(|| bad("sparse fragment overflows".into()))?;
        if o < end || e > size {
            return Err(bad(format!(
                "sparse fragment {o}+{n} overlaps or lies past the size {size}"
            )));
        }
        end = e;
        total += n;
    }
    if total != stored {
        return Err(bad(format!(
            "sparse map covers {total} bytes but {stored} are stored"
        )));
    }
    Ok(())
}

fn pad(n: u64) -> u64 {
    (BLOCK as u64 - n % BLOCK as u64) % BLOCK as u64
}

/// Bytes up to the first NUL.
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// A numeric header field: octal (spaces and NULs around it) or GNU
/// base-256 (high bit set; 0xff means negative, two's complement).
fn numeric(f: &[u8], what: &str, offset: u64) -> Result<i128, TarError> {
    if let Some(&first) = f.first() {
        if first & 0x80 != 0 {
            let negative = first == 0xff;
            let mut v: i128 = if negative { -1 } else { 0 };
            let mut bytes = f.iter().copied();
            let lead = bytes.next().unwrap_or(0);
            if !negative {
                v = i128::from(lead & 0x7f);
            }
            for (i, byte) in bytes.enumerate() {
                if i > 14 {
                    return Err(TarError::Header {
                        offset,
                        reason: format!("{what} field is too large"),
                    });
                }
                v = (v << 8) | i128::from(byte);
            }
            return Ok(v);
        }
    }
    let s: &[u8] = {
        let start = f
            .iter()
            .position(|&c| c != b' ' && c != 0)
            .unwrap_or(f.len());
        let rest = &f[start..];
        let end = rest
            .iter()
            .position(|&c| c == b' ' || c == 0)
            .unwrap_or(rest.len());
        &rest[..end]
    };
    if s.is_empty() {
        return Ok(0);
    }
    let mut v: i128 = 0;
    for &c in s {
        if !(b'0'..=b'7').contains(&c) {
            return Err(TarError::Header {
                offset,
                reason: format!(
                    "{what} field is not an octal number: {:?}",
                    String::from_utf8_lossy(f)
                ),
            });
        }
        v = v * 8 + i128::from(c - b'0');
    }
    Ok(v)
}

fn check_checksum(b: &[u8; BLOCK], offset: u64) -> Result<(), TarError> {
    let stored = numeric(&b[148..156], "checksum", offset).map_err(|_| TarError::Header {
        offset,
        reason: "checksum field is not a number (not a tar header)".into(),
    })?;
    let mut unsigned: i128 = 0;
    let mut signed: i128 = 0;
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += i128::from(c);
        signed += i128::from(c as i8);
    }
    if stored != unsigned && stored != signed {
        return Err(TarError::Header {
            offset,
            reason: "checksum mismatch (not a tar header)".into(),
        });
    }
    Ok(())
}

/// Parses PAX records `"%d %s=%s\n"`, appending them in order (later
/// records of the same key override earlier ones when applied).
fn parse_pax(data: &[u8], out: &mut Vec<(Vec<u8>, Vec<u8>)>, offset: u64) -> Result<(), TarError> {
    let bad = |reason: String| TarError::Extended {
        kind: "pax",
        offset,
        reason,
    };
    let mut rest = data;
    while !rest.is_empty() {
        // Some writers pad the payload with NULs.
        if rest.iter().all(|&c| c == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| bad("record without a length".into()))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("record length is not a number".into()))?;
        if len <= sp + 1 || len > rest.len() {
            return Err(bad(format!("record length {len} is out of range")));
        }
        let rec = &rest[sp + 1..len];
        let rec = rec
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("record does not end with a newline".into()))?;
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| bad("record without '='".into()))?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        if k.is_empty() || k.contains(&0) {
            return Err(bad("record key is empty or holds a NUL".into()));
        }
        if matches!(k, b"path" | b"linkpath" | b"uname" | b"gname") && v.contains(&0) {
            return Err(bad(format!(
                "{} holds a NUL byte",
                String::from_utf8_lossy(k)
            )));
        }
        out.push((k.to_vec(), v.to_vec()));
        rest = &rest[len..];
    }
    Ok(())
}

fn pax_number(v: &[u8], what: &str, offset: u64) -> Result<u64, TarError> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| TarError::Extended {
            kind: "pax",
            offset,
            reason: format!("{what} is not a number: {:?}", String::from_utf8_lossy(v)),
        })
}

/// PAX time: `[-]seconds[.fraction]`.
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    if secs.is_empty() || !secs.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
    }
    if neg {
        // -1.5 means 1.5 s before the epoch: -2 s + 0.5 s.
        if nanos == 0 {
            Some((-secs, 0))
        } else {
            Some((-secs - 1, 1_000_000_000 - nanos))
        }
    } else {
        Some((secs, nanos))
    }
}

fn apply_pax(e: &mut Entry, recs: &[(Vec<u8>, Vec<u8>)], offset: u64) -> Result<(), TarError> {
    let bad = |reason: String| TarError::Extended {
        kind: "pax",
        offset,
        reason,
    };
    let mut sparse_00: Vec<u64> = Vec::new();
    let mut sparse_name: Option<Vec<u8>> = None;
    let mut sparse_size: Option<u64> = None;
    for (k, v) in recs {
        match k.as_slice() {
            b"path" => e.path = v.clone(),
            b"linkpath" => e.link = v.clone(),
            b"size" => {
                let n = pax_number(v, "size", offset)?;
                e.size = n;
                e.stored = n;
            }
            b"uid" => e.uid = pax_number(v, "uid", offset)?,
            b"gid" => e.gid = pax_number(v, "gid", offset)?,
            b"mtime" => {
                let (s, n) = parse_pax_time(v)
                    .ok_or_else(|| bad(format!("mtime {:?}", String::from_utf8_lossy(v))))?;
                e.mtime = s;
                e.mtime_nsec = n;
            }
            b"GNU.sparse.name" => sparse_name = Some(v.clone()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                sparse_size = Some(pax_number(v, "GNU.sparse size", offset)?)
            }
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                if sparse_00.len() >= 2 * MAX_SPARSE {
                    return Err(bad("sparse map is too long".into()));
                }
                sparse_00.push(pax_number(v, "GNU.sparse map", offset)?);
            }
            b"GNU.sparse.map" => {
                let nums: Result<Vec<u64>, _> = v
                    .split(|&c| c == b',')
                    .map(|n| pax_number(n, "GNU.sparse.map", offset))
                    .collect();
                let nums = nums?;
                if !nums.len().is_multiple_of(2) || nums.len() > 2 * MAX_SPARSE {
                    return Err(bad("GNU.sparse.map has an odd or huge length".into()));
                }
                sparse_00 = nums;
            }
            _ => {
                if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                    e.xattrs.retain(|(n, _)| n != name);
                    e.xattrs.push((name.to_vec(), v.clone()));
                } else if let Some(name) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
                    let name = url_unescape(name);
                    let value = base64_decode(v)
                        .ok_or_else(|| bad("LIBARCHIVE.xattr value is not base64".into()))?;
                    e.xattrs.retain(|(n, _)| *n != name);
                    e.xattrs.push((name, value));
                }
            }
        }
    }
    if let Some(n) = sparse_name {
        e.path = n;
    }
    if let Some(s) = sparse_size {
        e.size = s;
    }
    if !sparse_00.is_empty() {
        if !sparse_00.len().is_multiple_of(2) {
            return Err(bad("GNU.sparse offsets and sizes do not pair up".into()));
        }
        e.sparse = Some(sparse_00.chunks(2).map(|c| (c[0], c[1])).collect());
    } else if recs.iter().any(|(k, _)| k == b"GNU.sparse.numblocks") && !is_sparse_1_0(recs) {
        e.sparse = Some(Vec::new());
    }
    Ok(())
}

fn url_unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(c) = hex {
                out.push(c);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn base64_decode(v: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let trimmed: Vec<u8> = v.iter().copied().filter(|c| *c != b'=').collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, typeflag: u8, size: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&c| u32::from(c)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn names(data: &[u8]) -> Result<Vec<(String, EntryKind, u64)>, TarError> {
        let mut r = TarReader::new(data);
        let mut v = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut n = 0;
            let mut buf = [0u8; 100];
            loop {
                let k = r.read_data(&mut buf)?;
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            v.push((e.display_name(), e.kind, n));
        }
        Ok(v)
    }

    #[test]
    fn a_stream_ending_right_after_a_members_data_is_complete() {
        // umoci 0.4.7 `insert`: no padding to 512, no end-of-archive blocks.
        let mut t = header("a", b'0', 3).to_vec();
        t.extend_from_slice(b"abc");
        t.resize(1024, 0);
        t.extend_from_slice(&header("b", b'0', 5));
        t.extend_from_slice(b"hello");
        assert_eq!(
            names(&t).unwrap(),
            vec![
                ("a".into(), EntryKind::Regular, 3),
                ("b".into(), EntryKind::Regular, 5)
            ]
        );
        // Part of the padding is there: complete too.
        t.extend_from_slice(&[0u8; 7]);
        assert_eq!(names(&t).unwrap().len(), 2);
        // Cut inside the data: truncated.
        let mut cut = header("a", b'0', 3).to_vec();
        cut.extend_from_slice(b"ab");
        let err = names(&cut).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn no_end_blocks_is_a_clean_end_but_a_cut_header_is_truncation() {
        let mut t = header("a", b'0', 3).to_vec();
        t.extend_from_slice(b"abc");
        t.resize(1024, 0);
        assert_eq!(
            names(&t).unwrap(),
            vec![("a".into(), EntryKind::Regular, 3)]
        );
        t.extend_from_slice(&header("b", b'0', 0)[..100]);
        assert!(matches!(names(&t), Err(TarError::Truncated { .. })));
        let err = names(b"awesome notation\n").unwrap_err().to_string();
        assert!(
            err.contains("not a tar archive (the whole stream is 17 bytes)"),
            "{err}"
        );
        let mut cut = header("c", b'0', 600).to_vec();
        cut.extend_from_slice(&[1u8; 100]);
        assert!(names(&cut).is_err());
    }

    #[test]
    fn header_only_types_ignore_size_and_v7_slash_means_directory() {
        let mut t = header("l", b'1', 321).to_vec();
        t.extend_from_slice(&header("d/", b'0', 1));
        t.extend_from_slice(&header("e/", 0, 0));
        t.extend_from_slice(&[0u8; 1024]);
        let v = names(&t).unwrap();
        assert_eq!(v[0].1, EntryKind::Hardlink);
        assert_eq!(v[1], ("d/".into(), EntryKind::Directory, 0));
        assert_eq!(v[2].1, EntryKind::Directory);
    }

    #[test]
    fn pax_records_override_and_repeated_headers_keep_the_last() {
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut n = body.len() + 1;
            if format!("{n}{body}").len() != n {
                n += 1;
            }
            format!("{n}{body}")
        };
        let p1 = rec("path", "first");
        let p2 = format!("{}{}", rec("path", "second"), rec("mtime", "-1.5"));
        let mut t = Vec::new();
        for p in [&p1, &p2] {
            t.extend_from_slice(&header("PaxHeader", b'x', p.len() as u64));
            let mut d = p.as_bytes().to_vec();
            d.resize(512, 0);
            t.extend_from_slice(&d);
        }
        t.extend_from_slice(&header("short", b'0', 0));
        let mut r = TarReader::new(&t[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path, b"second");
        assert_eq!((e.mtime, e.mtime_nsec), (-2, 500_000_000));
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn oversized_extended_headers_are_refused_before_allocation() {
        let t = header("././@LongLink", b'L', 1 << 32).to_vec();
        let err = names(&t).unwrap_err().to_string();
        assert!(err.contains("limit"), "{err}");
    }

    #[test]
    fn numbers_octal_base256_and_garbage() {
        assert_eq!(numeric(b"  0755 \0", "m", 0).unwrap(), 0o755);
        assert_eq!(numeric(b"\0\0\0\0", "m", 0).unwrap(), 0);
        assert_eq!(
            numeric(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0], "m", 0).unwrap(),
            256
        );
        assert_eq!(numeric(&[0xff; 8], "m", 0).unwrap(), -1);
        assert!(numeric(b"12x4", "m", 0).is_err());
        assert_eq!(
            parse_pax_time(b"1748089464.951928467"),
            Some((1748089464, 951928467))
        );
        assert_eq!(parse_pax_time(b"-100"), Some((-100, 0)));
        assert_eq!(parse_pax_time(b"12a"), None);
    }
}
