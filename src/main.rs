//! The `ocikit` command: parses arguments, calls the library, prints reports
//! and maps errors to exit codes (0 success / no difference, 1 a negative
//! finding, 2 usage or operational error). No logic lives here: the commands
//! are in `cli/`, what they do in the library.

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

mod cli {
    pub mod args;
    pub mod dispatch;
    pub mod files;
    pub mod image;
    pub mod index;
    pub mod inspect;
    pub mod maintain;
    pub mod output;
    pub mod prune;
    pub mod referrers;
    pub mod sync;
    pub mod transfer;
}

use std::process::ExitCode;

use clap::Parser;

use cli::args::Cli;
use cli::output::print_error;
use ocikit::guard;

/// A negative finding: exit 1, report already printed.
pub(crate) struct Negative;

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
    let result = cli::dispatch::run(cli);
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

/// SIGINT and SIGTERM make a running flatten or squash stop and remove its
/// staging directory (exit 2, "interrupted") instead of dying mid-way.
pub(crate) fn cancel_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let Some(cancel) = cli::output::cancel_token().flag() else {
        return;
    };
    for sig in [SIGINT, SIGTERM] {
        // A second signal (say, while blocked waiting for a lock) ends the
        // process at once (exit 130): nothing of its own is on disk then.
        // The order matters: the exit is armed by the first signal's flag.
        let _ = flag::register_conditional_shutdown(sig, 130, cancel.clone());
        let _ = flag::register(sig, cancel.clone());
    }
}
