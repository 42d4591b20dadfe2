//! `ocikit index create|add|rm`: multi-platform index editing
//! ([`ocikit::index_edit`]).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::Subcommand;

use ocikit::index_edit::{self, IndexOptions, IndexReport, IndexSource, Selector};
use ocikit::platform::PlatformSpec;
use ocikit::reference::{Location, Reference, Transport};
use ocikit::store::Store;
use ocikit::Digest;

use super::output::{clean, open_layout, open_store, print_json, say};
use crate::cancel_on_signals;

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Build an image index from single-platform images and tag it in a layout.
    #[command(
        after_help = "Each SOURCE (a layout or archive, optionally :TAG or @DIGEST) gives its manifest; a\nmulti-platform SOURCE gives every image manifest of its index. Entries keep the order\ngiven; each entry's platform is read from its image's config. The same inputs give\nthe same index digest. LAYOUT is created if absent; TAG moves as `ocikit tag` moves it.\nExamples:\n  ocikit index create ./images:multi ./images:app-amd64 ./images:app-arm64\n  ocikit index create ./images:app amd64.tar arm64.tar --annotation org.opencontainers.image.version=1.0"
    )]
    Create {
        /// LAYOUT:TAG to write the index into.
        target: String,
        /// SOURCE[:REF]... giving the entries, in order.
        #[arg(required = true)]
        sources: Vec<String>,
        /// Keep two entries of the same platform.
        #[arg(long)]
        force: bool,
        /// Set an annotation on the index (repeatable).
        #[arg(long = "annotation", value_name = "K=V")]
        annotations: Vec<String>,
        /// Print JSON (schema in docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Add an image (or one platform of a multi-platform image) to a tagged index.
    #[command(
        after_help = "Writes a new index with the entry appended and points TAG at it; the old index\nstays as a blob until `ocikit gc`. Without --platform a multi-platform SOURCE gives\nevery image manifest of its index.\nExamples:\n  ocikit index add ./images:app ./images:app-s390x\n  ocikit index add ./images:app testdata/demo:1.0 --platform linux/arm64"
    )]
    Add {
        /// LAYOUT:TAG naming the index.
        target: String,
        /// SOURCE[:REF] to add.
        source: String,
        /// Take only this platform's manifest of a multi-platform SOURCE.
        #[arg(long)]
        platform: Option<PlatformSpec>,
        /// Keep two entries of the same platform.
        #[arg(long)]
        force: bool,
        /// Set an annotation on the index (repeatable).
        #[arg(long = "annotation", value_name = "K=V")]
        annotations: Vec<String>,
        /// Print JSON (schema in docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Remove entries (by platform or digest) from a tagged index.
    #[command(
        after_help = "Writes a new index without the matching entries and points TAG at it; the old\nindex stays as a blob until `ocikit gc`. Refuses when nothing matches or when no\nentry would be left.\nExamples:\n  ocikit index rm ./images:app --platform linux/arm64\n  ocikit index rm ./images:app --digest sha256:…"
    )]
    Rm {
        /// LAYOUT:TAG naming the index.
        target: String,
        /// Remove the entries of this platform.
        #[arg(long, conflicts_with = "digest", required_unless_present = "digest")]
        platform: Option<PlatformSpec>,
        /// Remove the entries with this digest.
        #[arg(long)]
        digest: Option<String>,
        /// Set an annotation on the index (repeatable).
        #[arg(long = "annotation", value_name = "K=V")]
        annotations: Vec<String>,
        /// Print JSON (schema in docs/json.md).
        #[arg(long)]
        json: bool,
    },
}

/// `LAYOUT:TAG` of a layout target.
fn target(s: &str) -> Result<(Location, String)> {
    let loc = Location::parse(s)?;
    if matches!(
        loc.transport,
        Transport::OciArchive | Transport::DockerArchive
    ) {
        bail!("{s:?}: an index is written into a layout directory, not an archive");
    }
    let Some(Reference::Tag(tag)) = loc.reference.clone() else {
        bail!("{s:?}: name the index with LAYOUT:TAG");
    };
    Ok((loc, tag))
}

fn annotations(list: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in list {
        let Some((k, v)) = a.split_once('=') else {
            bail!("--annotation takes KEY=VALUE, not {a:?}");
        };
        if k.is_empty() {
            bail!("--annotation {a:?} has an empty key");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn options(force: bool, list: &[String], platform: Option<PlatformSpec>) -> Result<IndexOptions> {
    Ok(IndexOptions {
        force,
        annotations: annotations(list)?,
        platform,
        limits: super::output::limits(),
        lock_policy: super::output::lock_policy(),
        cancel: super::output::cancel_token(),
    })
}

fn print(r: &IndexReport, json: bool) -> Result<()> {
    for n in &r.notes {
        say!("ocikit: note: {n}");
    }
    if json {
        return print_json(r);
    }
    let platforms: Vec<String> = r
        .entries
        .iter()
        .map(|e| clean(e.platform.as_deref().unwrap_or("(no platform)")))
        .collect();
    if !r.removed.is_empty() {
        say!(
            "removed {} entr{} from {}",
            r.removed.len(),
            if r.removed.len() == 1 { "y" } else { "ies" },
            clean(&r.tag)
        );
    }
    say!(
        "{} is index {} ({} entr{}: {})",
        clean(&r.tag),
        r.index.digest,
        r.entries.len(),
        if r.entries.len() == 1 { "y" } else { "ies" },
        platforms.join(", ")
    );
    Ok(())
}

pub fn index_cmd(cmd: IndexCommand) -> Result<()> {
    cancel_on_signals();
    match cmd {
        IndexCommand::Create {
            target: t,
            sources,
            force,
            annotations,
            json,
        } => {
            let (loc, tag) = target(&t)?;
            let options = options(force, &annotations, None)?;
            let mut opened: Vec<(String, Location, Box<dyn Store>)> = Vec::new();
            for s in sources {
                let (l, store) = open_store(&s)?;
                opened.push((s, l, store));
            }
            let srcs: Vec<IndexSource<'_>> = opened
                .iter()
                .map(|(label, l, store)| IndexSource {
                    label: label.clone(),
                    store: &**store,
                    reference: l.reference.clone(),
                })
                .collect();
            let r = index_edit::create(&loc.path, &tag, &srcs, &options)?;
            print(&r, json)
        }
        IndexCommand::Add {
            target: t,
            source,
            platform,
            force,
            annotations,
            json,
        } => {
            let (loc, tag) = target(&t)?;
            let options = options(force, &annotations, platform)?;
            let layout = open_layout(&loc)?;
            let (l, store) = open_store(&source)?;
            let src = IndexSource {
                label: source.clone(),
                store: &*store,
                reference: l.reference.clone(),
            };
            let r = index_edit::add(&layout, &tag, &src, &options)?;
            print(&r, json)
        }
        IndexCommand::Rm {
            target: t,
            platform,
            digest,
            annotations,
            json,
        } => {
            let (loc, tag) = target(&t)?;
            let options = options(false, &annotations, None)?;
            let selector = match (platform, digest) {
                (Some(p), _) => Selector::Platform(p),
                (None, Some(d)) => Selector::Digest(Digest::parse(&d)?),
                (None, None) => bail!("index rm needs --platform or --digest"),
            };
            let layout = open_layout(&loc)?;
            let r = index_edit::remove(&layout, &tag, &selector, &options)?;
            print(&r, json)
        }
    }
}
