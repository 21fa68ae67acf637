//! `estargz convert`, run as a user would run it: the JSON report describes the blob it wrote
//! (checked with the library's reader), zstd:chunked and external-TOC output, prioritised files
//! from a list or a record file (a missing one is an error unless allowed), stdin / stdout,
//! no progress output on a pipe, and a complete `--help`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use estargz::footer::Footer;
use estargz::index::Landmark;
use estargz::{Digest, OpenOptions, Reader};
use estargz_testkit::synth;
use serde_json::Value;

fn estargz(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_estargz"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run estargz")
}

fn estargz_with_stdin(args: &[&str], input: Vec<u8>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_estargz"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run estargz");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[track_caller]
fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "estargz failed ({}): {}{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", text(bytes)))
}

/// A small layer: every entry type plus a few hundred small files.
fn input_tar() -> Vec<u8> {
    let mut t = synth::every_entry_type();
    t.truncate(t.len() - 1024); // drop the end-of-archive blocks ...
    let small = synth::many_small_files(300, 3);
    t.extend_from_slice(&small); // ... and append a second archive's members
    t
}

fn gunzip_all(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut out)
        .expect("gzip members");
    out
}

/// Checks the `--json` report against the blob: digests, sizes, annotations.
#[track_caller]
fn check_report(report: &Value, blob: &[u8], external_toc: Option<Vec<u8>>) -> Reader<Vec<u8>> {
    let s = |k: &str| {
        report[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} missing: {report}"))
            .to_string()
    };
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} missing: {report}"))
    };
    assert_eq!(n("blobSize"), blob.len() as u64);
    assert_eq!(s("blobDigest"), Digest::of(blob).to_string());
    let toc_digest: Digest = s("tocDigest").parse().expect("tocDigest");
    let reader = Reader::open_with(
        blob.to_vec(),
        OpenOptions {
            expected_toc_digest: Some(toc_digest),
            external_toc,
            ..OpenOptions::default()
        },
    )
    .expect("the blob opens with the reported TOC digest");
    reader.verify().expect("verify");
    let ann = report["annotations"].as_object().expect("annotations");
    assert_eq!(
        ann["containerd.io/snapshot/stargz/toc.digest"],
        toc_digest.to_string()
    );
    assert_eq!(
        ann["io.containers.estargz.uncompressed-size"],
        n("uncompressedSize").to_string()
    );
    assert!(s("diffId").starts_with("sha256:"));
    reader
}

#[test]
fn json_report_describes_the_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("layer.tar");
    let tar = input_tar();
    std::fs::write(&input, &tar).expect("write input");
    let out = dir.path().join("layer.esgz");
    let o = estargz(&["convert", p(&input), p(&out), "--json", "--threads", "2"]);
    ok(&o);
    assert!(
        o.stderr.is_empty(),
        "nothing on stderr (no progress bar on a pipe): {}",
        text(&o.stderr)
    );
    let report = json(&o.stdout);
    let keys: Vec<&str> = report
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [
            "annotations",
            "blobDigest",
            "blobSize",
            "diffId",
            "tocDigest",
            "uncompressedSize"
        ]
        .into_iter()
        .collect()
    );
    let blob = std::fs::read(&out).expect("blob");
    let reader = check_report(&report, &blob, None);
    // DiffID and uncompressed size are those of the blob's decompressed stream.
    let stream = gunzip_all(&blob);
    assert_eq!(report["diffId"], Digest::of(&stream).to_string());
    assert_eq!(report["uncompressedSize"], stream.len() as u64);
    assert_eq!(report["annotations"].as_object().expect("ann").len(), 2);
    assert!(matches!(reader.footer(), Footer::Estargz { .. }));
    assert_eq!(reader.index().landmark(), Landmark::NoPrefetch);
    let mut small = String::new();
    reader
        .open_file("dir/small.txt")
        .expect("file")
        .read_to_string(&mut small)
        .expect("read");
    assert_eq!(small, "small file contents\n");

    // Without --json: a human summary on stdout, still nothing on stderr.
    let out2 = dir.path().join("again.esgz");
    let o = estargz(&["convert", p(&input), p(&out2), "--threads", "1"]);
    ok(&o);
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(report["tocDigest"].as_str().expect("toc")));
    assert_eq!(
        std::fs::read(&out2).expect("blob"),
        blob,
        "threads do not change output"
    );
}

#[test]
fn zstd_chunked_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("layer.tar");
    std::fs::write(&input, input_tar()).expect("write input");
    let out = dir.path().join("layer.zst");
    let o = estargz(&[
        "convert",
        p(&input),
        p(&out),
        "--zstd-chunked",
        "--chunk-size",
        "65536",
        "--level",
        "5",
        "--json",
    ]);
    ok(&o);
    let report = json(&o.stdout);
    let blob = std::fs::read(&out).expect("blob");
    let reader = check_report(&report, &blob, None);
    assert!(matches!(reader.footer(), Footer::ZstdChunked { .. }));
    let ann = report["annotations"].as_object().expect("annotations");
    let pos = ann["io.containers.zstd-chunked.manifest-position"]
        .as_str()
        .expect("position");
    let parts: Vec<usize> = pos.split(':').map(|x| x.parse().expect("num")).collect();
    let frame = &blob[parts[0]..parts[0] + parts[1]];
    assert_eq!(
        ann["io.containers.zstd-chunked.manifest-checksum"],
        Digest::of(frame).to_string()
    );
    assert!(reader
        .index()
        .all_chunks()
        .iter()
        .all(|c| c.size() <= 65536));
}

#[test]
fn external_toc_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("layer.tar");
    std::fs::write(&input, input_tar()).expect("write input");
    let out = dir.path().join("layer.esgz");
    let toc = dir.path().join("layer.toc");
    let o = estargz(&[
        "convert",
        p(&input),
        p(&out),
        "--external-toc",
        p(&toc),
        "--json",
    ]);
    ok(&o);
    let report = json(&o.stdout);
    let blob = std::fs::read(&out).expect("blob");
    let toc_blob = std::fs::read(&toc).expect("toc blob");
    assert_eq!(
        report["externalTocDigest"],
        Digest::of(&toc_blob).to_string()
    );
    assert_eq!(report["externalTocSize"], toc_blob.len() as u64);
    // Without the TOC blob the layer cannot be opened; with it, it verifies.
    let err = Reader::open(blob.clone()).expect_err("external TOC needed");
    assert!(err.to_string().contains("external"), "{err}");
    let reader = check_report(&report, &blob, Some(toc_blob));
    assert_eq!(reader.footer(), Footer::ExternalToc);
    // The CLI's own reader takes the TOC with --toc.
    let o = estargz(&["verify", p(&out), "--toc", p(&toc)]);
    ok(&o);
    // zstd:chunked has no external-TOC form.
    let o = estargz(&[
        "convert",
        p(&input),
        p(&dir.path().join("x")),
        "--zstd-chunked",
        "--external-toc",
        p(&toc),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("external TOC"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn prioritized_files_and_record_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("layer.tar");
    std::fs::write(&input, input_tar()).expect("write input");
    let list = dir.path().join("prio.txt");
    std::fs::write(&list, "dir/small.txt\n\n/xattr/file\nno/such/file\n").expect("list");
    let record = dir.path().join("record.json");
    std::fs::write(
        &record,
        "{\"path\":\"/dir/multi-chunk.bin\",\"manifestDigest\":\"x\"}\n{\"path\":\"missing-too\"}\n",
    )
    .expect("record");
    let out = dir.path().join("layer.esgz");

    // A missing prioritised file is an error (exit 1, named), and no output is left behind.
    for (flag, file, missing) in [
        ("--prioritized-files", &list, "no/such/file"),
        ("--record-in", &record, "missing-too"),
    ] {
        let o = estargz(&["convert", p(&input), p(&out), flag, p(file)]);
        assert_eq!(o.status.code(), Some(1), "{flag}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(missing),
            "{flag}: {}",
            text(&o.stderr)
        );
        assert!(
            !out.exists(),
            "{flag}: a failed conversion leaves no output"
        );
    }

    // Allowed: reported in the JSON; the found ones come first, in order, then the landmark.
    let o = estargz(&[
        "convert",
        p(&input),
        p(&out),
        "--prioritized-files",
        p(&list),
        "--record-in",
        p(&record),
        "--allow-missing-prioritized",
        "--json",
    ]);
    ok(&o);
    let report = json(&o.stdout);
    assert_eq!(
        report["missedPrioritized"],
        serde_json::json!(["no/such/file", "missing-too"])
    );
    let blob = std::fs::read(&out).expect("blob");
    let reader = check_report(&report, &blob, None);
    assert!(matches!(
        reader.index().landmark(),
        Landmark::Prefetch { .. }
    ));
    let toc = estargz::Toc::from_json(&reader.toc_json().expect("toc")).expect("toc");
    let names: Vec<&str> = toc
        .entries
        .iter()
        .filter(|e| e.entry_type != estargz::EntryType::Chunk)
        .map(|e| e.name.as_str())
        .take(6)
        .collect();
    assert_eq!(
        names,
        [
            "dir/",
            "dir/small.txt",
            "xattr/",
            "xattr/file",
            "dir/multi-chunk.bin",
            ".prefetch.landmark"
        ]
    );

    // A record file that is not JSON lines: an error naming the line.
    std::fs::write(&record, "{\"path\":\"a\"}\nnot json\n").expect("record");
    let o = estargz(&["convert", p(&input), p(&out), "--record-in", p(&record)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("line 2"), "{}", text(&o.stderr));
}

#[test]
fn stdin_and_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = input_tar();
    let input = dir.path().join("layer.tar");
    std::fs::write(&input, &tar).expect("write input");
    let out = dir.path().join("layer.esgz");
    let o = estargz(&["convert", p(&input), p(&out), "--json"]);
    ok(&o);
    let from_file = std::fs::read(&out).expect("blob");

    // `- -`: the blob on stdout, the JSON on stderr (and nothing else there).
    let o = estargz_with_stdin(&["convert", "-", "-", "--json"], tar.clone());
    ok(&o);
    assert!(o.stdout == from_file, "stdin/stdout gives the same blob");
    let report = json(&o.stderr);
    check_report(&report, &o.stdout, None);

    // A gzip-compressed input on stdin: the same layer.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let out2 = dir.path().join("from-gz.esgz");
    let o = estargz_with_stdin(&["convert", "-", p(&out2)], gz);
    ok(&o);
    assert!(
        o.stderr.is_empty(),
        "no progress on a pipe: {}",
        text(&o.stderr)
    );
    assert!(std::fs::read(&out2).expect("blob") == from_file);

    // Without --json and with OUT = -, the summary goes to stderr, the blob alone to stdout.
    let o = estargz_with_stdin(&["convert", "-", "-"], tar);
    ok(&o);
    assert!(o.stdout == from_file);
    assert!(
        text(&o.stderr).contains("toc digest"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn bad_input_and_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("junk.tar");
    std::fs::write(&input, vec![b'x'; 2048]).expect("write");
    let out = dir.path().join("out.esgz");
    let o = estargz(&["convert", p(&input), p(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("checksum"), "{}", text(&o.stderr));
    assert!(!out.exists());
    let o = estargz(&["convert", p(&dir.path().join("nope.tar")), p(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("nope.tar"), "{}", text(&o.stderr));
    let o = estargz(&["convert", p(&input), p(&out), "--level", "13"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("level 13"), "{}", text(&o.stderr));
    let o = estargz(&[
        "convert",
        p(&input),
        p(&out),
        "--skip-unsupported",
        "--convert-unsupported",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "conflicting flags are a usage error"
    );
    let o = estargz(&["convert", p(&input)]);
    assert_eq!(o.status.code(), Some(2), "OUT is required");
}

#[test]
fn help_is_complete() {
    let o = estargz(&["convert", "--help"]);
    ok(&o);
    let help = text(&o.stdout);
    for needle in [
        "<IN>",
        "<OUT>",
        "stdin",
        "stdout",
        "--chunk-size",
        "--level",
        "--min-chunk-size",
        "--prioritized-files",
        "--record-in",
        "--allow-missing-prioritized",
        "--zstd-chunked",
        "--external-toc",
        "--threads",
        "--skip-unsupported",
        "--convert-unsupported",
        "--json",
        "tocDigest",
        "4 MiB",
    ] {
        assert!(
            help.contains(needle),
            "`convert --help` lacks {needle:?}:\n{help}"
        );
    }
    let o = estargz(&["--help"]);
    assert!(text(&o.stdout).contains("convert"), "{}", text(&o.stdout));
}

/// `estargz convert ... --json | head -c 1`: the reader closes the pipe before the report is
/// written. The blob is written, the command succeeds quietly (no panic on the closed pipe).
#[test]
fn a_closed_stdout_is_not_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.tar");
    std::fs::write(&input, input_tar()).expect("write input");
    let out = dir.path().join("out.esgz");
    for extra in [&["--json"][..], &[][..]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_estargz"))
            .arg("convert")
            .args(extra)
            .args([p(&input), p(&out)])
            .stdin(Stdio::null())
            .stdout(writer)
            .output()
            .expect("run estargz");
        ok(&o);
        assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
        Reader::open(std::fs::File::open(&out).expect("blob")).expect("the blob was written");
    }
}
