//! Archives across tools and back: skopeo reads the layouts and archives ocikit
//! writes, ocikit reads the archives skopeo writes, umoci unpacks what ocikit
//! imported; and ocikit's own round trips (layout -> archive -> layout, stdout
//! vs file) and platform selection keep every digest. Tests that need skopeo
//! or umoci skip (with a message) when it is not installed.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------- running

fn demo_at(reference: &str) -> String {
    format!("{}:{reference}", s(&demo()))
}

/// `ocikit ARGS` stdout bytes, asserting exit 0.
fn ok_bytes(args: &[&str]) -> Vec<u8> {
    ocikit_ok(args).stdout
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
        )
    })
}

/// `ocikit verify --deep LOC` exits 0.
fn verify_deep_clean(loc: &str) {
    let o = ocikit(["verify", "--deep", "--json", loc]);
    assert_eq!(
        code(&o),
        0,
        "verify --deep {loc}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(json_of(&o.stdout)["ok"], true);
}

// ---------------------------------------------------------------- the demo's blobs

/// Every blob file of a layout, as `sha256:<hex>`.
fn blob_files(root: &Path) -> BTreeSet<String> {
    let dir = root.join("blobs/sha256");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect()
}

/// A manifest's digest plus its config's and layers'.
fn manifest_closure(root: &Path, manifest: &str) -> BTreeSet<String> {
    let m = json_of(&blob_bytes(root, manifest));
    let mut set = BTreeSet::from([manifest.to_string()]);
    set.insert(m["config"]["digest"].as_str().unwrap().to_string());
    for l in m["layers"].as_array().unwrap() {
        set.insert(l["digest"].as_str().unwrap().to_string());
    }
    set
}

/// What the demo holds, computed from its JSON.
struct Demo {
    index: String,
    amd: String,
    arm: String,
    /// The SBOM referrer of the amd64 manifest (not in index.json).
    referrer: String,
    legacy: String,
}

fn demo_facts() -> Demo {
    let root = demo();
    let index = index_entry(&root, "1.0")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let idx = json_of(&blob_bytes(&root, &index));
    let by_arch = |arch: &str| {
        idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let amd = by_arch("amd64");
    let arm = by_arch("arm64");
    let referrers: Vec<String> = blob_files(&root)
        .into_iter()
        .filter(|d| {
            let b = blob_bytes(&root, d);
            b.first() == Some(&b'{')
                && serde_json::from_slice::<Value>(&b)
                    .is_ok_and(|v| v["subject"]["digest"] == amd.as_str())
        })
        .collect();
    assert_eq!(referrers.len(), 1, "the demo has one referrer");
    Demo {
        index,
        amd,
        arm,
        referrer: referrers[0].clone(),
        legacy: index_entry(&root, "legacy")["digest"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

/// The digests `ls --json` lists, with their tags and names.
fn ls_digests(loc: &str) -> Vec<(Option<String>, Option<String>, String)> {
    let v = json_of(&ok_bytes(&["ls", "--json", loc]));
    let mut out: Vec<_> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["tag"].as_str().map(str::to_string),
                i["name"].as_str().map(str::to_string),
                i["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The `config` of a manifest stored in `root`.
fn config_of(root: &Path, manifest: &str) -> (String, Value) {
    let m = json_of(&blob_bytes(root, manifest));
    let d = m["config"]["digest"].as_str().unwrap().to_string();
    let c = json_of(&blob_bytes(root, &d));
    (d, c)
}

// ---------------------------------------------------------------- skopeo reads ocikit

#[test]
fn skopeo_reads_ocikit_layouts_and_archives() {
    if !tools("skopeo_reads_ocikit_layouts_and_archives", &["skopeo"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| s(&t.path().join(n));
    let demo_facts = demo_facts();

    // A one-platform layout copy.
    ocikit_ok([
        "copy",
        &demo_at("1.0"),
        &p("L"),
        "--platform",
        "linux/amd64",
    ]);
    let v = json_of(&run_ok("skopeo", &["inspect", &format!("oci:{}:1.0", p("L"))]).stdout);
    assert_eq!(v["Digest"], demo_facts.amd.as_str(), "{v:#}");
    assert_eq!(v["Architecture"], "amd64");
    let amd = json_of(&blob_bytes(&demo(), &demo_facts.amd));
    let layers: Vec<&Value> = amd["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["digest"])
        .collect();
    assert_eq!(
        v["Layers"].as_array().unwrap().iter().collect::<Vec<_>>(),
        layers
    );
    let raw = run_ok(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:1.0", p("L"))],
    )
    .stdout;
    assert_eq!(raw, blob_bytes(&demo(), &demo_facts.amd));

    // An oci-archive of the whole index: skopeo sees the stored index bytes.
    ocikit_ok(["export", &demo_at("1.0"), &p("o.tar")]);
    let raw = run_ok(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}:1.0", p("o.tar")),
        ],
    )
    .stdout;
    assert_eq!(raw, ok_bytes(&["cat", &demo_at("1.0"), "index"]));
    assert_eq!(digest_of(&raw), demo_facts.index);
    // ... and copies the host's image out of it, digests kept.
    run_ok(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}:1.0", p("o.tar")),
            &format!("oci:{}:x", p("back")),
        ],
    );
    let host_manifest = ok_bytes(&["cat", &demo_at("1.0"), "manifest"]);
    assert_eq!(
        ok_bytes(&["cat", &format!("{}:x", p("back")), "manifest"]),
        host_manifest
    );
    assert_eq!(
        blob_files(&t.path().join("back")),
        manifest_closure(&demo(), &digest_of(&host_manifest))
    );
    verify_deep_clean(&p("back"));

    // A docker-archive of the Docker image: skopeo reads it by file and by name.
    let d = p("d.tar");
    ocikit_ok([
        "export",
        &demo_at("legacy"),
        &format!("docker-archive:{d}:demo/app:1.0"),
    ]);
    let (legacy_config, legacy_cfg) = config_of(&demo(), &demo_facts.legacy);
    for loc in [
        format!("docker-archive:{d}"),
        format!("docker-archive:{d}:demo/app:1.0"),
    ] {
        let v = json_of(&run_ok("skopeo", &["inspect", &loc]).stdout);
        assert_eq!(v["Architecture"], "amd64", "{loc}: {v:#}");
        // skopeo lists a docker-archive's layers by their uncompressed digests.
        assert_eq!(
            v["Layers"], legacy_cfg["rootfs"]["diff_ids"],
            "{loc}: {v:#}"
        );
        let m = json_of(&run_ok("skopeo", &["inspect", "--raw", &loc]).stdout);
        assert_eq!(
            m["config"]["digest"],
            legacy_config.as_str(),
            "{loc}: {m:#}"
        );
        let cfg = run_ok("skopeo", &["inspect", "--config", "--raw", &loc]).stdout;
        assert_eq!(digest_of(&cfg), legacy_config, "{loc}");
    }
    // Named, skopeo reports the name (unnamed, it reports none).
    let v = json_of(
        &run_ok(
            "skopeo",
            &["inspect", &format!("docker-archive:{d}:demo/app:1.0")],
        )
        .stdout,
    );
    assert_eq!(v["Name"], "docker.io/demo/app", "{v:#}");
    // ... and copies it into a layout: config (so diff_ids) kept; the layers
    // are recompressed by skopeo, so their digests may differ.
    run_ok(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{d}"),
            &format!("oci:{}:y", p("L2")),
        ],
    );
    let l2 = format!("{}:y", p("L2"));
    assert_eq!(
        ok_bytes(&["cat", &l2, "config"]),
        blob_bytes(&demo(), &legacy_config)
    );
    verify_deep_clean(&p("L2"));
}

// ---------------------------------------------------------------- ocikit reads skopeo

/// `skopeo copy oci:DEMO:1.0 docker-archive:FILE:demo/s:1` (the host's image).
/// skopeo 1.9 refuses to put the demo's zstd layer in a docker-archive ("zstd
/// compression is not supported for docker images"); then the image goes
/// through an `oci:` copy with gzip layers first, which keeps the config.
fn skopeo_docker_archive(dir: &Path) -> PathBuf {
    let out = dir.join("s.tar");
    let dest = format!("docker-archive:{}:demo/s:1", s(&out));
    let o = run(
        "skopeo",
        &["copy", &format!("oci:{}", demo_at("1.0")), &dest],
    );
    if o.status.success() {
        return out;
    }
    assert!(
        stderr(&o).contains("zstd compression is not supported for docker images"),
        "skopeo copy to docker-archive failed unexpectedly: {}",
        stderr(&o)
    );
    eprintln!(
        "note: this skopeo cannot write zstd layers to a docker-archive; going through gzip first"
    );
    let _ = fs::remove_file(&out);
    let gz = format!("oci:{}:gz", s(&dir.join("gzip-layout")));
    run_ok(
        "skopeo",
        &[
            "copy",
            "--dest-compress-format",
            "gzip",
            &format!("oci:{}", demo_at("1.0")),
            &gz,
        ],
    );
    run_ok("skopeo", &["copy", &gz, &dest]);
    out
}

#[test]
fn ocikit_reads_skopeo_archives() {
    if !tools("ocikit_reads_skopeo_archives", &["skopeo"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| s(&t.path().join(n));
    let host_manifest = ok_bytes(&["cat", &demo_at("1.0"), "manifest"]);
    let host_config = ok_bytes(&["cat", &demo_at("1.0"), "config"]);
    let host_cfg = json_of(&host_config);

    // docker-archive (manifest.json only, uncompressed layers).
    let st = skopeo_docker_archive(t.path());
    let st = s(&st);
    let ls = ocikit_ok(["ls", &st]);
    assert!(stdout(&ls).contains("demo/s:1"), "{}", stdout(&ls));
    let images = ls_digests(&st);
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].1.as_deref(), Some("docker.io/demo/s:1"));
    let skopeo_manifest = json_of(
        &run_ok(
            "skopeo",
            &["inspect", "--raw", &format!("docker-archive:{st}")],
        )
        .stdout,
    );
    let skopeo_config = skopeo_manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(skopeo_config, digest_of(&host_config));

    ocikit_ok(["import", &st, &p("L3")]);
    verify_deep_clean(&p("L3"));
    let l3 = ls_digests(&p("L3"));
    assert_eq!(l3.len(), 1, "{l3:?}");
    let (cfg_digest, cfg) = config_of(&t.path().join("L3"), &l3[0].2);
    assert_eq!(cfg_digest, skopeo_config);
    assert_eq!(cfg["rootfs"]["diff_ids"], host_cfg["rootfs"]["diff_ids"]);
    assert_eq!(
        ok_bytes(&["cat", &format!("{}:1", p("L3")), "config"]),
        host_config
    );
    // The layers are stored as skopeo wrote them, uncompressed: their digests
    // are the diff_ids.
    let m = json_of(&blob_bytes(&t.path().join("L3"), &l3[0].2));
    let layer_digests: Vec<&Value> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["digest"])
        .collect();
    assert_eq!(
        layer_digests,
        cfg["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>()
    );
    // And read in place, the archive verifies too.
    verify_deep_clean(&st);

    // oci-archive: skopeo's spelling is oci-archive:FILE:REF.
    let so = p("s-oci.tar");
    run_ok(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}", demo_at("1.0")),
            &format!("oci-archive:{so}:1"),
        ],
    );
    assert_eq!(
        ls_digests(&so),
        vec![(Some("1".into()), None, digest_of(&host_manifest))]
    );
    verify_deep_clean(&so);
    assert_eq!(
        ok_bytes(&["cat", &format!("{so}:1"), "manifest"]),
        host_manifest
    );
    ocikit_ok(["import", &so, &p("L5")]);
    verify_deep_clean(&p("L5"));
    assert_eq!(
        ok_bytes(&["cat", &format!("{}:1", p("L5")), "manifest"]),
        host_manifest
    );
    assert_eq!(
        blob_files(&t.path().join("L5")),
        manifest_closure(&demo(), &digest_of(&host_manifest))
    );
}

#[test]
fn umoci_unpacks_an_imported_skopeo_archive() {
    if !tools(
        "umoci_unpacks_an_imported_skopeo_archive",
        &["skopeo", "umoci"],
    ) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let st = skopeo_docker_archive(t.path());
    let l4 = t.path().join("L4");
    ocikit_ok(["import", &s(&st), &format!("{}:img", s(&l4))]);
    assert_eq!(index_tags(&l4), vec!["img"]);
    let bundle = t.path().join("bundle");
    let image = format!("{}:img", s(&l4));
    let mut args = vec!["unpack"];
    if !is_root() {
        args.push("--rootless");
    }
    args.extend(["--image", &image]);
    let b = s(&bundle);
    args.push(&b);
    run_ok("umoci", &args);
    let rootfs = bundle.join("rootfs");
    assert_eq!(fs::read(rootfs.join("etc/hostname")).unwrap(), b"demo\n");
    assert_eq!(
        fs::read(rootfs.join("etc/motd")).unwrap(),
        b"Welcome to the ocikit demo.\n"
    );
    // Whiteout and opaque directory of layer 2 applied.
    assert!(!rootfs.join("tmp/scratch.txt").exists());
    assert!(rootfs.join("tmp").is_dir());
    assert!(!rootfs.join("usr/share/demo/README").exists());
    assert!(rootfs.join("usr/share/demo/NOTES").is_file());
    let cfg = json_of(&ok_bytes(&["cat", &image, "config"]));
    assert_eq!(
        fs::read_to_string(rootfs.join("app/config.json")).unwrap(),
        format!(
            "{{\"arch\":\"{}\"}}\n",
            cfg["architecture"].as_str().unwrap()
        )
    );
    // umoci left the layout valid.
    verify_deep_clean(&s(&l4));
}

// ---------------------------------------------------------------- round trips

#[test]
fn layout_to_oci_archive_to_layout_keeps_every_digest() {
    let t = tempfile::tempdir().unwrap();
    let demo_ls = ls_digests(&s(&demo()));
    let demo_blobs = blob_files(&demo());
    let mut first: Option<Vec<u8>> = None;
    for name in ["o.tar", "o.tar.gz", "o.tar.zst"] {
        let archive = t.path().join(name);
        ocikit_ok(["export", &s(&demo()), &s(&archive)]);
        assert_eq!(ls_digests(&s(&archive)), demo_ls, "{name}");
        let l = t.path().join(format!("L-{name}"));
        ocikit_ok(["import", &s(&archive), &s(&l)]);
        assert_eq!(ls_digests(&s(&l)), demo_ls, "{name}");
        assert_eq!(blob_files(&l), demo_blobs, "{name}");
        for d in &demo_blobs {
            assert_eq!(blob_bytes(&l, d), blob_bytes(&demo(), d), "{name}: {d}");
        }
        assert_eq!(
            ok_bytes(&["cat", &s(&l), "index"]),
            ok_bytes(&["cat", &s(&demo()), "index"]),
            "{name}: index.json"
        );
        verify_deep_clean(&s(&l));
        // Exporting the re-imported layout gives the same archive bytes.
        let again = t.path().join(format!("again-{name}"));
        ocikit_ok(["export", &s(&l), &s(&again)]);
        assert_eq!(
            fs::read(&again).unwrap(),
            fs::read(&archive).unwrap(),
            "{name}: a second export differs"
        );
        if name == "o.tar" {
            first = Some(fs::read(&archive).unwrap());
        }
    }
    // The compressed archives are the plain one, compressed.
    let plain = first.unwrap();
    let mut gz = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&fs::read(t.path().join("o.tar.gz")).unwrap()[..]),
        &mut gz,
    )
    .unwrap();
    assert_eq!(gz, plain);
    let zst = zstd::decode_all(&fs::read(t.path().join("o.tar.zst")).unwrap()[..]).unwrap();
    assert_eq!(zst, plain);
}

#[test]
fn layout_to_docker_archive_to_layout_keeps_config_and_diff_ids() {
    let t = tempfile::tempdir().unwrap();
    let facts = demo_facts();
    let (config, cfg) = config_of(&demo(), &facts.legacy);
    let d1 = t.path().join("d1.tar");
    ocikit_ok([
        "export",
        &demo_at("legacy"),
        &format!("docker-archive:{}:demo/app:1.0", s(&d1)),
    ]);
    let l = t.path().join("L");
    ocikit_ok(["import", &s(&d1), &s(&l)]);
    verify_deep_clean(&s(&l));
    let images = ls_digests(&s(&l));
    assert_eq!(
        images,
        vec![(
            Some("1.0".into()),
            Some("docker.io/demo/app:1.0".into()),
            facts.legacy.clone()
        )]
    );
    let (config2, cfg2) = config_of(&l, &images[0].2);
    assert_eq!(config2, config);
    assert_eq!(cfg2["rootfs"]["diff_ids"], cfg["rootfs"]["diff_ids"]);
    assert_eq!(blob_files(&l), manifest_closure(&demo(), &facts.legacy));

    // Out again under the same name: the same bytes.
    let d2 = t.path().join("d2.tar");
    ocikit_ok([
        "export",
        &format!("{}:1.0", s(&l)),
        &format!("docker-archive:{}:demo/app:1.0", s(&d2)),
    ]);
    assert_eq!(fs::read(&d2).unwrap(), fs::read(&d1).unwrap());
    // Also without naming the target: the layout's name is kept.
    let d3 = t.path().join("d3.tar");
    ocikit_ok([
        "export",
        "--format",
        "docker-archive",
        &format!("{}:1.0", s(&l)),
        &s(&d3),
    ]);
    assert_eq!(fs::read(&d3).unwrap(), fs::read(&d1).unwrap());
    // manifest.json names the image and its config.
    let members = tar_members(&fs::read(&d1).unwrap());
    let mj = json_of(&members["manifest.json"]);
    assert_eq!(mj[0]["RepoTags"], serde_json::json!(["demo/app:1.0"]));
    assert_eq!(
        mj[0]["Config"],
        format!("blobs/sha256/{}", &config["sha256:".len()..])
    );
}

/// The regular files of an uncompressed tar, by name.
fn tar_members(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(bytes);
    let mut out = std::collections::BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.insert(name, data);
    }
    out
}

// ---------------------------------------------------------------- platforms

#[test]
fn platform_selection_copies_exactly_the_platform_blobs() {
    let t = tempfile::tempdir().unwrap();
    let f = demo_facts();
    let amd = manifest_closure(&demo(), &f.amd);
    let arm = manifest_closure(&demo(), &f.arm);
    let referrer = manifest_closure(&demo(), &f.referrer);
    assert_eq!(referrer.len(), 3, "referrer, its empty config, its SBOM");
    assert_eq!(amd.len(), 5);
    assert_eq!(arm.len(), 5);
    let amd_only: BTreeSet<_> = amd.difference(&arm).cloned().collect();
    assert_eq!(amd_only.len(), 3, "amd64 manifest, config, zstd layer");

    let copy = |name: &str, extra: &[&str]| -> PathBuf {
        let dst = t.path().join(name);
        let mut args = vec!["copy".to_string(), demo_at("1.0"), s(&dst)];
        args.extend(extra.iter().map(|a| a.to_string()));
        ocikit_ok(&args);
        verify_deep_clean(&s(&dst));
        dst
    };

    let a = copy("arm", &["--platform", "linux/arm64"]);
    assert_eq!(blob_files(&a), arm);
    assert!(blob_files(&a).is_disjoint(&amd_only));
    assert_eq!(
        ls_digests(&s(&a)),
        vec![(Some("1.0".into()), None, f.arm.clone())]
    );

    let b = copy("amd", &["--platform", "linux/amd64"]);
    let expected: BTreeSet<_> = amd.union(&referrer).cloned().collect();
    assert_eq!(blob_files(&b), expected);
    assert_eq!(
        ls_digests(&s(&b)),
        vec![(Some("1.0".into()), None, f.amd.clone())]
    );

    let b2 = copy(
        "amd-no-referrers",
        &["--platform", "linux/amd64", "--no-referrers"],
    );
    assert_eq!(blob_files(&b2), amd);

    let whole: BTreeSet<_> = [f.index.clone()]
        .into_iter()
        .chain(amd.iter().cloned())
        .chain(arm.iter().cloned())
        .chain(referrer.iter().cloned())
        .collect();
    for (name, extra) in [
        ("all", vec!["--all"]),
        ("default", vec![]),
        (
            "both",
            vec!["--platform", "linux/amd64", "--platform", "linux/arm64"],
        ),
        (
            "both-reversed",
            vec!["--platform", "linux/arm64/v8", "--platform", "linux/amd64"],
        ),
    ] {
        let c = copy(name, &extra);
        assert_eq!(blob_files(&c), whole, "{name}");
        assert_eq!(
            ls_digests(&s(&c)),
            vec![(Some("1.0".into()), None, f.index.clone())],
            "{name}: the stored index is kept"
        );
        assert_eq!(
            ok_bytes(&["cat", &format!("{}:1.0", s(&c)), "index"]),
            blob_bytes(&demo(), &f.index),
            "{name}"
        );
    }

    // Every image of the demo: every blob it stores.
    for (name, extra) in [
        ("everything", vec!["--all"]),
        ("everything-default", vec![]),
    ] {
        let dst = t.path().join(name);
        let mut args = vec!["copy".to_string(), s(&demo()), s(&dst)];
        args.extend(extra.iter().map(|a| a.to_string()));
        ocikit_ok(&args);
        assert_eq!(blob_files(&dst), blob_files(&demo()), "{name}");
        assert_eq!(ls_digests(&s(&dst)), ls_digests(&s(&demo())), "{name}");
    }
}

// ---------------------------------------------------------------- stdout

#[test]
fn export_to_stdout_equals_export_to_a_file() {
    let t = tempfile::tempdir().unwrap();
    let sources = [demo_at("1.0"), demo_at("legacy")];
    for (compress, ext) in [("gzip", "tar.gz"), ("zstd", "tar.zst"), ("none", "tar")] {
        let mut args: Vec<String> = vec!["export".into()];
        args.extend(sources.iter().cloned());
        args.extend(["-".into(), "--compress".into(), compress.into()]);
        let o = ocikit(&args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert!(!o.stdout.is_empty());
        // By flag and by extension: the same bytes as stdout's.
        let by_flag = t.path().join(format!("flag-{compress}.bin"));
        let mut a2: Vec<String> = vec!["export".into()];
        a2.extend(sources.iter().cloned());
        a2.extend([s(&by_flag), "--compress".into(), compress.into()]);
        ocikit_ok(&a2);
        assert_eq!(fs::read(&by_flag).unwrap(), o.stdout, "{compress}: by flag");
        let by_ext = t.path().join(format!("by-ext.{ext}"));
        let mut a3: Vec<String> = vec!["export".into()];
        a3.extend(sources.iter().cloned());
        a3.push(s(&by_ext));
        ocikit_ok(&a3);
        assert_eq!(
            fs::read(&by_ext).unwrap(),
            o.stdout,
            "{compress}: by extension"
        );
        // The piped bytes, saved by the test, read back as an archive.
        let piped = t.path().join(format!("piped-{compress}"));
        fs::write(&piped, &o.stdout).unwrap();
        let ls = ls_digests(&s(&piped));
        let f = demo_facts();
        assert_eq!(
            ls,
            vec![
                (Some("1.0".into()), None, f.index.clone()),
                (Some("legacy".into()), None, f.legacy.clone()),
            ],
            "{compress}"
        );
        verify_deep_clean(&s(&piped));
    }
    // A docker-archive to stdout, likewise.
    let o = ocikit([
        "export",
        &demo_at("legacy"),
        "docker-archive:-:demo/app:1.0",
        "--compress",
        "gzip",
    ]);
    assert_eq!(code(&o), 0, "docker-archive to stdout: {}", stderr(&o));
    let file = t.path().join("d.tar.gz");
    ocikit_ok([
        "export",
        &demo_at("legacy"),
        &format!("docker-archive:{}:demo/app:1.0", s(&file)),
    ]);
    assert_eq!(fs::read(&file).unwrap(), o.stdout);
    let piped = t.path().join("piped-docker");
    fs::write(&piped, &o.stdout).unwrap();
    let f = demo_facts();
    assert_eq!(
        ls_digests(&s(&piped)),
        vec![(
            Some("1.0".into()),
            Some("docker.io/demo/app:1.0".into()),
            f.legacy
        )]
    );
}
