//! Errata, Stage 6: pipeline parallelism (book/src/errata.md), the source's Q25.
//!
//! The source says one batch through 4 stages runs at "4/7 = 57%". The engine's CPU pipeline
//! decides: one step is run through it and the efficiency is read off the schedule it executed
//! (ticks counted by a clock that travels with the activations), not from a formula.

use proptest::prelude::*;
use quizzes::pp_calls::executed_schedule;

#[test]
fn errata_q25_one_batch_through_four_stages_is_a_quarter_busy() {
    let one = executed_schedule(4, 1).unwrap();
    let ticks = one.timed_items().iter().map(|i| i.end).max().unwrap();
    let b = one.bubble();
    assert_eq!(ticks, 4, "one batch crosses 4 stages in 4 ticks, not 7");
    assert_eq!((b.total - b.idle, b.total), (4, 16));
    assert_eq!(b.efficiency(), 0.25);
    assert_ne!(b.efficiency(), 4.0 / 7.0, "the source's 4/7");
    // 4/7 is what 4 micro-batches give.
    let four = executed_schedule(4, 4).unwrap();
    let ticks = four.timed_items().iter().map(|i| i.end).max().unwrap();
    let b = four.bubble();
    assert_eq!(ticks, 7);
    assert_eq!((b.total - b.idle, b.total), (16, 28));
    assert!((b.efficiency() - 4.0 / 7.0).abs() < 1e-12);
    // And 8 micro-batches give the source's (correct) 32/44.
    let b = executed_schedule(4, 8).unwrap().bubble();
    assert_eq!((b.total - b.idle, b.total), (32, 44));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random M and S: the executed efficiency is M / (M + S − 1), exactly (in integers).
    #[test]
    fn errata_q25_the_executed_efficiency_is_m_over_m_plus_s_minus_1(m in 1usize..=8, s in 2usize..=4) {
        let b = executed_schedule(s, m).unwrap().bubble();
        let busy = b.total - b.idle;
        prop_assert_eq!(busy as usize * (m + s - 1), b.total as usize * m);
        prop_assert_eq!(b.total as usize, s * (m + s - 1));
    }
}
