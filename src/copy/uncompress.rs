//! `--uncompressed-layers`: every gzip or zstd layer of the roots becomes a
//! plain tar, as `docker save` writes them.
//!
//! Each layer is read through the image model ([`crate::image::Layer`]):
//! stored bytes verified, decompression capped, DiffID checked. The new
//! manifests come out of [`crate::rewrite`], so only the edited manifest
//! changes digest. Where the uncompressed size is known before reading (a
//! gzip member's ISIZE, checked for plausibility), the layer is not read
//! here at all: it is streamed straight into its place in the archive by
//! [`super::write_archive`] ("lazy"), and a wrong prediction fails that write
//! with [`CopyError::Prediction`], after which [`super::export`] starts over
//! with temporary files.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{CopyError, Plan, PlannedBlob, Source};
use crate::digest::Digest;
use crate::image::Layer;
use crate::layer::LayerStream;
use crate::limits::{COPY_CHUNK, IO_BUFFER};
use crate::resolve::{self, PlatformChoice};
use crate::rewrite::Rewrite;
use crate::spec::{media_type, Compression, Kind};

/// A layer the archive writer decompresses into its place.
#[derive(Debug, Clone)]
pub(crate) struct LazyLayer {
    /// Which source holds the stored layer.
    pub source: usize,
    /// The stored layer.
    pub layer: Layer,
}

/// How [`uncompress_layers_with`] may produce the uncompressed layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Uncompress {
    /// Into unnamed temporary files, now.
    Files,
    /// Predicted sizes where possible (for [`super::write_archive`] into an
    /// uncompressed archive file), temporary files elsewhere.
    Predict,
}

/// Rewrites the plan so that every root image has uncompressed layers (see
/// [`uncompress_layers_with`]), into temporary files in `temp_dir`.
///
/// # Errors
/// As [`uncompress_layers_with`].
pub(crate) fn uncompress_layers(
    sources: &[Source<'_>],
    plan: &mut Plan,
    temp_dir: &Path,
) -> Result<Vec<String>, CopyError> {
    uncompress_layers_with(sources, plan, temp_dir, Uncompress::Files)
}

/// Rewrites the plan so that every root image has uncompressed layers, as
/// `docker save` writes them: each gzip or zstd layer is decompressed once (in
/// parallel) into a temporary file (or, with [`Uncompress::Predict`], later
/// into the archive), its DiffID checked against the config, and a new
/// manifest records the uncompressed blobs. The config (so the image ID) and
/// the diff_ids stay as they are. Returns notes saying what changed.
///
/// The temporary files go to `temp_dir` (put it on the target's file system:
/// the layers are written there again right after).
///
/// # Errors
/// A root that is an index (choose a platform), damaged layers, diff_id
/// mismatches, and temporary-file errors.
pub(crate) fn uncompress_layers_with(
    sources: &[Source<'_>],
    plan: &mut Plan,
    temp_dir: &Path,
    mode: Uncompress,
) -> Result<Vec<String>, CopyError> {
    let mut notes = Vec::new();
    let mut jobs: Vec<(usize, Layer)> = Vec::new();
    let mut rewrite = Rewrite::new();
    let mut edited = Vec::new();
    for (r, root) in plan.roots.iter().enumerate() {
        let planned = plan
            .blobs
            .iter()
            .find(|b| b.digest.to_string() == root.descriptor.digest)
            .cloned()
            .ok_or_else(|| CopyError::Internal("root not planned".into()))?;
        let Some(i) = planned.source else { continue };
        let store = sources[i].store;
        let node = resolve::load_node(store, &root.descriptor, "manifest")?;
        if resolve::node_kind(&node) != Kind::Manifest {
            return Err(CopyError::Invalid(format!(
                "--uncompressed-layers rewrites image manifests, and {} is an index; choose one with --platform",
                node.digest
            )));
        }
        let image = resolve::image_of_descriptor(store, &root.descriptor, &PlatformChoice::Host)?;
        let layers = image
            .typed_layers(store)
            .map_err(|e| CopyError::Invalid(format!("manifest {}: {e}", node.digest)))?;
        let compressed: Vec<Layer> = layers
            .into_iter()
            .filter(|l| l.compression.is_some_and(|c| c != Compression::None))
            .collect();
        if compressed.is_empty() {
            continue;
        }
        for l in compressed {
            if l.diff_id.is_none() {
                return Err(CopyError::Invalid(format!(
                    "config of {} has no diff_id for layer {}",
                    node.digest, l.index
                )));
            }
            jobs.push((i, l));
        }
        let id = rewrite.add(&node.digest, &node.descriptor.media_type, node.bytes);
        edited.push((r, id, node.digest.clone()));
    }
    // Each distinct layer once, largest first.
    jobs.sort_by(|a, b| a.1.digest.cmp(&b.1.digest));
    jobs.dedup_by(|a, b| a.1.digest == b.1.digest);
    jobs.sort_by(|a, b| b.1.size.cmp(&a.1.size).then(a.1.digest.cmp(&b.1.digest)));

    // layer digest → (diff_id, uncompressed size)
    let mut by_layer: HashMap<Digest, (Digest, u64)> = HashMap::new();
    let mut to_files = Vec::new();
    for (i, layer) in jobs {
        let predicted = match mode {
            Uncompress::Predict => predicted_size(sources[i].store, &layer),
            Uncompress::Files => None,
        };
        match (predicted, layer.diff_id.clone()) {
            (Some(size), Some(diff_id)) => {
                by_layer.insert(layer.digest.clone(), (diff_id.clone(), size));
                plan.lazy
                    .insert(diff_id, (LazyLayer { source: i, layer }, size));
            }
            _ => to_files.push((i, layer)),
        }
    }
    let (limits, cancel) = (plan.limits, plan.cancel.clone());
    let results = crate::progress::largest_first(&to_files, |(i, layer)| {
        decompress_to_file(sources[*i].store, layer, &limits, &cancel, temp_dir)
    });
    for r in results {
        let (layer, diff_id, size, file) = r?;
        plan.temp.insert(diff_id.clone(), (Arc::new(file), size));
        by_layer.insert(layer, (diff_id, size));
    }

    // The manifests, through the one rewriter.
    let mut replace: HashMap<Digest, Option<PlannedBlob>> = HashMap::new();
    for (_, id, _) in &edited {
        rewrite
            .edit(*id, |m| {
                let docker =
                    m.get("mediaType").and_then(Value::as_str) == Some(media_type::DOCKER_MANIFEST);
                let tar_type = if docker {
                    media_type::DOCKER_LAYER_TAR
                } else {
                    media_type::OCI_LAYER_TAR
                };
                let Some(layers) = m.get_mut("layers").and_then(Value::as_array_mut) else {
                    return;
                };
                for l in layers.iter_mut() {
                    let Some(old) = l
                        .get("digest")
                        .and_then(Value::as_str)
                        .and_then(|d| Digest::parse(d).ok())
                    else {
                        continue;
                    };
                    let Some((diff_id, size)) = by_layer.get(&old) else {
                        continue;
                    };
                    l["mediaType"] = Value::from(tar_type);
                    l["digest"] = Value::from(diff_id.to_string());
                    l["size"] = Value::from(*size);
                    replace.insert(
                        old,
                        Some(PlannedBlob {
                            digest: diff_id.clone(),
                            size: *size,
                            media_type: tar_type.to_string(),
                            source: None,
                            document: false,
                        }),
                    );
                }
            })
            .map_err(|e| CopyError::Invalid(format!("manifest {e}")))?;
    }
    let rewritten = rewrite
        .finish()
        .map_err(|e| CopyError::Invalid(format!("manifest {e}")))?;
    for doc in rewritten {
        notes.push(format!(
            "manifest {} now records uncompressed layers, so it is {}; its config (the image ID) and diff_ids are unchanged",
            doc.old, doc.new
        ));
        replace.insert(
            doc.old.clone(),
            Some(PlannedBlob {
                digest: doc.new.clone(),
                size: doc.size(),
                media_type: doc.media_type.clone(),
                source: None,
                document: true,
            }),
        );
        for (r, _, old) in &edited {
            if *old == doc.old {
                let root = &mut plan.roots[*r];
                root.descriptor.digest = doc.new.to_string();
                root.descriptor.size = doc.size() as i64;
            }
        }
        plan.built.insert(doc.new.clone(), doc.bytes.clone());
    }
    let mut seen = HashSet::new();
    let old = std::mem::take(&mut plan.blobs);
    for b in old {
        let b = match replace.get(&b.digest) {
            Some(Some(new)) => new.clone(),
            Some(None) => continue,
            None => b,
        };
        if seen.insert(b.digest.clone()) {
            plan.blobs.push(b);
        }
    }
    plan.bytes = plan
        .blobs
        .iter()
        .map(|b| b.size)
        .fold(0u64, u64::saturating_add);
    Ok(notes)
}

/// The uncompressed size a gzip layer announces in its last member's ISIZE,
/// when that can be the whole stream's: a single member under 4 GiB. Deflate
/// never shrinks data by more than 1032:1 nor grows it by more than 5 bytes
/// per 16 KiB stored block plus the gzip framing, so a value outside those
/// bounds is not the whole size (several members, or over 4 GiB), and the
/// layer takes the temporary-file path. A plausible but wrong value (several
/// members whose last announces a plausible size) is caught when the layer
/// is streamed: [`CopyError::Prediction`].
fn predicted_size(store: &dyn crate::store::Store, layer: &Layer) -> Option<u64> {
    if layer.compression != Some(Compression::Gzip) || layer.size < 20 {
        return None;
    }
    let blob = store.open_blob(&layer.digest).ok()?;
    if blob.len() != layer.size {
        return None;
    }
    let mut tail = [0u8; 4];
    let n = blob.read_at(&mut tail, layer.size - 4).ok()?;
    if n != 4 {
        return None;
    }
    let isize = u64::from(u32::from_le_bytes(tail));
    let overhead = 18 + 5 * (isize / 16384 + 1);
    let plausible = isize + overhead >= layer.size && isize <= layer.size.saturating_mul(1032);
    plausible.then_some(isize)
}

/// Decompresses one layer into an unnamed temporary file: stored digest
/// checked at its end, DiffID after.
fn decompress_to_file(
    store: &dyn crate::store::Store,
    layer: &Layer,
    limits: &crate::limits::Limits,
    cancel: &crate::cancel::Cancel,
    temp_dir: &Path,
) -> Result<(Digest, Digest, u64, File), CopyError> {
    let digest = &layer.digest;
    // Unnamed (read back only through this descriptor): nothing is left
    // behind however the copy ends, and no other writer's sweep of stale
    // temporary files can touch it.
    let mut tmp = tempfile::tempfile_in(temp_dir).map_err(|source| CopyError::Io {
        path: temp_dir.to_path_buf(),
        source,
    })?;
    // The one capped layer reader: a bomb stops at the limit instead of
    // filling the target's disk.
    let mut stream = layer
        .uncompressed(store, limits)
        .map_err(|e| CopyError::layer(digest, e))?;
    let tmp_err = |source| CopyError::Io {
        path: temp_dir.to_path_buf(),
        source,
    };
    {
        let mut w = io::BufWriter::with_capacity(IO_BUFFER, &mut tmp);
        // A write error is the target's (ENOSPC names the temp file on the
        // target's file system, not the source blob).
        pump(&mut stream, digest, cancel, tmp_err, |chunk| {
            w.write_all(chunk).map_err(tmp_err)
        })?;
        w.flush().map_err(tmp_err)?;
    }
    let digests = layer
        .finish(stream)
        .map_err(|e| CopyError::layer(digest, e))?;
    Ok((
        digest.clone(),
        digests.diff_id,
        digests.uncompressed_size,
        tmp,
    ))
}

/// Reads a layer's decompressed stream to its end in [`COPY_CHUNK`] steps,
/// handing each chunk to `sink`; stops when `cancel` fires (an error made by
/// `io_err`). Read errors name the layer.
pub(super) fn pump(
    stream: &mut LayerStream<'_>,
    digest: &Digest,
    cancel: &crate::cancel::Cancel,
    io_err: impl Fn(io::Error) -> CopyError,
    mut sink: impl FnMut(&[u8]) -> Result<(), CopyError>,
) -> Result<(), CopyError> {
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::layer(digest, crate::layer::layer_error(0)(e))),
        };
        cancel.check().map_err(&io_err)?;
        sink(&buf[..n])?;
    }
}
