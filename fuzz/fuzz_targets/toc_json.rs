//! `Toc::from_json` on arbitrary bytes: never panics, and whatever it accepts survives
//! `to_json` + `from_json` unchanged (and `to_json` is then a fixed point).
#![no_main]

use estargz::Toc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(toc) = Toc::from_json(data) {
        let json = toc.to_json();
        let back = match Toc::from_json(&json) {
            Ok(back) => back,
            Err(e) => panic!(
                "own output rejected: {e}\n{}",
                String::from_utf8_lossy(&json)
            ),
        };
        assert_eq!(back, toc);
        assert_eq!(back.to_json(), json);
        for e in &toc.entries {
            let _ = e.mtime();
        }
    }
});
