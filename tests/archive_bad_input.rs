//! Broken and hostile archives: every case starts from an archive ocikit wrote
//! (`export` of the demo), breaks it (cut, renamed, replaced, duplicated
//! members; not a tar at all; a decompression bomb), runs the CLI on it and
//! checks the exit code (2 operational error, 1 a verify finding), that the
//! one-line error names the archive, member, digest or ref at fault, that
//! nothing panics, and that every target is left as it was: an existing layout
//! byte-for-byte, an existing archive file with its old bytes, a new target not
//! created, and no `.ocikit-export-*` temporary file left beside it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------- running

fn run_with(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Run {
    run_checked_with(args, env, cwd)
}

fn run(args: &[&str]) -> Run {
    run_checked(args)
}

fn run_ok(args: &[&str]) -> Run {
    let r = run(args);
    assert_eq!(r.code, 0, "ocikit {args:?} failed:\n{}", r.err);
    r
}

/// `verify --json [--deep] LOC`, expecting exit 0 or 1: the code and report.
fn verify_json(loc: &str, deep: bool) -> (i32, Value) {
    let mut args = vec!["verify", "--json", loc];
    if deep {
        args.push("--deep");
    }
    let r = run(&args);
    assert!(
        r.code == 0 || r.code == 1,
        "verify {args:?} exited {}: {}",
        r.code,
        r.err
    );
    let v: Value = serde_json::from_str(&r.out).unwrap_or_else(|e| {
        panic!(
            "verify {args:?} printed no JSON ({e}):\n{}\n{}",
            r.out, r.err
        )
    });
    assert_eq!(v["ok"], r.code == 0, "{v:#}");
    (r.code, v)
}

/// The error findings of one kind whose message contains `needle`.
fn error_findings<'a>(v: &'a Value, kind: &str, needle: &str) -> Vec<&'a Value> {
    v["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .filter(|f| f["kind"] == kind && f["severity"] == "error")
        .filter(|f| f["message"].as_str().unwrap_or("").contains(needle))
        .collect()
}

// ---------------------------------------------------------------- targets

/// Targets that a failing command must leave exactly as they were: an
/// existing layout, an existing archive file, and paths that do not exist.
struct Targets {
    dir: PathBuf,
    layout: PathBuf,
    layout_before: BTreeMap<String, String>,
    file: PathBuf,
    file_bytes: Vec<u8>,
}

const OLD_BYTES: &[u8] = b"the previous archive; must survive a failed export\n";

fn targets(base: &Path) -> Targets {
    let dir = base.join("targets");
    fs::create_dir_all(&dir).unwrap();
    let layout = dir.join("layout");
    build_simple(&layout);
    let file = dir.join("old.tar");
    fs::write(&file, OLD_BYTES).unwrap();
    Targets {
        layout_before: content_snapshot(&layout),
        dir,
        layout,
        file,
        file_bytes: OLD_BYTES.to_vec(),
    }
}

/// [`snapshot`] of a layout minus ocikit's writer infrastructure, which any
/// write (failed or not) may create: the lock file `.ocikit.lock` (holding the
/// last writer's pid) and
/// the temporary directory `.ocikit-tmp/` while it is empty (a file left in it
/// still shows up, as `.ocikit-tmp/NAME`).
fn content_snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut m = snapshot(root);
    m.remove(".ocikit.lock");
    if let Some(tmp) = m.remove(".ocikit-tmp") {
        assert_eq!(tmp, "dir");
    }
    m
}

/// `.ocikit-export-*` files left in `dir`.
fn stray_temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ocikit-export-"))
        .collect()
}

impl Targets {
    fn fresh(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn check(&self, after: &str) {
        // The contract: the layout as it was, plus at most garbage for gc —
        // blobs that were verified before the failure, each under its own
        // digest. Nothing else may change.
        let mut now = content_snapshot(&self.layout);
        now.retain(|k, v| {
            self.layout_before.contains_key(k)
                || !(k.starts_with("blobs/sha256/") && k.ends_with(v.as_str()))
        });
        assert_eq!(
            now, self.layout_before,
            "the target layout changed after {after} (beyond verified garbage blobs)"
        );
        assert_eq!(
            fs::read(&self.file).unwrap(),
            self.file_bytes,
            "the existing archive file changed after {after}"
        );
        assert_eq!(
            stray_temps(&self.dir),
            Vec::<String>::new(),
            "temporary files left after {after}"
        );
    }
}

/// Every way to read a bad archive fails with exit 2 and the needles, and
/// touches no target: `import` into an existing layout, `export` onto an
/// existing file and onto a new one. When the archive cannot even be opened
/// (`unreadable`), `ls` and `cat` fail too and `import` into a new directory
/// does not create it. Returns the import's error line.
fn assert_rejected(src: &str, base: &Path, needles: &[&str], unreadable: bool) -> String {
    let t = targets(base);
    let layout = s(&t.layout);
    let line = fails(&["import", src, &layout], needles);
    t.check(&format!("import {src}"));
    fails(&["import", src, &format!("{layout}:newtag")], needles);
    t.check(&format!("import {src} :newtag"));
    fails(&["copy", src, &layout], needles);
    t.check(&format!("copy {src}"));
    fails(&["export", src, &s(&t.file)], needles);
    t.check(&format!("export {src} onto an existing file"));
    let new_file = t.fresh("new.tar");
    fails(&["export", src, &s(&new_file)], needles);
    assert!(!new_file.exists(), "a failed export created {new_file:?}");
    t.check(&format!("export {src} to a new file"));
    let new_gz = t.fresh("new.tar.gz");
    fails(
        &["export", "--format", "docker-archive", src, &s(&new_gz)],
        needles,
    );
    assert!(!new_gz.exists(), "a failed export created {new_gz:?}");
    t.check(&format!("export {src} to a new docker-archive"));
    if unreadable {
        let fresh = t.fresh("fresh-layout");
        fails(&["import", src, &s(&fresh)], needles);
        assert!(!fresh.exists(), "a failed import created {fresh:?}");
        fails(&["ls", src], needles);
        fails(&["ls", "--json", src], needles);
        fails(&["inspect", src], needles);
        fails(&["cat", src, "index"], needles);
    }
    t.check("everything");
    line
}

// ---------------------------------------------------------------- archives

/// The demo's `legacy` image: manifest, config and layer digests.
struct Legacy {
    manifest: String,
    config: String,
    config_bytes: Vec<u8>,
    layers: Vec<String>,
}

fn legacy() -> Legacy {
    let entry = index_entry(&demo(), "legacy");
    let manifest = entry["digest"].as_str().unwrap().to_string();
    let m: Value = serde_json::from_slice(&blob_bytes(&demo(), &manifest)).unwrap();
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    Legacy {
        config_bytes: blob_bytes(&demo(), &config),
        config,
        layers: m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect(),
        manifest,
    }
}

/// `blobs/sha256/<hex>` for a digest.
fn member_of(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap();
    format!("blobs/{alg}/{hex}")
}

fn hex_of(digest: &str) -> &str {
    digest.split_once(':').unwrap().1
}

fn demo_at(reference: &str) -> String {
    format!("{}:{reference}", s(&demo()))
}

/// `ocikit export DEMO:legacy DIR/NAME` (an oci-archive unless the name says
/// otherwise).
fn export_legacy(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    run_ok(&["export", &demo_at("legacy"), &s(&p)]);
    p
}

/// `ocikit export DEMO:legacy docker-archive:DIR/NAME:demo/app:1.0`.
fn export_legacy_docker(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    run_ok(&[
        "export",
        &demo_at("legacy"),
        &format!("docker-archive:{}:demo/app:1.0", s(&p)),
    ]);
    p
}

/// One tar member, as read or to be written.
#[derive(Clone, Debug)]
struct Member {
    name: Vec<u8>,
    kind: tar::EntryType,
    data: Vec<u8>,
    link: Vec<u8>,
}

fn file_member(name: &str, data: &[u8]) -> Member {
    Member {
        name: name.as_bytes().to_vec(),
        kind: tar::EntryType::Regular,
        data: data.to_vec(),
        link: Vec::new(),
    }
}

fn link_member(name: &str, kind: tar::EntryType, target: &str) -> Member {
    Member {
        name: name.as_bytes().to_vec(),
        kind,
        data: Vec::new(),
        link: target.as_bytes().to_vec(),
    }
}

/// The members of an uncompressed tar, in order.
fn read_members(bytes: &[u8]) -> Vec<Member> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            Member {
                name: e.path_bytes().into_owned(),
                kind: e.header().entry_type(),
                data,
                link: e
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// A tar of `members` with their names written verbatim into the headers (the
/// `tar` crate refuses to write `..` and absolute names itself).
fn write_members(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(m.kind);
        h.set_mode(if m.kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(m.data.len() as u64);
        assert!(m.name.len() <= 100 && m.link.len() <= 100);
        let raw = h.as_mut_bytes();
        raw[..100].fill(0);
        raw[..m.name.len()].copy_from_slice(&m.name);
        raw[157..257].fill(0);
        raw[157..157 + m.link.len()].copy_from_slice(&m.link);
        h.set_cksum();
        b.append(&h, &m.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn name_is(m: &Member, name: &str) -> bool {
    m.name == name.as_bytes()
}

/// Rewrites the tar at `src` into `dst` through `edit`.
fn rewrite(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<Member>)) -> PathBuf {
    let mut ms = read_members(&fs::read(src).unwrap());
    edit(&mut ms);
    fs::write(dst, write_members(&ms)).unwrap();
    dst.to_path_buf()
}

/// (header offset, data offset, size) of the member `name` in a tar.
fn locate(bytes: &[u8], name: &str) -> (u64, u64, u64) {
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path_bytes().as_ref() == name.as_bytes() {
            return (e.raw_header_position(), e.raw_file_position(), e.size());
        }
    }
    panic!("no member {name}");
}

/// The bytes, same length, with the first `from` replaced by `to`.
fn replace_once(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let pos = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    let mut out = bytes.to_vec();
    out[pos..pos + to.len()].copy_from_slice(to);
    out
}

// ---------------------------------------------------------------- truncation

#[test]
fn archive_cut_inside_a_header() {
    let t = tempfile::tempdir().unwrap();
    let lg = legacy();
    let x = export_legacy(t.path(), "x.tar");
    let bytes = fs::read(&x).unwrap();
    let (header, _, _) = locate(&bytes, &member_of(&lg.config));
    assert!(header > 0);
    let cut = t.path().join("cut.tar");
    fs::write(&cut, &bytes[..header as usize + 100]).unwrap();
    let line = assert_rejected(
        &s(&cut),
        t.path(),
        &["cut.tar", "truncated or damaged"],
        true,
    );
    assert!(!line.contains("x.tar"), "{line}");
    // verify reports it as a finding of the archive.
    let (c, v) = verify_json(&s(&cut), false);
    assert_eq!(c, 1, "{v:#}");
    assert!(
        !error_findings(&v, "malformed", "truncated or damaged").is_empty(),
        "{v:#}"
    );
}

#[test]
fn archive_with_a_damaged_header() {
    let t = tempfile::tempdir().unwrap();
    let lg = legacy();
    let x = export_legacy(t.path(), "x.tar");
    let bytes = fs::read(&x).unwrap();
    let (header, _, _) = locate(&bytes, &member_of(&lg.config));
    // One bit of the member's name flipped: its checksum no longer matches.
    let mut bad = bytes.clone();
    bad[header as usize + 20] ^= 1;
    let dst = t.path().join("bad-sum.tar");
    fs::write(&dst, &bad).unwrap();
    assert_rejected(
        &s(&dst),
        t.path(),
        &["bad-sum.tar", "truncated or damaged", "checksum"],
        true,
    );
    // The first header damaged: not recognisable as a tar at all.
    let mut bad = bytes.clone();
    bad[20] ^= 1;
    let dst = t.path().join("bad-first.tar");
    fs::write(&dst, &bad).unwrap();
    assert_rejected(
        &s(&dst),
        t.path(),
        &["bad-first.tar", "not a tar archive"],
        true,
    );
}

#[test]
fn archive_cut_inside_a_member() {
    let t = tempfile::tempdir().unwrap();
    let lg = legacy();
    let x = export_legacy(t.path(), "x.tar");
    let bytes = fs::read(&x).unwrap();
    // The first layer's data, and the last member's (index.json and oci-layout
    // sort last, so the cut also loses them).
    for digest in [&lg.layers[0], &lg.config] {
        let name = member_of(digest);
        let (_, data, size) = locate(&bytes, &name);
        let cut = t.path().join("cut.tar");
        fs::write(&cut, &bytes[..(data + size / 2) as usize]).unwrap();
        assert_rejected(
            &s(&cut),
            t.path(),
            &["cut.tar", "truncated or damaged", hex_of(digest)],
            true,
        );
        let (c, v) = verify_json(&s(&cut), true);
        assert_eq!(c, 1, "{v:#}");
        assert!(
            !error_findings(&v, "malformed", hex_of(digest)).is_empty(),
            "{v:#}"
        );
    }
}

#[test]
fn compressed_archive_cut_short() {
    let t = tempfile::tempdir().unwrap();
    for (name, what) in [("x.tar.gz", "gzip"), ("x.tar.zst", "zstd")] {
        let x = export_legacy(t.path(), name);
        let bytes = fs::read(&x).unwrap();
        // The export really is compressed (and readable whole).
        assert_eq!(
            &bytes[..2],
            if what == "gzip" {
                &[0x1f, 0x8b][..]
            } else {
                &[0x28, 0xb5][..]
            }
        );
        run_ok(&["ls", &s(&x)]);
        let cut = t.path().join(format!("cut-{name}"));
        fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let line = assert_rejected(
            &s(&cut),
            t.path(),
            &[&format!("cut-{name}"), "cannot be decompressed"],
            true,
        );
        assert!(line.contains(what), "{line}");
    }
    // A gzip stream missing only its 8-byte trailer (CRC and length): every
    // tar byte is there, but the stream is incomplete.
    let x = export_legacy(t.path(), "y.tar.gz");
    let bytes = fs::read(&x).unwrap();
    let cut = t.path().join("no-trailer.tar.gz");
    fs::write(&cut, &bytes[..bytes.len() - 8]).unwrap();
    assert_rejected(
        &s(&cut),
        t.path(),
        &["no-trailer.tar.gz", "cannot be decompressed"],
        true,
    );
}

// ---------------------------------------------------------------- names and links

#[test]
fn member_names_outside_the_archive() {
    let t = tempfile::tempdir().unwrap();
    let x = export_legacy(t.path(), "x.tar");
    let cwd = t.path().join("work/deeper");
    fs::create_dir_all(&cwd).unwrap();
    for (n, bad, needle) in [
        (0, "../evil", "contains '..'"),
        (1, "blobs/../../evil", "contains '..'"),
        (2, "/etc/ocikit-evil-test", "absolute path"),
    ] {
        let dst = t.path().join(format!("bad-name-{n}.tar"));
        rewrite(&x, &dst, |ms| {
            let at = ms.iter().position(|m| name_is(m, "index.json")).unwrap();
            ms.insert(at, file_member(bad, b"written outside\n"));
        });
        assert_rejected(&s(&dst), t.path(), &[&format!("{bad:?}"), needle], true);
        // Run from a directory where "../evil" would land inside the tempdir.
        let r = run_with(
            &["import", &s(&dst), &s(&t.path().join("from-cwd"))],
            &[],
            Some(&cwd),
        );
        assert_error(&[], &r, &[bad]);
        assert!(!t.path().join("work/evil").exists());
        assert!(!t.path().join("evil").exists());
        assert!(!t.path().join("from-cwd").exists());
    }
    assert!(!Path::new("/etc/ocikit-evil-test").exists());
}

#[test]
fn link_members_pointing_outside_the_archive() {
    let t = tempfile::tempdir().unwrap();
    let lg = legacy();
    let x = export_legacy(t.path(), "x.tar");
    let config = member_of(&lg.config);
    for (n, kind, target) in [
        (0, tar::EntryType::Symlink, "../../../etc/passwd"),
        (1, tar::EntryType::Symlink, "/etc/passwd"),
        (2, tar::EntryType::Link, "../etc/passwd"),
        (3, tar::EntryType::Link, "/etc/passwd"),
    ] {
        let dst = t.path().join(format!("link-{n}.tar"));
        rewrite(&x, &dst, |ms| {
            let at = ms.iter().position(|m| name_is(m, &config)).unwrap();
            ms[at] = link_member(&config, kind, target);
        });
        assert_rejected(
            &s(&dst),
            t.path(),
            &["points outside the archive", &config, target],
            true,
        );
        let r = run(&["verify", &s(&dst)]);
        assert_ne!(r.code, 0, "verify accepted a link outside the archive");
    }

    // Links that stay inside but lead nowhere useful: a loop, a directory, a
    // missing member.
    for (n, edit, needle) in [
        (0, "loop", "loop"),
        (1, "dir", "is a directory"),
        (2, "dangling", "lacks blob"),
    ] {
        let dst = t.path().join(format!("link-inside-{n}.tar"));
        rewrite(&x, &dst, |ms| {
            let at = ms.iter().position(|m| name_is(m, &config)).unwrap();
            match edit {
                "loop" => {
                    ms[at] = link_member(&config, tar::EntryType::Symlink, "../../a");
                    ms.push(link_member("a", tar::EntryType::Symlink, "b"));
                    ms.push(link_member("b", tar::EntryType::Symlink, "a"));
                }
                "dir" => {
                    ms[at] = link_member(&config, tar::EntryType::Symlink, "..");
                }
                _ => {
                    ms[at] = link_member(&config, tar::EntryType::Link, "no/such/member");
                }
            }
        });
        let src = s(&dst);
        let tg = targets(t.path());
        let line = fails(&["import", &src, &s(&tg.layout)], &[needle]);
        assert!(
            line.contains(&lg.config) || line.contains(&config),
            "{line}"
        );
        tg.check(&format!("import {src}"));
        fails(&["export", &src, &s(&tg.file)], &[needle]);
        tg.check(&format!("export {src}"));
        let r = run(&["verify", &src]);
        assert_eq!(r.code, 1, "verify {src}: {}{}", r.out, r.err);
    }

    // Control: links that stay inside the archive are followed.
    let dst = t.path().join("link-inside.tar");
    rewrite(&x, &dst, |ms| {
        let at = ms.iter().position(|m| name_is(m, &config)).unwrap();
        ms[at] = link_member(&config, tar::EntryType::Symlink, "../../config-copy.json");
        ms.push(file_member("config-copy.json", &lg.config_bytes));
    });
    let l = t.path().join("inside-layout");
    run_ok(&["import", &s(&dst), &s(&l)]);
    assert_eq!(blob_bytes(&l, &lg.config), lg.config_bytes);
    let (c, v) = verify_json(&s(&l), true);
    assert_eq!(c, 0, "{v:#}");
}

// ---------------------------------------------------------------- duplicates

#[test]
fn duplicate_members() {
    let t = tempfile::tempdir().unwrap();
    let lg = legacy();
    let x = export_legacy(t.path(), "x.tar");
    let config = member_of(&lg.config);

    // Same name, different content (the right bytes first, then others; and
    // the other way round): neither copy is chosen silently.
    let other = replace_once(&lg.config_bytes, b"amd64", b"arm64");
    for (n, first, second) in [
        (0, lg.config_bytes.clone(), other.clone()),
        (1, other.clone(), lg.config_bytes.clone()),
        (2, lg.config_bytes.clone(), b"short".to_vec()),
    ] {
        let dst = t.path().join(format!("dup-{n}.tar"));
        rewrite(&x, &dst, |ms| {
            let at = ms.iter().position(|m| name_is(m, &config)).unwrap();
            ms[at] = file_member(&config, &first);
            ms.push(file_member(&config, &second));
        });
        assert_rejected(&s(&dst), t.path(), &["appears twice", &config], true);
    }
    // A file and a directory of one name.
    let dst = t.path().join("dup-dir.tar");
    rewrite(&x, &dst, |ms| {
        ms.push(Member {
            name: format!("{config}/").into_bytes(),
            kind: tar::EntryType::Directory,
            data: Vec::new(),
            link: Vec::new(),
        });
    });
    assert_rejected(&s(&dst), t.path(), &["appears twice", &config], true);

    // Identical duplicates (also spelled `./name`) are harmless and accepted.
    let dst = t.path().join("dup-same.tar");
    rewrite(&x, &dst, |ms| {
        ms.push(file_member(&config, &lg.config_bytes));
        ms.push(file_member(&format!("./{config}"), &lg.config_bytes));
    });
    let l = t.path().join("same-layout");
    run_ok(&["import", &s(&dst), &s(&l)]);
    assert_eq!(blob_bytes(&l, &lg.config), lg.config_bytes);
    assert_eq!(index_tags(&l), vec!["legacy"]);
    let (c, v) = verify_json(&s(&dst), true);
    assert_eq!(c, 0, "{v:#}");
}

// ---------------------------------------------------------------- docker-archive metadata

/// The demo's legacy image as a docker-archive with only `manifest.json` (no
/// OCI view), as skopeo and Docker before 25 write them.
fn manifest_json_only(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<Member>)) -> PathBuf {
    let lg = legacy();
    let manifest = member_of(&lg.manifest);
    rewrite(src, dst, |ms| {
        ms.retain(|m| {
            !name_is(m, "index.json") && !name_is(m, "oci-layout") && !name_is(m, &manifest)
        });
        edit(ms);
    })
}

#[test]
fn docker_archive_naming_missing_files() {
    let t = tempfile::tempdir().unwrap();
    let lg = legacy();
    let d = export_legacy_docker(t.path(), "d.tar");
    let config = member_of(&lg.config);
    let layer = member_of(&lg.layers[1]);

    // Controls: both forms read, with the config digest and tag kept.
    let ok = manifest_json_only(&d, &t.path().join("legacy-ok.tar"), |_| {});
    for src in [&d, &ok] {
        let l = t
            .path()
            .join(format!("ok-{}", src.file_name().unwrap().to_string_lossy()));
        run_ok(&["import", &s(src), &s(&l)]);
        let cfg = run_ok(&["cat", &format!("{}:1.0", s(&l)), "config"]);
        assert_eq!(cfg.out.as_bytes(), &lg.config_bytes[..]);
        let (c, v) = verify_json(&s(&l), true);
        assert_eq!(c, 0, "{v:#}");
    }

    // manifest.json names a config or a layer the archive lacks.
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "no config (dual format)",
            rewrite(&d, &t.path().join("dual-no-config.tar"), |ms| {
                ms.retain(|m| !name_is(m, &config))
            }),
            &config,
        ),
        (
            "no config (manifest.json only)",
            manifest_json_only(&d, &t.path().join("legacy-no-config.tar"), |ms| {
                ms.retain(|m| !name_is(m, &config))
            }),
            &config,
        ),
        (
            "no layer (manifest.json only)",
            manifest_json_only(&d, &t.path().join("legacy-no-layer.tar"), |ms| {
                ms.retain(|m| !name_is(m, &layer))
            }),
            &layer,
        ),
    ];
    // Dual format: the OCI view is whole, but manifest.json (what `docker
    // load` before 25 reads) names a layer file the archive lacks. Readers
    // would see different images: refused, not read from the OCI view alone.
    let missing = "0123456789abcdef/layer.tar";
    let dual_missing_layer = rewrite(&d, &t.path().join("dual-missing-layer.tar"), |ms| {
        let at = ms.iter().position(|m| name_is(m, "manifest.json")).unwrap();
        let text = String::from_utf8(ms[at].data.clone()).unwrap();
        assert!(text.contains(&layer));
        ms[at].data = text.replace(&layer, missing).into_bytes();
    });
    let cases: Vec<(&str, PathBuf, &str)> = cases
        .into_iter()
        .chain([
            (
                "manifest.json names a missing layer (dual format)",
                dual_missing_layer,
                missing,
            ),
            (
                "no layer (dual format)",
                rewrite(&d, &t.path().join("dual-no-layer.tar"), |ms| {
                    ms.retain(|m| !name_is(m, &layer))
                }),
                hex_of(&lg.layers[1]),
            ),
        ])
        .collect();
    for (what, src, culprit) in &cases {
        eprintln!("case: {what}");
        assert_rejected(&s(src), t.path(), &[culprit, "does not exist"], true);
        let r = run(&["verify", &s(src)]);
        assert_eq!(r.code, 1, "verify {what}: {}{}", r.out, r.err);
        assert!(r.out.contains(culprit), "verify {what}: {}", r.out);
    }

    // manifest.json names a file outside the archive.
    let escape = manifest_json_only(&d, &t.path().join("legacy-escape.tar"), |ms| {
        let at = ms.iter().position(|m| name_is(m, "manifest.json")).unwrap();
        let text = String::from_utf8(ms[at].data.clone()).unwrap();
        ms[at].data = text.replace(&config, "../../../etc/passwd").into_bytes();
    });
    assert_rejected(&s(&escape), t.path(), &["../../../etc/passwd"], true);
}

// ---------------------------------------------------------------- wrong content

#[test]
fn config_with_wrong_content() {
    let t = tempfile::tempdir().unwrap();
    let lg = legacy();
    let x = export_legacy(t.path(), "x.tar");
    let config = member_of(&lg.config);
    let other = replace_once(&lg.config_bytes, b"amd64", b"arm64");
    assert_eq!(other.len(), lg.config_bytes.len());
    let bad = rewrite(&x, &t.path().join("bad-config.tar"), |ms| {
        let at = ms.iter().position(|m| name_is(m, &config)).unwrap();
        ms[at].data = other.clone();
    });
    // The archive opens; the copy fails when the config's bytes are checked.
    assert_rejected(&s(&bad), t.path(), &[&lg.config, "wrong content"], false);
    // A new layout target: nothing but (at most) an empty layout, and no tag.
    let fresh = t.path().join("fresh");
    fails(
        &["import", &s(&bad), &s(&fresh)],
        &[&lg.config, "wrong content"],
    );
    if fresh.exists() {
        assert!(
            index_tags(&fresh).is_empty(),
            "a failed import tagged an image"
        );
        assert!(
            !blob_path(&fresh, &serde_json::json!({"digest": lg.config})).exists(),
            "the bad config was stored"
        );
    }
    // cat checks what it prints.
    fails(
        &["cat", &format!("{}:legacy", s(&bad)), "config"],
        &[&lg.config],
    );
    fails(
        &["blob", &s(&bad), &lg.config],
        &[&lg.config, "wrong content"],
    );
    // verify: exit 1, a digest-mismatch about the config.
    for deep in [false, true] {
        let (c, v) = verify_json(&s(&bad), deep);
        assert_eq!(c, 1, "{v:#}");
        let f: Vec<&Value> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "digest-mismatch" && f["digest"] == lg.config.as_str())
            .collect();
        assert_eq!(f.len(), 1, "{v:#}");
        assert_eq!(f[0]["severity"], "error");
    }
    let r = run(&["verify", &s(&bad)]);
    assert_eq!(r.code, 1);
    assert!(r.out.contains("digest-mismatch"), "{}", r.out);
}

#[test]
fn layer_with_wrong_diff_id_is_found_by_deep_verify() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("src");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let layer_tar = tar(&[file("hello.txt", "hello\n")]);
    let (desc, right) = put_layer(&root, OCI_GZIP, &layer_tar);
    let wrong = digest_of(b"not the layer");
    let manifest = put_image(
        &root,
        "amd64",
        None,
        &[(desc.clone(), wrong.clone())],
        false,
    );
    let mut entry = manifest.clone();
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "bad"});
    write_layout_files(
        &root,
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
    );
    let src = format!("{}:bad", s(&root));
    for (name, target) in [
        ("o.tar", s(&t.path().join("o.tar"))),
        (
            "d.tar",
            format!("docker-archive:{}:demo/bad:1", s(&t.path().join("d.tar"))),
        ),
        ("o.tar.zst", s(&t.path().join("o.tar.zst"))),
    ] {
        run_ok(&["export", &src, &target]);
        let archive = s(&t.path().join(name));
        let (c, v) = verify_json(&archive, true);
        assert_eq!(c, 1, "{name}: {v:#}");
        let f = error_findings(&v, "diffid-mismatch", "");
        assert_eq!(f.len(), 1, "{name}: {v:#}");
        let msg = f[0]["message"].as_str().unwrap();
        assert!(
            msg.contains(hex_of(&wrong)) || msg.contains(hex_of(&right)),
            "{name}: the finding should name a diff_id: {msg}"
        );
        assert_eq!(f[0]["digest"], desc["digest"], "{name}: {v:#}");
        let r = run(&["verify", "--deep", &archive]);
        assert_eq!(r.code, 1);
        assert!(r.out.contains("diffid-mismatch"), "{}", r.out);
    }
}

// ---------------------------------------------------------------- not archives

/// A zip holding one stored file (local header, data, central directory).
fn zip_bytes(name: &str, data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let crc = crc.sum();
    let mut z = Vec::new();
    let le16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let le32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    z.extend_from_slice(b"PK\x03\x04");
    le16(&mut z, 10); // version needed
    le16(&mut z, 0); // flags
    le16(&mut z, 0); // stored
    le16(&mut z, 0); // time
    le16(&mut z, 0); // date
    le32(&mut z, crc);
    le32(&mut z, data.len() as u32);
    le32(&mut z, data.len() as u32);
    le16(&mut z, name.len() as u16);
    le16(&mut z, 0);
    z.extend_from_slice(name.as_bytes());
    z.extend_from_slice(data);
    let central = z.len() as u32;
    z.extend_from_slice(b"PK\x01\x02");
    le16(&mut z, 20);
    le16(&mut z, 10);
    for _ in 0..4 {
        le16(&mut z, 0); // flags, method, time, date
    }
    le32(&mut z, crc);
    le32(&mut z, data.len() as u32);
    le32(&mut z, data.len() as u32);
    le16(&mut z, name.len() as u16);
    for _ in 0..4 {
        le16(&mut z, 0); // extra, comment, disk, internal attributes
    }
    le32(&mut z, 0); // external attributes
    le32(&mut z, 0); // local header offset
    z.extend_from_slice(name.as_bytes());
    let central_len = z.len() as u32 - central;
    z.extend_from_slice(b"PK\x05\x06");
    le16(&mut z, 0);
    le16(&mut z, 0);
    le16(&mut z, 1);
    le16(&mut z, 1);
    le32(&mut z, central_len);
    le32(&mut z, central);
    le16(&mut z, 0);
    z
}

/// Deterministic noise (xorshift64).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn files_that_are_not_tar_archives() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    fs::write(p("image.zip"), zip_bytes("index.json", &[b'x'; 700])).unwrap();
    fs::write(p("empty.zip"), zip_bytes("a", b"")).unwrap();
    let random = noise(8192);
    assert!(random[0] != 0x1f && random[0] != 0x28);
    fs::write(p("random.bin"), &random).unwrap();
    fs::write(p("short.bin"), b"hello").unwrap();
    fs::write(p("empty.tar"), b"").unwrap();
    fs::write(p("noise.tar.gz"), gzip(&noise(4096))).unwrap();
    fs::write(p("json.tar"), br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
    fs::create_dir_all(p("adir.tar")).unwrap();
    let adir = s(&p("adir.tar"));
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            s(&p("image.zip")),
            vec!["image.zip", "zip", "not a tar archive"],
        ),
        (
            s(&p("empty.zip")),
            vec!["empty.zip", "zip", "not a tar archive"],
        ),
        (
            format!("oci-archive:{}", s(&p("image.zip"))),
            vec!["image.zip", "zip", "not a tar archive"],
        ),
        (
            format!("docker-archive:{}", s(&p("image.zip"))),
            vec!["image.zip", "zip", "not a tar archive"],
        ),
        (s(&p("random.bin")), vec!["random.bin", "not a tar archive"]),
        (s(&p("short.bin")), vec!["short.bin", "not a tar archive"]),
        (s(&p("json.tar")), vec!["json.tar", "not a tar archive"]),
        (
            s(&p("noise.tar.gz")),
            vec!["noise.tar.gz", "not a tar", "compressed"],
        ),
        (s(&p("empty.tar")), vec!["empty.tar", "empty"]),
        (
            format!("oci-archive:{}", s(&p("empty.tar"))),
            vec!["empty.tar", "empty"],
        ),
        (
            format!("docker-archive:{}", s(&p("empty.tar"))),
            vec!["empty.tar", "empty"],
        ),
        (
            format!("oci-archive:{adir}"),
            vec![&adir, "directory", "not a tar archive"],
        ),
        (
            format!("docker-archive:{adir}"),
            vec![&adir, "directory", "not a tar archive"],
        ),
    ];
    for (src, needles) in &cases {
        assert_rejected(src, t.path(), needles, true);
        let r = run(&["verify", src]);
        assert_error(&["verify", src], &r, needles);
    }
    // The directory and files are untouched.
    assert_eq!(fs::read_dir(p("adir.tar")).unwrap().count(), 0);
    assert_eq!(fs::read(p("random.bin")).unwrap(), random);
}

// ---------------------------------------------------------------- bombs

/// Raw deflate of `input` through `c`, up to the `flush` point.
fn deflate(c: &mut flate2::Compress, input: &[u8], flush: flate2::FlushCompress) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 64 + 4096);
    let mut pos = 0;
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity());
        }
        let before = c.total_in();
        let status = c.compress_vec(&input[pos..], &mut out, flush).unwrap();
        pos += (c.total_in() - before) as usize;
        let room_left = out.len() < out.capacity();
        let done = match flush {
            flate2::FlushCompress::Finish => status == flate2::Status::StreamEnd,
            _ => pos == input.len() && room_left,
        };
        if done {
            return out;
        }
    }
}

/// Writes a gzip bomb: one gzip stream (a single member) of a tar holding one
/// member `blobs/sha256/zeros` of `size` zero bytes. It is compressed as it is
/// written, one MiB at a time, and never held in memory: once the deflate
/// window is all zeros, a sync-flushed MiB of zeros compresses to the same
/// self-contained, byte-aligned blocks, which decode to a MiB of zeros after
/// any MiB of zeros, so those bytes are written again for every further MiB.
fn write_bomb(path: &Path, size: u64) {
    const MIB: usize = 1 << 20;
    assert!(size >= 2 * MIB as u64);
    let mut h = tar::Header::new_ustar();
    h.set_path("blobs/sha256/zeros").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    let zeros = vec![0u8; MIB];
    let mut zeros_crc = flate2::Crc::new();
    zeros_crc.update(&zeros);
    let chunks = size / MIB as u64;
    // What follows the whole MiBs: the rest of the data, padding to a block,
    // and the two end-of-archive blocks, all zeros.
    let tail = (size % MIB as u64) + (512 - size % 512) % 512 + 1024;

    let mut out = std::io::BufWriter::new(fs::File::create(path).unwrap());
    // gzip header: deflate, no flags, mtime 0, unknown OS.
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])
        .unwrap();
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut crc = flate2::Crc::new();
    let mut first = h.as_bytes().to_vec();
    first.extend_from_slice(&zeros);
    crc.update(&first);
    out.write_all(&deflate(&mut c, &first, flate2::FlushCompress::Sync))
        .unwrap();
    let again = deflate(&mut c, &zeros, flate2::FlushCompress::Sync);
    for _ in 1..chunks {
        out.write_all(&again).unwrap();
        crc.combine(&zeros_crc);
    }
    let rest = vec![0u8; tail as usize];
    crc.update(&rest);
    out.write_all(&deflate(&mut c, &rest, flate2::FlushCompress::Finish))
        .unwrap();
    out.write_all(&crc.sum().to_le_bytes()).unwrap();
    out.write_all(&crc.amount().to_le_bytes()).unwrap();
    out.flush().unwrap();
}

#[test]
fn decompression_bomb_is_refused_early() {
    let t = tempfile::tempdir().unwrap();
    let bomb = t.path().join("bomb.tar.gz");
    let size: u64 = 300 << 20;
    write_bomb(&bomb, size);
    let len = fs::metadata(&bomb).unwrap().len();
    assert!(
        len < 4 << 20,
        "the bomb should be small on disk: {len} bytes"
    );
    // A valid gzip stream, CRC and length included, for gzip itself.
    if have("gzip") {
        let o = Command::new("gzip").arg("-t").arg(&bomb).output().unwrap();
        assert!(o.status.success(), "gzip -t: {}", stderr(&o));
        let o = Command::new("gzip").arg("-l").arg(&bomb).output().unwrap();
        let expected = (512 + size + 1024).to_string();
        assert!(
            stdout(&o).split_whitespace().any(|w| w == expected),
            "gzip -l should report {expected} bytes: {}",
            stdout(&o)
        );
    }
    let tmp = t.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let tmp_s = s(&tmp);
    let env = [
        ("OCIKIT_MAX_DECOMPRESSED", "10000000"),
        ("TMPDIR", tmp_s.as_str()),
    ];
    let tg = targets(t.path());
    let layout = s(&tg.layout);
    let new_file = s(&tg.fresh("new.tar"));
    let bomb_s = s(&bomb);
    let runs: Vec<Vec<&str>> = vec![
        vec!["import", &bomb_s, &layout],
        vec!["ls", &bomb_s],
        vec!["export", &bomb_s, &new_file],
        vec!["export", &bomb_s, tg.file.to_str().unwrap()],
    ];
    for args in &runs {
        let start = Instant::now();
        let r = run_with(args, &env, None);
        let took = start.elapsed();
        assert_error(
            args,
            &r,
            &[
                "bomb.tar.gz",
                "decompresses to more than",
                "10000000",
                "OCIKIT_MAX_DECOMPRESSED",
            ],
        );
        assert!(
            took < Duration::from_secs(20),
            "ocikit {args:?} took {took:?}: it should stop at the limit"
        );
        let left: Vec<_> = fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            left.is_empty(),
            "ocikit {args:?} left temporary files: {left:?}"
        );
        tg.check(&format!("{args:?}"));
        assert!(!tg.fresh("new.tar").exists());
    }
    // verify reports it (exit 1, a finding), also without leftovers.
    let r = run_with(&["verify", "--json", &bomb_s], &env, None);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(r.out.contains("decompresses to more than"), "{}", r.out);
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);

    // The same in zstd, compressed by the zstd library as it is generated.
    let zbomb = t.path().join("bomb.tar.zst");
    {
        let f = fs::File::create(&zbomb).unwrap();
        let mut z = zstd::stream::write::Encoder::new(f, 1).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("blobs/sha256/zeros").unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        z.write_all(h.as_bytes()).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..(size >> 20) {
            z.write_all(&chunk).unwrap();
        }
        z.write_all(&[0u8; 1024]).unwrap();
        z.finish().unwrap();
    }
    assert!(fs::metadata(&zbomb).unwrap().len() < 4 << 20);
    let zbomb_s = s(&zbomb);
    for args in [
        vec!["import", zbomb_s.as_str(), layout.as_str()],
        vec!["ls", &zbomb_s],
    ] {
        let start = Instant::now();
        let r = run_with(&args, &env, None);
        assert_error(
            &args,
            &r,
            &["bomb.tar.zst", "decompresses to more than 10000000 bytes"],
        );
        assert!(start.elapsed() < Duration::from_secs(20));
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        tg.check(&format!("{args:?}"));
    }

    // The limit, not the file, decides: bombs built the same way, just under
    // and just over the same limit. Under it the archive is read whole (so the
    // stream is a valid gzip of a valid tar, trailer included) and found not
    // to be an image archive; over it, refused.
    for (mib, readable) in [(8u64, true), (12, false)] {
        let small = t.path().join(format!("bomb-{mib}.tar.gz"));
        write_bomb(&small, mib << 20);
        let small_s = s(&small);
        let r = run_with(&["ls", &small_s], &env, None);
        if readable {
            assert_error(&[], &r, &[&small_s, "not an image archive"]);
        } else {
            assert_error(
                &[],
                &r,
                &[&small_s, "decompresses to more than 10000000 bytes"],
            );
        }
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }
    // Independently of ocikit: the small bomb decodes to the tar described.
    let mut dec =
        flate2::read::GzDecoder::new(fs::File::open(t.path().join("bomb-8.tar.gz")).unwrap());
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut dec, &mut all).unwrap();
    assert_eq!(all.len(), 512 + (8 << 20) + 1024);
    let ms = read_members(&all);
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].name, b"blobs/sha256/zeros");
    assert_eq!(ms[0].data.len(), 8 << 20);
    assert!(ms[0].data.iter().all(|b| *b == 0));
}

// ---------------------------------------------------------------- references

#[test]
fn reference_that_matches_nothing_lists_what_exists() {
    let t = tempfile::tempdir().unwrap();
    let x = export_legacy(t.path(), "x.tar");
    let tg = targets(t.path());
    let line = fails(
        &["import", &format!("{}:nope", s(&x)), &s(&tg.layout)],
        &["x.tar", "nope", "legacy"],
    );
    assert!(line.contains("available"), "{line}");
    tg.check("import x.tar:nope");

    // Two images: both are listed.
    let all = t.path().join("all.tar");
    run_ok(&["export", &demo_at("1.0"), &demo_at("legacy"), &s(&all)]);
    fails(
        &["import", &format!("{}:nope", s(&all)), &s(&tg.layout)],
        &["nope", "1.0", "legacy"],
    );
    let fresh = tg.fresh("fresh");
    fails(
        &["import", &format!("{}:nope", s(&all)), &s(&fresh)],
        &["nope", "1.0", "legacy"],
    );
    assert!(!fresh.exists());
    fails(
        &["export", &format!("{}:nope", s(&all)), &s(&tg.file)],
        &["nope", "1.0", "legacy"],
    );
    tg.check("export all.tar:nope");

    // A docker-archive: the name that exists is listed.
    let d = export_legacy_docker(t.path(), "d.tar");
    fails(
        &["import", &format!("{}:demo/app:2.0", s(&d)), &s(&tg.layout)],
        &["demo/app:2.0", "available", "1.0"],
    );
    tg.check("import d.tar:demo/app:2.0");
}

// ---------------------------------------------------------------- export failures

#[test]
fn failed_export_keeps_the_existing_file() {
    let t = tempfile::tempdir().unwrap();
    let tg = targets(t.path());
    // A good archive at the target: a failed export must not touch it.
    run_ok(&["export", &demo_at("legacy"), &s(&tg.file)]);
    let good = fs::read(&tg.file).unwrap();
    let tg = Targets {
        file_bytes: good,
        ..tg
    };

    // 1. The source ref does not exist (fails while planning).
    fails(&["export", &demo_at("nope"), &s(&tg.file)], &["nope"]);
    tg.check("export of a missing ref");

    // 2. A source blob has the wrong content (fails half-way through writing):
    // the amd64 image's own zstd layer, which no other image shares.
    let lg = legacy();
    let (_d, copy) = demo_copy();
    let amd: Value = serde_json::from_slice(
        &run_ok(&[
            "cat",
            &demo_at("1.0"),
            "manifest",
            "--platform",
            "linux/amd64",
        ])
        .out
        .into_bytes(),
    )
    .unwrap();
    let layer = amd["layers"][2]["digest"].as_str().unwrap().to_string();
    let layer = &layer;
    let p = copy.join(member_of(layer));
    let mut bytes = fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&p, &bytes).unwrap();
    let src = format!("{}:1.0", s(&copy));
    let file = s(&tg.file);
    for args in [
        vec!["export", &src, &file],
        vec!["export", &src, &file, "--compress", "gzip"],
        vec!["export", &src, &file, "--platform", "linux/amd64"],
        vec![
            "export",
            "--format",
            "docker-archive",
            "--platform",
            "linux/amd64",
            &src,
            &file,
        ],
        vec!["copy", &src, &file, "--compress", "zstd"],
    ] {
        fails(&args, &[layer, "wrong content"]);
        tg.check(&format!("{args:?}"));
    }
    // 3. The same to a new file: it does not exist afterwards.
    let new_file = tg.fresh("new.tar");
    fails(&["export", &src, &s(&new_file)], &[layer, "wrong content"]);
    assert!(!new_file.exists());
    tg.check("export to a new file");
    // 4. Several sources, the last one bad.
    fails(
        &["export", &demo_at("legacy"), &src, &s(&tg.file)],
        &[layer, "wrong content"],
    );
    tg.check("export of two sources");
    // A blob that a good source also holds comes from the first source that
    // has it: the good demo first, the damaged copy second, and only blobs they
    // share are damaged -> the export succeeds and verifies.
    let (_d2, copy2) = demo_copy();
    let shared = &lg.layers[0];
    let p2 = copy2.join(member_of(shared));
    let mut b2 = fs::read(&p2).unwrap();
    b2[10] ^= 0xff;
    fs::write(&p2, &b2).unwrap();
    let merged = tg.fresh("merged.tar");
    run_ok(&[
        "export",
        &demo_at("1.0"),
        &format!("{}:1.0", s(&copy2)),
        &s(&merged),
    ]);
    run_ok(&["verify", "--deep", &s(&merged)]);
    fails(
        &[
            "export",
            &format!("{}:1.0", s(&copy2)),
            &demo_at("1.0"),
            &s(&tg.file),
        ],
        &[shared, "wrong content"],
    );
    tg.check("export with the damaged source first");
    // And the good archive still reads.
    run_ok(&["verify", "--deep", &s(&tg.file)]);
}

#[test]
fn export_onto_its_own_source_and_import_into_a_file() {
    let t = tempfile::tempdir().unwrap();
    for name in ["self.tar", "self.tar.gz", "self.tar.zst"] {
        let x = export_legacy(t.path(), name);
        let before = fs::read(&x).unwrap();
        // An output that is the source archive is refused before anything is
        // written (issue 12: an output never replaces what is being read).
        fails(&["export", &s(&x), &s(&x)], &["it is the source archive"]);
        assert_eq!(fs::read(&x).unwrap(), before, "{name}");
        assert_eq!(stray_temps(t.path()), Vec::<String>::new());
        // A layout target that is a file (the archive itself) is refused.
        for target in [s(&x), format!("{}:tag", s(&x))] {
            fails(&["import", &s(&x), &target], &[name]);
            assert_eq!(fs::read(&x).unwrap(), before, "{name}");
        }
    }
}

#[test]
fn export_onto_a_directory() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("somedir");
    fs::create_dir_all(dir.join("inner")).unwrap();
    fs::write(dir.join("keep.txt"), b"keep\n").unwrap();
    let before = snapshot(t.path());
    let d = s(&dir);
    for target in [
        format!("{d}/"),
        d.clone(),
        format!("oci-archive:{d}"),
        format!("docker-archive:{d}"),
    ] {
        let r = run(&["export", &demo_at("1.0"), &target]);
        assert_error(&["export", &target], &r, &["somedir"]);
        assert_eq!(
            snapshot(t.path()),
            before,
            "export onto {target} changed things"
        );
        assert_eq!(stray_temps(t.path()), Vec::<String>::new());
        assert_eq!(stray_temps(&dir), Vec::<String>::new());
    }
    // A directory that looks like an archive name is refused by export too.
    let tarish = t.path().join("x.tar");
    fs::create_dir_all(&tarish).unwrap();
    let before = snapshot(t.path());
    fails(&["export", &demo_at("1.0"), &s(&tarish)], &["x.tar"]);
    assert_eq!(snapshot(t.path()), before);
}
