//! # Stage 6: pipeline parallelism, the micro-batch schedule
//!
//! Under pipeline parallelism the model's layers are split into `S` stages, one group of
//! ranks each, and a step's sequences go through them in `M` micro-batches: stage `s` works
//! on micro-batch `m` while stage `s + 1` works on `m − 1`. You write the schedule's
//! arithmetic, and check it against what the engine's pipeline ran:
//!
//! ```text
//! 1. schedule_ticks   schedule_ticks   which (stage, micro-batch) runs at each tick of a unit
//!                                      clock: fill, steady state, drain
//! 2. start_times      start_times      when each item starts, for any costs and stage orders
//! 3. bubble           bubble           the idle share of an executed schedule
//! ```
//!
//! Data flow, with your code in brackets:
//!
//! ```text
//! step's sequences ─ split into M micro-batches ─ each stage runs 0..M in order
//!   └ [schedule_ticks]: stage s runs m at tick s + m          (every item costs 1)
//!   └ [start_times]: start = max(stage free, input arrived)   (any costs)
//!   └ the engine's ExecutedSchedule (ticks and wall clock) ─ [bubble] ─ (S − 1)/(M + S − 1)?
//! ```
//!
//! Run `cargo test -p stage6`: every test fails with `not yet implemented: stage6: ...` until
//! you write the function it names. `cargo test -p stage6 --features reference` swaps every
//! exercise for the engine's implementation (`engine::distributed::pipeline_schedule`); that
//! is how `cargo xtask check` proves the tests pass, and it also runs the plausible wrong
//! solutions in `mutants/` and requires the tests to catch each one.

// The stubs ignore their arguments (and some imports) until you fill them in.
#![cfg_attr(
    not(feature = "reference"),
    allow(unused_variables, unused_imports, dead_code)
)]

// Maintainers only: plausible wrong solutions that the tests must catch (see mutants/mod.rs).
#[cfg(feature = "mutants")]
#[path = "../mutants/mod.rs"]
mod mutants;

pub mod bubble;
pub mod schedule_ticks;
pub mod start_times;

/// The engine's types the exercises take and return.
pub use engine::distributed::pipeline_schedule::{Bubble, ScheduleError, TimedItem, WorkItem};
