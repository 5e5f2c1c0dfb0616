//! Which request goes first (vLLM's `SchedulingPolicy`).
//!
//! One comparison decides both questions a scheduler asks: in what order to admit waiting
//! requests, and which running request to preempt when the cache is full (the least important
//! one). First-come-first-served compares arrival order; a priority or fairness policy is
//! another implementation of the same trait.
//!
//! A policy that shares the engine among tenants needs to know what each tenant got: the
//! scheduler tells it through the hooks below (arrival, tokens scheduled, finish), which
//! do nothing by default. The comparison is made once per step, over a snapshot of that
//! state, so every sort sees one consistent order.
//!
//! Four policies (`--scheduling-policy`): [`Fcfs`], [`Priority`], fair share across tenants
//! ([`super::fair_share::FairShare`]) and multi-tenant QoS ([`super::qos_policy::Qos`]).

use std::cmp::Ordering;
use std::time::Instant;

use crate::error::EngineError;
use crate::sequence::Sequence;

// ANCHOR: policy_trait
/// Orders requests from most to least important.
pub trait SchedulingPolicy: Send {
    /// `Less` when `a` should be served before `b`.
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering;
    fn name(&self) -> &'static str;

    /// A request joined the queues.
    fn on_arrival(&mut self, _seq: &Sequence) {}
    /// A step is being scheduled at `now`: the one clock the step's comparisons read.
    fn begin_step(&mut self, _now: Instant) {}
    /// `seq` was given `num_tokens` tokens to compute in this step.
    fn on_scheduled(&mut self, _seq: &Sequence, _num_tokens: usize) {}
    /// `seq` finished or was aborted.
    fn on_finished(&mut self, _seq: &Sequence) {}
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

// ANCHOR: priority
/// Lowest `priority` value first (vLLM's convention), earlier arrival among equals. The
/// least urgent, latest request is preempted first.
#[derive(Debug, Default, Clone, Copy)]
pub struct Priority;

impl SchedulingPolicy for Priority {
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        (a.params.priority, a.seq_id).cmp(&(b.params.priority, b.seq_id))
    }

    fn name(&self) -> &'static str {
        "priority"
    }
}
// ANCHOR_END: priority

/// The policy `--scheduling-policy` names: `fcfs`, `priority`, `fair` or `qos`, the last two
/// with `weights` (tenant, weight) for the tenants they name (others weigh 1).
pub fn policy_from_name(
    name: &str,
    weights: &[(String, f64)],
) -> Result<Box<dyn SchedulingPolicy>, EngineError> {
    use super::fair_share::FairShare;
    use super::qos_policy::Qos;
    Ok(match name {
        "fcfs" => Box::new(Fcfs),
        "priority" => Box::new(Priority),
        "fair" => Box::new(FairShare::new(weights)?),
        "qos" => Box::new(Qos::new(weights)?),
        other => {
            return Err(EngineError::InvalidArgument(format!(
                "--scheduling-policy must be fcfs, priority, fair or qos, got {other:?}"
            )))
        }
    })
}
