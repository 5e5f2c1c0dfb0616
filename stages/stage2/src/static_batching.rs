//! Exercise 3: static batching, the baseline continuous batching is measured against.
//!
//! A static batcher (`model.generate` on a padded batch) forms a batch, runs it to the end,
//! and only then looks at the queue again. You write it on the same simulated clock and
//! cost model as exercise 2, so the two can be compared on one workload. The contract:
//!
//! - **Forming a batch.** The clock first moves to the next request's arrival if it is
//!   later. The batch takes requests in order, from that one, while they have arrived (at or
//!   before the clock), fewer than `max_num_seqs` are in it, and the KV cache holds them all
//!   *at their full length*: nothing is freed until the batch ends, so the batch's blocks,
//!   `Σ ⌈(prompt + output) / block_size⌉`, must not exceed `num_kv_blocks` (the batch's first
//!   request always goes in: `check_requests` made sure it fits the cache alone).
//! - **Running it.** Step 1 prefills every prompt and samples every request's first token;
//!   step `k > 1` decodes one token for every slot and samples every request's `k`-th. The
//!   batch runs `max(output_len)` steps. A request that has finished keeps its slot (padding):
//!   it is computed, and costs time, until the batch ends.
//! - **The step's shape**, for the cost model: every slot, padding included, is a sequence;
//!   step 1 computes each prompt (`p` tokens from position 0: `p` prefill tokens), step `k`
//!   one token at position `p + k - 2` per slot (a decode). Every slot samples.
//!   `attention_pairs += n·s + n(n+1)/2` and `kv_tokens += s + n` for `n` tokens from
//!   position `s`.
//! - **Times.** A request's `first_token_s` is the end of step 1, its `finish_s` the end of
//!   step `output_len` (the moment its last real token exists, not the batch's end).
//! - **Utilization.** `busy_slots_per_step` counts the slots doing *useful* work in each
//!   step: requests with `output_len >= k`. Padding is not useful.
//! - **Report.** As in exercise 2, with `scheme: "static"`; `preemptions` stays 0.
//!
//! Test: `cargo test -p stage2 --test static_batching`.

#[cfg(not(feature = "reference"))]
use engine::error::Result;
#[cfg(not(feature = "reference"))]
use engine::simulator::metrics::RunReport;
#[cfg(not(feature = "reference"))]
use engine::simulator::simulate::SimConfig;
#[cfg(not(feature = "reference"))]
use engine::simulator::step_cost::StepCost;
#[cfg(not(feature = "reference"))]
use engine::simulator::workload::SimRequest;

#[cfg(feature = "mutants")]
pub use crate::mutants::static_batching::simulate_static;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::simulator::static_batching::simulate_static;

// HINT: three nested loops: batches, then steps of a batch, then the batch's requests.
// HINT: the source's worked example (outputs of 10, 10, 15 and 20 tokens in a batch of 4)
//   is a test: 20 steps, busy slots 4 for ten steps, then 2, then 1. Work it by hand.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// Runs `requests` (sorted by arrival) in static batches on the same cost model.
pub fn simulate_static(
    config: &SimConfig,
    requests: &[SimRequest],
    cost: &dyn StepCost,
) -> Result<RunReport> {
    todo!(
        "stage2: simulate_static in stages/stage2/src/static_batching.rs — fixed batches of \
         arrived requests that fit the cache, each run until its longest request ends"
    )
}
// ANCHOR_END: stub
