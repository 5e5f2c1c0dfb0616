//! The parts of the engine a learner can replace, passed explicitly to
//! [`LLMEngine::with_parts`](crate::LLMEngine::with_parts) (no globals).
//!
//! Each stage of the course has the learner rewrite some of these; the stage's tests build an
//! engine with the learner's parts and check that it generates exactly the tokens of the
//! engine built from `EngineParts::default()`, the engine's own implementations.
//!
//! ```text
//! stage 1   allocator  policy  schedule      (core::*)
//! stage 3   prepare_inputs  kernels  sample  (worker::model_runner, ops::*, sampler)
//! stage 5   shard_tensor                     (model_executor::tensor_parallel)
//! ```

use crate::backend::cpu_backend::CpuKernels;
use crate::core::block_allocator::{BlockAllocator, RefCountingAllocator};
use crate::core::scheduler::Scheduler;
use crate::core::scheduler_output::SchedulerOutput;
use crate::core::scheduling_policy::{Fcfs, SchedulingPolicy};
pub use crate::model_executor::tensor_parallel::ShardTensorFn;
pub use crate::sampler::SampleFn;
use crate::worker::model_runner::{prepare_inputs, PrepareInputsFn};

/// Builds the block allocator of a cache of `num_blocks` blocks.
pub type AllocatorFn = fn(num_blocks: usize) -> Box<dyn BlockAllocator>;
/// Decides one step's batch, like [`Scheduler::schedule`].
pub type ScheduleFn = fn(scheduler: &mut Scheduler) -> SchedulerOutput;

/// The replaceable parts; `Default` gives the engine's own.
pub struct EngineParts {
    pub allocator: AllocatorFn,
    pub policy: Box<dyn SchedulingPolicy>,
    pub schedule: ScheduleFn,
    pub prepare_inputs: PrepareInputsFn,
    /// RMSNorm and rotary kernels of the CPU backend.
    pub kernels: CpuKernels,
    /// Called by the model runner, on the worker, for each sequence that samples.
    pub sample: SampleFn,
    /// Cuts each tensor-parallel rank's part out of a whole weight, as it loads (stage 5).
    pub shard_tensor: ShardTensorFn,
}

impl Default for EngineParts {
    fn default() -> Self {
        EngineParts {
            allocator: |n| Box::new(RefCountingAllocator::new(n)),
            policy: Box::new(Fcfs),
            schedule: Scheduler::schedule,
            prepare_inputs,
            kernels: CpuKernels::default(),
            sample: crate::sampler::sample,
            shard_tensor: crate::model_executor::tensor_parallel::shard_tensor,
        }
    }
}
