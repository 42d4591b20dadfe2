//! `sync`: copy the images a config file picks into layouts.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use ocikit::sync::{self, Config, ImageReport, Status, SyncDocument, SyncOptions};

use super::args::SyncArgs;
use super::output::{cancel_token, clean, limits, lock_policy, notice, out, print_json};
use crate::Negative;

fn image_line(layout: &str, i: &ImageReport) -> String {
    let from = match &i.name {
        Some(n) => format!("{}:{}", clean(&i.source), clean(n)),
        None => format!("{}@{}", clean(&i.source), clean(&i.digest)),
    };
    let to = i
        .target_name
        .as_deref()
        .map(|t| format!(" -> {}:{}", clean(layout), clean(t)))
        .unwrap_or_default();
    let reason = i.reason.as_deref().map(clean).unwrap_or_default();
    match i.status {
        Status::Copied | Status::WouldCopy => {
            format!(
                "{} {from}{to} ({} blobs, {} bytes)",
                i.status, i.blobs, i.bytes
            )
        }
        Status::UpToDate => format!("{} {from}{to}", i.status),
        Status::FilteredOut => format!("{} {from} ({reason})", i.status),
        Status::Failed => format!("{} {from}{to}: {reason}", i.status),
    }
}

pub fn sync_cmd(a: SyncArgs) -> Result<Option<Negative>> {
    let config = Config::load(Path::new(&a.config))?;
    let options = SyncOptions {
        dry_run: a.dry_run,
        limits: limits(),
        lock_policy: lock_policy(),
        cancel: cancel_token(),
    };
    let report = sync::sync(&config, &options, &mut notice)?;
    let negative = report.failed().then_some(Negative);
    if a.json {
        print_json(&SyncDocument::new(&report))?;
        return Ok(negative);
    }
    let mut o = out();
    for e in &report.entries {
        for i in &e.images {
            writeln!(o, "{}", image_line(&e.target_layout, i))?;
        }
        for err in &e.errors {
            writeln!(
                o,
                "failed entry {} {}: {}",
                e.entry,
                clean(&err.source),
                clean(&err.error)
            )?;
        }
    }
    let s = &report.summary;
    if report.dry_run {
        writeln!(
            o,
            "sync (dry run): {} would copy ({} blobs, {} bytes), {} up to date, {} filtered out, {} failed",
            s.would_copy, s.blobs, s.bytes, s.up_to_date, s.filtered_out, s.failed
        )?;
    } else {
        writeln!(
            o,
            "sync: {} copied ({} blobs, {} bytes), {} up to date, {} filtered out, {} failed",
            s.copied, s.blobs, s.bytes, s.up_to_date, s.filtered_out, s.failed
        )?;
    }
    o.flush()?;
    Ok(negative)
}
