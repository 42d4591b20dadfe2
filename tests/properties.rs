//! Property tests: arbitrary bytes never panic the parsers, and hostile
//! layers never write outside the output. CI runs 2,000 cases per parser
//! property and 60 random layers, from a fixed seed (repeatable); the long
//! mode (random seeds) sets `PROPTEST_CASES`
//! (parsers) and `PROPTEST_LAYER_CASES` (layers flattened for real), e.g.
//! `PROPTEST_CASES=1000000 PROPTEST_LAYER_CASES=5000 cargo test --release --test properties`.

mod common;

use std::io::Write;

use common::*;
use proptest::prelude::*;
use serde_json::json;

fn cases(default: u32) -> ProptestConfig {
    cases_from("PROPTEST_CASES", default)
}

/// A tar header block with the given fields, checksum fixed up.
fn header(name: &[u8], typeflag: u8, size_field: &[u8], link: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    h[100..108].copy_from_slice(b"0000644\0");
    let s = size_field.len().min(12);
    h[124..124 + s].copy_from_slice(&size_field[..s]);
    h[156] = typeflag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    let t = tail.len().min(512 - 345);
    h[345..345 + t].copy_from_slice(&tail[..t]);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&c| u32::from(c)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn tar_reader_survives(data: &[u8]) {
    let mut r = ocikit::tarstream::TarReader::new(data);
    let mut buf = [0u8; 4096];
    for _ in 0..10_000 {
        match r.next_entry() {
            Ok(Some(_)) => loop {
                match r.read_data(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Ok(None) | Err(_) => return,
        }
    }
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn tar_reader_never_panics_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        tar_reader_survives(&data);
    }

    #[test]
    fn tar_reader_never_panics_on_valid_headers_with_hostile_fields(
        name in proptest::collection::vec(any::<u8>(), 0..120),
        typeflag in prop_oneof![Just(b'0'), Just(b'1'), Just(b'2'), Just(b'5'), Just(b'x'), Just(b'g'),
                                Just(b'L'), Just(b'K'), Just(b'S'), Just(b'V'), Just(b'D'), any::<u8>()],
        size in proptest::collection::vec(any::<u8>(), 0..12),
        link in proptest::collection::vec(any::<u8>(), 0..100),
        tail in proptest::collection::vec(any::<u8>(), 0..167),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut t = header(&name, typeflag, &size, &link, &tail);
        t.extend_from_slice(&body);
        tar_reader_survives(&t);
    }

    #[test]
    fn json_models_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ocikit::spec::check_json(&data);
        for k in [ocikit::spec::Kind::Index, ocikit::spec::Kind::Manifest, ocikit::spec::Kind::Unknown] {
            let _ = ocikit::spec::parse_document(&data, k);
        }
        let _ = ocikit::spec::parse_config(&data);
    }

    #[test]
    fn json_shaped_documents_never_panic(
        keys in proptest::collection::vec("[a-zA-Z]{1,12}", 0..8),
        vals in proptest::collection::vec(prop_oneof![
            Just(json!(null)), Just(json!(-1)), Just(json!(1e308)), Just(json!("sha256:..")),
            Just(json!([])), Just(json!({})), "[ -~]{0,40}".prop_map(|s| json!(s)),
        ], 0..8),
    ) {
        let mut o = serde_json::Map::new();
        for (k, v) in keys.iter().zip(vals.iter()) {
            o.insert(k.clone(), v.clone());
        }
        for base in [json!({"schemaVersion": 2}), json!({"mediaType": "application/vnd.oci.image.manifest.v1+json"})] {
            let mut m = base.as_object().unwrap().clone();
            m.extend(o.clone());
            let bytes = serde_json::to_vec(&m).unwrap();
            let _ = ocikit::spec::parse_document(&bytes, ocikit::spec::Kind::Manifest);
            let _ = ocikit::spec::parse_document(&bytes, ocikit::spec::Kind::Index);
            let _ = ocikit::spec::parse_config(&bytes);
        }
    }

    #[test]
    fn archive_indexing_never_panics(
        members in proptest::collection::vec((
            prop_oneof![Just("manifest.json".to_string()), Just("index.json".to_string()),
                        Just("oci-layout".to_string()), Just("repositories".to_string()),
                        Just("blobs/sha256/ab".to_string()), Just("../x".to_string()),
                        Just("a/layer.tar".to_string()), "[a-z./]{1,20}"],
            prop_oneof![Just(0u8), Just(1), Just(2)],
            proptest::collection::vec(any::<u8>(), 0..200),
        ), 0..6),
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        // A tar of arbitrary members (regular files, symlinks, directories)
        // with arbitrary contents, plus trailing garbage: opening it as an
        // archive and listing it never panics.
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in &members {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            let name_bytes = name.as_bytes();
            let n = name_bytes.len().min(99);
            h.as_gnu_mut().unwrap().name[..n].copy_from_slice(&name_bytes[..n]);
            match kind {
                0 => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append(&h, &data[..]).unwrap();
                }
                1 => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    let link: Vec<u8> = data.iter().copied().filter(|&c| c != 0).take(99).collect();
                    h.set_link_name_literal(&link).unwrap();
                    h.set_cksum();
                    b.append(&h, std::io::empty()).unwrap();
                }
                _ => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_cksum();
                    b.append(&h, std::io::empty()).unwrap();
                }
            }
        }
        let mut bytes = b.into_inner().unwrap();
        bytes.extend_from_slice(&garbage);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        for expect in [ocikit::archive::Expect::Any, ocikit::archive::Expect::Oci, ocikit::archive::Expect::Docker] {
            if let Ok(store) = ocikit::archive::ArchiveStore::open(f.path(), expect) {
                let _ = ocikit::store::Store::index_bytes(&store);
                let _ = ocikit::resolve::find_descriptor(&store, None);
            }
        }
    }

    #[test]
    fn location_parser_never_panics(s in "\\PC{0,80}") {
        let _ = ocikit::reference::Location::parse_with(&s, |p| p.as_os_str().len() % 3 == 0);
    }

    #[test]
    fn clean_name_never_escapes(name in proptest::collection::vec(
        prop_oneof![Just(b'/'), Just(b'.'), Just(b'a'), Just(b'\\'), any::<u8>()], 0..64)) {
        if let Ok(parts) = ocikit::flatten::clean_name(&name) {
            for p in parts {
                prop_assert!(!p.is_empty() && p != b"." && p != b".." && !p.contains(&b'/'));
            }
        }
    }
}

/// Random small layers of hostile entries, flattened for real: the output
/// stays inside its root (a sentinel beside it never changes), nothing panics.
#[test]
fn random_hostile_layers_stay_inside_the_root() {
    let names: &[&str] = &[
        "a",
        "a/b",
        "../x",
        "/abs",
        "l",
        "l/x",
        ".wh.a",
        "a/.wh..wh..opq",
        ".",
        "./",
        "b/../../y",
    ];
    let targets: &[&str] = &["/", "..", "../..", "a", "/etc", "l", "a/b"];
    let mut runner = proptest::test_runner::TestRunner::new(cases_from("PROPTEST_LAYER_CASES", 60));
    let strategy = proptest::collection::vec((0..names.len(), 0u8..5, 0..targets.len()), 1..12);
    let d = tempfile::tempdir().unwrap();
    let sentinel = d.path().join("sentinel");
    std::fs::create_dir(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep"), "keep").unwrap();
    let before = snapshot(&sentinel);
    let counter = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&strategy, |entries| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let mut b = tar::Builder::new(Vec::new());
            for (name, kind, target) in &entries {
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o755);
                h.set_mtime(0);
                let name = names[*name].as_bytes();
                {
                    let gnu = h.as_gnu_mut().unwrap();
                    gnu.name[..name.len()].copy_from_slice(name);
                }
                let target = targets[*target];
                let abs_target = sentinel.to_str().unwrap().to_string();
                let link = if target == "/etc" {
                    abs_target.as_str()
                } else {
                    target
                };
                match kind {
                    0 => {
                        h.set_entry_type(tar::EntryType::Regular);
                        h.set_size(3);
                        h.set_cksum();
                        b.append(&h, &b"pwn"[..]).unwrap();
                    }
                    1 => {
                        h.set_entry_type(tar::EntryType::Directory);
                        h.set_size(0);
                        h.set_cksum();
                        b.append(&h, std::io::empty()).unwrap();
                    }
                    2 | 3 => {
                        h.set_entry_type(if *kind == 2 {
                            tar::EntryType::Symlink
                        } else {
                            tar::EntryType::Link
                        });
                        h.set_size(0);
                        h.set_link_name_literal(link.as_bytes()).unwrap();
                        h.set_cksum();
                        b.append(&h, std::io::empty()).unwrap();
                    }
                    _ => {
                        h.set_entry_type(tar::EntryType::Fifo);
                        h.set_size(0);
                        h.set_cksum();
                        b.append(&h, std::io::empty()).unwrap();
                    }
                }
            }
            let layer = b.into_inner().unwrap();
            let root = d.path().join(format!("l{n}"));
            let l = put_layer(&root, OCI_TAR, &layer);
            let mut m = put_image(&root, "amd64", None, &[l], false);
            m["annotations"] = json!({"org.opencontainers.image.ref.name": "t"});
            write_layout_files(&root, &json!({"schemaVersion": 2, "manifests": [m]}));
            let out = d.path().join(format!("out{n}"));
            let r = ocikit([
                "flatten",
                &format!("{}:t", root.display()),
                "--output",
                out.to_str().unwrap(),
            ]);
            let err = stderr(&r);
            prop_assert!(code(&r) == 0 || code(&r) == 2, "{err}");
            prop_assert!(!err.contains("panicked"), "{err}");
            prop_assert_eq!(&snapshot(&sentinel), &before);
            Ok(())
        })
        .unwrap();
    let mut f = std::io::stderr();
    let n = counter.load(std::sync::atomic::Ordering::SeqCst);
    let _ = writeln!(f, "{n} random hostile layers flattened");
}
