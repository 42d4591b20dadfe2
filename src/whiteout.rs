//! The whiteout rules of the OCI layer format, in one place for every
//! reader of layer entries (flatten, diff, and the editing commands).
//!
//! A layer deletes a lower path with an entry named `.wh.<name>` beside it,
//! and hides every lower child of a directory with `.wh..wh..opq` inside it
//! (image-spec `layer.md`, "Whiteouts"). Other names that start with
//! `.wh..wh.` are AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): they
//! are never part of the tree and delete nothing. A whiteout hides lower
//! layers only, never an entry of its own layer.

/// The prefix of every whiteout name.
pub(crate) const PREFIX: &[u8] = b".wh.";
/// The name of the opaque-directory marker.
pub(crate) const OPAQUE: &[u8] = b".wh..wh..opq";

/// What a base name (the last path component) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker<'a> {
    /// An ordinary entry.
    None,
    /// `.wh..wh..opq`: the parent directory's lower children are hidden.
    Opaque,
    /// `.wh.<name>`: the lower `<name>` beside it is deleted.
    Delete(&'a [u8]),
    /// `.wh..wh.*` other than the opaque marker: AUFS metadata, ignored.
    Metadata,
    /// `.wh.`, `.wh..` or `.wh...`: names no entry; refused by flatten.
    Invalid,
}

impl Marker<'_> {
    /// True for every name that is not an ordinary entry.
    pub(crate) fn is_marker(&self) -> bool {
        !matches!(self, Marker::None)
    }
}

/// Classifies one base name.
pub(crate) fn classify(base: &[u8]) -> Marker<'_> {
    let Some(target) = base.strip_prefix(PREFIX) else {
        return Marker::None;
    };
    if base == OPAQUE {
        Marker::Opaque
    } else if target.starts_with(PREFIX) {
        Marker::Metadata
    } else if target.is_empty() || target == b"." || target == b".." {
        Marker::Invalid
    } else {
        Marker::Delete(target)
    }
}

/// The base name of a tar path (`a/b/` → `b`; empty for the root).
pub(crate) fn base_name(path: &[u8]) -> &[u8] {
    path.rsplit(|&c| c == b'/')
        .find(|c| !c.is_empty())
        .unwrap_or(b"")
}

/// Classifies the last component of a tar path.
pub(crate) fn classify_path(path: &[u8]) -> Marker<'_> {
    classify(base_name(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(classify(b"file"), Marker::None);
        assert_eq!(classify(b".whatever"), Marker::None);
        assert_eq!(classify(b".wh.file"), Marker::Delete(b"file"));
        assert_eq!(classify(b".wh..hidden"), Marker::Delete(b".hidden"));
        assert_eq!(classify(b".wh..wh..opq"), Marker::Opaque);
        assert_eq!(classify(b".wh..wh.plnk"), Marker::Metadata);
        assert_eq!(classify(b".wh..wh.aufs"), Marker::Metadata);
        assert_eq!(classify(b".wh."), Marker::Invalid);
        assert_eq!(classify(b".wh.."), Marker::Invalid);
        assert_eq!(classify(b".wh..."), Marker::Invalid);
        assert_eq!(classify_path(b"a/b/.wh.c"), Marker::Delete(b"c"));
        assert_eq!(classify_path(b"a/.wh..wh..opq/"), Marker::Opaque);
        assert_eq!(base_name(b"/"), b"");
        assert!(!Marker::None.is_marker());
        assert!(Marker::Metadata.is_marker());
    }
}
