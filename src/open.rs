//! Opening a [`Location`]: as a readable store (a layout directory or an
//! archive, by its transport or by what the path is), as a layout to change,
//! and deciding what a copy writes to (a layout, or an archive of which kind
//! and compression, from the transport, the file name and the flags).
//!
//! Nothing here prints: what the user should know while opening (a tolerated
//! `imageLayoutVersion`, an archive's notes) goes to a [`Notice`] callback.

use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::{ArchiveError, ArchiveStore, Expect, OpenOptions};
use crate::copy::ArchiveKind;
use crate::layout::Layout;
use crate::reference::{Location, Transport};
use crate::spec::Compression;
use crate::store::{Store, StoreError};

/// Something the user should know that is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// A note (the CLI prints `ocikit: note: …`).
    Note(String),
    /// A warning (the CLI prints `ocikit: warning: …`).
    Warning(String),
    /// A plain progress message (the CLI prints it as is).
    Info(String),
}

/// Why a location cannot be opened, or cannot be written as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The path may not be read.
    #[error("cannot read {}: permission denied", path.display())]
    Denied {
        /// The path.
        path: PathBuf,
    },
    /// The path does not exist (or its metadata cannot be read).
    #[error("{} does not exist", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A command that changes layouts was given an archive.
    #[error("{} is an archive; this command changes layouts (import it first: ocikit import {} DIR)", path.display(), path.display())]
    IsArchive {
        /// The archive.
        path: PathBuf,
    },
    /// Opening the layout failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Opening the archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// An archive is asked for (export), and the target is a layout.
    #[error("export writes an archive file; to copy into a layout use copy or import")]
    ExportToLayout,
    /// An archive is asked for (export), and the target is a directory.
    #[error("{} is a directory; export writes an archive file", path.display())]
    ExportToDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// `--format` names the other archive kind than the transport.
    #[error("--format {format} contradicts the {transport}: transport")]
    FormatContradicts {
        /// The format asked for.
        format: &'static str,
        /// The transport given.
        transport: &'static str,
    },
}

/// The metadata of `path`, or why there is none ("does not exist", or
/// "permission denied").
///
/// # Errors
/// [`OpenError::Denied`] and [`OpenError::Missing`].
pub(crate) fn check_exists(path: &Path) -> Result<Metadata, OpenError> {
    std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => OpenError::Denied {
            path: path.to_path_buf(),
        },
        _ => OpenError::Missing {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

impl Location {
    /// Which archive format to read the location as, or `None` for a layout
    /// directory: by its transport, else by what the path is (anything but a
    /// directory is read as an archive; FIFOs and devices are then refused
    /// by name).
    ///
    /// # Errors
    /// The path does not exist or may not be read.
    pub fn archive_expect(&self) -> Result<Option<Expect>, OpenError> {
        let meta = check_exists(&self.path)?;
        Ok(match self.transport {
            Transport::Oci => None,
            Transport::OciArchive => Some(Expect::Oci),
            Transport::DockerArchive => Some(Expect::Docker),
            Transport::Auto if meta.is_dir() => None,
            Transport::Auto => Some(Expect::Any),
        })
    }

    /// Opens a location that ocikit writes: a layout directory. A tolerated
    /// `imageLayoutVersion` other than 1.0.0 is a [`Notice::Warning`].
    ///
    /// # Errors
    /// An archive ([`OpenError::IsArchive`]), a missing path, or a layout
    /// that cannot be opened.
    pub fn open_layout(&self, notice: &mut dyn FnMut(Notice)) -> Result<Layout, OpenError> {
        if matches!(
            self.transport,
            Transport::OciArchive | Transport::DockerArchive
        ) || check_exists(&self.path)?.is_file()
        {
            return Err(OpenError::IsArchive {
                path: self.path.clone(),
            });
        }
        let (layout, warnings) = Layout::open_with_warnings(&self.path)?;
        if let Some(v) = warnings.layout_version {
            notice(Notice::Warning(format!(
                "{}/oci-layout has imageLayoutVersion {v:?}; reading it as 1.0.0",
                self.path.display()
            )));
        }
        Ok(layout)
    }

    /// Opens any readable location: a layout directory or an archive, by its
    /// transport or by what it is. An archive's notes are [`Notice::Note`]s.
    ///
    /// # Errors
    /// A missing path, or a layout or archive that cannot be opened.
    pub fn open(
        &self,
        options: &OpenOptions,
        notice: &mut dyn FnMut(Notice),
    ) -> Result<Box<dyn Store>, OpenError> {
        match self.archive_expect()? {
            None => Ok(Box::new(self.open_layout(notice)?.store().clone())),
            Some(expect) => {
                let store = ArchiveStore::open_with(&self.path, expect, options)?;
                for n in store.notes() {
                    notice(Notice::Note(n.clone()));
                }
                if let Some(r) = crate::delta::record_of_store(&store) {
                    notice(Notice::Note(format!(
                        "{} is a delta bundle: it holds only the blobs its base lacked{}",
                        self.path.display(),
                        match r.omitted {
                            Some(n) => format!(" ({n} left out)"),
                            None => String::new(),
                        }
                    )));
                }
                Ok(Box::new(store))
            }
        }
    }

    /// Where a copy to this location goes: a layout directory unless the
    /// transport, `format`, the name (`.tar`, `.tar.gz`, `.tgz`, `.tar.zst`,
    /// `.tzst`, `-`) or `archive_only` (export) says archive.
    ///
    /// # Errors
    /// `format` contradicting the transport, and an export to a layout or a
    /// directory.
    pub fn target(
        &self,
        format: Option<ArchiveKind>,
        compress: Option<Compression>,
        archive_only: bool,
    ) -> Result<Target, OpenError> {
        let archive = |kind: ArchiveKind| {
            let stdout = self.path.as_os_str() == "-";
            Target::Archive {
                path: (!stdout).then(|| self.path.clone()),
                kind,
                compression: compression_of(&self.path, compress),
            }
        };
        Ok(match self.transport {
            Transport::Oci => {
                if archive_only {
                    return Err(OpenError::ExportToLayout);
                }
                Target::Layout(self.path.clone())
            }
            Transport::OciArchive => {
                if format == Some(ArchiveKind::DockerArchive) {
                    return Err(OpenError::FormatContradicts {
                        format: "docker-archive",
                        transport: "oci-archive",
                    });
                }
                archive(ArchiveKind::OciArchive)
            }
            Transport::DockerArchive => {
                if format == Some(ArchiveKind::OciArchive) {
                    return Err(OpenError::FormatContradicts {
                        format: "oci-archive",
                        transport: "docker-archive",
                    });
                }
                archive(ArchiveKind::DockerArchive)
            }
            Transport::Auto => {
                let name = self.path.to_string_lossy();
                let is_dir = self.path.is_dir();
                let looks_archive = [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"]
                    .iter()
                    .any(|e| name.ends_with(e));
                if is_dir && archive_only {
                    return Err(OpenError::ExportToDirectory {
                        path: self.path.clone(),
                    });
                }
                if name == "-" || archive_only || format.is_some() || (looks_archive && !is_dir) {
                    archive(format.unwrap_or(ArchiveKind::OciArchive))
                } else {
                    Target::Layout(self.path.clone())
                }
            }
        })
    }
}

/// Where a copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A layout directory (created if absent).
    Layout(PathBuf),
    /// An archive file.
    Archive {
        /// The file, or `None` for standard output.
        path: Option<PathBuf>,
        /// Its format.
        kind: ArchiveKind,
        /// How the whole file is compressed.
        compression: Compression,
    },
}

/// How an archive file is compressed as a whole: `flag` when given, else by
/// its extension (`.gz`, `.tgz`: gzip; `.zst`, `.tzst`: zstd; else none).
pub(crate) fn compression_of(path: &Path, flag: Option<Compression>) -> Compression {
    match flag {
        Some(c) => c,
        None => {
            let name = path.to_string_lossy();
            if name.ends_with(".gz") || name.ends_with(".tgz") {
                Compression::Gzip
            } else if name.ends_with(".zst") || name.ends_with(".tzst") {
                Compression::Zstd
            } else {
                Compression::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_from_names_and_flags() {
        assert_eq!(
            compression_of(Path::new("a.tar.gz"), None),
            Compression::Gzip
        );
        assert_eq!(compression_of(Path::new("a.tgz"), None), Compression::Gzip);
        assert_eq!(
            compression_of(Path::new("a.tar.zst"), None),
            Compression::Zstd
        );
        assert_eq!(compression_of(Path::new("a.tar"), None), Compression::None);
        assert_eq!(
            compression_of(Path::new("a.tar.gz"), Some(Compression::None)),
            Compression::None
        );
    }

    #[test]
    fn targets() {
        let loc = |s: &str| Location::parse(s).unwrap();
        assert!(matches!(
            loc("docker-archive:/nonexistent/x.tar").target(None, None, false),
            Ok(Target::Archive {
                kind: ArchiveKind::DockerArchive,
                compression: Compression::None,
                ..
            })
        ));
        assert!(matches!(
            loc("/nonexistent/x.tar.zst").target(None, None, false),
            Ok(Target::Archive {
                kind: ArchiveKind::OciArchive,
                compression: Compression::Zstd,
                ..
            })
        ));
        assert_eq!(
            loc("/nonexistent/dir").target(None, None, false).unwrap(),
            Target::Layout("/nonexistent/dir".into())
        );
        assert!(matches!(
            loc("-").target(None, None, true),
            Ok(Target::Archive { path: None, .. })
        ));
        assert!(matches!(
            loc("oci:/nonexistent/dir").target(None, None, true),
            Err(OpenError::ExportToLayout)
        ));
        assert!(matches!(
            loc("oci-archive:/nonexistent/x.tar").target(
                Some(ArchiveKind::DockerArchive),
                None,
                false
            ),
            Err(OpenError::FormatContradicts { .. })
        ));
    }
}
