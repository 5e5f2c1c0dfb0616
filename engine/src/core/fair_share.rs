//! Fair share across tenants: each tenant gets the engine's tokens in proportion to its weight
//! (weighted fair queuing over tokens, as a scheduler of a shared link shares its bytes).
//!
//! Each tenant has a *virtual time*: the tokens it has been given, divided by its weight.
//! The tenant furthest behind (smallest virtual time) goes first, and the request to preempt
//! is the latest one of the tenant furthest ahead. A heavy tenant with a thousand requests
//! queued therefore cannot starve a light one: the light tenant's virtual time stays below,
//! so its requests sort before every request of the heavy one, whatever their arrival.
//!
//! A tenant that was idle must not bank its idle time (it would then shut everyone out until
//! it caught up): when it becomes active again its virtual time is raised to the least of
//! the active tenants'. This is start-time fair queuing's rule.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Instant;

use super::scheduling_policy::SchedulingPolicy;
use crate::error::EngineError;
use crate::sequence::{SeqId, Sequence};

// ANCHOR: tenant_shares
/// Weights, virtual times and active request counts of the tenants (shared by
/// [`FairShare`] and [`super::qos_policy::Qos`]).
#[derive(Debug, Clone, Default)]
pub struct TenantShares {
    weights: HashMap<String, f64>,
    /// Tokens given / weight, per tenant seen so far.
    virtual_time: HashMap<String, f64>,
    /// Unfinished requests per tenant.
    active: HashMap<String, usize>,
    /// `virtual_time` as it was when the step began: what comparisons read.
    snapshot: HashMap<String, f64>,
}

impl TenantShares {
    /// `weights` (tenant, weight) for the tenants named; others weigh 1. Each weight must be
    /// a positive number.
    pub fn new(weights: &[(String, f64)]) -> Result<Self, EngineError> {
        if let Some((t, w)) = weights.iter().find(|(_, w)| !(w.is_finite() && *w > 0.0)) {
            return Err(EngineError::InvalidArgument(format!(
                "--tenant-weight {t}={w}: a weight must be a positive number"
            )));
        }
        Ok(TenantShares {
            weights: weights.iter().cloned().collect(),
            ..Default::default()
        })
    }

    pub fn weight(&self, tenant: &str) -> f64 {
        self.weights.get(tenant).copied().unwrap_or(1.0)
    }

    /// A tenant's virtual time at the start of this step (0 for one never seen).
    pub fn virtual_time(&self, tenant: &str) -> f64 {
        self.snapshot.get(tenant).copied().unwrap_or(0.0)
    }

    pub fn arrive(&mut self, tenant: &str) {
        let count = self.active.entry(tenant.to_string()).or_default();
        *count += 1;
        if *count == 1 {
            // Newly active: start no earlier than the tenants already competing.
            let floor = self
                .active
                .iter()
                .filter(|(t, &n)| n > 0 && t.as_str() != tenant)
                .filter_map(|(t, _)| self.virtual_time.get(t).copied())
                .min_by(f64::total_cmp);
            let vt = self.virtual_time.entry(tenant.to_string()).or_default();
            *vt = vt.max(floor.unwrap_or(0.0));
        }
    }

    pub fn serve(&mut self, tenant: &str, num_tokens: usize) {
        let w = self.weight(tenant);
        let vt = self.virtual_time.entry(tenant.to_string()).or_default();
        *vt = advance_virtual_time(*vt, num_tokens, w);
    }

    pub fn finish(&mut self, tenant: &str) {
        if let Some(n) = self.active.get_mut(tenant) {
            *n = n.saturating_sub(1);
        }
    }

    /// Freezes the virtual times the step's comparisons read.
    pub fn begin_step(&mut self) {
        self.snapshot.clone_from(&self.virtual_time);
    }

    /// The tenant further behind first.
    pub fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        let vt = |s: &Sequence| self.virtual_time(&s.params.tenant);
        vt(a).total_cmp(&vt(b))
    }
}
// ANCHOR_END: tenant_shares

// ANCHOR: fair_order
/// A tenant's virtual time `vt` after it is given `num_tokens` more tokens at weight
/// `weight` (> 0): each token costs `1 / weight`, so a tenant of weight 2 can take twice the
/// tokens of a tenant of weight 1 before its virtual time has moved as far.
pub fn advance_virtual_time(vt: f64, num_tokens: usize, weight: f64) -> f64 {
    vt + num_tokens as f64 / weight
}

/// Fair-share order of two requests, each given as (its tenant's virtual time, its id):
/// `Less` when `a` goes first. The tenant further behind first; between equal virtual times
/// the earlier arrival (ids are handed out in arrival order), so the order is total and two
/// requests are `Equal` only when they are the same request.
pub fn fair_order(a: (f64, SeqId), b: (f64, SeqId)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}
// ANCHOR_END: fair_order

/// Tenants by virtual time, then arrival.
#[derive(Debug, Clone, Default)]
pub struct FairShare {
    pub shares: TenantShares,
}

impl FairShare {
    pub fn new(weights: &[(String, f64)]) -> Result<Self, EngineError> {
        Ok(FairShare {
            shares: TenantShares::new(weights)?,
        })
    }
}

impl SchedulingPolicy for FairShare {
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        let key = |s: &Sequence| (self.shares.virtual_time(&s.params.tenant), s.seq_id);
        fair_order(key(a), key(b))
    }

    fn name(&self) -> &'static str {
        "fair"
    }

    fn on_arrival(&mut self, seq: &Sequence) {
        self.shares.arrive(&seq.params.tenant);
    }

    fn begin_step(&mut self, _now: Instant) {
        self.shares.begin_step();
    }

    fn on_scheduled(&mut self, seq: &Sequence, num_tokens: usize) {
        self.shares.serve(&seq.params.tenant, num_tokens);
    }

    fn on_finished(&mut self, seq: &Sequence) {
        self.shares.finish(&seq.params.tenant);
    }
}
