//! Exercise 2: input preparation for a mixed batch (vLLM's `GPUModelRunner._prepare_inputs`).
//!
//! The model sees one flat batch: every scheduled sequence's new tokens one after another, no
//! padding. A decode contributes one row, a prefill chunk many.
//! [`AttentionMetadata`](engine::attention::attention_metadata::AttentionMetadata) tells
//! attention which rows belong to which sequence, how long each sequence's context is, and
//! where each row's key and value go in the cache; `logits_indices` says which rows are
//! sampled. An example:
//!
//! ```text
//! scheduled: A = first prefill chunk, positions 0 to 2, samples nothing yet;
//!            B = decode at position 9
//! input_ids        [a0 a1 a2 b9]       positions [0 1 2 9]
//! slot_mapping     [slot(A,0) slot(A,1) slot(A,2) slot(B,9)]
//! query_start_loc  [0 3 4]             A owns rows 0 to 2, B row 3
//! seq_lens         [3 10]              tokens in each sequence's cache after this step
//! block_tables     A's table, B's table, each padded with 0 to the longest
//! logits_indices   [3]                 B's last row; A's chunk is not its last
//! ```
//!
//! The contract of every field, and a batch worked by hand, are in the book's Stage 3 chapter,
//! "Input preparation for a mixed batch".
//!
//! Test: `cargo test -p stage3 --test prepare_inputs` (uses your exercise 1).

#[cfg(not(feature = "reference"))]
use engine::core::scheduler_output::SchedulerOutput;
#[cfg(not(feature = "reference"))]
use engine::worker::model_runner::ModelInput;

#[cfg(feature = "mutants")]
pub use crate::mutants::prepare_inputs::prepare_inputs;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::worker::model_runner::prepare_inputs;

// Your `prepare_inputs` calls your slot mapping.
#[cfg(not(feature = "reference"))]
use crate::slot_mapping::slot_for_position;

// HINT: `ModelInput` and `AttentionMetadata` derive `Default`; one pass over
//   `out.scheduled`, in order, pushing onto the flat vectors, is enough.
// HINT: write down the example above for a batch of your own (a decode, a first chunk, a
//   middle chunk) before you code: what is each sequence's first row, its last row, its
//   `seq_len`?
// HINT: `max_blocks_per_seq` must be known before the first table is padded. An empty batch
//   (nothing scheduled) is legal.
// HINT: the tests compare the whole `ModelInput` with the engine's, field by field; when one
//   fails, the message shows both.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// Lays out a scheduled batch: token ids, positions, slot mapping, block tables.
pub fn prepare_inputs(out: &SchedulerOutput, block_size: usize) -> ModelInput {
    todo!(
        "stage3: prepare_inputs in stages/stage3/src/prepare_inputs.rs — lay the \
         scheduled sequences out as one flat batch: input_ids, positions, \
         AttentionMetadata, logits_indices"
    )
}
// ANCHOR_END: stub
