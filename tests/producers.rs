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

// ------------------------------------------------ docker-archives as tools write them

/// A tar of `(name, bytes)` members, in order.
fn archive(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The members of an ocikit-exported docker-archive of the demo's `legacy`
/// image, named `demo/app:1.0`.
fn legacy_members(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let d = dir.join("d.tar");
    ocikit_ok([
        "export",
        &format!("{}:legacy", s(&demo())),
        &format!("docker-archive:{}:demo/app:1.0", s(&d)),
    ]);
    let mut a = tar::Archive::new(fs::File::open(&d).unwrap());
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push((name, data));
    }
    out
}

/// Jib writes manifest.json with lower-case keys; docker load and skopeo
/// read them (Go matches keys case-insensitively), so ocikit does, with a note.
#[test]
fn jib_lower_case_manifest_json_keys_are_read() {
    let t = tempfile::tempdir().unwrap();
    let members: Vec<(String, Vec<u8>)> = legacy_members(t.path())
        .into_iter()
        .filter(|(n, _)| !matches!(n.as_str(), "index.json" | "oci-layout"))
        .map(|(n, data)| {
            if n == "manifest.json" {
                let text = String::from_utf8(data).unwrap();
                let text = text
                    .replace("\"Config\"", "\"config\"")
                    .replace("\"RepoTags\"", "\"repoTags\"")
                    .replace("\"Layers\"", "\"layers\"");
                (n, text.into_bytes())
            } else {
                (n, data)
            }
        })
        .collect();
    let jib = t.path().join("jib.tar");
    fs::write(&jib, archive(&members)).unwrap();
    let o = ocikit_ok(["ls", &s(&jib)]);
    assert!(stdout(&o).contains("demo/app:1.0"), "{}", stdout(&o));
    let l = t.path().join("L");
    let o = ocikit_ok(["import", &s(&jib), &s(&l)]);
    assert!(stderr(&o).contains("Jib"), "a note says so: {}", stderr(&o));
    ocikit_ok(["verify", "--deep", &s(&l)]);
    assert_eq!(
        stdout(&ocikit_ok([
            "cat",
            &format!("{}:demo/app:1.0", s(&l)),
            "config"
        ])),
        stdout(&ocikit_ok([
            "cat",
            &format!("{}:legacy", s(&demo())),
            "config"
        ]))
    );
}

/// In a legacy docker-archive the DiffID is a compressed layer's only digest:
/// copy and export check it, as flatten, skopeo and docker load do.
#[test]
fn a_legacy_layer_that_does_not_match_its_diff_id_never_crosses() {
    let t = tempfile::tempdir().unwrap();
    // Legacy only, with the first layer file replaced by another gzip stream.
    let mut members: Vec<(String, Vec<u8>)> = legacy_members(t.path())
        .into_iter()
        .filter(|(n, _)| !matches!(n.as_str(), "index.json" | "oci-layout"))
        .collect();
    let mj: serde_json::Value = serde_json::from_slice(
        &members
            .iter()
            .find(|(n, _)| n == "manifest.json")
            .unwrap()
            .1,
    )
    .unwrap();
    let first = mj[0]["Layers"][0].as_str().unwrap().to_string();
    let wrong = gzip(&tar(&[file(
        "evil.txt",
        "not the layer the config names\n",
    )]));
    let mut renamed = String::new();
    for (n, data) in members.iter_mut() {
        if *n == first {
            *data = wrong.clone();
            renamed = "0/layer.tar.gz".into();
            *n = renamed.clone();
        }
    }
    let members: Vec<(String, Vec<u8>)> = members
        .into_iter()
        .map(|(n, data)| {
            if n == "manifest.json" {
                let mut v: serde_json::Value = serde_json::from_slice(&data).unwrap();
                v[0]["Layers"][0] = serde_json::json!(renamed);
                v[0].as_object_mut().unwrap().remove("LayerSources");
                (n, serde_json::to_vec(&v).unwrap())
            } else {
                (n, data)
            }
        })
        .collect();
    let bad = t.path().join("bad.tar");
    fs::write(&bad, archive(&members)).unwrap();
    let l = t.path().join("L");
    for args in [
        vec!["import".to_string(), s(&bad), s(&l)],
        vec!["export".to_string(), s(&bad), s(&t.path().join("out.tar"))],
        vec![
            "copy".to_string(),
            s(&bad),
            format!("oci-archive:{}", s(&t.path().join("out2.tar"))),
        ],
    ] {
        let o = ocikit(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}{}", stdout(&o), stderr(&o));
        assert!(stderr(&o).contains("diff_id"), "{args:?}: {}", stderr(&o));
    }
    assert!(!l.exists() || index_tags(&l).is_empty());
    assert!(!t.path().join("out.tar").exists());
    assert!(!t.path().join("out2.tar").exists());
}

/// `ctr images export` keeps only the host's platform of an index by default:
/// import and verify say what is missing and how to proceed.
#[test]
fn a_partial_export_says_which_platforms_it_holds() {
    let (_d, demo) = demo_copy();
    let idx = index_json(&demo);
    let entry = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "1.0")
        .unwrap()
        .clone();
    let nested: serde_json::Value =
        serde_json::from_slice(&blob_bytes(&demo, entry["digest"].as_str().unwrap())).unwrap();
    let arm = nested["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap();
    fs::remove_file(blob_path(&demo, arm)).unwrap();
    let t = tempfile::tempdir().unwrap();
    let o = ocikit([
        "import",
        &format!("{}:1.0", s(&demo)),
        &s(&t.path().join("L")),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    for needle in [
        "holds linux/amd64 only",
        "linux/arm64",
        "--platform linux/amd64",
    ] {
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
    let v = ocikit(["verify", &s(&demo)]);
    assert_eq!(code(&v), 1);
    assert!(
        stdout(&v).contains("--platform linux/amd64"),
        "{}",
        stdout(&v)
    );
    ocikit_ok([
        "import",
        &format!("{}:1.0", s(&demo)),
        &s(&t.path().join("L")),
        "--platform",
        "linux/amd64",
    ]);
}

/// A docker-archive holds one image per name: `--all` of a multi-platform
/// index is refused, not cut to the host platform silently.
#[test]
fn docker_archive_export_of_all_platforms_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("x.tar");
    let o = ocikit([
        "export",
        "--format",
        "docker-archive",
        "--all",
        &format!("{}:1.0", s(&demo())),
        &s(&f),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--platform") && stderr(&o).contains("oci-archive"),
        "{}",
        stderr(&o)
    );
    assert!(!f.exists());
}

fn blob_member(bytes: &[u8]) -> (String, String) {
    let hex = sha256_hex(bytes);
    (format!("blobs/sha256/{hex}"), format!("sha256:{hex}"))
}

/// `ctr images export` of two manifests sharing one config (the same layer,
/// stored compressed in one and not in the other): the OCI view names one of
/// them; manifest.json's legacy entry must not move that name to the other.
#[test]
fn manifest_json_never_moves_a_name_the_oci_view_gives() {
    use serde_json::json;
    let layer = tar(&[file("tricky.txt", "l3\n")]);
    let gz = gzip(&layer);
    let config = to_bytes(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]},
    }));
    let (config_member, config_digest) = blob_member(&config);
    let (raw_member, raw_digest) = blob_member(&layer);
    let (gz_member, gz_digest) = blob_member(&gz);
    let m2 = to_bytes(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_TAR, "digest": raw_digest, "size": layer.len()}],
    }));
    let (m2_member, m2_digest) = blob_member(&m2);
    // The other manifest sorts first among the members (the old pairing by
    // config alone took the first it found).
    let m1 = (0..)
        .map(|i| {
            to_bytes(&json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
                "layers": [{"mediaType": OCI_GZIP, "digest": gz_digest, "size": gz.len()}],
                "annotations": {"variant": i.to_string()},
            }))
        })
        .find(|m| blob_member(m).0 < m2_member)
        .unwrap();
    let index = to_bytes(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": m2_digest, "size": m2.len(),
             "annotations": {"io.containerd.image.name": "docker.io/acc/tricky:l3",
                             "org.opencontainers.image.ref.name": "l3"}},
        ]}),
    );
    let manifest_json = to_bytes(&json!([{
        "Config": config_member, "RepoTags": ["acc/tricky:l3"], "Layers": [raw_member],
    }]));
    let members = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_string(), index),
        ("manifest.json".to_string(), manifest_json),
        (config_member, config),
        (raw_member, layer),
        (gz_member, gz),
        (blob_member(&m1).0, m1),
        (m2_member, m2),
    ];
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("tricky.tar");
    fs::write(&f, archive(&members)).unwrap();
    let o = ocikit_ok(["cat", &format!("{}:acc/tricky:l3", s(&f)), "manifest"]);
    assert_eq!(digest_of(&o.stdout), m2_digest);
    let l = t.path().join("L");
    ocikit_ok(["import", &s(&f), &s(&l)]);
    let o = ocikit_ok(["cat", &format!("{}:acc/tricky:l3", s(&l)), "manifest"]);
    assert_eq!(digest_of(&o.stdout), m2_digest);
    assert_eq!(index_json(&l)["manifests"].as_array().unwrap().len(), 1);
}

/// `ctr images export --all-platforms app:latest`: the OCI view names the
/// index; manifest.json's legacy entry names its host-platform manifest. One
/// image, named once, resolving to the index.
#[test]
fn an_all_platforms_export_names_the_index_not_its_child() {
    use serde_json::json;
    let demo = demo();
    let idx = index_json(&demo);
    let entry = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "1.0")
        .unwrap()
        .clone();
    let nested: serde_json::Value =
        serde_json::from_slice(&blob_bytes(&demo, entry["digest"].as_str().unwrap())).unwrap();
    let amd = nested["manifests"][0].clone();
    let m: serde_json::Value =
        serde_json::from_slice(&blob_bytes(&demo, amd["digest"].as_str().unwrap())).unwrap();
    let mut members = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mut e = entry.clone();
    e["annotations"] = json!({"io.containerd.image.name": "docker.io/library/app:latest",
                              "org.opencontainers.image.ref.name": "latest"});
    members.push((
        "index.json".into(),
        to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e]})),
    ));
    let name = |d: &serde_json::Value| {
        format!("blobs/{}", d["digest"].as_str().unwrap().replace(':', "/"))
    };
    members.push((
        "manifest.json".into(),
        to_bytes(&json!([{
            "Config": name(&m["config"]),
            "RepoTags": ["app:latest"],
            "Layers": m["layers"].as_array().unwrap().iter().map(name).collect::<Vec<_>>(),
        }])),
    ));
    for f in blob_files(&demo) {
        members.push((
            format!("blobs/{f}"),
            fs::read(demo.join("blobs").join(&f)).unwrap(),
        ));
    }
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("all.tar");
    fs::write(&f, archive(&members)).unwrap();
    let o = ocikit_ok(["ls", &s(&f)]);
    assert_eq!(
        stdout(&o).matches("app:latest").count(),
        1,
        "{}",
        stdout(&o)
    );
    let o = ocikit_ok(["cat", &format!("{}:app:latest", s(&f)), "index"]);
    assert_eq!(digest_of(&o.stdout), entry["digest"].as_str().unwrap());
    let o = ocikit_ok([
        "inspect",
        &format!("{}:app:latest", s(&f)),
        "--platform",
        "linux/arm64",
    ]);
    assert!(stdout(&o).contains("arm64"), "{}", stdout(&o));
}

/// diff of images with different layer counts (l3 = l2 + one layer) says
/// which files the extra layer adds and deletes, decoding only that layer.
#[test]
fn diff_lists_the_entries_of_a_layer_only_one_side_has() {
    use serde_json::json;
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("L");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let base = put_layer(
        &root,
        OCI_GZIP,
        &tar(&[file("etc/motd", "hi\n"), file("tmp/old.txt", "old\n")]),
    );
    let extra = put_layer(
        &root,
        OCI_GZIP,
        &tar(&[
            file("app/new.txt", "new\n"),
            Entry::File("tmp/.wh.old.txt", 0o644, Vec::new()),
        ]),
    );
    let l2 = put_image(&root, "amd64", None, std::slice::from_ref(&base), false);
    let l3 = put_image(&root, "amd64", None, &[base, extra], false);
    let mut e2 = l2.clone();
    e2["annotations"] = json!({"org.opencontainers.image.ref.name": "l2"});
    let mut e3 = l3.clone();
    e3["annotations"] = json!({"org.opencontainers.image.ref.name": "l3"});
    write_layout_files(
        &root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e2, e3]}),
    );
    let l = s(&root);
    let o = ocikit(["diff", &format!("{l}:l2"), &format!("{l}:l3"), "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["layers_decoded"], json!(1), "{report}");
    let text = stdout(&ocikit(["diff", &format!("{l}:l2"), &format!("{l}:l3")]));
    assert!(text.contains("layer 2: /app/new.txt: added"), "{text}");
    assert!(text.contains("layer 2: /tmp/old.txt: deleted"), "{text}");
    assert!(text.contains("manifest: layers[1]: added"), "{text}");
    // The other way round: the layer is removed, its whiteout undone.
    let text = stdout(&ocikit(["diff", &format!("{l}:l3"), &format!("{l}:l2")]));
    assert!(text.contains("layer 2: /app/new.txt: removed"), "{text}");
    assert!(
        text.contains("layer 2: /tmp/old.txt: not deleted"),
        "{text}"
    );
}
