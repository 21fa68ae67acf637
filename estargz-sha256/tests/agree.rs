//! The digests are SHA-256's: compared with the `sha2` crate on every length, split and
//! pairing.

use estargz_sha256::{update_pair, Sha256};
use proptest::prelude::*;
use sha2::Digest as _;

fn reference(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

#[test]
fn known_answers() {
    // FIPS 180-4 examples.
    let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(Sha256::new().finalize()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let mut h = Sha256::new();
    h.update(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
    assert_eq!(
        hex(h.finalize()),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
}

#[test]
fn every_length_up_to_five_blocks_in_one_update() {
    let data = bytes(320, 7);
    for n in 0..=data.len() {
        let mut h = Sha256::new();
        h.update(&data[..n]);
        assert_eq!(h.finalize(), reference(&data[..n]), "length {n}");
    }
}

#[test]
fn pairs_of_every_length_and_offset() {
    let data = bytes(400, 9);
    for na in (0..300).step_by(7) {
        for nb in [0, 1, 55, 56, 63, 64, 65, 128, 200, 333] {
            // Both start part-way into a block.
            for pre in [0, 3, 63] {
                let (mut a, mut b) = (Sha256::new(), Sha256::new());
                update_pair(&mut a, &data[..pre], &mut b, &data[..pre / 2]);
                update_pair(&mut a, &data[pre..pre + na], &mut b, &data[..nb]);
                let mut ea = data[..pre].to_vec();
                ea.extend_from_slice(&data[pre..pre + na]);
                let mut eb = data[..pre / 2].to_vec();
                eb.extend_from_slice(&data[..nb]);
                assert_eq!(a.finalize(), reference(&ea), "a: {pre} + {na}");
                assert_eq!(b.finalize(), reference(&eb), "b: {pre}/2 + {nb}");
            }
        }
    }
}

#[test]
fn megabytes_in_pairs_match_one_at_a_time() {
    let a_data = bytes(3 << 20, 1);
    let b_data = bytes((2 << 20) + 17, 2);
    let (mut a, mut b) = (Sha256::new(), Sha256::new());
    for (ca, cb) in a_data.chunks(100_003).zip(b_data.chunks(70_001)) {
        update_pair(&mut a, ca, &mut b, cb);
    }
    // What the zip left over.
    a.update(&a_data[(b_data.len().div_ceil(70_001)) * 100_003..]);
    assert_eq!(a.finalize(), reference(&a_data));
    assert_eq!(b.finalize(), reference(&b_data));
}

proptest! {
    #[test]
    fn any_updates_give_sha256(
        ops in prop::collection::vec((0usize..300, 0usize..300, any::<bool>()), 0..20),
        seed in any::<u32>(),
    ) {
        let data = bytes(300, seed);
        let (mut a, mut b) = (Sha256::new(), Sha256::new());
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        for (na, nb, paired) in ops {
            if paired {
                update_pair(&mut a, &data[..na], &mut b, &data[..nb]);
            } else {
                a.update(&data[..na]);
                b.update(&data[..nb]);
            }
            ea.extend_from_slice(&data[..na]);
            eb.extend_from_slice(&data[..nb]);
        }
        let ca = a.clone();
        prop_assert_eq!(a.finalize(), reference(&ea));
        prop_assert_eq!(ca.finalize(), reference(&ea));
        prop_assert_eq!(b.finalize(), reference(&eb));
    }
}
