//! `export … docker-archive:FILE --uncompressed-layers` decompresses gzip
//! layers straight into their places in the archive when the gzip trailer
//! announces the whole size (issue 14, item 10). These tests hold that path
//! to the temporary-file path (the one stdout takes) byte for byte, including
//! layers whose trailer lies (several members), and check that a layer whose
//! DiffID is wrong leaves no archive behind.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use common::*;
use serde_json::json;

/// A compressible tar of `n` files (so a member's ISIZE looks plausible).
fn big_tar(prefix: &'static str, n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..n {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let data = format!("{prefix} file {i}\n").repeat(200);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, format!("{prefix}/f{i}"), data.as_bytes())
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// The stream as two gzip members: the trailer of the last one announces
/// only the second half, which still looks like a whole size.
fn two_members(data: &[u8]) -> Vec<u8> {
    let half = data.len() / 3 * 2;
    let mut out = gzip(&data[..half]);
    out.extend(gzip(&data[half..]));
    out
}

fn layout_with(root: &Path, layers: Vec<(serde_json::Value, String)>) {
    fs::create_dir_all(root).unwrap();
    let m = put_image(root, "amd64", None, &layers, false);
    let mut entry = m.clone();
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "x"});
    write_layout_files(root, &json!({"schemaVersion": 2, "manifests": [entry]}));
}

fn export_to_file(src: &Path, out: &Path) -> std::process::Output {
    ocikit([
        "export",
        &format!("oci:{}:x", s(src)),
        &format!("docker-archive:{}:bench/x:1", s(out)),
        "--uncompressed-layers",
    ])
}

fn export_to_stdout(src: &Path) -> Vec<u8> {
    export_to_stdout_with_notes(src).0
}

fn export_to_stdout_with_notes(src: &Path) -> (Vec<u8>, Vec<String>) {
    let o = ocikit([
        "export",
        &format!("oci:{}:x", s(src)),
        "docker-archive:-:bench/x:1",
        "--uncompressed-layers",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    (o.stdout.clone(), notes(&o))
}

/// The "now records uncompressed layers, so it is …" lines.
fn notes(o: &std::process::Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.contains("now records uncompressed layers"))
        .map(str::to_string)
        .collect()
}

#[test]
fn streamed_layers_equal_the_temporary_file_path_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let a = big_tar("a", 300);
    let b = big_tar("b", 200);
    let c = big_tar("c", 5);
    // One single-member layer (streamed), one two-member layer whose
    // trailer lies (the prediction fails and the export starts over), one
    // plain tar (copied as it is).
    let (la, da) = put_layer(&src, OCI_GZIP, &a);
    let lb = put_blob(&src, OCI_GZIP, &two_members(&b));
    let lc = put_layer(&src, OCI_TAR, &c);
    layout_with(&src, vec![(la, da), (lb, digest_of(&b)), lc]);

    let out = t.path().join("x.tar");
    let o = export_to_file(&src, &out);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (via_stdout, stdout_notes) = export_to_stdout_with_notes(&src);
    assert_eq!(
        fs::read(&out).unwrap(),
        via_stdout,
        "the file export differs from the stdout export"
    );
    // The note names the manifest digest the archive really holds, not the
    // one the failed prediction gave.
    assert_eq!(notes(&o), stdout_notes);
    assert_eq!(notes(&o).len(), 1, "{}", stderr(&o));
    // The archive holds the layers uncompressed, under their DiffIDs.
    let names = tar_names(&out);
    for d in [digest_of(&a), digest_of(&b), digest_of(&c)] {
        let name = format!("blobs/sha256/{}", &d["sha256:".len()..]);
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let o = ocikit(["verify", "--deep", &format!("docker-archive:{}", s(&out))]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // Nothing left beside the archive.
    assert_eq!(names_in(t.path()), ["src", "x.tar"]);
}

#[test]
fn only_single_member_layers_stream_and_still_match() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let a = big_tar("a", 100);
    fs::create_dir_all(&src).unwrap();
    let l = put_layer(&src, OCI_GZIP, &a);
    layout_with(&src, vec![l]);
    let out = t.path().join("x.tar");
    let o = export_to_file(&src, &out);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), export_to_stdout(&src));
}

#[test]
fn a_wrong_diff_id_fails_the_streamed_export_and_leaves_no_file() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let a = big_tar("a", 50);
    let (l, _) = put_layer(&src, OCI_GZIP, &a);
    let wrong = digest_of(b"not the layer");
    layout_with(&src, vec![(l, wrong.clone())]);
    let out = t.path().join("x.tar");
    let o = export_to_file(&src, &out);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("but its config's diff_id is {wrong}")),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    assert_eq!(names_in(t.path()), ["src"]);
}

#[test]
fn a_layer_whose_stored_bytes_changed_fails_the_streamed_export() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let a = big_tar("a", 50);
    let (l, d) = put_layer(&src, OCI_GZIP, &a);
    layout_with(&src, vec![(l.clone(), d)]);
    // Same size, other bytes: a gzip of other content padded to the size.
    let path = blob_path(&src, &l);
    let size = fs::metadata(&path).unwrap().len() as usize;
    let mut other = gzip(&big_tar("z", 50));
    other.truncate(size);
    while other.len() < size {
        other.push(0);
    }
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(&other).unwrap();
    drop(f);
    let out = t.path().join("x.tar");
    let o = export_to_file(&src, &out);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(!out.exists());
}

fn tar_names(p: &Path) -> Vec<String> {
    let mut a = tar::Archive::new(fs::File::open(p).unwrap());
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The names in a directory, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
