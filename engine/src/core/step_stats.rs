//! What one engine step did, as data (vLLM's `SchedulerStats`): the batch's composition, the
//! preemptions and swaps, and the cache left. The engine records one per step
//! ([`crate::LLMEngine::last_step_stats`]); `lab generate --stats` prints them, and the
//! tracer reads them.

use super::scheduler::Scheduler;
use super::scheduler_output::SchedulerOutput;
use super::swap_space::SwapOps;

// ANCHOR: step_stats
/// One step, counted after scheduling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepStats {
    /// The step's number, from 1.
    pub step: usize,
    /// Tokens of sequences still in their prompt (or recomputing after preemption).
    pub num_prefill_tokens: usize,
    /// One token per sequence past its prompt, computing its last sampled token.
    pub num_decode_tokens: usize,
    pub num_prefill_seqs: usize,
    pub num_decode_seqs: usize,
    /// Sequences preempted by recompute in this step.
    pub num_preempted: usize,
    /// Sequences copied out to the swap space, and the blocks copied.
    pub num_swapped_out: usize,
    pub blocks_swapped_out: usize,
    /// Sequences copied back from the swap space, and the blocks copied.
    pub num_swapped_in: usize,
    pub blocks_swapped_in: usize,
    /// Queue lengths after scheduling.
    pub num_running: usize,
    pub num_waiting: usize,
    pub num_swapped: usize,
    /// Free device KV blocks, and free host swap blocks, after scheduling.
    pub num_free_blocks: usize,
    pub num_free_swap_blocks: usize,
    /// Tokens of the sequences admitted this step after a prefix cache lookup, and of those
    /// the tokens found cached (their prefill skipped); both 0 with prefix caching off.
    pub prefix_cache_queried_tokens: usize,
    pub prefix_cache_hit_tokens: usize,
}
// ANCHOR_END: step_stats

impl StepStats {
    /// Counts step `step`: its batch `out`, its block copies `swaps`, and the queues and free
    /// blocks `scheduler` has once it is scheduled.
    pub fn of_step(step: usize, out: &SchedulerOutput, swaps: &SwapOps, s: &Scheduler) -> Self {
        let mut stats = StepStats {
            step,
            num_preempted: out.preempted.len(),
            num_swapped_out: swaps.swapped_out.len(),
            blocks_swapped_out: swaps.swap_out.len(),
            num_swapped_in: swaps.swapped_in.len(),
            blocks_swapped_in: swaps.swap_in.len(),
            num_running: s.num_running(),
            num_waiting: s.num_waiting(),
            num_swapped: s.num_swapped(),
            num_free_blocks: s.block_manager.num_free_blocks(),
            num_free_swap_blocks: s.swap_space.num_free_blocks(),
            ..Default::default()
        };
        for seq in &out.scheduled {
            let prompt_len = s
                .sequence(seq.seq_id)
                .map_or(0, |q| q.prompt_token_ids.len());
            // A decode computes the one token sampled last step; anything else (a prompt, a
            // chunk of one, or a recompute after preemption) is a prefill.
            if seq.token_ids.len() == 1 && seq.start_position >= prompt_len {
                stats.num_decode_seqs += 1;
                stats.num_decode_tokens += 1;
            } else {
                stats.num_prefill_seqs += 1;
                stats.num_prefill_tokens += seq.token_ids.len();
            }
        }
        stats
    }

    /// Tokens the model computed in this step.
    pub fn num_batched_tokens(&self) -> usize {
        self.num_prefill_tokens + self.num_decode_tokens
    }
}
