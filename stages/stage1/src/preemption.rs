//! Exercise 2: who is preempted, and how (vLLM's `SchedulingPolicy` and `_preempt_request`).
//!
//! When the KV cache cannot hold the new tokens of a running sequence, the scheduler frees
//! memory by *preempting* another running sequence. vLLM's default is preemption by
//! recompute: drop all of the victim's KV blocks and put it back at the front of the waiting
//! queue; its generated tokens are kept, and when it is scheduled again its prompt and output
//! are prefilled together, as one long prompt.
//!
//! Which sequence? The least important one, by the same [`SchedulingPolicy`] that orders the
//! queues. First-come-first-served ([`Fcfs`]) serves the earliest arrival first, so the latest
//! arrival is the victim: it has the least work invested, and the oldest requests keep
//! making progress, so every request finishes eventually.
//!
//! Three pieces, used by your `schedule` in exercise 3:
//! - [`Fcfs`]: the comparison (sequence ids are handed out in arrival order);
//! - [`select_victim`]: the running sequence the scheduler's policy ranks last;
//! - [`preempt`]: the state change of preemption by recompute.
//!
//! Test: `cargo test -p stage1 --test preemption`.

#[cfg(not(feature = "reference"))]
use std::cmp::Ordering;

use engine::core::scheduler::Scheduler;
use engine::sequence::SeqId;
#[cfg(not(feature = "reference"))]
use engine::{core::scheduling_policy::SchedulingPolicy, sequence::Sequence};

#[cfg(feature = "reference")]
pub use engine::core::scheduling_policy::Fcfs;

// HINT (Fcfs): `SeqId` derives `Ord`, and ids grow with arrival time: `a.seq_id.cmp(&b.seq_id)`.
// HINT (select_victim): `s.running` holds the running ids; `s.sequence(id)` gives each one's
//   `Sequence`; `s.policy().compare(a, b)` returns `Greater` when `a` matters less than `b`.
//   The victim is the maximum under that comparison (`Iterator::max_by`); `None` when nothing
//   runs.
// HINT (preempt): the tests compare all of these with the engine:
//   1. remove `id` from `s.running` (`Vec::retain`);
//   2. free its blocks: `s.block_manager.free(id)`;
//   3. through `s.sequence_mut(id)`: `num_computed_tokens = 0` (its KV cache is gone),
//      `status = SequenceStatus::Waiting`, `num_preemptions += 1`;
//   4. put it at the *front* of `s.waiting` (it was running, so it goes before newer arrivals).

/// First come, first served: earlier arrivals first; the latest arrival is preempted first.
#[cfg(not(feature = "reference"))]
#[derive(Debug, Default, Clone, Copy)]
pub struct Fcfs;

#[cfg(not(feature = "reference"))]
impl SchedulingPolicy for Fcfs {
    /// `Less` when `a` should be served before `b`.
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        todo!("stage1: Fcfs::compare in stages/stage1/src/preemption.rs — earlier arrival (smaller seq_id) first")
    }

    fn name(&self) -> &'static str {
        "fcfs"
    }
}

/// The running sequence to preempt first: the one `s.policy()` ranks least important, or
/// `None` when no sequence is running.
#[cfg(not(feature = "reference"))]
pub fn select_victim(s: &Scheduler) -> Option<SeqId> {
    todo!("stage1: select_victim in stages/stage1/src/preemption.rs — the running sequence that s.policy() ranks last (max_by compare)")
}

/// Preemption by recompute: `id` leaves `running`, loses its KV blocks and computed tokens,
/// counts one more preemption, and waits at the front of the waiting queue.
#[cfg(not(feature = "reference"))]
pub fn preempt(s: &mut Scheduler, id: SeqId) {
    todo!("stage1: preempt in stages/stage1/src/preemption.rs — remove from running, free blocks, reset num_computed_tokens, status Waiting, num_preemptions += 1, push_front on waiting")
}

/// The engine's [`Scheduler::select_victim`].
#[cfg(feature = "reference")]
pub fn select_victim(s: &Scheduler) -> Option<SeqId> {
    s.select_victim()
}

/// The engine's [`Scheduler::preempt`].
#[cfg(feature = "reference")]
pub fn preempt(s: &mut Scheduler, id: SeqId) {
    s.preempt(id)
}
