//! Names and identity (issue 13, items 1–3 and 10; design.md "Names and
//! identity"): a name is stored as typed, an entry's identity is its
//! containerd name where present, a re-tag moves a name only between entries
//! of the same identity, and no name is ever dropped silently.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

const IMAGE_NAME: &str = "io.containerd.image.name";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// (ref.name, containerd name, digest) of every index.json entry.
fn names(root: &Path) -> Vec<(Option<String>, Option<String>, String)> {
    index_json(root)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["annotations"][REF_NAME].as_str().map(str::to_string),
                e["annotations"][IMAGE_NAME].as_str().map(str::to_string),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Two one-image layouts with different content.
fn two_images(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let a = dir.join("a");
    let b = dir.join("b");
    build_simple(&a);
    fs::create_dir_all(b.join("blobs/sha256")).unwrap();
    let layer = put_layer(&b, OCI_GZIP, &tar(&[file("db.txt", "db\n")]));
    let m = put_image(&b, "amd64", None, &[layer], false);
    write_layout_files(
        &b,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [m]}),
    );
    (a, b)
}

fn digest_of_cat(loc: &str) -> String {
    digest_of(&ocikit_ok(["cat", loc, "manifest"]).stdout)
}

#[test]
fn target_names_are_stored_as_typed_and_never_collide_on_the_tag_part() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = two_images(t.path());
    let l = t.path().join("L");
    let ls = s(&l);
    ocikit_ok(["copy", &s(&a), &format!("oci:{ls}:acc/app:latest")]);
    ocikit_ok(["copy", &s(&b), &format!("oci:{ls}:acc/db:latest")]);
    let da = digest_of_cat(&s(&a));
    let db = digest_of_cat(&s(&b));
    assert_eq!(
        names(&l),
        vec![
            (
                Some("acc/app:latest".into()),
                Some("docker.io/acc/app:latest".into()),
                da.clone()
            ),
            (
                Some("acc/db:latest".into()),
                Some("docker.io/acc/db:latest".into()),
                db.clone()
            ),
        ]
    );
    assert_eq!(digest_of_cat(&format!("{ls}:acc/app:latest")), da);
    assert_eq!(digest_of_cat(&format!("{ls}:acc/db:latest")), db);
    // The normalised name resolves too.
    assert_eq!(digest_of_cat(&format!("{ls}:docker.io/acc/app:latest")), da);
    // gc --prune-untagged keeps both images.
    ocikit_ok(["gc", &ls, "--prune-untagged"]);
    ocikit_ok(["verify", &ls]);
    assert_eq!(names(&l).len(), 2);
    // skopeo finds the name exactly as typed.
    if tools("skopeo_finds_typed_name", &["skopeo"]) {
        let o = run_ok(
            "skopeo",
            &["inspect", "--raw", &format!("oci:{ls}:acc/app:latest")],
        );
        assert_eq!(digest_of(&o.stdout), da);
    }
    // Re-copying under the same name moves it (same identity).
    ocikit_ok(["copy", &s(&b), &format!("oci:{ls}:acc/app:latest")]);
    assert_eq!(digest_of_cat(&format!("{ls}:acc/app:latest")), db);
    assert_eq!(digest_of_cat(&format!("{ls}:acc/db:latest")), db);
}

/// index.json as Docker 25 and containerd write it: one ref.name (the tag
/// part) on several entries, told apart by their containerd names.
fn docker25_layout(dir: &Path) -> (std::path::PathBuf, String, String) {
    let t = dir.join("src");
    let (a, b) = two_images(&t);
    let l = dir.join("d25");
    fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    for src in [&a, &b] {
        for e in fs::read_dir(src.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), l.join("blobs/sha256").join(e.file_name())).unwrap();
        }
    }
    let ea = index_json(&a)["manifests"][0].clone();
    let eb = index_json(&b)["manifests"][0].clone();
    let entry = |e: &Value, full: &str| {
        let mut e = e.clone();
        e["annotations"] = json!({IMAGE_NAME: full, REF_NAME: "latest"});
        e
    };
    write_layout_files(
        &l,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            entry(&ea, "docker.io/library/app:latest"),
            entry(&eb, "docker.io/library/db:latest"),
        ]}),
    );
    let da = ea["digest"].as_str().unwrap().to_string();
    let db = eb["digest"].as_str().unwrap().to_string();
    (l, da, db)
}

#[test]
fn entries_sharing_a_tag_part_are_told_apart_by_their_containerd_names() {
    let t = tempfile::tempdir().unwrap();
    let (l, da, db) = docker25_layout(t.path());
    let ls = s(&l);
    assert_eq!(digest_of_cat(&format!("{ls}:app:latest")), da);
    assert_eq!(digest_of_cat(&format!("{ls}:db")), db);
    // The shared tag part alone is ambiguous: the error lists both names.
    let o = ocikit(["inspect", &format!("{ls}:latest")]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("app:latest") && stderr(&o).contains("db:latest"),
        "{}",
        stderr(&o)
    );
    // Another name's tag part never falls back to one of them.
    let o = ocikit(["inspect", &format!("{ls}:other:latest")]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    // verify does not warn about a shared tag part when full names differ.
    let v = ocikit(["verify", &ls]);
    assert_eq!(code(&v), 0);
    assert!(!stdout(&v).contains("is on manifests"), "{}", stdout(&v));
    // A re-tag with a plain tag leaves both names alone.
    ocikit_ok(["tag", &format!("{ls}:app:latest"), "latest"]);
    assert_eq!(digest_of_cat(&format!("{ls}:app:latest")), da);
    assert_eq!(digest_of_cat(&format!("{ls}:db:latest")), db);
    // untag of one full name leaves the other.
    ocikit_ok(["untag", &format!("{ls}:db:latest")]);
    assert_eq!(digest_of_cat(&format!("{ls}:app:latest")), da);
    let db_names: Vec<_> = names(&l).into_iter().filter(|(_, _, d)| *d == db).collect();
    assert_eq!(
        db_names,
        vec![(None, None, db.clone())],
        "db keeps its entry, untagged"
    );
    // Importing both from a docker-archive written by ocikit keeps both names.
    let (l2, da2, db2) = docker25_layout(&t.path().join("again"));
    let tarball = t.path().join("both.tar");
    ocikit_ok([
        "export",
        "--format",
        "docker-archive",
        &format!("{}:app:latest", s(&l2)),
        &format!("{}:db:latest", s(&l2)),
        &s(&tarball),
    ]);
    let imported = t.path().join("imported");
    ocikit_ok(["import", &s(&tarball), &s(&imported)]);
    let il = s(&imported);
    assert_eq!(digest_of_cat(&format!("{il}:app:latest")), da2);
    assert_eq!(digest_of_cat(&format!("{il}:db:latest")), db2);
    ocikit_ok(["gc", &il, "--prune-untagged"]);
    assert_eq!(names(&imported).len(), 2);
}

#[test]
fn oci_view_names_become_repotags_and_both_views_agree_when_unnamed() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = two_images(t.path());
    let l = t.path().join("L");
    let ls = s(&l);
    // As podman writes its OCI view: the full name in ref.name.
    ocikit_ok(["copy", &s(&a), &format!("oci:{ls}:localhost/acc/one:1.0")]);
    ocikit_ok(["copy", &s(&b), &format!("oci:{ls}:l3")]);
    let out = t.path().join("x");
    let archive = t.path().join("named.tar");
    ocikit_ok([
        "export",
        "--format",
        "docker-archive",
        &format!("{ls}:localhost/acc/one:1.0"),
        &s(&archive),
    ]);
    fs::create_dir_all(&out).unwrap();
    run_ok("tar", &["-xf", &s(&archive), "-C", &s(&out)]);
    let mj: Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(mj[0]["RepoTags"], json!(["localhost/acc/one:1.0"]));
    let idx = index_json(&out);
    assert_eq!(
        idx["manifests"][0]["annotations"],
        json!({IMAGE_NAME: "localhost/acc/one:1.0", REF_NAME: "1.0"})
    );
    // Unnamed (a bare tag is no docker name): unnamed in both views, with a warning.
    let archive = t.path().join("unnamed.tar");
    let o = ocikit_ok([
        "export",
        "--format",
        "docker-archive",
        &format!("{ls}:l3"),
        &s(&archive),
    ]);
    assert!(stderr(&o).contains("RepoTags"), "{}", stderr(&o));
    let out = t.path().join("y");
    fs::create_dir_all(&out).unwrap();
    run_ok("tar", &["-xf", &s(&archive), "-C", &s(&out)]);
    let mj: Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(mj[0]["RepoTags"], json!([]));
    assert!(
        index_json(&out)["manifests"][0]
            .get("annotations")
            .is_none(),
        "{}",
        index_json(&out)
    );
}

/// containerd exports and Docker 25 saves name an index and, separately, one
/// of its platform manifests: one image, resolved through the index.
#[test]
fn an_index_and_its_own_child_under_one_name_are_one_image() {
    let (_d, demo) = demo_copy();
    let idx = index_json(&demo);
    let index_entry = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"][REF_NAME] == "1.0")
        .unwrap()
        .clone();
    let nested: Value =
        serde_json::from_slice(&blob_bytes(&demo, index_entry["digest"].as_str().unwrap()))
            .unwrap();
    let child = nested["manifests"][0].clone();
    let name = json!({IMAGE_NAME: "docker.io/library/busybox:latest", REF_NAME: "latest"});
    let mut e1 = index_entry.clone();
    e1["annotations"] = name.clone();
    let mut e2 = child.clone();
    e2["annotations"] = name;
    fs::write(
        demo.join("index.json"),
        to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e1, e2]})),
    )
    .unwrap();
    let l = s(&demo);
    for r in ["busybox:latest", "busybox", "latest"] {
        let o = ocikit_ok(["inspect", &format!("{l}:{r}"), "--platform", "linux/arm64"]);
        assert!(stdout(&o).contains("arm64"), "{r}: {}", stdout(&o));
        assert_eq!(
            digest_of_cat(&format!("{l}:{r}")),
            digest_of(
                &ocikit_ok([
                    "cat",
                    &format!("{l}@{}", child["digest"].as_str().unwrap()),
                    "manifest"
                ])
                .stdout
            ),
            "{r}: the host default platform"
        );
    }
    let o = ocikit_ok(["ls", &l]);
    assert_eq!(
        stdout(&o).matches("busybox:latest").count(),
        1,
        "ls lists the name once:\n{}",
        stdout(&o)
    );
}
