//! Resolving a REF in a store to an index, a manifest and one image.
//!
//! Tags are looked up in `index.json` in this order (semantics R-ANN-3): an exact
//! `org.opencontainers.image.ref.name`; then `io.containerd.image.name` against
//! the docker-normalised name (`busybox` = `docker.io/library/busybox:latest`);
//! then the tag part of a docker reference against `ref.name`. Duplicate names
//! resolve to the first entry (the index's "first match" rule). Digests resolve
//! to an `index.json` entry, a descriptor inside a nested index, or any stored
//! manifest or index.
//!
//! Within an index, one image is chosen by platform, normalised as containerd
//! does. Without `--platform` the host's platform is chosen; if it is absent and
//! the index holds exactly one image, that image is chosen (there is nothing
//! else the user can have meant).

use std::collections::{BTreeSet, HashSet};

use crate::digest::{Digest, DigestError};
use crate::platform::PlatformSpec;
use crate::reference::{normalize_docker_name, Reference};
use crate::spec::{
    self, Descriptor, Document, DocumentError, ImageConfig, ImageIndex, ImageManifest, Kind,
    Platform, MAX_DOCUMENT_SIZE,
};
use crate::store::{Store, StoreError};

/// How deep nested indexes may go before ocikit stops (cycles are impossible
/// with content addressing, but a deep chain is still refused).
pub const MAX_NESTING: usize = 16;

/// Which platform to pick from a multi-platform index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PlatformChoice {
    /// The host's platform (or the only image there is).
    #[default]
    Host,
    /// This platform, exactly (after normalisation).
    Specific(PlatformSpec),
}

/// Why a reference could not be resolved. Each names what was looked for and,
/// where there are choices, lists them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// Reading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `index.json` is malformed.
    #[error("{location}/index.json {source}")]
    IndexJson {
        /// The store.
        location: String,
        /// What is wrong.
        source: DocumentError,
    },
    /// A stored document is malformed.
    #[error("{what} {digest} {source}")]
    Document {
        /// What it was meant to be ("manifest", "index", "config").
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        source: DocumentError,
    },
    /// A descriptor carries an invalid digest.
    #[error("{context} has an invalid digest: {source}")]
    BadDigest {
        /// Where the descriptor is.
        context: String,
        /// The digest problem.
        source: DigestError,
    },
    /// No entry matches the reference.
    #[error("{location} has no image {reference:?}; {}", choices(.available))]
    NotFound {
        /// The store.
        location: String,
        /// What was asked for.
        reference: String,
        /// What exists.
        available: Vec<String>,
    },
    /// Several images and no reference (or a reference matching several).
    #[error("{location} holds several images{}; name one: {}", for_ref(.reference), .choices.join(", "))]
    Ambiguous {
        /// The store.
        location: String,
        /// The reference, if one was given.
        reference: Option<String>,
        /// The candidates.
        choices: Vec<String>,
    },
    /// No image for the requested platform.
    #[error("{what} has no image for platform {wanted}; available: {}", if .available.is_empty() { "none".to_string() } else { .available.join(", ") })]
    NoPlatform {
        /// The index.
        what: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms present.
        available: Vec<String>,
    },
    /// The reference names something that is not an image.
    #[error("{digest} is a {media_type}, not an image manifest or index")]
    NotAnImage {
        /// The blob.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// The store has no images at all.
    #[error("{0} holds no images (index.json lists none)")]
    Empty(String),
    /// Nested indexes deeper than [`MAX_NESTING`].
    #[error("{0}: indexes nested more than {MAX_NESTING} deep")]
    TooDeep(Digest),
}

fn choices(v: &[String]) -> String {
    if v.is_empty() {
        "it holds no images".to_string()
    } else {
        format!("available: {}", v.join(", "))
    }
}

fn for_ref(r: &Option<String>) -> String {
    r.as_ref()
        .map(|r| format!(" matching {r:?}"))
        .unwrap_or_default()
}

/// A loaded and verified JSON document: its descriptor and exact bytes.
#[derive(Debug, Clone)]
pub struct Node {
    /// The descriptor it was reached through.
    pub descriptor: Descriptor,
    /// The validated digest.
    pub digest: Digest,
    /// The exact stored bytes (verified against digest and size).
    pub bytes: Vec<u8>,
}

/// One image, resolved down to its manifest.
#[derive(Debug, Clone)]
pub struct Image {
    /// Indexes passed through, outermost first (empty for a bare manifest).
    pub indexes: Vec<Node>,
    /// The manifest.
    pub manifest: Node,
    /// The parsed manifest.
    pub parsed: ImageManifest,
    /// The platform of the index entry chosen, if chosen from an index.
    pub platform: Option<Platform>,
}

impl Image {
    /// The layer descriptors, base first.
    pub fn layers(&self) -> &[Descriptor] {
        self.parsed.layers.as_deref().unwrap_or(&[])
    }

    /// Loads the config's bytes (verified) when the manifest has a config.
    ///
    /// # Errors
    /// Read or verification errors.
    pub fn config(&self, store: &dyn Store) -> Result<Option<Node>, ResolveError> {
        match &self.parsed.config {
            Some(desc) => load_node(store, desc, "config").map(Some),
            None => Ok(None),
        }
    }

    /// Loads and parses the config when it is an OCI or Docker image config.
    ///
    /// # Errors
    /// Read, verification or parse errors.
    pub(crate) fn image_config(
        &self,
        store: &dyn Store,
    ) -> Result<Option<ImageConfig>, ResolveError> {
        match self.config(store)? {
            Some(node) if node.descriptor.kind() == Kind::ImageConfig => {
                let parsed =
                    spec::parse_config(&node.bytes).map_err(|source| ResolveError::Document {
                        what: "config",
                        digest: node.digest.clone(),
                        source,
                    })?;
                Ok(Some(parsed))
            }
            _ => Ok(None),
        }
    }
}

/// Validates a descriptor's digest, naming `context` on failure.
///
/// # Errors
/// [`ResolveError::BadDigest`].
pub(crate) fn descriptor_digest(desc: &Descriptor, context: &str) -> Result<Digest, ResolveError> {
    desc.digest().map_err(|source| ResolveError::BadDigest {
        context: context.to_string(),
        source,
    })
}

/// Loads a JSON document through its descriptor, verified and size-capped.
///
/// # Errors
/// Read and verification errors.
pub(crate) fn load_node(
    store: &dyn Store,
    desc: &Descriptor,
    what: &str,
) -> Result<Node, ResolveError> {
    let digest = descriptor_digest(desc, &format!("the {what} descriptor"))?;
    let bytes = store.read_verified(&digest, desc.size, MAX_DOCUMENT_SIZE)?;
    Ok(Node {
        descriptor: desc.clone(),
        digest,
        bytes,
    })
}

/// Reads and parses `index.json`.
///
/// # Errors
/// Read errors and malformed JSON.
pub(crate) fn read_index_json(store: &dyn Store) -> Result<(Vec<u8>, ImageIndex), ResolveError> {
    let bytes = store.index_bytes()?;
    let index_err = |source| ResolveError::IndexJson {
        location: store.name(),
        source,
    };
    match spec::parse_document(&bytes, Kind::Index).map_err(index_err)? {
        Document::Index(i) => Ok((bytes, i)),
        Document::Manifest(_) => Err(index_err(DocumentError::Ambiguous(
            "it is a manifest, not an index".into(),
        ))),
    }
}

/// The entries of a store's `index.json`, each image once: an entry
/// repeated with the same digest, `ref.name` and containerd name is one
/// image (what `copy` and `sync` take as "every image").
///
/// # Errors
/// A missing or invalid `index.json`.
pub(crate) fn index_images(store: &dyn Store) -> Result<Vec<Descriptor>, ResolveError> {
    let (_, index) = read_index_json(store)?;
    let mut seen = std::collections::HashSet::new();
    Ok(index
        .entries()
        .iter()
        .filter(|d| {
            seen.insert((
                d.digest.clone(),
                d.ref_name().map(str::to_string),
                d.annotation(crate::spec::ANNOTATION_IMAGE_NAME)
                    .map(str::to_string),
            ))
        })
        .cloned()
        .collect())
}

/// A human label for an `index.json` entry: `tag (sha256:0123…, media type)`.
pub(crate) fn entry_label(d: &Descriptor) -> String {
    let short = d
        .digest()
        .map(|d| d.short())
        .unwrap_or_else(|_| d.digest.clone());
    // Docker-style entries are known by their name (several may share a tag).
    if let Some(name) = d.annotation(spec::ANNOTATION_IMAGE_NAME) {
        return format!("{} ({short})", crate::docker::familiar(name));
    }
    match d.ref_name() {
        Some(t) => format!("{t} ({short})"),
        None => format!("@{}", d.digest),
    }
}

fn labels(entries: &[Descriptor]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    entries
        .iter()
        .map(entry_label)
        .filter(|l| seen.insert(l.clone()))
        .collect()
}

/// The identity of an `index.json` entry: its `io.containerd.image.name`
/// where present, else its `ref.name`. Docker 25 and containerd write several
/// entries with one `ref.name` (the tag part) and different containerd names:
/// those are different images.
pub(crate) fn identity(d: &Descriptor) -> Option<&str> {
    d.annotation(spec::ANNOTATION_IMAGE_NAME)
        .or_else(|| d.ref_name())
}

/// The normalised docker name a user-typed name stands for, if it is written
/// as one (it has a `/` or a `:`, and a tag): `acc/app:1.0` →
/// `docker.io/acc/app:1.0`. A bare `latest` is a tag, not a name.
pub(crate) fn docker_name_of(typed: &str) -> Option<String> {
    if !typed.contains('/') && !typed.contains(':') {
        return None;
    }
    normalize_docker_name(typed).filter(|full| crate::docker::tag_part(full).is_some())
}

/// The entries of `index.json` a tag names (see the module docs for the order):
/// exact `ref.name`; then the normalised docker name against
/// `io.containerd.image.name`; then the tag part of a docker reference against
/// the `ref.name` of entries that have no containerd name (an entry that has
/// one is another image when its name differs). Several entries that share a
/// `ref.name` but have different identities are all returned (the caller
/// lists them); plain duplicates resolve to the first.
pub(crate) fn match_tag<'a>(entries: &'a [Descriptor], tag: &str) -> Vec<&'a Descriptor> {
    let exact: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| d.ref_name() == Some(tag))
        .collect();
    if !exact.is_empty() {
        let full = docker_name_of(tag);
        let own: Vec<&Descriptor> = exact
            .iter()
            .copied()
            .filter(|d| match d.annotation(spec::ANNOTATION_IMAGE_NAME) {
                None => true,
                Some(n) => normalize_docker_name(n) == full && full.is_some(),
            })
            .collect();
        return match own.first() {
            // Plain duplicates of the name itself: the first (the index rule).
            Some(first) => vec![*first],
            None => exact,
        };
    }
    let Some(full) = normalize_docker_name(tag) else {
        return Vec::new();
    };
    let by_name: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| {
            d.annotation(spec::ANNOTATION_IMAGE_NAME)
                .and_then(normalize_docker_name)
                .as_deref()
                == Some(full.as_str())
        })
        .collect();
    if !by_name.is_empty() {
        return by_name;
    }
    // The tag part of a docker reference (`busybox:1.36` → `1.36`).
    let slash = tag.rfind('/').map_or(0, |i| i + 1);
    match tag[slash..].rfind(':') {
        Some(i) => {
            let part = &tag[slash + i + 1..];
            entries
                .iter()
                .filter(|d| {
                    d.ref_name() == Some(part)
                        && d.annotation(spec::ANNOTATION_IMAGE_NAME).is_none()
                })
                .collect()
        }
        None => Vec::new(),
    }
}

/// When some entries of an index are absent from the store and others are
/// there (`ctr images export` keeps only the host's platform by default), a
/// sentence saying which platforms the store holds and how to proceed:
/// "the archive holds linux/amd64 only of index X (linux/arm64 is missing);
/// use --platform linux/amd64". `None` when nothing or everything is absent.
pub(crate) fn partial_index_hint(
    store: &dyn Store,
    index: &str,
    entries: &[Descriptor],
) -> Option<String> {
    let label = |d: &Descriptor| match &d.platform {
        Some(p) => p.to_string(),
        None => d.digest.clone(),
    };
    let (mut present, mut missing) = (Vec::new(), Vec::new());
    for d in entries {
        let there = d
            .digest()
            .is_ok_and(|dg| !matches!(store.open_blob(&dg), Err(StoreError::Missing { .. })));
        if there {
            present.push(label(d));
        } else {
            missing.push(label(d));
        }
    }
    if present.is_empty() || missing.is_empty() {
        return None;
    }
    Some(format!(
        "{} holds {} only of index {index} ({} missing: a partial export); use --platform {}",
        store.name(),
        present.join(", "),
        missing.join(", "),
        present.first().map(String::as_str).unwrap_or_default(),
    ))
}

/// Drops candidates that an index among them lists: containerd exports and
/// Docker 25 saves name an index and, separately, one of its platform
/// manifests with the same name. They are one image: the index (through
/// which `--platform` still chooses).
pub(crate) fn without_children<'a>(
    store: &dyn Store,
    found: Vec<&'a Descriptor>,
) -> Vec<&'a Descriptor> {
    if found.len() < 2 {
        return found;
    }
    let mut children = HashSet::new();
    for d in found.iter().filter(|d| d.kind() == Kind::Index) {
        let Ok(node) = load_node(store, d, "index") else {
            continue;
        };
        if let Ok(Document::Index(idx)) = spec::parse_document(&node.bytes, Kind::Index) {
            children.extend(idx.entries().iter().map(|e| e.digest.clone()));
        }
    }
    found
        .into_iter()
        .filter(|d| !children.contains(&d.digest))
        .collect()
}

/// The entries of `index.json` as one image each: an entry that is a child
/// of another entry's index under the same identity (containerd exports and
/// Docker 25 saves list both) is the same image and is left out.
pub(crate) fn listed_entries<'a>(
    store: &dyn Store,
    entries: &'a [Descriptor],
) -> Vec<&'a Descriptor> {
    let mut children: HashSet<(String, Option<&str>)> = HashSet::new();
    for d in entries.iter().filter(|d| d.kind() == Kind::Index) {
        let Ok(node) = load_node(store, d, "index") else {
            continue;
        };
        if let Ok(Document::Index(idx)) = spec::parse_document(&node.bytes, Kind::Index) {
            children.extend(
                idx.entries()
                    .iter()
                    .map(|e| (e.digest.clone(), identity(d))),
            );
        }
    }
    entries
        .iter()
        .filter(|d| identity(d).is_none() || !children.contains(&(d.digest.clone(), identity(d))))
        .collect()
}

fn distinct_by_digest(v: Vec<&Descriptor>) -> Vec<&Descriptor> {
    let mut seen = HashSet::new();
    v.into_iter()
        .filter(|d| seen.insert(d.digest.clone()))
        .collect()
}

/// What a reference points at: an entry of `index.json`, a nested descriptor,
/// or (with no reference and platform entries at the top) `index.json` itself.
enum Root {
    Descriptor(Box<Descriptor>),
    TopLevel(Vec<Descriptor>),
}

fn find_root(store: &dyn Store, reference: Option<&Reference>) -> Result<Root, ResolveError> {
    let (_, index) = read_index_json(store)?;
    let entries = index.entries();
    match reference {
        None => {
            let distinct = distinct_by_digest(entries.iter().collect());
            match distinct.len() {
                0 => Err(ResolveError::Empty(store.name())),
                1 => Ok(Root::Descriptor(Box::new(distinct[0].clone()))),
                _ if entries.iter().all(|d| d.platform.is_some()) => {
                    Ok(Root::TopLevel(entries.to_vec()))
                }
                _ => Err(ResolveError::Ambiguous {
                    location: store.name(),
                    reference: None,
                    choices: labels(entries),
                }),
            }
        }
        Some(Reference::Tag(tag)) => {
            let found = without_children(store, distinct_by_digest(match_tag(entries, tag)));
            match found.len() {
                0 => Err(ResolveError::NotFound {
                    location: store.name(),
                    reference: tag.clone(),
                    available: labels(entries),
                }),
                1 => Ok(Root::Descriptor(Box::new(found[0].clone()))),
                _ => Err(ResolveError::Ambiguous {
                    location: store.name(),
                    reference: Some(tag.clone()),
                    choices: found.into_iter().map(entry_label).collect(),
                }),
            }
        }
        Some(Reference::Digest(digest)) => {
            find_by_digest(store, entries, digest).map(|d| Root::Descriptor(Box::new(d)))
        }
    }
}

/// Finds a descriptor for `digest`: in `index.json`, in nested indexes, or by
/// reading the blob itself.
fn find_by_digest(
    store: &dyn Store,
    entries: &[Descriptor],
    digest: &Digest,
) -> Result<Descriptor, ResolveError> {
    let wanted = digest.to_string();
    if let Some(d) = entries.iter().find(|d| d.digest == wanted) {
        return Ok(d.clone());
    }
    // Through nested indexes (depth-first; each index read once).
    let mut queue: Vec<Descriptor> = entries
        .iter()
        .filter(|d| d.kind() == Kind::Index)
        .cloned()
        .collect();
    let mut seen = HashSet::new();
    while let Some(desc) = queue.pop() {
        if !seen.insert(desc.digest.clone()) || seen.len() > 10_000 {
            continue;
        }
        let Ok(node) = load_node(store, &desc, "index") else {
            continue;
        };
        if let Ok(Document::Index(idx)) = spec::parse_document(&node.bytes, Kind::Index) {
            for d in idx.entries() {
                if d.digest == wanted {
                    return Ok(d.clone());
                }
                if d.kind() == Kind::Index {
                    queue.push(d.clone());
                }
            }
        }
    }
    // Any stored manifest or index.
    let blob = match store.open_blob(digest) {
        Ok(b) => b,
        Err(StoreError::Missing { .. }) => {
            return Err(ResolveError::NotFound {
                location: store.name(),
                reference: format!("@{digest}"),
                available: labels(entries),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let size = blob.len() as i64;
    drop(blob);
    let bytes = store.read_verified(digest, size, MAX_DOCUMENT_SIZE)?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .map(|v| match spec::sniff_kind(&v) {
            Kind::Index => v
                .get("mediaType")
                .and_then(|m| m.as_str())
                .unwrap_or(spec::media_type::OCI_INDEX)
                .to_string(),
            Kind::Manifest => v
                .get("mediaType")
                .and_then(|m| m.as_str())
                .unwrap_or(spec::media_type::OCI_MANIFEST)
                .to_string(),
            _ => String::new(),
        })
        .unwrap_or_default();
    if media_type.is_empty() {
        return Err(ResolveError::NotAnImage {
            digest: digest.clone(),
            media_type: "blob that is neither a manifest nor an index".into(),
        });
    }
    Ok(crate::docker::descriptor(&media_type, digest, size as u64))
}

/// Resolves a reference to the descriptor it names, without choosing a
/// platform (`tag` uses this).
///
/// # Errors
/// See [`ResolveError`].
pub fn find_descriptor(
    store: &dyn Store,
    reference: Option<&Reference>,
) -> Result<Descriptor, ResolveError> {
    match find_root(store, reference)? {
        Root::Descriptor(d) => Ok(*d),
        Root::TopLevel(entries) => Err(ResolveError::Ambiguous {
            location: store.name(),
            reference: None,
            choices: labels(&entries),
        }),
    }
}

/// Resolves a reference to the document it names: an index or a manifest,
/// with its exact bytes (`cat … index` uses this). Without a reference on a
/// store whose `index.json` has several images this fails with the choices.
///
/// # Errors
/// See [`ResolveError`].
pub fn resolve_node(
    store: &dyn Store,
    reference: Option<&Reference>,
) -> Result<Node, ResolveError> {
    let desc = find_descriptor(store, reference)?;
    load_node(store, &desc, "manifest")
}

/// The kind of a loaded document: its descriptor's, or sniffed when unknown.
pub(crate) fn node_kind(node: &Node) -> Kind {
    match node.descriptor.kind() {
        k @ (Kind::Index | Kind::Manifest | Kind::Schema1) => k,
        _ => serde_json::from_slice::<serde_json::Value>(&node.bytes)
            .map(|v| spec::sniff_kind(&v))
            .unwrap_or(Kind::Unknown),
    }
}

/// Whether an index entry is an image a user might ask for (not a Docker
/// attestation manifest or another `unknown/unknown` entry).
pub(crate) fn is_candidate(d: &Descriptor) -> bool {
    let attestation = d.annotation("vnd.docker.reference.type") == Some("attestation-manifest");
    let unknown = d
        .platform
        .as_ref()
        .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
    !attestation && !unknown
}

fn platform_label(d: &Descriptor) -> String {
    d.platform
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_else(|| format!("(no platform) {}", entry_label(d)))
}

/// Chooses an entry of an index by platform.
pub(crate) fn choose<'a>(
    what: &str,
    entries: &'a [Descriptor],
    platform: &PlatformChoice,
) -> Result<&'a Descriptor, ResolveError> {
    let candidates: Vec<&Descriptor> = entries.iter().filter(|d| is_candidate(d)).collect();
    let wanted = match platform {
        PlatformChoice::Host => PlatformSpec::host(),
        PlatformChoice::Specific(p) => p.clone(),
    };
    if let Some(d) = candidates
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
    {
        return Ok(d);
    }
    if *platform == PlatformChoice::Host && distinct_by_digest(candidates.clone()).len() == 1 {
        return Ok(candidates[0]);
    }
    Err(ResolveError::NoPlatform {
        what: what.to_string(),
        wanted: wanted.to_string(),
        available: candidates.iter().map(|d| platform_label(d)).collect(),
    })
}

/// Resolves a reference to one image, choosing a platform in indexes.
///
/// # Errors
/// See [`ResolveError`].
pub fn resolve_image(
    store: &dyn Store,
    reference: Option<&Reference>,
    platform: &PlatformChoice,
) -> Result<Image, ResolveError> {
    let (desc, chosen_platform) = match find_root(store, reference)? {
        Root::Descriptor(d) => (*d, None),
        Root::TopLevel(entries) => {
            let d = choose(&format!("{}/index.json", store.name()), &entries, platform)?;
            (d.clone(), d.platform.clone())
        }
    };
    image_of(store, desc, chosen_platform, platform)
}

/// A manifest reached without choosing in an index is taken whatever the
/// platform asked for; an explicit `--platform` must still name the platform
/// it has (its descriptor's, else its config's), or a command would act on
/// another platform's image as if it were the one asked for.
fn check_platform(
    store: &dyn Store,
    image: &Image,
    platform: &PlatformChoice,
) -> Result<(), ResolveError> {
    let PlatformChoice::Specific(wanted) = platform else {
        return Ok(());
    };
    if !image.indexes.is_empty() {
        // Chosen in an index by this very platform.
        return Ok(());
    }
    let have = match &image.platform {
        Some(p) => p.clone(),
        None => {
            let Some(cfg) = image.image_config(store)? else {
                return Ok(());
            };
            if cfg.os.is_none() && cfg.architecture.is_none() {
                return Ok(());
            }
            cfg.platform()
        }
    };
    if wanted.matches(&have) {
        return Ok(());
    }
    Err(ResolveError::NoPlatform {
        what: format!("{} (a single manifest, no index)", image.manifest.digest),
        wanted: wanted.to_string(),
        available: vec![have.to_string()],
    })
}

/// Resolves a descriptor (an index or a manifest) to one image, choosing by
/// platform through indexes.
///
/// # Errors
/// See [`ResolveError`].
pub(crate) fn image_of_descriptor(
    store: &dyn Store,
    desc: &Descriptor,
    platform: &PlatformChoice,
) -> Result<Image, ResolveError> {
    image_of(store, desc.clone(), desc.platform.clone(), platform)
}

fn image_of(
    store: &dyn Store,
    mut desc: Descriptor,
    mut chosen_platform: Option<Platform>,
    platform: &PlatformChoice,
) -> Result<Image, ResolveError> {
    let mut indexes = Vec::new();
    for _ in 0..MAX_NESTING {
        let node = load_node(store, &desc, "manifest")?;
        match node_kind(&node) {
            Kind::Manifest => {
                let parsed = match spec::parse_document(&node.bytes, Kind::Manifest) {
                    Ok(Document::Manifest(m)) => m,
                    Ok(Document::Index(_)) => unreachable_index(&node)?,
                    Err(source) => {
                        return Err(ResolveError::Document {
                            what: "manifest",
                            digest: node.digest,
                            source,
                        })
                    }
                };
                let image = Image {
                    indexes,
                    manifest: node,
                    parsed,
                    platform: chosen_platform,
                };
                check_platform(store, &image, platform)?;
                return Ok(image);
            }
            Kind::Index => {
                let idx = match spec::parse_document(&node.bytes, Kind::Index) {
                    Ok(Document::Index(i)) => i,
                    Ok(Document::Manifest(_)) => unreachable_index(&node)?,
                    Err(source) => {
                        return Err(ResolveError::Document {
                            what: "index",
                            digest: node.digest,
                            source,
                        })
                    }
                };
                let next = choose(&format!("index {}", node.digest), idx.entries(), platform)?;
                chosen_platform = next.platform.clone().or(chosen_platform);
                desc = next.clone();
                indexes.push(node);
            }
            _ => {
                return Err(ResolveError::NotAnImage {
                    digest: node.digest,
                    media_type: node.descriptor.media_type,
                })
            }
        }
    }
    Err(ResolveError::TooDeep(descriptor_digest(
        &desc,
        "index entry",
    )?))
}

fn unreachable_index<T>(node: &Node) -> Result<T, ResolveError> {
    Err(ResolveError::Document {
        what: "manifest",
        digest: node.digest.clone(),
        source: DocumentError::Ambiguous("its kind changed while parsing".into()),
    })
}
