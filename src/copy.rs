//! Copying images between locations: plan, then write.
//!
//! A [`Plan`] lists every blob to copy, children before parents, deduplicated,
//! with the store each comes from, plus the roots to record in the target's
//! `index.json`. Planning reads only the small JSON documents; writing streams
//! every blob from its source, verifying its digest and size as it is
//! written:
//! - into a layout ([`write_layout`]): `oci-layout` and `index.json` first, then
//!   blobs through the atomic blob writer (blobs already present are skipped),
//!   then `index.json` under the writer lock;
//! - into an archive ([`write_archive`]): an oci-archive, or a docker-archive in
//!   Docker 25's dual format (OCI layout plus `manifest.json` and
//!   `repositories`), with sorted members, fixed owners, modes and times, so
//!   the same input gives the same bytes; written to a temporary file beside
//!   the target and renamed on success (or streamed to stdout).
//!
//! Stored bytes are never re-serialised: every digest is kept. The only new
//! documents are an index holding a subset of platforms (when several of many
//! are asked for) and, for `--uncompressed-layers`, nothing yet.

mod run;
pub use run::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::docker::{self, familiar};
use crate::graph::{find_referrers, Referrer};
use crate::layout::{Layout, LayoutError};
use crate::platform::PlatformSpec;
use crate::reference::Reference;
use crate::resolve::{self, PlatformChoice, ResolveError};
use crate::spec::{
    self, media_type, Compression, Descriptor, Document, Kind, ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME, MAX_DOCUMENT_SIZE,
};
use crate::store::{Blob, Store, StoreError};
use crate::verify::Progress;

/// Why a copy failed. Each names the blob, file or reference at fault.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading the source failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Resolving the source failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Writing a layout failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Writing an archive failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A blob the image needs is absent from the source.
    #[error("{store} lacks blob {digest} ({what}), so the image cannot be copied whole")]
    Incomplete {
        /// The source.
        store: String,
        /// The blob.
        digest: Digest,
        /// What it is.
        what: String,
    },
    /// An index whose platforms are only partly in the source.
    #[error("{0}")]
    PartialIndex(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
}

/// What to copy from one source.
#[derive(Clone)]
pub struct Source<'a> {
    /// Where from.
    pub store: &'a dyn Store,
    /// Which image (`None`: every image in its `index.json`).
    pub reference: Option<Reference>,
}

/// Options of a copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Platforms to keep from multi-platform indexes (empty: all).
    pub platforms: Vec<PlatformSpec>,
    /// Resolve every root to one image (docker-archive holds no indexes): the
    /// first of `platforms`, else the host's.
    pub single_image: bool,
    /// The name to give the copied image in the target (TARGET:REF); only
    /// with exactly one image.
    pub target_name: Option<String>,
    /// Leave out referrers (signatures, SBOMs) of the copied manifests.
    pub no_referrers: bool,
    /// Every platform was asked for explicitly (`--all`): with
    /// `single_image`, a multi-platform index is refused rather than cut to
    /// one platform.
    pub all_platforms: bool,
}

/// One image to record in the target.
#[derive(Debug, Clone)]
pub struct Root {
    /// Its descriptor (an index or a manifest).
    pub descriptor: Descriptor,
    /// Its tag (`org.opencontainers.image.ref.name`).
    pub tag: Option<String>,
    /// Its full docker name (`io.containerd.image.name`).
    pub name: Option<String>,
}

/// A blob to copy.
#[derive(Debug, Clone)]
pub struct PlannedBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its media type (as first referenced).
    pub media_type: String,
    /// Which source it comes from (index into the sources), or `None` for a
    /// document ocikit built.
    pub source: Option<usize>,
    /// An index or manifest (written after the blobs it references).
    pub document: bool,
}

/// What a copy will do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Blobs in write order: children before parents.
    pub blobs: Vec<PlannedBlob>,
    /// Images to record.
    pub roots: Vec<Root>,
    /// Documents ocikit built (indexes of a subset of platforms).
    pub built: HashMap<Digest, Arc<[u8]>>,
    /// Things the user should know.
    pub notes: Vec<String>,
    /// Total bytes of the blobs.
    pub bytes: u64,
    /// Blobs ocikit wrote to unnamed temporary files (uncompressed layers),
    /// gone when the plan is dropped.
    pub temp: HashMap<Digest, (Arc<File>, u64)>,
}

/// What a copy did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CopyReport {
    /// Blobs written.
    pub blobs_written: u64,
    /// Blobs skipped because the target had them.
    pub blobs_skipped: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Images recorded.
    pub images: Vec<String>,
}

struct Planner<'a, 'b> {
    sources: &'b [Source<'a>],
    plan: Plan,
    seen: HashSet<Digest>,
    referrers: HashMap<usize, Vec<Referrer>>,
    options: &'b CopyOptions,
}

/// Plans a copy: which blobs, in which order, and which roots.
///
/// # Errors
/// Unresolvable references, missing or damaged blobs, and requests that
/// cannot be met (a target name for several images).
pub fn plan(sources: &[Source<'_>], options: &CopyOptions) -> Result<Plan, CopyError> {
    let mut p = Planner {
        sources,
        plan: Plan::default(),
        seen: HashSet::new(),
        referrers: HashMap::new(),
        options,
    };
    for (i, src) in sources.iter().enumerate() {
        let roots: Vec<Descriptor> = match &src.reference {
            Some(r) => vec![resolve::find_descriptor(src.store, Some(r))?],
            None => {
                let (_, index) = resolve::read_index_json(src.store)?;
                let mut seen = HashSet::new();
                index
                    .entries()
                    .iter()
                    .filter(|d| {
                        seen.insert((
                            d.digest.clone(),
                            d.ref_name().map(str::to_string),
                            d.annotation(ANNOTATION_IMAGE_NAME).map(str::to_string),
                        ))
                    })
                    .cloned()
                    .collect()
            }
        };
        if roots.is_empty() {
            return Err(CopyError::Invalid(format!(
                "{} holds no images to copy",
                src.store.name()
            )));
        }
        for root in roots {
            p.root(i, root)?;
        }
    }
    if options.target_name.is_some() && p.plan.roots.len() != 1 {
        return Err(CopyError::Invalid(format!(
            "a target name needs exactly one image, but the source holds {}; name one in the source",
            p.plan.roots.len()
        )));
    }
    if let Some(name) = &options.target_name {
        // The name as typed is the ref.name (skopeo, podman and buildah write
        // and look it up so); written as a docker reference, its normalised
        // form is the containerd name too.
        let root = &mut p.plan.roots[0];
        root.tag = Some(name.clone());
        root.name = resolve::docker_name_of(name);
    }
    p.plan.bytes = p
        .plan
        .blobs
        .iter()
        .map(|b| b.size)
        .fold(0u64, u64::saturating_add);
    Ok(p.plan)
}

impl Planner<'_, '_> {
    fn store(&self, i: usize) -> &dyn Store {
        self.sources[i].store
    }

    fn root(&mut self, i: usize, desc: Descriptor) -> Result<(), CopyError> {
        let tag = desc.ref_name().map(str::to_string);
        let name = desc.annotation(ANNOTATION_IMAGE_NAME).map(str::to_string);
        let mut chosen = desc.clone();
        chosen.annotations = None;
        let kind = self.kind_of(i, &chosen)?;
        if kind == Kind::Index && self.options.single_image && self.options.all_platforms {
            let node = resolve::load_node(self.store(i), &chosen, "index")?;
            if let Ok(Document::Index(idx)) = spec::parse_document(&node.bytes, Kind::Index) {
                if idx.entries().len() > 1 {
                    return Err(CopyError::Invalid(format!(
                        "{} is a multi-platform index ({} entries) and a docker-archive holds one image per name, so --all cannot be written to it; choose one with --platform, or write an oci-archive (--format oci-archive), which keeps the whole index",
                        tag.as_deref().unwrap_or(&chosen.digest),
                        idx.entries().len()
                    )));
                }
            }
        }
        if kind == Kind::Index && self.options.single_image {
            let platform = match self.options.platforms.first() {
                Some(p) => PlatformChoice::Specific(p.clone()),
                None => PlatformChoice::Host,
            };
            let image = resolve::image_of_descriptor(self.store(i), &chosen, &platform)?;
            let mut d = image.manifest.descriptor.clone();
            d.annotations = None;
            if d.platform.is_none() {
                d.platform = image.platform.clone();
            }
            chosen = d;
        } else if kind == Kind::Manifest && self.options.single_image {
            // One image per name, for the platform asked for: a single
            // manifest of another platform is not it.
            if let Some(p) = self.options.platforms.first() {
                resolve::image_of_descriptor(
                    self.store(i),
                    &chosen,
                    &PlatformChoice::Specific(p.clone()),
                )?;
            }
        } else if kind == Kind::Index && !self.options.platforms.is_empty() {
            chosen = self.platform_subset(i, &chosen)?;
        }
        self.add(i, &chosen, 0)?;
        self.plan.roots.push(Root {
            descriptor: chosen,
            tag,
            name,
        });
        Ok(())
    }

    fn kind_of(&self, i: usize, desc: &Descriptor) -> Result<Kind, CopyError> {
        Ok(match desc.kind() {
            k @ (Kind::Index | Kind::Manifest) => k,
            Kind::Unknown if desc.size <= MAX_DOCUMENT_SIZE as i64 => {
                let node = resolve::load_node(self.store(i), desc, "document")?;
                resolve::node_kind(&node)
            }
            k => k,
        })
    }

    /// The entries of an index for the requested platforms: one manifest when
    /// one platform is asked for, else a new index holding just those entries
    /// (every other field of the original kept).
    fn platform_subset(&mut self, i: usize, desc: &Descriptor) -> Result<Descriptor, CopyError> {
        let node = resolve::load_node(self.store(i), desc, "index")?;
        let Ok(Document::Index(index)) = spec::parse_document(&node.bytes, Kind::Index) else {
            return Err(CopyError::Invalid(format!(
                "{} is not a valid index",
                node.digest
            )));
        };
        let mut keep: Vec<usize> = Vec::new();
        for want in &self.options.platforms {
            let chosen = resolve::choose(
                &format!("index {}", node.digest),
                index.entries(),
                &PlatformChoice::Specific(want.clone()),
            )?;
            if let Some(pos) = index.entries().iter().position(|d| std::ptr::eq(d, chosen)) {
                if !keep.contains(&pos) {
                    keep.push(pos);
                }
            }
        }
        keep.sort_unstable();
        if keep.len() == 1 {
            return Ok(index.entries()[keep[0]].clone());
        }
        if keep.len() == index.entries().len() {
            // Every entry asked for: the stored index itself, digest kept.
            return Ok(desc.clone());
        }
        let mut value: Value = serde_json::from_slice(&node.bytes)
            .map_err(|e| CopyError::Invalid(format!("index {}: {e}", node.digest)))?;
        if let Some(list) = value.get_mut("manifests").and_then(Value::as_array_mut) {
            let all = std::mem::take(list);
            *list = all
                .into_iter()
                .enumerate()
                .filter(|(n, _)| keep.contains(n))
                .map(|(_, v)| v)
                .collect();
        }
        let bytes = value.to_string().into_bytes();
        let digest = Digest::of_bytes(Algorithm::Sha256, &bytes);
        self.plan.notes.push(format!(
            "index {} holds {} platforms; wrote a new index {digest} with the {} asked for",
            node.digest,
            index.entries().len(),
            keep.len()
        ));
        let new = docker::descriptor(&desc.media_type, &digest, bytes.len() as u64);
        // Its children are copied from the source; the index itself is built.
        for n in &keep {
            let child = index.entries()[*n].clone();
            self.add(i, &child, 1)?;
        }
        if self.seen.insert(digest.clone()) {
            self.plan.blobs.push(PlannedBlob {
                digest: digest.clone(),
                size: bytes.len() as u64,
                media_type: desc.media_type.clone(),
                source: None,
                document: true,
            });
        }
        self.plan.built.insert(digest, Arc::from(bytes));
        Ok(new)
    }

    fn push(&mut self, i: usize, desc: &Descriptor, digest: Digest, document: bool) {
        if self.seen.insert(digest.clone()) {
            self.plan.blobs.push(PlannedBlob {
                digest,
                size: desc.size.max(0) as u64,
                media_type: desc.media_type.clone(),
                source: Some(i),
                document,
            });
        }
    }

    /// Adds a descriptor and everything below it, children first.
    fn add(&mut self, i: usize, desc: &Descriptor, depth: usize) -> Result<(), CopyError> {
        if depth > resolve::MAX_NESTING {
            return Err(CopyError::Invalid(format!(
                "{}: indexes nested too deep",
                desc.digest
            )));
        }
        let digest = resolve::descriptor_digest(desc, "a descriptor")?;
        if self.seen.contains(&digest) {
            return Ok(());
        }
        let store = self.store(i);
        let kind = self.kind_of(i, desc)?;
        match kind {
            Kind::Index | Kind::Manifest => {
                let node = resolve::load_node(store, desc, "document")?;
                match spec::parse_document(&node.bytes, kind) {
                    Ok(Document::Index(idx)) => {
                        if let Some(hint) = resolve::partial_index_hint(
                            store,
                            &node.digest.to_string(),
                            idx.entries(),
                        ) {
                            return Err(CopyError::PartialIndex(hint));
                        }
                        for child in idx.entries() {
                            self.add(i, child, depth + 1)?;
                        }
                    }
                    Ok(Document::Manifest(m)) => {
                        if let Some(c) = &m.config {
                            self.leaf(i, c, "config")?;
                        }
                        for l in m.layers.as_deref().unwrap_or(&[]) {
                            self.leaf(i, l, "layer")?;
                        }
                    }
                    Err(e) => {
                        return Err(CopyError::Invalid(format!(
                            "{} {}: {e}",
                            store.name(),
                            node.digest
                        )))
                    }
                }
                self.push(i, desc, digest.clone(), true);
                if !self.options.no_referrers {
                    self.referrers_of(i, &digest, depth)?;
                }
            }
            _ => self.leaf(i, desc, "blob")?,
        }
        Ok(())
    }

    fn leaf(&mut self, i: usize, desc: &Descriptor, what: &str) -> Result<(), CopyError> {
        let digest = resolve::descriptor_digest(desc, &format!("a {what} descriptor"))?;
        if self.seen.contains(&digest) {
            return Ok(());
        }
        let store = self.store(i);
        match store.open_blob(&digest) {
            Ok(_) => {}
            Err(StoreError::Missing { .. }) if desc.is_foreign() => {
                self.plan.notes.push(format!(
                    "non-distributable layer {digest} is not in {} and is left out (its descriptor is kept)",
                    store.name()
                ));
                return Ok(());
            }
            Err(StoreError::Missing { .. }) => {
                return Err(CopyError::Incomplete {
                    store: store.name(),
                    digest,
                    what: format!("{what}, {}", desc.media_type),
                })
            }
            Err(e) => return Err(e.into()),
        }
        self.push(i, desc, digest, false);
        Ok(())
    }

    fn referrers_of(&mut self, i: usize, subject: &Digest, depth: usize) -> Result<(), CopyError> {
        if !self.referrers.contains_key(&i) {
            let found = find_referrers(self.store(i), |_| false);
            self.referrers.insert(i, found);
        }
        let matching: Vec<Descriptor> = self.referrers[&i]
            .iter()
            .filter(|r| &r.subject == subject)
            .map(|r| r.descriptor.clone())
            .collect();
        for d in matching {
            self.add(i, &d, depth + 1)?;
        }
        Ok(())
    }
}

/// The source a planned blob comes from, for messages.
fn source_name(sources: &[Source<'_>], b: &PlannedBlob) -> String {
    match b.source {
        Some(i) => sources[i].store.name(),
        None => "ocikit".into(),
    }
}

/// Reads a planned blob's source.
fn open_planned(sources: &[Source<'_>], plan: &Plan, b: &PlannedBlob) -> Result<Blob, CopyError> {
    match b.source {
        Some(i) => {
            let blob = sources[i].store.open_blob(&b.digest)?;
            if blob.len() != b.size {
                return Err(StoreError::SizeMismatch {
                    digest: b.digest.clone(),
                    expected: b.size as i64,
                    actual: blob.len(),
                }
                .into());
            }
            Ok(blob)
        }
        None => {
            if let Some((file, len)) = plan.temp.get(&b.digest) {
                return Ok(Blob::slice(file.clone(), 0, *len));
            }
            plan.built
                .get(&b.digest)
                .map(|bytes| Blob::memory(bytes.clone()))
                .ok_or_else(|| CopyError::Invalid(format!("internal: no bytes for {}", b.digest)))
        }
    }
}

/// Rewrites the plan so that every root image has uncompressed layers, as
/// `docker save` writes them: each gzip or zstd layer is decompressed once (in
/// parallel) into a temporary file, its DiffID checked against the config, and
/// a new manifest records the uncompressed blobs. The config (so the image
/// ID) and the diff_ids stay as they are. Returns notes saying what changed.
///
/// # Errors
/// A root that is an index (choose a platform), damaged layers, diff_id
/// mismatches, and temporary-file errors.
///
/// The uncompressed layers go to temporary files in `temp_dir` (put it on the
/// target's file system: the layers are written there again right after).
pub fn uncompress_layers(
    sources: &[Source<'_>],
    plan: &mut Plan,
    temp_dir: &Path,
) -> Result<Vec<String>, CopyError> {
    let mut notes = Vec::new();
    let mut replace: HashMap<Digest, Option<PlannedBlob>> = HashMap::new();
    let mut jobs: Vec<(usize, Descriptor, Digest, String)> = Vec::new();
    let mut rewrites = Vec::new();
    for (r, root) in plan.roots.iter().enumerate() {
        let planned = plan
            .blobs
            .iter()
            .find(|b| b.digest.to_string() == root.descriptor.digest)
            .cloned()
            .ok_or_else(|| CopyError::Invalid("internal: root not planned".into()))?;
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
        let diff_ids = image
            .image_config(store)?
            .and_then(|c| c.rootfs)
            .and_then(|r| r.diff_ids)
            .unwrap_or_default();
        let mut any = false;
        for (n, l) in image.layers().iter().enumerate() {
            if let Kind::Layer { compression, .. } = l.kind() {
                if compression != Compression::None {
                    let want = diff_ids.get(n).cloned().ok_or_else(|| {
                        CopyError::Invalid(format!(
                            "config of {} has no diff_id for layer {n}",
                            node.digest
                        ))
                    })?;
                    jobs.push((
                        i,
                        l.clone(),
                        resolve::descriptor_digest(l, "a layer")?,
                        want,
                    ));
                    any = true;
                }
            }
        }
        if any {
            rewrites.push((r, node));
        }
    }
    // Decompress each distinct layer once, in parallel.
    jobs.sort_by(|a, b| a.2.cmp(&b.2));
    jobs.dedup_by(|a, b| a.2 == b.2);
    // Largest first, each thread taking the next layer when free.
    jobs.sort_by(|a, b| b.1.size.cmp(&a.1.size).then(a.2.cmp(&b.2)));
    let results: Vec<Result<(Digest, Digest, u64, File), CopyError>> =
        crate::verify::largest_first(&jobs, |(i, desc, digest, want)| {
            let store = sources[*i].store;
            let blob = store.open_blob(digest)?;
            let Kind::Layer { compression, .. } = desc.kind() else {
                return Err(CopyError::Invalid("internal: not a layer".into()));
            };
            // Unnamed (read back only through this descriptor): nothing is
            // left behind however the copy ends, and no other writer's
            // sweep of stale temporary files can touch it.
            let mut tmp = tempfile::tempfile_in(temp_dir).map_err(|source| CopyError::Io {
                path: temp_dir.to_path_buf(),
                source,
            })?;
            // The one capped layer reader: a bomb stops at the limit
            // instead of filling the target's disk.
            let limit = crate::archive::decompression_limit(blob.len());
            let mut stream = crate::layer::LayerStream::open(
                blob.into_reader(),
                digest.algorithm().clone(),
                compression,
                limit,
            )
            .map_err(|e| CopyError::Invalid(format!("layer {digest}: {e}")))?;
            let tmp_path = temp_dir.to_path_buf();
            let mut w = io::BufWriter::with_capacity(256 << 10, &mut tmp);
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let e = crate::layer::layer_error(0)(e);
                        return Err(CopyError::Invalid(format!("layer {digest}: {e}")));
                    }
                };
                if crate::flatten::cancelled() {
                    return Err(CopyError::Io {
                        path: tmp_path.clone(),
                        source: crate::flatten::interrupted(),
                    });
                }
                // A write error is the target's (ENOSPC names the temp file
                // on the target's file system, not the source blob).
                w.write_all(&buf[..n]).map_err(|source| CopyError::Io {
                    path: tmp_path.clone(),
                    source,
                })?;
            }
            w.flush().map_err(|source| CopyError::Io {
                path: tmp_path.clone(),
                source,
            })?;
            drop(w);
            let digests = stream
                .finish(0)
                .map_err(|e| CopyError::Invalid(format!("layer {digest}: {e}")))?;
            if &digests.blob_digest != digest {
                return Err(CopyError::Invalid(format!(
                    "layer {digest} has the wrong content (it hashes to {})",
                    digests.blob_digest
                )));
            }
            let (diff_id, count) = (digests.diff_id, digests.uncompressed_size);
            if diff_id.to_string() != *want {
                return Err(CopyError::Invalid(format!(
                    "layer {digest} decompresses to {diff_id}, but its config's diff_id is {want}"
                )));
            }
            Ok((digest.clone(), diff_id, count, tmp))
        });
    let mut by_layer: HashMap<Digest, (Digest, u64)> = HashMap::new();
    for r in results {
        let (layer, diff_id, size, file) = r?;
        plan.temp.insert(diff_id.clone(), (Arc::new(file), size));
        by_layer.insert(layer, (diff_id, size));
    }
    for (r, node) in rewrites {
        let mut value: Value = serde_json::from_slice(&node.bytes)
            .map_err(|e| CopyError::Invalid(format!("manifest {}: {e}", node.digest)))?;
        let docker =
            value.get("mediaType").and_then(Value::as_str) == Some(media_type::DOCKER_MANIFEST);
        let tar_type = if docker {
            media_type::DOCKER_LAYER_TAR
        } else {
            media_type::OCI_LAYER_TAR
        };
        if let Some(layers) = value.get_mut("layers").and_then(Value::as_array_mut) {
            for l in layers.iter_mut() {
                let Some(old) = l
                    .get("digest")
                    .and_then(Value::as_str)
                    .and_then(|d| Digest::parse(d).ok())
                else {
                    continue;
                };
                if let Some((diff_id, size)) = by_layer.get(&old) {
                    l["mediaType"] = json!(tar_type);
                    l["digest"] = json!(diff_id.to_string());
                    l["size"] = json!(size);
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
            }
        }
        let bytes = value.to_string().into_bytes();
        let digest = Digest::of_bytes(Algorithm::Sha256, &bytes);
        notes.push(format!(
            "manifest {} now records uncompressed layers, so it is {digest}; its config (the image ID) and diff_ids are unchanged",
            node.digest
        ));
        replace.insert(
            node.digest.clone(),
            Some(PlannedBlob {
                digest: digest.clone(),
                size: bytes.len() as u64,
                media_type: node.descriptor.media_type.clone(),
                source: None,
                document: true,
            }),
        );
        let root = &mut plan.roots[r];
        root.descriptor.digest = digest.to_string();
        root.descriptor.size = bytes.len() as i64;
        plan.built.insert(digest, Arc::from(bytes));
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

/// Checks every layer of every planned image before anything is written:
/// each is decompressed (in parallel) and its DiffID compared with its config's,
/// and its tar stream read to the end (`--deep`).
///
/// # Errors
/// The first layer (by digest) that is damaged or does not match its config.
pub fn check_layers(sources: &[Source<'_>], plan: &Plan) -> Result<u64, CopyError> {
    check_layers_where(sources, plan, |_| true)
}

/// [`check_layers`] for the layers whose DiffID is their only check
/// ([`Store::diff_id_is_only_check`]: compressed layers of legacy
/// docker-archives). Every copy runs it, so a broken layer never crosses
/// silently (as `flatten`, skopeo and `docker load` check them too).
///
/// # Errors
/// As [`check_layers`].
pub fn check_unverified_layers(sources: &[Source<'_>], plan: &Plan) -> Result<u64, CopyError> {
    let unverified = |b: &PlannedBlob| {
        b.source
            .and_then(|i| sources.get(i))
            .is_some_and(|s| s.store.diff_id_is_only_check(&b.digest))
    };
    // Most copies have none: then no manifest or config is read again.
    if !plan.blobs.iter().any(unverified) {
        return Ok(0);
    }
    check_layers_where(sources, plan, unverified)
}

fn check_layers_where(
    sources: &[Source<'_>],
    plan: &Plan,
    keep: impl Fn(&PlannedBlob) -> bool,
) -> Result<u64, CopyError> {
    use rayon::prelude::*;
    let mut jobs: BTreeMap<Digest, (PlannedBlob, Compression, String)> = BTreeMap::new();
    for b in &plan.blobs {
        if !matches!(Kind::of(&b.media_type), Kind::Manifest) {
            continue;
        }
        let Ok(Document::Manifest(m)) = spec::parse_document(
            &read_planned(sources, plan, &b.digest.to_string())?,
            Kind::Manifest,
        ) else {
            continue;
        };
        let Some(config) = m.config.filter(|c| c.kind() == Kind::ImageConfig) else {
            continue;
        };
        let diff_ids = spec::parse_config(&read_planned(sources, plan, &config.digest)?)
            .ok()
            .and_then(|c| c.rootfs)
            .and_then(|r| r.diff_ids)
            .unwrap_or_default();
        for (n, l) in m.layers.as_deref().unwrap_or(&[]).iter().enumerate() {
            let Kind::Layer { compression, .. } = l.kind() else {
                continue;
            };
            let Ok(d) = l.digest() else { continue };
            let Some(planned) = plan.blobs.iter().find(|p| p.digest == d) else {
                continue;
            };
            if !keep(planned) {
                continue;
            }
            let want = diff_ids.get(n).cloned().ok_or_else(|| {
                CopyError::Invalid(format!(
                    "manifest {} has layer {n} but its config has no diff_id for it",
                    b.digest
                ))
            })?;
            jobs.insert(d, (planned.clone(), compression, want));
        }
    }
    let results: Vec<Result<(), CopyError>> = jobs
        .par_iter()
        .map(|(digest, (planned, compression, want))| {
            let blob = open_planned(sources, plan, planned)?;
            let limit = crate::archive::decompression_limit(blob.len());
            let got = crate::layer::digest_layer(
                blob.into_reader(),
                digest.algorithm().clone(),
                *compression,
                limit,
            )
            .map_err(|e| CopyError::Invalid(format!("layer {digest} {e}")))?;
            if &got.blob_digest != digest {
                return Err(CopyError::Invalid(format!(
                    "layer {digest} has the wrong content (it hashes to {})",
                    got.blob_digest
                )));
            }
            if got.diff_id.to_string() != *want {
                return Err(CopyError::Invalid(format!(
                    "layer {digest} decompresses to {}, but its config's diff_id is {want}",
                    got.diff_id
                )));
            }
            Ok(())
        })
        .collect();
    for r in results {
        r?;
    }
    Ok(jobs.len() as u64)
}

/// Writes a plan into a layout (created if absent).
///
/// # Errors
/// Any read, verification or write error; the layout keeps what it had (plus
/// verified blobs that `gc` can remove).
pub fn write_layout(
    sources: &[Source<'_>],
    plan: &Plan,
    target: &Path,
    progress: &dyn Progress,
) -> Result<CopyReport, CopyError> {
    if std::fs::symlink_metadata(target).is_ok() {
        return write_layout_inner(sources, plan, target, progress);
    }
    // A new layout is built whole in a sibling `.ocikit-init-*` directory
    // and renamed into place only when complete, so an interrupted or failed
    // first copy never leaves a half-made layout under the name (a SIGKILL
    // leaves the sibling, which verify points out).
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CopyError::Io { path, source }
    };
    std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let staged = tempfile::Builder::new()
        .prefix(".ocikit-init-")
        .tempdir_in(&parent)
        .map_err(io_err(&parent))?;
    let report = write_layout_inner(sources, plan, staged.path(), progress)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            staged.path(),
            std::fs::Permissions::from_mode(crate::layout::new_dir_mode()),
        )
        .map_err(io_err(staged.path()))?;
    }
    if std::fs::symlink_metadata(target).is_ok() {
        return Err(CopyError::Invalid(format!(
            "{} appeared while the copy was being written; nothing was put there (run the copy again to add to it)",
            target.display()
        )));
    }
    std::fs::rename(staged.path(), target).map_err(io_err(target))?;
    let _ = staged.keep();
    if let Ok(d) = File::open(&parent) {
        let _ = d.sync_all();
    }
    Ok(report)
}

/// Writes one planned blob into the layout through the verifying atomic
/// writer; `false` when the layout already had it.
fn write_one(
    sources: &[Source<'_>],
    plan: &Plan,
    layout: &Layout,
    b: &PlannedBlob,
    progress: &dyn Progress,
) -> Result<bool, CopyError> {
    let dest = layout.root().join(b.digest.blob_path());
    if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == b.size) {
        progress.advance(b.size);
        return Ok(false);
    }
    let blob = open_planned(sources, plan, b)?;
    let mut w = layout.blob_writer(Some((b.digest.clone(), b.size)))?;
    let advance = |n| progress.advance(n);
    let mut reader = crate::digest::ProgressReader::new(
        io::BufReader::with_capacity(1 << 20, blob.into_reader()),
        &advance,
    );
    io::copy(&mut reader, &mut w).map_err(|source| CopyError::Io {
        path: dest.clone(),
        source,
    })?;
    w.finish().map_err(|e| match e {
        LayoutError::Verify(inner) => CopyError::Invalid(format!(
            "{}: {inner}; nothing of it was stored",
            source_name(sources, b)
        )),
        other => other.into(),
    })?;
    Ok(true)
}

fn write_layout_inner(
    sources: &[Source<'_>],
    plan: &Plan,
    target: &Path,
    progress: &dyn Progress,
) -> Result<CopyReport, CopyError> {
    let layout = Layout::init(target)?;
    let lock = layout.lock()?;
    // An index.json verify refuses is refused before any blob is written.
    layout.read_index(&lock)?;
    let mut report = CopyReport::default();
    progress.begin(plan.bytes);
    // Blobs that reference nothing (layers, configs) go in parallel, largest
    // first; then indexes and manifests in plan order, so every document is
    // written after what it references.
    let mut leaves: Vec<&PlannedBlob> = plan.blobs.iter().filter(|b| !b.document).collect();
    leaves.sort_by(|a, b| b.size.cmp(&a.size).then(a.digest.cmp(&b.digest)));
    let mut results =
        crate::verify::largest_first(&leaves, |b| write_one(sources, plan, &layout, b, progress));
    let documents: Vec<&PlannedBlob> = plan.blobs.iter().filter(|b| b.document).collect();
    for b in &documents {
        results.push(write_one(sources, plan, &layout, b, progress));
    }
    for (b, r) in leaves.iter().chain(&documents).zip(results) {
        if r? {
            report.blobs_written += 1;
            report.bytes_written += b.size;
        } else {
            report.blobs_skipped += 1;
        }
    }
    let mut index = layout.read_index(&lock)?;
    for root in &plan.roots {
        let mut d = root.descriptor.clone();
        let mut ann = BTreeMap::new();
        if let Some(n) = &root.name {
            ann.insert(ANNOTATION_IMAGE_NAME.to_string(), n.clone());
        }
        if let Some(t) = &root.tag {
            ann.insert(ANNOTATION_REF_NAME.to_string(), t.clone());
            // A name moves only between entries of the same identity (the
            // containerd name where there is one, else the ref.name): Docker
            // 25 and containerd write several images under one tag part.
            let identity = root.name.as_deref().unwrap_or(t);
            if index.entries.iter().any(|e| {
                e.descriptor.ref_name() == Some(t)
                    && e.descriptor.digest == d.digest
                    && resolve::identity(&e.descriptor)
                        .is_some_and(|i| crate::layout::same_identity(i, identity))
            }) {
                report.images.push(format!("{t} {}", d.digest));
                continue;
            }
            index.move_name(t, root.name.as_deref());
        } else if index
            .entries
            .iter()
            .any(|e| e.descriptor.digest == d.digest)
        {
            report.images.push(d.digest.clone());
            continue;
        }
        d.annotations = (!ann.is_empty()).then_some(ann);
        report.images.push(match &root.tag {
            Some(t) => format!("{t} {}", d.digest),
            None => d.digest.clone(),
        });
        index.push(&d);
    }
    layout.write_index(&lock, &index)?;
    Ok(report)
}

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

/// A reader that fails at its end unless exactly `size` bytes hashing to
/// `digest` went through it, so a bad source aborts the archive.
struct Verifying<R> {
    inner: R,
    source: String,
    hasher: Option<Hasher>,
    digest: Digest,
    size: u64,
    count: u64,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: blob {} is larger than its descriptor's {} bytes",
                    self.source, self.digest, self.size
                ),
            ));
        }
        if n > 0 {
            if let Some(h) = self.hasher.as_mut() {
                h.update(&buf[..n]);
            }
            return Ok(n);
        }
        if self.count != self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: blob {} is {} bytes but its descriptor says {}",
                    self.source, self.digest, self.count, self.size
                ),
            ));
        }
        if let Some(h) = self.hasher.take() {
            let got = h.finish();
            if got != self.digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: blob {} has the wrong content (it hashes to {got})",
                        self.source, self.digest
                    ),
                ));
            }
        }
        Ok(0)
    }
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
    let mut buf = vec![0u8; 1 << 20];
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

/// Reads a small planned document (a manifest or config) through the plan, so
/// built and rewritten documents are read like stored ones.
fn read_planned(sources: &[Source<'_>], plan: &Plan, digest: &str) -> Result<Vec<u8>, CopyError> {
    let b = plan
        .blobs
        .iter()
        .find(|b| b.digest.to_string() == digest)
        .ok_or_else(|| CopyError::Invalid(format!("internal: {digest} is not planned")))?;
    if b.size > MAX_DOCUMENT_SIZE {
        return Err(CopyError::Invalid(format!(
            "{digest} is too large to be a manifest or config"
        )));
    }
    let blob = open_planned(sources, plan, b)?;
    let mut out = Vec::with_capacity(b.size as usize);
    blob.copy_to(&mut out).map_err(|source| CopyError::Io {
        path: PathBuf::from(digest),
        source,
    })?;
    Ok(out)
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
        let diff_ids = spec::parse_config(&read_planned(sources, plan, &config.digest)?)
            .ok()
            .and_then(|c| c.rootfs)
            .and_then(|r| r.diff_ids)
            .unwrap_or_default();
        let mut layer_paths = Vec::new();
        let mut sources_map = BTreeMap::new();
        for (n, l) in manifest.layers.as_deref().unwrap_or(&[]).iter().enumerate() {
            let d = resolve::descriptor_digest(l, "a layer descriptor")?;
            layer_paths.push(d.blob_path().to_string_lossy().into_owned());
            if l.is_foreign() {
                if let Some(id) = diff_ids.get(n) {
                    sources_map.insert(id.clone(), l.clone());
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
    let index =
        json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": entries})
            .to_string()
            .into_bytes();
    let docker_files = match kind {
        ArchiveKind::DockerArchive => Some(docker_metadata(sources, plan, &mut notes)?),
        ArchiveKind::OciArchive => None,
    };

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
                (p.to_path_buf(), Some(tmp), Box::new(f))
            }
        };
    let io_err = |source| CopyError::Io {
        path: path_for_errors.clone(),
        source,
    };
    let buffered = io::BufWriter::with_capacity(1 << 20, crate::flatten::Cancellable(sink));
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
    let mut blobs: Vec<&PlannedBlob> = plan.blobs.iter().collect();
    blobs.sort_by_key(|b| b.digest.blob_path());
    let algs: std::collections::BTreeSet<String> = blobs
        .iter()
        .map(|b| b.digest.algorithm().to_string())
        .collect();
    let mut report = CopyReport::default();
    progress.begin(plan.bytes);
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
            let blob = open_planned(sources, plan, b)?;
            // Blobs read from a source are verified as they stream; blobs ocikit
            // built or decompressed itself were hashed as they were made.
            let verify = b.digest.algorithm().is_verifiable() && b.source.is_some();
            // tar copies in 8 KiB steps; read the blob in 1 MiB ones.
            let reader = Verifying {
                source: source_name(sources, b),
                inner: crate::digest::ProgressReader::new(
                    io::BufReader::with_capacity(1 << 20, blob.into_reader()),
                    &advance,
                ),
                hasher: verify.then(|| Hasher::new(b.digest.algorithm().clone())),
                digest: b.digest.clone(),
                size: b.size,
                count: 0,
            };
            // A source that fails verification is named as the culprit, not
            // the archive being written (which is left untouched).
            append_blob(&mut tar, &b.digest.blob_path(), b.size, reader).map_err(|e| {
                match e.kind() {
                    io::ErrorKind::InvalidData => CopyError::Invalid(format!(
                        "{e}; {} was not written",
                        path_for_errors.display()
                    )),
                    _ => io_err(e),
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
    report.images = plan
        .roots
        .iter()
        .map(|r| match &r.tag {
            Some(t) => format!("{t} {}", r.descriptor.digest),
            None => r.descriptor.digest.clone(),
        })
        .collect();
    Ok((report, notes))
}
