//! Garbage collection of a layout: plan, then apply.
//!
//! Marking starts from every `index.json` entry (tagged or not; untagged ones
//! only go with `--prune-untagged`) and walks indexes, manifests, configs and
//! layers ([`crate::graph::walk`]). Manifests whose `subject` is reachable
//! (referrers, found by scanning the stored blobs) are kept, recursively; a
//! referrer never keeps its subject alive.
//!
//! Sweeping only ever removes regular files `blobs/sha256/<hex>` and
//! `blobs/sha512/<hex>` that are unreachable, plus ocikit's own stale
//! temporary files; other names, other algorithm directories and everything
//! outside `blobs/` are left alone and reported.
//!
//! # Safety
//! gc runs only on a graph `verify` accepts. `index.json` is checked as every
//! writer checks it (`graph::check_index`); then any error met while
//! walking the indexes and manifests (missing, unparsable or schema-invalid
//! documents, invalid descriptors, nesting beyond the cap) means what the
//! graph keeps alive is not known for sure, so nothing is deleted (unless
//! forced). A blob path that is a directory or a symlink stops gc too.
//! The whole run holds the layout's writer lock; `index.json` is re-read before
//! anything is deleted, and a change made meanwhile (by a tool that ignores the
//! lock) aborts the sweep.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest::{Algorithm, Digest};
use crate::graph::{self, WalkOptions};
use crate::layout::{IndexFile, Layout, LayoutError, TMP_DIR};
use crate::spec::MAX_DOCUMENT_SIZE;
use crate::store::{Blob, BlobEntry, Store, StoreError};

/// Options of [`gc`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Plan only: change nothing.
    pub dry_run: bool,
    /// Go on despite a damaged graph or non-regular blob paths (they are kept).
    pub force: bool,
    /// Drop untagged `index.json` entries first.
    pub prune_untagged: bool,
}

/// Why gc refused or failed. Nothing was deleted when it refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    /// Taking the lock, reading or writing the layout failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Reading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A reachable index or manifest is missing, unparsable or invalid (an
    /// error verify reports), so what it keeps alive is not known for sure.
    #[error("{layout}: {detail}; the graph is damaged (verify refuses it), so gc deletes nothing (--force to collect what the rest of the graph shows unreachable)")]
    Damaged {
        /// The layout.
        layout: String,
        /// The first damaged blob, as verify would say it.
        detail: String,
    },
    /// A blob path that is not a regular file.
    #[error("{} is a {what}, not a regular blob file; gc deletes nothing (--force to leave it alone and go on)", path.display())]
    NonRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// `index.json` could not be read as an index.
    #[error("{}: {detail}; gc deletes nothing", path.display())]
    Index {
        /// index.json.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// `index.json` changed while gc was planning (a writer that ignores the lock).
    #[error("{} changed while gc was planning (another tool wrote it); nothing was deleted, run gc again", .0.display())]
    IndexChanged(PathBuf),
    /// Deleting failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A blob gc removes.
#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Its media type, when it is a document that says.
    #[serde(rename = "mediaType")]
    pub media_type: Option<String>,
    /// Why it goes.
    pub reason: String,
    /// Its path in the layout.
    pub path: String,
}

/// A file gc does not touch, and why.
#[derive(Debug, Clone, Serialize)]
pub struct LeftAlone {
    /// Its path in the layout.
    pub path: String,
    /// Why it stays.
    pub reason: String,
}

/// What gc did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// Whether this was a dry run.
    #[serde(rename = "dryRun")]
    pub dry_run: bool,
    /// Blobs removed.
    pub remove: Vec<Removal>,
    /// Bytes freed.
    pub bytes: u64,
    /// Number of blobs removed.
    pub blobs: usize,
    /// Stale temporary files removed.
    #[serde(rename = "tempFiles")]
    pub temp_files: Vec<String>,
    /// Untagged `index.json` entries dropped (`--prune-untagged`).
    pub pruned: Vec<String>,
    /// Blobs kept.
    pub kept: usize,
    /// Files left alone.
    #[serde(rename = "leftAlone")]
    pub left_alone: Vec<LeftAlone>,
}

/// A store whose `index.json` is replaced (for marking after a prune).
struct WithIndex<'a> {
    inner: &'a dyn Store,
    index: Vec<u8>,
}

impl Store for WithIndex<'_> {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn index_bytes(&self) -> Result<Vec<u8>, StoreError> {
        Ok(self.index.clone())
    }
    fn open_blob(&self, digest: &Digest) -> Result<Blob, StoreError> {
        self.inner.open_blob(digest)
    }
    fn blob_location(&self, digest: &Digest) -> PathBuf {
        self.inner.blob_location(digest)
    }
    fn list_blobs(&self) -> Result<Vec<BlobEntry>, StoreError> {
        self.inner.list_blobs()
    }
}

/// The `mediaType` a small JSON blob declares, for the report.
fn declared_media_type(store: &dyn Store, digest: &Digest, size: u64) -> Option<String> {
    if !(2..=MAX_DOCUMENT_SIZE).contains(&size) {
        return None;
    }
    let blob = store.open_blob(digest).ok()?;
    let mut head = [0u8; 1];
    if blob.read_at(&mut head, 0).ok()? != 1 || head[0] != b'{' {
        return None;
    }
    let mut bytes = Vec::with_capacity(size as usize);
    blob.copy_to(&mut bytes).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("mediaType")?.as_str().map(str::to_string)
}

/// Collects garbage in a layout (see the module docs).
///
/// # Errors
/// See [`GcError`]; when gc refuses, nothing has been deleted.
pub fn gc(layout: &Layout, options: &GcOptions) -> Result<GcReport, GcError> {
    // A dry run changes nothing, not even by creating the lock file.
    let lock = if options.dry_run {
        None
    } else {
        Some(layout.lock_keeping_tmp()?)
    };
    let store = layout.store();
    let index_path = layout.root().join("index.json");
    let index_bytes = store.index_bytes()?;
    // index.json itself first, as every index.json writer checks it: an entry
    // that --prune-untagged would drop is still something verify refuses.
    if let Some(bad) = graph::check_index(store, &index_bytes)
        .into_iter()
        .find(|i| !i.kind.is_warning())
    {
        return Err(GcError::Index {
            path: index_path,
            detail: bad.message,
        });
    }
    let index = IndexFile::parse(&index_bytes).map_err(|e| GcError::Index {
        path: index_path.clone(),
        detail: e.to_string(),
    })?;

    let mut pruned_index = index.clone();
    let mut pruned = Vec::new();
    if options.prune_untagged {
        pruned_index.entries.retain(|e| {
            let keep = e.descriptor.ref_name().is_some();
            if !keep {
                pruned.push(e.descriptor.digest.clone());
            }
            keep
        });
    }
    let marking_index = pruned_index.to_bytes().into_bytes();
    let view = WithIndex {
        inner: store,
        index: if options.prune_untagged {
            marking_index
        } else {
            index_bytes.clone()
        },
    };
    let graph = graph::walk(
        &view,
        WalkOptions {
            referrers: true,
            configs: false,
            shallow: false,
        },
    );
    // gc runs only on a graph verify accepts: any error met while walking the
    // documents (a malformed or unreadable index or manifest, an invalid
    // descriptor, nesting beyond the cap, a manifest whose layer count
    // disagrees with its config) means what it keeps alive is not known for
    // sure. Configs are read (in parallel, after the walk) for that count
    // only; a missing or unparsable one, like a missing layer (never read), is
    // a sparse layout, not damage (R-GC-5).
    if !options.force {
        let bad = graph
            .first_error()
            .cloned()
            .or_else(|| graph::check_layer_counts(&view, &graph));
        if let Some(bad) = bad {
            return Err(GcError::Damaged {
                layout: layout.root().display().to_string(),
                detail: bad.message,
            });
        }
    }
    // Digests named by reachable descriptors but absent from the walk's set
    // (damaged documents under --force) are kept too.
    let mut keep: BTreeSet<Digest> = graph.reached.keys().cloned().collect();
    for d in &graph.damaged {
        if let Ok(d) = Digest::parse(d) {
            keep.insert(d);
        }
    }

    let mut report = GcReport {
        dry_run: options.dry_run,
        remove: Vec::new(),
        bytes: 0,
        blobs: 0,
        temp_files: Vec::new(),
        pruned,
        kept: 0,
        left_alone: Vec::new(),
    };
    for e in store.list_blobs()? {
        let path = e.path.display().to_string();
        let alg_ok = e
            .digest
            .as_ref()
            .is_some_and(|d| matches!(d.algorithm(), Algorithm::Sha256 | Algorithm::Sha512));
        match (&e.digest, e.regular) {
            (Some(d), false) if alg_ok => {
                if !options.force {
                    let meta = fs::symlink_metadata(layout.root().join(&e.path));
                    let what = match meta {
                        Ok(m) if m.file_type().is_symlink() => "symlink",
                        Ok(m) if m.is_dir() => "directory",
                        _ => "special file",
                    };
                    return Err(GcError::NonRegular {
                        path: layout.root().join(&e.path),
                        what,
                    });
                }
                report.left_alone.push(LeftAlone {
                    path,
                    reason: format!("{d} is not a regular file"),
                });
            }
            (Some(d), true) if alg_ok => {
                if keep.contains(d) {
                    report.kept += 1;
                } else {
                    report.remove.push(Removal {
                        digest: d.to_string(),
                        size: e.size,
                        media_type: declared_media_type(store, d, e.size),
                        reason: "not reachable from index.json".into(),
                        path,
                    });
                }
            }
            (Some(_), _) => report.left_alone.push(LeftAlone {
                path,
                reason: "an algorithm gc does not sweep".into(),
            }),
            (None, _) => report.left_alone.push(LeftAlone {
                path,
                reason: "not named by a digest".into(),
            }),
        }
    }
    // ocikit's temporary directory, only if it really is a directory here: a
    // symlink in its place is never followed (that would delete elsewhere).
    let tmp_dir = layout.root().join(TMP_DIR);
    match fs::symlink_metadata(&tmp_dir) {
        Ok(m) if m.is_dir() => {
            if let Ok(rd) = fs::read_dir(&tmp_dir) {
                for ent in rd.flatten() {
                    report.temp_files.push(
                        Path::new(TMP_DIR)
                            .join(ent.file_name())
                            .display()
                            .to_string(),
                    );
                }
            }
        }
        Ok(_) => report.left_alone.push(LeftAlone {
            path: TMP_DIR.into(),
            reason: "not a directory (a symlink is never followed)".into(),
        }),
        Err(_) => {}
    }
    report.temp_files.sort();
    // Everything else in the layout root is someone else's.
    if let Ok(rd) = fs::read_dir(layout.root()) {
        let mut others: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                !matches!(
                    n.as_str(),
                    "oci-layout" | "index.json" | "blobs" | crate::layout::LOCK_FILE | TMP_DIR
                )
            })
            .collect();
        others.sort();
        for n in others {
            report.left_alone.push(LeftAlone {
                path: n,
                reason: "not part of the OCI layout".into(),
            });
        }
    }
    report.bytes = report.remove.iter().map(|r| r.size).sum();
    report.blobs = report.remove.len();
    let Some(lock) = lock else {
        return Ok(report);
    };

    // Apply: index.json must be as planned; a pruned index is written first,
    // so a crash mid-sweep leaves only garbage.
    if store.index_bytes()? != index_bytes {
        return Err(GcError::IndexChanged(index_path));
    }
    if options.prune_untagged && !report.pruned.is_empty() {
        layout.write_index(&lock, &pruned_index)?;
    }
    let blobs_dir = layout.root().join("blobs");
    // The blob directories are checked again right before deleting: a symlink
    // swapped in since the listing is never followed.
    for alg in ["sha256", "sha512"] {
        crate::store::check_blob_dirs(layout.root(), Some(alg))?;
    }
    for r in &report.remove {
        let p = layout.root().join(&r.path);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => fs::remove_file(&p).map_err(|source| GcError::Io {
                path: p.clone(),
                source,
            })?,
            _ => continue,
        }
    }
    for t in &report.temp_files {
        let p = layout.root().join(t);
        let res = match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            Ok(_) => fs::remove_file(&p),
            Err(_) => Ok(()),
        };
        res.map_err(|source| GcError::Io { path: p, source })?;
    }
    for alg in ["sha256", "sha512"] {
        if let Ok(d) = fs::File::open(blobs_dir.join(alg)) {
            let _ = d.sync_all();
        }
    }
    drop(lock);
    Ok(report)
}
