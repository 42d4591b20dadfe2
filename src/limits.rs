//! Every buffer size and cap, named once, and the per-call [`Limits`].
//!
//! The library reads no environment variable: the binary builds a [`Limits`]
//! from `OCIKIT_MAX_DECOMPRESSED` ([`Limits::from_env`]) and passes it down.

/// Buffer for sequential blob I/O (readers and writers of stored blobs).
pub(crate) const IO_BUFFER: usize = 256 << 10;
/// Copy step for large sequential copies (layers into archives): tar's own
/// copy goes 8 KiB at a time, which cost seconds on gigabyte layers.
pub(crate) const COPY_CHUNK: usize = 1 << 20;
/// Read size when hashing files (stays in the CPU's L2 cache).
pub(crate) const HASH_BUFFER: usize = 128 << 10;
/// The most one extended-attribute list or value may hold (the kernel's
/// `XATTR_SIZE_MAX`).
pub(crate) const XATTR_BUFFER: usize = 64 << 10;
/// The most a small control file (`oci-layout`, a lock file) may hold.
pub(crate) const MAX_SMALL_FILE: u64 = 64 << 10;
/// The least a compressed stream may always decompress to.
pub const MIN_DECOMPRESSED: u64 = 1 << 30;
/// How many times its compressed size a stream may decompress to.
pub const DECOMPRESSION_RATIO: u64 = 100;
/// The environment variable the binary reads for [`Limits::max_decompressed`].
pub(crate) const MAX_DECOMPRESSED_VAR: &str = "OCIKIT_MAX_DECOMPRESSED";

/// Caps that apply to one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// A fixed cap on every decompressed stream, in bytes, instead of
    /// [`DECOMPRESSION_RATIO`] × the compressed size (at least
    /// [`MIN_DECOMPRESSED`]).
    pub max_decompressed: Option<u64>,
}

impl Limits {
    /// The default caps, with `max_decompressed` taken from
    /// `OCIKIT_MAX_DECOMPRESSED` when it holds a number.
    pub fn from_env() -> Limits {
        Limits {
            max_decompressed: std::env::var(MAX_DECOMPRESSED_VAR)
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    /// With a fixed decompression cap.
    pub fn with_max_decompressed(mut self, bytes: u64) -> Limits {
        self.max_decompressed = Some(bytes);
        self
    }

    /// The most bytes a stream of `compressed` bytes may decompress to:
    /// [`DECOMPRESSION_RATIO`] × its size, at least [`MIN_DECOMPRESSED`],
    /// unless a fixed cap is set. Image archives hold mostly compressed layers
    /// (ratio near 1); uncompressed docker layers rarely pass 10; a bomb is in
    /// the thousands.
    pub fn decompression(&self, compressed: u64) -> u64 {
        if let Some(v) = self.max_decompressed {
            return v;
        }
        compressed
            .saturating_mul(DECOMPRESSION_RATIO)
            .max(MIN_DECOMPRESSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompression_cap() {
        let l = Limits::default();
        assert_eq!(l.decompression(0), MIN_DECOMPRESSED);
        assert_eq!(l.decompression(100 << 20), 10_000 << 20);
        assert_eq!(l.decompression(u64::MAX), u64::MAX);
        assert_eq!(l.with_max_decompressed(7).decompression(1 << 40), 7);
    }
}
