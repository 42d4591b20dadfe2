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
    let m = put_image(&root, "amd64", None, &[layer], false);
    let mut e = m.clone();
    e["annotations"] = json!({"org.opencontainers.image.ref.name": "b"});
    write_layout_files(
        &root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e]}),
    );
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
