//! `ocikit diff A B`: acceptance tests against its CLI contract. Exit 0 when
//! nothing differs (after `--ignore`), 1 when something does, 2 on an error;
//! a human report (first line `identical` or `differs: LEVEL: PATH`, one line
//! per difference, a summary) or one JSON object with `--json`. Every pair is
//! built here, in temporary layouts, from deterministic tars; the skopeo test
//! skips (with a message) when skopeo is not installed.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------- tar entries

/// One tar entry with every header field the diff compares.
#[derive(Clone)]
struct E {
    path: &'static str,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
    link: Option<&'static str>,
    xattrs: Vec<(&'static str, &'static [u8])>,
}

const MTIME: u64 = 1_700_000_000;

fn ent(path: &'static str, kind: tar::EntryType, mode: u32) -> E {
    E {
        path,
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: MTIME,
        data: Vec::new(),
        link: None,
        xattrs: Vec::new(),
    }
}

/// A directory (0755).
fn d(path: &'static str) -> E {
    ent(path, tar::EntryType::Directory, 0o755)
}

/// A regular file (0644).
fn f(path: &'static str, data: &str) -> E {
    E {
        data: data.as_bytes().to_vec(),
        ..ent(path, tar::EntryType::Regular, 0o644)
    }
}

/// A symlink.
fn sl(path: &'static str, target: &'static str) -> E {
    E {
        link: Some(target),
        ..ent(path, tar::EntryType::Symlink, 0o777)
    }
}

impl E {
    fn mode(mut self, m: u32) -> E {
        self.mode = m;
        self
    }
    fn uid(mut self, u: u64) -> E {
        self.uid = u;
        self
    }
    fn mtime(mut self, t: u64) -> E {
        self.mtime = t;
        self
    }
    fn xattr(mut self, name: &'static str, value: &'static [u8]) -> E {
        self.xattrs.push((name, value));
        self
    }
}

/// An uncompressed tar of the entries, in order; xattrs as PAX
/// `SCHILY.xattr.NAME` records.
fn ptar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            let records: Vec<(String, &[u8])> = e
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                .collect();
            b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        match e.link {
            Some(l) => b.append_link(&mut h, e.path, l).unwrap(),
            None => b.append_data(&mut h, e.path, &e.data[..]).unwrap(),
        }
    }
    b.into_inner().unwrap()
}

/// A gzip layer of the entries: (descriptor, diff_id).
fn gz_layer(root: &Path, entries: &[E]) -> (Value, String) {
    put_layer(root, OCI_GZIP, &ptar(entries))
}

// ---------------------------------------------------------------- images and layouts

/// What a config and manifest hold besides the layers.
struct Opts {
    arch: &'static str,
    created: &'static str,
    history_created: &'static str,
    created_by: &'static str,
    env: &'static str,
    manifest_annotations: Option<Value>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            arch: "amd64",
            created: "2024-01-01T00:00:00Z",
            history_created: "2024-01-01T00:00:00Z",
            created_by: "RUN build",
            env: "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            manifest_annotations: None,
        }
    }
}

/// Writes an OCI config + manifest for the layers; returns the manifest
/// descriptor.
fn image(root: &Path, layers: &[(Value, String)], o: &Opts) -> Value {
    let cfg = json!({
        "created": o.created,
        "architecture": o.arch,
        "os": "linux",
        "config": {
            "Env": [o.env],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()},
        "history": layers.iter().enumerate().map(|(i, _)| json!({
            "created": o.history_created,
            "created_by": format!("{} {i}", o.created_by),
        })).collect::<Vec<_>>(),
    });
    let cfg_desc = put_blob(root, OCI_CONFIG, &to_bytes(&cfg));
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg_desc,
        "layers": layers.iter().map(|l| l.0.clone()).collect::<Vec<_>>(),
    });
    if let Some(a) = &o.manifest_annotations {
        manifest["annotations"] = a.clone();
    }
    put_blob(root, OCI_MANIFEST, &to_bytes(&manifest))
}

/// Writes an OCI index of (manifest descriptor, arch) for linux; returns its
/// descriptor.
fn index(root: &Path, images: &[(Value, &str)]) -> Value {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(desc, arch)| {
            let mut e = desc.clone();
            e["platform"] = json!({"architecture": arch, "os": "linux"});
            e
        })
        .collect();
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    put_blob(root, OCI_INDEX, &to_bytes(&idx))
}

/// Writes `index.json` with each descriptor tagged.
fn tag_all(root: &Path, tags: &[(&str, &Value)]) {
    let manifests: Vec<Value> = tags
        .iter()
        .map(|(tag, desc)| {
            let mut e = (*desc).clone();
            e["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
            e
        })
        .collect();
    write_layout_files(
        root,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    );
}

/// A fresh layout directory `NAME` under the tempdir.
fn layout_dir(t: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    let root = t.path().join(name);
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    root
}

/// `ROOT:TAG`.
fn at(root: &Path, tag: &str) -> String {
    format!("{}:{tag}", s(root))
}

// ---------------------------------------------------------------- running diff

/// One diff, run both ways (human and `--json`).
struct Diff {
    code: i32,
    human: String,
    json: Value,
}

impl Diff {
    fn diffs(&self) -> &Vec<Value> {
        self.json["differences"].as_array().unwrap()
    }
    /// The differences at `level`.
    fn at_level(&self, level: &str) -> Vec<&Value> {
        self.diffs()
            .iter()
            .filter(|x| x["level"] == level)
            .collect()
    }
    /// The paths of the differences at `level`.
    fn paths(&self, level: &str) -> BTreeSet<String> {
        self.at_level(level)
            .iter()
            .map(|x| x["path"].as_str().unwrap().to_string())
            .collect()
    }
    /// The one difference at `level` with `path` (panics if not exactly one).
    fn one(&self, level: &str, path: &str) -> &Value {
        let found: Vec<&Value> = self
            .diffs()
            .iter()
            .filter(|x| x["level"] == level && x["path"] == path)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {level} difference at {path}:\n{}",
            self.show()
        );
        found[0]
    }
    fn decoded(&self) -> u64 {
        self.json["layers_decoded"].as_u64().unwrap()
    }
    fn show(&self) -> String {
        format!(
            "exit {}\n--- human\n{}--- json\n{}",
            self.code,
            self.human,
            serde_json::to_string_pretty(&self.json).unwrap()
        )
    }
}

fn diff_args<'a>(a: &'a str, b: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["diff", a, b];
    args.extend_from_slice(extra);
    args
}

/// Runs `ocikit diff A B EXTRA` and `… --json`, checks both against the
/// contract's shape (and each other), and expects exit `want` (0 or 1).
fn diff(a: &str, b: &str, extra: &[&str], want: i32) -> Diff {
    let args = diff_args(a, b, extra);
    let h = run_checked(&args);
    let mut jargs = args.clone();
    jargs.push("--json");
    let j = run_checked(&jargs);
    assert_eq!(
        h.code, j.code,
        "human and --json runs disagree:\n{args:?}: {}\n{}{}\n{jargs:?}: {}\n{}{}",
        h.code, h.out, h.err, j.code, j.out, j.err
    );
    assert!(
        h.code != 2,
        "ocikit {args:?} failed:\n{}{}\n(json run: {})",
        h.out,
        h.err,
        j.err
    );
    let json: Value = serde_json::from_str(&j.out)
        .unwrap_or_else(|e| panic!("ocikit {jargs:?}: not one JSON object ({e}):\n{}", j.out));
    let r = Diff {
        code: h.code,
        human: h.out,
        json,
    };
    check_shape(&args, &r);
    assert_eq!(r.code, want, "ocikit {args:?}: wrong exit\n{}", r.show());
    r
}

const LEVELS: [&str; 5] = ["index", "manifest", "config", "layer", "rootfs"];
const KINDS: [&str; 5] = ["added", "removed", "changed", "deleted", "undeleted"];
const FIELDS: [&str; 9] = [
    "type", "content", "size", "mode", "uid", "gid", "mtime", "xattrs", "link",
];

/// The JSON schema of the contract, and the human form's agreement with it.
fn check_shape(args: &[&str], r: &Diff) {
    let ctx = || format!("ocikit {args:?}:\n{}", r.show());
    let j = &r.json;
    assert_eq!(j["schemaVersion"], 1, "{}", ctx());
    let identical = j["identical"]
        .as_bool()
        .unwrap_or_else(|| panic!("identical is not a bool: {}", ctx()));
    assert!(
        j["layers_decoded"].is_u64(),
        "layers_decoded is not an int: {}",
        ctx()
    );
    let diffs = j["differences"]
        .as_array()
        .unwrap_or_else(|| panic!("differences is not an array: {}", ctx()));
    assert_eq!(identical, diffs.is_empty(), "{}", ctx());
    assert_eq!(identical, r.code == 0, "{}", ctx());
    assert_eq!(j["first"].is_null(), identical, "{}", ctx());
    for x in diffs {
        for key in [
            "level", "platform", "layer", "path", "kind", "fields", "left", "right",
        ] {
            assert!(
                x.get(key).is_some(),
                "difference without {key}: {x}\n{}",
                ctx()
            );
        }
        let level = x["level"].as_str().unwrap();
        assert!(LEVELS.contains(&level), "level {level}: {}", ctx());
        assert!(
            KINDS.contains(&x["kind"].as_str().unwrap()),
            "kind {}: {}",
            x["kind"],
            ctx()
        );
        assert!(x["platform"].is_null() || x["platform"].is_string(), "{x}");
        if level == "layer" {
            assert!(x["layer"].as_u64().is_some_and(|n| n >= 1), "{x}");
        } else {
            assert!(x["layer"].is_null(), "{x}");
        }
        let path = x["path"].as_str().unwrap();
        if (level == "layer" || level == "rootfs") && path.starts_with('/') {
            assert!(
                path == "/" || !path.ends_with('/'),
                "entry path with a trailing slash: {x}"
            );
            assert!(
                !path.contains("//") && !path.contains("/./") && !path.contains("/../"),
                "entry path not cleaned: {x}"
            );
            for field in x["fields"].as_array().unwrap() {
                assert!(
                    FIELDS.contains(&field.as_str().unwrap()),
                    "field {field}: {x}"
                );
            }
        }
    }

    // The human form: first line, one line per difference, summary.
    let lines: Vec<&str> = r.human.lines().collect();
    assert!(lines.len() >= 2, "human output too short: {}", ctx());
    if identical {
        assert_eq!(lines[0], "identical", "{}", ctx());
    } else {
        assert_eq!(
            lines[0],
            format!("differs: {}", j["first"].as_str().unwrap()),
            "{}",
            ctx()
        );
    }
    assert_eq!(
        *lines.last().unwrap(),
        format!(
            "{} difference(s); {} layer(s) decoded",
            diffs.len(),
            j["layers_decoded"]
        ),
        "{}",
        ctx()
    );
    for x in diffs {
        let level = match x["level"].as_str().unwrap() {
            "layer" => format!("layer {}", x["layer"]),
            l => l.to_string(),
        };
        let platform = x["platform"]
            .as_str()
            .map(|p| format!("[{p}] "))
            .unwrap_or_default();
        let want = format!("{platform}{level}: {}:", x["path"].as_str().unwrap());
        assert!(
            lines[1..].iter().any(|l| l.starts_with(&want)),
            "no human line starting {want:?} for {x}\n{}",
            ctx()
        );
    }
}

/// `kind` and `fields` of a difference.
fn kind_fields(x: &Value) -> (String, Vec<String>) {
    (
        x["kind"].as_str().unwrap().to_string(),
        x["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect(),
    )
}

fn strings(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------- 1. identical

#[test]
fn same_image_is_identical_and_decodes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let l1 = gz_layer(&root, &[d("etc/"), f("etc/hostname", "one\n")]);
    let l2 = gz_layer(&root, &[d("app/"), f("app/run", "#!/bin/sh\n")]);
    let m = image(&root, &[l1, l2], &Opts::default());
    // The same manifest under two tags: the tag is the address, not content.
    tag_all(&root, &[("a", &m), ("b", &m)]);
    let a = at(&root, "a");

    let r = diff(&a, &a, &[], 0);
    assert_eq!(r.human.lines().next(), Some("identical"), "{}", r.show());
    assert_eq!(r.decoded(), 0, "{}", r.show());
    assert_eq!(r.json["first"], Value::Null);
    assert_eq!(
        r.human.lines().last(),
        Some("0 difference(s); 0 layer(s) decoded")
    );

    // The oci: transport names the same image.
    let r = diff(&a, &format!("oci:{a}"), &[], 0);
    assert_eq!(r.decoded(), 0, "{}", r.show());

    // Two tags on one manifest.
    let r = diff(&a, &at(&root, "b"), &[], 0);
    assert_eq!(r.decoded(), 0, "{}", r.show());
}

// ---------------------------------------------------------------- 2. timestamps

#[test]
fn timestamps_differ_only_and_ignore_timestamps_makes_them_identical() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let base = gz_layer(
        &root,
        &[
            d("etc/"),
            f("etc/hostname", "box\n"),
            f("etc/issue", "hi\n"),
        ],
    );
    let app = |root: &Path, mtime: u64| {
        gz_layer(
            root,
            &[
                d("app/").mtime(mtime),
                f("app/run", "#!/bin/sh\necho run\n").mtime(mtime),
                f("app/VERSION", "1.0\n").mtime(mtime),
            ],
        )
    };
    let app_a = app(&root, MTIME);
    let app_b = app(&root, MTIME + 3600);
    assert_ne!(app_a.0["digest"], app_b.0["digest"]);
    let a = image(&root, &[base.clone(), app_a], &Opts::default());
    let b = image(
        &root,
        &[base.clone(), app_b],
        &Opts {
            created: "2024-01-02T00:00:00Z",
            history_created: "2024-01-02T00:00:00Z",
            ..Opts::default()
        },
    );
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let (la, lb) = (at(&root, "a"), at(&root, "b"));

    let r = diff(&la, &lb, &[], 1);
    let cfg = r.paths("config");
    for p in ["created", "history[0].created", "history[1].created"] {
        assert!(cfg.contains(p), "config {p} not listed:\n{}", r.show());
    }
    let created = r.one("config", "created");
    assert_eq!(created["left"], "2024-01-01T00:00:00Z", "{created}");
    assert_eq!(created["right"], "2024-01-02T00:00:00Z", "{created}");
    // Entries: only layer 2's, each with exactly `mtime`.
    let entries: Vec<&Value> = r.at_level("layer");
    let paths: BTreeSet<String> = entries
        .iter()
        .map(|x| x["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        strings(&["/app", "/app/run", "/app/VERSION"]),
        "{}",
        r.show()
    );
    for x in &entries {
        assert_eq!(x["layer"], 2, "{x}");
        assert_eq!(
            kind_fields(x),
            ("changed".to_string(), vec!["mtime".to_string()]),
            "{x}"
        );
        assert_eq!(x["left"]["mtime"], MTIME, "{x}");
        assert_eq!(x["right"]["mtime"], MTIME + 3600, "{x}");
    }
    // Layer 1 has one digest on both sides: only layer 2 is decoded, once per side.
    assert_eq!(r.decoded(), 2, "{}", r.show());

    let r = diff(&la, &lb, &["--ignore", "timestamps"], 0);
    assert_eq!(r.human.lines().next(), Some("identical"), "{}", r.show());
}

#[test]
fn created_annotation_is_a_timestamp_and_an_annotation() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let l = gz_layer(&root, &[f("x", "x\n")]);
    let ann = |when: &str| {
        Some(json!({
            "org.opencontainers.image.created": when,
            "org.opencontainers.image.title": "same",
        }))
    };
    let a = image(
        &root,
        std::slice::from_ref(&l),
        &Opts {
            manifest_annotations: ann("2024-01-01T00:00:00Z"),
            ..Opts::default()
        },
    );
    let b = image(
        &root,
        std::slice::from_ref(&l),
        &Opts {
            manifest_annotations: ann("2024-01-02T00:00:00Z"),
            ..Opts::default()
        },
    );
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let (la, lb) = (at(&root, "a"), at(&root, "b"));
    let r = diff(&la, &lb, &[], 1);
    let man = r.at_level("manifest");
    assert_eq!(man.len(), 1, "{}", r.show());
    assert!(
        man[0]["path"]
            .as_str()
            .unwrap()
            .contains("org.opencontainers.image.created"),
        "{}",
        r.show()
    );
    assert_eq!(r.diffs().len(), 1, "{}", r.show());
    assert_eq!(r.decoded(), 0, "{}", r.show());
    diff(&la, &lb, &["--ignore", "timestamps"], 0);
    diff(&la, &lb, &["--ignore", "annotations"], 0);
}

#[test]
fn history_differs_only_and_ignore_history() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let l = gz_layer(&root, &[f("x", "x\n")]);
    let a = image(&root, std::slice::from_ref(&l), &Opts::default());
    let b = image(
        &root,
        std::slice::from_ref(&l),
        &Opts {
            created_by: "COPY . /",
            ..Opts::default()
        },
    );
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let (la, lb) = (at(&root, "a"), at(&root, "b"));
    let r = diff(&la, &lb, &[], 1);
    assert_eq!(
        r.paths("config"),
        strings(&["history[0].created_by"]),
        "{}",
        r.show()
    );
    assert_eq!(r.decoded(), 0, "{}", r.show());
    diff(&la, &lb, &["--ignore", "timestamps"], 1);
    diff(&la, &lb, &["--ignore", "history"], 0);
}

// ---------------------------------------------------------------- 3. layer boundaries

#[test]
fn layer_boundaries_compare_flattened_trees() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let a_part = || vec![d("a/"), f("a/x", "xxx\n")];
    let b_part = |y: &'static str| vec![d("b/"), f("b/y", y)];
    let one = gz_layer(&root, &[a_part(), b_part("yyy\n")].concat());
    let split1 = gz_layer(&root, &a_part());
    let split2 = gz_layer(&root, &b_part("yyy\n"));
    let split2_changed = gz_layer(&root, &b_part("zzz\n"));
    let a = image(&root, &[one], &Opts::default());
    let b = image(&root, &[split1.clone(), split2], &Opts::default());
    let c = image(&root, &[split1, split2_changed], &Opts::default());
    tag_all(&root, &[("a", &a), ("b", &b), ("c", &c)]);
    let (la, lb, lc) = (at(&root, "a"), at(&root, "b"), at(&root, "c"));

    let r = diff(&la, &lb, &[], 1);
    assert!(!r.at_level("layer").is_empty(), "{}", r.show());
    assert!(
        r.human.lines().any(|l| l.starts_with("layer ")),
        "{}",
        r.show()
    );
    // Paired by position: /b and /b/y left layer 1 and came in layer 2.
    let layer1: Vec<&Value> = r
        .at_level("layer")
        .into_iter()
        .filter(|x| x["layer"] == 1)
        .collect();
    let removed: BTreeSet<String> = layer1
        .iter()
        .filter(|x| x["kind"] == "removed")
        .map(|x| x["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(removed, strings(&["/b", "/b/y"]), "{}", r.show());
    let added: BTreeSet<String> = r
        .at_level("layer")
        .into_iter()
        .filter(|x| x["layer"] == 2)
        .map(|x| {
            assert_eq!(x["kind"], "added", "{x}");
            assert_eq!(x["left"], Value::Null, "{x}");
            x["path"].as_str().unwrap().to_string()
        })
        .collect();
    // A layer only B has is a manifest-level `layers[1]` addition; its
    // entries may be listed too (all `added`), or not at all.
    assert!(
        added.is_empty() || added == strings(&["/b", "/b/y"]),
        "{}",
        r.show()
    );
    assert!(r.paths("manifest").contains("layers[1]"), "{}", r.show());

    let r = diff(&la, &lb, &["--ignore", "layer-boundaries"], 0);
    assert_eq!(r.human.lines().next(), Some("identical"), "{}", r.show());

    // A real difference of the trees still shows, at the rootfs level.
    let r = diff(&la, &lc, &["--ignore", "layer-boundaries"], 1);
    assert_eq!(r.diffs().len(), 1, "{}", r.show());
    let x = r.one("rootfs", "/b/y");
    assert_eq!(x["layer"], Value::Null);
    assert_eq!(
        kind_fields(x),
        ("changed".to_string(), vec!["content".to_string()]),
        "{x}"
    );
    assert!(
        r.human.lines().any(|l| l.starts_with("rootfs: /b/y: ")),
        "{}",
        r.show()
    );
}

// ---------------------------------------------------------------- 4. compression

#[test]
fn gzip_vs_zstd_differs_only_in_storage() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let tree = ptar(&[
        d("etc/"),
        f("etc/hostname", "box\n"),
        sl("etc/localtime", "/usr/share/zoneinfo/UTC"),
    ]);
    let gz = put_layer(&root, OCI_GZIP, &tree);
    let zs = put_layer(&root, OCI_ZSTD, &tree);
    assert_eq!(gz.1, zs.1, "same diff_id");
    assert_ne!(gz.0["size"], zs.0["size"], "pick data whose sizes differ");
    let a = image(&root, &[gz], &Opts::default());
    let b = image(&root, &[zs], &Opts::default());
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let (la, lb) = (at(&root, "a"), at(&root, "b"));

    let r = diff(&la, &lb, &[], 1);
    let man = r.paths("manifest");
    for p in ["layers[0].mediaType", "layers[0].digest", "layers[0].size"] {
        assert!(man.contains(p), "manifest {p} not listed:\n{}", r.show());
    }
    // One config (same diff_ids), one uncompressed tar: nothing differs
    // inside the layer, not even its tar stream.
    assert!(r.at_level("config").is_empty(), "{}", r.show());
    assert!(
        r.at_level("layer").is_empty(),
        "layer-level differences between byte-identical tars:\n{}",
        r.show()
    );
    let mt = r.one("manifest", "layers[0].mediaType");
    assert_eq!(mt["left"], OCI_GZIP, "{mt}");
    assert_eq!(mt["right"], OCI_ZSTD, "{mt}");

    let r = diff(&la, &lb, &["--ignore", "compression"], 0);
    assert_eq!(
        r.decoded(),
        0,
        "equal diff_ids need no decoding:\n{}",
        r.show()
    );
}

// ---------------------------------------------------------------- 5. entry differences

/// A pair of two-layer images with one difference of each sort: content,
/// mode, owner, xattr and symlink target in layer 1, a whiteout in B's layer 2.
fn six_differences(root: &Path) -> (String, String) {
    let layer1 = |content: &str, mode, uid, xv: &'static [u8], target| {
        vec![
            d("etc/"),
            f("etc/content.txt", content),
            f("etc/gone.txt", "to be deleted\n"),
            f("etc/mode.txt", "mode\n").mode(mode),
            f("etc/owner.txt", "owner\n").uid(uid),
            f("etc/same.txt", "unchanged\n"),
            f("etc/xattr.txt", "xattr\n").xattr("user.k", xv),
            sl("etc/link", target),
            d("srv/"),
            f("srv/data", "data\n"),
        ]
    };
    let layer2 = |whiteout: bool| {
        let mut v = vec![d("etc/"), f("etc/other.txt", "other\n")];
        if whiteout {
            v.push(f("etc/.wh.gone.txt", ""));
        }
        v
    };
    let a1 = gz_layer(root, &layer1("one\n", 0o644, 0, b"v1", "target1"));
    let b1 = gz_layer(root, &layer1("two\n", 0o600, 1000, b"v2", "target2"));
    let a2 = gz_layer(root, &layer2(false));
    let b2 = gz_layer(root, &layer2(true));
    let a = image(root, &[a1, a2], &Opts::default());
    let b = image(root, &[b1, b2], &Opts::default());
    tag_all(root, &[("a", &a), ("b", &b)]);
    (at(root, "a"), at(root, "b"))
}

#[test]
fn one_difference_of_each_sort_is_reported_exactly() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let (la, lb) = six_differences(&root);
    let r = diff(&la, &lb, &[], 1);

    let entries: BTreeSet<(u64, String)> = r
        .at_level("layer")
        .iter()
        .map(|x| {
            (
                x["layer"].as_u64().unwrap(),
                x["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(u64, String)> = [
        (1, "/etc/content.txt"),
        (1, "/etc/mode.txt"),
        (1, "/etc/owner.txt"),
        (1, "/etc/xattr.txt"),
        (1, "/etc/link"),
        (2, "/etc/gone.txt"),
    ]
    .iter()
    .map(|(n, p)| (*n, p.to_string()))
    .collect();
    assert_eq!(entries, want, "exactly these entries differ:\n{}", r.show());
    for unrelated in [
        "/etc",
        "/etc/same.txt",
        "/etc/other.txt",
        "/srv",
        "/srv/data",
    ] {
        assert!(!r.human.contains(&format!(" {unrelated}:")), "{}", r.show());
    }

    let changed = |path: &str, field: &str| {
        let x = r.one("layer", path);
        assert_eq!(
            kind_fields(x),
            ("changed".to_string(), vec![field.to_string()]),
            "{path}: {x}"
        );
        x.clone()
    };
    let x = changed("/etc/content.txt", "content");
    assert_eq!(x["left"]["type"], "file", "{x}");
    assert!(
        x["left"]["sha256"]
            .as_str()
            .is_some_and(|h| h.ends_with(&sha256_hex(b"one\n"))),
        "{x}"
    );
    assert!(
        x["right"]["sha256"]
            .as_str()
            .is_some_and(|h| h.ends_with(&sha256_hex(b"two\n"))),
        "{x}"
    );
    assert_eq!(x["left"]["size"], 4, "{x}");

    let x = changed("/etc/mode.txt", "mode");
    assert_eq!(
        (&x["left"]["mode"], &x["right"]["mode"]),
        (&json!("0644"), &json!("0600")),
        "{x}"
    );

    let x = changed("/etc/owner.txt", "uid");
    assert_eq!(
        (&x["left"]["uid"], &x["right"]["uid"]),
        (&json!(0), &json!(1000)),
        "{x}"
    );

    let x = changed("/etc/xattr.txt", "xattrs");
    assert_eq!(x["left"]["xattrs"], json!({"user.k": hex(b"v1")}), "{x}");
    assert_eq!(x["right"]["xattrs"], json!({"user.k": hex(b"v2")}), "{x}");

    let x = changed("/etc/link", "link");
    assert_eq!(x["left"]["type"], "symlink", "{x}");
    assert_eq!(
        (&x["left"]["link"], &x["right"]["link"]),
        (&json!("target1"), &json!("target2")),
        "{x}"
    );

    let x = r.one("layer", "/etc/gone.txt");
    assert_eq!(x["layer"], 2, "{x}");
    assert_eq!(x["kind"], "deleted", "{x}");
    assert_eq!(x["left"], Value::Null, "{x}");
    assert_eq!(x["right"]["type"], "whiteout", "{x}");

    // Both layers differ on both sides.
    assert_eq!(r.decoded(), 4, "{}", r.show());
    assert!(
        r.human
            .lines()
            .any(|l| l.starts_with("layer 2: /etc/gone.txt: ")),
        "{}",
        r.show()
    );

    // The reverse: the whiteout is only in A's layer 2.
    let r = diff(&lb, &la, &[], 1);
    let x = r.one("layer", "/etc/gone.txt");
    assert_eq!(x["kind"], "undeleted", "{x}");
    assert_eq!(x["right"], Value::Null, "{x}");
    assert_eq!(x["left"]["type"], "whiteout", "{x}");
}

// ---------------------------------------------------------------- 6. --content

#[test]
fn content_shows_a_unified_diff_of_text_files() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let a = image(
        &root,
        &[gz_layer(&root, &[f("greeting.txt", "hello\nworld\n")])],
        &Opts::default(),
    );
    let b = image(
        &root,
        &[gz_layer(&root, &[f("greeting.txt", "hello\nthere\n")])],
        &Opts::default(),
    );
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let (la, lb) = (at(&root, "a"), at(&root, "b"));

    let plain = diff(&la, &lb, &[], 1);
    assert!(
        !plain.human.lines().any(|l| l == "-world"),
        "{}",
        plain.show()
    );
    assert!(
        plain.diffs().iter().all(|x| x.get("diff").is_none()),
        "{}",
        plain.show()
    );

    let r = diff(&la, &lb, &["--content"], 1);
    let lines: Vec<&str> = r.human.lines().collect();
    let at_line = lines
        .iter()
        .position(|l| l.starts_with("layer 1: /greeting.txt: "))
        .unwrap_or_else(|| panic!("{}", r.show()));
    let after = &lines[at_line + 1..];
    assert!(after.contains(&"-world"), "{}", r.show());
    assert!(after.contains(&"+there"), "{}", r.show());
    let x = r.one("layer", "/greeting.txt");
    let u = x["diff"]
        .as_str()
        .unwrap_or_else(|| panic!("no diff string: {x}"));
    let ulines: Vec<&str> = u.lines().collect();
    assert!(
        ulines.contains(&"-world") && ulines.contains(&"+there"),
        "{u}"
    );
}

// ---------------------------------------------------------------- 7. multi-platform

#[test]
fn multi_platform_differences_carry_their_platform() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let base = gz_layer(&root, &[d("etc/"), f("etc/hostname", "box\n")]);
    let arch_layer = |root: &Path, arch: &'static str, v: &str| {
        gz_layer(root, &[d("app/"), f("app/arch", arch), f("app/version", v)])
    };
    let amd = image(
        &root,
        &[base.clone(), arch_layer(&root, "amd64\n", "1\n")],
        &Opts::default(),
    );
    let arm_opts = || Opts {
        arch: "arm64",
        ..Opts::default()
    };
    let arm1 = image(
        &root,
        &[base.clone(), arch_layer(&root, "arm64\n", "1\n")],
        &arm_opts(),
    );
    let arm2 = image(
        &root,
        &[base.clone(), arch_layer(&root, "arm64\n", "2\n")],
        &arm_opts(),
    );
    let ia = index(&root, &[(amd.clone(), "amd64"), (arm1, "arm64")]);
    let ib = index(&root, &[(amd, "amd64"), (arm2, "arm64")]);
    tag_all(&root, &[("a", &ia), ("b", &ib)]);
    let (la, lb) = (at(&root, "a"), at(&root, "b"));

    let r = diff(&la, &lb, &[], 1);
    let with_platform: Vec<&Value> = r
        .diffs()
        .iter()
        .filter(|x| !x["platform"].is_null())
        .collect();
    assert!(!with_platform.is_empty(), "{}", r.show());
    for x in r.diffs() {
        if x["platform"].is_null() {
            assert_eq!(x["level"], "index", "a difference without platform: {x}");
        } else {
            assert_eq!(x["platform"], "linux/arm64", "{x}");
        }
    }
    let x = r.one("layer", "/app/version");
    assert_eq!(x["platform"], "linux/arm64", "{x}");
    assert_eq!(x["layer"], 2, "{x}");
    assert!(
        r.human
            .lines()
            .any(|l| l.starts_with("[linux/arm64] layer 2: /app/version: ")),
        "{}",
        r.show()
    );
    assert!(!r.human.contains("amd64"), "{}", r.show());
    // Only arm64's second layers differ.
    assert_eq!(r.decoded(), 2, "{}", r.show());

    let r = diff(&la, &lb, &["--platform", "linux/amd64"], 0);
    assert_eq!(r.decoded(), 0, "{}", r.show());
    diff(&la, &lb, &["--platform", "linux/arm64"], 1);
}

// ---------------------------------------------------------------- 8. skopeo docker-archive

#[test]
fn skopeo_docker_archive_export_differs_only_in_storage() {
    if !tools(
        "skopeo_docker_archive_export_differs_only_in_storage",
        &["skopeo"],
    ) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let l1 = gz_layer(
        &root,
        &[
            d("etc/"),
            f("etc/hostname", "box\n"),
            sl("etc/localtime", "/usr/share/zoneinfo/UTC"),
            f("etc/secret", "s\n").mode(0o600).uid(1000),
        ],
    );
    let l2 = gz_layer(
        &root,
        &[
            d("etc/"),
            f("etc/.wh.hostname", ""),
            d("app/"),
            f("app/run", "run\n"),
        ],
    );
    let m = image(&root, &[l1, l2], &Opts::default());
    tag_all(&root, &[("a", &m)]);
    let la = at(&root, "a");
    let x = t.path().join("X.tar");
    run_ok(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{la}"),
            &format!("docker-archive:{}:img:1", s(&x)),
        ],
    );
    let xs = s(&x);

    // Compression ignored: identical, and the equal DiffIDs need no decoding.
    let r = diff(&la, &xs, &["--ignore", "compression"], 0);
    assert_eq!(r.decoded(), 0, "{}", r.show());

    // An oci-archive keeps every blob: identical, nothing decoded.
    let y = t.path().join("Y.tar");
    run_ok(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{la}"),
            &format!("oci-archive:{}:a", s(&y)),
        ],
    );
    let r = diff(&la, &format!("{}:a", s(&y)), &[], 0);
    assert_eq!(r.decoded(), 0, "{}", r.show());

    let r = diff(&la, &xs, &[], 1);
    // What skopeo changed in the config, if anything, is stated here.
    let cfg = r.at_level("config");
    assert!(
        cfg.is_empty(),
        "skopeo changed the config: {}",
        serde_json::to_string_pretty(&cfg).unwrap()
    );
    for x in r.diffs() {
        let level = x["level"].as_str().unwrap();
        let path = x["path"].as_str().unwrap();
        match level {
            "index" => {}
            "manifest" => assert!(
                path == "mediaType"
                    || path.starts_with("config.")
                    || (path.starts_with("layers[")
                        && (path.ends_with("].mediaType")
                            || path.ends_with("].digest")
                            || path.ends_with("].size"))),
                "a manifest difference beyond storage: {x}\n{}",
                r.show()
            ),
            _ => panic!("a difference beyond storage: {x}\n{}", r.show()),
        }
        if level == "manifest" && path.starts_with("config.") {
            assert!(
                path == "config.mediaType",
                "the config blob changed: {x}\n{}",
                r.show()
            );
        }
    }
}

// ---------------------------------------------------------------- 9. bad input

#[test]
fn missing_ref_and_bad_ignore_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let (la, _) = six_differences(&root);
    let missing = at(&root, "nosuchtag");
    fails(&["diff", &la, &missing], &["nosuchtag"]);
    fails(&["diff", &missing, &la], &["nosuchtag"]);
    fails(&["diff", &la, &missing, "--json"], &["nosuchtag"]);
    let nowhere = s(&t.path().join("nowhere"));
    fails(&["diff", &la, &format!("{nowhere}:x")], &["nowhere"]);

    fails(&["diff", &la, &la, "--ignore", "bogus"], &["bogus"]);
    fails(
        &["diff", &la, &la, "--ignore", "timestamps,bogus"],
        &["bogus"],
    );
}

#[test]
fn a_damaged_layer_is_named_and_nothing_panics() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let base = gz_layer(&root, &[d("etc/"), f("etc/hostname", "box\n")]);
    let good = gz_layer(&root, &[d("app/"), f("app/run", "good\n")]);
    // A gzip stream cut mid-way, stored under its own (correct) digest, with
    // the DiffID of the whole tar.
    let payload: String = (0..4000).map(|i| format!("line {i}\n")).collect();
    let whole = ptar(&[
        d("app/"),
        E {
            data: payload.into_bytes(),
            ..f("app/run", "")
        },
    ]);
    let gz = gzip(&whole);
    let cut = &gz[..gz.len() / 2];
    let cut_desc = put_blob(&root, OCI_GZIP, cut);
    let damaged = (cut_desc.clone(), digest_of(&whole));
    let cut_digest = cut_desc["digest"].as_str().unwrap().to_string();

    let a = image(&root, &[base.clone(), good], &Opts::default());
    let b = image(&root, &[base, damaged], &Opts::default());
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let (la, lb) = (at(&root, "a"), at(&root, "b"));
    for extra in [
        &[][..],
        &["--json"][..],
        &["--content"][..],
        &["--ignore", "compression"][..],
        &["--ignore", "layer-boundaries"][..],
    ] {
        let mut args = diff_args(&la, &lb, extra);
        let line = fails(&args, &[&cut_digest]);
        eprintln!("{args:?}: {line}");
        args.swap(1, 2);
        fails(&args, &[&cut_digest]);
    }
}

// ---------------------------------------------------------------- 10. determinism

#[test]
fn output_is_byte_identical_across_runs() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let (la, lb) = six_differences(&root);
    for extra in [&[][..], &["--json"][..], &["--content", "--json"][..]] {
        let args = diff_args(&la, &lb, extra);
        let first = run_checked(&args);
        assert_eq!(first.code, 1, "{args:?}: {}{}", first.out, first.err);
        for _ in 0..2 {
            let again = run_checked(&args);
            assert_eq!(again.code, 1);
            assert_eq!(
                first.out, again.out,
                "{args:?}: stdout changed between runs"
            );
        }
    }
}

// ---------------------------------------------------------------- more of the contract

#[test]
fn type_gid_hardlink_and_added_entries() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let gid = |g: u64| {
        let mut e = f("srv/group.txt", "g\n");
        e.gid = g;
        e
    };
    let hl = |target: &'static str| E {
        link: Some(target),
        ..ent("srv/hard", tar::EntryType::Link, 0o644)
    };
    let a = image(
        &root,
        &[gz_layer(
            &root,
            &[
                d("srv/"),
                f("srv/one", "1\n"),
                f("srv/two", "2\n"),
                f("srv/thing", "a file\n"),
                gid(0),
                hl("srv/one"),
                f("srv/removed", "r\n"),
            ],
        )],
        &Opts::default(),
    );
    let b = image(
        &root,
        &[gz_layer(
            &root,
            &[
                d("srv/"),
                f("srv/one", "1\n"),
                f("srv/two", "2\n"),
                sl("srv/thing", "one"),
                gid(50),
                hl("srv/two"),
                f("srv/new", "n\n"),
            ],
        )],
        &Opts::default(),
    );
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let r = diff(&at(&root, "a"), &at(&root, "b"), &[], 1);
    assert_eq!(
        r.paths("layer"),
        strings(&[
            "/srv/thing",
            "/srv/group.txt",
            "/srv/hard",
            "/srv/removed",
            "/srv/new"
        ]),
        "{}",
        r.show()
    );
    let x = r.one("layer", "/srv/thing");
    let (kind, fields) = kind_fields(x);
    assert_eq!(kind, "changed", "{x}");
    assert_eq!(fields.first().map(String::as_str), Some("type"), "{x}");
    assert_eq!(
        (&x["left"]["type"], &x["right"]["type"]),
        (&json!("file"), &json!("symlink")),
        "{x}"
    );
    let x = r.one("layer", "/srv/group.txt");
    assert_eq!(
        kind_fields(x),
        ("changed".to_string(), vec!["gid".to_string()]),
        "{x}"
    );
    assert_eq!(
        (&x["left"]["gid"], &x["right"]["gid"]),
        (&json!(0), &json!(50))
    );
    let x = r.one("layer", "/srv/hard");
    assert_eq!(
        kind_fields(x),
        ("changed".to_string(), vec!["link".to_string()]),
        "{x}"
    );
    assert_eq!(x["left"]["type"], "hardlink", "{x}");
    let x = r.one("layer", "/srv/removed");
    assert_eq!(x["kind"], "removed", "{x}");
    assert_eq!(x["right"], Value::Null, "{x}");
    assert_eq!(x["left"]["type"], "file", "{x}");
    let x = r.one("layer", "/srv/new");
    assert_eq!(x["kind"], "added", "{x}");
    assert_eq!(x["left"], Value::Null, "{x}");
    assert_eq!(x["right"]["type"], "file", "{x}");
}

#[test]
fn entry_paths_are_cleaned_before_comparing() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let a = image(
        &root,
        &[gz_layer(
            &root,
            &[
                d("./etc/"),
                f("./etc/hostname", "box\n"),
                f("./etc/issue", "1\n"),
            ],
        )],
        &Opts::default(),
    );
    let b = image(
        &root,
        &[gz_layer(
            &root,
            &[d("etc/"), f("etc/hostname", "box\n"), f("etc/issue", "2\n")],
        )],
        &Opts::default(),
    );
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let r = diff(&at(&root, "a"), &at(&root, "b"), &[], 1);
    // Only the file whose bytes differ; `./etc` and `etc/` are one entry.
    assert_eq!(r.paths("layer"), strings(&["/etc/issue"]), "{}", r.show());
}

#[test]
fn same_entries_in_another_tar_format_name_both_streams() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let ustar = ptar(&[d("etc/"), f("etc/hostname", "box\n")]);
    let gnu = {
        let mut b = tar::Builder::new(Vec::new());
        for (p, kind, mode, data) in [
            ("etc/", tar::EntryType::Directory, 0o755, &b""[..]),
            (
                "etc/hostname",
                tar::EntryType::Regular,
                0o644,
                &b"box\n"[..],
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, p, data).unwrap();
        }
        b.into_inner().unwrap()
    };
    assert_ne!(ustar, gnu);
    let la = put_layer(&root, OCI_GZIP, &ustar);
    let lb = put_layer(&root, OCI_GZIP, &gnu);
    let a = image(&root, std::slice::from_ref(&la), &Opts::default());
    let b = image(&root, std::slice::from_ref(&lb), &Opts::default());
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let r = diff(&at(&root, "a"), &at(&root, "b"), &[], 1);
    assert!(
        !r.at_level("layer")
            .iter()
            .any(|x| x["path"].as_str().unwrap().starts_with('/')),
        "no entry differs:\n{}",
        r.show()
    );
    // If the stream difference is reported, it names both sides' streams,
    // in JSON and in the human line.
    for x in r.at_level("layer") {
        assert_eq!(x["left"], la.1.as_str(), "{x}\n{}", r.show());
        assert_eq!(x["right"], lb.1.as_str(), "{x}\n{}", r.show());
    }
    for line in r.human.lines().filter(|l| l.starts_with("layer 1: ")) {
        assert!(
            line.contains(&la.1[7..]) && line.contains(&lb.1[7..]),
            "{line}\n{}",
            r.show()
        );
    }
}

#[test]
fn docker_media_types_are_compression() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let tree = ptar(&[d("etc/"), f("etc/hostname", "box\n")]);
    let oci = put_image(
        &root,
        "amd64",
        None,
        &[put_layer(&root, OCI_GZIP, &tree)],
        false,
    );
    let docker = put_image(
        &root,
        "amd64",
        None,
        &[put_layer(&root, DOCKER_GZIP, &tree)],
        true,
    );
    tag_all(&root, &[("oci", &oci), ("docker", &docker)]);
    let (la, lb) = (at(&root, "oci"), at(&root, "docker"));
    let r = diff(&la, &lb, &[], 1);
    let man = r.paths("manifest");
    assert!(man.contains("mediaType"), "{}", r.show());
    assert!(man.contains("layers[0].mediaType"), "{}", r.show());
    assert!(r.at_level("config").is_empty(), "{}", r.show());
    assert!(r.at_level("layer").is_empty(), "{}", r.show());
    let r = diff(&la, &lb, &["--ignore", "compression"], 0);
    assert_eq!(r.decoded(), 0, "{}", r.show());
}

#[test]
fn config_fields_are_dotted_paths() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let l = gz_layer(&root, &[f("x", "x\n")]);
    let a = image(&root, std::slice::from_ref(&l), &Opts::default());
    let b = image(
        &root,
        std::slice::from_ref(&l),
        &Opts {
            env: "PATH=/bin",
            ..Opts::default()
        },
    );
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let (la, lb) = (at(&root, "a"), at(&root, "b"));
    let r = diff(&la, &lb, &[], 1);
    let cfg = r.paths("config");
    assert_eq!(cfg.len(), 1, "{}", r.show());
    assert!(
        cfg.iter().all(|p| p.starts_with("config.Env")),
        "{}",
        r.show()
    );
    assert_eq!(r.decoded(), 0, "{}", r.show());
    // No ignore word covers the environment.
    diff(
        &la,
        &lb,
        &[
            "--ignore",
            "timestamps,history,annotations,layer-boundaries,compression",
        ],
        1,
    );
}

#[test]
fn layer_boundaries_apply_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let a = image(
        &root,
        &[gz_layer(&root, &[d("a/"), f("a/x", "x\n")])],
        &Opts::default(),
    );
    let b = image(
        &root,
        &[
            gz_layer(&root, &[d("a/"), f("a/x", "x\n"), f("a/y", "y\n")]),
            gz_layer(&root, &[d("a/"), f("a/.wh.y", "")]),
        ],
        &Opts::default(),
    );
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let (la, lb) = (at(&root, "a"), at(&root, "b"));
    diff(&la, &lb, &[], 1);
    diff(&la, &lb, &["--ignore", "layer-boundaries"], 0);
}

#[test]
fn index_level_platforms_and_annotations() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let l = gz_layer(&root, &[f("x", "x\n")]);
    let amd = image(&root, std::slice::from_ref(&l), &Opts::default());
    let arm = image(
        &root,
        std::slice::from_ref(&l),
        &Opts {
            arch: "arm64",
            ..Opts::default()
        },
    );
    let two = index(&root, &[(amd.clone(), "amd64"), (arm.clone(), "arm64")]);
    let one = index(&root, &[(amd.clone(), "amd64")]);
    // The same two platforms, with an annotation on the index.
    let annotated = {
        let mut idx: Value =
            serde_json::from_slice(&blob_bytes(&root, two["digest"].as_str().unwrap())).unwrap();
        idx["annotations"] = json!({"org.example.note": "annotated"});
        put_blob(&root, OCI_INDEX, &to_bytes(&idx))
    };
    tag_all(
        &root,
        &[("two", &two), ("one", &one), ("annotated", &annotated)],
    );
    let (l2, l1, ln) = (at(&root, "two"), at(&root, "one"), at(&root, "annotated"));

    // arm64 only in A: an index-level difference, nothing decoded.
    let r = diff(&l2, &l1, &[], 1);
    assert!(!r.at_level("index").is_empty(), "{}", r.show());
    assert_eq!(r.decoded(), 0, "{}", r.show());
    diff(&l2, &l1, &["--platform", "linux/amd64"], 0);

    let r = diff(&l2, &ln, &[], 1);
    let idx = r.at_level("index");
    assert_eq!(r.diffs().len(), 1, "{}", r.show());
    assert!(
        idx[0]["path"].as_str().unwrap().starts_with("annotations"),
        "{}",
        r.show()
    );
    diff(&l2, &ln, &["--ignore", "annotations"], 0);
}

#[test]
fn content_leaves_out_binary_and_large_files() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let big = |c: char| {
        let mut s = "line\n".repeat(14_000); // 70,000 bytes
        s.push(c);
        s.push('\n');
        s
    };
    let bin = |b: u8| E {
        data: vec![0, 0xff, 0xfe, b, 0],
        ..f("bin.dat", "")
    };
    let layer = |root: &Path, c: char, b: u8| {
        let big = big(c);
        gz_layer(
            root,
            &[
                bin(b),
                E {
                    data: big.into_bytes(),
                    ..f("big.txt", "")
                },
            ],
        )
    };
    let a = image(&root, &[layer(&root, 'a', 1)], &Opts::default());
    let b = image(&root, &[layer(&root, 'b', 2)], &Opts::default());
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let r = diff(&at(&root, "a"), &at(&root, "b"), &["--content"], 1);
    assert_eq!(
        r.paths("layer"),
        strings(&["/big.txt", "/bin.dat"]),
        "{}",
        r.show()
    );
    for x in r.at_level("layer") {
        assert!(x.get("diff").is_none(), "no unified diff expected: {x}");
    }
    assert!(
        !r.human
            .lines()
            .any(|l| l.starts_with('+') || l.starts_with('-')),
        "{}",
        r.show()
    );
}

#[test]
fn ignore_timestamps_keeps_the_other_entry_fields() {
    let t = tempfile::tempdir().unwrap();
    let root = layout_dir(&t, "L");
    let layer = |root: &Path, x: &str, mtime: u64| {
        gz_layer(
            root,
            &[f("x", x).mtime(mtime), f("y", "same\n").mtime(mtime)],
        )
    };
    let a = image(&root, &[layer(&root, "1\n", MTIME)], &Opts::default());
    let b = image(&root, &[layer(&root, "2\n", MTIME + 1)], &Opts::default());
    tag_all(&root, &[("a", &a), ("b", &b)]);
    let (la, lb) = (at(&root, "a"), at(&root, "b"));
    let r = diff(&la, &lb, &[], 1);
    assert_eq!(r.paths("layer"), strings(&["/x", "/y"]), "{}", r.show());
    assert_eq!(
        kind_fields(r.one("layer", "/x")).1,
        vec!["content".to_string(), "mtime".to_string()],
        "{}",
        r.show()
    );
    let r = diff(&la, &lb, &["--ignore", "timestamps"], 1);
    assert_eq!(r.paths("layer"), strings(&["/x"]), "{}", r.show());
    assert_eq!(
        kind_fields(r.one("layer", "/x")),
        ("changed".to_string(), vec!["content".to_string()]),
        "{}",
        r.show()
    );
}
