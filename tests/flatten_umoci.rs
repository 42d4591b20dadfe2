//! Interoperability of `ocikit flatten` / `ocikit squash` with umoci: images
//! are built with umoci's own workflow (unpack, change the rootfs, repack),
//! plus one hand-made layer for what umoci cannot write (nanosecond mtimes, an
//! explicit opaque whiteout, a hardlink to a file of a lower layer); then
//! `umoci unpack` and `ocikit flatten` must give the same tree, entry by entry
//! (type, mode incl. setuid/setgid/sticky, owners, size, content, symlink
//! target, device numbers, xattrs, mtime with nanoseconds, hardlink groups).
//!
//! Every test skips loudly when umoci (or skopeo, where needed) is missing;
//! checks that need root (owners, devices, `trusted.*` xattrs, GNU tar
//! extraction with owners) are skipped when not running as root.
//!
//! Known differences, each asserted exactly (not just ignored) where it
//! applies:
//! - ocikit decisions: implied parent directories get 0755 and mtime 0, and
//!   a root without a `./` entry 0755 and mtime 0 (umoci stamps both with the
//!   unpack time); `--rootless` skips char/block devices with one warning
//!   (umoci writes an empty regular file with the device's permission bits).
//! - umoci 0.4.7 faults: an mtime past ustar's 11 octal digits comes back as
//!   INT32_MIN ([`scan_umoci`]); an explicit directory entry whose implied
//!   child is created later keeps the unpack time; old GNU sparse entries
//!   (typeflag 'S') are refused; as non-root, `--rootless` loses the owner
//!   record of entries the owner cannot write ([`umoci_lost_owner_records`]).
//! - Both agree, doubtfully: a whiteout written after a same-layer symlink
//!   that replaced its parent directory is applied through that symlink
//!   (see [`assert_semantics`], etc/y).
//!
//! Set `FLATTEN_UMOCI_KEEP=1` to keep the scratch directories for debugging.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};

// ====================================================================== tree snapshots

/// Everything compared about one path of a tree. atime and ctime are never
/// compared (they cannot be set / are not meaningful).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    kind: &'static str,
    /// `mode & 0o7777`: permission bits with setuid, setgid and sticky.
    mode: u32,
    uid: u32,
    gid: u32,
    /// Regular files only.
    size: Option<u64>,
    /// sha256 of a regular file's content.
    sha256: Option<String>,
    /// Symlink target.
    target: Option<String>,
    /// (major, minor) of char and block devices.
    rdev: Option<(u32, u32)>,
    /// Sorted `(name, hex(value))`.
    xattrs: Vec<(String, String)>,
    /// (seconds, nanoseconds).
    mtime: (i64, i64),
    /// For a path sharing its inode with other paths of the tree: the first
    /// of those paths (in sorted order), itself included. Raw inode numbers
    /// are never compared.
    link_group: Option<String>,
}

/// Relative path (`.` for the root) → metadata, sorted.
type Tree = BTreeMap<String, Meta>;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The extended attributes of `p` itself (never following a symlink), sorted,
/// values hex-encoded.
fn xattrs_of(p: &Path) -> Vec<(String, String)> {
    let c = cpath(p);
    // SAFETY: a null buffer of size 0 asks for the size of the list.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Vec::new();
        }
        panic!("llistxattr {}: {e}", p.display());
    }
    if n == 0 {
        return Vec::new();
    }
    let mut names = vec![0u8; n as usize + 256];
    // SAFETY: `names` is writable for its full length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cname = CString::new(name).unwrap();
        // SAFETY: size query with a null buffer.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        assert!(
            len >= 0,
            "lgetxattr {} {}: {}",
            p.display(),
            String::from_utf8_lossy(name),
            std::io::Error::last_os_error()
        );
        let mut val = vec![0u8; len as usize + 64];
        // SAFETY: `val` is writable for its full length.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        assert!(len >= 0, "lgetxattr {}", p.display());
        val.truncate(len as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), hex(&val)));
    }
    out.sort();
    out
}

fn dev_major(d: u64) -> u32 {
    (((d >> 8) & 0xfff) | ((d >> 32) & !0xfff)) as u32
}

fn dev_minor(d: u64) -> u32 {
    ((d & 0xff) | ((d >> 12) & !0xff)) as u32
}

/// Walks `root` (lstat only, never following symlinks) into a [`Tree`].
/// As non-root, directories and files the owner cannot read (a 0000
/// directory, a 0000 file) are opened up for the walk and put back after it;
/// their original modes are reported (chmod changes neither mtime nor
/// content; ctime is never compared).
fn scan(root: &Path) -> Tree {
    let mut opened: Vec<(PathBuf, u32)> = Vec::new();
    if !is_root_cached() {
        open_up(root, &mut opened);
    }
    let mut tree = scan_raw(root);
    for (p, mode) in opened.iter().rev() {
        fs::set_permissions(p, fs::Permissions::from_mode(*mode)).unwrap();
        let rel = p.strip_prefix(root).unwrap();
        let rel = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            rel.to_string_lossy().into_owned()
        };
        if let Some(m) = tree.get_mut(&rel) {
            m.mode = mode & 0o7777;
        }
    }
    tree
}

fn is_root_cached() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(is_root)
}

/// Gives the owner read (and, for directories, search) permission where it
/// lacks it, top-down; records (path, original mode).
fn open_up(p: &Path, opened: &mut Vec<(PathBuf, u32)>) {
    let md = fs::symlink_metadata(p).unwrap();
    let mode = md.mode() & 0o7777;
    let ft = md.file_type();
    let need = if ft.is_dir() {
        0o700
    } else if ft.is_file() {
        0o400
    } else {
        return;
    };
    if mode & need != need {
        fs::set_permissions(p, fs::Permissions::from_mode(mode | need)).unwrap();
        opened.push((p.to_path_buf(), mode));
    }
    if ft.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            open_up(&e.unwrap().path(), opened);
        }
    }
}

fn scan_raw(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut inodes: HashMap<String, (u64, u64)> = HashMap::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.unwrap_or_else(|e| panic!("walking {}: {e}", root.display()));
        let rel = e.path().strip_prefix(root).unwrap();
        let rel = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            rel.to_string_lossy().into_owned()
        };
        let md = fs::symlink_metadata(e.path()).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_socket() {
            "socket"
        } else {
            "unknown"
        };
        let (size, sha256) = if kind == "file" {
            (
                Some(md.len()),
                Some(sha256_hex(&fs::read(e.path()).unwrap())),
            )
        } else {
            (None, None)
        };
        let target = (kind == "symlink").then(|| {
            fs::read_link(e.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        });
        let rdev =
            matches!(kind, "char" | "block").then(|| (dev_major(md.rdev()), dev_minor(md.rdev())));
        if kind != "dir" {
            inodes.insert(rel.clone(), (md.dev(), md.ino()));
        }
        tree.insert(
            rel,
            Meta {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size,
                sha256,
                target,
                rdev,
                xattrs: xattrs_of(e.path()),
                mtime: (md.mtime(), md.mtime_nsec()),
                link_group: None,
            },
        );
    }
    // Hardlink groups: inode → first path (sorted) holding it.
    let mut count: HashMap<(u64, u64), usize> = HashMap::new();
    for ino in inodes.values() {
        *count.entry(*ino).or_default() += 1;
    }
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    for (path, meta) in tree.iter_mut() {
        if let Some(ino) = inodes.get(path) {
            if count[ino] > 1 {
                let f = first.entry(*ino).or_insert_with(|| path.clone());
                meta.link_group = Some(f.clone());
            }
        }
    }
    tree
}

fn field_diffs(x: &Meta, y: &Meta) -> Vec<String> {
    let mut d = Vec::new();
    if x.kind != y.kind {
        d.push(format!("type {} vs {}", x.kind, y.kind));
    }
    if x.mode != y.mode {
        d.push(format!("mode {:04o} vs {:04o}", x.mode, y.mode));
    }
    if (x.uid, x.gid) != (y.uid, y.gid) {
        d.push(format!("owner {}:{} vs {}:{}", x.uid, x.gid, y.uid, y.gid));
    }
    if x.size != y.size {
        d.push(format!("size {:?} vs {:?}", x.size, y.size));
    }
    if x.sha256 != y.sha256 {
        let short = |s: &Option<String>| s.as_deref().map(|h| h[..12].to_string());
        d.push(format!(
            "content sha256 {:?} vs {:?}",
            short(&x.sha256),
            short(&y.sha256)
        ));
    }
    if x.target != y.target {
        d.push(format!("symlink target {:?} vs {:?}", x.target, y.target));
    }
    if x.rdev != y.rdev {
        d.push(format!("rdev {:?} vs {:?}", x.rdev, y.rdev));
    }
    if x.xattrs != y.xattrs {
        d.push(format!("xattrs {:?} vs {:?}", x.xattrs, y.xattrs));
    }
    if x.mtime != y.mtime {
        d.push(format!(
            "mtime {}.{:09} vs {}.{:09}",
            x.mtime.0, x.mtime.1, y.mtime.0, y.mtime.1
        ));
    }
    if x.link_group != y.link_group {
        let g = |o: &Option<String>| match o {
            Some(p) => format!("same group as {p}"),
            None => "not hardlinked".to_string(),
        };
        d.push(format!(
            "hardlink {} vs {}",
            g(&x.link_group),
            g(&y.link_group)
        ));
    }
    d
}

/// One line per differing path: `path: field a vs b; ...`.
fn diff_trees(an: &str, a: &Tree, bn: &str, b: &Tree) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (Some(x), None) => out.push(format!("{k}: only in {an} ({})", x.kind)),
            (None, Some(y)) => out.push(format!("{k}: only in {bn} ({})", y.kind)),
            (Some(x), Some(y)) => {
                let f = field_diffs(x, y);
                if !f.is_empty() {
                    out.push(format!("{k}: {}", f.join("; ")));
                }
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

/// Panics with the first 20 differing paths when the trees differ.
#[track_caller]
fn assert_same_trees(what: &str, an: &str, a: &Tree, bn: &str, b: &Tree) {
    let d = diff_trees(an, a, bn, b);
    if !d.is_empty() {
        let shown = d.len().min(20);
        panic!(
            "{what}: {} of {}/{} paths differ (left = {an}, right = {bn}); first {shown}:\n  {}",
            d.len(),
            a.len(),
            b.len(),
            d[..shown].join("\n  ")
        );
    }
}

/// The mtime the fixture's layer 1 records for times/far (see [`scan_umoci`]).
static FAR_MTIME: OnceLock<i64> = OnceLock::new();

/// [`scan`] of a tree umoci unpacked, with umoci 0.4.7's one known wrong
/// value put right: an mtime past the 11 octal digits of ustar (times/far,
/// set to 10000000000 = year 2286; umoci's repack as root stores the PAX
/// record `mtime=10000000000`) is restored by `umoci unpack` as
/// -2147483648 (INT32_MIN), a truncation in umoci. ocikit restores the
/// layer's value; the comparison takes the layer's value for umoci. (As
/// non-root, umoci's rootless repack already records -2147483648 in the
/// layer, so then there is nothing to put right.)
fn scan_umoci(root: &Path) -> Tree {
    let mut t = scan(root);
    if let (Some(m), Some(far)) = (t.get_mut("times/far"), FAR_MTIME.get()) {
        if m.mtime == (i32::MIN as i64, 0) {
            m.mtime = (*far, 0);
        }
    }
    t
}

/// The PAX/ustar mtime layer 1 of the fixture records for times/far.
fn far_mtime_in_layer(layout: &Path) -> i64 {
    let (_, m) = manifest_of(layout, TAG);
    let l = &m["layers"][0];
    let bytes = blob_bytes(layout, l["digest"].as_str().unwrap());
    for (p, _, _, pax) in layer_entries(&bytes, l["mediaType"].as_str().unwrap()) {
        if p == "times/far" {
            let v = pax
                .iter()
                .find(|(k, _)| k == "mtime")
                .expect("times/far has a PAX mtime");
            return String::from_utf8_lossy(&v.1).parse().unwrap();
        }
    }
    panic!("layer 1 has no times/far");
}

/// ocikit's warning lines.
fn warnings_of(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("ocikit: warning:"))
        .collect()
}

/// umoci 0.4.7 fault, non-root only: `umoci unpack --rootless` run by a
/// non-root user silently fails to store the `user.rootlesscontainers`
/// owner record on entries the owner cannot write (a 0555 directory, a 0444
/// or 0000 file: setting a user.* xattr needs write permission, and umoci
/// sets it after the mode), so their owner is lost. ocikit stores it. For
/// exactly those entries (umoci has no record, the mode has no owner-write
/// bit, ocikit has a record), ocikit's record is taken over for umoci.
fn umoci_lost_owner_records(theirs: &mut Tree, ours: &Tree) {
    if !is_root_cached() {
        take_over_owner_records(theirs, ours);
    }
}

/// The work of [`umoci_lost_owner_records`], for trees umoci unpacked as a
/// non-root user.
fn take_over_owner_records(theirs: &mut Tree, ours: &Tree) {
    const KEY: &str = "user.rootlesscontainers";
    for (p, u) in theirs.iter_mut() {
        let Some(o) = ours.get(p) else { continue };
        let Some(rec) = o.xattrs.iter().find(|(k, _)| k == KEY) else {
            continue;
        };
        if u.kind != "symlink" && u.mode & 0o200 == 0 && !u.xattrs.iter().any(|(k, _)| k == KEY) {
            u.xattrs.push(rec.clone());
            u.xattrs.sort();
        }
    }
}

// ====================================================================== scratch dirs

/// A temporary directory removed on drop even when it holds read-only
/// directories (kept when `FLATTEN_UMOCI_KEEP` is set).
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn new(name: &str) -> Scratch {
        Scratch(Some(
            tempfile::Builder::new()
                .prefix(&format!("ocikit-flatten-umoci-{name}-"))
                .tempdir()
                .unwrap(),
        ))
    }
    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

fn remove_all(p: &Path) {
    // Read-only directories (0555 and the like) block removal as a non-root
    // user: open them up first.
    for e in walkdir::WalkDir::new(p).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o700));
        }
    }
    let _ = fs::remove_dir_all(p);
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            if std::env::var_os("FLATTEN_UMOCI_KEEP").is_some() {
                eprintln!("keeping {}", t.keep().display());
            } else {
                remove_all(t.path());
            }
        }
    }
}

// ====================================================================== changing a rootfs

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn mkdir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).unwrap();
}

fn chmod(root: &Path, rel: &str, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(root: &Path, rel: &str, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(root.join(rel), Some(uid), Some(gid)).unwrap();
}

/// Sets atime and mtime of `rel` itself (a symlink is not followed).
fn set_mtime(root: &Path, rel: &str, sec: i64, nsec: i64) {
    let c = cpath(&root.join(rel));
    let ts = [
        libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as _,
        },
        libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as _,
        },
    ];
    // SAFETY: valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {rel}: {}", std::io::Error::last_os_error());
}

fn setxattr(root: &Path, rel: &str, name: &str, value: &[u8]) {
    let c = cpath(&root.join(rel));
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "lsetxattr {rel} {name}: {}",
        std::io::Error::last_os_error()
    );
}

fn removexattr(root: &Path, rel: &str, name: &str) {
    let c = cpath(&root.join(rel));
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings.
    let r = unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
    assert_eq!(r, 0, "lremovexattr {rel} {name}");
}

fn mknod(root: &Path, rel: &str, kind: libc::mode_t, mode: u32, major: u32, minor: u32) {
    let c = cpath(&root.join(rel));
    let dev = libc::makedev(major, minor);
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | mode as libc::mode_t, dev) };
    assert_eq!(r, 0, "mknod {rel}: {}", std::io::Error::last_os_error());
    chmod(root, rel, mode);
}

fn mkfifo(root: &Path, rel: &str, mode: u32) {
    let c = cpath(&root.join(rel));
    // SAFETY: valid C string.
    let r = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    assert_eq!(r, 0, "mkfifo {rel}: {}", std::io::Error::last_os_error());
    chmod(root, rel, mode);
}

fn ln(root: &Path, existing: &str, new: &str) {
    fs::hard_link(root.join(existing), root.join(new)).unwrap();
}

fn sym(root: &Path, target: &str, rel: &str) {
    symlink(target, root.join(rel)).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

// ====================================================================== umoci

const TAG: &str = "base";

fn umoci(args: &[&str]) {
    run_ok("umoci", args);
}

/// `umoci unpack [--rootless] --image IMAGE BUNDLE`; returns BUNDLE/rootfs.
fn umoci_unpack(image: &str, bundle: &Path, rootless: bool) -> PathBuf {
    let mut args = vec!["unpack"];
    if rootless {
        args.push("--rootless");
    }
    let b = s(bundle);
    args.extend(["--image", image, &b]);
    umoci(&args);
    bundle.join("rootfs")
}

/// One umoci layer: unpack into a fresh bundle, let `change` edit the rootfs,
/// repack onto the same tag.
fn umoci_layer(work: &Path, image: &str, n: usize, rootless: bool, change: impl FnOnce(&Path)) {
    let bundle = work.join(format!("bundle-{n}"));
    let rootfs = umoci_unpack(image, &bundle, rootless);
    change(&rootfs);
    umoci(&[
        "repack",
        "--history.created_by",
        &format!("flatten_umoci layer {n}"),
        "--image",
        image,
        &s(&bundle),
    ]);
    remove_all(&bundle);
}

/// Appends a hand-made layer (gzip) to the image tagged `tag` of `layout`:
/// new config (diff_id + history), new manifest, index.json entry moved.
fn append_layer(layout: &Path, tag: &str, tar_bytes: &[u8], created_by: &str) {
    let mut idx = index_json(layout);
    let pos = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in index.json");
    let mdigest = idx["manifests"][pos]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut m: Value = serde_json::from_slice(&blob_bytes(layout, &mdigest)).unwrap();
    let mut cfg: Value =
        serde_json::from_slice(&blob_bytes(layout, m["config"]["digest"].as_str().unwrap()))
            .unwrap();
    let (ldesc, diff_id) = put_layer(layout, OCI_GZIP, tar_bytes);
    m["layers"].as_array_mut().unwrap().push(ldesc);
    cfg["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(diff_id));
    if !cfg["history"].is_array() {
        cfg["history"] = json!([]);
    }
    cfg["history"]
        .as_array_mut()
        .unwrap()
        .push(json!({"created": "2024-01-01T00:00:00Z", "created_by": created_by}));
    let cdesc = put_blob(layout, OCI_CONFIG, &to_bytes(&cfg));
    m["config"] = cdesc;
    let mdesc = put_blob(layout, OCI_MANIFEST, &to_bytes(&m));
    idx["manifests"][pos]["digest"] = mdesc["digest"].clone();
    idx["manifests"][pos]["size"] = mdesc["size"].clone();
    fs::write(layout.join("index.json"), to_bytes(&idx)).unwrap();
}

/// A tar entry with PAX records (for fractional mtimes and xattrs, which
/// umoci's repack cannot produce).
struct Pax<'a> {
    path: &'a str,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: &'a str,
    data: &'a [u8],
    link: Option<&'a str>,
    xattrs: &'a [(&'a str, &'a [u8])],
}

fn pax(path: &'static str, kind: tar::EntryType, mode: u32, mtime: &'static str) -> Pax<'static> {
    Pax {
        path,
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime,
        data: b"",
        link: None,
        xattrs: &[],
    }
}

fn pax_tar(entries: &[Pax]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut records: Vec<(String, Vec<u8>)> = vec![("mtime".into(), e.mtime.into())];
        for (k, v) in e.xattrs {
            records.push((format!("SCHILY.xattr.{k}"), v.to_vec()));
        }
        b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        let secs: f64 = e.mtime.parse().unwrap();
        h.set_mtime(secs.max(0.0) as u64);
        h.set_size(e.data.len() as u64);
        match e.link {
            Some(l) => b.append_link(&mut h, e.path, l).unwrap(),
            None => b.append_data(&mut h, e.path, e.data).unwrap(),
        }
    }
    b.into_inner().unwrap()
}

// ====================================================================== the fixture

/// The big multi-layer image, built once per test process.
struct Fixture {
    /// Scratch root (removed at exit).
    dir: PathBuf,
    layout: PathBuf,
    /// `LAYOUT:base`.
    image: String,
    /// `umoci unpack` of the image (as root; `--rootless` otherwise).
    umoci_rootfs: PathBuf,
    root: bool,
    /// Char/block devices in the image (root only).
    devices: Vec<&'static str>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

extern "C" fn cleanup_fixture() {
    if let Some(f) = FIXTURE.get() {
        if std::env::var_os("FLATTEN_UMOCI_KEEP").is_some() {
            eprintln!("keeping {}", f.dir.display());
        } else {
            remove_all(&f.dir);
        }
    }
}

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let f = build_fixture();
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(cleanup_fixture) };
        f
    })
}

/// Layer 1: a bit of everything.
fn layer1(r: &Path, root: bool) {
    mkdir(r, "etc");
    write(r, "etc/hostname", b"ocikit\n");
    write(r, "etc/empty", b"");
    // A large file (~3 MiB).
    write(
        r,
        "big/blob.bin",
        &noise(3 * 1024 * 1024 + 17, 0x9e37_79b9_7f4a_7c15),
    );
    // Unusual directory modes.
    write(r, "priv/secret", b"secret\n");
    chmod(r, "priv", 0o700);
    write(r, "ro/file", b"in a 0555 directory\n");
    chmod(r, "ro", 0o555);
    write(r, "ro2/old", b"cleared by an opaque whiteout\n");
    write(r, "ro2/sub/old", b"cleared by an opaque whiteout\n");
    chmod(r, "ro2", 0o555);
    mkdir(r, "tmp");
    chmod(r, "tmp", 0o1777);
    mkdir(r, "sticky-ro");
    chmod(r, "sticky-ro", 0o1555);
    // Owners first (chown clears setuid), then modes.
    write(r, "bin/su", b"#!/bin/sh\n# setuid\n");
    write(r, "bin/sg", b"#!/bin/sh\n# setgid\n");
    write(r, "bin/both", b"#!/bin/sh\n# both\n");
    write(r, "owned/file", b"owned by 1234:5678\n");
    write(r, "owned/dir/inner", b"inner\n");
    write(r, "owned/root", b"owned by 0:0\n");
    if root {
        chown(r, "bin/su", 1234, 5678);
        chown(r, "owned/file", 1234, 5678);
        chown(r, "owned/dir", 1234, 5678);
        chown(r, "owned/dir/inner", 1234, 5678);
        chown(r, "owned/root", 0, 0);
        // Beyond the 7 octal digits of a ustar uid/gid field.
        write(r, "owned/big-ids", b"uid and gid above 2097151\n");
        chown(r, "owned/big-ids", 3_000_000, 4_000_000);
    }
    chmod(r, "bin/su", 0o4755);
    chmod(r, "bin/sg", 0o2755);
    chmod(r, "bin/both", 0o6750);
    chmod(r, "owned/file", 0o640);
    chmod(r, "owned/dir", 0o750);
    // xattrs, binary values included.
    write(r, "x/user", b"user xattr\n");
    setxattr(r, "x/user", "user.test", b"value");
    write(r, "x/bin", b"binary xattr\n");
    setxattr(r, "x/bin", "user.bin", &[0, 1, 2, 0xff, 0x80, b'\n']);
    write(r, "x/many", b"several\n");
    setxattr(r, "x/many", "user.b", b"2");
    setxattr(r, "x/many", "user.a", b"1");
    setxattr(r, "x/many", "user.empty", b"");
    if root {
        write(r, "x/trusted", b"trusted xattr\n");
        setxattr(r, "x/trusted", "trusted.x", &[0, 0xff, 1, 0xfe]);
    }
    mkdir(r, "x/dir");
    setxattr(r, "x/dir", "user.dirattr", b"on a directory");
    // mtimes before 1970 and after 2038 (umoci's repack keeps whole
    // seconds only: nanoseconds are covered by the hand-made layer).
    write(r, "times/old", b"1969\n");
    set_mtime(r, "times/old", -86400 * 365, 0);
    write(r, "times/future", b"2100\n");
    set_mtime(r, "times/future", 4_102_444_800, 0);
    // Beyond the 11 octal digits of a ustar mtime field (year 2286).
    write(r, "times/far", b"2286\n");
    set_mtime(r, "times/far", 10_000_000_000, 0);
    write(r, "times/epoch", b"1970\n");
    set_mtime(r, "times/epoch", 0, 0);
    write(r, "times/dir/f", b"in a dir with an old mtime\n");
    set_mtime(r, "times/dir", 1_234_567_890, 0);
    mkdir(r, "times/olddir");
    set_mtime(r, "times/olddir", -1_000_000, 0);
    // Symlinks.
    mkdir(r, "links");
    sym(r, "../etc/hostname", "links/rel");
    sym(r, "/etc/hostname", "links/abs");
    sym(r, "../no/such/file", "links/dangling");
    sym(r, "../etc", "links/dirlink");
    set_mtime(r, "links/rel", 1_111_111_111, 0);
    // Hardlinks within the layer; hl/a's metadata is pinned because the
    // hand-made layer links to it.
    write(r, "hl/a", b"shared\n");
    ln(r, "hl/a", "hl/b");
    ln(r, "hl/a", "etc/a-elsewhere");
    chmod(r, "hl/a", 0o644);
    set_mtime(r, "hl/a", 1_500_000_000, 0);
    write(r, "hl/target", b"v1\n");
    // Special files.
    mkdir(r, "special");
    mkfifo(r, "special/fifo", 0o640);
    ln(r, "special/fifo", "special/fifo-hard");
    if root {
        mknod(r, "special/null", libc::S_IFCHR, 0o666, 1, 3);
        mknod(r, "special/loop", libc::S_IFBLK, 0o660, 7, 200);
    }
    // To be deleted / replaced later.
    write(r, "del/file", b"deleted later\n");
    write(r, "del/keep", b"kept\n");
    write(r, "del/dir/a", b"a\n");
    write(r, "del/dir/b/c", b"c\n");
    write(r, "replace/dir-to-file/x", b"x\n");
    write(r, "replace/file-to-dir", b"a file first\n");
    sym(r, "../etc", "replace/link-to-dir");
    write(r, "replace/dir-to-link/y", b"y\n");
    // Bait: replace/dir-to-link becomes a symlink to ../etc in layer 2, and
    // umoci writes the whiteout `replace/dir-to-link/.wh.y` after it (see
    // assert_semantics for what becomes of etc/y).
    write(r, "etc/y", b"must survive\n");
    write(r, "replace/file-to-link", b"a file first\n");
    write(r, "opaque/a", b"a\n");
    write(r, "opaque/b", b"b\n");
    write(r, "opaque/sub/c", b"c\n");
    write(r, "opq2/old1", b"old\n");
    write(r, "opq2/oldsub/x", b"old\n");
    // Odd modes: a 0000 directory with content, files 0000 and 7777.
    write(r, "modes/d000/inside", b"in a 0000 dir\n");
    chmod(r, "modes/d000", 0o000);
    write(r, "modes/d000-gone/sub/inside", b"deleted later\n");
    chmod(r, "modes/d000-gone/sub", 0o000);
    chmod(r, "modes/d000-gone", 0o000);
    write(r, "modes/f000", b"mode 0000\n");
    chmod(r, "modes/f000", 0o000);
    write(r, "modes/f7777", b"mode 7777\n");
    chmod(r, "modes/f7777", 0o7777);
    // Long names (PAX path/linkpath): > 100 and > 255 bytes in total.
    let long_dir = format!("long/{}", "d".repeat(120));
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    write(r, &long_file, b"long path\n");
    sym(r, &"t".repeat(200), &format!("{long_dir}/long-target-link"));
    ln(r, &long_file, "long/hardlink-to-long-name");
    // A name that is not UTF-8.
    mkdir(r, "weird");
    fs::write(
        r.join("weird")
            .join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff\xfe")),
        b"bytes\n",
    )
    .unwrap();
    // Hardlinks to a symlink (not followed) and to a fifo.
    sym(r, "../etc/hostname", "links/s1");
    ln(r, "links/s1", "links/s1-hard");
    if root {
        // xattrs on a symlink itself (user.* is not allowed on symlinks).
        setxattr(r, "links/s1", "trusted.on-symlink", b"sym");
        // File capabilities (v2, cap_net_bind_service+ep) on a file owned by
        // 1234: the kernel clears them on chown, so they must be set after
        // the owner.
        write(r, "caps/ping", b"#!/bin/sh\n# has a capability\n");
        chown(r, "caps/ping", 1234, 5678);
        chmod(r, "caps/ping", 0o755);
        setxattr(
            r,
            "caps/ping",
            "security.capability",
            &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
    }
    // Linked to, then whited out, by the hand-made layer; and a file the
    // hand-made layer replaces with a hardlink.
    write(r, "gone/target", b"gone target\n");
    write(r, "relink/old", b"old, replaced by a link\n");
    write(r, "relink/new-target", b"new target\n");
    // Metadata-only changes later.
    write(r, "meta/chmod", b"chmod later\n");
    write(r, "meta/xattr-removed", b"xattr removed later\n");
    setxattr(r, "meta/xattr-removed", "user.gone", b"1");
    write(r, "meta/chown", b"chown later\n");
    write(r, "meta/touch", b"touched later\n");
}

/// Layer 2: deletions, replacements, hardlink to a lower file, metadata.
fn layer2(r: &Path, root: bool) {
    // A new link to a file of a lower layer (umoci re-emits the target too,
    // its nlink changed: one name as the file, the other as a hardlink
    // entry to it).
    ln(r, "hl/target", "hl/link-to-lower");
    // Deletions.
    fs::remove_file(r.join("del/file")).unwrap();
    fs::remove_dir_all(r.join("del/dir")).unwrap();
    // A 0000 directory holding a 0000 directory, whited out (opened up
    // first so that a non-root run can delete it).
    chmod(r, "modes/d000-gone", 0o700);
    chmod(r, "modes/d000-gone/sub", 0o700);
    fs::remove_dir_all(r.join("modes/d000-gone")).unwrap();
    // Replacements.
    fs::remove_dir_all(r.join("replace/dir-to-file")).unwrap();
    write(r, "replace/dir-to-file", b"now a file\n");
    fs::remove_file(r.join("replace/file-to-dir")).unwrap();
    write(r, "replace/file-to-dir/inside", b"now a dir\n");
    fs::remove_file(r.join("replace/link-to-dir")).unwrap();
    write(r, "replace/link-to-dir/inside", b"was a symlink\n");
    fs::remove_dir_all(r.join("replace/dir-to-link")).unwrap();
    sym(r, "../etc", "replace/dir-to-link");
    fs::remove_file(r.join("replace/file-to-link")).unwrap();
    sym(r, "../etc/hostname", "replace/file-to-link");
    // Entire content of a directory replaced.
    for e in fs::read_dir(r.join("opaque")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            fs::remove_dir_all(p).unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
    }
    write(r, "opaque/new", b"new\n");
    // Content change in place.
    write(r, "etc/hostname", b"changed\n");
    // Metadata-only changes.
    chmod(r, "meta/chmod", 0o600);
    removexattr(r, "meta/xattr-removed", "user.gone");
    if root {
        chown(r, "meta/chown", 1234, 5678);
    }
    set_mtime(r, "meta/touch", 1_300_000_000, 0);
    // A new file in a read-only (0555) directory of a lower layer, and in
    // the 0000 one.
    // (Opened up for the write and closed again, for non-root runs.)
    for (dir, mode) in [("ro", 0o555), ("modes/d000", 0o000)] {
        chmod(r, dir, 0o755);
        write(r, &format!("{dir}/added-later"), b"added in layer 2\n");
        chmod(r, dir, mode);
    }
    // Mode-only change of a directory with content; an xattr value change.
    chmod(r, "priv", 0o750);
    setxattr(r, "x/user", "user.test", b"changed value");
    // Hardlinks across directories, new in this layer.
    write(r, "l2/one", b"one\n");
    ln(r, "l2/one", "etc/one-link");
}

/// Layer 3: the hardlink target is replaced; the link keeps the old content.
fn layer3(r: &Path) {
    // A deletion in a read-only (0555) directory (opened up for a non-root
    // build; the layer records 0555 again).
    chmod(r, "ro", 0o755);
    fs::remove_file(r.join("ro/file")).unwrap();
    chmod(r, "ro", 0o555);
    fs::remove_file(r.join("hl/target")).unwrap();
    write(r, "hl/target", b"v2\n");
    // A symlink replaced by a directory, again, on a deeper level.
    fs::remove_file(r.join("links/dirlink")).unwrap();
    write(r, "links/dirlink/now-a-dir", b"dir\n");
}

/// Layer 4, hand-made: what umoci's repack cannot write.
fn layer4_crafted() -> Vec<u8> {
    use tar::EntryType as T;
    let nano_x: &[(&str, &[u8])] = &[("user.crafted", b"yes")];
    pax_tar(&[
        // Nanosecond mtimes (PAX) on a dir and a file; owners.
        pax("crafted/", T::Directory, 0o750, "1600000000.5"),
        Pax {
            data: b"nano\n",
            uid: 4321,
            gid: 8765,
            xattrs: nano_x,
            ..pax("crafted/nano", T::Regular, 0o640, "1700000000.123456789")
        },
        Pax {
            data: b"space\n",
            ..pax(
                "crafted/space name",
                T::Regular,
                0o644,
                "1700000001.000000001",
            )
        },
        Pax {
            data: b"utf-8\n",
            ..pax("crafted/\u{fc}n\u{ef}", T::Regular, 0o644, "1700000002")
        },
        // Negative fractional PAX mtimes: -1.5 s is (-2 s, +500000000 ns).
        Pax {
            data: b"-1.5\n",
            ..pax("crafted/neg-frac", T::Regular, 0o644, "-1.5")
        },
        Pax {
            data: b"-86400.000000001\n",
            ..pax("crafted/neg-frac2", T::Regular, 0o644, "-86400.000000001")
        },
        // A hardlink to a file only in a lower layer (layer 1). The header
        // repeats hl/a's metadata (pinned in layer 1) so that extractors
        // that do or do not apply a link entry's metadata agree.
        Pax {
            link: Some("hl/a"),
            ..pax("crafted/lower-link", T::Link, 0o644, "1500000000")
        },
        // Owned by someone else and not writable: as non-root (rootless) the
        // owner record (a user.* xattr, which needs write permission) must
        // still be stored. Plus a symlink owned by someone else (user.*
        // xattrs are not allowed on symlinks).
        Pax {
            uid: 1234,
            gid: 5678,
            ..pax("crafted/ro-owned/", T::Directory, 0o555, "1700000003")
        },
        Pax {
            uid: 1234,
            gid: 5678,
            data: b"read-only, owned\n",
            ..pax("crafted/ro-owned/f", T::Regular, 0o444, "1700000004")
        },
        Pax {
            uid: 1234,
            gid: 0,
            data: b"0000, owned\n",
            ..pax("crafted/f000-owned", T::Regular, 0o000, "1700000005")
        },
        Pax {
            uid: 1234,
            gid: 5678,
            link: Some("nano"),
            ..pax("crafted/sym-owned", T::Symlink, 0o777, "1700000006")
        },
        // A link to a lower file, then a whiteout of that file: the link
        // (made earlier in this layer) keeps the content.
        Pax {
            link: Some("gone/target"),
            ..pax("crafted/survivor", T::Link, 0o644, "1700000000")
        },
        pax("gone/.wh.target", T::Regular, 0o644, "1700000000"),
        // A regular file of a lower layer replaced by a hardlink entry.
        Pax {
            link: Some("relink/new-target"),
            ..pax("relink/old", T::Link, 0o644, "1700000000")
        },
        // An opaque whiteout, and new content, in a read-only directory.
        pax("ro2/.wh..wh..opq", T::Regular, 0o644, "1700000000"),
        Pax {
            data: b"new in a 0555 dir\n",
            ..pax("ro2/new", T::Regular, 0o644, "1700000000")
        },
        // Whiteout of one name of a hardlink group.
        pax("hl/.wh.b", T::Regular, 0o644, "1700000000"),
        // Explicit opaque whiteout over lower content, then new content.
        pax("opq2/", T::Directory, 0o755, "1650000000"),
        pax("opq2/.wh..wh..opq", T::Regular, 0o644, "1650000000"),
        Pax {
            data: b"fresh\n",
            ..pax("opq2/fresh", T::Regular, 0o644, "1650000000.25")
        },
    ])
}

/// Layer 5 (umoci again, on top of the hand-made layer).
fn layer5(r: &Path, root: bool) {
    write(r, "final/file", b"last layer\n");
    // The root directory's own metadata, recorded by umoci as a `./` entry:
    // owner (as root), mode, an xattr and the mtime.
    if root {
        chown(r, ".", 1234, 5678);
    }
    chmod(r, ".", 0o751);
    setxattr(r, ".", "user.on-root", b"root dir");
    set_mtime(r, ".", 1_400_000_000, 0);
}

fn build_fixture() -> Fixture {
    let root = is_root();
    let rootless = !root;
    // Removed if building fails; kept (until exit) once built.
    let mut scratch = Scratch::new("fixture");
    let dir = scratch.path().to_path_buf();
    let layout = dir.join("layout");
    let image = format!("{}:{TAG}", s(&layout));
    umoci(&["init", "--layout", &s(&layout)]);
    umoci(&["new", "--image", &image]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.env",
        "FOO=bar",
        "--config.cmd",
        "/bin/sh",
        "--config.label",
        "org.example.test=flatten",
        "--config.workingdir",
        "/work",
    ]);
    umoci_layer(&dir, &image, 1, rootless, |r| layer1(r, root));
    umoci_layer(&dir, &image, 2, rootless, |r| layer2(r, root));
    umoci_layer(&dir, &image, 3, rootless, layer3);
    append_layer(
        &layout,
        TAG,
        &layer4_crafted(),
        "flatten_umoci crafted layer 4",
    );
    umoci_layer(&dir, &image, 5, rootless, |r| layer5(r, root));
    let umoci_rootfs = umoci_unpack(&image, &dir.join("umoci-unpacked"), rootless);
    let _ = FAR_MTIME.set(far_mtime_in_layer(&layout));
    let dir = scratch.0.take().unwrap().keep();
    Fixture {
        dir,
        layout,
        image,
        umoci_rootfs,
        root,
        devices: if root {
            vec!["special/loop", "special/null"]
        } else {
            Vec::new()
        },
    }
}

// ====================================================================== helpers

fn skip_without(test: &str, names: &[&str]) -> bool {
    if tools(test, names) {
        return false;
    }
    eprintln!("SKIPPING {test}: needs {names:?} on PATH");
    true
}

/// `ocikit flatten [--rootless] LOC --output OUT`; returns the stderr.
fn flatten_to(loc: &str, out: &Path, rootless: bool) -> String {
    let o = s(out);
    let mut args = vec!["flatten"];
    if rootless {
        args.push("--rootless");
    }
    args.extend([loc, "--output", &o]);
    stderr(&ocikit_ok(&args))
}

fn flatten_tar(loc: &str, out: &Path) -> Vec<u8> {
    ocikit_ok(["flatten", loc, "--tar", &s(out)]);
    fs::read(out).unwrap()
}

/// Parses PAX extended-header records (`LEN key=value\n`). Values may hold
/// any bytes, newlines included (the tar crate's own PAX iterator splits on
/// newlines and rejects such binary xattr values, so it is not used here).
fn parse_pax(mut d: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while !d.is_empty() && d[0] != 0 {
        let sp = d
            .iter()
            .position(|b| *b == b' ')
            .expect("pax record length");
        let len: usize = std::str::from_utf8(&d[..sp]).unwrap().parse().unwrap();
        let rec = &d[sp + 1..len - 1]; // without the trailing newline
        let eq = rec.iter().position(|b| *b == b'=').expect("pax key=value");
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        d = &d[len..];
    }
    out
}

/// A predicate on (layer number, path without trailing slash, type, link
/// name, PAX records).
type EntryPred = dyn Fn(usize, &str, tar::EntryType, Option<&str>, &[(String, Vec<u8>)]) -> bool;

/// One entry of a layer: path, type, link name, PAX records.
type LayerEntry = (
    String,
    tar::EntryType,
    Option<String>,
    Vec<(String, Vec<u8>)>,
);

/// The entries of a layer blob (PAX and GNU long-name headers applied).
fn layer_entries(bytes: &[u8], media_type: &str) -> Vec<LayerEntry> {
    let raw = decompress(bytes, media_type);
    let mut a = tar::Archive::new(&raw[..]);
    let mut out = Vec::new();
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    for e in a.entries().unwrap().raw(true) {
        let mut e = e.unwrap();
        let kind = e.header().entry_type();
        let mut data = Vec::new();
        match kind {
            tar::EntryType::XHeader => {
                e.read_to_end(&mut data).unwrap();
                pax.extend(parse_pax(&data));
                continue;
            }
            tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                e.read_to_end(&mut data).unwrap();
                while data.last() == Some(&0) {
                    data.pop();
                }
                if kind == tar::EntryType::GNULongName {
                    long_name = Some(data);
                } else {
                    long_link = Some(data);
                }
                continue;
            }
            _ => {}
        }
        let header_path = e.header().path_bytes().into_owned();
        let path = pax
            .iter()
            .rev()
            .find(|(k, _)| k == "path")
            .map(|(_, v)| v.clone())
            .or(long_name.take())
            .unwrap_or(header_path);
        let link = pax
            .iter()
            .rev()
            .find(|(k, _)| k == "linkpath")
            .map(|(_, v)| v.clone())
            .or(long_link.take())
            .or_else(|| e.header().link_name_bytes().map(|l| l.into_owned()));
        out.push((
            String::from_utf8_lossy(&path).into_owned(),
            kind,
            link.map(|l| String::from_utf8_lossy(&l).into_owned()),
            std::mem::take(&mut pax),
        ));
    }
    out
}

fn decompress(bytes: &[u8], media_type: &str) -> Vec<u8> {
    let mut raw = Vec::new();
    if media_type.ends_with("gzip") {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .unwrap();
    } else if media_type.ends_with("zstd") {
        raw = zstd::stream::decode_all(bytes).unwrap();
    } else {
        raw = bytes.to_vec();
    }
    raw
}

fn manifest_of(layout: &Path, tag: &str) -> (String, Value) {
    let d = index_entry(layout, tag)["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let m = serde_json::from_slice(&blob_bytes(layout, &d)).unwrap();
    (d, m)
}

fn config_of(layout: &Path, m: &Value) -> Value {
    serde_json::from_slice(&blob_bytes(layout, m["config"]["digest"].as_str().unwrap())).unwrap()
}

fn sha(content: &[u8]) -> Option<String> {
    Some(sha256_hex(content))
}

/// Spot checks of the flattened tree's semantics (they make a failure of the
/// full comparison easier to read, and guard against a fixture that does not
/// test what it claims).
#[track_caller]
fn assert_semantics(who: &str, t: &Tree, root: bool) {
    let get = |p: &str| {
        t.get(p)
            .unwrap_or_else(|| panic!("{who}: {p} is missing"))
            .clone()
    };
    let absent = |p: &str| assert!(!t.contains_key(p), "{who}: {p} should be gone");
    assert_eq!(get("hl/target").sha256, sha(b"v2\n"), "{who}: hl/target");
    assert_eq!(
        get("hl/link-to-lower").sha256,
        sha(b"v1\n"),
        "{who}: the link keeps the old content"
    );
    assert_eq!(get("crafted/lower-link").sha256, sha(b"shared\n"));
    assert_eq!(
        get("crafted/lower-link").link_group,
        Some("crafted/lower-link".to_string()),
        "{who}: crafted/lower-link, hl/a and etc/a-elsewhere are one inode"
    );
    assert_eq!(
        get("hl/a").link_group,
        Some("crafted/lower-link".to_string())
    );
    absent("hl/b");
    absent("gone/target");
    assert_eq!(get("crafted/survivor").sha256, sha(b"gone target\n"));
    assert_eq!(get("relink/old").sha256, sha(b"new target\n"));
    assert_eq!(
        get("relink/old").link_group,
        Some("relink/new-target".to_string()),
        "{who}: relink/old is now a hardlink"
    );
    absent("del/file");
    absent("del/dir");
    assert_eq!(get("del/keep").kind, "file");
    // umoci's repack writes `replace/dir-to-link/.wh.y` *after* the symlink
    // `replace/dir-to-link -> ../etc` that replaces the directory in the
    // same layer. umoci 0.4.7's unpack resolves the whiteout's parent in the
    // root, through that symlink, and deletes etc/y -- a path no layer
    // deletes. ocikit does the same (so do appliers that resolve parents
    // in-root, such as containerd's). A strict reading of the spec
    // ("whiteouts only apply to resources in lower layers", and the lower
    // layer's replace/dir-to-link is a real directory) would keep etc/y.
    // Recorded here so that a change on either side shows up.
    absent("etc/y");
    absent("opaque/a");
    absent("opaque/sub");
    assert_eq!(get("opaque/new").kind, "file");
    absent("opq2/old1");
    absent("opq2/oldsub");
    assert_eq!(get("opq2/fresh").mtime, (1_650_000_000, 250_000_000));
    assert_eq!(get("replace/dir-to-file").kind, "file");
    absent("replace/dir-to-file/x");
    assert_eq!(get("replace/file-to-dir").kind, "dir");
    assert_eq!(get("replace/link-to-dir").kind, "dir");
    assert_eq!(get("replace/dir-to-link").kind, "symlink");
    absent("replace/dir-to-link/y");
    assert_eq!(get("links/dirlink").kind, "dir");
    assert_eq!(get("times/old").mtime, (-86400 * 365, 0));
    assert_eq!(get("times/future").mtime, (4_102_444_800, 0));
    assert_eq!(get("times/dir").mtime, (1_234_567_890, 0));
    assert_eq!(get("crafted/nano").mtime, (1_700_000_000, 123_456_789));
    assert_eq!(get("crafted").mtime, (1_600_000_000, 500_000_000));
    assert_eq!(get("crafted/neg-frac").mtime, (-2, 500_000_000));
    assert_eq!(get("crafted/neg-frac2").mtime, (-86401, 999_999_999));
    // 10000000000 as root; see scan_umoci for what umoci records rootless.
    let far = *FAR_MTIME.get().unwrap();
    assert_eq!(get("times/far").mtime, (far, 0), "{who}: times/far");
    assert_eq!(get(".").mtime, (1_400_000_000, 0), "{who}: root mtime");
    assert_eq!(get(".").mode, 0o751, "{who}: root mode");
    assert!(
        get(".").xattrs.iter().any(|(k, _)| k == "user.on-root"),
        "{who}: root xattr"
    );
    absent("modes/d000-gone");
    absent("ro/file");
    absent("ro2/old");
    absent("ro2/sub");
    assert_eq!(get("ro2/new").kind, "file");
    assert_eq!(get("ro2").mode, 0o555);
    assert_eq!(get("tmp").mode, 0o1777);
    assert_eq!(get("ro").mode, 0o555);
    assert_eq!(get("bin/both").mode, 0o6750);
    assert_eq!(get("meta/chmod").mode, 0o600);
    assert!(get("meta/xattr-removed").xattrs.is_empty(), "{who}");
    assert_eq!(get("special/fifo").kind, "fifo");
    if root {
        assert_eq!(get("bin/su").mode, 0o4755);
        assert_eq!((get("owned/file").uid, get("owned/file").gid), (1234, 5678));
        assert_eq!(
            (get("owned/big-ids").uid, get("owned/big-ids").gid),
            (3_000_000, 4_000_000)
        );
        assert_eq!(
            (get("crafted/nano").uid, get("crafted/nano").gid),
            (4321, 8765)
        );
        assert_eq!(get("special/null").rdev, Some((1, 3)));
        assert_eq!(get("special/loop").kind, "block");
        assert_eq!(
            (get(".").uid, get(".").gid),
            (1234, 5678),
            "{who}: root owner"
        );
    }
}

// ====================================================================== tests

/// The fixture really contains every rule (whiteouts, opaque whiteout,
/// hardlinks in a layer and to a lower layer, devices, fifos, PAX xattrs and
/// negative mtimes), so the comparisons below are not vacuous.
#[test]
fn fixture_layers_cover_every_rule() {
    let test = "fixture_layers_cover_every_rule";
    if skip_without(test, &["umoci"]) {
        return;
    }
    let f = fixture();
    let (_, m) = manifest_of(&f.layout, TAG);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 5, "{m}");
    let mut all = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let bytes = blob_bytes(&f.layout, l["digest"].as_str().unwrap());
        for e in layer_entries(&bytes, l["mediaType"].as_str().unwrap()) {
            all.push((i + 1, e));
        }
    }
    let has = |pred: &EntryPred, what: &str| {
        assert!(
            all.iter().any(|(i, (p, k, l, x))| pred(
                *i,
                p.trim_end_matches('/'),
                *k,
                l.as_deref(),
                x
            )),
            "the fixture has no {what}; entries: {:#?}",
            all.iter()
                .map(|(i, (p, k, l, _))| format!("{i} {p} {k:?} {l:?}"))
                .collect::<Vec<_>>()
        )
    };
    has(
        &|i, p, _, _, _| i == 2 && p == "del/.wh.file",
        "whiteout of a file",
    );
    has(
        &|i, p, _, _, _| i == 2 && p == "del/.wh.dir",
        "whiteout of a directory",
    );
    has(
        &|i, p, _, _, _| i == 4 && p == "opq2/.wh..wh..opq",
        "opaque whiteout",
    );
    has(
        &|i, p, _, _, _| i == 2 && p.starts_with("opaque/.wh."),
        "whiteouts for a directory whose content is replaced",
    );
    has(
        &|i, _, k, l, _| i == 1 && k == tar::EntryType::Link && l.is_some(),
        "hardlink within a layer",
    );
    has(
        // umoci re-emits the lower file (its nlink changed) and writes
        // whichever name comes first as the file, the other as the link.
        &|i, p, k, l, _| {
            i == 2
                && matches!(p, "hl/link-to-lower" | "hl/target")
                && k == tar::EntryType::Link
                && l.is_some()
        },
        "hardlink to a file of a lower layer (via umoci)",
    );
    has(
        &|i, p, k, l, _| {
            i == 4 && p == "crafted/lower-link" && k == tar::EntryType::Link && l == Some("hl/a")
        },
        "hardlink whose target is only in a lower layer",
    );
    // umoci quirk: a directory replaced by a file or symlink gets the new
    // entry *followed by* whiteouts below it (`replace/dir-to-link/.wh.y`
    // after the symlink `replace/dir-to-link`): a whiteout whose parent is
    // not a directory must be a no-op, never followed through the symlink.
    has(
        &|i, p, _, _, _| i == 2 && p == "replace/dir-to-link/.wh.y",
        "whiteout below a path replaced by a symlink in the same layer",
    );
    has(
        &|i, p, _, _, _| i == 2 && p == "replace/dir-to-file/.wh.x",
        "whiteout below a path replaced by a file in the same layer",
    );
    has(&|_, _, k, _, _| k == tar::EntryType::Symlink, "symlink");
    has(&|_, _, k, _, _| k == tar::EntryType::Fifo, "fifo");
    has(
        &|_, _, _, _, x| x.iter().any(|(k, _)| k.starts_with("SCHILY.xattr.user.")),
        "PAX xattr",
    );
    has(
        &|_, _, _, _, x| x.iter().any(|(k, v)| k == "mtime" && v.starts_with(b"-")),
        "negative mtime",
    );
    has(&|i, p, _, _, _| i == 5 && p == ".", "root directory entry");
    if f.root {
        assert_eq!(
            FAR_MTIME.get(),
            Some(&10_000_000_000),
            "umoci's repack as root records times/far as set"
        );
        has(&|_, _, k, _, _| k == tar::EntryType::Char, "char device");
        has(&|_, _, k, _, _| k == tar::EntryType::Block, "block device");
        has(
            &|_, _, _, _, x| x.iter().any(|(k, _)| k == "SCHILY.xattr.trusted.x"),
            "trusted xattr",
        );
    }
}

/// umoci's own unpack shows the semantics the fixture intends (if this
/// fails, the fixture or umoci is at fault, not ocikit).
#[test]
fn umoci_unpack_has_the_intended_semantics() {
    let test = "umoci_unpack_has_the_intended_semantics";
    if skip_without(test, &["umoci"]) {
        return;
    }
    let f = fixture();
    let raw = scan(&f.umoci_rootfs);
    // umoci 0.4.7 bug (see scan_umoci): the layer says 10000000000.
    assert_eq!(
        raw["times/far"].mtime,
        (i32::MIN as i64, 0),
        "umoci times/far"
    );
    assert_semantics("umoci unpack", &scan_umoci(&f.umoci_rootfs), f.root);
}

/// Criterion: `ocikit flatten L:base --output O` equals `umoci unpack`.
#[test]
fn flatten_matches_umoci_unpack() {
    let test = "flatten_matches_umoci_unpack";
    if skip_without(test, &["umoci"]) {
        return;
    }
    let f = fixture();
    if !f.root {
        eprintln!(
            "SKIPPING {test}: not root (umoci unpack without --rootless needs root; \
             see rootless_flatten_matches_umoci_rootless_unpack)"
        );
        return;
    }
    let t = Scratch::new("flatten");
    let o = t.path().join("out");
    let err = flatten_to(&format!("oci:{}", f.image), &o, false);
    let ours = scan(&o);
    let theirs = scan_umoci(&f.umoci_rootfs);
    assert_same_trees(
        "ocikit flatten vs umoci unpack",
        "umoci",
        &theirs,
        "ocikit",
        &ours,
    );
    assert_semantics("ocikit flatten", &ours, true);
    let warnings: Vec<&str> = warnings_of(&err);
    assert!(
        warnings.is_empty(),
        "flatten as root should not warn:\n{err}"
    );
}

/// Two flattens give identical trees; `--tar` twice (and to stdout) gives
/// identical bytes; GNU tar extracting that tar gives the same tree again.
#[test]
fn flatten_is_deterministic_and_tar_matches_output() {
    let test = "flatten_is_deterministic_and_tar_matches_output";
    if skip_without(test, &["umoci"]) {
        return;
    }
    let f = fixture();
    let rootless = !f.root;
    let t = Scratch::new("determinism");
    let o1 = t.path().join("o1");
    let o2 = t.path().join("o2");
    flatten_to(&format!("oci:{}", f.image), &o1, rootless);
    // The second run uses the PATH:TAG form, into an existing empty dir.
    fs::create_dir(&o2).unwrap();
    flatten_to(&f.image, &o2, rootless);
    let a = scan(&o1);
    assert_same_trees("flatten run 1 vs run 2", "run1", &a, "run2", &scan(&o2));

    let t1 = flatten_tar(&format!("oci:{}", f.image), &t.path().join("t1.tar"));
    let t2 = flatten_tar(&f.image, &t.path().join("t2.tar"));
    assert!(
        t1 == t2,
        "two --tar runs differ ({} vs {} bytes)",
        t1.len(),
        t2.len()
    );
    let t3 = ocikit_ok(["flatten", &f.image, "--tar", "-"]).stdout;
    assert!(
        t1 == t3,
        "--tar - differs from --tar FILE ({} vs {} bytes)",
        t3.len(),
        t1.len()
    );
    // Nothing but the tar on stdout; a well-formed archive.
    let names: Vec<String> = tar::Archive::new(&t1[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert!(!names.is_empty());
    assert!(
        !names.iter().any(|n| n.contains(".wh.")),
        "the flattened tar must not contain whiteouts: {names:?}"
    );

    if !f.root {
        eprintln!("SKIPPING {test} (GNU tar extraction part): not root");
        return;
    }
    if skip_without(test, &["tar"]) {
        return;
    }
    let x = t.path().join("x");
    fs::create_dir(&x).unwrap();
    // -p/--same-permissions keeps setuid/setgid/sticky, --same-owner and
    // --numeric-owner restore uid/gid by number, --xattrs with
    // --xattrs-include='*' restores every namespace (user.* and trusted.*);
    // GNU tar sets directory mtimes after extracting their content (its
    // default delayed directory restore) and sets symlink mtimes.
    run_ok(
        "tar",
        &[
            "--xattrs",
            "--xattrs-include=*",
            "--same-owner",
            "--numeric-owner",
            "-xpf",
            &s(&t.path().join("t1.tar")),
            "-C",
            &s(&x),
        ],
    );
    let mut from_tar = scan(&x);
    let mut flat = a.clone();
    if !names.iter().any(|n| matches!(n.as_str(), "." | "./" | "/")) {
        // The tar has no entry for the root, so GNU tar leaves X itself as
        // this test created it: nothing to compare there.
        eprintln!("note: ocikit's flatten tar has no ./ entry; root metadata not compared");
        from_tar.remove(".");
        flat.remove(".");
    }
    assert_same_trees(
        "GNU tar -x of flatten --tar vs flatten --output",
        "flatten --output",
        &flat,
        "tar -x",
        &from_tar,
    );
    // And against umoci directly: the tar stream must carry everything umoci
    // restores (a tar has none of a filesystem's limits, so nothing may be
    // dropped from it).
    let mut theirs = scan_umoci(&f.umoci_rootfs);
    if !from_tar.contains_key(".") {
        theirs.remove(".");
    }
    assert_same_trees(
        "GNU tar -x of flatten --tar vs umoci unpack",
        "umoci",
        &theirs,
        "tar -x",
        &from_tar,
    );
}

/// `--rootless` behaves as `umoci unpack --rootless`: no chown (owners
/// recorded in `user.rootlesscontainers` as umoci does), devices skipped
/// with one warning.
#[test]
fn rootless_flatten_matches_umoci_rootless_unpack() {
    let test = "rootless_flatten_matches_umoci_rootless_unpack";
    if skip_without(test, &["umoci"]) {
        return;
    }
    let f = fixture();
    let t = Scratch::new("rootless");
    let ur = umoci_unpack(&f.image, &t.path().join("bundle"), true);
    let or = t.path().join("out");
    let err = flatten_to(&f.image, &or, true);
    let mut theirs = scan_umoci(&ur);
    let ours = scan(&or);
    umoci_lost_owner_records(&mut theirs, &ours);

    // Documented difference: umoci --rootless cannot mknod, so it puts an
    // empty regular file where a char/block device would be (umoci 0.4.7
    // keeps the device's permission bits on it, e.g. 0660 for special/loop,
    // not 0000); ocikit skips the device entirely. Assert exactly that, then
    // leave those paths out of the comparison.
    let as_root = scan_umoci(&f.umoci_rootfs);
    for d in &f.devices {
        let u = theirs
            .remove(*d)
            .unwrap_or_else(|| panic!("umoci --rootless: {d} is missing"));
        let dev = &as_root[*d];
        assert!(matches!(dev.kind, "char" | "block"), "{d}: {dev:?}");
        assert_eq!(
            (u.kind, u.mode, u.size),
            ("file", dev.mode, Some(0)),
            "umoci --rootless stand-in for device {d}: {u:?}"
        );
        assert!(
            !ours.contains_key(*d),
            "ocikit --rootless should skip device {d}: {:?}",
            ours[*d]
        );
    }
    assert_same_trees(
        "ocikit flatten --rootless vs umoci unpack --rootless",
        "umoci",
        &theirs,
        "ocikit",
        &ours,
    );
    let warnings: Vec<&str> = warnings_of(&err);
    if f.devices.is_empty() {
        assert!(warnings.is_empty(), "no devices, no warning:\n{err}");
    } else {
        assert_eq!(
            warnings.len(),
            1,
            "expected exactly one warning (for the skipped devices):\n{err}"
        );
        assert!(warnings[0].contains("device"), "{}", warnings[0]);
    }
    // Owners are the running user's; non-root owners are recorded in the
    // xattr (compared above; here: that it is there at all).
    // SAFETY: getuid/getgid cannot fail.
    let me = unsafe { (libc::getuid(), libc::getgid()) };
    for (p, m) in &ours {
        assert_eq!((m.uid, m.gid), me, "{p} should belong to the running user");
    }
    if f.root {
        let x = &ours["owned/file"].xattrs;
        assert!(
            x.iter().any(|(k, _)| k == "user.rootlesscontainers"),
            "owned/file (1234:5678) should carry user.rootlesscontainers: {x:?}"
        );
        assert!(
            !ours["owned/root"]
                .xattrs
                .iter()
                .any(|(k, _)| k == "user.rootlesscontainers"),
            "owned/root (0:0) needs no user.rootlesscontainers"
        );
    }
}

/// The rootless comparison again with both tools run by a non-root user
/// (nobody, through setpriv), so that a root-only CI run still covers what
/// only bites without privileges: read-only and 0000 entries, owner records
/// on entries the owner cannot write, devices. Root only.
#[test]
fn rootless_as_non_root_matches_umoci_as_non_root() {
    let test = "rootless_as_non_root_matches_umoci_as_non_root";
    if skip_without(test, &["umoci", "setpriv", "chown"]) {
        return;
    }
    if !is_root() {
        eprintln!(
            "SKIPPING {test}: needs root to switch users (as non-root, \
             rootless_flatten_matches_umoci_rootless_unpack covers it)"
        );
        return;
    }
    let f = fixture();
    let t = Scratch::new("as-nobody-rootless");
    chmod(t.path(), ".", 0o777);
    let l = t.path().join("layout");
    copy_tree(&f.layout, &l);
    run_ok("chown", &["-R", "65534:65534", &s(&l)]);
    let image = format!("{}:{TAG}", s(&l));
    let as_nobody = |prog: &str, args: &[&str]| {
        let mut a = vec!["--reuid=65534", "--regid=65534", "--clear-groups", prog];
        a.extend_from_slice(args);
        let o = Command::new("setpriv")
            .args(&a)
            .env("HOME", t.path())
            .current_dir(t.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{prog} {args:?} as nobody failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        o
    };
    let bundle = t.path().join("bundle");
    as_nobody(
        "umoci",
        &["unpack", "--rootless", "--image", &image, &s(&bundle)],
    );
    let out = t.path().join("out");
    let o = as_nobody(
        env!("CARGO_BIN_EXE_ocikit"),
        &["flatten", "--rootless", &image, "--output", &s(&out)],
    );
    let err = stderr(&o);
    let mut theirs = scan_umoci(&bundle.join("rootfs"));
    let ours = scan(&out);
    take_over_owner_records(&mut theirs, &ours);
    // Devices: as in rootless_flatten_matches_umoci_rootless_unpack.
    let as_root = scan_umoci(&f.umoci_rootfs);
    for d in &f.devices {
        let u = theirs.remove(*d).expect("umoci's device stand-in");
        assert_eq!(
            (u.kind, u.mode, u.size),
            ("file", as_root[*d].mode, Some(0)),
            "{d}"
        );
        assert!(!ours.contains_key(*d), "ocikit should skip device {d}");
    }
    // trusted.* xattrs cannot be set by nobody: both must lack them (asserted
    // by the comparison); the fixture has some, so ocikit warns once for
    // them, besides the one device warning.
    assert_same_trees(
        "as nobody: ocikit flatten --rootless vs umoci unpack --rootless",
        "umoci",
        &theirs,
        "ocikit",
        &ours,
    );
    for (p, m) in &ours {
        assert_eq!((m.uid, m.gid), (65534, 65534), "{p}");
    }
    let w = warnings_of(&err);
    assert!(
        w.iter().any(|l| l.contains("device")),
        "one warning for the devices:\n{err}"
    );
    assert!(
        w.len() == 2 && w.iter().any(|l| l.contains("xattr")),
        "one warning for the devices, one for the trusted.* xattrs:\n{err}"
    );
}

/// `ocikit squash` is reproducible, writes one layer whose diff_id is right,
/// keeps the config, and umoci unpacks it to the flattened tree; skopeo
/// copies it and the copy verifies.
#[test]
fn squash_is_reproducible_and_matches_flatten() {
    let test = "squash_is_reproducible_and_matches_flatten";
    if skip_without(test, &["umoci", "skopeo"]) {
        return;
    }
    let f = fixture();
    let rootless = !f.root;
    let t = Scratch::new("squash");
    let a = t.path().join("a");
    let b = t.path().join("b");
    copy_tree(&f.layout, &a);
    copy_tree(&f.layout, &b);
    ocikit_ok(["squash", &format!("{}:{TAG}", s(&a)), "--tag", "squashed"]);
    ocikit_ok([
        "squash",
        &format!("oci:{}:{TAG}", s(&b)),
        "--tag",
        "squashed",
    ]);
    ocikit_ok(["squash", &format!("{}:{TAG}", s(&a)), "--tag", "again"]);
    let (da, m) = manifest_of(&a, "squashed");
    let (db, _) = manifest_of(&b, "squashed");
    let (da2, _) = manifest_of(&a, "again");
    assert_eq!(da, db, "squash in two copies of the layout");
    assert_eq!(da, da2, "squash twice in one layout");
    let ls = stdout(&ocikit_ok(["ls", &s(&a), "--json"]));
    assert!(ls.contains(&da), "ocikit ls --json should list {da}:\n{ls}");
    // The source image is untouched.
    assert_eq!(
        index_entry(&a, TAG)["digest"],
        index_entry(&f.layout, TAG)["digest"]
    );

    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "squashed manifest: {m}");
    let cfg = config_of(&a, &m);
    let (_, base_m) = manifest_of(&f.layout, TAG);
    let base_cfg = config_of(&f.layout, &base_m);
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), 1, "{cfg}");
    let layer = blob_bytes(&a, layers[0]["digest"].as_str().unwrap());
    let raw = decompress(&layer, layers[0]["mediaType"].as_str().unwrap());
    assert_eq!(diff_ids[0].as_str().unwrap(), digest_of(&raw), "diff_id");
    let history = cfg["history"].as_array().cloned().unwrap_or_default();
    let non_empty = history
        .iter()
        .filter(|h| h["empty_layer"] != json!(true))
        .count();
    assert_eq!(non_empty, 1, "one non-empty history entry: {history:?}");
    assert_eq!(cfg["config"], base_cfg["config"], "Env, Cmd, Labels… kept");
    assert!(
        cfg["config"]["Env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "FOO=bar")),
        "{cfg}"
    );
    assert_eq!(cfg["config"]["Labels"]["org.example.test"], "flatten");
    for k in ["architecture", "os"] {
        assert_eq!(cfg[k], base_cfg[k], "{k}");
    }

    // umoci unpack of the squashed image == ocikit flatten of the original.
    let s_root = umoci_unpack(
        &format!("{}:squashed", s(&a)),
        &t.path().join("squashed-bundle"),
        rootless,
    );
    let o = t.path().join("flat");
    flatten_to(&f.image, &o, rootless);
    // Non-root: both ran rootless and the fixture has no devices.
    let mut squashed = scan_umoci(&s_root);
    let flat = scan(&o);
    umoci_lost_owner_records(&mut squashed, &flat);
    assert_same_trees(
        "umoci unpack of the squashed image vs ocikit flatten of the original",
        "flatten",
        &flat,
        "umoci(squashed)",
        &squashed,
    );

    // skopeo copies it; the copy verifies deeply.
    let other = t.path().join("other");
    run_ok(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:squashed", s(&a)),
            &format!("oci:{}:x", s(&other)),
        ],
    );
    ocikit_ok(["verify", "--deep", &s(&other)]);
    ocikit_ok(["verify", "--deep", &s(&a)]);

    // And with umoci's unpack of the original: squashing must not lose
    // anything umoci restores from the layered image.
    let mut original = scan_umoci(&if rootless {
        umoci_unpack(&f.image, &t.path().join("orig-bundle"), true)
    } else {
        f.umoci_rootfs.clone()
    });
    umoci_lost_owner_records(&mut original, &flat);
    assert_same_trees(
        "umoci unpack of the squashed image vs umoci unpack of the original",
        "umoci(original)",
        &original,
        "umoci(squashed)",
        &squashed,
    );
}

/// Every `--compress` gives the same uncompressed layer (same diff_id), the
/// matching media type, and a squashed image that flattens to the original.
#[test]
fn squash_compress_variants_agree() {
    let test = "squash_compress_variants_agree";
    if skip_without(test, &["umoci"]) {
        return;
    }
    let f = fixture();
    let rootless = !f.root;
    let t = Scratch::new("compress");
    let l = t.path().join("l");
    copy_tree(&f.layout, &l);
    let o = t.path().join("flat");
    flatten_to(&f.image, &o, rootless);
    let flat = scan(&o);
    let mut diff_ids = BTreeSet::new();
    for (c, suffix) in [("none", "tar"), ("gzip", "tar+gzip"), ("zstd", "tar+zstd")] {
        let tag = format!("sq-{c}");
        ocikit_ok([
            "squash",
            &format!("{}:{TAG}", s(&l)),
            "--tag",
            &tag,
            "--compress",
            c,
        ]);
        let (_, m) = manifest_of(&l, &tag);
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{m}");
        let mt = layers[0]["mediaType"].as_str().unwrap();
        assert_eq!(mt, format!("application/vnd.oci.image.layer.v1.{suffix}"));
        let cfg = config_of(&l, &m);
        let raw = decompress(&blob_bytes(&l, layers[0]["digest"].as_str().unwrap()), mt);
        assert_eq!(
            cfg["rootfs"]["diff_ids"][0].as_str().unwrap(),
            digest_of(&raw)
        );
        diff_ids.insert(digest_of(&raw));
        let out = t.path().join(format!("flat-{c}"));
        flatten_to(&format!("{}:{tag}", s(&l)), &out, rootless);
        assert_same_trees(
            &format!("flatten of squash --compress {c} vs flatten of the original"),
            "original",
            &flat,
            "squashed",
            &scan(&out),
        );
        if c != "zstd" {
            // umoci 0.4.7 reads uncompressed and gzip layers (not zstd).
            let u = umoci_unpack(
                &format!("{}:{tag}", s(&l)),
                &t.path().join(format!("bundle-{c}")),
                rootless,
            );
            let mut theirs = scan_umoci(&u);
            umoci_lost_owner_records(&mut theirs, &flat);
            assert_same_trees(
                &format!("umoci unpack of squash --compress {c} vs flatten"),
                "flatten",
                &flat,
                "umoci(squashed)",
                &theirs,
            );
        }
    }
    assert_eq!(diff_ids.len(), 1, "the same tar whatever the compression");
    ocikit_ok(["verify", "--deep", &s(&l)]);
}

/// Archives work as locations: docker-archive and oci-archive written by
/// skopeo flatten to the same tree; squash from an archive into --layout.
#[test]
fn flatten_archives_match_layout() {
    let test = "flatten_archives_match_layout";
    if skip_without(test, &["umoci", "skopeo"]) {
        return;
    }
    let f = fixture();
    let rootless = !f.root;
    let t = Scratch::new("archives");
    let o = t.path().join("flat");
    flatten_to(&f.image, &o, rootless);
    let flat = scan(&o);

    let docker = t.path().join("a.tar");
    run_ok(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}", f.image),
            &format!("docker-archive:{}:img:1", s(&docker)),
        ],
    );
    let o2 = t.path().join("flat-docker");
    flatten_to(&s(&docker), &o2, rootless);
    assert_same_trees(
        "flatten of a docker-archive vs of the layout",
        "layout",
        &flat,
        "docker-archive",
        &scan(&o2),
    );

    let oci = t.path().join("b.tar");
    run_ok(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}", f.image),
            &format!("oci-archive:{}:img", s(&oci)),
        ],
    );
    let o3 = t.path().join("flat-oci-archive");
    flatten_to(&s(&oci), &o3, rootless);
    assert_same_trees(
        "flatten of an oci-archive vs of the layout",
        "layout",
        &flat,
        "oci-archive",
        &scan(&o3),
    );

    // squash from an archive into a separate layout.
    let nl = t.path().join("new-layout");
    ocikit_ok(["init", &s(&nl)]);
    ocikit_ok(["squash", &s(&docker), "--tag", "sq", "--layout", &s(&nl)]);
    let (_, m) = manifest_of(&nl, "sq");
    assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{m}");
    let o4 = t.path().join("flat-squashed-archive");
    flatten_to(&format!("{}:sq", s(&nl)), &o4, rootless);
    assert_same_trees(
        "flatten of (squash of a docker-archive) vs flatten of the layout",
        "layout",
        &flat,
        "squashed archive",
        &scan(&o4),
    );
    ocikit_ok(["verify", "--deep", &s(&nl)]);
}

/// A hand-made layer without a `./` entry and without parent directory
/// entries: the documented differences for implied parents, and the root's
/// defaults.
#[test]
fn implied_parents_and_root_defaults() {
    let test = "implied_parents_and_root_defaults";
    if skip_without(test, &["umoci"]) {
        return;
    }
    let rootless = !is_root();
    let t = Scratch::new("implied");
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 2;
    // One single-layer image per entry list; returns (umoci tree, ocikit tree).
    let both = |name: &str, entries: &[Entry]| -> (Tree, Tree) {
        let l = t.path().join(name);
        fs::create_dir_all(l.join("blobs/sha256")).unwrap();
        let layer = put_layer(&l, OCI_GZIP, &tar(entries));
        let man = put_image(&l, "amd64", None, std::slice::from_ref(&layer), false);
        let mut entry = man.clone();
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
        write_layout_files(
            &l,
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
        );
        let image = format!("{}:latest", s(&l));
        let u = umoci_unpack(&image, &t.path().join(format!("{name}-bundle")), rootless);
        let o = t.path().join(format!("{name}-out"));
        flatten_to(&image, &o, rootless);
        (scan_umoci(&u), scan(&o))
    };
    // umoci stamps a directory with the time of the unpack when it creates
    // something in it that it does not restore afterwards: assert that
    // (`what` says why), then take ocikit's value over for the comparison.
    let stamped = |theirs: &mut Tree, ours: &Tree, p: &str, what: &str| {
        let u = theirs.get_mut(p).unwrap();
        assert!(
            u.mtime.0 >= started,
            "umoci's {p} was expected to carry the unpack time ({what}); it has {:?}",
            u.mtime
        );
        u.mtime = ours[p].mtime;
    };

    // Implied parents (no `a/`, `a/b/`, `x/y/` entries) and no `./` entry.
    let (mut theirs, ours) = both(
        "implied",
        &[
            Entry::File("a/b/f", 0o600, b"deep\n".to_vec()),
            Entry::Dir("x/", 0o700),
            Entry::File("x/y/z", 0o644, b"z\n".to_vec()),
            Entry::Symlink("top-link", "a/b/f"),
        ],
    );
    // Documented decision: implied parent directories get mode 0755 and
    // mtime 0 in ocikit; umoci gives them the current time. Assert ocikit's
    // values, then take them over for umoci (mode and owners still compared).
    for p in ["a", "a/b", "x/y"] {
        let m = ours
            .get(p)
            .unwrap_or_else(|| panic!("ocikit: implied parent {p} is missing"));
        assert_eq!(
            (m.kind, m.mode, m.mtime),
            ("dir", 0o755, (0, 0)),
            "ocikit: implied parent {p}"
        );
        stamped(&mut theirs, &ours, p, "implied parent: documented decision");
    }
    // The root: no `./` entry, so ocikit gives 0755 and the epoch (the
    // documented default). umoci's rootfs/ would start at the epoch too, but
    // creating the implied a/ in it stamps it with the unpack time, never
    // restored: umoci's side effect, not image content.
    let r = &ours["."];
    assert_eq!((r.mode, r.mtime), (0o755, (0, 0)), "ocikit root: {r:?}");
    stamped(
        &mut theirs,
        &ours,
        ".",
        "root touched by creating implied a/",
    );
    // x/ has an explicit entry (mtime 1700000000) but umoci creates the
    // implied x/y after restoring x's times, so its x/ ends up with the
    // unpack time: umoci is wrong here, the layer says 1700000000.
    assert_eq!(
        ours["x"].mtime,
        (1_700_000_000, 0),
        "ocikit: x/ keeps its entry's mtime"
    );
    stamped(
        &mut theirs,
        &ours,
        "x",
        "umoci: implied x/y created after x/ was restored",
    );
    assert_same_trees(
        "implied parents: ocikit flatten vs umoci unpack",
        "umoci",
        &theirs,
        "ocikit",
        &ours,
    );

    // Explicit parents only, still no `./` entry: only the root's metadata
    // is left to defaults.
    let (mut theirs, ours) = both(
        "explicit",
        &[
            Entry::Dir("d/", 0o750),
            Entry::File("d/f", 0o644, b"f\n".to_vec()),
        ],
    );
    let r = &ours["."];
    assert_eq!((r.mode, r.mtime), (0o755, (0, 0)), "ocikit root: {r:?}");
    if theirs["."].mtime != r.mtime {
        stamped(
            &mut theirs,
            &ours,
            ".",
            "root touched by creating d/, never restored",
        );
    }
    assert_same_trees(
        "no ./ entry: ocikit flatten vs umoci unpack",
        "umoci",
        &theirs,
        "ocikit",
        &ours,
    );
}

/// A hand-made two-layer image (PAX tars) as (umoci tree, ocikit tree,
/// ocikit's stderr).
fn hand_made(t: &Path, name: &str, layers: &[Vec<u8>]) -> (Tree, Tree, String) {
    let rootless = !is_root();
    let image = layout_of(t, name, layers);
    let u = umoci_unpack(&image, &t.join(format!("{name}-bundle")), rootless);
    let o = t.join(format!("{name}-out"));
    let err = flatten_to(&image, &o, rootless);
    (scan_umoci(&u), scan(&o), err)
}

/// A layout `T/NAME` with one image (gzip layers) tagged latest; returns
/// `T/NAME:latest`.
fn layout_of(t: &Path, name: &str, layers: &[Vec<u8>]) -> String {
    let l = t.join(name);
    fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    let layers: Vec<_> = layers.iter().map(|b| put_layer(&l, OCI_GZIP, b)).collect();
    let man = put_image(&l, "amd64", None, &layers, false);
    let mut entry = man.clone();
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    write_layout_files(
        &l,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
    );
    format!("{}:latest", s(&l))
}

/// Rules inside one layer, against umoci: a whiteout does not hide a path
/// created earlier in the same layer; an opaque whiteout after new content
/// clears only lower content; a duplicate entry replaces (the last wins, and
/// a hardlink made to the first keeps the first's content); a hardlink
/// entry's own header metadata is ignored.
#[test]
fn same_layer_rules_match_umoci() {
    let test = "same_layer_rules_match_umoci";
    if skip_without(test, &["umoci"]) {
        return;
    }
    use tar::EntryType as T;
    let t = Scratch::new("same-layer");
    let l1 = pax_tar(&[
        pax("./", T::Directory, 0o755, "1000000000"),
        pax("opq3/", T::Directory, 0o755, "1000000001"),
        Pax {
            data: b"lower\n",
            ..pax("opq3/old", T::Regular, 0o644, "1000000002")
        },
        pax("sl/", T::Directory, 0o755, "1000000003"),
        Pax {
            data: b"lower\n",
            ..pax("sl/lower", T::Regular, 0o644, "1000000004")
        },
        pax("h/", T::Directory, 0o755, "1000000005"),
        Pax {
            data: b"target\n",
            ..pax("h/lower-target", T::Regular, 0o640, "1000000006")
        },
    ]);
    let l2 = pax_tar(&[
        // Created, then whited out, in the same layer: it survives (the
        // whiteout applies to lower layers only); the lower one goes.
        Pax {
            data: b"same layer\n",
            ..pax("sl/f", T::Regular, 0o644, "1100000000")
        },
        pax("sl/.wh.f", T::Regular, 0o644, "1100000000"),
        pax("sl/.wh.lower", T::Regular, 0o644, "1100000000"),
        // Opaque whiteout after this layer's own content.
        pax("opq3/", T::Directory, 0o755, "1100000001"),
        Pax {
            data: b"new\n",
            ..pax("opq3/new", T::Regular, 0o644, "1100000002")
        },
        pax("opq3/.wh..wh..opq", T::Regular, 0o644, "1100000001"),
        // Duplicate entries, with a hardlink to the first one in between.
        Pax {
            data: b"first\n",
            ..pax("h/dup", T::Regular, 0o644, "1100000003")
        },
        Pax {
            link: Some("h/dup"),
            ..pax("h/dup-link", T::Link, 0o644, "1100000003")
        },
        Pax {
            data: b"second\n",
            ..pax("h/dup", T::Regular, 0o600, "1100000004")
        },
        // A hardlink entry whose header disagrees with its lower target.
        Pax {
            link: Some("h/lower-target"),
            uid: 77,
            gid: 88,
            ..pax("h/link-odd-header", T::Link, 0o777, "1200000000")
        },
        pax("h/", T::Directory, 0o755, "1100000005"),
    ]);
    let (theirs, ours, err) = hand_made(t.path(), "img", &[l1, l2]);
    assert_same_trees(
        "same-layer rules: ocikit flatten vs umoci unpack",
        "umoci",
        &theirs,
        "ocikit",
        &ours,
    );
    assert_eq!(ours.get("sl/f").map(|m| m.kind), Some("file"), "sl/f");
    assert!(!ours.contains_key("sl/lower"));
    assert!(!ours.contains_key("opq3/old"));
    assert_eq!(ours["h/dup"].sha256, sha(b"second\n"));
    assert_eq!(ours["h/dup-link"].sha256, sha(b"first\n"));
    let lt = &ours["h/lower-target"];
    assert_eq!((lt.mode, lt.mtime), (0o640, (1_000_000_006, 0)));
    let w = warnings_of(&err);
    assert!(w.len() <= 1, "at most one warning (duplicates):\n{err}");
}

/// Layers written by GNU tar in its own formats (GNU sparse and long
/// names, PAX sparse 1.0 and 0.1 with xattrs, ustar prefix/name split, `./`
/// prefixes everywhere): umoci (Go's archive/tar) and ocikit must read them
/// to the same tree.
#[test]
fn gnu_tar_layers_match_umoci() {
    let test = "gnu_tar_layers_match_umoci";
    if skip_without(test, &["umoci", "tar"]) {
        return;
    }
    use std::os::unix::fs::FileExt;
    let t = Scratch::new("gnu-tar");
    let sparse = |r: &Path, rel: &str, len: u64| {
        let f = fs::File::create(r.join(rel)).unwrap();
        f.set_len(len).unwrap();
        f.write_at(b"head", 0).unwrap();
        f.write_at(b"middle", len / 2).unwrap();
        f.write_at(b"tail", len - 4).unwrap();
    };
    let src = |n: usize| {
        let r = t.path().join(format!("src{n}"));
        fs::create_dir(&r).unwrap();
        r
    };
    let finish = |r: &Path, mtime: i64| {
        chmod(r, ".", 0o755);
        set_mtime(r, ".", mtime, 0);
    };
    let pack = |r: &Path, n: usize, args: &[&str]| -> Vec<u8> {
        let out = t.path().join(format!("layer{n}.tar"));
        let mut a: Vec<String> = args.iter().map(|x| x.to_string()).collect();
        a.extend([
            "--numeric-owner".into(),
            "-cf".into(),
            s(&out),
            "-C".into(),
            s(r),
            ".".into(),
        ]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run_ok("tar", &a);
        fs::read(&out).unwrap()
    };

    // 1: GNU format: 'L'/'K' long names, hardlinks, fifo.
    let r1 = src(1);
    let long = format!("dir-long/{}", "n".repeat(120));
    write(&r1, &format!("{long}/{}", "f".repeat(110)), b"long\n");
    sym(&r1, &"t".repeat(150), "long-target");
    write(&r1, "hard-a", b"hard\n");
    ln(&r1, "hard-a", "hard-b");
    sym(&r1, "hard-a", "sym");
    mkfifo(&r1, "fifo", 0o600);
    write(&r1, "mode/x", b"x\n");
    chmod(&r1, "mode", 0o711);
    set_mtime(&r1, "mode", 1_234_567_890, 0);
    finish(&r1, 1_500_000_000);
    let l1 = pack(&r1, 1, &["--format=gnu"]);

    // 2: PAX with sparse 1.0 and xattrs; replaces hard-a (hard-b keeps it).
    let r2 = src(2);
    sparse(&r2, "sparse2", 5 << 20);
    write(&r2, "x-file", b"xattr\n");
    setxattr(&r2, "x-file", "user.gnu", b"tar");
    write(&r2, "hard-a", b"replaced\n");
    write(&r2, ".wh.fifo", b"");
    finish(&r2, 1_500_000_001);
    let l2 = pack(
        &r2,
        2,
        &[
            "--format=posix",
            "--sparse",
            "--sparse-version=1.0",
            "--xattrs",
            "--xattrs-include=user.*",
        ],
    );

    // 3: PAX sparse 0.1.
    let r3 = src(3);
    sparse(&r3, "sparse3", 3 << 20);
    finish(&r3, 1_500_000_002);
    let l3 = pack(
        &r3,
        3,
        &["--format=posix", "--sparse", "--sparse-version=0.1"],
    );

    // 4: ustar: a 100+ byte path split into prefix and name.
    let r4 = src(4);
    write(
        &r4,
        &format!("u/{}/{}", "p".repeat(90), "n".repeat(20)),
        b"ustar\n",
    );
    finish(&r4, 1_500_000_003);
    let l4 = pack(&r4, 4, &["--format=ustar"]);

    let (theirs, ours, _) = hand_made(
        t.path(),
        "img",
        &[l1.clone(), l2.clone(), l3.clone(), l4.clone()],
    );
    assert_same_trees(
        "GNU tar layers: ocikit flatten vs umoci unpack",
        "umoci",
        &theirs,
        "ocikit",
        &ours,
    );
    let want = |len: usize| {
        let mut w = vec![0u8; len];
        w[..4].copy_from_slice(b"head");
        w[len / 2..len / 2 + 6].copy_from_slice(b"middle");
        w[len - 4..].copy_from_slice(b"tail");
        sha(&w)
    };
    assert_eq!(
        ours["sparse2"].sha256,
        want(5 << 20),
        "PAX sparse 1.0 content"
    );
    assert_eq!(
        ours["sparse3"].sha256,
        want(3 << 20),
        "PAX sparse 0.1 content"
    );
    assert_eq!(ours["hard-b"].sha256, sha(b"hard\n"));
    assert_eq!(ours["hard-a"].sha256, sha(b"replaced\n"));
    assert!(!ours.contains_key("fifo"));
    assert_eq!(ours["."].mtime, (1_500_000_003, 0));

    // 5: old GNU sparse (typeflag 'S'): umoci 0.4.7 refuses it ("unknown
    // typeflag '\x53'"), so ocikit alone: the same image plus this layer
    // must flatten to the tree above plus the expanded file.
    let r5 = src(5);
    sparse(&r5, "sparse-gnu", 8 << 20);
    finish(&r5, 1_500_000_003);
    let l5 = pack(&r5, 5, &["--format=gnu", "--sparse"]);
    assert!(
        layer_entries(&l5, OCI_TAR)
            .iter()
            .any(|e| e.1 == tar::EntryType::GNUSparse),
        "GNU tar wrote no 'S' entry"
    );
    let image = layout_of(t.path(), "gnu-sparse", &[l1, l2, l3, l4, l5]);
    let o = t.path().join("gnu-sparse-out");
    flatten_to(&image, &o, !is_root());
    let mut with_sparse = scan(&o);
    let extra = with_sparse.remove("sparse-gnu").expect("sparse-gnu");
    assert_eq!(
        (extra.size, extra.sha256),
        (Some(8 << 20), want(8 << 20)),
        "GNU sparse content"
    );
    assert_same_trees(
        "with an old-GNU-sparse layer vs without",
        "without",
        &ours,
        "with",
        &with_sparse,
    );
}

/// `--tar` and squash carry the image's owners whether ocikit runs as root
/// or not (as non-root they come back from `user.rootlesscontainers`): for
/// an image without devices or privileged xattrs, the tar bytes and the
/// squashed manifest digest must not depend on who runs ocikit. Root only
/// (runs ocikit as nobody through setpriv).
#[test]
fn tar_and_squash_do_not_depend_on_the_user() {
    let test = "tar_and_squash_do_not_depend_on_the_user";
    if !is_root() {
        eprintln!("SKIPPING {test}: needs root (to run ocikit as another user)");
        return;
    }
    if skip_without(test, &["setpriv", "chown"]) {
        return;
    }
    use tar::EntryType as T;
    let t = Scratch::new("as-nobody");
    chmod(t.path(), ".", 0o777);
    let x: &[(&str, &[u8])] = &[("user.k", b"v\n\x00")];
    let layer = pax_tar(&[
        pax("./", T::Directory, 0o755, "1000000000"),
        Pax {
            uid: 1234,
            gid: 5678,
            ..pax("owned/", T::Directory, 0o555, "1000000001")
        },
        Pax {
            uid: 1234,
            gid: 5678,
            data: b"suid\n",
            xattrs: x,
            ..pax("owned/suid", T::Regular, 0o4755, "1000000002.5")
        },
        Pax {
            uid: 42,
            gid: 0,
            link: Some("owned/suid"),
            ..pax("owned/link", T::Link, 0o4755, "1000000002")
        },
        Pax {
            uid: 7,
            gid: 7,
            link: Some("owned/suid"),
            ..pax("sym", T::Symlink, 0o777, "1000000003")
        },
        Pax {
            uid: 0,
            gid: 0,
            ..pax("fifo", T::Fifo, 0o600, "1000000004")
        },
    ]);
    let image = layout_of(t.path(), "l", &[layer]);
    let nobody_copy = t.path().join("l-nobody");
    copy_tree(&t.path().join("l"), &nobody_copy);
    run_ok("chown", &["-R", "65534:65534", &s(&nobody_copy)]);
    let as_nobody = |args: &[&str]| {
        let mut a = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_ocikit"),
        ];
        a.extend_from_slice(args);
        run_ok("setpriv", &a)
    };
    let root_tar = t.path().join("root.tar");
    let nobody_tar = t.path().join("nobody.tar");
    ocikit_ok(["flatten", &image, "--tar", &s(&root_tar)]);
    let o = as_nobody(&[
        "flatten",
        &format!("{}:latest", s(&nobody_copy)),
        "--tar",
        &s(&nobody_tar),
    ]);
    let (a, b) = (fs::read(&root_tar).unwrap(), fs::read(&nobody_tar).unwrap());
    if a != b {
        let list = |d: &[u8]| -> Vec<String> {
            layer_entries(d, OCI_TAR)
                .into_iter()
                .map(|(p, k, l, x)| {
                    let x: Vec<String> = x
                        .iter()
                        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                        .collect();
                    format!("{p} {k:?} {l:?} {x:?}")
                })
                .collect()
        };
        let h = |d: &[u8]| -> Vec<String> {
            let mut v = Vec::new();
            for e in tar::Archive::new(d).entries().unwrap() {
                let e = e.unwrap();
                let hd = e.header();
                v.push(format!(
                    "{} mode {:o} {}:{} mtime {}",
                    String::from_utf8_lossy(&e.path_bytes()),
                    hd.mode().unwrap(),
                    hd.uid().unwrap(),
                    hd.gid().unwrap(),
                    hd.mtime().unwrap()
                ));
            }
            v
        };
        panic!(
            "flatten --tar differs as root and as nobody ({} vs {} bytes)\nroot:   {:?}\n        {:?}\nnobody: {:?}\n        {:?}\nnobody's stderr: {}",
            a.len(),
            b.len(),
            list(&a),
            h(&a),
            list(&b),
            h(&b),
            stderr(&o)
        );
    }
    ocikit_ok(["squash", &image, "--tag", "sq"]);
    as_nobody(&[
        "squash",
        &format!("{}:latest", s(&nobody_copy)),
        "--tag",
        "sq",
    ]);
    assert_eq!(
        index_entry(&t.path().join("l"), "sq")["digest"],
        index_entry(&nobody_copy, "sq")["digest"],
        "squash as root and as nobody"
    );
}

/// As non-root, `--tar` and squash must read back what they extracted even
/// where the image makes it unreadable (a 0000 directory with content, a
/// 0000 file) -- umoci and `flatten --output` handle these as non-root --
/// give the same bytes / digest as a root run, and leave no staging
/// directory behind. Root only (runs ocikit as nobody through setpriv).
#[test]
fn non_root_tar_and_squash_read_back_unreadable_entries() {
    let test = "non_root_tar_and_squash_read_back_unreadable_entries";
    if !is_root() {
        eprintln!("SKIPPING {test}: needs root (to run ocikit as another user)");
        return;
    }
    if skip_without(test, &["setpriv", "chown"]) {
        return;
    }
    use tar::EntryType as T;
    let t = Scratch::new("unreadable");
    chmod(t.path(), ".", 0o777);
    let layer = pax_tar(&[
        pax("./", T::Directory, 0o755, "1000000000"),
        pax("d000/", T::Directory, 0o000, "1000000001"),
        Pax {
            data: b"inside a 0000 directory\n",
            ..pax("d000/inside", T::Regular, 0o644, "1000000002")
        },
        Pax {
            data: b"mode 0000\n",
            ..pax("f000", T::Regular, 0o000, "1000000003")
        },
    ]);
    let image = layout_of(t.path(), "l", &[layer]);
    let nobody_copy = t.path().join("l-nobody");
    copy_tree(&t.path().join("l"), &nobody_copy);
    run_ok("chown", &["-R", "65534:65534", &s(&nobody_copy)]);
    let out_dir = t.path().join("nobody-out");
    fs::create_dir(&out_dir).unwrap();
    run_ok("chown", &["65534:65534", &s(&out_dir)]);
    let as_nobody = |args: &[&str]| {
        let mut a = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_ocikit"),
        ];
        a.extend_from_slice(args);
        Command::new("setpriv").args(&a).output().unwrap()
    };
    let root_tar = t.path().join("root.tar");
    ocikit_ok(["flatten", &image, "--tar", &s(&root_tar)]);
    let nobody_tar = out_dir.join("nobody.tar");
    let o = as_nobody(&[
        "flatten",
        &format!("{}:latest", s(&nobody_copy)),
        "--tar",
        &s(&nobody_tar),
    ]);
    let leftovers: Vec<String> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "nobody.tar")
        .collect();
    assert!(
        o.status.success(),
        "flatten --tar as nobody failed: {}(left behind beside the tar: {leftovers:?})",
        stderr(&o)
    );
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    assert!(
        fs::read(&root_tar).unwrap() == fs::read(&nobody_tar).unwrap(),
        "flatten --tar differs as root and as nobody"
    );
    ocikit_ok(["squash", &image, "--tag", "sq"]);
    let o = as_nobody(&[
        "squash",
        &format!("{}:latest", s(&nobody_copy)),
        "--tag",
        "sq",
    ]);
    assert!(
        o.status.success(),
        "squash as nobody failed: {}",
        stderr(&o)
    );
    assert_eq!(
        index_entry(&t.path().join("l"), "sq")["digest"],
        index_entry(&nobody_copy, "sq")["digest"],
        "squash as root and as nobody"
    );
}

/// Entries under symlinked parents resolve inside the root (chroot
/// semantics) in both umoci and ocikit: `lib -> usr/lib`, `l -> /etc` and
/// `up -> ../../../..` lead to ROOT/usr/lib, ROOT/etc and ROOT, never out of
/// it; both trees must be equal and nothing may appear on the host.
#[test]
fn symlinked_parents_resolve_in_root_like_umoci() {
    let test = "symlinked_parents_resolve_in_root_like_umoci";
    if skip_without(test, &["umoci"]) {
        return;
    }
    use tar::EntryType as T;
    let t = Scratch::new("in-root");
    let token = format!("ocikit-flatten-umoci-probe-{}", std::process::id());
    let leak = |p: String| -> &'static str { Box::leak(p.into_boxed_str()) };
    let l1 = pax_tar(&[
        pax("./", T::Directory, 0o755, "1000000000"),
        pax("etc/", T::Directory, 0o755, "1000000001"),
        Pax {
            data: b"host\n",
            ..pax("etc/hostname", T::Regular, 0o644, "1000000002")
        },
        pax("usr/", T::Directory, 0o755, "1000000003"),
        pax("usr/lib/", T::Directory, 0o755, "1000000004"),
        Pax {
            link: Some("usr/lib"),
            ..pax("lib", T::Symlink, 0o777, "1000000005")
        },
        pax("links/", T::Directory, 0o755, "1000000006"),
        Pax {
            link: Some("/etc"),
            ..pax("links/abs-etc", T::Symlink, 0o777, "1000000007")
        },
        Pax {
            link: Some("../../../../../../../.."),
            ..pax("links/up", T::Symlink, 0o777, "1000000008")
        },
    ]);
    let l2 = pax_tar(&[
        Pax {
            data: b"via /etc\n",
            ..pax(
                leak(format!("links/abs-etc/{token}-abs")),
                T::Regular,
                0o644,
                "1100000000",
            )
        },
        Pax {
            data: b"via ../..\n",
            ..pax(
                leak(format!("links/up/{token}-up")),
                T::Regular,
                0o644,
                "1100000001",
            )
        },
        Pax {
            data: b"via usr/lib\n",
            ..pax(
                leak(format!("lib/{token}-rel")),
                T::Regular,
                0o644,
                "1100000002",
            )
        },
    ]);
    let (theirs, ours, _) = hand_made(t.path(), "img", &[l1, l2]);
    let host_probes = [
        PathBuf::from(format!("/etc/{token}-abs")),
        PathBuf::from(format!("/{token}-up")),
        t.path().join(format!("{token}-up")),
    ];
    for p in &host_probes {
        let there = p.exists();
        let _ = fs::remove_file(p);
        assert!(!there, "something escaped the root: {}", p.display());
    }
    for p in [
        format!("etc/{token}-abs"),
        format!("{token}-up"),
        format!("usr/lib/{token}-rel"),
    ] {
        assert_eq!(
            ours.get(&p).map(|m| m.kind),
            Some("file"),
            "ocikit: {p} (in-root resolution)"
        );
    }
    assert_same_trees(
        "symlinked parents: ocikit flatten vs umoci unpack",
        "umoci",
        &theirs,
        "ocikit",
        &ours,
    );
}

/// The output contract: an existing empty directory is fine, a non-empty
/// one is an error (exit 2, `ocikit: error:`) that leaves it untouched, and
/// so is an unknown tag; squash errors leave the layout untouched. Needs no
/// external tool.
#[test]
fn flatten_output_dir_contract() {
    let t = Scratch::new("contract");
    let l = t.path().join("layout");
    build_simple(&l);
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    ocikit_ok([
        "flatten",
        &format!("{}:latest", s(&l)),
        "--output",
        &s(&empty),
    ]);
    assert_eq!(
        fs::read(empty.join("hello.txt")).unwrap(),
        b"hello\n",
        "flatten into an empty directory"
    );
    let full = t.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep"), b"mine").unwrap();
    let before = snapshot(&full);
    let out = s(&full);
    let args = ["flatten", &format!("{}:latest", s(&l)), "--output", &out];
    let r = run_checked(&args);
    assert_error(&args, &r, &[]);
    assert_eq!(
        snapshot(&full),
        before,
        "a failed flatten must not touch DIR"
    );
    let missing = s(&t.path().join("nope"));
    let args = [
        "flatten",
        &format!("{}:no-such-tag", s(&l)),
        "--output",
        &missing,
    ];
    let r = run_checked(&args);
    assert_error(&args, &r, &[]);
    // squash: an unknown source tag, and a tag that is not a valid tag.
    let before = snapshot(&l);
    let src = format!("{}:no-such-tag", s(&l));
    let args = ["squash", &src, "--tag", "sq"];
    let r = run_checked(&args);
    assert_error(&args, &r, &[]);
    let src = format!("{}:latest", s(&l));
    let args = ["squash", &src, "--tag", "not a tag!"];
    let r = run_checked(&args);
    assert_error(&args, &r, &[]);
    assert_eq!(
        snapshot(&l),
        before,
        "a failed squash must not touch the layout"
    );
}

// ====================================================================== files and get-file

/// `ocikit files --json` as a tree of the fields umoci's rootfs can be
/// compared on: (kind, mode, uid, gid, size, symlink target, device,
/// mtime), keyed like [`scan`] (`.` for the root).
fn files_tree(loc: &str) -> BTreeMap<String, Value> {
    let o = ocikit_ok(["files", loc, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out = BTreeMap::new();
    let mut add = |e: &Value| {
        let p = e["path"].as_str().unwrap();
        let rel = if p == "/" {
            ".".to_string()
        } else {
            p[1..].to_string()
        };
        assert!(
            out.insert(rel.clone(), e.clone()).is_none(),
            "{rel} listed twice"
        );
    };
    add(&v["root"]);
    for e in v["entries"].as_array().unwrap() {
        add(e);
    }
    out
}

/// `files --json` lists exactly umoci's paths, each with umoci's type, mode,
/// owner, size, symlink target, device numbers and (for everything but
/// directories, whose mtimes umoci stamps with the unpack time where the
/// image implies them) mtime.
#[test]
fn files_lists_what_umoci_unpacks() {
    let test = "files_lists_what_umoci_unpacks";
    if skip_without(test, &["umoci"]) {
        return;
    }
    let f = fixture();
    if !f.root {
        eprintln!("SKIPPING {test}: not root (owners and devices need a root unpack)");
        return;
    }
    let ours = files_tree(&format!("oci:{}", f.image));
    let theirs = scan_umoci(&f.umoci_rootfs);
    let mut problems = Vec::new();
    for (p, m) in &theirs {
        let Some(e) = ours.get(p) else {
            problems.push(format!("{p}: only in umoci ({})", m.kind));
            continue;
        };
        let mut d = Vec::new();
        if e["type"] != m.kind {
            d.push(format!("type {} vs {}", m.kind, e["type"]));
        }
        if e["mode"] != format!("{:04o}", m.mode) {
            d.push(format!("mode {:04o} vs {}", m.mode, e["mode"]));
        }
        if (e["uid"].as_u64(), e["gid"].as_u64()) != (Some(m.uid.into()), Some(m.gid.into())) {
            d.push(format!(
                "owner {}:{} vs {}:{}",
                m.uid, m.gid, e["uid"], e["gid"]
            ));
        }
        if let Some(size) = m.size {
            if e["size"] != size {
                d.push(format!("size {size} vs {}", e["size"]));
            }
        }
        if e["link"].as_str().map(String::from) != m.target {
            d.push(format!("link {:?} vs {}", m.target, e["link"]));
        }
        if let Some((ma, mi)) = m.rdev {
            if e["device"] != json!([ma, mi]) {
                d.push(format!("device {ma},{mi} vs {}", e["device"]));
            }
        }
        if m.kind != "dir"
            && (e["mtime"].as_i64(), e["mtime_nsec"].as_i64()) != (Some(m.mtime.0), Some(m.mtime.1))
        {
            d.push(format!(
                "mtime {:?} vs {}.{}",
                m.mtime, e["mtime"], e["mtime_nsec"]
            ));
        }
        if !d.is_empty() {
            problems.push(format!("{p}: {}", d.join("; ")));
        }
    }
    for (p, e) in &ours {
        if !theirs.contains_key(p) {
            problems.push(format!("{p}: only in ocikit files ({})", e["type"]));
        }
    }
    assert!(
        problems.is_empty(),
        "files vs umoci unpack:\n  {}",
        problems.join("\n  ")
    );
    // Layer indexes: what the top layer added comes from it; hardlinks say
    // what they link to.
    assert_eq!(ours["final/file"]["layer"], 4);
    assert_eq!(ours["etc/hostname"]["layer"], 1);
    assert_eq!(ours["crafted/lower-link"]["hardlink"], "/hl/a");
    assert!(ours.len() > 100, "{}", ours.len());
}

/// `root`-relative `rel` resolved like RESOLVE_IN_ROOT on a host tree:
/// symlinks followed, absolute targets and `..` clamped at `root`; `None`
/// when absent or looping.
fn resolve_in_root(root: &Path, rel: &[u8]) -> Option<PathBuf> {
    let mut queue: std::collections::VecDeque<Vec<u8>> =
        rel.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match &c[..] {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(c);
        let here = done.iter().fold(root.to_path_buf(), |p, c| {
            p.join(std::ffi::OsStr::from_bytes(c))
        });
        let md = fs::symlink_metadata(&here).ok()?;
        if md.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            done.pop();
            let t = fs::read_link(&here).ok()?;
            let t = t.as_os_str().as_bytes();
            if t.starts_with(b"/") {
                done.clear();
            }
            for x in t.split(|&b| b == b'/').rev() {
                queue.push_front(x.to_vec());
            }
        }
    }
    Some(done.iter().fold(root.to_path_buf(), |p, c| {
        p.join(std::ffi::OsStr::from_bytes(c))
    }))
}

/// `get-file` gives the bytes of every regular file umoci unpacked, symlinks
/// resolve as they do in umoci's tree (and `--no-follow` gives their
/// targets), and what whiteouts and opaque directories hid is not found.
#[test]
fn get_file_matches_umoci_unpack() {
    let test = "get_file_matches_umoci_unpack";
    if skip_without(test, &["umoci"]) {
        return;
    }
    let f = fixture();
    let loc = format!("oci:{}", f.image);
    let root = &f.umoci_rootfs;
    let (mut files, mut links) = (0, 0);
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap();
        if rel.as_os_str().is_empty() {
            continue;
        }
        let arg = Path::new("/").join(rel);
        let ft = e.file_type();
        if ft.is_file() {
            // As non-root the tree may hold 0000 files umoci could not read
            // back; compare what can be read.
            let Ok(want) = fs::read(e.path()) else {
                continue;
            };
            let o = ocikit([
                std::ffi::OsStr::new("get-file"),
                loc.as_ref(),
                arg.as_os_str(),
            ]);
            assert_eq!(code(&o), 0, "get-file {}: {}", arg.display(), stderr(&o));
            assert!(
                o.stdout == want,
                "get-file {}: {} bytes, umoci has {}",
                arg.display(),
                o.stdout.len(),
                want.len()
            );
            files += 1;
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path()).unwrap();
            let o = ocikit([
                std::ffi::OsStr::new("get-file"),
                loc.as_ref(),
                arg.as_os_str(),
                "--no-follow".as_ref(),
            ]);
            assert_eq!(
                code(&o),
                0,
                "get-file --no-follow {}: {}",
                arg.display(),
                stderr(&o)
            );
            let mut want = target.as_os_str().as_bytes().to_vec();
            want.push(b'\n');
            assert_eq!(o.stdout, want, "get-file --no-follow {}", arg.display());
            let o = ocikit([
                std::ffi::OsStr::new("get-file"),
                loc.as_ref(),
                arg.as_os_str(),
            ]);
            let resolved = resolve_in_root(root, rel.as_os_str().as_bytes());
            match resolved.as_deref().map(|p| (p, fs::symlink_metadata(p))) {
                Some((p, Ok(md))) if md.is_file() => {
                    assert_eq!(code(&o), 0, "get-file {}: {}", arg.display(), stderr(&o));
                    assert!(
                        o.stdout == fs::read(p).unwrap(),
                        "get-file {} (-> {})",
                        arg.display(),
                        p.display()
                    );
                }
                Some((_, Ok(md))) if md.is_dir() => {
                    assert_eq!(code(&o), 2, "get-file {}: {}", arg.display(), stderr(&o));
                    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
                }
                Some((_, Ok(_))) => {} // a FIFO or a device: no content to compare
                _ => {
                    assert_eq!(
                        code(&o),
                        2,
                        "get-file {} (dangling): {}",
                        arg.display(),
                        stderr(&o)
                    );
                    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
                }
            }
            links += 1;
        }
    }
    assert!(files > 50 && links > 5, "{files} files, {links} symlinks");
    // Hidden by whiteouts (plain, of a parent, of one name of a hardlink
    // group) and by opaque directories (umoci's and the hand-made one),
    // or replaced: exit 2 naming the path.
    for p in [
        "/del/file",
        "/del/dir/a",
        "/del/dir/b/c",
        "/gone/target",
        "/hl/b",
        "/ro/file",
        "/opaque/a",
        "/opaque/sub/c",
        "/ro2/old",
        "/ro2/sub/old",
        "/opq2/old1",
        "/opq2/oldsub/x",
        "/modes/d000-gone/sub/inside",
        "/replace/dir-to-file/x",
        // Whited out through the same-layer symlink replace/dir-to-link.
        "/etc/y",
    ] {
        assert!(!root.join(&p[1..]).exists(), "umoci has {p}");
        let o = ocikit(["get-file", &loc, p]);
        assert_eq!(code(&o), 2, "get-file {p}: {}", stdout(&o));
        assert!(
            stderr(&o).contains(p) && stderr(&o).contains("no such file"),
            "{}",
            stderr(&o)
        );
        assert!(o.stdout.is_empty());
    }
    // A file of the top layer: one layer read.
    let o = ocikit_ok(["get-file", &loc, "/final/file", "--json"]);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["layers_read"], 1, "{j}");
}
