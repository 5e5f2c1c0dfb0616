//! `lab generate --stats`: the engine's per-step statistics as a table, and totals.

use std::fmt::Write;

use engine::core::step_stats::StepStats;
use engine::llm_engine::EngineStats;

/// One row per step (prefill and decode tokens and sequences, preemptions, swaps, queues,
/// free blocks, prefix cache hits: `cached` of `queried` tokens), then the totals.
pub fn table(steps: &[StepStats], totals: &EngineStats) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:>5} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>7} {:>7}",
        "step",
        "prefill",
        "decode",
        "p_seqs",
        "d_seqs",
        "preempt",
        "swap_out",
        "swap_in",
        "running",
        "waiting",
        "swapped",
        "free",
        "free_sw",
        "queried",
        "cached"
    );
    for s in steps {
        let _ = writeln!(
            t,
            "{:>5} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>7} {:>7}",
            s.step,
            s.num_prefill_tokens,
            s.num_decode_tokens,
            s.num_prefill_seqs,
            s.num_decode_seqs,
            s.num_preempted,
            s.num_swapped_out,
            s.num_swapped_in,
            s.num_running,
            s.num_waiting,
            s.num_swapped,
            s.num_free_blocks,
            s.num_free_swap_blocks,
            s.prefix_cache_queried_tokens,
            s.prefix_cache_hit_tokens
        );
    }
    // Before the totals line, which stays last.
    let p = &totals.prefix_cache;
    let _ = writeln!(
        t,
        "prefix cache: {} of {} queried tokens cached ({:.1}%), {} blocks evicted",
        p.hit_tokens,
        p.queried_tokens,
        100.0 * p.hit_rate(),
        p.num_evictions
    );
    let prefill: usize = steps.iter().map(|s| s.num_prefill_tokens).sum();
    let decode: usize = steps.iter().map(|s| s.num_decode_tokens).sum();
    let _ = writeln!(
        t,
        "steps {}: {prefill} prefill + {decode} decode tokens; {} preempted by recompute; \
         {} swapped out ({} blocks), {} swapped in ({} blocks)",
        totals.num_steps,
        totals.num_preemptions,
        totals.num_swapped_out,
        totals.blocks_swapped_out,
        totals.num_swapped_in,
        totals.blocks_swapped_in
    );
    t
}
