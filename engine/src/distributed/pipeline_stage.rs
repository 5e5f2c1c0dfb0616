//! [`StageLink`]: one pipeline stage's connection to its neighbours, and the time it spends
//! waiting on them.
//!
//! The pipeline here is synchronous: one step's batch goes through every stage before the
//! next step starts, so while stage `s` computes, the others wait (stage 0 for the step to
//! end, the later ones for their input). That idle time is the pipeline's bubble, and
//! [`StageTimes`] measures it: a stage's `busy` time is its step minus its waits on the
//! previous stage; the executor, which sees the whole step, charges the rest of the step's wall
//! time to `idle`. Overlapping stages (several micro-batches in flight, the engine step split
//! into submit and complete, as the issue asks) is the follow-up this measurement is for.
//!
//! Between stages travels [`Hidden`]: the last block's output and the residual stream, both
//! `[tokens, hidden]`, sent fused as one message of `2 × tokens × hidden` f32 (delta first),
//! so a step makes one send per stage boundary per TP slice. Sending both (not their sum)
//! keeps the next stage's first op the same fused add + RMSNorm as without a pipeline, so the
//! pipeline computes exactly what one rank does.

use std::time::{Duration, Instant};

use super::communicator::{CommError, Communicator};
use super::cpu_communicator::CpuCommunicator;
use crate::model_executor::llama::Hidden;

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
}

impl StageLink {
    /// A link over `comm`, this rank's PP group (rank = stage).
    pub fn new(comm: CpuCommunicator) -> Self {
        StageLink {
            comm,
            waited: Duration::ZERO,
        }
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
        self.comm.send(&buf, self.stage() + 1)
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
