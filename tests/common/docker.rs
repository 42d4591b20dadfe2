//! A private Docker daemon for one test process: its own socket, data root, exec root and
//! managed containerd, all in a temporary directory, stopped and removed on drop.
//!
//! Nothing here pulls or pushes: the machine has no network. Images get in with
//! `docker load` and out with `docker save`.
//!
//! Note for callers: `docker load` does not read a layer file whose layer (chain) the
//! daemon already has, so a broken or missing layer file goes unnoticed then. Call
//! [`Dockerd::remove_all_images`] before a load that is meant to check an archive's layers.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long `start` waits for the daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `drop` waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running private `dockerd`.
pub struct Dockerd {
    child: Child,
    /// The client binary (`/usr/bin/docker` when present: the distribution's client that
    /// matches the daemon; `/usr/local/bin/docker` may be a much newer one).
    client: PathBuf,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    socket: PathBuf,
    /// Seconds from spawn until `docker version` answered.
    pub start_seconds: f64,
    /// The daemon's version, e.g. `20.10.24+dfsg1`.
    pub version: String,
}

/// The first of `candidates` that is a file, else `name` if it is on PATH.
fn find_program(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = candidates.iter().map(Path::new).find(|p| p.is_file()) {
        return Some(p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Dockerd {
    /// Starts a daemon, or returns `None` (saying why on stderr) when `dockerd` or the
    /// `docker` client is not installed or we are not root. Panics, with the daemon's log,
    /// if an installed daemon does not come up.
    pub fn start() -> Option<Dockerd> {
        let Some(dockerd) = find_program("dockerd", &["/usr/sbin/dockerd", "/usr/bin/dockerd"])
        else {
            eprintln!("dockerd not installed; skipping docker engine tests");
            return None;
        };
        let Some(client) = find_program("docker", &["/usr/bin/docker"]) else {
            eprintln!("docker client not installed; skipping docker engine tests");
            return None;
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root (dockerd needs root); skipping docker engine tests");
            return None;
        }

        // Unix socket paths are limited to 108 bytes: stay short, under /tmp, whatever
        // TMPDIR says.
        let base = if Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("ocikit-dockerd.")
            .tempdir_in(base)
            .expect("create the dockerd directory");
        let root = dir.path().to_path_buf();
        let socket = root.join("docker.sock");
        let config = root.join("daemon.json");
        fs::write(&config, "{}\n").unwrap();
        fs::create_dir_all(root.join("client")).unwrap();
        let log = fs::File::create(root.join("dockerd.log")).unwrap();
        let namespace = format!("ocikit-test-{}", std::process::id());

        let mut cmd = Command::new(&dockerd);
        cmd.arg("--config-file")
            .arg(&config)
            .args(["--storage-driver", "vfs"])
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .args(["--bridge", "none"])
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            // No --containerd: dockerd starts its own containerd under the exec root.
            // The namespaces only matter if a system containerd is found and used.
            .args(["--containerd-namespace", &namespace])
            .args([
                "--containerd-plugins-namespace",
                &format!("{namespace}-plugins"),
            ])
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env("DOCKER_CONFIG", root.join("client"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // If the test process dies without running Drop (killed, aborted), the daemon is
        // told to stop too. The signal follows the thread that spawned it: keep a Dockerd
        // on the thread that created it.
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
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", dockerd.display()));
        let mut d = Dockerd {
            child,
            client,
            dir: Some(dir),
            root,
            socket,
            start_seconds: 0.0,
            version: String::new(),
        };
        loop {
            if let Some(status) = d.child.try_wait().unwrap() {
                return unavailable(format!(
                    "dockerd exited before answering ({status}); log:\n{}",
                    d.log_tail(40)
                ));
            }
            let v = d.docker(["version", "--format", "{{.Server.Version}}"]);
            if v.status.success() {
                d.start_seconds = t0.elapsed().as_secs_f64();
                d.version = String::from_utf8_lossy(&v.stdout).trim().to_string();
                eprintln!(
                    "private dockerd {} (client {}) ready in {:.2} s at {}",
                    d.version,
                    d.client.display(),
                    d.start_seconds,
                    d.socket.display()
                );
                return Some(d);
            }
            if t0.elapsed() > START_TIMEOUT {
                let msg = String::from_utf8_lossy(&v.stderr).into_owned();
                // Drop stops the child and removes the directory.
                return unavailable(format!(
                    "dockerd did not answer within {START_TIMEOUT:?} (last: {msg}); log:\n{}",
                    d.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's major version (20 for `20.10.24+dfsg1`).
    pub fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("unexpected dockerd version {:?}", self.version))
    }

    /// The daemon's temporary directory (socket, data, exec roots, log).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The last `lines` lines of the daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A `docker` command line for scripts: the client, pointed at this daemon.
    pub fn command_line(&self) -> String {
        format!(
            "DOCKER_CONFIG='{}' '{}' -H 'unix://{}'",
            self.root.join("client").display(),
            self.client.display(),
            self.socket.display()
        )
    }

    /// Runs the client against this daemon's socket.
    pub fn docker<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Command::new(&self.client)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env("DOCKER_CONFIG", self.root.join("client"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.client.display()))
    }

    /// Like [`Dockerd::docker`], asserting success (the panic shows the output and the
    /// daemon's log tail).
    pub fn docker_ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let o = self.docker(&args);
        assert!(
            o.status.success(),
            "docker {args:?} failed ({:?}):\nstdout: {}\nstderr: {}\ndockerd log:\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log_tail(15)
        );
        o
    }

    /// `docker load -i PATH`.
    pub fn load(&self, path: &Path) -> Output {
        self.docker([
            std::ffi::OsStr::new("load"),
            "-i".as_ref(),
            path.as_os_str(),
        ])
    }

    /// `docker save -o OUT REFS…`.
    pub fn save(&self, refs: &[&str], out: &Path) -> Output {
        let mut args: Vec<std::ffi::OsString> = vec!["save".into(), "-o".into(), out.into()];
        args.extend(refs.iter().map(Into::into));
        self.docker(args)
    }

    /// The first element of `docker image inspect REFERENCE` (panics if it fails).
    pub fn inspect(&self, reference: &str) -> Value {
        let o = self.docker_ok(["image", "inspect", reference]);
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("docker image inspect {reference}: not JSON: {e}"));
        v.get(0)
            .cloned()
            .unwrap_or_else(|| panic!("docker image inspect {reference}: empty answer {v}"))
    }

    /// Whether the daemon has an image by that reference or ID.
    pub fn has_image(&self, reference: &str) -> bool {
        self.docker(["image", "inspect", reference])
            .status
            .success()
    }

    /// The image ID: `sha256:<config digest hex>`.
    pub fn image_id(&self, reference: &str) -> String {
        let v = self.inspect(reference);
        v["Id"]
            .as_str()
            .unwrap_or_else(|| panic!("{reference}: no Id in {v}"))
            .to_string()
    }

    /// `RootFS.Layers`: the image's diff_ids.
    pub fn rootfs_layers(&self, reference: &str) -> Vec<String> {
        let v = self.inspect(reference);
        v["RootFS"]["Layers"]
            .as_array()
            .unwrap_or_else(|| panic!("{reference}: no RootFS.Layers in {v}"))
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    }

    /// `RepoTags` of an image.
    pub fn repo_tags(&self, reference: &str) -> Vec<String> {
        let v = self.inspect(reference);
        v["RepoTags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// Removes every image (and so every layer), asserting the store is empty after.
    pub fn remove_all_images(&self) {
        self.docker_ok(["image", "prune", "--all", "--force"]);
        let left = self.docker_ok(["image", "ls", "--all", "--quiet"]);
        assert!(
            left.stdout.iter().all(u8::is_ascii_whitespace),
            "images left after prune: {}",
            String::from_utf8_lossy(&left.stdout)
        );
        // No layer may survive either (a failed load could leave some behind), or the
        // next load would skip that layer's file.
        assert_eq!(
            self.layer_count(),
            0,
            "layers left after removing every image"
        );
    }

    /// How many layers (chain IDs) the daemon stores: the entries of the vfs layer
    /// database (0 before the first layer).
    pub fn layer_count(&self) -> usize {
        fs::read_dir(self.root.join("data/image/vfs/layerdb/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Whether `pid` is alive and its command line mentions our directory (so it is a
    /// process this daemon started).
    fn is_ours(&self, pid: i32) -> bool {
        fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&*self.root.to_string_lossy()))
            .unwrap_or(false)
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let pid = self.child.id() as libc::pid_t;
            // SAFETY: kill with a pid we spawned and have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let t0 = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() {
                if t0.elapsed() > STOP_TIMEOUT {
                    eprintln!("dockerd did not stop within {STOP_TIMEOUT:?}; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // The managed containerd normally exits with dockerd; if it did not (dockerd was
        // killed), end it by its pid file.
        let pidfile = self.root.join("exec/containerd/containerd.pid");
        if let Some(pid) = fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if pid > 1 && self.is_ours(pid) {
                // SAFETY: signalling a process our daemon started, by its id.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                for _ in 0..100 {
                    if !self.is_ours(pid) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // dockerd bind-mounts its data root; lazily unmount anything left under our dir,
        // deepest first, so removing the directory cannot cross into a mount.
        if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
            let prefix = self.root.to_string_lossy().into_owned();
            let mut points: Vec<String> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
                .map(str::to_string)
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                if let Ok(c) = std::ffi::CString::new(p) {
                    // SAFETY: a valid C string; failure is harmless here.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                eprintln!("could not remove {}: {e}", path.display());
            }
        }
    }
}

/// A daemon that cannot start here is an environment problem, not an ocikit
/// bug: the engine tests skip, loudly, unless `OCIKIT_REQUIRE_DOCKER=1` makes
/// that a failure (as design.md asks: skip where no engine can run).
fn unavailable(why: String) -> Option<Dockerd> {
    if std::env::var_os("OCIKIT_REQUIRE_DOCKER").is_some_and(|v| v == "1") {
        panic!("{why}");
    }
    eprintln!("SKIPPING docker engine tests: {why}");
    None
}
