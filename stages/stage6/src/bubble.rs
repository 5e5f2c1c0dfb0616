//! Exercise 3: the bubble of an executed schedule.
//!
//! The engine records what its pipeline ran: for every stage and micro-batch, when the item
//! started and ended. Every stage is on the clock from the moment the step's first item starts
//! to the moment its last item ends; whatever part of that span a stage did not spend on its
//! own items (waiting for the fill, waiting in the drain, waiting for a slow neighbour) is
//! *bubble*. Return it exactly, as `idle` units out of `total` stage-time units, so that a test
//! can compare it with a fraction like `(S − 1)/(M + S − 1)` without rounding.
//!
//! Test: `cargo test -p stage6 --test bubble`.

#[cfg(not(feature = "reference"))]
use crate::{Bubble, TimedItem};

#[cfg(feature = "mutants")]
pub use crate::mutants::bubble::bubble;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::distributed::pipeline_schedule::bubble;

// HINT: the span is the same for every stage: from the earliest start to the latest end of
//   any item, not of the stage's own items.
// HINT: `total` is stages × span; `idle` is what the items do not cover.
// HINT: no items: nothing ran, `Bubble::default()`.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// The idle share of `items` on `num_stages` stages: `idle` of `total` stage-time units.
pub fn bubble(items: &[TimedItem], num_stages: usize) -> Bubble {
    todo!(
        "stage6: bubble in stages/stage6/src/bubble.rs — stages × span minus the time the items \
         cover, out of stages × span"
    )
}
// ANCHOR_END: stub
