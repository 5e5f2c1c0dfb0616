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
//! vLLM V1 can also cap one prompt's chunk (`long_prefill_token_threshold`) so that several
//! prompts share a step; this engine has no such cap: a chunk is all the budget left.

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
/// Tokens a running sequence with `uncomputed` tokens gets from `budget` left: as many as fit.
pub fn running_chunk(uncomputed: usize, budget: usize) -> usize {
    uncomputed.min(budget)
}

/// Tokens a waiting sequence gets from `budget` left, or `None` when it must wait for a later
/// step: without chunked prefill, a prompt that would be cut waits for a step with room for
/// all of it, unless it can never fit one step (a long sequence preempted for recompute);
/// then it is chunked anyway, or it would wait forever.
pub fn waiting_chunk(uncomputed: usize, budget: usize, config: &SchedulerConfig) -> Option<usize> {
    let num_new = uncomputed.min(budget);
    let fits_a_step = uncomputed <= config.max_num_batched_tokens;
    if num_new < uncomputed && !config.enable_chunked_prefill && fits_a_step {
        return None;
    }
    Some(num_new)
}
// ANCHOR_END: chunk_rules

/// One step's token grants for queues already in policy order, when every allocation
/// succeeds. `running[i]` and `waiting[i]` are uncomputed tokens (1 for a decode).
///
/// Running sequences first, each `running_chunk` of the budget, until the budget is spent;
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
        let n = running_chunk(uncomputed, budget);
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
