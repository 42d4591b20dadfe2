//! The committed demo layout is exactly what its generator builds.
//! Rebuild it with `OCIKIT_REGENERATE_DEMO=1 cargo test --test demo`.

mod common;

use common::*;

#[test]
fn demo_fixture_is_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let fresh = t.path().join("demo");
    build_demo(&fresh);
    // Building twice gives the same bytes.
    let again = t.path().join("again");
    build_demo(&again);
    assert_eq!(
        snapshot(&fresh),
        snapshot(&again),
        "the generator is not deterministic"
    );

    if std::env::var_os("OCIKIT_REGENERATE_DEMO").is_some() {
        let _ = std::fs::remove_dir_all(demo());
        copy_tree(&fresh, &demo());
        eprintln!("rewrote {}", demo().display());
    }
    assert_eq!(
        snapshot(&fresh),
        snapshot(&demo()),
        "testdata/demo differs from what its generator builds; run OCIKIT_REGENERATE_DEMO=1 cargo test --test demo and review the change"
    );
}
