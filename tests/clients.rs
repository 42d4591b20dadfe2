//! The real-client matrix of issue 13 ("Tests with the real clients"): podman 4.3 and
//! buildah 1.28 (vfs), containerd 1.6 (`ctr`), Docker 20.10 and a CNCF distribution 2.8
//! registry reached with skopeo, each started privately (tests/common/clients.rs).
//!
//! One test per cell. Each cell asserts names, the manifest digest, the config digest
//! (= image ID for docker and podman) and the diff_ids, as the issue and design.md
//! ("Names and identity", "docker-archive" rules) define them. A cell whose client cannot
//! start prints `SKIPPING: …` and passes.
//!
//! Sources: a layout built here by hand (no ocikit involved), named as skopeo writes
//! names (`ref.name` exactly as typed, no containerd name):
//! - `demo/app:1.0`: the demo's two-platform index (gzip, gzip, zstd layers);
//! - `app:latest`: the demo's Docker schema2 image (gzip layers);
//! - `team/app:1`, `db:latest`: two small OCI images (gzip), linux/amd64;
//! - `l3`: `db:latest` again under a bare tag (a name that is no docker reference).
//!
//! Podman, buildah and skopeo images made by the clients themselves come from
//! `buildah from scratch` + `buildah copy` + `buildah commit`. containerd and Docker
//! cannot build offline: their images come in through ocikit's archives, then are
//! re-tagged, exported and saved by the client.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::clients::{self, assert_same_tree, ClientImage, Containers};
use common::*;
use serde_json::{json, Value};

/// The host platform ocikit and the clients default to (the demo has amd64 and arm64).
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "linux/arm64/v8",
        _ => "linux/amd64",
    }
}

/// The platform of the demo index that is not the host's.
fn other_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("amd64", "linux/amd64"),
        _ => ("arm64", "linux/arm64/v8"),
    }
}

// ---------------------------------------------------------------- the source layout

/// One image of a layout, read from its blobs (not through ocikit).
#[derive(Clone, Debug)]
struct Img {
    manifest: String,
    config: String,
    diff_ids: Vec<String>,
}

fn read_json(root: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob_bytes(root, digest)).unwrap()
}

/// The image of `root` whose descriptor is `digest`; an index resolves to `arch`.
fn img_at(root: &Path, digest: &str, arch: &str) -> Img {
    let doc = read_json(root, digest);
    let manifest = match doc["manifests"].as_array() {
        Some(list) => list
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} in {doc}"))["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        None => digest.to_string(),
    };
    let m = read_json(root, &manifest);
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    let c = read_json(root, &config);
    Img {
        manifest,
        config,
        diff_ids: clients::strings(&c["rootfs"]["diff_ids"]),
    }
}

/// The source layout (see the module comment).
struct Src {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Src {
    fn new() -> Src {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src");
        build_demo(&path);
        let demo = index_json(&path);
        let entry = |tag: &str| {
            demo["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
                .unwrap()
                .clone()
        };
        let base = tar(&[
            Entry::Dir("etc/", 0o755),
            file("etc/os-release", "NAME=\"ocikit client tests\"\n"),
            Entry::Symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        ]);
        let team_layer = tar(&[
            Entry::Dir("team/", 0o755),
            Entry::File("team/app.sh", 0o755, b"#!/bin/sh\necho team\n".to_vec()),
        ]);
        let db_layer = tar(&[Entry::Dir("db/", 0o700), file("db/data.txt", "rows\n")]);
        let l_base = put_layer(&path, OCI_GZIP, &base);
        let team = put_image(
            &path,
            "amd64",
            None,
            &[l_base.clone(), put_layer(&path, OCI_GZIP, &team_layer)],
            false,
        );
        let db = put_image(
            &path,
            "amd64",
            None,
            &[l_base, put_layer(&path, OCI_GZIP, &db_layer)],
            false,
        );
        let named = |mut e: Value, name: &str| {
            e["annotations"] = json!({ "org.opencontainers.image.ref.name": name });
            e
        };
        let mut team_e = team;
        team_e["platform"] = json!({"architecture": "amd64", "os": "linux"});
        let mut db_e = db;
        db_e["platform"] = json!({"architecture": "amd64", "os": "linux"});
        write_layout_files(
            &path,
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                named(entry("1.0"), "demo/app:1.0"),
                named(entry("legacy"), "app:latest"),
                named(team_e, "team/app:1"),
                named(db_e.clone(), "db:latest"),
                named(db_e, "l3"),
            ]}),
        );
        Src { _dir: dir, path }
    }

    /// `SRC:NAME` for ocikit.
    fn loc(&self, name: &str) -> String {
        format!("{}:{name}", s(&self.path))
    }

    /// The image tagged `name` (for the demo index: the `arch` one).
    fn img(&self, name: &str, arch: &str) -> Img {
        let e = index_entry(&self.path, name);
        img_at(&self.path, e["digest"].as_str().unwrap(), arch)
    }

    /// The digest `index.json` lists for `name`.
    fn digest(&self, name: &str) -> String {
        index_entry(&self.path, name)["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

// ---------------------------------------------------------------- ocikit helpers

/// Runs ocikit and says what ran (the command shows in the test's output).
fn oc(args: &[&str]) -> Output {
    eprintln!("$ ocikit {}", args.join(" "));
    ocikit(args)
}

fn oc_ok(args: &[&str]) -> Output {
    let o = oc(args);
    assert_eq!(
        code(&o),
        0,
        "ocikit {} failed (exit {}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        code(&o),
        stdout(&o),
        stderr(&o)
    );
    o
}

/// (tag, containerd name, digest) of each image `ocikit ls --json LOC` lists, sorted.
fn ls(loc: &str) -> Vec<(Option<String>, Option<String>, String)> {
    let o = oc_ok(&["ls", "--json", loc]);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("ocikit ls --json {loc}: not JSON ({e})"));
    let mut out: Vec<_> = v["images"]
        .as_array()
        .unwrap_or_else(|| panic!("ocikit ls --json {loc}: {v}"))
        .iter()
        .map(|i| {
            (
                i["tag"].as_str().map(str::to_string),
                i["name"].as_str().map(str::to_string),
                i["digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// (ref.name, io.containerd.image.name, digest) of every `index.json` entry of a
/// layout, sorted.
fn entries(layout: &Path) -> Vec<(Option<String>, Option<String>, String)> {
    let mut out: Vec<_> = index_json(layout)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .map(str::to_string),
                e["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .map(str::to_string),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn entry(tag: &str, name: Option<&str>, digest: &str) -> (Option<String>, Option<String>, String) {
    (
        Some(tag.to_string()),
        name.map(str::to_string),
        digest.to_string(),
    )
}

/// Asserts `have` holds every entry of `want` (in any order).
fn assert_has(
    what: &str,
    have: &[(Option<String>, Option<String>, String)],
    want: &[(Option<String>, Option<String>, String)],
) {
    let missing: Vec<_> = want.iter().filter(|w| !have.contains(w)).collect();
    assert!(
        missing.is_empty(),
        "{what}: missing (ref.name/tag, containerd name, digest) {missing:?}\n  have {have:?}"
    );
}

/// `ocikit verify --deep LOC` finds nothing wrong.
fn verify_deep(loc: &str) {
    let o = oc(&["verify", "--deep", loc]);
    assert_eq!(
        code(&o),
        0,
        "ocikit verify --deep {loc}: exit {}\n{}{}",
        code(&o),
        stdout(&o),
        stderr(&o)
    );
}

/// The image `LOC` resolves to, as ocikit reads it: manifest digest, config digest
/// (of the exact bytes) and diff_ids.
fn ocikit_img(loc: &str, platform: Option<&str>) -> Img {
    let mut args = vec!["cat", loc, "manifest"];
    if let Some(p) = platform {
        args.extend(["--platform", p]);
    }
    let m = oc_ok(&args);
    args[2] = "config";
    let c = oc_ok(&args);
    let cv: Value = serde_json::from_slice(&c.stdout).unwrap();
    Img {
        manifest: digest_of(&m.stdout),
        config: digest_of(&c.stdout),
        diff_ids: clients::strings(&cv["rootfs"]["diff_ids"]),
    }
}

/// Asserts ocikit's view of `loc` matches the client's (config, diff_ids; manifest when
/// the client reports one).
fn assert_same_image(loc: &str, platform: Option<&str>, client: &ClientImage, who: &str) {
    let ours = ocikit_img(loc, platform);
    assert_eq!(
        ours.config, client.config,
        "{loc}: config digest (image ID) differs from {who}'s"
    );
    assert_eq!(
        ours.diff_ids, client.diff_ids,
        "{loc}: diff_ids differ from {who}'s"
    );
    if let Some(m) = &client.manifest {
        assert_eq!(
            &ours.manifest, m,
            "{loc}: manifest digest differs from {who}'s"
        );
    }
}

/// Asserts a client's image is `want` (config, diff_ids, and the manifest when the
/// client keeps one and `manifest` is true).
fn assert_client_has(who: &str, name: &str, got: &ClientImage, want: &Img, manifest: bool) {
    assert_eq!(
        got.config, want.config,
        "{who} {name}: image ID / config digest"
    );
    assert_eq!(got.diff_ids, want.diff_ids, "{who} {name}: diff_ids");
    if manifest {
        assert!(
            got.manifest.as_deref() == Some(want.manifest.as_str())
                || got.digests.contains(&want.manifest),
            "{who} {name}: manifest digest {} is not among those {who} records: {:?} {:?}",
            want.manifest,
            got.manifest,
            got.digests
        );
    }
}

/// `ocikit diff A B [--ignore IGNORE]` says identical (exit 0).
fn diff_identical(a: &str, b: &str, ignore: Option<&str>) {
    let mut args = vec!["diff", a, b];
    if let Some(i) = ignore {
        args.extend(["--ignore", i]);
    }
    let o = oc(&args);
    assert_eq!(
        code(&o),
        0,
        "ocikit {}: expected identical, exit {}:\n{}{}",
        args.join(" "),
        code(&o),
        stdout(&o),
        stderr(&o)
    );
}

/// `ocikit flatten LOC --output DIR`; returns DIR.
fn flatten(loc: &str, platform: Option<&str>, dir: &Path) -> PathBuf {
    let out = dir.join(format!("flat-{}", rand_suffix()));
    let o = s(&out);
    let mut args = vec!["flatten", loc, "--output", &o];
    if let Some(p) = platform {
        args.extend(["--platform", p]);
    }
    oc_ok(&args);
    out
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

// ---------------------------------------------------------------- archives, read directly

/// The members of an (uncompressed) tar file: name → bytes.
fn tar_members(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut a = tar::Archive::new(fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().display().to_string();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            out.insert(name.trim_start_matches("./").to_string(), b);
        }
    }
    out
}

/// The `index.json` of an archive (its OCI view).
fn archive_index(path: &Path) -> Value {
    let m = tar_members(path);
    serde_json::from_slice(
        m.get("index.json")
            .unwrap_or_else(|| panic!("{} has no index.json", path.display())),
    )
    .unwrap()
}

/// (ref.name, containerd name, digest) of an archive's `index.json` entries, sorted.
fn archive_entries(path: &Path) -> Vec<(Option<String>, Option<String>, String)> {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&archive_index(path)).unwrap(),
    )
    .unwrap();
    entries(dir.path())
}

/// RepoTags of each `manifest.json` entry, keyed by config digest.
fn archive_repo_tags(path: &Path) -> Vec<(String, Vec<String>)> {
    let m = tar_members(path);
    let v: Value = serde_json::from_slice(
        m.get("manifest.json")
            .unwrap_or_else(|| panic!("{} has no manifest.json", path.display())),
    )
    .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let cfg = e["Config"].as_str().unwrap();
            let hex = cfg
                .rsplit(['/', '.'])
                .find(|p| p.len() == 64)
                .unwrap_or(cfg);
            (format!("sha256:{hex}"), clients::strings(&e["RepoTags"]))
        })
        .collect()
}

/// Asserts the `manifest.json` entry of `config` carries exactly `tags` (in any order).
fn assert_repo_tags(path: &Path, config: &str, tags: &[&str]) {
    let all = archive_repo_tags(path);
    let mut got: Vec<String> = all
        .iter()
        .filter(|(c, _)| c == config)
        .flat_map(|(_, t)| t.clone())
        .collect();
    got.sort();
    let mut want: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(
        got,
        want,
        "{}: RepoTags of config {config} (all: {all:?})",
        path.display()
    );
}

// ---------------------------------------------------------------- podman helpers

/// Every name podman has → (image ID as `sha256:…`, manifest digest).
fn podman_names(c: &Containers) -> std::collections::BTreeMap<String, String> {
    let o = c.podman_ok(["images", "--format", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for i in v.as_array().unwrap() {
        for n in clients::strings(&i["Names"]) {
            out.insert(n, format!("sha256:{}", i["Id"].as_str().unwrap()));
        }
    }
    out
}

/// Asserts podman has `name` as the image `want`.
fn assert_podman_image(c: &Containers, name: &str, want: &Img, manifest: bool) {
    assert!(
        c.has_image(name),
        "podman has no image named {name}; it has {:?}",
        podman_names(c)
    );
    let got = c.image(name);
    assert_client_has("podman", name, &got, want, manifest);
}

fn podman_load(c: &Containers, archive: &Path) -> String {
    let o = c.podman_ok(["load".as_ref(), "-i".as_ref(), archive.as_os_str()]);
    stdout(&o)
}

fn containers() -> Option<Containers> {
    let c = Containers::start()?;
    eprintln!(
        "private podman/buildah store ready in {:.2} s at {}",
        c.start_seconds,
        c.root.display()
    );
    Some(c)
}

// ================================================================ ocikit → podman

#[test]
fn oci_archive_loads_into_podman() {
    let Some(c) = containers() else { return };
    let src = Src::new();
    let a = c.dir().join("demo.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        host_platform(),
        &format!("oci-archive:{}", s(&a)),
    ]);
    let want = src.img("demo/app:1.0", host_arch());
    // The archive names the platform manifest itself, with the name as the source
    // wrote it (a copy adds no name nobody typed).
    assert_has(
        "oci-archive index.json",
        &archive_entries(&a),
        &[entry("demo/app:1.0", None, &want.manifest)],
    );
    podman_load(&c, &a);
    // podman names a ref.name without a registry `localhost/…` (its short-name rule).
    assert_podman_image(&c, "localhost/demo/app:1.0", &want, true);
    // podman's unpacked tree equals ocikit's flatten.
    let theirs = c.unpacked("localhost/demo/app:1.0");
    let ours = flatten(&src.loc("demo/app:1.0"), Some(host_platform()), c.dir());
    assert_same_tree(&ours, &theirs, "demo/app:1.0 via podman load");
}

#[test]
fn oci_archive_of_several_images_copies_into_podman_storage_by_name() {
    // podman 4.3 `load` refuses an oci-archive holding several images ("more than one
    // image in oci, choose an image"); skopeo picks each by its name. (Not app:latest:
    // skopeo 1.9's oci transports only find index.json entries of OCI media types, and
    // that one is Docker schema2.)
    let Some(c) = containers() else { return };
    let src = Src::new();
    let a = c.dir().join("several.tar");
    oc_ok(&[
        "export",
        &src.loc("app:latest"),
        &src.loc("team/app:1"),
        &src.loc("db:latest"),
        &format!("oci-archive:{}", s(&a)),
    ]);
    for (name, full) in [
        ("team/app:1", "docker.io/team/app:1"),
        ("db:latest", "docker.io/library/db:latest"),
    ] {
        c.skopeo_ok([
            "copy".to_string(),
            format!("oci-archive:{}:{name}", s(&a)),
            c.storage_ref(full),
        ]);
        assert_podman_image(&c, full, &src.img(name, host_arch()), true);
    }
}

#[test]
fn oci_archive_uncompressed_layers_loads_into_podman() {
    let Some(c) = containers() else { return };
    let src = Src::new();
    let a = c.dir().join("demo-u-oci.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        host_platform(),
        "--uncompressed-layers",
        &format!("oci-archive:{}", s(&a)),
    ]);
    let mut want = src.img("demo/app:1.0", host_arch());
    // A new manifest (plain tar layers) over the same config, under the name as the
    // source wrote it.
    let e = archive_entries(&a);
    assert_eq!(e.len(), 1, "{}: {e:?}", a.display());
    assert_eq!(e[0].0.as_deref(), Some("demo/app:1.0"), "{e:?}");
    assert_ne!(
        e[0].2, want.manifest,
        "--uncompressed-layers: a new manifest"
    );
    want.manifest = e[0].2.clone();
    let m: Value =
        serde_json::from_slice(&tar_members(&a)[&format!("blobs/sha256/{}", &want.manifest[7..])])
            .unwrap();
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], OCI_TAR, "layer of {}: {l}", want.manifest);
    }
    podman_load(&c, &a);
    assert_podman_image(&c, "localhost/demo/app:1.0", &want, true);
    let theirs = c.unpacked("localhost/demo/app:1.0");
    let ours = flatten(&format!("oci-archive:{}", s(&a)), None, c.dir());
    assert_same_tree(
        &ours,
        &theirs,
        "demo/app:1.0 --uncompressed-layers via podman load",
    );
}

#[test]
fn docker_archive_loads_into_podman() {
    let Some(c) = containers() else { return };
    let src = Src::new();
    let a = c.dir().join("app.tar");
    oc_ok(&[
        "export",
        &src.loc("app:latest"),
        &format!("docker-archive:{}", s(&a)),
    ]);
    let want = src.img("app:latest", host_arch());
    assert_repo_tags(&a, &want.config, &["app:latest"]);
    assert_has(
        "docker-archive index.json",
        &archive_entries(&a),
        &[entry(
            "latest",
            Some("docker.io/library/app:latest"),
            &want.manifest,
        )],
    );
    podman_load(&c, &a);
    assert_podman_image(&c, "docker.io/library/app:latest", &want, true);
}

/// Exports `SRC:l3` (a bare tag: no docker name) to a docker-archive; asserts both
/// views leave it unnamed; returns the archive and the image.
fn unnamed_docker_archive(src: &Src, dir: &Path) -> (PathBuf, Img) {
    let a = dir.join("l3.tar");
    let o = oc_ok(&[
        "export",
        &src.loc("l3"),
        &format!("docker-archive:{}", s(&a)),
    ]);
    assert!(
        stderr(&o).contains("warning"),
        "ocikit export of an image with no docker name should warn: {}",
        stderr(&o)
    );
    let want = src.img("l3", host_arch());
    assert_repo_tags(&a, &want.config, &[]);
    let e = archive_entries(&a);
    assert_eq!(
        e,
        vec![(None, None, want.manifest.clone())],
        "{}: the OCI view must be unnamed too (issue 13 item 3)",
        a.display()
    );
    (a, want)
}

#[test]
fn docker_archive_of_an_unnamed_image_is_unnamed_in_podman() {
    let Some(c) = containers() else { return };
    let src = Src::new();
    let (a, want) = unnamed_docker_archive(&src, c.dir());
    podman_load(&c, &a);
    let id = &want.config[7..];
    assert!(
        c.has_image(id),
        "podman has no image {id}: {:?}",
        podman_names(&c)
    );
    let got = c.image(id);
    assert_client_has("podman", id, &got, &want, true);
    assert!(got.names.is_empty(), "podman named it: {:?}", got.names);
}

#[test]
fn docker_archive_uncompressed_layers_loads_into_podman() {
    let Some(c) = containers() else { return };
    let src = Src::new();
    let a = c.dir().join("demo-u.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        host_platform(),
        "--uncompressed-layers",
        &format!("docker-archive:{}", s(&a)),
    ]);
    let mut want = src.img("demo/app:1.0", host_arch());
    assert_repo_tags(&a, &want.config, &["demo/app:1.0"]);
    // The OCI view holds the new (uncompressed) manifest over the same config.
    let e = archive_entries(&a);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].0.as_deref(), e[0].1.as_deref()),
        (Some("1.0"), Some("docker.io/demo/app:1.0"))
    );
    assert_ne!(
        e[0].2, want.manifest,
        "--uncompressed-layers: a new manifest"
    );
    want.manifest = e[0].2.clone();
    podman_load(&c, &a);
    assert_podman_image(&c, "docker.io/demo/app:1.0", &want, true);
}

#[test]
fn docker_archive_several_names_sharing_a_tag_part_load_into_podman() {
    let Some(c) = containers() else { return };
    let src = Src::new();
    let a = c.dir().join("three.tar");
    oc_ok(&[
        "export",
        &src.loc("app:latest"),
        &src.loc("team/app:1"),
        &src.loc("db:latest"),
        &format!("docker-archive:{}", s(&a)),
    ]);
    for (name, full) in [
        ("app:latest", "docker.io/library/app:latest"),
        ("team/app:1", "docker.io/team/app:1"),
        ("db:latest", "docker.io/library/db:latest"),
    ] {
        let want = src.img(name, host_arch());
        assert_repo_tags(&a, &want.config, &[name]);
        // The OCI view keeps each source manifest under its full name.
        assert_has(
            "docker-archive index.json",
            &archive_entries(&a),
            &[entry(
                name.rsplit_once(':').unwrap().1,
                Some(full),
                &want.manifest,
            )],
        );
    }
    podman_load(&c, &a);
    // With several images podman 4.3 reads manifest.json (its OCI loader takes one
    // image only): it builds its own manifest (so no manifest digest to compare) and
    // names a RepoTag without a registry `localhost/…`, as it does for `docker save`
    // output.
    for (name, full) in [
        ("app:latest", "localhost/app:latest"),
        ("team/app:1", "localhost/team/app:1"),
        ("db:latest", "localhost/db:latest"),
    ] {
        assert_podman_image(&c, full, &src.img(name, host_arch()), false);
    }
}

#[test]
fn docker_archive_of_one_platform_loads_into_podman() {
    let Some(c) = containers() else { return };
    let src = Src::new();
    let (arch, platform) = other_arch();
    let a = c.dir().join("other.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        platform,
        &format!("docker-archive:{}", s(&a)),
    ]);
    let want = src.img("demo/app:1.0", arch);
    assert_repo_tags(&a, &want.config, &["demo/app:1.0"]);
    podman_load(&c, &a);
    assert_podman_image(&c, "docker.io/demo/app:1.0", &want, true);
    let v = c.inspect("docker.io/demo/app:1.0");
    assert_eq!(v["Architecture"], arch, "podman's image architecture");
}

#[test]
fn layout_pulls_into_podman_by_name_as_typed() {
    let Some(c) = containers() else { return };
    let src = Src::new();
    // podman names an image pulled from oci:PATH `localhost/PATH`, so PATH must be a
    // valid (lower-case) repository name.
    let lc = LowerCaseDir::new();
    let l = lc.0.join("layout");
    let target = format!("oci:{}:acc/app:1.0", s(&l));
    oc_ok(&["copy", &src.loc("demo/app:1.0"), &target]);
    // design.md: the name is stored in ref.name exactly as typed.
    assert_has(
        "index.json after copy",
        &entries(&l),
        &[entry(
            "acc/app:1.0",
            Some("docker.io/acc/app:1.0"),
            &src.digest("demo/app:1.0"),
        )],
    );
    c.skopeo_ok(["inspect", &target]);
    let o = c.podman_ok(["pull", &target]);
    let id = stdout(&o).trim().to_string();
    let want = src.img("demo/app:1.0", host_arch());
    assert_eq!(format!("sha256:{id}"), want.config, "podman pull {target}");
    let got = c.image(&id);
    assert_client_has("podman", &target, &got, &want, true);
}

/// A temporary directory whose path is all lower case (removed on drop).
struct LowerCaseDir(PathBuf);

impl LowerCaseDir {
    fn new() -> LowerCaseDir {
        let p = std::env::temp_dir().join(format!(
            "ocikit-lc-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        LowerCaseDir(p)
    }
}

impl Drop for LowerCaseDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn layout_copies_into_containers_storage_with_skopeo() {
    let Some(c) = containers() else { return };
    let src = Src::new();
    let l = c.dir().join("layout");
    let target = format!("oci:{}:acc/app:1.0", s(&l));
    oc_ok(&["copy", &src.loc("demo/app:1.0"), &target]);
    c.skopeo_ok(["copy".to_string(), target, c.storage_ref("acc/app:1.0")]);
    assert_podman_image(
        &c,
        "docker.io/acc/app:1.0",
        &src.img("demo/app:1.0", host_arch()),
        true,
    );
}

#[test]
fn layout_names_sharing_a_tag_part_resolve_in_skopeo() {
    // Issue 13 item 1 without a client: the second copy must not strip the first name.
    let Some(c) = containers() else { return };
    let src = Src::new();
    let l = c.dir().join("layout");
    oc_ok(&[
        "copy",
        &src.loc("team/app:1"),
        &format!("oci:{}:acc/app:latest", s(&l)),
    ]);
    oc_ok(&[
        "copy",
        &src.loc("db:latest"),
        &format!("oci:{}:acc/db:latest", s(&l)),
    ]);
    assert_has(
        "index.json after two copies",
        &entries(&l),
        &[
            entry(
                "acc/app:latest",
                Some("docker.io/acc/app:latest"),
                &src.digest("team/app:1"),
            ),
            entry(
                "acc/db:latest",
                Some("docker.io/acc/db:latest"),
                &src.digest("db:latest"),
            ),
        ],
    );
    // Neither entry lost its name, so gc --prune-untagged keeps both images.
    oc_ok(&["gc", "--prune-untagged", &s(&l)]);
    for (name, from) in [
        ("acc/app:latest", "team/app:1"),
        ("acc/db:latest", "db:latest"),
    ] {
        c.skopeo_ok([
            "copy".to_string(),
            format!("oci:{}:{name}", s(&l)),
            c.storage_ref(name),
        ]);
        assert_podman_image(
            &c,
            &format!("docker.io/{name}"),
            &src.img(from, host_arch()),
            true,
        );
    }
}

// ================================================================ ocikit → containerd

fn ctr(ns: &str) -> Option<clients::Ctr> {
    clients::containerd(ns)
}

/// Asserts containerd names `name` with target `target` and, resolved to `arch`, the
/// image `want`.
fn assert_ctr_image(c: &clients::Ctr, name: &str, target: &str, arch: &str, want: &Img) {
    let images = c.images();
    assert_eq!(
        images.get(name).map(String::as_str),
        Some(target),
        "ctr images ls: {name} (all: {images:?})"
    );
    let got = c.image(target, arch);
    assert_client_has("containerd", name, &got, want, true);
}

#[test]
fn oci_archive_imports_into_containerd() {
    let Some(c) = ctr("oci-archive-one") else {
        return;
    };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("demo.tar");
    // A name typed for the target gets its containerd name, which ctr names images by
    // (without one, ctr would use ref.name as it stands: `demo/app:1.0`).
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        host_platform(),
        &format!("oci-archive:{}:demo/app:1.0", s(&a)),
    ]);
    let want = src.img("demo/app:1.0", host_arch());
    assert_has(
        "oci-archive index.json",
        &archive_entries(&a),
        &[entry(
            "demo/app:1.0",
            Some("docker.io/demo/app:1.0"),
            &want.manifest,
        )],
    );
    let o = c.import(&a, &[]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
    assert_ctr_image(
        &c,
        "docker.io/demo/app:1.0",
        &want.manifest,
        host_arch(),
        &want,
    );
    let theirs = c.unpacked(&want.diff_ids);
    let ours = flatten(&src.loc("demo/app:1.0"), Some(host_platform()), tmp.path());
    assert_same_tree(&ours, &theirs, "demo/app:1.0 via ctr import");
}

fn multi_platform_into_containerd(ns: &str, extra: &[&str]) {
    let Some(c) = ctr(ns) else { return };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("multi.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        &format!("oci-archive:{}:demo/app:1.0", s(&a)),
    ]);
    let o = c.import(&a, extra);
    assert!(o.status.success(), "ctr import {extra:?}: {}", stderr(&o));
    let index = src.digest("demo/app:1.0");
    assert_ctr_image(
        &c,
        "docker.io/demo/app:1.0",
        &index,
        host_arch(),
        &src.img("demo/app:1.0", host_arch()),
    );
    if extra.contains(&"--all-platforms") {
        let (arch, _) = other_arch();
        let got = c.image(&index, arch);
        assert_client_has(
            "containerd",
            "docker.io/demo/app:1.0",
            &got,
            &src.img("demo/app:1.0", arch),
            true,
        );
    }
}

#[test]
fn oci_archive_multi_platform_imports_into_containerd_all_platforms() {
    multi_platform_into_containerd("multi-all", &["--all-platforms"]);
}

#[test]
fn oci_archive_multi_platform_imports_into_containerd_host_platform() {
    multi_platform_into_containerd("multi-host", &[]);
}

#[test]
fn oci_archive_uncompressed_layers_imports_into_containerd() {
    let Some(c) = ctr("oci-archive-uncompressed") else {
        return;
    };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("u-oci.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        host_platform(),
        "--uncompressed-layers",
        &format!("oci-archive:{}:demo/app:1.0", s(&a)),
    ]);
    let mut want = src.img("demo/app:1.0", host_arch());
    let e = archive_entries(&a);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].0.as_deref(), e[0].1.as_deref()),
        (Some("demo/app:1.0"), Some("docker.io/demo/app:1.0")),
        "{e:?}"
    );
    assert_ne!(
        e[0].2, want.manifest,
        "--uncompressed-layers: a new manifest"
    );
    want.manifest = e[0].2.clone();
    let o = c.import(&a, &[]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
    assert_ctr_image(
        &c,
        "docker.io/demo/app:1.0",
        &want.manifest,
        host_arch(),
        &want,
    );
    let theirs = c.unpacked(&want.diff_ids);
    let ours = flatten(&format!("oci-archive:{}", s(&a)), None, tmp.path());
    assert_same_tree(
        &ours,
        &theirs,
        "demo/app:1.0 --uncompressed-layers via ctr import",
    );
}

#[test]
fn docker_archive_imports_into_containerd() {
    let Some(c) = ctr("docker-archive-one") else {
        return;
    };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("app.tar");
    oc_ok(&[
        "export",
        &src.loc("app:latest"),
        &format!("docker-archive:{}", s(&a)),
    ]);
    let o = c.import(&a, &[]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
    // The Docker schema2 manifest keeps its digest through the archive's OCI view.
    let want = src.img("app:latest", host_arch());
    assert_ctr_image(
        &c,
        "docker.io/library/app:latest",
        &want.manifest,
        host_arch(),
        &want,
    );
    let theirs = c.unpacked(&want.diff_ids);
    let ours = flatten(&src.loc("app:latest"), None, tmp.path());
    assert_same_tree(&ours, &theirs, "app:latest via ctr import");
}

#[test]
fn docker_archive_several_names_sharing_a_tag_part_import_into_containerd() {
    let Some(c) = ctr("docker-archive-three") else {
        return;
    };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("three.tar");
    oc_ok(&[
        "export",
        &src.loc("app:latest"),
        &src.loc("team/app:1"),
        &src.loc("db:latest"),
        &format!("docker-archive:{}", s(&a)),
    ]);
    let o = c.import(&a, &[]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
    for (name, full) in [
        ("app:latest", "docker.io/library/app:latest"),
        ("team/app:1", "docker.io/team/app:1"),
        ("db:latest", "docker.io/library/db:latest"),
    ] {
        let want = src.img(name, host_arch());
        assert_ctr_image(&c, full, &want.manifest, host_arch(), &want);
    }
}

#[test]
fn docker_archive_uncompressed_layers_imports_into_containerd() {
    let Some(c) = ctr("docker-archive-uncompressed") else {
        return;
    };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("u.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        host_platform(),
        "--uncompressed-layers",
        &format!("docker-archive:{}", s(&a)),
    ]);
    let mut want = src.img("demo/app:1.0", host_arch());
    let e = archive_entries(&a);
    assert_eq!(e.len(), 1, "{e:?}");
    want.manifest = e[0].2.clone();
    let o = c.import(&a, &[]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
    assert_ctr_image(
        &c,
        "docker.io/demo/app:1.0",
        &want.manifest,
        host_arch(),
        &want,
    );
}

// ================================================================ ocikit → docker

/// The image `want` under `name` in docker (ID, diff_ids; Docker 20.10 keeps no
/// manifest digest for a loaded image).
fn assert_docker_image(d: &docker::Dockerd, name: &str, want: &Img) {
    assert!(
        d.has_image(name),
        "docker has no image named {name}: {}",
        stdout(&d.docker(["image", "ls", "--all"]))
    );
    assert_eq!(d.image_id(name), want.config, "docker {name}: image ID");
    assert_eq!(
        d.rootfs_layers(name),
        want.diff_ids,
        "docker {name}: RootFS.Layers"
    );
}

#[test]
fn docker_archive_loads_into_docker() {
    let Some(g) = clients::docker() else { return };
    let d: &docker::Dockerd = &g;
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("app.tar");
    oc_ok(&[
        "export",
        &src.loc("app:latest"),
        &format!("docker-archive:{}", s(&a)),
    ]);
    d.remove_all_images();
    let o = d.load(&a);
    assert!(o.status.success(), "docker load: {}", stderr(&o));
    let want = src.img("app:latest", host_arch());
    assert_docker_image(d, "app:latest", &want);
    let theirs = clients::docker_unpacked(d, &want.diff_ids);
    let ours = flatten(&src.loc("app:latest"), None, tmp.path());
    assert_same_tree(&ours, &theirs, "app:latest via docker load");
}

#[test]
fn docker_archive_of_an_unnamed_image_is_unnamed_in_docker() {
    let Some(g) = clients::docker() else { return };
    let d: &docker::Dockerd = &g;
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let (a, want) = unnamed_docker_archive(&src, tmp.path());
    d.remove_all_images();
    let o = d.load(&a);
    assert!(o.status.success(), "docker load: {}", stderr(&o));
    assert_docker_image(d, &want.config, &want);
    assert!(
        d.repo_tags(&want.config).is_empty(),
        "docker named it: {:?}",
        d.repo_tags(&want.config)
    );
}

#[test]
fn docker_archive_uncompressed_layers_loads_into_docker() {
    let Some(g) = clients::docker() else { return };
    let d: &docker::Dockerd = &g;
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("u.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        host_platform(),
        "--uncompressed-layers",
        &format!("docker-archive:{}", s(&a)),
    ]);
    d.remove_all_images();
    let o = d.load(&a);
    assert!(o.status.success(), "docker load: {}", stderr(&o));
    assert_docker_image(d, "demo/app:1.0", &src.img("demo/app:1.0", host_arch()));
}

#[test]
fn docker_archive_several_names_sharing_a_tag_part_load_into_docker() {
    let Some(g) = clients::docker() else { return };
    let d: &docker::Dockerd = &g;
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("three.tar");
    oc_ok(&[
        "export",
        &src.loc("app:latest"),
        &src.loc("team/app:1"),
        &src.loc("db:latest"),
        &format!("docker-archive:{}", s(&a)),
    ]);
    d.remove_all_images();
    let o = d.load(&a);
    assert!(o.status.success(), "docker load: {}", stderr(&o));
    for name in ["app:latest", "team/app:1", "db:latest"] {
        assert_docker_image(d, name, &src.img(name, host_arch()));
    }
}

#[test]
fn docker_archive_of_one_platform_loads_into_docker() {
    let Some(g) = clients::docker() else { return };
    let d: &docker::Dockerd = &g;
    let src = Src::new();
    let (arch, platform) = other_arch();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("other.tar");
    // Docker 20.10 cannot read zstd layers: written uncompressed, as docker save does.
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        platform,
        "--uncompressed-layers",
        &format!("docker-archive:{}", s(&a)),
    ]);
    d.remove_all_images();
    let o = d.load(&a);
    assert!(o.status.success(), "docker load: {}", stderr(&o));
    assert_docker_image(d, "demo/app:1.0", &src.img("demo/app:1.0", arch));
    assert_eq!(d.inspect("demo/app:1.0")["Architecture"], arch);
}

/// Tags the source's `db:latest` also `team/db:2` (ocikit tag) and exports `app:latest`,
/// `db:latest` and `team/db:2` to one docker-archive: two images, one of them under two
/// names. Asserts both views of the archive; returns it with (app, db).
fn two_names_docker_archive(src: &Src, dir: &Path) -> (PathBuf, Img, Img) {
    oc_ok(&["tag", &src.loc("db:latest"), "team/db:2"]);
    let a = dir.join("two-names.tar");
    oc_ok(&[
        "export",
        &src.loc("app:latest"),
        &src.loc("db:latest"),
        &src.loc("team/db:2"),
        &format!("docker-archive:{}", s(&a)),
    ]);
    let app = src.img("app:latest", host_arch());
    let db = src.img("db:latest", host_arch());
    assert_repo_tags(&a, &app.config, &["app:latest"]);
    assert_repo_tags(&a, &db.config, &["db:latest", "team/db:2"]);
    assert_has(
        "docker-archive index.json",
        &archive_entries(&a),
        &[
            entry(
                "latest",
                Some("docker.io/library/app:latest"),
                &app.manifest,
            ),
            entry("latest", Some("docker.io/library/db:latest"), &db.manifest),
            entry("2", Some("docker.io/team/db:2"), &db.manifest),
        ],
    );
    (a, app, db)
}

#[test]
fn docker_archive_one_image_under_two_names_loads_into_podman() {
    let Some(c) = containers() else { return };
    let src = Src::new();
    let (a, app, db) = two_names_docker_archive(&src, c.dir());
    podman_load(&c, &a);
    // Several images: podman 4.3 reads manifest.json (no manifest digest of its own to
    // compare) and names RepoTags without a registry `localhost/…`.
    assert_podman_image(&c, "localhost/app:latest", &app, false);
    assert_podman_image(&c, "localhost/db:latest", &db, false);
    assert_podman_image(&c, "localhost/team/db:2", &db, false);
}

#[test]
fn docker_archive_one_image_under_two_names_imports_into_containerd() {
    let Some(c) = ctr("docker-archive-two-names") else {
        return;
    };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let (a, app, db) = two_names_docker_archive(&src, tmp.path());
    let o = c.import(&a, &[]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
    assert_ctr_image(
        &c,
        "docker.io/library/app:latest",
        &app.manifest,
        host_arch(),
        &app,
    );
    assert_ctr_image(
        &c,
        "docker.io/library/db:latest",
        &db.manifest,
        host_arch(),
        &db,
    );
    assert_ctr_image(&c, "docker.io/team/db:2", &db.manifest, host_arch(), &db);
}

#[test]
fn docker_archive_one_image_under_two_names_loads_into_docker() {
    let Some(g) = clients::docker() else { return };
    let d: &docker::Dockerd = &g;
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let (a, app, db) = two_names_docker_archive(&src, tmp.path());
    let o = d.load(&a);
    assert!(o.status.success(), "docker load: {}", stderr(&o));
    assert_docker_image(d, "app:latest", &app);
    assert_docker_image(d, "db:latest", &db);
    assert_docker_image(d, "team/db:2", &db);
    let mut tags = d.repo_tags(&db.config);
    tags.sort();
    assert_eq!(
        tags,
        ["db:latest", "team/db:2"],
        "docker RepoTags of {}",
        db.config
    );
}

// ================================================================ clients → ocikit: podman, buildah

/// Two images built by buildah (offline): `acc/one:1.0` (two layers) and `acc/two:1.0`
/// (one layer), also tagged `one:latest` and `two:latest`.
fn built(c: &Containers) {
    c.build(
        "acc/one:1.0",
        &[
            &[
                ("etc/greeting", "hello\n"),
                ("usr/share/one/README", "one\n"),
            ],
            &[("usr/share/one/NOTES", "second layer\n")],
        ],
    );
    c.build("acc/two:1.0", &[&[("srv/two.txt", "two\n")]]);
    c.podman_ok(["tag", "localhost/acc/one:1.0", "one:latest"]);
    c.podman_ok(["tag", "localhost/acc/two:1.0", "two:latest"]);
}

/// One expected image after an import: the name to look up, the `ref.name` and
/// containerd name the imported layout must carry, and the client's image.
struct Want<'a> {
    lookup: &'a str,
    ref_name: &'a str,
    containerd: Option<&'a str>,
    client: ClientImage,
}

/// The checks every "clients → ocikit" cell runs on what a client wrote (`loc`):
/// `ls` names, `verify --deep`, `import` keeping names and digests, `diff` of the
/// import against the client's output (identical), and the image against the client's
/// own view (config, diff_ids, manifest).
fn client_output_survives(loc: &str, wants: &[Want], tmp: &Path) -> PathBuf {
    // ls lists each image once, by the name the client wrote.
    let listed = ls(loc);
    for w in wants {
        let found = listed
            .iter()
            .filter(|(tag, name, _)| {
                tag.as_deref() == Some(w.ref_name) && name.as_deref() == w.containerd
            })
            .count();
        assert_eq!(
            found, 1,
            "ocikit ls {loc}: expected one image tagged {:?} named {:?}; it lists {listed:?}",
            w.ref_name, w.containerd
        );
    }
    verify_deep(loc);
    let layout = tmp.join(format!("imported-{}", rand_suffix()));
    oc_ok(&["import", loc, &s(&layout)]);
    let have = entries(&layout);
    for w in wants {
        let m = w.client.manifest.clone();
        let ok = have.iter().any(|(r, n, d)| {
            r.as_deref() == Some(w.ref_name)
                && n.as_deref() == w.containerd
                && m.as_ref().is_none_or(|m| m == d)
        });
        assert!(
            ok,
            "ocikit import {loc}: index.json has no entry ref.name={:?} containerd name={:?} \
             digest={m:?}; it has {have:?}",
            w.ref_name, w.containerd
        );
        let l = format!("{}:{}", s(&layout), w.lookup);
        assert_same_image(&l, None, &w.client, "the client");
        // import keeps every digest: the layout's image is the archive's.
        diff_identical(&format!("{loc}:{}", w.lookup), &l, None);
    }
    // Names that share a tag part but differ in full are no duplicates: verify is quiet.
    let o = oc(&["verify", &s(&layout)]);
    assert!(
        code(&o) == 0 && !stderr(&o).contains("warning"),
        "ocikit verify {} (the import): exit {}\n{}{}",
        layout.display(),
        code(&o),
        stdout(&o),
        stderr(&o)
    );
    layout
}

/// The client's own view of an image: `podman save --format oci-dir`.
fn podman_view(c: &Containers, name: &str) -> String {
    let dir = c.dir().join(format!("view-{}", rand_suffix()));
    c.podman_ok([
        "save".as_ref(),
        "--format".as_ref(),
        "oci-dir".as_ref(),
        "-o".as_ref(),
        dir.as_os_str(),
        name.as_ref(),
    ]);
    s(&dir)
}

fn podman_want<'a>(
    c: &Containers,
    name: &str,
    lookup: &'a str,
    ref_name: &'a str,
    containerd: Option<&'a str>,
    manifest: Option<String>,
) -> Want<'a> {
    let mut client = c.image(name);
    client.manifest = manifest;
    Want {
        lookup,
        ref_name,
        containerd,
        client,
    }
}

/// The manifest digest an OCI layout (or archive) lists for `ref_name`.
fn manifest_in(index: &Value, ref_name: &str) -> String {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == ref_name)
        .unwrap_or_else(|| panic!("no {ref_name} in {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn podman_save_oci_archive_survives_import() {
    let Some(c) = containers() else { return };
    built(&c);
    let a = c.dir().join("one.tar");
    c.podman_ok([
        "save".as_ref(),
        "--format".as_ref(),
        "oci-archive".as_ref(),
        "-o".as_ref(),
        a.as_os_str(),
        "localhost/acc/one:1.0".as_ref(),
    ]);
    let name = "localhost/acc/one:1.0";
    let m = manifest_in(&archive_index(&a), name);
    let loc = format!("oci-archive:{}", s(&a));
    // podman's OCI view names it in ref.name only.
    let w = podman_want(&c, name, name, name, None, Some(m));
    let layout = client_output_survives(&loc, &[w], c.dir());
    let l = format!("{}:{name}", s(&layout));
    diff_identical(&l, &podman_view(&c, name), None);
    let ours = flatten(&l, None, c.dir());
    assert_same_tree(&ours, &c.unpacked(name), "podman save --format oci-archive");
    // Issue 13 item 3: podman's OCI name becomes the RepoTag of a docker-archive, and
    // podman loads it back under that name.
    let back = c.dir().join("back.tar");
    oc_ok(&["export", &l, &format!("docker-archive:{}", s(&back))]);
    let id = c.image(name).config;
    assert_repo_tags(&back, &id, &[name]);
    c.podman_ok(["rmi", "--force", name]);
    podman_load(&c, &back);
    assert_eq!(
        c.image(name).config,
        id,
        "podman load of the re-export: {name}"
    );
}

#[test]
fn podman_save_docker_archive_survives_import() {
    let Some(c) = containers() else { return };
    built(&c);
    let a = c.dir().join("one-docker.tar");
    let name = "localhost/acc/one:1.0";
    c.podman_ok([
        "save".as_ref(),
        "--format".as_ref(),
        "docker-archive".as_ref(),
        "-o".as_ref(),
        a.as_os_str(),
        name.as_ref(),
    ]);
    assert_repo_tags(&a, &c.image(name).config, &[name]);
    let loc = format!("docker-archive:{}", s(&a));
    // A legacy docker-archive has no manifest: ocikit builds one (no digest to compare).
    let w = podman_want(&c, name, name, "1.0", Some(name), None);
    let layout = client_output_survives(&loc, &[w], c.dir());
    let l = format!("{}:{name}", s(&layout));
    // The legacy format has no manifest, so none of the manifest annotations podman's
    // OCI view writes (base image name and digest, empty ones even for an image built
    // from scratch): `diff --ignore compression` says only `manifest: annotations:
    // added`, which no docker-archive reader could avoid. Compare the rest.
    diff_identical(&l, &podman_view(&c, name), Some("compression,annotations"));
    let ours = flatten(&l, None, c.dir());
    assert_same_tree(
        &ours,
        &c.unpacked(name),
        "podman save --format docker-archive",
    );
}

#[test]
fn podman_save_oci_dir_survives_import() {
    let Some(c) = containers() else { return };
    built(&c);
    let name = "localhost/acc/one:1.0";
    let dir = c.dir().join("one-dir");
    c.podman_ok([
        "save".as_ref(),
        "--format".as_ref(),
        "oci-dir".as_ref(),
        "-o".as_ref(),
        dir.as_os_str(),
        name.as_ref(),
    ]);
    let m = manifest_in(&index_json(&dir), name);
    let loc = format!("oci:{}", s(&dir));
    let w = podman_want(&c, name, name, name, None, Some(m));
    let layout = client_output_survives(&loc, &[w], c.dir());
    let ours = flatten(&format!("{}:{name}", s(&layout)), None, c.dir());
    assert_same_tree(&ours, &c.unpacked(name), "podman save --format oci-dir");
}

#[test]
fn podman_save_multi_image_archive_names_survive_import() {
    let Some(c) = containers() else { return };
    built(&c);
    let a = c.dir().join("multi.tar");
    c.podman_ok([
        "save".as_ref(),
        "--multi-image-archive".as_ref(),
        "-o".as_ref(),
        a.as_os_str(),
        "localhost/one:latest".as_ref(),
        "localhost/two:latest".as_ref(),
    ]);
    let one = c.image("localhost/one:latest");
    let two = c.image("localhost/two:latest");
    assert_ne!(one.config, two.config);
    assert_repo_tags(&a, &one.config, &["localhost/one:latest"]);
    assert_repo_tags(&a, &two.config, &["localhost/two:latest"]);
    let loc = format!("docker-archive:{}", s(&a));
    let wants = [
        podman_want(
            &c,
            "localhost/one:latest",
            "localhost/one:latest",
            "latest",
            Some("localhost/one:latest"),
            None,
        ),
        podman_want(
            &c,
            "localhost/two:latest",
            "localhost/two:latest",
            "latest",
            Some("localhost/two:latest"),
            None,
        ),
    ];
    let layout = client_output_survives(&loc, &wants, c.dir());
    // Re-export keeps both RepoTags.
    let back = c.dir().join("back.tar");
    oc_ok(&[
        "export",
        &format!("{}:localhost/one:latest", s(&layout)),
        &format!("{}:localhost/two:latest", s(&layout)),
        &format!("docker-archive:{}", s(&back)),
    ]);
    assert_repo_tags(&back, &one.config, &["localhost/one:latest"]);
    assert_repo_tags(&back, &two.config, &["localhost/two:latest"]);
}

#[test]
fn buildah_push_oci_layout_survives_import() {
    let Some(c) = containers() else { return };
    built(&c);
    let dir = c.dir().join("pushed");
    let typed = "acc/one:1.0";
    c.buildah_ok([
        "push".to_string(),
        "--signature-policy".to_string(),
        s(c.policy()),
        "localhost/acc/one:1.0".to_string(),
        format!("oci:{}:{typed}", s(&dir)),
    ]);
    let m = manifest_in(&index_json(&dir), typed);
    let loc = format!("oci:{}", s(&dir));
    // buildah wrote ref.name as typed and no containerd name; the import keeps the
    // entry as buildah wrote it.
    let w = podman_want(&c, "localhost/acc/one:1.0", typed, typed, None, Some(m));
    let listed = ls(&loc);
    assert!(
        listed.iter().any(|(t, _, _)| t.as_deref() == Some(typed)),
        "ocikit ls {loc}: {listed:?}"
    );
    verify_deep(&loc);
    let layout = c.dir().join("imported");
    oc_ok(&["import", &format!("{loc}:{typed}"), &s(&layout)]);
    assert_has(
        "index.json after import",
        &entries(&layout),
        &[entry(
            typed,
            w.containerd,
            w.client.manifest.as_deref().unwrap(),
        )],
    );
    let l = format!("{}:{typed}", s(&layout));
    assert_same_image(&l, None, &w.client, "buildah");
    diff_identical(&format!("{loc}:{typed}"), &l, None);
    diff_identical(&l, &podman_view(&c, "localhost/acc/one:1.0"), None);
    let ours = flatten(&l, None, c.dir());
    assert_same_tree(
        &ours,
        &c.unpacked("localhost/acc/one:1.0"),
        "buildah push oci:",
    );
}

#[test]
fn buildah_push_oci_archive_survives_import() {
    let Some(c) = containers() else { return };
    built(&c);
    let a = c.dir().join("pushed.tar");
    let typed = "acc/two:1.0";
    c.buildah_ok([
        "push".to_string(),
        "--signature-policy".to_string(),
        s(c.policy()),
        "localhost/acc/two:1.0".to_string(),
        format!("oci-archive:{}:{typed}", s(&a)),
    ]);
    let m = manifest_in(&archive_index(&a), typed);
    let loc = format!("oci-archive:{}", s(&a));
    let mut client = c.image("localhost/acc/two:1.0");
    client.manifest = Some(m.clone());
    let listed = ls(&loc);
    assert!(
        listed
            .iter()
            .any(|(t, _, d)| t.as_deref() == Some(typed) && *d == m),
        "ocikit ls {loc}: {listed:?}"
    );
    verify_deep(&loc);
    let layout = c.dir().join("imported");
    oc_ok(&["import", &loc, &s(&layout)]);
    assert_has(
        "index.json after import",
        &entries(&layout),
        &[entry(typed, None, &m)],
    );
    let l = format!("{}:{typed}", s(&layout));
    assert_same_image(&l, None, &client, "buildah");
    diff_identical(&format!("{loc}:{typed}"), &l, None);
    let ours = flatten(&l, None, c.dir());
    assert_same_tree(
        &ours,
        &c.unpacked("localhost/acc/two:1.0"),
        "buildah push oci-archive:",
    );
}

#[test]
fn podman_and_buildah_outputs_imported_into_one_layout_keep_every_name() {
    // Issue 13 item 1 across imports: three archives whose names share the tag part
    // `latest`, imported one after another into the same layout.
    let Some(c) = containers() else { return };
    built(&c);
    let a1 = c.dir().join("one.tar");
    let a2 = c.dir().join("two.tar");
    let a3 = c.dir().join("acc-two.tar");
    for (name, a) in [("localhost/one:latest", &a1), ("localhost/two:latest", &a2)] {
        c.podman_ok([
            "save".as_ref(),
            "--format".as_ref(),
            "docker-archive".as_ref(),
            "-o".as_ref(),
            a.as_os_str(),
            name.as_ref(),
        ]);
    }
    c.buildah_ok([
        "push".to_string(),
        "--signature-policy".to_string(),
        s(c.policy()),
        "localhost/acc/two:1.0".to_string(),
        format!("oci-archive:{}:acc/two:latest", s(&a3)),
    ]);
    let m3 = manifest_in(&archive_index(&a3), "acc/two:latest");
    let l = c.dir().join("one-layout");
    for a in [&a1, &a2] {
        oc_ok(&["import", &format!("docker-archive:{}", s(a)), &s(&l)]);
    }
    oc_ok(&["import", &format!("oci-archive:{}", s(&a3)), &s(&l)]);
    let have = entries(&l);
    for (tag, name) in [
        ("latest", Some("localhost/one:latest")),
        ("latest", Some("localhost/two:latest")),
        ("acc/two:latest", None),
    ] {
        assert!(
            have.iter()
                .any(|(t, n, _)| t.as_deref() == Some(tag) && n.as_deref() == name),
            "index.json after three imports: no entry ref.name={tag:?} containerd \
             name={name:?}; it has {have:?}"
        );
    }
    assert!(
        have.iter()
            .any(|(t, _, d)| t.as_deref() == Some("acc/two:latest") && *d == m3),
        "acc/two:latest is not on buildah's manifest {m3}: {have:?}"
    );
    oc_ok(&["gc", "--prune-untagged", &s(&l)]);
    let o = oc(&["verify", &s(&l)]);
    assert!(
        code(&o) == 0 && !stderr(&o).contains("warning"),
        "ocikit verify {}: exit {}\n{}{}",
        l.display(),
        code(&o),
        stdout(&o),
        stderr(&o)
    );
    for (lookup, client) in [
        ("localhost/one:latest", "localhost/one:latest"),
        ("localhost/two:latest", "localhost/two:latest"),
        ("acc/two:latest", "localhost/acc/two:1.0"),
    ] {
        let mut want = c.image(client);
        want.manifest = (lookup == "acc/two:latest").then(|| m3.clone());
        assert_same_image(&format!("{}:{lookup}", s(&l)), None, &want, "podman");
    }
    // skopeo finds buildah's name in the shared layout, exactly as typed.
    c.skopeo_ok([
        "copy".to_string(),
        format!("oci:{}:acc/two:latest", s(&l)),
        c.storage_ref("acc/two:copied"),
    ]);
    assert_eq!(
        c.image("docker.io/acc/two:copied").config,
        c.image("localhost/acc/two:1.0").config
    );
}

// ================================================================ clients → ocikit: containerd

/// Imports the sources into a fresh namespace through ocikit's archives: the demo index
/// (all platforms) as `docker.io/library/multi:latest`, `app:latest`, `team/app:1`,
/// `db:latest` (one docker-archive: its OCI view carries the containerd names), and `docker.io/acc/tricky:l3` (the host
/// platform's demo manifest written with uncompressed layers: a second manifest over
/// the same config as `docker.io/acc/tricky:zstd`, the original one).
fn ctr_fixture(c: &clients::Ctr, src: &Src, tmp: &Path) {
    let multi = tmp.join("multi.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        &format!("oci-archive:{}:demo/app:1.0", s(&multi)),
    ]);
    let o = c.import(&multi, &["--all-platforms"]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
    c.ctr_ok([
        "images",
        "tag",
        "docker.io/demo/app:1.0",
        "docker.io/library/multi:latest",
    ]);
    let three = tmp.join("three.tar");
    oc_ok(&[
        "export",
        &src.loc("app:latest"),
        &src.loc("team/app:1"),
        &src.loc("db:latest"),
        &format!("docker-archive:{}", s(&three)),
    ]);
    let o = c.import(&three, &[]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
    let l3 = tmp.join("l3.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        host_platform(),
        "--uncompressed-layers",
        &format!("docker-archive:{}:acc/tricky:l3", s(&l3)),
    ]);
    let o = c.import(&l3, &[]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
    let z = tmp.join("zstd.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        host_platform(),
        &format!("oci-archive:{}:acc/tricky:zstd", s(&z)),
    ]);
    let o = c.import(&z, &[]);
    assert!(o.status.success(), "ctr import: {}", stderr(&o));
}

/// containerd's record of `name`: its target digest and, resolved to `arch`, the image.
fn ctr_want(c: &clients::Ctr, name: &str, arch: &str) -> (String, ClientImage) {
    let images = c.images();
    let target = images
        .get(name)
        .unwrap_or_else(|| panic!("containerd has no {name}: {images:?}"))
        .clone();
    let img = c.image(&target, arch);
    (target, img)
}

/// `ctr images export [EXTRA…] FILE NAMES…`.
fn ctr_export(c: &clients::Ctr, file: &Path, extra: &[&str], names: &[&str]) {
    let mut args: Vec<String> = vec!["images".into(), "export".into()];
    args.extend(extra.iter().map(|e| e.to_string()));
    args.push(s(file));
    args.extend(names.iter().map(|n| n.to_string()));
    c.ctr_ok(args);
}

/// The tag part of a docker name (`docker.io/team/app:1` → `1`).
fn tag_part(name: &str) -> &str {
    name.rsplit_once(':').unwrap().1
}

#[test]
fn ctr_export_one_image_survives_import() {
    let Some(c) = ctr("export-one") else { return };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    ctr_fixture(&c, &src, tmp.path());
    let name = "docker.io/team/app:1";
    let a = tmp.path().join("one.tar");
    ctr_export(&c, &a, &[], &[name]);
    let (target, mut img) = ctr_want(&c, name, host_arch());
    img.manifest = Some(target);
    let loc = format!("docker-archive:{}", s(&a));
    let w = Want {
        lookup: name,
        ref_name: tag_part(name),
        containerd: Some(name),
        client: img.clone(),
    };
    let layout = client_output_survives(&loc, &[w], tmp.path());
    let l = format!("{}:{name}", s(&layout));
    diff_identical(&l, &src.loc("team/app:1"), None);
    let ours = flatten(&l, None, tmp.path());
    assert_same_tree(&ours, &c.unpacked(&img.diff_ids), "ctr images export");
}

#[test]
fn ctr_export_several_images_sharing_a_tag_part_survive_import() {
    let Some(c) = ctr("export-several") else {
        return;
    };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    ctr_fixture(&c, &src, tmp.path());
    let names = [
        "docker.io/library/app:latest",
        "docker.io/library/db:latest",
        "docker.io/team/app:1",
    ];
    let a = tmp.path().join("several.tar");
    ctr_export(&c, &a, &[], &names);
    let wants: Vec<Want> = names
        .iter()
        .map(|n| {
            let (target, mut img) = ctr_want(&c, n, host_arch());
            img.manifest = Some(target);
            Want {
                lookup: n,
                ref_name: tag_part(n),
                containerd: Some(n),
                client: img,
            }
        })
        .collect();
    client_output_survives(&format!("docker-archive:{}", s(&a)), &wants, tmp.path());
}

#[test]
fn ctr_export_all_platforms_keeps_names_on_the_right_manifests() {
    let Some(c) = ctr("export-all") else { return };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    ctr_fixture(&c, &src, tmp.path());
    let names = [
        "docker.io/library/multi:latest",
        "docker.io/library/db:latest",
    ];
    let a = tmp.path().join("all.tar");
    ctr_export(&c, &a, &["--all-platforms"], &names);
    let loc = format!("docker-archive:{}", s(&a));
    let index = src.digest("demo/app:1.0");
    let db = src.digest("db:latest");
    // Each name on the digest containerd has for it: the index, not its amd64 child.
    assert_has(
        &format!("ocikit ls {loc}"),
        &ls(&loc),
        &[
            entry("latest", Some(names[0]), &index),
            entry("latest", Some(names[1]), &db),
        ],
    );
    // Issue 13 item 10: an index and its child under one name are one image.
    let listed = ls(&loc);
    for n in names {
        assert_eq!(
            listed.iter().filter(|l| l.1.as_deref() == Some(n)).count(),
            1,
            "ocikit ls {loc}: {n} listed once: {listed:?}"
        );
    }
    verify_deep(&loc);
    let layout = tmp.path().join("imported");
    oc_ok(&["import", &loc, &s(&layout)]);
    assert_has(
        "index.json after import",
        &entries(&layout),
        &[
            entry("latest", Some(names[0]), &index),
            entry("latest", Some(names[1]), &db),
        ],
    );
    for arch in [host_arch(), other_arch().0] {
        let (_, img) = ctr_want(&c, names[0], arch);
        let platform = if arch == host_arch() {
            host_platform()
        } else {
            other_arch().1
        };
        let l = format!("{}:{}", s(&layout), names[0]);
        let ours = ocikit_img(&l, Some(platform));
        assert_eq!(ours.config, img.config, "{l} --platform {platform}: config");
        assert_eq!(
            ours.diff_ids, img.diff_ids,
            "{l} --platform {platform}: diff_ids"
        );
        assert_eq!(
            Some(ours.manifest.clone()),
            img.manifest,
            "{l} --platform {platform}: manifest"
        );
    }
    // The archive's images resolve by name to one choice each.
    for n in names {
        oc_ok(&["inspect", &format!("{loc}:{n}")]);
    }
    diff_identical(
        &format!("{}:{}", s(&layout), names[0]),
        &src.loc("demo/app:1.0"),
        None,
    );
}

#[test]
fn ctr_export_two_manifests_sharing_a_config_keep_their_names() {
    let Some(c) = ctr("export-tricky") else {
        return;
    };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    ctr_fixture(&c, &src, tmp.path());
    let names = ["docker.io/acc/tricky:l3", "docker.io/acc/tricky:zstd"];
    let a = tmp.path().join("tricky.tar");
    ctr_export(&c, &a, &[], &names);
    let wants: Vec<Want> = names
        .iter()
        .map(|n| {
            let (target, mut img) = ctr_want(&c, n, host_arch());
            img.manifest = Some(target);
            Want {
                lookup: n,
                ref_name: tag_part(n),
                containerd: Some(n),
                client: img,
            }
        })
        .collect();
    assert_eq!(wants[0].client.config, wants[1].client.config, "one config");
    assert_ne!(
        wants[0].client.manifest, wants[1].client.manifest,
        "two manifests"
    );
    client_output_survives(&format!("docker-archive:{}", s(&a)), &wants, tmp.path());
}

#[test]
fn ctr_export_of_the_host_platform_only_says_what_is_missing() {
    // Issue 13 item 5: `ctr images export` keeps only the host platform of an index.
    let Some(c) = ctr("export-partial") else {
        return;
    };
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    ctr_fixture(&c, &src, tmp.path());
    let name = "docker.io/library/multi:latest";
    let a = tmp.path().join("partial.tar");
    ctr_export(&c, &a, &[], &[name]);
    let loc = format!("docker-archive:{}", s(&a));
    let layout = tmp.path().join("imported");
    let args = ["import", &loc, &s(&layout)];
    let r = run_checked(&args);
    assert_error(&args, &r, &[host_platform(), "--platform"]);
    let o = oc(&["verify", &loc]);
    assert_eq!(
        code(&o),
        1,
        "ocikit verify {loc}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains(host_platform()) && said.contains("--platform"),
        "ocikit verify {loc} should say which platform the archive holds and name \
         --platform:\n{said}"
    );
    oc_ok(&["import", "--platform", host_platform(), &loc, &s(&layout)]);
    let (_, img) = ctr_want(&c, name, host_arch());
    assert_same_image(&format!("{}:{name}", s(&layout)), None, &img, "containerd");
}

// ================================================================ clients → ocikit: docker

#[test]
fn docker_save_names_sharing_a_tag_part_survive_import() {
    let Some(g) = clients::docker() else { return };
    let d: &docker::Dockerd = &g;
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    // Into docker through ocikit's archive (docker 20.10 cannot read zstd: uncompressed).
    let input = tmp.path().join("input.tar");
    oc_ok(&[
        "export",
        &src.loc("app:latest"),
        &src.loc("team/app:1"),
        &src.loc("db:latest"),
        &format!("docker-archive:{}", s(&input)),
    ]);
    let input2 = tmp.path().join("input2.tar");
    oc_ok(&[
        "export",
        &src.loc("demo/app:1.0"),
        "--platform",
        host_platform(),
        "--uncompressed-layers",
        &format!("docker-archive:{}:localhost:5000/team/db:1", s(&input2)),
    ]);
    d.remove_all_images();
    for a in [&input, &input2] {
        let o = d.load(a);
        assert!(o.status.success(), "docker load: {}", stderr(&o));
    }
    let names = [
        ("app:latest", "docker.io/library/app:latest", "latest"),
        ("db:latest", "docker.io/library/db:latest", "latest"),
        ("team/app:1", "docker.io/team/app:1", "1"),
        ("localhost:5000/team/db:1", "localhost:5000/team/db:1", "1"),
    ];
    let saved = tmp.path().join("saved.tar");
    let o = d.save(&names.map(|n| n.0), &saved);
    assert!(o.status.success(), "docker save: {}", stderr(&o));
    let wants: Vec<Want> = names
        .iter()
        .map(|(n, full, tag)| Want {
            lookup: n,
            ref_name: tag,
            containerd: Some(full),
            client: ClientImage {
                config: d.image_id(n),
                manifest: None,
                digests: Vec::new(),
                diff_ids: d.rootfs_layers(n),
                names: d.repo_tags(n),
            },
        })
        .collect();
    let loc = format!("docker-archive:{}", s(&saved));
    let layout = client_output_survives(&loc, &wants, tmp.path());
    // docker save rewrote the layers uncompressed: the same images under
    // --ignore compression.
    for (n, from) in [
        ("app:latest", src.loc("app:latest")),
        ("db:latest", src.loc("db:latest")),
        ("team/app:1", src.loc("team/app:1")),
    ] {
        diff_identical(&format!("{}:{n}", s(&layout)), &from, Some("compression"));
    }
    // Re-export writes every RepoTag back.
    let back = tmp.path().join("back.tar");
    let mut args: Vec<String> = vec!["export".into()];
    args.extend(names.iter().map(|n| format!("{}:{}", s(&layout), n.1)));
    args.push(format!("docker-archive:{}", s(&back)));
    oc_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for w in &wants {
        let tags: Vec<&str> = names
            .iter()
            .filter(|n| d.image_id(n.0) == w.client.config)
            .map(|n| n.0)
            .collect();
        assert_repo_tags(&back, &w.client.config, &tags);
    }
    let team = &wants[2].client;
    let ours = flatten(&format!("{}:team/app:1", s(&layout)), None, tmp.path());
    assert_same_tree(
        &ours,
        &clients::docker_unpacked(d, &team.diff_ids),
        "team/app:1 via docker save",
    );
}

#[test]
fn docker_save_of_one_image_under_two_names_keeps_both_on_import() {
    let Some(g) = clients::docker() else { return };
    let d: &docker::Dockerd = &g;
    let src = Src::new();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input.tar");
    oc_ok(&[
        "export",
        &src.loc("team/app:1"),
        &format!("docker-archive:{}", s(&input)),
    ]);
    let o = d.load(&input);
    assert!(o.status.success(), "docker load: {}", stderr(&o));
    d.docker_ok(["tag", "team/app:1", "app:latest"]);
    let saved = tmp.path().join("saved.tar");
    let o = d.save(&["team/app:1", "app:latest"], &saved);
    assert!(o.status.success(), "docker save: {}", stderr(&o));
    let id = d.image_id("team/app:1");
    assert_repo_tags(&saved, &id, &["app:latest", "team/app:1"]);
    let client = ClientImage {
        config: id.clone(),
        manifest: None,
        digests: Vec::new(),
        diff_ids: d.rootfs_layers("team/app:1"),
        names: d.repo_tags("team/app:1"),
    };
    let wants = [
        Want {
            lookup: "team/app:1",
            ref_name: "1",
            containerd: Some("docker.io/team/app:1"),
            client: client.clone(),
        },
        Want {
            lookup: "app:latest",
            ref_name: "latest",
            containerd: Some("docker.io/library/app:latest"),
            client,
        },
    ];
    let loc = format!("docker-archive:{}", s(&saved));
    let layout = client_output_survives(&loc, &wants, tmp.path());
    // Both names on one manifest, and a re-export gives docker both back.
    let e = entries(&layout);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].2, e[1].2, "one image, one manifest: {e:?}");
    let back = tmp.path().join("back.tar");
    oc_ok(&[
        "export",
        &format!("{}:team/app:1", s(&layout)),
        &format!("{}:app:latest", s(&layout)),
        &format!("docker-archive:{}", s(&back)),
    ]);
    assert_repo_tags(&back, &id, &["app:latest", "team/app:1"]);
}

// ================================================================ air-gap last mile: the registry

/// Pushes `oci:LAYOUT:NAME` to a private registry and pulls it back into a new layout
/// (`back`) with `skopeo copy --all --preserve-digests`.
fn registry_round_trip(
    c: &Containers,
    r: &registry::Registry,
    layout: &Path,
    name: &str,
    repo: &str,
    back: &Path,
) {
    let remote = format!("docker://{}/{repo}", r.addr);
    c.skopeo_ok([
        "copy".to_string(),
        "--all".to_string(),
        "--preserve-digests".to_string(),
        "--dest-tls-verify=false".to_string(),
        format!("oci:{}:{name}", s(layout)),
        remote.clone(),
    ]);
    c.skopeo_ok([
        "copy".to_string(),
        "--all".to_string(),
        "--preserve-digests".to_string(),
        "--src-tls-verify=false".to_string(),
        remote,
        format!("oci:{}:{name}", s(back)),
    ]);
}

fn registry() -> Option<registry::Registry> {
    clients::registry()
}

#[test]
fn registry_round_trip_of_a_multi_platform_layout_is_identical() {
    let Some(c) = containers() else { return };
    let Some(r) = registry() else { return };
    let src = Src::new();
    let l = c.dir().join("images");
    let back = c.dir().join("roundtrip");
    oc_ok(&[
        "copy",
        &src.loc("demo/app:1.0"),
        &format!("oci:{}:demo/app:1.0", s(&l)),
    ]);
    registry_round_trip(&c, &r, &l, "demo/app:1.0", "demo/app:1.0", &back);
    diff_identical(
        &format!("{}:demo/app:1.0", s(&l)),
        &format!("{}:demo/app:1.0", s(&back)),
        None,
    );
    assert_has(
        "round trip index.json",
        &entries(&back),
        &[entry("demo/app:1.0", None, &src.digest("demo/app:1.0"))],
    );
    for (arch, platform) in [(host_arch(), host_platform()), other_arch()] {
        let want = src.img("demo/app:1.0", arch);
        let got = ocikit_img(&format!("{}:demo/app:1.0", s(&back)), Some(platform));
        assert_eq!(got.manifest, want.manifest, "{platform}: manifest");
        assert_eq!(got.config, want.config, "{platform}: config");
        assert_eq!(got.diff_ids, want.diff_ids, "{platform}: diff_ids");
    }
}

#[test]
fn registry_round_trip_of_a_docker_schema2_layout_is_identical() {
    // skopeo 1.9's oci: transport only finds index.json entries of OCI media types
    // ("no descriptor found for reference"), so the Docker schema2 manifest travels
    // inside an OCI index (built by hand here, then written by ocikit).
    let Some(c) = containers() else { return };
    let Some(r) = registry() else { return };
    let src = Src::new();
    let docker = index_entry(&src.path, "app:latest");
    let mut child = docker.clone();
    child.as_object_mut().unwrap().remove("annotations");
    child["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let idx = put_blob(
        &src.path,
        OCI_INDEX,
        &to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child]})),
    );
    let mut e = idx.clone();
    e["annotations"] = json!({"org.opencontainers.image.ref.name": "schema2"});
    let mut index = index_json(&src.path);
    index["manifests"].as_array_mut().unwrap().push(e);
    fs::write(src.path.join("index.json"), to_bytes(&index)).unwrap();

    let l = c.dir().join("images");
    let back = c.dir().join("roundtrip");
    oc_ok(&[
        "copy",
        &src.loc("schema2"),
        &format!("oci:{}:app:schema2", s(&l)),
    ]);
    registry_round_trip(&c, &r, &l, "app:schema2", "demo/app:schema2", &back);
    diff_identical(
        &format!("{}:app:schema2", s(&l)),
        &format!("{}:app:schema2", s(&back)),
        None,
    );
    let want = src.img("app:latest", "amd64");
    let got = ocikit_img(&format!("{}:app:schema2", s(&back)), Some("linux/amd64"));
    assert_eq!(
        got.manifest, want.manifest,
        "docker schema2 manifest digest"
    );
    assert_eq!(got.config, want.config);
    assert_eq!(got.diff_ids, want.diff_ids);
}

#[test]
fn registry_round_trip_keeps_a_referrer() {
    let Some(c) = containers() else { return };
    let Some(r) = registry() else { return };
    let src = Src::new();
    let l = c.dir().join("images");
    let back = c.dir().join("roundtrip");
    oc_ok(&[
        "copy",
        &src.loc("demo/app:1.0"),
        &format!("oci:{}:demo/app:1.0", s(&l)),
    ]);
    // The demo's SBOM (subject: the amd64 manifest) came along; name it to push it.
    let referrer = blob_files(&l)
        .into_iter()
        .map(|b| format!("sha256:{}", b.trim_start_matches("sha256/")))
        .find(|d| read_json_opt(&l, d).is_some_and(|v| v.get("subject").is_some()))
        .expect("the copy holds the demo's referrer");
    oc_ok(&["tag", &format!("{}@{referrer}", s(&l)), "demo/app:sbom"]);
    registry_round_trip(&c, &r, &l, "demo/app:1.0", "demo/app:1.0", &back);
    registry_round_trip(&c, &r, &l, "demo/app:sbom", "demo/app:sbom", &back);
    for n in ["demo/app:1.0", "demo/app:sbom"] {
        diff_identical(
            &format!("{}:{n}", s(&l)),
            &format!("{}:{n}", s(&back)),
            None,
        );
    }
    // ocikit still finds it as a referrer of the image: a copy of the image alone
    // carries it.
    let only = c.dir().join("only");
    oc_ok(&[
        "copy",
        &format!("{}:demo/app:1.0", s(&back)),
        &format!("oci:{}:demo/app:1.0", s(&only)),
    ]);
    assert!(
        blob_files(&only).contains(&blob_name(&referrer)),
        "the referrer {referrer} did not come along with demo/app:1.0"
    );
}

fn read_json_opt(root: &Path, digest: &str) -> Option<Value> {
    serde_json::from_slice(&blob_bytes(root, digest)).ok()
}
