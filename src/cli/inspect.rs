//! Reading commands: `ls`, `inspect`, `cat`, `blob`.

use std::io::{self, Write};

use anyhow::{bail, Result};

use ocikit::digest::Digest;
use ocikit::report::{self, InspectReport, LsReport};
use ocikit::resolve::{self, PlatformChoice};

use ocikit::store::Store;

use super::args::CatWhat;
use super::output::{clean, human, open_store, out, print_json, short_type, write_bytes};

pub fn ls(location: &str, json: bool, blobs: bool) -> Result<()> {
    let (loc, store) = open_store(location)?;
    if loc.reference.is_some() {
        bail!("ls lists a whole location; drop the reference from {location:?}");
    }
    let mut report = report::ls(&store)?;
    if blobs {
        let list = report::blobs(&store)?;
        report.blobs_fingerprint = Some(ocikit::delta::fingerprint(&list));
        report.blobs = Some(list);
    }
    if json {
        return print_json(&report);
    }
    print_ls(&report)
}

fn print_ls(report: &LsReport) -> Result<()> {
    let mut o = out();
    let table: Vec<[String; 5]> = report
        .images
        .iter()
        .map(|d| {
            [
                // Docker-style entries (same tag on several images) read better
                // by their familiar name.
                clean(
                    &d.name
                        .as_deref()
                        .map(ocikit::reference::familiar)
                        .or_else(|| d.tag.clone())
                        .unwrap_or_else(|| "<none>".into()),
                ),
                Digest::parse(&d.digest)
                    .map(|x| x.short())
                    .unwrap_or_else(|_| clean(&d.digest)),
                clean(&short_type(&d.media_type)),
                if d.platforms.is_empty() {
                    d.artifact_type
                        .clone()
                        .map(|a| clean(&a))
                        .unwrap_or_else(|| "-".into())
                } else {
                    d.platforms.join(",")
                },
                d.total_size.map(human).unwrap_or_else(|| "?".into()),
            ]
        })
        .collect();
    let header = ["TAG", "DIGEST", "TYPE", "PLATFORMS", "SIZE"];
    let mut widths = header.map(str::len);
    for r in &table {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |o: &mut dyn Write, cols: [&str; 5]| -> io::Result<()> {
        writeln!(
            o,
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )
    };
    line(&mut o, header)?;
    for r in &table {
        line(&mut o, [&r[0], &r[1], &r[2], &r[3], &r[4]])?;
    }
    o.flush()?;
    Ok(())
}

pub fn inspect(location: &str, platform: PlatformChoice, json: bool) -> Result<()> {
    let (loc, store) = open_store(location)?;
    let report = report::inspect(&store, &loc, &platform)?;
    if json {
        return print_json(&report);
    }
    print_inspect(&report)
}

fn print_inspect(r: &InspectReport) -> Result<()> {
    let mut o = out();
    if let Some(reference) = &r.reference {
        writeln!(o, "Reference:  {}", clean(reference))?;
    }
    for n in &r.indexes {
        writeln!(o, "Index:      {}  {}", n.digest, short_type(&n.media_type))?;
    }
    if let Some(p) = &r.platform {
        writeln!(o, "Platform:   {}", clean(p))?;
    }
    let m = &r.manifest;
    writeln!(
        o,
        "Manifest:   {}  {}  {}",
        m.digest,
        clean(&short_type(&m.descriptor_media_type)),
        human(m.size as u64)
    )?;
    if let Some(a) = &m.artifact_type {
        writeln!(o, "Artifact:   {}", clean(a))?;
    }
    if let Some(s) = &m.subject {
        writeln!(o, "Subject:    {}", clean(&s.digest))?;
    }
    if let Some(c) = &r.config {
        writeln!(
            o,
            "Config:     {}  {}  {}",
            c.digest,
            clean(&c.media_type),
            human(c.size as u64)
        )?;
    }
    if let Some(c) = &r.image_config {
        if let Some(t) = &c.created {
            writeln!(o, "  Created:    {}", clean(t))?;
        }
        if let Some(rc) = c.config.as_ref().and_then(|v| v.as_object()) {
            for (key, label) in [
                ("Entrypoint", "Entrypoint"),
                ("Cmd", "Cmd"),
                ("WorkingDir", "WorkingDir"),
                ("User", "User"),
                ("Env", "Env"),
                ("Labels", "Labels"),
            ] {
                if let Some(v) = rc.get(key).filter(|v| !v.is_null()) {
                    writeln!(o, "  {label:<11} {}", clean(&v.to_string()))?;
                }
            }
        }
        if let Some(h) = &c.history {
            writeln!(o, "  History:    {} entries", h.len())?;
        }
    }
    writeln!(
        o,
        "Layers:     {} ({} total image size)",
        r.layers.len(),
        human(r.total_size)
    )?;
    for (i, l) in r.layers.iter().enumerate() {
        let short = Digest::parse(&l.digest)
            .map(|d| d.short())
            .unwrap_or_else(|_| clean(&l.digest));
        write!(
            o,
            "  {i:>3}  {short}  {:>10}  {}",
            human(l.size.max(0) as u64),
            clean(&l.media_type)
        )?;
        if let Some(d) = &l.diff_id {
            write!(o, "  diff_id {}", clean(d))?;
        }
        writeln!(o)?;
    }
    if let Some(ann) = &m.annotations {
        writeln!(o, "Annotations:")?;
        for (k, v) in ann {
            writeln!(o, "  {}={}", clean(k), clean(v))?;
        }
    }
    o.flush()?;
    Ok(())
}

pub fn cat(location: &str, what: CatWhat, platform: PlatformChoice) -> Result<()> {
    let (loc, store) = open_store(location)?;
    match what {
        CatWhat::Index => {
            if loc.reference.is_none() {
                return write_bytes(&store.index_bytes()?);
            }
            let node = report::index_document(&store, &loc)?;
            write_bytes(&node.bytes)
        }
        CatWhat::Manifest => {
            let image = resolve::resolve_image(&store, loc.reference.as_ref(), &platform)?;
            write_bytes(&image.manifest.bytes)
        }
        CatWhat::Config => {
            let image = resolve::resolve_image(&store, loc.reference.as_ref(), &platform)?;
            match image.config(&store)? {
                Some(c) => write_bytes(&c.bytes),
                None => bail!("manifest {} has no config", image.manifest.digest),
            }
        }
    }
}

pub fn blob(location: &str, digest: &str) -> Result<()> {
    let (_, store) = open_store(location)?;
    let digest = Digest::parse(digest)?;
    let mut o = out();
    report::copy_verified_blob(&store, &digest, &mut o)?;
    o.flush()?;
    Ok(())
}
