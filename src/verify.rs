//! `verify`: every blob reachable from `index.json` (indexes, manifests,
//! configs, layers and referrers) is checked for existence, size and digest,
//! leaves in parallel; documents are checked against the spec's structure; all
//! problems are reported, not only the first. `--deep` also decompresses every
//! layer (in parallel) and checks its DiffID and that it is a readable tar.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::archive::{ArchiveError, ArchiveStore, Expect};
use crate::digest::Digest;
use crate::graph::{self, Graph, Issue, IssueKind, Reached, Role, WalkOptions};
use crate::layer::{self, LayerError};
use crate::layout::IMAGE_LAYOUT_VERSION;
use crate::reference::is_valid_ref_name;
use crate::spec::{self, Kind};
use crate::store::{self, LayoutStore, Store, StoreError};

/// Options for [`verify`].
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Also decompress layers and check DiffIDs and tar readability.
    pub deep: bool,
    /// Caps for every read (the decompression limit).
    pub limits: crate::limits::Limits,
}

pub use crate::progress::Progress;

/// A verify finding: an [`Issue`] with its severity.
pub(crate) type Finding = Issue;

/// The result of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// What was verified.
    pub location: String,
    /// Whether `--deep` was used.
    pub deep: bool,
    /// Blobs whose digest was checked.
    pub blobs_checked: u64,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Layers decompressed (`--deep`).
    pub layers_decompressed: u64,
    /// Errors and warnings, sorted by kind then path.
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    /// Findings that are errors.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| !f.kind.is_warning())
    }

    /// Findings that are warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.kind.is_warning())
    }

    /// Whether there are no errors (warnings allowed).
    pub fn is_clean(&self) -> bool {
        self.errors().next().is_none()
    }

    /// The first file verify could not read for lack of permission: then
    /// nothing can be said about the layout, and the CLI exits 2 with its
    /// message ("cannot read FILE: permission denied") instead of a report.
    pub fn unreadable(&self) -> Option<&Finding> {
        self.findings
            .iter()
            .find(|f| f.kind == IssueKind::Unreadable)
    }
}

fn finding(kind: IssueKind, digest: Option<String>, path: &str, message: String) -> Finding {
    Issue {
        kind,
        digest,
        path: path.to_string(),
        message,
    }
}

/// Verifies a layout directory: its `oci-layout` file and `blobs/` directory,
/// then everything [`verify`] checks. A directory with neither `oci-layout` nor
/// `index.json` is not a layout: that is an error, not a finding.
///
/// # Errors
/// [`StoreError::NotALayout`] or an unreadable directory.
pub fn verify_layout(root: &Path, options: &VerifyOptions) -> Result<VerifyReport, StoreError> {
    verify_layout_with_progress(root, options, &())
}

/// [`verify_layout`] reporting progress.
///
/// # Errors
/// As [`verify_layout`].
pub fn verify_layout_with_progress(
    root: &Path,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport, StoreError> {
    let meta = std::fs::metadata(root).map_err(|e| StoreError::io(root, e))?;
    if !meta.is_dir() {
        return Err(StoreError::NotALayout {
            path: root.to_path_buf(),
            reason: "it is not a directory".into(),
        });
    }
    let has = |n: &str| root.join(n).symlink_metadata().is_ok();
    if !has("oci-layout") && !has("index.json") {
        return Err(StoreError::NotALayout {
            path: root.to_path_buf(),
            reason: "it has neither oci-layout nor index.json".into(),
        });
    }
    let mut pre = Vec::new();
    match store::read_small_file(&root.join("oci-layout"), crate::limits::MAX_SMALL_FILE) {
        Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => pre
            .push(finding(
                IssueKind::Missing,
                None,
                "oci-layout",
                "oci-layout is missing".into(),
            )),
        Err(e @ StoreError::NotRegular { .. }) => pre.push(finding(
            IssueKind::NonRegular,
            None,
            "oci-layout",
            e.to_string(),
        )),
        Err(e @ StoreError::Denied { .. }) => pre.push(finding(
            IssueKind::Unreadable,
            None,
            "oci-layout",
            e.to_string(),
        )),
        Err(e) => pre.push(finding(
            IssueKind::Malformed,
            None,
            "oci-layout",
            format!("oci-layout cannot be read: {e}"),
        )),
        Ok(bytes) => {
            // DocumentError says what is wrong in full ("is not valid JSON: …",
            // "has the key … twice"): said once.
            let parsed = spec::check_json(&bytes).and_then(|()| {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|e| spec::DocumentError::Syntax(e.to_string()))
            });
            match parsed {
                Err(e) => pre.push(finding(IssueKind::Malformed, None, "oci-layout", format!("oci-layout {e}"))),
                Ok(v) => match v.get("imageLayoutVersion").map(|v| v.as_str()) {
                    Some(Some(IMAGE_LAYOUT_VERSION)) => {}
                    Some(Some(other)) => pre.push(finding(
                        IssueKind::Layout,
                        None,
                        "oci-layout",
                        format!("oci-layout has imageLayoutVersion {other:?}; only {IMAGE_LAYOUT_VERSION:?} is defined (read anyway)"),
                    )),
                    _ => pre.push(finding(
                        IssueKind::SchemaInvalid,
                        None,
                        "oci-layout",
                        "oci-layout has no imageLayoutVersion string".into(),
                    )),
                },
            }
        }
    }
    match root.join("blobs").symlink_metadata() {
        Ok(m) if m.is_dir() => {}
        Ok(_) => pre.push(finding(
            IssueKind::NonRegular,
            None,
            "blobs",
            "blobs is not a directory".into(),
        )),
        Err(_) => pre.push(finding(
            IssueKind::Layout,
            None,
            "blobs",
            "the layout has no blobs/ directory".into(),
        )),
    }
    pre.extend(leftovers(root));
    let store = LayoutStore::new(root);
    let mut report = verify_consistent(&store, root, options, progress);
    pre.append(&mut report.findings);
    report.findings = pre;
    sort(&mut report.findings);
    Ok(report)
}

/// Warnings for what interrupted ocikit writers left: files in the layout's
/// `.ocikit-tmp` (the next writer sweeps them, `gc` removes them) and
/// `.ocikit-init-*` directories beside it (a first copy killed before its
/// layout was complete; safe to delete).
fn leftovers(root: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let tmp = root.join(crate::layout::TMP_DIR);
    if std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_dir()) {
        let n = std::fs::read_dir(&tmp).map(|rd| rd.count()).unwrap_or(0);
        if n > 0 {
            out.push(finding(
                IssueKind::Layout,
                None,
                crate::layout::TMP_DIR,
                format!("{} holds {n} temporary file(s) an interrupted writer left; the next writer or gc removes them", crate::layout::TMP_DIR),
            ));
        }
    }
    let parent = root
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(rd) = std::fs::read_dir(parent) {
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".ocikit-init-"))
            .collect();
        names.sort();
        for n in names {
            out.push(finding(
                IssueKind::Layout,
                None,
                &n,
                format!("{} beside the layout is what a killed first copy left (an incomplete layout); delete it", parent.join(&n).display()),
            ));
        }
    }
    out
}

/// How many times verify re-runs when `index.json` changed under it before it
/// waits for the writer lock instead.
const CONSISTENT_ATTEMPTS: usize = 3;

/// [`verify_with_progress`] on a layout that writers may be changing: a blob
/// is reported missing only if it is missing from the graph as it stood for
/// the whole walk. When a run finds blobs missing and `index.json` changed
/// meanwhile (a gc --prune-untagged dropping entries, then their blobs), the
/// run is repeated; after [`CONSISTENT_ATTEMPTS`] such runs, the last one
/// holds a shared lock on the layout (waiting for the writer to finish).
fn verify_consistent(
    store: &LayoutStore,
    root: &Path,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> VerifyReport {
    for _ in 1..CONSISTENT_ATTEMPTS {
        let before = store.index_bytes().ok();
        let report = verify_with_progress(store, options, progress);
        let missing = report.findings.iter().any(|f| f.kind == IssueKind::Missing);
        if !missing || store.index_bytes().ok() == before {
            return report;
        }
    }
    // Readers never create the lock file; without one, no ocikit writer runs.
    let lock = std::fs::File::open(root.join(crate::layout::LOCK_FILE));
    let _shared = lock.ok().filter(|f| f.lock_shared().is_ok());
    verify_with_progress(store, options, progress)
}

/// Verifies an image archive: what [`verify`] checks, plus the archive's own
/// metadata. An archive that cannot be read as an image archive is one
/// `malformed` finding; a file that is not an archive at all is an error.
///
/// # Errors
/// [`ArchiveError`] for files that are missing, empty or not tar archives.
pub fn verify_archive(
    path: &Path,
    expect: Expect,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport, ArchiveError> {
    let open = crate::archive::OpenOptions::new(options.limits, Default::default());
    let store = match ArchiveStore::open_with(path, expect, &open) {
        Ok(s) => s,
        Err(
            e @ (ArchiveError::Io { .. }
            | ArchiveError::Empty(_)
            | ArchiveError::NoImage(_)
            | ArchiveError::NotRegular(_)
            | ArchiveError::Denied(_)
            | ArchiveError::NotTar { .. }
            | ArchiveError::Parts(crate::archive::parts::PartsError::Io { .. })),
        ) => return Err(e),
        Err(e) => {
            return Ok(VerifyReport {
                location: path.display().to_string(),
                deep: options.deep,
                blobs_checked: 0,
                bytes_checked: 0,
                layers_decompressed: 0,
                findings: vec![finding(
                    IssueKind::Malformed,
                    None,
                    "archive",
                    e.to_string(),
                )],
            })
        }
    };
    let mut report = verify_with_progress(&store, options, progress);
    if let Some(bytes) = store.stored_index() {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            if v.get("manifests").is_some_and(|m| m.is_null()) {
                report.findings.push(finding(
                    IssueKind::SchemaInvalid,
                    None,
                    "index.json",
                    "the archive's index.json has \"manifests\": null (the spec requires an array; Docker 25 writes this when saving by image ID); its images were read from manifest.json".into(),
                ));
            }
        }
    }
    for n in store.notes() {
        report
            .findings
            .push(finding(IssueKind::Layout, None, "archive", n.clone()));
    }
    sort(&mut report.findings);
    Ok(report)
}

fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (a.kind.is_warning(), a.kind, &a.path, &a.digest).cmp(&(
            b.kind.is_warning(),
            b.kind,
            &b.path,
            &b.digest,
        ))
    });
}

/// What hashing one leaf found.
struct LeafResult {
    findings: Vec<Finding>,
    bytes: u64,
    checked: bool,
    diff_id: Option<Digest>,
}

/// Verifies everything reachable in a store. Never fails: problems are findings.
pub fn verify(store: &dyn Store, options: &VerifyOptions) -> VerifyReport {
    verify_with_progress(store, options, &())
}

/// [`verify`] reporting progress.
pub(crate) fn verify_with_progress(
    store: &dyn Store,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> VerifyReport {
    let graph = graph::walk(store, WalkOptions::default());
    let mut findings = graph.issues.clone();
    let mut blobs_checked = graph.reached.values().filter(|r| r.verified).count() as u64;
    let mut bytes_checked: u64 = graph
        .reached
        .values()
        .filter(|r| r.verified)
        .map(|r| r.descriptor.size.max(0) as u64)
        .fold(0u64, u64::saturating_add);
    // Documents that failed were counted; remove the ones with issues.
    let failed_docs: BTreeSet<&String> = graph.damaged.iter().collect();
    blobs_checked = blobs_checked.saturating_sub(failed_docs.len() as u64);

    // Leaves, largest first so the long hashes start early.
    let mut leaves: Vec<&Reached> = graph.reached.values().filter(|r| !r.verified).collect();
    leaves.sort_by(|a, b| {
        b.descriptor
            .size
            .cmp(&a.descriptor.size)
            .then(a.digest.cmp(&b.digest))
    });
    let decompressed = AtomicU64::new(0);
    // Sizes are the descriptors' claims (up to i64::MAX each): never overflow.
    progress.begin(
        leaves
            .iter()
            .map(|r| r.descriptor.size.max(0) as u64)
            .fold(0u64, u64::saturating_add),
    );
    let results = crate::progress::largest_first(&leaves, |r| {
        (
            r.digest.clone(),
            check_leaf(store, r, options, &decompressed, progress),
        )
    });
    let mut diff_ids: HashMap<Digest, Digest> = HashMap::new();
    for (digest, r) in results {
        findings.extend(r.findings);
        if r.checked {
            blobs_checked += 1;
            bytes_checked = bytes_checked.saturating_add(r.bytes);
        }
        if let Some(d) = r.diff_id {
            diff_ids.insert(digest, d);
        }
    }
    // The diff_ids count is structure (checked always); their values need
    // the decompressed layers (--deep), so only those found are compared.
    findings.extend(check_diff_ids(&graph, &diff_ids));
    findings.extend(unreferenced(store, &graph));
    findings.extend(tag_warnings(store));
    for img in &graph.images {
        if img.layers.is_empty() {
            findings.push(finding(
                IssueKind::Layout,
                Some(img.manifest.to_string()),
                &img.path,
                format!(
                    "{}: manifest {} has no layers (allowed; the spec says it SHOULD have one)",
                    img.path, img.manifest
                ),
            ));
        }
    }
    // A delta bundle leaves out what the side it was made against holds:
    // its absent blobs are expected (its present ones are checked as usual).
    let missing = findings.iter().any(|f| f.kind == IssueKind::Missing);
    if let Some(record) = missing
        .then(|| crate::delta::record_of_store(store))
        .flatten()
    {
        for f in findings.iter_mut().filter(|f| f.kind == IssueKind::Missing) {
            f.kind = IssueKind::DeltaOmitted;
            f.message = format!(
                "{}: blob {} is left out of this delta bundle (made against {record}, which holds it)",
                f.path,
                f.digest.as_deref().unwrap_or("?")
            );
        }
    }
    dedup(&mut findings);
    sort(&mut findings);
    VerifyReport {
        location: store.name(),
        deep: options.deep,
        blobs_checked,
        bytes_checked,
        layers_decompressed: decompressed.load(Ordering::Relaxed),
        findings,
    }
}

fn dedup(findings: &mut Vec<Finding>) {
    let mut seen = BTreeSet::new();
    findings.retain(|f| seen.insert((f.kind, f.digest.clone(), f.message.clone())));
}

fn check_leaf(
    store: &dyn Store,
    r: &Reached,
    options: &VerifyOptions,
    decompressed: &AtomicU64,
    progress: &dyn Progress,
) -> LeafResult {
    let deep = options.deep;
    let advance = |n: u64| progress.advance(n);
    let mut out = LeafResult {
        findings: Vec::new(),
        bytes: 0,
        checked: false,
        diff_id: None,
    };
    let digest = &r.digest;
    let ds = Some(digest.to_string());
    let path = &r.path;
    if !digest.algorithm().is_verifiable() {
        out.findings.push(finding(
            IssueKind::Unsupported,
            ds,
            path,
            format!(
                "{path}: {digest} uses the algorithm {:?}, which ocikit cannot verify",
                digest.algorithm().as_str()
            ),
        ));
        return out;
    }
    let blob = match store.open_blob(digest) {
        Ok(b) => b,
        Err(StoreError::Missing { .. }) if r.descriptor.is_foreign() => {
            out.findings.push(finding(
                IssueKind::ForeignMissing,
                ds,
                path,
                format!("{path}: non-distributable layer {digest} is absent (allowed: it is fetched from its own source)"),
            ));
            return out;
        }
        Err(e) => {
            out.findings.push(graph::store_issue(&e, digest, path));
            return out;
        }
    };
    let expected = r.descriptor.size;
    let layer_compression = match r.descriptor.kind() {
        Kind::Layer { compression, .. } if r.role == Role::Layer => Some(compression),
        _ => None,
    };
    if blob.len() as i64 != expected {
        let matches = blob
            .hash(digest.algorithm().clone())
            .map(|(d, _)| &d == digest)
            .unwrap_or(false);
        out.findings.push(finding(
            IssueKind::SizeMismatch,
            ds,
            path,
            format!(
                "{path}: blob {digest} is {} bytes but its descriptor says {expected}{}",
                blob.len(),
                if matches {
                    " (its content does match the digest)"
                } else {
                    ""
                }
            ),
        ));
        return out;
    }
    if let (true, Some(compression)) = (deep, layer_compression) {
        decompressed.fetch_add(1, Ordering::Relaxed);
        let len = blob.len();
        // Hashed, not checked, by the reader: a mismatch here is a finding
        // that names both digests, not an error.
        let reader = crate::verified::Verified::hashing(
            crate::digest::ProgressReader::new(blob.into_reader(), &advance),
            digest.algorithm().clone(),
        );
        match layer::digest_layer(reader, compression, options.limits.decompression(len)) {
            Ok(l) => {
                out.checked = true;
                out.bytes = len;
                if &l.blob_digest != digest {
                    out.findings
                        .push(digest_mismatch(digest, &l.blob_digest, path));
                } else {
                    out.diff_id = Some(l.diff_id);
                }
            }
            Err(e @ LayerError::Io(_)) => out.findings.push(finding(
                IssueKind::Malformed,
                ds,
                path,
                format!("{path}: layer {digest}: {e}"),
            )),
            Err(e) => {
                // Still tell whether the stored bytes are intact.
                let intact = store
                    .open_blob(digest)
                    .and_then(|b| {
                        b.hash(digest.algorithm().clone())
                            .map_err(|e| StoreError::io(&store.blob_location(digest), e))
                    })
                    .map(|(d, _)| &d == digest);
                match intact {
                    Ok(false) => out.findings.push(finding(
                        IssueKind::DigestMismatch,
                        ds,
                        path,
                        format!("{path}: blob {digest} has the wrong content"),
                    )),
                    _ => out.findings.push(finding(
                        IssueKind::BadLayer,
                        ds,
                        path,
                        format!("{path}: layer {digest}: {e}"),
                    )),
                }
            }
        }
        return out;
    }
    match blob.hash_with_progress(digest.algorithm().clone(), &advance) {
        Ok((actual, n)) => {
            out.checked = true;
            out.bytes = n;
            if &actual != digest {
                out.findings.push(digest_mismatch(digest, &actual, path));
            }
        }
        Err(e) => out.findings.push(finding(
            IssueKind::Malformed,
            ds,
            path,
            format!(
                "{path}: {} cannot be read: {e}",
                store.blob_location(digest).display()
            ),
        )),
    }
    out
}

fn digest_mismatch(expected: &Digest, actual: &Digest, path: &str) -> Finding {
    finding(
        IssueKind::DigestMismatch,
        Some(expected.to_string()),
        path,
        format!("{path}: blob {expected} has the wrong content (it hashes to {actual})"),
    )
}

fn check_diff_ids(graph: &Graph, diff_ids: &HashMap<Digest, Digest>) -> Vec<Finding> {
    let mut out = Vec::new();
    for img in &graph.images {
        let Some(ids) = &img.diff_ids else {
            if img.config_is_image && !img.layers.is_empty() {
                out.push(finding(
                    IssueKind::Layout,
                    Some(img.manifest.to_string()),
                    &img.path,
                    format!(
                        "{}: the config of manifest {} lists no rootfs.diff_ids, so its layers cannot be checked against it",
                        img.path, img.manifest
                    ),
                ));
            }
            continue;
        };
        let fs_layers: Vec<&(crate::Descriptor, Option<Digest>)> = img
            .layers
            .iter()
            .filter(|(d, _)| matches!(d.kind(), Kind::Layer { .. }))
            .collect();
        if fs_layers.len() != img.layers.len() {
            continue; // not a filesystem image (artifacts may use layer-ish types)
        }
        // A count that differs is reported by the graph walk.
        if ids.len() != img.layers.len() {
            continue;
        }
        for (i, ((_, ld), want)) in img.layers.iter().zip(ids).enumerate() {
            let Some(ld) = ld else { continue };
            let Some(got) = diff_ids.get(ld) else {
                continue;
            };
            // Compared as digests (a DiffID that does not parse is a mismatch).
            if want.parse::<Digest>().ok().as_ref() != Some(got) {
                out.push(finding(
                    IssueKind::DiffidMismatch,
                    Some(ld.to_string()),
                    &format!("{} > layers[{i}]", img.path),
                    format!("{} > layers[{i}]: layer {ld} decompresses to {got} but the config's diff_ids[{i}] is {want}", img.path),
                ));
            }
        }
    }
    out
}

fn unreferenced(store: &dyn Store, graph: &Graph) -> Vec<Finding> {
    let mut out = Vec::new();
    let Ok(entries) = store.list_blobs() else {
        return out;
    };
    for e in entries {
        let p = e.path.display().to_string();
        match &e.digest {
            Some(d) if graph.reached.contains_key(d) => {}
            Some(_) if !e.regular => out.push(finding(
                IssueKind::NonRegular,
                e.digest.as_ref().map(|d| d.to_string()),
                &p,
                format!("{p} is not a regular file; gc refuses to run until it is removed"),
            )),
            Some(d) => out.push(finding(
                IssueKind::Unreferenced,
                Some(d.to_string()),
                &p,
                format!(
                    "{p} is not referenced from index.json ({} bytes; gc would remove it)",
                    e.size
                ),
            )),
            None => out.push(finding(
                IssueKind::StrayFile,
                None,
                &p,
                format!("{p} is not named by a valid digest; left alone"),
            )),
        }
    }
    out
}

fn tag_warnings(store: &dyn Store) -> Vec<Finding> {
    let mut out = Vec::new();
    let Ok((_, index)) = crate::resolve::read_index_json(store) else {
        return out;
    };
    // Keyed by identity: entries that share a ref.name (the tag part, as
    // Docker 25 writes it) but have different containerd names are different
    // images, not duplicates.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, d) in index.entries().iter().enumerate() {
        let Some(tag) = d.ref_name() else { continue };
        let path = format!("index.json manifests[{i}] ({tag})");
        let id = crate::resolve::identity(d).unwrap_or(tag);
        if let Some(first) = seen.insert(id, i) {
            out.push(finding(
                IssueKind::Layout,
                Some(d.digest.clone()),
                &path,
                format!(
                    "tag {tag:?} is on manifests[{first}] and manifests[{i}]; the first is used"
                ),
            ));
        }
        if !is_valid_ref_name(tag) {
            out.push(finding(
                IssueKind::Layout,
                Some(d.digest.clone()),
                &path,
                format!("tag {tag:?} does not follow the ref.name grammar (read anyway)"),
            ));
        }
    }
    out
}
