//! Exercise 3: one scheduling step under a token budget (vLLM's `Scheduler.schedule`).
//!
//! A sequence has `num_tokens()` tokens (prompt + generated), `num_computed_tokens` of which
//! already have keys and values in the KV cache. One rule covers prefill, chunked prefill,
//! decode and mixed batches: a scheduled sequence gets `min(uncomputed tokens, budget left)`
//! new tokens. A decode has 1 uncomputed token, a new prompt all of its tokens, and a prompt
//! larger than the budget is cut into chunks over several steps.
//!
//! Your `schedule` gets the engine's [`Scheduler`] and must decide exactly what the engine's
//! own would (the tests compare the two step by step, under several policies). The contract:
//!
//! - **Order.** Both queues are put in policy order before anything is decided
//!   (`Scheduler` has a method for it). The tests use policies other than FCFS.
//! - **Budget.** The step starts with `max_num_batched_tokens`; each scheduled sequence gets
//!   `min(uncomputed, budget left)` tokens, and nothing is scheduled once the budget is 0.
//! - **Blocks first.** A sequence's tokens are granted only once its block table holds them
//!   (`block_manager.allocate_slots`, which is all or nothing). Its `ScheduledSequence`
//!   (`s.scheduled_sequence`) is taken after that, so it carries the grown table.
//! - **Running sequences first**, from the most important. When one cannot get its blocks,
//!   the least important running sequence is preempted (exercise 2), recorded in
//!   `out.preempted`, and the allocation is tried again. If the sequence preempted is the
//!   one asking, it is not scheduled, and no running sequence after it is either.
//! - **Then waiting sequences**, from the front, moved to the back of `running` with status
//!   `Running` when admitted, while budget is left and fewer than `max_num_seqs` run, and
//!   only if nothing was preempted in this step. Admission *stops* (it never skips to the
//!   next one) at the first waiting sequence that cannot get its blocks, or that would be cut
//!   while chunked prefill is off although all of it fits one step's budget. (One that can
//!   never fit a step, a long sequence preempted for recompute, is chunked anyway.)
//! - `out.scheduled` lists the granted sequences in the order they were granted.
//!
//! Test: `cargo test -p stage1 --test scheduler` (needs exercises 1 and 2 first).

#[cfg(not(feature = "mutants"))]
use engine::core::scheduler::Scheduler;
#[cfg(not(feature = "mutants"))]
use engine::core::scheduler_output::SchedulerOutput;
#[cfg(not(feature = "reference"))]
use engine::sequence::SequenceStatus;

#[cfg(not(feature = "reference"))]
use crate::preemption::{preempt, select_victim};

// HINT: two loops, one per queue. The borrow checker will object if you hold a `&Sequence`
// (from `s.sequence(id)`) across a call that takes `&mut s`: copy the numbers you need first.
// Why can a preemption never hit a sequence already scheduled in this step? Think about
// which end of the running queue victims come from, and which end you schedule from. And
// why does admission stop after a preemption, or at a sequence that does not fit, rather than
// look further down the queue?

// ANCHOR: stub
/// Builds the next step's batch under the token budget, preempting if blocks run out.
#[cfg(not(feature = "reference"))]
pub fn schedule(s: &mut Scheduler) -> SchedulerOutput {
    todo!("stage1: schedule in stages/stage1/src/scheduler.rs — the contract is in the module docs")
}
// ANCHOR_END: stub

/// The engine's [`Scheduler::schedule`].
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub fn schedule(s: &mut Scheduler) -> SchedulerOutput {
    s.schedule()
}

#[cfg(feature = "mutants")]
pub use crate::mutants::scheduler::schedule;
