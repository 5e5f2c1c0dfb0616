//! Exercise 1: the forward pipeline schedule on a unit clock.
//!
//! Inference runs forward only. Every stage takes the micro-batches in order `0..M`; a stage
//! can run micro-batch `m` once the stage before it has finished `m`; every stage-forward of
//! one micro-batch costs one tick. At the first tick only stage 0 has work; the later stages
//! join one tick apart (the *fill*); once all `S` stages are busy the pipeline is in its
//! *steady state*; when stage 0 runs out of micro-batches the stages fall idle one after the
//! other (the *drain*). The chapter draws the table for S = 4, M = 4 by hand; work it before
//! you code.
//!
//! Test: `cargo test -p stage6 --test schedule_ticks`.

#[cfg(not(feature = "reference"))]
use crate::WorkItem;

#[cfg(feature = "mutants")]
pub use crate::mutants::schedule_ticks::schedule_ticks;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::distributed::pipeline_schedule::schedule_ticks;

// HINT: at tick t, which micro-batch would stage s hold? When is that micro-batch real?
// HINT: how many ticks until the last micro-batch has left the last stage? Count them in the
//   chapter's table for M = 1 and for M = 4, then write the formula.
// HINT: no stages or no micro-batches: no work, no ticks.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// `ticks[t]`: the items that run at tick `t`, ordered by stage. Stage `s` runs micro-batch
/// `m` at the earliest tick its input is there and it is free.
pub fn schedule_ticks(num_stages: usize, num_micro_batches: usize) -> Vec<Vec<WorkItem>> {
    todo!(
        "stage6: schedule_ticks in stages/stage6/src/schedule_ticks.rs — for each tick, the \
         (stage, micro-batch) items that run in it: fill, steady state, drain"
    )
}
// ANCHOR_END: stub
