//! The random numbers behind seeded sampling: Philox4x32-10, a counter-based generator
//! (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
//! the generator behind PyTorch's CUDA random numbers and one of cuRAND's
//! (`curandStatePhilox4_32_10_t`).
//!
//! A counter-based generator is a pure function `(counter, key) → 128 random bits`. There is no
//! state to advance: the draw for a request's token at position `p` is
//! `uniform(seed, p)`, whichever step, batch, rank or device computes it. That is what a
//! serving engine needs:
//!
//! - Batching, chunked prefill, preemption and recompute cannot change what a request draws,
//!   and there is no per-request generator to carry between steps, to rewind when a draw is
//!   discarded, or to restore after a preemption.
//! - The same few lines run on the CPU and in a CUDA kernel (one thread per row), and give the
//!   same bits: a GPU run can be checked against the CPU one, seed for seed.
//! - The stream is fixed by the algorithm and its published known-answer vectors, not by a
//!   crate's release: `rand`'s `StdRng` is documented as free to change its algorithm between
//!   versions, which would silently change every seeded output.
//!
//! Ten rounds of "multiply, swap, xor with the key" mix the counter; the key is bumped by two
//! constants between rounds. Ten is its authors' recommended count: a safety margin over the
//! fewest rounds that passed their statistical tests.

/// Round multipliers and key increments of Philox4x32 (Random123's `PHILOX_M4x32_*`,
/// `PHILOX_W32_*`; the increments are the golden ratio and √3 − 1 in 0.32 fixed point).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

// ANCHOR: philox
/// Philox4x32-10: 128 random bits from a 128-bit `counter` and a 64-bit `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c, mut k] = [counter, [key[0], key[1], 0, 0]];
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        // The high and low halves of two 32×32 → 64-bit products.
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}
// ANCHOR_END: philox

// ANCHOR: uniform
/// The uniform number in `[0, 1)` a request with `seed` draws for its token at `position`.
///
/// The seed is the key and the position the counter, so every (seed, position) pair has its
/// own 128 bits, of which the first 32 are used.
pub fn uniform(seed: u64, position: usize) -> f32 {
    let p = position as u64;
    let bits = philox4x32_10(
        [p as u32, (p >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    unit_f32(bits[0])
}

/// `[0, 1)` from 32 random bits, exactly: the top 24 bits (an f32's precision) times 2⁻²⁴, so
/// every value is a multiple of 2⁻²⁴, equally likely, and the largest is 1 − 2⁻²⁴. (Dividing
/// all 32 bits by 2³² would round the largest values up to 1.0.)
pub fn unit_f32(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}
// ANCHOR_END: uniform

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors for Philox4x32-10 (its `tests/kat_vectors`), as
    /// TensorFlow's XLA tests quote them (`tensorflow/compiler/tests/stateful_random_ops_test.py`,
    /// `testPhilox4x32`, after Random123-Boost's `libs/random/test/test_philox.cpp`).
    #[test]
    fn known_answers() {
        let cases = [
            (
                [0; 4],
                [0; 2],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (counter, key, want) in cases {
            assert_eq!(
                philox4x32_10(counter, key),
                want,
                "counter {counter:x?}, key {key:x?}"
            );
        }
    }

    #[test]
    fn unit_f32_is_exact_and_below_one() {
        assert_eq!(unit_f32(0), 0.0);
        assert_eq!(unit_f32(0xff), 0.0, "the low 8 bits are dropped");
        assert_eq!(unit_f32(0x8000_0000), 0.5);
        assert_eq!(unit_f32(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
    }

    /// Positions and seeds select different streams; the mean of many draws is near 1/2.
    #[test]
    fn draws_depend_on_seed_and_position_and_look_uniform() {
        assert_ne!(uniform(1, 0), uniform(2, 0));
        assert_ne!(uniform(1, 0), uniform(1, 1));
        assert_eq!(uniform(7, 123), uniform(7, 123));
        let n = 100_000;
        let mean = (0..n).map(|p| uniform(42, p) as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
    }
}
