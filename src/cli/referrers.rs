//! `referrers` and `attach`: OCI 1.1 referrers (signatures, SBOMs) of an image.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};

use ocikit::digest::Digest;
use ocikit::platform::PlatformSpec;
use ocikit::reference::Location;
use ocikit::referrers::{self, AttachOptions, ReferrerNode, ReferrersOptions, ReferrersReport};

use super::output::{clean, human, open_layout, open_store, out, print_json, short_type};

pub fn referrers_cmd(
    location: &str,
    artifact_type: Option<String>,
    platform: Option<PlatformSpec>,
    json: bool,
) -> Result<()> {
    let (loc, store) = open_store(location)?;
    let report = referrers::referrers(
        &store,
        loc.reference.as_ref(),
        &ReferrersOptions {
            artifact_type,
            platform,
        },
    )?;
    if json {
        return print_json(&report);
    }
    print_tree(&loc, &report)
}

fn short(digest: &str) -> String {
    Digest::parse(digest)
        .map(|d| d.short())
        .unwrap_or_else(|_| clean(digest))
}

/// The tree, as `oras discover` prints it: each subject that has referrers,
/// then its referrers (and theirs) below it. Nothing when there are none.
fn print_tree(loc: &Location, report: &ReferrersReport) -> Result<()> {
    if report.is_empty() {
        return Ok(());
    }
    let mut o = out();
    for s in report.subjects.iter().filter(|s| !s.referrers.is_empty()) {
        let what = match &s.platform {
            Some(p) => clean(p),
            None => clean(&short_type(&s.media_type)),
        };
        writeln!(
            o,
            "{}@{}  {what}",
            clean(&loc.path.display().to_string()),
            s.digest
        )?;
        print_nodes(&mut o, &s.referrers, "")?;
    }
    o.flush()?;
    Ok(())
}

fn print_nodes(o: &mut dyn Write, nodes: &[ReferrerNode], prefix: &str) -> Result<()> {
    for (i, n) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let (branch, more) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        writeln!(
            o,
            "{prefix}{branch}{}  {}  {}",
            short(&n.digest),
            clean(n.artifact_type.as_deref().unwrap_or("-")),
            human(n.size.max(0) as u64)
        )?;
        let inner = format!("{prefix}{more}");
        for (k, v) in &n.annotations {
            writeln!(o, "{inner}    {}={}", clean(k), clean(v))?;
        }
        print_nodes(o, &n.referrers, &inner)?;
    }
    Ok(())
}

pub fn attach_cmd(
    target: &str,
    artifact_type: String,
    files: Vec<PathBuf>,
    annotations: Vec<String>,
    media_type: Option<String>,
    json: bool,
) -> Result<()> {
    let mut ann = BTreeMap::new();
    for a in &annotations {
        let Some((k, v)) = a.split_once('=') else {
            bail!("--annotation takes KEY=VALUE, got {a:?}");
        };
        if k.is_empty() {
            bail!("--annotation takes KEY=VALUE with a non-empty KEY, got {a:?}");
        }
        ann.insert(k.to_string(), v.to_string());
    }
    let loc = Location::parse(target)?;
    let layout = open_layout(&loc)?;
    let report = referrers::attach(
        &layout,
        loc.reference.as_ref(),
        &AttachOptions {
            artifact_type,
            files,
            media_type,
            annotations: ann,
        },
    )?;
    if json {
        return print_json(&report);
    }
    let mut o = out();
    writeln!(o, "{}", report.manifest.digest)?;
    o.flush()?;
    Ok(())
}
