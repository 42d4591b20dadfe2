//! `ocikit flatten` against hostile layers: path traversal (`..`, absolute
//! names, symlinked parents, relative and absolute symlink escapes, symlink
//! loops), hardlinks out of the root or onto symlinks, whiteout tricks, root
//! replacement, device nodes, overlong names, gzip bombs, duplicate entries,
//! the `--output` directory rules and corrupt blobs.
//!
//! Every test builds its layout in a fresh temporary directory T holding:
//! `layout/` (the OCI layout), `sentinel/` (a 0700 directory with `keep`,
//! content "keep"), and the outputs `out` (`--output`) and `out.tar`
//! (`--tar`). Symlink targets and hardlink names point at the real absolute
//! path of the sentinel. After every run the sentinel must be unchanged in
//! every respect (types, modes, owners, link counts, inodes, sizes, contents,
//! mtimes and ctimes), nothing but `out`/`out.tar` may have appeared in T (in
//! particular no `.ocikit-flatten-*`), the layout must be unchanged, and no
//! name carrying the test's token may appear in `/` or T's parent (escapes
//! are named with that token). Each case runs with `--output` and then with
//! `--tar`: both must exit alike, the tar's member names must never be
//! absolute or hold `..`, and on success the tar must hold the same regular
//! files and symlinks as the output tree.
//!
//! The layers are written by a raw tar writer (below), because the tar
//! crate's builder refuses the names these tests need.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------- raw tar writer

/// What a member is.
#[derive(Clone)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Sym(Vec<u8>),
    Hard(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// Old GNU sparse (`S`): `data` stored at offset 0, apparent size `real`.
    Sparse(u64, Vec<u8>),
}

/// One tar member, written exactly as given (no name checks at all).
#[derive(Clone)]
struct E {
    name: Vec<u8>,
    kind: Kind,
    mode: u32,
    uid: u64,
    /// Carry the name (and link name) in a PAX `x` header; the ustar header
    /// then holds a decoy name.
    pax: bool,
    /// Extra PAX records (`SCHILY.xattr.*`, `mtime`, …).
    records: Vec<(String, Vec<u8>)>,
}

impl E {
    fn new(name: impl AsRef<[u8]>, kind: Kind, mode: u32) -> E {
        E {
            name: name.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            pax: false,
            records: Vec::new(),
        }
    }
    fn mode(mut self, m: u32) -> E {
        self.mode = m;
        self
    }
    fn uid(mut self, u: u64) -> E {
        self.uid = u;
        self
    }
    fn pax(mut self) -> E {
        self.pax = true;
        self
    }
    fn xattr(self, key: &str, val: &[u8]) -> E {
        self.record(&format!("SCHILY.xattr.{key}"), val)
    }
    fn record(mut self, key: &str, val: &[u8]) -> E {
        self.records.push((key.to_string(), val.to_vec()));
        self
    }
}

fn f(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> E {
    E::new(name, Kind::File(data.as_ref().to_vec()), 0o644)
}
fn d(name: impl AsRef<[u8]>) -> E {
    E::new(name, Kind::Dir, 0o755)
}
fn sym(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
    E::new(name, Kind::Sym(target.as_ref().to_vec()), 0o777)
}
fn hard(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
    E::new(name, Kind::Hard(target.as_ref().to_vec()), 0o644)
}

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    assert!(s.len() <= w, "{v} does not fit a {w}-digit field");
    field[..w].copy_from_slice(s.as_bytes());
}

/// A ustar header; names and link names past 100 bytes are cut (the caller
/// sends the whole name in a GNU long-name or PAX header first).
fn header(name: &[u8], flag: u8, size: usize, e: (u32, u64, &[u8], (u32, u32))) -> [u8; 512] {
    let (mode, uid, link, (major, minor)) = e;
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], uid);
    octal(&mut h[124..136], size as u64);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = flag;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], u64::from(major));
    octal(&mut h[337..345], u64::from(minor));
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn push(out: &mut Vec<u8>, h: [u8; 512], data: &[u8]) {
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn pax_record(key: &str, val: &[u8]) -> Vec<u8> {
    let rest = key.len() + val.len() + 3; // ' ', '=', '\n'
    let mut n = rest;
    while rest + n.to_string().len() != n {
        n = rest + n.to_string().len();
    }
    let mut r = format!("{n} {key}=").into_bytes();
    r.extend_from_slice(val);
    r.push(b'\n');
    r
}

/// An uncompressed tar of `entries`, in order, ending with two zero blocks.
fn tarball(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    let none: &[u8] = &[];
    for e in entries {
        let (flag, data, link, dev): (u8, &[u8], &[u8], (u32, u32)) = match &e.kind {
            Kind::File(b) => (b'0', b, none, (0, 0)),
            Kind::Dir => (b'5', none, none, (0, 0)),
            Kind::Sym(t) => (b'2', none, t, (0, 0)),
            Kind::Hard(t) => (b'1', none, t, (0, 0)),
            Kind::Char(a, b) => (b'3', none, none, (*a, *b)),
            Kind::Block(a, b) => (b'4', none, none, (*a, *b)),
            Kind::Fifo => (b'6', none, none, (0, 0)),
            Kind::Sparse(_, b) => (b'S', b, none, (0, 0)),
        };
        let (mut name, mut linkname) = (e.name.as_slice(), link);
        let meta = (0o644, 0, none, (0, 0));
        if e.pax || !e.records.is_empty() {
            let mut recs = Vec::new();
            for (k, v) in &e.records {
                recs.extend(pax_record(k, v));
            }
            if e.pax {
                recs.extend(pax_record("path", name));
                name = b"pax-decoy";
                if !link.is_empty() {
                    recs.extend(pax_record("linkpath", link));
                    linkname = b"pax-decoy-link";
                }
            }
            push(
                &mut out,
                header(b"././@PaxHeader", b'x', recs.len(), meta),
                &recs,
            );
        }
        if !e.pax {
            for (lflag, long) in [(b'L', name), (b'K', link)] {
                if long.len() > 100 {
                    let mut v = long.to_vec();
                    v.push(0);
                    push(&mut out, header(b"././@LongLink", lflag, v.len(), meta), &v);
                }
            }
        }
        let mut h = header(name, flag, data.len(), (e.mode, e.uid, linkname, dev));
        if let Kind::Sparse(real, b) = &e.kind {
            // GNU layout: magic "ustar  \0", map at 386, real size at 483.
            h[257..265].copy_from_slice(b"ustar  \0");
            h[329..345].fill(0);
            octal(&mut h[386..398], 0);
            octal(&mut h[398..410], b.len() as u64);
            octal(&mut h[483..495], *real);
            h[148..156].fill(b' ');
            let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
        push(&mut out, h, data);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

// ---------------------------------------------------------------- snapshots and trees

/// The extended attributes of `p` itself (not following a symlink).
fn xattrs_of(p: &Path) -> Vec<(String, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 1 << 16];
    // SAFETY: valid NUL-terminated path and a buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    names.truncate(usize::try_from(n).unwrap_or(0));
    names
        .split(|&b| b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| {
            let kc = CString::new(k).unwrap();
            let mut v = vec![0u8; 1 << 16];
            // SAFETY: as above, plus a NUL-terminated attribute name.
            let m =
                unsafe { libc::lgetxattr(c.as_ptr(), kc.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            v.truncate(usize::try_from(m).unwrap_or(0));
            (String::from_utf8_lossy(k).into_owned(), v)
        })
        .collect()
}

/// Everything about every path under `root` (itself included) that a write
/// through it could change; atime is left out (reading changes it).
fn full_snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let ft = md.file_type();
        let body = if ft.is_symlink() {
            format!("link:{}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_file() {
            format!("file:{}", sha256_hex(&fs::read(e.path()).unwrap()))
        } else if ft.is_dir() {
            "dir".to_string()
        } else {
            format!("other:{ft:?}:{}", md.rdev())
        };
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        m.insert(
            rel,
            format!(
                "{body} mode={:o} uid={} gid={} nlink={} ino={} size={} mtime={}.{} ctime={}.{}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.nlink(),
                md.ino(),
                md.size(),
                md.mtime(),
                md.mtime_nsec(),
                md.ctime(),
                md.ctime_nsec()
            ) + &format!(" xattrs={:?}", xattrs_of(e.path())),
        );
    }
    m
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Regular files (`file:sha256`) and symlinks (`link:target`) of a tree.
fn out_tree(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let ft = e.file_type();
        if ft.is_symlink() {
            m.insert(
                rel,
                format!("link:{}", fs::read_link(e.path()).unwrap().display()),
            );
        } else if ft.is_file() {
            m.insert(
                rel,
                format!("file:{}", sha256_hex(&fs::read(e.path()).unwrap())),
            );
        }
    }
    m
}

/// Panics if a member name (or hardlink name) of an output tar could escape.
fn assert_member_safe(raw: &[u8], what: &str) {
    let s = String::from_utf8_lossy(raw);
    assert!(
        !s.starts_with('/') && !s.split('/').any(|c| c == ".."),
        "the output tar has an escaping {what}: {s:?}"
    );
}

fn norm(raw: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(raw).into_owned();
    while let Some(r) = s.strip_prefix("./") {
        s = r.to_string();
    }
    s.trim_end_matches('/').to_string()
}

/// The regular files and symlinks an output tar holds (hardlinks resolved to
/// their target's value), checking every member name on the way.
fn tar_tree(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().expect("output tar is readable") {
        let mut e = e.expect("output tar entry is readable");
        let raw = e.path_bytes().into_owned();
        assert_member_safe(&raw, "member name");
        let name = norm(&raw);
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                m.insert(name, format!("file:{}", sha256_hex(&v)));
            }
            tar::EntryType::Symlink => {
                let t = e.link_name_bytes().unwrap_or_default().into_owned();
                m.insert(name, format!("link:{}", String::from_utf8_lossy(&t)));
            }
            tar::EntryType::Link => {
                let t = e.link_name_bytes().unwrap_or_default().into_owned();
                assert_member_safe(&t, "hardlink name");
                let v = m
                    .get(&norm(&t))
                    .cloned()
                    .unwrap_or_else(|| panic!("hardlink {name:?} -> {t:?}: no earlier member"));
                m.insert(name, v);
            }
            _ => {}
        }
    }
    m
}

// ---------------------------------------------------------------- running ocikit

/// Runs ocikit with a 60 s watchdog (a hang fails the test instead of
/// wedging the suite); returns the checked run and the raw stdout.
fn run_bounded(args: &[String], env: &[(&str, &str)]) -> (Run, Vec<u8>) {
    let mut c = Command::new(bin());
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn ocikit");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut v = Vec::new();
        so.read_to_end(&mut v).ok();
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = Vec::new();
        se.read_to_end(&mut v).ok();
        v
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("ocikit {args:?} hung: killed after 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let o = Output {
        status,
        stdout: to.join().unwrap(),
        stderr: te.join().unwrap(),
    };
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    (Run::checked(&a, &o), o.stdout)
}

fn warnings(r: &Run) -> Vec<&str> {
    r.err
        .lines()
        .filter(|l| l.starts_with("ocikit: warning: "))
        .collect()
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

// ---------------------------------------------------------------- the fixture

struct Fx {
    _t: tempfile::TempDir,
    /// T, canonical.
    dir: PathBuf,
    layout: PathBuf,
    sentinel: PathBuf,
    out: PathBuf,
    tarf: PathBuf,
    /// Unique; every escaping name in a test carries it.
    token: String,
    /// Layer digests, in order.
    layers: Vec<String>,
    sentinel_before: BTreeMap<String, String>,
    layout_before: BTreeMap<String, String>,
    names_before: BTreeSet<String>,
    out_existed: bool,
}

impl Fx {
    fn new() -> Fx {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().canonicalize().unwrap();
        let sentinel = dir.join("sentinel");
        fs::create_dir(&sentinel).unwrap();
        fs::write(sentinel.join("keep"), "keep").unwrap();
        fs::set_permissions(sentinel.join("keep"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&sentinel, fs::Permissions::from_mode(0o700)).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let token = format!(
            "ocikit-hostile-{}-{}",
            std::process::id(),
            name.trim_start_matches('.')
        );
        Fx {
            layout: dir.join("layout"),
            out: dir.join("out"),
            tarf: dir.join("out.tar"),
            sentinel,
            dir,
            _t: t,
            token,
            layers: Vec::new(),
            sentinel_before: BTreeMap::new(),
            layout_before: BTreeMap::new(),
            names_before: BTreeSet::new(),
            out_existed: false,
        }
    }

    /// The sentinel's absolute path.
    fn s(&self) -> String {
        self.sentinel.display().to_string()
    }

    /// The sentinel's path without the leading `/` (where it re-roots).
    fn s_rel(&self) -> String {
        self.s().trim_start_matches('/').to_string()
    }

    fn o(&self, rel: &str) -> PathBuf {
        self.out.join(rel)
    }

    /// Writes the layout (layers stored uncompressed), tagged `latest`.
    fn image(&mut self, layers: &[Vec<u8>]) {
        self.image_with(OCI_TAR, layers)
    }

    fn image_with(&mut self, media_type: &str, layers: &[Vec<u8>]) {
        fs::create_dir_all(self.layout.join("blobs/sha256")).unwrap();
        let ls: Vec<(Value, String)> = layers
            .iter()
            .map(|b| put_layer(&self.layout, media_type, b))
            .collect();
        self.layers = ls
            .iter()
            .map(|l| l.0["digest"].as_str().unwrap().to_string())
            .collect();
        let mut entry = put_image(&self.layout, host_arch(), None, &ls, false);
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
        write_layout_files(
            &self.layout,
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
        );
        self.record();
    }

    /// Records the state every run is checked against.
    fn record(&mut self) {
        self.sentinel_before = full_snapshot(&self.sentinel);
        self.layout_before = self.layout_state();
        self.names_before = names_in(&self.dir);
        self.out_existed = fs::symlink_metadata(&self.out).is_ok();
    }

    /// The layout's names and contents (FIFOs and other specials by type
    /// only: reading them could block), without the writer lock file.
    fn layout_state(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for e in walkdir::WalkDir::new(&self.layout).sort_by_file_name() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(&self.layout)
                .unwrap()
                .display()
                .to_string();
            let ft = e.file_type();
            let v = if ft.is_symlink() {
                format!("link:{}", fs::read_link(e.path()).unwrap().display())
            } else if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_file() {
                sha256_hex(&fs::read(e.path()).unwrap())
            } else {
                format!("special:{ft:?}")
            };
            m.insert(rel, v);
        }
        m.remove(".ocikit.lock");
        m
    }

    fn src(&self) -> String {
        format!("{}:latest", self.layout.display())
    }

    fn args(&self, dest: &[&str], extra: &[&str]) -> Vec<String> {
        let mut a = vec!["flatten".to_string(), self.src()];
        a.extend(dest.iter().map(|s| s.to_string()));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn out_args(&self, extra: &[&str]) -> Vec<String> {
        self.args(&["--output", &s(&self.out)], extra)
    }

    fn tar_args(&self, extra: &[&str]) -> Vec<String> {
        self.args(&["--tar", &s(&self.tarf)], extra)
    }

    /// Nothing outside `out`/`out.tar` changed.
    fn assert_contained(&self) {
        assert_eq!(
            full_snapshot(&self.sentinel),
            self.sentinel_before,
            "the sentinel changed"
        );
        let now = names_in(&self.dir);
        let mut allowed = self.names_before.clone();
        allowed.insert("out".into());
        allowed.insert("out.tar".into());
        let new: Vec<&String> = now.difference(&allowed).collect();
        assert!(new.is_empty(), "new entries beside out: {new:?}");
        assert!(
            !now.iter().any(|n| n.starts_with(".ocikit-flatten-")),
            "a .ocikit-flatten-* directory remains: {now:?}"
        );
        assert_eq!(
            self.layout_state(),
            self.layout_before,
            "the layout changed"
        );
        let parent = self.dir.parent().unwrap().to_path_buf();
        for place in [PathBuf::from("/"), parent] {
            let hits: Vec<String> = names_in(&place)
                .into_iter()
                .filter(|n| n.starts_with(&self.token))
                .collect();
            assert!(
                hits.is_empty(),
                "escaped into {}: {hits:?}",
                place.display()
            );
        }
    }

    /// Runs `--output` (must exit `want`), then `--tar` (must exit alike);
    /// checks containment after each and, on success, that the two agree.
    fn both(&self, want: &[i32], extra: &[&str], env: &[(&str, &str)]) -> (Run, Run) {
        let (r, _) = run_bounded(&self.out_args(extra), env);
        assert!(
            want.contains(&r.code),
            "--output exited {} (want {want:?})\nstderr: {}",
            r.code,
            r.err
        );
        self.assert_contained();
        if r.code != 0 && !self.out_existed {
            assert!(
                fs::symlink_metadata(&self.out).is_err(),
                "--output failed but {} exists",
                self.out.display()
            );
        }
        let (t, _) = run_bounded(&self.tar_args(extra), env);
        self.assert_contained();
        assert_eq!(
            t.code, r.code,
            "--tar and --output disagree\n--output stderr: {}\n--tar stderr: {}",
            r.err, t.err
        );
        if r.code == 0 {
            let tt = tar_tree(&fs::read(&self.tarf).unwrap());
            assert_eq!(
                tt,
                out_tree(&self.out),
                "--tar and --output hold different trees"
            );
        }
        (r, t)
    }

    /// Both modes succeed.
    fn ok(&self, extra: &[&str]) -> Run {
        self.both(&[0], extra, &[]).0
    }

    /// Both modes fail with one error line holding every needle.
    fn fail(&self, needles: &[&str]) -> String {
        self.fail_env(needles, &[])
    }

    fn fail_env(&self, needles: &[&str], env: &[(&str, &str)]) -> String {
        let (r, t) = self.both(&[2], &[], env);
        let oa = self.out_args(&[]);
        let ta = self.tar_args(&[]);
        let line = assert_error(
            &oa.iter().map(String::as_str).collect::<Vec<_>>(),
            &r,
            needles,
        );
        assert_error(
            &ta.iter().map(String::as_str).collect::<Vec<_>>(),
            &t,
            needles,
        );
        line
    }
}

fn assert_file(p: &Path, content: &[u8]) {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        md.is_file(),
        "{} is not a regular file: {:?}",
        p.display(),
        md.file_type()
    );
    assert_eq!(fs::read(p).unwrap(), content, "{}", p.display());
}

fn assert_link(p: &Path, target: &str) {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        md.file_type().is_symlink(),
        "{} is not a symlink",
        p.display()
    );
    assert_eq!(
        fs::read_link(p).unwrap(),
        Path::new(target),
        "{}",
        p.display()
    );
}

fn assert_absent(p: &Path) {
    assert!(
        fs::symlink_metadata(p).is_err(),
        "{} should not exist",
        p.display()
    );
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

// ---------------------------------------------------------------- 1. traversal names

/// `..` names in every spelling (plain, nested, after `./`, deep enough to
/// leave T, as a directory, symlink or hardlink, in a PAX header behind a
/// harmless ustar name, in a GNU long name) are errors naming the layer and
/// the entry, after a harmless first entry, and nothing lands outside.
#[test]
fn dotdot_names_are_errors() {
    type Case = fn(&str) -> (E, String);
    let cases: &[Case] = &[
        |t| (f(format!("../{t}-evil"), "x"), format!("../{t}-evil")),
        |t| {
            (
                f(format!("a/../../{t}-evil"), "x"),
                format!("a/../../{t}-evil"),
            )
        },
        |t| (f(format!("./../{t}-evil"), "x"), format!("./../{t}-evil")),
        |t| (f(format!("../../{t}-evil"), "x"), format!("../../{t}-evil")),
        |t| {
            (
                f(format!("a/b/../../../../{t}-evil"), "x"),
                format!("a/b/../../../../{t}-evil"),
            )
        },
        |t| (d(format!("../{t}-dir/")), format!("../{t}-dir")),
        |t| (sym(format!("../{t}-link"), "/"), format!("../{t}-link")),
        |t| {
            (
                hard(format!("../{t}-hard"), "ok.txt"),
                format!("../{t}-hard"),
            )
        },
        |t| (f(format!("../{t}-pax"), "x").pax(), format!("../{t}-pax")),
        |t| {
            let n = format!("../{t}-{}", "l".repeat(150));
            (f(&n, "x"), n[..40].to_string())
        },
        |_| (f("../.wh.sentinel", ""), "../.wh.sentinel".to_string()),
        |_| (f("../.wh..wh..opq", ""), "../.wh..wh..opq".to_string()),
        |_| {
            (
                f("a/../../.wh.sentinel", ""),
                "a/../../.wh.sentinel".to_string(),
            )
        },
        |t| {
            let mut n = b"../\xff-".to_vec();
            n.extend_from_slice(t.as_bytes());
            (f(n, "x"), "../\u{fffd}-".to_string())
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut fx = Fx::new();
        let (bad, needle) = case(&fx.token);
        eprintln!("case {i}: {needle}");
        fx.image(&[tarball(&[f("ok.txt", "ok")]), tarball(&[d("a/"), bad])]);
        let digest = fx.layers[1].clone();
        fx.fail(&[&digest, &needle]);
    }
}

/// `/../x` is either cleaned to `x` (inside the root) or refused: never
/// written outside.
#[test]
fn rooted_dotdot_is_contained() {
    let mut fx = Fx::new();
    let name = format!("/../{}-evil", fx.token);
    fx.image(&[tarball(&[f(&name, "x")])]);
    let (r, _) = fx.both(&[0, 2], &[], &[]);
    if r.code == 0 {
        assert_file(&fx.o(&format!("{}-evil", fx.token)), b"x");
    }
}

/// Names are cleaned lexically: `a/./b` is `a/b`, `q/../c` is `c`, `./d//e`
/// is `d/e`, and `l/../m` is `m` even when `l` is a symlink to the sentinel.
#[test]
fn names_are_cleaned_lexically() {
    let mut fx = Fx::new();
    let s = fx.s();
    fx.image(&[tarball(&[
        f("a/./b", "ab"),
        f("q/../c", "c"),
        f("./d//e", "de"),
        sym("l", &s),
        f("l/../m", "m"),
    ])]);
    fx.ok(&[]);
    assert_file(&fx.o("a/b"), b"ab");
    assert_file(&fx.o("c"), b"c");
    assert_file(&fx.o("d/e"), b"de");
    assert_file(&fx.o("m"), b"m");
    assert_link(&fx.o("l"), &s);
}

// ---------------------------------------------------------------- 2. absolute names

/// A leading `/` (or `//`) is stripped: the file lands inside the root, also
/// with `--tar -` (stdout).
#[test]
fn absolute_names_land_inside_the_root() {
    let mut fx = Fx::new();
    let t = fx.token.clone();
    fx.image(&[tarball(&[
        f(format!("/{t}/file"), "abs"),
        f(format!("//{t}2/f"), "dbl"),
    ])]);
    fx.ok(&[]);
    assert_file(&fx.o(&format!("{t}/file")), b"abs");
    assert_file(&fx.o(&format!("{t}2/f")), b"dbl");

    let (r, bytes) = run_bounded(&fx.args(&["--tar", "-"], &[]), &[]);
    assert_eq!(r.code, 0, "--tar -: {}", r.err);
    fx.assert_contained();
    let tt = tar_tree(&bytes);
    assert_eq!(
        tt.get(&format!("{t}/file")),
        Some(&format!("file:{}", sha256_hex(b"abs")))
    );
    assert_eq!(tt, out_tree(&fx.out));
}

// ---------------------------------------------------------------- 3-6. symlinked parents

/// `l -> <sentinel>` then `l/pwn`, in one layer: re-rooted to
/// out/<sentinel>/pwn.
#[test]
fn symlink_parent_to_absolute_dir_same_layer() {
    let mut fx = Fx::new();
    let s = fx.s();
    fx.image(&[tarball(&[sym("l", &s), f("l/pwn", "pwned")])]);
    fx.ok(&[]);
    assert_link(&fx.o("l"), &s);
    assert_file(&fx.o(&format!("{}/pwn", fx.s_rel())), b"pwned");
}

/// The same with the symlink in layer 1 and `l/pwn` in layer 2.
#[test]
fn symlink_parent_to_absolute_dir_next_layer() {
    let mut fx = Fx::new();
    let s = fx.s();
    fx.image(&[tarball(&[sym("l", &s)]), tarball(&[f("l/pwn", "pwned")])]);
    fx.ok(&[]);
    assert_link(&fx.o("l"), &s);
    assert_file(&fx.o(&format!("{}/pwn", fx.s_rel())), b"pwned");
}

/// `l -> ..` / `l -> ../../..` then `l/x/y/z` (RUSTSEC-2021-0080), and
/// `l -> ../sentinel` (which reaches the real sentinel if followed from
/// T/.ocikit-flatten-*): `..` stops at the root.
#[test]
fn symlink_parent_dotdot_is_clamped_to_root() {
    for target in ["..", "../../..", "../../../../../../../../../../.."] {
        eprintln!("target {target}");
        let mut fx = Fx::new();
        fx.image(&[tarball(&[sym("l", target), f("l/x/y/z", "z")])]);
        fx.ok(&[]);
        assert_link(&fx.o("l"), target);
        assert_file(&fx.o("x/y/z"), b"z");
    }
    let mut fx = Fx::new();
    fx.image(&[
        tarball(&[sym("l", "../sentinel")]),
        tarball(&[f("l/pwn", "pwned")]),
    ]);
    fx.ok(&[]);
    assert_file(&fx.o("sentinel/pwn"), b"pwned");
}

/// A chain built over three layers (`a -> b`, then `b -> <sentinel>`, then
/// `a/pwn`) is resolved in the root.
#[test]
fn symlink_chain_across_layers_is_rerooted() {
    let mut fx = Fx::new();
    let s = fx.s();
    fx.image(&[
        tarball(&[sym("a", "b")]),
        tarball(&[sym("b", &s)]),
        tarball(&[f("a/pwn", "pwned")]),
    ]);
    fx.ok(&[]);
    assert_file(&fx.o(&format!("{}/pwn", fx.s_rel())), b"pwned");
}

/// `moo -> <sentinel>/keep` then a regular file `moo`: the file replaces the
/// symlink (same layer and next layer); the host file is not written.
#[test]
fn file_over_symlink_replaces_the_symlink() {
    for split in [false, true] {
        let mut fx = Fx::new();
        let link = sym("moo", format!("{}/keep", fx.s()));
        let file = f("moo", "new");
        if split {
            fx.image(&[tarball(&[link]), tarball(&[file])]);
        } else {
            fx.image(&[tarball(&[link, file])]);
        }
        fx.ok(&[]);
        assert_file(&fx.o("moo"), b"new");
    }
}

/// `foo -> <sentinel>` then a 0777 directory `foo` and `foo/child`: the
/// directory replaces the symlink; the sentinel keeps mode 0700
/// (CVE-2026-33056).
#[test]
fn dir_over_symlink_replaces_the_symlink() {
    for split in [false, true] {
        let mut fx = Fx::new();
        let link = sym("foo", fx.s());
        let dir = d("foo/").mode(0o777);
        let child = f("foo/child", "c");
        if split {
            fx.image(&[tarball(&[link]), tarball(&[dir, child])]);
        } else {
            fx.image(&[tarball(&[link, dir, child])]);
        }
        fx.ok(&[]);
        let md = fs::symlink_metadata(fx.o("foo")).unwrap();
        assert!(
            md.is_dir(),
            "out/foo should be a directory: {:?}",
            md.file_type()
        );
        assert_file(&fx.o("foo/child"), b"c");
        assert_eq!(fs::metadata(&fx.sentinel).unwrap().mode() & 0o7777, 0o700);
    }
}

/// containerd's SymlinkOverridePath: `foo/`, `foo/tmp/N`, then `foo -> /`,
/// then `foo/tmp/N` again: the last write lands at out/tmp/N, never /tmp/N.
#[test]
fn symlink_override_path_stays_in_root() {
    let mut fx = Fx::new();
    let n = fx.token.clone();
    fx.image(&[tarball(&[
        d("foo/"),
        f(format!("foo/tmp/{n}"), "first"),
        sym("foo", "/"),
        f(format!("foo/tmp/{n}"), "second"),
    ])]);
    fx.ok(&[]);
    assert_absent(&Path::new("/tmp").join(&n));
    assert_link(&fx.o("foo"), "/");
    assert_file(&fx.o(&format!("tmp/{n}")), b"second");
}

// ---------------------------------------------------------------- 8. hardlinks

/// A hardlink to `<sentinel>/keep` (absolute link name) is root-relative:
/// with nothing at out/<sentinel>/keep it is an error; with an in-root file
/// there it links that file. The host file's link count stays 1.
#[test]
fn hardlink_absolute_name_is_root_relative() {
    let mut fx = Fx::new();
    let keep = format!("{}/keep", fx.s());
    fx.image(&[tarball(&[f("ok.txt", "ok"), hard("hard-abs", &keep)])]);
    let digest = fx.layers[0].clone();
    fx.fail(&[&digest, "hard-abs"]);
    assert_eq!(fs::metadata(fx.sentinel.join("keep")).unwrap().nlink(), 1);

    let mut fx = Fx::new();
    let keep = format!("{}/keep", fx.s());
    fx.image(&[tarball(&[f(&keep, "inroot"), hard("hard-abs", &keep)])]);
    fx.ok(&[]);
    let inroot = fx.o(&format!("{}/keep", fx.s_rel()));
    assert_file(&fx.o("hard-abs"), b"inroot");
    assert_eq!(ino(&fx.o("hard-abs")), ino(&inroot));
    assert_eq!(fs::metadata(fx.sentinel.join("keep")).unwrap().nlink(), 1);
}

/// Hardlink names that escape (`../sentinel/keep`, `a/../../sentinel/keep`,
/// a GNU long link name, a PAX linkpath) are errors naming the entry.
#[test]
fn hardlink_escaping_name_is_error() {
    let long = format!("../sentinel/{}keep", "y/../".repeat(30));
    let targets = [
        ("plain", hard("hard-esc", "../sentinel/keep")),
        ("nested", hard("hard-esc", "a/../../sentinel/keep")),
        ("gnu-long", hard("hard-esc", &long)),
        ("pax", hard("hard-esc", "../sentinel/keep").pax()),
    ];
    for (label, e) in targets {
        eprintln!("case {label}");
        let mut fx = Fx::new();
        fx.image(&[tarball(&[d("a/"), e])]);
        let digest = fx.layers[0].clone();
        fx.fail(&[&digest, "hard-esc"]);
        assert_eq!(fs::metadata(fx.sentinel.join("keep")).unwrap().nlink(), 1);
    }
}

/// A hardlink whose name goes through a symlink (`p -> <sentinel>`, link
/// name `p/keep`) resolves it in the root: an error when out/<sentinel>/keep
/// does not exist, that file when it does; never the host file.
#[test]
fn hardlink_through_symlink_parent_stays_in_root() {
    let mut fx = Fx::new();
    let s = fx.s();
    fx.image(&[tarball(&[sym("p", &s), hard("hard-via", "p/keep")])]);
    let digest = fx.layers[0].clone();
    fx.fail(&[&digest, "hard-via"]);
    assert_eq!(fs::metadata(fx.sentinel.join("keep")).unwrap().nlink(), 1);

    let mut fx = Fx::new();
    let s = fx.s();
    fx.image(&[tarball(&[
        f(format!("{s}/keep"), "inroot"),
        sym("p", &s),
        hard("hard-via", "p/keep"),
    ])]);
    fx.ok(&[]);
    assert_file(&fx.o("hard-via"), b"inroot");
    assert_eq!(
        ino(&fx.o("hard-via")),
        ino(&fx.o(&format!("{}/keep", fx.s_rel())))
    );
    assert_eq!(fs::metadata(fx.sentinel.join("keep")).unwrap().nlink(), 1);
}

/// A hardlink (mode 0777, uid 4242) to a symlink `s -> <sentinel>/keep`
/// links the symlink itself; its mode, owner and times are not applied
/// through it to the host file (CVE-2021-32760 HardlinkSymlinkChmod).
#[test]
fn hardlink_to_symlink_does_not_touch_its_target() {
    let mut fx = Fx::new();
    let keep = format!("{}/keep", fx.s());
    fx.image(&[tarball(&[
        sym("s", &keep),
        hard("h2", "s").mode(0o777).uid(4242),
    ])]);
    fx.ok(&[]);
    assert_link(&fx.o("h2"), &keep);
    assert_eq!(ino(&fx.o("h2")), ino(&fx.o("s")));
    let md = fs::metadata(fx.sentinel.join("keep")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.nlink()), (0o644, 1));
}

/// Hardlinks to a directory, to the root, or to nothing are errors.
#[test]
fn hardlink_to_directory_or_missing_is_error() {
    for (label, target) in [
        ("dir", "d"),
        ("dir-slash", "d/"),
        ("root", "."),
        ("missing", "nope"),
    ] {
        eprintln!("case {label}");
        let mut fx = Fx::new();
        fx.image(&[tarball(&[d("d/"), f("d/f", "f"), hard("hard-bad", target)])]);
        let digest = fx.layers[0].clone();
        fx.fail(&[&digest, "hard-bad"]);
    }
}

// ---------------------------------------------------------------- 9. whiteouts

/// `.wh..`, `a/.wh...`, `.wh.` (and `a/.wh.` in a PAX header) are errors.
#[test]
fn bad_whiteout_names_are_errors() {
    for name in [".wh..", "a/.wh...", ".wh.", "a/.wh."] {
        for pax in [false, true] {
            eprintln!("case {name} pax={pax}");
            let mut fx = Fx::new();
            let e = if pax { f(name, "").pax() } else { f(name, "") };
            fx.image(&[tarball(&[d("a/"), f("a/f", "f")]), tarball(&[d("a/"), e])]);
            let digest = fx.layers[1].clone();
            fx.fail(&[&digest, name]);
        }
    }
}

/// Layer 1 `d -> <sentinel>`, layer 2 `d/.wh.keep` or `d/.wh..wh..opq`: the
/// host sentinel keeps `keep`. With nothing in the root there (no-op or
/// error); with an in-root out/<sentinel>/keep, that one goes.
#[test]
fn whiteout_through_symlink_parent_stays_in_root() {
    for wh in ["d/.wh.keep", "d/.wh..wh..opq"] {
        eprintln!("case {wh} without in-root target");
        let mut fx = Fx::new();
        let s = fx.s();
        fx.image(&[tarball(&[sym("d", &s)]), tarball(&[f(wh, "")])]);
        let (r, _) = fx.both(&[0, 2], &[], &[]);
        if r.code == 0 {
            assert_link(&fx.o("d"), &s);
        }

        eprintln!("case {wh} with in-root target");
        let mut fx = Fx::new();
        let s = fx.s();
        fx.image(&[
            tarball(&[f(format!("{s}/keep"), "inroot"), sym("d", &s)]),
            tarball(&[f(wh, "")]),
        ]);
        fx.ok(&[]);
        assert_link(&fx.o("d"), &s);
        assert_absent(&fx.o(&format!("{}/keep", fx.s_rel())));
    }
}

/// `.wh.d` and `.wh.k` remove the symlinks `d -> <sentinel>` and
/// `k -> <sentinel>/keep`, never what they point to.
#[test]
fn whiteout_of_symlink_removes_only_the_symlink() {
    let mut fx = Fx::new();
    let s = fx.s();
    fx.image(&[
        tarball(&[sym("d", &s), sym("k", format!("{s}/keep")), f("stay", "x")]),
        tarball(&[f(".wh.d", ""), f(".wh.k", "")]),
    ]);
    fx.ok(&[]);
    assert_absent(&fx.o("d"));
    assert_absent(&fx.o("k"));
    assert_file(&fx.o("stay"), b"x");
}

/// Whiteouts act on lower layers only: `n` then `.wh.n` in one layer keeps
/// `n`; an opaque marker after `d/new` keeps `d/new` and drops layer 1's
/// `d/old`; `.wh.m` drops layer 1's `m`.
#[test]
fn whiteouts_apply_to_lower_layers_only() {
    let mut fx = Fx::new();
    fx.image(&[
        tarball(&[d("d/"), f("d/old", "old"), f("m", "m")]),
        tarball(&[
            f("n", "n"),
            f(".wh.n", ""),
            d("d/"),
            f("d/new", "new"),
            f("d/.wh..wh..opq", ""),
            f(".wh.m", ""),
        ]),
    ]);
    fx.ok(&[]);
    assert_file(&fx.o("n"), b"n");
    assert_file(&fx.o("d/new"), b"new");
    assert_absent(&fx.o("d/old"));
    assert_absent(&fx.o("m"));
    assert_absent(&fx.o(".wh.n"));
    assert_absent(&fx.o("d/.wh..wh..opq"));
}

// ---------------------------------------------------------------- 10. loops

/// Symlink loops as parents (`a -> b -> a`, `c -> c`, `e -> e/f`,
/// `/l0 -> /l0`) end: an error or a contained result, no panic, no hang.
#[test]
fn symlink_loops_end() {
    let cases: [(&str, Vec<E>); 6] = [
        ("a<->b", vec![sym("a", "b"), sym("b", "a"), f("a/x", "x")]),
        ("self", vec![sym("c", "c"), f("c/x", "x")]),
        ("growing", vec![sym("e", "e/f"), f("e/x", "x")]),
        ("absolute self", vec![sym("l0", "/l0"), f("l0/x", "x")]),
        (
            "via dotdot",
            vec![d("g/"), sym("g/h", "../g/h"), f("g/h/x", "x")],
        ),
        (
            "through a file",
            vec![sym("q", "file"), f("file", "x"), f("q/x", "y")],
        ),
    ];
    for (label, entries) in cases {
        eprintln!("case {label}");
        let mut fx = Fx::new();
        fx.image(&[tarball(&entries)]);
        let (r, _) = fx.both(&[0, 2], &[], &[]);
        if r.code == 2 {
            let a = fx.out_args(&[]);
            assert_error(
                &a.iter().map(String::as_str).collect::<Vec<_>>(),
                &r,
                &[&fx.layers[0]],
            );
        }
    }
}

// ---------------------------------------------------------------- 11. the root entry

/// An entry for the root that is not a directory (`./` symlink to `/`, `.`
/// regular file, `/` symlink to the sentinel, `./` hardlink) is an error; a
/// directory `./` or `/` is fine.
#[test]
fn root_entry_must_be_a_directory() {
    type Case = fn(&str) -> (E, &'static str);
    let cases: &[Case] = &[
        |_| (sym("./", "/"), "./"),
        |_| (f(".", "x"), "."),
        |s| (sym("/", s), "/"),
        |_| (hard("./", "ok.txt"), "./"),
        |_| (E::new(".", Kind::Fifo, 0o644), "."),
    ];
    for (i, case) in cases.iter().enumerate() {
        eprintln!("case {i}");
        let mut fx = Fx::new();
        let (e, name) = case(&fx.s());
        fx.image(&[tarball(&[f("ok.txt", "ok"), e])]);
        let digest = fx.layers[0].clone();
        fx.fail(&[&digest, name]);
    }
    let mut fx = Fx::new();
    fx.image(&[tarball(&[d("./"), d("/"), f("ok.txt", "ok")])]);
    fx.ok(&[]);
    assert_file(&fx.o("ok.txt"), b"ok");
}

// ---------------------------------------------------------------- 12. devices

/// `--rootless`: the char device `dev/null` is skipped with exactly one
/// warning mentioning devices, the FIFO is made, and owners are not chowned.
#[test]
fn rootless_skips_device_with_one_warning() {
    let mut fx = Fx::new();
    fx.image(&[tarball(&[
        d("dev/"),
        E::new("dev/null", Kind::Char(1, 3), 0o666),
        E::new("fifo", Kind::Fifo, 0o644),
        f("owned", "o").uid(4242),
    ])]);
    let r = fx.ok(&["--rootless"]);
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "want one warning:\n{}", r.err);
    assert!(w[0].to_lowercase().contains("device"), "{}", w[0]);
    assert_absent(&fx.o("dev/null"));
    let fifo = fs::symlink_metadata(fx.o("fifo")).unwrap();
    assert!(fifo.file_type().is_fifo(), "{:?}", fifo.file_type());
    let me = fs::metadata(&fx.dir).unwrap().uid();
    assert_eq!(fs::symlink_metadata(fx.o("owned")).unwrap().uid(), me);
}

/// `--rootless` with a char and a block device: still one warning.
#[test]
fn rootless_two_devices_one_warning() {
    let mut fx = Fx::new();
    fx.image(&[tarball(&[
        d("dev/"),
        E::new("dev/null", Kind::Char(1, 3), 0o666),
        E::new("dev/loop0", Kind::Block(7, 0), 0o660),
    ])]);
    let r = fx.ok(&["--rootless"]);
    assert_eq!(warnings(&r).len(), 1, "want one warning:\n{}", r.err);
    assert_absent(&fx.o("dev/null"));
    assert_absent(&fx.o("dev/loop0"));
}

fn can_mknod(dir: &Path) -> bool {
    let p = CString::new(dir.join("probe").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod has no other preconditions.
    let rc = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o600, (1 << 8) | 3) };
    let _ = fs::remove_file(dir.join("probe"));
    rc == 0
}

fn major_minor(rdev: u64) -> (u64, u64) {
    (
        ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
        (rdev & 0xff) | ((rdev >> 12) & !0xff),
    )
}

/// As root without `--rootless`: `dev/null` is a char device 1:3 and owners
/// are applied (skipped when not root or mknod is not permitted here).
#[test]
fn root_makes_device_nodes_and_owners() {
    if !is_root() {
        eprintln!("skipping root_makes_device_nodes_and_owners: not root");
        return;
    }
    let probe = tempfile::tempdir().unwrap();
    if !can_mknod(probe.path()) {
        eprintln!("skipping root_makes_device_nodes_and_owners: mknod is not permitted here");
        return;
    }
    let mut fx = Fx::new();
    fx.image(&[tarball(&[
        d("dev/"),
        E::new("dev/null", Kind::Char(1, 3), 0o666),
        f("owned", "o").uid(4242),
    ])]);
    let r = fx.ok(&[]);
    assert!(warnings(&r).is_empty(), "{}", r.err);
    let md = fs::symlink_metadata(fx.o("dev/null")).unwrap();
    assert!(md.file_type().is_char_device(), "{:?}", md.file_type());
    assert_eq!(major_minor(md.rdev()), (1, 3));
    let o = fs::symlink_metadata(fx.o("owned")).unwrap();
    assert_eq!((o.uid(), o.gid()), (4242, 4242));
}

// ---------------------------------------------------------------- 13. long names

/// A 300-byte (and a 256-byte) name component is an error (GNU long name
/// and PAX), also in a directory's name and a symlink's; 255 bytes is fine.
#[test]
fn overlong_component_is_error() {
    let long = "x".repeat(300);
    let just_over = "y".repeat(256);
    for (label, e, needle) in [
        ("gnu", f(&long, "x"), &long[..40]),
        ("pax", f(&long, "x").pax(), &long[..40]),
        ("parent", f(format!("{long}/f"), "x"), &long[..40]),
        ("symlink", sym(&long, "t"), &long[..40]),
        ("256", f(&just_over, "x"), &just_over[..40]),
    ] {
        eprintln!("case {label}");
        let mut fx = Fx::new();
        fx.image(&[tarball(&[e])]);
        let digest = fx.layers[0].clone();
        fx.fail(&[&digest, needle]);
    }
    let max = "z".repeat(255);
    let mut fx = Fx::new();
    fx.image(&[tarball(&[f(&max, "255"), f(format!("d/{max}"), "nested")])]);
    fx.ok(&[]);
    assert_file(&fx.o(&max), b"255");
    assert_file(&fx.o(&format!("d/{max}")), b"nested");
}

/// A 10,000-component path (`a/a/…`, GNU long name and PAX) and a
/// 4,220-byte path of 200-byte components are errors, without a panic.
#[test]
fn overlong_paths_are_errors() {
    let deep = ["a"; 10_000].join("/");
    let c200 = "c".repeat(200);
    let wide = [c200.as_str(); 21].join("/");
    assert!(wide.len() > 4096);
    for (label, e, needle) in [
        ("deep gnu", f(&deep, "x"), &deep[..40]),
        ("deep pax", f(&deep, "x").pax(), &deep[..40]),
        ("deep dir", d(format!("{deep}/")), &deep[..40]),
        ("wide gnu", f(&wide, "x"), &wide[..40]),
    ] {
        eprintln!("case {label}");
        let mut fx = Fx::new();
        fx.image(&[tarball(&[e])]);
        let digest = fx.layers[0].clone();
        fx.fail(&[&digest, needle]);
    }
}

/// A 3,416-byte path (17 components of 200 bytes) is within the limits.
#[test]
fn long_path_under_the_limit_works() {
    let c200 = "c".repeat(200);
    let p = [c200.as_str(); 17].join("/");
    let mut fx = Fx::new();
    fx.image(&[tarball(&[f(&p, "deep")])]);
    fx.ok(&[]);
    assert_file(&fx.o(&p), b"deep");
}

// ---------------------------------------------------------------- 14. gzip bomb

/// A gzip layer of 8 MiB of zeros (about 8 KiB stored) with
/// OCIKIT_MAX_DECOMPRESSED=1000000 is an error naming the layer; without the
/// variable the 1 GiB floor lets it through.
#[test]
fn gzip_bomb_is_capped() {
    use std::io::Write as _;
    let mut fx = Fx::new();
    fs::create_dir_all(fx.layout.join("blobs/sha256")).unwrap();
    let raw = tarball(&[f("zeros", vec![0u8; 8 << 20])]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    let layer = (
        put_blob(&fx.layout, OCI_GZIP, &gz.finish().unwrap()),
        digest_of(&raw),
    );
    assert!(
        layer.0["size"].as_u64().unwrap() < 100_000,
        "the bomb should be small"
    );
    let digest = layer.0["digest"].as_str().unwrap().to_string();
    let mut entry = put_image(&fx.layout, host_arch(), None, &[layer], false);
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    write_layout_files(
        &fx.layout,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
    );
    fx.layers = vec![digest.clone()];
    fx.record();
    fx.fail_env(&[&digest], &[("OCIKIT_MAX_DECOMPRESSED", "1000000")]);

    // Without the variable (--output only, to keep the test fast).
    let (r, _) = run_bounded(&fx.out_args(&[]), &[]);
    assert_eq!(r.code, 0, "{}", r.err);
    fx.assert_contained();
    assert_eq!(fs::metadata(fx.o("zeros")).unwrap().len(), 8 << 20);
}

/// The same cap for a zstd layer, and for a bomb in a second layer after an
/// ordinary first one.
#[test]
fn zstd_bomb_is_capped() {
    let mut fx = Fx::new();
    fx.image_with(
        OCI_ZSTD,
        &[
            tarball(&[f("first", "ok")]),
            tarball(&[f("zeros", vec![0u8; 8 << 20])]),
        ],
    );
    let digest = fx.layers[1].clone();
    fx.fail_env(&[&digest], &[("OCIKIT_MAX_DECOMPRESSED", "1000000")]);
}

/// Layers whose blob matches its digest but whose tar is broken: a member
/// that claims 1 MiB with 10 bytes stored, random bytes, a plain tar stored
/// under the gzip media type. Errors naming the layer; no output.
#[test]
fn broken_tar_with_valid_digest_is_error() {
    let mut truncated = tarball(&[f("ok.txt", "ok"), f("big", vec![7u8; 1 << 20])]);
    truncated.truncate(1024 + 512 + 10);
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (label, media, bytes) in [
        ("truncated", OCI_TAR, truncated),
        ("garbage", OCI_TAR, garbage),
    ] {
        eprintln!("case {label}");
        let mut fx = Fx::new();
        fx.image_with(media, &[tarball(&[f("first", "ok")]), bytes]);
        let digest = fx.layers[1].clone();
        fx.fail(&[&digest]);
    }
    // A plain tar stored as "tar+gzip": put_blob, not put_layer (which
    // would compress it).
    let mut fx = Fx::new();
    fs::create_dir_all(fx.layout.join("blobs/sha256")).unwrap();
    let plain = tarball(&[f("ok.txt", "ok")]);
    let desc = put_blob(&fx.layout, OCI_GZIP, &plain);
    let digest = desc["digest"].as_str().unwrap().to_string();
    let mut entry = put_image(
        &fx.layout,
        host_arch(),
        None,
        &[(desc, digest_of(&plain))],
        false,
    );
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    write_layout_files(
        &fx.layout,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
    );
    fx.layers = vec![digest.clone()];
    fx.record();
    fx.fail(&[&digest]);
}

/// A name holding a newline cannot forge stderr lines: the error for
/// `../nl<LF>ocikit: error: injected` stays one line, and a duplicate entry
/// named `dup<LF>ocikit: error: injected` (a warning) prints no error line.
#[test]
fn names_with_newlines_keep_stderr_lines_intact() {
    let mut fx = Fx::new();
    fx.image(&[tarball(&[f("../nl\nocikit: error: injected", "x")])]);
    let digest = fx.layers[0].clone();
    fx.fail(&[&digest, "../nl"]);

    let mut fx = Fx::new();
    let name = "dup\nocikit: error: injected";
    fx.image(&[tarball(&[f(name, "1"), f(name, "2")])]);
    let r = fx.ok(&[]);
    assert!(
        !warnings(&r).is_empty(),
        "want a duplicate warning:\n{}",
        r.err
    );
    for line in r.err.lines() {
        assert!(
            line.starts_with("ocikit: warning: ") || line.starts_with("ocikit: note: "),
            "stderr line not from ocikit's own prefix (forged?): {line:?}\nstderr: {:?}",
            r.err
        );
    }
    assert_file(&fx.o(name), b"2");
}

// ---------------------------------------------------------------- 15. duplicates

/// Duplicates in one layer: last wins with a warning, also across types
/// (file, dir with a child, symlink; and dir with a child, then file).
#[test]
fn duplicate_entries_last_wins_with_warning() {
    let mut fx = Fx::new();
    fx.image(&[tarball(&[
        f("x", "f"),
        d("x/"),
        f("x/c", "c"),
        sym("x", "x-target"),
    ])]);
    let r = fx.ok(&[]);
    assert!(!warnings(&r).is_empty(), "want a warning:\n{}", r.err);
    assert_link(&fx.o("x"), "x-target");

    let mut fx = Fx::new();
    fx.image(&[tarball(&[d("y/"), f("y/c", "c"), f("y", "final")])]);
    let r = fx.ok(&[]);
    assert!(!warnings(&r).is_empty(), "want a warning:\n{}", r.err);
    assert_file(&fx.o("y"), b"final");
}

// ---------------------------------------------------------------- 16. --output rules

/// `--output` must be absent or an empty directory: a non-empty directory,
/// a file, or a symlink to the (non-empty) sentinel are refused untouched; a
/// symlink to an empty directory never gets the tree written into its
/// target; an empty directory works.
#[test]
fn output_dir_rules() {
    let out_only = |fx: &Fx| {
        let (r, _) = run_bounded(&fx.out_args(&[]), &[]);
        fx.assert_contained();
        r
    };

    // Non-empty directory.
    let mut fx = Fx::new();
    fx.image(&[tarball(&[f("ok.txt", "ok")])]);
    fs::create_dir(&fx.out).unwrap();
    fs::write(fx.out.join("precious"), "p").unwrap();
    fx.record();
    let before = full_snapshot(&fx.out);
    let r = out_only(&fx);
    let a = fx.out_args(&[]);
    assert_error(&a.iter().map(String::as_str).collect::<Vec<_>>(), &r, &[]);
    assert_eq!(full_snapshot(&fx.out), before);

    // A regular file.
    let mut fx = Fx::new();
    fx.image(&[tarball(&[f("ok.txt", "ok")])]);
    fs::write(&fx.out, "file").unwrap();
    fx.record();
    let before = full_snapshot(&fx.out);
    let r = out_only(&fx);
    assert_eq!(r.code, 2, "{}", r.err);
    assert_eq!(full_snapshot(&fx.out), before);

    // A symlink to the sentinel.
    let mut fx = Fx::new();
    fx.image(&[tarball(&[f("ok.txt", "ok")])]);
    std::os::unix::fs::symlink(&fx.sentinel, &fx.out).unwrap();
    fx.record();
    let r = out_only(&fx);
    assert_eq!(r.code, 2, "{}", r.err);
    assert_link(&fx.out, &fx.s());

    // A symlink to an empty directory.
    let mut fx = Fx::new();
    fx.image(&[tarball(&[f("ok.txt", "ok")])]);
    fs::create_dir(fx.dir.join("empty")).unwrap();
    std::os::unix::fs::symlink(fx.dir.join("empty"), &fx.out).unwrap();
    fx.record();
    let r = out_only(&fx);
    assert!(r.code == 0 || r.code == 2, "{}", r.err);
    assert!(
        names_in(&fx.dir.join("empty")).is_empty(),
        "wrote through the symlink"
    );

    // An empty directory.
    let mut fx = Fx::new();
    fx.image(&[tarball(&[f("ok.txt", "ok")])]);
    fs::create_dir(&fx.out).unwrap();
    fx.record();
    let r = out_only(&fx);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_file(&fx.o("ok.txt"), b"ok");
}

// ---------------------------------------------------------------- 17. corrupt blobs

/// A layer blob that no longer matches its digest is an error and no output
/// appears, even when the tar still reads cleanly: one flipped byte of file
/// data (after an intact first layer), the end blocks cut off, one flipped
/// byte in the middle of a gzip stream.
#[test]
fn corrupt_layer_blob_is_error() {
    type Damage = fn(&mut Vec<u8>);
    let cases: &[(&str, &str, Damage)] = &[
        ("flipped data byte", OCI_TAR, |b| b[512] ^= 0x20),
        ("cut end blocks", OCI_TAR, |b| b.truncate(b.len() - 1024)),
        ("flipped gzip byte", OCI_GZIP, |b| {
            let i = b.len() / 2;
            b[i] ^= 0xff;
        }),
    ];
    for (label, media, damage) in cases {
        eprintln!("case {label}");
        let mut fx = Fx::new();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fx.image_with(
            media,
            &[
                tarball(&[f("first.txt", "first")]),
                tarball(&[f("data.bin", &data), f("after.txt", "after")]),
            ],
        );
        let p = blob_path(&fx.layout, &json!({"digest": fx.layers[1]}));
        let mut b = fs::read(&p).unwrap();
        damage(&mut b);
        fs::write(&p, &b).unwrap();
        fx.record();
        fx.fail(&[]);
    }
}

// ---------------------------------------------------------------- more hostile cases

/// Symlink targets are kept byte for byte, in `--output` and in `--tar`
/// alike: `/`, `a//b`, `./x`, `a/./b`, `x/`, `../..`, a 150-byte target, a
/// non-UTF-8 target.
#[test]
fn symlink_targets_are_verbatim() {
    let long = "t/".repeat(75);
    let targets: Vec<Vec<u8>> = vec![
        b"/".to_vec(),
        b"a//b".to_vec(),
        b"./x".to_vec(),
        b"a/./b".to_vec(),
        b"x/".to_vec(),
        b"../..".to_vec(),
        long.into_bytes(),
        b"bad-\xff".to_vec(),
    ];
    let mut fx = Fx::new();
    let entries: Vec<E> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| sym(format!("l{i}"), t))
        .collect();
    fx.image(&[tarball(&entries)]);
    let (r, _) = run_bounded(&fx.out_args(&[]), &[]);
    assert_eq!(r.code, 0, "{}", r.err);
    for (i, t) in targets.iter().enumerate() {
        let got = fs::read_link(fx.o(&format!("l{i}"))).unwrap();
        assert_eq!(got.as_os_str().as_bytes(), &t[..], "--output l{i}");
    }
    let (r, _) = run_bounded(&fx.tar_args(&[]), &[]);
    assert_eq!(r.code, 0, "{}", r.err);
    let bytes = fs::read(&fx.tarf).unwrap();
    let mut a = tar::Archive::new(&bytes[..]);
    let mut seen = BTreeMap::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.header().entry_type() == tar::EntryType::Symlink {
            let name = norm(&e.path_bytes());
            seen.insert(name, e.link_name_bytes().unwrap().into_owned());
        }
    }
    let want: BTreeMap<String, Vec<u8>> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("l{i}"), t.clone()))
        .collect();
    let show = |m: &BTreeMap<String, Vec<u8>>| -> Vec<String> {
        m.iter()
            .map(|(k, v)| format!("{k} -> \"{}\"", v.escape_ascii()))
            .collect()
    };
    assert_eq!(show(&seen), show(&want), "--tar symlink targets");
    fx.assert_contained();
}

/// Layer 1 has `a` and its hardlink `b`; layer 2 writes a new file `b`
/// (mode 0600) and whites out nothing: `a` keeps its content and mode (no
/// write or chmod through the shared inode). Same for a file written over a
/// hardlink in one layer.
#[test]
fn file_over_hardlink_does_not_write_through() {
    let mut fx = Fx::new();
    fx.image(&[
        tarball(&[f("a", "orig"), hard("b", "a")]),
        tarball(&[f("b", "new").mode(0o600)]),
    ]);
    fx.ok(&[]);
    assert_file(&fx.o("a"), b"orig");
    assert_file(&fx.o("b"), b"new");
    let md = fs::symlink_metadata(fx.o("a")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.nlink()), (0o644, 1));

    let mut fx = Fx::new();
    fx.image(&[tarball(&[f("a", "orig"), hard("b", "a"), f("b", "new")])]);
    fx.ok(&[]);
    assert_file(&fx.o("a"), b"orig");
    assert_file(&fx.o("b"), b"new");
}

/// A directory's mode and times, if applied late, must not be applied
/// through a symlink that later replaced it: `d/` (0777) then `d ->
/// <sentinel>`, in one layer, across layers, and after a whiteout of `d`.
#[test]
fn late_dir_metadata_does_not_follow_a_later_symlink() {
    for variant in ["same layer", "next layer", "whiteout"] {
        eprintln!("case {variant}");
        let mut fx = Fx::new();
        let s = fx.s();
        let dir = || d("d/").mode(0o777);
        let layers = match variant {
            "same layer" => vec![tarball(&[dir(), f("d/f", "f"), sym("d", &s)])],
            "next layer" => vec![tarball(&[dir(), f("d/f", "f")]), tarball(&[sym("d", &s)])],
            _ => vec![
                tarball(&[dir(), f("d/f", "f")]),
                tarball(&[f(".wh.d", ""), sym("d", &s)]),
            ],
        };
        fx.image(&layers);
        fx.ok(&[]);
        assert_link(&fx.o("d"), &s);
    }
}

/// Removing a directory that holds symlinks to the sentinel (`.wh.dir`, an
/// opaque marker, a same-layer or next-layer replacement by a file or a
/// symlink) never follows them.
#[test]
fn removals_do_not_follow_symlinks_inside() {
    for variant in [
        "whiteout",
        "opaque",
        "file same layer",
        "file next layer",
        "symlink next layer",
    ] {
        eprintln!("case {variant}");
        let mut fx = Fx::new();
        let s = fx.s();
        let lower = vec![
            d("dir/"),
            sym("dir/l", &s),
            sym("dir/k", format!("{s}/keep")),
            d("dir/sub/"),
            sym("dir/sub/up", "../../dir/l"),
        ];
        let layers = match variant {
            "whiteout" => vec![tarball(&lower), tarball(&[f(".wh.dir", "")])],
            "opaque" => vec![
                tarball(&lower),
                tarball(&[d("dir/"), f("dir/.wh..wh..opq", "")]),
            ],
            "file same layer" => {
                let mut l = lower.clone();
                l.push(f("dir", "file"));
                vec![tarball(&l)]
            }
            "file next layer" => vec![tarball(&lower), tarball(&[f("dir", "file")])],
            _ => vec![tarball(&lower), tarball(&[sym("dir", "elsewhere")])],
        };
        fx.image(&layers);
        fx.ok(&[]);
    }
}

/// `--rootless` records owners in an xattr: on symlinks to the sentinel
/// (with uid 4242) and a hardlink to such a symlink that xattr must never
/// land on the sentinel.
#[test]
fn rootless_owner_records_never_land_on_symlink_targets() {
    let mut fx = Fx::new();
    let s = fx.s();
    fx.image(&[tarball(&[
        sym("l", format!("{s}/keep")).uid(4242),
        sym("ld", &s).uid(4242),
        hard("h", "l").uid(4243),
    ])]);
    fx.ok(&["--rootless"]);
    assert_link(&fx.o("l"), &format!("{s}/keep"));
    assert_link(&fx.o("ld"), &s);
}

/// `SCHILY.xattr.user.pwn` on symlinks to the sentinel and to its `keep` is
/// never set on them (Linux refuses user xattrs on symlinks: an error or a
/// warning, never a write through); the same xattr on a regular file is
/// set. With and without `--rootless`.
#[test]
fn xattrs_on_symlinks_do_not_follow() {
    for rootless in [false, true] {
        eprintln!("case rootless={rootless}");
        let mut fx = Fx::new();
        let s = fx.s();
        fx.image(&[tarball(&[
            sym("l", format!("{s}/keep")).xattr("user.pwn", b"1"),
            sym("ld", &s).xattr("user.pwn", b"1"),
            f("plain", "p").xattr("user.ok", b"1"),
        ])]);
        let extra: &[&str] = if rootless { &["--rootless"] } else { &[] };
        let (r, _) = fx.both(&[0, 2], extra, &[]);
        if r.code == 0 {
            assert_eq!(
                xattrs_of(&fx.o("plain"))
                    .into_iter()
                    .filter(|(k, _)| k == "user.ok")
                    .count(),
                1,
                "user.ok on a regular file should be set"
            );
        }
    }
}

/// A sparse member is an expansion bomb of its own: a 2 KiB layer holding
/// an old-GNU sparse file of apparent size 64 MiB, with
/// OCIKIT_MAX_DECOMPRESSED=1000000. The cap must hold for what the layer
/// expands to: either an error naming the layer, or a `--tar` stream that
/// stays small (sparse kept sparse). Writing 64 MiB of zeros from 2 KiB is
/// the bug (with the apparent size in base-256, a few KB become terabytes).
#[test]
fn sparse_bomb_is_capped() {
    let mut fx = Fx::new();
    fx.image(&[tarball(&[E::new(
        "sparse",
        Kind::Sparse(64 << 20, vec![b'A'; 512]),
        0o644,
    )])]);
    let digest = fx.layers[0].clone();
    let env = [("OCIKIT_MAX_DECOMPRESSED", "1000000")];
    let (r, _) = run_bounded(&fx.out_args(&[]), &env);
    fx.assert_contained();
    let (t, _) = run_bounded(&fx.tar_args(&[]), &env);
    fx.assert_contained();
    if t.code == 2 {
        let a = fx.tar_args(&[]);
        assert_error(
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            &t,
            &[&digest],
        );
    } else {
        assert_eq!(t.code, 0, "{}", t.err);
        let len = fs::metadata(&fx.tarf).unwrap().len();
        assert!(
            len < 1_000_000,
            "--tar wrote {len} bytes from a {}-byte layer under a 1,000,000-byte cap \
             (--output exited {}; the sparse file's apparent size is not capped)",
            fs::metadata(blob_path(&fx.layout, &json!({"digest": digest})))
                .unwrap()
                .len(),
            r.code
        );
    }
}

/// `--rootless --tar`: owners not set on disk are recorded by (dev, inode);
/// a file (or directory) that reuses the inode of a removed one must not
/// inherit its owner. Twenty files owned by 4242 are whited out and twenty
/// files and twenty directories owned by 0 created (then: twenty same-layer
/// duplicates, 4242 then 0); every member must be 0/0 in the tar, as it is
/// without --rootless.
#[test]
fn rootless_tar_owners_do_not_leak_through_inode_reuse() {
    let n = 20;
    let old: Vec<E> = (0..n)
        .map(|i| f(format!("a{i}"), "old").uid(4242))
        .collect();
    let gone: Vec<E> = (0..n).map(|i| f(format!(".wh.a{i}"), "")).collect();
    let new: Vec<E> = (0..n)
        .flat_map(|i| [f(format!("b{i}"), "new"), d(format!("c{i}/"))])
        .collect();
    let dups: Vec<E> = (0..n)
        .flat_map(|i| {
            [
                f(format!("a{i}"), "old").uid(4242),
                f(format!("a{i}"), "new"),
            ]
        })
        .collect();
    for (label, layers) in [
        (
            "whiteout",
            vec![tarball(&old), tarball(&[gone, new].concat())],
        ),
        ("duplicate", vec![tarball(&dups)]),
    ] {
        for rootless in [false, true] {
            eprintln!("case {label} rootless={rootless}");
            let mut fx = Fx::new();
            fx.image(&layers);
            let extra: &[&str] = if rootless { &["--rootless"] } else { &[] };
            let (t, _) = run_bounded(&fx.tar_args(extra), &[]);
            assert_eq!(t.code, 0, "{}", t.err);
            fx.assert_contained();
            let bytes = fs::read(&fx.tarf).unwrap();
            let mut a = tar::Archive::new(&bytes[..]);
            let mut wrong = Vec::new();
            for e in a.entries().unwrap() {
                let e = e.unwrap();
                let name = norm(&e.path_bytes());
                let h = e.header();
                let (uid, gid) = (h.uid().unwrap(), h.gid().unwrap());
                if (uid, gid) != (0, 0) {
                    wrong.push(format!("{name} {uid}/{gid}"));
                }
            }
            assert!(wrong.is_empty(), "wrong owners in the tar: {wrong:?}");
        }
    }
}

// ---------------------------------------------------------------- signals and hostile layouts

/// A zstd frame that decompresses to a tar holding one member `zeros` of
/// `n` zero bytes (`n` a multiple of 128 KiB), written by hand as RLE blocks
/// so that neither building nor storing it costs time or memory.
fn zstd_zero_tar(n: u64) -> Vec<u8> {
    const BLOCK: u64 = 128 << 10;
    assert_eq!(n % BLOCK, 0);
    let hdr = header(b"zeros", b'0', n as usize, (0o644, 0, &[], (0, 0)));
    let block = |last: bool, kind: u32, size: u64| -> [u8; 3] {
        let v = u32::from(last) | (kind << 1) | ((size as u32) << 3);
        [v as u8, (v >> 8) as u8, (v >> 16) as u8]
    };
    // Magic; frame header: no content size, no checksum, 128 KiB window.
    let mut z = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
    z.extend_from_slice(&block(false, 0, 512));
    z.extend_from_slice(&hdr);
    for _ in 0..n / BLOCK {
        z.extend_from_slice(&block(false, 1, BLOCK));
        z.push(0);
    }
    // The two end-of-archive blocks.
    z.extend_from_slice(&block(true, 1, 1024));
    z.push(0);
    z
}

/// SIGTERM or SIGINT mid-way (Ctrl-C, `timeout`, a stopped service) is a
/// failure ocikit can handle: `out` must not appear and no
/// `.ocikit-flatten-*` may remain. (SIGKILL cannot be handled; not tested.)
/// The layer is 512 MiB of zeros in a 16 KiB zstd frame; the signal is sent
/// 100 ms after the staging directory appears.
fn signal_mid_way(label: &str, sig: libc::c_int) {
    let mut fx = Fx::new();
    fs::create_dir_all(fx.layout.join("blobs/sha256")).unwrap();
    let z = zstd_zero_tar(512 << 20);
    let layer = put_blob(&fx.layout, OCI_ZSTD, &z);
    // The diff_id is not computed (it would take seconds): the run is
    // stopped long before it could be checked.
    let diff_id = format!("sha256:{}", "0".repeat(64));
    let mut entry = put_image(&fx.layout, host_arch(), None, &[(layer, diff_id)], false);
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    write_layout_files(
        &fx.layout,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
    );
    fx.record();
    let mut cmd = Command::new(bin());
    cmd.args(fx.out_args(&[]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    default_disposition(&mut cmd, sig);
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !names_in(&fx.dir)
        .iter()
        .any(|n| n.starts_with(".ocikit-flatten-"))
    {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("ocikit ended ({s}) before a staging directory appeared");
        }
        assert!(Instant::now() < deadline, "no staging directory after 20 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        child.try_wait().unwrap().is_none(),
        "inconclusive: ocikit finished before it could be signalled"
    );
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("ocikit did not stop within 60 s of {label}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!("{label}: {status}");
    assert_absent(&fx.out);
    fx.assert_contained();
}

/// See [`signal_mid_way`].
#[test]
fn sigterm_leaves_no_staging_directory() {
    signal_mid_way("SIGTERM", libc::SIGTERM);
}

/// As above, with SIGINT (Ctrl-C).
#[test]
fn sigint_leaves_no_staging_directory() {
    signal_mid_way("SIGINT", libc::SIGINT);
}

/// Hostile layouts: a layer digest that is a path (`sha256:../../…`,
/// `sha256:/etc/passwd`) and a layer blob that is a FIFO (which would block
/// an open for ever) are errors, not hangs and not reads outside the layout.
#[test]
fn hostile_layer_blobs_are_errors() {
    for bad in [
        "sha256:../../../sentinel/keep",
        "sha256:/etc/passwd",
        "sha256/../../../sentinel:keep",
    ] {
        eprintln!("case {bad}");
        let mut fx = Fx::new();
        fx.image(&[tarball(&[f("ok.txt", "ok")])]);
        let idx = index_json(&fx.layout);
        let mut entry = idx["manifests"][0].clone();
        let mut m: Value =
            serde_json::from_slice(&blob_bytes(&fx.layout, entry["digest"].as_str().unwrap()))
                .unwrap();
        m["layers"][0]["digest"] = json!(bad);
        let desc = put_blob(&fx.layout, OCI_MANIFEST, &to_bytes(&m));
        entry["digest"] = desc["digest"].clone();
        entry["size"] = desc["size"].clone();
        write_layout_files(
            &fx.layout,
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
        );
        fx.record();
        fx.fail(&[]);
    }

    let mut fx = Fx::new();
    fx.image(&[tarball(&[f("ok.txt", "ok")])]);
    let p = blob_path(&fx.layout, &json!({"digest": fx.layers[0]}));
    fs::remove_file(&p).unwrap();
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    fx.record();
    fx.fail(&[]);
}

/// Extreme header fields never panic or hang: PAX times far out of range or
/// malformed, a uid past 32 bits, a size far past the data, a NUL inside a
/// PAX path or link path. Either an error (naming the layer) or a contained
/// result.
#[test]
fn extreme_header_fields_do_not_panic() {
    let cases: Vec<(&str, E)> = vec![
        (
            "mtime huge",
            f("t", "x").record("mtime", b"99999999999999999999"),
        ),
        (
            "mtime min",
            f("t", "x").record("mtime", b"-9223372036854775808"),
        ),
        (
            "mtime i64 max",
            f("t", "x").record("mtime", b"9223372036854775807"),
        ),
        (
            "mtime frac",
            f("t", "x").record("mtime", b"1.99999999999999999999"),
        ),
        ("mtime negative frac", f("t", "x").record("mtime", b"-1.5")),
        ("mtime junk", f("t", "x").record("mtime", b"1e9")),
        ("dir mtime huge", d("dd/").record("mtime", b"99999999999")),
        (
            "symlink mtime min",
            sym("s", "t").record("mtime", b"-99999999999"),
        ),
        ("uid 2^40", f("t", "x").record("uid", b"1099511627776")),
        ("uid u32 max", f("t", "x").record("uid", b"4294967295")),
        (
            "size past data",
            f("t", "x").record("size", b"1000000000000000000"),
        ),
        ("NUL in path", f("t", "x").record("path", b"a\0../../evil")),
        (
            "NUL in linkpath",
            sym("s", "t").record("linkpath", b"/x\0/../../evil"),
        ),
        ("empty path", f("t", "x").record("path", b"")),
    ];
    for (label, e) in cases {
        eprintln!("case {label}");
        let mut fx = Fx::new();
        fx.image(&[tarball(&[f("ok.txt", "ok"), e])]);
        let (r, t) = fx.both(&[0, 2], &[], &[]);
        for (mode, run) in [("--output", &r), ("--tar", &t)] {
            if run.code == 2 {
                assert!(
                    run.err
                        .lines()
                        .any(|l| l.starts_with("ocikit: error: ")
                            && l.contains(fx.layers[0].as_str())),
                    "{label} {mode}: the error should name the layer:\n{}",
                    run.err
                );
            }
        }
        eprintln!("{label}: --output {} {}", r.code, r.err.trim());
    }
}
