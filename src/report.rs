//! The documents `ls`, `inspect`, `verify` and `gc` print: built here, and
//! serialised as the `--json` schemas of `docs/json.md` (field order
//! included); the CLI prints its human output from the same values.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::digest::Digest;
use crate::gc::GcReport;
use crate::graph::IssueKind;
use crate::reference::Location;
use crate::resolve::{self, Image, Node, PlatformChoice, ResolveError};
use crate::spec::{self, Descriptor, Document, Kind, ANNOTATION_IMAGE_NAME};
use crate::store::{Store, StoreError};
use crate::verify::{Finding, VerifyReport};

/// The schema version of every document.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Resolving failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A blob ocikit may not read (permission denied).
    #[error("{0}")]
    Denied(String),
    /// The image config is not a valid config.
    #[error("config {digest} {error}")]
    Config {
        /// The config's digest.
        digest: Digest,
        /// What is wrong.
        error: String,
    },
    /// `cat index` of a reference whose bytes are no index.
    #[error(
        "{location} names {digest} ({media_type}), which is not an index; use 'cat … manifest'"
    )]
    NotAnIndex {
        /// The location as given.
        location: String,
        /// The document.
        digest: Digest,
        /// Its descriptor's media type.
        media_type: String,
    },
    /// `cat index` of an index that does not parse.
    #[error("{location} {digest} {reason}")]
    BadIndex {
        /// The location as given.
        location: String,
        /// The document.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// `blob` of a digest whose algorithm ocikit cannot compute.
    #[error("{0} uses an algorithm ocikit cannot verify; refusing to print unverified bytes")]
    Unverifiable(Digest),
    /// `blob` of a blob whose bytes are not its digest's.
    #[error("blob {expected} has the wrong content (it hashes to {actual}); not printed")]
    WrongContent {
        /// The digest asked for.
        expected: Digest,
        /// What the stored bytes hash to.
        actual: Digest,
    },
    /// Reading or writing the bytes failed.
    #[error("{path}: {source}")]
    Io {
        /// The blob's file, for reads; `<stdout>` for writes.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The index `location` names, for `cat index`: judged by its bytes, not its
/// descriptor (a manifest labelled as an index is not an index), and parsed.
///
/// # Errors
/// [`ReportError::NotAnIndex`], [`ReportError::BadIndex`], resolution errors.
pub fn index_document(store: &dyn Store, location: &Location) -> Result<Node, ReportError> {
    let node = resolve::resolve_node(store, location.reference.as_ref())?;
    let own = serde_json::from_slice(&node.bytes)
        .map(|v| spec::sniff_kind(&v))
        .unwrap_or(Kind::Unknown);
    if own != Kind::Index {
        return Err(ReportError::NotAnIndex {
            location: location.display().to_string(),
            digest: node.digest.clone(),
            media_type: node.descriptor.media_type.clone(),
        });
    }
    spec::parse_document(&node.bytes, Kind::Index).map_err(|e| ReportError::BadIndex {
        location: location.display().to_string(),
        digest: node.digest.clone(),
        reason: e.to_string(),
    })?;
    Ok(node)
}

/// Copies blob `digest` to `out` only once its bytes are verified: hashed
/// first, then streamed, so nothing unverified is written and memory stays
/// bounded whatever the blob's size.
///
/// # Errors
/// [`ReportError::Unverifiable`], [`ReportError::WrongContent`], read and
/// write errors.
pub fn copy_verified_blob(
    store: &dyn Store,
    digest: &Digest,
    out: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    if !digest.algorithm().is_verifiable() {
        return Err(ReportError::Unverifiable(digest.clone()));
    }
    let blob = store.open_blob(digest)?;
    let read_err = |source| ReportError::Io {
        path: store.blob_location(digest).display().to_string(),
        source,
    };
    let (actual, _) = blob.hash(digest.algorithm().clone()).map_err(read_err)?;
    if &actual != digest {
        return Err(ReportError::WrongContent {
            expected: digest.clone(),
            actual,
        });
    }
    blob.copy_to(out).map_err(|source| ReportError::Io {
        path: "<stdout>".into(),
        source,
    })?;
    Ok(())
}

/// `ocikit ls --json`: the images of a location.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LsReport {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The store's name.
    pub location: String,
    /// One per listed `index.json` entry.
    pub images: Vec<LsImage>,
    /// With `--blobs`: every blob the location holds, by digest (what a far
    /// side already has, for a delta bundle). Absent without `--blobs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobs: Option<Vec<BlobInfo>>,
    /// With `--blobs`: their [fingerprint](crate::delta::fingerprint), which
    /// a delta bundle made against this side records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobs_fingerprint: Option<Digest>,
}

/// One stored blob in [`LsReport::blobs`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlobInfo {
    /// Its digest (the name it is stored under).
    pub digest: Digest,
    /// Its stored size.
    pub size: u64,
}

/// Every blob `store` holds under a valid digest name, sorted by digest.
/// Files that are not regular or whose names spell no digest are left out
/// (verify reports them).
///
/// # Errors
/// Listing errors.
pub fn blobs(store: &dyn Store) -> Result<Vec<BlobInfo>, ReportError> {
    let mut v: Vec<BlobInfo> = store
        .list_blobs()?
        .into_iter()
        .filter(|b| b.regular)
        .filter_map(|b| {
            b.digest.map(|digest| BlobInfo {
                digest,
                size: b.size,
            })
        })
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// One `index.json` entry in [`LsReport`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LsImage {
    /// Its `org.opencontainers.image.ref.name`.
    pub tag: Option<String>,
    /// Its `io.containerd.image.name`.
    pub name: Option<String>,
    /// The digest as written.
    pub digest: String,
    /// The descriptor's media type.
    pub media_type: String,
    /// The artifact type (descriptor's, else the manifest's).
    pub artifact_type: Option<String>,
    /// Index entries' platforms, or the config's.
    pub platforms: Vec<String>,
    /// The descriptor's size.
    pub size: i64,
    /// All unique blobs of the entry, or `None` if some cannot be read.
    pub total_size: Option<u64>,
    /// The descriptor's annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Lists the images of a store (as `ls`): one [`LsImage`] per listed
/// `index.json` entry, best effort (what is damaged is left out of its
/// platforms and total rather than failing the listing).
///
/// # Errors
/// An unreadable `index.json`, and a blob ocikit may not read.
pub fn ls(store: &dyn Store) -> Result<LsReport, ReportError> {
    let (_, index) = resolve::read_index_json(store)?;
    let images = resolve::listed_entries(store, index.entries())
        .into_iter()
        .map(|d| {
            let s = summarize(store, d)?;
            Ok(LsImage {
                tag: d.ref_name().map(str::to_string),
                name: d.annotation(ANNOTATION_IMAGE_NAME).map(str::to_string),
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                artifact_type: s.artifact_type,
                platforms: s.platforms,
                size: d.size,
                total_size: s.total,
                annotations: d.annotations.clone(),
            })
        })
        .collect::<Result<_, ReportError>>()?;
    Ok(LsReport {
        schema_version: SCHEMA_VERSION,
        location: store.name(),
        images,
        blobs: None,
        blobs_fingerprint: None,
    })
}

struct EntrySummary {
    platforms: Vec<String>,
    total: Option<u64>,
    artifact_type: Option<String>,
}

/// Platforms and total size of one index.json entry: the entry, an index's
/// entries and their manifests, or the manifest, with configs and layers.
/// What is damaged is left out (the total is then unknown); a blob ocikit may
/// not read fails it.
fn summarize(store: &dyn Store, desc: &Descriptor) -> Result<EntrySummary, ReportError> {
    let denied = |r: &Result<Node, ResolveError>| match r {
        Err(ResolveError::Store(e)) if e.is_denied() => Some(ReportError::Denied(e.to_string())),
        _ => None,
    };
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    let mut complete = true;
    let mut platforms = Vec::new();
    let mut artifact_type = desc.artifact_type.clone();
    let mut add = |d: &Descriptor, total: &mut u64| {
        if seen.insert(d.digest.clone()) {
            *total += d.size.max(0) as u64;
        }
    };
    add(desc, &mut total);
    let mut manifests = Vec::new();
    let node = resolve::load_node(store, desc, "manifest");
    if let Some(e) = denied(&node) {
        return Err(e);
    }
    match node {
        Ok(node) => match spec::parse_document(&node.bytes, desc.kind()) {
            Ok(Document::Index(idx)) => {
                for d in idx.entries() {
                    if let Some(p) = &d.platform {
                        if !(p.os == "unknown" && p.architecture == "unknown") {
                            platforms.push(p.to_string());
                        }
                    }
                    add(d, &mut total);
                    if d.kind() == Kind::Manifest {
                        manifests.push((d.clone(), false));
                    }
                }
            }
            Ok(Document::Manifest(m)) => {
                artifact_type = artifact_type.or(m.artifact_type.clone());
                manifests.push((desc.clone(), true));
            }
            Err(_) => complete = false,
        },
        Err(_) => complete = false,
    }
    for (d, want_platform) in manifests {
        let node = resolve::load_node(store, &d, "manifest");
        if let Some(e) = denied(&node) {
            return Err(e);
        }
        let Ok(node) = node else {
            complete = false;
            continue;
        };
        let Ok(Document::Manifest(m)) = spec::parse_document(&node.bytes, Kind::Manifest) else {
            complete = false;
            continue;
        };
        if let Some(c) = &m.config {
            add(c, &mut total);
            if want_platform && c.kind() == Kind::ImageConfig {
                let cn = resolve::load_node(store, c, "config");
                if let Some(e) = denied(&cn) {
                    return Err(e);
                }
                if let Ok(cn) = cn {
                    if let Ok(cfg) = spec::parse_config(&cn.bytes) {
                        if cfg.os.is_some() || cfg.architecture.is_some() {
                            platforms.push(cfg.platform().to_string());
                        }
                    }
                }
            }
        }
        for l in m.layers.as_deref().unwrap_or(&[]) {
            add(l, &mut total);
        }
    }
    Ok(EntrySummary {
        platforms,
        total: complete.then_some(total),
        artifact_type,
    })
}

/// `ocikit inspect --json`: one image.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectReport {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The store's name.
    pub location: String,
    /// The reference as given (digests as `@sha256:…`).
    pub reference: Option<String>,
    /// Indexes passed through, outermost first.
    pub indexes: Vec<IndexSummary>,
    /// From the config, else the index entry.
    pub platform: Option<String>,
    /// The manifest.
    pub manifest: ManifestSummary,
    /// The config, when the manifest has one.
    pub config: Option<ConfigSummary>,
    /// The layers, base first.
    pub layers: Vec<LayerSummary>,
    /// Manifest, config and layers.
    pub total_size: u64,
    /// The image config, when it is one (for the human output).
    #[serde(skip)]
    pub image_config: Option<spec::ImageConfig>,
}

/// An index in [`InspectReport`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexSummary {
    /// Its digest.
    pub digest: Digest,
    /// Its descriptor's media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: usize,
}

/// The manifest in [`InspectReport`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSummary {
    /// Its digest.
    pub digest: Digest,
    /// Its own `mediaType`, else its descriptor's.
    pub media_type: String,
    /// Its size in bytes.
    pub size: usize,
    /// Its `artifactType`.
    pub artifact_type: Option<String>,
    /// Its annotations.
    pub annotations: Option<BTreeMap<String, String>>,
    /// Its subject.
    pub subject: Option<Descriptor>,
    /// Its descriptor's media type (the human output shows this one).
    #[serde(skip)]
    pub descriptor_media_type: String,
}

/// The config in [`InspectReport`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSummary {
    /// Its digest.
    pub digest: Digest,
    /// Its descriptor's media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: usize,
    /// `created`, for an image config.
    pub created: Option<String>,
    /// The runtime config object, as stored.
    pub config: Option<Value>,
    /// The number of history entries.
    pub history_length: Option<usize>,
}

/// A layer in [`InspectReport`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerSummary {
    /// The digest as written.
    pub digest: String,
    /// The media type.
    pub media_type: String,
    /// The descriptor's size.
    pub size: i64,
    /// The config's diff_id at the same position.
    pub diff_id: Option<String>,
}

/// Summarises the image `location` names in `store` (as `inspect`).
///
/// # Errors
/// Resolution errors, and an image config that does not parse.
pub fn inspect(
    store: &dyn Store,
    location: &Location,
    platform: &PlatformChoice,
) -> Result<InspectReport, ReportError> {
    let image = resolve::resolve_image(store, location.reference.as_ref(), platform)?;
    inspect_image(store, location, &image)
}

/// [`inspect`] of an image already resolved.
///
/// # Errors
/// An unreadable config, or one that does not parse.
pub(crate) fn inspect_image(
    store: &dyn Store,
    location: &Location,
    image: &Image,
) -> Result<InspectReport, ReportError> {
    let config = image.config(store)?;
    let cfg = match &config {
        Some(node) if node.descriptor.kind() == Kind::ImageConfig => Some(
            spec::parse_config(&node.bytes).map_err(|e| ReportError::Config {
                digest: node.digest.clone(),
                error: e.to_string(),
            })?,
        ),
        _ => None,
    };
    let layers = image.layers();
    let diff_ids: Vec<String> = cfg
        .as_ref()
        .and_then(|c| c.rootfs.as_ref())
        .and_then(|r| r.diff_ids.clone())
        .unwrap_or_default();
    let total: u64 = layers
        .iter()
        .map(|l| l.size.max(0) as u64)
        .fold(0u64, u64::saturating_add)
        .saturating_add(image.manifest.bytes.len() as u64)
        .saturating_add(config.as_ref().map_or(0, |c| c.bytes.len() as u64));
    let platform = cfg
        .as_ref()
        .map(|c| c.platform().to_string())
        .or_else(|| image.platform.as_ref().map(|p| p.to_string()));
    let m = &image.parsed;
    Ok(InspectReport {
        schema_version: SCHEMA_VERSION,
        location: store.name(),
        reference: location.reference.as_ref().map(|r| r.to_string()),
        indexes: image
            .indexes
            .iter()
            .map(|n| IndexSummary {
                digest: n.digest.clone(),
                media_type: n.descriptor.media_type.clone(),
                size: n.bytes.len(),
            })
            .collect(),
        platform,
        manifest: ManifestSummary {
            digest: image.manifest.digest.clone(),
            media_type: m
                .media_type
                .clone()
                .unwrap_or_else(|| image.manifest.descriptor.media_type.clone()),
            size: image.manifest.bytes.len(),
            artifact_type: m.artifact_type.clone(),
            annotations: m.annotations.clone(),
            subject: m.subject.clone(),
            descriptor_media_type: image.manifest.descriptor.media_type.clone(),
        },
        config: config.as_ref().map(|c| ConfigSummary {
            digest: c.digest.clone(),
            media_type: c.descriptor.media_type.clone(),
            size: c.bytes.len(),
            created: cfg.as_ref().and_then(|x| x.created.clone()),
            config: cfg.as_ref().and_then(|x| x.config.clone()),
            history_length: cfg.as_ref().and_then(|x| x.history.as_ref().map(Vec::len)),
        }),
        layers: layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerSummary {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
                diff_id: diff_ids.get(i).cloned(),
            })
            .collect(),
        total_size: total,
        image_config: cfg,
    })
}

/// `ocikit verify --json`: a [`VerifyReport`] with its verdict, counts and
/// the time taken.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyDocument<'a> {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What was verified.
    pub location: &'a str,
    /// No errors (warnings allowed).
    pub ok: bool,
    /// Whether layers were decompressed and checked.
    pub deep: bool,
    /// Blobs whose digest was computed and compared.
    pub blobs_checked: u64,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Layers decompressed.
    pub layers_decompressed: u64,
    /// Findings that are errors.
    pub errors: usize,
    /// Findings that are warnings.
    pub warnings: usize,
    /// Seconds taken, to the millisecond.
    pub seconds: f64,
    /// Errors first, then by kind, path and digest.
    pub findings: Vec<FindingDocument<'a>>,
}

/// One finding in [`VerifyDocument`].
#[derive(Debug, Clone, Serialize)]
pub struct FindingDocument<'a> {
    /// `"error"` or `"warning"`.
    pub severity: &'static str,
    /// What kind of problem.
    pub kind: IssueKind,
    /// The blob (or the invalid digest string); `null` for layout files.
    pub digest: Option<&'a str>,
    /// Where in the graph.
    pub path: &'a str,
    /// One sentence.
    pub message: &'a str,
}

/// `"warning"` or `"error"`.
pub fn severity(f: &Finding) -> &'static str {
    if f.kind.is_warning() {
        "warning"
    } else {
        "error"
    }
}

impl<'a> VerifyDocument<'a> {
    /// The document of `report`, which took `seconds`.
    pub fn new(report: &'a VerifyReport, seconds: f64) -> Self {
        VerifyDocument {
            schema_version: SCHEMA_VERSION,
            location: &report.location,
            ok: report.is_clean(),
            deep: report.deep,
            blobs_checked: report.blobs_checked,
            bytes_checked: report.bytes_checked,
            layers_decompressed: report.layers_decompressed,
            errors: report.errors().count(),
            warnings: report.warnings().count(),
            seconds: (seconds * 1000.0).round() / 1000.0,
            findings: report
                .findings
                .iter()
                .map(|f| FindingDocument {
                    severity: severity(f),
                    kind: f.kind,
                    digest: f.digest.as_deref(),
                    path: &f.path,
                    message: &f.message,
                })
                .collect(),
        }
    }
}

/// `ocikit gc --json`: a [`GcReport`], then `schemaVersion`.
#[derive(Debug, Clone, Serialize)]
pub struct GcDocument<'a> {
    /// The report's fields.
    #[serde(flatten)]
    pub report: &'a GcReport,
    /// Always [`SCHEMA_VERSION`].
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
}

impl<'a> GcDocument<'a> {
    /// The document of `report`.
    pub fn new(report: &'a GcReport) -> Self {
        GcDocument {
            report,
            schema_version: SCHEMA_VERSION,
        }
    }
}

/// `ocikit prune --json`: a [`PruneReport`](crate::prune::PruneReport), then `schemaVersion`.
#[derive(Debug, Clone, Serialize)]
pub struct PruneDocument<'a> {
    /// The report's fields.
    #[serde(flatten)]
    pub report: &'a crate::prune::PruneReport,
    /// Always [`SCHEMA_VERSION`].
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
}

impl<'a> PruneDocument<'a> {
    /// The document of `report`.
    pub fn new(report: &'a crate::prune::PruneReport) -> Self {
        PruneDocument {
            report,
            schema_version: SCHEMA_VERSION,
        }
    }
}

/// `ocikit copy|import|export --json`: what a copy wrote, or with
/// `--dry-run` would write.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyDocument<'a> {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Nothing was written; the counts say what would be.
    pub dry_run: bool,
    /// The target as given.
    pub target: &'a str,
    /// The images recorded: `TAG DIGEST`, or the digest of an unnamed one.
    pub images: &'a [String],
    /// Blobs written (or to write).
    pub blobs_written: u64,
    /// Blobs the target already held (for a delta export: left out).
    pub blobs_skipped: u64,
    /// Bytes written (or to write).
    pub bytes_written: u64,
    /// A delta bundle written or read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<&'a crate::copy::DeltaReport>,
}

impl<'a> CopyDocument<'a> {
    /// The document of a copy to `target`.
    pub fn new(target: &'a str, report: &'a crate::copy::RunReport) -> Self {
        CopyDocument {
            schema_version: SCHEMA_VERSION,
            dry_run: report.dry_run,
            target,
            images: &report.copy.images,
            blobs_written: report.copy.blobs_written,
            blobs_skipped: report.copy.blobs_skipped,
            bytes_written: report.copy.bytes_written,
            delta: report.delta.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Layout;

    fn demo() -> Layout {
        Layout::open(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/demo")).unwrap()
    }

    #[test]
    fn ls_lists_the_demo_images_in_schema_order() {
        let layout = demo();
        let report = ls(layout.store()).unwrap();
        let tags: Vec<_> = report.images.iter().map(|i| i.tag.as_deref()).collect();
        assert_eq!(tags, [Some("1.0"), Some("legacy")]);
        let v = serde_json::to_value(&report).unwrap();
        let keys: Vec<_> = v["images"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "tag",
                "name",
                "digest",
                "mediaType",
                "artifactType",
                "platforms",
                "size",
                "totalSize",
                "annotations"
            ]
        );
    }

    #[test]
    fn verify_document_counts() {
        let layout = demo();
        let report = crate::verify::verify(layout.store(), &Default::default());
        let doc = VerifyDocument::new(&report, 0.12345);
        assert!(doc.ok);
        assert_eq!(doc.seconds, 0.123);
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            v.as_object().unwrap().keys().next().unwrap(),
            "schemaVersion"
        );
    }
}
