//! Layer streams: decompression (gzip, zstd, none) and a full-stream pass that
//! yields the blob digest, the DiffID and the tar entry count in one read.
//!
//! # Security
//! Every byte is hashed: the compressed stream to its end (so trailing data
//! is covered by the blob digest) and the decompressed stream to its end, past
//! the tar end-of-archive marker (so the DiffID covers padding and trailing
//! bytes, as image-spec requires). Nothing is written anywhere.

use std::io::{self, BufRead, BufReader, Read};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::limits::IO_BUFFER;
use crate::spec::Compression;
use crate::tarstream::{Entry, TarError, TarReader};
use crate::verified::{Mismatch, Outcome, Verified};

/// A problem reading a layer stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// The bytes are not in the compression the media type announces.
    #[error("its media type says {announced} but its bytes are {found}")]
    CompressionMismatch {
        /// What the media type says.
        announced: Compression,
        /// What the bytes look like.
        found: &'static str,
    },
    /// Decompression failed.
    #[error("cannot be decompressed as {compression}: {source}")]
    Decompress {
        /// The compression.
        compression: Compression,
        /// The error.
        source: io::Error,
    },
    /// The tar stream is unreadable.
    #[error("is not a readable tar stream (after {entries} entries): {source}")]
    Tar {
        /// Entries read before the error.
        entries: u64,
        /// The error.
        source: TarError,
    },
    /// The decompressed stream passed the limit.
    #[error("decompresses to more than {limit} bytes; refusing (a decompression bomb?). Set OCIKIT_MAX_DECOMPRESSED to raise the limit")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The stored bytes are not the blob the descriptor names.
    #[error(transparent)]
    Mismatch(Box<Mismatch>),
    /// The decompressed stream is not the DiffID the config lists.
    #[error("decompresses to {}, but its config's diff_id is {}", .0.actual, .0.expected)]
    DiffIdMismatch(Box<DiffIdMismatch>),
    /// Reading the blob failed.
    #[error("cannot be read: {0}")]
    Io(#[from] io::Error),
}

/// A DiffID that is not the config's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffIdMismatch {
    /// The config's DiffID.
    pub expected: Digest,
    /// What the decompressed stream hashes to.
    pub actual: Digest,
}

impl From<Mismatch> for LayerError {
    fn from(m: Mismatch) -> LayerError {
        LayerError::Mismatch(Box::new(m))
    }
}

/// What one pass over a layer found.
#[derive(Debug, Clone)]
pub struct LayerDigests {
    /// Digest of the stored (compressed) bytes.
    pub blob_digest: Digest,
    /// Stored size.
    pub blob_size: u64,
    /// sha256 of the decompressed stream: the DiffID.
    pub diff_id: Digest,
    /// Decompressed size.
    pub uncompressed_size: u64,
    /// Tar entries read.
    pub entries: u64,
}

/// Wraps a buffered reader in the decoder for `compression`.
///
/// # Errors
/// Decoder set-up errors (zstd).
pub(crate) fn decoder<'a, R: BufRead + 'a>(
    reader: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    })
}

/// Like [`decoder`], for layers whose stored bytes are hashed as they are
/// read: gzip members are inflated without checking their CRC-32, which the
/// blob digest (over the compressed bytes) and the DiffID (over the result)
/// already cover; that saves a fifth of the inflate time.
///
/// # Errors
/// Decoder set-up errors (zstd).
pub(crate) fn layer_decoder<'a, R: BufRead + 'a>(
    reader: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    match compression {
        Compression::Gzip => Ok(Box::new(GzipMembers::new(reader))),
        c => decoder(reader, c),
    }
}

/// Multi-member gzip without CRC checks (see [`layer_decoder`]). Header
/// fields are parsed and skipped; each member's ISIZE is still checked
/// against what its deflate stream produced.
struct GzipMembers<R: BufRead> {
    state: GzState<R>,
}

enum GzState<R: BufRead> {
    /// Before a member header (or at the end of the stream).
    Between(R),
    /// Inside a member's deflate stream; bytes produced so far.
    Body(flate2::bufread::DeflateDecoder<R>, u64),
    Done,
    Poisoned,
}

impl<R: BufRead> GzipMembers<R> {
    fn new(reader: R) -> Self {
        GzipMembers {
            state: GzState::Between(reader),
        }
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn read_exact_buf<R: BufRead>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    r.read_exact(&mut v)
        .map_err(|e| match Mismatch::from_io(&e) {
            Some(_) => e,
            None => bad("gzip stream ends inside a member header or trailer"),
        })?;
    Ok(v)
}

fn skip_cstring<R: BufRead>(r: &mut R) -> io::Result<()> {
    let mut sink = Vec::new();
    let n = r.read_until(0, &mut sink)?;
    if n == 0 || sink.last() != Some(&0) {
        return Err(bad("gzip header name or comment is not terminated"));
    }
    Ok(())
}

/// Parses one member header; `Ok(false)` at a clean end of stream.
fn gzip_header<R: BufRead>(r: &mut R) -> io::Result<bool> {
    if r.fill_buf()?.is_empty() {
        return Ok(false);
    }
    let h = read_exact_buf(r, 10)?;
    if h[0] != 0x1f || h[1] != 0x8b {
        return Err(bad(
            "invalid gzip header (trailing data after the last member?)",
        ));
    }
    if h[2] != 8 {
        return Err(bad("gzip member is not deflate-compressed"));
    }
    let flags = h[3];
    if flags & 0xe0 != 0 {
        return Err(bad("gzip header has reserved flags set"));
    }
    if flags & 0x04 != 0 {
        let x = read_exact_buf(r, 2)?;
        let len = usize::from(u16::from_le_bytes([x[0], x[1]]));
        read_exact_buf(r, len)?;
    }
    if flags & 0x08 != 0 {
        skip_cstring(r)?;
    }
    if flags & 0x10 != 0 {
        skip_cstring(r)?;
    }
    if flags & 0x02 != 0 {
        read_exact_buf(r, 2)?;
    }
    Ok(true)
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match std::mem::replace(&mut self.state, GzState::Poisoned) {
                GzState::Between(mut r) => {
                    if gzip_header(&mut r)? {
                        self.state = GzState::Body(flate2::bufread::DeflateDecoder::new(r), 0);
                    } else {
                        self.state = GzState::Done;
                        return Ok(0);
                    }
                }
                GzState::Body(mut d, produced) => {
                    let n = d.read(buf)?;
                    if n > 0 {
                        self.state = GzState::Body(d, produced + n as u64);
                        return Ok(n);
                    }
                    // End of this member's deflate stream: the trailer.
                    let mut r = d.into_inner();
                    let t = read_exact_buf(&mut r, 8)?;
                    let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                    if u64::from(isize) != produced & 0xffff_ffff {
                        return Err(bad("gzip member size does not match its trailer"));
                    }
                    self.state = GzState::Between(r);
                }
                GzState::Done => {
                    self.state = GzState::Done;
                    return Ok(0);
                }
                GzState::Poisoned => return Err(bad("gzip stream read after an error")),
            }
        }
    }
}

/// A decompression failure, carried inside an `io::Error` through the tar
/// reader so that it can be told apart from a tar problem.
#[derive(Debug, thiserror::Error)]
#[error("cannot be decompressed as {compression}: {source}")]
pub(crate) struct DecodeError {
    /// The compression.
    pub compression: Compression,
    /// The decoder's error.
    pub source: io::Error,
}

/// The decompressed stream passed the size limit, carried like [`DecodeError`].
#[derive(Debug, thiserror::Error)]
#[error("decompresses to more than {limit} bytes; refusing (a decompression bomb?). Set OCIKIT_MAX_DECOMPRESSED to raise the limit")]
pub(crate) struct TooLarge {
    /// The limit in bytes.
    pub limit: u64,
}

/// A layer's decompressed bytes, hashed as they are read: the stored bytes
/// with the blob's algorithm, the decompressed bytes with sha256 (the
/// DiffID), and the decompressed size capped at a limit.
pub struct LayerStream<'a> {
    reader: Box<dyn Read + 'a>,
    blob: Outcome,
    diff: Hasher,
    diff_len: u64,
    limit: u64,
    compression: Compression,
}

impl<'a> LayerStream<'a> {
    /// Opens `reader` (the stored bytes, through the one verified reader:
    /// [`crate::Store::open_verified`], or [`Verified::hashing`] for bytes
    /// with no descriptor) as a layer announced as `compression`; the bytes'
    /// own magic must agree. `limit` caps the decompressed size.
    ///
    /// # Errors
    /// [`LayerError::CompressionMismatch`], read and decoder set-up errors.
    pub(crate) fn open<R: Read + 'a>(
        reader: Verified<R>,
        compression: Compression,
        limit: u64,
    ) -> Result<LayerStream<'a>, LayerError> {
        let blob = reader.outcome();
        let mut outer = BufReader::with_capacity(IO_BUFFER, reader);
        let head = outer.fill_buf()?;
        let sniffed = Compression::sniff(head);
        let found = match sniffed {
            Some(Compression::Gzip) => "gzip",
            Some(Compression::Zstd) => "zstd",
            _ => "not compressed",
        };
        let mismatch = match compression {
            Compression::None => sniffed.is_some(),
            c => sniffed != Some(c),
        };
        if mismatch && !head.is_empty() {
            return Err(LayerError::CompressionMismatch {
                announced: compression,
                found,
            });
        }
        let reader =
            layer_decoder(outer, compression).map_err(|source| LayerError::Decompress {
                compression,
                source,
            })?;
        Ok(LayerStream {
            reader,
            blob,
            diff: Hasher::new(Algorithm::Sha256),
            diff_len: 0,
            limit,
            compression,
        })
    }

    /// Reads to the end of both streams and returns the digests.
    ///
    /// # Errors
    /// Read and decompression errors.
    pub(crate) fn finish(mut self, entries: u64) -> Result<LayerDigests, LayerError> {
        io::copy(&mut self, &mut io::sink()).map_err(layer_error(entries))?;
        let LayerStream {
            reader,
            blob,
            diff,
            diff_len,
            ..
        } = self;
        drop(reader);
        // The decoders read their input to its end (trailing bytes are an
        // error), so the stored stream has been checked by now.
        let (blob_digest, blob_size) = blob.get().ok_or_else(|| {
            LayerError::Io(io::Error::other(
                "the compressed stream ends before the stored bytes do",
            ))
        })?;
        Ok(LayerDigests {
            blob_digest,
            blob_size,
            diff_id: diff.finish(),
            uncompressed_size: diff_len,
            entries,
        })
    }
}

impl Read for LayerStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.reader.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) if Mismatch::from_io(&e).is_some() => return Err(e),
            Err(source) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    DecodeError {
                        compression: self.compression,
                        source,
                    },
                ))
            }
        };
        self.diff_len += n as u64;
        if self.diff_len > self.limit {
            return Err(io::Error::other(TooLarge { limit: self.limit }));
        }
        self.diff.update(&buf[..n]);
        Ok(n)
    }
}

/// Turns an I/O error from a layer stream into the right [`LayerError`].
pub(crate) fn layer_error(entries: u64) -> impl Fn(io::Error) -> LayerError {
    move |e| classify_io(e, entries)
}

fn classify_io(e: io::Error, entries: u64) -> LayerError {
    if let Some(m) = Mismatch::from_io(&e) {
        return LayerError::Mismatch(Box::new(m.clone()));
    }
    if e.get_ref().is_some_and(|r| r.is::<DecodeError>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(d) = inner.downcast::<DecodeError>() {
                return LayerError::Decompress {
                    compression: d.compression,
                    source: d.source,
                };
            }
        }
        return LayerError::Io(io::Error::other("decoder error"));
    }
    if let Some(t) = e.get_ref().and_then(|r| r.downcast_ref::<TooLarge>()) {
        return LayerError::TooLarge { limit: t.limit };
    }
    LayerError::Tar {
        entries,
        source: TarError::Io(e),
    }
}

/// Turns a tar reader error into a [`LayerError`].
pub(crate) fn tar_error(e: TarError, entries: u64) -> LayerError {
    match e {
        TarError::Io(io) => classify_io(io, entries),
        other => LayerError::Tar {
            entries,
            source: other,
        },
    }
}

/// The tar reader a [`walk_layer`] visitor gets, positioned at the data of
/// the entry it is given.
pub(crate) type LayerEntries<'s, 'a> = TarReader<BufReader<&'s mut LayerStream<'a>>>;

/// What a [`crate::image::Layer::walk`] visitor wants next.
pub enum Visit {
    /// Go on with the next entry.
    Continue,
    /// Stop here (nothing is verified then).
    Stop,
}

/// The one pass over a stored layer every reader uses: checks its magic
/// against `compression`, walks the tar entries (the visitor reads an
/// entry's data from the reader it is given, or leaves it to be skipped),
/// drains both streams to their ends, and checks the stored bytes (through
/// the [`Verified`] reader) and the DiffID, when `diff_id` is given.
/// `Ok(None)` when the visitor stopped early.
///
/// # Errors
/// See [`LayerError`]; a visitor's error ends the walk.
pub(crate) fn walk_layer<'a, R, F>(
    reader: Verified<R>,
    compression: Compression,
    limit: u64,
    diff_id: Option<&Digest>,
    mut visit: F,
) -> Result<Option<LayerDigests>, LayerError>
where
    R: Read + 'a,
    F: FnMut(&mut LayerEntries<'_, 'a>, Entry) -> Result<Visit, LayerError>,
{
    let mut stream = LayerStream::open(reader, compression, limit)?;
    let entries = {
        let mut tar = TarReader::new(BufReader::with_capacity(IO_BUFFER, &mut stream));
        loop {
            let n = tar.entries();
            let e = match tar.next_entry() {
                Ok(Some(e)) => e,
                Ok(None) => break tar.entries(),
                Err(e) => return Err(tar_error(e, n)),
            };
            if let Visit::Stop = visit(&mut tar, e)? {
                return Ok(None);
            }
        }
    };
    let d = stream.finish(entries)?;
    check_diff_id(&d, diff_id)?;
    Ok(Some(d))
}

/// Checks a finished stream's DiffID against the config's, when given.
///
/// # Errors
/// [`LayerError::DiffIdMismatch`].
pub(crate) fn check_diff_id(d: &LayerDigests, expected: Option<&Digest>) -> Result<(), LayerError> {
    match expected {
        Some(expected) if &d.diff_id != expected => {
            Err(LayerError::DiffIdMismatch(Box::new(DiffIdMismatch {
                expected: expected.clone(),
                actual: d.diff_id.clone(),
            })))
        }
        _ => Ok(()),
    }
}

/// Opens a stored layer through [`crate::Store::open_verified`] for
/// [`walk_layer`] or [`LayerStream::open`], counting its stored bytes into
/// `progress`.
///
/// # Errors
/// A missing, unreadable or wrongly sized blob is [`LayerError::Io`] naming it.
pub(crate) fn open_stored<'s>(
    store: &'s dyn crate::store::Store,
    digest: &Digest,
    size: i64,
    progress: &'s dyn crate::progress::Progress,
) -> Result<(Verified<impl Read + 's>, u64), LayerError> {
    let blob = store
        .open_verified(digest, size)
        .map_err(|e| LayerError::Io(io::Error::other(e.to_string())))?;
    let len = size.max(0) as u64;
    Ok((blob.map(|inner| ProgressRead { inner, progress }), len))
}

struct ProgressRead<'p, R> {
    inner: R,
    progress: &'p dyn crate::progress::Progress,
}

impl<R: Read> Read for ProgressRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Reads the rest of the current entry's data into `sink`, in `buf`-sized
/// steps (decompression errors surface here, naming the entry count).
///
/// # Errors
/// Read and decompression errors.
pub(crate) fn read_entry_data<R: Read>(
    tar: &mut TarReader<R>,
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]),
) -> Result<(), LayerError> {
    let n = tar.entries();
    loop {
        match tar.read_data(buf) {
            Ok(0) => return Ok(()),
            Ok(k) => sink(&buf[..k]),
            Err(e) => return Err(classify_io(e, n)),
        }
    }
}

/// Reads a whole layer once: hashes the stored bytes with `algorithm`,
/// decompresses, hashes the decompressed bytes (sha256) and walks the tar
/// entries (with [`crate::tarstream`]), draining both streams to their ends.
/// The decompressed size is capped at `limit` (see
/// [`crate::limits::Limits::decompression`]), as every decompression is.
///
/// # Errors
/// See [`LayerError`]; [`LayerError::TooLarge`] past `limit`.
pub(crate) fn digest_layer<R: Read>(
    reader: Verified<R>,
    compression: Compression,
    limit: u64,
) -> Result<LayerDigests, LayerError> {
    let mut buf = vec![0u8; IO_BUFFER];
    let walked = walk_layer(reader, compression, limit, None, |tar, _| {
        read_entry_data(tar, &mut buf, |_| {})?;
        Ok(Visit::Continue)
    })?;
    walked.ok_or_else(|| LayerError::Io(io::Error::other("the walk stopped early")))
}

/// One entry as [`list_entries`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySummary {
    /// The name as stored (lossy UTF-8).
    pub name: String,
    /// The type.
    pub kind: crate::tarstream::EntryKind,
    /// Logical size.
    pub size: u64,
    /// Link target.
    pub link: String,
}

/// Lists a layer's entries, reading every byte (the decompressed size is
/// capped by the default [`crate::limits::Limits`] for `compressed_len`).
///
/// # Errors
/// See [`LayerError`].
pub fn list_entries<R: Read>(
    reader: R,
    compression: Compression,
    compressed_len: u64,
) -> Result<Vec<EntrySummary>, LayerError> {
    let limit = crate::limits::Limits::default().decompression(compressed_len);
    let mut out = Vec::new();
    let mut buf = vec![0u8; IO_BUFFER];
    walk_layer(
        Verified::hashing(reader, Algorithm::Sha256),
        compression,
        limit,
        None,
        |tar, e| {
            out.push(EntrySummary {
                name: String::from_utf8_lossy(&e.path).into_owned(),
                kind: e.kind,
                size: e.size,
                link: String::from_utf8_lossy(&e.link).into_owned(),
            });
            read_entry_data(tar, &mut buf, |_| {})?;
            Ok(Visit::Continue)
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod gzip_tests {
    use super::*;
    use std::io::Write;

    fn member(data: &[u8], name: Option<&str>, extra: bool, comment: bool) -> Vec<u8> {
        let mut b = flate2::GzBuilder::new();
        if let Some(n) = name {
            b = b.filename(n);
        }
        if extra {
            b = b.extra(vec![1, 2, 3]);
        }
        if comment {
            b = b.comment("c");
        }
        let mut e = b.write(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn inflate(b: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        layer_decoder(b, Compression::Gzip)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn members_and_header_fields_are_read_like_multigz() {
        let mut all = member(b"first ", Some("n"), true, true);
        all.extend(member(b"", None, false, false));
        all.extend(member(&vec![7u8; 100_000], None, false, false));
        let got = inflate(&all).unwrap();
        let mut want = Vec::new();
        flate2::read::MultiGzDecoder::new(&all[..])
            .read_to_end(&mut want)
            .unwrap();
        assert_eq!(got, want);
        assert_eq!(&got[..6], b"first ");
        assert!(inflate(&[]).unwrap().is_empty());
    }

    #[test]
    fn garbage_truncation_and_bad_sizes_are_errors() {
        let m = member(b"hello", None, false, false);
        let mut trailing = m.clone();
        trailing.extend_from_slice(b"junk");
        assert!(inflate(&trailing).is_err());
        assert!(inflate(&m[..m.len() - 3]).is_err());
        let mut wrong_size = m.clone();
        let n = wrong_size.len();
        wrong_size[n - 4] ^= 1;
        assert!(inflate(&wrong_size).is_err());
        // A CRC mismatch alone is not checked here: the digests cover it.
        let mut wrong_crc = m.clone();
        wrong_crc[n - 8] ^= 1;
        assert_eq!(inflate(&wrong_crc).unwrap(), b"hello");
    }
}
