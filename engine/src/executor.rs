//! The executor runs a scheduled step on the model's worker(s) and returns logits. With one
//! worker it is the model runner itself; tensor and pipeline parallelism add executors that
//! drive several workers behind the same trait.

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::core::scheduler_output::SchedulerOutput;
use crate::worker::model_runner::ModelRunner;

/// Runs steps of the model.
pub trait Executor: Send {
    /// Logits `[sequences with needs_logits, vocab]`, row-major, in batch order.
    fn execute_model(&mut self, scheduler_output: &SchedulerOutput) -> Vec<f32>;
    fn model_config(&self) -> &ModelConfig;
    fn backend_name(&self) -> &'static str;
}

/// One worker in this process.
impl<B: Backend + 'static> Executor for ModelRunner<B>
where
    B::Tensor: 'static,
{
    fn execute_model(&mut self, scheduler_output: &SchedulerOutput) -> Vec<f32> {
        ModelRunner::execute_model(self, scheduler_output)
    }

    fn model_config(&self) -> &ModelConfig {
        &self.model.config
    }

    fn backend_name(&self) -> &'static str {
        self.model.backend.name()
    }
}
