//! The crate's only `unsafe`: read-only memory maps of blob files.

use std::fs::File;

/// Maps `file` read-only, or returns `None` (empty files, or where mapping
/// fails); callers then fall back to plain reads.
pub(crate) fn map(file: &File) -> Option<memmap2::Mmap> {
    if file.metadata().ok()?.len() == 0 {
        return None;
    }
    // SAFETY: the map is read-only and only ever read as bytes. Blob files are
    // written once under a temporary name and renamed into place, never
    // modified in place by ocikit; another process truncating a blob while we
    // read it could raise SIGBUS, the documented limit of every mmap reader
    // (the same contract as ripgrep's). Callers compare the hashed length with
    // the descriptor, so a file changed under us is reported, not trusted.
    let map = unsafe { memmap2::MmapOptions::new().map(file) }.ok()?;
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::Sequential);
    Some(map)
}
