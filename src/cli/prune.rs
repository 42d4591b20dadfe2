//! `prune`: retention policies for a layout's tags, then gc.

use std::io::Write;

use anyhow::{bail, Result};

use ocikit::prune::{self, PruneOptions, SortBy};
use ocikit::reference::Location;

use super::args::{PruneArgs, PruneSort};
use super::output::{clean, open_layout, out, print_json};

pub fn prune_cmd(a: PruneArgs) -> Result<()> {
    let loc = Location::parse(&a.layout)?;
    if loc.reference.is_some() {
        bail!(
            "prune works on a whole layout; drop the reference from {:?}",
            a.layout
        );
    }
    let older_than = a
        .older_than
        .as_deref()
        .map(prune::parse_duration)
        .transpose()?;
    let sort = match a.sort {
        PruneSort::Created => SortBy::Created,
        PruneSort::Semver => SortBy::Semver,
        PruneSort::Name => SortBy::Name,
    };
    let options = PruneOptions {
        matching: a.matching,
        keep_last: a.keep_last,
        keep_semver: a.keep_semver,
        older_than,
        sort,
        dry_run: a.dry_run,
        now: None,
    };
    // Refuse bad policies before opening anything.
    prune::Policy::new(&options)?;
    let layout = open_layout(&loc)?;
    let report = prune::prune(&layout, &options)?;
    if a.json {
        return print_json(&ocikit::report::PruneDocument::new(&report));
    }
    let mut o = out();
    for d in &report.plan {
        let verb = if d.drop { "drop" } else { "keep" };
        writeln!(o, "{verb} {} ({})", clean(&d.name), d.reason)?;
    }
    for n in &report.untagged {
        writeln!(o, "untagged {}", clean(n))?;
    }
    if let Some(gc) = &report.gc {
        writeln!(
            o,
            "untagged {}; gc removed {} blobs, {} bytes",
            report.untagged.len(),
            gc.blobs,
            gc.bytes
        )?;
    }
    o.flush()?;
    Ok(())
}
