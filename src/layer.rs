//! Layer streams: decompression (gzip, zstd, none) and a full-stream pass that
//! yields the blob digest, the DiffID and the tar entry count in one read.
//!
//! # Security
//! Every byte is hashed: the compressed stream to its end (so trailing data
//! is covered by the blob digest) and the decompressed stream to its end, past
//! the tar end-of-archive marker (so the DiffID covers padding and trailing
//! bytes, as image-spec requires). Nothing is written anywhere.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use crate::digest::{Algorithm, Digest, Hasher};
use crate::spec::Compression;
use crate::tarstream::{TarError, TarReader};

/// A problem reading a layer stream.
#[derive(Debug, thiserror::Error)]
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
    /// Reading the blob failed.
    #[error("cannot be read: {0}")]
    Io(#[from] io::Error),
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
pub fn decoder<'a, R: BufRead + 'a>(
    reader: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    })
}

/// A decompression failure, carried inside an `io::Error` through the tar
/// reader so that it can be told apart from a tar problem.
#[derive(Debug, thiserror::Error)]
#[error("cannot be decompressed as {compression}: {source}")]
pub struct DecodeError {
    /// The compression.
    pub compression: Compression,
    /// The decoder's error.
    pub source: io::Error,
}

/// The decompressed stream passed the size limit, carried like [`DecodeError`].
#[derive(Debug, thiserror::Error)]
#[error("decompresses to more than {limit} bytes; refusing (a decompression bomb?). Set OCIKIT_MAX_DECOMPRESSED to raise the limit")]
pub struct TooLarge {
    /// The limit in bytes.
    pub limit: u64,
}

struct SharedHash<R> {
    inner: R,
    state: Rc<RefCell<(Hasher, u64)>>,
}

impl<R: Read> Read for SharedHash<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.state.borrow_mut();
        s.0.update(&buf[..n]);
        s.1 += n as u64;
        Ok(n)
    }
}

/// A layer's decompressed bytes, hashed as they are read: the stored bytes
/// with the blob's algorithm, the decompressed bytes with sha256 (the
/// DiffID), and the decompressed size capped at a limit.
pub struct LayerStream<'a> {
    reader: Box<dyn Read + 'a>,
    blob: Rc<RefCell<(Hasher, u64)>>,
    diff: Hasher,
    diff_len: u64,
    limit: u64,
    compression: Compression,
}

impl<'a> LayerStream<'a> {
    /// Opens `reader` (the stored bytes) as a layer announced as `compression`;
    /// the bytes' own magic must agree. `limit` caps the decompressed size.
    ///
    /// # Errors
    /// [`LayerError::CompressionMismatch`], read and decoder set-up errors.
    pub fn open<R: Read + 'a>(
        reader: R,
        algorithm: Algorithm,
        compression: Compression,
        limit: u64,
    ) -> Result<LayerStream<'a>, LayerError> {
        let blob = Rc::new(RefCell::new((Hasher::new(algorithm), 0u64)));
        let mut outer = BufReader::with_capacity(
            256 << 10,
            SharedHash {
                inner: reader,
                state: blob.clone(),
            },
        );
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
        let reader = decoder(outer, compression).map_err(|source| LayerError::Decompress {
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
    pub fn finish(mut self, entries: u64) -> Result<LayerDigests, LayerError> {
        io::copy(&mut self, &mut io::sink()).map_err(layer_error(entries))?;
        let LayerStream {
            reader,
            blob,
            diff,
            diff_len,
            ..
        } = self;
        drop(reader);
        let (hasher, blob_size) = Rc::try_unwrap(blob)
            .map(RefCell::into_inner)
            .map_err(|_| LayerError::Io(io::Error::other("layer hash still shared")))?;
        Ok(LayerDigests {
            blob_digest: hasher.finish(),
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
pub fn layer_error(entries: u64) -> impl Fn(io::Error) -> LayerError {
    move |e| classify_io(e, entries)
}

fn classify_io(e: io::Error, entries: u64) -> LayerError {
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
pub fn tar_error(e: TarError, entries: u64) -> LayerError {
    match e {
        TarError::Io(io) => classify_io(io, entries),
        other => LayerError::Tar {
            entries,
            source: other,
        },
    }
}

/// Reads a whole layer once: hashes the stored bytes with `algorithm`,
/// decompresses, hashes the decompressed bytes (sha256) and walks the tar
/// entries (with [`crate::tarstream`]), draining both streams to their ends.
///
/// # Errors
/// See [`LayerError`].
pub fn digest_layer<R: Read>(
    reader: R,
    algorithm: Algorithm,
    compression: Compression,
) -> Result<LayerDigests, LayerError> {
    digest_layer_limited(reader, algorithm, compression, u64::MAX)
}

/// [`digest_layer`] with a cap on the decompressed size.
///
/// # Errors
/// See [`LayerError`].
pub fn digest_layer_limited<R: Read>(
    reader: R,
    algorithm: Algorithm,
    compression: Compression,
    limit: u64,
) -> Result<LayerDigests, LayerError> {
    let mut stream = LayerStream::open(reader, algorithm, compression, limit)?;
    let entries = {
        let mut tar = TarReader::new(BufReader::with_capacity(256 << 10, &mut stream));
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let entries = tar.entries();
            match tar.next_entry() {
                Ok(Some(_)) => loop {
                    // Read the data so that decompression errors surface here.
                    match tar.read_data(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(classify_io(e, entries)),
                    }
                },
                Ok(None) => break tar.entries(),
                Err(e) => return Err(tar_error(e, entries)),
            }
        }
    };
    stream.finish(entries)
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
/// capped by [`crate::archive::decompression_limit`] of `compressed_len`).
///
/// # Errors
/// See [`LayerError`].
pub fn list_entries<R: Read>(
    reader: R,
    compression: Compression,
    compressed_len: u64,
) -> Result<Vec<EntrySummary>, LayerError> {
    let limit = crate::archive::decompression_limit(compressed_len);
    let mut stream = LayerStream::open(reader, Algorithm::Sha256, compression, limit)?;
    let mut out = Vec::new();
    {
        let mut tar = TarReader::new(BufReader::with_capacity(256 << 10, &mut stream));
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = tar.entries();
            match tar.next_entry() {
                Ok(Some(e)) => {
                    out.push(EntrySummary {
                        name: String::from_utf8_lossy(&e.path).into_owned(),
                        kind: e.kind,
                        size: e.size,
                        link: String::from_utf8_lossy(&e.link).into_owned(),
                    });
                    loop {
                        match tar.read_data(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => return Err(classify_io(e, n)),
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(tar_error(e, n)),
            }
        }
    }
    stream.finish(out.len() as u64)?;
    Ok(out)
}
