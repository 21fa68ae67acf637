//! `Footer::parse` on arbitrary tails: never panics, and whatever it accepts is written back
//! (`to_bytes`) to bytes that parse to the same footer and agree with `size()`.
#![no_main]

use estargz::footer::Footer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(footer) = Footer::parse(data) {
        let bytes = footer.to_bytes();
        assert_eq!(bytes.len(), footer.size());
        assert_eq!(Footer::parse(&bytes).ok(), Some(footer));
        // The canonical bytes are a suffix-wise re-encoding: the parsed tail had the same size.
        assert!(data.len() >= footer.size());
        // toc_range never panics, whatever the blob size.
        for blob_size in [0, data.len() as u64, u64::MAX] {
            let _ = footer.toc_range(blob_size);
        }
    }
});
