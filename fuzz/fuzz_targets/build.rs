//! The builder on arbitrary bytes as its input tar (plain, or gzip / zstd when the bytes start
//! with their magic), with small chunk sizes and option bits taken from the first two bytes.
//! Nothing may panic; a build that succeeds must give a blob whose size and digests are the
//! report's, that this crate's reader opens with the report's TOC digest (unless it refuses a
//! hardlink, as every reader does for a hardlink to a missing target) and that then verifies;
//! and the blob is byte-identical for 1 and 2 threads.
//!
//! `UnsupportedEntries::Convert` is fuzzed with sparse expansion bounded to 1 MiB
//! (`max_sparse_expansion`), so a tiny input cannot declare gigabytes of zeros.
#![no_main]

use estargz::build::{BuildOptions, Builder, OutputFormat, UnsupportedEntries};
use estargz::{Digest, OpenOptions, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (flags, chunk, input) = match data {
        [a, b, rest @ ..] => (*a, *b, rest),
        _ => return,
    };
    let opts = |threads| BuildOptions {
        format: if flags & 1 != 0 {
            OutputFormat::ZstdChunked
        } else {
            OutputFormat::Estargz
        },
        level: Some(1),
        chunk_size: 1 + u64::from(chunk) * 61,
        min_chunk_size: if flags & 2 != 0 { 700 } else { 0 },
        prioritized: if flags & 4 != 0 {
            vec!["a".into(), "./a/b".into(), "../c".into(), "/".into()]
        } else {
            Vec::new()
        },
        allow_missing_prioritized: flags & 8 != 0,
        external_toc: flags & 16 != 0 && flags & 1 == 0,
        threads,
        unsupported: match (flags & 32 != 0, flags & 64 != 0) {
            (true, _) => UnsupportedEntries::Skip,
            (false, true) => UnsupportedEntries::Convert,
            (false, false) => UnsupportedEntries::Error,
        },
        max_sparse_expansion: 1 << 20,
        progress: None,
    };
    let mut blob = Vec::new();
    let Ok(report) = Builder::new(opts(1)).build(input, &mut blob) else {
        return;
    };
    assert_eq!(report.blob_size, blob.len() as u64);
    assert_eq!(report.blob_digest, Digest::of(&blob));
    if flags & 64 != 0 {
        let mut again = Vec::new();
        let r2 = Builder::new(opts(2))
            .build_seekable(std::io::Cursor::new(input), &mut again)
            .expect("the second build of an input that built once");
        assert!(again == blob, "1 and 2 threads differ");
        assert_eq!(r2.toc_digest, report.toc_digest);
    }
    let open = OpenOptions {
        expected_toc_digest: Some(report.toc_digest),
        external_toc: report.external_toc.clone(),
        ..OpenOptions::default()
    };
    match Reader::open_with(&blob[..], open) {
        Ok(reader) => {
            reader.verify().expect("a blob we built verifies");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("hardlink"),
                "the reader refuses a blob we built: {msg}"
            );
        }
    }
});
