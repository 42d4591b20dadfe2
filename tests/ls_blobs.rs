//! `ls --json --blobs`: every blob a location holds, digest and size (what
//! the far side of an air gap already has), from layouts and archives alike.

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::*;

/// digest → size, from the files under blobs/sha256.
fn stored(root: &std::path::Path) -> BTreeMap<String, u64> {
    fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                format!("sha256:{}", e.file_name().to_string_lossy()),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

fn listed(location: &str) -> BTreeMap<String, u64> {
    let o = ocikit(["ls", location, "--json", "--blobs"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    v["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().unwrap().to_string(),
                b["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_stored_blob_is_listed_with_its_size() {
    let (t, demo) = demo_copy();
    assert_eq!(listed(&s(&demo)), stored(&demo));
    // An unreferenced blob is held too: it is listed.
    put_blob(&demo, "application/octet-stream", b"loose\n");
    let l = listed(&s(&demo));
    assert_eq!(l, stored(&demo));
    assert_eq!(l.get(&digest_of(b"loose\n")), Some(&6));
    // Without --blobs the document has no blobs key (its schema unchanged).
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&ocikit_ok(["ls", &s(&demo), "--json"]))).unwrap();
    assert!(v.get("blobs").is_none(), "{v}");
    // --blobs is a JSON-only addition.
    assert_eq!(code(&ocikit(["ls", &s(&demo), "--blobs"])), 2);
    // An archive lists the blobs it holds.
    let a = t.path().join("a.tar");
    ocikit_ok(["export", &format!("{}:legacy", s(&demo)), &s(&a)]);
    let in_archive = listed(&format!("oci-archive:{}", s(&a)));
    assert!(!in_archive.is_empty());
    for (d, size) in &in_archive {
        assert_eq!(stored(&demo).get(d), Some(size), "{d}");
    }
}
