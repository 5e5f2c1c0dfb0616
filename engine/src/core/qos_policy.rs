//! Multi-tenant quality of service: per-tenant queues, SLA deadlines, weighted token budgets.
//!
//! The order, most important first:
//! 1. **Overdue** requests (past `arrival + deadline`), earliest deadline first: a request
//!    that already missed its SLA is served before anything that has not.
//! 2. Then the **tenant** furthest below its weighted share of the tokens served so far
//!    ([`TenantShares`]: tokens / weight). This is the weighted token budget, kept over time
//!    rather than cut per step: a per-step cap would leave the batch part empty whenever a
//!    tenant has nothing queued, and the accounting gives the same long-run shares without
//!    idling.
//! 3. Within a tenant (its own queue), lower `priority` first, then arrival.
//!
//! Preemption takes the reverse order: the latest, least urgent request of the tenant most
//! over its share, never an overdue one while another is not.

use std::cmp::Ordering;
use std::time::Instant;

use super::fair_share::TenantShares;
use super::scheduling_policy::SchedulingPolicy;
use crate::error::EngineError;
use crate::sequence::Sequence;

// ANCHOR: qos
/// Overdue first (earliest deadline), then tenants by weighted share, then priority and
/// arrival within a tenant.
#[derive(Debug, Clone)]
pub struct Qos {
    pub shares: TenantShares,
    /// The step's clock, set by `begin_step`.
    now: Instant,
}

impl Qos {
    pub fn new(weights: &[(String, f64)]) -> Result<Self, EngineError> {
        Ok(Qos {
            shares: TenantShares::new(weights)?,
            now: Instant::now(),
        })
    }

    /// The instant `seq` is overdue from, if it has passed.
    fn overdue_since(&self, seq: &Sequence) -> Option<Instant> {
        let due = seq.arrival_time + seq.params.deadline?;
        (due <= self.now).then_some(due)
    }
}

impl SchedulingPolicy for Qos {
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        let urgency = match (self.overdue_since(a), self.overdue_since(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        urgency
            .then_with(|| self.shares.compare(a, b))
            .then(a.params.priority.cmp(&b.params.priority))
            .then(a.seq_id.cmp(&b.seq_id))
    }

    fn name(&self) -> &'static str {
        "qos"
    }

    fn on_arrival(&mut self, seq: &Sequence) {
        self.shares.arrive(&seq.params.tenant);
    }

    fn begin_step(&mut self, now: Instant) {
        self.now = now;
        self.shares.begin_step();
    }

    fn on_scheduled(&mut self, seq: &Sequence, num_tokens: usize) {
        self.shares.serve(&seq.params.tenant, num_tokens);
    }

    fn on_finished(&mut self, seq: &Sequence) {
        self.shares.finish(&seq.params.tenant);
    }
}
// ANCHOR_END: qos
