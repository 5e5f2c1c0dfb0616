//! Plausible wrong input preparation, each the engine's layout with one field made wrong:
//!
//! - `prepare_inputs_logits_first_row`: `logits_indices` points at the *first* row of each
//!   sampling sequence instead of its last (the logits of the wrong token: right only for a
//!   decode, whose first row is its last).
//! - `prepare_inputs_query_start_off_by_one`: `query_start_loc[s + 1]` is the last row of
//!   sequence `s` instead of one past it (and so the total is one short).
//! - `prepare_inputs_seq_lens_new_tokens`: `seq_lens` counts only this step's new tokens, not
//!   the context already in the cache (right only for a first prefill chunk).

use engine::core::scheduler_output::SchedulerOutput;
use engine::worker::model_runner::{self, ModelInput};

use super::active;

pub fn prepare_inputs(out: &SchedulerOutput, block_size: usize) -> ModelInput {
    let mut input = model_runner::prepare_inputs(out, block_size);
    let meta = &mut input.attn_metadata;
    if active("prepare_inputs_logits_first_row") {
        input.logits_indices = out
            .scheduled
            .iter()
            .zip(&meta.query_start_loc)
            .filter(|(s, _)| s.needs_logits)
            .map(|(_, &first_row)| first_row)
            .collect();
    } else if active("prepare_inputs_query_start_off_by_one") {
        for end in meta.query_start_loc.iter_mut().skip(1) {
            *end -= 1;
        }
    } else if active("prepare_inputs_seq_lens_new_tokens") {
        meta.seq_lens = out.scheduled.iter().map(|s| s.token_ids.len()).collect();
    }
    input
}
