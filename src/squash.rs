//! Writing a flattened tree as one reproducible tar stream (`flatten --tar`)
//! and as a one-layer image (`squash`).
//!
//! The tree is first built by [`crate::flatten`] in a private staging
//! directory, so the tar holds exactly what `flatten --output` produces.
//! Members are sorted by name (bytewise, a directory before its contents),
//! the root is `./`, names carry no `./` prefix, owners are numeric with
//! empty user and group names, and times are the entries' own (PAX records
//! carry nanoseconds, times before 1970 and xattrs). Hardlinked files are
//! written once, later names as links to the first. Same tree, same bytes.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::copy::Encoder;
use crate::digest::{Algorithm, Digest};
use crate::flatten::{self, FlattenError, FlattenOptions, FlattenReport, Recorded};
use crate::layout::Layout;
use crate::resolve::Image;
use crate::rewrite::Rewrite;
use crate::spec::{media_type as mt, Compression, Descriptor};
use crate::store::Store;
use crate::verified::Verified;

/// Writes the tree under `dir` as a tar stream to `out`. `recorded` gives
/// owners that were recorded instead of set (rootless flattens); the
/// `user.rootlesscontainers` xattr is then not written. Returns the number
/// of members.
///
/// # Errors
/// I/O errors, naming the path.
pub(crate) fn write_tree_tar<W: Write>(
    dir: &Path,
    out: W,
    recorded: Option<&Recorded>,
    cancel: &crate::cancel::Cancel,
) -> io::Result<(W, u64)> {
    let mut tar = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut count = 0u64;
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    let mut buf = vec![0u8; crate::limits::COPY_CHUNK];
    for entry in walker {
        if cancel.is_cancelled() {
            return Err(io::Error::other("interrupted"));
        }
        let entry = entry.map_err(|e| io::Error::other(e.to_string()))?;
        let path = entry.path();
        let rel = path.strip_prefix(dir).map_err(io::Error::other)?;
        let meta = std::fs::symlink_metadata(path)?;
        let ft = meta.file_type();
        let with_ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let mut name: Vec<u8> = if rel.as_os_str().is_empty() {
            b"./".to_vec()
        } else {
            rel.as_os_str().as_bytes().to_vec()
        };
        let mut h = tar::Header::new_gnu();
        let rec = recorded.and_then(|r| r.get(&(meta.dev(), meta.ino())).copied());
        let (uid, gid) = match (recorded, rec) {
            (Some(_), Some(r)) => (r.uid, r.gid),
            (Some(_), None) => (0, 0),
            (None, _) => (u64::from(meta.uid()), u64::from(meta.gid())),
        };
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mode(rec.and_then(|r| r.mode).unwrap_or(meta.mode() & 0o7777));
        let (sec, nsec) = (meta.mtime(), meta.mtime_nsec());
        h.set_mtime(u64::try_from(sec).unwrap_or(0));
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if sec < 0 || nsec != 0 {
            pax.push(("mtime".into(), pax_time(sec, nsec).into_bytes()));
        }
        for (k, v) in xattrs(path).map_err(with_ctx)? {
            if recorded.is_some() && k == b"user.rootlesscontainers" {
                continue;
            }
            let key = format!("SCHILY.xattr.{}", String::from_utf8_lossy(&k));
            pax.push((key, v));
        }
        let hardlink_of = if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            match links.get(&key) {
                Some(first) => Some(first.clone()),
                None => {
                    links.insert(key, PathBuf::from(std::ffi::OsStr::from_bytes(&name)));
                    None
                }
            }
        } else {
            None
        };
        // Symlink targets are kept byte for byte (the tar crate's link-name
        // setter would clean `a//b` or `/` into other strings); long ones go
        // in the same PAX header as the rest (readers keep only the last).
        let link_target = if ft.is_symlink() && hardlink_of.is_none() {
            let t = std::fs::read_link(path).map_err(with_ctx)?;
            let t = t.as_os_str().as_bytes().to_vec();
            if t.len() > 100 {
                pax.push(("linkpath".into(), t.clone()));
            }
            Some(t)
        } else {
            None
        };
        if !pax.is_empty() {
            tar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        count += 1;
        if let Some(first) = hardlink_of {
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            tar.append_link(&mut h, os(&name), &first)?;
            continue;
        }
        if ft.is_dir() {
            if name != b"./" {
                name.push(b'/');
            }
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, os(&name), io::empty())?;
        } else if ft.is_symlink() {
            let target = link_target.unwrap_or_default();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            if target.len() <= 100 {
                h.set_link_name_literal(&target)?;
            }
            tar.append_data(&mut h, os(&name), io::empty())?;
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            let mut f = File::open(path).map_err(with_ctx)?;
            // The header, then the data in 1 MiB steps, then padding.
            tar.append_data(
                &mut h,
                os(&name),
                LimitedCopy::new(&mut f, meta.len(), &mut buf),
            )?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            });
            let rdev = meta.rdev();
            if !ft.is_fifo() {
                h.set_device_major(libc::major(rdev))?;
                h.set_device_minor(libc::minor(rdev))?;
            }
            h.set_size(0);
            tar.append_data(&mut h, os(&name), io::empty())?;
        } else {
            // Sockets cannot be stored in tar.
            count -= 1;
        }
    }
    let out = tar.into_inner()?;
    Ok((out, count))
}

fn os(b: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(b))
}

/// Reads exactly `len` bytes (a file that changed size is an error).
struct LimitedCopy<'a> {
    f: &'a mut File,
    left: u64,
    _buf: &'a mut Vec<u8>,
}

impl<'a> LimitedCopy<'a> {
    fn new(f: &'a mut File, len: u64, buf: &'a mut Vec<u8>) -> LimitedCopy<'a> {
        LimitedCopy {
            f,
            left: len,
            _buf: buf,
        }
    }
}

impl Read for LimitedCopy<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = out
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.f.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn pax_time(sec: i64, nsec: i64) -> String {
    if nsec == 0 {
        return sec.to_string();
    }
    if sec < 0 {
        // -2 s + 0.5 s = -1.5 s
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

/// A path's xattrs (not following a symlink), sorted by name.
fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; crate::limits::XATTR_BUFFER];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).map_err(io::Error::other)?;
        let mut val = vec![0u8; crate::limits::XATTR_BUFFER];
        let m = rustix::fs::lgetxattr(path, cn.as_c_str(), &mut val[..])?;
        val.truncate(m);
        out.push((name.to_vec(), val));
    }
    out.sort();
    Ok(out)
}

/// Flattens `image` and writes the tree as tar to `out`, staging the tree in
/// a temporary directory under `staging_parent`.
///
/// # Errors
/// Flatten errors, and I/O errors writing.
pub fn flatten_to_tar<W: Write>(
    store: &dyn Store,
    image: &Image,
    staging_parent: &Path,
    out: W,
    options: &FlattenOptions,
) -> Result<(W, FlattenReport), FlattenError> {
    let staging = flatten::Staging::new(staging_parent)?;
    let mut recorded = Recorded::new();
    let options = &FlattenOptions {
        keep_readable: true,
        ..options.clone()
    };
    let report = flatten::flatten_into(
        store,
        image,
        &staging.root,
        &staging.spool,
        options,
        Some(&mut recorded),
    )?;
    let rootless = options.rootless || !rustix::process::geteuid().is_root();
    let (out, _) = write_tree_tar(
        &staging.root,
        out,
        rootless.then_some(&recorded),
        &options.cancel,
    )
    .map_err(|e| FlattenError::Output {
        path: PathBuf::from("tar output"),
        reason: e.to_string(),
    })?;
    Ok((out, report))
}

/// How to squash.
#[derive(Debug, Clone)]
pub struct SquashOptions {
    /// Compression of the new layer.
    pub compression: Compression,
    /// See [`FlattenOptions::rootless`].
    pub rootless: bool,
    /// Caps for every layer read (the decompression limit).
    pub limits: crate::limits::Limits,
    /// Stops the squash at its next entry (nothing is tagged).
    pub cancel: crate::cancel::Cancel,
}

/// What a squash wrote.
#[derive(Debug, Clone)]
pub struct SquashReport {
    /// The new manifest's descriptor, as tagged.
    pub manifest: Descriptor,
    /// The new layer.
    pub layer: Digest,
    /// Its DiffID.
    pub diff_id: Digest,
    /// Layers squashed.
    pub layers: usize,
    /// Flatten warnings.
    pub warnings: Vec<String>,
}

/// The squashed layer's compression.
enum LayerEncoder<W: Write> {
    Gzip(ParallelGzip<W>),
    Other(Encoder<W>),
}

impl<W: Write> Write for LayerEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LayerEncoder::Gzip(g) => g.write(buf),
            LayerEncoder::Other(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LayerEncoder::Gzip(g) => g.flush(),
            LayerEncoder::Other(e) => e.flush(),
        }
    }
}

/// gzip on every core: the stream is cut into fixed 4 MiB pieces, each
/// compressed (default level, no name, time 0) into its own gzip member,
/// members written in order. A multi-member gzip is one valid gzip stream
/// (RFC 1952; Go, zlib, skopeo, umoci and containerd read it whole), and
/// since the pieces depend only on the bytes, the output is reproducible.
pub(crate) struct ParallelGzip<W: Write> {
    out: W,
    pending: Vec<Vec<u8>>,
    current: Vec<u8>,
    threads: usize,
}

const GZ_PIECE: usize = 4 << 20;

impl<W: Write> ParallelGzip<W> {
    /// A compressor writing to `out`.
    pub(crate) fn new(out: W) -> ParallelGzip<W> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 16);
        ParallelGzip {
            out,
            pending: Vec::new(),
            current: Vec::with_capacity(GZ_PIECE),
            threads,
        }
    }

    fn compress_pending(&mut self) -> io::Result<()> {
        let pieces = std::mem::take(&mut self.pending);
        let results: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = pieces
                .iter()
                .map(|p| {
                    s.spawn(move || -> io::Result<Vec<u8>> {
                        let mut e = flate2::GzBuilder::new().mtime(0).write(
                            Vec::with_capacity(p.len() / 2),
                            flate2::Compression::default(),
                        );
                        e.write_all(p)?;
                        e.finish()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a compression thread failed")))
                })
                .collect()
        });
        for r in results {
            self.out.write_all(&r?)?;
        }
        Ok(())
    }

    /// Compresses what is left and gives back the writer.
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if !self.current.is_empty() || (self.pending.is_empty() && self.current.is_empty()) {
            let last = std::mem::take(&mut self.current);
            self.pending.push(last);
        }
        self.compress_pending()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = GZ_PIECE - self.current.len();
        let n = room.min(buf.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == GZ_PIECE {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(GZ_PIECE));
            self.pending.push(full);
            if self.pending.len() >= self.threads {
                self.compress_pending()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Squashes `image` (read from `store`) into one layer and writes it into
/// `layout` tagged `tag`. The layer is the flattened tree as a reproducible
/// tar; the config keeps every field but `rootfs.diff_ids` (one) and
/// `history` (one entry summarising the old ones); the manifest keeps its
/// media type family and annotations and drops `subject`.
///
/// # Errors
/// Flatten errors, layout write errors.
pub fn squash(
    store: &dyn Store,
    image: &Image,
    layout: &Layout,
    tag: &str,
    options: &SquashOptions,
) -> Result<SquashReport, FlattenError> {
    let out_err = |reason: String| FlattenError::Output {
        path: layout.root().to_path_buf(),
        reason,
    };
    if !crate::reference::is_valid_ref_name(tag) {
        return Err(out_err(format!("{tag:?} is not a valid tag")));
    }
    let docker = image.manifest.descriptor.media_type == mt::DOCKER_MANIFEST
        || image.parsed.media_type.as_deref() == Some(mt::DOCKER_MANIFEST);
    let layer_type = match (docker, options.compression) {
        (false, Compression::None) => mt::OCI_LAYER_TAR,
        (false, Compression::Gzip) => mt::OCI_LAYER_GZIP,
        (false, Compression::Zstd) => mt::OCI_LAYER_ZSTD,
        (true, Compression::None) => mt::DOCKER_LAYER_TAR,
        (true, Compression::Gzip) => mt::DOCKER_LAYER_GZIP,
        (true, Compression::Zstd) => {
            return Err(out_err(
                "Docker schema2 manifests have no zstd layer type; use --compress gzip or none"
                    .into(),
            ))
        }
    };
    let config = image.config(store)?.ok_or(FlattenError::NoConfig)?;
    let cfg: Value =
        serde_json::from_slice(&config.bytes).map_err(|e| FlattenError::BadConfig {
            digest: config.digest.clone(),
            reason: e.to_string(),
        })?;

    let lock = layout.lock().map_err(|e| out_err(e.to_string()))?;
    let tmp = layout.tmp_dir().map_err(|e| out_err(e.to_string()))?;
    let staging = flatten::Staging::new(&tmp)?;
    let mut recorded = Recorded::new();
    let fopts = FlattenOptions {
        rootless: options.rootless,
        keep_readable: true,
        progress: None,
        limits: options.limits,
        cancel: options.cancel.clone(),
    };
    let report = flatten::flatten_into(
        store,
        image,
        &staging.root,
        &staging.spool,
        &fopts,
        Some(&mut recorded),
    )?;
    let rootless = options.rootless || !rustix::process::geteuid().is_root();

    // Layer: tar → (DiffID hash) → compression → blob writer.
    let io_out = |e: io::Error| out_err(format!("writing the squashed layer: {e}"));
    let writer = layout
        .blob_writer(None)
        .map_err(|e| out_err(e.to_string()))?;
    let encoder = match options.compression {
        Compression::Gzip => LayerEncoder::Gzip(ParallelGzip::new(writer)),
        c => LayerEncoder::Other(Encoder::new(writer, c).map_err(io_out)?),
    };
    // The DiffID: the tar stream, hashed by the one verified stream.
    let hashing = Verified::hashing(encoder, Algorithm::Sha256);
    let (hashing, _) = write_tree_tar(
        &staging.root,
        hashing,
        rootless.then_some(&recorded),
        &options.cancel,
    )
    .map_err(io_out)?;
    let (encoder, diff_id, _) = hashing
        .finish()
        .map_err(|e| out_err(format!("writing the squashed layer: {e}")))?;
    let writer = match encoder {
        LayerEncoder::Gzip(g) => g.finish(),
        LayerEncoder::Other(e) => e.finish_inner(),
    }
    .map_err(io_out)?;
    let (layer_digest, layer_size) = writer.finish().map_err(|e| out_err(e.to_string()))?;
    drop(staging);

    // Config: one diff_id, one history entry.
    let old_history = cfg
        .get("history")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    let man_type = if docker {
        mt::DOCKER_MANIFEST
    } else {
        mt::OCI_MANIFEST
    };
    // The new manifest is built pointing at the stored config; the config is
    // edited through the one rewriter, which repoints the manifest at it.
    let mut man = serde_json::Map::new();
    man.insert("schemaVersion".into(), json!(2));
    man.insert("mediaType".into(), json!(man_type));
    man.insert(
        "config".into(),
        json!({"mediaType": config.descriptor.media_type, "digest": config.digest.to_string(), "size": config.bytes.len()}),
    );
    man.insert(
        "layers".into(),
        json!([{"mediaType": layer_type, "digest": layer_digest.to_string(), "size": layer_size}]),
    );
    if let Some(a) = &image.parsed.annotations {
        if !docker && !a.is_empty() {
            man.insert("annotations".into(), json!(a));
        }
    }
    let built = Value::Object(man).to_string().into_bytes();
    let built_digest = Digest::of_bytes(Algorithm::Sha256, &built);
    let mut rewrite = Rewrite::new();
    let cfg_id = rewrite.add(
        &config.digest,
        &config.descriptor.media_type,
        config.bytes.clone(),
    );
    let man_id = rewrite.add(&built_digest, man_type, built.clone());
    rewrite.link(man_id, cfg_id);
    let comment = format!(
        "{} layers ({} history entries) squashed into one",
        report.layers, old_history
    );
    rewrite.edit(cfg_id, |obj| {
        let rootfs = obj
            .entry("rootfs")
            .or_insert_with(|| json!({"type": "layers"}));
        if let Some(r) = rootfs.as_object_mut() {
            r.insert("type".into(), json!("layers"));
            r.insert("diff_ids".into(), json!([diff_id.to_string()]));
        }
        let mut h = serde_json::Map::new();
        if let Some(created) = obj.get("created").cloned() {
            h.insert("created".into(), created);
        }
        h.insert("created_by".into(), json!("ocikit squash"));
        h.insert("comment".into(), json!(comment));
        obj.insert("history".into(), json!([Value::Object(h)]));
    })?;
    let rewritten = rewrite.finish()?;
    let mut man_bytes = built;
    for doc in &rewritten {
        if doc.old == built_digest {
            man_bytes = doc.bytes.to_vec();
        } else {
            write_blob(layout, &doc.bytes).map_err(out_err)?;
        }
    }
    let (man_digest, man_size) = write_blob(layout, &man_bytes).map_err(out_err)?;

    let mut desc: Descriptor = serde_json::from_value(json!({
        "mediaType": man_type,
        "digest": man_digest.to_string(),
        "size": man_size,
    }))
    .map_err(|e| out_err(e.to_string()))?;
    if let Some(p) = &image.platform {
        desc.platform = Some(p.clone());
    } else if let (Some(os), Some(arch)) = (
        cfg.get("os").and_then(Value::as_str),
        cfg.get("architecture").and_then(Value::as_str),
    ) {
        let mut p = json!({"architecture": arch, "os": os});
        if let Some(v) = cfg.get("variant").and_then(Value::as_str) {
            p["variant"] = json!(v);
        }
        desc.platform = serde_json::from_value(p).ok();
    }
    let desc = layout
        .publish(&lock, desc, tag)
        .map_err(|e| out_err(e.to_string()))?;
    Ok(SquashReport {
        manifest: desc,
        layer: layer_digest,
        diff_id,
        layers: report.layers,
        warnings: report.warnings,
    })
}

fn write_blob(layout: &Layout, bytes: &[u8]) -> Result<(Digest, u64), String> {
    let mut w = layout.blob_writer(None).map_err(|e| e.to_string())?;
    w.write_all(bytes).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_gzip_is_one_readable_stream_and_reproducible() {
        let data: Vec<u8> = (0..(GZ_PIECE * 3 + 12345))
            .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
            .collect();
        let compress = |d: &[u8]| {
            let mut g = ParallelGzip::new(Vec::new());
            // Uneven writes must not change the pieces.
            for chunk in d.chunks(777_777) {
                g.write_all(chunk).unwrap();
            }
            g.finish().unwrap()
        };
        let a = compress(&data);
        assert_eq!(a, compress(&data));
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&a[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Empty input is still a valid (empty) gzip stream.
        let empty = ParallelGzip::new(Vec::new()).finish().unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&empty[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
