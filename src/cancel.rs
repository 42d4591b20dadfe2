//! Cancellation as a per-call token, not process state: the caller (the
//! binary's signal handler, or a library user's thread) calls
//! [`Cancel::cancel`], and the operation holding a clone stops at its next
//! entry or write, failing with [`interrupted`]; its staging directories and
//! temporary files are removed as on any other error.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cancellation token; clones share one flag. The default token is never
/// cancelled.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Option<Arc<AtomicBool>>);

impl Cancel {
    /// A token that [`Cancel::cancel`] can set.
    pub fn new() -> Cancel {
        Cancel(Some(Arc::new(AtomicBool::new(false))))
    }

    /// Asks every operation holding a clone to stop. A single atomic store,
    /// so a signal handler may call it.
    pub fn cancel(&self) {
        if let Some(f) = &self.0 {
            f.store(true, Ordering::SeqCst);
        }
    }

    /// The shared flag itself (`None` for the default token), for a signal
    /// handler that sets it (the binary registers it with `signal-hook`).
    pub fn flag(&self) -> Option<Arc<AtomicBool>> {
        self.0.clone()
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// `Err(interrupted())` once cancelled.
    ///
    /// # Errors
    /// [`interrupted`].
    pub fn check(&self) -> io::Result<()> {
        if self.is_cancelled() {
            Err(interrupted())
        } else {
            Ok(())
        }
    }
}

/// The error an operation fails with once cancelled.
pub fn interrupted() -> io::Error {
    io::Error::other("interrupted by a signal; temporary files removed")
}

/// A writer that fails once its token is cancelled, so a copy stops at its
/// next write and its temporary files are dropped (removed) on the way out.
pub(crate) struct Cancellable<W> {
    pub(crate) inner: W,
    pub(crate) cancel: Cancel,
}

impl<W: Write> Write for Cancellable<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.cancel.check()?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag_and_the_default_never_fires() {
        let t = Cancel::new();
        let c = t.clone();
        assert!(c.check().is_ok());
        t.cancel();
        assert!(c.is_cancelled());
        assert!(c.check().is_err());
        let never = Cancel::default();
        never.cancel();
        assert!(!never.is_cancelled());
        let mut w = Cancellable {
            inner: Vec::new(),
            cancel: c,
        };
        assert!(w.write(b"x").is_err());
    }
}
