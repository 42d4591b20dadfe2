//! `ocikit index create|add|rm`: multi-platform indexes built from
//! single-platform images, edited in place of their tag, refused when they
//! would hold two entries of one platform or none, and read by skopeo and
//! containerd.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// A source layout: `amd` (linux/amd64), `arm` (linux/arm64/v8), `amd2`
/// (another linux/amd64 image) and `win` (windows/amd64 with os.version and
/// os.features). Its index.json entries carry no platform, so whatever an
/// index gets must come from the configs.
struct Src {
    _t: tempfile::TempDir,
    root: PathBuf,
    amd: String,
    arm: String,
    amd2: String,
    win: String,
}

fn src() -> Src {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("src");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let la = put_layer(&root, OCI_GZIP, &tar(&[file("amd.txt", "amd\n")]));
    let lr = put_layer(&root, OCI_GZIP, &tar(&[file("arm.txt", "arm\n")]));
    let l2 = put_layer(&root, OCI_GZIP, &tar(&[file("amd2.txt", "amd2\n")]));
    let amd = put_image(&root, "amd64", None, std::slice::from_ref(&la), false);
    let arm = put_image(&root, "arm64", Some("v8"), &[lr], false);
    let amd2 = put_image(&root, "amd64", None, &[l2], false);
    // A Windows image: os.version and os.features come from its config.
    let cfg = json!({
        "architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1",
        "os.features": ["win32k"],
        "rootfs": {"type": "layers", "diff_ids": [la.1]}
    });
    let cfg = put_blob(&root, OCI_CONFIG, &to_bytes(&cfg));
    let win = put_blob(
        &root,
        OCI_MANIFEST,
        &to_bytes(
            &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [la.0]}),
        ),
    );
    let tagged = |d: &Value, tag: &str| {
        let mut d = d.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        d
    };
    write_layout_files(
        &root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            tagged(&amd, "amd"), tagged(&arm, "arm"), tagged(&amd2, "amd2"), tagged(&win, "win")
        ]}),
    );
    let d = |v: &Value| v["digest"].as_str().unwrap().to_string();
    Src {
        amd: d(&amd),
        arm: d(&arm),
        amd2: d(&amd2),
        win: d(&win),
        root,
        _t: t,
    }
}

impl Src {
    fn at(&self, tag: &str) -> String {
        format!("{}:{tag}", self.root.display())
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn ok(args: &[&str]) -> std::process::Output {
    let o = ocikit(args);
    assert_eq!(code(&o), 0, "ocikit {args:?}: {}", stderr(&o));
    o
}

fn json_out(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_slice(&ok(&a).stdout).unwrap()
}

/// The index.json entries of a layout.
fn entries(root: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    v["manifests"].as_array().unwrap().clone()
}

/// The digest `tag` names in index.json.
fn tagged(root: &Path, tag: &str) -> String {
    let found: Vec<Value> = entries(root)
        .into_iter()
        .filter(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .collect();
    assert_eq!(found.len(), 1, "{tag} in {found:?}");
    found[0]["digest"].as_str().unwrap().to_string()
}

/// A stored blob as JSON.
fn doc(root: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&fs::read(root.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

fn manifests(root: &Path, index: &str) -> Vec<(String, Value)> {
    doc(root, index)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["digest"].as_str().unwrap().to_string(),
                m["platform"].clone(),
            )
        })
        .collect()
}

/// `verify --deep` finds no error; the only warnings allowed are old
/// indexes left for gc (unreferenced blobs).
fn verify_deep_clean(root: &Path) {
    let o = ocikit(["verify", "--deep", &s(root)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" 0 errors, "), "{}", stdout(&o));
    for line in stdout(&o).lines().filter(|l| l.starts_with("warning:")) {
        assert!(line.contains("unreferenced"), "{line}");
    }
}

#[test]
fn create_takes_platforms_from_the_configs_in_order() {
    let src = src();
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("L");
    let target = format!("{}:multi", s(&l));
    let r = json_out(&[
        "index",
        "create",
        &target,
        &src.at("amd"),
        &src.at("arm"),
        &src.at("win"),
    ]);
    let index = tagged(&l, "multi");
    assert_eq!(r["index"]["digest"], index.as_str(), "{r:#}");
    assert_eq!(
        r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["platform"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64/v8", "windows/amd64"]
    );
    assert_eq!(r["entries"][1]["source"], src.at("arm").as_str());
    assert_eq!(entries(&l).len(), 1, "only the index is tagged");
    assert_eq!(
        manifests(&l, &index),
        [
            (
                src.amd.clone(),
                json!({"architecture": "amd64", "os": "linux"})
            ),
            (
                src.arm.clone(),
                json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
            ),
            (
                src.win.clone(),
                json!({"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1", "os.features": ["win32k"]})
            ),
        ]
    );
    let d = doc(&l, &index);
    assert_eq!(d["mediaType"], OCI_INDEX);
    assert_eq!(d["schemaVersion"], 2);
    assert!(d.get("annotations").is_none(), "{d}");
    verify_deep_clean(&l);
    let v = stdout(&ok(&["verify", "--deep", &s(&l)]));
    assert!(v.contains("0 errors, 0 warnings"), "{v}");

    let ls = stdout(&ok(&["ls", &s(&l)]));
    assert!(
        ls.contains("linux/amd64,linux/arm64/v8,windows/amd64"),
        "{ls}"
    );
    let i = json_out(&["inspect", "--platform", "linux/arm64", &target]);
    assert_eq!(i["manifest"]["digest"], src.arm.as_str(), "{i:#}");
    assert_eq!(i["indexes"][0]["digest"], index.as_str());

    // Same inputs, same digest: again in the same layout, and in another one.
    let again = json_out(&[
        "index",
        "create",
        &target,
        &src.at("amd"),
        &src.at("arm"),
        &src.at("win"),
    ]);
    assert_eq!(again["index"]["digest"], index.as_str());
    assert_eq!(entries(&l).len(), 1);
    let other = t.path().join("other");
    ok(&[
        "index",
        "create",
        &format!("{}:x", s(&other)),
        &src.at("amd"),
        &src.at("arm"),
        &src.at("win"),
    ]);
    assert_eq!(tagged(&other, "x"), index);
    // Another order is another index.
    let swapped = json_out(&[
        "index",
        "create",
        &format!("{}:y", s(&other)),
        &src.at("arm"),
        &src.at("amd"),
    ]);
    assert_ne!(swapped["index"]["digest"], index.as_str());
    assert_eq!(
        manifests(&other, swapped["index"]["digest"].as_str().unwrap())
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>(),
        [src.arm.clone(), src.amd.clone()]
    );

    // Annotations: sorted, deterministic.
    let a = json_out(&[
        "index",
        "create",
        &format!("{}:ann", s(&l)),
        &src.at("amd"),
        "--annotation",
        "org.example.b=2",
        "--annotation",
        "org.example.a=1",
    ]);
    let text = fs::read_to_string(
        l.join("blobs/sha256").join(
            a["index"]["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap(),
        ),
    )
    .unwrap();
    assert!(
        text.ends_with(r#""annotations":{"org.example.a":"1","org.example.b":"2"}}"#),
        "{text}"
    );
}

#[test]
fn a_second_entry_of_one_platform_is_refused_unless_forced() {
    let src = src();
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("L");
    ok(&[
        "index",
        "create",
        &format!("{}:multi", s(&l)),
        &src.at("amd"),
        &src.at("arm"),
    ]);
    let before = snapshot(&l);

    let o = ocikit([
        "index",
        "create",
        &format!("{}:dup", s(&l)),
        &src.at("amd"),
        &src.at("arm"),
        &src.at("amd2"),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&src.at("amd")) && e.contains(&src.at("amd2")) && e.contains("linux/amd64"),
        "{e}"
    );
    assert_eq!(snapshot(&l), before, "a refused create changes nothing");

    // index add: against the index's own entry.
    let o = ocikit(["index", "add", &format!("{}:multi", s(&l)), &src.at("amd2")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("linux/amd64"), "{}", stderr(&o));
    assert_eq!(snapshot(&l), before, "a refused add changes nothing");

    // The demo's arm64 image against ours (linux/arm64/v8): one platform.
    let o = ocikit([
        "index",
        "add",
        &format!("{}:multi", s(&l)),
        &format!("{}:1.0", s(&demo())),
        "--platform",
        "linux/arm64",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(snapshot(&l), before);

    // --force keeps both.
    let r = json_out(&[
        "index",
        "create",
        &format!("{}:dup", s(&l)),
        &src.at("amd"),
        &src.at("amd2"),
        "--force",
    ]);
    assert_eq!(
        manifests(&l, r["index"]["digest"].as_str().unwrap())
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>(),
        [src.amd.clone(), src.amd2.clone()]
    );
    let r = json_out(&[
        "index",
        "add",
        &format!("{}:multi", s(&l)),
        &src.at("amd2"),
        "--force",
    ]);
    assert_eq!(r["entries"].as_array().unwrap().len(), 3);
    verify_deep_clean(&l);
}

#[test]
fn add_and_rm_edit_the_tagged_index_in_place() {
    let src = src();
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("L");
    let target = format!("{}:multi", s(&l));
    ok(&[
        "index",
        "create",
        &target,
        &src.at("amd"),
        "--annotation",
        "org.example.keep=yes",
    ]);
    // An unrelated tag, to see index.json entries keep their places.
    ok(&["copy", &src.at("arm"), &format!("{}:unrelated", s(&l))]);
    let first = tagged(&l, "multi");

    let r = json_out(&[
        "index",
        "add",
        &target,
        &src.at("arm"),
        "--annotation",
        "org.example.added=1",
    ]);
    let second = tagged(&l, "multi");
    assert_ne!(second, first);
    assert_eq!(r["index"]["digest"], second.as_str());
    assert_eq!(r["previous"], first.as_str());
    assert_eq!(
        manifests(&l, &second),
        [
            (
                src.amd.clone(),
                json!({"architecture": "amd64", "os": "linux"})
            ),
            (
                src.arm.clone(),
                json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
            ),
        ]
    );
    // The rewriter kept the fields in their order, annotations merged.
    let text = fs::read_to_string(l.join("blobs/sha256").join(&second[7..])).unwrap();
    assert!(
        text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"#),
        "{text}"
    );
    assert_eq!(
        doc(&l, &second)["annotations"],
        json!({"org.example.keep": "yes", "org.example.added": "1"})
    );
    // The tag's entry was pointed at the new index in place: no untagged
    // leftover, the other entry where it was; the old index is a blob until gc.
    let e = entries(&l);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0]["digest"], second.as_str());
    assert_eq!(
        e[0]["annotations"]["org.opencontainers.image.ref.name"],
        "multi"
    );
    assert_eq!(
        e[1]["annotations"]["org.opencontainers.image.ref.name"],
        "unrelated"
    );
    assert!(l.join("blobs/sha256").join(&first[7..]).is_file());
    verify_deep_clean(&l);
    let gc = json_out(&["gc", &s(&l)]);
    assert!(
        gc["remove"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["digest"] == first.as_str()),
        "{gc:#}"
    );
    assert!(!l.join("blobs/sha256").join(&first[7..]).exists());

    // rm by platform.
    let r = json_out(&["index", "rm", &target, "--platform", "linux/arm64"]);
    assert_eq!(r["removed"][0]["digest"], src.arm.as_str(), "{r:#}");
    let third = tagged(&l, "multi");
    assert_eq!(
        manifests(&l, &third)
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>(),
        [src.amd.as_str()]
    );
    // Same content as the first index: same bytes back.
    assert_eq!(
        doc(&l, &third)["annotations"],
        json!({"org.example.keep": "yes", "org.example.added": "1"})
    );

    // rm by digest.
    ok(&["index", "add", &target, &src.at("arm")]);
    let r = json_out(&["index", "rm", &target, "--digest", &src.amd]);
    assert_eq!(r["removed"][0]["digest"], src.amd.as_str());
    let fourth = tagged(&l, "multi");
    assert_eq!(
        manifests(&l, &fourth)
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>(),
        [src.arm.as_str()]
    );
    verify_deep_clean(&l);

    // Refused, changing nothing: the last entry, something absent, a tag
    // that names a manifest.
    let before = snapshot(&l);
    for (args, says) in [
        (vec!["--platform", "linux/arm64"], "no entries"),
        (vec!["--digest", src.amd.as_str()], "no entry"),
        (vec!["--platform", "linux/s390x"], "no entry"),
    ] {
        let mut a = vec!["index", "rm", target.as_str()];
        a.extend(args.iter().copied());
        let o = ocikit(&a);
        assert_eq!(code(&o), 2, "{a:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{a:?}: {}", stderr(&o));
        assert_eq!(snapshot(&l), before, "{a:?}");
    }
    let o = ocikit([
        "index",
        "rm",
        &format!("{}:unrelated", s(&l)),
        "--digest",
        &src.arm,
    ]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not an image index"), "{}", stderr(&o));
    assert_eq!(snapshot(&l), before);
}

#[test]
fn add_takes_one_platform_of_a_multi_platform_source() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("L");
    let target = format!("{}:multi", s(&l));
    let demo_at = |r: &str| format!("{}:{r}", s(&demo()));
    ok(&["index", "create", &target, &demo_at("legacy")]);
    let legacy = tagged(&demo(), "legacy");
    let demo_index = tagged(&demo(), "1.0");
    let arm = doc(&demo(), &demo_index)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // Without --platform the whole index comes, and its amd64 clashes.
    let before = snapshot(&l);
    let o = ocikit(["index", "add", &target, &demo_at("1.0")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(snapshot(&l), before);
    // A platform the source lacks.
    let o = ocikit([
        "index",
        "add",
        &target,
        &demo_at("1.0"),
        "--platform",
        "linux/s390x",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("linux/s390x"), "{}", stderr(&o));
    assert_eq!(snapshot(&l), before);

    let r = json_out(&[
        "index",
        "add",
        &target,
        &demo_at("1.0"),
        "--platform",
        "linux/arm64",
    ]);
    assert_eq!(r["entries"][1]["source"], demo_at("1.0").as_str());
    let index = tagged(&l, "multi");
    let m = manifests(&l, &index);
    assert_eq!(
        m.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
        [legacy, arm.clone()]
    );
    assert_eq!(m[0].1, json!({"architecture": "amd64", "os": "linux"}));
    assert_eq!(m[1].1["architecture"], "arm64");
    verify_deep_clean(&l);
    let i = json_out(&["inspect", "--platform", "linux/arm64", &target]);
    assert_eq!(i["manifest"]["digest"], arm.as_str());
}

// ---------------------------------------------------------------- interop

fn two_platform_layout(src: &Src, t: &Path) -> (PathBuf, String) {
    let l = t.join("L");
    ok(&[
        "index",
        "create",
        &format!("{}:multi", s(&l)),
        &src.at("amd"),
        &src.at("arm"),
    ]);
    let index = tagged(&l, "multi");
    (l, index)
}

fn run_ok(prog: &str, args: &[&str]) -> std::process::Output {
    let o = std::process::Command::new(prog)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn skopeo_reads_every_platform_of_a_created_index() {
    if !tools(
        "skopeo_reads_every_platform_of_a_created_index",
        &["skopeo"],
    ) {
        return;
    }
    let src = src();
    let t = tempfile::tempdir().unwrap();
    let (l, index) = two_platform_layout(&src, t.path());
    let raw = run_ok(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:multi", s(&l))],
    )
    .stdout;
    let stored = fs::read(l.join("blobs/sha256").join(&index[7..])).unwrap();
    assert_eq!(raw, stored, "skopeo sees the index as written");

    let policy = t.path().join("policy.json");
    fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let other = t.path().join("other");
    run_ok(
        "skopeo",
        &[
            "--policy",
            &s(&policy),
            "copy",
            "--all",
            "--preserve-digests",
            &format!("oci:{}:multi", s(&l)),
            &format!("oci:{}:multi", s(&other)),
        ],
    );
    let copied = tagged(&other, "multi");
    assert_eq!(copied, index);
    assert_eq!(
        manifests(&other, &copied),
        manifests(&l, &index),
        "every platform arrived"
    );
    // Each platform resolves in skopeo too.
    for (arch, want) in [("amd64", &src.amd), ("arm64", &src.arm)] {
        let v: Value = serde_json::from_slice(
            &run_ok(
                "skopeo",
                &[
                    "--override-arch",
                    arch,
                    "inspect",
                    &format!("oci:{}:multi", s(&other)),
                ],
            )
            .stdout,
        )
        .unwrap();
        // skopeo 1.9 reports the index's digest; the layers tell the image.
        assert_eq!(v["Architecture"], arch, "{v:#}");
        let layers: Vec<Value> = doc(&other, want)["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].clone())
            .collect();
        assert_eq!(v["Layers"].as_array().unwrap(), &layers, "{v:#}");
    }
    verify_deep_clean(&other);
}

#[test]
fn containerd_sees_the_platforms_of_a_created_index() {
    let Some(c) = clients::containerd("index-edit") else {
        return;
    };
    let src = src();
    let t = tempfile::tempdir().unwrap();
    let (l, index) = two_platform_layout(&src, t.path());
    let a = t.path().join("multi.tar");
    ok(&[
        "export",
        &format!("{}:multi", s(&l)),
        &format!("oci-archive:{}:demo/multi:1.0", s(&a)),
    ]);
    let o = c.import(&a, &["--all-platforms"]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
    let images = c.images();
    assert_eq!(
        images.get("docker.io/demo/multi:1.0").map(String::as_str),
        Some(index.as_str()),
        "{images:?}"
    );
    let ls = String::from_utf8_lossy(&c.ctr_ok(["images", "ls"]).stdout).into_owned();
    assert!(
        ls.contains("linux/amd64") && ls.contains("linux/arm64/v8"),
        "{ls}"
    );
    assert_eq!(
        c.image(&index, "amd64").manifest.as_deref(),
        Some(src.amd.as_str())
    );
    assert_eq!(
        c.image(&index, "arm64").manifest.as_deref(),
        Some(src.arm.as_str())
    );
}

#[test]
fn sources_may_be_archives_and_a_damaged_index_json_is_refused_first() {
    let src = src();
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("arm.tar");
    ok(&["export", &src.at("arm"), &s(&a)]);
    let l = t.path().join("L");
    let target = format!("{}:multi", s(&l));
    ok(&["index", "create", &target, &src.at("amd")]);
    let r = json_out(&["index", "add", &target, &format!("oci-archive:{}", s(&a))]);
    assert_eq!(r["entries"][1]["digest"], src.arm.as_str(), "{r:#}");
    assert_eq!(r["entries"][1]["platform"], "linux/arm64/v8");
    verify_deep_clean(&l);

    // An index.json verify refuses (a negative size) is refused before
    // anything is read or written.
    let mut index: Value =
        serde_json::from_slice(&fs::read(l.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(json!({"mediaType": OCI_MANIFEST, "digest": src.amd2, "size": -1}));
    fs::write(l.join("index.json"), to_bytes(&index)).unwrap();
    let before = snapshot(&l);
    for args in [
        vec!["index", "create", "X", &src.at("amd2")],
        vec!["index", "add", &target, &src.at("amd2")],
        vec!["index", "rm", &target, "--digest", &src.amd],
    ] {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if *a == "X" {
                    format!("{}:other", s(&l))
                } else {
                    a.to_string()
                }
            })
            .collect();
        let o = ocikit(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("index.json"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert_eq!(snapshot(&l), before, "{args:?}");
    }
}
