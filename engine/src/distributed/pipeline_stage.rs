//! [`StageLink`]: one pipeline stage's connection to its neighbours, and the time it spends
//! waiting on them; [`run_micro_batches`]: a stage's share of one step, micro-batch by
//! micro-batch.
//!
//! A step's sequences are split into micro-batches
//! ([`super::pipeline_schedule::split_micro_batches`]). Every stage runs them in order, and
//! sends each one on as soon as it is done, so while stage `s + 1` works on micro-batch
//! `m − 1`, stage `s` already works on `m`: the stages overlap, and only the fill and the drain
//! of the step are bubble ([`super::pipeline_schedule`] has the arithmetic). The engine still
//! waits for the whole step before scheduling the next one (no step is in flight across
//! steps). [`StageTimes`] adds up each rank's busy time and its waits on the previous stage;
//! the executor, which sees the whole step, charges the rest of the step's wall time to
//! `idle`. Each micro-batch a stage runs is recorded as an
//! [`ExecutedItem`], in wall-clock time and in ticks
//! of a [`LogicalClock`] whose value travels with the activations.
//!
//! Between stages travels [`Hidden`]: the last block's output and the residual stream, both
//! `[tokens, hidden]`, sent fused as one message of `2 × tokens × hidden` f32 (delta first),
//! so a micro-batch makes one send per stage boundary per TP slice. Sending both (not their
//! sum) keeps the next stage's first op the same fused add + RMSNorm as without a pipeline, so
//! the pipeline computes exactly what one rank does (and the engine's kernels are batch
//! invariant, so splitting the batch changes no bit either).

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::communicator::{CommError, CommOp, Communicator};
use super::cpu_communicator::CpuCommunicator;
use super::pipeline_schedule::{split_micro_batches, ExecutedItem, LogicalClock};
use crate::backend::{Backend, Result};
use crate::core::scheduler_output::SchedulerOutput;
use crate::model_executor::llama::Hidden;
use crate::outputs::ModelRunnerOutput;
use crate::worker::model_runner::ModelRunner;

/// The name of the `tracing` span each micro-batch opens on each stage, with fields `step`,
/// `stage`, `micro_batch` and `seqs`.
pub const MICRO_BATCH_SPAN: &str = "pp_micro_batch";

/// Busy and waiting time of one rank's steps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Steps counted.
    pub steps: u64,
    /// Time spent computing (its layers, its TP collectives, sends, sampling).
    pub busy: Duration,
    /// Time blocked receiving the previous stage's state (zero on the first stage).
    pub recv_wait: Duration,
    /// The rest of the steps' wall time, seen from the executor: waits on the previous stage
    /// plus time after this stage finished while later stages ran.
    pub idle: Duration,
}

impl StageTimes {
    /// What was added since `earlier` (a copy taken from the same rank before).
    pub fn since(&self, earlier: &StageTimes) -> StageTimes {
        StageTimes {
            steps: self.steps.saturating_sub(earlier.steps),
            busy: self.busy.saturating_sub(earlier.busy),
            recv_wait: self.recv_wait.saturating_sub(earlier.recv_wait),
            idle: self.idle.saturating_sub(earlier.idle),
        }
    }

    /// `idle / (busy + idle)`: the share of the steps this stage sat in the bubble.
    pub fn idle_fraction(&self) -> f64 {
        let total = (self.busy + self.idle).as_secs_f64();
        if total == 0.0 {
            0.0
        } else {
            self.idle.as_secs_f64() / total
        }
    }
}

/// One rank's stage: its PP group communicator and its place in it.
#[derive(Debug)]
pub struct StageLink {
    comm: CpuCommunicator,
    /// Time the current step has waited in [`StageLink::recv_hidden`].
    waited: Duration,
    /// This stage's clock in ticks; the current item's end is sent with its activations.
    clock: LogicalClock,
    /// Ticks from the previous stage and to the next, one per micro-batch, sent just before
    /// the activations they go with (`None` on the first and the last stage).
    ticks_in: Option<Receiver<u64>>,
    ticks_out: Option<Sender<u64>>,
}

impl StageLink {
    /// A link over `comm`, this rank's PP group (rank = stage).
    pub fn new(comm: CpuCommunicator) -> Self {
        StageLink {
            comm,
            waited: Duration::ZERO,
            clock: LogicalClock::default(),
            ticks_in: None,
            ticks_out: None,
        }
    }

    /// The same link with the channels its ticks travel on: from the previous stage (`None`
    /// on the first) and to the next (`None` on the last).
    pub fn with_ticks(
        mut self,
        from_prev: Option<Receiver<u64>>,
        to_next: Option<Sender<u64>>,
    ) -> Self {
        self.ticks_in = from_prev;
        self.ticks_out = to_next;
        self
    }

    /// This stage's index.
    pub fn stage(&self) -> usize {
        self.comm.rank()
    }

    /// Receives the previous stage's state for `tokens × hidden` activations, as host vectors
    /// `(delta, residual)`; the wait counts toward [`StageLink::take_waited`].
    pub fn recv_hidden(
        &mut self,
        tokens: usize,
        hidden: usize,
    ) -> Result<Hidden<Vec<f32>>, CommError> {
        let n = tokens * hidden;
        let mut buf = vec![0.0; 2 * n];
        let _span = tracing::trace_span!("pp_recv", stage = self.stage(), tokens).entered();
        let start = Instant::now();
        let result = self.comm.recv(&mut buf, self.stage() - 1);
        self.waited += start.elapsed();
        result?;
        if let Some(ticks) = &self.ticks_in {
            // Sent before the activations: in one process it is here once they are; between
            // processes it travels on its own socket and may trail them a little.
            let (rank, peer, timeout) = (self.stage(), self.stage() - 1, self.comm.timeout());
            self.clock.arrival = ticks.recv_timeout(timeout).map_err(|e| match e {
                RecvTimeoutError::Timeout => CommError::Timeout {
                    op: CommOp::Recv,
                    rank,
                    peer,
                    timeout,
                },
                RecvTimeoutError::Disconnected => CommError::PeerGone {
                    op: CommOp::Recv,
                    rank,
                    peer,
                },
            })?;
        }
        let residual = buf.split_off(n);
        Ok(Hidden {
            delta: Some(buf),
            residual,
        })
    }

    /// Sends this stage's state to the next, fused (delta, then residual).
    pub fn send_hidden(&mut self, delta: &[f32], residual: &[f32]) -> Result<(), CommError> {
        let _span = tracing::trace_span!("pp_send", stage = self.stage()).entered();
        let mut buf = Vec::with_capacity(delta.len() + residual.len());
        buf.extend_from_slice(delta);
        buf.extend_from_slice(residual);
        if let Some(ticks) = &self.ticks_out {
            // The next stage may start this micro-batch once this item ends.
            let _ = ticks.send(self.clock.current().1);
        }
        self.comm.send(&buf, self.stage() + 1)
    }

    /// Ends the current micro-batch on this stage's clock: its `(start, end)` in ticks.
    pub fn finish_item(&mut self) -> (u64, u64) {
        self.clock.finish()
    }

    /// Starts a step's clock at tick 0.
    pub fn reset_clock(&mut self) {
        self.clock = LogicalClock::default();
    }

    /// The time waited on the previous stage since the last call.
    pub fn take_waited(&mut self) -> Duration {
        std::mem::take(&mut self.waited)
    }

    /// The PP group communicator's counters (its sends and receives).
    pub fn stats(&self) -> &crate::distributed::CommStats {
        self.comm.stats()
    }
}

/// Runs this rank's stage of one step, `num_micro_batches` micro-batches of `out`'s sequences
/// one after the other ([`ModelRunner::execute_stage`] each: receive, run the stage's layers,
/// send on; the last stage samples). Returns the step's output (the last stage's tokens and
/// logits, in batch order) and what ran, timed from `step_start`.
pub fn run_micro_batches<B: Backend>(
    runner: &mut ModelRunner<B>,
    link: &mut StageLink,
    out: &SchedulerOutput,
    num_micro_batches: usize,
    step: u64,
    step_start: Instant,
) -> Result<(ModelRunnerOutput, Vec<ExecutedItem>)> {
    link.reset_clock();
    let stage = link.stage();
    let ranges = split_micro_batches(out.scheduled.len(), num_micro_batches);
    let mut output = ModelRunnerOutput::default();
    let mut items = Vec::with_capacity(ranges.len());
    for (micro_batch, range) in ranges.into_iter().enumerate() {
        let _span = tracing::debug_span!(
            MICRO_BATCH_SPAN,
            step,
            stage,
            micro_batch,
            seqs = range.len()
        )
        .entered();
        // Every stage cuts the same micro-batches: the same sequences meet at each boundary.
        let part = SchedulerOutput {
            scheduled: out.scheduled[range.clone()].to_vec(),
            preempted: Vec::new(),
        };
        let (begin, waited_before) = (Instant::now(), link.waited);
        let o = runner.execute_stage(&part, link)?;
        let end = Instant::now();
        let recv_wait = link.waited - waited_before;
        let (tick_start, tick_end) = link.finish_item();
        items.push(ExecutedItem {
            stage,
            micro_batch,
            num_seqs: range.len(),
            tick_start,
            tick_end,
            wall_start: (begin + recv_wait).saturating_duration_since(step_start),
            wall_end: end.saturating_duration_since(step_start),
            recv_wait,
        });
        output.sampled_token_ids.extend(o.sampled_token_ids);
        output.logits.extend(o.logits);
    }
    Ok((output, items))
}
