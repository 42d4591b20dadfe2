//! The image model through the library: the one verified reader
//! (`Store::open_verified`), the typed layers (`Image::typed_layers`,
//! `Layer::{walk, uncompressed, check}`) under per-call `Limits`, and the
//! rewriter. Each test asserts typed outcomes: digests, variants, sizes.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;

use common::*;
use ocikit::image::ImageError;
use ocikit::image::{LayerError, Visit};
use ocikit::limits::Limits;
use ocikit::store::{Store, StoreError};
use ocikit::verified::Mismatch;
use ocikit::{Digest, Layout, PlatformChoice, Reference};
use serde_json::json;

fn one_image(root: &Path, layers: Vec<(serde_json::Value, String)>) -> ocikit::resolve::Image {
    let m = put_image(root, "amd64", None, &layers, false);
    let mut entry = m.clone();
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "x"});
    write_layout_files(root, &json!({"schemaVersion": 2, "manifests": [entry]}));
    Layout::open(root)
        .unwrap()
        .resolve(Some(&Reference::Tag("x".into())), &PlatformChoice::Host)
        .unwrap()
}

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

#[test]
fn typed_layers_carry_digests_sizes_compression_and_diff_ids() {
    let t = tempfile::tempdir().unwrap();
    let a = tar(&[file("a", "a\n")]);
    let b = tar(&[file("b", "b\n")]);
    let la = put_layer(t.path(), OCI_GZIP, &a);
    let lb = put_layer(t.path(), OCI_TAR, &b);
    let image = one_image(t.path(), vec![la.clone(), lb.clone()]);
    let layout = Layout::open(t.path()).unwrap();
    let layers = image.typed_layers(layout.store()).unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0].digest, digest(la.0["digest"].as_str().unwrap()));
    assert_eq!(layers[0].size, la.0["size"].as_u64().unwrap());
    assert_eq!(layers[0].compression, Some(ocikit::spec::Compression::Gzip));
    assert_eq!(layers[0].diff_id, Some(digest(&la.1)));
    assert_eq!(layers[1].compression, Some(ocikit::spec::Compression::None));
    assert_eq!(layers[1].diff_id, Some(digest(&lb.1)));
    assert!(!layers[0].foreign);
    // Both read back whole, checked against their DiffIDs.
    for l in &layers {
        let d = l.check(layout.store(), &Limits::default()).unwrap();
        assert_eq!(Some(d.diff_id), l.diff_id.clone());
        assert_eq!(d.blob_digest, l.digest);
    }
}

#[test]
fn a_diff_id_count_that_differs_is_refused_once_for_every_reader() {
    let t = tempfile::tempdir().unwrap();
    let a = tar(&[file("a", "a\n")]);
    let (la, da) = put_layer(t.path(), OCI_GZIP, &a);
    // Two diff_ids for one layer.
    let m = put_image(t.path(), "amd64", None, &[(la, da.clone())], false);
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob_bytes(t.path(), m["digest"].as_str().unwrap())).unwrap();
    let cfg_digest = manifest["config"]["digest"].as_str().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&blob_bytes(t.path(), cfg_digest)).unwrap();
    cfg["rootfs"]["diff_ids"] = json!([da, da]);
    let cfg_desc = put_blob(t.path(), OCI_CONFIG, &to_bytes(&cfg));
    let mut manifest = manifest;
    manifest["config"] = cfg_desc;
    let m = put_blob(t.path(), OCI_MANIFEST, &to_bytes(&manifest));
    write_layout_files(t.path(), &json!({"schemaVersion": 2, "manifests": [m]}));
    let layout = Layout::open(t.path()).unwrap();
    let image = layout.resolve(None, &PlatformChoice::Host).unwrap();
    match image.typed_layers(layout.store()) {
        Err(ImageError::DiffIdCount { diff_ids, layers }) => {
            assert_eq!((diff_ids, layers), (2, 1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_wrong_diff_id_is_a_typed_mismatch_naming_both_digests() {
    let t = tempfile::tempdir().unwrap();
    let a = tar(&[file("a", "a\n")]);
    let (la, da) = put_layer(t.path(), OCI_GZIP, &a);
    let wrong = digest_of(b"not the layer");
    let image = one_image(t.path(), vec![(la, wrong.clone())]);
    let layout = Layout::open(t.path()).unwrap();
    let layer = &image.typed_layers(layout.store()).unwrap()[0];
    match layer.check(layout.store(), &Limits::default()) {
        Err(LayerError::DiffIdMismatch(m)) => {
            assert_eq!(m.expected, digest(&wrong));
            assert_eq!(m.actual, digest(&da));
        }
        other => panic!("{other:?}"),
    }
    // The walk checks it too, after the last entry.
    let mut entries = 0;
    let walked = layer.walk(layout.store(), &Limits::default(), &(), |_, _| {
        entries += 1;
        Ok(Visit::Continue)
    });
    assert!(
        matches!(walked, Err(LayerError::DiffIdMismatch(_))),
        "{walked:?}"
    );
    assert_eq!(entries, 1);
}

#[test]
fn changed_stored_bytes_are_a_digest_mismatch_and_a_wrong_size_is_refused_before_reading() {
    let t = tempfile::tempdir().unwrap();
    let a = tar(&[file("a", "a\n")]);
    let (la, da) = put_layer(t.path(), OCI_TAR, &a);
    let image = one_image(t.path(), vec![(la.clone(), da)]);
    let layout = Layout::open(t.path()).unwrap();
    let layer = image.typed_layers(layout.store()).unwrap().remove(0);
    let path = blob_path(t.path(), &la);
    // Same size, one byte changed inside the file's data.
    let mut bytes = fs::read(&path).unwrap();
    bytes[512] ^= 1;
    fs::write(&path, &bytes).unwrap();
    match layer.check(layout.store(), &Limits::default()) {
        Err(LayerError::Mismatch(m)) => match *m {
            Mismatch::DigestMismatch { expected, actual } => {
                assert_eq!(expected, layer.digest);
                assert_eq!(actual, Digest::of_bytes(ocikit::Algorithm::Sha256, &bytes));
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // The verified reader refuses a blob of another size before reading.
    bytes.push(0);
    fs::write(&path, &bytes).unwrap();
    match layout
        .store()
        .open_verified(&layer.digest, layer.size as i64)
    {
        Err(StoreError::SizeMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, layer.size as i64);
            assert_eq!(actual, layer.size + 1);
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a blob of the wrong size was opened"),
    }
}

#[test]
fn the_call_limits_cap_every_layer_read() {
    let t = tempfile::tempdir().unwrap();
    let big = tar(&[Entry::File("zeros", 0o644, vec![0u8; 1 << 20])]);
    let l = put_layer(t.path(), OCI_GZIP, &big);
    let image = one_image(t.path(), vec![l]);
    let layout = Layout::open(t.path()).unwrap();
    let layer = &image.typed_layers(layout.store()).unwrap()[0];
    let small = Limits::default().with_max_decompressed(100_000);
    assert!(matches!(
        layer.check(layout.store(), &small),
        Err(LayerError::TooLarge { limit: 100_000 })
    ));
    let mut stream = layer.uncompressed(layout.store(), &small).unwrap();
    let mut out = Vec::new();
    let e = stream.read_to_end(&mut out).unwrap_err();
    assert!(out.len() <= 100_000 + 256 * 1024, "{}", out.len());
    assert!(
        e.to_string().contains("decompresses to more than 100000"),
        "{e}"
    );
    // The default cap lets it through.
    assert!(layer.check(layout.store(), &Limits::default()).is_ok());
}

#[test]
fn the_rewriter_changes_only_what_was_edited() {
    let t = tempfile::tempdir().unwrap();
    let a = tar(&[file("a", "a\n")]);
    let l = put_layer(t.path(), OCI_GZIP, &a);
    let image = one_image(t.path(), vec![l]);
    let mut rw = ocikit::rewrite::Rewrite::new();
    let id = rw.add(
        &image.manifest.digest,
        &image.manifest.descriptor.media_type,
        image.manifest.bytes.clone(),
    );
    rw.edit(id, |m| {
        m.insert("annotations".into(), json!({"k": "v"}));
    })
    .unwrap();
    let out = rw.finish().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].old, image.manifest.digest);
    let v: serde_json::Value = serde_json::from_slice(&out[0].bytes).unwrap();
    assert_eq!(v["annotations"]["k"], "v");
    // Everything else as stored, in stored order.
    let stored: serde_json::Value = serde_json::from_slice(&image.manifest.bytes).unwrap();
    assert_eq!(v["layers"], stored["layers"]);
    assert_eq!(v["config"], stored["config"]);
    assert!(std::str::from_utf8(&out[0].bytes)
        .unwrap()
        .starts_with(r#"{"schemaVersion":2,"mediaType""#));
}
