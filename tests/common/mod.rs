//! Shared test support: running the binary, building deterministic layers and
//! layouts, the demo fixture's generator, and tree snapshots.
#![allow(dead_code)]

pub mod clients;
pub mod docker;
pub mod registry;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// The built `ocikit` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ocikit"))
}

/// Runs `ocikit ARGS`.
pub fn ocikit<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(bin()).args(args).output().expect("run ocikit")
}

/// The exit code, stdout and stderr of a run.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The committed demo layout.
pub fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/demo")
}

/// A copy of the demo layout in a temporary directory.
pub fn demo_copy() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("demo");
    copy_tree(&demo(), &dst);
    (t, dst)
}

pub fn copy_tree(src: &Path, dst: &Path) {
    for e in walkdir::WalkDir::new(src) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(src).unwrap();
        let to = dst.join(rel);
        if e.file_type().is_dir() {
            fs::create_dir_all(&to).unwrap();
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Every file under `root` (relative path → sha256 of bytes, or a marker for
/// directories and symlinks): compare before/after to prove nothing changed.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let ft = e.file_type();
        let v = if ft.is_symlink() {
            format!("link:{}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_dir() {
            "dir".to_string()
        } else {
            sha256_hex(&fs::read(e.path()).unwrap())
        };
        m.insert(rel, v);
    }
    m
}

pub fn sha256_hex(b: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b);
    h.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

pub fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

/// Whether a program is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The conformance corpus, or `None` (the caller prints that it skips).
pub fn corpus() -> Option<PathBuf> {
    let p = std::env::var_os("OCIKIT_CORPUS")?;
    let p = PathBuf::from(p);
    let p = if p.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
    } else {
        p
    };
    p.join("EXPECTATIONS.tsv").is_file().then_some(p)
}

// ---------------------------------------------------------------- layers

/// A tar entry for building deterministic layers.
#[derive(Clone)]
pub enum Entry {
    Dir(&'static str, u32),
    File(&'static str, u32, Vec<u8>),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
}

pub fn file(path: &'static str, content: &str) -> Entry {
    Entry::File(path, 0o644, content.as_bytes().to_vec())
}

/// An uncompressed tar with fixed owners and times, in the order given.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Entry::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// gzip with a fixed header (mtime 0, no name).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(9));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 19).unwrap()
}

// ---------------------------------------------------------------- layouts

/// Writes `bytes` as a blob of the layout at `root`; returns a descriptor.
pub fn put_blob(root: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let hex = sha256_hex(bytes);
    let p = root.join("blobs/sha256").join(&hex);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, bytes).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// JSON as stored: compact, keys in insertion order.
pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

pub fn write_layout_files(root: &Path, index: &Value) {
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(root.join("index.json"), to_bytes(index)).unwrap();
}

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A layer blob: (descriptor, diff_id).
pub fn put_layer(root: &Path, media_type: &str, tar_bytes: &[u8]) -> (Value, String) {
    let stored = match media_type {
        OCI_GZIP | DOCKER_GZIP => gzip(tar_bytes),
        OCI_ZSTD => zstd(tar_bytes),
        _ => tar_bytes.to_vec(),
    };
    (put_blob(root, media_type, &stored), digest_of(tar_bytes))
}

/// Writes a config + manifest for the given layers; returns the manifest descriptor.
pub fn put_image(
    root: &Path,
    arch: &str,
    variant: Option<&str>,
    layers: &[(Value, String)],
    docker: bool,
) -> Value {
    let mut cfg = json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
    });
    if let Some(v) = variant {
        cfg["variant"] = json!(v);
    }
    cfg["config"] = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/hello"],
        "WorkingDir": "/",
        "Labels": {"org.opencontainers.image.title": "ocikit demo"}
    });
    cfg["rootfs"] = json!({"type": "layers", "diff_ids": layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()});
    cfg["history"] = json!(layers
        .iter()
        .enumerate()
        .map(|(i, _)| json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("ocikit demo layer {i}")}))
        .collect::<Vec<_>>());
    let (cfg_type, man_type) = if docker {
        (DOCKER_CONFIG, DOCKER_MANIFEST)
    } else {
        (OCI_CONFIG, OCI_MANIFEST)
    };
    let cfg_desc = put_blob(root, cfg_type, &to_bytes(&cfg));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": man_type,
        "config": cfg_desc,
        "layers": layers.iter().map(|l| l.0.clone()).collect::<Vec<_>>(),
    });
    put_blob(root, man_type, &to_bytes(&manifest))
}

/// A small amd64 image of one uncompressed one-file layer (`data` holding
/// `content`) with `created` in its config; returns the manifest
/// descriptor and the digests of its manifest, config and layer.
pub fn put_one_file_image(root: &Path, created: &str, content: &str) -> (Value, Vec<String>) {
    let layer = put_layer(
        root,
        OCI_TAR,
        &tar(&[Entry::File("data", 0o644, content.as_bytes().to_vec())]),
    );
    let cfg = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.1]},
    });
    let cfg_desc = put_blob(root, OCI_CONFIG, &to_bytes(&cfg));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg_desc,
        "layers": [layer.0],
    });
    let m = put_blob(root, OCI_MANIFEST, &to_bytes(&manifest));
    let blobs = [&m, &cfg_desc, &layer.0]
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    (m, blobs)
}

/// Builds the demo layout (see testdata/README.md for what it holds).
pub fn build_demo(root: &Path) {
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let base = tar(&[
        Entry::Dir("bin/", 0o755),
        Entry::File(
            "bin/hello",
            0o755,
            b"#!/bin/sh\necho 'hello from the ocikit demo'\n".to_vec(),
        ),
        Entry::Dir("etc/", 0o755),
        file("etc/hostname", "demo\n"),
        file(
            "etc/os-release",
            "NAME=\"ocikit demo\"\nID=demo\nVERSION_ID=1.0\n",
        ),
        Entry::Symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        Entry::Dir("tmp/", 0o1777),
        file("tmp/scratch.txt", "removed by the next layer\n"),
        Entry::Dir("usr/", 0o755),
        Entry::Dir("usr/share/", 0o755),
        Entry::Dir("usr/share/demo/", 0o755),
        file("usr/share/demo/README", "The ocikit demo image.\n"),
        Entry::Hardlink("usr/share/demo/README.link", "usr/share/demo/README"),
    ]);
    let update = tar(&[
        Entry::Dir("etc/", 0o755),
        file("etc/motd", "Welcome to the ocikit demo.\n"),
        Entry::Dir("tmp/", 0o1777),
        file("tmp/.wh.scratch.txt", ""),
        Entry::Dir("usr/share/demo/", 0o755),
        file("usr/share/demo/.wh..wh..opq", ""),
        file(
            "usr/share/demo/NOTES",
            "Opaque directory: README is gone below this layer.\n",
        ),
    ]);
    let app = |arch: &str| {
        tar(&[
            Entry::Dir("app/", 0o755),
            Entry::File(
                "app/config.json",
                0o644,
                format!("{{\"arch\":\"{arch}\"}}\n").into_bytes(),
            ),
        ])
    };
    let l1 = put_layer(root, OCI_GZIP, &base);
    let l2 = put_layer(root, OCI_GZIP, &update);
    let l3_amd = put_layer(root, OCI_ZSTD, &app("amd64"));
    let l3_arm = put_layer(root, OCI_ZSTD, &app("arm64"));
    let amd = put_image(
        root,
        "amd64",
        None,
        &[l1.clone(), l2.clone(), l3_amd],
        false,
    );
    let arm = put_image(
        root,
        "arm64",
        Some("v8"),
        &[l1.clone(), l2.clone(), l3_arm],
        false,
    );
    let mut amd_entry = amd.clone();
    amd_entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut arm_entry = arm.clone();
    arm_entry["platform"] = json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [amd_entry, arm_entry],
        "annotations": {"org.opencontainers.image.source": "testdata/README.md"}
    });
    let index_desc = put_blob(root, OCI_INDEX, &to_bytes(&index));

    // A Docker schema2 image over the same two gzip layers.
    let dl1 = put_layer(root, DOCKER_GZIP, &base);
    let dl2 = put_layer(root, DOCKER_GZIP, &update);
    let docker = put_image(root, "amd64", None, &[dl1, dl2], true);

    // A referrer (an SBOM artifact) whose subject is the amd64 manifest. It is
    // not listed in index.json: ocikit finds it by its subject.
    let empty = put_blob(root, OCI_EMPTY, b"{}");
    let mut empty_desc = empty.clone();
    empty_desc["data"] = json!("e30=");
    let sbom = put_blob(
        root,
        "application/spdx+json",
        br#"{"spdxVersion":"SPDX-2.3","name":"ocikit-demo","packages":[]}"#,
    );
    let referrer = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": empty_desc,
        "layers": [sbom],
        "subject": amd,
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    });
    put_blob(root, OCI_MANIFEST, &to_bytes(&referrer));

    let mut e1 = index_desc;
    e1["annotations"] = json!({"org.opencontainers.image.ref.name": "1.0"});
    let mut e2 = docker;
    e2["annotations"] = json!({"org.opencontainers.image.ref.name": "legacy"});
    write_layout_files(
        root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e1, e2]}),
    );
}

/// A minimal one-image layout (one gzip layer), tagged `latest`; returns
/// (manifest descriptor, config descriptor, layer descriptor).
pub fn build_simple(root: &Path) -> (Value, Value, Value) {
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let layer = put_layer(root, OCI_GZIP, &tar(&[file("hello.txt", "hello\n")]));
    let manifest = put_image(root, "amd64", None, std::slice::from_ref(&layer), false);
    let m: Value = serde_json::from_slice(
        &fs::read(
            root.join("blobs/sha256")
                .join(&manifest["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let mut entry = manifest.clone();
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    write_layout_files(
        root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
    );
    (manifest, m["config"].clone(), layer.0)
}

/// Path of a blob given its descriptor.
pub fn blob_path(root: &Path, desc: &Value) -> PathBuf {
    let d = desc["digest"].as_str().unwrap();
    let (alg, hex) = d.split_once(':').unwrap();
    root.join("blobs").join(alg).join(hex)
}

// ---------------------------------------------------------------- index.json readers

/// A layout's `index.json`, parsed.
pub fn index_json(root: &Path) -> Value {
    serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap()
}

/// The `org.opencontainers.image.ref.name` of every entry of a layout's
/// `index.json`, in order (untagged entries are skipped).
pub fn index_tags(root: &Path) -> Vec<String> {
    index_json(root)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect()
}

/// The `index.json` entry tagged `tag`; panics if there is not exactly one.
pub fn index_entry(root: &Path, tag: &str) -> Value {
    let idx = index_json(root);
    let found: Vec<&Value> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .collect();
    assert_eq!(found.len(), 1, "expected one entry tagged {tag:?} in {idx}");
    found[0].clone()
}

/// The stored bytes of the blob `digest` (`alg:hex`) names.
pub fn blob_bytes(root: &Path, digest: &str) -> Vec<u8> {
    let (alg, hex) = digest.split_once(':').unwrap();
    fs::read(root.join("blobs").join(alg).join(hex)).unwrap()
}

/// Runs `ocikit ARGS`, asserting exit 0 (the failure shows stderr).
pub fn ocikit_ok<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let o = ocikit(&args);
    assert_eq!(code(&o), 0, "ocikit {args:?} failed: {}", stderr(&o));
    o
}

// ---------------------------------------------------------------- external tools

/// A path as a string for command lines.
pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Runs an external tool.
pub fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"))
}

/// Runs an external tool, asserting success.
pub fn run_ok(prog: &str, args: &[&str]) -> Output {
    let o = run(prog, args);
    assert!(
        o.status.success(),
        "{prog} {args:?} failed ({:?}): {}{}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    o
}

/// Whether every tool is installed; otherwise says which is missing (the
/// caller then skips).
pub fn tools(test: &str, names: &[&str]) -> bool {
    for n in names {
        if !have(n) {
            eprintln!("skipping {test}: {n} is not installed");
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------- gc and crash tests

/// Every regular file under `root/blobs`, as `alg/encoded` (directories and
/// symlinks are left out): the blob set a gc keeps.
pub fn blob_files(root: &Path) -> std::collections::BTreeSet<String> {
    let blobs = root.join("blobs");
    walkdir::WalkDir::new(&blobs)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(&blobs).unwrap().display().to_string())
        .collect()
}

/// `alg/encoded` of a digest or descriptor's digest (the form of [`blob_files`]).
pub fn blob_name(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap();
    format!("{alg}/{hex}")
}

/// Takes the writer lock on a layout as another ocikit would (exclusive flock
/// on `.ocikit.lock`, our pid in it); released when the file is dropped.
pub fn hold_lock(root: &Path) -> fs::File {
    let path = root.join(".ocikit.lock");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.lock().unwrap();
    f.set_len(0).unwrap();
    f.write_all(std::process::id().to_string().as_bytes())
        .unwrap();
    f.flush().unwrap();
    f
}

// ---------------------------------------------------------------- checked runs of ocikit

/// Whether the tests run as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| stdout(&o).trim() == "0")
        .unwrap_or(false)
}

/// One finished run of the binary.
pub struct Run {
    pub code: i32,
    pub out: String,
    pub err: String,
}

impl Run {
    /// Wraps an output, checking ocikit did not panic and was not killed.
    pub fn checked(args: &[&str], o: &Output) -> Run {
        let r = Run {
            code: code(o),
            out: stdout(o),
            err: stderr(o),
        };
        assert!(
            !r.err.contains("panicked") && r.code != 101,
            "ocikit {args:?} panicked (exit {}):\n{}",
            r.code,
            r.err
        );
        assert!(
            (0..=2).contains(&r.code),
            "ocikit {args:?} exited {} (killed by a signal?):\nstdout: {}\nstderr: {}",
            r.code,
            r.out,
            r.err
        );
        r
    }
}

/// Runs `ocikit ARGS` with extra environment variables and, optionally, a
/// working directory; checks it did not panic and was not killed.
pub fn run_checked_with(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Run {
    let mut c = Command::new(bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let o = c.output().expect("run ocikit");
    Run::checked(args, &o)
}

/// Runs `ocikit ARGS`; checks it did not panic and was not killed.
pub fn run_checked(args: &[&str]) -> Run {
    run_checked_with(args, &[], None)
}

/// Asserts an operational error: exit 2 and exactly one `ocikit: error:` line
/// (notes and warnings may precede it) that contains every needle.
pub fn assert_error(args: &[&str], r: &Run, needles: &[&str]) -> String {
    assert_eq!(
        r.code, 2,
        "ocikit {args:?} should fail with exit 2\nstdout: {}\nstderr: {}",
        r.out, r.err
    );
    let lines: Vec<&str> = r
        .err
        .lines()
        .filter(|l| !l.starts_with("ocikit: warning:") && !l.starts_with("ocikit: note:"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "ocikit {args:?}: expected one error line, got:\n{}",
        r.err
    );
    let line = lines[0];
    assert!(
        line.starts_with("ocikit: error: "),
        "ocikit {args:?}: {line}"
    );
    for n in needles {
        assert!(
            line.contains(n),
            "ocikit {args:?}: the error should mention {n:?}:\n{line}"
        );
    }
    line.to_string()
}

/// Runs `ocikit ARGS` and asserts an operational error mentioning `needles`.
pub fn fails(args: &[&str], needles: &[&str]) -> String {
    let r = run_checked(args);
    assert_error(args, &r, needles)
}

// ---------------------------------------------------------------- property tests

/// A proptest configuration of `default` cases from a fixed seed (so a CI
/// run is repeatable: the cases that passed here pass there), or, when the
/// variable `var` is set (the long modes), that many cases from a random
/// seed, to explore. No failure files are written.
pub fn cases_from(var: &str, default: u32) -> proptest::test_runner::Config {
    let long: Option<u32> = std::env::var(var).ok().and_then(|v| v.parse().ok());
    proptest::test_runner::Config {
        cases: long.unwrap_or(default),
        failure_persistence: None,
        rng_seed: match long {
            Some(_) => proptest::test_runner::RngSeed::Random,
            None => proptest::test_runner::RngSeed::Fixed(0x0c1c_17a5_eed5_2026),
        },
        ..proptest::test_runner::Config::default()
    }
}

/// Gives the child the default disposition for `sig`: a test run in the
/// background inherits SIGINT ignored, where a terminal would not.
pub fn default_disposition(cmd: &mut Command, sig: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(sig, libc::SIG_DFL);
            Ok(())
        });
    }
}
