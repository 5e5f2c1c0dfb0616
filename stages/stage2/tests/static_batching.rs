//! Exercise 3: your static batcher against the engine's on random workloads, on the
//! source's worked example, and on one case per rule; then measured against continuous
//! batching (the engine's) on the same workload.

mod common;

use common::{config, requests, EVERY_TERM, ONE_PER_STEP};
use engine::simulator::simulate::simulate_continuous;
use engine::simulator::static_batching as reference;
use proptest::prelude::*;
use stage2::static_batching::simulate_static;

proptest! {
    #![proptest_config(common::proptest_config(64))]

    #[test]
    fn matches_the_engines_static_batcher(setup in common::setup()) {
        let (c, w) = (&setup.config, &setup.requests);
        let got = simulate_static(c, w, &EVERY_TERM).map_err(|e| e.to_string());
        let want = reference::simulate_static(c, w, &EVERY_TERM).map_err(|e| e.to_string());
        prop_assert_eq!(got, want);
    }
}

/// The source's example (Day 16, Q4): a batch of 4 whose requests generate 10, 10, 15 and 20
/// tokens. Step k samples every request's k-th token (the prefill samples the first).
#[test]
fn the_source_example_by_hand() {
    let c = config(4, 4096, 1024);
    let r = simulate_static(&c, &requests(&[10, 10, 15, 20], &[]), &ONE_PER_STEP).unwrap();
    let mut expected = vec![4; 10];
    expected.extend([2; 5]);
    expected.extend([1; 5]);
    assert_eq!(r.busy_slots_per_step, expected, "busy seats per step");
    assert_eq!(r.busy_slots_per_step[10], 2, "2 requests run at step 11");
    assert_eq!(
        r.steps, 20,
        "the batch runs until its longest request, 20 steps"
    );
    assert_eq!(r.total_s, 20.0);
    assert!(
        (r.utilization - 55.0 / 80.0).abs() < 1e-12,
        "55 useful seat-steps of 80, got utilization {}",
        r.utilization
    );
    let finish: Vec<_> = r.request_times.iter().map(|t| t.finish_s).collect();
    assert_eq!(
        finish,
        [Some(10.0), Some(10.0), Some(15.0), Some(20.0)],
        "each request finishes at its own last token"
    );
    assert!(r.request_times.iter().all(|t| t.first_token_s == Some(1.0)));
}

/// Nothing is freed until a batch ends, so a batch holds only what the cache holds at full
/// length: 8 blocks of 4 take two requests of 8 + 8 tokens.
#[test]
fn a_batch_fits_the_cache_at_full_length() {
    let c = config(4, 4096, 8);
    let r = simulate_static(&c, &requests(&[8, 8, 8, 8], &[]), &ONE_PER_STEP).unwrap();
    assert_eq!(r.steps, 16, "two batches of two, 8 steps each");
    let first: Vec<_> = r.request_times.iter().map(|t| t.first_token_s).collect();
    assert_eq!(first, [Some(1.0), Some(1.0), Some(9.0), Some(9.0)]);
}

/// A batch is formed from requests that have arrived; a later one waits for the next batch.
#[test]
fn a_batch_takes_only_arrived_requests() {
    let c = config(4, 4096, 1024);
    let r = simulate_static(&c, &requests(&[4, 4], &[0.0, 0.5]), &ONE_PER_STEP).unwrap();
    assert_eq!(r.request_times[1].first_token_s, Some(5.0));
    assert_eq!(r.request_times[1].finish_s, Some(8.0));
    assert_eq!(r.steps, 8);
}

/// The same example with two more requests: static batching runs them as a second batch,
/// continuous batching (the engine's) puts them in the seats freed at step 11.
#[test]
fn continuous_batching_finishes_the_example_sooner() {
    let c = config(4, 4096, 1024);
    let w = requests(&[10, 10, 15, 20, 5, 5], &[]);
    let stat = simulate_static(&c, &w, &ONE_PER_STEP).unwrap();
    let cont = simulate_continuous(&c, &w, &ONE_PER_STEP, None).unwrap();
    assert_eq!(stat.total_s, 25.0, "20 steps, then 5 for the second batch");
    assert_eq!(cont.total_s, 20.0);
    assert!(stat.utilization < cont.utilization);
    assert!(stat.output_tokens_per_s < cont.output_tokens_per_s);
}

/// Bad input is an error, not a panic.
#[test]
fn bad_requests_are_refused() {
    let c = config(4, 64, 4);
    let mut w = requests(&[2], &[]);
    w[0].prompt.clear();
    assert!(simulate_static(&c, &w, &ONE_PER_STEP).is_err());
}
