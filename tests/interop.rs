//! Interoperability with umoci and skopeo: ocikit reads layouts they write, and
//! they read layouts `ocikit tag`/`untag` edited. Every test skips (with a
//! message) when the tool it needs is not installed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// `umoci init`, `umoci new --image L:base`, `umoci insert` of one file as
/// `/hello.txt`. Returns the layout path.
fn umoci_layout(dir: &Path) -> PathBuf {
    let l = dir.join("umoci-layout");
    let src = dir.join("hello-src.txt");
    fs::write(&src, "hello from umoci\n").unwrap();
    run_ok("umoci", &["init", "--layout", &s(&l)]);
    run_ok("umoci", &["new", "--image", &format!("{}:base", s(&l))]);
    let image = format!("{}:base", s(&l));
    let mut args = vec!["insert"];
    if !is_root() {
        args.push("--rootless");
    }
    args.extend(["--image", &image, src.to_str().unwrap(), "/hello.txt"]);
    run_ok("umoci", &args);
    l
}

/// `ocikit cat LOC WHAT [--platform P]` stdout, asserting exit 0.
fn cat(loc: &str, what: &str, platform: Option<&str>) -> Vec<u8> {
    let mut args = vec!["cat", loc, what];
    if let Some(p) = platform {
        args.extend(["--platform", p]);
    }
    ocikit_ok(&args).stdout
}

/// Checks that `ocikit cat LOC manifest|config` print exactly the blobs named
/// by `manifest_digest` and its config descriptor. Returns the parsed manifest.
fn assert_cat_matches(
    root: &Path,
    loc: &str,
    platform: Option<&str>,
    manifest_digest: &str,
) -> Value {
    let stored = blob_bytes(root, manifest_digest);
    assert_eq!(digest_of(&stored), manifest_digest, "blob file content");
    let printed = cat(loc, "manifest", platform);
    assert_eq!(
        printed, stored,
        "cat {loc} manifest is not the stored manifest blob"
    );
    let m: Value = serde_json::from_slice(&stored).unwrap();
    let cfg_digest = m["config"]["digest"].as_str().unwrap();
    let printed = cat(loc, "config", platform);
    assert_eq!(
        printed,
        blob_bytes(root, cfg_digest),
        "cat {loc} config is not the stored config blob"
    );
    assert_eq!(digest_of(&printed), cfg_digest);
    m
}

fn umoci_tags(l: &Path) -> Vec<String> {
    let o = run_ok("umoci", &["ls", "--layout", &s(l)]);
    let mut v: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Criterion 1: a layout umoci made is listed, verified, cat'ed and inspected.
#[test]
fn umoci_layout_is_read_exactly() {
    if !tools("umoci_layout_is_read_exactly", &["umoci"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = umoci_layout(t.path());
    let loc = format!("{}:base", s(&l));

    let o = ocikit_ok(["ls", &s(&l)]);
    assert!(
        stdout(&o)
            .lines()
            .skip(1)
            .any(|r| r.split_whitespace().next() == Some("base")),
        "ls does not list base:\n{}",
        stdout(&o)
    );
    let o = ocikit_ok(["ls", &s(&l), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let tags: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["tag"].as_str())
        .collect();
    assert_eq!(tags, ["base"]);

    // umoci leaves the pre-insert manifest and config behind: warnings, not errors.
    let o = ocikit(["verify", &s(&l)]);
    assert_eq!(code(&o), 0, "verify: {}{}", stdout(&o), stderr(&o));

    let entry = index_entry(&l, "base");
    let mdigest = entry["digest"].as_str().unwrap();
    let m = assert_cat_matches(&l, &loc, None, mdigest);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "umoci insert adds exactly one layer: {m}");

    // The inserted layer is served byte-exact by `ocikit blob`.
    let ldigest = layers[0]["digest"].as_str().unwrap();
    let o = ocikit_ok(["blob", &s(&l), ldigest]);
    assert_eq!(o.stdout, blob_bytes(&l, ldigest));

    let o = ocikit_ok(["inspect", &loc, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("inspect --json is JSON");
    assert_eq!(v["manifest"]["digest"], mdigest);
    assert_eq!(v["config"]["digest"], m["config"]["digest"]);
    assert_eq!(v["layers"][0]["digest"], ldigest);
    assert_eq!(v["layers"].as_array().unwrap().len(), 1);
}

/// A `dir:` copy of the demo's Docker schema2 image, for skopeo versions whose
/// `oci:` transport ignores Docker media types in index.json.
fn legacy_as_dir(demo: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    let entry = index_entry(demo, "legacy");
    let mbytes = blob_bytes(demo, entry["digest"].as_str().unwrap());
    let m: Value = serde_json::from_slice(&mbytes).unwrap();
    fs::write(dst.join("manifest.json"), &mbytes).unwrap();
    let mut descs = vec![m["config"].clone()];
    descs.extend(m["layers"].as_array().unwrap().iter().cloned());
    for d in descs {
        let digest = d["digest"].as_str().unwrap();
        fs::write(dst.join(&digest[7..]), blob_bytes(demo, digest)).unwrap();
    }
    fs::write(dst.join("version"), "Directory Transport Version: 1.1\n").unwrap();
}

/// Whether this skopeo can read the demo's Docker-typed `legacy` entry from an
/// OCI layout (1.9.x cannot: "no descriptor found for reference").
fn skopeo_reads_docker_entries(demo: &Path, scratch: &Path) -> bool {
    let o = run(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:legacy", s(demo)),
            &format!("oci:{}:probe", s(scratch)),
        ],
    );
    if o.status.success() {
        return true;
    }
    assert!(
        stderr(&o).contains("no descriptor found for reference"),
        "skopeo failed on the unmodified demo for an unexpected reason: {}",
        stderr(&o)
    );
    eprintln!(
        "note: this skopeo does not read Docker-typed index.json entries from oci: layouts, even unedited ones ({})",
        stderr(&o).trim()
    );
    false
}

/// Criterion 2: layouts skopeo wrote (a converted Docker image, and a whole
/// multi-platform index) resolve, `cat` byte-exact and verify clean.
#[test]
fn skopeo_layouts_are_read_exactly() {
    if !tools("skopeo_layouts_are_read_exactly", &["skopeo"]) {
        return;
    }
    let (t, demo) = demo_copy();

    // A single image, Docker media types converted by skopeo.
    let l2 = t.path().join("l2");
    if skopeo_reads_docker_entries(&demo, &t.path().join("probe")) {
        run_ok(
            "skopeo",
            &[
                "copy",
                &format!("oci:{}:legacy", s(&demo)),
                &format!("oci:{}:copied", s(&l2)),
            ],
        );
    } else {
        eprintln!("note: copying the legacy image from a dir: copy of it instead");
        let src = t.path().join("legacy-dir");
        legacy_as_dir(&demo, &src);
        run_ok(
            "skopeo",
            &[
                "copy",
                &format!("dir:{}", s(&src)),
                &format!("oci:{}:copied", s(&l2)),
            ],
        );
    }
    let loc2 = format!("{}:copied", s(&l2));
    let entry = index_entry(&l2, "copied");
    let m = assert_cat_matches(&l2, &loc2, None, entry["digest"].as_str().unwrap());
    assert_eq!(
        m["layers"].as_array().unwrap().len(),
        2,
        "the legacy image has two layers"
    );
    // The layers are the demo's (same compressed bytes whatever the media type).
    let legacy: Value = serde_json::from_slice(&blob_bytes(
        &demo,
        index_entry(&demo, "legacy")["digest"].as_str().unwrap(),
    ))
    .unwrap();
    for (a, b) in m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(legacy["layers"].as_array().unwrap())
    {
        assert_eq!(a["digest"], b["digest"]);
    }
    for deep in [false, true] {
        let mut args = vec!["verify".to_string(), s(&l2)];
        if deep {
            args.push("--deep".into());
        }
        let o = ocikit(&args);
        assert_eq!(code(&o), 0, "{args:?}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("0 errors"), "{}", stdout(&o));
    }

    // The whole index, kept as it is.
    let l3 = t.path().join("l3");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--all",
            &format!("oci:{}:1.0", s(&demo)),
            &format!("oci:{}:multi", s(&l3)),
        ],
    );
    let loc3 = format!("{}:multi", s(&l3));
    let entry = index_entry(&l3, "multi");
    let idigest = entry["digest"].as_str().unwrap();
    assert_eq!(entry["mediaType"], OCI_INDEX);
    assert_eq!(
        idigest,
        index_entry(&demo, "1.0")["digest"].as_str().unwrap(),
        "skopeo copy --all changed the index"
    );
    let ibytes = blob_bytes(&l3, idigest);
    assert_eq!(cat(&loc3, "index", None), ibytes, "cat index");
    let idx: Value = serde_json::from_slice(&ibytes).unwrap();
    let by_arch = |arch: &str| -> String {
        idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} entry in {idx}"))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (platform, arch, shown) in [
        ("linux/arm64", "arm64", "linux/arm64/v8"),
        ("linux/arm64/v8", "arm64", "linux/arm64/v8"),
        ("linux/amd64", "amd64", "linux/amd64"),
    ] {
        let want = by_arch(arch);
        assert_cat_matches(&l3, &loc3, Some(platform), &want);
        let o = ocikit_ok(["inspect", &loc3, "--platform", platform, "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["manifest"]["digest"],
            want.as_str(),
            "--platform {platform}"
        );
        assert_eq!(v["platform"], shown);
        assert_eq!(v["indexes"][0]["digest"], idigest);
    }
    // A platform the index does not have is an error, not a guess.
    let o = ocikit(["cat", &loc3, "manifest", "--platform", "linux/s390x"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("ocikit: error:"), "{}", stderr(&o));
    let o = ocikit(["verify", &s(&l3), "--deep"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

/// Criterion 3 (umoci layout): what `ocikit tag`/`untag` write, umoci and skopeo read.
#[test]
fn umoci_and_skopeo_read_ocikit_tags() {
    if !tools("umoci_and_skopeo_read_ocikit_tags", &["umoci"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = umoci_layout(t.path());
    let base_digest = index_entry(&l, "base")["digest"]
        .as_str()
        .unwrap()
        .to_string();

    let o = ocikit_ok(["tag", &format!("{}:base", s(&l)), "extra"]);
    assert!(stderr(&o).contains(&base_digest), "{}", stderr(&o));
    assert_eq!(index_tags(&l), ["base", "extra"]);
    assert_eq!(index_entry(&l, "extra")["digest"], base_digest.as_str());

    assert_eq!(umoci_tags(&l), ["base", "extra"]);
    let o = run_ok(
        "umoci",
        &["stat", "--image", &format!("{}:extra", s(&l)), "--json"],
    );
    let st: Value = serde_json::from_slice(&o.stdout).expect("umoci stat --json");
    assert_eq!(st["history"].as_array().map(Vec::len), Some(1), "{st}");
    if have("skopeo") {
        let o = run_ok("skopeo", &["inspect", &format!("oci:{}:extra", s(&l))]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["Digest"], base_digest.as_str());
        let raw = run_ok(
            "skopeo",
            &["inspect", "--raw", &format!("oci:{}:extra", s(&l))],
        );
        assert_eq!(
            raw.stdout,
            cat(&format!("{}:extra", s(&l)), "manifest", None)
        );
    } else {
        eprintln!("skipping the skopeo half of umoci_and_skopeo_read_ocikit_tags: skopeo is not installed");
    }
    // ocikit still verifies what it wrote.
    assert_eq!(code(&ocikit(["verify", &s(&l)])), 0);

    ocikit_ok(["untag", &format!("{}:extra", s(&l))]);
    assert_eq!(umoci_tags(&l), ["base"]);
    assert_eq!(index_tags(&l), ["base"]);
    // The duplicate-digest entry is dropped, not left untagged.
    assert_eq!(index_json(&l)["manifests"].as_array().unwrap().len(), 1);
    let o = run("umoci", &["stat", "--image", &format!("{}:extra", s(&l))]);
    assert!(!o.status.success(), "umoci still finds the removed tag");
    run_ok("umoci", &["stat", "--image", &format!("{}:base", s(&l))]);
    if have("skopeo") {
        let o = run("skopeo", &["inspect", &format!("oci:{}:extra", s(&l))]);
        assert!(!o.status.success(), "skopeo still finds the removed tag");
    }
}

/// Criterion 3 (demo copy): skopeo's raw index equals `ocikit cat … index`,
/// before and after ocikit edits index.json.
#[test]
fn skopeo_raw_index_matches_ocikit_cat() {
    if !tools("skopeo_raw_index_matches_ocikit_cat", &["skopeo"]) {
        return;
    }
    let (_t, demo) = demo_copy();
    let raw = |r: &str| {
        run_ok(
            "skopeo",
            &["inspect", "--raw", &format!("oci:{}:{r}", s(&demo))],
        )
        .stdout
    };
    let want = blob_bytes(&demo, index_entry(&demo, "1.0")["digest"].as_str().unwrap());
    assert_eq!(raw("1.0"), want);
    assert_eq!(cat(&format!("{}:1.0", s(&demo)), "index", None), want);

    ocikit_ok(["tag", &format!("{}:1.0", s(&demo)), "stable"]);
    ocikit_ok(["untag", &format!("{}:legacy", s(&demo))]);
    assert_eq!(raw("1.0"), want);
    assert_eq!(raw("stable"), want);
    assert_eq!(cat(&format!("{}:stable", s(&demo)), "index", None), want);
    // `cat` without a reference is index.json itself, which skopeo just parsed.
    assert_eq!(
        cat(&s(&demo), "index", None),
        fs::read(demo.join("index.json")).unwrap()
    );
    let o = run(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:legacy", s(&demo))],
    );
    assert!(
        !o.status.success(),
        "skopeo still finds the removed tag legacy"
    );
}

/// Criterion 4: skopeo copies out of a layout whose index.json ocikit edited.
#[test]
fn skopeo_copies_from_ocikit_edited_layout() {
    if !tools("skopeo_copies_from_ocikit_edited_layout", &["skopeo"]) {
        return;
    }
    let (t, demo) = demo_copy();
    let docker_ok = skopeo_reads_docker_entries(&demo, &t.path().join("probe"));

    ocikit_ok(["tag", &format!("{}:legacy", s(&demo)), "again"]);
    ocikit_ok(["tag", &format!("{}:1.0", s(&demo)), "again2"]);
    assert_eq!(index_tags(&demo), ["1.0", "legacy", "again", "again2"]);

    let out = t.path().join("out");
    if docker_ok {
        for r in ["legacy", "again"] {
            run_ok(
                "skopeo",
                &[
                    "copy",
                    &format!("oci:{}:{r}", s(&demo)),
                    &format!("oci:{}:{r}", s(&out)),
                ],
            );
        }
        let o = ocikit(["verify", &s(&out), "--deep"]);
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    } else {
        eprintln!("skipping the skopeo copy of the Docker-typed tags (legacy, again): this skopeo cannot read them even before ocikit edits");
    }
    // The OCI-typed entries of the edited index.json: the untouched one and the new one.
    let want = index_entry(&demo, "1.0")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    for (r, dst) in [("1.0", "x"), ("again2", "y")] {
        run_ok(
            "skopeo",
            &[
                "copy",
                "--all",
                &format!("oci:{}:{r}", s(&demo)),
                &format!("oci:{}:{dst}", s(&out)),
            ],
        );
        assert_eq!(
            index_entry(&out, dst)["digest"],
            want.as_str(),
            "copy of {r}"
        );
        assert_eq!(
            cat(&format!("{}:{dst}", s(&out)), "index", None),
            blob_bytes(&demo, &want),
            "copy of {r}"
        );
    }
    let o = ocikit(["verify", &s(&out), "--deep"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}
