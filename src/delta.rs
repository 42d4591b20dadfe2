//! Delta bundles: an oci-archive that carries only the blobs the far side of
//! an air gap lacks.
//!
//! `export … --delta-from HAVE` reads what the far side holds ([`Have`]: a
//! layout, an archive, or the JSON of `ocikit ls --json --blobs` run there),
//! leaves those blobs out and records HAVE's [fingerprint] in
//! the archive's `index.json` annotations ([`DeltaRecord`]). Importing such
//! an archive reads it over the target layout (an overlay store) and publishes
//! nothing unless every blob its images need is present, the delta's
//! verified as it is written and the layout's hashed first.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::archive::OpenOptions;
use crate::digest::{Algorithm, Digest};
use crate::open::{Notice, OpenError};
use crate::reference::{Location, LocationError, Transport};
use crate::report::BlobInfo;
use crate::spec::ImageIndex;
use crate::store::{Blob, BlobEntry, LayoutStore, Store, StoreError};

/// `index.json` annotation: the fingerprint of what the delta was made
/// against.
pub const ANNOTATION_BASE: &str = "dev.ocikit.delta.base";
/// `index.json` annotation: what the delta was made against, in words.
pub const ANNOTATION_BASE_DESCRIPTION: &str = "dev.ocikit.delta.base.description";
/// `index.json` annotation: how many blobs that side held.
pub const ANNOTATION_BASE_BLOBS: &str = "dev.ocikit.delta.base.blobs";
/// `index.json` annotation: how many blobs the images need that the delta
/// leaves out.
pub const ANNOTATION_OMITTED: &str = "dev.ocikit.delta.omitted";

/// The largest `ls --json --blobs` document read (about 600,000 blobs).
const MAX_HAVE_JSON: u64 = 128 << 20;

/// Why HAVE could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaError {
    /// HAVE is not a valid location string.
    #[error(transparent)]
    Location(#[from] LocationError),
    /// HAVE cannot be opened as a layout or archive.
    #[error("--delta-from {path}: {source}")]
    Open {
        /// HAVE.
        path: PathBuf,
        /// Why.
        source: Box<OpenError>,
    },
    /// HAVE's blobs cannot be listed.
    #[error("--delta-from {path}: {source}")]
    List {
        /// HAVE.
        path: PathBuf,
        /// Why.
        source: Box<crate::report::ReportError>,
    },
    /// HAVE is a JSON file that cannot be read.
    #[error("--delta-from {path}: {source}")]
    Read {
        /// HAVE.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// HAVE is JSON but not the document `ocikit ls --json --blobs` writes.
    #[error("--delta-from {path}: {reason}; write it on the far side with `ocikit ls --json --blobs LAYOUT`")]
    Json {
        /// HAVE.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// What the far side holds: blob digests and sizes, with a fingerprint and a
/// description to record in the delta.
#[derive(Debug, Clone)]
pub struct Have {
    blobs: HashMap<Digest, u64>,
    fingerprint: Digest,
    description: String,
}

/// The fingerprint of a set of blobs: the sha256 of one `DIGEST SIZE` line
/// per blob, sorted by digest. The same blobs give the same fingerprint
/// whichever form (layout, archive, `ls --json --blobs`) they were read from.
pub fn fingerprint(blobs: &[BlobInfo]) -> Digest {
    let mut sorted: Vec<&BlobInfo> = blobs.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut text = String::with_capacity(sorted.len() * 90);
    for b in sorted {
        text.push_str(&format!("{} {}\n", b.digest, b.size));
    }
    Digest::of_bytes(Algorithm::Sha256, text.as_bytes())
}

/// The document `ls --json --blobs` writes, as far as a delta reads it.
#[derive(Deserialize)]
struct LsBlobs {
    #[serde(default)]
    location: Option<String>,
    blobs: Option<Vec<JsonBlob>>,
}

#[derive(Deserialize)]
struct JsonBlob {
    digest: String,
    size: u64,
}

impl Have {
    /// What a list of blobs holds.
    pub fn from_blobs(blobs: Vec<BlobInfo>, description: impl Into<String>) -> Have {
        let fingerprint = fingerprint(&blobs);
        Have {
            blobs: blobs.into_iter().map(|b| (b.digest, b.size)).collect(),
            fingerprint,
            description: description.into(),
        }
    }

    /// Reads HAVE: a layout directory, an archive (with or without a
    /// transport prefix), or a JSON file written by `ls --json --blobs`
    /// (told from an archive by its first non-blank byte, `{`).
    ///
    /// # Errors
    /// See [`DeltaError`].
    pub fn load(
        have: &str,
        options: &OpenOptions,
        notice: &mut dyn FnMut(Notice),
    ) -> Result<Have, DeltaError> {
        let plain = Path::new(have);
        if plain.is_file() && looks_like_json(plain)? {
            return Have::from_json(plain);
        }
        let loc = Location::parse(have)?;
        let store = loc.open(options, notice).map_err(|e| DeltaError::Open {
            path: loc.path.clone(),
            source: Box::new(e),
        })?;
        let blobs = crate::report::blobs(&*store).map_err(|e| DeltaError::List {
            path: loc.path.clone(),
            source: Box::new(e),
        })?;
        let what = match loc.archive_expect() {
            Ok(None) => "layout",
            _ if loc.transport == Transport::Oci => "layout",
            _ => "archive",
        };
        let description = format!("{what} {} ({} blobs)", loc.path.display(), blobs.len());
        Ok(Have::from_blobs(blobs, description))
    }

    fn from_json(path: &Path) -> Result<Have, DeltaError> {
        let bytes =
            crate::store::read_small_file(path, MAX_HAVE_JSON).map_err(|e| DeltaError::Json {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let bad = |reason: String| DeltaError::Json {
            path: path.to_path_buf(),
            reason,
        };
        let doc: LsBlobs = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("not the JSON expected: {e}")))?;
        let Some(list) = doc.blobs else {
            return Err(bad(
                "holds no \"blobs\" list (was it written without --blobs?)".into(),
            ));
        };
        let mut blobs = Vec::with_capacity(list.len());
        for b in list {
            let digest =
                Digest::parse(&b.digest).map_err(|e| bad(format!("blob {:?}: {e}", b.digest)))?;
            blobs.push(BlobInfo {
                digest,
                size: b.size,
            });
        }
        let from = doc.location.map(|l| format!(" of {l}")).unwrap_or_default();
        let description = format!(
            "the blob list {}{from} ({} blobs)",
            path.display(),
            blobs.len()
        );
        Ok(Have::from_blobs(blobs, description))
    }

    /// Whether the far side holds this blob (same digest and size).
    pub fn holds(&self, digest: &Digest, size: u64) -> bool {
        self.blobs.get(digest) == Some(&size)
    }

    /// The fingerprint of what it holds ([`fingerprint`]).
    pub fn fingerprint(&self) -> &Digest {
        &self.fingerprint
    }

    /// What it is, in words (`layout /x (12 blobs)`).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// How many blobs it holds.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether it holds no blob.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// The annotations a delta against it carries in its `index.json`.
    pub(crate) fn annotations(&self, omitted: usize) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ANNOTATION_BASE.to_string(), self.fingerprint.to_string()),
            (
                ANNOTATION_BASE_DESCRIPTION.to_string(),
                self.description.clone(),
            ),
            (ANNOTATION_BASE_BLOBS.to_string(), self.len().to_string()),
            (ANNOTATION_OMITTED.to_string(), omitted.to_string()),
        ])
    }
}

fn looks_like_json(path: &Path) -> Result<bool, DeltaError> {
    let mut head = [0u8; 512];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|source| DeltaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(head[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{'))
}

/// What a delta bundle records about the side it was made against.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaRecord {
    /// The fingerprint of that side's blobs ([`fingerprint`]).
    pub fingerprint: String,
    /// That side, in words.
    pub description: String,
    /// How many blobs the images need that the delta leaves out.
    pub omitted: Option<u64>,
}

impl std::fmt::Display for DeltaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (fingerprint {})", self.description, self.fingerprint)
    }
}

/// The delta record of an `index.json`, if it is a delta bundle's.
pub fn record_of(index: &ImageIndex) -> Option<DeltaRecord> {
    let ann = index.annotations.as_ref()?;
    let fingerprint = ann.get(ANNOTATION_BASE)?.clone();
    Some(DeltaRecord {
        fingerprint,
        description: ann
            .get(ANNOTATION_BASE_DESCRIPTION)
            .cloned()
            .unwrap_or_else(|| "an unnamed side".into()),
        omitted: ann.get(ANNOTATION_OMITTED).and_then(|n| n.parse().ok()),
    })
}

/// The delta record of a store's `index.json`, if it is a delta bundle
/// (a store whose `index.json` cannot be read is not one; its readers report
/// that).
pub fn record_of_store(store: &dyn Store) -> Option<DeltaRecord> {
    let (_, index) = crate::resolve::read_index_json(store).ok()?;
    record_of(&index)
}

/// A delta bundle read over the layout it is imported into: its own
/// `index.json`, and each blob from the delta if it holds it, else from the
/// layout.
pub(crate) struct Overlay {
    delta: Box<dyn Store>,
    base: Option<LayoutStore>,
}

impl Overlay {
    /// The delta over `base` (a layout directory, `None` when there is none
    /// yet).
    pub(crate) fn new(delta: Box<dyn Store>, base: Option<&Path>) -> Overlay {
        Overlay {
            delta,
            base: base.map(LayoutStore::new),
        }
    }

    /// Whether the blob comes from the base layout (the delta lacks it).
    pub(crate) fn served_by_base(&self, digest: &Digest) -> bool {
        matches!(
            self.delta.open_blob(digest),
            Err(StoreError::Missing { .. })
        )
    }
}

impl Store for Overlay {
    fn name(&self) -> String {
        self.delta.name()
    }

    fn index_bytes(&self) -> Result<Vec<u8>, StoreError> {
        self.delta.index_bytes()
    }

    fn open_blob(&self, digest: &Digest) -> Result<Blob, StoreError> {
        match (self.delta.open_blob(digest), &self.base) {
            (Err(StoreError::Missing { .. }), Some(base)) => base.open_blob(digest),
            (r, _) => r,
        }
    }

    fn blob_location(&self, digest: &Digest) -> PathBuf {
        match &self.base {
            Some(base) if self.served_by_base(digest) => base.blob_location(digest),
            _ => self.delta.blob_location(digest),
        }
    }

    fn list_blobs(&self) -> Result<Vec<BlobEntry>, StoreError> {
        self.delta.list_blobs()
    }

    fn diff_id_is_only_check(&self, digest: &Digest) -> bool {
        self.delta.diff_id_is_only_check(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(d: &str, size: u64) -> BlobInfo {
        BlobInfo {
            digest: Digest::of_bytes(Algorithm::Sha256, d.as_bytes()),
            size,
        }
    }

    #[test]
    fn fingerprint_ignores_order_and_repeats_but_not_sizes() {
        let a = fingerprint(&[info("a", 1), info("b", 2)]);
        assert_eq!(a, fingerprint(&[info("b", 2), info("a", 1), info("a", 1)]));
        assert_ne!(a, fingerprint(&[info("a", 1), info("b", 3)]));
        assert_ne!(a, fingerprint(&[info("a", 1)]));
        // The empty set has a fingerprint too: sha256 of nothing.
        assert_eq!(
            fingerprint(&[]).to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn holds_needs_digest_and_size() {
        let h = Have::from_blobs(vec![info("a", 1)], "x");
        assert!(h.holds(&info("a", 1).digest, 1));
        assert!(!h.holds(&info("a", 1).digest, 2));
        assert!(!h.holds(&info("b", 1).digest, 1));
    }
}
