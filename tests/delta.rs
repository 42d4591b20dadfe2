//! Delta bundles: `export … --delta-from HAVE` carries only the blobs the
//! far side lacks and records what it was made against; `import` of a delta
//! publishes nothing unless every blob its images need is there.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// A layout with `base` (layers 1, 2, 3) and `v2` (layers 1, 2, 4: all but
/// one shared). Returns the layout and v2's own blobs (manifest, config,
/// layer 4) and the two shared layers.
struct Fixture {
    _t: tempfile::TempDir,
    dir: PathBuf,
    src: PathBuf,
    v2_own: BTreeSet<String>,
    shared: Vec<String>,
    v2_manifest: String,
}

fn layer(root: &Path, name: &'static str, body: &str) -> (Value, String) {
    put_layer(root, OCI_GZIP, &tar(&[file(name, body)]))
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    let src = dir.join("src");
    let l1 = layer(&src, "etc/one", "first layer\n");
    let l2 = layer(&src, "etc/two", "second layer\n");
    let l3 = layer(&src, "app/v1", "version one\n");
    let l4 = layer(&src, "app/v2", "version two\n");
    let base = put_image(&src, "amd64", None, &[l1.clone(), l2.clone(), l3], false);
    let v2 = put_image(
        &src,
        "amd64",
        None,
        &[l1.clone(), l2.clone(), l4.clone()],
        false,
    );
    let mut b = base.clone();
    b["annotations"] = json!({"org.opencontainers.image.ref.name": "base"});
    let mut v = v2.clone();
    v["annotations"] = json!({"org.opencontainers.image.ref.name": "v2"});
    write_layout_files(
        &src,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [b, v]}),
    );
    let v2_digest = v2["digest"].as_str().unwrap().to_string();
    let manifest: Value = serde_json::from_slice(&blob_bytes(&src, &v2_digest)).unwrap();
    let v2_own = [
        v2_digest.clone(),
        manifest["config"]["digest"].as_str().unwrap().to_string(),
        l4.0["digest"].as_str().unwrap().to_string(),
    ]
    .into_iter()
    .collect();
    Fixture {
        _t: t,
        dir,
        src,
        v2_own,
        shared: vec![
            l1.0["digest"].as_str().unwrap().to_string(),
            l2.0["digest"].as_str().unwrap().to_string(),
        ],
        v2_manifest: v2_digest,
    }
}

/// Side B: base exported, carried, imported.
fn side_b(f: &Fixture) -> PathBuf {
    let base_tar = f.dir.join("base.tar");
    ocikit_ok(["export", &format!("{}:base", s(&f.src)), &s(&base_tar)]);
    let b = f.dir.join("B");
    ocikit_ok(["import", &s(&base_tar), &s(&b)]);
    b
}

/// `ocikit export SRC:v2 OUT --delta-from HAVE EXTRA...`, which must succeed.
fn export_v2(f: &Fixture, out: &Path, have: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "export".to_string(),
        format!("{}:v2", s(&f.src)),
        s(out),
        "--delta-from".to_string(),
        s(have),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    ocikit_ok(args)
}

/// The digests of the blobs an archive holds, and its index.json.
fn archive_blobs(path: &Path) -> (BTreeSet<String>, Value) {
    let mut a = tar::Archive::new(fs::File::open(path).unwrap());
    let mut blobs = BTreeSet::new();
    let mut index = Value::Null;
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        if let Some(hex) = p.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            blobs.insert(format!("sha256:{hex}"));
        } else if p == "index.json" {
            index = serde_json::from_reader(&mut e).unwrap();
        }
    }
    (blobs, index)
}

fn ls_blobs_json(layout: &Path, out: &Path) -> Value {
    let o = ocikit_ok(["ls", &s(layout), "--json", "--blobs"]);
    fs::write(out, o.stdout.clone()).unwrap();
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn delta_carries_only_the_blobs_the_far_side_lacks_and_imports_there() {
    let f = fixture();
    let b = side_b(&f);
    let have = f.dir.join("have.json");
    let listed = ls_blobs_json(&b, &have);
    let fp = listed["blobsFingerprint"].as_str().unwrap().to_string();
    let delta = f.dir.join("delta.tar");
    let o = export_v2(&f, &delta, &have, &[]);
    assert!(
        stderr(&o).contains("left out 2 blobs"),
        "the two shared layers are left out: {}",
        stderr(&o)
    );
    let (blobs, index) = archive_blobs(&delta);
    assert_eq!(blobs, f.v2_own, "only v2's manifest, config and new layer");
    let ann = &index["annotations"];
    assert_eq!(ann["dev.ocikit.delta.base"], json!(fp));
    assert_eq!(
        ann["dev.ocikit.delta.base.blobs"],
        json!(listed["blobs"].as_array().unwrap().len().to_string())
    );
    assert_eq!(ann["dev.ocikit.delta.omitted"], json!("2"));
    assert!(ann["dev.ocikit.delta.base.description"]
        .as_str()
        .unwrap()
        .contains("have.json"));

    // The same side given as its layout or as the archive it was filled
    // from: the same fingerprint and the same blobs left out.
    for other in [s(&b), s(&f.dir.join("base.tar"))] {
        let d = f.dir.join("delta-other.tar");
        ocikit_ok([
            "export",
            &format!("{}:v2", s(&f.src)),
            &s(&d),
            "--delta-from",
            &other,
        ]);
        let (blobs2, index2) = archive_blobs(&d);
        assert_eq!(blobs2, f.v2_own, "against {other}");
        assert_eq!(index2["annotations"]["dev.ocikit.delta.base"], json!(fp));
    }

    // Side B imports it: v2 is there with its digest, and verifies deep.
    let o = ocikit_ok(["import", &s(&delta), &s(&b)]);
    assert!(stderr(&o).contains("verified"), "{}", stderr(&o));
    assert_eq!(index_entry(&b, "v2")["digest"], json!(f.v2_manifest));
    assert_eq!(index_tags(&b), ["base", "v2"]);
    let o = ocikit(["verify", "--deep", &s(&b)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // Again: nothing changes.
    let content = |root: &Path| {
        let mut m = snapshot(root);
        m.remove(".ocikit.lock"); // holds the last writer's pid
        m
    };
    let before = content(&b);
    let o = ocikit_ok(["import", &s(&delta), &s(&b)]);
    assert!(stderr(&o).contains("0 blobs written"), "{}", stderr(&o));
    assert_eq!(content(&b), before);
}

#[test]
fn delta_into_a_layout_without_its_base_publishes_nothing() {
    let f = fixture();
    let b = side_b(&f);
    let have = f.dir.join("have.json");
    ls_blobs_json(&b, &have);
    let delta = f.dir.join("delta.tar");
    export_v2(&f, &delta, &have, &[]);
    // A layout that does not exist yet is not created.
    let empty = f.dir.join("empty");
    let err = fails(
        &["import", &s(&delta), &s(&empty)],
        &[
            &f.shared[0],
            &f.shared[1],
            "delta bundle made against",
            "have.json",
            "lacks 2 blobs",
            "nothing was imported",
        ],
    );
    assert!(!empty.exists(), "{err}");
    // An existing empty layout is left as it was.
    write_layout_files(
        &empty,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
    );
    let before = snapshot(&empty);
    fails(
        &["import", &s(&delta), &s(&empty)],
        &[&f.shared[0], &f.shared[1]],
    );
    assert_eq!(snapshot(&empty), before);
    // A layout holding one of the two lacks only the other.
    put_blob(&empty, OCI_GZIP, &blob_bytes(&f.src, &f.shared[0]));
    let err = fails(
        &["import", &s(&delta), &s(&empty)],
        &[&f.shared[1], "lacks 1 blob "],
    );
    assert!(!err.contains(&f.shared[0]), "{err}");
    assert!(index_tags(&empty).is_empty());
}

#[test]
fn a_damaged_base_blob_stops_the_import() {
    let f = fixture();
    let b = side_b(&f);
    let delta = f.dir.join("delta.tar");
    export_v2(&f, &delta, &b, &[]);
    // Same size, one byte changed: only hashing finds it.
    let p = b.join("blobs").join(blob_name(&f.shared[1]));
    let mut bytes = fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&p, bytes).unwrap();
    let index_before = fs::read(b.join("index.json")).unwrap();
    fails(
        &["import", &s(&delta), &s(&b)],
        &[&f.shared[1], "damaged", "nothing was imported"],
    );
    assert_eq!(fs::read(b.join("index.json")).unwrap(), index_before);
}

#[test]
fn verify_reads_a_delta_bundle_its_left_out_blobs_as_warnings() {
    let f = fixture();
    let b = side_b(&f);
    let delta = f.dir.join("delta.tar");
    export_v2(&f, &delta, &b, &["--checksum"]);
    let o = ocikit(["verify", "--json", &s(&delta)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let omitted: BTreeSet<String> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "delta-omitted")
        .map(|f| f["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(omitted, f.shared.iter().cloned().collect());
    assert_eq!(v["errors"], json!(0));
    // Its own blobs are still checked: a damaged one is an error.
    let d2 = f.dir.join("delta2.tar");
    export_v2(&f, &d2, &b, &[]);
    let mut bytes = fs::read(&d2).unwrap();
    let manifest = blob_bytes(&f.src, &f.v2_manifest);
    let at = bytes
        .windows(manifest.len())
        .position(|w| w == manifest.as_slice())
        .unwrap();
    bytes[at + 5] ^= 1;
    fs::write(&d2, bytes).unwrap();
    assert_eq!(code(&ocikit(["verify", &s(&d2)])), 1);
}

#[test]
fn delta_refusals_say_why() {
    let f = fixture();
    let b = side_b(&f);
    let src = format!("{}:v2", s(&f.src));
    let out = s(&f.dir.join("d.tar"));
    fails(
        &[
            "export",
            &src,
            &format!("docker-archive:{out}"),
            "--delta-from",
            &s(&b),
        ],
        &["oci-archive", "docker-archive must hold every layer"],
    );
    fails(
        &[
            "export",
            &src,
            &out,
            "--delta-from",
            &s(&b),
            "--uncompressed-layers",
        ],
        &["--uncompressed-layers"],
    );
    fails(
        &["copy", &src, &s(&f.dir.join("lay")), "--delta-from", &s(&b)],
        &["writes an archive"],
    );
    let no_blobs = f.dir.join("ls.json");
    fs::write(
        &no_blobs,
        stdout(&ocikit_ok(["ls", &s(&b), "--json"])).as_bytes(),
    )
    .unwrap();
    fails(
        &["export", &src, &out, "--delta-from", &s(&no_blobs)],
        &["ls.json", "--blobs"],
    );
    fs::write(
        &no_blobs,
        b"{\"blobs\": [{\"digest\": \"sha256:zz\", \"size\": 1}]}",
    )
    .unwrap();
    fails(
        &["export", &src, &out, "--delta-from", &s(&no_blobs)],
        &["ls.json", "sha256:zz"],
    );
    fails(
        &[
            "export",
            &src,
            &out,
            "--delta-from",
            &s(&f.dir.join("nowhere")),
        ],
        &["nowhere"],
    );
    // The delta may not overwrite what it is made against.
    let have_tar = f.dir.join("base.tar");
    let before = fs::read(&have_tar).unwrap();
    fails(
        &["export", &src, &s(&have_tar), "--delta-from", &s(&have_tar)],
        &["base.tar"],
    );
    assert_eq!(fs::read(&have_tar).unwrap(), before);
    assert!(!f.dir.join("d.tar").exists());
}

#[test]
fn dry_run_and_json_say_what_a_delta_would_carry() {
    let f = fixture();
    let b = side_b(&f);
    let delta = f.dir.join("delta.tar");
    // Export --dry-run: no file, the counts of the real run.
    let o = export_v2(&f, &delta, &b, &["--dry-run", "--json"]);
    assert!(!delta.exists());
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["dryRun"], json!(true));
    assert_eq!(v["blobsWritten"], json!(3));
    assert_eq!(v["blobsSkipped"], json!(2));
    assert_eq!(v["delta"]["blobsLeftOut"], json!(2));
    let o = export_v2(&f, &delta, &b, &["--json"]);
    let real: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(real["dryRun"], json!(false));
    for k in [
        "blobsWritten",
        "blobsSkipped",
        "bytesWritten",
        "images",
        "delta",
    ] {
        assert_eq!(real[k], v[k], "{k}");
    }
    assert_eq!(archive_blobs(&delta).0.len(), 3);
    // Import --dry-run: B unchanged, 3 blobs to write, 2 (verified) there.
    let before = fs::read(b.join("index.json")).unwrap();
    let blobs_before = blob_files(&b);
    let o = ocikit_ok(["import", &s(&delta), &s(&b), "--dry-run"]);
    assert!(
        stdout(&o).contains("would write 3 blobs") && stdout(&o).contains(&f.v2_manifest),
        "{}",
        stdout(&o)
    );
    assert_eq!(fs::read(b.join("index.json")).unwrap(), before);
    assert_eq!(blob_files(&b), blobs_before);
    // Into an empty place, --dry-run refuses as the import would.
    fails(
        &[
            "import",
            &s(&delta),
            &s(&f.dir.join("nowhere")),
            "--dry-run",
        ],
        &[&f.shared[0], &f.shared[1]],
    );
}
