//! Rewriting one layer for `mod`: entries read through the image model
//! (verified, capped), edited (time clamp, removed paths, sorted), and written
//! as a new tar, compressed reproducibly, into the target layout. A layer that
//! no edit changes keeps its stored bytes; one whose only change is its
//! compression is recompressed from its uncompressed stream, so its DiffID
//! stays.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::ModError;
use crate::copy::Encoder;
use crate::digest::{Algorithm, Digest};
use crate::image::Layer;
use crate::layer::{self, LayerError, Visit};
use crate::layout::Layout;
use crate::limits::{Limits, COPY_CHUNK, IO_BUFFER};
use crate::spec::Compression;
use crate::squash::ParallelGzip;
use crate::store::Store;
use crate::tarstream::{Entry, EntryKind};
use crate::verified::Verified;
use crate::whiteout::{self, Marker};

/// What a layer's entries get.
#[derive(Debug, Clone, Default)]
pub(super) struct EntryEdits {
    /// Clamp every mtime to at most this (seconds since the epoch).
    pub(super) time_max: Option<i64>,
    /// Sort entries by path (and write only what a reader needs).
    pub(super) normalize: bool,
    /// Paths (cleaned, no leading `/`) to drop, with everything below them
    /// and their whiteouts.
    pub(super) rm_paths: Vec<Vec<u8>>,
}

impl EntryEdits {
    fn touches_entries(&self) -> bool {
        self.time_max.is_some() || self.normalize || !self.rm_paths.is_empty()
    }
}

/// A layer as written.
#[derive(Debug, Clone)]
pub(super) struct NewLayer {
    pub(super) digest: Digest,
    pub(super) size: u64,
    pub(super) diff_id: Digest,
    pub(super) compression: Compression,
}

/// `path` without a leading `./` or `/` and trailing `/`.
pub(super) fn clean(path: &[u8]) -> Vec<u8> {
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            c => comps.push(c),
        }
    }
    comps.join(&b'/')
}

fn under(path: &[u8], prefix: &[u8]) -> bool {
    path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

/// Whether `mod --rm-path` drops this entry: the path itself, anything
/// below it, or a whiteout of it (or of a parent).
fn removed(path: &[u8], rm: &[Vec<u8>]) -> bool {
    let p = clean(path);
    if rm.iter().any(|r| under(&p, r)) {
        return true;
    }
    let base = whiteout::base_name(&p);
    if let Marker::Delete(target) = whiteout::classify(base) {
        let parent = &p[..p.len() - base.len()];
        let mut whited = parent.to_vec();
        whited.extend_from_slice(target);
        return rm.iter().any(|r| under(r, &whited) || under(&whited, r));
    }
    false
}

struct Spooled {
    entry: Entry,
    mtime: (i64, u32),
    /// Offset and length of its stored data in the spool file.
    data: (u64, u64),
}

/// Rewrites `layer` (from `store`) into `layout` with `edits`, compressed as
/// `compression`. `None` when nothing changes (same entries, same
/// compression): the stored layer is kept.
pub(super) fn rewrite(
    store: &dyn Store,
    layer: &Layer,
    limits: &Limits,
    edits: &EntryEdits,
    compression: Compression,
    layout: &Layout,
    spool_dir: &Path,
) -> Result<Option<NewLayer>, ModError> {
    let lerr = layer_error(layer);
    let io_out = |e: io::Error| ModError::Write(e.to_string());
    let from = layer.compression.unwrap_or(Compression::None);
    if !edits.touches_entries() {
        if from == compression {
            return Ok(None);
        }
        // Only the compression changes: the same tar, so the same DiffID.
        let mut stream = layer.uncompressed(store, limits).map_err(lerr)?;
        let out = compressed_writer(layout, compression)?;
        let mut hashing = Verified::hashing(out, Algorithm::Sha256);
        io::copy(&mut stream, &mut hashing).map_err(|e| lerr(layer::layer_error(0)(e)))?;
        layer.finish(stream).map_err(lerr)?;
        return finish(hashing, compression);
    }

    if !edits.normalize {
        return stream(store, layer, limits, edits, compression, layout, from);
    }
    // Sorted output needs every entry first: read each once (verified,
    // capped), spooling file data.
    let mut spool = tempfile::tempfile_in(spool_dir).map_err(io_out)?;
    let mut entries: Vec<Spooled> = Vec::new();
    let mut pos = 0u64;
    let mut buf = vec![0u8; IO_BUFFER];
    let cap = limits.decompression(layer.size);
    let mut holes = 0u64;
    let mut spool_err: Option<io::Error> = None;
    {
        let mut spool_w = io::BufWriter::with_capacity(COPY_CHUNK, &mut spool);
        layer
            .walk(store, limits, &(), |tar, e| {
                if removed(&e.path, &edits.rm_paths) {
                    return Ok(Visit::Continue);
                }
                check_holes(&e, cap, &mut holes)?;
                let start = pos;
                layer::read_entry_data(tar, &mut buf, |chunk| {
                    if spool_err.is_none() {
                        if let Err(err) = spool_w.write_all(chunk) {
                            spool_err = Some(err);
                        }
                    }
                    pos += chunk.len() as u64;
                })?;
                let mtime = clamped(&e, edits.time_max);
                entries.push(Spooled {
                    entry: e,
                    mtime,
                    data: (start, pos - start),
                });
                Ok(Visit::Continue)
            })
            .map_err(lerr)?;
        if let Some(e) = spool_err {
            return Err(io_out(e));
        }
        spool_w.flush().map_err(io_out)?;
    }
    // Stable: entries of one path keep their order (the last one wins).
    // Re-serialised, headers are normalised too: always a new layer.
    entries.sort_by_cached_key(|s| clean(&s.entry.path));
    let out = compressed_writer(layout, compression)?;
    let hashing = Verified::hashing(out, Algorithm::Sha256);
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(COPY_CHUNK, hashing));
    tar.mode(tar::HeaderMode::Deterministic);
    for s in &entries {
        spool.seek(SeekFrom::Start(s.data.0)).map_err(io_out)?;
        let data = io::BufReader::with_capacity(COPY_CHUNK, (&mut spool).take(s.data.1));
        append(&mut tar, &s.entry, s.mtime, data).map_err(io_out)?;
    }
    let hashing = tar
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(io_out)?;
    finish(hashing, compression)
}

/// A layer error, naming `layer`.
fn layer_error(layer: &Layer) -> impl Fn(LayerError) -> ModError + Copy + '_ {
    |e| ModError::Layer {
        digest: layer.digest.clone(),
        source: Box::new(e),
    }
}

/// Holes of sparse files count towards the decompression cap: a tiny sparse
/// member can claim terabytes, and the new layer writes them out in full.
fn check_holes(e: &Entry, cap: u64, holes: &mut u64) -> Result<(), LayerError> {
    if let Some(map) = &e.sparse {
        let stored: u64 = map.iter().map(|&(_, n)| n).sum();
        *holes = holes.saturating_add(e.size.saturating_sub(stored));
        if *holes > cap {
            return Err(LayerError::TooLarge { limit: cap });
        }
    }
    Ok(())
}

/// The entry's mtime, clamped to `time_max`.
fn clamped(e: &Entry, time_max: Option<i64>) -> (i64, u32) {
    match time_max {
        Some(t) if (e.mtime, e.mtime_nsec) > (t, 0) => (t, 0),
        _ => (e.mtime, e.mtime_nsec),
    }
}

/// Rewrites in one pass, in stored order: each entry is written as it is
/// read. If no entry changed (and the compression stays), the written blob is
/// dropped unfinished (its temporary file goes) and the layer is kept.
fn stream(
    store: &dyn Store,
    layer: &Layer,
    limits: &Limits,
    edits: &EntryEdits,
    compression: Compression,
    layout: &Layout,
    from: Compression,
) -> Result<Option<NewLayer>, ModError> {
    let lerr = layer_error(layer);
    let out = compressed_writer(layout, compression)?;
    let hashing = Verified::hashing(out, Algorithm::Sha256);
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(COPY_CHUNK, hashing));
    tar.mode(tar::HeaderMode::Deterministic);
    let cap = limits.decompression(layer.size);
    let mut holes = 0u64;
    let mut changed = false;
    let mut write_err: Option<io::Error> = None;
    let mut read_err: Option<io::Error> = None;
    layer
        .walk(store, limits, &(), |tar_in, e| {
            if removed(&e.path, &edits.rm_paths) {
                changed = true;
                return Ok(Visit::Continue);
            }
            check_holes(&e, cap, &mut holes)?;
            let mtime = clamped(&e, edits.time_max);
            changed |= mtime != (e.mtime, e.mtime_nsec);
            let data = EntryData {
                tar: tar_in,
                err: &mut read_err,
            };
            if let Err(err) = append(&mut tar, &e, mtime, data) {
                write_err = Some(err);
                return Ok(Visit::Stop);
            }
            Ok(Visit::Continue)
        })
        .map_err(lerr)?;
    // A failed append is the layer's fault when reading it failed (a
    // decompression or digest error), else the output's.
    if let Some(e) = read_err {
        return Err(lerr(layer::layer_error(0)(e)));
    }
    if let Some(e) = write_err {
        return Err(ModError::Write(e.to_string()));
    }
    if !changed && from == compression {
        // Dropped unfinished: its temporary file is removed.
        return Ok(None);
    }
    let hashing = tar
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(|e| ModError::Write(e.to_string()))?;
    finish(hashing, compression)
}

/// An entry's stored data, read from the layer being walked.
struct EntryData<'t, R> {
    tar: &'t mut crate::tarstream::TarReader<R>,
    /// The read error, kept to tell it from a write error.
    err: &'t mut Option<io::Error>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tar.read_data(buf).map_err(|e| {
            let msg = e.to_string();
            *self.err = Some(e);
            io::Error::other(msg)
        })
    }
}

enum Out<'a> {
    Gzip(ParallelGzip<crate::layout::BlobWriter<'a>>),
    Other(Encoder<crate::layout::BlobWriter<'a>>),
}

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::Gzip(g) => g.write(buf),
            Out::Other(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Gzip(g) => g.flush(),
            Out::Other(e) => e.flush(),
        }
    }
}

fn compressed_writer(layout: &Layout, compression: Compression) -> Result<Out<'_>, ModError> {
    let w = layout
        .blob_writer(None)
        .map_err(|e| ModError::Write(e.to_string()))?;
    Ok(match compression {
        Compression::Gzip => Out::Gzip(ParallelGzip::new(w)),
        c => Out::Other(Encoder::new(w, c).map_err(|e| ModError::Write(e.to_string()))?),
    })
}

fn finish(
    hashing: Verified<Out<'_>>,
    compression: Compression,
) -> Result<Option<NewLayer>, ModError> {
    let (out, diff_id, _) = hashing
        .finish()
        .map_err(|e| ModError::Write(e.to_string()))?;
    let writer = match out {
        Out::Gzip(g) => g.finish(),
        Out::Other(e) => e.finish_inner(),
    }
    .map_err(|e| ModError::Write(e.to_string()))?;
    let (digest, size) = writer
        .finish()
        .map_err(|e| ModError::Write(e.to_string()))?;
    Ok(Some(NewLayer {
        digest,
        size,
        diff_id,
        compression,
    }))
}

/// The stored data of a sparse entry, expanded to its logical bytes.
struct Expanded<R> {
    spool: R,
    map: std::vec::IntoIter<(u64, u64)>,
    /// Logical position, and where the current fragment starts and ends.
    pos: u64,
    frag: Option<(u64, u64)>,
    size: u64,
}

impl<R: Read> Read for Expanded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        if self.frag.is_none_or(|(_, end)| self.pos >= end) {
            self.frag = self.map.next().map(|(off, len)| (off, off + len));
        }
        let room = |n: u64| buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        match self.frag {
            Some((start, end)) if self.pos >= start => {
                let n = room(end.min(self.size) - self.pos);
                self.spool.read_exact(&mut buf[..n])?;
                self.pos += n as u64;
                Ok(n)
            }
            Some((start, _)) => {
                let n = room(start.min(self.size) - self.pos);
                buf[..n].fill(0);
                self.pos += n as u64;
                Ok(n)
            }
            None => {
                let n = room(self.size - self.pos);
                buf[..n].fill(0);
                self.pos += n as u64;
                Ok(n)
            }
        }
    }
}

fn append<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    e: &Entry,
    (sec, nsec): (i64, u32),
    mut data: R,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mode(e.mode);
    h.set_mtime(u64::try_from(sec).unwrap_or(0));
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    if sec < 0 || nsec != 0 {
        pax.push(("mtime".into(), pax_time(sec, nsec).into_bytes()));
    }
    for (k, v) in &e.xattrs {
        pax.push((
            format!("SCHILY.xattr.{}", String::from_utf8_lossy(k)),
            v.clone(),
        ));
    }
    let kind = match e.kind {
        EntryKind::Regular => tar::EntryType::Regular,
        EntryKind::Directory => tar::EntryType::Directory,
        EntryKind::Symlink => tar::EntryType::Symlink,
        EntryKind::Hardlink => tar::EntryType::Link,
        EntryKind::Char => tar::EntryType::Char,
        EntryKind::Block => tar::EntryType::Block,
        EntryKind::Fifo => tar::EntryType::Fifo,
        EntryKind::Other(_) => tar::EntryType::new(e.typeflag),
    };
    h.set_entry_type(kind);
    if matches!(e.kind, EntryKind::Symlink | EntryKind::Hardlink) {
        if e.link.len() <= 100 {
            h.set_link_name_literal(&e.link)?;
        } else {
            pax.push(("linkpath".into(), e.link.clone()));
        }
    }
    if matches!(e.kind, EntryKind::Char | EntryKind::Block) {
        h.set_device_major(e.dev_major)?;
        h.set_device_minor(e.dev_minor)?;
    }
    if !pax.is_empty() {
        tar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    let path = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&e.path));
    if e.kind == EntryKind::Regular {
        h.set_size(e.size);
        match &e.sparse {
            Some(map) => {
                let data = Expanded {
                    spool: data,
                    map: map.clone().into_iter(),
                    pos: 0,
                    frag: None,
                    size: e.size,
                };
                tar.append_data(&mut h, path, data)
            }
            None => tar.append_data(&mut h, path, &mut data),
        }
    } else {
        h.set_size(0);
        tar.append_data(&mut h, path, io::empty())
    }
}

fn pax_time(sec: i64, nsec: u32) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_paths_take_their_children_and_whiteouts() {
        let rm = vec![b"etc/x".to_vec()];
        assert!(removed(b"etc/x", &rm));
        assert!(removed(b"./etc/x/", &rm));
        assert!(removed(b"etc/x/y", &rm));
        assert!(removed(b"etc/.wh.x", &rm));
        assert!(!removed(b"etc/xy", &rm));
        assert!(!removed(b"etc/.wh.xy", &rm));
        assert!(!removed(b"etc", &rm));
        // A whiteout of a parent hides the path too.
        assert!(removed(b".wh.etc", &rm));
    }
}
