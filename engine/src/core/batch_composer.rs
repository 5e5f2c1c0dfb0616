//! The token-budget rules of one step, apart from the KV cache: which sequences get how many
//! tokens when blocks are plentiful (continuous batching's batch composition).
//!
//! [`Scheduler::schedule`](super::scheduler::Scheduler::schedule) applies the two per-sequence
//! rules here ([`running_chunk`], [`waiting_chunk`]) while it also allocates blocks and
//! preempts. [`compose_batch`] applies them to whole queues with no cache in the way: it is
//! the scheduler's decision whenever every allocation succeeds (the stage 2 exercise's tests,
//! stages/stage2/tests/batch_composer.rs, check that against the scheduler on random queues),
//! which makes the budget's effect visible on its own.
//!
//! ```text
//! budget 512, running [1, 1, 1, 1] (decodes), waiting [4096, 300]
//!   → running [1, 1, 1, 1], waiting [508]     (the prompt's first chunk; 300 waits)
//! ```
//!
//! With `long_prefill_token_threshold` above 0 (vLLM V1's knob), one sequence's chunk is
//! also capped at the threshold, so that several prompts share a step instead of the first
//! one taking all the budget:
//!
//! ```text
//! budget 512, threshold 256, running [1, 1, 1, 1], waiting [4096, 300]
//!   → running [1, 1, 1, 1], waiting [256, 252]
//! ```

use crate::config::SchedulerConfig;

// ANCHOR: batch_plan
/// Tokens granted to each sequence of one step, in the order they were granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchPlan {
    /// Tokens for the first `running.len()` running sequences, in queue order (decodes get 1,
    /// a prompt still being prefilled gets its next chunk).
    pub running: Vec<usize>,
    /// Tokens for the first `waiting.len()` waiting sequences: those admitted this step.
    pub waiting: Vec<usize>,
}
// ANCHOR_END: batch_plan

impl BatchPlan {
    /// Tokens of the whole step: prefill chunks plus one per decode.
    pub fn num_batched_tokens(&self) -> usize {
        self.running.iter().chain(&self.waiting).sum()
    }
}

// ANCHOR: chunk_rules
/// The tokens one sequence may compute in one step, before the budget: all `uncomputed`, or
/// at most `long_prefill_token_threshold` when that is above 0. Capping here, ahead of the
/// budget, is what lets the budget a long prompt leaves reach the prompts behind it.
pub fn long_prefill_cap(uncomputed: usize, config: &SchedulerConfig) -> usize {
    match config.long_prefill_token_threshold {
        0 => uncomputed,
        threshold => uncomputed.min(threshold),
    }
}

/// Tokens a running sequence with `uncomputed` tokens gets from `budget` left: as many as
/// fit, up to the long-prefill cap.
pub fn running_chunk(uncomputed: usize, budget: usize, config: &SchedulerConfig) -> usize {
    long_prefill_cap(uncomputed, config).min(budget)
}

/// Tokens a waiting sequence gets from `budget` left, or `None` when it must wait for a later
/// step: without chunked prefill, a prompt (or its capped chunk) that would be cut waits for
/// a step with room for all of it, unless it can never fit one step (a long sequence
/// preempted for recompute); then it is chunked anyway, or it would wait forever.
pub fn waiting_chunk(uncomputed: usize, budget: usize, config: &SchedulerConfig) -> Option<usize> {
    let wanted = long_prefill_cap(uncomputed, config);
    let num_new = wanted.min(budget);
    let fits_a_step = wanted <= config.max_num_batched_tokens;
    if num_new < wanted && !config.enable_chunked_prefill && fits_a_step {
        return None;
    }
    Some(num_new)
}
// ANCHOR_END: chunk_rules

/// One step's token grants for queues already in policy order, when every allocation
/// succeeds. `running[i]` and `waiting[i]` are uncomputed tokens (1 for a decode).
///
/// Running sequences first, each `running_chunk` of the budget (capped by
/// `long_prefill_token_threshold` when it is above 0), until the budget is spent;
/// then waiting ones from the front while budget is left and fewer than `max_num_seqs`
/// sequences run (all of `running` counts, scheduled this step or not), stopping at the
/// first that must wait.
pub fn compose_batch(config: &SchedulerConfig, running: &[usize], waiting: &[usize]) -> BatchPlan {
    let mut budget = config.max_num_batched_tokens;
    let mut plan = BatchPlan::default();
    for &uncomputed in running {
        if budget == 0 {
            break;
        }
        let n = running_chunk(uncomputed, budget, config);
        plan.running.push(n);
        budget -= n;
    }
    for &uncomputed in waiting {
        if budget == 0 || running.len() + plan.waiting.len() >= config.max_num_seqs {
            break;
        }
        let Some(n) = waiting_chunk(uncomputed, budget, config) else {
            break;
        };
        plan.waiting.push(n);
        budget -= n;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(budget: usize, chunked: bool, threshold: usize) -> SchedulerConfig {
        SchedulerConfig {
            max_num_seqs: 16,
            max_num_batched_tokens: budget,
            enable_chunked_prefill: chunked,
            long_prefill_token_threshold: threshold,
        }
    }

    /// The module's example: with a threshold of 256 the 4096-token prompt takes 256 of the
    /// 508 the decodes leave, and the 300-token one starts in the same step.
    #[test]
    fn the_threshold_lets_a_second_prompt_share_the_step() {
        let off = compose_batch(&config(512, true, 0), &[1, 1, 1, 1], &[4096, 300]);
        assert_eq!(off.waiting, vec![508]);
        let on = compose_batch(&config(512, true, 256), &[1, 1, 1, 1], &[4096, 300]);
        assert_eq!(
            on.running,
            vec![1, 1, 1, 1],
            "decodes are below any threshold"
        );
        assert_eq!(on.waiting, vec![256, 252]);
    }

    /// A running prompt's next chunk is capped too, and the budget it leaves goes on.
    #[test]
    fn a_running_chunk_is_capped() {
        let c = config(100, true, 30);
        assert_eq!(running_chunk(80, 100, &c), 30);
        assert_eq!(running_chunk(20, 100, &c), 20, "below the cap: all of it");
        assert_eq!(running_chunk(80, 10, &c), 10, "the budget still binds");
        let plan = compose_batch(&c, &[80, 80, 1], &[50]);
        assert_eq!(plan.running, vec![30, 30, 1]);
        assert_eq!(plan.waiting, vec![30]);
    }

    /// With chunked prefill off, the threshold still cuts a long prompt (as vLLM V1 does),
    /// and the capped chunk waits for a step with room for all of it.
    #[test]
    fn without_chunked_prefill_the_capped_chunk_waits_for_room() {
        let c = config(64, false, 16);
        assert_eq!(waiting_chunk(100, 64, &c), Some(16));
        assert_eq!(
            waiting_chunk(100, 10, &c),
            None,
            "16 do not fit the 10 left"
        );
        assert_eq!(waiting_chunk(12, 12, &c), Some(12));
        // A threshold past the budget: only the never-fits rule chunks.
        let wide = config(64, false, 1000);
        assert_eq!(waiting_chunk(100, 64, &wide), Some(64));
        assert_eq!(waiting_chunk(50, 40, &wide), None);
    }

    /// 0 is off: every chunk is the budget left, as without the knob.
    #[test]
    fn zero_is_off() {
        let c = config(512, true, 0);
        assert_eq!(long_prefill_cap(4096, &c), 4096);
        assert_eq!(running_chunk(4096, 512, &c), 512);
    }
}
