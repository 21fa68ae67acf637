//! `scripts/demo.sh`, the project's main job, runs to the end on this machine: the shipped
//! vector is inspected and verified, then a converted layer is served over loopback HTTP and
//! read lazily (through a FUSE mount where FUSE is available, through the library otherwise),
//! fetching far fewer bytes than the layer holds; nothing stays mounted afterwards.

use std::process::Command;

/// Runs the demo with `env` and returns its stdout; asserts what every run must show.
fn run_demo(env: &[(&str, &str)]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo.sh");
    let mut cmd = Command::new("bash");
    // The script runs `cargo build --release`. Cargo gives this test the package's
    // CARGO_MANIFEST_DIR, CARGO_PKG_* and the like; build scripts (ring's) watch some of them, so
    // left in place they would make that build redo the work `scripts/test.sh` already did.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                key,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
            )
        {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .arg(script)
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Part 1: the shipped vector verifies against its TOC digest.
    assert!(stdout.contains("ok format=estargz"), "{stdout}");
    // Part 2: the lazily read files have the right bytes...
    assert!(
        stdout.contains(
            "a2507cd486cd0415fef6f722d9740bc5b184072a6382888d195416177b15ad97  sizes/random-300000"
        ),
        "{stdout}"
    );
    // ...and cost far fewer bytes than the layer.
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("==== result: fetched "))
        .unwrap_or_else(|| panic!("no result line:\n{stdout}"));
    let mut words = result.split_whitespace();
    let fetched: u64 = words.next().and_then(|w| w.parse().ok()).expect("fetched");
    assert_eq!(words.next(), Some("of"));
    let size: u64 = words.next().and_then(|w| w.parse().ok()).expect("size");
    assert!(
        fetched > 0 && fetched * 2 < size,
        "fetched {fetched} of {size} bytes"
    );
    // Nothing left mounted.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains("estargz-demo."), "{mounts}");
    stdout
}

#[test]
fn demo_reads_lazily_and_cleans_up() {
    let fuse = estargz_testkit::prereq::is_root() && std::path::Path::new("/dev/fuse").exists();
    let out = run_demo(&[]);
    assert_eq!(out.contains("estargz mount http://"), fuse, "{out}");
    if fuse {
        assert!(
            out.contains("==== cat MNT/dup/file.txt\nsecond version, longer than the first\n"),
            "{out}"
        );
        // The mount's own counters were printed (SIGUSR1 and on exit).
        assert!(out.contains(" blob bytes ("), "{out}");
    }
    // The path for machines without FUSE, forced.
    let out = run_demo(&[("ESTARGZ_DEMO_NO_FUSE", "1")]);
    assert!(out.contains("FUSE is not available here"), "{out}");
    assert!(
        out.contains(
            "af43d8f605f48901745f7919ff9b77b47d6c7acf2238f6678d2d0c78abac47b4  dup/file.txt"
        ),
        "{out}"
    );
}
