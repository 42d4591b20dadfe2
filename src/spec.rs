//! Typed OCI and Docker models: descriptors, manifests, indexes, image configs,
//! platforms and media types.
//!
//! These types are for *navigating* stored documents. Stored bytes are never
//! re-serialised: callers keep the raw bytes (whose hash is the digest) and parse
//! them with [`parse_document`] only to find children. Unknown fields are
//! tolerated everywhere (and kept in [`Descriptor::extra`] so a descriptor can be
//! copied into `index.json` with nothing lost).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::digest::{Digest, DigestError};

/// Media type strings this crate knows.
pub mod media_type {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI empty descriptor (`{}`).
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI non-distributable layer (deprecated).
    pub const OCI_LAYER_ND_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    /// OCI non-distributable gzip layer (deprecated).
    pub const OCI_LAYER_ND_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    /// OCI non-distributable zstd layer (deprecated).
    pub const OCI_LAYER_ND_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker schema2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker schema1 manifest (unsupported).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Docker schema1 signed manifest (unsupported).
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer (as written by some tools).
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker foreign layer (Windows base layers).
    pub const DOCKER_LAYER_FOREIGN: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
}

use media_type as mt;

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (possibly multi-member).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

impl Compression {
    /// Sniffs compression from the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            // A skippable frame (0x184D2A50..5F) first: zstd:chunked and
            // libarchive write them.
            || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18])
        {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// What a media type says a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An OCI image index or Docker manifest list.
    Index,
    /// An OCI image manifest or Docker schema2 manifest.
    Manifest,
    /// A Docker schema1 manifest: recognised, not supported.
    Schema1,
    /// An OCI or Docker image config.
    ImageConfig,
    /// The OCI empty descriptor.
    Empty,
    /// A filesystem layer.
    Layer {
        /// Compression the media type announces.
        compression: Compression,
        /// Non-distributable / foreign: its blob may legitimately be absent.
        foreign: bool,
    },
    /// Anything else: carried along untouched, never parsed.
    Unknown,
}

impl Kind {
    /// Classifies a media type string.
    pub(crate) fn of(media_type: &str) -> Kind {
        match media_type {
            mt::OCI_INDEX | mt::DOCKER_LIST => Kind::Index,
            mt::OCI_MANIFEST | mt::DOCKER_MANIFEST => Kind::Manifest,
            mt::DOCKER_SCHEMA1 | mt::DOCKER_SCHEMA1_SIGNED => Kind::Schema1,
            mt::OCI_CONFIG | mt::DOCKER_CONFIG => Kind::ImageConfig,
            mt::OCI_EMPTY => Kind::Empty,
            mt::OCI_LAYER_TAR | mt::DOCKER_LAYER_TAR => Kind::Layer {
                compression: Compression::None,
                foreign: false,
            },
            mt::OCI_LAYER_GZIP | mt::DOCKER_LAYER_GZIP => Kind::Layer {
                compression: Compression::Gzip,
                foreign: false,
            },
            mt::OCI_LAYER_ZSTD => Kind::Layer {
                compression: Compression::Zstd,
                foreign: false,
            },
            mt::OCI_LAYER_ND_TAR => Kind::Layer {
                compression: Compression::None,
                foreign: true,
            },
            mt::OCI_LAYER_ND_GZIP | mt::DOCKER_LAYER_FOREIGN => Kind::Layer {
                compression: Compression::Gzip,
                foreign: true,
            },
            mt::OCI_LAYER_ND_ZSTD => Kind::Layer {
                compression: Compression::Zstd,
                foreign: true,
            },
            _ => Kind::Unknown,
        }
    }

    /// Whether blobs of this kind are JSON documents ocikit parses.
    pub(crate) fn is_document(self) -> bool {
        matches!(
            self,
            Kind::Index | Kind::Manifest | Kind::ImageConfig | Kind::Empty
        )
    }
}

/// A content descriptor. Fields the spec defines are typed; everything else is
/// kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The media type of the referenced content.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The digest string, unvalidated: use [`Descriptor::digest`].
    pub digest: String,
    /// The size in bytes (signed, so that negative sizes can be reported).
    pub size: i64,
    /// Foreign-layer URLs (never fetched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Embedded base64 content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Artifact type of the referenced manifest.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// Platform of the referenced manifest (in indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The annotation holding a tag in `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and Docker 25+ use for the full image name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

impl Descriptor {
    /// The validated digest.
    ///
    /// # Errors
    /// When the digest string is not a valid digest.
    pub fn digest(&self) -> Result<Digest, DigestError> {
        Digest::parse(&self.digest)
    }

    /// The media-type classification.
    pub(crate) fn kind(&self) -> Kind {
        Kind::of(&self.media_type)
    }

    /// An annotation's value.
    pub(crate) fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// The `org.opencontainers.image.ref.name` annotation.
    pub(crate) fn ref_name(&self) -> Option<&str> {
        self.annotation(ANNOTATION_REF_NAME)
    }

    /// Whether this descriptor names a layer whose absence is legitimate:
    /// non-distributable/foreign media types, or any layer with `urls`.
    pub(crate) fn is_foreign(&self) -> bool {
        match self.kind() {
            Kind::Layer { foreign, .. } => {
                foreign || self.urls.as_ref().is_some_and(|u| !u.is_empty())
            }
            _ => false,
        }
    }
}

/// A platform, as in index entries and image configs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, …).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`, `windows`, …).
    #[serde(default)]
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v7`, `v8`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = if self.os.is_empty() {
            "unknown"
        } else {
            &self.os
        };
        let arch = if self.architecture.is_empty() {
            "unknown"
        } else {
            &self.architecture
        };
        write!(f, "{os}/{arch}")?;
        match &self.variant {
            Some(v) if !v.is_empty() => write!(f, "/{v}"),
            _ => Ok(()),
        }
    }
}

/// An OCI image manifest or Docker schema2 manifest, as far as ocikit reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    /// Must be 2.
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: Option<i64>,
    /// The document's own media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    /// Artifact type.
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    /// The config descriptor.
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// Layers, base first. `null` is read as absent.
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
    /// The manifest this one refers to.
    #[serde(default)]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An OCI image index or Docker manifest list, as far as ocikit reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageIndex {
    /// Must be 2.
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: Option<i64>,
    /// The document's own media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    /// Artifact type.
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    /// Entries. `null` (Docker 25 `docker save`, zot) is read as empty and
    /// reported by verify.
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
    /// The manifest this one refers to.
    #[serde(default)]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageIndex {
    /// The entries (empty when absent or `null`).
    pub(crate) fn entries(&self) -> &[Descriptor] {
        self.manifests.as_deref().unwrap_or(&[])
    }
}

/// The parts of an image config ocikit reads. Other fields stay in the raw bytes.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Operating system.
    #[serde(default)]
    pub os: Option<String>,
    /// CPU variant.
    #[serde(default)]
    pub variant: Option<String>,
    /// Creation time (RFC 3339), unparsed.
    #[serde(default)]
    pub created: Option<String>,
    /// The layer DiffIDs.
    #[serde(default)]
    pub rootfs: Option<RootFs>,
    /// The runtime config (`Env`, `Cmd`, …), kept as JSON.
    #[serde(default)]
    pub config: Option<Value>,
    /// History entries, kept as JSON.
    #[serde(default)]
    pub history: Option<Vec<Value>>,
}

impl ImageConfig {
    /// The platform the config declares.
    pub(crate) fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone().unwrap_or_default(),
            os: self.os.clone().unwrap_or_default(),
            variant: self.variant.clone().filter(|v| !v.is_empty()),
            ..Platform::default()
        }
    }
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    /// Must be `layers`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// DiffIDs, base first.
    #[serde(default)]
    pub diff_ids: Option<Vec<String>>,
}

/// Largest manifest, index or config ocikit parses (containers/image's limit;
/// CVE-2020-1702 was an unbounded read).
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;

/// A problem with a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// Not JSON, not UTF-8, trailing data, or not of the expected shape.
    #[error("is not valid JSON: {0}")]
    Syntax(String),
    /// A key appears twice in one object (Go tools read the last, serde the first).
    #[error("has the key {0:?} twice in one object")]
    DuplicateKey(String),
    /// A key differs only in case from a key the spec defines (`"Layers"`):
    /// Go tools match it, serde does not, so the two would read different documents.
    #[error("has the key {found:?}, which Go tools read as {known:?}")]
    CaseFoldedKey {
        /// The key in the document.
        found: String,
        /// The spec key it folds to.
        known: &'static str,
    },
    /// Larger than [`MAX_DOCUMENT_SIZE`].
    #[error("is {0} bytes, over the {MAX_DOCUMENT_SIZE}-byte limit for JSON documents")]
    TooLarge(u64),
    /// The document is a different kind from what its descriptor says
    /// (an index with `layers`, a manifest with `manifests`; CVE-2021-41190).
    #[error("is ambiguous: {0}")]
    Ambiguous(String),
}

/// Spec keys whose case-folded twins are rejected.
const KNOWN_KEYS: &[&str] = &[
    "mediaType",
    "schemaVersion",
    "manifests",
    "layers",
    "config",
    "subject",
    "digest",
    "size",
    "annotations",
    "platform",
    "urls",
    "artifactType",
    "data",
    "rootfs",
    "diff_ids",
    "architecture",
    "os",
    "variant",
    "imageLayoutVersion",
];

/// Checks the JSON text for hazards serde's derive would not catch:
/// duplicate keys (at any depth), and keys that case-fold to spec keys where
/// spec keys live (a document's top-level object and descriptor-shaped objects,
/// not user content such as labels).
///
/// # Errors
/// The first hazard found, or a syntax error.
pub fn check_json(bytes: &[u8]) -> Result<(), DocumentError> {
    if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(DocumentError::TooLarge(bytes.len() as u64));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let shape = de::DeserializeSeed::deserialize(ShapeSeed { depth: 0 }, &mut de)
        .and_then(|shape| de.end().map(|()| shape));
    match shape {
        Ok(Shape(None)) => Ok(()),
        Ok(Shape(Some(e))) => Err(e),
        Err(e) => Err(DocumentError::Syntax(e.to_string())),
    }
}

/// The first key hazard found in a JSON value, if any.
struct Shape(Option<DocumentError>);

/// Walks any JSON value, knowing how deep it is.
#[derive(Clone, Copy)]
struct ShapeSeed {
    depth: usize,
}

/// Deeper than this, JSON is refused (serde_json's own recursion limit is 128).
const MAX_JSON_DEPTH: usize = 100;

impl<'de> de::DeserializeSeed<'de> for ShapeSeed {
    type Value = Shape;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape(None))
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        if self.depth > MAX_JSON_DEPTH {
            return Err(de::Error::custom("JSON nested too deeply"));
        }
        let inner = ShapeSeed {
            depth: self.depth + 1,
        };
        let mut first = None;
        while let Some(Shape(e)) = seq.next_element_seed(inner)? {
            first = first.or(e);
        }
        Ok(Shape(first))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        if self.depth > MAX_JSON_DEPTH {
            return Err(de::Error::custom("JSON nested too deeply"));
        }
        let inner = ShapeSeed {
            depth: self.depth + 1,
        };
        let mut first = None;
        let mut keys = Vec::new();
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let Shape(e) = map.next_value_seed(inner)?;
            if !seen.insert(key.clone()) && first.is_none() {
                first = Some(DocumentError::DuplicateKey(key.clone()));
            }
            first = first.or(e);
            keys.push(key);
        }
        let spec_level = self.depth == 0 || keys.iter().any(|k| k == "digest" || k == "mediaType");
        if first.is_none() && spec_level {
            first = keys.iter().find_map(|key| {
                KNOWN_KEYS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(key) && **k != key)
                    .map(|known| DocumentError::CaseFoldedKey {
                        found: key.clone(),
                        known,
                    })
            });
        }
        Ok(Shape(first))
    }
}

/// A parsed index or manifest.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Document {
    /// An image index or manifest list.
    Index(ImageIndex),
    /// An image manifest.
    Manifest(ImageManifest),
}

/// Which kind a JSON document says it is, by its own `mediaType` or its shape.
pub fn sniff_kind(value: &Value) -> Kind {
    let Some(obj) = value.as_object() else {
        return Kind::Unknown;
    };
    if let Some(m) = obj.get("mediaType").and_then(Value::as_str) {
        let k = Kind::of(m);
        if k != Kind::Unknown {
            return k;
        }
    }
    if obj.contains_key("manifests") {
        Kind::Index
    } else if obj.contains_key("layers") || obj.contains_key("config") {
        Kind::Manifest
    } else if obj.contains_key("rootfs") {
        Kind::ImageConfig
    } else {
        Kind::Unknown
    }
}

/// Parses an index or manifest, checking the JSON hazards first and rejecting
/// documents that are both (CVE-2021-41190).
///
/// `expected` is the kind the referencing descriptor announces; when it is
/// [`Kind::Unknown`] the document's own media type or shape decides.
///
/// # Errors
/// See [`DocumentError`].
pub fn parse_document(bytes: &[u8], expected: Kind) -> Result<Document, DocumentError> {
    check_json(bytes)?;
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| DocumentError::Syntax(e.to_string()))?;
    document_from_value(value, expected)
}

/// [`parse_document`] for a value already parsed from bytes that passed
/// [`check_json`] (so callers that also need the raw value parse once).
///
/// # Errors
/// See [`DocumentError`].
pub(crate) fn document_from_value(value: Value, expected: Kind) -> Result<Document, DocumentError> {
    let obj = value
        .as_object()
        .ok_or_else(|| DocumentError::Syntax("the document is not a JSON object".into()))?;
    let has_manifests = obj.contains_key("manifests");
    let has_image_fields = obj.contains_key("layers") || obj.contains_key("config");
    if has_manifests && has_image_fields {
        return Err(DocumentError::Ambiguous(
            "it has both \"manifests\" and \"config\"/\"layers\"".into(),
        ));
    }
    let kind = match expected {
        Kind::Index | Kind::Manifest => expected,
        _ => sniff_kind(&value),
    };
    match kind {
        Kind::Index => {
            if has_image_fields {
                return Err(DocumentError::Ambiguous(
                    "an index with \"config\"/\"layers\"".into(),
                ));
            }
            serde_json::from_value(value)
                .map(Document::Index)
                .map_err(|e| DocumentError::Syntax(e.to_string()))
        }
        Kind::Manifest => {
            if has_manifests {
                return Err(DocumentError::Ambiguous(
                    "a manifest with \"manifests\"".into(),
                ));
            }
            serde_json::from_value(value)
                .map(Document::Manifest)
                .map_err(|e| DocumentError::Syntax(e.to_string()))
        }
        _ => Err(DocumentError::Syntax(
            "it is neither an image index nor an image manifest".into(),
        )),
    }
}

/// Parses an image config (after the JSON hazard checks).
///
/// # Errors
/// See [`DocumentError`].
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, DocumentError> {
    check_json(bytes)?;
    serde_json::from_slice(bytes).map_err(|e| DocumentError::Syntax(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_and_case_folded_keys_are_caught() {
        assert_eq!(
            check_json(br#"{"layers":[],"layers":[]}"#),
            Err(DocumentError::DuplicateKey("layers".into()))
        );
        assert!(matches!(
            check_json(br#"{"schemaVersion":2,"Layers":[]}"#),
            Err(DocumentError::CaseFoldedKey {
                known: "layers",
                ..
            })
        ));
        assert!(matches!(
            check_json(br#"{"a":{"b":[{"x":1,"x":2}]}}"#),
            Err(DocumentError::DuplicateKey(_))
        ));
        assert!(check_json(br#"{"a":1} x"#).is_err());
        assert!(check_json(b"\xff").is_err());
        assert!(check_json(br#"{"x-unknown":{"deep":[1,2,{"k":null}]}}"#).is_ok());
        // User content may use any key; only spec levels are checked.
        assert!(check_json(br#"{"config":{"Labels":{"Size":"1","Digest":"x"}}}"#).is_ok());
        assert!(check_json(br#"[{"Config":"x.json","Layers":[]}]"#).is_ok());
        assert!(matches!(
            check_json(br#"{"layers":[{"mediaType":"a/b","Digest":"x"}]}"#),
            Err(DocumentError::CaseFoldedKey {
                known: "digest",
                ..
            })
        ));
        // Duplicates are refused at any depth, and absurd nesting is refused.
        assert!(check_json(br#"{"config":{"Labels":{"a":"1","a":"2"}}}"#).is_err());
        let deep = format!("{}{}", "[".repeat(120), "]".repeat(120));
        assert!(check_json(deep.as_bytes()).is_err());
    }

    #[test]
    fn ambiguous_documents_are_rejected() {
        let both = br#"{"schemaVersion":2,"manifests":[],"layers":[]}"#;
        assert!(matches!(
            parse_document(both, Kind::Manifest),
            Err(DocumentError::Ambiguous(_))
        ));
        let idx_as_manifest = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_document(idx_as_manifest, Kind::Manifest),
            Err(DocumentError::Ambiguous(_))
        ));
        assert!(matches!(
            parse_document(idx_as_manifest, Kind::Unknown),
            Ok(Document::Index(_))
        ));
    }

    #[test]
    fn null_manifests_and_unknown_fields_are_tolerated() {
        let d = parse_document(
            br#"{"schemaVersion":2,"manifests":null,"x":1}"#,
            Kind::Index,
        )
        .unwrap();
        let Document::Index(i) = d else { panic!() };
        assert!(i.entries().is_empty());
        let desc: Descriptor = serde_json::from_str(
            r#"{"mediaType":"x/y","digest":"sha256:00","size":1,"zz":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(desc.extra["zz"]["a"], 1);
        assert_eq!(desc.kind(), Kind::Unknown);
    }
}
