//! SHA-256 that can hash two messages in lockstep.
//!
//! On CPUs with the x86 SHA extensions, the rounds of one message wait on each other: on AMD
//! Zen 3, `sha256rnds2` has a latency of 4 cycles and a throughput of one every 2, so one
//! message runs at half the speed the unit allows. [`update_pair`] feeds two independent
//! messages block by block, interleaved, and hashes both in about the time of one. The
//! eStargz builder hashes every payload byte twice (its chunk's digest and the layer's
//! DiffID), so it hashes the two together.
//!
//! Without the SHA extensions (or off x86-64) blocks are hashed one message at a time by the
//! `sha2` crate. Either way the digests are SHA-256's: the tests compare them with `sha2`'s
//! on every length and split.
//!
//! ```
//! use estargz_sha256::{update_pair, Sha256};
//!
//! let (mut a, mut b) = (Sha256::new(), Sha256::new());
//! update_pair(&mut a, b"abc", &mut b, &[0u8; 1000]);
//! assert_eq!(
//!     a.finalize()[..4],
//!     [0xba, 0x78, 0x16, 0xbf], // SHA-256("abc") = ba7816bf...
//! );
//! let mut single = Sha256::new();
//! single.update(&[0u8; 1000]);
//! assert_eq!(b.finalize(), single.finalize());
//! ```

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Bytes per block.
const BLOCK: usize = 64;

/// A SHA-256 computation in progress.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    /// Bytes of a block not complete yet (`buf[..buffered]`).
    buf: [u8; BLOCK],
    buffered: usize,
    /// Message length in bytes so far.
    len: u64,
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256").field("len", &self.len).finish()
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// A new computation (of the empty message so far).
    pub fn new() -> Sha256 {
        Sha256 {
            state: H0,
            buf: [0; BLOCK],
            buffered: 0,
            len: 0,
        }
    }

    /// Appends `data` to the message.
    pub fn update(&mut self, data: &[u8]) {
        let rest = self.absorb(data);
        let whole = rest.len() - rest.len() % BLOCK;
        compress(&mut self.state, &rest[..whole]);
        self.keep(&rest[whole..]);
    }

    /// The digest of the message.
    pub fn finalize(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        // 0x80, zeros up to 56 mod 64, then the length in bits (big-endian).
        let mut pad = [0u8; 2 * BLOCK];
        pad[0] = 0x80;
        let n = if self.buffered < BLOCK - 8 {
            BLOCK - self.buffered
        } else {
            2 * BLOCK - self.buffered
        };
        pad[n - 8..n].copy_from_slice(&bits.to_be_bytes());
        let len = self.len;
        self.update(&pad[..n]);
        debug_assert_eq!(self.buffered, 0);
        self.len = len;
        let mut out = [0u8; 32];
        for (o, s) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        out
    }

    /// Counts `data` and tops up the block buffer from it, hashing the buffer when it
    /// fills; returns the rest of `data`, which starts on a block boundary (empty when the
    /// buffer is still not full).
    fn absorb<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        self.len = self.len.wrapping_add(data.len() as u64);
        if self.buffered == 0 {
            return data;
        }
        let take = (BLOCK - self.buffered).min(data.len());
        self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
        self.buffered += take;
        if self.buffered == BLOCK {
            compress(&mut self.state, &self.buf.clone());
            self.buffered = 0;
        }
        &data[take..]
    }

    /// Buffers the tail of a block-aligned update (less than a block; empty when `absorb`
    /// left the buffer part-full).
    fn keep(&mut self, tail: &[u8]) {
        if tail.is_empty() {
            return;
        }
        debug_assert!(self.buffered == 0 && tail.len() < BLOCK);
        self.buf[..tail.len()].copy_from_slice(tail);
        self.buffered = tail.len();
    }
}

/// Appends `da` to `a`'s message and `db` to `b`'s: the same as `a.update(da);
/// b.update(db)`, in about the time of the longer one alone where the CPU has the SHA
/// extensions.
pub fn update_pair(a: &mut Sha256, da: &[u8], b: &mut Sha256, db: &[u8]) {
    let ra = a.absorb(da);
    let rb = b.absorb(db);
    let n = (ra.len() / BLOCK).min(rb.len() / BLOCK) * BLOCK;
    compress_pair(&mut a.state, &ra[..n], &mut b.state, &rb[..n]);
    // What is left of the longer one, alone.
    for (h, rest) in [(a, &ra[n..]), (b, &rb[n..])] {
        let whole = rest.len() - rest.len() % BLOCK;
        compress(&mut h.state, &rest[..whole]);
        h.keep(&rest[whole..]);
    }
}

/// True when the SHA-extension code may run here.
#[cfg(target_arch = "x86_64")]
fn have_ni() -> bool {
    std::is_x86_feature_detected!("sha")
        && std::is_x86_feature_detected!("sse2")
        && std::is_x86_feature_detected!("ssse3")
        && std::is_x86_feature_detected!("sse4.1")
}

/// Hashes whole blocks (`blocks.len()` is a multiple of 64).
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    debug_assert_eq!(blocks.len() % BLOCK, 0);
    #[cfg(target_arch = "x86_64")]
    if have_ni() {
        ni::compress(state, blocks);
        return;
    }
    portable(state, blocks);
}

/// Hashes whole blocks of two messages, `a.len() == b.len()`.
fn compress_pair(sa: &mut [u32; 8], a: &[u8], sb: &mut [u32; 8], b: &[u8]) {
    debug_assert!(a.len() == b.len() && a.len() % BLOCK == 0);
    #[cfg(target_arch = "x86_64")]
    if have_ni() {
        ni::compress_pair(sa, a, sb, b);
        return;
    }
    portable(sa, a);
    portable(sb, b);
}

/// The `sha2` crate's block function (its own choice of implementation).
fn portable(state: &mut [u32; 8], blocks: &[u8]) {
    for block in blocks.chunks_exact(BLOCK) {
        let block = sha2::digest::generic_array::GenericArray::from_slice(block);
        sha2::compress256(state, std::slice::from_ref(block));
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod ni {
    //! The SHA-extension block function, one message or two interleaved (Intel's "SHA
    //! extensions" paper, 2013: the state held as ABEF / CDGH, four rounds per pair of
    //! `sha256rnds2`, the schedule from `sha256msg1` / `sha256msg2`).

    use std::arch::x86_64::*;

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// Hashes whole blocks; the caller has checked the CPU features (`super::have_ni`).
    pub(super) fn compress(state: &mut [u32; 8], blocks: &[u8]) {
        // SAFETY: `have_ni` found every feature `compress1` is compiled with.
        unsafe { compress1(state, blocks) }
    }

    /// Hashes whole blocks of two messages of the same length; the caller has checked the
    /// CPU features (`super::have_ni`).
    pub(super) fn compress_pair(sa: &mut [u32; 8], a: &[u8], sb: &mut [u32; 8], b: &[u8]) {
        // SAFETY: as in `compress`.
        unsafe { compress2(sa, a, sb, b) }
    }

    /// One group of four rounds (0..=15) of one message: its schedule words `$w`, state
    /// `$s0` (ABEF) / `$s1` (CDGH), block `$blk` (64 bytes).
    macro_rules! group {
        ($g:literal, $w:ident, $s0:ident, $s1:ident, $blk:ident, $mask:ident) => {{
            if $g < 4 {
                // Loads within the 64-byte block.
                let p = $blk.as_ptr().add(16 * $g) as *const __m128i;
                $w[$g % 4] = _mm_shuffle_epi8(_mm_loadu_si128(p), $mask);
            } else {
                let t = _mm_sha256msg1_epu32($w[($g + 0) % 4], $w[($g + 1) % 4]);
                let t = _mm_add_epi32(t, _mm_alignr_epi8::<4>($w[($g + 3) % 4], $w[($g + 2) % 4]));
                $w[$g % 4] = _mm_sha256msg2_epu32(t, $w[($g + 3) % 4]);
            }
            let k = _mm_loadu_si128(K.as_ptr().add(4 * $g) as *const __m128i);
            let m = _mm_add_epi32($w[$g % 4], k);
            $s1 = _mm_sha256rnds2_epu32($s1, $s0, m);
            $s0 = _mm_sha256rnds2_epu32($s0, $s1, _mm_shuffle_epi32::<0x0e>(m));
        }};
    }

    /// The state as the rounds want it: (ABEF, CDGH).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn load(state: &[u32; 8]) -> (__m128i, __m128i) {
        let dcba = _mm_loadu_si128(state.as_ptr() as *const __m128i);
        let hgfe = _mm_loadu_si128(state.as_ptr().add(4) as *const __m128i);
        let cdab = _mm_shuffle_epi32::<0xb1>(dcba);
        let efgh = _mm_shuffle_epi32::<0x1b>(hgfe);
        (
            _mm_alignr_epi8::<8>(cdab, efgh),
            _mm_blend_epi16::<0xf0>(efgh, cdab),
        )
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn store(state: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
        let feba = _mm_shuffle_epi32::<0x1b>(abef);
        let dchg = _mm_shuffle_epi32::<0xb1>(cdgh);
        let dcba = _mm_blend_epi16::<0xf0>(feba, dchg);
        let hgfe = _mm_alignr_epi8::<8>(dchg, feba);
        _mm_storeu_si128(state.as_mut_ptr() as *mut __m128i, dcba);
        _mm_storeu_si128(state.as_mut_ptr().add(4) as *mut __m128i, hgfe);
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress1(state: &mut [u32; 8], blocks: &[u8]) {
        let mask = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
        let (mut s0, mut s1) = load(state);
        for blk in blocks.chunks_exact(64) {
            let (save0, save1) = (s0, s1);
            let mut w = [_mm_setzero_si128(); 4];
            macro_rules! all {
                ($($g:literal)*) => { $( group!($g, w, s0, s1, blk, mask); )* };
            }
            all!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            s0 = _mm_add_epi32(s0, save0);
            s1 = _mm_add_epi32(s1, save1);
        }
        store(state, s0, s1);
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress2(sa: &mut [u32; 8], a: &[u8], sb: &mut [u32; 8], b: &[u8]) {
        let mask = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
        let (mut a0, mut a1) = load(sa);
        let (mut b0, mut b1) = load(sb);
        for (ba, bb) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
            let (sa0, sa1, sb0, sb1) = (a0, a1, b0, b1);
            let mut wa = [_mm_setzero_si128(); 4];
            let mut wb = [_mm_setzero_si128(); 4];
            macro_rules! all {
                ($($g:literal)*) => { $(
                    group!($g, wa, a0, a1, ba, mask);
                    group!($g, wb, b0, b1, bb, mask);
                )* };
            }
            all!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            a0 = _mm_add_epi32(a0, sa0);
            a1 = _mm_add_epi32(a1, sa1);
            b0 = _mm_add_epi32(b0, sb0);
            b1 = _mm_add_epi32(b1, sb1);
        }
        store(sa, a0, a1);
        store(sb, b0, b1);
    }
}
