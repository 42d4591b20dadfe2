//! Why two images differ: index → manifest → config (field by field) →
//! layers (paired by position) → entries → file bytes.
//!
//! Cost follows what differs: equal digests end the comparison at that
//! level, equal layer digests (or, with `compression` ignored, equal
//! DiffIDs) are never decompressed, and differing layers are decoded once
//! each, in parallel, as streams into per-entry signatures (metadata plus a
//! content hash; file bytes are kept only for `--content`, small text files).
//! Nothing is written to disk, so no entry name is ever used as a path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::layer::{self, LayerError};
use crate::reference::Reference;
use crate::resolve::{self, Image, PlatformChoice, ResolveError};
use crate::spec::{self, Descriptor, Document, Kind};
use crate::store::Store;
use crate::tarstream::EntryKind;

/// Largest text file whose bytes `--content` keeps for a unified diff.
pub const MAX_TEXT: u64 = 64 << 10;

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
    pub progress: Option<std::sync::Arc<dyn crate::verify::Progress + Send>>,
}

impl std::fmt::Debug for DiffOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffOptions")
            .field("ignore", &self.ignore)
            .field("content", &self.content)
            .field("platform", &self.platform)
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

struct Sides<'s> {
    a: &'s dyn Store,
    b: &'s dyn Store,
}

/// A layer to decode: side, position, descriptor, expected DiffID.
struct Job {
    side: usize,
    index: usize,
    desc: Descriptor,
    diff_id: Option<Digest>,
}

impl Sides<'_> {
    fn store(&self, side: usize) -> &dyn Store {
        if side == 0 {
            self.a
        } else {
            self.b
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn images(
        &self,
        ia: &Image,
        ib: &Image,
        platform: Option<String>,
        options: &DiffOptions,
        out: &mut Vec<Difference>,
        decoded: &mut usize,
    ) -> Result<(), DiffError> {
        if ia.manifest.digest == ib.manifest.digest {
            return Ok(());
        }
        let start = out.len();
        let ig = options.ignore;
        let ma = json_of(&ia.manifest.bytes, "A")?;
        let mb = json_of(&ib.manifest.bytes, "B")?;
        // Manifest fields; config and layers are compared below.
        json_diff(Level::Manifest, "", &ma, &mb, out, &|p| {
            p == "config.digest"
                || p == "config.size"
                || p.starts_with("layers")
                || (ig.annotations && p.starts_with("annotations"))
                || (ig.timestamps && p == "annotations.org.opencontainers.image.created")
                || (ig.compression && (p == "mediaType" || p == "config.mediaType"))
        });
        // Docker ↔ OCI of the same kind is the "compression"/format family.
        if ig.compression {
            out.retain(|d| {
                !(d.level == Level::Manifest
                    && d.kind == Change::Changed
                    && matches!(
                        (&d.left, &d.right),
                        (Some(l), Some(r)) if is_docker_or_oci_type_change(l, r)
                    ))
            });
        }

        // Config.
        let ca = ia
            .config(self.a)
            .map_err(|source| DiffError::Resolve { side: "A", source })?;
        let cb = ib
            .config(self.b)
            .map_err(|source| DiffError::Resolve { side: "B", source })?;
        let (cfg_a, cfg_b) = match (&ca, &cb) {
            (Some(x), Some(y)) => (json_of(&x.bytes, "A")?, json_of(&y.bytes, "B")?),
            _ => (Value::Null, Value::Null),
        };
        if let (Some(x), Some(y)) = (&ca, &cb) {
            if x.digest != y.digest {
                let before = out.len();
                // rootfs.diff_ids follow from the layers, compared below.
                json_diff(Level::Config, "", &cfg_a, &cfg_b, out, &|p| {
                    p.starts_with("rootfs.diff_ids")
                        || (ig.timestamps && (p == "created" || p == "history[*].created"))
                        || ((ig.history || ig.layer_boundaries) && p.starts_with("history"))
                });
                let mut strict = Vec::new();
                json_diff(Level::Config, "", &cfg_a, &cfg_b, &mut strict, &|_| false);
                if out.len() == before && strict.is_empty() {
                    // Same fields, other bytes: key order or spacing.
                    let mut d = Difference::new(Level::Config, "(bytes)", Change::Changed);
                    d.left = Some(json!(x.digest.to_string()));
                    d.right = Some(json!(y.digest.to_string()));
                    out.push(d);
                }
            }
        }
        let ids = |cfg: &Value| -> Vec<Option<Digest>> {
            cfg["rootfs"]["diff_ids"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .map(|d| d.as_str().and_then(|s| s.parse().ok()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (ids_a, ids_b) = (ids(&cfg_a), ids(&cfg_b));
        let (la, lb) = (ia.layers(), ib.layers());

        if ig.layer_boundaries {
            let same = ids_a.len() == ids_b.len()
                && !ids_a.is_empty()
                && ids_a.iter().zip(&ids_b).all(|(x, y)| x.is_some() && x == y);
            let same_blobs =
                la.len() == lb.len() && la.iter().zip(lb).all(|(x, y)| x.digest == y.digest);
            if !(same || same_blobs) {
                let mut jobs = Vec::new();
                for (side, layers, ids) in [(0, la, &ids_a), (1, lb, &ids_b)] {
                    for (i, d) in layers.iter().enumerate() {
                        jobs.push(Job {
                            side,
                            index: i + 1,
                            desc: d.clone(),
                            diff_id: ids.get(i).cloned().flatten(),
                        });
                    }
                }
                let maps = self.decode(&jobs, options, decoded)?;
                let mut trees: [Tree; 2] = [Vec::new(), Vec::new()];
                for (job, (map, _)) in jobs.iter().zip(maps) {
                    apply_layer(&mut trees[job.side], map);
                }
                let [ta, tb] = trees;
                compare_entries(&ta, &tb, Level::Rootfs, None, options, out);
            }
        } else {
            let mut jobs = Vec::new();
            let mut unpaired = Vec::new();
            for i in 0..la.len().max(lb.len()) {
                match (la.get(i), lb.get(i)) {
                    (Some(x), Some(y)) => {
                        if !ig.compression && x.media_type != y.media_type {
                            let mut d = Difference::new(
                                Level::Manifest,
                                format!("layers[{i}].mediaType"),
                                Change::Changed,
                            );
                            d.left = Some(json!(x.media_type));
                            d.right = Some(json!(y.media_type));
                            out.push(d);
                        }
                        let (da, db) = (
                            ids_a.get(i).cloned().flatten(),
                            ids_b.get(i).cloned().flatten(),
                        );
                        if x.digest == y.digest {
                            if da != db {
                                // Same layer, different DiffIDs: a config
                                // that misdescribes its layer.
                                let mut d = Difference::new(
                                    Level::Config,
                                    format!("rootfs.diff_ids[{i}]"),
                                    Change::Changed,
                                );
                                d.left = da.map(|x| json!(x.to_string()));
                                d.right = db.map(|x| json!(x.to_string()));
                                out.push(d);
                            }
                            continue;
                        }
                        if ig.compression && da.is_some() && da == db {
                            continue;
                        }
                        jobs.push(Job {
                            side: 0,
                            index: i + 1,
                            desc: x.clone(),
                            diff_id: da,
                        });
                        jobs.push(Job {
                            side: 1,
                            index: i + 1,
                            desc: y.clone(),
                            diff_id: db,
                        });
                    }
                    (Some(x), None) => {
                        let mut d = Difference::new(
                            Level::Manifest,
                            format!("layers[{i}]"),
                            Change::Removed,
                        );
                        d.left = Some(json!(x.digest));
                        out.push(d);
                        unpaired.push(Job {
                            side: 0,
                            index: i + 1,
                            desc: x.clone(),
                            diff_id: ids_a.get(i).cloned().flatten(),
                        });
                    }
                    (None, Some(y)) => {
                        let mut d =
                            Difference::new(Level::Manifest, format!("layers[{i}]"), Change::Added);
                        d.right = Some(json!(y.digest));
                        out.push(d);
                        unpaired.push(Job {
                            side: 1,
                            index: i + 1,
                            desc: y.clone(),
                            diff_id: ids_b.get(i).cloned().flatten(),
                        });
                    }
                    (None, None) => {}
                }
            }
            // A layer only one side has (l3 = l2 + one layer): what it adds,
            // changes or deletes is the question, so its entries are listed
            // (whiteouts as deletions), against nothing on the other side.
            let maps = self.decode(&unpaired, options, decoded)?;
            for (job, (map, _)) in unpaired.iter().zip(maps) {
                let map = last_wins(map);
                let empty: Tree = Vec::new();
                let (l, r) = if job.side == 0 {
                    (&map, &empty)
                } else {
                    (&empty, &map)
                };
                compare_entries(l, r, Level::Layer, Some(job.index), options, out);
            }
            let maps = self.decode(&jobs, options, decoded)?;
            let mut it = jobs.iter().zip(maps);
            while let (Some((ja, (ma, ida))), Some((jb, (mb, idb)))) = (it.next(), it.next()) {
                let (ma, mb) = (last_wins(ma), last_wins(mb));
                let before = out.len();
                compare_entries(&ma, &mb, Level::Layer, Some(ja.index), options, out);
                if out.len() > before {
                    continue;
                }
                let strict = DiffOptions {
                    ignore: Ignore::default(),
                    ..options.clone()
                };
                let mut all = Vec::new();
                compare_entries(&ma, &mb, Level::Layer, Some(ja.index), &strict, &mut all);
                if !all.is_empty() {
                    // Only ignored fields (mtimes) differ.
                    continue;
                }
                let i = ja.index - 1;
                if ida == idb {
                    // The same tar, stored differently: compression.
                    if ig.compression {
                        continue;
                    }
                    for (f, l, r) in [
                        ("digest", json!(ja.desc.digest), json!(jb.desc.digest)),
                        ("size", json!(ja.desc.size), json!(jb.desc.size)),
                    ] {
                        if l != r {
                            let mut d = Difference::new(
                                Level::Manifest,
                                format!("layers[{i}].{f}"),
                                Change::Changed,
                            );
                            d.left = Some(l);
                            d.right = Some(r);
                            out.push(d);
                        }
                    }
                } else {
                    // The entries match, the tar bytes do not: format,
                    // entry order or padding.
                    let mut d = Difference::new(Level::Layer, "(tar stream)", Change::Changed);
                    d.layer = Some(ja.index);
                    d.fields = vec!["bytes".into()];
                    d.left = Some(json!(ida.to_string()));
                    d.right = Some(json!(idb.to_string()));
                    out.push(d);
                }
            }
        }
        for d in &mut out[start..] {
            d.platform = platform.clone();
        }
        Ok(())
    }

    /// Decodes every job's layer in parallel into entry signatures.
    fn decode(
        &self,
        jobs: &[Job],
        options: &DiffOptions,
        decoded: &mut usize,
    ) -> Result<Vec<Decoded>, DiffError> {
        *decoded += jobs.len();
        let progress: &dyn crate::verify::Progress = match &options.progress {
            Some(p) => p.as_ref(),
            None => &(),
        };
        if !jobs.is_empty() {
            progress.begin(
                jobs.iter()
                    .map(|j| u64::try_from(j.desc.size).unwrap_or(0))
                    .sum(),
            );
        }
        jobs.par_iter()
            .map(|j| {
                let side = if j.side == 0 { "A" } else { "B" };
                decode_layer(
                    self.store(j.side),
                    &j.desc,
                    j.diff_id.as_ref(),
                    options.content,
                    progress,
                )
                .map_err(|source| DiffError::Layer {
                    side,
                    index: j.index,
                    digest: j.desc.digest.clone(),
                    source,
                })
            })
            .collect()
    }
}

/// A decoded layer: its entries in order, and its DiffID.
type Decoded = (Vec<(Box<str>, Sig)>, Digest);

/// Entries sorted by path, one per path.
type Tree = Vec<(Box<str>, Sig)>;

/// An entry's type, as compared and printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum K {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    Other,
    Whiteout,
    Opaque,
}

impl K {
    fn as_str(self) -> &'static str {
        match self {
            K::File => "file",
            K::Dir => "dir",
            K::Symlink => "symlink",
            K::Hardlink => "hardlink",
            K::Char => "char",
            K::Block => "block",
            K::Fifo => "fifo",
            K::Other => "other",
            K::Whiteout => "whiteout",
            K::Opaque => "opaque",
        }
    }
}

/// The rarely set parts of an entry, boxed so that the common one stays
/// small.
#[derive(Debug, Clone, Default)]
struct Extra {
    link: Box<str>,
    xattrs: BTreeMap<String, String>,
    text: Option<Box<str>>,
}

static NO_XATTRS: BTreeMap<String, String> = BTreeMap::new();

/// One entry, as compared: 88 bytes, plus its path (a `Box<str>`, 16 bytes
/// and the path's own bytes) and, only when it has a link, xattrs or kept
/// text, an [`Extra`].
#[derive(Debug, Clone)]
struct Sig {
    sha256: [u8; 32],
    size: u64,
    uid: u64,
    gid: u64,
    mtime: i64,
    extra: Option<Box<Extra>>,
    nsec: u32,
    mode: u32,
    /// Position in its layer: among entries of one path the last wins.
    pos: u32,
    kind: K,
    has_sha: bool,
}

impl Sig {
    fn link(&self) -> &str {
        self.extra.as_ref().map_or("", |e| &e.link)
    }
    fn xattrs(&self) -> &BTreeMap<String, String> {
        self.extra.as_ref().map_or(&NO_XATTRS, |e| &e.xattrs)
    }
    fn text(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.text.as_deref())
    }
    fn sha256(&self) -> Option<String> {
        self.has_sha.then(|| hex(&self.sha256))
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "type": self.kind.as_str(),
            "mode": format!("{:04o}", self.mode),
            "uid": self.uid,
            "gid": self.gid,
            "mtime": if self.nsec == 0 { json!(self.mtime) } else { json!(format!("{}.{:09}", self.mtime, self.nsec)) },
        });
        if self.kind == K::File {
            v["size"] = json!(self.size);
            v["sha256"] = json!(self.sha256());
        }
        if !self.link().is_empty() {
            v["link"] = json!(self.link());
        }
        if !self.xattrs().is_empty() {
            v["xattrs"] = json!(self.xattrs());
        }
        v
    }
}

fn entry_path(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    let parts: Vec<&str> = s
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// The 32 bytes of a sha256 digest's hex.
fn sha_bytes(d: &Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    let h = d.encoded().as_bytes();
    for (i, o) in out.iter_mut().enumerate() {
        let n = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        *o = (n(h.get(2 * i).copied().unwrap_or(b'0')) << 4)
            | n(h.get(2 * i + 1).copied().unwrap_or(b'0'));
    }
    out
}

fn decode_layer(
    store: &dyn Store,
    desc: &Descriptor,
    diff_id: Option<&Digest>,
    keep_text: bool,
    progress: &dyn crate::verify::Progress,
) -> Result<Decoded, LayerError> {
    let digest: Digest = desc
        .digest
        .parse()
        .map_err(|e| LayerError::Io(io::Error::other(format!("bad digest: {e}"))))?;
    let compression = match desc.kind() {
        Kind::Layer { compression, .. } => compression,
        _ => {
            return Err(LayerError::Io(io::Error::other(format!(
                "has media type {:?}, not a layer type",
                desc.media_type
            ))))
        }
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    let walked = layer::walk_stored_layer(
        store,
        &digest,
        desc.size,
        compression,
        diff_id,
        progress,
        |tar, e| {
            let mut hasher = Hasher::new(Algorithm::Sha256);
            let mut text: Option<Vec<u8>> =
                (keep_text && e.kind == EntryKind::Regular && e.size <= MAX_TEXT).then(Vec::new);
            layer::read_entry_data(tar, &mut buf, |chunk| {
                hasher.update(chunk);
                if let Some(t) = &mut text {
                    t.extend_from_slice(chunk);
                }
            })?;
            let path = entry_path(&e.path);
            let base = path.rsplit('/').next().unwrap_or("");
            let (key, kind) = if base == ".wh..wh..opq" {
                (path.clone(), K::Opaque)
            } else if let Some(t) = base.strip_prefix(".wh.") {
                let parent = &path[..path.len() - base.len()];
                (format!("{parent}{t}"), K::Whiteout)
            } else {
                let k = match e.kind {
                    EntryKind::Regular => K::File,
                    EntryKind::Directory => K::Dir,
                    EntryKind::Symlink => K::Symlink,
                    EntryKind::Hardlink => K::Hardlink,
                    EntryKind::Char => K::Char,
                    EntryKind::Block => K::Block,
                    EntryKind::Fifo => K::Fifo,
                    EntryKind::Other(_) => K::Other,
                };
                (path, k)
            };
            let whiteout = kind == K::Whiteout || kind == K::Opaque;
            let link = match e.kind {
                EntryKind::Hardlink => entry_path(&e.link),
                EntryKind::Symlink => String::from_utf8_lossy(&e.link).into_owned(),
                _ => String::new(),
            };
            let xattrs: BTreeMap<String, String> = e
                .xattrs
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), hex(v)))
                .collect();
            let text = text.and_then(|t| String::from_utf8(t).ok());
            let extra = (!link.is_empty() || !xattrs.is_empty() || text.is_some()).then(|| {
                Box::new(Extra {
                    link: link.into_boxed_str(),
                    xattrs,
                    text: text.map(String::into_boxed_str),
                })
            });
            let (mtime, nsec) = if whiteout {
                (0, 0)
            } else {
                (e.mtime, e.mtime_nsec)
            };
            let sig = Sig {
                kind,
                size: if kind == K::File { e.size } else { 0 },
                has_sha: kind == K::File,
                sha256: if kind == K::File {
                    sha_bytes(&hasher.finish())
                } else {
                    [0; 32]
                },
                mode: if whiteout { 0 } else { e.mode },
                uid: if whiteout { 0 } else { e.uid },
                gid: if whiteout { 0 } else { e.gid },
                mtime,
                nsec,
                extra,
                pos: u32::try_from(out.len()).unwrap_or(u32::MAX),
            };
            out.push((key.into_boxed_str(), sig));
            Ok(layer::Visit::Continue)
        },
    )?;
    let d = walked.ok_or_else(|| LayerError::Io(io::Error::other("the walk stopped early")))?;
    Ok((out, d.diff_id))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sorts a layer's entries by path, keeping the last entry of each path
/// (as on disk). In place: no second copy of the entries.
fn last_wins(mut v: Vec<(Box<str>, Sig)>) -> Tree {
    v.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.pos.cmp(&b.1.pos)));
    v.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            std::mem::swap(later, kept);
            true
        } else {
            false
        }
    });
    v
}

/// The entries of `tree` (sorted) whose path is `prefix` or starts with
/// `prefix/` (every path for `/`): their index range.
fn subtree(tree: &Tree, p: &str) -> std::ops::Range<usize> {
    let prefix = if p == "/" {
        "/".to_string()
    } else {
        format!("{p}/")
    };
    let start = tree.partition_point(|(k, _)| **k < *prefix);
    let len = tree[start..]
        .iter()
        .take_while(|(k, _)| k.starts_with(&prefix))
        .count();
    start..start + len
}

/// Removals of lower entries by one layer, by path: the position of the
/// first entry that removes the path itself, and of the first that removes
/// what is under it (u32::MAX: none).
type Removals = HashMap<Box<str>, (u32, u32)>;

/// Whether a lower entry at `k` is removed by an entry before `before`.
fn removed(r: &Removals, k: &str, before: u32) -> bool {
    if r.is_empty() {
        return false;
    }
    if r.get(k).is_some_and(|&(s, _)| s < before) {
        return true;
    }
    k.match_indices('/').any(|(i, _)| {
        let a = if i == 0 { "/" } else { &k[..i] };
        r.get(a).is_some_and(|&(_, c)| c < before)
    })
}

/// Applies one layer's entries to an in-memory tree (whiteouts hide lower
/// paths only; opaque markers clear lower children; hardlinks take their
/// target's content). Paths are compared as written: parent symlinks are
/// not resolved. The layer's entries are sorted in place and merged in, so
/// a tree costs its entries and nothing per node.
fn apply_layer(tree: &mut Tree, entries: Vec<(Box<str>, Sig)>) {
    let mut removals: Removals = HashMap::new();
    let mut note = |p: &str, pos: u32, itself: bool| {
        let e = removals.entry(p.into()).or_insert((u32::MAX, u32::MAX));
        if itself {
            e.0 = e.0.min(pos);
        }
        e.1 = e.1.min(pos);
    };
    let mut links: Vec<(Box<str>, u32)> = Vec::new();
    for (path, sig) in &entries {
        match sig.kind {
            K::Whiteout => note(path, sig.pos, true),
            K::Opaque => {
                let dir = path.trim_end_matches("/.wh..wh..opq");
                let dir = if dir.is_empty() { "/" } else { dir };
                note(dir, sig.pos, false);
            }
            kind => {
                if kind == K::Hardlink {
                    links.push((path.clone(), sig.pos));
                }
                if kind != K::Dir && !subtree(tree, path).is_empty() {
                    note(path, sig.pos, false);
                }
            }
        }
    }
    // What this layer adds, in place (no second copy of a large layer).
    let mut upper = entries;
    upper.retain(|(_, s)| !matches!(s.kind, K::Whiteout | K::Opaque));
    upper.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.pos.cmp(&b.1.pos)));
    // Hardlinks, in layer order: the target as it was at that point.
    for (path, pos) in links {
        let Ok(me) = upper.binary_search_by(|(k, s)| (&**k, s.pos).cmp(&(&*path, pos))) else {
            continue;
        };
        let target: Box<str> = upper[me].1.link().into();
        let same = upper.partition_point(|(k, s)| (&**k, s.pos) < (&*target, pos));
        let found = match same.checked_sub(1).map(|i| &upper[i]) {
            Some((k, s)) if **k == *target => Some(s.clone()),
            _ => tree
                .binary_search_by(|(k, _)| (**k).cmp(&*target))
                .ok()
                .filter(|_| !removed(&removals, &target, pos))
                .map(|i| tree[i].1.clone()),
        };
        if let Some(mut t) = found {
            t.kind = K::File;
            t.pos = pos;
            upper[me].1 = t;
        }
    }
    let upper = last_wins(upper);
    if tree.is_empty() {
        *tree = upper;
        return;
    }
    // Merged in place: the lower entries that stay, then the new ones.
    tree.retain(|(k, _)| {
        upper.binary_search_by(|(u, _)| (**u).cmp(k)).is_err() && !removed(&removals, k, u32::MAX)
    });
    tree.extend(upper);
    tree.sort_unstable_by(|a, b| a.0.cmp(&b.0));
}

fn compare_entries(
    a: &Tree,
    b: &Tree,
    level: Level,
    layer: Option<usize>,
    options: &DiffOptions,
    out: &mut Vec<Difference>,
) {
    let (mut i, mut j) = (0, 0);
    loop {
        let (k, x, y) = match (a.get(i), b.get(j)) {
            (Some((ka, sa)), Some((kb, sb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (ka, Some(sa), None)
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (kb, None, Some(sb))
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (ka, Some(sa), Some(sb))
                }
            },
            (Some((ka, sa)), None) => {
                i += 1;
                (ka, Some(sa), None)
            }
            (None, Some((kb, sb))) => {
                j += 1;
                (kb, None, Some(sb))
            }
            (None, None) => break,
        };
        let mut d = match (x, y) {
            (Some(x), Some(y)) => {
                let mut fields = Vec::new();
                if x.kind != y.kind {
                    fields.push("type");
                }
                if (x.has_sha, x.sha256) != (y.has_sha, y.sha256) || x.size != y.size {
                    fields.push("content");
                }
                if x.mode != y.mode {
                    fields.push("mode");
                }
                if x.uid != y.uid {
                    fields.push("uid");
                }
                if x.gid != y.gid {
                    fields.push("gid");
                }
                if !options.ignore.timestamps && (x.mtime, x.nsec) != (y.mtime, y.nsec) {
                    fields.push("mtime");
                }
                if x.xattrs() != y.xattrs() {
                    fields.push("xattrs");
                }
                if x.link() != y.link() {
                    fields.push("link");
                }
                if fields.is_empty() {
                    continue;
                }
                let mut d = Difference::new(level, k.to_string(), Change::Changed);
                d.fields = fields.into_iter().map(String::from).collect();
                if options.content && d.fields.iter().any(|f| f == "content") {
                    if let (Some(l), Some(r)) = (x.text(), y.text()) {
                        d.diff = Some(unified(l, r));
                    }
                }
                d
            }
            (Some(x), None) => {
                let kind = if x.kind == K::Whiteout {
                    Change::Undeleted
                } else {
                    Change::Removed
                };
                Difference::new(level, k.to_string(), kind)
            }
            (None, Some(y)) => {
                let kind = if y.kind == K::Whiteout {
                    Change::Deleted
                } else {
                    Change::Added
                };
                Difference::new(level, k.to_string(), kind)
            }
            (None, None) => continue,
        };
        d.layer = layer;
        d.left = x.map(|s| s.to_json());
        d.right = y.map(|s| s.to_json());
        out.push(d);
    }
}

/// A short unified diff of two texts (whole-file hunk, changed lines only
/// with up to 3 lines of context).
fn unified(a: &str, b: &str) -> String {
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    // Longest common subsequence table (files are at most 64 KiB).
    let (n, m) = (la.len(), lb.len());
    if n * m > 4_000_000 {
        return format!("(too many lines to diff: {n} and {m})");
    }
    let mut t = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if la[i] == lb[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && la[i] == lb[j] {
            ops.push((' ', la[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || t[i][j + 1] >= t[i + 1][j]) {
            ops.push(('+', lb[j]));
            j += 1;
        } else {
            ops.push(('-', la[i]));
            i += 1;
        }
    }
    let keep: Vec<bool> = (0..ops.len())
        .map(|k| {
            let lo = k.saturating_sub(3);
            let hi = (k + 3).min(ops.len() - 1);
            ops[lo..=hi].iter().any(|(c, _)| *c != ' ')
        })
        .collect();
    let mut s = String::from("--- A\n+++ B\n");
    let mut gap = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if keep[k] {
            if gap {
                s.push_str("@@\n");
                gap = false;
            }
            s.push(*c);
            s.push_str(line);
            s.push('\n');
        } else {
            gap = true;
        }
    }
    s
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

    #[test]
    fn unified_diff_shows_changed_lines() {
        let d = unified("hello\nworld\n", "hello\nthere\n");
        assert!(
            d.contains("-world\n") && d.contains("+there\n") && d.contains(" hello\n"),
            "{d}"
        );
    }

    #[test]
    fn in_memory_layers_follow_whiteout_rules() {
        let mut pos = 0u32;
        let mut sig = |k: K| {
            pos += 1;
            Sig {
                kind: k,
                size: 0,
                sha256: [0; 32],
                has_sha: false,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
                nsec: 0,
                extra: None,
                pos,
            }
        };
        let mut t = Vec::new();
        apply_layer(
            &mut t,
            vec![
                ("/d".into(), sig(K::Dir)),
                ("/d/a".into(), sig(K::File)),
                ("/x".into(), sig(K::File)),
            ],
        );
        apply_layer(
            &mut t,
            vec![
                ("/d/new".into(), sig(K::File)),
                ("/d/.wh..wh..opq".into(), sig(K::Opaque)),
                ("/x".into(), sig(K::Whiteout)),
            ],
        );
        let keys: Vec<&str> = t.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, vec!["/d", "/d/new"]);
        // A hardlink takes its target as it was at that point: the lower
        // one before a whiteout, nothing after it; a non-directory replaces
        // lower children.
        let mut f = sig(K::File);
        f.size = 7;
        apply_layer(
            &mut t,
            vec![("/f".into(), f), ("/d/z".into(), sig(K::File))],
        );
        let link = |mut s: Sig, to: &str| {
            s.extra = Some(Box::new(Extra {
                link: to.into(),
                ..Extra::default()
            }));
            s
        };
        let l1 = ("/h1".into(), link(sig(K::Hardlink), "/f"));
        let wh = ("/f".into(), sig(K::Whiteout));
        let l2 = ("/h2".into(), link(sig(K::Hardlink), "/f"));
        let sl = ("/d".into(), sig(K::Symlink));
        apply_layer(&mut t, vec![l1, wh, l2, sl]);
        let got: Vec<(&str, &str, u64)> = t
            .iter()
            .map(|(k, s)| (&**k, s.kind.as_str(), s.size))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/d", "symlink", 0),
                ("/h1", "file", 7),
                ("/h2", "hardlink", 0)
            ]
        );
    }
}
