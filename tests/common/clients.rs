//! The clients our users run, each started privately for the tests (design.md, "Peers
//! to check against"):
//!
//! - [`Containers`]: podman 4.3, buildah 1.28 and skopeo over one vfs store (`--root`,
//!   `--runroot` in a temporary directory). No daemon. No system configuration counts:
//!   `CONTAINERS_CONF`, `CONTAINERS_REGISTRIES_CONF` and `CONTAINERS_STORAGE_CONF` point at
//!   files written here, `HOME` at a temporary home whose
//!   `.config/containers/policy.json` accepts anything (podman has no documented
//!   `--signature-policy` on every command; containers/image reads the policy from
//!   `$HOME/.config/containers/` first), and `XDG_RUNTIME_DIR` at a temporary directory.
//! - [`Containerd`]: containerd 1.6 with a minimal config (version 2, root, state and
//!   sockets in a temporary directory, CRI disabled), reached with `ctr --address SOCK
//!   -n ocikit-NAMESPACE`; images unpack with the `native` snapshotter (plain directory
//!   copies: no mounts). One daemon per test function ([`containerd`]), stopped by its
//!   pid when the returned [`Ctr`] drops.
//! - [`docker`]: the private `dockerd` of `tests/common/docker.rs`, one per test
//!   function, started and stopped under a process-wide lock so that two never run at
//!   once (each starts in well under a second).
//! - [`registry`]: `tests/common/registry.rs` (CNCF distribution on a free loopback
//!   port), one per test function; its `addr` field is the `127.0.0.1:PORT` to reach it at.
//!
//! Every daemon is owned by the test function that started it and stopped on drop
//! (SIGTERM by pid, then SIGKILL); a daemon also gets `PR_SET_PDEATHSIG` so that it
//! dies with the test thread if the process is killed before drop runs.
//!
//! A client that is not installed or cannot start is skipped: the helper prints a loud
//! `SKIPPING: …` line and returns `None`. `OCIKIT_REQUIRE_CLIENTS=1` turns that into a
//! failure (for CI machines where every client must run).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::docker::Dockerd;

/// The policy every containers/image tool gets: no signature checks (the images are
/// built or loaded by the tests themselves).
const POLICY: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;

/// A client that cannot be used here: skip, loudly (or fail when
/// `OCIKIT_REQUIRE_CLIENTS=1`).
pub fn skipping<T>(why: String) -> Option<T> {
    if std::env::var_os("OCIKIT_REQUIRE_CLIENTS").is_some_and(|v| v == "1") {
        panic!("{why}");
    }
    eprintln!("SKIPPING: {why}");
    None
}

/// `prog args` output as one readable string (for assertion messages).
pub fn show(prog: &str, args: &[std::ffi::OsString], o: &Output) -> String {
    format!(
        "{prog} {} → exit {:?}\nstdout: {}\nstderr: {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn os_args<I, S>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    args.into_iter().map(|a| a.as_ref().to_owned()).collect()
}

fn checked(prog: &str, args: &[std::ffi::OsString], o: Output) -> Output {
    assert!(o.status.success(), "{}", show(prog, args, &o));
    o
}

// ---------------------------------------------------------------- podman, buildah, skopeo

/// podman, buildah and skopeo over one private vfs store.
pub struct Containers {
    dir: tempfile::TempDir,
    /// The store's `--root`.
    pub root: PathBuf,
    /// The store's `--runroot`.
    pub runroot: PathBuf,
    policy: PathBuf,
    /// Seconds the first `podman images` took (the store's creation).
    pub start_seconds: f64,
}

impl Containers {
    /// A fresh store, or `None` (saying why) where podman, buildah or skopeo is missing
    /// or podman cannot use the store.
    pub fn start() -> Option<Containers> {
        for tool in ["podman", "buildah", "skopeo"] {
            if !super::have(tool) {
                return skipping(format!("{tool} is not installed (podman/buildah cells)"));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("ocikit-containers-")
            .tempdir()
            .ok()?;
        let d = dir.path().to_path_buf();
        let root = d.join("root");
        let runroot = d.join("run");
        for sub in ["root", "run", "xdg", "tmp", "home/.config/containers"] {
            fs::create_dir_all(d.join(sub)).ok()?;
        }
        let policy = d.join("policy.json");
        fs::write(&policy, POLICY).ok()?;
        fs::write(d.join("home/.config/containers/policy.json"), POLICY).ok()?;
        fs::write(
            d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .ok()?;
        fs::write(
            d.join("containers.conf"),
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n",
        )
        .ok()?;
        fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                runroot.display(),
                root.display()
            ),
        )
        .ok()?;
        let mut c = Containers {
            dir,
            root,
            runroot,
            policy,
            start_seconds: 0.0,
        };
        let t0 = Instant::now();
        let o = c.podman(["images"]);
        if !o.status.success() {
            return skipping(format!(
                "podman cannot use a private vfs store: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        c.start_seconds = t0.elapsed().as_secs_f64();
        Some(c)
    }

    /// The store's temporary directory (scratch space for the test too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, prog: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(prog);
        c.env("XDG_RUNTIME_DIR", d.join("xdg"))
            .env("HOME", d.join("home"))
            .env("TMPDIR", d.join("tmp"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env_remove("REGISTRY_AUTH_FILE")
            .stdin(Stdio::null());
        c
    }

    fn store_args(&self) -> Vec<std::ffi::OsString> {
        os_args([
            "--root".as_ref(),
            self.root.as_os_str(),
            "--runroot".as_ref(),
            self.runroot.as_os_str(),
            "--storage-driver".as_ref(),
            "vfs".as_ref(),
        ])
    }

    /// `podman --root … --runroot … --storage-driver vfs --cgroup-manager cgroupfs ARGS`.
    pub fn podman<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command("podman")
            .args(self.store_args())
            .args(["--cgroup-manager", "cgroupfs"])
            .args(args)
            .output()
            .expect("run podman")
    }

    /// [`Containers::podman`], asserting success.
    pub fn podman_ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args = os_args(args);
        checked("podman", &args, self.podman(&args))
    }

    /// `buildah --root … --runroot … --storage-driver vfs ARGS`.
    pub fn buildah<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command("buildah")
            .args(self.store_args())
            .args(args)
            .output()
            .expect("run buildah")
    }

    /// [`Containers::buildah`], asserting success.
    pub fn buildah_ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args = os_args(args);
        checked("buildah", &args, self.buildah(&args))
    }

    /// `skopeo --policy POLICY ARGS` (same configuration as podman).
    pub fn skopeo<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command("skopeo")
            .arg("--policy")
            .arg(&self.policy)
            .args(args)
            .output()
            .expect("run skopeo")
    }

    /// [`Containers::skopeo`], asserting success.
    pub fn skopeo_ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args = os_args(args);
        checked("skopeo", &args, self.skopeo(&args))
    }

    /// The signature-policy file (for buildah's `--signature-policy`).
    pub fn policy(&self) -> &Path {
        &self.policy
    }

    /// This store as a skopeo destination: `containers-storage:[vfs@ROOT+RUNROOT]NAME`.
    pub fn storage_ref(&self, name: &str) -> String {
        format!(
            "containers-storage:[vfs@{}+{}]{name}",
            self.root.display(),
            self.runroot.display()
        )
    }

    /// `podman image inspect NAME` (the first element).
    pub fn inspect(&self, name: &str) -> Value {
        let o = self.podman_ok(["image", "inspect", name]);
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("podman image inspect {name}: not JSON: {e}"));
        v[0].clone()
    }

    /// Whether podman has an image by this name or ID.
    pub fn has_image(&self, name: &str) -> bool {
        self.podman(["image", "exists", name]).status.success()
    }

    /// (image ID as `sha256:…`, manifest digest, diff_ids, names) of an image.
    pub fn image(&self, name: &str) -> ClientImage {
        let v = self.inspect(name);
        let manifest = v["Digest"].as_str().map(str::to_string);
        let mut digests: Vec<String> = manifest.iter().cloned().collect();
        for rd in strings(&v["RepoDigests"]) {
            if let Some((_, d)) = rd.split_once('@') {
                if !digests.iter().any(|x| x == d) {
                    digests.push(d.to_string());
                }
            }
        }
        ClientImage {
            config: format!("sha256:{}", v["Id"].as_str().expect("Id")),
            manifest,
            digests,
            diff_ids: strings(&v["RootFS"]["Layers"]),
            names: strings(&v["RepoTags"]),
        }
    }

    /// Builds an image from scratch with buildah (offline): one layer per element of
    /// `layers`, each a set of (path, content) files copied in; committed as `name`
    /// with a fixed timestamp.
    pub fn build(&self, name: &str, layers: &[&[(&str, &str)]]) {
        let policy = self.policy.as_os_str();
        let mut from = "scratch".to_string();
        for (i, files) in layers.iter().enumerate() {
            let ctx = self
                .dir
                .path()
                .join(format!("ctx-{}-{i}", name.replace(['/', ':'], "_")));
            for (p, content) in *files {
                let f = ctx.join(p);
                fs::create_dir_all(f.parent().unwrap()).unwrap();
                fs::write(&f, content).unwrap();
            }
            let o = self.buildah_ok([
                "from".as_ref(),
                "--signature-policy".as_ref(),
                policy,
                "--pull-never".as_ref(),
                from.as_ref(),
            ]);
            let ctr = String::from_utf8_lossy(&o.stdout).trim().to_string();
            self.buildah_ok(["copy".as_ref(), ctr.as_ref(), ctx.as_os_str(), "/".as_ref()]);
            self.buildah_ok([
                "config",
                "--cmd",
                "/bin/true",
                "--created-by",
                &format!("ocikit test layer {i}"),
                &ctr,
            ]);
            let target = if i + 1 == layers.len() {
                name.to_string()
            } else {
                format!("{name}-step{i}")
            };
            self.buildah_ok([
                "commit".as_ref(),
                "--signature-policy".as_ref(),
                policy,
                "--timestamp".as_ref(),
                "1700000000".as_ref(),
                ctr.as_ref(),
                target.as_ref(),
            ]);
            self.buildah_ok(["rm", &ctr]);
            from = target;
        }
    }

    /// The unpacked root filesystem of an image as buildah sees it: `buildah from` +
    /// `buildah mount` (with vfs, the container's directory; no mount is made).
    pub fn unpacked(&self, name: &str) -> PathBuf {
        let o = self.buildah_ok([
            "from".as_ref(),
            "--signature-policy".as_ref(),
            self.policy.as_os_str(),
            "--pull-never".as_ref(),
            name.as_ref(),
        ]);
        let ctr = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let o = self.buildah_ok(["mount", &ctr]);
        PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
    }
}

/// What a client says about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientImage {
    /// The config digest (= image ID for docker and podman).
    pub config: String,
    /// The manifest digest where the client keeps one (podman: `Digest`, the digest it
    /// was pulled or loaded by, which is the index's for an index).
    pub manifest: Option<String>,
    /// Every manifest digest the client records for the image (podman: `Digest` and
    /// those of `RepoDigests`, which include an index's chosen instance).
    pub digests: Vec<String>,
    pub diff_ids: Vec<String>,
    /// The names the client gives it.
    pub names: Vec<String>,
}

/// A JSON array of strings (empty for anything else).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------- containerd

/// A private containerd.
pub struct Containerd {
    child: Child,
    dir: Option<tempfile::TempDir>,
    socket: PathBuf,
    /// Seconds from spawn until `ctr version` answered.
    pub start_seconds: f64,
}

/// A fresh private containerd for one test function, or `None` (said why) where it
/// cannot run; `ctr` talks to it in namespace `ocikit-NAMESPACE`. The daemon stops when
/// the returned [`Ctr`] drops.
pub fn containerd(namespace: &str) -> Option<Ctr> {
    let daemon = Containerd::start()?;
    Some(Ctr {
        socket: daemon.socket.clone(),
        root: daemon.dir.as_ref().unwrap().path().to_path_buf(),
        namespace: format!("ocikit-{namespace}"),
        _daemon: daemon,
    })
}

impl Containerd {
    /// Starts one (see [`containerd`]).
    pub fn start() -> Option<Containerd> {
        for tool in ["containerd", "ctr"] {
            if !super::have(tool) {
                return skipping(format!("{tool} is not installed (containerd cells)"));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("ocikit-containerd-")
            .tempdir()
            .ok()?;
        let d = dir.path().to_path_buf();
        let socket = d.join("containerd.sock");
        let config = d.join("config.toml");
        // CRI would want networking and cgroups; nothing here runs containers.
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n\
                 [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"{debug}\"\n  level = \"warn\"\n\
                 [metrics]\n  address = \"\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = socket.display(),
                debug = d.join("debug.sock").display(),
            ),
        )
        .ok()?;
        let log = fs::File::create(d.join("containerd.log")).ok()?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().ok()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let t0 = Instant::now();
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return skipping(format!("containerd does not start: {e}")),
        };
        let mut c = Containerd {
            child,
            dir: Some(dir),
            socket,
            start_seconds: 0.0,
        };
        loop {
            if let Ok(Some(status)) = c.child.try_wait() {
                return skipping(format!(
                    "containerd exited before answering ({status}); log:\n{}",
                    c.log_tail(30)
                ));
            }
            if c.socket.exists() {
                let o = Command::new("ctr")
                    .arg("--address")
                    .arg(&c.socket)
                    .arg("version")
                    .output();
                if o.is_ok_and(|o| o.status.success()) {
                    c.start_seconds = t0.elapsed().as_secs_f64();
                    eprintln!(
                        "private containerd ready in {:.2} s at {}",
                        c.start_seconds,
                        c.socket.display()
                    );
                    return Some(c);
                }
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return skipping(format!(
                    "containerd did not answer within 30 s; log:\n{}",
                    c.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self
            .dir
            .as_ref()
            .map(|d| fs::read_to_string(d.path().join("containerd.log")).unwrap_or_default())
            .unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: a pid we spawned and have not reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let t0 = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() {
                if t0.elapsed() > Duration::from_secs(10) {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

/// `ctr` against a private containerd, in one namespace; owns the daemon.
pub struct Ctr {
    socket: PathBuf,
    root: PathBuf,
    /// The namespace (`-n`).
    pub namespace: String,
    _daemon: Containerd,
}

impl Ctr {
    /// `ctr --address SOCK -n NAMESPACE ARGS`.
    pub fn ctr<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .arg("-n")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// [`Ctr::ctr`], asserting success.
    pub fn ctr_ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args = os_args(args);
        checked("ctr", &args, self.ctr(&args))
    }

    /// `ctr images import --snapshotter native [EXTRA…] FILE`.
    pub fn import(&self, file: &Path, extra: &[&str]) -> Output {
        let mut args = os_args(["images", "import", "--snapshotter", "native"]);
        args.extend(os_args(extra));
        args.push(file.into());
        self.ctr(args)
    }

    /// name → target digest of every image (`ctr images ls`).
    pub fn images(&self) -> BTreeMap<String, String> {
        let o = self.ctr_ok(["images", "ls"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
            })
            .collect()
    }

    /// The exact bytes of a blob in the content store.
    pub fn content(&self, digest: &str) -> Vec<u8> {
        self.ctr_ok(["content", "get", digest]).stdout
    }

    /// The image `digest` names (a manifest, or an index resolved to `arch`) as
    /// containerd holds it.
    pub fn image(&self, digest: &str, arch: &str) -> ClientImage {
        let doc: Value = serde_json::from_slice(&self.content(digest)).unwrap();
        let manifest = match doc["manifests"].as_array() {
            Some(list) => list
                .iter()
                .find(|m| m["platform"]["architecture"] == arch)
                .and_then(|m| m["digest"].as_str())
                .unwrap_or_else(|| panic!("no {arch} in {doc}"))
                .to_string(),
            None => digest.to_string(),
        };
        let m: Value = serde_json::from_slice(&self.content(&manifest)).unwrap();
        let config = m["config"]["digest"].as_str().unwrap().to_string();
        let c: Value = serde_json::from_slice(&self.content(&config)).unwrap();
        ClientImage {
            config,
            manifest: Some(manifest.clone()),
            digests: vec![manifest],
            diff_ids: strings(&c["rootfs"]["diff_ids"]),
            names: Vec::new(),
        }
    }

    /// The directory of the committed native snapshot for `diff_ids` (the image's
    /// unpacked tree), found through a read-only view's bind mount source (nothing is
    /// mounted).
    pub fn unpacked(&self, diff_ids: &[String]) -> PathBuf {
        let chain = chain_id(diff_ids);
        let key = format!("ocikit-view-{}", &chain[7..19]);
        let _ = self.ctr(["snapshots", "--snapshotter", "native", "rm", &key]);
        self.ctr_ok(["snapshots", "--snapshotter", "native", "view", &key, &chain]);
        let o = self.ctr_ok([
            "snapshots",
            "--snapshotter",
            "native",
            "mounts",
            "/ocikit-unused",
            &key,
        ]);
        // `mount -t bind SOURCE /ocikit-unused -o rbind,ro`
        let line = String::from_utf8_lossy(&o.stdout).into_owned();
        let f: Vec<&str> = line.split_whitespace().collect();
        let src = f
            .iter()
            .position(|w| *w == "bind")
            .and_then(|i| f.get(i + 1))
            .unwrap_or_else(|| panic!("unexpected ctr snapshots mounts output: {line}"));
        let p = PathBuf::from(src);
        assert!(
            p.starts_with(&self.root),
            "{} is not in our containerd",
            p.display()
        );
        p
    }
}

/// The chain ID of a layer stack (what containerd and docker key unpacked layers by).
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut chain = diff_ids[0].clone();
    for d in &diff_ids[1..] {
        chain = super::digest_of(format!("{chain} {d}").as_bytes());
    }
    chain
}

// ---------------------------------------------------------------- docker

/// A private dockerd for one test function, holding the process-wide docker lock (so
/// no two run at once) until it drops; derefs to [`Dockerd`].
pub struct DockerGuard {
    // Field order matters: the daemon stops before the lock is released.
    daemon: Dockerd,
    _lock: MutexGuard<'static, ()>,
}

impl std::ops::Deref for DockerGuard {
    type Target = Dockerd;
    fn deref(&self) -> &Dockerd {
        &self.daemon
    }
}

/// A fresh private dockerd (see [`DockerGuard`]), or `None` (said why) where it cannot run.
pub fn docker() -> Option<DockerGuard> {
    static LOCK: Mutex<()> = Mutex::new(());
    let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    match Dockerd::start() {
        Some(daemon) => Some(DockerGuard {
            daemon,
            _lock: lock,
        }),
        None => skipping("no private dockerd (docker cells)".to_string()),
    }
}

/// A fresh private registry on `127.0.0.1:PORT` (see `tests/common/registry.rs`), or
/// `None` (said why) where it cannot run.
pub fn registry() -> Option<super::registry::Registry> {
    let t0 = Instant::now();
    match super::registry::Registry::start() {
        Some(r) => {
            eprintln!(
                "private registry ready in {:.2} s on {}",
                t0.elapsed().as_secs_f64(),
                r.addr
            );
            Some(r)
        }
        None => skipping("no private registry (registry cells)".to_string()),
    }
}

/// The directory docker's vfs driver unpacked an image's layers into (no container).
pub fn docker_unpacked(d: &Dockerd, diff_ids: &[String]) -> PathBuf {
    let chain = chain_id(diff_ids);
    let db = d
        .root()
        .join("data/image/vfs/layerdb")
        .join(chain.replace(':', "/"));
    let cache =
        fs::read_to_string(db.join("cache-id")).unwrap_or_else(|e| panic!("{}: {e}", db.display()));
    d.root().join("data/vfs/dir").join(cache.trim())
}

// ---------------------------------------------------------------- trees

/// A tree as comparable facts: relative path → `kind mode uid:gid content`.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        if rel.is_empty() {
            continue;
        }
        let md = fs::symlink_metadata(e.path()).unwrap();
        let ft = md.file_type();
        let what = if ft.is_symlink() {
            format!("link {}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_file() {
            format!("file {}", super::sha256_hex(&fs::read(e.path()).unwrap()))
        } else {
            "special".to_string()
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            md.mode() & 0o7777
        };
        m.insert(rel, format!("{what} {mode:o} {}:{}", md.uid(), md.gid()));
    }
    m
}

/// Asserts two trees are equal, listing the paths that differ.
pub fn assert_same_tree(ours: &Path, theirs: &Path, what: &str) {
    let a = tree(ours);
    let b = tree(theirs);
    let mut diffs = Vec::new();
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != b.get(k) {
            diffs.push(format!(
                "  {k}: ocikit {:?} vs client {:?}",
                a.get(k),
                b.get(k)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: ocikit flatten ({}) differs from the client's tree ({}):\n{}",
        ours.display(),
        theirs.display(),
        diffs.join("\n")
    );
}
