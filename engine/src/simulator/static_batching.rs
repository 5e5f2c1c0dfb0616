//! The baseline continuous batching replaced: static (request-level) batching.
//!
//! A batch is formed from the requests that have arrived (up to `max_num_seqs`, and as many
//! as the KV cache holds at their full length, since nothing is freed until the batch ends),
//! its prompts are prefilled in one step, then it decodes one token per request per step
//! until its longest request is done. Nothing joins a running batch. A request that finished
//! early keeps its slot: as in a padded batch (`model.generate`), it is computed every step
//! and its tokens thrown away, so it costs time and does no useful work. Its own latency
//! ends at its last real token (a server that streams could return it then), which flatters
//! static batching, not continuous.
//!
//! Step `k` of a batch (counting the prefill as step 1) samples every request's `k`-th
//! token, so a request with `n` output tokens is busy in steps `1..=n`.

use super::metrics::{RequestTimes, RunReport};
use super::simulate::SimConfig;
use super::step_cost::{StepCost, StepShape};
use super::workload::SimRequest;
use crate::error::Result;

// ANCHOR: static_batching
/// Runs `requests` (sorted by arrival) in static batches on the same cost model.
pub fn simulate_static(
    config: &SimConfig,
    requests: &[SimRequest],
    cost: &dyn StepCost,
) -> Result<RunReport> {
    let _span = tracing::info_span!("simulate_static", requests = requests.len()).entered();
    config.check_requests(requests)?;
    let max_seqs = config.engine.scheduler.max_num_seqs;
    let block_size = config.engine.cache.block_size;
    let blocks = |r: &SimRequest| (r.prompt.len() + r.output_len).div_ceil(block_size);
    let mut report = RunReport {
        scheme: "static".into(),
        requests: requests.len(),
        prompt_tokens: requests.iter().map(|r| r.prompt.len()).sum(),
        output_tokens: requests.iter().map(|r| r.output_len).sum(),
        ..Default::default()
    };
    let mut times: Vec<RequestTimes> = requests
        .iter()
        .map(|r| RequestTimes {
            arrival_s: r.arrival_s,
            ..Default::default()
        })
        .collect();
    let (mut clock, mut next) = (0.0f64, 0usize);
    while next < requests.len() {
        clock = clock.max(requests[next].arrival_s);
        // Form the batch: arrived requests, in order, while slots and blocks last (the first
        // always fits: check_requests made sure it fits the cache alone).
        let start = next;
        let mut used_blocks = 0;
        while next < requests.len()
            && next - start < max_seqs
            && requests[next].arrival_s <= clock
            && used_blocks + blocks(&requests[next])
                <= config.num_kv_blocks.max(blocks(&requests[start]))
        {
            used_blocks += blocks(&requests[next]);
            next += 1;
        }
        let batch = &requests[start..next];
        let longest = batch.iter().map(|r| r.output_len).max().unwrap_or(0);
        for step in 1..=longest {
            // Step 1 prefills every prompt; step k > 1 decodes every slot, padding included.
            let mut shape = StepShape::default();
            for r in batch {
                let p = r.prompt.len();
                let (start_pos, n) = if step == 1 { (0, p) } else { (p + step - 2, 1) };
                shape.num_seqs += 1;
                shape.num_tokens += n;
                if step == 1 {
                    shape.num_prefill_tokens += n;
                } else {
                    shape.num_decode_seqs += 1;
                }
                shape.num_sampled += 1;
                shape.attention_pairs += n * start_pos + n * (n + 1) / 2;
                shape.kv_tokens += start_pos + n;
            }
            clock += cost.step_seconds(&shape);
            let busy = batch.iter().filter(|r| r.output_len >= step).count();
            report.busy_slots_per_step.push(busy);
            for (i, r) in batch.iter().enumerate() {
                let t = &mut times[start + i];
                if step == 1 {
                    t.first_token_s = Some(clock);
                }
                if step == r.output_len {
                    t.finish_s = Some(clock);
                }
            }
        }
    }
    report.request_times = times;
    report.summarize(max_seqs);
    Ok(report)
}
// ANCHOR_END: static_batching
