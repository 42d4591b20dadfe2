//! The read commands on the demo layout: exact bytes, JSON reports, platform
//! choice, referrer discovery.

mod common;

use std::fs;

use common::*;
use serde_json::Value;

fn json_of(o: &std::process::Output) -> Value {
    assert_eq!(code(o), 0, "stderr: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("valid JSON on stdout")
}

fn index_json() -> Value {
    serde_json::from_slice(&fs::read(demo().join("index.json")).unwrap()).unwrap()
}

fn blob_bytes(digest: &str) -> Vec<u8> {
    fs::read(demo().join("blobs/sha256").join(&digest[7..])).unwrap()
}

#[test]
fn ls_lists_tags_platforms_and_sizes() {
    let o = ocikit(["ls".as_ref(), demo().as_os_str()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("TAG"));
    assert!(
        lines[1].starts_with("1.0 ") && lines[1].contains("linux/amd64,linux/arm64/v8"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("legacy ") && lines[2].contains("docker manifest"),
        "{out}"
    );

    let j = json_of(&ocikit([
        "ls".as_ref(),
        "--json".as_ref(),
        demo().as_os_str(),
    ]));
    assert_eq!(j["schemaVersion"], 1);
    let images = j["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    let idx = index_json();
    assert_eq!(images[0]["digest"], idx["manifests"][0]["digest"]);
    assert_eq!(images[0]["tag"], "1.0");
    assert_eq!(
        images[0]["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8"])
    );
    assert_eq!(images[1]["platforms"], serde_json::json!(["linux/amd64"]));
    // totalSize of the docker image = manifest + config + two layers.
    let m: Value =
        serde_json::from_slice(&blob_bytes(idx["manifests"][1]["digest"].as_str().unwrap()))
            .unwrap();
    let expected = idx["manifests"][1]["size"].as_u64().unwrap()
        + m["config"]["size"].as_u64().unwrap()
        + m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(images[1]["totalSize"].as_u64().unwrap(), expected);
}

#[test]
fn cat_prints_exact_stored_bytes() {
    let d = demo();
    let loc = |r: &str| format!("{}{r}", d.display());
    // index.json itself.
    let o = ocikit(["cat", &loc(""), "index"]);
    assert_eq!(o.stdout, fs::read(d.join("index.json")).unwrap());
    // The tagged index.
    let idx = index_json();
    let index_digest = idx["manifests"][0]["digest"].as_str().unwrap();
    let o = ocikit(["cat", &loc(":1.0"), "index"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, blob_bytes(index_digest));
    // Per-platform manifests and configs.
    let index: Value = serde_json::from_slice(&blob_bytes(index_digest)).unwrap();
    for (i, p) in ["linux/amd64", "linux/arm64"].iter().enumerate() {
        let mdigest = index["manifests"][i]["digest"].as_str().unwrap();
        let o = ocikit(["cat", &loc(":1.0"), "manifest", "--platform", p]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(o.stdout, blob_bytes(mdigest), "{p}");
        let m: Value = serde_json::from_slice(&o.stdout).unwrap();
        let o = ocikit(["cat", &loc(":1.0"), "config", "--platform", p]);
        assert_eq!(
            o.stdout,
            blob_bytes(m["config"]["digest"].as_str().unwrap())
        );
    }
    // By digest, and the docker image.
    let o = ocikit(["cat", &loc(&format!("@{index_digest}")), "index"]);
    assert_eq!(o.stdout, blob_bytes(index_digest));
    let o = ocikit(["cat", &loc(":legacy"), "manifest"]);
    assert_eq!(
        o.stdout,
        blob_bytes(idx["manifests"][1]["digest"].as_str().unwrap())
    );
    // A manifest is not an index.
    let o = ocikit(["cat", &loc(":legacy"), "index"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not an index"), "{}", stderr(&o));
}

#[test]
fn oci_prefix_and_digest_locations_resolve() {
    let d = demo();
    let idx = index_json();
    let docker = idx["manifests"][1]["digest"].as_str().unwrap();
    let a = ocikit(["cat", &format!("oci:{}:legacy", d.display()), "manifest"]);
    let b = ocikit(["cat", &format!("{}@{docker}", d.display()), "manifest"]);
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    assert_eq!(a.stdout, b.stdout);
    // Docker-style name: tag part matches ref.name.
    let c = ocikit([
        "cat",
        &format!("{}:example.com/demo:legacy", d.display()),
        "manifest",
    ]);
    assert_eq!(c.stdout, a.stdout, "{}", stderr(&c));
}

#[test]
fn inspect_chooses_platforms() {
    let d = demo().display().to_string();
    for (p, arch) in [
        ("linux/amd64", "amd64"),
        ("linux/arm64", "arm64"),
        ("linux/arm64/v8", "arm64"),
    ] {
        let j = json_of(&ocikit([
            "inspect",
            &format!("{d}:1.0"),
            "--platform",
            p,
            "--json",
        ]));
        assert_eq!(j["indexes"].as_array().unwrap().len(), 1);
        assert!(j["platform"].as_str().unwrap().contains(arch), "{p}: {j}");
        let layers = j["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        assert!(layers[2]["mediaType"].as_str().unwrap().ends_with("+zstd"));
        assert!(layers[0]["diffId"].as_str().unwrap().starts_with("sha256:"));
    }
    // Text output names the chosen platform and the layers.
    let o = ocikit(["inspect", &format!("{d}:1.0"), "--platform", "linux/arm64"]);
    let out = stdout(&o);
    assert!(out.contains("Platform:   linux/arm64/v8"), "{out}");
    assert!(out.contains("Layers:     3"), "{out}");
    // The host default works on the demo (amd64 or arm64 hosts).
    let o = ocikit(["inspect", &format!("{d}:1.0")]);
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    // A platform the index lacks: the error lists what there is.
    let o = ocikit(["inspect", &format!("{d}:1.0"), "--platform", "linux/s390x"]);
    assert_eq!(code(&o), 2);
    let e = stderr(&o);
    assert!(
        e.contains("linux/s390x") && e.contains("linux/amd64") && e.contains("linux/arm64/v8"),
        "{e}"
    );
}

#[test]
fn blob_prints_verified_bytes() {
    let d = demo().display().to_string();
    let empty = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    let o = ocikit(["blob", &d, empty]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, b"{}");
    let o = ocikit(["blob", &d, &format!("sha256:{}", "0".repeat(64))]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("is missing"), "{}", stderr(&o));
}

#[test]
fn verify_is_clean_and_deep_checks_every_layer() {
    let d = demo().display().to_string();
    let j = json_of(&ocikit(["verify", &d, "--json"]));
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["errors"], 0);
    assert_eq!(j["warnings"], 0, "{j}");
    // Every file under blobs/ is reachable (the referrer included).
    let files = fs::read_dir(demo().join("blobs/sha256")).unwrap().count() as u64;
    assert_eq!(j["blobsChecked"].as_u64().unwrap(), files);
    let j = json_of(&ocikit(["verify", &d, "--deep", "--json"]));
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["layersDecompressed"], 4, "{j}");
    let o = ocikit(["verify", &d]);
    assert!(stdout(&o).starts_with("ok: 14 blobs"), "{}", stdout(&o));
}

#[test]
fn verify_finds_referrers_by_subject_and_reports_their_damage() {
    let (_t, d) = demo_copy();
    // The SBOM blob is referenced only by the referrer manifest.
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"ocikit-demo","packages":[]}"#;
    let sbom_digest = digest_of(sbom);
    fs::remove_file(d.join("blobs/sha256").join(&sbom_digest[7..])).unwrap();
    let o = ocikit(["verify".as_ref(), "--json".as_ref(), d.as_os_str()]);
    assert_eq!(code(&o), 1);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = &j["findings"][0];
    assert_eq!(f["kind"], "missing");
    assert_eq!(f["digest"], sbom_digest.as_str());
    assert!(
        f["path"]
            .as_str()
            .unwrap()
            .starts_with("referrer of sha256:"),
        "{f}"
    );
}

#[test]
fn verify_reports_unreferenced_and_stray_files_as_warnings() {
    let (_t, d) = demo_copy();
    put_blob(&d, "x/y", b"garbage");
    fs::write(d.join("blobs/sha256/not-a-digest"), b"x").unwrap();
    let o = ocikit(["verify".as_ref(), "--json".as_ref(), d.as_os_str()]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["unreferenced", "stray-file"]);
}

#[test]
fn tag_then_read_by_new_tag() {
    let (_t, d) = demo_copy();
    let ds = d.display().to_string();
    let o = ocikit(["tag", &format!("{ds}:1.0"), "stable"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let a = ocikit(["cat", &format!("{ds}:stable"), "index"]);
    let b = ocikit(["cat", &format!("{ds}:1.0"), "index"]);
    assert_eq!(code(&a), 0);
    assert_eq!(a.stdout, b.stdout);
    let o = ocikit(["untag", &format!("{ds}:stable")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = ocikit(["cat", &format!("{ds}:stable"), "index"]);
    assert_eq!(code(&o), 2);
    // The demo is back to its original index.json bytes (the new entry was a duplicate digest).
    assert_eq!(
        fs::read(d.join("index.json")).unwrap(),
        fs::read(demo().join("index.json")).unwrap()
    );
}

#[test]
fn written_files_are_world_readable() {
    // Regression: temporary files are 0600, and were renamed into place as such,
    // so other users (or a non-root skopeo) could not read the layout.
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("new");
    assert_eq!(code(&ocikit(["init".as_ref(), l.as_os_str()])), 0);
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&l.join("oci-layout")), 0o644);
    assert_eq!(mode(&l.join("index.json")), 0o644);
    let (_t2, d) = demo_copy();
    let ds = d.display().to_string();
    assert_eq!(code(&ocikit(["tag", &format!("{ds}:legacy"), "again"])), 0);
    assert_eq!(mode(&d.join("index.json")), 0o644);
}

#[test]
fn cat_index_judges_by_the_bytes_not_the_descriptor() {
    // Regression: a manifest whose index.json entry claims the index media type
    // was printed by `cat … index`.
    let (_t, d) = demo_copy();
    let p = d.join("index.json");
    let text = fs::read_to_string(&p).unwrap();
    let relabelled = text.replacen(DOCKER_MANIFEST, OCI_INDEX, 1);
    assert_ne!(text, relabelled);
    fs::write(&p, relabelled).unwrap();
    let o = ocikit(["cat", &format!("{}:legacy", d.display()), "index"]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("not an index"), "{}", stderr(&o));
}

#[test]
fn docker_archive_takes_one_platform() {
    // Regression: two --platform values wrote only the first, silently.
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("x.tar");
    let o = ocikit([
        "export",
        &format!("{}:1.0", demo().display()),
        &format!("docker-archive:{}:x/y:1", out.display()),
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("takes one --platform, not 2"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    assert_eq!(
        fs::read_dir(t.path()).unwrap().count(),
        0,
        "no temp file left"
    );
}

#[test]
fn zstd_layers_in_a_docker_archive_are_warned_about() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("x.tar");
    let o = ocikit([
        "export",
        &format!("{}:1.0", demo().display()),
        &format!("docker-archive:{}:x/y:1", out.display()),
        "--platform",
        "linux/amd64",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is zstd-compressed; Docker Engine 20.10 and older cannot load it"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn copy_deep_checks_diff_ids_before_writing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let (layer, _) = put_layer(&src, OCI_GZIP, &tar(&[file("a", "a\n")]));
    let wrong = digest_of(b"not the layer");
    let m = put_image(&src, "amd64", None, &[(layer, wrong.clone())], false);
    let mut entry = m.clone();
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "x"});
    write_layout_files(
        &src,
        &serde_json::json!({"schemaVersion": 2, "manifests": [entry]}),
    );
    let dst = t.path().join("dst");
    let o = ocikit([
        "copy".as_ref(),
        "--deep".as_ref(),
        src.as_os_str(),
        dst.as_os_str(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("but its config's diff_id is {wrong}")),
        "{}",
        stderr(&o)
    );
    assert!(!dst.exists(), "nothing written before the check");
    // Without --deep the copy checks digests and sizes only, so it goes through.
    let o = ocikit(["copy".as_ref(), src.as_os_str(), dst.as_os_str()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn verify_and_gc_agree_on_a_fifo_under_blobs() {
    // Regression: verify called an unreferenced FIFO garbage "gc would remove",
    // while gc refuses to run with it there.
    let (_t, d) = demo_copy();
    let fifo = d.join("blobs/sha256").join("f".repeat(64));
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let o = ocikit(["verify".as_ref(), d.as_os_str()]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("is not a regular file; gc refuses to run until it is removed"),
        "{}",
        stdout(&o)
    );
    let o = ocikit(["gc".as_ref(), d.as_os_str()]);
    assert_eq!(code(&o), 2);
    assert!(fifo.exists());
}
