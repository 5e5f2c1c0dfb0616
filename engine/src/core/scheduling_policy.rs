//! Which request goes first (vLLM's `SchedulingPolicy`).
//!
//! One comparison decides both questions a scheduler asks: in what order to admit waiting
//! requests, and which running request to preempt when the cache is full (the least important
//! one). First-come-first-served compares arrival order; a priority or fairness policy is
//! another implementation of the same trait.

use std::cmp::Ordering;

use crate::sequence::Sequence;

// ANCHOR: policy_trait
/// Orders requests from most to least important.
pub trait SchedulingPolicy: Send {
    /// `Less` when `a` should be served before `b`.
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering;
    fn name(&self) -> &'static str;
}
// ANCHOR_END: policy_trait

// ANCHOR: fcfs
/// First come, first served: earlier arrivals first; the latest arrival is preempted first.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fcfs;

impl SchedulingPolicy for Fcfs {
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        // Sequence ids are handed out in arrival order.
        a.seq_id.cmp(&b.seq_id)
    }

    fn name(&self) -> &'static str {
        "fcfs"
    }
}
// ANCHOR_END: fcfs
