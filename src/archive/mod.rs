//! Reading tar archives in place (oci-archive and docker-archive).
//!
//! One pass over the tar headers records where each member's bytes start;
//! reads are then positioned reads of that slice. A compressed archive (gzip
//! or zstd, detected by its bytes, never by its name) is decompressed once into
//! a temporary file, never into memory and never unpacked to a directory.
//!
//! # Security
//! Member names are normalised (`./` prefixes and `.` components dropped) and
//! rejected when absolute or containing `..`. Symlink members are resolved
//! relative to their directory, hardlinks relative to the archive root, always
//! inside the archive's own name space (never the file system), at most
//! [`MAX_LINK_HOPS`] hops. Two members with one name and different content are
//! an error (`docker load` takes the last, skopeo the first: a parser
//! differential). Decompression stops at a stated limit
//! ([`OpenOptions`]).

pub mod parts;
mod scan;
mod store;

use std::io;
use std::path::PathBuf;

use crate::spec::Compression;

pub use scan::Archive;
pub use store::ArchiveStore;

/// Most links followed to reach a member.
pub const MAX_LINK_HOPS: usize = 8;

/// Why an archive cannot be read. Each names the archive and, where it
/// applies, the member.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// I/O error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The archive.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Permission denied reading the archive (an operational error).
    #[error("cannot read {}: permission denied", .0.display())]
    Denied(PathBuf),
    /// A part of a split archive, or its checksum, is bad.
    #[error(transparent)]
    Parts(#[from] parts::PartsError),
    /// Zero bytes.
    #[error("{} is empty, not an archive", .0.display())]
    Empty(PathBuf),
    /// A valid tar archive with no member at all (only zero blocks).
    #[error("{} is an empty archive: it holds no image", .0.display())]
    NoImage(PathBuf),
    /// A FIFO, device or socket: never read (a pipe would block or be
    /// consumed, a device never ends).
    #[error("{} is not a regular file (pipes and devices are not read)", .0.display())]
    NotRegular(PathBuf),
    /// Not a tar stream.
    #[error("{} is {what}, not a tar archive", path.display())]
    NotTar {
        /// The file.
        path: PathBuf,
        /// What it looks like instead.
        what: &'static str,
    },
    /// Ends early or its tar structure is broken.
    #[error("{} is truncated or damaged: {detail}", path.display())]
    Damaged {
        /// The archive.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The compressed stream is broken.
    #[error("{} cannot be decompressed ({compression}): {source}", path.display())]
    Decompress {
        /// The archive.
        path: PathBuf,
        /// Its compression.
        compression: Compression,
        /// The error.
        source: io::Error,
    },
    /// Decompression would exceed the limit.
    #[error("{} decompresses to more than {limit} bytes; refusing (a decompression bomb?). Set OCIKIT_MAX_DECOMPRESSED to raise the limit", path.display())]
    TooLarge {
        /// The archive.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A member name that could write or read outside the archive.
    #[error("{}: member {member:?} {reason}", path.display())]
    BadName {
        /// The archive.
        path: PathBuf,
        /// The member name.
        member: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two members with one name and different content.
    #[error("{}: member {member:?} appears twice with different content", path.display())]
    Duplicate {
        /// The archive.
        path: PathBuf,
        /// The name.
        member: String,
    },
    /// A link that leaves the archive, loops, or goes too deep.
    #[error("{}: link {member:?} -> {target:?} {reason}", path.display())]
    BadLink {
        /// The archive.
        path: PathBuf,
        /// The link member.
        member: String,
        /// Its target.
        target: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A member the archive's own metadata names does not exist.
    #[error("{}: member {member:?} does not exist", path.display())]
    NoMember {
        /// The archive.
        path: PathBuf,
        /// The name.
        member: String,
    },
    /// A member that is not a regular file where one is needed.
    #[error("{}: member {member:?} is a directory, not a file", path.display())]
    NotAFile {
        /// The archive.
        path: PathBuf,
        /// The name.
        member: String,
    },
    /// The archive's image metadata is missing or wrong.
    #[error("{} {reason}", path.display())]
    Metadata {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A member larger than ocikit reads into memory.
    #[error("{}: member {member:?} is {size} bytes, over the {limit}-byte limit", path.display())]
    MemberTooLarge {
        /// The archive.
        path: PathBuf,
        /// The name.
        member: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// A regular file: where its bytes are in the (decompressed) tar.
    File {
        /// Offset of the data.
        offset: u64,
        /// Its size.
        size: u64,
    },
    /// A symlink or hardlink, its target already resolved to a member name.
    Link(String),
    /// A directory.
    Dir,
}

/// How to open an archive: the cap on decompressing a compressed archive
/// (see [`crate::limits::Limits::decompression`]: 100 × its size, at least
/// 1 GiB; image archives hold mostly compressed layers, ratio near 1, and a
/// bomb is in the thousands) and a token that stops the decompression.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Caps for the decompression.
    pub limits: crate::limits::Limits,
    /// Stops the decompression at its next block.
    pub cancel: crate::cancel::Cancel,
}

impl OpenOptions {
    /// With these limits and this token.
    pub fn new(limits: crate::limits::Limits, cancel: crate::cancel::Cancel) -> OpenOptions {
        OpenOptions { limits, cancel }
    }
}

/// Normalises a member name: drops `./` and `.` components and trailing `/`;
/// refuses absolute names, `..` components and empty names.
pub(crate) fn normalize_member(name: &str) -> Result<String, &'static str> {
    if name.starts_with('/') {
        return Err("is an absolute path");
    }
    let mut parts = Vec::new();
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err("contains '..'"),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("is empty");
    }
    Ok(parts.join("/"))
}
/// What kind of image archive an [`ArchiveStore`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A tar of an OCI layout.
    Oci,
    /// `docker save` 25+ (and containerd exports): an OCI layout plus `manifest.json`.
    DockerOci,
    /// `manifest.json` only (`docker save` before 25, skopeo, go-containerregistry).
    DockerLegacy,
}

/// Which format the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `oci-archive:`
    Oci,
    /// `docker-archive:`
    Docker,
    /// Whatever it is.
    Any,
}

#[cfg(test)]
mod tests {
    use super::scan::resolve_target;
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(normalize_member("./a//b/./c").unwrap(), "a/b/c");
        assert_eq!(normalize_member("blobs/sha256/").unwrap(), "blobs/sha256");
        assert!(normalize_member("/etc/passwd").is_err());
        assert!(normalize_member("a/../../b").is_err());
        assert!(normalize_member("./").is_err());
        assert_eq!(
            resolve_target("x/y", "../z/layer.tar").as_deref(),
            Some("x/z/layer.tar")
        );
        assert_eq!(resolve_target("", "../x"), None);
        assert_eq!(resolve_target("a", "/abs"), None);
    }
}
