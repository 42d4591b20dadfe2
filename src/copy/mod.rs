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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::digest::{Algorithm, Digest};
use crate::docker;
use crate::graph::{find_referrers, Referrer};
use crate::image::{self, Layer};
use crate::layer::LayerError;
use crate::layout::{Layout, LayoutError};
use crate::limits::Limits;
use crate::platform::PlatformSpec;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::resolve::{self, PlatformChoice, ResolveError};
use crate::spec::{
    self, Compression, Descriptor, Document, Kind, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
    MAX_DOCUMENT_SIZE,
};
use crate::store::{Blob, Store, StoreError};
use crate::verified::Verified;

mod archive;
mod run;
mod uncompress;
pub(crate) use archive::Encoder;
pub use archive::{write_archive, ArchiveKind, ArchiveOut};
pub use run::{run, DeltaReport, Mode, RunError, RunOptions, RunReport};
pub(crate) use uncompress::{uncompress_layers, uncompress_layers_with, LazyLayer, Uncompress};

/// Why a copy failed. Each names the blob, file or reference at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The request cannot be carried out as asked (a target name for
    /// several images, an index into a docker-archive, …).
    #[error("{0}")]
    Invalid(String),
    /// A source holds no image.
    #[error("{store} holds no images to copy")]
    Empty {
        /// The source.
        store: String,
    },
    /// A layer is damaged, or is not what its descriptor and config say.
    #[error("layer {digest} {source}")]
    Layer {
        /// The stored layer.
        digest: Digest,
        /// What is wrong with it.
        source: Box<LayerError>,
    },
    /// A document of the source cannot be copied as it is.
    #[error("{digest} {reason}")]
    Document {
        /// The document (as its descriptor names it).
        digest: String,
        /// Why not.
        reason: String,
    },
    /// A source blob failed verification while it was written.
    #[error("{source_name}: {error}; nothing of it was stored")]
    BadSource {
        /// The source and blob, for the message.
        source_name: String,
        /// The verification error.
        error: Box<StoreError>,
    },
    /// The target layout appeared while the copy was being staged.
    #[error("{} appeared while the copy was being written; nothing was put there (run the copy again to add to it)", .0.display())]
    TargetAppeared(PathBuf),
    /// A broken invariant of ocikit itself (a bug).
    #[error("internal: {0}")]
    Internal(String),
    /// A layer's uncompressed size was predicted wrongly (a gzip stream of
    /// several members); the copy starts over with temporary files.
    #[error("layer {layer} decompresses to another size than its gzip trailer announces")]
    Prediction {
        /// The stored layer.
        layer: Digest,
    },
}

impl CopyError {
    /// A layer error, naming the layer.
    pub(crate) fn layer(digest: &Digest, e: LayerError) -> CopyError {
        CopyError::Layer {
            digest: digest.clone(),
            source: Box::new(e),
        }
    }
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
    /// Caps for every read (the decompression limit).
    pub limits: Limits,
    /// How to wait for the target layout's lock.
    pub lock_policy: crate::layout::LockPolicy,
    /// Stops the copy at its next write.
    pub cancel: crate::cancel::Cancel,
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
#[derive(Debug, Default, Clone)]
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
    pub(crate) temp: HashMap<Digest, (Arc<File>, u64)>,
    /// Uncompressed layers not read yet, with their predicted sizes: the
    /// archive writer decompresses each into its place (see
    /// [`uncompress_layers_with`]).
    pub(crate) lazy: HashMap<Digest, (LazyLayer, u64)>,
    /// The caps for every read of this plan.
    pub limits: Limits,
    /// How to wait for the target layout's lock.
    pub lock_policy: crate::layout::LockPolicy,
    /// Stops the copy at its next write.
    pub cancel: crate::cancel::Cancel,
    /// Blobs the images need that no source holds (planned with
    /// [`plan_collecting_missing`]), with what each is.
    pub(crate) missing: Vec<(Digest, String)>,
    /// Blobs an archive leaves out (a delta bundle: the far side holds
    /// them), with the annotations its `index.json` carries.
    pub(crate) delta: Option<(HashSet<Digest>, BTreeMap<String, String>)>,
}

impl Plan {
    /// The images it records, as reports list them: `TAG DIGEST`, or the
    /// digest of an unnamed one.
    pub fn image_labels(&self) -> Vec<String> {
        self.roots
            .iter()
            .map(|r| match &r.tag {
                Some(t) => format!("{t} {}", r.descriptor.digest),
                None => r.descriptor.digest.clone(),
            })
            .collect()
    }
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
    /// Record missing blobs in the plan instead of failing at the first.
    collect_missing: bool,
}

/// Plans a copy: which blobs, in which order, and which roots.
///
/// # Errors
/// Unresolvable references, missing or damaged blobs, and requests that
/// cannot be met (a target name for several images).
pub fn plan(sources: &[Source<'_>], options: &CopyOptions) -> Result<Plan, CopyError> {
    plan_with(sources, options, false)
}

/// Plans a copy as [`plan`] does, but a blob no source holds is recorded in
/// [`Plan::missing`] rather than failing the plan, so that all of them can
/// be named at once (a delta bundle imported where its base is incomplete).
pub(crate) fn plan_collecting_missing(
    sources: &[Source<'_>],
    options: &CopyOptions,
) -> Result<Plan, CopyError> {
    plan_with(sources, options, true)
}

fn plan_with(
    sources: &[Source<'_>],
    options: &CopyOptions,
    collect_missing: bool,
) -> Result<Plan, CopyError> {
    let mut p = Planner {
        collect_missing,
        sources,
        plan: Plan {
            limits: options.limits,
            lock_policy: options.lock_policy,
            cancel: options.cancel.clone(),
            ..Plan::default()
        },
        seen: HashSet::new(),
        referrers: HashMap::new(),
        options,
    };
    for (i, src) in sources.iter().enumerate() {
        let roots: Vec<Descriptor> = match &src.reference {
            Some(r) => vec![resolve::find_descriptor(src.store, Some(r))?],
            None => resolve::index_images(src.store)?,
        };
        if roots.is_empty() {
            return Err(CopyError::Empty {
                store: src.store.name(),
            });
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
            return Err(CopyError::Document {
                digest: node.digest.to_string(),
                reason: "is not a valid index".into(),
            });
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
        let mut value: Value =
            serde_json::from_slice(&node.bytes).map_err(|e| CopyError::Document {
                digest: format!("index {}:", node.digest),
                reason: e.to_string(),
            })?;
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
            return Err(CopyError::Document {
                digest: format!("{}:", desc.digest),
                reason: "indexes nested too deep".into(),
            });
        }
        let digest = resolve::descriptor_digest(desc, "a descriptor")?;
        if self.seen.contains(&digest) {
            return Ok(());
        }
        let store = self.store(i);
        if self.collect_missing
            && matches!(store.open_blob(&digest), Err(StoreError::Missing { .. }))
        {
            if self.seen.insert(digest.clone()) {
                self.plan
                    .missing
                    .push((digest, format!("document, {}", desc.media_type)));
            }
            return Ok(());
        }
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
            Err(StoreError::Missing { .. }) if self.collect_missing => {
                self.seen.insert(digest.clone());
                self.plan
                    .missing
                    .push((digest, format!("{what}, {}", desc.media_type)));
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

/// Reads a small planned document (a manifest or config) through the plan, so
/// built and rewritten documents are read like stored ones.
fn read_planned(sources: &[Source<'_>], plan: &Plan, digest: &str) -> Result<Vec<u8>, CopyError> {
    let b = plan
        .blobs
        .iter()
        .find(|b| b.digest.to_string() == digest)
        .ok_or_else(|| CopyError::Internal(format!("{digest} is not planned")))?;
    if b.size > MAX_DOCUMENT_SIZE {
        return Err(CopyError::Document {
            digest: digest.to_string(),
            reason: "is too large to be a manifest or config".into(),
        });
    }
    let blob = open_planned(sources, plan, b)?;
    let mut out = Vec::with_capacity(b.size as usize);
    blob.copy_to(&mut out).map_err(|source| CopyError::Io {
        path: PathBuf::from(digest),
        source,
    })?;
    Ok(out)
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
                .ok_or_else(|| CopyError::Internal(format!("no bytes for {}", b.digest)))
        }
    }
}

/// Checks every layer of every planned image before anything is written:
/// each is decompressed (in parallel) and its DiffID compared with its config's,
/// and its tar stream read to the end (`--deep`).
///
/// # Errors
/// The first layer (by digest) that is damaged or does not match its config.
pub(crate) fn check_layers(sources: &[Source<'_>], plan: &Plan) -> Result<u64, CopyError> {
    check_layers_where(sources, plan, |_| true)
}

/// [`check_layers`] for the layers whose DiffID is their only check
/// ([`Store::diff_id_is_only_check`]: compressed layers of legacy
/// docker-archives). Every copy runs it, so a broken layer never crosses
/// silently (as `flatten`, skopeo and `docker load` check them too).
///
/// # Errors
/// As [`check_layers`].
pub(crate) fn check_unverified_layers(
    sources: &[Source<'_>],
    plan: &Plan,
) -> Result<u64, CopyError> {
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
    let mut jobs: BTreeMap<Digest, (PlannedBlob, Layer)> = BTreeMap::new();
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
        let Some(config) = m.config.as_ref().filter(|c| c.kind() == Kind::ImageConfig) else {
            continue;
        };
        let config =
            spec::parse_config(&read_planned(sources, plan, &config.digest)?).map_err(|e| {
                CopyError::Document {
                    digest: format!("config {}:", config.digest),
                    reason: e.to_string(),
                }
            })?;
        let layers = image::layers_of(&m, Some(&config)).map_err(|e| CopyError::Document {
            digest: format!("manifest {}:", b.digest),
            reason: e.to_string(),
        })?;
        for l in layers {
            if l.compression.is_none() {
                continue;
            }
            let Some(planned) = plan.blobs.iter().find(|p| p.digest == l.digest) else {
                continue;
            };
            if !keep(planned) {
                continue;
            }
            jobs.insert(l.digest.clone(), (planned.clone(), l));
        }
    }
    let results: Vec<Result<(), CopyError>> = jobs
        .par_iter()
        .map(|(digest, (planned, layer))| {
            let blob = open_planned(sources, plan, planned)?;
            let len = blob.len();
            let limit = plan.limits.decompression(len);
            let reader = Verified::expecting(blob.into_reader(), digest, Some(len));
            let compression = layer.compression.unwrap_or(Compression::None);
            crate::layer::digest_layer(reader, compression, limit)
                .and_then(|got| crate::layer::check_diff_id(&got, layer.diff_id.as_ref()))
                .map_err(|e| CopyError::layer(digest, e))?;
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
        return Err(CopyError::TargetAppeared(target.to_path_buf()));
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
        io::BufReader::with_capacity(crate::limits::COPY_CHUNK, blob.into_reader()),
        &advance,
    );
    io::copy(&mut reader, &mut w).map_err(|source| CopyError::Io {
        path: dest.clone(),
        source,
    })?;
    w.finish().map_err(|e| match e {
        LayoutError::Verify(inner) => CopyError::BadSource {
            source_name: source_name(sources, b),
            error: Box::new(inner),
        },
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
    let layout = Layout::init(target)?
        .with_lock_policy(plan.lock_policy)
        .with_cancel(plan.cancel.clone());
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
        crate::progress::largest_first(&leaves, |b| write_one(sources, plan, &layout, b, progress));
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
