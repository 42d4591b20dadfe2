//! The one hashing adapter: every blob ocikit reads or writes goes through a
//! [`Verified`] stream, which counts and hashes the bytes and, when it knows
//! what they must be (a descriptor's digest and size), bounds the stream to
//! that size and checks the digest at the end.
//!
//! A mismatch is a typed [`Mismatch`]; through `io` layers (decoders, tar
//! readers, `io::copy`) it travels inside an `io::Error` of kind
//! `InvalidData` and comes back out with [`Mismatch::from_io`].

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

use crate::digest::{Algorithm, Digest, Hasher};

/// Why a stream's bytes are not the blob its descriptor names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// The stream is longer or shorter than the descriptor says.
    #[error("{}", size_text(*expected, *actual))]
    SizeMismatch {
        /// The descriptor's size.
        expected: u64,
        /// Bytes the stream had (at most `expected + 1` when it was longer:
        /// reading stops there).
        actual: u64,
    },
    /// The bytes hash to another digest.
    #[error("has the wrong content (it hashes to {actual})")]
    DigestMismatch {
        /// The digest the blob is named by.
        expected: Digest,
        /// What its bytes hash to.
        actual: Digest,
    },
}

fn size_text(expected: u64, actual: u64) -> String {
    if actual > expected {
        format!("is larger than its descriptor's {expected} bytes")
    } else {
        format!("is {actual} bytes but its descriptor says {expected}")
    }
}

impl Mismatch {
    /// The mismatch an `io::Error` from a [`Verified`] stream carries, if any.
    pub fn from_io(e: &io::Error) -> Option<&Mismatch> {
        e.get_ref().and_then(|r| r.downcast_ref::<Mismatch>())
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// What a stream turned out to be: its digest and length, known once its
/// end was read (see [`Verified::outcome`]).
#[derive(Clone, Default)]
pub(crate) struct Outcome(Arc<OnceLock<(Digest, u64)>>);

impl Outcome {
    /// The digest and byte count, once the stream has been read to its end.
    pub(crate) fn get(&self) -> Option<(Digest, u64)> {
        self.0.get().cloned()
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Outcome").field(&self.0.get()).finish()
    }
}

/// A stream (reader or writer) that hashes and counts what passes through,
/// and checks it against an expected digest and size when it has one.
pub struct Verified<T> {
    inner: T,
    hasher: Option<Hasher>,
    count: u64,
    expected: Option<Digest>,
    size: Option<u64>,
    outcome: Outcome,
}

impl<T> Verified<T> {
    /// Hashes with `algorithm`; checks nothing.
    pub fn hashing(inner: T, algorithm: Algorithm) -> Verified<T> {
        Verified {
            inner,
            hasher: Some(Hasher::new(algorithm)),
            count: 0,
            expected: None,
            size: None,
            outcome: Outcome::default(),
        }
    }

    /// Must carry exactly `size` bytes (when given) hashing to `digest`:
    /// reading stops one byte past `size`, and the end of the stream fails
    /// with a [`Mismatch`] unless both hold. A digest whose algorithm ocikit
    /// cannot compute is not checked (callers refuse those first).
    pub fn expecting(inner: T, digest: &Digest, size: Option<u64>) -> Verified<T> {
        let mut v = Verified::hashing(inner, digest.algorithm().clone());
        v.expected = digest.algorithm().is_verifiable().then(|| digest.clone());
        v.size = size;
        v
    }

    /// The same checks over `f(inner)` (say, a progress counter around the
    /// stream); nothing may have been read or written yet.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Verified<U> {
        Verified {
            inner: f(self.inner),
            hasher: self.hasher,
            count: self.count,
            expected: self.expected,
            size: self.size,
            outcome: self.outcome,
        }
    }

    /// A handle that holds the digest and count once the end has been read,
    /// for readers that are moved into a decoder chain.
    pub(crate) fn outcome(&self) -> Outcome {
        self.outcome.clone()
    }

    /// Bytes so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped stream, mutably (bytes read or written through it directly
    /// are not hashed).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Checks what went through against the expectations and returns the
    /// digest and count; for writers, and readers read to their end.
    ///
    /// # Errors
    /// [`Mismatch`] when the size or digest is not the expected one.
    pub fn finish(mut self) -> Result<(T, Digest, u64), Mismatch> {
        let (digest, count) = self.conclude()?;
        Ok((self.inner, digest, count))
    }

    fn conclude(&mut self) -> Result<(Digest, u64), Mismatch> {
        if let Some(done) = self.outcome.get() {
            return Ok(done);
        }
        if let Some(expected) = self.size {
            if self.count != expected {
                return Err(Mismatch::SizeMismatch {
                    expected,
                    actual: self.count,
                });
            }
        }
        let actual = match self.hasher.take() {
            Some(h) => h.finish(),
            None => {
                return Err(Mismatch::SizeMismatch {
                    expected: self.size.unwrap_or(0),
                    actual: self.count,
                })
            }
        };
        if let Some(expected) = &self.expected {
            if &actual != expected {
                return Err(Mismatch::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let _ = self.outcome.0.set((actual.clone(), self.count));
        Ok((actual, self.count))
    }

    fn take(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.count += bytes.len() as u64;
        if let Some(size) = self.size {
            if self.count > size {
                return Err(Mismatch::SizeMismatch {
                    expected: size,
                    actual: self.count.min(size + 1),
                }
                .into_io());
            }
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
        Ok(())
    }
}

impl<R: Read> Verified<R> {
    /// Reads the rest of the stream, checks it, and returns its digest and
    /// length (reading to the end makes sure trailing bytes are covered).
    ///
    /// # Errors
    /// Read errors; a [`Mismatch`] inside an `io::Error`.
    pub fn drain(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        self.conclude().map_err(Mismatch::into_io)
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Never ask for more than one byte past the expected size.
        let want = match self.size {
            Some(size) => {
                let left = size.saturating_sub(self.count).saturating_add(1);
                buf.len().min(usize::try_from(left).unwrap_or(usize::MAX))
            }
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.conclude().map_err(Mismatch::into_io)?;
            return Ok(0);
        }
        self.take(&buf[..n])?;
        Ok(n)
    }
}

impl<W: Write> Write for Verified<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.take(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> Digest {
        Digest::of_bytes(Algorithm::Sha256, b)
    }

    #[test]
    fn reads_check_size_then_digest() {
        let good = b"hello world";
        let d = sha(good);
        let v = Verified::expecting(&good[..], &d, Some(11));
        assert_eq!(v.drain().unwrap(), (d.clone(), 11));

        let short = Verified::expecting(&good[..5], &d, Some(11))
            .drain()
            .unwrap_err();
        assert_eq!(
            Mismatch::from_io(&short),
            Some(&Mismatch::SizeMismatch {
                expected: 11,
                actual: 5
            })
        );
        assert_eq!(
            Mismatch::from_io(&short).unwrap().to_string(),
            "is 5 bytes but its descriptor says 11"
        );

        let mut long = Verified::expecting(&b"hello world, and more"[..], &d, Some(11));
        let mut out = Vec::new();
        let e = long.read_to_end(&mut out).unwrap_err();
        assert_eq!(
            Mismatch::from_io(&e),
            Some(&Mismatch::SizeMismatch {
                expected: 11,
                actual: 12
            })
        );
        // Bounded: nothing past one byte over the size was asked for.
        assert!(out.len() <= 12, "{}", out.len());

        let other = b"HELLO WORLD";
        let e = Verified::expecting(&other[..], &d, Some(11))
            .drain()
            .unwrap_err();
        assert_eq!(
            Mismatch::from_io(&e),
            Some(&Mismatch::DigestMismatch {
                expected: d.clone(),
                actual: sha(other)
            })
        );
    }

    #[test]
    fn outcome_is_known_at_the_end() {
        let mut v = Verified::hashing(&b"abc"[..], Algorithm::Sha256);
        let o = v.outcome();
        assert!(o.get().is_none());
        io::copy(&mut v, &mut io::sink()).unwrap();
        assert_eq!(o.get(), Some((sha(b"abc"), 3)));
    }

    #[test]
    fn writers_hash_and_check() {
        let d = sha(b"abc");
        let mut w = Verified::expecting(Vec::new(), &d, Some(3));
        w.write_all(b"abc").unwrap();
        let (out, digest, n) = w.finish().unwrap();
        assert_eq!((out, digest, n), (b"abc".to_vec(), d.clone(), 3));

        let mut w = Verified::expecting(Vec::new(), &d, Some(3));
        w.write_all(b"abd").unwrap();
        assert!(matches!(w.finish(), Err(Mismatch::DigestMismatch { .. })));
        let mut w = Verified::expecting(Vec::new(), &d, Some(3));
        assert!(w.write_all(b"abcd").is_err());
    }
}
