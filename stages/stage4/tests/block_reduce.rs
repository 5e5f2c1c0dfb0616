//! Exercise 1: `block_sum` and `block_max`, in blocks of one to 32 warps, called once and
//! twice in a row.

mod common;

use proptest::prelude::*;
use stage4::block_reduce::{block_max, block_sum};
use stage4::gpu::{block_dim, block_idx, launch, thread_idx, Global, LaunchConfig};

/// Every thread of `values.len() / threads` blocks calls `block_sum`, then `block_max`, on its
/// own value; returns what each thread got, `(sum, max)`.
fn sums_and_maxes(values: &[f32], threads: usize) -> Vec<(f32, f32)> {
    let v = Global::from_slice("values", values);
    let sums = Global::filled("sums", values.len(), f32::NAN);
    let maxes = Global::filled("maxes", values.len(), f32::NAN);
    let config = LaunchConfig::new(values.len() / threads, threads);
    launch("sum and max", config, || async {
        let i = block_idx().x * block_dim().x + thread_idx().x;
        let x = v.load(i);
        sums.store(i, block_sum(x).await);
        maxes.store(i, block_max(x).await);
    });
    sums.to_vec().into_iter().zip(maxes.to_vec()).collect()
}

/// Checks every thread's results against the block's values (sum in f64).
fn check_blocks(values: &[f32], threads: usize, got: &[(f32, f32)]) -> Result<(), String> {
    for (b, (vals, got)) in values.chunks(threads).zip(got.chunks(threads)).enumerate() {
        let sum: f64 = vals.iter().map(|&v| v as f64).sum();
        let scale: f64 = vals.iter().map(|&v| v.abs() as f64).sum::<f64>() + 1.0;
        let max = vals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (s0, m0) = got[0];
        if ((s0 as f64) - sum).abs() > 1e-5 * scale {
            return Err(format!(
                "block {b} of {threads} threads: block_sum gave {s0}, the sum is {sum}"
            ));
        }
        if m0 != max {
            return Err(format!(
                "block {b} of {threads} threads: block_max gave {m0}, the maximum is {max}"
            ));
        }
        if let Some(t) = got.iter().position(|g| g.0.to_bits() != s0.to_bits()) {
            return Err(format!(
                "block {b}: thread {t} got the sum {}, thread 0 got {s0}: every thread must \
                 get the same value (add the warps' slots in the same order)",
                got[t].0
            ));
        }
        if let Some(t) = got.iter().position(|g| g.1 != m0) {
            return Err(format!(
                "block {b}: thread {t} got the maximum {}, thread 0 got {m0}",
                got[t].1
            ));
        }
    }
    Ok(())
}

fn blocks() -> impl Strategy<Value = (Vec<f32>, usize)> {
    (
        prop::sample::select(vec![32usize, 64, 96, 160, 256, 1024]),
        1usize..4,
    )
        .prop_flat_map(|(threads, blocks)| {
            (
                prop::collection::vec(-100.0f32..100.0, threads * blocks),
                Just(threads),
            )
        })
}

proptest! {
    #![proptest_config(common::proptest_config(24))]

    #[test]
    fn every_thread_gets_the_block_sum_and_maximum((values, threads) in blocks()) {
        let got = sums_and_maxes(&values, threads);
        check_blocks(&values, threads, &got).map_err(TestCaseError::fail)?;
    }
}

/// One warp: the warp reduction alone, no partials to combine.
#[test]
fn a_block_of_one_warp() {
    let values: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let got = sums_and_maxes(&values, 32);
    assert!(
        got.iter().all(|&g| g == (496.0, 31.0)),
        "a block of 32 threads with values 0..31: {:?}",
        &got[..4]
    );
}

/// All values negative: the maximum is not 0 (a reduction that starts from 0 says it is).
#[test]
fn the_maximum_of_negative_values() {
    let values: Vec<f32> = (0..128).map(|i| -1.0 - i as f32).collect();
    let got = sums_and_maxes(&values, 128);
    assert_eq!(got[77], (-8256.0, -1.0), "thread 77 of values -1 to -128");
}

/// The largest value in the last warp: every warp's partial counts.
#[test]
fn the_maximum_in_the_last_warp() {
    let mut values = vec![0.0f32; 256];
    values[250] = 5.0;
    let got = sums_and_maxes(&values, 256);
    assert_eq!(got[0], (5.0, 5.0), "thread 0, with 5 at thread 250");
}

/// `block_sum` twice in a row, as a kernel that needs two sums does: the second call must not
/// overwrite the warps' slots while a thread still reads them for the first.
#[test]
fn block_sum_twice_in_a_row() {
    for threads in [64, 128, 512] {
        let out = Global::filled("out", 2 * threads, f32::NAN);
        launch("two sums", LaunchConfig::new(1, threads), || async {
            let t = thread_idx().x;
            let first = block_sum(t as f32).await;
            let second = block_sum(1.0).await;
            out.store(2 * t, first);
            out.store(2 * t + 1, second);
        });
        let n = threads as f32;
        let want: Vec<f32> = (0..threads)
            .flat_map(|_| [n * (n - 1.0) / 2.0, n])
            .collect();
        common::assert_close(
            &format!("block_sum of the thread ids, then of 1s, {threads} threads"),
            &out.to_vec(),
            &want,
            0.0,
        );
    }
}
