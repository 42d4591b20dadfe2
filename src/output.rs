//! Writing an output file atomically: into a temporary file beside it, renamed
//! over it only when complete. A failed or interrupted write (the writer
//! returns an error, say after [`crate::cancel::Cancel::cancel`]) removes the
//! temporary file and leaves the target as it was.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Why an atomic write failed (errors of the writer itself are the caller's).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The temporary file could not be created.
    #[error("cannot create a temporary file in {}", dir.display())]
    TempFile {
        /// The directory it was to be made in.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing the last bytes, or renaming the file into place, failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The target.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file's mode could not be set.
    #[error("cannot set the mode of {}", path.display())]
    Mode {
        /// The target.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Syncing the file failed.
    #[error(transparent)]
    Sync(io::Error),
}

/// A buffered temporary file beside the target (see [`write_atomically`]).
pub struct AtomicFile(BufWriter<NamedTempFile>);

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The directory a file is written in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `path` atomically: `write` gets the directory of `path` (for
/// staging beside it) and a buffered temporary file there (`.ocikit-tar-*`),
/// and hands the file back when done. Then the file gets the mode of the file
/// it replaces (or the umask's), is synced and renamed over `path`. On any
/// error the temporary file is removed and `path` is untouched.
///
/// # Errors
/// The writer's errors, and [`OutputError`]s (converted into `E`).
pub fn write_atomically<T, E>(
    path: &Path,
    write: impl FnOnce(&Path, AtomicFile) -> Result<(AtomicFile, T), E>,
) -> Result<T, E>
where
    E: From<OutputError>,
{
    use std::os::unix::fs::PermissionsExt;
    let parent = parent_dir(path);
    let tmp = tempfile::Builder::new()
        .prefix(".ocikit-tar-")
        .tempfile_in(&parent)
        .map_err(|source| OutputError::TempFile {
            dir: parent.clone(),
            source,
        })?;
    let (w, value) = write(&parent, AtomicFile(BufWriter::with_capacity(1 << 20, tmp)))?;
    let tmp = w.0.into_inner().map_err(|e| OutputError::Write {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    // A file replaced keeps its mode; a new one follows the umask.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(
            crate::layout::replacement_mode(path),
        ))
        .map_err(|source| OutputError::Mode {
            path: path.to_path_buf(),
            source,
        })?;
    tmp.as_file().sync_all().map_err(OutputError::Sync)?;
    persist(tmp, path)?;
    Ok(value)
}

fn persist(tmp: NamedTempFile, path: &Path) -> Result<File, OutputError> {
    tmp.persist(path).map_err(|e| OutputError::Write {
        path: path.to_path_buf(),
        source: e.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.tar");
        let n = write_atomically(&path, |_, mut w| -> anyhow::Result<_> {
            w.write_all(b"hello")?;
            Ok((w, 5))
        })
        .unwrap();
        assert_eq!(n, 5);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        let r = write_atomically(&path, |_, mut w| -> anyhow::Result<(AtomicFile, ())> {
            w.write_all(b"partial")?;
            Err(anyhow::anyhow!("interrupted"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
