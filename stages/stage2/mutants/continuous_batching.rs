//! Wrong continuous-batching loops: the engine's `simulate_continuous`, rewritten with
//! switches.

use engine::error::{EngineError, Result};
use engine::sequence::{SeqId, Sequence};
use engine::simulator::metrics::{RequestTimes, RunReport};
use engine::simulator::simulate::{self as reference, request_params, BatchTrace, SimConfig};
use engine::simulator::step_cost::{StepCost, StepShape};
use engine::simulator::workload::SimRequest;

use super::{active, any_active};

const MUTANTS: [&str; 5] = [
    "continuous_joins_only_when_idle",
    "continuous_ignores_arrival_times",
    "continuous_first_token_before_step_cost",
    "continuous_first_token_overwritten",
    "continuous_counts_preemptions_by_recompute_only",
];

/// The engine's loop, or a copy of it with one rule broken.
pub fn simulate_continuous(
    config: &SimConfig,
    requests: &[SimRequest],
    cost: &dyn StepCost,
    mut trace: Option<&mut BatchTrace>,
) -> Result<RunReport> {
    if !any_active(&MUTANTS) {
        return reference::simulate_continuous(config, requests, cost, trace);
    }
    config.check_requests(requests)?;
    let mut scheduler = config.scheduler()?;
    let mut times: Vec<RequestTimes> = (requests.iter())
        .map(|r| RequestTimes {
            arrival_s: r.arrival_s,
            ..Default::default()
        })
        .collect();
    let mut report = RunReport {
        scheme: "continuous".into(),
        requests: requests.len(),
        prompt_tokens: requests.iter().map(|r| r.prompt.len()).sum(),
        output_tokens: requests.iter().map(|r| r.output_len).sum(),
        ..Default::default()
    };
    let (mut clock, mut next) = (0.0f64, 0usize);
    loop {
        // The mutant that waits for the batch to drain admits only into an idle scheduler.
        let may_join = !active("continuous_joins_only_when_idle") || !scheduler.has_unfinished();
        while may_join
            && next < requests.len()
            && (requests[next].arrival_s <= clock || active("continuous_ignores_arrival_times"))
        {
            let r = &requests[next];
            scheduler.add_sequence(Sequence::new(
                SeqId(next as u64),
                r.prompt.clone(),
                request_params(r),
            ));
            next += 1;
        }
        if !scheduler.has_unfinished() {
            if next == requests.len() {
                break;
            }
            clock = clock.max(requests[next].arrival_s);
            continue;
        }
        let out = scheduler.schedule();
        let swaps = scheduler.take_swaps();
        report.preemptions += out.preempted.len();
        if !active("continuous_counts_preemptions_by_recompute_only") {
            report.preemptions += swaps.swapped_out.len();
        }
        if out.is_empty() {
            if swaps.is_empty() {
                return Err(EngineError::Internal("no progress".into()));
            }
            continue;
        }
        let shape = StepShape::of(&out, &scheduler);
        let before = clock;
        clock += cost.step_seconds(&shape);
        report.busy_slots_per_step.push(shape.num_seqs);
        if let Some(trace) = trace.as_deref_mut() {
            trace.push(
                (out.scheduled.iter())
                    .map(|s| (s.seq_id, s.start_position, s.token_ids.len()))
                    .collect(),
            );
        }
        let first_token_at = if active("continuous_first_token_before_step_cost") {
            before
        } else {
            clock
        };
        let sampled: Vec<u32> = (out.scheduled.iter())
            .filter(|s| s.needs_logits)
            .map(|s| {
                let t = &mut times[s.seq_id.0 as usize];
                if active("continuous_first_token_overwritten") {
                    t.first_token_s = Some(first_token_at);
                } else {
                    t.first_token_s.get_or_insert(first_token_at);
                }
                (s.seq_id.0.wrapping_mul(7919) + s.start_position as u64) as u32 % 50_000
            })
            .collect();
        for seq in scheduler.update_from_output(&out, &sampled) {
            times[seq.seq_id.0 as usize].finish_s = Some(clock);
        }
    }
    report.request_times = times;
    report.summarize(config.engine.scheduler.max_num_seqs);
    Ok(report)
}
