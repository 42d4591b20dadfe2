//! docker-archive metadata: `manifest.json`, RepoTags and `repositories`,
//! and the OCI view ocikit builds for archives that have no manifest blobs
//! (`docker save` before Docker 25, skopeo, go-containerregistry).
//!
//! The manifest ocikit builds is deterministic: an OCI image manifest with the
//! archive's config and layers in order, compact JSON with a fixed key order,
//! so the same archive always yields the same manifest digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::digest::Digest;
use crate::reference::normalize_docker_name;
use crate::spec::{
    media_type, Compression, Descriptor, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
};

/// Largest `manifest.json` read (containers/image's limit; CVE-2023-25153).
pub(crate) const MAX_MANIFEST_JSON: u64 = 1 << 20;

/// One image in `manifest.json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct ManifestItem {
    /// Path of the config member.
    #[serde(rename = "Config")]
    pub config: String,
    /// Familiar `name:tag` references.
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer members, base first.
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
    /// Descriptors of layers by DiffID (foreign layers; all layers since Docker 25).
    #[serde(
        rename = "LayerSources",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub layer_sources: Option<BTreeMap<String, Descriptor>>,
}

/// The keys of a `manifest.json` item, as Docker writes them.
const MANIFEST_KEYS: [&str; 4] = ["Config", "RepoTags", "Layers", "LayerSources"];

/// Parses `manifest.json`: a JSON array (`null` is refused, as `docker load`
/// does), also returning notes. Keys are matched as Go's
/// `encoding/json` matches them (which `docker load` and skopeo use): an exact
/// match first, else one that differs only in case. Jib writes `config`,
/// `repoTags` and `layers`; such archives are read, with a note.
///
/// # Errors
/// A sentence saying what is wrong.
pub(crate) fn parse_manifest_json_noted(
    bytes: &[u8],
) -> Result<(Vec<ManifestItem>, Vec<String>), String> {
    crate::spec::check_json(bytes).map_err(|e| format!("manifest.json {e}"))?;
    let mut v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("manifest.json is not valid JSON: {e}"))?;
    if v.is_null() {
        return Err("manifest.json is null (an archive with no images is [])".into());
    }
    let mut folded = std::collections::BTreeSet::new();
    if let Some(items) = v.as_array_mut() {
        for item in items.iter_mut() {
            let Some(obj) = item.as_object_mut() else {
                continue;
            };
            for key in MANIFEST_KEYS {
                if obj.contains_key(key) {
                    continue;
                }
                let other = obj.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned();
                if let Some(other) = other {
                    if let Some(value) = obj.shift_remove(&other) {
                        obj.insert(key.to_string(), value);
                        folded.insert(other);
                    }
                }
            }
        }
    }
    let items = serde_json::from_value(v)
        .map_err(|e| format!("manifest.json is not a list of images: {e}"))?;
    let notes = if folded.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "manifest.json spells its keys {} (as Jib writes them); read as docker load reads them, case-insensitively",
            folded.into_iter().collect::<Vec<_>>().join(", ")
        )]
    };
    Ok((items, notes))
}

/// The tag part of a docker reference (`registry:5000/app:1.2` → `1.2`).
pub(crate) fn tag_part(reference: &str) -> Option<&str> {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    reference[slash..]
        .rfind(':')
        .map(|i| &reference[slash + i + 1..])
        .filter(|t| !t.is_empty())
}

/// Annotations for an `index.json` entry of a RepoTag, as Docker 25 writes:
/// the tag as `ref.name`, the normalised name as `io.containerd.image.name`.
pub(crate) fn tag_annotations(repo_tag: &str) -> Option<BTreeMap<String, String>> {
    let full = normalize_docker_name(repo_tag)?;
    let tag = tag_part(&full)?.to_string();
    Some(BTreeMap::from([
        (ANNOTATION_IMAGE_NAME.to_string(), full),
        (ANNOTATION_REF_NAME.to_string(), tag),
    ]))
}

/// The familiar form of a normalised name (`docker.io/library/busybox:1` →
/// `busybox:1`), as `manifest.json` RepoTags and `repositories` use.
pub fn familiar(full: &str) -> String {
    let rest = full.strip_prefix("docker.io/").unwrap_or(full);
    if full.starts_with("docker.io/") {
        rest.strip_prefix("library/").unwrap_or(rest).to_string()
    } else {
        rest.to_string()
    }
}

/// The media type for a layer stored with `compression`.
pub(crate) fn layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => media_type::OCI_LAYER_TAR,
        Compression::Gzip => media_type::OCI_LAYER_GZIP,
        Compression::Zstd => media_type::OCI_LAYER_ZSTD,
    }
}

/// A descriptor with just the three required fields.
pub(crate) fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: size as i64,
        urls: None,
        annotations: None,
        data: None,
        artifact_type: None,
        platform: None,
        extra: Default::default(),
    }
}

/// The manifest ocikit builds for an image that has none: deterministic bytes.
pub(crate) fn build_manifest(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    m.to_string().into_bytes()
}

/// `repositories`: `{"familiar name": {"tag": "<top layer diff_id hex>"}}`, as
/// Docker 25 writes it.
pub(crate) fn repositories(images: &[(Vec<String>, Option<String>)]) -> Vec<u8> {
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (tags, top) in images {
        let Some(top) = top else { continue };
        let hex = top.split_once(':').map_or(top.as_str(), |(_, h)| h);
        for t in tags {
            let slash = t.rfind('/').map_or(0, |i| i + 1);
            if let Some(i) = t[slash..].rfind(':') {
                repos
                    .entry(t[..slash + i].to_string())
                    .or_default()
                    .insert(t[slash + i + 1..].to_string(), hex.to_string());
            }
        }
    }
    serde_json::to_vec(&repos).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(tag_part("registry:5000/team/app:1.2"), Some("1.2"));
        assert_eq!(tag_part("registry:5000/team/app"), None);
        assert_eq!(familiar("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(familiar("docker.io/team/app:2"), "team/app:2");
        assert_eq!(familiar("registry:5000/x:1"), "registry:5000/x:1");
        let a = tag_annotations("busybox").unwrap();
        assert_eq!(a[ANNOTATION_IMAGE_NAME], "docker.io/library/busybox:latest");
        assert_eq!(a[ANNOTATION_REF_NAME], "latest");
        assert!(parse_manifest_json_noted(b"null").is_err());
        assert!(parse_manifest_json_noted(b"[]").unwrap().0.is_empty());
    }
}
