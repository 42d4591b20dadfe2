//! The library API, called directly (the CLI tests cover the same ground
//! through the binary): resolve, verify, graph, gc, copy and the archive
//! readers, on layouts built here or the committed testdata layouts.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use ocikit::archive::{ArchiveFormat, ArchiveStore, Expect};
use ocikit::copy::{self, ArchiveKind, ArchiveOut, CopyOptions, Source};
use ocikit::gc::{self, GcError, GcOptions};
use ocikit::graph::{self, IssueKind, Role, WalkOptions};
use ocikit::platform::PlatformSpec;
use ocikit::resolve::{self, ResolveError};
use ocikit::spec::Compression;
use ocikit::verify::{self, VerifyOptions};
use ocikit::{Digest, Layout, PlatformChoice, Reference, Store};
use serde_json::{json, Value};

use common::{build_simple, demo, demo_copy, put_blob, snapshot};

fn tag(t: &str) -> Reference {
    Reference::Tag(t.into())
}

fn platform(p: &str) -> PlatformChoice {
    PlatformChoice::Specific(p.parse::<PlatformSpec>().unwrap())
}

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

/// The digest `index.json` (or the index blob `bytes`) lists for `tag` or,
/// in an index, for the entry whose architecture is `arch`.
fn listed(bytes: &[u8], pick: impl Fn(&Value) -> bool) -> Digest {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    let found: Vec<&Value> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| pick(e))
        .collect();
    assert_eq!(found.len(), 1, "{v}");
    digest(found[0]["digest"].as_str().unwrap())
}

fn tagged(t: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["annotations"]["org.opencontainers.image.ref.name"] == t
}

fn arch(a: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["platform"]["architecture"] == a
}

/// The digests of the files under `blobs/`.
fn stored_blobs(store: &dyn Store) -> BTreeSet<Digest> {
    store
        .list_blobs()
        .unwrap()
        .into_iter()
        .map(|e| e.digest.expect("every blob file is named by a digest"))
        .collect()
}

/// A one-image layout (tag `latest`) plus one blob nothing references;
/// returns the layout, the referenced digests and the unreferenced one.
fn simple_with_garbage(root: &Path) -> (Layout, BTreeSet<Digest>, Digest) {
    let (manifest, config, layer) = build_simple(root);
    let garbage = put_blob(root, "application/octet-stream", b"nobody points here\n");
    let referenced = [manifest, config, layer]
        .iter()
        .map(|d| digest(d["digest"].as_str().unwrap()))
        .collect();
    let garbage = digest(garbage["digest"].as_str().unwrap());
    (Layout::open(root).unwrap(), referenced, garbage)
}

// ---------------------------------------------------------------- resolve

#[test]
fn resolve_by_tag_digest_and_platform() {
    let layout = Layout::open(demo()).unwrap();
    let index_json = fs::read(demo().join("index.json")).unwrap();
    let index_digest = listed(&index_json, tagged("1.0"));

    let arm = layout
        .resolve(Some(&tag("1.0")), &platform("linux/arm64"))
        .unwrap();
    let amd = layout
        .resolve(Some(&tag("1.0")), &platform("linux/amd64"))
        .unwrap();
    // Chosen through the tagged index, by the index's own platform entries.
    assert_eq!(arm.indexes.len(), 1);
    assert_eq!(arm.indexes[0].digest, index_digest);
    let index_bytes = &arm.indexes[0].bytes;
    assert_eq!(arm.manifest.digest, listed(index_bytes, arch("arm64")));
    assert_eq!(amd.manifest.digest, listed(index_bytes, arch("amd64")));
    assert_ne!(arm.manifest.digest, amd.manifest.digest);
    assert_eq!(arm.platform.as_ref().unwrap().architecture, "arm64");
    assert_eq!(arm.layers().len(), 3);

    // By digest: the manifest itself, whatever the tag.
    let by_digest = layout
        .resolve(
            Some(&Reference::Digest(arm.manifest.digest.clone())),
            &PlatformChoice::Host,
        )
        .unwrap();
    assert_eq!(by_digest.manifest.digest, arm.manifest.digest);
    assert_eq!(by_digest.manifest.bytes, arm.manifest.bytes);

    // A single-manifest tag, through the free function too.
    let legacy =
        resolve::resolve_image(layout.store(), Some(&tag("legacy")), &PlatformChoice::Host)
            .unwrap();
    assert_eq!(
        legacy.manifest.digest,
        listed(&index_json, tagged("legacy"))
    );
    assert!(legacy.indexes.is_empty());
}

#[test]
fn resolve_unknown_tag_is_not_found_and_names_the_tags() {
    let layout = Layout::open(demo()).unwrap();
    let err = layout
        .resolve(Some(&tag("no-such-tag")), &PlatformChoice::Host)
        .unwrap_err();
    match &err {
        ResolveError::NotFound {
            reference,
            available,
            ..
        } => {
            assert!(reference.contains("no-such-tag"), "{err}");
            assert!(available.iter().any(|a| a.contains("1.0")), "{err}");
            assert!(available.iter().any(|a| a.contains("legacy")), "{err}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn resolve_platform_no_manifest_has_is_refused() {
    let layout = Layout::open(demo()).unwrap();
    let err = layout
        .resolve(Some(&tag("1.0")), &platform("linux/s390x"))
        .unwrap_err();
    match &err {
        ResolveError::NoPlatform {
            wanted, available, ..
        } => {
            assert!(wanted.contains("s390x"), "{err}");
            assert_eq!(available.len(), 2, "{err}");
            assert!(available.iter().any(|a| a.contains("amd64")), "{err}");
            assert!(available.iter().any(|a| a.contains("arm64")), "{err}");
        }
        other => panic!("expected NoPlatform, got {other:?}"),
    }
    // A single manifest asked for with another platform is refused too.
    let err = layout
        .resolve(Some(&tag("legacy")), &platform("linux/arm64"))
        .unwrap_err();
    assert!(matches!(err, ResolveError::NoPlatform { .. }), "{err:?}");
}

// ---------------------------------------------------------------- verify

#[test]
fn verify_clean_layout_then_corrupted_blob_names_its_digest() {
    let (_t, root) = demo_copy();
    let layout = Layout::open(&root).unwrap();
    let report = verify::verify(layout.store(), &VerifyOptions::default());
    assert!(report.is_clean(), "{:?}", report.findings);
    assert!(!report.deep);
    assert_eq!(report.layers_decompressed, 0);
    // Every stored blob is reachable (the SBOM as a referrer) and checked.
    assert_eq!(
        report.blobs_checked as usize,
        stored_blobs(layout.store()).len()
    );

    // Flip one byte of the legacy image's first layer, keeping its size.
    let legacy = layout
        .resolve(Some(&tag("legacy")), &PlatformChoice::Host)
        .unwrap();
    let layer = legacy.layers()[0].digest.clone();
    let path = common::blob_path(&root, &json!({ "digest": layer }));
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).unwrap();

    let report = verify::verify(layout.store(), &VerifyOptions::default());
    assert!(!report.is_clean());
    let errors: Vec<_> = report.errors().collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind, IssueKind::DigestMismatch);
    assert_eq!(errors[0].digest.as_deref(), Some(layer.as_str()));
}

#[test]
fn verify_deep_checks_layer_contents_against_diff_ids() {
    // The demo is clean deep too, and its layers were decompressed.
    let layout = Layout::open(demo()).unwrap();
    let deep = VerifyOptions {
        deep: true,
        ..Default::default()
    };
    let report = verify::verify(layout.store(), &deep);
    assert!(report.is_clean(), "{:?}", report.findings);
    assert!(report.deep);
    assert!(report.layers_decompressed >= 4, "{report:?}");

    // A layer whose config names another DiffID: the blob matches its
    // digest (a shallow verify passes), only decompressing tells.
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let (layer, _) = common::put_layer(
        root,
        common::OCI_GZIP,
        &common::tar(&[common::file("a.txt", "a\n")]),
    );
    let wrong = common::digest_of(b"some other tar");
    let manifest = common::put_image(root, "amd64", None, &[(layer.clone(), wrong)], false);
    let mut entry = manifest.clone();
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "bad"});
    common::write_layout_files(
        root,
        &json!({"schemaVersion": 2, "mediaType": common::OCI_INDEX, "manifests": [entry]}),
    );
    let layout = Layout::open(root).unwrap();
    let shallow = verify::verify(layout.store(), &VerifyOptions::default());
    assert!(shallow.is_clean(), "{:?}", shallow.findings);
    let report = verify::verify(layout.store(), &deep);
    let errors: Vec<_> = report.errors().collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind, IssueKind::DiffidMismatch);
    assert_eq!(errors[0].digest.as_deref(), layer["digest"].as_str());
}

// ---------------------------------------------------------------- graph

#[test]
fn graph_walk_reaches_what_index_json_references() {
    let t = tempfile::tempdir().unwrap();
    let (layout, referenced, garbage) = simple_with_garbage(t.path());
    let g = graph::walk(layout.store(), WalkOptions::default());
    assert!(g.issues.is_empty(), "{:?}", g.issues);
    let reached: BTreeSet<Digest> = g.reached.keys().cloned().collect();
    assert_eq!(reached, referenced);
    assert!(!reached.contains(&garbage));
    assert_eq!(stored_blobs(layout.store()).len(), referenced.len() + 1);
    let roles: BTreeSet<String> = g
        .reached
        .values()
        .map(|r| format!("{:?}", r.role))
        .collect();
    assert_eq!(roles, ["Config", "Entry", "Layer"].map(String::from).into());

    // The demo's SBOM is listed nowhere: reached only as a referrer.
    let demo = Layout::open(demo()).unwrap();
    let with = graph::walk(demo.store(), WalkOptions::default());
    let without = graph::walk(
        demo.store(),
        WalkOptions {
            referrers: false,
            ..WalkOptions::default()
        },
    );
    assert_eq!(with.referrers.len(), 1, "{:?}", with.referrers);
    let sbom = &with.referrers[0];
    assert_eq!(with.reached[sbom].role, Role::Referrer);
    assert!(!without.reached.contains_key(sbom));
    let extra: BTreeSet<&Digest> = with
        .reached
        .keys()
        .filter(|d| !without.reached.contains_key(*d))
        .collect();
    // What the referrer adds: itself, its (empty) config and its layer.
    let sbom_manifest: Value =
        serde_json::from_slice(&common::blob_bytes(&common::demo(), &sbom.to_string())).unwrap();
    let mut want: BTreeSet<&Digest> = BTreeSet::from([sbom]);
    let parts: Vec<Digest> = std::iter::once(&sbom_manifest["config"])
        .chain(sbom_manifest["layers"].as_array().unwrap())
        .map(|d| digest(d["digest"].as_str().unwrap()))
        .collect();
    want.extend(parts.iter());
    assert_eq!(parts[0].to_string(), graph::EMPTY_DIGEST);
    assert_eq!(extra, want);
    // The demo is complete and has no garbage: everything stored is reached.
    let reached: BTreeSet<Digest> = with.reached.keys().cloned().collect();
    assert_eq!(reached, stored_blobs(demo.store()));
}

// ---------------------------------------------------------------- gc

#[test]
fn gc_plans_and_removes_exactly_the_unreferenced_blob() {
    let t = tempfile::tempdir().unwrap();
    let (layout, referenced, garbage) = simple_with_garbage(t.path());
    let before = snapshot(t.path());

    let plan = gc::gc(
        &layout,
        &GcOptions {
            dry_run: true,
            ..GcOptions::default()
        },
    )
    .unwrap();
    let planned: Vec<&str> = plan.remove.iter().map(|r| r.digest.as_str()).collect();
    assert_eq!(planned, vec![garbage.to_string().as_str()]);
    assert_eq!(plan.blobs, 1);
    assert_eq!(plan.bytes, b"nobody points here\n".len() as u64);
    assert_eq!(plan.kept, referenced.len());
    assert_eq!(snapshot(t.path()), before, "a dry run changes nothing");

    let done = gc::gc(&layout, &GcOptions::default()).unwrap();
    assert_eq!(done.blobs, 1);
    assert_eq!(done.remove[0].digest, garbage.to_string());
    assert_eq!(stored_blobs(layout.store()), referenced);
    assert!(verify::verify(layout.store(), &VerifyOptions::default()).is_clean());
    // Nothing else changed: every other file is as it was (gc adds only
    // its lock file).
    let mut expected = before;
    let gone = expected.remove(&format!("blobs/sha256/{}", garbage.encoded()));
    assert!(gone.is_some());
    let mut after = snapshot(t.path());
    after.remove(".ocikit.lock");
    assert_eq!(after, expected);
}

#[test]
fn gc_refuses_an_invalid_index_json_and_deletes_nothing() {
    for bad in [
        &br#"{"schemaVersion":2,"manifests":null}"#[..],
        &br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:nothex","size":1}]}"#[..],
        &b"not json"[..],
    ] {
        let t = tempfile::tempdir().unwrap();
        let (layout, referenced, garbage) = simple_with_garbage(t.path());
        fs::write(t.path().join("index.json"), bad).unwrap();
        let before = snapshot(t.path());
        let err = gc::gc(&layout, &GcOptions::default()).unwrap_err();
        assert!(
            matches!(err, GcError::Index { .. }),
            "{}: {err:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(err.to_string().contains("gc deletes nothing"), "{err}");
        let mut after = snapshot(t.path());
        after.remove(".ocikit.lock");
        assert_eq!(after, before);
        let stored = stored_blobs(layout.store());
        assert!(stored.contains(&garbage) && referenced.is_subset(&stored));
    }
}

// ---------------------------------------------------------------- copy

#[test]
fn copy_one_tagged_image_into_a_new_layout() {
    let source = Layout::open(demo()).unwrap();
    let t = tempfile::tempdir().unwrap();
    for name in ["legacy", "1.0"] {
        let target = t.path().join(format!("copy-{name}"));
        let sources = [Source {
            store: source.store(),
            reference: Some(tag(name)),
        }];
        let plan = copy::plan(&sources, &CopyOptions::default()).unwrap();
        assert_eq!(plan.roots.len(), 1);
        let report = copy::write_layout(&sources, &plan, &target, &()).unwrap();
        assert_eq!(report.blobs_written as usize, plan.blobs.len());

        let copied = Layout::open(&target).unwrap();
        let v = verify::verify(copied.store(), &VerifyOptions::default());
        assert!(v.is_clean(), "{name}: {:?}", v.findings);
        // The same image under the same tag, and only what it needs.
        let amd64 = platform("linux/amd64");
        let want = source.resolve(Some(&tag(name)), &amd64).unwrap();
        let got = copied.resolve(Some(&tag(name)), &amd64).unwrap();
        assert_eq!(got.manifest.digest, want.manifest.digest);
        let src_index = fs::read(demo().join("index.json")).unwrap();
        let copied_index = fs::read(target.join("index.json")).unwrap();
        assert_eq!(
            listed(&copied_index, tagged(name)),
            listed(&src_index, tagged(name))
        );
        let planned: BTreeSet<Digest> = plan.blobs.iter().map(|b| b.digest.clone()).collect();
        assert_eq!(stored_blobs(copied.store()), planned);
        let other = if name == "1.0" { "legacy" } else { "1.0" };
        let err = copied.resolve(Some(&tag(other)), &amd64).unwrap_err();
        assert!(matches!(err, ResolveError::NotFound { .. }), "{err:?}");
    }
    // The legacy image alone: its manifest, config and layers, nothing else.
    let copied = Layout::open(t.path().join("copy-legacy")).unwrap();
    let legacy = source
        .resolve(Some(&tag("legacy")), &PlatformChoice::Host)
        .unwrap();
    let mut want: BTreeSet<Digest> = legacy.layers().iter().map(|l| digest(&l.digest)).collect();
    want.insert(legacy.manifest.digest.clone());
    want.insert(digest(&legacy.parsed.config.as_ref().unwrap().digest));
    assert_eq!(stored_blobs(copied.store()), want);
}

#[test]
fn export_to_oci_archive_and_docker_archive_then_read_back() {
    let source = Layout::open(demo()).unwrap();
    let t = tempfile::tempdir().unwrap();
    let arm = source
        .resolve(Some(&tag("1.0")), &platform("linux/arm64"))
        .unwrap();

    // oci-archive: the whole tagged index, read back by tag and platform.
    let oci = t.path().join("demo.oci.tar");
    let sources = [Source {
        store: source.store(),
        reference: Some(tag("1.0")),
    }];
    let plan = copy::plan(&sources, &CopyOptions::default()).unwrap();
    copy::write_archive(
        &sources,
        &plan,
        ArchiveKind::OciArchive,
        Compression::None,
        ArchiveOut::File(&oci),
        &(),
    )
    .unwrap();
    let store = ArchiveStore::open(&oci, Expect::Oci).unwrap();
    assert_eq!(store.format(), ArchiveFormat::Oci);
    assert!(store.archive().members().contains_key("oci-layout"));
    let back = resolve::resolve_image(&store, Some(&tag("1.0")), &platform("linux/arm64")).unwrap();
    assert_eq!(back.manifest.digest, arm.manifest.digest);
    assert_eq!(back.indexes[0].digest, arm.indexes[0].digest);
    let v = verify::verify(
        &store,
        &VerifyOptions {
            deep: true,
            ..Default::default()
        },
    );
    assert!(v.is_clean(), "{:?}", v.findings);

    // docker-archive: one image (the arm64 one), under a docker name.
    let docker = t.path().join("demo.docker.tar");
    let options = CopyOptions {
        platforms: vec!["linux/arm64".parse().unwrap()],
        single_image: true,
        target_name: Some("example.com/demo:1.0".into()),
        ..CopyOptions::default()
    };
    let plan = copy::plan(&sources, &options).unwrap();
    let (report, _notes) = copy::write_archive(
        &sources,
        &plan,
        ArchiveKind::DockerArchive,
        Compression::None,
        ArchiveOut::File(&docker),
        &(),
    )
    .unwrap();
    assert_eq!(report.images.len(), 1, "{report:?}");
    let store = ArchiveStore::open(&docker, Expect::Docker).unwrap();
    assert_eq!(store.format(), ArchiveFormat::DockerOci);
    let back = resolve::resolve_image(&store, None, &PlatformChoice::Host).unwrap();
    assert_eq!(back.manifest.digest, arm.manifest.digest);
    // manifest.json names it as docker load reads it.
    let manifest_json: Value =
        serde_json::from_slice(&store.archive().read("manifest.json", 1 << 20).unwrap()).unwrap();
    assert_eq!(
        manifest_json[0]["RepoTags"],
        json!(["example.com/demo:1.0"])
    );
    let config = store
        .archive()
        .digest(manifest_json[0]["Config"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        config.to_string(),
        arm.parsed.config.as_ref().unwrap().digest
    );
    // Opened without naming the kind, it is still found to be the dual format.
    let any = ArchiveStore::open(&docker, Expect::Any).unwrap();
    assert_eq!(any.format(), ArchiveFormat::DockerOci);
}
