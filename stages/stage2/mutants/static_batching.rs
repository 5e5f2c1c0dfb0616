//! Wrong static batchers: the engine's `simulate_static`, rewritten with switches.

use engine::error::Result;
use engine::simulator::metrics::{RequestTimes, RunReport};
use engine::simulator::simulate::SimConfig;
use engine::simulator::static_batching as reference;
use engine::simulator::step_cost::{StepCost, StepShape};
use engine::simulator::workload::SimRequest;

use super::{active, any_active};

const MUTANTS: [&str; 5] = [
    "static_ignores_block_limit",
    "static_counts_padding_as_busy",
    "static_batches_unarrived_requests",
    "static_extra_step_per_batch",
    "static_finish_at_batch_end",
];

/// The engine's static batcher, or a copy of it with one rule broken.
pub fn simulate_static(
    config: &SimConfig,
    requests: &[SimRequest],
    cost: &dyn StepCost,
) -> Result<RunReport> {
    if !any_active(&MUTANTS) {
        return reference::simulate_static(config, requests, cost);
    }
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
    let mut times: Vec<RequestTimes> = (requests.iter())
        .map(|r| RequestTimes {
            arrival_s: r.arrival_s,
            ..Default::default()
        })
        .collect();
    let (mut clock, mut next) = (0.0f64, 0usize);
    while next < requests.len() {
        clock = clock.max(requests[next].arrival_s);
        let start = next;
        let mut used = 0;
        while next < requests.len()
            && next - start < max_seqs
            && (requests[next].arrival_s <= clock || active("static_batches_unarrived_requests"))
            && (used + blocks(&requests[next])
                <= config.num_kv_blocks.max(blocks(&requests[start]))
                || active("static_ignores_block_limit"))
        {
            used += blocks(&requests[next]);
            next += 1;
        }
        let batch = &requests[start..next];
        let longest = batch.iter().map(|r| r.output_len).max().unwrap_or(0);
        let steps = longest + usize::from(active("static_extra_step_per_batch"));
        for step in 1..=steps {
            let mut shape = StepShape::default();
            for r in batch {
                let p = r.prompt.len();
                let (s, n) = if step == 1 { (0, p) } else { (p + step - 2, 1) };
                shape.num_seqs += 1;
                shape.num_tokens += n;
                if step == 1 {
                    shape.num_prefill_tokens += n;
                }
                if step > 1 {
                    shape.num_decode_seqs += 1;
                }
                shape.num_sampled += 1;
                shape.attention_pairs += n * s + n * (n + 1) / 2;
                shape.kv_tokens += s + n;
            }
            clock += cost.step_seconds(&shape);
            let busy = if active("static_counts_padding_as_busy") {
                batch.len()
            } else {
                batch.iter().filter(|r| r.output_len >= step).count()
            };
            report.busy_slots_per_step.push(busy);
            for (i, r) in batch.iter().enumerate() {
                let t = &mut times[start + i];
                if step == 1 {
                    t.first_token_s = Some(clock);
                }
                let last = if active("static_finish_at_batch_end") {
                    steps
                } else {
                    r.output_len
                };
                if step == last {
                    t.finish_s = Some(clock);
                }
            }
        }
    }
    report.request_times = times;
    report.summarize(max_seqs);
    Ok(report)
}
