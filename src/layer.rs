//! Layer streams: decompression (gzip, zstd, none) and a full-stream pass that
//! yields the blob digest, the DiffID and the tar entry count in one read.
//!
//! # Security
//! Every byte is hashed: the compressed stream to its end (so trailing data
//! is covered by the blob digest) and the decompressed stream to its end, past
//! the tar end-of-archive marker (so the DiffID covers padding and trailing
//! bytes, as image-spec requires). Nothing is written anywhere.

use std::io::{self, BufRead, BufReader, Read};

use crate::digest::{Algorithm, Digest, HashingReader};
use crate::spec::Compression;

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
        source: io::Error,
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

/// Reads a whole layer once: hashes the stored bytes with `algorithm`,
/// decompresses, hashes the decompressed bytes (sha256) and walks the tar
/// entries, draining both streams to their ends.
///
/// # Errors
/// See [`LayerError`].
pub fn digest_layer<R: Read>(
    reader: R,
    algorithm: Algorithm,
    compression: Compression,
) -> Result<LayerDigests, LayerError> {
    let mut outer = BufReader::with_capacity(256 << 10, HashingReader::new(reader, algorithm));
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
    let decompress_err = |source| LayerError::Decompress {
        compression,
        source,
    };
    let (diff_id, uncompressed_size, entries) = {
        let dec = decoder(&mut outer, compression).map_err(decompress_err)?;
        let mut inner = HashingReader::new(dec, Algorithm::Sha256);
        let mut entries = 0u64;
        {
            let mut archive = tar::Archive::new(&mut inner);
            let iter = archive
                .entries()
                .map_err(|source| LayerError::Tar { entries, source })?;
            for entry in iter {
                let mut entry = entry.map_err(|source| classify(source, compression, entries))?;
                // Read the data so that decompression errors surface here.
                io::copy(&mut entry, &mut io::sink())
                    .map_err(|source| classify(source, compression, entries))?;
                entries += 1;
            }
        }
        let (d, n) = inner.drain_and_finish().map_err(decompress_err)?;
        (d, n, entries)
    };
    io::copy(&mut outer, &mut io::sink())?;
    let (blob_digest, blob_size) = outer.into_inner().drain_and_finish()?;
    Ok(LayerDigests {
        blob_digest,
        blob_size,
        diff_id,
        uncompressed_size,
        entries,
    })
}

/// Errors from inside the tar reader may come from the decoder below it.
fn classify(source: io::Error, compression: Compression, entries: u64) -> LayerError {
    let from_decoder = compression != Compression::None
        && matches!(
            source.kind(),
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
        )
        && !source.to_string().contains("archive");
    if from_decoder {
        LayerError::Decompress {
            compression,
            source,
        }
    } else {
        LayerError::Tar { entries, source }
    }
}
