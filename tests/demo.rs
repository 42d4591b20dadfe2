//! The committed demo layout is exactly what its generator builds.
//! Rebuild it with `OCIKIT_REGENERATE_DEMO=1 cargo test --test demo`.

mod common;

use common::*;

#[test]
fn demo_fixture_is_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let fresh = t.path().join("demo");
    build_demo(&fresh);
    // Building twice gives the same bytes.
    let again = t.path().join("again");
    build_demo(&again);
    assert_eq!(
        snapshot(&fresh),
        snapshot(&again),
        "the generator is not deterministic"
    );

    if std::env::var_os("OCIKIT_REGENERATE_DEMO").is_some() {
        let _ = std::fs::remove_dir_all(demo());
        copy_tree(&fresh, &demo());
        eprintln!("rewrote {}", demo().display());
    }
    assert_eq!(
        snapshot(&fresh),
        snapshot(&demo()),
        "testdata/demo differs from what its generator builds; run OCIKIT_REGENERATE_DEMO=1 cargo test --test demo and review the change"
    );
}

/// One app layer of the `builds` fixture: every entry with mtime `mtime`.
fn app_layer(mtime: u64, greeting: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, mode, data) in [
        ("app/", 0o755, None),
        ("app/VERSION", 0o644, Some("1.0\n".to_string())),
        (
            "app/config.json",
            0o644,
            Some(format!("{{\n  \"greeting\": \"{greeting}\"\n}}\n")),
        ),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_mode(mode);
        match data {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, name, d.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// `testdata/builds`: two builds of one image, `run1` and `run2`, that differ
/// in their timestamps (config, history, the app layer's mtimes) and in one
/// file (`/app/config.json`). The base layer is the same blob in both.
fn build_builds(root: &std::path::Path) {
    let base = put_layer(
        root,
        OCI_GZIP,
        &tar(&[
            Entry::Dir("etc/", 0o755),
            file("etc/os-release", "ID=demo\n"),
        ]),
    );
    let mut manifests = Vec::new();
    for (tag, created, mtime, greeting) in [
        ("run1", "2024-01-01T00:00:00Z", 1_700_000_000, "hello"),
        (
            "run2",
            "2024-01-01T01:00:00Z",
            1_700_003_600,
            "hello, world",
        ),
        // run1 built again an hour later: only the times differ.
        ("run3", "2024-01-01T01:00:00Z", 1_700_003_600, "hello"),
    ] {
        let app = put_layer(root, OCI_GZIP, &app_layer(mtime, greeting));
        let config = serde_json::json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/app/run"], "WorkingDir": "/app"},
            "rootfs": {"type": "layers", "diff_ids": [base.1, app.1]},
            "history": [
                {"created": "2023-11-14T00:00:00Z", "created_by": "base"},
                {"created": created, "created_by": "COPY app /app"}
            ]
        });
        let cfg = put_blob(root, OCI_CONFIG, &to_bytes(&config));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": cfg,
            "layers": [base.0, app.0],
        });
        let mut desc = put_blob(root, OCI_MANIFEST, &to_bytes(&manifest));
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        manifests.push(desc);
    }
    write_layout_files(
        root,
        &serde_json::json!({"schemaVersion": 2, "manifests": manifests}),
    );
}

#[test]
fn builds_fixture_is_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let fresh = t.path().join("builds");
    build_builds(&fresh);
    let again = t.path().join("again");
    build_builds(&again);
    assert_eq!(snapshot(&fresh), snapshot(&again));
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/builds");
    if std::env::var_os("OCIKIT_REGENERATE_DEMO").is_some() {
        let _ = std::fs::remove_dir_all(&committed);
        copy_tree(&fresh, &committed);
        eprintln!("rewrote {}", committed.display());
    }
    assert_eq!(
        snapshot(&fresh),
        snapshot(&committed),
        "testdata/builds differs from what its generator builds; run OCIKIT_REGENERATE_DEMO=1 cargo test --test demo"
    );
}
