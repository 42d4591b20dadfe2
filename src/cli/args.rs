//! The command line: clap definitions and help text (`ocikit --help`, the
//! man pages and the completion scripts are generated from these).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use ocikit::platform::PlatformSpec;

/// Offline OCI image-layout toolkit.
#[derive(Parser)]
#[command(name = "ocikit", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Commands that change a layout wait for its writer lock at most this
    /// many seconds (default: as long as it takes).
    #[arg(long, global = true, value_name = "SECONDS")]
    pub lock_timeout: Option<f64>,
    /// Print only results and errors: no warnings, notes, summaries or progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Say more on stderr (repeatable): -v adds the time taken.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// With --json: also list every stored blob (digest and size).
        #[arg(long, requires = "json")]
        blobs: bool,
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
    /// Make a new image from an existing one, edited: times, layers, media types, config.
    #[command(
        after_help = "The source is never changed; the result is tagged TAG in --layout (default: LOCATION,\nwhen it is a layout). Layers no edit changes keep their stored bytes; same input and\nsame edits give the same digests. Referrers of the source are not copied (they would\nnot apply to the new manifest).\n--time-max takes RFC 3339 (2024-01-01T00:00:00Z), @UNIX, or source-date-epoch\n(reads SOURCE_DATE_EPOCH). Layers are counted from 1.\nExamples:\n  ocikit mod ./builds:run1 --tag run1-repro --time-max @1700000000 --normalize-layers\n  ocikit mod ./images:1.0 --tag 1.0-docker --to-docker --compress gzip\n  ocikit mod app.tar --layout ./images --tag app-slim --rm-path /usr/share/doc --label stage=prod"
    )]
    Mod(ModArgs),
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
    /// List the referrers (signatures, SBOMs, …) of an image, and theirs, as a tree.
    #[command(
        after_help = "Referrers are stored manifests whose `subject` is REF's manifest; for an index,\nthe index itself and each of its manifests (with --platform, that platform's only).\nPrints nothing when there are none.\nExamples:\n  ocikit referrers testdata/demo:1.0\n  ocikit referrers ./images:1.0 --artifact-type application/spdx+json --json"
    )]
    Referrers {
        /// LOCATION[:REF].
        location: String,
        /// Only referrers of this artifact type (at every depth).
        #[arg(long, value_name = "TYPE")]
        artifact_type: Option<String>,
        /// Only this platform's manifest of a multi-platform index.
        #[arg(long)]
        platform: Option<PlatformSpec>,
        /// Print JSON (schema in docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Attach files to an image as an OCI 1.1 artifact (a referrer); print its digest.
    #[command(
        after_help = "The artifact's subject is REF's manifest (for an index, the index). It is not\ntagged: gc keeps it and copy carries it as a referrer of REF. The same inputs give\nthe same digest (no creation time unless given with --annotation).\nExamples:\n  ocikit attach ./images:1.0 --artifact-type application/spdx+json sbom.json\n  ocikit attach ./images@sha256:… --artifact-type application/vnd.example.sig sig.bin --annotation org.opencontainers.image.created=2024-01-01T00:00:00Z"
    )]
    Attach {
        /// LAYOUT:REF naming the subject.
        target: String,
        /// The artifact's artifactType.
        #[arg(long, value_name = "TYPE")]
        artifact_type: String,
        /// Files to attach, one layer each (titled with the base name).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Manifest annotation KEY=VALUE (repeatable).
        #[arg(long = "annotation", value_name = "KEY=VALUE")]
        annotations: Vec<String>,
        /// Media type of the layers (default: application/octet-stream).
        #[arg(long, value_name = "TYPE")]
        media_type: Option<String>,
        /// Print what was written as JSON (docs/json.md) instead of the digest.
        #[arg(long)]
        json: bool,
    },
    /// Build and edit multi-platform image indexes in a layout (create, add, rm).
    #[command(
        after_help = "Examples:\n  ocikit index create ./images:app ./images:app-amd64 ./images:app-arm64\n  ocikit index add ./images:app testdata/demo:1.0 --platform linux/arm64 --force\n  ocikit index rm ./images:app --platform linux/arm64"
    )]
    Index {
        #[command(subcommand)]
        command: super::index::IndexCommand,
    },
    /// Print one file of the flattened image; reads no layer below the one holding it.
    #[command(
        name = "get-file",
        after_help = "Layers are read newest first; reading stops at the first layer that decides PATH.\nSymlinks are followed inside the image root (never on the host); a symlink prints its target with --no-follow.\nExit status: 0 found, 2 not found, a directory, or could not run.\nExamples:\n  ocikit get-file testdata/demo:1.0 /etc/os-release\n  ocikit get-file ./images:app /usr/bin/app --output app.bin\n  ocikit get-file ./images:app /etc/passwd --json"
    )]
    GetFile {
        /// LOCATION[:REF].
        location: String,
        /// The path in the image (absolute or relative to its root).
        path: std::ffi::OsString,
        /// Write the content to FILE (atomically) instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Do not follow a symlink in PATH's last component: return the link itself.
        #[arg(long)]
        no_follow: bool,
        /// Platform to choose in a multi-platform index; default: the host's.
        #[arg(long)]
        platform: Option<PlatformSpec>,
        /// Print JSON describing what was found (schema in docs/json.md); the
        /// content is then written only with --output.
        #[arg(long)]
        json: bool,
    },
    /// List the paths of the flattened image without flattening it.
    #[command(
        after_help = "The layers are applied base first in memory with the whiteout rules; nothing is written.\nExamples:\n  ocikit files testdata/demo:1.0\n  ocikit files ./images:app --long\n  ocikit files ./images:app --json | jq -r '.entries[] | select(.type == \"file\") | .path'"
    )]
    Files {
        /// LOCATION[:REF].
        location: String,
        /// Print `ls -l`-like lines: type and mode, owner, size, mtime, path, link, layer.
        #[arg(long, conflicts_with = "json")]
        long: bool,
        /// Print JSON (schema in docs/json.md).
        #[arg(long)]
        json: bool,
        /// Platform to choose in a multi-platform index; default: the host's.
        #[arg(long)]
        platform: Option<PlatformSpec>,
    },
    /// Drop a layout's tags by retention policy, then collect garbage.
    #[command(
        after_help = "A tag is dropped only when every policy given drops it; tags --match does not match stay.\nExample:\n  ocikit prune ./images --match '^nightly-' --keep-last 3 --dry-run"
    )]
    Prune(PruneArgs),
    /// Copy the images a config file picks into layouts, by tag filters.
    #[command(
        after_help = "CONFIG is YAML (or JSON): defaults, then a `sync` list of entries with source, target\n(LAYOUT[:NAME-TEMPLATE] with {{repo}}, {{tag}}, {{name}}), tags {allow, deny, semver},\nplatforms, referrers, digestTags; docs/decisions.md has the rules.\nExit status: 0 all copied or up to date, 1 an entry or image failed, 2 a bad config.\nExample:\n  ocikit sync sync.yaml --dry-run"
    )]
    Sync(SyncArgs),
}

/// `sync`'s arguments.
#[derive(clap::Args)]
pub struct SyncArgs {
    /// CONFIG file (YAML or JSON); relative paths in it are relative to its directory.
    pub config: String,
    /// Plan every entry and print what would be copied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON (schema in docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// `prune`'s arguments.
#[derive(clap::Args)]
pub struct PruneArgs {
    /// LAYOUT.
    pub layout: String,
    /// Only tags this regex matches are candidates (default: every tag).
    #[arg(long = "match", value_name = "REGEX")]
    pub matching: Option<String>,
    /// Keep the N newest by --sort.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep tags that are semver versions in RANGE (like '>=1.2 <2', '^1.2').
    #[arg(long, value_name = "RANGE")]
    pub keep_semver: Option<String>,
    /// Drop only tags created longer ago than DURATION (30d, 12h, 2w, 90m).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// The order of --keep-last.
    #[arg(long, value_enum, default_value_t = PruneSort::Created)]
    pub sort: PruneSort,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON (schema in docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// `prune --sort`.
#[derive(Clone, Copy, ValueEnum)]
pub enum PruneSort {
    /// The config's created time (an index: its newest manifest's).
    Created,
    /// Semantic version; unparsable versions are oldest.
    Semver,
    /// Name, the largest newest.
    Name,
}

/// `mod`'s arguments.
#[derive(clap::Args)]
pub struct ModArgs {
    /// LOCATION[:REF].
    pub location: String,
    /// Tag for the new image.
    #[arg(long)]
    pub tag: String,
    /// Layout to write into (default: LOCATION, when it is a layout).
    #[arg(long)]
    pub layout: Option<PathBuf>,
    /// Clamp config, history and every layer entry's times to at most TIME.
    #[arg(long, value_name = "TIME")]
    pub time_max: Option<String>,
    /// Rewrite layers as normalised tars (sorted, numeric owners, PAX only where needed).
    #[arg(long)]
    pub normalize_layers: bool,
    /// Recompress every layer (gzip output is reproducible).
    #[arg(long, value_enum)]
    pub compress: Option<CompressArg>,
    /// Use OCI media types.
    #[arg(long, conflicts_with = "to_docker")]
    pub to_oci: bool,
    /// Use Docker schema 2 media types (no zstd layers).
    #[arg(long)]
    pub to_docker: bool,
    /// Set a manifest annotation (repeatable).
    #[arg(long = "annotation", value_name = "K=V")]
    pub annotations: Vec<String>,
    /// Set an annotation of the index (when LOCATION names an index; repeatable).
    #[arg(long = "annotation-index", value_name = "K=V")]
    pub index_annotations: Vec<String>,
    /// Set a config label (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Set an environment variable in the config (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Drop the config's history.
    #[arg(long)]
    pub rm_history: bool,
    /// Drop layer N, counted from 1 (repeatable).
    #[arg(long = "rm-layer", value_name = "N")]
    pub rm_layers: Vec<usize>,
    /// Drop PATH (and what is below it, and its whiteouts) from every layer (repeatable).
    #[arg(long = "rm-path", value_name = "PATH")]
    pub rm_paths: Vec<String>,
    /// Print the result as JSON (docs/json.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct CopyArgs {
    /// Keep only this platform of multi-platform indexes (repeatable); a
    /// docker-archive holds one image per name: default the host's.
    #[arg(long = "platform")]
    pub platforms: Vec<PlatformSpec>,
    /// Copy every platform (the default; for skopeo's spelling).
    #[arg(long, conflicts_with = "platforms")]
    pub all: bool,
    /// Leave out referrers (signatures, SBOMs) of the copied images.
    #[arg(long)]
    pub no_referrers: bool,
    /// Before writing anything, decompress every layer and check its diff_id
    /// and tar stream (like verify --deep).
    #[arg(long)]
    pub deep: bool,
    /// Write layers uncompressed, as `docker save` does (each image then gets
    /// a new manifest; its config, image ID and diff_ids are unchanged).
    #[arg(long)]
    pub uncompressed_layers: bool,
    /// Plan only: say what would be written (blobs, bytes, images), write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print what was written (or would be) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How an archive target is written (copy to a file, export).
#[derive(clap::Args)]
pub struct ArchiveArgs {
    /// Archive format for a file target (default: from its transport, else oci-archive).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Compress a file target as a whole (default: from its extension, else none).
    #[arg(long, value_enum)]
    pub compress: Option<CompressArg>,
    /// Also write FILE.sha256 beside FILE (sha256sum format; one line per part with --split).
    #[arg(long)]
    pub checksum: bool,
    /// Cut the archive into parts FILE.000, FILE.001, … of at most SIZE bytes
    /// (K/M/G suffixes, at least 1M); read them back by naming FILE.000.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub split: Option<u64>,
    /// Write a delta bundle: leave out the blobs HAVE holds (the far side's
    /// layout, an archive, or its `ls --json --blobs` output).
    #[arg(long, value_name = "HAVE")]
    pub delta_from: Option<String>,
}

/// A byte count with an optional K, M or G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("{s:?}: the suffix must be K, M or G")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size in bytes (e.g. 100M)"))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    OciArchive,
    DockerArchive,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressArg {
    None,
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CatWhat {
    Index,
    Manifest,
    Config,
}

impl From<FormatArg> for ocikit::copy::ArchiveKind {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::OciArchive => ocikit::copy::ArchiveKind::OciArchive,
            FormatArg::DockerArchive => ocikit::copy::ArchiveKind::DockerArchive,
        }
    }
}

impl From<CompressArg> for ocikit::spec::Compression {
    fn from(c: CompressArg) -> Self {
        match c {
            CompressArg::None => ocikit::spec::Compression::None,
            CompressArg::Gzip => ocikit::spec::Compression::Gzip,
            CompressArg::Zstd => ocikit::spec::Compression::Zstd,
        }
    }
}
