//! Exercise 3: one scheduling step under a token budget (vLLM's `Scheduler.schedule`).
//!
//! A sequence has `num_tokens()` tokens (prompt + generated), `num_computed_tokens` of which
//! already have keys and values in the KV cache. One rule covers prefill, chunked prefill,
//! decode and mixed batches: a scheduled sequence gets `min(uncomputed tokens, budget left)`
//! new tokens. A decode has 1 uncomputed token, a new prompt all of its tokens, and a prompt
//! larger than the budget is cut into chunks over several steps.
//!
//! Your `schedule` gets the engine's [`Scheduler`] and must decide exactly what the engine's
//! own would (the tests compare the two step by step), so follow these rules:
//!
//! 0. `budget = s.config().max_num_batched_tokens`; call `s.sort_by_policy()`.
//! 1. **Running sequences first**, in order (`i` walks `s.running` while `budget > 0`):
//!    `num_new = min(uncomputed, budget)`, `total = num_computed_tokens + num_new`.
//!    If `s.block_manager.allocate_slots(id, total)` succeeds, push
//!    `s.scheduled_sequence(id, num_new)`, spend the budget, go to the next sequence.
//!    Otherwise preempt [`select_victim`] (with [`preempt`]), record it in `out.preempted`,
//!    and retry; if the victim was `id` itself, stop retrying (it is no longer running, and
//!    as the least important it was the last one: the loop ends).
//! 2. **Then admit waiting sequences**, from the front of `s.waiting`, but only if nothing was
//!    preempted this step (the cache is full: admitting more would only preempt more), while
//!    `budget > 0` and `s.running.len() < max_num_seqs`. For the front sequence:
//!    `num_new = min(uncomputed, budget)`. If it would be cut (`num_new < uncomputed`) while
//!    chunked prefill is off (`enable_chunked_prefill`) and the whole sequence fits one step
//!    (`uncomputed <= max_num_batched_tokens`), stop: it waits for a step with room for all
//!    of it. If `allocate_slots` fails, stop. Otherwise move it from `waiting` to the back of
//!    `running`, set its status to `Running`, push its `ScheduledSequence`, spend the budget.
//!
//! Test: `cargo test -p stage1 --test scheduler` (needs exercises 1 and 2 first).

use engine::core::scheduler::Scheduler;
use engine::core::scheduler_output::SchedulerOutput;
#[cfg(not(feature = "reference"))]
use engine::sequence::SequenceStatus;

#[cfg(not(feature = "reference"))]
use crate::preemption::{preempt, select_victim};

// HINT: the shape of the function:
//     let mut budget = ...; let mut out = SchedulerOutput::default(); s.sort_by_policy();
//     let mut i = 0;
//     while i < s.running.len() && budget > 0 {
//         let id = s.running[i];
//         ... loop { if allocate_slots(..) { push; budget -= num_new; i += 1; break; }
//                    let victim = select_victim(s).expect(..); preempt(s, victim); ...
//                    if victim == id { break; } }
//     }
//     while out.preempted.is_empty() && budget > 0 && s.running.len() < max_num_seqs { ... }
// Read a sequence with `s.sequence(id).unwrap()`; copy the numbers you need out of it before
// calling `&mut self` methods (`allocate_slots`, `preempt`), or the borrow checker objects.
// Why is a preempted victim never a sequence already scheduled this step? Victims come from
// the least important end, and step 1 walks from the most important end.

/// Builds the next step's batch under the token budget, preempting if blocks run out.
#[cfg(not(feature = "reference"))]
pub fn schedule(s: &mut Scheduler) -> SchedulerOutput {
    todo!("stage1: schedule in stages/stage1/src/scheduler.rs — running sequences first (preempting with select_victim/preempt when allocate_slots fails), then admit waiting ones while budget, max_num_seqs and blocks last; rules in the module docs")
}

/// The engine's [`Scheduler::schedule`].
#[cfg(feature = "reference")]
pub fn schedule(s: &mut Scheduler) -> SchedulerOutput {
    s.schedule()
}
