//! Why two images differ: index → manifest → config (field by field) →
//! layers (paired by position) → entries → file bytes.
//!
//! Cost follows what differs: equal digests end the comparison at that
//! level, equal layer digests (or, with `compression` ignored, equal
//! DiffIDs) are never decompressed, and differing layers are decoded once
//! each, in parallel, as streams into per-entry signatures (metadata plus a
//! content hash; file bytes are kept only for `--content`, small text files).
//! Nothing is written to disk, so no entry name is ever used as a path.

mod entries;
mod images;
mod text;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};

use crate::layer::LayerError;
use crate::reference::Reference;
use crate::resolve::{self, PlatformChoice, ResolveError};
use crate::spec::{self, Descriptor, Document, Kind};
use crate::store::Store;

use images::Sides;

/// Largest text file whose bytes `--content` keeps for a unified diff.
pub(crate) const MAX_TEXT: u64 = 64 << 10;

/// What to leave out of the comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Ignore {
    /// Config and history `created`, `org.opencontainers.image.created`,
    /// entry mtimes.
    pub timestamps: bool,
    /// The config's `history`.
    pub history: bool,
    /// Index and manifest annotations.
    pub annotations: bool,
    /// Compare the flattened trees, not layer by layer (also leaves out
    /// `rootfs.diff_ids`, `history` and the manifest's layer list).
    pub layer_boundaries: bool,
    /// Compare what layers hold, not how they are stored: layer media types,
    /// blob digests and sizes, and the Docker/OCI media type family.
    pub compression: bool,
}

impl Ignore {
    /// Parses `timestamps,history,…`.
    ///
    /// # Errors
    /// An unknown word, named; an empty list or an empty element.
    pub fn parse(list: &str) -> Result<Ignore, String> {
        const KNOWN: &str = "timestamps, history, annotations, layer-boundaries, compression";
        let mut i = Ignore::default();
        for w in list.split(',').map(str::trim) {
            match w {
                "timestamps" => i.timestamps = true,
                "history" => i.history = true,
                "annotations" => i.annotations = true,
                "layer-boundaries" => i.layer_boundaries = true,
                "compression" => i.compression = true,
                "" => {
                    return Err(format!(
                        "--ignore: empty value in {list:?}: give a comma list of {KNOWN}"
                    ))
                }
                other => return Err(format!("--ignore: unknown {other:?} (known: {KNOWN})")),
            }
        }
        Ok(i)
    }
}

/// How to compare.
#[derive(Clone, Default)]
pub struct DiffOptions {
    /// Differences to leave out.
    pub ignore: Ignore,
    /// Keep a unified diff of changed small text files.
    pub content: bool,
    /// Compare only this platform of multi-platform images.
    pub platform: Option<PlatformChoice>,
    /// Told the stored size of the layers about to be decoded, then each
    /// byte read.
    pub progress: Option<std::sync::Arc<dyn crate::progress::Progress + Send>>,
    /// Caps for every layer read (the decompression limit).
    pub limits: crate::limits::Limits,
}

impl std::fmt::Debug for DiffOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffOptions")
            .field("ignore", &self.ignore)
            .field("content", &self.content)
            .field("platform", &self.platform)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Where a difference is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The index (or the top-level descriptor).
    Index,
    /// The image manifest.
    Manifest,
    /// The image config.
    Config,
    /// One layer's entries.
    Layer,
    /// The flattened tree (`--ignore layer-boundaries`).
    Rootfs,
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in B.
    Added,
    /// Only in A.
    Removed,
    /// In both, different.
    Changed,
    /// B's layer deletes the path (a whiteout only B has).
    Deleted,
    /// A's layer deletes the path and B's does not.
    Undeleted,
}

/// One difference.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// Level.
    pub level: Level,
    /// Platform of the image pair, for multi-platform indexes.
    pub platform: Option<String>,
    /// 1-based layer position (layer level).
    pub layer: Option<usize>,
    /// JSON path in the document, or the entry path.
    pub path: String,
    /// Kind.
    pub kind: Change,
    /// Fields of an entry that differ.
    pub fields: Vec<String>,
    /// A's side.
    pub left: Option<Value>,
    /// B's side.
    pub right: Option<Value>,
    /// A unified diff (`--content`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Difference {
    fn new(level: Level, path: impl Into<String>, kind: Change) -> Difference {
        Difference {
            level,
            platform: None,
            layer: None,
            path: path.into(),
            kind,
            fields: Vec::new(),
            left: None,
            right: None,
            diff: None,
        }
    }

    /// `config`, `layer 3`, `[linux/arm64] manifest`, …
    pub fn location(&self) -> String {
        let level = match (self.level, self.layer) {
            (Level::Layer, Some(n)) => format!("layer {n}"),
            (Level::Index, _) => "index".into(),
            (Level::Manifest, _) => "manifest".into(),
            (Level::Config, _) => "config".into(),
            (Level::Layer, None) => "layer".into(),
            (Level::Rootfs, _) => "rootfs".into(),
        };
        match &self.platform {
            Some(p) => format!("[{p}] {level}"),
            None => level,
        }
    }

    /// One readable line (without the unified diff).
    pub fn describe(&self) -> String {
        let short = |v: &Option<Value>| -> String {
            let s = v.as_ref().map(compact).unwrap_or_else(|| "-".into());
            if s.chars().count() > 100 {
                let t: String = s.chars().take(100).collect();
                format!("{t}…")
            } else {
                s
            }
        };
        let what = match (self.level, self.kind) {
            (Level::Layer | Level::Rootfs, Change::Changed) if self.fields == ["bytes"] => {
                format!(
                    "the tar bytes differ ({} → {}), the entries are equal",
                    short(&self.left),
                    short(&self.right)
                )
            }
            (Level::Layer | Level::Rootfs, Change::Changed) => {
                let parts: Vec<String> = self
                    .fields
                    .iter()
                    .map(|f| entry_field_change(f, self.left.as_ref(), self.right.as_ref()))
                    .collect();
                format!("changed: {}", parts.join(", "))
            }
            (Level::Layer | Level::Rootfs, Change::Added) => {
                format!("added ({})", entry_summary(self.right.as_ref()))
            }
            (Level::Layer | Level::Rootfs, Change::Removed) => {
                format!("removed ({})", entry_summary(self.left.as_ref()))
            }
            (_, Change::Deleted) => "deleted (a whiteout only in B)".into(),
            (_, Change::Undeleted) => "not deleted (a whiteout only in A)".into(),
            (_, Change::Changed) => format!("{} → {}", short(&self.left), short(&self.right)),
            (_, Change::Added) => format!("added: {}", short(&self.right)),
            (_, Change::Removed) => format!("removed: {}", short(&self.left)),
        };
        format!("{}: {}: {what}", self.location(), self.path)
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn entry_summary(v: Option<&Value>) -> String {
    let Some(v) = v else { return "-".into() };
    let t = v["type"].as_str().unwrap_or("?");
    match t {
        "file" => format!("file, {} B", v["size"].as_u64().unwrap_or(0)),
        "symlink" | "hardlink" => format!("{t} to {}", v["link"].as_str().unwrap_or("")),
        other => other.to_string(),
    }
}

fn entry_field_change(f: &str, l: Option<&Value>, r: Option<&Value>) -> String {
    let get = |v: Option<&Value>, k: &str| v.map(|v| compact(&v[k])).unwrap_or_default();
    match f {
        "content" => format!(
            "content ({} B → {} B)",
            l.and_then(|v| v["size"].as_u64()).unwrap_or(0),
            r.and_then(|v| v["size"].as_u64()).unwrap_or(0)
        ),
        "mode" => format!(
            "mode {} → {}",
            l.and_then(|v| v["mode"].as_str()).unwrap_or(""),
            r.and_then(|v| v["mode"].as_str()).unwrap_or("")
        ),
        other => format!("{other} {} → {}", get(l, other), get(r, other)),
    }
}

/// The result of [`diff`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffReport {
    /// Differences, in a fixed order (index, then per platform: manifest,
    /// config, layers by position and path).
    pub differences: Vec<Difference>,
    /// Layer blobs decompressed (each side counted).
    pub layers_decoded: usize,
}

impl DiffReport {
    /// No differences.
    pub fn identical(&self) -> bool {
        self.differences.is_empty()
    }

    /// The JSON form (`schemaVersion` 1; see docs/json.md).
    pub fn to_json(&self) -> Value {
        json!({
            "schemaVersion": 1,
            "identical": self.identical(),
            "first": self.differences.first().map(|d| format!("{}: {}", d.location(), d.path)),
            "layers_decoded": self.layers_decoded,
            "differences": self.differences,
        })
    }
}

/// Why a diff could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// A reference or document could not be resolved.
    #[error("{side}: {source}")]
    Resolve {
        /// `A` or `B`.
        side: &'static str,
        /// The error.
        source: ResolveError,
    },
    /// A layer is unreadable or does not match its digests.
    #[error("{side}: layer {index} ({digest}) {source}")]
    Layer {
        /// `A` or `B`.
        side: &'static str,
        /// 1-based position.
        index: usize,
        /// Its digest.
        digest: String,
        /// The error.
        source: LayerError,
    },
    /// A document is not what it should be.
    #[error("{side}: {message}")]
    Document {
        /// `A` or `B`.
        side: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Compares the images `a_ref` in `a` and `b_ref` in `b`.
///
/// # Errors
/// See [`DiffError`]; differences are not errors.
pub fn diff(
    a: &dyn Store,
    a_ref: Option<&Reference>,
    b: &dyn Store,
    b_ref: Option<&Reference>,
    options: &DiffOptions,
) -> Result<DiffReport, DiffError> {
    let ra = |source| DiffError::Resolve { side: "A", source };
    let rb = |source| DiffError::Resolve { side: "B", source };
    let mut out = Vec::new();
    let mut decoded = 0usize;
    let sides = Sides { a, b };
    if let Some(p) = &options.platform {
        let ia = resolve::resolve_image(a, a_ref, p).map_err(ra)?;
        let ib = resolve::resolve_image(b, b_ref, p).map_err(rb)?;
        sides.images(&ia, &ib, None, options, &mut out, &mut decoded)?;
        return Ok(DiffReport {
            differences: out,
            layers_decoded: decoded,
        });
    }
    let da = resolve::find_descriptor(a, a_ref).map_err(ra)?;
    let db = resolve::find_descriptor(b, b_ref).map_err(rb)?;
    let na = resolve::load_node(a, &da, "manifest").map_err(ra)?;
    let nb = resolve::load_node(b, &db, "manifest").map_err(rb)?;
    let (ka, kb) = (resolve::node_kind(&na), resolve::node_kind(&nb));
    if da.digest == db.digest && na.bytes == nb.bytes {
        return Ok(DiffReport::default());
    }
    match (ka, kb) {
        (Kind::Index, Kind::Index) => {
            let va = json_of(&na.bytes, "A")?;
            let vb = json_of(&nb.bytes, "B")?;
            let ig = options.ignore;
            json_diff(Level::Index, "", &va, &vb, &mut out, &|p| {
                p == "manifests"
                    || p.starts_with("manifests[")
                    || (ig.annotations && p.starts_with("annotations"))
                    || (ig.compression && p == "mediaType")
                    || (ig.timestamps && p == "annotations.org.opencontainers.image.created")
            });
            let ea = index_images(&na.bytes, "A")?;
            let eb = index_images(&nb.bytes, "B")?;
            let keys: BTreeSet<&String> = ea.keys().chain(eb.keys()).collect();
            for k in keys {
                match (ea.get(k), eb.get(k)) {
                    (Some(x), Some(y)) => {
                        if x.digest == y.digest {
                            continue;
                        }
                        let ix = resolve::image_of_descriptor(a, x, &PlatformChoice::Host)
                            .map_err(ra)?;
                        let iy = resolve::image_of_descriptor(b, y, &PlatformChoice::Host)
                            .map_err(rb)?;
                        sides.images(&ix, &iy, Some(k.clone()), options, &mut out, &mut decoded)?;
                    }
                    (Some(x), None) => {
                        let mut d = Difference::new(
                            Level::Index,
                            format!("manifests[{k}]"),
                            Change::Removed,
                        );
                        d.left = Some(json!(x.digest));
                        out.push(d);
                    }
                    (None, Some(y)) => {
                        let mut d =
                            Difference::new(Level::Index, format!("manifests[{k}]"), Change::Added);
                        d.right = Some(json!(y.digest));
                        out.push(d);
                    }
                    (None, None) => {}
                }
            }
        }
        _ => {
            if ka != kb && !options.ignore.compression {
                let mut d = Difference::new(Level::Index, "mediaType", Change::Changed);
                d.left = Some(json!(da.media_type));
                d.right = Some(json!(db.media_type));
                out.push(d);
            }
            let ia = resolve::image_of_descriptor(a, &da, &PlatformChoice::Host).map_err(ra)?;
            let ib = resolve::image_of_descriptor(b, &db, &PlatformChoice::Host).map_err(rb)?;
            sides.images(&ia, &ib, None, options, &mut out, &mut decoded)?;
        }
    }
    Ok(DiffReport {
        differences: out,
        layers_decoded: decoded,
    })
}

fn json_of(bytes: &[u8], side: &'static str) -> Result<Value, DiffError> {
    serde_json::from_slice(bytes).map_err(|e| DiffError::Document {
        side,
        message: format!("not JSON: {e}"),
    })
}

/// An index's images by platform (`linux/arm64/v8`; `#N` when none).
fn index_images(
    bytes: &[u8],
    side: &'static str,
) -> Result<BTreeMap<String, Descriptor>, DiffError> {
    let idx = match spec::parse_document(bytes, Kind::Index) {
        Ok(Document::Index(i)) => i,
        Ok(_) => {
            return Err(DiffError::Document {
                side,
                message: "the index is not an index".into(),
            })
        }
        Err(e) => {
            return Err(DiffError::Document {
                side,
                message: format!("the index: {e}"),
            })
        }
    };
    let mut out = BTreeMap::new();
    for (i, d) in idx.manifests.iter().flatten().enumerate() {
        if !resolve::is_candidate(d) {
            continue;
        }
        let key = match &d.platform {
            Some(p) => p.to_string(),
            None => format!("#{i}"),
        };
        out.entry(key).or_insert_with(|| d.clone());
    }
    Ok(out)
}

/// Recursive JSON comparison; `skip(path)` leaves a path (and below) out.
fn json_diff(
    level: Level,
    path: &str,
    a: &Value,
    b: &Value,
    out: &mut Vec<Difference>,
    skip: &dyn Fn(&str) -> bool,
) {
    json_diff_at(level, path, Some(a), Some(b), out, skip);
}

/// One path of the comparison; a side that lacks it is `None`.
fn json_diff_at(
    level: Level,
    path: &str,
    a: Option<&Value>,
    b: Option<&Value>,
    out: &mut Vec<Difference>,
    skip: &dyn Fn(&str) -> bool,
) {
    if !path.is_empty() && skip(&wild(path)) {
        return;
    }
    let (kind, left, right) = match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                json_diff_at(level, &p, x.get(k), y.get(k), out, skip);
            }
            return;
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                json_diff_at(
                    level,
                    &format!("{path}[{i}]"),
                    x.get(i),
                    y.get(i),
                    out,
                    skip,
                );
            }
            return;
        }
        (Some(l), Some(r)) if l == r => return,
        (Some(l), Some(r)) => (Change::Changed, Some(l), Some(r)),
        (Some(l), None) => (Change::Removed, Some(l), None),
        (None, Some(r)) => (Change::Added, None, Some(r)),
        (None, None) => return,
    };
    let mut d = Difference::new(level, path, kind);
    d.left = left.cloned();
    d.right = right.cloned();
    out.push(d);
}

/// `history[3].created` → `history[*].created`.
fn wild(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[*]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

fn is_docker_or_oci_type_change(a: &Value, b: &Value) -> bool {
    let family = |v: &Value| -> Option<String> {
        let s = v.as_str()?;
        Some(
            s.replace(
                "application/vnd.docker.distribution.manifest.v2+json",
                "manifest",
            )
            .replace("application/vnd.oci.image.manifest.v1+json", "manifest")
            .replace("application/vnd.docker.container.image.v1+json", "config")
            .replace("application/vnd.oci.image.config.v1+json", "config"),
        )
    };
    family(a).is_some() && family(a) == family(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_words_parse_and_unknown_is_refused() {
        let i = Ignore::parse("timestamps, layer-boundaries").unwrap();
        assert!(i.timestamps && i.layer_boundaries && !i.history);
        assert!(Ignore::parse("bogus").unwrap_err().contains("bogus"));
        for empty in ["", ",", "history,", " , timestamps"] {
            assert!(Ignore::parse(empty).unwrap_err().contains("empty"));
        }
    }

    #[test]
    fn json_paths_and_wildcards() {
        let a = json!({"created": "1", "history": [{"created": "1", "x": 1}], "config": {"Env": ["A"]}});
        let b = json!({"created": "2", "history": [{"created": "2", "x": 2}], "config": {"Env": ["A", "B"]}});
        let mut out = Vec::new();
        json_diff(Level::Config, "", &a, &b, &mut out, &|p| {
            p == "history[*].created"
        });
        let paths: Vec<_> = out.iter().map(|d| (d.path.as_str(), d.kind)).collect();
        assert_eq!(
            paths,
            vec![
                ("config.Env[1]", Change::Added),
                ("created", Change::Changed),
                ("history[0].x", Change::Changed)
            ]
        );
    }
}
