//! `sha256:` digests: parsing, formatting, computing and comparing.
//!
//! The TOC stores digests as strings (`sha256:<64 lowercase hex>`, go-digest syntax). In memory
//! they are 32 raw bytes, so the index stays small and comparisons are cheap.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A SHA-256 digest, displayed as `sha256:<64 lowercase hex>`.
///
/// ```
/// use estargz::Digest;
///
/// let d = Digest::of(b"");
/// assert_eq!(
///     d.to_string(),
///     "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// Parses `sha256:<64 lowercase hex>`, exactly as go-digest accepts it.
    pub fn parse(s: &str) -> Result<Digest> {
        let invalid = |reason| Error::InvalidDigest {
            value: s.to_owned(),
            reason,
        };
        let hex_part = s.strip_prefix("sha256:").ok_or_else(|| {
            invalid("only sha256 digests are supported (expected \"sha256:\" prefix)")
        })?;
        if hex_part.len() != 64 {
            return Err(invalid("expected 64 hex digits after \"sha256:\""));
        }
        // One pass: validate (lowercase only, as go-digest) and decode, by table lookup.
        const INVALID: u8 = 0xff;
        const NIBBLE: [u8; 256] = {
            let mut t = [INVALID; 256];
            let mut i = 0;
            while i < 10 {
                t[b'0' as usize + i] = i as u8;
                i += 1;
            }
            let mut i = 0;
            while i < 6 {
                t[b'a' as usize + i] = 10 + i as u8;
                i += 1;
            }
            t
        };
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (o, pair) in out.iter_mut().zip(hex_part.as_bytes().chunks_exact(2)) {
            let (h, l) = (NIBBLE[pair[0] as usize], NIBBLE[pair[1] as usize]);
            bad |= (h | l) & 0xf0;
            *o = (h << 4) | (l & 0x0f);
        }
        if bad != 0 {
            return Err(invalid("hex digits must be lowercase 0-9a-f"));
        }
        Ok(Digest(out))
    }

    /// The hex part, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

/// An incremental SHA-256 hasher producing a [`Digest`].
///
/// ```
/// use estargz::digest::{Digest, Hasher};
///
/// let mut h = Hasher::new();
/// h.update(b"hello ");
/// h.update(b"world");
/// assert_eq!(h.finish(), Digest::of(b"hello world"));
/// ```
#[derive(Clone, Default)]
pub struct Hasher(estargz_sha256::Sha256);

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher(estargz_sha256::Sha256::new())
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// Feeds `da` to `a` and `db` to `b`: the same as `a.update(da); b.update(db)`, in about
    /// the time of the longer one alone on CPUs with the x86 SHA extensions (the two are
    /// hashed in lockstep).
    ///
    /// ```
    /// use estargz::digest::{Digest, Hasher};
    ///
    /// let (mut a, mut b) = (Hasher::new(), Hasher::new());
    /// Hasher::update_pair(&mut a, b"layer bytes", &mut b, b"chunk");
    /// assert_eq!(a.finish(), Digest::of(b"layer bytes"));
    /// assert_eq!(b.finish(), Digest::of(b"chunk"));
    /// ```
    pub fn update_pair(a: &mut Hasher, da: &[u8], b: &mut Hasher, db: &[u8]) {
        estargz_sha256::update_pair(&mut a.0, da, &mut b.0, db);
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize())
    }
}

/// Checks that `toc_json` (the uncompressed TOC bytes) hashes to `expected`.
///
/// ```
/// use estargz::digest::{verify_toc_digest, Digest};
///
/// let toc = br#"{"version":1,"entries":null}"#;
/// let d = Digest::of(toc).to_string();
/// verify_toc_digest(toc, &d).unwrap();
/// assert!(verify_toc_digest(b"{}", &d).is_err());
/// ```
pub fn verify_toc_digest(toc_json: &[u8], expected: &str) -> Result<Digest> {
    let want = Digest::parse(expected)?;
    let got = Digest::of(toc_json);
    if got != want {
        return Err(Error::TocDigestMismatch {
            expected: want.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ",
            "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
