//! Data safety of writers (issue 12, items 10–12 and 18): every decompression
//! is capped, interrupted writers leave nothing behind (or the next writer
//! sweeps it), a first import never leaves a half-made layout under the name,
//! and new files follow the umask.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Tags `layer`'s one-layer image `tag` as the only entry of a layout at `root`.
fn one_image_layout(root: &Path, layer: (serde_json::Value, String), tag: &str) {
    let m = put_image(root, "amd64", None, &[layer], false);
    let mut e = m.clone();
    e["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    write_layout_files(
        root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e]}),
    );
}

/// A layout holding one image whose single gzip layer inflates `mib` MiB of
/// zeros (a bomb relative to a small OCIKIT_MAX_DECOMPRESSED).
fn zeros_image(dir: &Path, mib: usize) -> PathBuf {
    let root = dir.join("bomb");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let layer = put_layer(
        &root,
        OCI_GZIP,
        &tar(&[Entry::File("zeros", 0o644, vec![0u8; mib << 20])]),
    );
    one_image_layout(&root, layer, "b");
    root
}

#[test]
fn uncompressed_layers_go_through_the_decompression_cap() {
    let t = tempfile::tempdir().unwrap();
    let src = zeros_image(t.path(), 8);
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let target = out.join("x.tar");
    let o = Command::new(bin())
        .args([
            "export",
            "--format",
            "docker-archive",
            "--uncompressed-layers",
            &format!("{}:b", s(&src)),
            &format!("docker-archive:{}:bomb/x:1", s(&target)),
        ])
        .env("OCIKIT_MAX_DECOMPRESSED", "1000000")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("decompresses to more than 1000000 bytes"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("sha256:"),
        "names the layer: {}",
        stderr(&o)
    );
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        0,
        "nothing left beside the target"
    );
    // verify --deep and copy --deep decompress under the same cap.
    for args in [
        vec!["verify".to_string(), "--deep".into(), s(&src)],
        vec![
            "copy".to_string(),
            "--deep".into(),
            format!("{}:b", s(&src)),
            s(&out.join("L")),
        ],
    ] {
        let o = Command::new(bin())
            .args(&args)
            .env("OCIKIT_MAX_DECOMPRESSED", "1000000")
            .output()
            .unwrap();
        assert_ne!(code(&o), 0, "{args:?}");
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            all.contains("decompresses to more than 1000000 bytes"),
            "{args:?}: {all}"
        );
    }
    assert!(!out.join("L").exists());
    // Under the cap it goes through.
    ocikit_ok([
        "export",
        "--format",
        "docker-archive",
        "--uncompressed-layers",
        &format!("{}:b", s(&src)),
        &format!("docker-archive:{}:bomb/x:1", s(&target)),
    ]);
}

/// Runs `ocikit ARGS` under `umask MASK` (through sh, so the child starts with it).
fn with_umask(mask: &str, args: &[String]) -> std::process::Output {
    let mut line = format!("umask {mask}; exec \"$0\"");
    for i in 0..args.len() {
        line.push_str(&format!(" \"${}\"", i + 1));
    }
    Command::new("sh")
        .arg("-c")
        .arg(line)
        .arg(bin())
        .args(args)
        .output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn new_files_follow_the_umask_and_rewrites_keep_the_mode() {
    for (mask, file_mode, dir_mode) in [("077", 0o600, 0o700), ("022", 0o644, 0o755)] {
        let t = tempfile::tempdir().unwrap();
        let l = t.path().join("L");
        let o = with_umask(
            mask,
            &["import".into(), format!("{}:1.0", s(&demo())), s(&l)],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(mode(&l), dir_mode, "umask {mask}: the layout directory");
        assert_eq!(mode(&l.join("blobs")), dir_mode, "umask {mask}: blobs/");
        assert_eq!(
            mode(&l.join("index.json")),
            file_mode,
            "umask {mask}: index.json"
        );
        assert_eq!(
            mode(&l.join("oci-layout")),
            file_mode,
            "umask {mask}: oci-layout"
        );
        for f in blob_files(&l) {
            assert_eq!(
                mode(&l.join("blobs").join(&f)),
                file_mode,
                "umask {mask}: {f}"
            );
        }
        // flatten --tar: a new file follows the umask.
        let tarball = t.path().join("root.tar");
        let o = with_umask(
            mask,
            &[
                "flatten".into(),
                format!("{}:1.0", s(&l)),
                "--tar".into(),
                s(&tarball),
            ],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(mode(&tarball), file_mode, "umask {mask}: flatten --tar");
    }
    // A private index.json stays private when a writer rewrites it, and a
    // replaced --tar file keeps its mode, whatever the umask.
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("L");
    ocikit_ok(["import", &format!("{}:1.0", s(&demo())), &s(&l)]);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(l.join("index.json"), fs::Permissions::from_mode(0o600)).unwrap();
    let o = with_umask(
        "022",
        &["tag".into(), format!("{}:1.0", s(&l)), "again".into()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(mode(&l.join("index.json")), 0o600);
    let tarball = t.path().join("root.tar");
    fs::write(&tarball, b"old").unwrap();
    fs::set_permissions(&tarball, fs::Permissions::from_mode(0o640)).unwrap();
    let o = with_umask(
        "077",
        &[
            "flatten".into(),
            format!("{}:1.0", s(&l)),
            "--tar".into(),
            s(&tarball),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(mode(&tarball), 0o640);
}

/// A layout with one image whose uncompressed layer holds `mib` MiB of
/// incompressible bytes, and a gzip oci-archive of it: big enough that an
/// import takes a while, so a signal lands mid-way.
fn big_archive(dir: &Path, mib: usize) -> PathBuf {
    let root = dir.join("src");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let layer = put_layer(&root, OCI_TAR, &tar(&[Entry::File("noise", 0o644, data)]));
    one_image_layout(&root, layer, "big");
    let archive = dir.join("big.tar.gz");
    ocikit_ok([
        "export",
        "--compress",
        "gzip",
        &format!("{}:big", s(&root)),
        &s(&archive),
    ]);
    archive
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Starts `ocikit ARGS` with its own TMPDIR, signals it after `after`, and
/// waits (at most 60 s). Returns (exit code or -signal, stderr).
fn signalled(args: &[String], tmpdir: &Path, signal: i32, after: Duration) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(bin())
        .args(args)
        .env("TMPDIR", tmpdir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, signal) };
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (st.code().unwrap_or_else(|| -st.signal().unwrap_or(0)), err);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{args:?} did not stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGINT/SIGTERM during an import of a compressed archive into a new
/// layout: no decompressed copy left in $TMPDIR, no half-made layout under
/// the name, no sibling staging directory.
#[test]
fn an_interrupted_first_import_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let archive = big_archive(t.path(), 24);
    let mut interrupted = 0;
    for (n, (signal, ms)) in [
        (libc::SIGTERM, 30),
        (libc::SIGINT, 120),
        (libc::SIGTERM, 300),
        (libc::SIGINT, 600),
    ]
    .into_iter()
    .enumerate()
    {
        let work = t.path().join(format!("w{n}"));
        let tmpdir = work.join("tmp");
        fs::create_dir_all(&tmpdir).unwrap();
        let target = work.join("L");
        let (code, err) = signalled(
            &["import".into(), s(&archive), s(&target)],
            &tmpdir,
            signal,
            Duration::from_millis(ms),
        );
        if code == 2 {
            assert!(err.contains("interrupted"), "{err}");
            interrupted += 1;
            assert!(!target.exists(), "a half-made layout under the name");
        } else {
            assert_eq!(code, 0, "{err}");
            ocikit_ok(["verify", &s(&target)]);
        }
        assert_eq!(entries(&tmpdir), Vec::<String>::new(), "left in TMPDIR");
        assert!(
            entries(&work).iter().all(|e| !e.starts_with(".ocikit")),
            "left beside the target: {:?}",
            entries(&work)
        );
    }
    assert!(
        interrupted > 0,
        "no run was interrupted; make the archive bigger"
    );
    // An export interrupted mid-write leaves no `.ocikit-export-*` beside FILE.
    let src = t.path().join("src");
    for ms in [40, 150] {
        let work = t.path().join(format!("e{ms}"));
        fs::create_dir_all(&work).unwrap();
        let (code, err) = signalled(
            &[
                "export".into(),
                "--compress".into(),
                "gzip".into(),
                format!("{}:big", s(&src)),
                s(&work.join("out.tar.gz")),
            ],
            &work,
            libc::SIGTERM,
            Duration::from_millis(ms),
        );
        assert!(code == 0 || code == 2, "{code}: {err}");
        if code == 2 {
            assert_eq!(entries(&work), Vec::<String>::new(), "{err}");
        }
    }
}

/// What a SIGKILLed writer leaves (a temporary blob file in `.ocikit-tmp`,
/// planted here byte for byte as the blob writer names them, since a kill
/// cannot be timed to land mid-blob reliably): verify says so, and the next
/// writer sweeps it.
#[test]
fn a_killed_writer_leaves_what_the_next_writer_sweeps() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("L");
    ocikit_ok(["import", &format!("{}:1.0", s(&demo())), &s(&l)]);
    let tmp = l.join(".ocikit-tmp");
    fs::create_dir_all(&tmp).unwrap();
    fs::write(tmp.join("blob-AbC123"), vec![7u8; 4096]).unwrap();
    fs::create_dir(tmp.join(".tmpSquash")).unwrap();
    fs::write(tmp.join(".tmpSquash/layer"), b"partial").unwrap();
    // write_atomic's temporary index in the root, as a killed tag leaves it.
    fs::write(l.join(".index.json.Qx7rTz"), b"{\"schemaVersion\":2").unwrap();
    let v = ocikit(["verify", &s(&l)]);
    assert_eq!(code(&v), 0, "a warning, not an error: {}", stdout(&v));
    assert!(stdout(&v).contains("interrupted writer"), "{}", stdout(&v));
    // A killed first copy's staging directory beside the layout is named too.
    fs::create_dir(t.path().join(".ocikit-init-XYZ")).unwrap();
    let v = ocikit(["verify", &s(&l)]);
    assert!(stdout(&v).contains(".ocikit-init-XYZ"), "{}", stdout(&v));
    // The next writer (any: here a tag) sweeps .ocikit-tmp.
    ocikit_ok(["tag", &format!("{}:1.0", s(&l)), "again"]);
    assert_eq!(entries(&tmp), Vec::<String>::new(), "swept");
    assert!(!l.join(".index.json.Qx7rTz").exists(), "swept");
    ocikit_ok(["verify", &s(&l)]);
}

/// A full target under `--uncompressed-layers` (ENOSPC) names the target's
/// directory, not the source blob. Needs root for a 1 MiB tmpfs; skips
/// otherwise, saying so.
#[test]
fn a_full_target_under_uncompressed_layers_names_the_target() {
    let t = tempfile::tempdir().unwrap();
    let src = zeros_image(t.path(), 4);
    let small = t.path().join("small");
    fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", &s(&small)])
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("SKIPPING a_full_target_under_uncompressed_layers_names_the_target: cannot mount a tmpfs");
        return;
    }
    let target = small.join("x.tar");
    let o = ocikit([
        "export",
        "--format",
        "docker-archive",
        "--uncompressed-layers",
        &format!("{}:b", s(&src)),
        &format!("docker-archive:{}:bomb/x:1", s(&target)),
    ]);
    let err = stderr(&o);
    let listing = entries(&small);
    let _ = Command::new("umount").arg(&small).status();
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains(&s(&small)),
        "names the target's directory: {err}"
    );
    assert!(!err.contains(&s(&src)), "does not blame the source: {err}");
    assert_eq!(listing, Vec::<String>::new(), "nothing left on the target");
}
