//! `-q` silences warnings, notes and summaries (never errors or results);
//! `-v` adds the time taken. ocikit prints no colour, with or without
//! `NO_COLOR`.

mod common;

use common::*;

#[test]
fn quiet_keeps_results_and_errors_and_drops_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("l");
    copy_tree(&demo(), &layout);
    // `tag` confirms on stderr; -q drops it, the change still happens.
    let loud = ocikit(["tag", &format!("{}:1.0", layout.display()), "loud"]);
    assert_eq!(code(&loud), 0);
    assert!(stderr(&loud).contains("tagged"), "{}", stderr(&loud));
    let quiet = ocikit(["-q", "tag", &format!("{}:1.0", layout.display()), "quiet"]);
    assert_eq!(code(&quiet), 0);
    assert_eq!(stderr(&quiet), "");
    assert!(index_tags(&layout).contains(&"quiet".to_string()));

    // Results still print; errors still print.
    let ls = ocikit(["ls", layout.to_str().unwrap(), "--quiet"]);
    assert!(stdout(&ls).contains("quiet"));
    let err = ocikit(["-q", "inspect", &format!("{}:nosuch", layout.display())]);
    assert_eq!(code(&err), 2);
    assert!(
        stderr(&err).starts_with("ocikit: error: "),
        "{}",
        stderr(&err)
    );

    // -v adds the time taken; -q and -v conflict.
    let v = ocikit(["-v", "ls", layout.to_str().unwrap()]);
    assert!(stderr(&v).contains("ocikit: done in "), "{}", stderr(&v));
    assert_eq!(
        code(&ocikit(["-q", "-v", "ls", layout.to_str().unwrap()])),
        2
    );
}

#[test]
fn no_escape_sequences_in_any_output() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("rootfs");
    for args in [
        vec!["ls".to_string(), s(&demo())],
        vec!["verify".into(), "--deep".into(), s(&demo())],
        vec![
            "diff".into(),
            format!("{}:1.0", demo().display()),
            format!("{}:legacy", demo().display()),
        ],
        vec![
            "flatten".into(),
            format!("{}:legacy", demo().display()),
            "--output".into(),
            s(&out),
        ],
    ] {
        let o = ocikit(&args);
        assert!(
            !stdout(&o).contains('\u{1b}') && !stderr(&o).contains('\u{1b}'),
            "{args:?}"
        );
    }
}
