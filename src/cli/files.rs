//! Read-only views of an image's flattened tree: `get-file`, `files`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};

use ocikit::files::{self, FileEntry, FileType, FilesOptions, GetFileOptions};
use ocikit::output::write_atomically;
use ocikit::resolve::{self, PlatformChoice};

use super::output::{open_store, out, print_json};
use crate::cancel_on_signals;

fn options() -> FilesOptions {
    FilesOptions {
        limits: super::output::limits(),
        cancel: super::output::cancel_token(),
    }
}

pub fn get_file_cmd(
    location: &str,
    raw: &std::ffi::OsStr,
    output: Option<PathBuf>,
    no_follow: bool,
    platform: PlatformChoice,
    json: bool,
) -> Result<()> {
    let (loc, store) = open_store(location)?;
    let path = &raw.to_string_lossy();
    if let Some(file) = &output {
        if file.is_dir() || file.file_name().is_none() {
            bail!(
                "--output {}: is a directory; give a file path",
                file.display()
            );
        }
        ocikit::guard::check_output(ocikit::guard::Output::File(file), &[loc.path.as_path()])?;
    }
    let image = resolve::resolve_image(&store, loc.reference.as_ref(), &platform)?;
    cancel_on_signals();
    let (report, content) = files::get_file(
        &store,
        &image,
        std::os::unix::ffi::OsStrExt::as_bytes(raw),
        &GetFileOptions {
            no_follow,
            files: options(),
        },
    )?;
    match (&output, report.entry.kind) {
        (Some(file), FileType::File) => {
            write_atomically(file, |_, mut w| -> Result<_> {
                content.copy_to(&mut w)?;
                Ok((w, ()))
            })?;
        }
        (Some(file), FileType::Symlink) => {
            let target = report.entry.link.clone().unwrap_or_default();
            write_atomically(file, |_, mut w| -> Result<_> {
                w.write_all(target.as_bytes())?;
                Ok((w, ()))
            })?;
        }
        (Some(_), kind) => bail!(
            "{path}: is a {} in the image; it has no content to write",
            kind_name(kind)
        ),
        (None, _) if json => {}
        (None, FileType::File) => {
            let mut o = out();
            content.copy_to(&mut o)?;
            o.flush()?;
        }
        (None, FileType::Symlink) => {
            let mut o = out();
            writeln!(o, "{}", report.entry.link.as_deref().unwrap_or(""))?;
            o.flush()?;
        }
        (None, kind) => bail!(
            "{path}: is a {} in the image; it has no content to print (try --json)",
            kind_name(kind)
        ),
    }
    if json {
        print_json(&report)?;
    }
    Ok(())
}

fn kind_name(k: FileType) -> &'static str {
    match k {
        FileType::File => "regular file",
        FileType::Dir => "directory",
        FileType::Symlink => "symlink",
        FileType::Char => "character device",
        FileType::Block => "block device",
        FileType::Fifo => "FIFO",
    }
}

pub fn files_cmd(location: &str, platform: PlatformChoice, long: bool, json: bool) -> Result<()> {
    let (loc, store) = open_store(location)?;
    let image = resolve::resolve_image(&store, loc.reference.as_ref(), &platform)?;
    cancel_on_signals();
    let report = files::list(&store, &image, &options())?;
    if json {
        return print_json(&report);
    }
    let mut o = out();
    for e in &report.entries {
        if long {
            writeln!(o, "{}", long_line(e))?;
        } else {
            writeln!(o, "{}", e.path)?;
        }
    }
    o.flush()?;
    Ok(())
}

/// `ls -l`-like: type and mode, owner, size (or device numbers), mtime,
/// path, link target, and the layer.
fn long_line(e: &FileEntry) -> String {
    let mode = u32::from_str_radix(&e.mode, 8).unwrap_or(0);
    let mut perms = String::with_capacity(10);
    perms.push(e.kind.letter());
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        let bit = 1 << (8 - i);
        let set = mode & bit != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        perms.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => c,
            (false, false, _) => '-',
        });
    }
    let size = match e.device {
        Some([ma, mi]) => format!("{ma}, {mi}"),
        None => e.size.to_string(),
    };
    let mtime = chrono_like(e.mtime);
    let mut line = format!("{perms} {}/{} {size:>10} {mtime} {}", e.uid, e.gid, e.path);
    if let Some(l) = &e.link {
        line.push_str(" -> ");
        line.push_str(l);
    }
    if let Some(h) = &e.hardlink {
        line.push_str(" link to ");
        line.push_str(h);
    }
    line.push_str(&format!("  [layer {}]", e.layer));
    line
}

/// `YYYY-MM-DD HH:MM` (UTC) from seconds since the epoch.
fn chrono_like(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}
