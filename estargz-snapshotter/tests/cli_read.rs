//! The read-side commands of the `estargz` binary, run as a user would run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use estargz_testkit::vectors::Vector;

fn estargz(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_estargz"))
        .args(args)
        .output()
        .expect("run estargz")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn vector_blob(name: &str) -> (Vector, PathBuf) {
    let v = Vector::load(name).expect("vector");
    let blob = v.blob_path().expect("stored blob");
    (v, blob)
}

fn sha256(data: &[u8]) -> String {
    estargz::Digest::of(data).to_string()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn info_json_reports_format_toc_and_landmark() {
    for (name, format) in [
        ("edge-gzip-default", "estargz"),
        ("edge-zstd-default", "zstd-chunked"),
        ("edge-gzip-prio", "estargz"),
    ] {
        let (v, blob) = vector_blob(name);
        let o = estargz(&["info", p(&blob), "--json"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let j: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
        assert_eq!(j["format"], format, "{name}");
        assert_eq!(
            j["tocDigest"].as_str(),
            v.manifest.expected.toc_digest.as_deref(),
            "{name}"
        );
        assert_eq!(j["blobSize"], std::fs::metadata(&blob).expect("stat").len());
        let want_landmark = if name.ends_with("prio") {
            "prefetch"
        } else {
            "no-prefetch"
        };
        assert_eq!(j["landmark"], want_landmark, "{name}");
        assert!(j["tocOffset"].as_u64().expect("tocOffset") > 0);
        assert!(j["files"].as_u64().expect("files") > 40);
    }
    // Text output names the format.
    let (_, blob) = vector_blob("edge-gzip-default");
    let o = estargz(&["info", p(&blob)]);
    assert!(
        stdout(&o).contains("format:       eStargz"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn cat_writes_verified_bytes_and_honours_offset_and_length() {
    let (v, blob) = vector_blob("edge-gzip-chunk64k");
    let mut checked = 0;
    for f in v.manifest.files.iter().filter(|f| f.is_final && f.size > 0) {
        let Ok(name) = std::str::from_utf8(f.name_bytes()) else {
            continue;
        };
        if name.contains("thing") {
            continue;
        }
        let o = estargz(&["cat", p(&blob), name]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert_eq!(sha256(&o.stdout), f.sha256, "{name}");
        checked += 1;
    }
    assert!(checked > 20);
    // A range across chunk boundaries of a multi-chunk file.
    let whole = estargz(&["cat", p(&blob), "sizes/4mib+1"]).stdout;
    assert_eq!(whole.len(), 4 * 1024 * 1024 + 1);
    let o = estargz(&[
        "cat",
        p(&blob),
        "/sizes/4mib+1",
        "--offset",
        "65530",
        "--length",
        "200000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, whole[65530..265530]);
    // Past the end: nothing, successfully.
    let o = estargz(&["cat", p(&blob), "sizes/4mib+1", "--offset", "99999999"]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
    // Not a file / missing.
    let o = estargz(&["cat", p(&blob), "sizes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    let o = estargz(&["cat", p(&blob), "no/such/file"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
}

#[test]
fn ls_lists_the_normalised_tree() {
    let (v, blob) = vector_blob("edge-gzip-default");
    let o = estargz(&["ls", p(&blob), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let tree = v.tree().expect("tree");
    assert_eq!(rows.len(), tree.len());
    for (ours, go) in rows.iter().zip(&tree) {
        assert_eq!(ours["path"], go.path.as_str());
        assert_eq!(ours["type"], go.kind.as_str(), "{}", go.path);
        assert_eq!(ours["uid"], go.uid, "{}", go.path);
    }
    let hard = rows
        .iter()
        .find(|r| r["path"] == "dup/hard-to-dup")
        .expect("hardlink row");
    assert_eq!(hard["nlink"], 2);
    assert_eq!(hard["type"], "reg");
    let dev = rows
        .iter()
        .find(|r| r["type"] == "char")
        .expect("a char device");
    assert!(dev.get("devMajor").is_some());
    let text = stdout(&estargz(&["ls", p(&blob)]));
    assert!(text
        .lines()
        .any(|l| l.starts_with("drwxr-xr-x") && l.ends_with("  .")));
    assert!(
        text.lines().any(|l| l.contains(" -> ")),
        "symlinks show targets"
    );
}

#[test]
fn toc_prints_the_exact_toc_bytes() {
    for name in ["edge-gzip-default", "edge-zstd-default"] {
        let (v, blob) = vector_blob(name);
        let o = estargz(&["toc", p(&blob)]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(o.stdout, v.toc_json().expect("toc.json"), "{name}");
    }
}

#[test]
fn verify_checks_the_toc_digest_and_every_chunk() {
    let (v, blob) = vector_blob("edge-gzip-chunk64k");
    let digest = v.manifest.expected.toc_digest.clone().expect("digest");
    let o = estargz(&["verify", p(&blob), "--toc-digest", &digest]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ok "), "{}", stdout(&o));

    let wrong = estargz::Digest::of(b"x").to_string();
    let o = estargz(&["verify", p(&blob), "--toc-digest", &wrong]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("TOC digest mismatch"), "{}", stderr(&o));

    let o = estargz(&["verify", p(&blob), "--toc-digest", "sha256:XYZ"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--toc-digest"), "{}", stderr(&o));
}

#[test]
fn a_tampered_chunk_fails_cat_and_verify_naming_the_file_and_chunk() {
    let (_, blob) = vector_blob("edge-gzip-chunk64k");
    let mut bytes = std::fs::read(&blob).expect("read blob");
    let reader = estargz::Reader::open(bytes.clone()).expect("open");
    let node = reader.index().lookup("sizes/4mib+1").expect("file");
    let chunk = reader.index().chunks(node)[3];
    // Flip a byte in the middle of the chunk's deflate data.
    let mid = (chunk.blob_offset() + (chunk.blob_end() - chunk.blob_offset()) / 2) as usize;
    bytes[mid] ^= 0x55;
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.esgz");
    std::fs::write(&bad, &bytes).expect("write");

    let o = estargz(&["cat", p(&bad), "sizes/4mib+1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("sizes/4mib+1"), "{err}");
    assert!(
        err.contains(&format!("file offset {}", chunk.file_offset())),
        "{err}"
    );
    // No byte of the bad chunk (or after it) reached stdout.
    assert!(
        o.stdout.len() as u64 <= chunk.file_offset(),
        "{}",
        o.stdout.len()
    );

    let o = estargz(&["verify", p(&bad)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("sizes/4mib+1"), "{}", stderr(&o));

    // Other files are still readable.
    let o = estargz(&["cat", p(&bad), "sizes/64k"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn not_a_blob_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("plain.txt");
    std::fs::write(
        &f,
        b"this is not a layer at all, just some text.....................................",
    )
    .expect("write");
    let o = estargz(&["info", p(&f)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not an eStargz"), "{}", stderr(&o));
    let o = estargz(&["info", "/nonexistent/blob"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot open"), "{}", stderr(&o));
}

#[test]
fn help_lists_every_command() {
    let o = estargz(&["--help"]);
    assert!(o.status.success());
    for cmd in ["info", "ls", "cat", "verify", "toc"] {
        assert!(stdout(&o).contains(cmd), "{cmd} missing from --help");
    }
    let o = estargz(&["cat", "--help"]);
    for flag in [
        "--offset",
        "--length",
        "--toc",
        "--toc-digest",
        "--no-verify",
    ] {
        assert!(stdout(&o).contains(flag), "{flag} missing from cat --help");
    }
}
