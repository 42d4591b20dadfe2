//! Multi-platform index editing: `index create`, `add` and `rm`.
//!
//! - [`create`] builds a new OCI image index from single-platform images
//!   (and every manifest of a multi-platform source), one entry per image in
//!   the order given, each entry's `platform` taken from the image's config.
//!   The document is built deterministically: the same sources and
//!   annotations give the same bytes and digest.
//! - [`add`] and [`remove`] edit the index a tag names through
//!   [`crate::rewrite::Rewrite`] (unchanged fields keep their order), write
//!   the result as a new blob and point the tag's `index.json` entry at it in
//!   place. The old index stays as a blob until `gc`.
//!
//! Blobs of the sources are copied with [`crate::copy::plan`] and
//! [`crate::copy::write_layout`] (verified, atomic, under the writer lock);
//! the new index goes through the same writer as a built document. Two
//! entries of one platform are refused unless `force`, and so is an index
//! with no entries.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::copy::{self, CopyError, CopyOptions, Plan, PlannedBlob, Root, Source};
use crate::digest::{Algorithm, Digest};
use crate::layout::{Layout, LayoutError};
use crate::platform::PlatformSpec;
use crate::reference::{is_valid_ref_name, Reference};
use crate::resolve::{self, ResolveError};
use crate::rewrite::{Rewrite, RewriteError};
use crate::spec::{self, media_type, Descriptor, Document, Kind, Platform, MAX_DOCUMENT_SIZE};
use crate::store::{Store, StoreError};

/// Why an index edit failed. Nothing in `index.json` changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexEditError {
    /// Reading a source or the layout failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A source or the tag does not resolve.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Writing the layout failed, or its `index.json` is one no writer edits.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Copying the sources' blobs failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// Editing the index document failed.
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
    /// Two entries would have the same platform.
    #[error("{first} and {second} are both {platform}; an index holds one image per platform (--force keeps both)")]
    DuplicatePlatform {
        /// The platform.
        platform: String,
        /// The entry already there (a source, or an entry of the index).
        first: String,
        /// The entry that would join it.
        second: String,
    },
    /// The result would have no entries.
    #[error("{0}; an index needs at least one entry, so nothing was written")]
    Empty(String),
    /// The tag names something other than an index.
    #[error("{tag} names {digest} ({media_type}), not an image index; build one with `ocikit index create`")]
    NotAnIndex {
        /// The tag.
        tag: String,
        /// What it names.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A source is not an image whose platform can be told.
    #[error("{source_name}: {digest} {reason}")]
    NotAnImage {
        /// The source, as given.
        source_name: String,
        /// The manifest or document.
        digest: String,
        /// Why it cannot be an entry.
        reason: String,
    },
    /// `remove` (or `add --platform`) found nothing to act on.
    #[error("{0}")]
    NoMatch(String),
    /// The tag was moved by another writer while the edit was being written.
    #[error("{tag} no longer names {digest} (another writer changed it meanwhile); nothing was changed, run the edit again")]
    Changed {
        /// The tag.
        tag: String,
        /// The index it named when the edit began.
        digest: String,
    },
    /// A document ocikit built is not one a reader accepts (a bug, or an
    /// index over the 4 MiB cap).
    #[error("the new index {0}")]
    Invalid(String),
}

/// One source of entries: a location already opened, and what in it.
#[derive(Clone)]
pub struct IndexSource<'a> {
    /// The source as the user wrote it (for messages).
    pub label: String,
    /// The store.
    pub store: &'a dyn Store,
    /// The image in it (`None`: the one image it holds).
    pub reference: Option<Reference>,
}

/// Options of an index edit.
#[derive(Debug, Clone, Default)]
pub struct IndexOptions {
    /// Allow two entries of the same platform.
    pub force: bool,
    /// Annotations to set on the index (`--annotation K=V`).
    pub annotations: BTreeMap<String, String>,
    /// `add`: take only this platform's manifest of a multi-platform source
    /// (and check a single-platform source is it).
    pub platform: Option<PlatformSpec>,
    /// Caps for every read.
    pub limits: crate::limits::Limits,
    /// How to wait for the layout's lock.
    pub lock_policy: crate::layout::LockPolicy,
    /// Stops the copy at its next write.
    pub cancel: crate::cancel::Cancel,
}

/// Which entries [`remove`] takes out.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Selector {
    /// Entries whose platform matches (containerd's normalisation).
    Platform(PlatformSpec),
    /// Entries with this digest.
    Digest(Digest),
}

/// A descriptor as `--json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EntryReport {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: i64,
    /// `os/arch[/variant]`, `None` for an entry without a platform (and the index itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `os.version`, when the entry has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// `os.features`, when the entry has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    /// The source it came from in this edit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// What an edit did (`--json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct IndexReport {
    /// The tag.
    pub tag: String,
    /// The new index's descriptor.
    pub index: EntryReport,
    /// The index the tag named before (`add`, `rm`; `create` over an existing tag).
    pub previous: Option<String>,
    /// The new index's entries, in order.
    pub entries: Vec<EntryReport>,
    /// Entries taken out (`rm`).
    pub removed: Vec<EntryReport>,
    /// Blobs written (the others were there already).
    pub blobs_written: u64,
    /// Things the user should know (entries of a source left out).
    pub notes: Vec<String>,
    /// Always 1.
    pub schema_version: u32,
}

/// One manifest that becomes an entry.
#[derive(Debug, Clone)]
struct Picked {
    source: usize,
    label: String,
    media_type: String,
    digest: Digest,
    size: u64,
    platform: Platform,
}

impl Picked {
    /// The entry as stored: mediaType, digest, size, platform (spec order).
    fn entry(&self) -> Value {
        let mut m = Map::new();
        m.insert("mediaType".into(), Value::from(self.media_type.clone()));
        m.insert("digest".into(), Value::from(self.digest.to_string()));
        m.insert("size".into(), Value::from(self.size));
        m.insert("platform".into(), platform_json(&self.platform));
        Value::Object(m)
    }
}

fn platform_json(p: &Platform) -> Value {
    let mut m = Map::new();
    m.insert("architecture".into(), Value::from(p.architecture.clone()));
    m.insert("os".into(), Value::from(p.os.clone()));
    if let Some(v) = &p.os_version {
        m.insert("os.version".into(), Value::from(v.clone()));
    }
    if let Some(f) = &p.os_features {
        m.insert("os.features".into(), Value::from(f.clone()));
    }
    if let Some(v) = &p.variant {
        m.insert("variant".into(), Value::from(v.clone()));
    }
    Value::Object(m)
}

/// A platform's identity for the duplicate rule: normalised os/arch/variant,
/// `os.version` and the sorted `os.features`.
type PlatformKey = (PlatformSpec, Option<String>, Vec<String>);

fn key(p: &Platform) -> PlatformKey {
    let mut features = p.os_features.clone().unwrap_or_default();
    features.sort();
    (PlatformSpec::of(p), p.os_version.clone(), features)
}

/// `linux/arm64/v8`, with `os.version` and `os.features` when set.
fn label(p: &Platform) -> String {
    let mut s = p.to_string();
    if let Some(v) = &p.os_version {
        s.push_str(&format!(" (os.version {v})"));
    }
    if let Some(f) = p.os_features.as_ref().filter(|f| !f.is_empty()) {
        s.push_str(&format!(" (os.features {})", f.join(",")));
    }
    s
}

fn entry_report(d: &Descriptor, source: Option<String>) -> EntryReport {
    EntryReport {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        platform: d.platform.as_ref().map(ToString::to_string),
        os_version: d.platform.as_ref().and_then(|p| p.os_version.clone()),
        os_features: d.platform.as_ref().and_then(|p| p.os_features.clone()),
        source,
    }
}

fn check_tag(tag: &str) -> Result<(), IndexEditError> {
    if !is_valid_ref_name(tag) {
        return Err(LayoutError::InvalidTag(tag.to_string()).into());
    }
    if Digest::parse(tag).is_ok() {
        return Err(LayoutError::DigestTag(tag.to_string()).into());
    }
    Ok(())
}

fn not_an_image(src: &IndexSource<'_>, digest: &str, reason: impl Into<String>) -> IndexEditError {
    IndexEditError::NotAnImage {
        source_name: src.label.clone(),
        digest: digest.to_string(),
        reason: reason.into(),
    }
}

/// The entry a manifest makes: its descriptor and its config's platform.
fn manifest_entry(
    i: usize,
    src: &IndexSource<'_>,
    node: &resolve::Node,
) -> Result<Picked, IndexEditError> {
    let digest = node.digest.to_string();
    let manifest = match spec::parse_document(&node.bytes, Kind::Manifest) {
        Ok(Document::Manifest(m)) => m,
        Ok(Document::Index(_)) => return Err(not_an_image(src, &digest, "is not a manifest")),
        Err(e) => {
            return Err(not_an_image(
                src,
                &digest,
                format!("is not a valid manifest: {e}"),
            ))
        }
    };
    let Some(config) = manifest
        .config
        .as_ref()
        .filter(|c| c.kind() == Kind::ImageConfig)
    else {
        return Err(not_an_image(
            src,
            &digest,
            "has no image config, so its platform cannot be told",
        ));
    };
    let cfg = resolve::load_node(src.store, config, "config")?;
    spec::check_json(&cfg.bytes)
        .map_err(|e| not_an_image(src, &config.digest, format!("(config) {e}")))?;
    let v: Map<String, Value> = serde_json::from_slice(&cfg.bytes).map_err(|e| {
        not_an_image(
            src,
            &config.digest,
            format!("(config) is not a JSON object: {e}"),
        )
    })?;
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (Some(os), Some(architecture)) = (text("os"), text("architecture")) else {
        return Err(not_an_image(
            src,
            &digest,
            format!(
                "has a config ({}) without os and architecture, so its platform cannot be told",
                config.digest
            ),
        ));
    };
    let os_features = match v.get("os.features") {
        Some(Value::Array(a)) if !a.is_empty() => Some(
            a.iter()
                .map(|f| f.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    not_an_image(
                        src,
                        &config.digest,
                        "(config) has os.features that are not strings",
                    )
                })?,
        ),
        _ => None,
    };
    let media_type = match node.descriptor.media_type.as_str() {
        "" => manifest
            .media_type
            .clone()
            .unwrap_or_else(|| media_type::OCI_MANIFEST.to_string()),
        m => m.to_string(),
    };
    Ok(Picked {
        source: i,
        label: src.label.clone(),
        media_type,
        digest: node.digest.clone(),
        size: node.bytes.len() as u64,
        platform: Platform {
            architecture,
            os,
            os_version: text("os.version"),
            os_features,
            variant: text("variant"),
            ..Platform::default()
        },
    })
}

/// The manifests a source contributes: its manifest, or every image
/// manifest of its index (only `only`'s, when given).
fn pick(
    i: usize,
    src: &IndexSource<'_>,
    only: Option<&PlatformSpec>,
    notes: &mut Vec<String>,
) -> Result<Vec<Picked>, IndexEditError> {
    let desc = resolve::find_descriptor(src.store, src.reference.as_ref())?;
    let node = resolve::load_node(src.store, &desc, "manifest")?;
    match resolve::node_kind(&node) {
        Kind::Manifest => {
            let p = manifest_entry(i, src, &node)?;
            if let Some(want) = only {
                if !want.matches(&p.platform) {
                    return Err(IndexEditError::NoMatch(format!(
                        "{} is {}, not {want}",
                        src.label,
                        label(&p.platform)
                    )));
                }
            }
            Ok(vec![p])
        }
        Kind::Index => {
            let Ok(Document::Index(idx)) = spec::parse_document(&node.bytes, Kind::Index) else {
                return Err(not_an_image(
                    src,
                    &node.digest.to_string(),
                    "is not a valid index",
                ));
            };
            let mut out = Vec::new();
            let mut available = Vec::new();
            for e in idx.entries() {
                if !resolve::is_candidate(e) {
                    notes.push(format!(
                        "{}: left out {} (not an image: an attestation or unknown/unknown entry)",
                        src.label, e.digest
                    ));
                    continue;
                }
                let child = resolve::load_node(src.store, e, "manifest")?;
                if resolve::node_kind(&child) != Kind::Manifest {
                    return Err(not_an_image(
                        src,
                        &e.digest,
                        "is a nested index; name one of its manifests instead",
                    ));
                }
                let p = manifest_entry(i, src, &child)?;
                available.push(label(&p.platform));
                if only.is_some_and(|want| !want.matches(&p.platform)) {
                    continue;
                }
                out.push(p);
            }
            if out.is_empty() {
                return Err(match only {
                    Some(want) => IndexEditError::NoMatch(format!(
                        "{} has no {want} image (it has: {})",
                        src.label,
                        if available.is_empty() {
                            "none".to_string()
                        } else {
                            available.join(", ")
                        }
                    )),
                    None => {
                        IndexEditError::Empty(format!("{} holds no image manifests", src.label))
                    }
                });
            }
            Ok(out)
        }
        _ => Err(not_an_image(
            src,
            &node.digest.to_string(),
            format!("is a {}, not an image", node.descriptor.media_type),
        )),
    }
}

/// Refuses a second entry of one platform (unless `force`).
fn check_duplicates(
    existing: &[(PlatformKey, String)],
    new: &[Picked],
    force: bool,
) -> Result<(), IndexEditError> {
    if force {
        return Ok(());
    }
    let mut seen: Vec<(PlatformKey, String)> = existing.to_vec();
    for p in new {
        let k = key(&p.platform);
        if let Some((_, first)) = seen.iter().find(|(s, _)| *s == k) {
            return Err(IndexEditError::DuplicatePlatform {
                platform: label(&p.platform),
                first: first.clone(),
                second: format!("{} ({})", p.label, p.digest),
            });
        }
        seen.push((k, format!("{} ({})", p.label, p.digest)));
    }
    Ok(())
}

fn check_document(bytes: &[u8]) -> Result<(), IndexEditError> {
    if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(IndexEditError::Invalid(format!(
            "would be {} bytes, over the {MAX_DOCUMENT_SIZE}-byte cap every reader accepts",
            bytes.len()
        )));
    }
    match spec::parse_document(bytes, Kind::Index) {
        Ok(Document::Index(i)) if !i.entries().is_empty() => Ok(()),
        Ok(Document::Index(_)) => Err(IndexEditError::Invalid("has no entries".into())),
        Ok(Document::Manifest(_)) => Err(IndexEditError::Invalid("parses as a manifest".into())),
        Err(e) => Err(IndexEditError::Invalid(format!("is not valid: {e}"))),
    }
}

/// Copies the picked manifests (and what they reference) and the new index
/// document into the layout at `target` (created if absent); with `tag`,
/// tags the index there as `ocikit tag` would, under the same lock.
fn write(
    target: &Path,
    sources: &[IndexSource<'_>],
    picked: &[Picked],
    index: &Descriptor,
    bytes: Arc<[u8]>,
    tag: Option<&str>,
    options: &IndexOptions,
) -> Result<copy::CopyReport, IndexEditError> {
    let copy_sources: Vec<Source<'_>> = picked
        .iter()
        .map(|p| Source {
            store: sources[p.source].store,
            reference: Some(Reference::Digest(p.digest.clone())),
        })
        .collect();
    let copy_options = CopyOptions {
        limits: options.limits,
        lock_policy: options.lock_policy,
        cancel: options.cancel.clone(),
        ..CopyOptions::default()
    };
    let mut plan = if copy_sources.is_empty() {
        Plan {
            limits: options.limits,
            lock_policy: options.lock_policy,
            cancel: options.cancel.clone(),
            ..Plan::default()
        }
    } else {
        copy::plan(&copy_sources, &copy_options)?
    };
    // The manifests become entries of the new index, not index.json roots.
    plan.roots.clear();
    let digest = Digest::parse(&index.digest)
        .map_err(|e| IndexEditError::Invalid(format!("has a bad digest: {e}")))?;
    if !plan.blobs.iter().any(|b| b.digest == digest) {
        plan.blobs.push(PlannedBlob {
            digest: digest.clone(),
            size: bytes.len() as u64,
            media_type: index.media_type.clone(),
            source: None,
            document: true,
        });
        plan.bytes = plan.bytes.saturating_add(bytes.len() as u64);
    }
    plan.built.insert(digest, bytes);
    if let Some(t) = tag {
        plan.roots.push(Root {
            descriptor: index.clone(),
            tag: Some(t.to_string()),
            name: resolve::docker_name_of(t),
        });
    }
    copy::check_unverified_layers(&copy_sources, &plan)?;
    Ok(copy::write_layout(&copy_sources, &plan, target, &())?)
}

/// Builds an index from `sources` (each contributes its manifest, or every
/// image manifest of its index), writes it and the sources' blobs into the
/// layout at `target` (created if absent) and tags it `tag` (moving the tag
/// as `ocikit tag` does).
///
/// # Errors
/// See [`IndexEditError`]; on an error `index.json` is unchanged.
pub fn create(
    target: &Path,
    tag: &str,
    sources: &[IndexSource<'_>],
    options: &IndexOptions,
) -> Result<IndexReport, IndexEditError> {
    check_tag(tag)?;
    // An index.json no writer edits is refused before anything is read.
    let previous = match Layout::open(target) {
        Ok(l) => {
            l.check_index_json()?;
            resolve::find_descriptor(l.store(), Some(&Reference::Tag(tag.to_string())))
                .ok()
                .map(|d| d.digest)
        }
        Err(_) => None,
    };
    let mut notes = Vec::new();
    let mut picked = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        picked.extend(pick(i, src, None, &mut notes)?);
    }
    if picked.is_empty() {
        return Err(IndexEditError::Empty("the sources hold no images".into()));
    }
    check_duplicates(&[], &picked, options.force)?;
    let mut doc = Map::new();
    doc.insert("schemaVersion".into(), Value::from(2));
    doc.insert("mediaType".into(), Value::from(media_type::OCI_INDEX));
    doc.insert(
        "manifests".into(),
        Value::Array(picked.iter().map(Picked::entry).collect()),
    );
    if !options.annotations.is_empty() {
        let ann: Map<String, Value> = options
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        doc.insert("annotations".into(), Value::Object(ann));
    }
    let bytes: Arc<[u8]> = Value::Object(doc).to_string().into_bytes().into();
    check_document(&bytes)?;
    let digest = Digest::of_bytes(Algorithm::Sha256, &bytes);
    let index = crate::docker::descriptor(media_type::OCI_INDEX, &digest, bytes.len() as u64);
    let copied = write(target, sources, &picked, &index, bytes, Some(tag), options)?;
    Ok(IndexReport {
        tag: tag.to_string(),
        index: entry_report(&index, None),
        previous: previous.filter(|p| *p != index.digest),
        entries: picked
            .iter()
            .map(|p| {
                let mut d = crate::docker::descriptor(&p.media_type, &p.digest, p.size);
                d.platform = Some(p.platform.clone());
                entry_report(&d, Some(p.label.clone()))
            })
            .collect(),
        removed: Vec::new(),
        blobs_written: copied.blobs_written,
        notes,
        schema_version: 1,
    })
}

/// The index `tag` names in `layout`: its descriptor, bytes and parsed form.
fn tagged_index(
    layout: &Layout,
    tag: &str,
) -> Result<(Descriptor, resolve::Node, spec::ImageIndex), IndexEditError> {
    layout.check_index_json()?;
    let desc = resolve::find_descriptor(layout.store(), Some(&Reference::Tag(tag.to_string())))?;
    let node = resolve::load_node(layout.store(), &desc, "index")?;
    let not_index = || IndexEditError::NotAnIndex {
        tag: tag.to_string(),
        digest: desc.digest.clone(),
        media_type: desc.media_type.clone(),
    };
    if resolve::node_kind(&node) != Kind::Index {
        return Err(not_index());
    }
    let Ok(Document::Index(idx)) = spec::parse_document(&node.bytes, Kind::Index) else {
        return Err(not_index());
    };
    Ok((desc, node, idx))
}

/// Edits the tagged index through the rewriter, writes the new document
/// (and the picked manifests' blobs) and points the tag's entry at it.
fn edit_and_write(
    layout: &Layout,
    tag: &str,
    (desc, node): (&Descriptor, &resolve::Node),
    sources: &[IndexSource<'_>],
    picked: &[Picked],
    options: &IndexOptions,
    edit: impl FnOnce(&mut Map<String, Value>),
) -> Result<(Descriptor, Arc<[u8]>, u64), IndexEditError> {
    let media = match desc.media_type.as_str() {
        "" => media_type::OCI_INDEX,
        m => m,
    };
    let mut rw = Rewrite::new();
    let id = rw.add(&node.digest, media, node.bytes.clone());
    rw.edit(id, |obj| {
        edit(obj);
        if !options.annotations.is_empty() {
            let ann = obj
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if !ann.is_object() {
                *ann = Value::Object(Map::new());
            }
            if let Value::Object(m) = ann {
                for (k, v) in &options.annotations {
                    m.insert(k.clone(), Value::from(v.clone()));
                }
            }
        }
    })?;
    let Some(new) = rw.finish()?.into_iter().find(|r| r.old == node.digest) else {
        // Nothing changed: the index stays as it is.
        return Ok((desc.clone(), node.bytes.clone().into(), 0));
    };
    check_document(&new.bytes)?;
    let mut index = crate::docker::descriptor(media, &new.new, new.bytes.len() as u64);
    index.annotations = None;
    let copied = write(
        layout.root(),
        sources,
        picked,
        &index,
        new.bytes.clone(),
        None,
        options,
    )?;
    if !layout.retarget(tag, &node.digest.to_string(), &index)? {
        return Err(IndexEditError::Changed {
            tag: tag.to_string(),
            digest: node.digest.to_string(),
        });
    }
    Ok((index, new.bytes, copied.blobs_written))
}

fn report(
    tag: &str,
    (index, bytes): (&Descriptor, &[u8]),
    previous: &Digest,
    added: &[Picked],
    removed: Vec<EntryReport>,
    blobs_written: u64,
    notes: Vec<String>,
) -> IndexReport {
    let entries = match spec::parse_document(bytes, Kind::Index) {
        Ok(Document::Index(i)) => i
            .entries()
            .iter()
            .enumerate()
            .map(|(n, d)| {
                // The added entries are the last ones.
                let first_added = i.entries().len().saturating_sub(added.len());
                let source = (n >= first_added)
                    .then(|| added.get(n - first_added).map(|p| p.label.clone()))
                    .flatten();
                entry_report(d, source)
            })
            .collect(),
        _ => Vec::new(),
    };
    IndexReport {
        tag: tag.to_string(),
        index: entry_report(index, None),
        previous: (previous.to_string() != index.digest).then(|| previous.to_string()),
        entries,
        removed,
        blobs_written,
        notes,
        schema_version: 1,
    }
}

/// Adds `source`'s manifest (every image manifest of a multi-platform
/// source, or only `options.platform`'s) to the index `tag` names, as a new
/// index document the tag's entry then points at.
///
/// # Errors
/// See [`IndexEditError`]; on an error `index.json` is unchanged.
pub fn add(
    layout: &Layout,
    tag: &str,
    source: &IndexSource<'_>,
    options: &IndexOptions,
) -> Result<IndexReport, IndexEditError> {
    let (desc, node, idx) = tagged_index(layout, tag)?;
    let mut notes = Vec::new();
    let picked = pick(0, source, options.platform.as_ref(), &mut notes)?;
    let existing: Vec<(PlatformKey, String)> = idx
        .entries()
        .iter()
        .enumerate()
        .filter_map(|(n, d)| {
            let p = d.platform.as_ref()?;
            Some((key(p), format!("entry {n} of {tag} ({})", d.digest)))
        })
        .collect();
    check_duplicates(&existing, &picked, options.force)?;
    let sources = std::slice::from_ref(source);
    let entries: Vec<Value> = picked.iter().map(Picked::entry).collect();
    let (index, bytes, written) = edit_and_write(
        layout,
        tag,
        (&desc, &node),
        sources,
        &picked,
        options,
        |obj| {
            let list = obj
                .entry("manifests")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = list {
                a.extend(entries);
            }
        },
    )?;
    Ok(report(
        tag,
        (&index, &bytes),
        &node.digest,
        &picked,
        Vec::new(),
        written,
        notes,
    ))
}

/// Removes the entries `selector` matches from the index `tag` names, as a
/// new index document the tag's entry then points at.
///
/// # Errors
/// [`IndexEditError::NoMatch`] when nothing matches, [`IndexEditError::Empty`]
/// when no entry would be left; otherwise see [`IndexEditError`].
pub fn remove(
    layout: &Layout,
    tag: &str,
    selector: &Selector,
    options: &IndexOptions,
) -> Result<IndexReport, IndexEditError> {
    let (desc, node, idx) = tagged_index(layout, tag)?;
    let matches = |d: &Descriptor| match selector {
        Selector::Platform(p) => d.platform.as_ref().is_some_and(|dp| p.matches(dp)),
        Selector::Digest(g) => d.digest == g.to_string(),
    };
    let remove: Vec<bool> = idx.entries().iter().map(matches).collect();
    let what = match selector {
        Selector::Platform(p) => p.to_string(),
        Selector::Digest(d) => d.to_string(),
    };
    if !remove.contains(&true) {
        return Err(IndexEditError::NoMatch(format!(
            "no entry of {tag} ({}) is {what}; it has: {}",
            node.digest,
            idx.entries()
                .iter()
                .map(|d| format!(
                    "{} {}",
                    d.platform
                        .as_ref()
                        .map(label)
                        .unwrap_or_else(|| "(no platform)".into()),
                    d.digest
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if remove.iter().all(|r| *r) {
        return Err(IndexEditError::Empty(format!(
            "removing {what} would leave {tag} with no entries"
        )));
    }
    let removed: Vec<EntryReport> = idx
        .entries()
        .iter()
        .zip(&remove)
        .filter(|(_, r)| **r)
        .map(|(d, _)| entry_report(d, None))
        .collect();
    let keep = remove.clone();
    let (index, bytes, written) =
        edit_and_write(layout, tag, (&desc, &node), &[], &[], options, move |obj| {
            if let Some(Value::Array(a)) = obj.get_mut("manifests") {
                let all = std::mem::take(a);
                *a = all
                    .into_iter()
                    .zip(keep)
                    .filter(|(_, r)| !*r)
                    .map(|(v, _)| v)
                    .collect();
            }
        })?;
    Ok(report(
        tag,
        (&index, &bytes),
        &node.digest,
        &[],
        removed,
        written,
        Vec::new(),
    ))
}
