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
    assert!(stderr(&o).contains("sha256:"), "names the layer: {}", stderr(&o));
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
