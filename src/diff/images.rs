//! One image pair: manifest and config fields, then the layers, paired by
//! position (or flattened, with `layer-boundaries` ignored), decoded in
//! parallel.

use rayon::prelude::*;
use serde_json::{json, Value};

use super::entries::{apply_layer, compare_entries, decode_layer, last_wins, Decoded, Tree};
use super::{
    is_docker_or_oci_type_change, json_diff, json_of, Change, DiffError, DiffOptions, Difference,
    Ignore, Level,
};
use crate::digest::Digest;
use crate::image::Layer;
use crate::layer::LayerError;
use crate::resolve::Image;
use crate::spec::Descriptor;
use crate::store::Store;

pub(super) struct Sides<'s> {
    pub(super) a: &'s dyn Store,
    pub(super) b: &'s dyn Store,
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
    pub(super) fn images(
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
        let progress: &dyn crate::progress::Progress = match &options.progress {
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
                Layer::new(j.index - 1, 0, &j.desc, j.diff_id.clone())
                    .map_err(|e| LayerError::Io(std::io::Error::other(e.to_string())))
                    .and_then(|layer| {
                        decode_layer(
                            self.store(j.side),
                            &layer,
                            &options.limits,
                            options.content,
                            progress,
                        )
                    })
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
