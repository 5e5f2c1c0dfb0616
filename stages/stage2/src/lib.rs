//! # Stage 2: continuous batching
//!
//! Stage 1 decided one step. This stage is about the sequence of steps: what a step's batch
//! is made of, when requests join and leave it, and what that buys over running fixed
//! batches. You write three pieces, in this order:
//!
//! ```text
//! 1. batch_composer       compose_batch         one step's tokens under the budget: decodes
//!                                               first, then prompt chunks
//! 2. continuous_batching  simulate_continuous   the serving loop: requests join at the next
//!                                               step, leave at the step they finish
//! 3. static_batching      simulate_static       the baseline: fixed batches that run until
//!                                               their longest request ends
//! ```
//!
//! Data flow, with your code in brackets:
//!
//! ```text
//! WorkloadSpec::generate ─ requests (arrival, prompt, output length)
//!   ├─ [simulate_continuous] ─ per step: arrivals → Scheduler::add_sequence
//!   │                           Scheduler::schedule  (its budget rules: [compose_batch])
//!   │                           StepCost::step_seconds(StepShape::of(..))  → clock
//!   │                           Scheduler::update_from_output  → finished requests leave
//!   └─ [simulate_static] ────── batches formed from arrived requests, run to their longest
//!        └─ RunReport: throughput, latency and TTFT percentiles, slot utilization
//! ```
//!
//! The simulator (`engine::simulator`) replaces the model with a step-cost model and keeps
//! everything else the engine's: the same `Scheduler`, the same config. Run
//! `cargo test -p stage2`: every test fails with `not yet implemented: stage2: ...` until you
//! write the function it names. `cargo test -p stage2 --features reference` swaps every
//! exercise for the engine's implementation (that is how `cargo xtask check` proves the tests
//! pass; it also runs the plausible wrong solutions in `mutants/` and requires the tests to
//! catch each one).

// The stubs ignore their arguments (and some imports) until you fill them in.
#![cfg_attr(
    not(feature = "reference"),
    allow(unused_variables, unused_imports, dead_code)
)]

// Maintainers only: plausible wrong solutions that the tests must catch (see mutants/mod.rs).
#[cfg(feature = "mutants")]
#[path = "../mutants/mod.rs"]
mod mutants;

pub mod batch_composer;
pub mod continuous_batching;
pub mod static_batching;
