//! Writing a plan as an oci-archive or docker-archive.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::{
    open_planned, read_planned, source_name, CopyError, CopyReport, LazyLayer, Plan, PlannedBlob,
    Root, Source,
};
use crate::digest::Digest;
use crate::docker::{self, familiar};
use crate::limits::COPY_CHUNK;
use crate::progress::Progress;
use crate::resolve;
use crate::spec::{self, Document, Kind};
use crate::spec::{
    media_type, Compression, Descriptor, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
};
use crate::verified::{Mismatch, Verified};

/// Archive flavours ocikit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// A tar of an OCI layout.
    OciArchive,
    /// Docker 25's dual format: the OCI layout plus `manifest.json` and `repositories`.
    DockerArchive,
}

/// Where an archive goes.
#[derive(Clone, Copy)]
pub enum ArchiveOut<'a> {
    /// A file, written beside it first and renamed on success.
    File(&'a Path),
    /// Standard output.
    Stdout,
}

/// The archive's outer compression, finished explicitly so that errors at the
/// end of the stream are reported, not dropped.
pub(crate) enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// A deterministic encoder (gzip without name or time, fixed levels).
    pub(crate) fn new(w: W, compression: Compression) -> io::Result<Encoder<W>> {
        Ok(match compression {
            Compression::None => Encoder::Plain(w),
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(w, flate2::Compression::default()),
            ),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
        })
    }

    /// Finishes the stream and gives back the writer below it.
    pub(crate) fn finish_inner(self) -> io::Result<W> {
        let mut inner = match self {
            Encoder::Plain(w) => w,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Zstd(e) => e.finish()?,
        };
        inner.flush()?;
        Ok(inner)
    }

    pub(crate) fn finish(self) -> io::Result<()> {
        let mut inner = match self {
            Encoder::Plain(w) => w,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Zstd(e) => e.finish()?,
        };
        inner.flush()
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// Appends one blob member: the same bytes `tar::Builder::append_data` writes,
/// but copied in 1 MiB steps (tar's own copy goes 8 KiB at a time, which cost
/// seconds on gigabyte layers). Names too long for the header go through the
/// builder, which adds GNU long-name records.
fn append_blob<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    size: u64,
    mut reader: R,
) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    if h.set_path(path).is_err() {
        return tar.append_data(&mut h, path, reader);
    }
    h.set_cksum();
    let w = tar.get_mut();
    w.write_all(h.as_bytes())?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
    if total != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: {total} bytes where the header says {size}",
                path.display()
            ),
        ));
    }
    let pad = (512 - (total % 512) as usize) % 512;
    w.write_all(&[0u8; 512][..pad])
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// The docker-archive metadata for the plan's roots.
fn docker_metadata(
    sources: &[Source<'_>],
    plan: &Plan,
    notes: &mut Vec<String>,
) -> Result<(Vec<u8>, Vec<u8>), CopyError> {
    let mut items = Vec::new();
    let mut repos = Vec::new();
    for root in &plan.roots {
        let bytes = read_planned(sources, plan, &root.descriptor.digest)?;
        let manifest = match spec::parse_document(&bytes, Kind::Unknown) {
            Ok(Document::Manifest(m)) => m,
            _ => {
                return Err(CopyError::Invalid(format!(
                    "{} is not an image manifest; a docker-archive holds single-platform images",
                    root.descriptor.digest
                )))
            }
        };
        let config = manifest.config.clone().ok_or_else(|| {
            CopyError::Invalid(format!("manifest {} has no config", root.descriptor.digest))
        })?;
        let config_digest = resolve::descriptor_digest(&config, "the config descriptor")?;
        let parsed = spec::parse_config(&read_planned(sources, plan, &config.digest)?).ok();
        let layers = crate::image::layers_of(&manifest, parsed.as_ref())
            .map_err(|e| CopyError::Invalid(format!("manifest {}: {e}", root.descriptor.digest)))?;
        let diff_ids: Vec<String> = layers
            .iter()
            .filter_map(|l| l.diff_id.as_ref().map(Digest::to_string))
            .collect();
        let mut layer_paths = Vec::new();
        let mut sources_map = BTreeMap::new();
        for l in &layers {
            layer_paths.push(l.digest.blob_path().to_string_lossy().into_owned());
            if l.descriptor.is_foreign() {
                if let Some(id) = &l.diff_id {
                    sources_map.insert(id.to_string(), l.descriptor.clone());
                }
            }
        }
        let tags: Vec<String> = match docker_name(root) {
            Some(full) => vec![familiar(&full)],
            None => {
                notes.push(format!(
                    "image {} has no name (no io.containerd.image.name and no target name), so manifest.json lists it without RepoTags; name it with docker-archive:FILE:NAME:TAG",
                    root.descriptor.digest
                ));
                Vec::new()
            }
        };
        repos.push((tags.clone(), diff_ids.last().cloned()));
        let mut item = json!({
            "Config": config_digest.blob_path().to_string_lossy(),
            "RepoTags": tags,
            "Layers": layer_paths,
        });
        if !sources_map.is_empty() {
            item["LayerSources"] = json!(sources_map);
        }
        items.push(item);
    }
    Ok((
        Value::Array(items).to_string().into_bytes(),
        docker::repositories(&repos),
    ))
}

/// The docker name an image goes by in a docker-archive: its containerd
/// name, else its `ref.name` where that is written as a docker reference
/// (podman's OCI view: `localhost/acc/one:1.0`). A bare tag is no name.
fn docker_name(root: &Root) -> Option<String> {
    root.name
        .clone()
        .or_else(|| root.tag.as_deref().and_then(resolve::docker_name_of))
}

/// Writes a plan as an archive. Same input, same bytes.
///
/// # Errors
/// Any read, verification or write error; a file target is left as it was.
pub fn write_archive(
    sources: &[Source<'_>],
    plan: &Plan,
    kind: ArchiveKind,
    compression: Compression,
    out: ArchiveOut<'_>,
    progress: &dyn Progress,
) -> Result<(CopyReport, Vec<String>), CopyError> {
    let mut notes = Vec::new();
    // index.json: the roots, as Docker 25 annotates them.
    let entries: Vec<Descriptor> = plan
        .roots
        .iter()
        .map(|r| {
            let mut d = r.descriptor.clone();
            let mut ann = BTreeMap::new();
            match kind {
                // A docker-archive's OCI view names images as Docker 25 does,
                // and as its manifest.json does: by docker name only (an
                // unnamed image is unnamed in both views).
                ArchiveKind::DockerArchive => {
                    if let Some(full) = docker_name(r) {
                        if let Some(t) = docker::tag_part(&full) {
                            ann.insert(ANNOTATION_REF_NAME.to_string(), t.to_string());
                        }
                        ann.insert(ANNOTATION_IMAGE_NAME.to_string(), full);
                    }
                }
                ArchiveKind::OciArchive => {
                    if let Some(n) = &r.name {
                        ann.insert(ANNOTATION_IMAGE_NAME.to_string(), n.clone());
                    }
                    if let Some(t) = &r.tag {
                        ann.insert(ANNOTATION_REF_NAME.to_string(), t.clone());
                    }
                }
            }
            d.annotations = (!ann.is_empty()).then_some(ann);
            d
        })
        .collect();
    let mut index =
        json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": entries});
    // A delta bundle says what it was made against.
    let omitted = match (&plan.delta, kind) {
        (Some((omit, annotations)), ArchiveKind::OciArchive) => {
            index["annotations"] = json!(annotations);
            Some(omit)
        }
        (Some(_), ArchiveKind::DockerArchive) => {
            return Err(CopyError::Internal(
                "a docker-archive cannot be a delta bundle".into(),
            ))
        }
        (None, _) => None,
    };
    let index = index.to_string().into_bytes();
    let docker_files = match kind {
        ArchiveKind::DockerArchive => Some(docker_metadata(sources, plan, &mut notes)?),
        ArchiveKind::OciArchive => None,
    };

    let lazy = !plan.lazy.is_empty();
    if lazy && (compression != Compression::None || matches!(out, ArchiveOut::Stdout)) {
        return Err(CopyError::Internal(
            "layers to stream need an uncompressed archive file".into(),
        ));
    }
    // Where lazy layers are written: the same file, at offsets kept here.
    let mut positioned: Option<(Arc<File>, Arc<AtomicU64>)> = None;
    let (path_for_errors, temp, sink): (PathBuf, Option<tempfile::NamedTempFile>, Box<dyn Write>) =
        match out {
            ArchiveOut::Stdout => (
                PathBuf::from("<stdout>"),
                None,
                Box::new(crate::guard::StdoutWriter::new()),
            ),
            ArchiveOut::File(p) => {
                let dir = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let tmp = tempfile::Builder::new()
                    .prefix(".ocikit-export-")
                    .tempfile_in(dir)
                    .map_err(|source| CopyError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                let f: File = tmp.reopen().map_err(|source| CopyError::Io {
                    path: tmp.path().to_path_buf(),
                    source,
                })?;
                let sink: Box<dyn Write> = if lazy {
                    let file = Arc::new(f);
                    let pos = Arc::new(AtomicU64::new(0));
                    positioned = Some((file.clone(), pos.clone()));
                    Box::new(AtWriter { file, pos })
                } else {
                    Box::new(f)
                };
                (p.to_path_buf(), Some(tmp), sink)
            }
        };
    let io_err = |source| CopyError::Io {
        path: path_for_errors.clone(),
        source,
    };
    let buffered = io::BufWriter::with_capacity(
        COPY_CHUNK,
        crate::cancel::Cancellable {
            inner: sink,
            cancel: plan.cancel.clone(),
        },
    );
    let encoder = match compression {
        Compression::None => Encoder::Plain(buffered),
        Compression::Gzip => Encoder::Gzip(
            flate2::GzBuilder::new()
                .mtime(0)
                .write(buffered, flate2::Compression::default()),
        ),
        Compression::Zstd => {
            Encoder::Zstd(zstd::stream::write::Encoder::new(buffered, 3).map_err(io_err)?)
        }
    };
    let mut tar = tar::Builder::new(encoder);
    tar.mode(tar::HeaderMode::Deterministic);

    // Sorted members: blobs/, blobs/<alg>/, blobs/<alg>/<encoded>, then the files.
    let mut blobs: Vec<&PlannedBlob> = plan
        .blobs
        .iter()
        .filter(|b| omitted.is_none_or(|o| !o.contains(&b.digest)))
        .collect();
    blobs.sort_by_key(|b| b.digest.blob_path());
    let algs: std::collections::BTreeSet<String> = blobs
        .iter()
        .map(|b| b.digest.algorithm().to_string())
        .collect();
    let mut report = CopyReport::default();
    let mut deferred: Vec<(u64, LazyLayer, u64, Digest)> = Vec::new();
    progress.begin(blobs.iter().map(|b| b.size).fold(0u64, u64::saturating_add));
    let advance = |n| progress.advance(n);
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, "blobs/", io::empty())
        .map_err(io_err)?;
    for alg in &algs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, format!("blobs/{alg}/"), io::empty())
            .map_err(io_err)?;
        for b in blobs
            .iter()
            .filter(|b| b.digest.algorithm().as_str() == alg)
        {
            if let Some((layer, size)) = plan.lazy.get(&b.digest) {
                // Its header now, its bytes later, in parallel, at this offset.
                let Some((_, pos)) = &positioned else {
                    return Err(CopyError::Invalid(
                        "internal: no file for lazy layers".into(),
                    ));
                };
                let mut h = header(tar::EntryType::Regular, 0o644, *size);
                h.set_path(b.digest.blob_path())
                    .map_err(|_| CopyError::Prediction {
                        layer: layer.layer.digest.clone(),
                    })?;
                h.set_cksum();
                let w = tar.get_mut();
                w.write_all(h.as_bytes()).map_err(io_err)?;
                w.flush().map_err(io_err)?;
                let at = pos.load(Ordering::Relaxed);
                let padded = size.div_ceil(512) * 512;
                pos.store(at + padded, Ordering::Relaxed);
                deferred.push((at, layer.clone(), *size, b.digest.clone()));
                report.blobs_written += 1;
                report.bytes_written += b.size;
                continue;
            }
            let blob = open_planned(sources, plan, b)?;
            // Blobs read from a source are verified as they stream; blobs ocikit
            // built or decompressed itself were hashed as they were made.
            let verify = b.digest.algorithm().is_verifiable() && b.source.is_some();
            let reader = crate::digest::ProgressReader::new(
                io::BufReader::with_capacity(COPY_CHUNK, blob.into_reader()),
                &advance,
            );
            let reader = if verify {
                Verified::expecting(reader, &b.digest, Some(b.size))
            } else {
                Verified::hashing(reader, b.digest.algorithm().clone())
            };
            // A source that fails verification is named as the culprit, not
            // the archive being written (which is left untouched).
            append_blob(&mut tar, &b.digest.blob_path(), b.size, reader).map_err(|e| {
                match Mismatch::from_io(&e) {
                    Some(m) => CopyError::Invalid(format!(
                        "{}: blob {} {m}; {} was not written",
                        source_name(sources, b),
                        b.digest,
                        path_for_errors.display()
                    )),
                    None if e.kind() == io::ErrorKind::InvalidData => CopyError::Invalid(format!(
                        "{e}; {} was not written",
                        path_for_errors.display()
                    )),
                    None => io_err(e),
                }
            })?;
            report.blobs_written += 1;
            report.bytes_written += b.size;
        }
    }
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("index.json", index),
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ];
    if let Some((manifest_json, repositories)) = docker_files {
        files.push(("manifest.json", manifest_json));
        files.push(("repositories", repositories));
    }
    files.sort_by(|a, b| a.0.cmp(b.0));
    for (name, bytes) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        tar.append_data(&mut h, name, &bytes[..]).map_err(io_err)?;
    }
    tar.into_inner().and_then(Encoder::finish).map_err(io_err)?;
    if let Some((file, _)) = &positioned {
        write_deferred(sources, plan, file, &deferred, &path_for_errors, progress)?;
    }
    if let (Some(tmp), ArchiveOut::File(p)) = (temp, out) {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(
                crate::layout::replacement_mode(p),
            ))
            .map_err(|source| CopyError::Io {
                path: p.to_path_buf(),
                source,
            })?;
        tmp.as_file().sync_all().map_err(|source| CopyError::Io {
            path: p.to_path_buf(),
            source,
        })?;
        tmp.persist(p).map_err(|e| CopyError::Io {
            path: p.to_path_buf(),
            source: e.error,
        })?;
    }
    report.images = plan.image_labels();
    Ok((report, notes))
}

/// Writes at a shared offset into a file (the positions between members
/// that lazy layers fill later are skipped by moving the offset).
struct AtWriter {
    file: Arc<File>,
    pos: Arc<AtomicU64>,
}

impl Write for AtWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let at = self.pos.load(Ordering::Relaxed);
        let n = self.file.write_at(buf, at)?;
        self.pos.store(at + n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decompresses the lazy layers into their places, in parallel, largest
/// first: the stored bytes are verified, the DiffID (the member's name) is
/// checked, and a size other than the predicted one is
/// [`CopyError::Prediction`].
fn write_deferred(
    sources: &[Source<'_>],
    plan: &Plan,
    file: &File,
    deferred: &[(u64, LazyLayer, u64, Digest)],
    out: &Path,
    progress: &dyn Progress,
) -> Result<(), CopyError> {
    use std::os::unix::fs::FileExt;
    let mut jobs: Vec<&(u64, LazyLayer, u64, Digest)> = deferred.iter().collect();
    jobs.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let io_err = |source| CopyError::Io {
        path: out.to_path_buf(),
        source,
    };
    let results = crate::progress::largest_first(&jobs, |(at, lazy, size, _)| {
        let layer = &lazy.layer;
        let digest = &layer.digest;
        let store = sources[lazy.source].store;
        let mut stream = layer
            .uncompressed(store, &plan.limits)
            .map_err(|e| CopyError::layer(digest, e))?;
        let mut written = 0u64;
        super::uncompress::pump(&mut stream, digest, &plan.cancel, io_err, |chunk| {
            let n = chunk.len() as u64;
            if written + n > *size {
                return Err(CopyError::Prediction {
                    layer: digest.clone(),
                });
            }
            file.write_all_at(chunk, at + written).map_err(io_err)?;
            written += n;
            progress.advance(n);
            Ok(())
        })?;
        if written != *size {
            return Err(CopyError::Prediction {
                layer: digest.clone(),
            });
        }
        layer
            .finish(stream)
            .map_err(|e| CopyError::layer(digest, e))?;
        Ok(())
    });
    // A wrong prediction wins over other errors: the caller starts over.
    let mut first = None;
    for r in results {
        match r {
            Err(e @ CopyError::Prediction { .. }) => return Err(e),
            Err(e) => {
                first.get_or_insert(e);
            }
            Ok(()) => {}
        }
    }
    first.map_or(Ok(()), Err)
}
