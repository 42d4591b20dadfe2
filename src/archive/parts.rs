//! Transfer integrity for archive files: a `FILE.sha256` checksum file in
//! sha256sum format beside an archive, and archives split into numbered
//! parts `FILE.000`, `FILE.001`, … that are read back as one.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Why parts or a checksum file cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartsError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A part (or the whole file) does not have the digest its checksum
    /// file lists.
    #[error("{}: checksum mismatch (sha256 {actual}, expected {expected})", path.display())]
    Mismatch {
        /// The part.
        path: PathBuf,
        /// Its digest.
        actual: String,
        /// The digest the checksum file lists.
        expected: String,
    },
    /// A part is not listed in the checksum file beside it.
    #[error("{}: not listed in {}", path.display(), sums.display())]
    NotListed {
        /// The part.
        path: PathBuf,
        /// The checksum file.
        sums: PathBuf,
    },
    /// A part listed in the checksum file is missing.
    #[error("{}: listed in {} but missing", path.display(), sums.display())]
    Missing {
        /// The part.
        path: PathBuf,
        /// The checksum file.
        sums: PathBuf,
    },
    /// A split size below the minimum.
    #[error("split size {0} is below the minimum of 1 MiB")]
    SplitTooSmall(u64),
}

/// The smallest `--split` size.
pub const MIN_SPLIT: u64 = 1 << 20;

/// Test override: when set (to anything), [`MIN_SPLIT`] does not apply, so
/// tests can split a small archive. Undocumented in `--help`.
pub const SPLIT_OVERRIDE_ENV: &str = "OCIKIT_TEST_SPLIT_ANY_SIZE";

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PartsError + '_ {
    move |source| PartsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `FILE.sha256` for `FILE`.
pub fn sums_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_os_string();
    s.push(".sha256");
    PathBuf::from(s)
}

/// `FILE.NNN`, the part numbered `n`.
pub fn part_path(file: &Path, n: usize) -> PathBuf {
    let mut s = file.as_os_str().to_os_string();
    s.push(format!(".{n:03}"));
    PathBuf::from(s)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The lowercase hex SHA-256 of a file's content.
///
/// # Errors
/// The file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String, PartsError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Writes `sums` (sha256sum lines for `(path, hex)`, by base name) with a
/// temporary file beside it renamed over it.
///
/// # Errors
/// The file cannot be written.
pub fn write_sums(sums: &Path, entries: &[(PathBuf, String)]) -> Result<(), PartsError> {
    let dir = crate::output::parent_dir(sums);
    let mut tmp = tempfile::Builder::new()
        .prefix(".ocikit-sha256-")
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    let mut text = String::new();
    for (p, hex) in entries {
        text.push_str(&format!("{hex}  {}\n", file_name(p)));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(
                crate::layout::replacement_mode(sums),
            ))
            .map_err(io_err(sums))?;
    }
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err(sums))?;
    tmp.persist(sums).map_err(|e| PartsError::Io {
        path: sums.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// What [`split_file`] did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SplitReport {
    /// The parts written, in order.
    pub parts: Vec<PathBuf>,
    /// Parts of an older split beyond the new count, removed.
    pub removed: Vec<PathBuf>,
}

/// Checks a split size against [`MIN_SPLIT`] (unless the test override is set).
///
/// # Errors
/// [`PartsError::SplitTooSmall`].
pub fn check_split_size(size: u64) -> Result<(), PartsError> {
    if size == 0 || (size < MIN_SPLIT && std::env::var_os(SPLIT_OVERRIDE_ENV).is_none()) {
        return Err(PartsError::SplitTooSmall(size));
    }
    Ok(())
}

/// Cuts `whole` into parts `target.000`, `target.001`, … of at most `size`
/// bytes. The parts are written under temporary names and renamed in only
/// when all are complete; parts of an older split beyond the new count are
/// removed. `whole` is left as it is.
///
/// # Errors
/// Reading `whole` or writing a part failed; no part is renamed in then.
pub fn split_file(whole: &Path, target: &Path, size: u64) -> Result<SplitReport, PartsError> {
    check_split_size(size)?;
    let dir = crate::output::parent_dir(target);
    let mut src = File::open(whole).map_err(io_err(whole))?;
    let len = src.metadata().map_err(io_err(whole))?.len();
    let count = len.div_ceil(size).max(1);
    let mut temps = Vec::new();
    for _ in 0..count {
        let mut tmp = tempfile::Builder::new()
            .prefix(".ocikit-part-")
            .tempfile_in(&dir)
            .map_err(io_err(&dir))?;
        let mut take = (&mut src).take(size);
        io::copy(&mut take, tmp.as_file_mut())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(io_err(whole))?;
        temps.push(tmp);
    }
    let mut report = SplitReport::default();
    for (n, tmp) in temps.into_iter().enumerate() {
        let p = part_path(target, n);
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(
                    crate::layout::replacement_mode(&p),
                ))
                .map_err(io_err(&p))?;
        }
        tmp.persist(&p).map_err(|e| PartsError::Io {
            path: p.clone(),
            source: e.error,
        })?;
        report.parts.push(p);
    }
    let mut n = report.parts.len();
    loop {
        let p = part_path(target, n);
        match std::fs::remove_file(&p) {
            Ok(()) => report.removed.push(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(source) => return Err(PartsError::Io { path: p, source }),
        }
        n += 1;
    }
    Ok(report)
}

/// The archive a path ending in `.000` is the first part of, or `None`.
pub fn split_base(path: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let base = path.as_os_str().as_bytes().strip_suffix(b".000")?;
    if base.is_empty() || base.ends_with(b"/") {
        return None;
    }
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(base)))
}

/// The parts of a split archive, `base.000` onwards, up to the first
/// missing number.
pub fn existing_parts(base: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|n| part_path(base, n))
        .take_while(|p| p.is_file())
        .collect()
}

fn read_sums(sums: &Path) -> Result<Option<Vec<(String, String)>>, PartsError> {
    let text = match std::fs::read_to_string(sums) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PartsError::Io {
                path: sums.to_path_buf(),
                source,
            })
        }
    };
    Ok(Some(
        text.lines()
            .filter_map(|l| {
                let (hex, name) = l.split_once(' ')?;
                let name = name.strip_prefix(['*', ' ']).unwrap_or(name);
                Some((hex.to_ascii_lowercase(), name.to_string()))
            })
            .collect(),
    ))
}

/// Checks `files` against the checksum file `sums`, if it exists: each must
/// be listed with its digest, and every listed file must exist.
///
/// # Errors
/// The first file that is not listed or does not match, or a missing one.
pub fn verify_sums(files: &[PathBuf], sums: &Path) -> Result<(), PartsError> {
    let Some(entries) = read_sums(sums)? else {
        return Ok(());
    };
    let dir = crate::output::parent_dir(sums);
    for p in files {
        let name = file_name(p);
        let Some((expected, _)) = entries.iter().find(|(_, n)| *n == name) else {
            return Err(PartsError::NotListed {
                path: p.clone(),
                sums: sums.to_path_buf(),
            });
        };
        let actual = sha256_file(p)?;
        if actual != *expected {
            return Err(PartsError::Mismatch {
                path: p.clone(),
                actual,
                expected: expected.clone(),
            });
        }
    }
    for (_, name) in &entries {
        if !files.iter().any(|p| file_name(p) == *name) {
            return Err(PartsError::Missing {
                path: dir.join(name),
                sums: sums.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Opens an archive path for reading with its transfer checks: `FILE.000`
/// is joined with its sibling parts into one unnamed temporary file; parts
/// (or an unsplit `FILE`) with a `FILE.sha256` beside them are checked
/// against it first. `None` for an unsplit file: the caller opens it.
///
/// # Errors
/// A part cannot be read or does not match its checksum.
pub fn open_checked(path: &Path) -> Result<Option<File>, PartsError> {
    if let Some(base) = split_base(path) {
        let parts = existing_parts(&base);
        if !parts.is_empty() {
            verify_sums(&parts, &sums_path(&base))?;
            let mut out = tempfile::tempfile().map_err(io_err(path))?;
            for p in &parts {
                let mut f = File::open(p).map_err(io_err(p))?;
                io::copy(&mut f, &mut out).map_err(io_err(p))?;
            }
            out.rewind().map_err(io_err(path))?;
            return Ok(Some(out));
        }
    }
    let sums = sums_path(path);
    if path.is_file() && sums.is_file() {
        verify_sums(&[path.to_path_buf()], &sums)?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_base_needs_000() {
        assert_eq!(split_base(Path::new("a.tar.000")), Some("a.tar".into()));
        assert_eq!(split_base(Path::new("a.tar.001")), None);
        assert_eq!(split_base(Path::new(".000")), None);
    }
}
