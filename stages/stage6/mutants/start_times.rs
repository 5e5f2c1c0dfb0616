//! Plausible wrong start times:
//!
//! - `start_times_serialized`: one micro-batch in flight: stage 0 starts the next micro-batch
//!   only when the last stage has finished the previous one.
//! - `start_times_arrival_one_after_start`: the input of stage `s` counted as arriving one unit
//!   after stage `s − 1` *started* the micro-batch (right when every item costs 1, early
//!   whenever an item costs more).

use super::active;
use crate::ScheduleError;

pub fn start_times(
    stage_orders: &[Vec<usize>], // [S][M]
    cost: &[Vec<u64>],           // [S][M]
) -> Result<Vec<Vec<u64>>, ScheduleError> {
    // Validate as the engine does (the mutants differ in timing only).
    let mut start = engine::distributed::pipeline_schedule::start_times(stage_orders, cost)?;
    let s_count = stage_orders.len();
    if active("start_times_serialized") {
        let mut free = vec![0; s_count];
        let mut t = 0;
        for &mb in stage_orders.first().map_or(&[][..], Vec::as_slice) {
            for s in 0..s_count {
                start[s][mb] = t.max(free[s]);
                t = start[s][mb] + cost[s][mb];
                free[s] = t;
            }
        }
    } else if active("start_times_arrival_one_after_start") {
        for s in 0..s_count {
            let mut free = 0;
            for &mb in &stage_orders[s] {
                let arrival = if s == 0 { 0 } else { start[s - 1][mb] + 1 };
                start[s][mb] = free.max(arrival);
                free = start[s][mb] + cost[s][mb];
            }
        }
    }
    Ok(start)
}
