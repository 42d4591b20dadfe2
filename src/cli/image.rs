//! Commands on an image's contents: `flatten`, `squash`, `diff`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

use ocikit::guard;
use ocikit::output::write_atomically;
use ocikit::platform::PlatformSpec;
use ocikit::resolve::{self, PlatformChoice};
use ocikit::Layout;

use super::args::{CompressArg, ModArgs};
use super::output::{clean, open_store, out, print_json, say, Bar};
use crate::{cancel_on_signals, Negative};

pub fn flatten_cmd(
    location: &str,
    output: Option<PathBuf>,
    tar: Option<PathBuf>,
    platform: PlatformChoice,
    rootless: bool,
) -> Result<()> {
    let (loc, store) = open_store(location)?;
    let sources = [loc.path.as_path()];
    if let (None, Some(file)) = (&output, &tar) {
        if file.as_os_str() != "-" && (file.is_dir() || file.file_name().is_none()) {
            bail!(
                "--tar {}: is a directory; give a file path for the tar, or - for stdout",
                file.display()
            );
        }
    }
    match (&output, &tar) {
        (Some(dir), _) => guard::check_output(guard::Output::Dir(dir), &sources)?,
        (None, Some(file)) if file.as_os_str() != "-" => {
            guard::check_output(guard::Output::File(file), &sources)?
        }
        _ => {}
    }
    let image = resolve::resolve_image(&store, loc.reference.as_ref(), &platform)?;
    cancel_on_signals();
    let bar = Arc::new(Bar::new("flattening"));
    let options = ocikit::flatten::FlattenOptions {
        rootless,
        keep_readable: false,
        progress: Some(bar.clone()),
        limits: super::output::limits(),
        cancel: super::output::cancel_token(),
    };
    let report = match (output, tar) {
        (Some(dir), _) => ocikit::flatten::flatten_to_dir(&store, &image, &dir, &options)?,
        (None, Some(file)) if file.as_os_str() == "-" => {
            let staging = std::env::temp_dir();
            let stdout = io::BufWriter::with_capacity(1 << 20, guard::StdoutWriter::new());
            let (mut w, report) =
                ocikit::squash::flatten_to_tar(&store, &image, &staging, stdout, &options)?;
            w.flush()?;
            report
        }
        (None, Some(file)) => write_atomically(&file, |staging, out| -> Result<_> {
            Ok(ocikit::squash::flatten_to_tar(
                &store, &image, staging, out, &options,
            )?)
        })?,
        (None, None) => bail!("give --output DIR or --tar FILE"),
    };
    bar.done();
    for w in &report.warnings {
        say!("ocikit: warning: {w}");
    }
    Ok(())
}

pub fn squash_cmd(
    location: &str,
    tag: &str,
    layout: Option<PathBuf>,
    compress: CompressArg,
    platform: PlatformChoice,
    rootless: bool,
) -> Result<()> {
    let (loc, store) = open_store(location)?;
    let target = match layout {
        Some(dir) => dir,
        None if loc.path.is_dir() => loc.path.clone(),
        None => bail!(
            "{} is not a layout; give --layout DIR for the squashed image",
            loc.path.display()
        ),
    };
    guard::check_output(guard::Output::Layout(&target), &[loc.path.as_path()])?;
    let layout = super::output::with_settings(Layout::open(&target)?);
    let image = resolve::resolve_image(&store, loc.reference.as_ref(), &platform)?;
    cancel_on_signals();
    let report = ocikit::squash::squash(
        &store,
        &image,
        &layout,
        tag,
        &ocikit::squash::SquashOptions {
            compression: compress.into(),
            rootless,
            limits: super::output::limits(),
            cancel: super::output::cancel_token(),
        },
    )?;
    for w in &report.warnings {
        say!("ocikit: warning: {w}");
    }
    let mut o = out();
    writeln!(
        o,
        "{}:{tag} {} ({} layers squashed into {})",
        target.display(),
        report.manifest.digest,
        report.layers,
        report.layer
    )?;
    o.flush()?;
    Ok(())
}

pub fn diff_cmd(
    a: &str,
    b: &str,
    platform: Option<PlatformSpec>,
    ignore: Option<&str>,
    content: bool,
    json: bool,
) -> Result<Option<Negative>> {
    let ignore = match ignore {
        Some(list) => ocikit::diff::Ignore::parse(list).map_err(|e| anyhow!(e))?,
        None => ocikit::diff::Ignore::default(),
    };
    let (la, sa) = open_store(a)?;
    let (lb, sb) = open_store(b)?;
    let bar = Arc::new(Bar::new("diffing layers"));
    let options = ocikit::diff::DiffOptions {
        ignore,
        content,
        platform: platform.map(PlatformChoice::Specific),
        progress: Some(bar.clone()),
        limits: super::output::limits(),
    };
    let report = ocikit::diff::diff(
        &sa,
        la.reference.as_ref(),
        &sb,
        lb.reference.as_ref(),
        &options,
    );
    bar.done();
    let report = report?;
    if json {
        print_json(&report.to_json())?;
    } else {
        let mut o = out();
        match report.differences.first() {
            None => writeln!(o, "identical")?,
            Some(d) => writeln!(o, "differs: {}: {}", d.location(), clean(&d.path))?,
        }
        for d in &report.differences {
            writeln!(o, "{}", clean(&d.describe()))?;
            if let Some(u) = &d.diff {
                write!(o, "{u}")?;
            }
        }
        writeln!(
            o,
            "{} difference(s); {} layer(s) decoded",
            report.differences.len(),
            report.layers_decoded
        )?;
        o.flush()?;
    }
    Ok((!report.identical()).then_some(Negative))
}

fn pairs(flag: &str, list: &[String]) -> Result<Vec<(String, String)>> {
    list.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{flag} takes KEY=VALUE, not {kv:?}"),
        })
        .collect()
}

pub fn mod_cmd(a: ModArgs) -> Result<()> {
    let (loc, store) = open_store(&a.location)?;
    let target = match a.layout {
        Some(dir) => dir,
        None if loc.path.is_dir() => loc.path.clone(),
        None => bail!(
            "{} is not a layout; give --layout DIR for the new image",
            loc.path.display()
        ),
    };
    if target != loc.path {
        guard::check_output(guard::Output::Layout(&target), &[loc.path.as_path()])?;
    }
    let layout = super::output::with_settings(if target.exists() {
        Layout::open(&target)?
    } else {
        Layout::init(&target)?
    });
    let time_max = match a.time_max.as_deref() {
        None => None,
        Some("source-date-epoch") => {
            let v = std::env::var("SOURCE_DATE_EPOCH").map_err(|_| {
                anyhow!("--time-max source-date-epoch: SOURCE_DATE_EPOCH is not set")
            })?;
            Some(v.trim().parse::<i64>().map_err(|_| {
                anyhow!("--time-max source-date-epoch: SOURCE_DATE_EPOCH is {v:?}, not a number of seconds")
            })?)
        }
        Some(t) => Some(ocikit::modify::time::parse(t).ok_or_else(|| {
            anyhow!("--time-max takes RFC 3339 (2024-01-01T00:00:00Z) or @UNIX seconds, not {t:?}")
        })?),
    };
    let options = ocikit::modify::ModOptions {
        time_max,
        normalize_layers: a.normalize_layers,
        compress: a.compress.map(Into::into),
        family: if a.to_docker {
            Some(ocikit::modify::Family::Docker)
        } else if a.to_oci {
            Some(ocikit::modify::Family::Oci)
        } else {
            None
        },
        annotations: pairs("--annotation", &a.annotations)?.into_iter().collect(),
        index_annotations: pairs("--annotation-index", &a.index_annotations)?
            .into_iter()
            .collect(),
        labels: pairs("--label", &a.labels)?.into_iter().collect(),
        env: pairs("--env", &a.env)?,
        rm_history: a.rm_history,
        rm_layers: a.rm_layers,
        rm_paths: a.rm_paths,
        limits: super::output::limits(),
        cancel: super::output::cancel_token(),
    };
    cancel_on_signals();
    let report = ocikit::modify::modify(&store, loc.reference.as_ref(), &layout, &a.tag, &options)?;
    for n in &report.notes {
        say!("ocikit: note: {n}");
    }
    if a.json {
        return super::output::print_json(&report);
    }
    say!(
        "tagged {} {} ({} layer{} rewritten, {} kept)",
        a.tag,
        report.descriptor.digest,
        report.layers_rewritten,
        if report.layers_rewritten == 1 {
            ""
        } else {
            "s"
        },
        report.layers_kept
    );
    Ok(())
}
