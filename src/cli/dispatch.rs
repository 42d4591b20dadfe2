//! From parsed arguments to the command that runs them.

use anyhow::{anyhow, Result};

use ocikit::copy::Mode;
use ocikit::platform::PlatformSpec;
use ocikit::resolve::PlatformChoice;
use ocikit::Layout;

use super::args::{Cli, Command};
use super::output::{lock_notice, say, set_verbosity, verbose};
use super::{files, image, index, inspect, maintain, prune, referrers, transfer};
use crate::Negative;

/// Runs the command, saying how long it took with `-v`.
pub fn run(cli: Cli) -> Result<Option<Negative>> {
    set_verbosity(cli.quiet, cli.verbose);
    let started = std::time::Instant::now();
    let result = run_command(cli);
    if verbose() > 0 {
        say!(
            "ocikit: {} in {:.3} s",
            if result.is_ok() { "done" } else { "failed" },
            started.elapsed().as_secs_f64()
        );
    }
    result
}

fn choice(p: Option<PlatformSpec>) -> PlatformChoice {
    p.map(PlatformChoice::Specific).unwrap_or_default()
}

fn run_command(cli: Cli) -> Result<Option<Negative>> {
    let timeout =
        match cli.lock_timeout {
            Some(t) => Some(std::time::Duration::try_from_secs_f64(t).map_err(|_| {
                anyhow!("--lock-timeout takes a number of seconds from 0 up, not {t}")
            })?),
            None => None,
        };
    super::output::set_lock_policy(ocikit::layout::LockPolicy {
        timeout,
        on_wait: Some(lock_notice),
    });
    match cli.command {
        Command::Init { dir } => {
            Layout::init(&dir)?;
            Ok(None)
        }
        Command::Ls {
            location,
            json,
            blobs,
        } => inspect::ls(&location, json, blobs).map(|()| None),
        Command::Inspect {
            location,
            platform,
            json,
        } => inspect::inspect(&location, choice(platform), json).map(|()| None),
        Command::Cat {
            location,
            what,
            platform,
        } => inspect::cat(&location, what, choice(platform)).map(|()| None),
        Command::Blob { location, digest } => inspect::blob(&location, &digest).map(|()| None),
        Command::Tag { source, tag } => maintain::tag(&source, &tag).map(|()| None),
        Command::Untag { target } => maintain::untag(&target).map(|()| None),
        Command::Verify {
            location,
            deep,
            json,
        } => maintain::verify_cmd(&location, deep, json),
        Command::Flatten {
            location,
            output,
            tar,
            platform,
            rootless,
        } => image::flatten_cmd(&location, output, tar, choice(platform), rootless).map(|()| None),
        Command::Squash {
            location,
            tag,
            layout,
            compress,
            platform,
            rootless,
        } => image::squash_cmd(
            &location,
            &tag,
            layout,
            compress,
            choice(platform),
            rootless,
        )
        .map(|()| None),
        Command::Mod(args) => image::mod_cmd(args).map(|()| None),
        Command::Diff {
            a,
            b,
            platform,
            ignore,
            content,
            json,
        } => image::diff_cmd(&a, &b, platform, ignore.as_deref(), content, json),
        Command::Completions { shell } => maintain::completions(shell).map(|()| None),
        Command::Man { dir } => maintain::man_pages(dir.as_deref()).map(|()| None),
        Command::Gc {
            layout,
            dry_run,
            json,
            force,
            prune_untagged,
        } => maintain::gc_cmd(&layout, dry_run, json, force, prune_untagged).map(|()| None),
        Command::Copy {
            source,
            target,
            opts,
            archive,
        } => transfer::copy_cmd(vec![source], target, Mode::Copy, &opts, Some(&archive))
            .map(|()| None),
        Command::Import {
            source,
            layout,
            opts,
        } => transfer::copy_cmd(vec![source], layout, Mode::Import, &opts, None).map(|()| None),
        Command::Export {
            mut locations,
            opts,
            archive,
        } => {
            if locations.len() < 2 {
                let cmd = <Cli as clap::CommandFactory>::command();
                let mut cmd = cmd
                    .find_subcommand("export")
                    .cloned()
                    .unwrap_or(cmd)
                    .bin_name("ocikit export");
                cmd.error(
                    clap::error::ErrorKind::TooFewValues,
                    "export needs at least one SOURCE and then FILE (or - for stdout)",
                )
                .exit();
            }
            let file = locations.pop().unwrap_or_default();
            transfer::copy_cmd(locations, file, Mode::Export, &opts, Some(&archive)).map(|()| None)
        }
        Command::Referrers {
            location,
            artifact_type,
            platform,
            json,
        } => referrers::referrers_cmd(&location, artifact_type, platform, json).map(|()| None),
        Command::Attach {
            target,
            artifact_type,
            files,
            annotations,
            media_type,
            json,
        } => referrers::attach_cmd(&target, artifact_type, files, annotations, media_type, json)
            .map(|()| None),
        Command::Index { command } => index::index_cmd(command).map(|()| None),
        Command::GetFile {
            location,
            path,
            output,
            no_follow,
            platform,
            json,
        } => files::get_file_cmd(&location, &path, output, no_follow, choice(platform), json)
            .map(|()| None),
        Command::Files {
            location,
            long,
            json,
            platform,
        } => files::files_cmd(&location, choice(platform), long, json).map(|()| None),
        Command::Prune(args) => prune::prune_cmd(args).map(|()| None),
        Command::Sync(args) => super::sync::sync_cmd(args),
    }
}
