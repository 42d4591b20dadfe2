//! The whole of a copy, as `ocikit copy`, `import` and `export` run it: open
//! the sources, decide the target, plan, check layers, uncompress them if
//! asked, write the layout or archive.

use std::path::{Path, PathBuf};

use crate::guard::{self, OutputError};
use crate::open::{Notice, OpenError, Target};
use crate::platform::PlatformSpec;
use crate::progress::Progress;
use crate::reference::{Location, LocationError, Reference, Transport};
use crate::spec::Compression;

use super::{
    check_layers, check_unverified_layers, plan, uncompress_layers, uncompress_layers_with,
    write_archive, write_layout, ArchiveKind, ArchiveOut, CopyError, CopyOptions, CopyReport,
    Source, Uncompress,
};

/// Which command's rules apply to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// `copy`: a layout or an archive, by transport and name.
    #[default]
    Copy,
    /// `import`: a layout directory, always.
    Import,
    /// `export`: an archive file (or `-`), always.
    Export,
}

/// What to copy where, and how.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The sources, as `LOCATION[:REF]` strings ([`Location::parse`]).
    pub sources: Vec<String>,
    /// The target, `TARGET[:REF]`.
    pub target: String,
    /// Which command's rules apply to the target.
    pub mode: Mode,
    /// Archive format for a file target (`--format`; default: from its
    /// transport, else oci-archive).
    pub format: Option<ArchiveKind>,
    /// Compression of a file target as a whole (`--compress`; default: from
    /// its extension).
    pub compress: Option<Compression>,
    /// Platforms to keep (`--platform`).
    pub platforms: Vec<PlatformSpec>,
    /// Every platform asked for explicitly (`--all`).
    pub all: bool,
    /// Leave out referrers.
    pub no_referrers: bool,
    /// Decompress and check every layer before writing anything.
    pub deep: bool,
    /// Write layers uncompressed (new manifests; configs unchanged).
    pub uncompressed_layers: bool,
    /// Caps for every read (the decompression limit).
    pub limits: crate::limits::Limits,
    /// How to wait for the target layout's lock.
    pub lock_policy: crate::layout::LockPolicy,
    /// Stops the copy at its next write (and an archive's decompression).
    pub cancel: crate::cancel::Cancel,
    /// Also write `FILE.sha256` (sha256sum format) beside an archive file.
    pub checksum: bool,
    /// Cut an archive file into parts `FILE.000`, `FILE.001`, … of at most
    /// this many bytes.
    pub split: Option<u64>,
    /// Write a delta bundle: leave out the blobs this side holds (a layout
    /// directory, an archive, or the JSON of `ls --json --blobs` written
    /// there; see [`crate::delta::Have::load`]).
    pub delta_from: Option<String>,
    /// Plan (and check) only: report what would be written, write nothing.
    pub dry_run: bool,
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A location string is malformed.
    #[error(transparent)]
    Location(#[from] LocationError),
    /// A source cannot be opened, or the target is not what the command writes.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The target would overwrite a source.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Planning, checking or writing failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// `--delta-from` cannot be read.
    #[error(transparent)]
    Delta(#[from] crate::delta::DeltaError),
    /// A delta bundle's images need blobs that neither it nor the target
    /// holds: nothing was published.
    #[error("{delta} is a delta bundle made against {record}; {} lacks {} blob{} its images need, so nothing was imported: {}", target.display(), missing.len(), if missing.len() == 1 { "" } else { "s" }, missing.iter().map(|(d, what)| format!("{d} ({what})")).collect::<Vec<_>>().join(", "))]
    DeltaIncomplete {
        /// The delta bundle.
        delta: String,
        /// What it was made against.
        record: Box<crate::delta::DeltaRecord>,
        /// Where it was imported.
        target: PathBuf,
        /// The blobs missing, with what each is.
        missing: Vec<(crate::digest::Digest, String)>,
    },
    /// A blob the target holds and a delta bundle relies on is damaged:
    /// nothing was published.
    #[error("{delta} is a delta bundle and relies on blob {digest} in {}, which is damaged ({reason}); nothing was imported", target.display())]
    DeltaBase {
        /// The delta bundle.
        delta: String,
        /// The target layout.
        target: PathBuf,
        /// The damaged blob.
        digest: crate::digest::Digest,
        /// What is wrong with it.
        reason: String,
    },
    /// Splitting an archive or writing its checksum failed.
    #[error(transparent)]
    Parts(#[from] crate::archive::parts::PartsError),
    /// A temporary directory or file beside the target could not be made or removed.
    #[error("{}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a copy did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunReport {
    /// Blobs and bytes written, images recorded.
    pub copy: CopyReport,
    /// What the user should know about the written archive (the CLI prints
    /// them as warnings once the progress bar is gone).
    pub warnings: Vec<String>,
    /// A delta bundle written or read: what it was made against, and the
    /// blobs it does not carry (left out of an export; taken from the target
    /// layout, verified, on import).
    pub delta: Option<DeltaReport>,
    /// Nothing was written: `copy` says what would have been (blobs and
    /// bytes to write, blobs the target holds, images).
    pub dry_run: bool,
}

/// What a delta bundle does not carry.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DeltaReport {
    /// What the bundle was made against.
    pub record: crate::delta::DeltaRecord,
    /// Blobs the images need that the bundle does not carry.
    pub blobs_left_out: u64,
    /// Their bytes.
    pub bytes_left_out: u64,
}

/// Runs a copy: parses and opens the sources, decides the target
/// ([`Location::target`]), refuses a target that would overwrite a source,
/// plans, checks layers (all with `deep`, else those whose DiffID is their
/// only check), uncompresses layers if asked, and writes. Notes and warnings
/// go to `notice` as they arise; `progress` sees the bytes written.
///
/// # Errors
/// See [`RunError`]; a failed copy leaves the target as it was.
pub fn run(
    options: &RunOptions,
    progress: &dyn Progress,
    notice: &mut dyn FnMut(Notice),
) -> Result<RunReport, RunError> {
    let target = match options.mode {
        Mode::Import => {
            let loc = Location::parse(&options.target)?;
            if matches!(
                loc.transport,
                Transport::OciArchive | Transport::DockerArchive
            ) {
                return Err(RunError::Invalid(
                    "import writes a layout directory; to write an archive use export".into(),
                ));
            }
            format!("oci:{}", options.target)
        }
        Mode::Copy | Mode::Export => options.target.clone(),
    };
    let target_loc = Location::parse(&target)?;
    let (format, compress) = match options.mode {
        Mode::Import => (None, None),
        Mode::Copy | Mode::Export => (options.format, options.compress),
    };
    let target_kind = target_loc.target(format, compress, options.mode == Mode::Export)?;
    let target_name = match &target_loc.reference {
        Some(Reference::Tag(t)) => Some(t.clone()),
        Some(Reference::Digest(d)) => {
            return Err(RunError::Invalid(format!(
                "{target}: a target cannot be named by a digest ({d}); name it with a tag"
            )))
        }
        None => None,
    };
    match (&target_kind, options.split) {
        (Target::Layout(_), _) if options.checksum || options.split.is_some() => {
            return Err(RunError::Invalid(
                "--checksum and --split apply to an archive file, not a layout".into(),
            ))
        }
        (Target::Archive { path: None, .. }, _) if options.checksum || options.split.is_some() => {
            return Err(RunError::Invalid(
                "--checksum and --split need an archive file, not standard output".into(),
            ))
        }
        (_, Some(size)) => crate::archive::parts::check_split_size(size)?,
        _ => {}
    }
    if options.delta_from.is_some() {
        match &target_kind {
            Target::Archive {
                kind: ArchiveKind::OciArchive,
                ..
            } => {}
            Target::Archive { .. } => return Err(RunError::Invalid(
                "--delta-from writes an oci-archive: a docker-archive must hold every layer of its images".into(),
            )),
            Target::Layout(_) => {
                return Err(RunError::Invalid(
                    "--delta-from writes an archive, not a layout".into(),
                ))
            }
        }
        if options.uncompressed_layers {
            return Err(RunError::Invalid(
                "--delta-from and --uncompressed-layers cannot be combined: the far side holds the layers as they are stored, not uncompressed".into(),
            ));
        }
    }
    if options.dry_run && options.uncompressed_layers {
        return Err(RunError::Invalid(
            "--dry-run cannot tell what --uncompressed-layers would write (its blobs are made by decompressing); run without --dry-run".into(),
        ));
    }
    let mut opened = Vec::new();
    let mut source_paths = Vec::new();
    let open = crate::archive::OpenOptions::new(options.limits, options.cancel.clone());
    let have = match &options.delta_from {
        Some(h) => {
            source_paths.push(Location::parse(h)?.path);
            Some(crate::delta::Have::load(h, &open, notice)?)
        }
        None => None,
    };
    // Delta bundles among the sources: read over the target layout.
    let mut deltas: Vec<(String, crate::delta::DeltaRecord)> = Vec::new();
    for s in &options.sources {
        let loc = Location::parse(s)?;
        let mut store = loc.open(&open, notice)?;
        if let Some(record) = crate::delta::record_of_store(&*store) {
            deltas.push((store.name(), record));
            let base = match &target_kind {
                Target::Layout(dir) if dir.is_dir() => Some(dir.as_path()),
                _ => None,
            };
            store = Box::new(crate::delta::Overlay::new(store, base));
        }
        opened.push((store, loc.reference));
        source_paths.push(loc.path);
    }
    // Nothing is written (not even a temporary file) where it would
    // overwrite a source.
    let source_paths: Vec<&Path> = source_paths.iter().map(PathBuf::as_path).collect();
    match &target_kind {
        Target::Layout(dir) => guard::check_output(guard::Output::Layout(dir), &source_paths)?,
        Target::Archive { path: Some(p), .. } => {
            guard::check_output(guard::Output::File(p), &source_paths)?
        }
        Target::Archive { path: None, .. } => {}
    }
    let srcs: Vec<Source<'_>> = opened
        .iter()
        .map(|(store, reference)| Source {
            store: &**store,
            reference: reference.clone(),
        })
        .collect();
    let single_image = matches!(
        target_kind,
        Target::Archive {
            kind: ArchiveKind::DockerArchive,
            ..
        }
    );
    if single_image && options.platforms.len() > 1 {
        return Err(RunError::Invalid(format!(
            "a docker-archive holds one image per name, so it takes one --platform, not {}; export each platform under its own name",
            options.platforms.len()
        )));
    }
    if options.uncompressed_layers && !options.no_referrers {
        notice(Notice::Note("--uncompressed-layers rewrites manifests, so their referrers (signatures, SBOMs) would no longer apply; they are left out".into()));
    }
    let copy_options = CopyOptions {
        platforms: options.platforms.clone(),
        single_image,
        target_name,
        no_referrers: options.no_referrers || options.uncompressed_layers,
        all_platforms: options.all,
        limits: options.limits,
        lock_policy: options.lock_policy,
        cancel: options.cancel.clone(),
    };
    let mut plan = if deltas.is_empty() {
        plan(&srcs, &copy_options)?
    } else {
        let p = super::plan_collecting_missing(&srcs, &copy_options)?;
        if !p.missing.is_empty() {
            let (delta, record) = deltas.swap_remove(0);
            return Err(RunError::DeltaIncomplete {
                delta,
                record: Box::new(record),
                target: match &target_kind {
                    Target::Layout(dir) => dir.clone(),
                    Target::Archive { path: Some(p), .. } => p.clone(),
                    Target::Archive { path: None, .. } => PathBuf::from("<stdout>"),
                },
                missing: p.missing,
            });
        }
        p
    };
    let mut delta_report = None;
    if let Some((delta, record)) = deltas.first() {
        let mut left_out = (0u64, 0u64);
        if let Target::Layout(dir) = &target_kind {
            left_out = verify_base(delta, dir, &plan)?;
        }
        delta_report = Some(DeltaReport {
            record: record.clone(),
            blobs_left_out: left_out.0,
            bytes_left_out: left_out.1,
        });
    }
    if let Some(have) = &have {
        let omit: std::collections::HashSet<crate::digest::Digest> = plan
            .blobs
            .iter()
            .filter(|b| have.holds(&b.digest, b.size))
            .map(|b| b.digest.clone())
            .collect();
        let bytes = plan
            .blobs
            .iter()
            .filter(|b| omit.contains(&b.digest))
            .map(|b| b.size)
            .fold(0u64, u64::saturating_add);
        delta_report = Some(DeltaReport {
            record: crate::delta::DeltaRecord {
                fingerprint: have.fingerprint().to_string(),
                description: have.description().to_string(),
                omitted: Some(omit.len() as u64),
            },
            blobs_left_out: omit.len() as u64,
            bytes_left_out: bytes,
        });
        plan.delta = Some((omit.clone(), have.annotations(omit.len())));
    }
    for n in &plan.notes {
        notice(Notice::Note(n.clone()));
    }
    if options.deep {
        let n = check_layers(&srcs, &plan)?;
        notice(Notice::Info(format!(
            "checked {n} layer{} (--deep)",
            if n == 1 { "" } else { "s" }
        )));
    } else {
        // Layers whose only digest is their DiffID are always checked.
        check_unverified_layers(&srcs, &plan)?;
    }
    if options.dry_run {
        return Ok(dry_run_report(&plan, &target_kind, delta_report));
    }
    // Into an uncompressed archive file, layers whose size their gzip trailer
    // announces are decompressed straight into their places; if one was
    // announced wrongly, the export starts over with temporary files.
    let streamable = matches!(
        target_kind,
        Target::Archive {
            path: Some(_),
            compression: Compression::None,
            ..
        }
    );
    let mut files_fallback = None;
    let mut uncompress_notes = Vec::new();
    if options.uncompressed_layers {
        let temp_dir = temp_dir(&target_kind)?;
        let mode = if streamable {
            files_fallback = Some((plan.clone(), temp_dir.clone()));
            Uncompress::Predict
        } else {
            Uncompress::Files
        };
        uncompress_notes = uncompress_layers_with(&srcs, &mut plan, &temp_dir, mode)?;
        // A streamed export may start over with other sizes (and digests):
        // its notes are told once it is written.
        if !streamable {
            for n in uncompress_notes.drain(..) {
                notice(Notice::Note(n));
            }
        }
    } else if single_image {
        if let Some(b) = plan.blobs.iter().find(|b| b.media_type.ends_with("+zstd")) {
            notice(Notice::Warning(format!(
                "layer {} is zstd-compressed; Docker Engine 20.10 and older cannot load it (add --uncompressed-layers for them)",
                b.digest
            )));
        }
    }
    let (copy, warnings) = match &target_kind {
        Target::Layout(dir) => (write_layout(&srcs, &plan, dir, progress)?, Vec::new()),
        Target::Archive {
            path,
            kind,
            compression,
        } => {
            // A split archive is written whole to a temporary name first,
            // then cut into parts.
            let whole = match (path, options.split) {
                (Some(p), Some(_)) => Some(
                    tempfile::Builder::new()
                        .prefix(".ocikit-whole-")
                        .tempfile_in(crate::output::parent_dir(p))
                        .map_err(|source| RunError::Io {
                            path: p.clone(),
                            source,
                        })?
                        .into_temp_path(),
                ),
                _ => None,
            };
            let out = match (path, &whole) {
                (_, Some(w)) => ArchiveOut::File(w),
                (Some(p), None) => ArchiveOut::File(p),
                (None, None) => ArchiveOut::Stdout,
            };
            let written = write_archive(&srcs, &plan, *kind, *compression, out, progress);
            let written = match (written, files_fallback.take()) {
                (Err(CopyError::Prediction { .. }), Some((mut plan, temp_dir))) => {
                    uncompress_notes = uncompress_layers(&srcs, &mut plan, &temp_dir)?;
                    write_archive(&srcs, &plan, *kind, *compression, out, progress)?
                }
                (r, _) => r?,
            };
            if let Some(p) = path {
                finish_file(p, whole.as_deref(), options, notice)?;
            }
            written
        }
    };
    for n in uncompress_notes {
        notice(Notice::Note(n));
    }
    // What a delta leaves out counts as what the target already holds.
    let mut copy = copy;
    if let Some((omit, _)) = &plan.delta {
        copy.blobs_skipped += omit.len() as u64;
    }
    Ok(RunReport {
        copy,
        warnings,
        delta: delta_report,
        dry_run: false,
    })
}

/// What a copy would write: into a layout, the planned blobs it lacks (by
/// name and size, as the copy skips them); into an archive, every planned
/// blob but those a delta leaves out.
fn dry_run_report(plan: &super::Plan, target: &Target, delta: Option<DeltaReport>) -> RunReport {
    let omitted =
        |d: &crate::digest::Digest| plan.delta.as_ref().is_some_and(|(o, _)| o.contains(d));
    let mut copy = CopyReport::default();
    for b in &plan.blobs {
        let held = match target {
            Target::Layout(dir) => std::fs::symlink_metadata(dir.join(b.digest.blob_path()))
                .is_ok_and(|m| m.is_file() && m.len() == b.size),
            Target::Archive { .. } => omitted(&b.digest),
        };
        if held {
            copy.blobs_skipped += 1;
        } else {
            copy.blobs_written += 1;
            copy.bytes_written = copy.bytes_written.saturating_add(b.size);
        }
    }
    copy.images = plan.image_labels();
    RunReport {
        copy,
        warnings: Vec::new(),
        delta,
        dry_run: true,
    }
}

/// Hashes every planned blob the target layout already holds (a delta
/// bundle relies on them; the copy would skip them), in parallel, before
/// anything is written. Returns how many there are and their bytes.
fn verify_base(delta: &str, dir: &Path, plan: &super::Plan) -> Result<(u64, u64), RunError> {
    use crate::store::Store as _;
    use rayon::prelude::*;
    let store = crate::store::LayoutStore::new(dir);
    let held: Vec<&super::PlannedBlob> = plan
        .blobs
        .iter()
        .filter(|b| {
            std::fs::symlink_metadata(dir.join(b.digest.blob_path()))
                .is_ok_and(|m| m.is_file() && m.len() == b.size)
        })
        .collect();
    held.par_iter().try_for_each(|b| {
        let damaged = |reason: String| RunError::DeltaBase {
            delta: delta.to_string(),
            target: dir.to_path_buf(),
            digest: b.digest.clone(),
            reason,
        };
        if !b.digest.algorithm().is_verifiable() {
            return Ok(());
        }
        let blob = store
            .open_blob(&b.digest)
            .map_err(|e| damaged(e.to_string()))?;
        let (got, len) = blob
            .hash(b.digest.algorithm().clone())
            .map_err(|e| damaged(e.to_string()))?;
        if len != b.size {
            return Err(damaged(format!("{len} bytes, not {}", b.size)));
        }
        if got != b.digest {
            return Err(damaged(format!("it hashes to {got}")));
        }
        Ok(())
    })?;
    Ok((
        held.len() as u64,
        held.iter().map(|b| b.size).fold(0u64, u64::saturating_add),
    ))
}

/// The transfer steps after an archive file is complete: `--split` cuts
/// `whole` (the archive under a temporary name) into parts, `--checksum`
/// writes `FILE.sha256` for the file or its parts.
fn finish_file(
    path: &Path,
    whole: Option<&Path>,
    options: &RunOptions,
    notice: &mut dyn FnMut(Notice),
) -> Result<(), RunError> {
    use crate::archive::parts;
    let files = match (whole, options.split) {
        (Some(w), Some(size)) => {
            let report = parts::split_file(w, path, size)?;
            for r in &report.removed {
                notice(Notice::Note(format!(
                    "removed {}, a part of an older split",
                    r.display()
                )));
            }
            report.parts
        }
        _ => vec![path.to_path_buf()],
    };
    if options.checksum {
        let mut entries = Vec::new();
        for f in files {
            let hex = parts::sha256_file(&f)?;
            entries.push((f, hex));
        }
        parts::write_sums(&parts::sums_path(path), &entries)?;
    } else {
        // An older checksum file would no longer match what was just
        // written, and readers check it: it goes.
        let sums = parts::sums_path(path);
        match std::fs::remove_file(&sums) {
            Ok(()) => notice(Notice::Note(format!(
                "removed {}, the checksum file of an older export",
                sums.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RunError::Io { path: sums, source }),
        }
    }
    Ok(())
}

/// Where decompressed layers wait: on the target's file system, since they
/// are written again right away.
fn temp_dir(target: &Target) -> Result<PathBuf, RunError> {
    Ok(match target {
        Target::Layout(dir) => {
            let t = dir.join(crate::layout::TMP_DIR);
            std::fs::create_dir_all(&t).map_err(|source| RunError::Io {
                path: t.clone(),
                source,
            })?;
            t
        }
        Target::Archive { path: Some(p), .. } => crate::output::parent_dir(p),
        Target::Archive { path: None, .. } => std::env::temp_dir(),
    })
}
