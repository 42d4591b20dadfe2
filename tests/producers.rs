//! Layer streams and archives as real producers write them (issue 13): each
//! case comes from a real tool where the tool is installed, else it is built
//! byte for byte as that tool writes it.

mod common;

use std::fs;

use common::*;

/// umoci 0.4.7 `insert` writes a layer whose tar stream ends right after the
/// last member's data: no padding to 512 bytes, no end-of-archive blocks.
/// umoci reads it back; so must `verify --deep`, `flatten` and `diff`.
#[test]
fn umoci_insert_layers_without_padding_or_end_blocks_are_complete() {
    if !tools("umoci_insert", &["umoci"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("L");
    let ls = s(&l);
    run_ok("umoci", &["init", "--layout", &ls]);
    run_ok("umoci", &["new", "--image", &format!("{ls}:base")]);
    let f = t.path().join("f.txt");
    fs::write(&f, "hello from umoci insert\n").unwrap();
    run_ok(
        "umoci",
        &["insert", "--image", &format!("{ls}:base"), &s(&f), "/f.txt"],
    );
    // The layer really is unpadded (so this test exercises the case).
    let manifest: serde_json::Value =
        serde_json::from_slice(&ocikit_ok(["cat", &format!("{ls}:base"), "manifest"]).stdout)
            .unwrap();
    let layer = &manifest["layers"][0];
    let mut raw = Vec::new();
    {
        use std::io::Read;
        let bytes = blob_bytes(&l, layer["digest"].as_str().unwrap());
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
    }
    assert_ne!(
        raw.len() % 512,
        0,
        "umoci's layer is padded after all ({} bytes)",
        raw.len()
    );

    let v = ocikit(["verify", "--deep", &ls]);
    assert_eq!(code(&v), 0, "{}{}", stdout(&v), stderr(&v));
    let out = t.path().join("rootfs");
    ocikit_ok([
        "flatten",
        &format!("{ls}:base"),
        "--output",
        &s(&out),
        "--rootless",
    ]);
    assert_eq!(
        fs::read_to_string(out.join("f.txt")).unwrap(),
        "hello from umoci insert\n"
    );
    // umoci's own unpack agrees.
    let bundle = t.path().join("bundle");
    run_ok(
        "umoci",
        &[
            "raw",
            "unpack",
            "--rootless",
            "--image",
            &format!("{ls}:base"),
            &s(&bundle),
        ],
    );
    assert_eq!(
        fs::read(bundle.join("f.txt")).unwrap(),
        fs::read(out.join("f.txt")).unwrap()
    );
    // diff decodes it too: against an image without the file.
    run_ok("umoci", &["new", "--image", &format!("{ls}:empty")]);
    let d = ocikit(["diff", &format!("{ls}:empty"), &format!("{ls}:base")]);
    assert_eq!(code(&d), 1, "{}{}", stdout(&d), stderr(&d));
    assert!(!stderr(&d).contains("truncated"), "{}", stderr(&d));
}
