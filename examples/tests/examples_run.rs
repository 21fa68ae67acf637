//! The examples do what their documentation says, on the repository's sample layers.

use std::process::Command;

fn vector(name: &str) -> String {
    format!(
        "{}/../testdata/vectors/{name}/blob.esgz",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn read_file_prints_the_verified_file() {
    let toc_digest = "sha256:fab5f4d231e4728fef458a4a36adb010ae0cc34a0132f3a6185ec2d4908e2ac1";
    let out = Command::new(env!("CARGO_BIN_EXE_read_file"))
        .args([
            vector("edge-gzip-default").as_str(),
            "dup/file.txt",
            toc_digest,
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"second version, longer than the first\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 verified chunks"));
    // A wrong digest is refused.
    let bad = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let out = Command::new(env!("CARGO_BIN_EXE_read_file"))
        .args([vector("edge-gzip-default").as_str(), "dup/file.txt", bad])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn walk_tree_lists_every_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_walk_tree"))
        .arg(vector("edge-zstd-default"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // 157 paths; one name contains a newline, so it spans two lines.
    assert_eq!(text.lines().count(), 158);
    assert!(text.contains("/dup/file.txt"));
}
