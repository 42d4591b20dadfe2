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

/// A valid empty tar (only end-of-archive blocks, as `tar cf x.tar -T /dev/null`
/// writes: 10 KiB of zeros) is an empty archive, not "not a tar archive".
#[test]
fn an_empty_tar_is_said_to_hold_no_image() {
    let t = tempfile::tempdir().unwrap();
    let plain = t.path().join("empty.tar");
    fs::write(&plain, vec![0u8; 10240]).unwrap();
    let gz = t.path().join("empty.tar.gz");
    fs::write(&gz, gzip(&[0u8; 10240])).unwrap();
    for f in [&plain, &gz] {
        for args in [
            vec!["ls".to_string(), s(f)],
            vec!["verify".to_string(), s(f)],
            vec!["import".to_string(), s(f), s(&t.path().join("L"))],
        ] {
            let o = ocikit(&args);
            assert_eq!(code(&o), 2, "{args:?}");
            assert!(
                stderr(&o).contains("is an empty archive: it holds no image"),
                "{args:?}: {}",
                stderr(&o)
            );
        }
    }
    assert!(!t.path().join("L").exists());
}

/// `export SOURCE --platform P FILE` and `export SOURCE FILE --platform P`
/// are the same command: options may stand anywhere, as in every other command.
#[test]
fn export_takes_options_anywhere() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a.tar");
    let b = t.path().join("b.tar");
    let src = format!("{}:1.0", s(&demo()));
    ocikit_ok(["export", &src, "--platform", "linux/amd64", &s(&a)]);
    ocikit_ok(["export", &src, &s(&b), "--platform", "linux/amd64"]);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let c = t.path().join("c.tar");
    ocikit_ok([
        "export",
        "--format",
        "docker-archive",
        &src,
        "--platform",
        "linux/arm64",
        &s(&c),
    ]);
    // One location alone is a usage error naming what is missing.
    let o = ocikit(["export", &s(&a)]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("FILE"), "{}", stderr(&o));
}
