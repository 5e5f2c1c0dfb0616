//! Exercise 2: input preparation for a mixed batch (vLLM's `GPUModelRunner._prepare_inputs`).
//!
//! The model sees one flat batch: every scheduled sequence's new tokens one after another, no
//! padding. A decode contributes one row, a prefill chunk many. [`AttentionMetadata`](engine::attention::attention_metadata::AttentionMetadata) tells
//! attention where each sequence's rows start and how long its context is:
//!
//! ```text
//! scheduled: A = prefill chunk, positions 0..3 (3 tokens), B = decode at position 9
//! input_ids        [a0 a1 a2 b9]       positions [0 1 2 9]
//! slot_mapping     [slot(A,0) slot(A,1) slot(A,2) slot(B,9)]
//! query_start_loc  [0 3 4]             seq_lens  [3 10]
//! block_tables     A's table, B's table, each padded with 0 to max_blocks_per_seq
//! logits_indices   rows whose logits are sampled: the last row of each sequence with
//!                  `needs_logits` (a non-final prefill chunk samples nothing)
//! ```
//!
//! Test: `cargo test -p stage3 --test prepare_inputs` (needs exercise 1).

#[cfg(not(feature = "reference"))]
use engine::core::scheduler_output::SchedulerOutput;
#[cfg(not(feature = "reference"))]
use engine::worker::model_runner::ModelInput;

#[cfg(feature = "reference")]
pub use engine::worker::model_runner::prepare_inputs;

// Your `prepare_inputs` calls your slot mapping.
#[cfg(not(feature = "reference"))]
use crate::slot_mapping::slot_for_position;

// HINT: start from `ModelInput::default()`; set `attn_metadata.block_size` and
//   `max_blocks_per_seq` (the longest block table, 0 for an empty batch); push 0 onto
//   `query_start_loc`. Then for each scheduled sequence `s`, in order:
//   - for each of its tokens `j`: position `s.start_position + j`; push the id, the position
//     and `slot_for_position(&s.block_table, block_size, position).0`;
//   - push the running row count onto `query_start_loc`, and
//     `s.start_position + s.token_ids.len()` onto `seq_lens`;
//   - extend `block_tables` with the table's ids (`b.0`), padded with 0 to
//     `max_blocks_per_seq`;
//   - if `s.needs_logits`, push the index of its last row onto `logits_indices`.
//   The tests compare the whole `ModelInput` with the engine's, so match these exactly.

/// Lays out a scheduled batch: token ids, positions, slot mapping, block tables.
#[cfg(not(feature = "reference"))]
pub fn prepare_inputs(out: &SchedulerOutput, block_size: usize) -> ModelInput {
    todo!("stage3: prepare_inputs in stages/stage3/src/prepare_inputs.rs — flatten the scheduled sequences into input_ids, positions, slot_mapping, query_start_loc, seq_lens, padded block_tables, logits_indices")
}
