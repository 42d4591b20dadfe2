//! Shell completions and man pages are generated for every command.

mod common;

use common::*;

/// Every subcommand, from `ocikit --help`.
fn commands() -> Vec<String> {
    let help = stdout(&ocikit_ok(["--help"]));
    let mut in_list = false;
    let mut v = Vec::new();
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_list = true;
            continue;
        }
        if in_list {
            if line.trim().is_empty() {
                break;
            }
            if let Some(name) = line.split_whitespace().next() {
                if name != "help" {
                    v.push(name.to_string());
                }
            }
        }
    }
    assert!(v.len() >= 15, "{v:?}");
    v
}

#[test]
fn completions_name_every_command_in_every_shell() {
    let cmds = commands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = stdout(&ocikit_ok(["completions", shell]));
        assert!(out.len() > 1000, "{shell}: {} bytes", out.len());
        for c in &cmds {
            assert!(out.contains(c.as_str()), "{shell} completions lack {c}");
        }
    }
    // Flags of a command are completed too.
    let bash = stdout(&ocikit_ok(["completions", "bash"]));
    for flag in [
        "--output",
        "--tar",
        "--rootless",
        "--ignore",
        "--content",
        "--lock-timeout",
    ] {
        assert!(bash.contains(flag), "bash completions lack {flag}");
    }
    let r = ocikit(["completions", "tcsh"]);
    assert_eq!(code(&r), 2);
}

#[test]
fn man_pages_exist_for_every_command_and_have_examples() {
    let cmds = commands();
    let page = stdout(&ocikit_ok(["man"]));
    assert!(
        page.contains(".TH ocikit 1"),
        "{}",
        &page[..page.len().min(300)]
    );
    for c in &cmds {
        // roff escapes a hyphen in a name (get-file is get\-file).
        assert!(
            page.contains(c.as_str()) || page.contains(&c.replace('-', "\\-")),
            "ocikit.1 lacks {c}"
        );
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("man1");
    ocikit_ok(["man", "--dir", dir.to_str().unwrap()]);
    for c in &cmds {
        let p = dir.join(format!("ocikit-{c}.1"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            text.contains(&format!(".TH ocikit-{c} 1")),
            "{}",
            p.display()
        );
        assert!(text.contains(".SH NAME"), "{}", p.display());
        assert!(
            text.contains("Example"),
            "{} has no example (every --help has one)",
            p.display()
        );
    }
    assert!(dir.join("ocikit.1").is_file());
    if have("man") {
        // The page renders (man -l reads a local file).
        let r = run(
            "man",
            &[
                "-l",
                "-P",
                "cat",
                dir.join("ocikit-flatten.1").to_str().unwrap(),
            ],
        );
        assert!(
            String::from_utf8_lossy(&r.stdout).contains("flatten"),
            "{r:?}"
        );
    }
}
