//! Exercise 5: your fair-share order against the engine's, and what it must guarantee on a
//! stream of requests from tenants of different weights: a light tenant is never starved by a
//! heavy one, and over a long run each backlogged tenant gets tokens in proportion to its
//! weight, within one chunk.

mod common;

use std::cmp::Ordering;

use engine::core::fair_share as reference;
use engine::sequence::SeqId;
use proptest::prelude::*;
use stage1::fair_share::{advance_virtual_time, fair_order};

/// Tokens a request may be given in one step.
const CHUNK: usize = 8;

/// A queued request of the simulation.
#[derive(Debug, Clone, Copy)]
struct Request {
    tenant: usize,
    id: SeqId,
    remaining: usize,
}

/// What a run of [`simulate`] saw.
#[derive(Debug, Default)]
struct Run {
    /// Tokens given to each tenant.
    served: Vec<usize>,
    /// `served` after the last step at which every tenant but the light one had work queued.
    served_while_backlogged: Vec<usize>,
    /// Per step: the largest gap between the virtual times of tenants with queued work.
    max_spread: f64,
    /// The most consecutive steps the late tenant waited with a request queued.
    late_tenant_longest_wait: usize,
}

/// A scheduler of one request per step, ordered by your `fair_order` over virtual times kept
/// with your `advance_virtual_time`; the request gets up to [`CHUNK`] tokens. Tenants
/// `0..weights.len() - 1` are backlogged from the start (`backlog` requests each, of the
/// given lengths); the last tenant, the light one, sends its `late` requests one per step
/// from step `late_from`. A tenant that becomes active starts at the least virtual time of
/// the tenants already active (the engine's rule: idle time is not banked).
fn simulate(
    weights: &[f64],
    backlog: &[usize],
    late_from: usize,
    late: &[usize],
    steps: usize,
) -> Run {
    let n = weights.len();
    let light = n - 1;
    let mut vt = vec![0.0; n];
    let mut queue: Vec<Request> = Vec::new();
    let mut next_id = 0u64;
    let mut run = Run {
        served: vec![0; n],
        ..Run::default()
    };
    let mut arrive = |queue: &mut Vec<Request>, vt: &mut Vec<f64>, tenant: usize, len: usize| {
        if !queue.iter().any(|r| r.tenant == tenant) {
            let floor = queue.iter().map(|r| vt[r.tenant]).min_by(f64::total_cmp);
            vt[tenant] = vt[tenant].max(floor.unwrap_or(0.0));
        }
        queue.push(Request {
            tenant,
            id: SeqId(next_id),
            remaining: len,
        });
        next_id += 1;
    };
    for &len in backlog {
        for t in 0..light {
            arrive(&mut queue, &mut vt, t, len);
        }
    }
    let mut wait = 0;
    for step in 0..steps {
        if step >= late_from && step - late_from < late.len() {
            arrive(&mut queue, &mut vt, light, late[step - late_from]);
        }
        let Some(i) = (0..queue.len()).min_by(|&a, &b| {
            let (a, b) = (queue[a], queue[b]);
            fair_order((vt[a.tenant], a.id), (vt[b.tenant], b.id))
        }) else {
            break;
        };
        let r = &mut queue[i];
        let tokens = r.remaining.min(CHUNK);
        r.remaining -= tokens;
        let t = r.tenant;
        vt[t] = advance_virtual_time(vt[t], tokens, weights[t]);
        run.served[t] += tokens;
        if queue[i].remaining == 0 {
            queue.remove(i);
        }
        if (0..light).all(|t| queue.iter().any(|r| r.tenant == t)) {
            run.served_while_backlogged.clone_from(&run.served);
        }
        let light_waits = queue.iter().any(|r| r.tenant == light);
        wait = if t != light && light_waits {
            wait + 1
        } else {
            0
        };
        run.late_tenant_longest_wait = run.late_tenant_longest_wait.max(wait);
        let active: Vec<f64> = (0..n)
            .filter(|&t| queue.iter().any(|r| r.tenant == t))
            .map(|t| vt[t])
            .collect();
        if let (Some(lo), Some(hi)) = (
            active.iter().copied().min_by(f64::total_cmp),
            active.iter().copied().max_by(f64::total_cmp),
        ) {
            run.max_spread = run.max_spread.max(hi - lo);
        }
    }
    run
}

fn weight() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![0.5, 1.0, 2.0, 3.0, 4.0])
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

    #[test]
    fn advance_virtual_time_matches_the_engine(vt in 0.0f64..1000.0, tokens in 0usize..4096, w in weight()) {
        prop_assert_eq!(advance_virtual_time(vt, tokens, w), reference::advance_virtual_time(vt, tokens, w));
    }

    #[test]
    fn fair_order_matches_the_engine(va in 0u8..4, ia in 0u64..6, vb in 0u8..4, ib in 0u64..6) {
        // Few distinct virtual times and ids, so that ties are common.
        let (a, b) = ((f64::from(va) / 2.0, SeqId(ia)), (f64::from(vb) / 2.0, SeqId(ib)));
        prop_assert_eq!(fair_order(a, b), reference::fair_order(a, b), "fair_order({:?}, {:?})", a, b);
    }

    /// The property: a tenant arriving late with a few requests, whatever its weight,
    /// waits a bounded number of steps behind heavy tenants with long queues. While it waits
    /// its virtual time stands still, and another tenant `o` only goes first while its
    /// virtual time is not above it: at most `D · w_o + 1` times, where `D = CHUNK / min w`
    /// bounds how far apart the active tenants' virtual times can be.
    #[test]
    fn a_light_tenant_is_never_starved(
        weights in prop::collection::vec(weight(), 2..5),
        backlog in prop::collection::vec(1usize..3 * CHUNK, 20..40),
        late_from in 0usize..100,
        late in prop::collection::vec(1usize..2 * CHUNK, 1..8),
    ) {
        let run = simulate(&weights, &backlog, late_from, &late, 300);
        let min_w = weights.iter().copied().fold(f64::INFINITY, f64::min);
        let d = CHUNK as f64 / min_w;
        let bound: f64 = weights[..weights.len() - 1].iter().map(|w| d * w + 1.0).sum();
        prop_assert!(
            run.late_tenant_longest_wait as f64 <= bound,
            "the light tenant (weight {}) waited {} steps in a row, bound {} (weights {:?})",
            weights[weights.len() - 1], run.late_tenant_longest_wait, bound, weights
        );
        prop_assert!(run.max_spread <= d + 1e-9, "virtual times {} apart, bound {}", run.max_spread, d);
    }

    /// Over a long run, backlogged tenants get tokens in proportion to their weights: their
    /// tokens divided by their weights differ by at most one chunk's worth.
    #[test]
    fn weights_are_respected_over_a_long_run(
        weights in prop::collection::vec(weight(), 3..5),
        backlog in prop::collection::vec(CHUNK..=3 * CHUNK, 100..120),
    ) {
        // No late requests: the last tenant stays idle and gets nothing.
        let run = simulate(&weights, &backlog, usize::MAX, &[], 400);
        let busy = weights.len() - 1;
        let min_w = weights.iter().copied().fold(f64::INFINITY, f64::min);
        let normalized: Vec<f64> = (0..busy).map(|t| run.served_while_backlogged[t] as f64 / weights[t])
            .collect();
        let lo = normalized.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = normalized.iter().copied().fold(0.0, f64::max);
        let total: usize = run.served_while_backlogged.iter().sum();
        prop_assert!(total >= 1000, "only {} tokens served while backlogged", total);
        prop_assert!(
            hi - lo <= CHUNK as f64 / min_w + 1e-9,
            "tokens/weight {:?} for weights {:?}: apart by {}, bound {}",
            normalized, &weights[..busy], hi - lo, CHUNK as f64 / min_w
        );
    }
}

#[test]
fn equal_virtual_times_go_by_arrival() {
    let (early, late) = ((2.5, SeqId(3)), (2.5, SeqId(5)));
    assert_eq!(
        fair_order(early, late),
        Ordering::Less,
        "equal virtual times: the earlier arrival first"
    );
    assert_eq!(fair_order(late, early), Ordering::Greater);
    assert_eq!(
        fair_order(early, early),
        Ordering::Equal,
        "a request against itself"
    );
}

#[test]
fn worked_example() {
    // The book's example: tenant A of weight 2 and tenant B of weight 1, both at virtual
    // time 0; B's request arrived first.
    let (a, b) = (0.0, 0.0);
    assert_eq!(
        fair_order((a, SeqId(1)), (b, SeqId(0))),
        Ordering::Greater,
        "tie: B arrived first"
    );
    // B is given 8 tokens, A 8 tokens: A has moved half as far.
    let b = advance_virtual_time(b, 8, 1.0);
    let a = advance_virtual_time(a, 8, 2.0);
    assert_eq!((a, b), (4.0, 8.0));
    assert_eq!(
        fair_order((a, SeqId(1)), (b, SeqId(0))),
        Ordering::Less,
        "A is behind: A next"
    );
    // A is given 8 more: both at 8, the tie goes to B's earlier request again.
    let a = advance_virtual_time(a, 8, 2.0);
    assert_eq!(fair_order((a, SeqId(1)), (b, SeqId(0))), Ordering::Greater);
}
