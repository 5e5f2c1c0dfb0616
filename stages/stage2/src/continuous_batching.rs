//! Exercise 2: the continuous-batching loop, iteration-level admission and retirement.
//!
//! Static batching admits requests per *batch*: a new request waits until the whole batch
//! has finished. Continuous batching (Orca's "iteration-level scheduling") admits them per
//! *step*: a request that arrives joins the waiting queue at once, and the scheduler takes it
//! into the very next step that has budget, seats and blocks for it; a request that samples
//! its last token leaves in that step, and its KV blocks are free for the next one.
//!
//! You write the loop that drives the engine's `Scheduler` over a workload on a simulated
//! clock. The scheduler makes every decision; your loop decides *when things happen*:
//!
//! - **Arrivals.** Before each step, every request whose `arrival_s` is at or before the
//!   clock joins the scheduler (`Sequence::new(SeqId(i), prompt, request_params(r))`, where
//!   `i` is its index in `requests`: ids are request indices, handed out in arrival order).
//!   Not earlier, and not later: not "when the running batch has drained".
//! - **Idle.** With nothing unfinished and requests still to come, the clock jumps to the
//!   next arrival.
//! - **A step.** `schedule`, then `take_swaps` (count `out.preempted` plus the swaps'
//!   `swapped_out` as preemptions). A step that schedules nothing but swaps is a swap-only
//!   step: go on to the next one without advancing the clock. One that schedules nothing
//!   and swaps nothing is a scheduler stuck with requests pending: an `EngineError::Internal`.
//!   Otherwise the clock advances by `cost.step_seconds(&StepShape::of(&out, &scheduler))`;
//!   push the step's number of sequences to `busy_slots_per_step`, and with `trace`, the
//!   step's `(seq_id, start_position, tokens)` per scheduled sequence.
//! - **Tokens.** Each scheduled sequence with `needs_logits` samples one token (any id:
//!   requests ignore EOS; the engine's stand-in is `(seq_id * 7919 + start_position) % 50000`
//!   so that prefix caching never sees two outputs alike; use it, the tests compare traces
//!   with prefix caching on). A request's first sample sets its `first_token_s`, at the end
//!   of that step (the clock after the step's cost).
//! - **Retirement.** `update_from_output` returns the requests that finished this step (their
//!   blocks are already free); each one's `finish_s` is the clock at the end of this step.
//! - **Report.** Check the requests first (`config.check_requests`), build the scheduler
//!   with `config.scheduler()`; fill `RunReport` with `scheme: "continuous"`, the request
//!   and token counts, `preemptions`, `busy_slots_per_step`, `request_times` (in workload
//!   order), then call `summarize(max_num_seqs)`.
//!
//! Test: `cargo test -p stage2 --test continuous_batching`.

#[cfg(not(feature = "reference"))]
use engine::error::Result;
#[cfg(not(feature = "reference"))]
use engine::simulator::metrics::RunReport;
#[cfg(not(feature = "reference"))]
use engine::simulator::simulate::{BatchTrace, SimConfig};
#[cfg(not(feature = "reference"))]
use engine::simulator::step_cost::StepCost;
#[cfg(not(feature = "reference"))]
use engine::simulator::workload::SimRequest;

#[cfg(feature = "mutants")]
pub use crate::mutants::continuous_batching::simulate_continuous;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::simulator::simulate::simulate_continuous;

// HINT: keep an index `next` of the first request that has not arrived yet; requests are
//   sorted by arrival. The loop ends when every request has arrived and none is unfinished.
// HINT: `times[i].first_token_s.get_or_insert(clock)` sets a value once and never again.
// HINT: read `Scheduler::update_from_output` in the book's "A request's journey": which
//   requests does it return, and what has it done with their blocks?

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// Runs `requests` (sorted by arrival) under continuous batching on the engine's scheduler,
/// the clock advanced by `cost`. With `trace`, records every scheduled batch.
pub fn simulate_continuous(
    config: &SimConfig,
    requests: &[SimRequest],
    cost: &dyn StepCost,
    trace: Option<&mut BatchTrace>,
) -> Result<RunReport> {
    todo!(
        "stage2: simulate_continuous in stages/stage2/src/continuous_batching.rs — arrivals \
         join before the next step, finished requests leave in the step they finish"
    )
}
// ANCHOR_END: stub
