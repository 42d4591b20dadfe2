//! `ocikit mod`: a new image from an existing one, edited offline. The source
//! is never changed; the result is written into a layout under a new tag.
//!
//! Every document goes through [`crate::rewrite::Rewrite`]: edited configs and
//! manifests are serialised once, their parents (the manifest of a config,
//! the index of a manifest) repointed up to the root, and documents no edit
//! touches keep their bytes. Layers go through `layers::rewrite`: a layer
//! no edit changes is kept as stored. Same input and same edits give the same
//! digests: times come only from the input and the edits, gzip is
//! [`crate::squash`]'s reproducible parallel gzip, JSON keeps its key order.

mod layers;
pub mod time;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::image::{layers_of, Layer};
use crate::layer::LayerError;
use crate::layout::Layout;
use crate::limits::Limits;
use crate::reference::Reference;
use crate::resolve::{self, Node, ResolveError};
use crate::rewrite::{Rewrite, RewriteError};
use crate::spec::{self, media_type as mt, Compression, Descriptor, Kind};
use crate::store::Store;

/// Which family of media types the result uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Family {
    /// OCI image-spec types.
    Oci,
    /// Docker schema 2 types (no zstd).
    Docker,
}

/// The edits `mod` applies.
#[derive(Debug, Clone, Default)]
pub struct ModOptions {
    /// Clamp config `created`, every history `created` and every layer
    /// entry's mtime to at most this (seconds since the epoch).
    pub time_max: Option<i64>,
    /// Rewrite every layer as a normalised tar: entries sorted by path,
    /// owners as numbers only, no atime/ctime, PAX records only where needed.
    pub normalize_layers: bool,
    /// Recompress every layer (gzip output is reproducible).
    pub compress: Option<Compression>,
    /// Convert media types.
    pub family: Option<Family>,
    /// Manifest annotations to set.
    pub annotations: BTreeMap<String, String>,
    /// Index annotations to set (when the source is an index).
    pub index_annotations: BTreeMap<String, String>,
    /// Config labels to set (`config.Labels`).
    pub labels: BTreeMap<String, String>,
    /// Environment variables to set (`config.Env`, replacing `K=…`).
    pub env: Vec<(String, String)>,
    /// Drop the config's history.
    pub rm_history: bool,
    /// Layers to drop, by 1-based position.
    pub rm_layers: Vec<usize>,
    /// Paths to drop from every layer (with what is below, and whiteouts).
    pub rm_paths: Vec<String>,
    /// Caps for every layer read.
    pub limits: Limits,
    /// Stops the edit before anything is tagged.
    pub cancel: crate::cancel::Cancel,
}

/// What `mod` wrote.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ModReport {
    /// The new image's descriptor, as tagged.
    pub descriptor: Descriptor,
    /// The digest it replaced (the source's).
    pub source: Digest,
    /// Layers rewritten (new blobs).
    pub layers_rewritten: usize,
    /// Layers kept as stored.
    pub layers_kept: usize,
    /// What the user should know (referrers left behind).
    pub notes: Vec<String>,
}

/// Why `mod` failed. Nothing is tagged then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModError {
    /// The source cannot be resolved or read.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The source's layers do not agree with its config.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// A layer cannot be read.
    #[error("layer {digest} {source}")]
    Layer {
        /// The layer.
        digest: Digest,
        /// What is wrong.
        source: Box<LayerError>,
    },
    /// The edits cannot be applied as asked.
    #[error("{0}")]
    Invalid(String),
    /// A document cannot be edited.
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
    /// Writing into the layout failed.
    #[error("cannot write the new image: {0}")]
    Write(String),
    /// Interrupted.
    #[error("interrupted by a signal; nothing was tagged")]
    Interrupted,
}

/// One manifest to edit, with its config.
struct Target {
    manifest: Node,
    config: Option<Node>,
}

/// Applies `options` to the image `reference` names in `store` and tags the
/// result `tag` in `layout` (blobs the result shares with the source are
/// copied in when `layout` is not the source).
///
/// # Errors
/// See [`ModError`]; a failed edit tags nothing and removes the blobs it
/// wrote.
pub fn modify(
    store: &dyn Store,
    reference: Option<&Reference>,
    layout: &Layout,
    tag: &str,
    options: &ModOptions,
) -> Result<ModReport, ModError> {
    if !crate::reference::is_valid_ref_name(tag) {
        return Err(ModError::Invalid(format!("{tag:?} is not a valid tag")));
    }
    let root = resolve::resolve_node(store, reference)?;
    let mut rewrite = Rewrite::new();
    let root_id = rewrite.add(
        &root.digest,
        &root.descriptor.media_type,
        root.bytes.clone(),
    );
    let mut targets = Vec::new();
    let root_kind = resolve::node_kind(&root);
    match root_kind {
        Kind::Manifest => targets.push(root.clone()),
        Kind::Index => {
            let Ok(spec::Document::Index(ix)) = spec::parse_document(&root.bytes, Kind::Index)
            else {
                return Err(ModError::Invalid(format!(
                    "{} is not a valid index",
                    root.digest
                )));
            };
            for d in ix.entries() {
                if d.kind() != Kind::Manifest {
                    return Err(ModError::Invalid(format!(
                        "index {} holds {} ({}), which mod cannot edit",
                        root.digest, d.digest, d.media_type
                    )));
                }
                let node = resolve::load_node(store, d, "manifest")?;
                let id = rewrite.add(
                    &node.digest,
                    &node.descriptor.media_type,
                    node.bytes.clone(),
                );
                rewrite.link(root_id, id);
                targets.push(node);
            }
        }
        _ => {
            return Err(ModError::Invalid(format!(
                "{} is not an image manifest or index",
                root.digest
            )))
        }
    }
    let targets: Vec<Target> = targets
        .into_iter()
        .map(|manifest| {
            let parsed = match spec::parse_document(&manifest.bytes, Kind::Manifest) {
                Ok(spec::Document::Manifest(m)) => m,
                _ => {
                    return Err(ModError::Invalid(format!(
                        "{} is not a valid manifest",
                        manifest.digest
                    )))
                }
            };
            let config = match &parsed.config {
                Some(c) => Some(resolve::load_node(store, c, "config")?),
                None => None,
            };
            Ok(Target { manifest, config })
        })
        .collect::<Result<_, ModError>>()?;

    let lock = layout.lock().map_err(|e| ModError::Write(e.to_string()))?;
    // Under the exclusive lock no other writer adds blobs: what is new when
    // the edit fails is this run's, and is removed.
    let before: HashSet<std::path::PathBuf> = layout
        .store()
        .list_blobs()
        .map_err(|e| ModError::Write(e.to_string()))?
        .into_iter()
        .map(|b| b.path)
        .collect();
    let result = (|| -> Result<ModReport, ModError> {
        let spool = layout
            .tmp_dir()
            .map_err(|e| ModError::Write(e.to_string()))?;
        let mut report_rewritten = 0;
        let mut report_kept = 0;
        let edits = layers::EntryEdits {
            time_max: options.time_max,
            normalize: options.normalize_layers,
            rm_paths: options
                .rm_paths
                .iter()
                .map(|p| layers::clean(p.as_bytes()))
                .collect(),
        };
        // Each distinct layer is rewritten once, whichever manifests share it.
        // Each manifest parsed and checked once, before anything is written.
        let mut prepared = Vec::new();
        for t in &targets {
            let parsed = match spec::parse_document(&t.manifest.bytes, Kind::Manifest) {
                Ok(spec::Document::Manifest(m)) => m,
                _ => {
                    return Err(ModError::Invalid(format!(
                        "{} is not a valid manifest",
                        t.manifest.digest
                    )))
                }
            };
            let docker_in = parsed.media_type.as_deref() == Some(mt::DOCKER_MANIFEST)
                || t.manifest.descriptor.media_type == mt::DOCKER_MANIFEST;
            let family = options.family.unwrap_or(if docker_in {
                Family::Docker
            } else {
                Family::Oci
            });
            let image_config = match &t.config {
                Some(c) if c.descriptor.kind() == Kind::ImageConfig => Some(
                    spec::parse_config(&c.bytes)
                        .map_err(|e| ModError::Invalid(format!("config {}: {e}", c.digest)))?,
                ),
                _ => None,
            };
            let all = layers_of(&parsed, image_config.as_ref())?;
            for &n in &options.rm_layers {
                if n == 0 || n > all.len() {
                    return Err(ModError::Invalid(format!(
                        "--rm-layer {n}: manifest {} has {} layers (counted from 1)",
                        t.manifest.digest,
                        all.len()
                    )));
                }
            }
            let kept: Vec<Layer> = all
                .into_iter()
                .filter(|l| !options.rm_layers.contains(&(l.index + 1)))
                .collect();
            for l in &kept {
                let Some(from) = l.compression else {
                    return Err(ModError::Invalid(format!(
                        "layer {} of manifest {} has media type {:?}, which mod cannot edit",
                        l.digest, t.manifest.digest, l.descriptor.media_type
                    )));
                };
                let to = options.compress.unwrap_or(from);
                if family == Family::Docker && to == Compression::Zstd {
                    return Err(ModError::Invalid(format!(
                    "layer {} is zstd-compressed and Docker's manifest has no zstd layer type; add --compress gzip (or none)",
                    l.digest
                )));
                }
            }
            prepared.push((t, family, image_config, kept));
        }
        // Each distinct (layer, compression) rewritten once, largest first, on
        // every core.
        let mut jobs: Vec<(Layer, Compression)> = Vec::new();
        for (_, _, _, kept) in &prepared {
            for l in kept {
                let to = options
                    .compress
                    .or(l.compression)
                    .unwrap_or(Compression::None);
                if !jobs.iter().any(|(j, c)| j.digest == l.digest && *c == to) {
                    jobs.push((l.clone(), to));
                }
            }
        }
        jobs.sort_by_key(|j| std::cmp::Reverse(j.0.size));
        let results = crate::progress::largest_first(&jobs, |(l, to)| {
            if options.cancel.is_cancelled() {
                return Err(ModError::Interrupted);
            }
            layers::rewrite(store, l, &options.limits, &edits, *to, layout, &spool)
        });
        let mut done: HashMap<(Digest, Compression), Option<layers::NewLayer>> = HashMap::new();
        for ((l, to), r) in jobs.iter().zip(results) {
            done.insert((l.digest.clone(), *to), r?);
        }
        let mut keep_blobs: Vec<Descriptor> = Vec::new();
        for (t, family, image_config, kept) in &prepared {
            let family = *family;
            // New layer descriptors and DiffIDs, in order.
            let mut new_layers: Vec<Value> = Vec::new();
            let mut diff_ids: Vec<String> = Vec::new();
            for l in kept {
                let from = l.compression.unwrap_or(Compression::None);
                let to = options.compress.unwrap_or(from);
                let new = done.get(&(l.digest.clone(), to)).cloned().flatten();
                let (digest, size, diff_id, compression) = match &new {
                    Some(n) => {
                        report_rewritten += 1;
                        (n.digest.clone(), n.size, n.diff_id.clone(), n.compression)
                    }
                    None => {
                        report_kept += 1;
                        keep_blobs.push(l.descriptor.clone());
                        let diff_id = l.diff_id.clone().ok_or_else(|| {
                            ModError::Invalid(format!(
                                "manifest {} has no image config, so its layers cannot be edited",
                                t.manifest.digest
                            ))
                        })?;
                        (l.digest.clone(), l.size, diff_id, from)
                    }
                };
                let mut d = serde_json::to_value(&l.descriptor)
                    .map_err(|e| ModError::Invalid(e.to_string()))?;
                d["mediaType"] = Value::from(layer_type(family, compression, l.foreign));
                d["digest"] = Value::from(digest.to_string());
                d["size"] = Value::from(size);
                new_layers.push(d);
                diff_ids.push(diff_id.to_string());
            }

            // The config.
            let man_id = rewrite.add(
                &t.manifest.digest,
                &t.manifest.descriptor.media_type,
                t.manifest.bytes.clone(),
            );
            if let Some(c) = &t.config {
                keep_blobs.push(c.descriptor.clone());
                let cfg_id = rewrite.add(&c.digest, &c.descriptor.media_type, c.bytes.clone());
                rewrite.link(man_id, cfg_id);
                if image_config.is_some() {
                    let removed: Vec<usize> = options.rm_layers.iter().map(|n| n - 1).collect();
                    rewrite.edit(cfg_id, |cfg| edit_config(cfg, options, &diff_ids, &removed))?;
                }
            }
            // The manifest.
            rewrite.edit(man_id, |m| {
                m.insert("layers".into(), Value::Array(new_layers));
                set_family(m, family);
                if !options.annotations.is_empty() {
                    let ann = m
                        .entry("annotations")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(a) = ann.as_object_mut() {
                        for (k, v) in &options.annotations {
                            a.insert(k.clone(), Value::from(v.clone()));
                        }
                    }
                }
            })?;
        }
        if root_kind == Kind::Index {
            rewrite.edit(root_id, |ix| {
                let list = match options.family {
                    Some(Family::Docker) => Some(mt::DOCKER_LIST),
                    Some(Family::Oci) => Some(mt::OCI_INDEX),
                    None => None,
                };
                if let (Some(t), Some(_)) = (list, ix.get("mediaType")) {
                    ix.insert("mediaType".into(), Value::from(t));
                }
                if let Some(entries) = ix.get_mut("manifests").and_then(Value::as_array_mut) {
                    for e in entries {
                        if let (Some(f), Some(o)) = (options.family, e.as_object_mut()) {
                            o.insert(
                                "mediaType".into(),
                                Value::from(match f {
                                    Family::Docker => mt::DOCKER_MANIFEST,
                                    Family::Oci => mt::OCI_MANIFEST,
                                }),
                            );
                        }
                    }
                }
                if !options.index_annotations.is_empty() {
                    let ann = ix
                        .entry("annotations")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(a) = ann.as_object_mut() {
                        for (k, v) in &options.index_annotations {
                            a.insert(k.clone(), Value::from(v.clone()));
                        }
                    }
                }
            })?;
        } else if !options.index_annotations.is_empty() {
            return Err(ModError::Invalid(
                "--annotation-index needs an index; the source is a single manifest".into(),
            ));
        }
        if options.cancel.is_cancelled() {
            return Err(ModError::Interrupted);
        }
        // Blobs the result shares with the source, if the layout lacks them.
        for d in &keep_blobs {
            copy_blob(store, layout, d)?;
        }
        // The documents, children first; the root last.
        let rewritten = rewrite.finish()?;
        let mut by_old: HashMap<Digest, (Digest, u64)> = HashMap::new();
        for doc in &rewritten {
            let mut w = layout
                .blob_writer(None)
                .map_err(|e| ModError::Write(e.to_string()))?;
            w.write_all(&doc.bytes)
                .map_err(|e| ModError::Write(e.to_string()))?;
            w.finish().map_err(|e| ModError::Write(e.to_string()))?;
            by_old.insert(doc.old.clone(), (doc.new.clone(), doc.size()));
        }
        let (digest, size) = match by_old.get(&root.digest) {
            Some((d, s)) => (d.clone(), *s),
            None => {
                copy_blob(store, layout, &root.descriptor)?;
                (root.digest.clone(), root.bytes.len() as u64)
            }
        };
        let mut desc = root.descriptor.clone();
        desc.digest = digest.to_string();
        desc.size = size as i64;
        desc.annotations = None;
        if let Some(f) = options.family {
            desc.media_type = match (f, root_kind) {
                (Family::Docker, Kind::Index) => mt::DOCKER_LIST,
                (Family::Oci, Kind::Index) => mt::OCI_INDEX,
                (Family::Docker, _) => mt::DOCKER_MANIFEST,
                (Family::Oci, _) => mt::OCI_MANIFEST,
            }
            .to_string();
        }
        let desc = layout
            .publish(&lock, desc, tag)
            .map_err(|e| ModError::Write(e.to_string()))?;
        let mut notes = Vec::new();
        let referrers = crate::graph::find_referrers(store, |_| false);
        if referrers.iter().any(|r| {
            r.subject == root.digest || targets.iter().any(|t| r.subject == t.manifest.digest)
        }) {
            notes.push(format!(
            "referrers (signatures, SBOMs) of {} do not apply to the new image {}; they were not copied",
            root.digest, digest
        ));
        }
        Ok(ModReport {
            descriptor: desc,
            source: root.digest.clone(),
            layers_rewritten: report_rewritten,
            layers_kept: report_kept,
            notes,
        })
    })();
    if result.is_err() {
        if let Ok(now) = layout.store().list_blobs() {
            for b in now.into_iter().filter(|b| !before.contains(&b.path)) {
                let _ = std::fs::remove_file(layout.root().join(&b.path));
            }
        }
    }
    result
}

fn layer_type(family: Family, c: Compression, foreign: bool) -> &'static str {
    match (family, c, foreign) {
        (Family::Oci, Compression::Gzip, false) => mt::OCI_LAYER_GZIP,
        (Family::Oci, Compression::Zstd, false) => mt::OCI_LAYER_ZSTD,
        (Family::Oci, Compression::None, false) => mt::OCI_LAYER_TAR,
        (Family::Oci, Compression::Gzip, true) => mt::OCI_LAYER_ND_GZIP,
        (Family::Oci, Compression::Zstd, true) => mt::OCI_LAYER_ND_ZSTD,
        (Family::Oci, Compression::None, true) => mt::OCI_LAYER_ND_TAR,
        (Family::Docker, Compression::None, _) => mt::DOCKER_LAYER_TAR,
        (Family::Docker, _, true) => mt::DOCKER_LAYER_FOREIGN,
        (Family::Docker, _, false) => mt::DOCKER_LAYER_GZIP,
    }
}

fn set_family(m: &mut Map<String, Value>, family: Family) {
    let (man, cfg) = match family {
        Family::Oci => (mt::OCI_MANIFEST, mt::OCI_CONFIG),
        Family::Docker => (mt::DOCKER_MANIFEST, mt::DOCKER_CONFIG),
    };
    m.insert("mediaType".into(), Value::from(man));
    if let Some(c) = m.get_mut("config").and_then(Value::as_object_mut) {
        let is_image = matches!(
            c.get("mediaType").and_then(Value::as_str),
            Some(mt::OCI_CONFIG | mt::DOCKER_CONFIG)
        );
        if is_image {
            c.insert("mediaType".into(), Value::from(cfg));
        }
    }
}

fn clamp(v: &mut Value, max: i64) {
    let Some(s) = v.as_str() else { return };
    if time::parse(s).is_some_and(|t| t > max) {
        *v = Value::from(time::format(max));
    }
}

fn edit_config(
    cfg: &mut Map<String, Value>,
    options: &ModOptions,
    diff_ids: &[String],
    removed_layers: &[usize],
) {
    // History: entries that made a layer, in order, map to the layers.
    if let Some(h) = cfg.get_mut("history").and_then(Value::as_array_mut) {
        if !removed_layers.is_empty() {
            let mut layer = 0usize;
            h.retain(|e| {
                let empty = e.get("empty_layer").and_then(Value::as_bool) == Some(true);
                if empty {
                    return true;
                }
                let keep = !removed_layers.contains(&layer);
                layer += 1;
                keep
            });
        }
        if let Some(t) = options.time_max {
            for e in h.iter_mut() {
                if let Some(c) = e.get_mut("created") {
                    clamp(c, t);
                }
            }
        }
    }
    if options.rm_history {
        cfg.shift_remove("history");
    }
    if let Some(t) = options.time_max {
        if let Some(c) = cfg.get_mut("created") {
            clamp(c, t);
        }
    }
    if let Some(r) = cfg.get_mut("rootfs").and_then(Value::as_object_mut) {
        r.insert(
            "diff_ids".into(),
            Value::Array(diff_ids.iter().cloned().map(Value::from).collect()),
        );
    }
    if !options.labels.is_empty() || !options.env.is_empty() {
        let c = cfg
            .entry("config")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(c) = c.as_object_mut() else { return };
        if !options.labels.is_empty() {
            let l = c
                .entry("Labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if !l.is_object() {
                *l = Value::Object(Map::new());
            }
            if let Some(l) = l.as_object_mut() {
                for (k, v) in &options.labels {
                    l.insert(k.clone(), Value::from(v.clone()));
                }
            }
        }
        if !options.env.is_empty() {
            let e = c.entry("Env").or_insert_with(|| Value::Array(Vec::new()));
            if !e.is_array() {
                *e = Value::Array(Vec::new());
            }
            if let Some(list) = e.as_array_mut() {
                for (k, v) in &options.env {
                    let prefix = format!("{k}=");
                    let item = Value::from(format!("{k}={v}"));
                    match list
                        .iter_mut()
                        .find(|x| x.as_str().is_some_and(|s| s.starts_with(&prefix)))
                    {
                        Some(x) => *x = item,
                        None => list.push(item),
                    }
                }
            }
        }
    }
}

/// Copies a blob of the source into the layout unless it is there.
fn copy_blob(store: &dyn Store, layout: &Layout, d: &Descriptor) -> Result<(), ModError> {
    let digest = d.digest().map_err(|e| ModError::Invalid(e.to_string()))?;
    if layout.store().open_blob(&digest).is_ok() {
        return Ok(());
    }
    let mut reader = store
        .open_verified(&digest, d.size)
        .map_err(|e| ModError::Write(e.to_string()))?;
    let mut w = layout
        .blob_writer(Some((digest.clone(), d.size.max(0) as u64)))
        .map_err(|e| ModError::Write(e.to_string()))?;
    std::io::copy(&mut reader, &mut w).map_err(|e| ModError::Write(format!("{digest}: {e}")))?;
    w.finish().map_err(|e| ModError::Write(e.to_string()))?;
    Ok(())
}
