//! A private registry (CNCF distribution, Debian's `docker-registry`) on a free
//! loopback port, its storage in a temporary directory, stopped by its pid on
//! drop. Only ever reached on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Registry {
    /// Starts one, or returns `None` (saying why on stderr) where
    /// `docker-registry` is not installed or does not come up.
    pub fn start() -> Option<Registry> {
        if !super::have("docker-registry") {
            eprintln!("SKIPPING registry steps: docker-registry is not installed");
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nlog:\n  level: error\n",
                dir.path().join("data").display()
            ),
        )
        .ok()?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let reg = Registry {
            child,
            _dir: dir,
            addr,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if reg.answers() {
                return Some(reg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "SKIPPING registry steps: docker-registry did not answer on {}",
            reg.addr
        );
        None
    }

    /// Whether `GET /v2/` answers 200.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).contains(" 200 ")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
