//! Exercise 1: `ring_all_reduce` on the engine's CPU communicator (ranks as threads).
//!
//! - the result is the element-wise sum on every rank: exactly, for values whose sums are exact
//!   in f32 (small integers: then the order of the additions cannot matter), and bit-identical
//!   across ranks with a bounded error for arbitrary floats;
//! - each rank sends 2(N − 1)/N of the buffer (the communicator counts every byte sent):
//!   exactly when N divides the length, within two elements otherwise, and the whole group
//!   exactly 2(N − 1) × the buffer;
//! - one rank alone sends nothing; mismatched lengths are an error, never a hang.

mod common;

use std::time::Duration;

use common::{proptest_config, run_ranks, RankResult};
use proptest::prelude::*;
use stage5::ring_all_reduce::ring_all_reduce;

const TIMEOUT: Duration = Duration::from_secs(10);

fn all_reduce(inputs: Vec<Vec<f32>>) -> Vec<RankResult> {
    run_ranks(inputs, TIMEOUT, ring_all_reduce)
}

/// Bytes rank results sent, all kinds of call together.
fn sent(r: &RankResult) -> u64 {
    r.stats.total().sent_bytes
}

/// The element-wise sum of `inputs`, in f64.
fn exact_sum(inputs: &[Vec<f32>]) -> Vec<f64> {
    let len = inputs[0].len();
    (0..len)
        .map(|i| inputs.iter().map(|b| b[i] as f64).sum())
        .collect()
}

#[test]
fn three_ranks_worked_by_hand() {
    // The chapter's example: 3 ranks, 7 elements (chunks of 2, 2 and 3).
    let inputs = vec![
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0],
        vec![100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0],
    ];
    let want = [111.0, 222.0, 333.0, 444.0, 555.0, 666.0, 777.0];
    for (rank, r) in all_reduce(inputs).iter().enumerate() {
        assert_eq!(r.result.as_ref().unwrap(), &want, "rank {rank}");
        // Rank r sends every chunk but r (reduce-scatter), then every chunk but r + 1.
        let chunks = [2, 2, 3];
        let elements = 2 * 7 - chunks[rank] - chunks[(rank + 1) % 3];
        assert_eq!(sent(r), 4 * elements as u64, "rank {rank} bytes sent");
    }
}

#[test]
fn two_ranks_each_send_the_buffer_once() {
    // N = 2: one reduce-scatter step, one all-gather step, half the buffer each: 2(1)/2 = 1.
    let inputs = vec![vec![1.0; 8], vec![2.0; 8]];
    for r in all_reduce(inputs) {
        assert_eq!(r.result.as_ref().unwrap(), &vec![3.0; 8]);
        assert_eq!(sent(&r), 8 * 4);
    }
}

#[test]
fn one_rank_keeps_its_buffer_and_sends_nothing() {
    let r = &all_reduce(vec![vec![1.5, -2.0, 3.25]])[0];
    assert_eq!(r.result.as_ref().unwrap(), &[1.5, -2.0, 3.25]);
    assert_eq!(sent(r), 0);
}

#[test]
fn a_buffer_shorter_than_the_ring_is_summed_too() {
    // 2 elements over 5 ranks: three of the chunks are empty.
    let inputs: Vec<Vec<f32>> = (0..5).map(|r| vec![r as f32, 1.0]).collect();
    for r in all_reduce(inputs) {
        assert_eq!(r.result.unwrap(), vec![10.0, 5.0]);
    }
}

#[test]
fn ranks_that_disagree_on_the_length_get_an_error_not_a_hang() {
    let inputs = vec![vec![1.0; 10], vec![1.0; 12]];
    let results = run_ranks(inputs, Duration::from_millis(500), ring_all_reduce);
    assert!(
        results.iter().any(|r| r.result.is_err()),
        "a length mismatch must be an error on some rank"
    );
}

/// Small integers: every partial sum is exact in f32, so any order of additions gives the
/// exact sum, and the test can demand equality.
fn integer_buffers() -> impl Strategy<Value = Vec<Vec<f32>>> {
    (1usize..=5, 0usize..40).prop_flat_map(|(n, len)| {
        prop::collection::vec(
            prop::collection::vec((-64i32..64).prop_map(|v| v as f32), len),
            n,
        )
    })
}

proptest! {
    #![proptest_config(proptest_config(48))]

    #[test]
    fn every_rank_ends_with_the_exact_sum_and_sends_two_n_minus_one_over_n(
        inputs in integer_buffers()
    ) {
        let (n, len) = (inputs.len(), inputs[0].len());
        let want: Vec<f32> = exact_sum(&inputs).into_iter().map(|x| x as f32).collect();
        let results = all_reduce(inputs);
        for (rank, r) in results.iter().enumerate() {
            prop_assert_eq!(r.result.as_ref().unwrap(), &want, "rank {} of {}", rank, n);
            // 2(N − 1)/N × len elements, within the rounding of unequal chunks (< 2 elements).
            let ideal = 2.0 * (n - 1) as f64 / n as f64 * len as f64 * 4.0;
            let got = sent(r) as f64;
            prop_assert!(
                (got - ideal).abs() < 8.0,
                "rank {} of {} sent {} bytes of a {}-byte buffer; the ring sends {}",
                rank, n, got, len * 4, ideal
            );
        }
        // Over the group: every rank sends every chunk but two, 2(N − 1) × len exactly.
        let total: u64 = results.iter().map(sent).sum();
        prop_assert_eq!(total, (2 * (n - 1) * len * 4) as u64);
    }

    #[test]
    fn when_n_divides_the_length_each_rank_sends_exactly_two_n_minus_one_over_n(
        n in 1usize..=5, per_chunk in 1usize..9,
    ) {
        let len = n * per_chunk;
        let inputs: Vec<Vec<f32>> = (0..n).map(|r| vec![r as f32; len]).collect();
        let want = (n * (n - 1) / 2) as f32;
        for r in all_reduce(inputs) {
            prop_assert!(r.result.as_ref().unwrap().iter().all(|&x| x == want));
            prop_assert_eq!(sent(&r), (2 * (n - 1) * per_chunk * 4) as u64);
        }
    }

    /// Arbitrary floats: the ranks must agree to the bit (each chunk is summed in one place and
    /// only copied after), and the sum is within the error of adding n values one by one,
    /// (n − 1)·ε·Σ|x| (ε = 2⁻²⁴, f32's unit roundoff), of the exact sum.
    #[test]
    fn with_any_floats_the_ranks_agree_to_the_bit(
        inputs in (2usize..=5, 1usize..30).prop_flat_map(|(n, len)| {
            prop::collection::vec(prop::collection::vec(-1e3f32..1e3, len), n)
        })
    ) {
        let n = inputs.len();
        let exact = exact_sum(&inputs);
        let abs: Vec<f64> = (0..exact.len())
            .map(|i| inputs.iter().map(|b| (b[i] as f64).abs()).sum())
            .collect();
        let results = all_reduce(inputs);
        let first = results[0].result.as_ref().unwrap().clone();
        for r in &results {
            let got = r.result.as_ref().unwrap();
            let same_bits = got.iter().zip(&first).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same_bits, "ranks differ: {:?} vs {:?}", got, first);
        }
        for i in 0..first.len() {
            let bound = (n - 1) as f64 * f32::EPSILON as f64 / 2.0 * abs[i] * 1.0001;
            prop_assert!(
                (first[i] as f64 - exact[i]).abs() <= bound,
                "element {}: {} vs exact {}", i, first[i], exact[i]
            );
        }
    }
}
