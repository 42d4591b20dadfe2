//! Interoperability with a real Docker engine (Debian's docker.io 20.10): ocikit reads
//! `docker save` archives and Docker loads ocikit's docker-archives.
//!
//! One private daemon (tests/common/docker.rs) serves every check, so everything runs in
//! one `#[test]`. The inputs are built without a registry: skopeo turns the demo layout
//! into docker-archives, Docker loads them and `docker save` writes real legacy-format
//! archives (manifest.json + `<v1 id>/layer.tar`, shared layers, symlinked duplicates).
//! Setting that up must work; after it, each ocikit check is a named step: a failing step
//! is reported and the others still run, and the test fails at the end listing them.
//!
//! The test prints why and passes when dockerd, the client or skopeo is missing or we are
//! not root.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use common::docker::Dockerd;
use common::*;
use serde_json::Value;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The `os/arch[/variant]` of this host as ocikit's default picks it, if the demo has it.
fn host_platform() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("linux/amd64"),
        "aarch64" => Some("linux/arm64/v8"),
        _ => None,
    }
}

// ---------------------------------------------------------------- the demo's images

/// One image of the demo layout, read straight from its blobs (not through ocikit).
#[derive(Clone, Debug)]
struct DemoImage {
    config_digest: String,
    diff_ids: Vec<String>,
    /// The stored (compressed) layer blobs' digests.
    layers: Vec<String>,
}

fn read_json(root: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob_bytes(root, digest)).unwrap()
}

/// The demo image tagged `tag`; for an index, the entry with `arch`.
fn demo_image(root: &Path, tag: &str, arch: Option<&str>) -> DemoImage {
    let entry = index_entry(root, tag);
    let mut doc = read_json(root, entry["digest"].as_str().unwrap());
    if let Some(list) = doc["manifests"].as_array() {
        let arch = arch.expect("an index needs an architecture");
        let e = list
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} in demo {tag}"))
            .clone();
        doc = read_json(root, e["digest"].as_str().unwrap());
    }
    let config_digest = doc["config"]["digest"].as_str().unwrap().to_string();
    let config = read_json(root, &config_digest);
    DemoImage {
        diff_ids: strings(&config["rootfs"]["diff_ids"]),
        layers: doc["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect(),
        config_digest,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- docker-archive files

#[derive(Debug)]
enum Item {
    File(Vec<u8>),
    Symlink(String),
    Dir,
    Other,
}

/// Every entry of a tar file by normalised path (no `./`, no trailing `/`).
fn tar_items(path: &Path) -> BTreeMap<String, Item> {
    let mut a = tar::Archive::new(fs::File::open(path).unwrap());
    let mut m = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let item = match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut b = Vec::new();
                e.read_to_end(&mut b).unwrap();
                Item::File(b)
            }
            tar::EntryType::Symlink => {
                Item::Symlink(e.link_name().unwrap().unwrap().display().to_string())
            }
            tar::EntryType::Directory => Item::Dir,
            _ => Item::Other,
        };
        assert!(
            m.insert(name.clone(), item).is_none(),
            "{}: duplicate entry {name}",
            path.display()
        );
    }
    m
}

/// `a/b/../c` → `a/c`.
fn normalise(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// The bytes of `name`, following symlinks inside the archive (relative to the link).
fn item_bytes<'a>(items: &'a BTreeMap<String, Item>, name: &str) -> &'a [u8] {
    let mut name = normalise(name);
    for _ in 0..10 {
        match items.get(&name) {
            Some(Item::File(b)) => return b,
            Some(Item::Symlink(t)) => {
                let dir = name.rsplit_once('/').map(|x| x.0).unwrap_or("");
                name = if t.starts_with('/') {
                    normalise(t)
                } else {
                    normalise(&format!("{dir}/{t}"))
                };
            }
            other => panic!("archive entry {name}: not a file ({other:?})"),
        }
    }
    panic!("archive entry {name}: symlink loop")
}

/// One `manifest.json` entry of a docker-archive, with its files read.
#[derive(Debug)]
struct ArchiveImage {
    repo_tags: Vec<String>,
    /// Digest of the config file's bytes.
    config_digest: String,
    config: Value,
    layer_paths: Vec<String>,
    /// Digest and first bytes of each layer file (symlinks followed).
    layer_digests: Vec<String>,
    layer_heads: Vec<Vec<u8>>,
}

struct DockerArchive {
    items: BTreeMap<String, Item>,
    images: Vec<ArchiveImage>,
}

fn read_docker_archive(path: &Path) -> DockerArchive {
    let items = tar_items(path);
    let manifest: Value = serde_json::from_slice(item_bytes(&items, "manifest.json"))
        .unwrap_or_else(|e| panic!("{}: manifest.json: {e}", path.display()));
    let images = manifest
        .as_array()
        .unwrap_or_else(|| panic!("{}: manifest.json is not a list", path.display()))
        .iter()
        .map(|m| {
            let cfg = item_bytes(&items, m["Config"].as_str().unwrap());
            let layer_paths = strings(&m["Layers"]);
            let layers: Vec<&[u8]> = layer_paths.iter().map(|l| item_bytes(&items, l)).collect();
            ArchiveImage {
                repo_tags: if m["RepoTags"].is_null() {
                    Vec::new()
                } else {
                    strings(&m["RepoTags"])
                },
                config_digest: digest_of(cfg),
                config: serde_json::from_slice(cfg).unwrap(),
                layer_digests: layers.iter().map(|b| digest_of(b)).collect(),
                layer_heads: layers
                    .iter()
                    .map(|b| b[..b.len().min(4)].to_vec())
                    .collect(),
                layer_paths,
            }
        })
        .collect();
    DockerArchive { items, images }
}

/// The one image of an archive ocikit wrote from `src`, checked against it: the config is
/// the source's bytes, each layer is the source's stored blob (compressed as in the source).
fn check_ocikit_archive(path: &Path, src: &DemoImage) -> ArchiveImage {
    let mut a = read_docker_archive(path);
    assert_eq!(
        a.images.len(),
        1,
        "{}: one image expected: {:?}",
        path.display(),
        a.images
    );
    let img = a.images.remove(0);
    assert_eq!(
        img.config_digest,
        src.config_digest,
        "{}: config bytes differ from the source's",
        path.display()
    );
    assert_eq!(
        img.layer_digests,
        src.layers,
        "{}: layers are not the source's stored blobs",
        path.display()
    );
    assert_eq!(strings(&img.config["rootfs"]["diff_ids"]), src.diff_ids);
    img
}

// ---------------------------------------------------------------- ocikit helpers

/// `ocikit ls --json LOC`'s images.
fn ls_images(loc: &str) -> Vec<Value> {
    let o = ocikit_ok(["ls", "--json", loc]);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("ocikit ls --json {loc}: not JSON ({e}): {}", stdout(&o)));
    v["images"]
        .as_array()
        .unwrap_or_else(|| panic!("ocikit ls --json {loc}: no images: {v}"))
        .clone()
}

/// (tag, io.containerd.image.name) of each listed image, sorted.
fn tags_and_names(images: &[Value]) -> Vec<(Option<String>, Option<String>)> {
    let mut v: Vec<_> = images
        .iter()
        .map(|i| {
            (
                i["tag"].as_str().map(str::to_string),
                i["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .map(str::to_string),
            )
        })
        .collect();
    v.sort();
    v
}

fn pair(tag: &str, name: &str) -> (Option<String>, Option<String>) {
    (Some(tag.to_string()), Some(name.to_string()))
}

/// The config an ocikit location resolves to: (digest of its exact bytes, diff_ids).
fn ocikit_config(loc: &str, platform: Option<&str>) -> (String, Vec<String>) {
    let mut args = vec!["cat", loc, "config"];
    if let Some(p) = platform {
        args.extend(["--platform", p]);
    }
    let o = ocikit_ok(&args);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("ocikit {args:?}: config is not JSON: {e}"));
    (digest_of(&o.stdout), strings(&v["rootfs"]["diff_ids"]))
}

fn verify_deep(layout: &Path) {
    let o = ocikit(["verify", "--deep", &s(layout)]);
    assert_eq!(
        code(&o),
        0,
        "ocikit verify --deep {} found problems:\n{}{}",
        layout.display(),
        stdout(&o),
        stderr(&o)
    );
}

/// The docker name forms a RepoTag may take for `familiar` (`demo/x:1`).
fn repo_tag_ok(tags: &[String], familiar: &str) -> bool {
    tags.len() == 1 && (tags[0] == familiar || tags[0] == format!("docker.io/{familiar}"))
}

// ---------------------------------------------------------------- steps

/// Named steps: each runs even if an earlier one failed; the failures are listed at the end.
struct Steps {
    passed: Vec<String>,
    failed: Vec<String>,
}

impl Steps {
    fn run(&mut self, name: &str, f: impl FnOnce()) {
        eprintln!("--- step: {name}");
        let t0 = Instant::now();
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => {
                eprintln!("--- ok: {name} ({:.1} s)", t0.elapsed().as_secs_f64());
                self.passed.push(name.to_string());
            }
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let first = msg.lines().next().unwrap_or("").to_string();
                eprintln!("--- FAILED: {name}: {first}");
                self.failed.push(format!("{name}: {first}"));
            }
        }
    }
}

/// What the setup produced.
struct Fixture {
    tmp: PathBuf,
    demo: PathBuf,
    amd: DemoImage,
    arm: DemoImage,
    legacy: DemoImage,
    /// `docker save demo/app:1.0 demo/app:arm64`.
    saved_two: PathBuf,
    /// `docker save demo/app:1.0`.
    saved_one: PathBuf,
    /// `docker save demo/app:1.0 demo/app:arm64 demo/app:legacy` (has symlinked layers).
    saved_three: PathBuf,
    /// What Docker said about each loaded image (name → (Id, RootFS.Layers)), recorded
    /// before the steps empty the image store.
    docker: BTreeMap<String, (String, Vec<String>)>,
}

impl Fixture {
    fn docker_id(&self, name: &str) -> &str {
        &self.docker[name].0
    }
    fn docker_layers(&self, name: &str) -> &[String] {
        &self.docker[name].1
    }
}

/// The demo's Docker schema2 `legacy` image as a skopeo `dir:` directory: skopeo 1.9's
/// `oci:` transport does not find Docker-typed `index.json` entries ("no descriptor found").
fn legacy_dir(demo: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    let digest = index_entry(demo, "legacy")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = blob_bytes(demo, &digest);
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    fs::write(dst.join("manifest.json"), &manifest).unwrap();
    let blobs = std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap());
    for desc in blobs {
        let digest = desc["digest"].as_str().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs::write(dst.join(hex), blob_bytes(demo, digest)).unwrap();
    }
    fs::write(dst.join("version"), "Directory Transport Version: 1.1\n").unwrap();
}

/// Builds docker-archives with skopeo, loads them, saves them with Docker. No ocikit.
fn setup(d: &Dockerd, tmp: &Path, demo: &Path) -> Fixture {
    let amd = demo_image(demo, "1.0", Some("amd64"));
    let arm = demo_image(demo, "1.0", Some("arm64"));
    let legacy = demo_image(demo, "legacy", None);

    // skopeo (1.9) refuses to write zstd layers into a docker-archive ("zstd compression
    // is not supported for docker images"), so the 1.0 images first go through an OCI
    // layout with every layer gzip-compressed. diff_ids and so the config stay the same.
    let gz = tmp.join("gz");
    let src = format!("oci:{}:1.0", s(demo));
    for (arch, variant, tag) in [("amd64", None, "amd64"), ("arm64", Some("v8"), "arm64")] {
        let dst = format!("oci:{}:{tag}", s(&gz));
        let mut args = vec!["copy", "--quiet", "--override-os", "linux"];
        args.extend(["--override-arch", arch]);
        if let Some(v) = variant {
            args.extend(["--override-variant", v]);
        }
        args.extend([
            "--dest-compress",
            "--dest-compress-format",
            "gzip",
            &src,
            &dst,
        ]);
        run_ok("skopeo", &args);
    }
    let legacy_src = tmp.join("legacy-dir");
    legacy_dir(demo, &legacy_src);
    let inputs = [
        (
            format!("oci:{}:amd64", s(&gz)),
            "one.tar",
            "demo/app:1.0",
            &amd,
        ),
        (
            format!("oci:{}:arm64", s(&gz)),
            "arm.tar",
            "demo/app:arm64",
            &arm,
        ),
        (
            format!("dir:{}", s(&legacy_src)),
            "legacy.tar",
            "demo/app:legacy",
            &legacy,
        ),
    ];
    let mut docker = BTreeMap::new();
    for (from, file, name, want) in inputs {
        let archive = tmp.join(file);
        let to = format!("docker-archive:{}:{name}", s(&archive));
        run_ok("skopeo", &["copy", "--quiet", &from, &to]);
        let o = d.load(&archive);
        assert!(
            o.status.success() && stdout(&o).contains(&format!("Loaded image: {name}")),
            "docker load {file} (from skopeo): {}{}\n{}",
            stdout(&o),
            stderr(&o),
            d.log_tail(10)
        );
        assert_eq!(d.image_id(name), want.config_digest, "{name}: image ID");
        assert_eq!(
            d.rootfs_layers(name),
            want.diff_ids,
            "{name}: RootFS.Layers"
        );
        docker.insert(name.to_string(), (d.image_id(name), d.rootfs_layers(name)));
    }
    // The 1.0 images share their two base layers.
    assert_eq!(amd.diff_ids[..2], arm.diff_ids[..2]);
    assert_eq!(legacy.diff_ids[..], amd.diff_ids[..2]);

    let saved_two = tmp.join("saved-two.tar");
    let saved_one = tmp.join("saved-one.tar");
    let saved_three = tmp.join("saved-three.tar");
    for (refs, out) in [
        (&["demo/app:1.0", "demo/app:arm64"][..], &saved_two),
        (&["demo/app:1.0"][..], &saved_one),
        (
            &["demo/app:1.0", "demo/app:arm64", "demo/app:legacy"][..],
            &saved_three,
        ),
    ] {
        let o = d.save(refs, out);
        assert!(
            o.status.success(),
            "docker save {refs:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let a = read_docker_archive(out);
        assert_eq!(
            a.images.len(),
            refs.len(),
            "{}: {:?}",
            out.display(),
            a.images
        );
        assert!(
            matches!(a.items.get("repositories"), Some(Item::File(_))),
            "{}: docker save writes a repositories file",
            out.display()
        );
        // manifest.json's order is not the order of the arguments (Go map order).
        let mut saved: Vec<&[String]> = a.images.iter().map(|i| &i.repo_tags[..]).collect();
        saved.sort();
        let mut asked: Vec<Vec<String>> = refs.iter().map(|r| vec![r.to_string()]).collect();
        asked.sort();
        // Docker 20.10 saves familiar names ("demo/app:1.0", no docker.io/).
        assert_eq!(saved, asked, "{}: RepoTags", out.display());
        for img in &a.images {
            let r = &img.repo_tags[0];
            let want = match r.as_str() {
                "demo/app:1.0" => &amd,
                "demo/app:arm64" => &arm,
                _ => &legacy,
            };
            assert_eq!(img.config_digest, want.config_digest, "{r}: saved config");
            // Uncompressed layer files; before Docker 25, <v1 id>/layer.tar.
            assert_eq!(img.layer_digests, want.diff_ids, "{r}: saved layer files");
            if d.major() < 25 {
                assert!(img.layer_paths.iter().all(|p| p.ends_with("/layer.tar")));
            }
        }
    }
    // legacy's top layer is the 1.0 images' second layer under another v1 id: Docker
    // before 25 writes it once and symlinks the other layer.tar to it.
    if d.major() < 25 {
        let three = read_docker_archive(&saved_three);
        let links: Vec<&String> = three
            .items
            .iter()
            .filter(|(k, v)| k.ends_with("/layer.tar") && matches!(v, Item::Symlink(_)))
            .map(|(k, _)| k)
            .collect();
        assert!(
            !links.is_empty(),
            "saved-three.tar should hold a symlinked layer.tar: {:?}",
            three.items.keys().collect::<Vec<_>>()
        );
        eprintln!("saved-three.tar symlinked layers: {links:?}");
    }
    // The three images have 4 distinct layer chains (2 shared, 1 top each for 1.0's
    // images; legacy's 2 are the shared ones). After this, Docker's values are recorded
    // and the store can be emptied.
    assert_eq!(d.layer_count(), 4, "layers in the daemon's store");
    d.remove_all_images();

    Fixture {
        tmp: tmp.to_path_buf(),
        demo: demo.to_path_buf(),
        amd,
        arm,
        legacy,
        saved_two,
        saved_one,
        saved_three,
        docker,
    }
}

/// A docker-archive written by this test (not ocikit, not Docker): `manifest.json`, the
/// config and the demo's stored layer blobs as they are (compressed), no `repositories`.
fn hand_archive(path: &Path, demo: &Path, img: &DemoImage, repo_tags: &[&str]) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();
    let config = format!("{}.json", hex(&img.config_digest));
    let layers: Vec<String> = img
        .layers
        .iter()
        .map(|l| format!("{}.tar", hex(l)))
        .collect();
    let manifest = serde_json::json!([{"Config": config, "RepoTags": repo_tags, "Layers": layers}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    add(&config, &blob_bytes(demo, &img.config_digest));
    for (name, digest) in layers.iter().zip(&img.layers) {
        add(name, &blob_bytes(demo, digest));
    }
    b.into_inner().unwrap();
}

/// Loads an archive into an empty image store (so every layer file is really read:
/// Docker skips layer files whose layer it already has) and returns `docker load`'s output.
fn load_fresh(d: &Dockerd, archive: &Path) -> Output {
    d.remove_all_images();
    d.load(archive)
}

/// Loads an ocikit archive into an empty store and checks the image against `want`;
/// `name` is the RepoTag expected, or None for an untagged image (found by ID).
fn load_and_check(d: &Dockerd, archive: &Path, name: Option<&str>, want: &DemoImage) {
    let o = load_fresh(d, archive);
    assert!(
        o.status.success(),
        "docker load -i {} failed: {}{}\ndockerd log:\n{}",
        archive.display(),
        stdout(&o),
        stderr(&o),
        d.log_tail(10)
    );
    let reference = match name {
        Some(n) => {
            assert!(
                stdout(&o).contains(&format!("Loaded image: {n}")),
                "docker load -i {}: {}",
                archive.display(),
                stdout(&o)
            );
            n.to_string()
        }
        None => {
            assert!(
                stdout(&o).contains(&format!("Loaded image ID: {}", want.config_digest)),
                "docker load -i {}: {}",
                archive.display(),
                stdout(&o)
            );
            want.config_digest.clone()
        }
    };
    assert_eq!(
        d.image_id(&reference),
        want.config_digest,
        "{reference}: Id"
    );
    assert_eq!(
        d.rootfs_layers(&reference),
        want.diff_ids,
        "{reference}: RootFS.Layers"
    );
    if let Some(n) = name {
        assert!(
            d.repo_tags(&reference).contains(&n.to_string()),
            "{reference}: RepoTags {:?}",
            d.repo_tags(&reference)
        );
    }
}

/// Loads an archive whose image has a zstd layer. Docker before 23 cannot: its layer
/// decompression knows gzip, bzip2 and xz, so the zstd frame is read as a tar stream and
/// the apply fails ("ApplyLayer exit status 1 stdout:  stderr: unexpected EOF", which
/// names neither the layer nor zstd). Docker 23+ sniffs zstd and must load it.
fn load_zstd_image(d: &Dockerd, archive: &Path, name: &str, want: &DemoImage) {
    if d.major() >= 23 {
        load_and_check(d, archive, Some(name), want);
        return;
    }
    let o = load_fresh(d, archive);
    assert!(
        !o.status.success(),
        "docker {} loaded a zstd layer ({}): this engine supports zstd",
        d.version,
        stdout(&o)
    );
    let err = stderr(&o);
    assert!(
        err.contains("ApplyLayer") && err.contains("unexpected EOF"),
        "docker load of a zstd layer: unexpected message: {err}"
    );
    assert!(!d.has_image(name), "{name}: no image after the failed load");
}

#[test]
fn docker_engine_round_trips() {
    if !have("skopeo") {
        eprintln!("skopeo not installed (it builds the inputs); skipping docker engine tests");
        return;
    }
    let t0 = Instant::now();
    let Some(d) = Dockerd::start() else { return };
    let (_demo_dir, demo) = demo_copy();
    let tmp_dir = tempfile::tempdir().unwrap();
    let fx = setup(&d, tmp_dir.path(), &demo);
    eprintln!(
        "setup (docker load/save, no ocikit) done in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let mut steps = Steps {
        passed: Vec::new(),
        failed: Vec::new(),
    };
    let fx = &fx;
    let d = &d;
    let tmp = &fx.tmp;
    let demo_s = s(&fx.demo);
    let legacy_src = format!("{demo_s}:legacy");
    let index_src = format!("{demo_s}:1.0");

    // Engine facts the ocikit steps rely on, shown with archives this test writes itself.
    steps.run(
        "docker 20.10 loads gzip layers in a docker-archive (no RepoTags, no repositories)",
        || {
            let a = tmp.join("hand-gzip.tar");
            hand_archive(&a, &fx.demo, &fx.legacy, &[]);
            // (The shape ocikit's export is checked for, too.)
            assert!(check_ocikit_archive(&a, &fx.legacy).repo_tags.is_empty());
            load_and_check(d, &a, None, &fx.legacy);
            let a = tmp.join("hand-gzip-named.tar");
            hand_archive(&a, &fx.demo, &fx.legacy, &["docker.io/demo/hand:1"]);
            load_and_check(d, &a, Some("demo/hand:1"), &fx.legacy);
            // A RepoTag without a tag is refused ("invalid tag"): writers must add one.
            let a = tmp.join("hand-notag.tar");
            hand_archive(&a, &fx.demo, &fx.legacy, &["demo/hand"]);
            let o = load_fresh(d, &a);
            assert!(
                !o.status.success() && stderr(&o).contains("invalid tag"),
                "docker load of RepoTags [\"demo/hand\"]: {}{}",
                stdout(&o),
                stderr(&o)
            );
        },
    );
    steps.run("docker before 23 cannot load a zstd layer", || {
        let a = tmp.join("hand-zstd.tar");
        hand_archive(&a, &fx.demo, &fx.amd, &["demo/hand:zstd"]);
        load_zstd_image(d, &a, "demo/hand:zstd", &fx.amd);
    });

    steps.run("ls docker-archive (docker save of two images)", || {
        let loc = format!("docker-archive:{}", s(&fx.saved_two));
        let images = ls_images(&loc);
        assert_eq!(images.len(), 2, "ocikit ls --json {loc}: {images:?}");
        assert_eq!(
            tags_and_names(&images),
            vec![
                pair("1.0", "docker.io/demo/app:1.0"),
                pair("arm64", "docker.io/demo/app:arm64")
            ],
            "ocikit ls --json {loc}"
        );
        // The plain listing names both tags.
        let o = ocikit_ok(["ls", &loc]);
        assert!(
            stdout(&o).contains("1.0") && stdout(&o).contains("arm64"),
            "ocikit ls {loc}: {}",
            stdout(&o)
        );
        // A bare path is recognised as a docker-archive.
        let bare = ls_images(&s(&fx.saved_two));
        assert_eq!(
            bare, images,
            "ocikit ls --json on the bare path differs from docker-archive:"
        );
    });

    steps.run("verify --deep reads docker save archives in place", || {
        // Distinct layers: 1.0 has 3; arm64 adds its own top layer; legacy adds none.
        for (a, layers) in [(&fx.saved_one, 3), (&fx.saved_two, 4), (&fx.saved_three, 4)] {
            let loc = format!("docker-archive:{}", s(a));
            let o = ocikit(["verify", "--deep", "--json", &loc]);
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
                panic!(
                    "ocikit verify --deep --json {loc}: not JSON ({e}): {}",
                    stderr(&o)
                )
            });
            assert!(
                code(&o) == 0 && v["ok"] == true && v["errors"] == 0,
                "ocikit verify --deep {loc} found problems: {v:#}"
            );
            assert!(
                v["layersDecompressed"].as_u64().unwrap_or(0) >= layers,
                "{loc}: every layer decompressed: {v:#}"
            );
        }
        // The config an archive image resolves to is Docker's image ID.
        let loc = format!("docker-archive:{}:demo/app:arm64", s(&fx.saved_three));
        let (cfg, diff_ids) = ocikit_config(&loc, None);
        assert_eq!(cfg, fx.docker_id("demo/app:arm64"), "{loc}: config digest");
        assert_eq!(
            diff_ids,
            fx.docker_layers("demo/app:arm64"),
            "{loc}: diff_ids"
        );
    });

    let imported = tmp.join("imported");
    steps.run("import all images of a docker save", || {
        ocikit_ok(["import", &s(&fx.saved_two), &s(&imported)]);
        verify_deep(&imported);
        for (tag, name, want) in [
            ("1.0", "demo/app:1.0", &fx.amd),
            ("arm64", "demo/app:arm64", &fx.arm),
        ] {
            let (cfg, diff_ids) = ocikit_config(&format!("{}:{tag}", s(&imported)), None);
            assert_eq!(
                cfg,
                fx.docker_id(name),
                "imported {tag}: config digest vs docker Id"
            );
            assert_eq!(cfg, want.config_digest);
            assert_eq!(
                diff_ids,
                fx.docker_layers(name),
                "imported {tag}: diff_ids vs RootFS.Layers"
            );
        }
        assert_eq!(
            tags_and_names(&ls_images(&s(&imported))),
            vec![
                pair("1.0", "docker.io/demo/app:1.0"),
                pair("arm64", "docker.io/demo/app:arm64")
            ],
            "every RepoTag is recorded in the imported layout"
        );
    });

    steps.run("import a docker save with symlinked layers", || {
        let dst = tmp.join("imported-three");
        ocikit_ok([
            "import",
            &format!("docker-archive:{}", s(&fx.saved_three)),
            &s(&dst),
        ]);
        verify_deep(&dst);
        assert_eq!(
            tags_and_names(&ls_images(&s(&dst))),
            vec![
                pair("1.0", "docker.io/demo/app:1.0"),
                pair("arm64", "docker.io/demo/app:arm64"),
                pair("legacy", "docker.io/demo/app:legacy"),
            ]
        );
        let (cfg, diff_ids) = ocikit_config(&format!("{}:legacy", s(&dst)), None);
        assert_eq!(cfg, fx.legacy.config_digest, "legacy config digest");
        assert_eq!(diff_ids, fx.docker_layers("demo/app:legacy"));
    });

    steps.run("import a one-image docker save", || {
        let dst = tmp.join("imported-one");
        ocikit_ok(["import", &s(&fx.saved_one), &s(&dst)]);
        verify_deep(&dst);
        let images = ls_images(&s(&dst));
        assert_eq!(
            tags_and_names(&images),
            vec![pair("1.0", "docker.io/demo/app:1.0")]
        );
        let (cfg, _) = ocikit_config(&s(&dst), None);
        assert_eq!(cfg, fx.amd.config_digest);
    });

    steps.run("import one image by REF", || {
        let dst = tmp.join("only-arm");
        ocikit_ok([
            "import",
            &format!("docker-archive:{}:demo/app:arm64", s(&fx.saved_two)),
            &s(&dst),
        ]);
        verify_deep(&dst);
        let images = ls_images(&s(&dst));
        assert_eq!(
            tags_and_names(&images),
            vec![pair("arm64", "docker.io/demo/app:arm64")],
            "only the arm64 image"
        );
        let (cfg, diff_ids) = ocikit_config(&format!("{}:arm64", s(&dst)), None);
        assert_eq!(cfg, fx.docker_id("demo/app:arm64"));
        assert_eq!(diff_ids, fx.arm.diff_ids);
    });

    let out = tmp.join("out.tar");
    steps.run(
        "export legacy without a name (warns, no RepoTags); docker loads it",
        || {
            let o = ocikit_ok([
                "export",
                &legacy_src,
                &s(&out),
                "--format",
                "docker-archive",
            ]);
            assert!(
                !stderr(&o).trim().is_empty(),
                "exporting an image without io.containerd.image.name warns on stderr"
            );
            let img = check_ocikit_archive(&out, &fx.legacy);
            assert!(
                img.repo_tags.is_empty(),
                "no RepoTags expected: {:?}",
                img.repo_tags
            );
            assert!(img.layer_heads.iter().all(|h| h.starts_with(&GZIP_MAGIC)));
            load_and_check(d, &out, None, &fx.legacy);
        },
    );

    let named = tmp.join("named.tar");
    steps.run(
        "export legacy named by the FILE location's REF; docker loads it",
        || {
            ocikit_ok([
                "export",
                &legacy_src,
                &format!("docker-archive:{}:demo/named:v1", s(&named)),
            ]);
            let img = check_ocikit_archive(&named, &fx.legacy);
            assert!(
                repo_tag_ok(&img.repo_tags, "demo/named:v1"),
                "RepoTags {:?}",
                img.repo_tags
            );
            load_and_check(d, &named, Some("demo/named:v1"), &fx.legacy);
        },
    );

    steps.run(
        "copy legacy to a named docker-archive; docker loads it",
        || {
            let c = tmp.join("c.tar");
            ocikit_ok([
                "copy",
                &legacy_src,
                &format!("docker-archive:{}:demo/copied:v2", s(&c)),
            ]);
            let img = check_ocikit_archive(&c, &fx.legacy);
            assert!(
                repo_tag_ok(&img.repo_tags, "demo/copied:v2"),
                "RepoTags {:?}",
                img.repo_tags
            );
            load_and_check(d, &c, Some("demo/copied:v2"), &fx.legacy);
        },
    );

    steps.run(
        "export 1.0 linux/amd64 (a zstd layer): docker before 23 refuses it",
        || {
            let amd = tmp.join("idx-amd64.tar");
            ocikit_ok([
                "export",
                &index_src,
                &format!("docker-archive:{}:demo/idx:amd64", s(&amd)),
                "--platform",
                "linux/amd64",
            ]);
            let img = check_ocikit_archive(&amd, &fx.amd);
            assert!(
                repo_tag_ok(&img.repo_tags, "demo/idx:amd64"),
                "RepoTags {:?}",
                img.repo_tags
            );
            assert!(img.layer_heads[0].starts_with(&GZIP_MAGIC));
            assert!(img.layer_heads[1].starts_with(&GZIP_MAGIC));
            assert_eq!(img.layer_heads[2], ZSTD_MAGIC, "third layer stored as zstd");
            load_zstd_image(d, &amd, "demo/idx:amd64", &fx.amd);
        },
    );

    steps.run(
        "export 1.0 linux/amd64 with --uncompressed-layers: any docker loads it, same image ID",
        || {
            let un = tmp.join("idx-amd64-uncompressed.tar");
            let o = ocikit([
                "export",
                &index_src,
                &format!("docker-archive:{}:demo/idx:plain", s(&un)),
                "--platform",
                "linux/amd64",
                "--uncompressed-layers",
            ]);
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            assert!(
                stderr(&o).contains("now records uncompressed layers"),
                "{}",
                stderr(&o)
            );
            let archive = read_docker_archive(&un);
            let img = &archive.images[0];
            // Layers are stored under their diff_ids: uncompressed tars.
            assert_eq!(
                img.layer_digests, fx.amd.diff_ids,
                "layer files are the diff_ids"
            );
            assert_eq!(img.config_digest, fx.amd.config_digest, "config kept");
            load_and_check(d, &un, Some("demo/idx:plain"), &fx.amd);
        },
    );

    steps.run(
        "export 1.0 picks the host platform without --platform",
        || {
            let Some(host) = host_platform() else {
                eprintln!("host is neither amd64 nor arm64: nothing to compare");
                return;
            };
            let want = if host == "linux/amd64" {
                &fx.amd
            } else {
                &fx.arm
            };
            let plain = tmp.join("idx-host.tar");
            let explicit = tmp.join("idx-explicit.tar");
            ocikit_ok([
                "export",
                &index_src,
                &s(&plain),
                "--format",
                "docker-archive",
            ]);
            ocikit_ok([
                "export",
                &index_src,
                &s(&explicit),
                "--format",
                "docker-archive",
                "--platform",
                host,
            ]);
            check_ocikit_archive(&plain, want);
            assert_eq!(
                fs::read(&plain).unwrap(),
                fs::read(&explicit).unwrap(),
                "the default platform export equals --platform {host}"
            );
            let arm = tmp.join("idx-arm64.tar");
            ocikit_ok([
                "export",
                &index_src,
                &s(&arm),
                "--format",
                "docker-archive",
                "--platform",
                "linux/arm64",
            ]);
            check_ocikit_archive(&arm, &fx.arm);
        },
    );

    steps.run(
        "export is reproducible (same source twice: same bytes)",
        || {
            for (i, (src, target, platform)) in [
                (&legacy_src, "docker-archive:{}:demo/named:v1", None),
                (&legacy_src, "{}", None),
                (
                    &index_src,
                    "docker-archive:{}:demo/idx:amd64",
                    Some("linux/amd64"),
                ),
            ]
            .into_iter()
            .enumerate()
            {
                let mut files = Vec::new();
                for n in 0..2 {
                    let f = tmp.join(format!("repro-{i}-{n}.tar"));
                    let dst = target.replace("{}", &s(&f));
                    let mut args = vec!["export", src.as_str(), &dst];
                    if !dst.starts_with("docker-archive:") {
                        args.extend(["--format", "docker-archive"]);
                    }
                    if let Some(p) = platform {
                        args.extend(["--platform", p]);
                    }
                    ocikit_ok(&args);
                    files.push(f);
                }
                assert_eq!(
                    sha256_hex(&fs::read(&files[0]).unwrap()),
                    sha256_hex(&fs::read(&files[1]).unwrap()),
                    "two exports of {src} to {target} differ"
                );
            }
        },
    );

    steps.run("round trip: export(import(export)) == export", || {
        // Unnamed: the import has one untagged image, exported again without a name.
        let rt = tmp.join("rt-unnamed");
        ocikit_ok(["import", &s(&out), &s(&rt)]);
        verify_deep(&rt);
        let (cfg, _) = ocikit_config(&s(&rt), None);
        assert_eq!(cfg, fx.legacy.config_digest);
        let again = tmp.join("rt-unnamed.tar");
        ocikit_ok(["export", &s(&rt), &s(&again), "--format", "docker-archive"]);
        assert_eq!(
            fs::read(&again).unwrap(),
            fs::read(&out).unwrap(),
            "unnamed round trip changed the bytes"
        );
        // Named: the import records the RepoTag, which the next export writes back.
        let rt = tmp.join("rt-named");
        ocikit_ok(["import", &s(&named), &s(&rt)]);
        verify_deep(&rt);
        assert_eq!(
            tags_and_names(&ls_images(&s(&rt))),
            vec![pair("v1", "docker.io/demo/named:v1")]
        );
        let again = tmp.join("rt-named.tar");
        ocikit_ok(["export", &s(&rt), &s(&again), "--format", "docker-archive"]);
        assert_eq!(
            fs::read(&again).unwrap(),
            fs::read(&named).unwrap(),
            "named round trip changed the bytes"
        );
    });

    steps.run(
        "re-export an image imported from docker save; docker loads it",
        || {
            // `imported` comes from the import step; Docker's layers are uncompressed tars
            // and stay so.
            let re = tmp.join("re-arm.tar");
            ocikit_ok([
                "export",
                &format!("{}:arm64", s(&imported)),
                &format!("docker-archive:{}:demo/re:arm64", s(&re)),
            ]);
            let a = read_docker_archive(&re);
            assert_eq!(a.images.len(), 1);
            assert_eq!(a.images[0].config_digest, fx.arm.config_digest);
            assert_eq!(
                a.images[0].layer_digests, fx.arm.diff_ids,
                "uncompressed layers from docker save stay uncompressed"
            );
            load_and_check(d, &re, Some("demo/re:arm64"), &fx.arm);
        },
    );
    steps.run(
        "mod --to-docker (zstd layer recompressed to gzip) loads in docker",
        || {
            // A copy, so the fixture's demo keeps its tags for the steps above.
            let layout = tmp.join("mod-layout");
            ocikit_ok([
                "mod",
                &index_src,
                "--tag",
                "mod-docker",
                "--layout",
                &s(&layout),
                "--to-docker",
                "--compress",
                "gzip",
                "--time-max",
                "@1600000000",
                "--label",
                "stage=docker",
            ]);
            let want = demo_image(&layout, "mod-docker", Some("amd64"));
            let a = tmp.join("mod-docker.tar");
            ocikit_ok([
                "export",
                &format!("{}:mod-docker", s(&layout)),
                &format!("docker-archive:{}:demo/mod:1", s(&a)),
                "--platform",
                "linux/amd64",
            ]);
            load_and_check(d, &a, Some("demo/mod:1"), &want);
        },
    );

    eprintln!(
        "docker engine: {} steps passed, {} failed, {:.1} s in all (daemon start {:.2} s)",
        steps.passed.len(),
        steps.failed.len(),
        t0.elapsed().as_secs_f64(),
        d.start_seconds
    );
    assert!(
        steps.failed.is_empty(),
        "{} docker engine step(s) failed:\n  {}",
        steps.failed.len(),
        steps.failed.join("\n  ")
    );
}
