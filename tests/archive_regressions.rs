//! Regressions found while hardening archives (each failed before its fix).

mod common;

use std::fs;

use common::*;

fn export(src: &str, out: &std::path::Path) {
    let o = ocikit(["export", src, &out.display().to_string()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn an_archive_cut_at_a_member_boundary_is_refused() {
    // The cut left whole members only, so the tar parser saw a clean end.
    let t = tempfile::tempdir().unwrap();
    let full = t.path().join("full.tar");
    export(&format!("{}:legacy", demo().display()), &full);
    let bytes = fs::read(&full).unwrap();
    // The header of the last member (oci-layout) starts right after
    // index.json's padded data; find it and cut there.
    let pos = (0..bytes.len())
        .step_by(512)
        .find(|&p| bytes[p..].starts_with(b"oci-layout\0"))
        .expect("oci-layout header");
    let cut = t.path().join("cut.tar");
    fs::write(&cut, &bytes[..pos]).unwrap();
    let o = ocikit(["ls".as_ref(), cut.as_os_str()]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("without the tar end-of-archive marker"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_failed_import_into_a_new_directory_leaves_nothing() {
    // Regression: an empty layout was left where the import had created one.
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    copy_tree(&demo(), &src);
    // Damage the legacy image's config (same size, other bytes).
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(src.join("index.json")).unwrap()).unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(blob_path(&src, &idx["manifests"][1])).unwrap()).unwrap();
    let cfg = blob_path(&src, &m["config"]);
    let mut bytes = fs::read(&cfg).unwrap();
    bytes[10] ^= 0x20;
    fs::write(&cfg, &bytes).unwrap();
    let dst = t.path().join("new");
    let o = ocikit([
        "import",
        &format!("{}:legacy", src.display()),
        &dst.display().to_string(),
    ]);
    assert_eq!(code(&o), 2);
    let e = stderr(&o);
    assert!(
        e.contains(&src.display().to_string()) && e.contains("has the wrong content"),
        "{e}"
    );
    assert!(
        !dst.exists(),
        "a failed import left {} behind",
        dst.display()
    );

    // Exporting the same: the source is named as the culprit, not the output.
    let out = t.path().join("out.tar");
    let o = ocikit([
        "export",
        &format!("{}:legacy", src.display()),
        &out.display().to_string(),
    ]);
    assert_eq!(code(&o), 2);
    let e = stderr(&o);
    assert!(e.contains(&format!("{}: blob", src.display())), "{e}");
    assert!(e.contains("was not written"), "{e}");
    assert!(!out.exists());
}

#[test]
fn not_found_lists_docker_names() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d.tar");
    let o = ocikit([
        "export",
        &format!("{}:legacy", demo().display()),
        &format!("docker-archive:{}:demo/app:1.0", d.display()),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = ocikit(["inspect", &format!("{}:demo/app:2.0", d.display())]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("demo/app:1.0 (sha256:"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn manifest_json_layers_are_cross_checked_with_the_oci_manifest() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d.tar");
    let o = ocikit([
        "export",
        &format!("{}:legacy", demo().display()),
        &format!("docker-archive:{}:demo/app:1.0", d.display()),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Rewrite the archive with manifest.json's two layers swapped.
    let mut a = tar::Archive::new(fs::File::open(&d).unwrap());
    let mut b = tar::Builder::new(Vec::new());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let path = e.path().unwrap().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if path.to_str() == Some("manifest.json") {
            let mut v: serde_json::Value = serde_json::from_slice(&data).unwrap();
            v[0]["Layers"].as_array_mut().unwrap().reverse();
            data = serde_json::to_vec(&v).unwrap();
            h.set_size(data.len() as u64);
            h.set_cksum();
        }
        b.append_data(&mut h, &path, &data[..]).unwrap();
    }
    let swapped = t.path().join("swapped.tar");
    fs::write(&swapped, b.into_inner().unwrap()).unwrap();
    let o = ocikit(["verify".as_ref(), swapped.as_os_str()]);
    assert_eq!(code(&o), 0, "a warning, not an error: {}", stdout(&o));
    assert!(
        stdout(&o).contains("lists other layer files than its OCI manifest"),
        "{}",
        stdout(&o)
    );
    // The unswapped archive has no such warning.
    let o = ocikit(["verify".as_ref(), d.as_os_str()]);
    assert!(
        !stdout(&o).contains("lists other layer files"),
        "{}",
        stdout(&o)
    );
}
