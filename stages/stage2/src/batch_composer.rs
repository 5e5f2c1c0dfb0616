//! Exercise 1: the batch composer, one step's tokens under the token budget.
//!
//! Continuous batching builds every step from scratch: the requests decoding (one token
//! each), the prompts still being prefilled, and new prompts, all in one batch whose size is
//! capped by a token budget, `max_num_batched_tokens`. This exercise is that composition on
//! its own, with the KV cache out of the way (every allocation succeeds): given the
//! uncomputed tokens of each running and each waiting sequence, in policy order, how many
//! tokens does each get this step?
//!
//! The contract ([`BatchPlan`] says what to return):
//!
//! - **Running first.** Each running sequence, in order, gets `min(uncomputed, budget left)`;
//!   none gets anything once the budget is 0. A decode has 1 uncomputed token.
//! - **Then waiting ones**, from the front, while budget is left and fewer than
//!   `max_num_seqs` sequences run. *Every* running sequence counts against `max_num_seqs`,
//!   including those the budget left out this step: they still hold their seat.
//! - A waiting sequence gets `min(uncomputed, budget left)` too, with one exception: when
//!   `enable_chunked_prefill` is false, a prompt that would be cut (it does not fit the
//!   budget left) waits for a later step, unless it could never fit a step (more
//!   uncomputed tokens than `max_num_batched_tokens`: it is chunked anyway, or it would wait
//!   forever).
//! - Admission **stops** at the first waiting sequence that must wait: the ones behind it
//!   are not tried (that would let later requests overtake it, step after step).
//! - **Long-prefill threshold.** When `long_prefill_token_threshold` is above 0, no sequence
//!   (running or waiting) gets more than that many tokens in one step, whatever budget is
//!   left: read "uncomputed" above as `min(uncomputed, threshold)`. This applies with
//!   chunked prefill off too (a prompt longer than the threshold then runs in chunks of the
//!   threshold). 0 means no cap.
//!
//! The tests put the same queues into the engine's `Scheduler`, with a cache large enough
//! for everything, and compare your plan with the batch it schedules.
//!
//! Test: `cargo test -p stage2 --test batch_composer`.

#[cfg(not(feature = "reference"))]
use engine::config::SchedulerConfig;
pub use engine::core::batch_composer::BatchPlan;

#[cfg(feature = "mutants")]
pub use crate::mutants::batch_composer::compose_batch;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::core::batch_composer::compose_batch;

// HINT: two loops with one budget between them. The first loop ends when the running queue
//   or the budget does; the second also has a seat limit. Work the example of the book's
//   Stage 2 chapter (budget 512, four decodes, a 4096-token prompt) by hand first.
// HINT: "would be cut" means "gets fewer tokens than it has uncomputed". A prompt of exactly
//   the budget left is not cut.
// HINT: apply the threshold first, to what a sequence asks for; the budget and the
//   chunked-prefill rule then see the capped number.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// Tokens granted to each running and each admitted waiting sequence in one step, when every
/// allocation succeeds. `running[i]` and `waiting[i]` are uncomputed tokens, in policy order.
pub fn compose_batch(config: &SchedulerConfig, running: &[usize], waiting: &[usize]) -> BatchPlan {
    todo!(
        "stage2: compose_batch in stages/stage2/src/batch_composer.rs — running sequences \
         first, then waiting prompts, under max_num_batched_tokens and max_num_seqs"
    )
}
// ANCHOR_END: stub
