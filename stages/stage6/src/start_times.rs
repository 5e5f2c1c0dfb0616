//! Exercise 2: when each item of a pipeline starts, for any costs.
//!
//! Real stages do not take one tick each: a stage with more layers, a micro-batch with more
//! tokens or a slower link all change the timing. Two rules decide it: a stage runs one item
//! at a time, in its own order; and stage `s > 0` cannot start micro-batch `m` before stage
//! `s − 1` has finished it (the activations are its input). Stage 0's inputs are all there at
//! time 0. The engine replays an executed schedule with this function, and the planner's
//! estimates rest on the same two rules.
//!
//! Test: `cargo test -p stage6 --test start_times`.

#[cfg(not(feature = "reference"))]
use crate::ScheduleError;

#[cfg(feature = "mutants")]
pub use crate::mutants::start_times::start_times;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::distributed::pipeline_schedule::start_times;

// HINT: stage s depends only on stage s − 1. In which order can you compute the stages?
// HINT: keep, per stage, when it becomes free; and per micro-batch, when the previous stage
//   finished it. The start is the later of the two.
// HINT: an order that repeats or misses a micro-batch, or costs of the wrong shape, are bad
//   input: return the matching `ScheduleError`, do not panic.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// `start[s][m]`: when stage `s` starts micro-batch `m`, given each stage's order
/// (`stage_orders[s]`, a permutation of `0..M`) and each item's cost (`cost[s][m]`).
pub fn start_times(
    stage_orders: &[Vec<usize>], // [S][M]: micro-batch ids in the order each stage runs them
    cost: &[Vec<u64>],           // [S][M]: cost of stage s on micro-batch m
) -> Result<Vec<Vec<u64>>, ScheduleError> {
    todo!(
        "stage6: start_times in stages/stage6/src/start_times.rs — start[s][m] = max(stage s \
         free, stage s − 1 done with m), stage by stage"
    )
}
// ANCHOR_END: stub
