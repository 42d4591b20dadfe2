//! Content digests: parsing and validating `algorithm:encoded` strings, and
//! hashing bytes, streams and files.
//!
//! A [`Digest`] can only be obtained from [`Digest::parse`] (or from hashing), so
//! every value has passed the OCI digest grammar and, for the algorithms we
//! verify, the algorithm's own encoding rule. [`Digest::blob_path`] is the only
//! way the crate turns a digest into a path, so a digest can never smuggle a
//! path component such as `..` or `/`.
//!
//! # Examples
//! ```
//! use ocikit::digest::{Algorithm, Digest};
//! let d: Digest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".parse()?;
//! assert_eq!(d.algorithm(), &Algorithm::Sha256);
//! assert_eq!(Digest::of_bytes(Algorithm::Sha256, b"{}"), d);
//! assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
//! # Ok::<(), ocikit::digest::DigestError>(())
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::str::FromStr;

use sha2::Digest as _;

use crate::limits::HASH_BUFFER;

/// Longest encoded part accepted for any algorithm. File names longer than 255
/// bytes cannot be stored, and no real algorithm needs more.
const MAX_ENCODED_LEN: usize = 255;
/// Longest algorithm name accepted.
const MAX_ALGORITHM_LEN: usize = 64;

/// A digest algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the algorithm every implementation must verify.
    Sha256,
    /// SHA-512.
    Sha512,
    /// A grammar-valid algorithm this crate cannot verify (for example `blake3`).
    /// Such digests are accepted and reported as unverifiable, never as verified.
    Other(String),
}

impl Algorithm {
    /// The algorithm's name as written in a digest string.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Other(s) => s,
        }
    }

    /// Whether this crate can compute this algorithm.
    pub fn is_verifiable(&self) -> bool {
        !matches!(self, Algorithm::Other(_))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The string does not follow `algorithm ":" encoded` from the OCI grammar.
    #[error("{0:?} is not a valid digest (expected algorithm:encoded, e.g. sha256:<64 hex>)")]
    Grammar(String),
    /// The algorithm is known but the encoded part has the wrong length or characters.
    #[error("{digest:?} is not a valid {algorithm} digest (expected {expected})")]
    Encoding {
        /// The rejected string.
        digest: String,
        /// The algorithm named in it.
        algorithm: String,
        /// What the encoded part must look like.
        expected: &'static str,
    },
}

/// A validated content digest, `algorithm:encoded`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    encoded: String,
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_algorithm(alg: &str) -> bool {
    // algorithm ::= component (separator component)*, component ::= [a-z0-9]+,
    // separator ::= [+._-]
    if alg.is_empty() || alg.len() > MAX_ALGORITHM_LEN {
        return false;
    }
    let mut prev_sep = true; // the first byte must not be a separator
    for b in alg.bytes() {
        let is_comp = b.is_ascii_digit() || b.is_ascii_lowercase();
        let is_sep = matches!(b, b'+' | b'.' | b'_' | b'-');
        if is_comp {
            prev_sep = false;
        } else if is_sep && !prev_sep {
            prev_sep = true;
        } else {
            return false;
        }
    }
    !prev_sep
}

fn valid_encoded(enc: &str) -> bool {
    // encoded ::= [a-zA-Z0-9=_-]+
    !enc.is_empty()
        && enc.len() <= MAX_ENCODED_LEN
        && enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

impl Digest {
    /// Parses and validates a digest string.
    ///
    /// # Errors
    /// [`DigestError::Grammar`] when the string does not follow the OCI digest
    /// grammar; [`DigestError::Encoding`] when a sha256/sha512 digest is not
    /// 64/128 lowercase hex characters.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (alg, enc) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Grammar(s.to_string()))?;
        if !valid_algorithm(alg) || !valid_encoded(enc) {
            return Err(DigestError::Grammar(s.to_string()));
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => Algorithm::Other(other.to_string()),
        };
        let expected = match algorithm {
            Algorithm::Sha256 if enc.len() != 64 || !is_lower_hex(enc) => Some("64 lowercase hex"),
            Algorithm::Sha512 if enc.len() != 128 || !is_lower_hex(enc) => {
                Some("128 lowercase hex")
            }
            _ => None,
        };
        if let Some(expected) = expected {
            return Err(DigestError::Encoding {
                digest: s.to_string(),
                algorithm: alg.to_string(),
                expected,
            });
        }
        Ok(Digest {
            algorithm,
            encoded: enc.to_string(),
        })
    }

    /// The digest of `bytes` under `algorithm`.
    ///
    /// # Panics
    /// Never for [`Algorithm::Sha256`] or [`Algorithm::Sha512`]; for an
    /// [`Algorithm::Other`] the result is computed with sha256 instead, so callers
    /// must check [`Algorithm::is_verifiable`] first (all crate code does).
    pub fn of_bytes(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }

    /// The encoded part (hex for sha256/sha512).
    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    /// The blob's path relative to a layout root: `blobs/<alg>/<encoded>`.
    /// Safe by construction: neither part can contain `/` or be `.`/`..`.
    pub fn blob_path(&self) -> PathBuf {
        let mut p = PathBuf::from("blobs");
        p.push(self.algorithm.as_str());
        p.push(&self.encoded);
        p
    }

    /// A short form for humans: `sha256:0123456789ab`.
    pub fn short(&self) -> String {
        let n = self.encoded.len().min(12);
        format!("{}:{}", self.algorithm, &self.encoded[..n])
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.encoded)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An incremental hasher for one algorithm. Uses SHA-NI / ARMv8 crypto
/// instructions where the CPU has them (detected at run time by `sha2`).
#[derive(Clone)]
pub struct Hasher {
    algorithm: Algorithm,
    state: HashState,
}

#[derive(Clone)]
enum HashState {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A new hasher. An unverifiable algorithm hashes with sha256 internally and
    /// yields a sha256 digest; callers check [`Algorithm::is_verifiable`] first.
    pub fn new(algorithm: Algorithm) -> Hasher {
        let (algorithm, state) = match algorithm {
            Algorithm::Sha512 => (Algorithm::Sha512, HashState::Sha512(sha2::Sha512::new())),
            _ => (Algorithm::Sha256, HashState::Sha256(sha2::Sha256::new())),
        };
        Hasher { algorithm, state }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            HashState::Sha256(h) => h.update(bytes),
            HashState::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let encoded = match self.state {
            HashState::Sha256(h) => hex(&h.finalize()),
            HashState::Sha512(h) => hex(&h.finalize()),
        };
        Digest {
            algorithm: self.algorithm,
            encoded,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Hashes a whole stream; returns the digest and the number of bytes read.
///
/// # Errors
/// Any read error.
pub fn hash_reader<R: Read>(algorithm: Algorithm, reader: R) -> io::Result<(Digest, u64)> {
    crate::verified::Verified::hashing(reader, algorithm).drain()
}

/// Hashes an open file from its start (whatever its current offset), with
/// positioned reads into a reused 128 KiB buffer (it stays in the CPU's L2
/// cache; measured a few per cent faster than 1 MiB, and memory stays bounded
/// where a memory map would count every hashed page towards RSS).
///
/// # Errors
/// Any read error.
pub fn hash_file(algorithm: Algorithm, file: &File) -> io::Result<(Digest, u64)> {
    hash_file_with_progress(algorithm, file, &|_| {})
}

/// Like [`hash_file`], calling `progress` with the number of bytes hashed
/// after each read, for progress bars.
///
/// # Errors
/// Any read error.
pub(crate) fn hash_file_with_progress(
    algorithm: Algorithm,
    file: &File,
    progress: &dyn Fn(u64),
) -> io::Result<(Digest, u64)> {
    use std::os::unix::fs::FileExt;
    hash_at(algorithm, &|buf, pos| file.read_at(buf, pos), progress)
}

/// Hashes whatever `read_at(buf, position)` yields from position 0 until it
/// returns 0, with one reused buffer; `progress` is told each read's size.
///
/// # Errors
/// Any read error.
pub(crate) fn hash_at(
    algorithm: Algorithm,
    read_at: &dyn Fn(&mut [u8], u64) -> io::Result<usize>,
    progress: &dyn Fn(u64),
) -> io::Result<(Digest, u64)> {
    let mut h = Hasher::new(algorithm);
    let mut buf = vec![0u8; HASH_BUFFER];
    let mut offset = 0u64;
    loop {
        let n = match read_at(&mut buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        offset += n as u64;
        progress(n as u64);
    }
    Ok((h.finish(), offset))
}

/// A reader that reports how many bytes pass through it.
pub(crate) struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Fn(u64),
}

impl<'a, R: Read> ProgressReader<'a, R> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: R, progress: &'a dyn Fn(u64)) -> Self {
        ProgressReader { inner, progress }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_JSON: &str =
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn parses_and_hashes() {
        let d = Digest::parse(EMPTY_JSON).unwrap();
        assert_eq!(d.to_string(), EMPTY_JSON);
        assert_eq!(Digest::of_bytes(Algorithm::Sha256, b"{}"), d);
        assert_eq!(
            d.blob_path(),
            PathBuf::from(
                "blobs/sha256/44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
            )
        );
    }

    #[test]
    fn sha512_known_answer() {
        let d = Digest::of_bytes(Algorithm::Sha512, b"abc");
        assert_eq!(
            d.encoded(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert!(Digest::parse(&d.to_string()).is_ok());
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:../../etc/passwd",
            "sha256:abc/def",
            "SHA256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha256:44136FA355B3678A1146AD16F7E8649E94FB4FC21FE77E8310C060F61CAAFF8A",
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8",
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8aa",
            "sha512:abcd",
            "-sha:abc",
            "sha..x:abc",
            "sha+:abc",
            "a:b c",
            "a:..",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unknown_algorithm_is_grammar_valid_but_unverifiable() {
        let d = Digest::parse("blake3:0123abcd").unwrap();
        assert!(!d.algorithm().is_verifiable());
        assert_eq!(d.blob_path(), PathBuf::from("blobs/blake3/0123abcd"));
        let d = Digest::parse("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8")
            .unwrap();
        assert_eq!(d.algorithm().as_str(), "multihash+base58");
    }

    #[test]
    fn hash_file_matches_hash_bytes_on_both_paths() {
        for len in [0usize, 10, HASH_BUFFER * 2 + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut f = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut f, &data).unwrap();
            // The file's offset is at its end now: hashing must not depend on it.
            let (d, n) = hash_file(Algorithm::Sha256, &f).unwrap();
            assert_eq!(n, len as u64);
            assert_eq!(d, Digest::of_bytes(Algorithm::Sha256, &data));
            // And hashing twice gives the same answer.
            assert_eq!(hash_file(Algorithm::Sha256, &f).unwrap().0, d);
        }
    }
}
