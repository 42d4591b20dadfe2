//! Printing: stdout (buffered; a failed write is recorded, see
//! [`guard::stdout_error`]), stderr messages (`-q` silences all but errors),
//! escaping of names taken from images, sizes, the progress bar, and the
//! library's notices.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

use anyhow::Result;
use serde::Serialize;

use ocikit::cancel::Cancel;
use ocikit::guard;
use ocikit::layout::LockPolicy;
use ocikit::limits::Limits;
use ocikit::reference::Location;
use ocikit::reference::Notice;
use ocikit::spec;
use ocikit::store::Store;
use ocikit::verify;
use ocikit::Layout;

static QUIET: AtomicBool = AtomicBool::new(false);
static VERBOSE: AtomicU8 = AtomicU8::new(0);

/// Sets `-q` and `-v`.
pub fn set_verbosity(quiet: bool, verbose: u8) {
    QUIET.store(quiet, Ordering::Relaxed);
    VERBOSE.store(verbose, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

pub fn verbose() -> u8 {
    VERBOSE.load(Ordering::Relaxed)
}

/// A message on stderr that is not an error (warnings, notes, summaries):
/// `-q` silences it. Errors always print. Control characters (from names in
/// images) are escaped.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::cli::output::quiet() {
            $crate::cli::output::to_stderr(&::ocikit::guard::escape_controls(&format!($($arg)*)));
        }
    };
}
pub(crate) use say;

/// Writes one line to stderr. A stderr that cannot be written (`2>/dev/full`)
/// loses the line but never panics (`eprintln!` would).
pub fn to_stderr(line: &str) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

/// An error on stderr, control characters escaped: the one way errors print.
pub fn print_error(msg: &str) {
    to_stderr(&format!("ocikit: error: {}", guard::escape_controls(msg)));
}

/// Prints a library notice on stderr (unless `-q`).
pub fn notice(n: Notice) {
    match n {
        Notice::Note(m) => say!("ocikit: note: {m}"),
        Notice::Warning(m) => say!("ocikit: warning: {m}"),
        Notice::Info(m) => say!("{m}"),
        other => say!("ocikit: note: {other:?}"),
    }
}

/// Said while waiting for a layout's writer lock (on a terminal only).
pub fn lock_notice(layout: &Path, holder: Option<u32>) {
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

/// How this run's writers wait for layout locks (`--lock-timeout`).
static LOCK_POLICY: OnceLock<LockPolicy> = OnceLock::new();
/// The token the signal handler sets; every cancellable call of this run
/// holds a clone.
static CANCEL: OnceLock<Cancel> = OnceLock::new();

/// Sets how this run's writers wait for layout locks (once).
pub fn set_lock_policy(policy: LockPolicy) {
    let _ = LOCK_POLICY.set(policy);
}

/// How this run's writers wait for layout locks.
pub fn lock_policy() -> LockPolicy {
    LOCK_POLICY.get().copied().unwrap_or_default()
}

/// This run's cancellation token.
pub fn cancel_token() -> Cancel {
    CANCEL.get_or_init(Cancel::new).clone()
}

/// This run's limits: `OCIKIT_MAX_DECOMPRESSED` when set.
pub fn limits() -> Limits {
    Limits::from_env()
}

/// How this run opens archives.
pub fn open_options() -> ocikit::archive::OpenOptions {
    ocikit::archive::OpenOptions::new(limits(), cancel_token())
}

/// Parses and opens a readable location, printing its notices.
pub fn open_store(location: &str) -> Result<(Location, Box<dyn Store>)> {
    let loc = Location::parse(location)?;
    let store = loc.open(&open_options(), &mut notice)?;
    Ok((loc, store))
}

/// Opens a layout to change, printing its notices, with this run's lock
/// policy and cancellation token.
pub fn open_layout(loc: &Location) -> Result<Layout> {
    Ok(with_settings(loc.open_layout(&mut notice)?))
}

/// A layout with this run's lock policy and cancellation token.
pub fn with_settings(layout: Layout) -> Layout {
    layout
        .with_lock_policy(lock_policy())
        .with_cancel(cancel_token())
}

/// Buffered stdout that records a write error (see [`guard::stdout_error`]).
pub fn out() -> io::BufWriter<guard::StdoutWriter> {
    io::BufWriter::with_capacity(256 << 10, guard::StdoutWriter::new())
}

/// Prints a document as pretty JSON and a newline.
pub fn print_json(v: &impl Serialize) -> Result<()> {
    let mut o = out();
    serde_json::to_writer_pretty(&mut o, v)?;
    writeln!(o)?;
    o.flush()?;
    Ok(())
}

/// Writes bytes to stdout as they are.
pub fn write_bytes(bytes: &[u8]) -> Result<()> {
    let mut o = out();
    o.write_all(bytes)?;
    o.flush()?;
    Ok(())
}

pub fn human(n: u64) -> String {
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
pub fn short_type(mt: &str) -> String {
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
pub fn clean(s: &str) -> String {
    guard::escape_controls(s)
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
pub struct Bar {
    what: &'static str,
    pb: OnceLock<Option<indicatif::ProgressBar>>,
}

impl Bar {
    /// A bar shown now.
    pub fn new(what: &'static str) -> Bar {
        let bar = Bar::lazy(what);
        bar.get();
        bar
    }

    /// A bar shown once the work it measures begins.
    pub fn lazy(what: &'static str) -> Bar {
        Bar {
            what,
            pb: OnceLock::new(),
        }
    }

    fn get(&self) -> Option<&indicatif::ProgressBar> {
        self.pb.get_or_init(|| make_bar(self.what)).as_ref()
    }

    pub fn done(&self) {
        if let Some(Some(pb)) = self.pb.get() {
            pb.finish_and_clear();
        }
    }
}

fn make_bar(what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if quiet() || !io::stderr().is_terminal() {
        return None;
    }
    let pb =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    Some(pb)
}

impl verify::Progress for Bar {
    fn begin(&self, total: u64) {
        if let Some(pb) = self.get() {
            pb.set_length(total);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(pb) = self.get() {
            pb.inc(bytes);
        }
    }
}
