//! Reachability: from `index.json` through indexes, manifests, configs and
//! layers, plus referrers (manifests whose `subject` is reachable, found by
//! scanning the stored blobs). A referrer never keeps its subject alive: the
//! walk does not follow `subject`.
//!
//! Documents (indexes, manifests, image configs) are loaded, verified and
//! parsed during the walk; leaves (layers, opaque blobs) are only collected so
//! that the caller can hash them in parallel. Every problem met is recorded as
//! an [`Issue`] and the walk goes on, so one damaged blob does not hide others.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;

use crate::digest::Digest;
use crate::resolve::MAX_NESTING;
use crate::spec::{self, media_type, Descriptor, Document, DocumentError, Kind, MAX_DOCUMENT_SIZE};
use crate::store::{Store, StoreError};

/// The digest of `{}`, the only content of the empty descriptor.
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// What kind of problem an issue or verify finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueKind {
    /// A referenced blob is absent.
    Missing,
    /// A blob's size differs from its descriptor.
    SizeMismatch,
    /// A blob's content does not match its digest.
    DigestMismatch,
    /// Unparsable JSON, an invalid digest, or a file that cannot be read as expected.
    Malformed,
    /// Parsable, but violating the spec's schema (`"manifests": null`, no `schemaVersion`, …).
    SchemaInvalid,
    /// A document's own media type differs from its descriptor's (CVE-2021-41190).
    MediatypeMismatch,
    /// A blob path that is a symlink, directory or other non-regular file.
    NonRegular,
    /// Content ocikit cannot check (unknown digest algorithm, schema1 manifests).
    Unsupported,
    /// A file ocikit may not read (permission denied): not a fault of the
    /// layout, so the CLI's verify exits 2 with the message instead of
    /// reporting it (see [`crate::verify::VerifyReport::unreadable`]).
    Unreadable,
    /// A decompressed layer does not hash to the config's diff_id (`--deep`).
    DiffidMismatch,
    /// A layer that cannot be decompressed or read as tar (`--deep`).
    BadLayer,
    /// Warning: a media type ocikit does not know (carried along, not checked further).
    UnknownMediaType,
    /// Warning: a non-distributable/foreign layer whose blob is absent.
    ForeignMissing,
    /// Warning: a blob nothing references.
    Unreferenced,
    /// Warning: a file under `blobs/` whose name is not a digest.
    StrayFile,
    /// Warning: odd but tolerated layout metadata (layout version, tag names, empty images).
    Layout,
    /// Warning: a blob a delta bundle leaves out (the side it was made
    /// against holds it).
    DeltaOmitted,
}

impl IssueKind {
    /// Whether this kind is only a warning (never fails verify).
    pub(crate) fn is_warning(self) -> bool {
        matches!(
            self,
            IssueKind::UnknownMediaType
                | IssueKind::ForeignMissing
                | IssueKind::Unreferenced
                | IssueKind::StrayFile
                | IssueKind::Layout
                | IssueKind::DeltaOmitted
        )
    }

    /// The kind's name as printed (`size-mismatch`, …).
    pub(crate) fn name(self) -> &'static str {
        match self {
            IssueKind::Missing => "missing",
            IssueKind::SizeMismatch => "size-mismatch",
            IssueKind::DigestMismatch => "digest-mismatch",
            IssueKind::Malformed => "malformed",
            IssueKind::SchemaInvalid => "schema-invalid",
            IssueKind::MediatypeMismatch => "mediatype-mismatch",
            IssueKind::NonRegular => "non-regular",
            IssueKind::Unsupported => "unsupported",
            IssueKind::Unreadable => "unreadable",
            IssueKind::DiffidMismatch => "diffid-mismatch",
            IssueKind::BadLayer => "bad-layer",
            IssueKind::UnknownMediaType => "unknown-media-type",
            IssueKind::ForeignMissing => "foreign-missing",
            IssueKind::Unreferenced => "unreferenced",
            IssueKind::StrayFile => "stray-file",
            IssueKind::Layout => "layout",
            IssueKind::DeltaOmitted => "delta-omitted",
        }
    }
}

impl fmt::Display for IssueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem, naming the blob or file and where in the graph it was met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// What kind of problem.
    pub kind: IssueKind,
    /// The blob's digest (or the raw digest string when it is invalid), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where it was met: `index.json manifests[0] > layers[2]`, or a file name.
    pub path: String,
    /// One sentence saying what is wrong.
    pub message: String,
}

/// Why a descriptor was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// An entry of `index.json` or of a nested index.
    Entry,
    /// A manifest's config.
    Config,
    /// A manifest's layer.
    Layer,
    /// A manifest found because its `subject` is reachable.
    Referrer,
}

/// A blob that is reachable, with how it was first reached.
#[derive(Debug, Clone)]
pub struct Reached {
    /// The descriptor it was first reached through.
    pub descriptor: Descriptor,
    /// Its validated digest.
    pub digest: Digest,
    /// Why it was reached.
    pub role: Role,
    /// Where it was first reached.
    pub path: String,
    /// Whether it was loaded and verified during the walk (documents).
    pub verified: bool,
}

/// An image manifest met during the walk, for layer-level checks.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The manifest.
    pub manifest: Digest,
    /// Its config descriptor, when it has one.
    pub config: Option<Descriptor>,
    /// Where it was met.
    pub path: String,
    /// Its layers (descriptor and digest if valid).
    pub layers: Vec<(Descriptor, Option<Digest>)>,
    /// The config's `rootfs.diff_ids`, when the config is an image config that
    /// parsed and lists them.
    pub diff_ids: Option<Vec<String>>,
    /// Whether the config is an OCI or Docker image config (not an artifact's).
    pub config_is_image: bool,
}

/// The result of a walk.
#[derive(Debug, Default)]
pub struct Graph {
    /// Every reachable blob, by digest.
    pub reached: BTreeMap<Digest, Reached>,
    /// Problems met.
    pub issues: Vec<Issue>,
    /// Image manifests met.
    pub images: Vec<ImageInfo>,
    /// Digests of referrers found by scanning.
    pub referrers: Vec<Digest>,
    /// Documents that could not be loaded or parsed.
    pub damaged: Vec<String>,
    /// Indexes into `issues` of problems with leaves that reference nothing
    /// (image configs that are missing, unreadable or unparsable): errors for
    /// verify, but no doubt about what the graph keeps alive.
    pub leaf_issues: std::collections::BTreeSet<usize>,
}

impl Graph {
    /// Whether a reachable index, manifest or config could not be loaded or
    /// parsed (a damaged graph: what it would reference is unknown).
    pub fn is_damaged(&self) -> bool {
        !self.damaged.is_empty()
    }

    /// The first problem that is an error (not a warning): what makes verify
    /// refuse the graph, and so what stops gc and every `index.json` writer.
    /// Problems with leaves (see [`Graph::leaf_issues`]) do not count: they
    /// leave no doubt about reachability.
    pub fn first_error(&self) -> Option<&Issue> {
        self.issues
            .iter()
            .enumerate()
            .find(|(n, i)| !i.kind.is_warning() && !self.leaf_issues.contains(n))
            .map(|(_, i)| i)
    }
}

/// Options of a walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkOptions {
    /// Scan stored blobs for referrers of reachable manifests.
    pub referrers: bool,
    /// Load and check image configs (verify needs them; reachability does not:
    /// a config references nothing).
    pub configs: bool,
    /// Check only `index.json` and its own descriptors, loading no blob (what
    /// a writer needs before it edits `index.json`).
    pub shallow: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            referrers: true,
            configs: true,
            shallow: false,
        }
    }
}

/// What a walk's visitor wants after seeing a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Go on (into the document's children, if it is an index or manifest).
    Continue,
    /// Do not load or descend into this document.
    Skip,
}

struct Walker<'a> {
    store: &'a dyn Store,
    on_visit: &'a mut dyn FnMut(&Reached) -> Step,
    load_configs: bool,
    shallow: bool,
    g: Graph,
    /// Sizes seen per digest, to flag one digest claimed with two sizes.
    sizes: HashMap<Digest, i64>,
    /// diff_ids of the image configs parsed so far.
    diff_ids: HashMap<Digest, Vec<String>>,
}

fn issue(kind: IssueKind, digest: Option<String>, path: &str, message: String) -> Issue {
    Issue {
        kind,
        digest,
        path: path.to_string(),
        message,
    }
}

/// Turns a store error reading a blob into an issue.
pub(crate) fn store_issue(e: &StoreError, digest: &Digest, path: &str) -> Issue {
    let kind = match e {
        StoreError::Missing { .. } => IssueKind::Missing,
        StoreError::SizeMismatch { .. } => IssueKind::SizeMismatch,
        StoreError::DigestMismatch { .. } => IssueKind::DigestMismatch,
        StoreError::NotRegular { .. } => IssueKind::NonRegular,
        StoreError::Unverifiable(_) => IssueKind::Unsupported,
        StoreError::Denied { .. } => IssueKind::Unreadable,
        StoreError::TooLarge { .. } | StoreError::Io { .. } | StoreError::NotALayout { .. } => {
            IssueKind::Malformed
        }
    };
    issue(kind, Some(digest.to_string()), path, e.to_string())
}

/// Walks everything reachable from `index.json`.
pub fn walk(store: &dyn Store, options: WalkOptions) -> Graph {
    walk_with(store, options, &mut |_| Step::Continue)
}

/// [`walk`] with a visitor, as umoci's `casext.Walk`: it sees every
/// descriptor reached (once per digest, in walk order) and may skip a
/// document's children. gc, verify and `ls` see the graph through this one
/// walk and its one validator.
pub(crate) fn walk_with(
    store: &dyn Store,
    options: WalkOptions,
    on_visit: &mut dyn FnMut(&Reached) -> Step,
) -> Graph {
    let mut w = Walker {
        store,
        on_visit,
        load_configs: options.configs,
        shallow: options.shallow,
        g: Graph::default(),
        sizes: HashMap::new(),
        diff_ids: HashMap::new(),
    };
    let bytes = match store.index_bytes() {
        Ok(b) => b,
        Err(e) => {
            let kind = match &e {
                StoreError::NotRegular { .. } => IssueKind::NonRegular,
                StoreError::Denied { .. } => IssueKind::Unreadable,
                StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    IssueKind::Missing
                }
                _ => IssueKind::Malformed,
            };
            let message = match kind {
                IssueKind::Unreadable => e.to_string(),
                _ => format!("index.json cannot be read: {e}"),
            };
            w.g.issues.push(issue(kind, None, "index.json", message));
            return w.g;
        }
    };
    w.document(&bytes, Kind::Index, None, "index.json", 0);
    if options.referrers && !options.shallow {
        w.referrers();
    }
    w.g
}

/// Checks `index.json` bytes as verify does at the top level: the document's
/// own schema and every descriptor in it (digest, size, media type), loading
/// no blob. Returns the problems, errors and warnings alike (see
/// [`IssueKind::is_warning`]); writers refuse to edit on any error, since a
/// rewrite would carry along, or a gc act on, entries verify refuses.
pub(crate) fn check_index(store: &dyn Store, bytes: &[u8]) -> Vec<Issue> {
    let mut w = Walker {
        store,
        on_visit: &mut |_| Step::Continue,
        load_configs: false,
        shallow: true,
        g: Graph::default(),
        sizes: HashMap::new(),
        diff_ids: HashMap::new(),
    };
    w.document(bytes, Kind::Index, None, "index.json", 0);
    w.g.issues
}

impl Walker<'_> {
    fn push(&mut self, kind: IssueKind, digest: Option<String>, path: &str, message: String) {
        self.g.issues.push(issue(kind, digest, path, message));
    }

    /// Visits one descriptor.
    fn visit(&mut self, desc: &Descriptor, role: Role, path: String, depth: usize) {
        let raw = Some(desc.digest.clone());
        let digest = match desc.digest() {
            Ok(d) => d,
            Err(e) => {
                self.push(IssueKind::Malformed, raw, &path, format!("{path}: {e}"));
                return;
            }
        };
        if desc.media_type.is_empty() {
            self.push(
                IssueKind::SchemaInvalid,
                raw.clone(),
                &path,
                format!("{path}: the descriptor has no mediaType"),
            );
        }
        if desc.size < 0 {
            self.push(
                IssueKind::SchemaInvalid,
                raw,
                &path,
                format!("{path}: the descriptor's size {} is negative", desc.size),
            );
            return;
        }
        self.check_embedded(desc, &digest, &path);
        if let Some(&seen) = self.sizes.get(&digest) {
            if seen != desc.size {
                self.push(
                    IssueKind::SizeMismatch,
                    raw,
                    &path,
                    format!(
                        "{path}: {digest} is described with size {} here and {seen} elsewhere",
                        desc.size
                    ),
                );
            }
            return;
        }
        self.sizes.insert(digest.clone(), desc.size);
        let mut kind = desc.kind();
        // Artifacts use arbitrary config and layer types; only an index entry of
        // unknown type is worth a warning (it may be a manifest ocikit cannot walk).
        if kind == Kind::Unknown && !desc.media_type.is_empty() && role == Role::Entry {
            self.push(
                IssueKind::UnknownMediaType,
                raw.clone(),
                &path,
                format!("{path}: media type {:?} is not one ocikit knows; the blob is carried along unchecked beyond its digest", desc.media_type),
            );
        }
        // An entry or referrer of unknown type may still be a manifest or index
        // (the media type lies, or is new): sniff it.
        let sniff = kind == Kind::Unknown
            && matches!(role, Role::Entry | Role::Referrer)
            && desc.size <= MAX_DOCUMENT_SIZE as i64;
        let is_doc = (kind.is_document() && (self.load_configs || kind != Kind::ImageConfig))
            || kind == Kind::Schema1
            || sniff;
        // An entry of unknown type too large to sniff: if its blob's size
        // is not the descriptor's, the descriptor is wrong and the blob may
        // well be a manifest the walk cannot see into (gc must not go on).
        let wrong_size = (!is_doc
            && !self.shallow
            && kind == Kind::Unknown
            && matches!(role, Role::Entry | Role::Referrer))
        .then(|| self.store.open_blob(&digest).ok())
        .flatten()
        .map(|b| b.len())
        .filter(|&n| n != desc.size as u64);
        self.g.reached.insert(
            digest.clone(),
            Reached {
                descriptor: desc.clone(),
                digest: digest.clone(),
                role,
                path: path.clone(),
                verified: is_doc || wrong_size.is_some(),
            },
        );
        if let Some(actual) = wrong_size {
            self.g.damaged.push(digest.to_string());
            let e = StoreError::SizeMismatch {
                digest: digest.clone(),
                expected: desc.size,
                actual,
            };
            self.g.issues.push(store_issue(&e, &digest, &path));
            return;
        }
        if (self.on_visit)(&self.g.reached[&digest]) == Step::Skip || !is_doc || self.shallow {
            return;
        }
        let bytes = match self
            .store
            .read_verified(&digest, desc.size, MAX_DOCUMENT_SIZE)
        {
            Ok(b) => b,
            Err(e) => {
                self.g.damaged.push(digest.to_string());
                if role == Role::Config {
                    self.g.leaf_issues.insert(self.g.issues.len());
                }
                self.g.issues.push(store_issue(&e, &digest, &path));
                return;
            }
        };
        if sniff {
            kind = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(v) => spec::sniff_kind(&v),
                Err(_) => Kind::Unknown,
            };
            if !matches!(kind, Kind::Index | Kind::Manifest) {
                return;
            }
        }
        match kind {
            Kind::Index | Kind::Manifest => {
                self.document(&bytes, kind, Some((desc, &digest)), &path, depth + 1);
            }
            Kind::Schema1 => self.push(
                IssueKind::Unsupported,
                raw,
                &path,
                format!(
                    "{path}: {digest} is a Docker schema1 manifest, which ocikit does not support"
                ),
            ),
            Kind::ImageConfig => self.config(&bytes, &digest, &path),
            Kind::Empty if bytes != b"{}" => self.push(
                IssueKind::Malformed,
                raw,
                &path,
                format!("{path}: {digest} has the empty media type but is not {{}}"),
            ),
            _ => {}
        }
    }

    /// Checks a descriptor's embedded `data` (strict base64, its length is the
    /// size, its hash the digest) and the empty descriptor's fixed identity.
    /// Embedded data is never trusted over the blob without this check.
    fn check_embedded(&mut self, desc: &Descriptor, digest: &Digest, path: &str) {
        use base64::Engine as _;
        let raw = Some(desc.digest.clone());
        if let Some(data) = &desc.data {
            match base64::engine::general_purpose::STANDARD.decode(data) {
                Err(e) => self.push(
                    IssueKind::Malformed,
                    raw.clone(),
                    path,
                    format!("{path}: the descriptor's data is not valid base64 ({e})"),
                ),
                Ok(bytes) if bytes.len() as i64 != desc.size => self.push(
                    IssueKind::SizeMismatch,
                    raw.clone(),
                    path,
                    format!(
                        "{path}: the descriptor's data is {} bytes but its size says {}",
                        bytes.len(),
                        desc.size
                    ),
                ),
                Ok(bytes) => {
                    if digest.algorithm().is_verifiable()
                        && &Digest::of_bytes(digest.algorithm().clone(), &bytes) != digest
                    {
                        self.push(
                            IssueKind::DigestMismatch,
                            raw.clone(),
                            path,
                            format!("{path}: the descriptor's data does not hash to {digest}"),
                        );
                    }
                }
            }
        }
        if desc.kind() == Kind::Empty && (desc.digest != EMPTY_DIGEST || desc.size != 2) {
            self.push(
                IssueKind::SchemaInvalid,
                raw,
                path,
                format!(
                    "{path}: an {} descriptor must be {EMPTY_DIGEST} with size 2",
                    media_type::OCI_EMPTY
                ),
            );
        }
    }

    /// Parses an index or manifest and visits its children.
    fn document(
        &mut self,
        bytes: &[u8],
        expected: Kind,
        from: Option<(&Descriptor, &Digest)>,
        path: &str,
        depth: usize,
    ) {
        let digest = from.map(|(_, d)| d.to_string());
        let name = match from {
            Some((_, d)) => format!("{path}: {d}"),
            None => path.to_string(),
        };
        if depth > MAX_NESTING {
            self.g.damaged.extend(digest.clone());
            self.push(
                IssueKind::Malformed,
                digest,
                path,
                format!("{name}: indexes nested more than {MAX_NESTING} deep"),
            );
            return;
        }
        let value: serde_json::Value = match spec::check_json(bytes).and_then(|()| {
            serde_json::from_slice(bytes).map_err(|e| DocumentError::Syntax(e.to_string()))
        }) {
            Ok(v) => v,
            Err(e) => {
                self.g.damaged.extend(digest.clone());
                self.push(IssueKind::Malformed, digest, path, format!("{name} {e}"));
                return;
            }
        };
        // The document's own media type must agree with its descriptor's.
        let own = value.get("mediaType").and_then(|m| m.as_str());
        let own_kind = spec::sniff_kind(&value);
        if let (Some((desc, _)), Some(own)) = (from, own) {
            if own != desc.media_type {
                self.push(
                    IssueKind::MediatypeMismatch,
                    digest.clone(),
                    path,
                    format!(
                        "{name} says it is {own:?} but its descriptor says {:?}",
                        desc.media_type
                    ),
                );
            }
        } else if let (Some((desc, _)), None) = (from, own) {
            if own_kind != Kind::Unknown && own_kind != expected && desc.kind() != Kind::Unknown {
                self.push(
                    IssueKind::MediatypeMismatch,
                    digest.clone(),
                    path,
                    format!(
                        "{name} is shaped like a {:?} but its descriptor says {:?}",
                        own_kind, desc.media_type
                    ),
                );
            }
        }
        // Parse by what the document is (its own type or shape wins), so a
        // mislabelled manifest is still walked.
        let kind = match own_kind {
            Kind::Index | Kind::Manifest => own_kind,
            _ => expected,
        };
        let schema_version = value.get("schemaVersion").and_then(|v| v.as_i64());
        let manifests_field = match value.get("manifests") {
            Some(serde_json::Value::Array(_)) => 0,
            Some(serde_json::Value::Null) => 1,
            _ => 2,
        };
        let layers_is_array = value.get("layers").is_some_and(|l| l.is_array());
        let doc = match spec::document_from_value(value, kind) {
            Ok(d) => d,
            Err(e) => {
                let k = match e {
                    DocumentError::Ambiguous(_) => IssueKind::MediatypeMismatch,
                    _ => IssueKind::Malformed,
                };
                self.g.damaged.extend(digest.clone());
                self.push(k, digest, path, format!("{name} {e}"));
                return;
            }
        };
        if schema_version != Some(2) {
            self.push(
                IssueKind::SchemaInvalid,
                digest.clone(),
                path,
                format!("{name} has no \"schemaVersion\": 2"),
            );
        }
        match doc {
            Document::Index(idx) => {
                match manifests_field {
                    0 => {}
                    1 => self.push(
                        IssueKind::SchemaInvalid,
                        digest.clone(),
                        path,
                        format!("{name} has \"manifests\": null (the spec requires an array)"),
                    ),
                    _ => self.push(
                        IssueKind::SchemaInvalid,
                        digest.clone(),
                        path,
                        format!("{name} has no \"manifests\" array"),
                    ),
                }
                let prefix = if from.is_none() {
                    "index.json ".to_string()
                } else {
                    format!("{path} > ")
                };
                let first_issue = self.g.issues.len();
                for (i, d) in idx.entries().iter().enumerate() {
                    let label = match d.ref_name() {
                        Some(t) => format!("{prefix}manifests[{i}] ({t})"),
                        None => match &d.platform {
                            Some(p) => format!("{prefix}manifests[{i}] ({p})"),
                            None => format!("{prefix}manifests[{i}]"),
                        },
                    };
                    self.visit(d, Role::Entry, label, depth);
                }
                // A partial export (some platforms only): say so on each
                // missing entry, with the way to proceed.
                if let (Some((_, idigest)), true) = (from, self.g.issues.len() > first_issue) {
                    if let Some(hint) = crate::resolve::partial_index_hint(
                        self.store,
                        &idigest.to_string(),
                        idx.entries(),
                    ) {
                        for issue in &mut self.g.issues[first_issue..] {
                            if issue.kind == IssueKind::Missing {
                                issue.message = format!("{}; {hint}", issue.message);
                            }
                        }
                    }
                }
            }
            Document::Manifest(m) => {
                let Some((_, mdigest)) = from else {
                    // index.json itself is a manifest: readers refuse it, so must verify.
                    self.push(
                        IssueKind::MediatypeMismatch,
                        None,
                        path,
                        format!("{name} is an image manifest, not an image index"),
                    );
                    return;
                };
                let mut info = ImageInfo {
                    manifest: mdigest.clone(),
                    config: m.config.clone(),
                    path: path.to_string(),
                    layers: Vec::new(),
                    diff_ids: None,
                    config_is_image: false,
                };
                match &m.config {
                    Some(c) => {
                        self.visit(c, Role::Config, format!("{path} > config"), depth);
                        if c.kind() == Kind::ImageConfig {
                            info.config_is_image = true;
                            if let Ok(cd) = c.digest() {
                                info.diff_ids = self.diff_ids.get(&cd).cloned();
                            }
                        }
                    }
                    None => self.push(
                        IssueKind::SchemaInvalid,
                        digest.clone(),
                        path,
                        format!("{name} has no config descriptor"),
                    ),
                }
                // Without a layers array, what the image's layers are is
                // unknown (gc would take them for garbage).
                if !layers_is_array {
                    self.push(
                        IssueKind::SchemaInvalid,
                        digest.clone(),
                        path,
                        format!("{name} has no \"layers\" array"),
                    );
                }
                let layers = m.layers.as_deref().unwrap_or(&[]);
                for (i, l) in layers.iter().enumerate() {
                    self.visit(l, Role::Layer, format!("{path} > layers[{i}]"), depth);
                    info.layers.push((l.clone(), l.digest().ok()));
                }
                if let Some(ids) = &info.diff_ids {
                    if let Some(i) = layer_count_issue(&info, ids.len()) {
                        self.g.issues.push(i);
                    }
                }
                self.g.images.push(info);
            }
        }
    }

    fn config(&mut self, bytes: &[u8], digest: &Digest, path: &str) {
        let first = self.g.issues.len();
        self.parse_config(bytes, digest, path);
        self.g.leaf_issues.extend(first..self.g.issues.len());
    }

    fn parse_config(&mut self, bytes: &[u8], digest: &Digest, path: &str) {
        match spec::parse_config(bytes) {
            Ok(cfg) => {
                let rootfs = cfg.rootfs.as_ref();
                if let Some(t) = rootfs.and_then(|r| r.kind.as_deref()) {
                    if t != "layers" {
                        self.push(
                            IssueKind::SchemaInvalid,
                            Some(digest.to_string()),
                            path,
                            format!("{path}: config {digest} has rootfs.type {t:?}; only \"layers\" is defined"),
                        );
                    }
                }
                // Only a config that lists diff_ids can be held to them; real
                // producers (zot test data) write configs without rootfs.
                if let Some(ids) = rootfs.and_then(|r| r.diff_ids.clone()) {
                    self.diff_ids.insert(digest.clone(), ids);
                }
            }
            Err(e) => self.push(
                IssueKind::Malformed,
                Some(digest.to_string()),
                path,
                format!("{path}: config {digest} {e}"),
            ),
        }
    }

    /// Finds manifests whose subject is reachable, repeatedly (referrers of
    /// referrers).
    fn referrers(&mut self) {
        let found = find_referrers(self.store, |d| self.g.reached.contains_key(d));
        loop {
            let mut progressed = false;
            for r in &found {
                if self.g.reached.contains_key(&r.digest)
                    || !self.g.reached.contains_key(&r.subject)
                {
                    continue;
                }
                self.g.referrers.push(r.digest.clone());
                self.visit(
                    &r.descriptor,
                    Role::Referrer,
                    format!("referrer of {}", r.subject.short()),
                    0,
                );
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }
}

/// A filesystem image whose layer count differs from its config's diff_ids
/// has lost layers on one side: verify refuses it, and so gc.
fn layer_count_issue(img: &ImageInfo, diff_ids: usize) -> Option<Issue> {
    let fs_image = img
        .layers
        .iter()
        .all(|(d, _)| matches!(d.kind(), Kind::Layer { .. }));
    (fs_image && diff_ids != img.layers.len()).then(|| {
        issue(
            IssueKind::SchemaInvalid,
            Some(img.manifest.to_string()),
            &img.path,
            format!(
                "{}: manifest {} has {} layer(s) but its config lists {diff_ids} diff_id(s)",
                img.path,
                img.manifest,
                img.layers.len()
            ),
        )
    })
}

/// The layer-count check of the graph walk, for a walk made without loading
/// configs (gc's): each image config is read, verified and parsed, in
/// parallel, and the first mismatch returned. A config that cannot be read
/// or parsed is a leaf problem (see [`Graph::leaf_issues`]) and is skipped.
pub(crate) fn check_layer_counts(store: &dyn Store, graph: &Graph) -> Option<Issue> {
    use rayon::prelude::*;
    let mut found: Vec<Issue> = graph
        .images
        .par_iter()
        .filter_map(|img| {
            let c = img
                .config
                .as_ref()
                .filter(|c| c.kind() == Kind::ImageConfig)?;
            let d = c.digest().ok()?;
            let bytes = store.read_verified(&d, c.size, MAX_DOCUMENT_SIZE).ok()?;
            let ids = spec::parse_config(&bytes).ok()?.rootfs?.diff_ids?;
            layer_count_issue(img, ids.len())
        })
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found.into_iter().next()
}

/// A stored manifest or index with a `subject`.
#[derive(Debug, Clone)]
pub(crate) struct Referrer {
    /// The referrer's digest.
    pub digest: Digest,
    /// A descriptor for it (its own media type and artifact type).
    pub descriptor: Descriptor,
    /// The digest its `subject` names.
    pub subject: Digest,
}

/// Every stored manifest or index that has a `subject`, found by reading the
/// small blobs that start with `{` (a layout has no referrers index; this is
/// how the spec's weak association is found). `skip` excludes blobs already
/// known not to be of interest.
pub(crate) fn find_referrers(store: &dyn Store, skip: impl Fn(&Digest) -> bool) -> Vec<Referrer> {
    let Ok(entries) = store.list_blobs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let Some(d) = e.digest else { continue };
        if !e.regular
            || e.size > MAX_DOCUMENT_SIZE
            || e.size < 2
            || skip(&d)
            || !d.algorithm().is_verifiable()
        {
            continue;
        }
        let Ok(blob) = store.open_blob(&d) else {
            continue;
        };
        let mut head = [0u8; 1];
        if blob.read_at(&mut head, 0).ok() != Some(1) || head[0] != b'{' {
            continue;
        }
        let Ok(bytes) = store.read_verified(&d, e.size as i64, MAX_DOCUMENT_SIZE) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let kind = spec::sniff_kind(&v);
        if !matches!(kind, Kind::Index | Kind::Manifest) {
            continue;
        }
        let Some(subject) = v
            .get("subject")
            .and_then(|s| s.get("digest"))
            .and_then(|s| s.as_str())
            .and_then(|s| Digest::parse(s).ok())
        else {
            continue;
        };
        let media_type = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                if kind == Kind::Index {
                    media_type::OCI_INDEX
                } else {
                    media_type::OCI_MANIFEST
                }
                .to_string()
            });
        let mut descriptor = crate::docker::descriptor(&media_type, &d, e.size);
        descriptor.artifact_type = v
            .get("artifactType")
            .and_then(|a| a.as_str())
            .map(str::to_string);
        out.push(Referrer {
            digest: d,
            descriptor,
            subject,
        });
    }
    out
}
