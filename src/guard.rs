//! Guards on what ocikit writes and prints (issue 12, "data safety"):
//!
//! - [`check_output`]: an output file or directory never lies inside a
//!   source layout, and is never a source archive itself (compared by device
//!   and inode of the resolved directories, never by path strings);
//! - [`StdoutWriter`]: standard output that remembers its first write error
//!   ([`stdout_error`]), so that a full disk or a closed pipe is an error
//!   (exit 2, "cannot write to stdout: …") and never a silent truncation;
//! - [`escape_controls`]: control characters from images (tags, names)
//!   escaped before they reach a terminal.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An output that would overwrite what is being read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The output lies inside (or is) a source layout directory.
    #[error("refusing to write {}: it is inside the source layout {} (the output would overwrite what is being read)", output.display(), source_path.display())]
    InsideSource {
        /// The output.
        output: PathBuf,
        /// The source layout.
        source_path: PathBuf,
    },
    /// The output is a source archive (same file, by device and inode).
    #[error("refusing to write {}: it is the source archive {} (the output would overwrite what is being read)", output.display(), source_path.display())]
    IsSource {
        /// The output.
        output: PathBuf,
        /// The source archive.
        source_path: PathBuf,
    },
}

/// What a command writes.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// A file, replaced by rename (an archive, `flatten --tar FILE`).
    File(&'a Path),
    /// A directory ocikit creates and fills (`flatten --output DIR`): refused
    /// when it is a source layout or inside one.
    Dir(&'a Path),
    /// A layout ocikit writes into (copy, import, squash): it may be a source
    /// layout itself (the writer lock and atomic renames keep it whole), but
    /// not a directory strictly inside one.
    Layout(&'a Path),
}

/// The (device, inode) of a path, following symlinks.
fn id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Refuses an output that lies inside a source layout directory or is a
/// source archive file. `sources` are the source locations' paths (layout
/// directories or archive files; others are ignored). The nearest existing
/// directory of the output is resolved (symlinks, `..`) and it and each of
/// its ancestors is compared with each source layout's root by device and
/// inode; a file output that exists is compared with each source archive.
///
/// # Errors
/// [`OutputError`] naming the output and the source.
pub fn check_output(output: Output<'_>, sources: &[&Path]) -> Result<(), OutputError> {
    let (path, is_file, allow_equal) = match output {
        Output::File(p) => (p, true, false),
        Output::Dir(p) => (p, false, false),
        Output::Layout(p) => (p, false, true),
    };
    let mut layouts = Vec::new();
    let mut archives = Vec::new();
    for s in sources {
        let Ok(m) = std::fs::metadata(s) else {
            continue;
        };
        let key = (m.dev(), m.ino());
        if m.is_dir() {
            layouts.push((key, *s));
        } else {
            archives.push((key, *s));
        }
    }
    if is_file {
        if let Some(out) = id(path) {
            if let Some((_, s)) = archives.iter().find(|(k, _)| *k == out) {
                return Err(OutputError::IsSource {
                    output: path.to_path_buf(),
                    source_path: s.to_path_buf(),
                });
            }
        }
    }
    if layouts.is_empty() {
        return Ok(());
    }
    // The directory the output goes into (a file's parent; a directory
    // itself), or its nearest existing ancestor.
    let start = if is_file {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    } else {
        path.to_path_buf()
    };
    let mut existing = start.as_path();
    let resolved = loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            break c;
        }
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => match std::fs::canonicalize(".") {
                Ok(c) => break c,
                Err(_) => return Ok(()),
            },
        }
    };
    // Whether `resolved` is the output directory itself (for a directory
    // output that exists): equality is then allowed for layout targets.
    let is_output_itself = !is_file && existing == start;
    for (depth, dir) in resolved.ancestors().enumerate() {
        let Some(key) = id(dir) else { continue };
        if let Some((_, s)) = layouts.iter().find(|(k, _)| *k == key) {
            if allow_equal && depth == 0 && is_output_itself {
                continue;
            }
            return Err(OutputError::InsideSource {
                output: path.to_path_buf(),
                source_path: s.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// The first error writing to standard output, as a sentence
/// ("cannot write to stdout: Broken pipe (os error 32)").
static STDOUT_ERROR: OnceLock<String> = OnceLock::new();

/// The first error any [`StdoutWriter`] met, if one did: the command then
/// failed, whatever it went on to report (the CLI exits 2 with this).
pub fn stdout_error() -> Option<&'static str> {
    STDOUT_ERROR.get().map(String::as_str)
}

/// Records a failed write to standard output (for writers other than
/// [`StdoutWriter`], such as a help text printed by the argument parser).
pub fn record_stdout_error(e: &io::Error) {
    let _ = STDOUT_ERROR.set(format!("cannot write to stdout: {e}"));
}

/// Standard output that records its first write or flush error (see
/// [`stdout_error`]). Rust ignores SIGPIPE, so a closed pipe is an `EPIPE`
/// error here like any other.
pub struct StdoutWriter(io::StdoutLock<'static>);

impl StdoutWriter {
    /// Locks standard output.
    pub fn new() -> StdoutWriter {
        StdoutWriter(io::stdout().lock())
    }
}

impl Default for StdoutWriter {
    fn default() -> Self {
        StdoutWriter::new()
    }
}

impl Write for StdoutWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).inspect_err(record_stdout_error)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().inspect_err(record_stdout_error)
    }
}

/// Escapes control characters (ESC, BEL, CR, NUL, …) as Rust's debug
/// formatting does (`\u{1b}`, `\u{7}`, `\r`, `\0`), leaving everything else
/// as it is. Every message ocikit prints on stderr, and every name it prints
/// in a table, goes through this; raw data (`cat`, `blob`, archives) never does.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped() {
        assert_eq!(
            escape_controls("a\u{1b}[31m\u{7}\r\0b"),
            "a\\u{1b}[31m\\u{7}\\r\\0b"
        );
        assert_eq!(escape_controls("plain é"), "plain é");
    }

    #[test]
    fn outputs_inside_a_source_layout_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let l = t.path().join("l");
        std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
        std::fs::write(l.join("index.json"), b"{}").unwrap();
        let other = t.path().join("other.tar");
        let src: &[&Path] = &[&l];
        assert!(check_output(Output::File(&l.join("index.json")), src).is_err());
        assert!(check_output(Output::File(&l.join("blobs/sha256/x")), src).is_err());
        assert!(check_output(Output::File(&l.join("new/deeper/x.tar")), src).is_err());
        assert!(check_output(Output::File(&l.join("blobs/../x.tar")), src).is_err());
        assert!(check_output(Output::File(&other), src).is_ok());
        assert!(check_output(Output::Dir(&l), src).is_err());
        assert!(check_output(Output::Dir(&l.join("rootfs")), src).is_err());
        assert!(check_output(Output::Dir(&t.path().join("rootfs")), src).is_ok());
        assert!(check_output(Output::Layout(&l), src).is_ok());
        assert!(check_output(Output::Layout(&l.join("blobs")), src).is_err());
        assert!(check_output(Output::Layout(&l.join("sub")), src).is_err());
        // A symlink to the layout is the layout.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&l, &link).unwrap();
        assert!(check_output(Output::File(&link.join("index.json")), src).is_err());
        // The source archive itself, and a hard link to it.
        std::fs::write(&other, b"x").unwrap();
        let hard = t.path().join("hard.tar");
        std::fs::hard_link(&other, &hard).unwrap();
        let src: &[&Path] = &[&other];
        assert!(matches!(
            check_output(Output::File(&hard), src),
            Err(OutputError::IsSource { .. })
        ));
        assert!(check_output(Output::File(&t.path().join("new.tar")), src).is_ok());
    }
}
