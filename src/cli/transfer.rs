//! Commands that copy images: `copy`, `import`, `export` (all
//! [`ocikit::copy::run`]).

use anyhow::Result;

use ocikit::copy::{self, Mode, RunOptions};

use super::args::{ArchiveArgs, CopyArgs};
use std::io::Write;

use super::output::{clean, human, notice, out, print_json, say, Bar};
use crate::cancel_on_signals;

/// Copies `sources` to `target` under `mode`'s rules and says what was copied.
pub fn copy_cmd(
    sources: Vec<String>,
    target: String,
    mode: Mode,
    args: &CopyArgs,
    archive: Option<&ArchiveArgs>,
) -> Result<()> {
    // SIGINT/SIGTERM stop the copy at its next write and remove its
    // temporary files (blobs in .ocikit-tmp, the archive beside FILE).
    cancel_on_signals();
    let options = RunOptions {
        sources,
        target,
        mode,
        format: archive.and_then(|a| a.format).map(Into::into),
        compress: archive.and_then(|a| a.compress).map(Into::into),
        platforms: args.platforms.clone(),
        all: args.all,
        no_referrers: args.no_referrers,
        deep: args.deep,
        uncompressed_layers: args.uncompressed_layers,
        limits: super::output::limits(),
        lock_policy: super::output::lock_policy(),
        cancel: super::output::cancel_token(),
        checksum: archive.is_some_and(|a| a.checksum),
        split: archive.and_then(|a| a.split),
        delta_from: archive.and_then(|a| a.delta_from.clone()),
        dry_run: args.dry_run,
    };
    let bar = Bar::lazy("copying");
    let result = copy::run(&options, &bar, &mut notice);
    bar.done();
    let done = result?;
    for n in &done.warnings {
        say!("ocikit: warning: {n}");
    }
    if args.json {
        return print_json(&ocikit::report::CopyDocument::new(&options.target, &done));
    }
    if done.dry_run {
        // The plan is the result: on stdout, as gc's and prune's are.
        let r = &done.copy;
        let mut o = out();
        for i in &r.images {
            writeln!(o, "would copy {}", clean(i))?;
        }
        writeln!(
            o,
            "dry run: would write {} blobs ({}); {} {}",
            r.blobs_written,
            human(r.bytes_written),
            r.blobs_skipped,
            match &done.delta {
                Some(_) if archive.is_some_and(|a| a.delta_from.is_some()) =>
                    "left out (the far side holds them)",
                _ => "already there",
            }
        )?;
        o.flush()?;
        return Ok(());
    }
    if let Some(d) = &done.delta {
        match mode {
            Mode::Export | Mode::Copy if archive.is_some_and(|a| a.delta_from.is_some()) => say!(
                "delta against {}: left out {} blobs ({}) that side holds",
                clean(&d.record.to_string()),
                d.blobs_left_out,
                human(d.bytes_left_out)
            ),
            _ => say!(
                "delta bundle made against {}: {} blobs ({}) were already in the layout, verified",
                clean(&d.record.to_string()),
                d.blobs_left_out,
                human(d.bytes_left_out)
            ),
        }
    }
    let report = &done.copy;
    say!(
        "copied {} image{} ({} blobs written, {} already there, {})",
        report.images.len(),
        if report.images.len() == 1 { "" } else { "s" },
        report.blobs_written,
        report.blobs_skipped,
        human(report.bytes_written)
    );
    Ok(())
}
