//! Conformance against the shared corpus of layouts, archives and tars made by
//! other tools (`$OCIKIT_CORPUS`, see its SOURCES.md and EXPECTATIONS.tsv).
//!
//! Every `oci-layout` / `oci-index-fragment` entry is verified and the verdict
//! compared with the entry's status and with [`EXPECTED`], the exact error
//! kinds each non-valid entry must produce (each checked by hand against the
//! entry's note). Archives and tar files are counted as pending until ocikit
//! reads them, but `verify` must still refuse them cleanly.
//!
//! Run with `OCIKIT_CORPUS=../shared/corpus cargo test --test conformance`
//! (a relative path is taken from the crate directory).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::Value;

/// What verify must say about one non-valid corpus entry.
struct Expect {
    path: &'static str,
    /// Exit code of `verify`.
    exit: i32,
    /// The distinct kinds of the error findings, sorted.
    errors: &'static [&'static str],
    /// Strings (digest prefixes, sizes, file names) that some error finding's
    /// digest, path or message must contain: the culprit the note names.
    mentions: &'static [&'static str],
}

const fn e(
    path: &'static str,
    exit: i32,
    errors: &'static [&'static str],
    mentions: &'static [&'static str],
) -> Expect {
    Expect {
        path,
        exit,
        errors,
        mentions,
    }
}

const MISSING: &[&str] = &["missing"];

/// Every non-valid layout and fragment of the corpus.
const EXPECTED: &[Expect] = &[
    // Archives.
    e(
        "go-containerregistry/pkg/v1/tarball/testdata/hello-world-v25.tar",
        1,
        &["schema-invalid"],
        &["\"manifests\": null"],
    ),
    e(
        "go-containerregistry/pkg/v1/tarball/testdata/no_manifest.tar",
        1,
        &["malformed"],
        &["neither oci-layout and index.json nor manifest.json"],
    ),
    e(
        "go-containerregistry/pkg/v1/tarball/testdata/null_manifest.tar",
        1,
        &["malformed"],
        &["manifest.json is null"],
    ),
    e(
        "go-containerregistry/pkg/v1/tarball/testdata/sparse_foreign.tar",
        0,
        &[],
        &[],
    ),
    e(
        "moby/integration-cli/testdata/emptyLayer.tar",
        1,
        &["malformed"],
        &["Docker before 1.10"],
    ),
    e(
        "oras-go/content/oci/testdata/hello-world.tar",
        1,
        &["missing"],
        &[],
    ),
    e(
        "oras-go/content/oci/testdata/hello-world-prefixed-path.tar",
        1,
        &["missing"],
        &[],
    ),
    // defective: inconsistent by accident.
    e(
        "go-containerregistry/pkg/v1/layout/testdata/test_index",
        1,
        &["mediatype-mismatch"],
        &[
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.oci.descriptor.v1+json",
        ],
    ),
    e(
        "go-containerregistry/pkg/v1/layout/testdata/test_gc_index",
        1,
        &["mediatype-mismatch"],
        &["application/vnd.docker.distribution.manifest.v2+json"],
    ),
    e(
        "containers-image/oci/layout/fixtures/delete_image_multiple_images",
        1,
        &["size-mismatch"],
        &["sha256:913cf3a3", "585", "584"],
    ),
    e(
        "containers-image/oci/layout/fixtures/delete_image_only_one_image",
        1,
        &["size-mismatch"],
        &["585", "740"],
    ),
    e(
        "olot/tests/data/sample-model/oci",
        1,
        &["size-mismatch"],
        &[
            "says 3299",
            "says 6625",
            "says 72",
            "is 10240 bytes",
            "is 2218 bytes",
        ],
    ),
    // incomplete: blobs absent by design.
    e(
        "go-containerregistry/pkg/v1/layout/testdata/test_gc_image_unknown_mediatype",
        1,
        MISSING,
        &[],
    ),
    e(
        "containers-image/oci/layout/fixtures/delete_image_shared_blobs_dir",
        1,
        MISSING,
        &[],
    ),
    e("olot/tests/data/ocilayout1", 1, MISSING, &[]),
    e("olot/tests/data/ocilayout2", 1, MISSING, &[]),
    e("olot/tests/data/ocilayout3", 1, MISSING, &[]),
    e("olot/tests/data/ocilayout5", 1, MISSING, &[]),
    e("olot/tests/data/dockerdist1", 1, MISSING, &[]),
    e(
        "imgutil/layout/testdata/layout/busybox-sparse",
        1,
        MISSING,
        &[],
    ),
    e(
        "imgutil/layout/testdata/layout/my-previous-sparse-image",
        1,
        MISSING,
        &[],
    ),
    e(
        "imgutil/layout/testdata/layout/busybox-multi-platform",
        1,
        MISSING,
        &[],
    ),
    e(
        "imgutil/layout/testdata/layout/index-with-docker-media-type",
        1,
        MISSING,
        &[],
    ),
    // schema-invalid: real producers' output that violates the schema.
    e(
        "oras/test/e2e/testdata/zot/command/blobs",
        1,
        &["schema-invalid"],
        &["\"manifests\": null"],
    ),
    e(
        "trivy/pkg/fanal/test/testdata/test_no_valid_manifests.oci",
        1,
        &["schema-invalid"],
        &["schemaVersion", "\"manifests\""],
    ),
    // invalid: broken on purpose.
    e(
        "stereoscope/pkg/image/oci/testdata/no_manifests",
        1,
        &["mediatype-mismatch", "missing"],
        &["index.json is an image manifest", "oci-layout"],
    ),
    e(
        "stereoscope/pkg/image/oci/testdata/invalid_file",
        1,
        &["malformed", "missing"],
        &["index.json", "oci-layout"],
    ),
    e(
        "stereoscope/pkg/image/oci/testdata/valid_manifest",
        1,
        &["missing", "size-mismatch"],
        &["is 0 bytes but its descriptor says 424", "oci-layout"],
    ),
    e(
        "trivy/pkg/fanal/test/testdata/test_bad_index_json.oci",
        1,
        &["malformed"],
        &["index.json"],
    ),
    e(
        "trivy/pkg/fanal/test/testdata/test_index_json_dir.oci",
        1,
        &["non-regular"],
        &["index.json", "directory"],
    ),
    e(
        "trivy/pkg/fanal/test/testdata/test_index_json_dir.oci/test_bad_index_json.oci",
        1,
        &["malformed"],
        &["index.json"],
    ),
    e(
        "trivy/pkg/fanal/test/testdata/test_invalid_oci_image.oci",
        1,
        MISSING,
        &["sha256:bad7"],
    ),
    e("oci-spec-rs/test/data", 1, MISSING, &[]),
    // fragments: an index.json alone (no oci-layout, no blobs).
    e(
        "containers-image/oci/layout/fixtures/manifest",
        1,
        MISSING,
        &["oci-layout"],
    ),
    e(
        "containers-image/oci/layout/fixtures/name_lookups",
        1,
        MISSING,
        &["oci-layout"],
    ),
    e(
        "containers-image/oci/layout/fixtures/two_images_manifest",
        1,
        MISSING,
        &["oci-layout"],
    ),
    e(
        "trivy/pkg/fanal/image/testdata/single",
        1,
        MISSING,
        &["oci-layout"],
    ),
    e("trivy/pkg/fanal/image/testdata/multi", 1, MISSING, &[]),
];

struct Row {
    path: String,
    kind: String,
    status: String,
    note: String,
}

fn rows(corpus: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(corpus.join("EXPECTATIONS.tsv")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut f = l.splitn(4, '\t');
            let mut next = || f.next().unwrap_or("").to_string();
            Row {
                path: next(),
                kind: next(),
                status: next(),
                note: next(),
            }
        })
        .collect()
}

/// A run of the binary; a panic, a signal or an exit code outside 0..=2 is an
/// error.
fn run(args: &[&str]) -> Result<(i32, String, String), String> {
    let o = ocikit(args);
    let (c, out, err) = (code(&o), stdout(&o), stderr(&o));
    if err.contains("panicked") || !(0..=2).contains(&c) {
        return Err(format!(
            "ocikit {args:?} exited {c} (panic or signal): {}",
            err.trim()
        ));
    }
    Ok((c, out, err))
}

struct Finding {
    error: bool,
    kind: String,
    /// digest + path + message, for `mentions`.
    text: String,
    has_digest: bool,
}

fn verify(path: &str) -> Result<(i32, Vec<Finding>, String), String> {
    let (c, out, err) = run(&["verify", "--json", path])?;
    if c == 2 {
        return Ok((c, Vec::new(), err));
    }
    let v: Value =
        serde_json::from_str(&out).map_err(|e| format!("verify printed no JSON ({e}): {err}"))?;
    if v["ok"] != (c == 0) {
        return Err(format!("exit {c} but \"ok\": {}", v["ok"]));
    }
    let findings = v["findings"]
        .as_array()
        .ok_or("no findings array")?
        .iter()
        .map(|f| Finding {
            error: f["severity"] == "error",
            kind: f["kind"].as_str().unwrap_or("?").to_string(),
            text: format!(
                "{} {} {}",
                f["digest"].as_str().unwrap_or(""),
                f["path"].as_str().unwrap_or(""),
                f["message"].as_str().unwrap_or("")
            ),
            has_digest: f["digest"].as_str().is_some_and(|d| !d.is_empty()),
        })
        .collect();
    Ok((c, findings, err))
}

fn error_kinds(findings: &[Finding]) -> Vec<String> {
    let mut k: Vec<String> = findings
        .iter()
        .filter(|f| f.error)
        .map(|f| f.kind.clone())
        .collect();
    k.sort();
    k.dedup();
    k
}

fn summary(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "\n      {} {}: {}",
                if f.error { "error" } else { "warning" },
                f.kind,
                f.text.trim()
            )
        })
        .collect()
}

/// Checks one layout or fragment; `Err` says how ocikit disagrees.
fn check_layout(row: &Row, path: &str) -> Result<(), String> {
    let (c, findings, err) = verify(path)?;
    let kinds = error_kinds(&findings);
    let got = || {
        format!(
            "exit {c}, error kinds {kinds:?}{}{}",
            summary(&findings),
            err.trim()
        )
    };
    let any = |set: &[&str]| kinds.iter().any(|k| set.contains(&k.as_str()));
    // The status's general rule.
    let rule_ok = match row.status.as_str() {
        "valid" => c == 0,
        "defective" => c == 1 && any(&["size-mismatch", "digest-mismatch", "mediatype-mismatch"]),
        "schema-invalid" => c == 1 && any(&["schema-invalid"]),
        "invalid" => {
            c == 2
                || (c == 1
                    && any(&[
                        "malformed",
                        "non-regular",
                        "missing",
                        "schema-invalid",
                        "mediatype-mismatch",
                    ]))
        }
        // Absent blobs are errors, except non-distributable (foreign) layers,
        // whose absence is a warning (design.md invariant 6).
        "incomplete" => {
            (c == 1
                && findings
                    .iter()
                    .filter(|f| f.error)
                    .all(|f| f.kind == "missing" && f.has_digest))
                || (c == 0 && findings.iter().any(|f| f.kind == "foreign-missing"))
        }
        "fragment" => c == 1 || c == 2,
        other => return Err(format!("unknown status {other:?}")),
    };
    if !rule_ok {
        return Err(format!("status {} not honoured: {}", row.status, got()));
    }
    // The exact verdict recorded for it.
    let expect = EXPECTED.iter().find(|x| x.path == row.path);
    match (row.status.as_str(), expect) {
        ("valid", Some(_)) => return Err("valid, but listed in EXPECTED".into()),
        ("valid", None) => {}
        (_, None) => return Err(format!("no entry in EXPECTED; ocikit says {}", got())),
        (_, Some(x)) => {
            if c != x.exit || kinds != x.errors {
                return Err(format!(
                    "expected exit {} and error kinds {:?}; got {}",
                    x.exit,
                    x.errors,
                    got()
                ));
            }
            for m in x.mentions {
                if !findings.iter().any(|f| f.error && f.text.contains(m)) {
                    return Err(format!("no error finding mentions {m:?}: {}", got()));
                }
            }
        }
    }
    // Readers: never a panic; a valid layout lists.
    if matches!(row.status.as_str(), "valid" | "defective" | "incomplete") {
        let (lc, out, lerr) = run(&["ls", "--json", path])?;
        if row.status == "valid" && lc != 0 {
            return Err(format!("ls exited {lc}: {}", lerr.trim()));
        }
        if lc != 0 && lc != 2 {
            return Err(format!("ls exited {lc}"));
        }
        let first_tag = serde_json::from_str::<Value>(&out).ok().and_then(|v| {
            v["images"]
                .as_array()?
                .iter()
                .find_map(|i| i["tag"].as_str().map(str::to_string))
        });
        let loc = match &first_tag {
            Some(t) => format!("{path}:{t}"),
            None => path.to_string(),
        };
        run(&["inspect", &loc])?;
        run(&["inspect", "--json", path])?;
        run(&["cat", &loc, "config"])?;
    }
    Ok(())
}

/// Layer and edge-case tars: not read yet (flatten issue), but refused cleanly.
fn check_pending(path: &str) -> Result<(), String> {
    // A tar that is not an image archive: one `malformed` finding (exit 1), or
    // a file that is no tar at all: an error (exit 2). Never anything else.
    let (c, out, err) = run(&["verify", path])?;
    let clean = match c {
        1 => out.starts_with("error: malformed:"),
        2 => err.starts_with("ocikit: error: "),
        _ => false,
    };
    if !clean {
        return Err(format!(
            "verify exited {c} (expected a clean refusal): {} {}",
            out.trim(),
            err.trim()
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    entries: usize,
    agree: usize,
    pending: usize,
    disagree: usize,
}

/// Prints past libtest's output capture (which only intercepts the print
/// macros), so the skip notice and the agreement count show in CI logs.
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[test]
fn corpus_conformance() {
    let Some(corpus) = corpus() else {
        report("OCIKIT_CORPUS is not set; skipping corpus conformance");
        return;
    };
    let rows = rows(&corpus);
    assert!(!rows.is_empty(), "EXPECTATIONS.tsv has no entries");
    let mut total = Tally::default();
    let mut by_status: BTreeMap<String, Tally> = BTreeMap::new();
    let mut disagreements = Vec::new();
    for row in &rows {
        let full = corpus.join(&row.path);
        let path = full.to_str().expect("corpus paths are UTF-8");
        let result = if !full.exists() {
            Err(format!("{} does not exist", full.display()))
        } else {
            match row.kind.as_str() {
                "oci-layout" | "oci-index-fragment" | "oci-archive" | "docker-archive" => {
                    check_layout(row, path).map(|()| false)
                }
                "layer-tar" | "tar-edge" => check_pending(path).map(|()| true),
                other => Err(format!("unknown kind {other:?}")),
            }
        };
        let t = by_status
            .entry(format!("{} {}", row.kind, row.status))
            .or_default();
        t.entries += 1;
        total.entries += 1;
        match result {
            Ok(false) => {
                t.agree += 1;
                total.agree += 1;
            }
            Ok(true) => {
                t.pending += 1;
                total.pending += 1;
            }
            Err(why) => {
                t.disagree += 1;
                total.disagree += 1;
                disagreements.push(format!(
                    "  {} [{} {}]: {why}\n    note: {}",
                    row.path, row.kind, row.status, row.note
                ));
            }
        }
    }
    // Every recorded expectation belongs to a corpus entry.
    for x in EXPECTED {
        if !rows.iter().any(|r| r.path == x.path) {
            disagreements.push(format!(
                "  {}: in EXPECTED but not in EXPECTATIONS.tsv",
                x.path
            ));
            total.disagree += 1;
        }
    }
    for (status, t) in &by_status {
        report(&format!(
            "  {status}: {} entries, {} agree, {} pending, {} disagree",
            t.entries, t.agree, t.pending, t.disagree
        ));
    }
    if total.pending > 0 {
        report("  (pending: layer tars, read by the flatten issue)");
    }
    report(&format!(
        "corpus: {} entries, {} agree, {} pending, {} disagree",
        total.entries, total.agree, total.pending, total.disagree
    ));
    assert!(
        disagreements.is_empty(),
        "ocikit disagrees with the corpus:\n{}",
        disagreements.join("\n")
    );
}
