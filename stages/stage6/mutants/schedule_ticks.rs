//! Plausible wrong tick tables:
//!
//! - `schedule_ticks_serialized`: one micro-batch in the pipeline at a time (micro-batch `m`
//!   enters stage 0 only when `m − 1` has left the last stage): `M · S` ticks, one item each.
//! - `schedule_ticks_drain_short`: `M + S − 2` ticks, so the last drain tick (the last stage's
//!   last micro-batch) is lost.

use super::active;
use crate::WorkItem;

pub fn schedule_ticks(num_stages: usize, num_micro_batches: usize) -> Vec<Vec<WorkItem>> {
    if active("schedule_ticks_serialized") {
        (0..num_stages * num_micro_batches)
            .map(|t| {
                vec![WorkItem {
                    stage: t % num_stages,
                    micro_batch: t / num_stages,
                }]
            })
            .collect()
    } else if active("schedule_ticks_drain_short") {
        let mut ticks =
            engine::distributed::pipeline_schedule::schedule_ticks(num_stages, num_micro_batches);
        ticks.pop();
        ticks
    } else {
        engine::distributed::pipeline_schedule::schedule_ticks(num_stages, num_micro_batches)
    }
}
