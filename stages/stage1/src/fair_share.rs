//! Exercise 5: fair share across tenants (weighted fair queuing over tokens).
//!
//! Several tenants share one engine; tenant `t` has a weight `w_t` and should get the tokens
//! in proportion to it while it has work queued. Each tenant keeps a *virtual time*: the
//! tokens it has been given, each costing `1 / w_t`. The request that goes next is one of the
//! tenant with the smallest virtual time, the one furthest behind its share. A tenant with a
//! thousand queued requests cannot starve a tenant with one: every token it takes moves its
//! virtual time forward, and the light tenant's requests sort first as soon as it is ahead.
//!
//! The engine's `FairShare` policy (`--scheduling-policy fair`) keeps the virtual times (and
//! raises a tenant that was idle to the least active one's, so idle time is not banked) and
//! calls your two functions:
//! - [`advance_virtual_time`]: a tenant's virtual time after it is given some tokens;
//! - [`fair_order`]: which of two requests goes first.
//!
//! Test: `cargo test -p stage1 --test fair_share`.

#[cfg(not(feature = "reference"))]
use std::cmp::Ordering;

#[cfg(not(feature = "reference"))]
use engine::sequence::SeqId;

#[cfg(feature = "mutants")]
pub use crate::mutants::fair_share::{advance_virtual_time, fair_order};
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::core::fair_share::{advance_virtual_time, fair_order};

// HINT (advance_virtual_time): a tenant of weight 2 is owed twice the tokens of a tenant of
//   weight 1; after each has been given its due, their virtual times should be equal.
// HINT (fair_order): `f64` is not `Ord`; `total_cmp` is. When two virtual times are equal the
//   order must still be total and must not depend on the order of the sort's input.

// ANCHOR: stub
/// A tenant's virtual time `vt` after it is given `num_tokens` more tokens at weight
/// `weight` (> 0).
#[cfg(not(feature = "reference"))]
pub fn advance_virtual_time(vt: f64, num_tokens: usize, weight: f64) -> f64 {
    todo!("stage1: advance_virtual_time in stages/stage1/src/fair_share.rs — each token costs 1/weight")
}

/// Fair-share order of two requests, each given as (its tenant's virtual time, its id):
/// `Less` when `a` goes first. The tenant further behind first; between equal virtual times
/// the earlier arrival (ids are handed out in arrival order).
#[cfg(not(feature = "reference"))]
pub fn fair_order(a: (f64, SeqId), b: (f64, SeqId)) -> Ordering {
    todo!("stage1: fair_order in stages/stage1/src/fair_share.rs — furthest behind first, then arrival")
}
// ANCHOR_END: stub
