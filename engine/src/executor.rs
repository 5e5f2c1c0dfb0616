//! The executor runs a scheduled step on the model's worker(s) and returns the sampled tokens
//! (logits only when a request asks). With one worker it is the model runner itself; tensor and
//! pipeline parallelism add executors that drive several workers behind the same trait.

use crate::backend::{Backend, DeviceTime};
use crate::config::ModelConfig;
use crate::core::scheduler_output::SchedulerOutput;
use crate::core::swap_space::SwapOps;
use crate::distributed::{CommStats, StageTimes};
use crate::error::Result;
use crate::outputs::ModelRunnerOutput;
use crate::sampling_params::SamplingParams;
use crate::sequence::SeqId;
use crate::worker::model_runner::ModelRunner;

/// Runs steps of the model.
pub trait Executor: Send {
    /// Tells the worker(s) how a new request samples, once, at its arrival (vLLM v1 sends this
    /// in the first `SchedulerOutput` that schedules the request). The engine's copy of the
    /// parameters lists in `stop_token_ids` every id that ends the request, the model's EOS
    /// included unless it ignores EOS: what the worker bans until `min_tokens` are out.
    fn add_request(&mut self, id: SeqId, params: &SamplingParams, seed: u64);
    /// Tells the worker(s) that requests finished or were aborted.
    fn remove_requests(&mut self, ids: &[SeqId]);
    /// Runs one step; one sampled token per sequence with `needs_logits`, in batch order.
    /// Fails if the backend does (out of memory, a failed launch).
    fn execute_model(&mut self, scheduler_output: &SchedulerOutput) -> Result<ModelRunnerOutput>;
    /// Async scheduling: starts a step and returns, possibly before it has run; decodes
    /// whose input is a placeholder take the token the previous submitted step sampled.
    /// Only a single worker does this for now (`EngineConfig::validate` refuses the rest).
    fn submit_model(&mut self, _scheduler_output: &SchedulerOutput) -> Result<()> {
        Err(crate::error::EngineError::InvalidArgument(
            "--async-scheduling runs with one worker for now".into(),
        ))
    }
    /// Async scheduling: the oldest submitted step's output, once it has run.
    fn complete_model(&mut self) -> Result<ModelRunnerOutput> {
        Err(crate::error::EngineError::InvalidArgument(
            "--async-scheduling runs with one worker for now".into(),
        ))
    }
    /// Makes the step's swap copies ([`SwapOps`]) before its `execute_model`. An executor
    /// without a swap space fails on any copy.
    fn swap_blocks(&mut self, ops: &SwapOps) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        Err(crate::error::EngineError::InvalidArgument(
            "swap preemption needs one worker; use --preemption-mode recompute".into(),
        ))
    }
    fn model_config(&self) -> &ModelConfig;
    /// The backend's device time so far ([`Backend::device_time`]).
    fn device_time(&self) -> Option<DeviceTime>;
    /// The kernel timeline's records since the last call ([`Backend::take_kernel_timeline`]);
    /// `None` unless one worker runs kernels built with its probe.
    fn take_kernel_timeline(
        &mut self,
    ) -> Result<Option<kernels::kernel_timeline::TimelineRecords>> {
        Ok(None)
    }
    /// Each rank's communicator counters, in rank order; empty for a single worker.
    fn comm_stats(&mut self) -> Vec<CommStats> {
        Vec::new()
    }
    /// Each rank's busy and idle time over the steps so far, in rank order; empty for a single
    /// worker.
    fn stage_times(&self) -> Vec<StageTimes> {
        Vec::new()
    }
    /// What the pipeline ran in the last step (which stage ran which micro-batch when);
    /// `None` without pipeline parallelism.
    fn pipeline_schedule(&self) -> Option<crate::distributed::ExecutedSchedule> {
        None
    }
    /// What telling the ranks each step has cost (deltas against whole outputs); `None` for a
    /// single worker, which is told nothing.
    fn broadcast_stats(&self) -> Option<crate::distributed::BroadcastStats> {
        None
    }
}

/// One worker in this process.
impl<B: Backend + 'static> Executor for ModelRunner<B>
where
    B::Tensor: 'static,
{
    fn add_request(&mut self, id: SeqId, params: &SamplingParams, seed: u64) {
        ModelRunner::add_request(self, id, params, seed)
    }

    fn remove_requests(&mut self, ids: &[SeqId]) {
        ModelRunner::remove_requests(self, ids)
    }

    fn execute_model(&mut self, scheduler_output: &SchedulerOutput) -> Result<ModelRunnerOutput> {
        Ok(ModelRunner::execute_model(self, scheduler_output)?)
    }

    fn submit_model(&mut self, scheduler_output: &SchedulerOutput) -> Result<()> {
        Ok(ModelRunner::submit_model(self, scheduler_output)?)
    }

    fn complete_model(&mut self) -> Result<ModelRunnerOutput> {
        Ok(ModelRunner::complete_model(self)?)
    }

    fn swap_blocks(&mut self, ops: &SwapOps) -> Result<()> {
        Ok(ModelRunner::swap_blocks(self, ops)?)
    }

    fn model_config(&self) -> &ModelConfig {
        &self.model.config
    }

    fn device_time(&self) -> Option<DeviceTime> {
        self.model.backend.device_time()
    }

    fn take_kernel_timeline(
        &mut self,
    ) -> Result<Option<kernels::kernel_timeline::TimelineRecords>> {
        Ok(self.model.backend.take_kernel_timeline()?)
    }
}
