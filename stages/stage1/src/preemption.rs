//! Exercise 2: who is preempted, and how (vLLM's `SchedulingPolicy` and `_preempt_request`).
//!
//! When the KV cache cannot hold the new tokens of a running sequence, the scheduler frees
//! memory by *preempting* a running sequence. Our engine, like vLLM's V1 engine, preempts by
//! *recompute*: the victim loses its KV cache and waits to be prefilled again; what it has
//! generated so far is kept, and its prompt and output are prefilled together when it returns.
//!
//! Which sequence? The least important running one, by the same [`SchedulingPolicy`] that
//! orders the queues. Under first-come-first-served ([`Fcfs`]) that is the latest arrival.
//! Not because its cache is the cheapest to recompute (a late, long prompt can hold more
//! cache than anyone), but because it guarantees progress: the earliest arrival is never
//! preempted while a later one runs, so it finishes and frees its blocks, and so on for every
//! request.
//!
//! Three pieces, used by your `schedule` in exercise 3:
//! - [`Fcfs`]: the comparison;
//! - [`select_victim`]: the running sequence the scheduler's policy ranks last;
//! - [`preempt`]: the state change of preemption by recompute.
//!
//! Test: `cargo test -p stage1 --test preemption`.

#[cfg(not(feature = "reference"))]
use std::cmp::Ordering;

#[cfg(not(feature = "mutants"))]
use engine::core::scheduler::Scheduler;
#[cfg(not(feature = "mutants"))]
use engine::sequence::SeqId;
#[cfg(not(feature = "reference"))]
use engine::{core::scheduling_policy::SchedulingPolicy, sequence::Sequence};

#[cfg(feature = "mutants")]
pub use crate::mutants::preemption::{preempt, select_victim, Fcfs};
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::core::scheduling_policy::Fcfs;

// HINT (Fcfs): what in a `Sequence` records the order of arrival? (`SeqId`'s doc says.)
// HINT (select_victim): the scheduler carries its policy (`s.policy()`); do not assume the
//   running queue is sorted, and do not assume the policy is FCFS: the tests use others.
// HINT (preempt): after recompute-preemption the sequence must look exactly like a request
//   that has not started yet, except for what it has generated and for its preemption count.
//   Go through `Sequence`'s fields and the scheduler's queues and block tables, and ask of
//   each: does it describe the KV cache (gone), or the request (kept)? And where in the
//   waiting queue does a request go that was already running before everything that waits?

// ANCHOR: stub
/// First come, first served: earlier arrivals first; the latest arrival is preempted first.
#[cfg(not(feature = "reference"))]
#[derive(Debug, Default, Clone, Copy)]
pub struct Fcfs;

#[cfg(not(feature = "reference"))]
impl SchedulingPolicy for Fcfs {
    /// `Less` when `a` should be served before `b`.
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        todo!("stage1: Fcfs::compare in stages/stage1/src/preemption.rs — earlier arrival first")
    }

    fn name(&self) -> &'static str {
        "fcfs"
    }
}

/// The running sequence to preempt first: the one `s.policy()` ranks least important, or
/// `None` when no sequence is running. The running queue may be in any order.
#[cfg(not(feature = "reference"))]
pub fn select_victim(s: &Scheduler) -> Option<SeqId> {
    todo!("stage1: select_victim in stages/stage1/src/preemption.rs — whom s.policy() ranks last")
}

/// Preemption by recompute of the running sequence `id`. Afterwards:
/// - `id` is no longer in `s.running`, and is at the *front* of `s.waiting`;
/// - it holds no KV blocks (the block manager's table for it is empty);
/// - `num_computed_tokens` is 0, `status` is `Waiting`, `num_preemptions` is one more;
/// - its prompt and output tokens are unchanged, and no other sequence changed.
#[cfg(not(feature = "reference"))]
pub fn preempt(s: &mut Scheduler, id: SeqId) {
    todo!("stage1: preempt in stages/stage1/src/preemption.rs — its doc gives the state afterwards")
}
// ANCHOR_END: stub

/// The engine's [`Scheduler::select_victim`].
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub fn select_victim(s: &Scheduler) -> Option<SeqId> {
    s.select_victim()
}

/// The engine's [`Scheduler::preempt`].
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub fn preempt(s: &mut Scheduler, id: SeqId) {
    s.preempt(id)
}
