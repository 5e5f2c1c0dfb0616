//! What one scheduling step decided: the contract between scheduler and model runner.

use super::block::BlockId;
use crate::sequence::SeqId;

// ANCHOR: scheduled_sequence
/// One sequence's share of a step: `token_ids` are its tokens at positions
/// `start_position..start_position + token_ids.len()`, to be computed into the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledSequence {
    pub seq_id: SeqId,
    pub token_ids: Vec<u32>,
    /// Position of `token_ids[0]`; equals the tokens already computed.
    pub start_position: usize,
    /// Blocks holding positions `0..start_position + token_ids.len()`.
    pub block_table: Vec<BlockId>,
    /// True when this chunk reaches the sequence's last token, so the step samples a token.
    /// False for the non-final chunks of a chunked prefill.
    pub needs_logits: bool,
}
// ANCHOR_END: scheduled_sequence

/// The step's batch, in the order the runner lays it out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerOutput {
    pub scheduled: Vec<ScheduledSequence>,
    /// Sequences preempted by recompute during this step. (Those preempted by swap, and the
    /// block copies a swap needs, are in [`super::scheduler::Scheduler::take_swaps`]: the
    /// worker makes the copies before this batch runs.)
    pub preempted: Vec<SeqId>,
}

impl SchedulerOutput {
    /// Tokens the model processes this step (prefill chunks plus decodes).
    pub fn num_batched_tokens(&self) -> usize {
        self.scheduled.iter().map(|s| s.token_ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty()
    }
}
