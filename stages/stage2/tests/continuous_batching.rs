//! Exercise 2: your continuous-batching loop against the engine's on random workloads (the
//! same batches, step by step, and the same report), then on cases worked by hand with one
//! second per step.

mod common;

use common::{config, requests, EVERY_TERM, ONE_PER_STEP};
use engine::core::preemption::{PreemptionConfig, PreemptionMode};
use engine::sequence::SeqId;
use engine::simulator::simulate as reference;
use proptest::prelude::*;
use stage2::continuous_batching::simulate_continuous;

proptest! {
    #![proptest_config(common::proptest_config(48))]

    /// Arrivals, chunking, preemption by recompute and swap, prefix caching: your loop must
    /// schedule the batches the engine's does and report the same numbers.
    #[test]
    fn matches_the_engines_loop(setup in common::setup()) {
        let (c, w) = (&setup.config, &setup.requests);
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        let got = simulate_continuous(c, w, &EVERY_TERM, Some(&mut mine));
        let want = reference::simulate_continuous(c, w, &EVERY_TERM, Some(&mut theirs));
        match (got, want) {
            (Ok(got), Ok(want)) => {
                prop_assert_eq!(mine.len(), theirs.len(), "number of steps");
                for (step, (m, t)) in mine.iter().zip(&theirs).enumerate() {
                    prop_assert_eq!(m, t, "the batch of step {}", step + 1);
                }
                prop_assert_eq!(got, want);
            }
            (got, want) => prop_assert_eq!(
                got.map_err(|e| e.to_string()),
                want.map_err(|e| e.to_string())
            ),
        }
    }
}

/// A request that arrives while another decodes joins at the next step, not when the running
/// one has finished (iteration-level admission).
#[test]
fn an_arrival_joins_the_next_step() {
    let c = config(4, 64, 64);
    // A: 10 tokens from t = 0. B: 2 tokens, arrives at t = 2.5, during step 3.
    let w = requests(&[10, 2], &[0.0, 2.5]);
    let r = simulate_continuous(&c, &w, &ONE_PER_STEP, None).unwrap();
    let b = r.request_times[1];
    assert_eq!(
        b.first_token_s,
        Some(4.0),
        "B must be prefilled in step 4, the first step after it arrived, beside A's decode"
    );
    assert_eq!(b.finish_s, Some(5.0));
    assert_eq!(r.request_times[0].finish_s, Some(10.0));
    assert_eq!(r.busy_slots_per_step, [1, 1, 1, 2, 2, 1, 1, 1, 1, 1]);
}

/// Nobody joins before arriving: with nothing to run, the clock waits for the next arrival.
#[test]
fn the_clock_waits_for_arrivals() {
    let c = config(4, 64, 64);
    let w = requests(&[3, 2], &[0.0, 100.0]);
    let r = simulate_continuous(&c, &w, &ONE_PER_STEP, None).unwrap();
    assert_eq!(r.request_times[0].first_token_s, Some(1.0));
    assert_eq!(r.request_times[0].finish_s, Some(3.0));
    assert_eq!(
        r.request_times[1].first_token_s,
        Some(101.0),
        "the second request arrives at t = 100 and is prefilled in the step after"
    );
    assert_eq!(r.request_times[1].finish_s, Some(102.0));
    assert_eq!(r.steps, 5);
    assert_eq!(r.total_s, 102.0);
}

/// The first token exists at the end of the step that samples it; the last at the end of
/// its own step. TTFT and latency differ.
#[test]
fn first_and_last_token_times() {
    let c = config(4, 64, 64);
    let r = simulate_continuous(&c, &requests(&[3], &[0.0]), &ONE_PER_STEP, None).unwrap();
    let t = r.request_times[0];
    assert_eq!(
        t.first_token_s,
        Some(1.0),
        "the prefill step samples the first token"
    );
    assert_eq!(t.finish_s, Some(3.0));
    assert_eq!((r.ttft_s.mean, r.latency_s.mean), (1.0, 3.0));
}

/// A request leaves in the step it finishes, and its blocks serve the next request in the
/// next step: a cache of 3 blocks of 4 holds one request of 8 + 4 tokens at a time.
#[test]
fn a_finished_request_frees_its_blocks_for_the_next_step() {
    let c = config(4, 64, 3);
    let w = requests(&[4, 4], &[0.0, 0.0]);
    let mut trace = Vec::new();
    let r = simulate_continuous(&c, &w, &ONE_PER_STEP, Some(&mut trace)).unwrap();
    assert_eq!(r.request_times[0].finish_s, Some(4.0));
    assert_eq!(
        trace[4],
        vec![(SeqId(1), 0, 8)],
        "step 5 prefills the second request in the blocks the first freed in step 4"
    );
    assert_eq!(r.request_times[1].finish_s, Some(8.0));
}

/// The source's example (outputs of 10, 10, 15 and 20 in 4 seats) with two more requests
/// waiting: they take the seats freed at step 11.
#[test]
fn freed_seats_are_refilled_at_once() {
    let c = config(4, 4096, 1024);
    let w = requests(&[10, 10, 15, 20, 5, 5], &[]);
    let r = simulate_continuous(&c, &w, &ONE_PER_STEP, None).unwrap();
    let mut expected = vec![4; 15];
    expected.extend([1; 5]);
    assert_eq!(r.busy_slots_per_step, expected);
    assert_eq!(r.request_times[4].first_token_s, Some(11.0));
    assert_eq!(r.total_s, 20.0);
}

/// Swapped-out sequences are preemptions too.
#[test]
fn swaps_count_as_preemptions() {
    let mut c = config(4, 64, 6);
    c.engine.preemption = PreemptionConfig {
        mode: PreemptionMode::Swap,
        swap_space_bytes: 1 << 20,
        ..PreemptionConfig::default()
    };
    c.num_swap_blocks = 64;
    let w = requests(&[12, 12, 12], &[]);
    let r = simulate_continuous(&c, &w, &ONE_PER_STEP, None).unwrap();
    let want = reference::simulate_continuous(&c, &w, &ONE_PER_STEP, None).unwrap();
    assert!(
        want.preemptions > 0,
        "this cache is too small for all three: the engine swaps"
    );
    assert_eq!(r.preemptions, want.preemptions);
}

/// Bad input is an error, not a panic: an empty prompt, a request longer than the cache.
#[test]
fn bad_requests_are_refused() {
    let c = config(4, 64, 4);
    let mut w = requests(&[2], &[]);
    w[0].prompt.clear();
    assert!(simulate_continuous(&c, &w, &ONE_PER_STEP, None).is_err());
    let w = requests(&[100], &[]);
    assert!(simulate_continuous(&c, &w, &ONE_PER_STEP, None).is_err());
}
