//! The `ocikit` command: parses arguments, calls the library, prints reports
//! and maps errors to exit codes (0 success / no difference, 1 a negative
//! finding, 2 usage or operational error). No logic lives here.

// Every unsafe block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(
    not(test),
    warn(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use ocikit::archive::{ArchiveStore, Expect};
use ocikit::copy::{self, ArchiveKind};
use ocikit::digest::Digest;
use ocikit::guard;
use ocikit::platform::PlatformSpec;
use ocikit::reference::{Location, Reference, Transport};
use ocikit::resolve::{self, Image, PlatformChoice};
use ocikit::spec::Compression;
use ocikit::spec::{self, Descriptor, Kind};
use ocikit::store::Store;
use ocikit::verify::{self, VerifyOptions, VerifyReport};
use ocikit::Layout;

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static VERBOSE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

fn verbose() -> u8 {
    VERBOSE.load(std::sync::atomic::Ordering::Relaxed)
}

/// A message on stderr that is not an error (warnings, notes, summaries):
/// `-q` silences it. Errors always print. Control characters (from names in
/// images) are escaped.
macro_rules! say {
    ($($arg:tt)*) => {
        if !quiet() {
            to_stderr(&guard::escape_controls(&format!($($arg)*)));
        }
    };
}

/// Writes one line to stderr. A stderr that cannot be written (`2>/dev/full`)
/// loses the line but never panics (`eprintln!` would).
fn to_stderr(line: &str) {
    use std::io::Write as _;
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

/// An error on stderr, control characters escaped: the one way errors print.
fn print_error(msg: &str) {
    to_stderr(&format!("ocikit: error: {}", guard::escape_controls(msg)));
}

/// Offline OCI image-layout toolkit.
#[derive(Parser)]
#[command(name = "ocikit", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Commands that change a layout wait for its writer lock at most this
    /// many seconds (default: as long as it takes).
    #[arg(long, global = true, value_name = "SECONDS")]
    lock_timeout: Option<f64>,
    /// Print only results and errors: no warnings, notes, summaries or progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Say more on stderr (repeatable): -v adds the time taken.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Create an empty OCI image layout (no-op on an existing layout).
    #[command(after_help = "Example:\n  ocikit init ./images")]
    Init {
        /// Directory to create.
        dir: PathBuf,
    },
    /// List the images in a location: tag, digest, media type, platforms, size.
    #[command(after_help = "Example:\n  ocikit ls testdata/demo")]
    Ls {
        /// LOCATION: [oci:]PATH.
        location: String,
        /// Print JSON (schema in docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Summarise one image: index, manifest, config and layers.
    #[command(after_help = "Example:\n  ocikit inspect testdata/demo:1.0 --platform linux/arm64")]
    Inspect {
        /// LOCATION[:REF].
        location: String,
        /// Platform to choose in a multi-platform index (os/arch[/variant]); default: the host's.
        #[arg(long)]
        platform: Option<PlatformSpec>,
        /// Print JSON (schema in docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Print the exact stored bytes of an index, manifest or config.
    #[command(
        after_help = "Examples:\n  ocikit cat testdata/demo index          # index.json itself\n  ocikit cat testdata/demo:1.0 index      # the image index tagged 1.0\n  ocikit cat testdata/demo:1.0 manifest --platform linux/arm64"
    )]
    Cat {
        /// LOCATION[:REF].
        location: String,
        /// What to print.
        what: CatWhat,
        /// Platform to choose in a multi-platform index; default: the host's.
        #[arg(long)]
        platform: Option<PlatformSpec>,
    },
    /// Print the exact stored bytes of one blob (verified before it is printed).
    #[command(
        after_help = "Example:\n  ocikit blob testdata/demo sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )]
    Blob {
        /// LOCATION.
        location: String,
        /// The blob's digest (alg:encoded).
        digest: String,
    },
    /// Add a tag to an image in a layout (moving it if another image has it).
    #[command(
        after_help = "Example:\n  ocikit tag ./images:1.0 stable\n  ocikit tag ./images@sha256:… pinned"
    )]
    Tag {
        /// LAYOUT[:REF] naming the image to tag.
        source: String,
        /// The new tag.
        tag: String,
    },
    /// Remove a tag from a layout.
    #[command(after_help = "Example:\n  ocikit untag ./images:stable")]
    Untag {
        /// LAYOUT:TAG.
        target: String,
    },
    /// Copy images from any location to any location (layout, oci-archive, docker-archive).
    #[command(
        after_help = "TARGET is a layout directory unless its transport or name says archive:\n  oci:DIR, oci-archive:FILE, docker-archive:FILE, or a FILE ending in .tar, .tar.gz, .tgz, .tar.zst.\nA REF on TARGET names the copy (a tag, or a docker name for docker-archive).\nExamples:\n  ocikit copy testdata/demo:1.0 /tmp/one --platform linux/arm64\n  ocikit copy testdata/demo:legacy docker-archive:/tmp/legacy.tar:demo/legacy:1.0"
    )]
    Copy {
        /// SOURCE[:REF] (every image when no REF).
        source: String,
        /// TARGET[:REF].
        target: String,
        #[command(flatten)]
        opts: CopyArgs,
        #[command(flatten)]
        archive: ArchiveArgs,
    },
    /// Copy images into a layout directory (created if absent).
    #[command(
        after_help = "Examples:\n  ocikit import saved.tar ./images            # every image of a docker save or oci-archive\n  ocikit import docker-archive:saved.tar:busybox:1.36 ./images:busybox"
    )]
    Import {
        /// SOURCE[:REF].
        source: String,
        /// LAYOUT[:TAG].
        layout: String,
        #[command(flatten)]
        opts: CopyArgs,
    },
    /// Write images into one archive file (or - for stdout).
    #[command(
        after_help = "Examples:\n  ocikit export testdata/demo:1.0 testdata/demo:legacy /tmp/demo.tar\n  ocikit export testdata/demo:legacy docker-archive:/tmp/d.tar:demo/app:1.0\n  ocikit export testdata/demo:1.0 - --compress zstd > demo.tar.zst"
    )]
    Export {
        /// SOURCE[:REF]... then FILE (or -). Options may stand anywhere
        /// among them.
        #[arg(required = true, num_args = 1.., action = clap::ArgAction::Append)]
        locations: Vec<String>,
        #[command(flatten)]
        opts: CopyArgs,
        #[command(flatten)]
        archive: ArchiveArgs,
    },
    /// Apply an image's layers to a new directory or a tar stream: its root filesystem.
    #[command(
        after_help = "Whiteouts, hardlinks, owners, modes, xattrs and times are applied as the image\nmeans them; no entry can write outside the output. --output DIR must not exist\nor be empty; the tree is built beside it and renamed into place on success.\nAs non-root (or with --rootless) owners are recorded in the user.rootlesscontainers\nxattr instead of set, and device nodes are skipped.\nExamples:\n  ocikit flatten testdata/demo:1.0 --platform linux/amd64 --output rootfs\n  ocikit flatten docker-archive:app.tar --tar - | tar -tv"
    )]
    Flatten {
        /// LOCATION[:REF].
        location: String,
        /// Directory to create with the tree.
        #[arg(long, conflicts_with = "tar", required_unless_present = "tar")]
        output: Option<PathBuf>,
        /// Write the tree as one tar stream to FILE (`-` for stdout).
        #[arg(long)]
        tar: Option<PathBuf>,
        /// Platform to choose in a multi-platform index; default: the host's.
        #[arg(long)]
        platform: Option<PlatformSpec>,
        /// Do not set owners or create device nodes, even as root (as `umoci unpack --rootless`).
        #[arg(long)]
        rootless: bool,
    },
    /// Squash an image into one layer, written into a layout under a new tag.
    #[command(
        after_help = "The layer is the flattened tree as a reproducible tar (same input, same digest).\nThe config keeps every field but rootfs.diff_ids (one) and history (one entry).\nExamples:\n  ocikit squash ./images:1.0 --tag 1.0-squashed\n  ocikit squash app.tar --tag app --layout ./images --compress zstd"
    )]
    Squash {
        /// LOCATION[:REF].
        location: String,
        /// Tag for the squashed image.
        #[arg(long)]
        tag: String,
        /// Layout to write into (default: LOCATION, when it is a layout).
        #[arg(long)]
        layout: Option<PathBuf>,
        /// Compression of the new layer.
        #[arg(long, value_enum, default_value = "gzip")]
        compress: CompressArg,
        /// Platform to choose in a multi-platform index; default: the host's.
        #[arg(long)]
        platform: Option<PlatformSpec>,
        /// Do not set owners or create device nodes while staging, even as root.
        #[arg(long)]
        rootless: bool,
    },
    /// Explain how two images differ: index, manifest, config fields, layers, entries.
    #[command(
        after_help = "The first line says `identical` or where the first difference is; then one line per\ndifference (`LEVEL: PATH: WHAT`) and a summary. Identical layers are never decompressed.\n--ignore takes a comma list: timestamps, history, annotations, layer-boundaries, compression.\nExit status: 0 identical, 1 different, 2 error.\nExamples:\n  ocikit diff ./builds:run1 ./builds:run2\n  ocikit diff ./images:1.0 app.tar --ignore compression\n  ocikit diff a.tar b.tar --ignore timestamps,history --json"
    )]
    Diff {
        /// A: LOCATION[:REF].
        a: String,
        /// B: LOCATION[:REF].
        b: String,
        /// Compare only this platform of multi-platform images.
        #[arg(long)]
        platform: Option<PlatformSpec>,
        /// Differences to leave out (comma list).
        #[arg(long, value_name = "LIST")]
        ignore: Option<String>,
        /// Show a unified diff of changed small text files.
        #[arg(long)]
        content: bool,
        /// Print JSON (schema in docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  ocikit completions bash > /etc/bash_completion.d/ocikit\n  ocikit completions zsh > \"${fpath[1]}/_ocikit\"\n  ocikit completions fish > ~/.config/fish/completions/ocikit.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    #[command(
        after_help = "Examples:\n  ocikit man | man -l -\n  ocikit man --dir /usr/local/share/man/man1"
    )]
    Man {
        /// Write ocikit.1 and ocikit-COMMAND.1 here instead of printing ocikit.1.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Remove blobs that nothing in index.json reaches (plan, then apply).
    #[command(
        after_help = "Keeps everything reachable from index.json (tagged or untagged entries),\nand referrers whose subject is kept. Refuses a damaged graph (exit 2, nothing deleted).\nExamples:\n  ocikit gc ./images --dry-run\n  ocikit gc ./images --prune-untagged"
    )]
    Gc {
        /// LAYOUT.
        layout: String,
        /// List what would be removed and the bytes freed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON (schema in docs/json.md).
        #[arg(long)]
        json: bool,
        /// Go on despite a damaged graph or non-regular blob paths (they are kept).
        #[arg(long)]
        force: bool,
        /// Drop untagged index.json entries first (what they alone reach goes too).
        #[arg(long)]
        prune_untagged: bool,
    },
    /// Check every reachable blob's existence, size and digest, and the documents' structure.
    #[command(
        after_help = "Exit status: 0 clean (warnings allowed), 1 problems found, 2 could not run.\nExample:\n  ocikit verify testdata/demo --deep"
    )]
    Verify {
        /// LOCATION.
        location: String,
        /// Also decompress every layer and check its diff_id and tar stream.
        #[arg(long)]
        deep: bool,
        /// Print JSON (schema in docs/json.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct CopyArgs {
    /// Keep only this platform of multi-platform indexes (repeatable); a
    /// docker-archive holds one image per name: default the host's.
    #[arg(long = "platform")]
    platforms: Vec<PlatformSpec>,
    /// Copy every platform (the default; for skopeo's spelling).
    #[arg(long, conflicts_with = "platforms")]
    all: bool,
    /// Leave out referrers (signatures, SBOMs) of the copied images.
    #[arg(long)]
    no_referrers: bool,
    /// Before writing anything, decompress every layer and check its diff_id
    /// and tar stream (like verify --deep).
    #[arg(long)]
    deep: bool,
    /// Write layers uncompressed, as `docker save` does (each image then gets
    /// a new manifest; its config, image ID and diff_ids are unchanged).
    #[arg(long)]
    uncompressed_layers: bool,
}

/// How an archive target is written (copy to a file, export).
#[derive(clap::Args)]
struct ArchiveArgs {
    /// Archive format for a file target (default: from its transport, else oci-archive).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Compress a file target as a whole (default: from its extension, else none).
    #[arg(long, value_enum)]
    compress: Option<CompressArg>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    OciArchive,
    DockerArchive,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressArg {
    None,
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, ValueEnum)]
enum CatWhat {
    Index,
    Manifest,
    Config,
}

/// A negative finding: exit 1, report already printed.
struct Negative;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                // Help and version go to stdout (help for a missing
                // argument to stderr); a failed write is an error there too.
                if let Err(err) = e.print() {
                    if e.use_stderr() {
                        return ExitCode::from(2);
                    }
                    guard::record_stdout_error(&err);
                }
                if let Some(msg) = guard::stdout_error() {
                    print_error(msg);
                    return ExitCode::from(2);
                }
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            // One line, like every other error; clap's own text minus its usage block.
            let text = e.to_string();
            let mut lines = text.lines();
            let first = lines.next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // Keep the indented lines right after it (the missing arguments'
            // names, the possible values): they say what is at fault.
            let detail: Vec<&str> = lines
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let sep = if detail.is_empty() { "" } else { " " };
            print_error(&format!(
                "{first}{sep}{} (see 'ocikit --help')",
                detail.join(" ")
            ));
            return ExitCode::from(2);
        }
    };
    let result = run(cli);
    // A failed write to stdout (a full disk, a closed pipe) means the output
    // is incomplete, whatever the command went on to report.
    if let Some(msg) = guard::stdout_error() {
        print_error(msg);
        return ExitCode::from(2);
    }
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(Negative)) => ExitCode::from(1),
        Err(e) => {
            let mut msg = String::new();
            for (i, cause) in e.chain().enumerate() {
                let s = cause.to_string();
                if i > 0 && msg.contains(&s) {
                    continue;
                }
                if i > 0 {
                    msg.push_str(": ");
                }
                msg.push_str(&s);
            }
            print_error(&msg);
            ExitCode::from(2)
        }
    }
}

fn lock_notice(layout: &Path, holder: Option<u32>) {
    use std::io::IsTerminal;
    if io::stderr().is_terminal() {
        say!(
            "ocikit: waiting for the lock on {}{}",
            layout.display(),
            holder
                .map(|p| format!(" (held by pid {p})"))
                .unwrap_or_default()
        );
    }
}

fn run(cli: Cli) -> Result<Option<Negative>> {
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    VERBOSE.store(cli.verbose, std::sync::atomic::Ordering::Relaxed);
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

/// How this run's writers wait for layout locks (`--lock-timeout`).
static LOCK_POLICY: std::sync::OnceLock<ocikit::layout::LockPolicy> = std::sync::OnceLock::new();

fn lock_policy() -> ocikit::layout::LockPolicy {
    LOCK_POLICY.get().copied().unwrap_or_default()
}

fn run_command(cli: Cli) -> Result<Option<Negative>> {
    let timeout =
        match cli.lock_timeout {
            Some(t) => Some(std::time::Duration::try_from_secs_f64(t).map_err(|_| {
                anyhow!("--lock-timeout takes a number of seconds from 0 up, not {t}")
            })?),
            None => None,
        };
    let _ = LOCK_POLICY.set(ocikit::layout::LockPolicy {
        timeout,
        on_wait: Some(lock_notice),
    });
    match cli.command {
        Command::Init { dir } => {
            Layout::init(&dir)?;
            Ok(None)
        }
        Command::Ls { location, json } => ls(&location, json).map(|()| None),
        Command::Inspect {
            location,
            platform,
            json,
        } => inspect(&location, choice(platform), json).map(|()| None),
        Command::Cat {
            location,
            what,
            platform,
        } => cat(&location, what, choice(platform)).map(|()| None),
        Command::Blob { location, digest } => blob(&location, &digest).map(|()| None),
        Command::Tag { source, tag } => {
            let loc = Location::parse(&source)?;
            let layout = open_layout(&loc)?;
            let d = layout.tag(loc.reference.as_ref(), &tag)?;
            say!("tagged {} as {tag}", d.digest);
            Ok(None)
        }
        Command::Untag { target } => {
            let loc = Location::parse(&target)?;
            let Some(Reference::Tag(tag)) = &loc.reference else {
                bail!("untag needs LAYOUT:TAG, got {target:?}");
            };
            open_layout(&loc)?.untag(tag)?;
            Ok(None)
        }
        Command::Verify {
            location,
            deep,
            json,
        } => verify_cmd(&location, deep, json),
        Command::Flatten {
            location,
            output,
            tar,
            platform,
            rootless,
        } => flatten_cmd(&location, output, tar, choice(platform), rootless).map(|()| None),
        Command::Squash {
            location,
            tag,
            layout,
            compress,
            platform,
            rootless,
        } => squash_cmd(
            &location,
            &tag,
            layout,
            compress,
            choice(platform),
            rootless,
        )
        .map(|()| None),
        Command::Diff {
            a,
            b,
            platform,
            ignore,
            content,
            json,
        } => diff_cmd(&a, &b, platform, ignore.as_deref(), content, json),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Generated into memory first: clap_complete panics on a write error.
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "ocikit", &mut buf);
            write_bytes(&buf)?;
            Ok(None)
        }
        Command::Man { dir } => man_pages(dir.as_deref()).map(|()| None),
        Command::Gc {
            layout,
            dry_run,
            json,
            force,
            prune_untagged,
        } => gc_cmd(&layout, dry_run, json, force, prune_untagged).map(|()| None),
        Command::Copy {
            source,
            target,
            opts,
            archive,
        } => copy_cmd(
            &[source],
            &target,
            &opts,
            archive.format,
            archive.compress,
            false,
        )
        .map(|()| None),
        Command::Import {
            source,
            layout,
            opts,
        } => {
            let loc = Location::parse(&layout)?;
            if matches!(
                loc.transport,
                Transport::OciArchive | Transport::DockerArchive
            ) {
                bail!("import writes a layout directory; to write an archive use export");
            }
            let target = format!("oci:{layout}");
            copy_cmd(&[source], &target, &opts, None, None, false).map(|()| None)
        }
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
            copy_cmd(
                &locations,
                &file,
                &opts,
                archive.format,
                archive.compress,
                true,
            )
            .map(|()| None)
        }
    }
}

/// SIGINT and SIGTERM make a running flatten or squash stop and remove its
/// staging directory (exit 2, "interrupted") instead of dying mid-way.
/// The token the signal handler sets; every cancellable call of this run
/// holds a clone.
static CANCEL: std::sync::OnceLock<ocikit::cancel::Cancel> = std::sync::OnceLock::new();

fn cancel_token() -> ocikit::cancel::Cancel {
    CANCEL.get_or_init(ocikit::cancel::Cancel::new).clone()
}

fn cancel_on_signals() {
    let _ = cancel_token();
    use std::sync::atomic::{AtomicBool, Ordering};
    static SEEN: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        // A second signal (say, while blocked waiting for a lock) ends the
        // process at once: nothing of its own is on disk then.
        if SEEN.swap(true, Ordering::SeqCst) {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
        ocikit::flatten::cancel();
        if let Some(c) = CANCEL.get() {
            c.cancel();
        }
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches atomics and calls _exit, both
    // async-signal-safe; signal(2) itself has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn flatten_cmd(
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
    let image = resolve_image(&store, &loc, &platform)?;
    cancel_on_signals();
    let bar = std::sync::Arc::new(Bar::new("flattening"));
    let options = ocikit::flatten::FlattenOptions {
        rootless,
        keep_readable: false,
        progress: Some(bar.clone()),
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
        (None, Some(file)) => {
            let parent = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let tmp = tempfile::Builder::new()
                .prefix(".ocikit-tar-")
                .tempfile_in(&parent)
                .with_context(|| {
                    format!("cannot create a temporary file in {}", parent.display())
                })?;
            let out = io::BufWriter::with_capacity(1 << 20, tmp);
            let (w, report) =
                ocikit::squash::flatten_to_tar(&store, &image, &parent, out, &options)?;
            let tmp = w
                .into_inner()
                .map_err(|e| anyhow!("{}: {}", file.display(), e.error()))?;
            // A file replaced keeps its mode; a new one follows the umask.
            {
                use std::os::unix::fs::PermissionsExt;
                tmp.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(
                        ocikit::layout::replacement_mode(&file),
                    ))
                    .with_context(|| format!("cannot set the mode of {}", file.display()))?;
            }
            tmp.as_file().sync_all()?;
            tmp.persist(&file)
                .map_err(|e| anyhow!("{}: {}", file.display(), e.error))?;
            report
        }
        (None, None) => bail!("give --output DIR or --tar FILE"),
    };
    bar.done();
    for w in &report.warnings {
        say!("ocikit: warning: {w}");
    }
    Ok(())
}

fn squash_cmd(
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
    let layout = Layout::open(&target)?.with_lock_policy(lock_policy());
    let image = resolve_image(&store, &loc, &platform)?;
    cancel_on_signals();
    let compression = match compress {
        CompressArg::None => Compression::None,
        CompressArg::Gzip => Compression::Gzip,
        CompressArg::Zstd => Compression::Zstd,
    };
    let report = ocikit::squash::squash(
        &store,
        &image,
        &layout,
        tag,
        &ocikit::squash::SquashOptions {
            compression,
            rootless,
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

fn diff_cmd(
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
    let bar = std::sync::Arc::new(Bar::new("diffing layers"));
    let options = ocikit::diff::DiffOptions {
        ignore,
        content,
        platform: platform.map(PlatformChoice::Specific),
        progress: Some(bar.clone()),
        limits: ocikit::limits::Limits::from_env(),
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

/// The man pages: `ocikit.1` to stdout, or every page into `dir`.
fn man_pages(dir: Option<&Path>) -> Result<()> {
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

fn gc_cmd(
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
        let mut v = serde_json::to_value(&report)?;
        v["schemaVersion"] = json!(1);
        return print_json(&v);
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

/// Where a copy goes.
enum Target {
    Layout(PathBuf),
    Archive {
        path: Option<PathBuf>,
        kind: ArchiveKind,
        compression: Compression,
    },
}

fn compression_of(path: &Path, flag: Option<CompressArg>) -> Compression {
    match flag {
        Some(CompressArg::None) => Compression::None,
        Some(CompressArg::Gzip) => Compression::Gzip,
        Some(CompressArg::Zstd) => Compression::Zstd,
        None => {
            let name = path.to_string_lossy();
            if name.ends_with(".gz") || name.ends_with(".tgz") {
                Compression::Gzip
            } else if name.ends_with(".zst") || name.ends_with(".tzst") {
                Compression::Zstd
            } else {
                Compression::None
            }
        }
    }
}

fn target_of(
    loc: &Location,
    format: Option<FormatArg>,
    compress: Option<CompressArg>,
    archive_only: bool,
) -> Result<Target> {
    let archive = |kind: ArchiveKind| {
        let stdout = loc.path.as_os_str() == "-";
        Target::Archive {
            path: (!stdout).then(|| loc.path.clone()),
            kind,
            compression: compression_of(&loc.path, compress),
        }
    };
    let from_flag = |default: ArchiveKind| match format {
        Some(FormatArg::OciArchive) => ArchiveKind::OciArchive,
        Some(FormatArg::DockerArchive) => ArchiveKind::DockerArchive,
        None => default,
    };
    Ok(match loc.transport {
        Transport::Oci => {
            if archive_only {
                bail!("export writes an archive file; to copy into a layout use copy or import");
            }
            Target::Layout(loc.path.clone())
        }
        Transport::OciArchive => {
            if format == Some(FormatArg::DockerArchive) {
                bail!("--format docker-archive contradicts the oci-archive: transport");
            }
            archive(ArchiveKind::OciArchive)
        }
        Transport::DockerArchive => {
            if format == Some(FormatArg::OciArchive) {
                bail!("--format oci-archive contradicts the docker-archive: transport");
            }
            archive(ArchiveKind::DockerArchive)
        }
        Transport::Auto => {
            let name = loc.path.to_string_lossy();
            let is_dir = loc.path.is_dir();
            let looks_archive = [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"]
                .iter()
                .any(|e| name.ends_with(e));
            if is_dir && archive_only {
                bail!(
                    "{} is a directory; export writes an archive file",
                    loc.path.display()
                );
            }
            if name == "-" || archive_only || format.is_some() || (looks_archive && !is_dir) {
                archive(from_flag(ArchiveKind::OciArchive))
            } else {
                Target::Layout(loc.path.clone())
            }
        }
    })
}

fn copy_cmd(
    sources: &[String],
    target: &str,
    args: &CopyArgs,
    format: Option<FormatArg>,
    compress: Option<CompressArg>,
    archive_only: bool,
) -> Result<()> {
    // SIGINT/SIGTERM stop the copy at its next write and remove its
    // temporary files (blobs in .ocikit-tmp, the archive beside FILE).
    cancel_on_signals();
    let target_loc = Location::parse(target)?;
    let target_kind = target_of(&target_loc, format, compress, archive_only)?;
    let target_name = match &target_loc.reference {
        Some(Reference::Tag(t)) => Some(t.clone()),
        Some(Reference::Digest(d)) => {
            bail!("{target}: a target cannot be named by a digest ({d}); name it with a tag")
        }
        None => None,
    };
    let mut opened = Vec::new();
    let mut source_paths = Vec::new();
    for s in sources {
        let loc = Location::parse(s)?;
        let store = open_location(&loc)?;
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
    let srcs: Vec<copy::Source<'_>> = opened
        .iter()
        .map(|(store, reference)| copy::Source {
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
    if single_image && args.platforms.len() > 1 {
        bail!(
            "a docker-archive holds one image per name, so it takes one --platform, not {}; export each platform under its own name",
            args.platforms.len()
        );
    }
    if args.uncompressed_layers && !args.no_referrers {
        say!("ocikit: note: --uncompressed-layers rewrites manifests, so their referrers (signatures, SBOMs) would no longer apply; they are left out");
    }
    let options = copy::CopyOptions {
        platforms: args.platforms.clone(),
        single_image,
        target_name,
        no_referrers: args.no_referrers || args.uncompressed_layers,
        all_platforms: args.all,
        limits: ocikit::limits::Limits::from_env(),
        lock_policy: lock_policy(),
        cancel: cancel_token(),
    };
    let mut plan = copy::plan(&srcs, &options)?;
    for n in &plan.notes {
        say!("ocikit: note: {n}");
    }
    if args.deep {
        let n = copy::check_layers(&srcs, &plan)?;
        say!(
            "checked {n} layer{} (--deep)",
            if n == 1 { "" } else { "s" }
        );
    } else {
        // Layers whose only digest is their DiffID are always checked.
        copy::check_unverified_layers(&srcs, &plan)?;
    }
    let mut files_fallback = None;
    let mut uncompress_notes = Vec::new();
    if args.uncompressed_layers {
        // Decompressed layers are written again right away: keep them on the
        // target's file system.
        let temp_dir = match &target_kind {
            Target::Layout(dir) => {
                let t = dir.join(ocikit::layout::TMP_DIR);
                std::fs::create_dir_all(&t).with_context(|| format!("{}", t.display()))?;
                t
            }
            Target::Archive { path: Some(p), .. } => p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            Target::Archive { path: None, .. } => std::env::temp_dir(),
        };
        // Into an uncompressed archive file, layers whose size their gzip
        // trailer announces are decompressed straight into their places.
        let streamable = matches!(
            target_kind,
            Target::Archive {
                path: Some(_),
                compression: Compression::None,
                ..
            }
        );
        if streamable {
            files_fallback = Some((plan.clone(), temp_dir.clone()));
        }
        let mode = if streamable {
            copy::Uncompress::Predict
        } else {
            copy::Uncompress::Files
        };
        uncompress_notes = copy::uncompress_layers_with(&srcs, &mut plan, &temp_dir, mode)?;
        // A streamed export may start over with other sizes (and digests):
        // its notes are told once it is written.
        if !streamable {
            for n in uncompress_notes.drain(..) {
                say!("ocikit: note: {n}");
            }
        }
    } else if matches!(
        target_kind,
        Target::Archive {
            kind: ArchiveKind::DockerArchive,
            ..
        }
    ) {
        if let Some(b) = plan.blobs.iter().find(|b| b.media_type.ends_with("+zstd")) {
            say!(
                "ocikit: warning: layer {} is zstd-compressed; Docker Engine 20.10 and older cannot load it (add --uncompressed-layers for them)",
                b.digest
            );
        }
    }
    let bar = Bar::new("copying");
    let (report, notes) = match &target_kind {
        Target::Layout(dir) => (copy::write_layout(&srcs, &plan, dir, &bar)?, Vec::new()),
        Target::Archive {
            path,
            kind,
            compression,
        } => {
            let out = match path {
                Some(p) => copy::ArchiveOut::File(p),
                None => copy::ArchiveOut::Stdout,
            };
            let written = copy::write_archive(&srcs, &plan, *kind, *compression, out, &bar);
            match (written, files_fallback.take()) {
                // A gzip trailer announced the wrong size (several members):
                // start over with temporary files.
                (Err(copy::CopyError::Prediction { .. }), Some((mut plan, temp_dir))) => {
                    uncompress_notes = copy::uncompress_layers(&srcs, &mut plan, &temp_dir)?;
                    copy::write_archive(&srcs, &plan, *kind, *compression, out, &bar)?
                }
                (r, _) => r?,
            }
        }
    };
    bar.done();
    for n in &uncompress_notes {
        say!("ocikit: note: {n}");
    }
    for n in &notes {
        say!("ocikit: warning: {n}");
    }
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

fn choice(p: Option<PlatformSpec>) -> PlatformChoice {
    p.map(PlatformChoice::Specific).unwrap_or_default()
}

fn check_exists(path: &Path) -> Result<std::fs::Metadata> {
    std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => {
            anyhow!("cannot read {}: permission denied", path.display())
        }
        _ => anyhow!(e).context(format!("{} does not exist", path.display())),
    })
}

/// Opens a location that ocikit writes: a layout directory.
fn open_layout(loc: &Location) -> Result<Layout> {
    if matches!(
        loc.transport,
        Transport::OciArchive | Transport::DockerArchive
    ) || check_exists(&loc.path)?.is_file()
    {
        bail!(
            "{} is an archive; this command changes layouts (import it first: ocikit import {} DIR)",
            loc.path.display(),
            loc.path.display()
        );
    }
    let (layout, warnings) = Layout::open_with_warnings(&loc.path)?;
    let layout = layout.with_lock_policy(lock_policy());
    if let Some(v) = warnings.layout_version {
        say!(
            "ocikit: warning: {}/oci-layout has imageLayoutVersion {v:?}; reading it as 1.0.0",
            loc.path.display()
        );
    }
    Ok(layout)
}

/// Opens any readable location: a layout directory or an archive, by its
/// transport or by what it is.
fn open_location(loc: &Location) -> Result<Box<dyn Store>> {
    let meta = check_exists(&loc.path)?;
    let expect = match loc.transport {
        Transport::Oci => None,
        Transport::OciArchive => Some(Expect::Oci),
        Transport::DockerArchive => Some(Expect::Docker),
        Transport::Auto if meta.is_dir() => None,
        Transport::Auto => Some(Expect::Any),
    };
    match expect {
        None => Ok(Box::new(open_layout(loc)?.store().clone())),
        Some(expect) => {
            let open = ocikit::archive::OpenOptions::new(
                ocikit::limits::Limits::from_env(),
                cancel_token(),
            );
            let store = ArchiveStore::open_with(&loc.path, expect, &open)?;
            for n in store.notes() {
                say!("ocikit: note: {n}");
            }
            Ok(Box::new(store))
        }
    }
}

fn open_store(location: &str) -> Result<(Location, Box<dyn Store>)> {
    let loc = Location::parse(location)?;
    let store = open_location(&loc)?;
    Ok((loc, store))
}

/// Buffered stdout that records a write error (see [`guard::stdout_error`]).
fn out() -> io::BufWriter<guard::StdoutWriter> {
    io::BufWriter::with_capacity(256 << 10, guard::StdoutWriter::new())
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut o = out();
    serde_json::to_writer_pretty(&mut o, v)?;
    writeln!(o)?;
    o.flush()?;
    Ok(())
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A short name for a media type (`oci manifest`, `docker manifest`, …).
fn short_type(mt: &str) -> String {
    use spec::media_type as m;
    match mt {
        m::OCI_INDEX => "oci index".into(),
        m::OCI_MANIFEST => "oci manifest".into(),
        m::DOCKER_LIST => "docker list".into(),
        m::DOCKER_MANIFEST => "docker manifest".into(),
        other => other.to_string(),
    }
}

/// Escapes control characters in names taken from images before printing
/// (as errors are: `\u{1b}`, `\r`, …).
fn clean(s: &str) -> String {
    guard::escape_controls(s)
}

struct EntrySummary {
    platforms: Vec<String>,
    total: Option<u64>,
    artifact_type: Option<String>,
}

/// Platforms and total size of one index.json entry (best effort: what is
/// damaged is left out rather than failing the listing; a blob ocikit may not
/// read fails it).
fn summarize(store: &dyn Store, desc: &Descriptor) -> Result<EntrySummary> {
    let denied = |r: &std::result::Result<resolve::Node, resolve::ResolveError>| match r {
        Err(resolve::ResolveError::Store(e)) if e.is_denied() => Some(anyhow!("{e}")),
        _ => None,
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0u64;
    let mut complete = true;
    let mut platforms = Vec::new();
    let mut artifact_type = desc.artifact_type.clone();
    let mut add = |d: &Descriptor, total: &mut u64| {
        if seen.insert(d.digest.clone()) {
            *total += d.size.max(0) as u64;
        }
    };
    add(desc, &mut total);
    let mut manifests = Vec::new();
    let node = resolve::load_node(store, desc, "manifest");
    if let Some(e) = denied(&node) {
        return Err(e);
    }
    match node {
        Ok(node) => match spec::parse_document(&node.bytes, desc.kind()) {
            Ok(spec::Document::Index(idx)) => {
                for d in idx.entries() {
                    if let Some(p) = &d.platform {
                        if !(p.os == "unknown" && p.architecture == "unknown") {
                            platforms.push(p.to_string());
                        }
                    }
                    add(d, &mut total);
                    if d.kind() == Kind::Manifest {
                        manifests.push((d.clone(), false));
                    }
                }
            }
            Ok(spec::Document::Manifest(m)) => {
                artifact_type = artifact_type.or(m.artifact_type.clone());
                manifests.push((desc.clone(), true));
            }
            Err(_) => complete = false,
        },
        Err(_) => complete = false,
    }
    for (d, want_platform) in manifests {
        let node = resolve::load_node(store, &d, "manifest");
        if let Some(e) = denied(&node) {
            return Err(e);
        }
        let Ok(node) = node else {
            complete = false;
            continue;
        };
        let Ok(spec::Document::Manifest(m)) = spec::parse_document(&node.bytes, Kind::Manifest)
        else {
            complete = false;
            continue;
        };
        if let Some(c) = &m.config {
            add(c, &mut total);
            if want_platform && c.kind() == Kind::ImageConfig {
                let cn = resolve::load_node(store, c, "config");
                if let Some(e) = denied(&cn) {
                    return Err(e);
                }
                if let Ok(cn) = cn {
                    if let Ok(cfg) = spec::parse_config(&cn.bytes) {
                        if cfg.os.is_some() || cfg.architecture.is_some() {
                            platforms.push(cfg.platform().to_string());
                        }
                    }
                }
            }
        }
        for l in m.layers.as_deref().unwrap_or(&[]) {
            add(l, &mut total);
        }
    }
    Ok(EntrySummary {
        platforms,
        total: complete.then_some(total),
        artifact_type,
    })
}

fn ls(location: &str, json: bool) -> Result<()> {
    let (loc, store) = open_store(location)?;
    if loc.reference.is_some() {
        bail!("ls lists a whole location; drop the reference from {location:?}");
    }
    let (_, index) = resolve::read_index_json(&store)?;
    let rows: Vec<(Descriptor, EntrySummary)> = resolve::listed_entries(&store, index.entries())
        .into_iter()
        .map(|d| Ok((d.clone(), summarize(&store, d)?)))
        .collect::<Result<_>>()?;
    if json {
        let images: Vec<_> = rows
            .iter()
            .map(|(d, s)| {
                json!({
                    "tag": d.ref_name(),
                    "name": d.annotation(spec::ANNOTATION_IMAGE_NAME),
                    "digest": d.digest,
                    "mediaType": d.media_type,
                    "artifactType": s.artifact_type,
                    "platforms": s.platforms,
                    "size": d.size,
                    "totalSize": s.total,
                    "annotations": d.annotations,
                })
            })
            .collect();
        return print_json(&json!({
            "schemaVersion": 1,
            "location": store.name(),
            "images": images,
        }));
    }
    let mut o = out();
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|(d, s)| {
            [
                // Docker-style entries (same tag on several images) read better
                // by their familiar name.
                clean(
                    &d.annotation(spec::ANNOTATION_IMAGE_NAME)
                        .map(ocikit::docker::familiar)
                        .or_else(|| d.ref_name().map(str::to_string))
                        .unwrap_or_else(|| "<none>".into()),
                ),
                d.digest()
                    .map(|x| x.short())
                    .unwrap_or_else(|_| clean(&d.digest)),
                clean(&short_type(&d.media_type)),
                if s.platforms.is_empty() {
                    s.artifact_type
                        .clone()
                        .map(|a| clean(&a))
                        .unwrap_or_else(|| "-".into())
                } else {
                    s.platforms.join(",")
                },
                s.total.map(human).unwrap_or_else(|| "?".into()),
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

fn resolve_image(store: &dyn Store, loc: &Location, platform: &PlatformChoice) -> Result<Image> {
    Ok(resolve::resolve_image(
        store,
        loc.reference.as_ref(),
        platform,
    )?)
}

fn inspect(location: &str, platform: PlatformChoice, json: bool) -> Result<()> {
    let (loc, store) = open_store(location)?;
    let image = resolve_image(&store, &loc, &platform)?;
    let config = image.config(&store)?;
    let cfg = match &config {
        Some(node) if node.descriptor.kind() == Kind::ImageConfig => Some(
            spec::parse_config(&node.bytes).map_err(|e| anyhow!("config {} {e}", node.digest))?,
        ),
        _ => None,
    };
    let layers = image.layers();
    let diff_ids: Vec<String> = cfg
        .as_ref()
        .and_then(|c| c.rootfs.as_ref())
        .and_then(|r| r.diff_ids.clone())
        .unwrap_or_default();
    let total: u64 = layers
        .iter()
        .map(|l| l.size.max(0) as u64)
        .fold(0u64, u64::saturating_add)
        .saturating_add(image.manifest.bytes.len() as u64)
        .saturating_add(config.as_ref().map_or(0, |c| c.bytes.len() as u64));
    let platform_str = cfg
        .as_ref()
        .map(|c| c.platform().to_string())
        .or_else(|| image.platform.as_ref().map(|p| p.to_string()));
    if json {
        let m = &image.parsed;
        return print_json(&json!({
            "schemaVersion": 1,
            "location": store.name(),
            "reference": loc.reference.as_ref().map(|r| r.to_string()),
            "indexes": image.indexes.iter().map(|n| json!({
                "digest": n.digest, "mediaType": n.descriptor.media_type, "size": n.bytes.len(),
            })).collect::<Vec<_>>(),
            "platform": platform_str,
            "manifest": {
                "digest": image.manifest.digest,
                "mediaType": m.media_type.clone().unwrap_or_else(|| image.manifest.descriptor.media_type.clone()),
                "size": image.manifest.bytes.len(),
                "artifactType": m.artifact_type,
                "annotations": m.annotations,
                "subject": m.subject,
            },
            "config": config.as_ref().map(|c| json!({
                "digest": c.digest,
                "mediaType": c.descriptor.media_type,
                "size": c.bytes.len(),
                "created": cfg.as_ref().and_then(|x| x.created.clone()),
                "config": cfg.as_ref().and_then(|x| x.config.clone()),
                "historyLength": cfg.as_ref().and_then(|x| x.history.as_ref().map(Vec::len)),
            })),
            "layers": layers.iter().enumerate().map(|(i, l)| json!({
                "digest": l.digest, "mediaType": l.media_type, "size": l.size,
                "diffId": diff_ids.get(i),
            })).collect::<Vec<_>>(),
            "totalSize": total,
        }));
    }
    let mut o = out();
    if let Some(r) = &loc.reference {
        writeln!(o, "Reference:  {}", clean(&r.to_string()))?;
    }
    for n in &image.indexes {
        writeln!(
            o,
            "Index:      {}  {}",
            n.digest,
            short_type(&n.descriptor.media_type)
        )?;
    }
    if let Some(p) = &platform_str {
        writeln!(o, "Platform:   {}", clean(p))?;
    }
    writeln!(
        o,
        "Manifest:   {}  {}  {}",
        image.manifest.digest,
        clean(&short_type(&image.manifest.descriptor.media_type)),
        human(image.manifest.bytes.len() as u64)
    )?;
    if let Some(a) = &image.parsed.artifact_type {
        writeln!(o, "Artifact:   {}", clean(a))?;
    }
    if let Some(s) = &image.parsed.subject {
        writeln!(o, "Subject:    {}", clean(&s.digest))?;
    }
    if let Some(c) = &config {
        writeln!(
            o,
            "Config:     {}  {}  {}",
            c.digest,
            clean(&c.descriptor.media_type),
            human(c.bytes.len() as u64)
        )?;
    }
    if let Some(c) = &cfg {
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
        layers.len(),
        human(total)
    )?;
    for (i, l) in layers.iter().enumerate() {
        let short = l
            .digest()
            .map(|d| d.short())
            .unwrap_or_else(|_| clean(&l.digest));
        write!(
            o,
            "  {i:>3}  {short}  {:>10}  {}",
            human(l.size.max(0) as u64),
            clean(&l.media_type)
        )?;
        if let Some(d) = diff_ids.get(i) {
            write!(o, "  diff_id {}", clean(d))?;
        }
        writeln!(o)?;
    }
    if let Some(ann) = &image.parsed.annotations {
        writeln!(o, "Annotations:")?;
        for (k, v) in ann {
            writeln!(o, "  {}={}", clean(k), clean(v))?;
        }
    }
    o.flush()?;
    Ok(())
}

fn write_bytes(bytes: &[u8]) -> Result<()> {
    let mut o = out();
    o.write_all(bytes)?;
    o.flush()?;
    Ok(())
}

fn cat(location: &str, what: CatWhat, platform: PlatformChoice) -> Result<()> {
    let (loc, store) = open_store(location)?;
    match what {
        CatWhat::Index => {
            if loc.reference.is_none() {
                return write_bytes(&store.index_bytes()?);
            }
            let node = resolve::resolve_node(&store, loc.reference.as_ref())?;
            // Judge by the bytes, not the descriptor: a manifest labelled as an
            // index is not printed as one.
            let own = serde_json::from_slice(&node.bytes)
                .map(|v| spec::sniff_kind(&v))
                .unwrap_or(Kind::Unknown);
            if own == Kind::Index {
                spec::parse_document(&node.bytes, Kind::Index)
                    .map_err(|e| anyhow!("{} {} {e}", loc.display(), node.digest))?;
            } else {
                bail!(
                    "{} names {} ({}), which is not an index; use 'cat … manifest'",
                    loc.display(),
                    node.digest,
                    node.descriptor.media_type
                );
            }
            write_bytes(&node.bytes)
        }
        CatWhat::Manifest => {
            let image = resolve_image(&store, &loc, &platform)?;
            write_bytes(&image.manifest.bytes)
        }
        CatWhat::Config => {
            let image = resolve_image(&store, &loc, &platform)?;
            match image.config(&store)? {
                Some(c) => write_bytes(&c.bytes),
                None => bail!("manifest {} has no config", image.manifest.digest),
            }
        }
    }
}

fn blob(location: &str, digest: &str) -> Result<()> {
    let (_, store) = open_store(location)?;
    let digest = Digest::parse(digest)?;
    if !digest.algorithm().is_verifiable() {
        bail!(
            "{digest} uses an algorithm ocikit cannot verify; refusing to print unverified bytes"
        );
    }
    // Verify first, then stream: nothing unverified reaches stdout, and memory
    // stays bounded whatever the blob's size.
    let blob = store.open_blob(&digest)?;
    let location = || store.blob_location(&digest).display().to_string();
    let (actual, _) = blob
        .hash(digest.algorithm().clone())
        .with_context(location)?;
    if actual != digest {
        bail!("blob {digest} has the wrong content (it hashes to {actual}); not printed");
    }
    let mut o = out();
    blob.copy_to(&mut o)?;
    o.flush()?;
    Ok(())
}

fn verify_cmd(location: &str, deep: bool, json: bool) -> Result<Option<Negative>> {
    let loc = Location::parse(location)?;
    if loc.reference.is_some() {
        bail!("verify checks a whole location; drop the reference from {location:?}");
    }
    let meta = check_exists(&loc.path)?;
    let expect = match loc.transport {
        Transport::OciArchive => Some(Expect::Oci),
        Transport::DockerArchive => Some(Expect::Docker),
        // Anything but a directory is read as an archive (FIFOs and devices
        // are then refused by name).
        Transport::Auto if !meta.is_dir() => Some(Expect::Any),
        _ => None,
    };
    let start = Instant::now();
    let bar = Bar::new(if deep {
        "verifying (deep)"
    } else {
        "verifying"
    });
    let options = VerifyOptions {
        deep,
        limits: ocikit::limits::Limits::from_env(),
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
        print_json(&verify_json(&report, secs))?;
    } else {
        print_verify(&report, secs)?;
    }
    Ok((!report.is_clean()).then_some(Negative))
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(what: &str) -> Bar {
        use std::io::IsTerminal;
        if quiet() || !io::stderr().is_terminal() {
            return Bar(None);
        }
        let pb =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(what.to_string());
        Bar(Some(pb))
    }

    fn done(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

impl verify::Progress for Bar {
    fn begin(&self, total: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(total);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(bytes);
        }
    }
}

fn verify_json(r: &VerifyReport, secs: f64) -> serde_json::Value {
    let findings: Vec<_> = r
        .findings
        .iter()
        .map(|f| {
            json!({
                "severity": if f.kind.is_warning() { "warning" } else { "error" },
                "kind": f.kind,
                "digest": f.digest,
                "path": f.path,
                "message": f.message,
            })
        })
        .collect();
    json!({
        "schemaVersion": 1,
        "location": r.location,
        "ok": r.is_clean(),
        "deep": r.deep,
        "blobsChecked": r.blobs_checked,
        "bytesChecked": r.bytes_checked,
        "layersDecompressed": r.layers_decompressed,
        "errors": r.errors().count(),
        "warnings": r.warnings().count(),
        "seconds": (secs * 1000.0).round() / 1000.0,
        "findings": findings,
    })
}

fn print_verify(r: &VerifyReport, secs: f64) -> Result<()> {
    let mut o = out();
    for f in &r.findings {
        let sev = if f.kind.is_warning() {
            "warning"
        } else {
            "error"
        };
        writeln!(o, "{sev}: {}: {}", f.kind, clean(&f.message))?;
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
