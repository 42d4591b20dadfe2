//! Commands that look after a layout: `tag`, `untag`, `gc`, `verify`, and
//! the generated `man` pages and `completions`.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use ocikit::reference::{Location, Reference};
use ocikit::report::{self, GcDocument, VerifyDocument};
use ocikit::verify::{self, VerifyOptions, VerifyReport};

use super::args::Cli;
use super::output::{clean, human, open_layout, out, print_json, say, write_bytes, Bar};
use crate::Negative;

pub fn tag(source: &str, tag: &str) -> Result<()> {
    let loc = Location::parse(source)?;
    let layout = open_layout(&loc)?;
    let d = layout.tag(loc.reference.as_ref(), tag)?;
    say!("tagged {} as {tag}", d.digest);
    Ok(())
}

pub fn untag(target: &str) -> Result<()> {
    let loc = Location::parse(target)?;
    let Some(Reference::Tag(tag)) = &loc.reference else {
        bail!("untag needs LAYOUT:TAG, got {target:?}");
    };
    open_layout(&loc)?.untag(tag)?;
    Ok(())
}

pub fn verify_cmd(location: &str, deep: bool, json: bool) -> Result<Option<Negative>> {
    let loc = Location::parse(location)?;
    if loc.reference.is_some() {
        bail!("verify checks a whole location; drop the reference from {location:?}");
    }
    let expect = loc.archive_expect()?;
    let start = Instant::now();
    let bar = Bar::new(if deep {
        "verifying (deep)"
    } else {
        "verifying"
    });
    let options = VerifyOptions {
        deep,
        limits: super::output::limits(),
    };
    let report = match expect {
        Some(expect) => verify::verify_archive(&loc.path, expect, &options, &bar)?,
        None => verify::verify_layout_with_progress(&loc.path, &options, &bar)?,
    };
    bar.done();
    if let Some(f) = report.unreadable() {
        // Not a finding about the layout: verify could not run.
        bail!("{}", f.message);
    }
    let secs = start.elapsed().as_secs_f64();
    if json {
        print_json(&VerifyDocument::new(&report, secs))?;
    } else {
        print_verify(&report, secs)?;
    }
    Ok((!report.is_clean()).then_some(Negative))
}

fn print_verify(r: &VerifyReport, secs: f64) -> Result<()> {
    let mut o = out();
    for f in &r.findings {
        writeln!(
            o,
            "{}: {}: {}",
            report::severity(f),
            f.kind,
            clean(&f.message)
        )?;
    }
    let errors = r.errors().count();
    let warnings = r.warnings().count();
    let verdict = if errors == 0 { "ok" } else { "FAILED" };
    writeln!(
        o,
        "{verdict}: {} blobs, {} checked{} in {secs:.2}s; {errors} error{}, {warnings} warning{}",
        r.blobs_checked,
        human(r.bytes_checked),
        if r.deep {
            format!(", {} layers decompressed", r.layers_decompressed)
        } else {
            String::new()
        },
        if errors == 1 { "" } else { "s" },
        if warnings == 1 { "" } else { "s" },
    )?;
    o.flush()?;
    Ok(())
}

pub fn gc_cmd(
    location: &str,
    dry_run: bool,
    json: bool,
    force: bool,
    prune_untagged: bool,
) -> Result<()> {
    let loc = Location::parse(location)?;
    if loc.reference.is_some() {
        bail!("gc works on a whole layout; drop the reference from {location:?}");
    }
    let layout = open_layout(&loc)?;
    let report = ocikit::gc::gc(
        &layout,
        &ocikit::gc::GcOptions {
            dry_run,
            force,
            prune_untagged,
        },
    )?;
    if json {
        return print_json(&GcDocument::new(&report));
    }
    let mut o = out();
    for d in &report.pruned {
        writeln!(o, "untag {} (untagged index.json entry)", clean(d))?;
    }
    for r in &report.remove {
        writeln!(
            o,
            "remove {} {} {} ({})",
            r.digest,
            r.size,
            clean(r.media_type.as_deref().unwrap_or("-")),
            r.reason
        )?;
    }
    for t in &report.temp_files {
        writeln!(o, "remove {} (stale temporary file)", clean(t))?;
    }
    for l in &report.left_alone {
        say!(
            "ocikit: note: left alone: {} ({})",
            clean(&l.path),
            l.reason
        );
    }
    writeln!(
        o,
        "{} {} bytes in {} blob{} ({} kept)",
        if dry_run { "would free" } else { "freed" },
        report.bytes,
        report.blobs,
        if report.blobs == 1 { "" } else { "s" },
        report.kept
    )?;
    o.flush()?;
    Ok(())
}

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // Generated into memory first: clap_complete panics on a write error.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "ocikit", &mut buf);
    write_bytes(&buf)
}

/// The man pages: `ocikit.1` to stdout, or every page into `dir`.
pub fn man_pages(dir: Option<&Path>) -> Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let Some(dir) = dir else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        return write_bytes(&buf);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, cmd: clap::Command| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .title(name.to_string())
            .render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    };
    for sub in cmd.get_subcommands() {
        let name = format!("ocikit-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .version(env!("CARGO_PKG_VERSION"));
        write(&name, page)?;
    }
    write("ocikit", cmd)?;
    Ok(())
}
