//! A discrete-event simulator of serving: the engine's own [`Scheduler`] decides every step,
//! and a step-cost model, not a model run, says how long the step takes.
//!
//! Why it is worth having: the scheduler is cheap (microseconds a step), the model is not
//! (milliseconds to seconds). Replacing the forward pass with `time(step shape)` lets thousands
//! of requests run in seconds, so policies, budgets and batching schemes can be measured
//! rather than asserted. The decisions are exactly the engine's (same code, same config); only
//! the clock is modelled, and [`engine_run`] measures how wrong that clock is against the
//! engine itself.
//!
//! ```text
//! workload      requests: arrival times, prompt ids, output lengths, tenants (seeded)
//! step_cost     seconds for one step's shape: a fitted linear model, or the H200 roofline
//! calibrate     fit the linear model from the engine's measured steps (least squares)
//! simulate      continuous batching: the real Scheduler, step by step, on a simulated clock
//! static_batching  the baseline: fixed batches that run until their longest request ends
//! metrics       throughput, latency and TTFT percentiles, slot utilization
//! engine_run    the same workload on the real engine, timed, for the model's error
//! sweep, plot   one setting swept (token budget, batch size) and SVG charts of the results
//! ```
//!
//! [`Scheduler`]: crate::core::scheduler::Scheduler

pub mod calibrate;
pub mod engine_run;
pub mod metrics;
pub mod plot;
pub mod rng;
pub mod simulate;
pub mod static_batching;
pub mod step_cost;
pub mod sweep;
pub mod workload;
