//! The journey guides in docs/ run as written: every ```sh block, in order,
//! in one scratch directory holding `demo` and `builds` (copies of
//! testdata/demo and testdata/builds), with
//! the built `ocikit` first on PATH. Blocks marked ```sh docker run against
//! a private dockerd (tests/common/docker.rs), or are skipped, saying so,
//! where none can start.

mod common;

use std::path::Path;
use std::process::Command;

use common::docker::Dockerd;
use common::*;

/// (info string, body) of each fenced block.
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => cur = Some((info.trim().to_string(), String::new())),
            }
        } else if let Some((_, body)) = &mut cur {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

fn run_guide(name: &str, after: impl Fn(&Path)) {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    let text = std::fs::read_to_string(&doc).unwrap();
    let d = tempfile::tempdir().unwrap();
    copy_tree(&demo(), &d.path().join("demo"));
    let builds = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/builds");
    copy_tree(&builds, &d.path().join("builds"));
    let bin_dir = bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Docker blocks run against a private daemon (a `docker` wrapper first on
    // PATH), or are skipped, saying so, where none can start.
    let needs_docker = blocks(&text)
        .iter()
        .any(|(info, _)| info.split_whitespace().any(|w| w == "docker"));
    let daemon = if needs_docker { Dockerd::start() } else { None };
    let needs_registry = blocks(&text)
        .iter()
        .any(|(info, _)| info.split_whitespace().any(|w| w == "registry"));
    let registry = if needs_registry && have("skopeo") {
        common::registry::Registry::start()
    } else {
        None
    };
    let wrappers = d.path().join(".bin");
    std::fs::create_dir_all(&wrappers).unwrap();
    if let Some(dd) = &daemon {
        let w = wrappers.join("docker");
        std::fs::write(
            &w,
            format!("#!/bin/sh\nexec env {} \"$@\"\n", dd.command_line()),
        )
        .unwrap();
        std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{path}", wrappers.display());
    let docker = daemon.is_some();
    let mut ran = 0;
    for (info, body) in blocks(&text) {
        let mut words = info.split_whitespace();
        if words.next() != Some("sh") {
            continue;
        }
        let tags: Vec<&str> = words.collect();
        if tags.contains(&"docker") && !docker {
            eprintln!("SKIPPING a docker block of {name}: no Docker daemon");
            continue;
        }
        if tags.contains(&"registry") && registry.is_none() {
            eprintln!("SKIPPING a registry block of {name}: no registry or skopeo");
            continue;
        }
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", &body])
            .current_dir(d.path())
            .env("PATH", &path);
        if let Some(r) = &registry {
            cmd.env("REGISTRY", &r.addr);
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{name}: block failed:\n{body}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 3, "{name}: only {ran} blocks ran");
    after(d.path());
}

#[test]
fn airgap_guide_runs_as_written() {
    run_guide("airgap.md", |dir| {
        let log = std::fs::read_to_string(dir.join("docker-load.log")).unwrap_or_default();
        if !log.is_empty() {
            assert!(log.contains("Loaded image: demo/app:1.0"), "{log}");
        }
        let tags = index_tags(&dir.join("images"));
        assert_eq!(
            tags,
            vec!["1.0".to_string()],
            "legacy was untagged and collected"
        );
        assert!(dir.join("for-docker.tar").is_file());
        // The delta flow: site-b got run2 from a bundle of run2's own blobs.
        // …and kept only the newest build after prune.
        assert_eq!(index_tags(&dir.join("site-b")), ["run2"]);
        // The list-driven flow: exactly these names, from two sources.
        assert_eq!(
            index_tags(&dir.join("outgoing")),
            ["demo:1.0", "app:run1", "app:run2"]
        );
        let mut carried = Vec::new();
        let mut a = tar::Archive::new(std::fs::File::open(dir.join("release2.tar")).unwrap());
        for e in a.entries().unwrap() {
            let p = e.unwrap().path().unwrap().display().to_string();
            if p.starts_with("blobs/sha256/") && p.len() > "blobs/sha256/".len() {
                carried.push(p);
            }
        }
        assert_eq!(
            carried.len(),
            3,
            "run2's manifest, config and app layer: {carried:?}"
        );
        if dir.join("roundtrip").exists() {
            // The registry round trip kept the manifest digest.
            assert_eq!(
                stdout(&ocikit_ok([
                    "cat",
                    &format!("{}:1.0", s(&dir.join("roundtrip"))),
                    "manifest"
                ])),
                stdout(&ocikit_ok([
                    "cat",
                    &format!("{}:1.0", s(&dir.join("images"))),
                    "manifest"
                ]))
            );
        }
    });
}

#[test]
fn scanning_guide_runs_as_written() {
    run_guide("scanning.md", |dir| {
        assert!(dir.join("rootfs/bin/hello").is_file());
        assert!(dir.join("scan.tar").is_file());
        assert_eq!(
            index_tags(&dir.join("for-scanner")),
            vec!["1.0".to_string()]
        );
    });
}

#[test]
fn debugging_guide_runs_as_written() {
    run_guide("debugging.md", |dir| {
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["identical"], false);
        let paths: Vec<&str> = report["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["/app/config.json"], "only the real change is left");
        // The last step: two builds that differ only in times, made identical.
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("builds/index.json")).unwrap()).unwrap();
        let digest_of_tag = |tag: &str| {
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
                .map(|m| m["digest"].as_str().unwrap().to_string())
                .unwrap_or_else(|| panic!("no {tag} in {index}"))
        };
        assert_eq!(digest_of_tag("run1-repro"), digest_of_tag("run3-repro"));
        assert_ne!(digest_of_tag("run1"), digest_of_tag("run3"));
    });
}
