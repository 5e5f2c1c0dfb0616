//! The micro-batch pipeline schedule: which stage works on which micro-batch when, and how
//! much of the pipeline sits idle (its *bubble*).
//!
//! A step's batch of sequences is split into `M` micro-batches ([`split_micro_batches`]).
//! Inference runs forward only, so every stage runs the micro-batches in order `0..M`, and
//! stage `s` may start micro-batch `m` once it is free *and* stage `s − 1` has sent `m` on.
//! With each stage-forward of a micro-batch costing one time unit, stage `s` runs `m` at
//! tick `s + m` ([`schedule_ticks`]): `S − 1` ticks of *fill* (the later stages have nothing
//! yet), a steady state where every stage is busy, and `S − 1` ticks of *drain* (the earlier
//! stages are done). The step takes `M + S − 1` ticks, each stage is busy `M` of them, so
//!
//! ```text
//! efficiency = M / (M + S − 1)        bubble = 1 − efficiency = (S − 1) / (M + S − 1)
//! ```
//!
//! One batch (M = 1) through S stages is busy `1/S` of the time; more micro-batches amortize
//! the fill and drain. [`start_times`] computes when each item starts for any costs;
//! [`bubble`] measures the idle share of an executed schedule. The executor records what it
//! ran as an [`ExecutedSchedule`]: per item its wall-clock start and end and its start and end
//! in ticks, counted by a [`LogicalClock`] that travels with the activations (so the ticks
//! show the order the stages really ran in, whatever the machine's cores did).

use std::ops::Range;
use std::time::Duration;

/// One unit of pipeline work: stage `stage` runs its layers on micro-batch `micro_batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkItem {
    pub stage: usize,
    pub micro_batch: usize,
}

/// A [`WorkItem`] placed in time: it runs in `start..end` (ticks or any unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedItem {
    pub stage: usize,
    pub micro_batch: usize,
    pub start: u64,
    pub end: u64,
}

/// A schedule's idle time, exactly: `idle` of `total` stage-time units (`total` is the number
/// of stages times the schedule's span).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bubble {
    pub idle: u64,
    pub total: u64,
}

impl Bubble {
    /// `idle / total` (0 for an empty schedule).
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.idle as f64 / self.total as f64
        }
    }

    /// `1 − fraction`: the share of stage time spent computing.
    pub fn efficiency(&self) -> f64 {
        1.0 - self.fraction()
    }
}

/// Why [`start_times`] cannot place a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("stage {stage}'s order {order:?} is not a permutation of the micro-batches 0..{num_micro_batches}")]
    NotAPermutation {
        stage: usize,
        order: Vec<usize>,
        num_micro_batches: usize,
    },
    #[error("{orders} stage orders but {costs} rows of costs (one row per stage, one cost per micro-batch)")]
    ShapeMismatch { orders: usize, costs: usize },
}

/// The forward pipeline efficiency `M / (M + S − 1)` (the share of stage time spent computing
/// when every item costs the same); 0 when there are no micro-batches.
pub fn pipeline_efficiency(num_micro_batches: usize, num_stages: usize) -> f64 {
    if num_micro_batches == 0 || num_stages == 0 {
        return 0.0;
    }
    num_micro_batches as f64 / (num_micro_batches + num_stages - 1) as f64
}

/// Splits `num_seqs` sequences into `min(num_micro_batches, num_seqs)` contiguous micro-batches
/// whose sizes differ by one at most (the larger ones first): every stage then works on
/// about the same amount per item, and no micro-batch is empty.
pub fn split_micro_batches(num_seqs: usize, num_micro_batches: usize) -> Vec<Range<usize>> {
    let m = num_micro_batches.min(num_seqs);
    if m == 0 {
        return Vec::new();
    }
    let (base, extra) = (num_seqs / m, num_seqs % m);
    let mut start = 0;
    (0..m)
        .map(|i| {
            let len = base + usize::from(i < extra);
            start += len;
            start - len..start
        })
        .collect()
}

// ANCHOR: schedule_ticks
/// The forward schedule on a unit clock: `ticks[t]` lists the items that run at tick `t`,
/// by stage. Stage `s` runs micro-batch `t − s` at tick `t` when `0 ≤ t − s < M`: fill while
/// `t < S − 1`, drain once `t ≥ M`; `M + S − 1` ticks in all (none without work).
pub fn schedule_ticks(num_stages: usize, num_micro_batches: usize) -> Vec<Vec<WorkItem>> {
    if num_stages == 0 || num_micro_batches == 0 {
        return Vec::new();
    }
    (0..num_micro_batches + num_stages - 1)
        .map(|t| {
            // Stage s holds micro-batch t − s: the stages from t − (M − 1) up to t.
            let first = (t + 1).saturating_sub(num_micro_batches);
            (first..=t.min(num_stages - 1))
                .map(|stage| WorkItem {
                    stage,
                    micro_batch: t - stage,
                })
                .collect()
        })
        .collect()
}
// ANCHOR_END: schedule_ticks

// ANCHOR: start_times
/// When each item starts: `start[s][m]`, given the order each stage runs its micro-batches in
/// (`stage_orders[s]`, a permutation of `0..M`) and what each item costs (`cost[s][m]`).
/// A stage runs one item at a time, and stage `s > 0` needs stage `s − 1` to have finished
/// micro-batch `m`: it starts `m` at `max(its own free time, end[s − 1][m])`. Stage 0's
/// inputs are all there at time 0.
pub fn start_times(
    stage_orders: &[Vec<usize>], // [S][M]: micro-batch ids in the order each stage runs them
    cost: &[Vec<u64>],           // [S][M]: cost of stage s on micro-batch m
) -> Result<Vec<Vec<u64>>, ScheduleError> {
    if stage_orders.len() != cost.len() {
        return Err(ScheduleError::ShapeMismatch {
            orders: stage_orders.len(),
            costs: cost.len(),
        });
    }
    let m = stage_orders.first().map_or(0, Vec::len);
    let mut start = vec![vec![0; m]; stage_orders.len()];
    let mut prev_end: Option<Vec<u64>> = None; // end[s − 1][·]
    for (stage, order) in stage_orders.iter().enumerate() {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        if sorted != (0..m).collect::<Vec<_>>() || cost[stage].len() != m {
            return Err(ScheduleError::NotAPermutation {
                stage,
                order: order.clone(),
                num_micro_batches: m,
            });
        }
        let mut end = vec![0; m];
        let mut free = 0; // when this stage finishes its previous item
        for &mb in order {
            let arrival = prev_end.as_ref().map_or(0, |e| e[mb]);
            start[stage][mb] = free.max(arrival);
            end[mb] = start[stage][mb] + cost[stage][mb];
            free = end[mb];
        }
        prev_end = Some(end);
    }
    Ok(start)
}
// ANCHOR_END: start_times

// ANCHOR: bubble
/// The idle share of an executed schedule of `num_stages` stages: every stage is on the clock
/// from the first item's start to the last item's end; what it did not spend on its own items
/// in that span (waiting to fill, waiting to drain, waiting in between) is bubble.
pub fn bubble(items: &[TimedItem], num_stages: usize) -> Bubble {
    let (Some(first), Some(last)) = (
        items.iter().map(|i| i.start).min(),
        items.iter().map(|i| i.end).max(),
    ) else {
        return Bubble::default();
    };
    let total = num_stages as u64 * (last - first);
    let busy: u64 = items.iter().map(|i| i.end - i.start).sum();
    Bubble {
        idle: total.saturating_sub(busy), // busy > total only if a stage ran two items at once
        total,
    }
}
// ANCHOR_END: bubble

/// A stage's clock in ticks (a Lamport clock): an item starts at `max(free, arrival)` and
/// ends one tick later; the end travels with the activations to the next stage, whose
/// `arrival` it becomes. Reset at the start of every step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogicalClock {
    /// When this stage finished its previous item.
    pub free: u64,
    /// When the current item's input arrived (0 on the first stage: the step hands it every
    /// micro-batch at once).
    pub arrival: u64,
}

impl LogicalClock {
    /// The current item's `(start, end)`.
    pub fn current(&self) -> (u64, u64) {
        let start = self.free.max(self.arrival);
        (start, start + 1)
    }

    /// Ends the current item: returns its `(start, end)`; the next item's input is awaited
    /// anew (it arrives at 0 unless [`LogicalClock::arrival`] is set).
    pub fn finish(&mut self) -> (u64, u64) {
        let (start, end) = self.current();
        self.free = end;
        self.arrival = 0;
        (start, end)
    }
}

/// One item of an [`ExecutedSchedule`], as a stage (its first TP rank) ran it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutedItem {
    pub stage: usize,
    pub micro_batch: usize,
    /// Sequences in the micro-batch.
    pub num_seqs: usize,
    /// Start and end in ticks ([`LogicalClock`]).
    pub tick_start: u64,
    pub tick_end: u64,
    /// Wall-clock start (once its input had arrived) and end, from the step's start.
    pub wall_start: Duration,
    pub wall_end: Duration,
    /// Time blocked receiving this item's input from the previous stage.
    pub recv_wait: Duration,
}

/// What the pipeline ran in one step: every stage's items, in the order each ran them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecutedSchedule {
    /// The executor's step counter (from 0).
    pub step: u64,
    pub num_stages: usize,
    pub num_micro_batches: usize,
    /// The step's wall time, seen from the executor.
    pub wall: Duration,
    /// By stage, then in the order the stage ran them.
    pub items: Vec<ExecutedItem>,
}

impl ExecutedSchedule {
    /// The items in ticks.
    pub fn timed_items(&self) -> Vec<TimedItem> {
        let timed = |i: &ExecutedItem| TimedItem {
            stage: i.stage,
            micro_batch: i.micro_batch,
            start: i.tick_start,
            end: i.tick_end,
        };
        self.items.iter().map(timed).collect()
    }

    /// The bubble in ticks, exactly.
    pub fn bubble(&self) -> Bubble {
        bubble(&self.timed_items(), self.num_stages)
    }

    /// The micro-batches stage `stage` ran, in order.
    pub fn stage_order(&self, stage: usize) -> Vec<usize> {
        let items = self.items.iter().filter(|i| i.stage == stage);
        items.map(|i| i.micro_batch).collect()
    }

    /// Wall-clock time stage `stage` spent on its items in this step.
    pub fn busy(&self, stage: usize) -> Duration {
        let items = self.items.iter().filter(|i| i.stage == stage);
        items.map(|i| i.wall_end.saturating_sub(i.wall_start)).sum()
    }

    /// The rest of the step's wall time: waiting for input, or done while others worked.
    pub fn idle(&self, stage: usize) -> Duration {
        self.wall.saturating_sub(self.busy(stage))
    }

    /// Whether two stages ever ran in the same tick (no overlap = micro-batches serialized).
    pub fn overlaps(&self) -> bool {
        let items = self.timed_items();
        items.iter().any(|a| {
            items
                .iter()
                .any(|b| a.stage < b.stage && a.start < b.end && b.start < a.end)
        })
    }
}

#[cfg(test)]
#[path = "pipeline_schedule/tests.rs"]
mod tests;
