//! OCI 1.1 referrers: listing the manifests whose `subject` is an image
//! (signatures, SBOMs, and their own referrers), and attaching a new artifact
//! to one (`ocikit referrers`, `ocikit attach`).
//!
//! A layout has no referrers API: referrers are found by the one scan of
//! stored blobs, [`crate::graph`]'s `find_referrers`. An attached artifact is
//! not listed in `index.json`; the graph walk keeps referrers of reachable
//! manifests, so gc keeps it and copy carries it (unless `--no-referrers`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use crate::digest::Digest;
use crate::graph::{find_referrers, Referrer, EMPTY_DIGEST};
use crate::layout::{Layout, LayoutError};
use crate::platform::PlatformSpec;
use crate::reference::Reference;
use crate::resolve::{self, PlatformChoice, ResolveError, MAX_NESTING};
use crate::spec::{self, media_type, Descriptor, Document, Kind, MAX_DOCUMENT_SIZE};
use crate::store::{Store, StoreError};

/// The annotation holding a layer's file name.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// Why listing referrers or attaching failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferrersError {
    /// The reference does not resolve, or a document is damaged.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The layout refused (invalid `index.json`, lock, write errors).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A file to attach cannot be used.
    #[error("{}: {reason}", .path.display())]
    File {
        /// The file as given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An argument that cannot make a valid artifact.
    #[error("{0}")]
    Invalid(String),
}

// ---------------------------------------------------------------- listing

/// Options of [`referrers`].
#[derive(Debug, Clone, Default)]
pub struct ReferrersOptions {
    /// Keep only referrers of this artifact type, at every depth (a referrer
    /// of another type is left out with its own referrers).
    pub artifact_type: Option<String>,
    /// For an index REF: only this platform's manifest.
    pub platform: Option<PlatformSpec>,
}

/// `ocikit referrers --json`: REF's manifests and what refers to them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrersReport {
    /// Always [`crate::report::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The documents whose referrers were looked for: REF's manifest; for
    /// an index, the index and then each manifest of it (or, with a
    /// platform, that platform's manifest).
    pub subjects: Vec<Subject>,
}

impl ReferrersReport {
    /// Whether no referrer was found.
    pub fn is_empty(&self) -> bool {
        self.subjects.iter().all(|s| s.referrers.is_empty())
    }
}

/// One document whose referrers were looked for.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// Its digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: i64,
    /// Its platform, for a manifest of an index.
    pub platform: Option<String>,
    /// The manifests whose `subject` it is.
    pub referrers: Vec<ReferrerNode>,
}

/// One referrer, with its own referrers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerNode {
    /// Its digest.
    pub digest: String,
    /// Its media type (image manifest or index).
    pub media_type: String,
    /// Its `artifactType`, else its config's media type (OCI 1.1); `None`
    /// for an index without `artifactType`.
    pub artifact_type: Option<String>,
    /// Its size.
    pub size: i64,
    /// Its annotations (empty when it has none).
    pub annotations: BTreeMap<String, String>,
    /// Its layers (a manifest's; none for an index).
    pub layers: Vec<ReferrerLayer>,
    /// For a referrer of a referrer: the referrer it refers to.
    pub parent: Option<String>,
    /// The manifests whose `subject` it is.
    pub referrers: Vec<ReferrerNode>,
}

/// Lists the referrers of what `reference` names, recursively.
///
/// # Errors
/// An unresolvable reference, a platform the index lacks, or a damaged
/// subject document. Referrers that cannot be read are left out (as the
/// scan leaves out what is not a manifest).
pub fn referrers(
    store: &dyn Store,
    reference: Option<&Reference>,
    options: &ReferrersOptions,
) -> Result<ReferrersReport, ReferrersError> {
    let root = resolve::find_descriptor(store, reference)?;
    let mut subjects = Vec::new();
    match &options.platform {
        Some(p) => {
            let image =
                resolve::image_of_descriptor(store, &root, &PlatformChoice::Specific(p.clone()))?;
            let d = &image.manifest.descriptor;
            subjects.push((d.clone(), image.platform.as_ref().map(ToString::to_string)));
        }
        None => collect_subjects(store, &root, None, 0, &mut subjects)?,
    }
    let found = find_referrers(store, |_| false);
    let mut by_subject: HashMap<Digest, Vec<&Referrer>> = HashMap::new();
    for r in &found {
        by_subject.entry(r.subject.clone()).or_default().push(r);
    }
    let lister = Lister {
        store,
        by_subject,
        artifact_type: options.artifact_type.as_deref(),
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (d, platform) in subjects {
        let digest = resolve::descriptor_digest(&d, "the subject")?;
        if !seen.insert(digest.clone()) {
            continue;
        }
        let mut path = BTreeSet::new();
        path.insert(digest.clone());
        out.push(Subject {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            size: d.size,
            platform,
            referrers: lister.children(&digest, None, &mut path),
        });
    }
    Ok(ReferrersReport {
        schema_version: crate::report::SCHEMA_VERSION,
        subjects: out,
    })
}

/// REF's document, and for an index every entry below it (nested indexes
/// too), each once.
fn collect_subjects(
    store: &dyn Store,
    desc: &Descriptor,
    platform: Option<String>,
    depth: usize,
    out: &mut Vec<(Descriptor, Option<String>)>,
) -> Result<(), ReferrersError> {
    if depth > MAX_NESTING {
        return Err(
            ResolveError::TooDeep(resolve::descriptor_digest(desc, "an index entry")?).into(),
        );
    }
    out.push((desc.clone(), platform));
    let node = resolve::load_node(store, desc, "manifest")?;
    if resolve::node_kind(&node) != Kind::Index {
        return Ok(());
    }
    let index = match spec::parse_document(&node.bytes, Kind::Index) {
        Ok(Document::Index(i)) => i,
        Ok(Document::Manifest(_)) => return Ok(()),
        Err(source) => {
            return Err(ResolveError::Document {
                what: "index",
                digest: node.digest,
                source,
            }
            .into())
        }
    };
    for e in index.entries() {
        let p = e.platform.as_ref().map(ToString::to_string);
        collect_subjects(store, e, p, depth + 1, out)?;
    }
    Ok(())
}

struct Lister<'a> {
    store: &'a dyn Store,
    by_subject: HashMap<Digest, Vec<&'a Referrer>>,
    artifact_type: Option<&'a str>,
}

impl Lister<'_> {
    /// The referrers of `subject`, sorted by artifact type then digest.
    /// `path` holds the digests above, so that no chain repeats.
    fn children(
        &self,
        subject: &Digest,
        parent: Option<&Digest>,
        path: &mut BTreeSet<Digest>,
    ) -> Vec<ReferrerNode> {
        if path.len() > MAX_NESTING {
            return Vec::new();
        }
        let mut out = Vec::new();
        for r in self
            .by_subject
            .get(subject)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            if path.contains(&r.digest) {
                continue;
            }
            let Some(mut node) = self.node(r) else {
                continue;
            };
            if self
                .artifact_type
                .is_some_and(|want| node.artifact_type.as_deref() != Some(want))
            {
                continue;
            }
            node.parent = parent.map(ToString::to_string);
            path.insert(r.digest.clone());
            node.referrers = self.children(&r.digest, Some(&r.digest), path);
            path.remove(&r.digest);
            out.push(node);
        }
        out.sort_by(|a, b| (&a.artifact_type, &a.digest).cmp(&(&b.artifact_type, &b.digest)));
        out
    }

    /// A referrer's summary, read from its verified bytes.
    fn node(&self, r: &Referrer) -> Option<ReferrerNode> {
        let bytes = self
            .store
            .read_verified(&r.digest, r.descriptor.size, MAX_DOCUMENT_SIZE)
            .ok()?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let kind = spec::sniff_kind(&value);
        let (artifact_type, annotations, layers) =
            match spec::document_from_value(value, kind).ok()? {
                Document::Manifest(m) => (
                    m.artifact_type
                        .or_else(|| m.config.map(|c| c.media_type))
                        .filter(|t| !t.is_empty()),
                    m.annotations,
                    m.layers
                        .unwrap_or_default()
                        .into_iter()
                        .map(|l| ReferrerLayer {
                            title: l.annotation(ANNOTATION_TITLE).map(str::to_string),
                            digest: l.digest,
                            media_type: l.media_type,
                            size: l.size,
                        })
                        .collect(),
                ),
                Document::Index(i) => (i.artifact_type, i.annotations, Vec::new()),
            };
        Some(ReferrerNode {
            digest: r.digest.to_string(),
            media_type: r.descriptor.media_type.clone(),
            artifact_type,
            size: r.descriptor.size,
            annotations: annotations.unwrap_or_default(),
            layers,
            parent: None,
            referrers: Vec::new(),
        })
    }
}

/// One layer of a referrer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerLayer {
    /// Its digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: i64,
    /// Its `org.opencontainers.image.title` (the file name), if any.
    pub title: Option<String>,
}

// ---------------------------------------------------------------- attach

/// Options of [`attach`].
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// The artifact's `artifactType` (required).
    pub artifact_type: String,
    /// One layer per file, in order; each titled with its base name.
    pub files: Vec<PathBuf>,
    /// The layers' media type (default `application/octet-stream`).
    pub media_type: Option<String>,
    /// The manifest's annotations. Nothing is added: no
    /// `org.opencontainers.image.created` unless given here, so the same
    /// inputs give the same digest.
    pub annotations: BTreeMap<String, String>,
}

/// What [`attach`] wrote (`attach --json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachReport {
    /// The artifact manifest's descriptor (with its `artifactType`).
    pub manifest: Descriptor,
    /// Its subject.
    pub subject: Descriptor,
    /// Its layers, one per file.
    pub layers: Vec<Descriptor>,
}

/// The default layer media type of an attached file.
pub const DEFAULT_LAYER_TYPE: &str = "application/octet-stream";

/// The artifact manifest, fields in a fixed order (the digest depends only
/// on the inputs).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    artifact_type: &'a str,
    config: Descriptor,
    layers: &'a [Descriptor],
    subject: &'a Descriptor,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

/// A media type as RFC 6838 shapes it: `type/subtype`, printable, no spaces.
fn check_media_type(what: &str, t: &str) -> Result<(), ReferrersError> {
    let ok = t
        .split_once('/')
        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'))
        && t.len() <= 255
        && t.bytes().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ReferrersError::Invalid(format!(
            "{what} {t:?} is not a media type (type/subtype, no spaces)"
        )))
    }
}

/// A file to attach, opened and checked before anything is written.
struct Input {
    path: PathBuf,
    title: String,
    file: File,
}

fn open_inputs(files: &[PathBuf]) -> Result<Vec<Input>, ReferrersError> {
    if files.is_empty() {
        return Err(ReferrersError::Invalid(
            "attach needs at least one FILE".into(),
        ));
    }
    let mut titles = BTreeSet::new();
    let mut out = Vec::new();
    for path in files {
        let err = |reason: String| ReferrersError::File {
            path: path.clone(),
            reason,
        };
        let file = File::open(path).map_err(|e| err(e.to_string()))?;
        let meta = file.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err("is not a regular file".into()));
        }
        let title = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| err("has no base name in UTF-8 to use as its title".into()))?
            .to_string();
        if !titles.insert(title.clone()) {
            return Err(err(format!(
                "another FILE has the same base name {title:?}; each layer's title must be unique"
            )));
        }
        out.push(Input {
            path: path.clone(),
            title,
            file,
        });
    }
    Ok(out)
}

/// The subject descriptor of what `reference` names: media type, digest and
/// size of the manifest (or, for an index, of the index itself), read and
/// verified.
fn subject_of(
    store: &dyn Store,
    reference: Option<&Reference>,
) -> Result<Descriptor, ReferrersError> {
    let found = resolve::find_descriptor(store, reference)?;
    let node = resolve::load_node(store, &found, "manifest")?;
    if !matches!(resolve::node_kind(&node), Kind::Manifest | Kind::Index) {
        return Err(ResolveError::NotAnImage {
            digest: node.digest,
            media_type: found.media_type,
        }
        .into());
    }
    Ok(crate::docker::descriptor(
        &found.media_type,
        &node.digest,
        node.bytes.len() as u64,
    ))
}

/// Writes an OCI 1.1 artifact manifest whose `subject` is what `reference`
/// names (an index REF: the index), with one layer per file and the empty
/// config. Nothing is tagged: the artifact is found, kept by gc and carried
/// by copy as a referrer of its subject.
///
/// Everything is checked before the writer lock is taken (the reference, the
/// files, `index.json`), so a refusal changes nothing; then again under the
/// lock, where every blob is written through the verified blob writer.
///
/// # Errors
/// An unresolvable reference, an unreadable or duplicate file, an invalid
/// `index.json` or media type, lock and write errors.
pub fn attach(
    layout: &Layout,
    reference: Option<&Reference>,
    options: &AttachOptions,
) -> Result<AttachReport, ReferrersError> {
    check_media_type("--artifact-type", &options.artifact_type)?;
    let layer_type = options.media_type.as_deref().unwrap_or(DEFAULT_LAYER_TYPE);
    check_media_type("--media-type", layer_type)?;
    if let Some(k) = options.annotations.keys().find(|k| k.is_empty()) {
        return Err(ReferrersError::Invalid(format!(
            "annotation key {k:?} is empty"
        )));
    }
    layout.read_checked_index()?;
    subject_of(layout.store(), reference)?;
    let inputs = open_inputs(&options.files)?;

    let lock = layout.lock()?;
    layout.read_index(&lock)?;
    let subject = subject_of(layout.store(), reference)?;
    let mut layers = Vec::with_capacity(inputs.len());
    for input in inputs {
        let mut w = layout.blob_writer(None)?;
        let mut reader = io::BufReader::with_capacity(crate::limits::IO_BUFFER, &input.file);
        io::copy(&mut reader, &mut w).map_err(|e| ReferrersError::File {
            path: input.path.clone(),
            reason: e.to_string(),
        })?;
        let (digest, size) = w.finish()?;
        let mut d = crate::docker::descriptor(layer_type, &digest, size);
        d.annotations = Some(BTreeMap::from([(
            ANNOTATION_TITLE.to_string(),
            input.title,
        )]));
        layers.push(d);
    }
    let empty = Digest::parse(EMPTY_DIGEST).map_err(|e| ReferrersError::Invalid(e.to_string()))?;
    if layout.store().open_blob(&empty).is_err() {
        let mut w = layout.blob_writer(Some((empty.clone(), 2)))?;
        w.write_all(b"{}").map_err(|e| LayoutError::Io {
            path: layout.root().join(empty.blob_path()),
            source: e,
        })?;
        w.finish()?;
    }
    let mut config = crate::docker::descriptor(media_type::OCI_EMPTY, &empty, 2);
    config.data = Some("e30=".into());
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: media_type::OCI_MANIFEST,
        artifact_type: &options.artifact_type,
        config,
        layers: &layers,
        subject: &subject,
        annotations: &options.annotations,
    };
    let bytes =
        serde_json::to_vec(&manifest).map_err(|e| ReferrersError::Invalid(e.to_string()))?;
    if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(ReferrersError::Invalid(format!(
            "the artifact manifest would be {} bytes, over the {MAX_DOCUMENT_SIZE} bytes readers accept",
            bytes.len()
        )));
    }
    let mut w = layout.blob_writer(None)?;
    w.write_all(&bytes).map_err(|e| LayoutError::Io {
        path: layout.root().join("blobs"),
        source: e,
    })?;
    let (digest, size) = w.finish()?;
    drop(lock);
    let mut desc = crate::docker::descriptor(media_type::OCI_MANIFEST, &digest, size);
    desc.artifact_type = Some(options.artifact_type.clone());
    Ok(AttachReport {
        manifest: desc,
        subject,
        layers,
    })
}
