//! `sync`: a config file of entries, each copying the images of a source
//! (a layout, an archive, or a glob of them) that pass its tag filters into
//! a target layout under a name template (regsync's shape, offline).
//!
//! [`Config::parse`] reads YAML (JSON is YAML 1.2 and reads the same) with
//! serde-saphyr, refusing unknown fields; every error names the file, line
//! and column. [`sync`] then works entry by entry: each source is opened
//! once, its images are listed and filtered ([`select`], a pure function),
//! each chosen image is planned with the copy machinery
//! ([`crate::copy::plan`]), and the source's planned images are written
//! together ([`crate::copy::write_layout`], under the target's writer lock).
//! An image whose target name already points at the planned digest is
//! `up to date` and nothing is written. A failing source or image is
//! recorded and the rest go on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::copy::{self, CopyOptions, Source};
use crate::digest::Digest;
use crate::layout::Layout;
use crate::open::Notice;

use crate::reference::{Location, Reference};
use crate::spec::{Descriptor, ANNOTATION_IMAGE_NAME};
use crate::store::Store;

/// Why a sync could not start (a bad config), or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The config file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config is malformed: `FILE:LINE:COLUMN: message`.
    #[error("{file}:{line}:{column}: {message}")]
    Config {
        /// The file, as given.
        file: String,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        column: u64,
        /// What is wrong.
        message: String,
    },
    /// The run was interrupted (the report so far is lost; what was written
    /// stays, whole).
    #[error("interrupted")]
    Interrupted,
}

mod config;
pub use config::*;

// ---------------------------------------------------------------- report

/// What happened to one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Written (blobs and/or the name).
    Copied,
    /// The target name already points at this digest: nothing written.
    UpToDate,
    /// Dry run: it would be copied.
    WouldCopy,
    /// A filter (or a missing name) left it out.
    FilteredOut,
    /// It could not be copied.
    Failed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Copied => "copied",
            Status::UpToDate => "up to date",
            Status::WouldCopy => "would copy",
            Status::FilteredOut => "filtered out",
            Status::Failed => "failed",
        })
    }
}

/// One image of a source and its fate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    /// The source location (a glob's match, relative as written).
    pub source: String,
    /// Its name in the source (`ref.name`), `None` when untagged.
    pub name: Option<String>,
    /// The source descriptor's digest.
    pub digest: String,
    /// The name in the target (`None` when filtered out before naming).
    pub target_name: Option<String>,
    /// The digest recorded in the target (differs from `digest` when
    /// platforms were chosen from an index).
    pub target_digest: Option<String>,
    /// What happened.
    pub status: Status,
    /// Why it was filtered out, or the error.
    pub reason: Option<String>,
    /// Blobs written (would be written, on a dry run).
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A source of an entry that could not be read (or a glob matching nothing).
#[derive(Debug, Clone, Serialize)]
pub struct SourceError {
    /// The source (or the glob).
    pub source: String,
    /// Why.
    pub error: String,
}

/// One entry's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryReport {
    /// 1-based position in the config.
    pub entry: usize,
    /// The source as written.
    pub source: String,
    /// The target as written.
    pub target: String,
    /// The target layout directory.
    pub target_layout: String,
    /// Every image of every source, in source then `index.json` order.
    pub images: Vec<ImageReport>,
    /// Sources that failed as a whole.
    pub errors: Vec<SourceError>,
}

/// Counts over all entries.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Images copied.
    pub copied: u64,
    /// Images already up to date.
    pub up_to_date: u64,
    /// Images a dry run would copy.
    pub would_copy: u64,
    /// Images filtered out.
    pub filtered_out: u64,
    /// Images and sources that failed.
    pub failed: u64,
    /// Blobs written (would be written, on a dry run).
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What a sync did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Each entry, in config order.
    pub entries: Vec<EntryReport>,
    /// Totals.
    pub summary: Summary,
}

/// `ocikit sync --json`: a [`SyncReport`], then `schemaVersion`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncDocument<'a> {
    /// The report's fields.
    #[serde(flatten)]
    pub report: &'a SyncReport,
    /// Always [`crate::report::SCHEMA_VERSION`].
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
}

impl<'a> SyncDocument<'a> {
    /// The document of `report`.
    pub fn new(report: &'a SyncReport) -> Self {
        SyncDocument {
            report,
            schema_version: crate::report::SCHEMA_VERSION,
        }
    }
}

impl SyncReport {
    /// Whether anything failed (exit 1).
    pub fn failed(&self) -> bool {
        self.summary.failed > 0
    }
}

/// Options of [`sync`].
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Plan only: write nothing.
    pub dry_run: bool,
    /// Caps for every read.
    pub limits: crate::limits::Limits,
    /// How to wait for a target layout's lock.
    pub lock_policy: crate::layout::LockPolicy,
    /// Stops at the next write.
    pub cancel: crate::cancel::Cancel,
}

// ---------------------------------------------------------------- selection

/// One image listed in a source.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its `ref.name`.
    pub name: Option<String>,
    /// Its `io.containerd.image.name` (docker-archives, Docker 25+).
    pub image_name: Option<String>,
    /// Its descriptor's digest.
    pub digest: String,
    /// Its descriptor in the source's `index.json` (`None` in tests of
    /// [`select`]).
    pub descriptor: Option<Descriptor>,
}

/// What [`select`] decided for one listed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Copy it under this target name.
    Copy(String),
    /// Leave it out, for this reason.
    Skip(String),
    /// It passes the filters but cannot be named (the template gives an
    /// invalid name): it fails.
    Fail(String),
}

/// `sha256-<64 hex>` with an optional `.suffix`: the digest it names.
fn digest_tag(tag: &str) -> Option<String> {
    let rest = tag.strip_prefix("sha256-")?;
    let (hex, suffix) = match rest.split_once('.') {
        Some((h, s)) => (h, Some(s)),
        None => (rest, None),
    };
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    if suffix.is_some_and(str::is_empty) {
        return None;
    }
    Some(format!("sha256:{hex}"))
}

/// Decides each listed image's fate (a pure function): the tag filters, then
/// the template. With `digest_tags`, a `sha256-<hex>[.suffix]` tag is copied
/// iff an image with digest `sha256:<hex>` is.
pub fn select(entry: &Entry, base: &str, listed: &[Listed]) -> Vec<Choice> {
    let name_of = |l: &Listed| -> Result<String, String> {
        let Some(name) = l.name.as_deref() else {
            return Err("untagged".into());
        };
        let (repo, tag) = split_name(name);
        // A bare tag whose containerd name carries the repository (Docker
        // 25's way) takes that repository, in its familiar form.
        let familiar = l.image_name.as_deref().map(crate::reference::familiar);
        let from_image = familiar.as_deref().and_then(|f| match split_name(f) {
            (Some(r), t) if t == tag => Some(r),
            _ => None,
        });
        let target = entry.template.render(&Vars {
            name,
            tag,
            repo: repo.or(from_image).unwrap_or(base),
            digest: &l.digest,
        });
        if !crate::reference::is_valid_ref_name(&target) {
            return Err(format!("target name {target:?} is not a valid name"));
        }
        // `L:sha256:…` must not name something other than `L@sha256:…`.
        if Digest::parse(&target).is_ok_and(|d| {
            matches!(
                d.algorithm(),
                crate::digest::Algorithm::Sha256 | crate::digest::Algorithm::Sha512
            )
        }) {
            return Err(format!("target name {target:?} reads as a digest"));
        }
        Ok(target)
    };
    let follows = |l: &Listed| {
        entry.digest_tags
            && l.name
                .as_deref()
                .and_then(|n| digest_tag(split_name(n).1))
                .is_some()
    };
    let mut out: Vec<Option<Choice>> = vec![None; listed.len()];
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for (i, l) in listed.iter().enumerate() {
        if follows(l) {
            continue;
        }
        let Some(name) = l.name.as_deref() else {
            out[i] = Some(Choice::Skip("untagged".into()));
            continue;
        };
        if let Some(why) = entry.tags.reject(split_name(name).1) {
            out[i] = Some(Choice::Skip(why));
            continue;
        }
        out[i] = Some(match name_of(l) {
            Ok(t) => {
                kept.insert(&l.digest);
                Choice::Copy(t)
            }
            Err(e) => Choice::Fail(e),
        });
    }
    for (i, l) in listed.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let subject = l
            .name
            .as_deref()
            .and_then(|n| digest_tag(split_name(n).1))
            .unwrap_or_default();
        out[i] = Some(if kept.contains(subject.as_str()) {
            match name_of(l) {
                Ok(t) => Choice::Copy(t),
                Err(e) => Choice::Fail(e),
            }
        } else {
            Choice::Skip(format!("digest tag: its image {subject} is not synced"))
        });
    }
    out.into_iter()
        .map(|c| c.unwrap_or_else(|| Choice::Skip("internal".into())))
        .collect()
}

// ---------------------------------------------------------------- run

/// What the target layout already holds: name → (digest, identity).
#[derive(Default)]
struct TargetState {
    names: BTreeMap<String, Vec<(String, String)>>,
    /// Blobs a dry run has already counted.
    pending: BTreeSet<String>,
}

impl TargetState {
    fn read(dir: &Path) -> Result<TargetState, String> {
        if dir.symlink_metadata().is_err() {
            return Ok(TargetState::default());
        }
        let layout = Layout::open(dir).map_err(|e| e.to_string())?;
        let index = layout.read_checked_index().map_err(|e| e.to_string())?;
        let mut names: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for e in &index.entries {
            let d = &e.descriptor;
            if let (Some(t), Some(id)) = (d.ref_name(), crate::resolve::identity(d)) {
                names
                    .entry(t.to_string())
                    .or_default()
                    .push((d.digest.clone(), id.to_string()));
            }
        }
        Ok(TargetState {
            names,
            pending: BTreeSet::new(),
        })
    }

    fn up_to_date(&self, name: &str, digest: &str) -> bool {
        let identity = crate::resolve::docker_name_of(name).unwrap_or_else(|| name.to_string());
        self.names.get(name).is_some_and(|v| {
            v.iter()
                .any(|(d, id)| d == digest && crate::layout::same_identity(id, &identity))
        })
    }

    fn record(&mut self, name: &str, digest: &str) {
        let identity = crate::resolve::docker_name_of(name).unwrap_or_else(|| name.to_string());
        self.names
            .insert(name.to_string(), vec![(digest.to_string(), identity)]);
    }
}

fn display_path(base: &Path, p: &Path) -> String {
    match p.strip_prefix(base) {
        Ok(rel) if !base.as_os_str().is_empty() => rel.display().to_string(),
        _ => p.display().to_string(),
    }
}

/// The sources of an entry: its location, or its glob's matches (sorted).
fn sources_of(entry: &Entry, base: &Path) -> Result<Vec<(String, String)>, String> {
    if !entry.glob {
        return Ok(vec![(entry.source.clone(), entry.source_resolved.clone())]);
    }
    let (transport, pattern) = split_transport(&entry.source_resolved);
    let mut found = Vec::new();
    for m in glob::glob(pattern).map_err(|e| format!("bad glob: {e}"))? {
        let p = m.map_err(|e| e.to_string())?;
        // Hidden staging and temporary files are not sources.
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".ocikit-"))
        {
            continue;
        }
        let shown = display_path(base, &p);
        let full = p.to_string_lossy().into_owned();
        found.push(match transport {
            Some(t) => (format!("{t}:{shown}"), format!("{t}:{full}")),
            None => (shown, full),
        });
    }
    found.sort();
    if found.is_empty() {
        return Err(format!("{} matches nothing", entry.source));
    }
    Ok(found)
}

fn list_store(store: &dyn Store, reference: Option<&Reference>) -> Result<Vec<Listed>, String> {
    let descriptors: Vec<Descriptor> = match reference {
        Some(r) => {
            let mut d =
                crate::resolve::find_descriptor(store, Some(r)).map_err(|e| e.to_string())?;
            if d.ref_name().is_none() {
                if let Reference::Tag(t) = r {
                    d.annotations
                        .get_or_insert_with(Default::default)
                        .insert(crate::spec::ANNOTATION_REF_NAME.into(), t.clone());
                }
            }
            vec![d]
        }
        None => crate::resolve::index_images(store).map_err(|e| e.to_string())?,
    };
    Ok(descriptors
        .into_iter()
        .map(|d| Listed {
            name: d.ref_name().map(str::to_string),
            image_name: d.annotation(ANNOTATION_IMAGE_NAME).map(str::to_string),
            digest: d.digest.clone(),
            descriptor: Some(d),
        })
        .collect())
}

/// A source's referrers, found by one scan. Copy's planner finds referrers
/// by listing every blob and reading each small JSON one; planned image by
/// image, that scan would run once per image (quadratic in the source's
/// size). [`View`]s list only the referrers found here, so each plan sees the
/// same referrers at the cost of one scan.
struct Scanned<'a> {
    inner: &'a dyn Store,
    referrers: Option<Vec<crate::store::BlobEntry>>,
}

impl<'a> Scanned<'a> {
    fn new(inner: &'a dyn Store, referrers: bool) -> Result<Scanned<'a>, String> {
        let referrers = if referrers {
            let found: BTreeSet<Digest> = crate::graph::find_referrers(inner, |_| false)
                .into_iter()
                .map(|r| r.digest)
                .collect();
            let all = inner.list_blobs().map_err(|e| e.to_string())?;
            Some(
                all.into_iter()
                    .filter(|e| e.digest.as_ref().is_some_and(|d| found.contains(d)))
                    .collect(),
            )
        } else {
            None
        };
        Ok(Scanned { inner, referrers })
    }
}

/// The source as one image's plan reads it: an `index.json` of just that
/// image's entry (so a plan does not parse the whole source index again), the
/// scanned referrers, every blob of the source.
struct View<'a> {
    scanned: &'a Scanned<'a>,
    index: Vec<u8>,
}

impl Store for View<'_> {
    fn name(&self) -> String {
        self.scanned.inner.name()
    }
    fn index_bytes(&self) -> Result<Vec<u8>, crate::store::StoreError> {
        Ok(self.index.clone())
    }
    fn open_blob(&self, digest: &Digest) -> Result<crate::store::Blob, crate::store::StoreError> {
        self.scanned.inner.open_blob(digest)
    }
    fn blob_location(&self, digest: &Digest) -> PathBuf {
        self.scanned.inner.blob_location(digest)
    }
    fn list_blobs(&self) -> Result<Vec<crate::store::BlobEntry>, crate::store::StoreError> {
        match &self.scanned.referrers {
            Some(r) => Ok(r.clone()),
            None => self.scanned.inner.list_blobs(),
        }
    }
    fn diff_id_is_only_check(&self, digest: &Digest) -> bool {
        self.scanned.inner.diff_id_is_only_check(digest)
    }
}

/// Runs every entry of `config`. Notes and warnings from opening sources go
/// to `notice`.
///
/// # Errors
/// Only [`SyncError::Interrupted`]: every other failure is recorded in the
/// report (exit 1).
pub fn sync(
    config: &Config,
    options: &SyncOptions,
    notice: &mut dyn FnMut(Notice),
) -> Result<SyncReport, SyncError> {
    let base = config.base.as_path();
    let mut report = SyncReport {
        dry_run: options.dry_run,
        entries: Vec::new(),
        summary: Summary::default(),
    };
    for entry in &config.entries {
        let mut er = EntryReport {
            entry: entry.number,
            source: entry.source.clone(),
            target: entry.target.clone(),
            target_layout: display_path(base, &entry.target_layout),
            images: Vec::new(),
            errors: Vec::new(),
        };
        run_entry(entry, base, options, notice, &mut er)?;
        for i in &er.images {
            let s = &mut report.summary;
            match i.status {
                Status::Copied => s.copied += 1,
                Status::UpToDate => s.up_to_date += 1,
                Status::WouldCopy => s.would_copy += 1,
                Status::FilteredOut => s.filtered_out += 1,
                Status::Failed => s.failed += 1,
            }
            s.blobs += i.blobs;
            s.bytes += i.bytes;
        }
        report.summary.failed += er.errors.len() as u64;
        report.entries.push(er);
    }
    Ok(report)
}

fn run_entry(
    entry: &Entry,
    base: &Path,
    options: &SyncOptions,
    notice: &mut dyn FnMut(Notice),
    er: &mut EntryReport,
) -> Result<(), SyncError> {
    let sources = match sources_of(entry, base) {
        Ok(s) => s,
        Err(e) => {
            er.errors.push(SourceError {
                source: entry.source.clone(),
                error: e,
            });
            return Ok(());
        }
    };
    let mut target = match TargetState::read(&entry.target_layout) {
        Ok(t) => t,
        Err(e) => {
            er.errors.push(SourceError {
                source: entry.source.clone(),
                error: format!("target {}: {e}", entry.target_layout.display()),
            });
            return Ok(());
        }
    };
    // Names this entry has given, so two images never fight for one name.
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    for (shown, full) in sources {
        if options.cancel.is_cancelled() {
            return Err(SyncError::Interrupted);
        }
        if let Err(e) = run_source(
            entry,
            options,
            notice,
            er,
            &mut target,
            &mut given,
            &shown,
            &full,
        ) {
            er.errors.push(SourceError {
                source: shown,
                error: e,
            });
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_source(
    entry: &Entry,
    options: &SyncOptions,
    notice: &mut dyn FnMut(Notice),
    er: &mut EntryReport,
    target: &mut TargetState,
    given: &mut BTreeMap<String, String>,
    shown: &str,
    full: &str,
) -> Result<(), String> {
    let loc = Location::parse(full).map_err(|e| e.to_string())?;
    if entry.glob && loc.reference.is_some() {
        return Err(format!(
            "{shown}: a glob's match is read whole, not by reference"
        ));
    }
    let open = crate::archive::OpenOptions::new(options.limits, options.cancel.clone());
    let store = loc.open(&open, notice).map_err(|e| e.to_string())?;
    crate::guard::check_output(
        crate::guard::Output::Layout(&entry.target_layout),
        &[loc.path.as_path()],
    )
    .map_err(|e| e.to_string())?;
    let listed = list_store(&*store, loc.reference.as_ref())?;
    let scanned = Scanned::new(&*store, entry.referrers)?;
    let base_name = base_name(&loc.path);
    let choices = select(entry, &base_name, &listed);
    let copy_options = CopyOptions {
        platforms: entry.platforms.clone(),
        no_referrers: !entry.referrers,
        limits: options.limits,
        lock_policy: options.lock_policy,
        cancel: options.cancel.clone(),
        ..CopyOptions::default()
    };
    // Planned images wait here and are written together: one pass under the
    // writer lock and one `index.json` write per source, not per image.
    let mut batch: Vec<(usize, copy::Plan)> = Vec::new();
    for (l, choice) in listed.iter().zip(choices) {
        let mut ir = ImageReport {
            source: shown.to_string(),
            name: l.name.clone(),
            digest: l.digest.clone(),
            target_name: None,
            target_digest: None,
            status: Status::FilteredOut,
            reason: None,
            blobs: 0,
            bytes: 0,
        };
        match choice {
            Choice::Skip(why) => ir.reason = Some(why),
            Choice::Fail(why) => {
                ir.status = Status::Failed;
                ir.reason = Some(why);
            }
            Choice::Copy(name) => {
                ir.target_name = Some(name.clone());
                if let Some(other) = given.get(&name).filter(|d| **d != l.digest) {
                    ir.status = Status::Failed;
                    ir.reason = Some(format!(
                        "target name {name:?} is already given to {other} by this entry"
                    ));
                } else {
                    given.insert(name.clone(), l.digest.clone());
                    if let Some(plan) =
                        plan_one(entry, &scanned, l, &name, &copy_options, target, &mut ir)
                    {
                        if !options.dry_run {
                            batch.push((er.images.len(), plan));
                        }
                    }
                }
            }
        }
        er.images.push(ir);
    }
    if !batch.is_empty() {
        write_batch(entry, &scanned, batch, &mut er.images, target);
    }
    Ok(())
}

/// A store that serves the source's blobs to the write (its `index.json` is
/// not read there).
fn blob_view<'a>(scanned: &'a Scanned<'a>, index: &serde_json::Value) -> View<'a> {
    View {
        scanned,
        index: index.to_string().into_bytes(),
    }
}

/// Plans one image: `None` when it is settled here (failed, up to date, or
/// counted for a dry run as `would copy`), else the plan to write, with the
/// blobs the target lacks counted in `ir`.
fn plan_one(
    entry: &Entry,
    scanned: &Scanned<'_>,
    l: &Listed,
    name: &str,
    copy_options: &CopyOptions,
    target: &mut TargetState,
    ir: &mut ImageReport,
) -> Option<copy::Plan> {
    let fail = |ir: &mut ImageReport, e: String| {
        ir.status = Status::Failed;
        ir.reason = Some(e);
        None
    };
    let Some(descriptor) = &l.descriptor else {
        return fail(ir, "internal: no descriptor".into());
    };
    let view = blob_view(
        scanned,
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::spec::media_type::OCI_INDEX,
            "manifests": [descriptor],
        }),
    );
    let srcs = [Source {
        store: &view,
        reference: None,
    }];
    let mut co = copy_options.clone();
    co.target_name = Some(name.to_string());
    let plan = match copy::plan(&srcs, &co) {
        Ok(p) => p,
        Err(e) => return fail(ir, e.to_string()),
    };
    let Some(root) = plan.roots.first() else {
        return fail(ir, "internal: the plan has no image".into());
    };
    let digest = root.descriptor.digest.clone();
    ir.target_digest = Some(digest.clone());
    if target.up_to_date(name, &digest) {
        ir.status = Status::UpToDate;
        return None;
    }
    if let Err(e) = copy::check_unverified_layers(&srcs, &plan) {
        return fail(ir, e.to_string());
    }
    // The blobs the target lacks, each counted once across the run.
    for b in &plan.blobs {
        let present = entry
            .target_layout
            .join(b.digest.blob_path())
            .symlink_metadata()
            .is_ok_and(|m| m.is_file() && m.len() == b.size);
        if !present && target.pending.insert(b.digest.to_string()) {
            ir.blobs += 1;
            ir.bytes += b.size;
        }
    }
    ir.status = Status::WouldCopy;
    target.record(name, &digest);
    Some(plan)
}

/// Writes the planned images of one source in one `write_layout` (their
/// plans merged: blobs deduplicated in order, so each document still comes
/// after what it references). Each image is then `copied` with the blobs
/// counted for it. If the merged write fails, each image is written on its
/// own, so one bad image fails alone.
fn write_batch(
    entry: &Entry,
    scanned: &Scanned<'_>,
    batch: Vec<(usize, copy::Plan)>,
    images: &mut [ImageReport],
    target: &mut TargetState,
) {
    let view = blob_view(scanned, &serde_json::json!({}));
    let srcs = [Source {
        store: &view,
        reference: None,
    }];
    let mut merged = copy::Plan {
        limits: batch[0].1.limits,
        lock_policy: batch[0].1.lock_policy,
        cancel: batch[0].1.cancel.clone(),
        ..copy::Plan::default()
    };
    let mut seen = BTreeSet::new();
    for (_, p) in &batch {
        for b in &p.blobs {
            if seen.insert(b.digest.clone()) {
                merged.bytes += b.size;
                merged.blobs.push(b.clone());
            }
        }
        merged.roots.extend(p.roots.iter().cloned());
        merged
            .built
            .extend(p.built.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let single = batch.len() == 1;
    match copy::write_layout(&srcs, &merged, &entry.target_layout, &()) {
        Ok(_) => {
            for (i, _) in &batch {
                images[*i].status = Status::Copied;
            }
        }
        // One image, a lock timeout or an interruption: the same error for
        // every image (writing them one by one would only repeat it).
        Err(e) if single || entry_wide(&e) || merged.cancel.is_cancelled() => {
            let text = e.to_string();
            for (i, _) in &batch {
                let ir = &mut images[*i];
                forget(target, ir);
                ir.status = Status::Failed;
                ir.reason = Some(text.clone());
            }
        }
        Err(_) => {
            for (i, plan) in &batch {
                let ir = &mut images[*i];
                match copy::write_layout(&srcs, plan, &entry.target_layout, &()) {
                    Ok(r) => {
                        ir.status = Status::Copied;
                        ir.blobs = r.blobs_written;
                        ir.bytes = r.bytes_written;
                    }
                    Err(e) => {
                        forget(target, ir);
                        ir.status = Status::Failed;
                        ir.reason = Some(e.to_string());
                    }
                }
            }
        }
    }
}

/// Whether a write error concerns the target as a whole, not one image.
fn entry_wide(e: &copy::CopyError) -> bool {
    matches!(
        e,
        copy::CopyError::Layout(crate::layout::LayoutError::LockTimeout { .. })
    )
}

/// An image that failed to be written: its name is not in the target after
/// all, and its blobs were not written.
fn forget(target: &mut TargetState, ir: &mut ImageReport) {
    if let Some(n) = &ir.target_name {
        target.names.remove(n);
    }
    ir.blobs = 0;
    ir.bytes = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, SyncError> {
        Config::parse(text, "sync.yaml", Path::new("/cfg"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn names_split() {
        assert_eq!(split_name("1.0"), (None, "1.0"));
        assert_eq!(split_name("app:1.0"), (Some("app"), "1.0"));
        assert_eq!(
            split_name("registry:5000/team/app:1.2"),
            (Some("registry:5000/team/app"), "1.2")
        );
        assert_eq!(
            split_name("registry:5000/team/app"),
            (None, "registry:5000/team/app")
        );
        assert_eq!(base_name(Path::new("/a/img001.tar.gz")), "img001");
        assert_eq!(base_name(Path::new("/a/demo")), "demo");
        assert_eq!(base_name(Path::new("/a/x.tzst")), "x");
    }

    #[test]
    fn templates() {
        let t = Template::parse("{{repo}}:{{ tag }}-{{hex}}").unwrap();
        let v = Vars {
            name: "1.0",
            tag: "1.0",
            repo: "demo",
            digest: "sha256:abc",
        };
        assert_eq!(t.render(&v), "demo:1.0-abc");
        assert!(Template::parse("{{tgas}}")
            .unwrap_err()
            .contains("unknown variable"));
        assert!(Template::parse("{{tag").is_err());
    }

    #[test]
    fn targets_split() {
        let b = Path::new("/cfg");
        assert_eq!(
            split_target("mirror", b).unwrap(),
            (PathBuf::from("/cfg/mirror"), "{{name}}".into())
        );
        assert_eq!(
            split_target("oci:out/m:{{repo}}:{{tag}}", b).unwrap(),
            (PathBuf::from("/cfg/out/m"), "{{repo}}:{{tag}}".into())
        );
        assert_eq!(
            split_target("/abs:x-{{tag}}", b).unwrap(),
            (PathBuf::from("/abs"), "x-{{tag}}".into())
        );
        assert!(split_target("oci-archive:x.tar", b).is_err());
        assert!(split_target("m:", b).is_err());
    }

    #[test]
    fn digest_tags_parse() {
        let hex = "a".repeat(64);
        assert_eq!(
            digest_tag(&format!("sha256-{hex}.sig")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            digest_tag(&format!("sha256-{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(digest_tag(&format!("sha256-{hex}.")), None);
        assert_eq!(digest_tag("sha256-abc.sig"), None);
    }

    #[test]
    fn filters_and_selection() {
        let c = parse(
            r#"
defaults:
  tags: {allow: ['v?\d+\.\d+(\.\d+)?(-.*)?', latest], deny: [".*-rc.*"], semver: ">=1.2 <2"}
  digestTags: true
sync:
  - source: src
    target: out:{{repo}}:{{tag}}
"#,
        )
        .unwrap();
        let e = &c.entries[0];
        assert_eq!(e.source_resolved, "/cfg/src");
        let img = |n: &str, d: &str| Listed {
            name: Some(n.into()),
            image_name: None,
            digest: format!("sha256:{}", d.repeat(64)),
            descriptor: None,
        };
        let sig = format!("sha256-{}.sig", "b".repeat(64));
        let sig2 = format!("sha256-{}.sig", "c".repeat(64));
        let listed = [
            img("1.0.0", "a"),
            img("1.2.0", "b"),
            img("1.3.5-rc1", "c"),
            img("v1.4", "d"),
            img("2.0.0", "e"),
            img("latest", "f"),
            img(&sig, "1"),
            img(&sig2, "2"),
            Listed {
                name: None,
                image_name: None,
                digest: "sha256:x".into(),
                descriptor: None,
            },
        ];
        let got = select(e, "src", &listed);
        let copy = |s: &str| Choice::Copy(s.into());
        assert_eq!(
            got[0],
            Choice::Skip("semver \">=1.2 <2\": out of range".into())
        );
        assert_eq!(got[1], copy("src:1.2.0"));
        assert_eq!(got[2], Choice::Skip("deny \".*-rc.*\"".into()));
        assert_eq!(got[3], copy("src:v1.4"));
        assert!(matches!(&got[4], Choice::Skip(s) if s.contains("out of range")));
        assert!(matches!(&got[5], Choice::Skip(s) if s.contains("not a version")));
        assert_eq!(got[6], copy(&format!("src:{sig}")));
        assert!(matches!(&got[7], Choice::Skip(s) if s.starts_with("digest tag")));
        assert_eq!(got[8], Choice::Skip("untagged".into()));
        // A docker-archive's bare tag takes its containerd name's repository.
        let docker = [Listed {
            name: Some("1.0".into()),
            image_name: Some("docker.io/library/busybox:1.0".into()),
            digest: format!("sha256:{}", "e".repeat(64)),
            descriptor: None,
        }];
        let mut e = e.clone();
        e.tags = TagFilter::default();
        assert_eq!(select(&e, "arch", &docker), [copy("busybox:1.0")]);
    }

    #[test]
    fn partial_versions() {
        let v = |t: &str| tag_version(t).map(|v| v.to_string());
        assert_eq!(v("v1.4").as_deref(), Some("1.4.0"));
        assert_eq!(v("2").as_deref(), Some("2.0.0"));
        assert_eq!(v("1.4-rc1").as_deref(), Some("1.4.0-rc1"));
        assert_eq!(v("v1.2.3").as_deref(), Some("1.2.3"));
        for bad in ["latest", "1..2", "v", "1.2.3.4", "01.2"] {
            assert_eq!(v(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_invalid_rendered_name_fails() {
        let c = parse("sync:\n  - {source: s, target: 'o:{{tag}}-'}\n").unwrap();
        let l = [Listed {
            name: Some("1.0".into()),
            image_name: None,
            digest: format!("sha256:{}", "a".repeat(64)),
            descriptor: None,
        }];
        assert_eq!(
            select(&c.entries[0], "s", &l),
            [Choice::Fail(
                "target name \"1.0-\" is not a valid name".into()
            )]
        );
        let c = parse("sync:\n  - {source: s, target: 'o:sha256:{{hex}}'}\n").unwrap();
        assert!(
            matches!(&select(&c.entries[0], "s", &l)[0], Choice::Fail(m) if m.ends_with("reads as a digest"))
        );
    }

    #[test]
    fn allow_is_anchored() {
        let p = Pattern::new("1\\.0").unwrap();
        assert!(p.matches("1.0") && !p.matches("1.0.1") && !p.matches("v1.0"));
        let p = Pattern::new("a|b").unwrap();
        assert!(p.matches("a") && p.matches("b") && !p.matches("ab"));
    }

    #[test]
    fn config_errors_have_positions() {
        let e = err("sync:\n  - source: a\n    target: b\n    tgas: {}\n");
        assert!(e.starts_with("sync.yaml:4:5: unknown field `tgas`"), "{e}");
        let e = err("sync:\n  - source: a\n    target: b\n    referrers: maybe\n");
        assert!(e.starts_with("sync.yaml:4:16: "), "{e}");
        let e = err("sync:\n  - source: a\n    target: b\n    tags: {allow: ['(']}\n");
        assert!(
            e.starts_with("sync.yaml:4:20: entry 1: tags.allow: bad regex"),
            "{e}"
        );
        let e = err("sync:\n  - source: a\n    target: b\n    tags: {semver: 'x y'}\n");
        assert!(
            e.starts_with("sync.yaml:4:20: entry 1: tags.semver: bad range"),
            "{e}"
        );
        let e = err("sync:\n  - source: a\n    target: 'b:{{nope}}'\n");
        assert!(e.starts_with("sync.yaml:3:13: entry 1: target:"), "{e}");
        assert!(e.contains("unknown variable \"nope\""), "{e}");
        let e = err("version: 2\nsync: []\n");
        assert!(e.starts_with("sync.yaml:1:10: version 2"), "{e}");
        let e = err("defaults:\n  platforms: [linux]\nsync: []\n");
        assert!(e.starts_with("sync.yaml:2:15: defaults: platforms:"), "{e}");
        let e = err("");
        assert!(e.starts_with("sync.yaml:"), "{e}");
        let e = err("sync: []\nsync: []\n");
        assert!(e.starts_with("sync.yaml:2:"), "{e}");
        let e = err("sync:\n  - {source: a, target: b, referrers: yes}\n");
        assert!(e.starts_with("sync.yaml:2:"), "{e}");
        let e = err("sync:\n  - {source: a, target: b, tags: {deny: ['(x']}}\n");
        assert!(e.ends_with("bad regex \"(x\": unclosed group"), "{e}");
    }

    #[test]
    fn json_is_accepted() {
        let c = parse(
            "{\n\t\"sync\": [{\"source\": \"a\", \"target\": \"b\", \"referrers\": false}]\n}\n",
        )
        .unwrap();
        assert!(!c.entries[0].referrers);
        let e = err("{\"sync\": [{\"source\": \"a\", \"target\": \"b\", \"referrers\": 3}]}");
        assert!(e.starts_with("sync.yaml:1:"), "{e}");
    }

    #[test]
    fn entry_overrides_defaults_whole() {
        let c = parse(
            "defaults:\n  tags: {allow: [a], deny: [b]}\n  referrers: false\nsync:\n  - {source: s, target: t, tags: {deny: [c]}}\n  - {source: s, target: t, referrers: true}\n",
        )
        .unwrap();
        assert!(c.entries[0].tags.allow.is_empty());
        assert_eq!(c.entries[0].tags.deny[0].text, "c");
        assert!(!c.entries[0].referrers);
        assert_eq!(c.entries[1].tags.allow[0].text, "a");
        assert!(c.entries[1].referrers);
    }
}
