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
//! ```

use rand::rngs::StdRng;

use crate::backend::cpu_backend::CpuKernels;
use crate::core::block_allocator::{BlockAllocator, RefCountingAllocator};
use crate::core::scheduler::Scheduler;
use crate::core::scheduler_output::SchedulerOutput;
use crate::core::scheduling_policy::{Fcfs, SchedulingPolicy};
use crate::sampling_params::SamplingParams;
use crate::worker::model_runner::{prepare_inputs, PrepareInputsFn};

/// Builds the block allocator of a cache of `num_blocks` blocks.
pub type AllocatorFn = fn(num_blocks: usize) -> Box<dyn BlockAllocator>;
/// Decides one step's batch, like [`Scheduler::schedule`].
pub type ScheduleFn = fn(scheduler: &mut Scheduler) -> SchedulerOutput;
/// Picks a token from one row of logits, like [`crate::sampler::sample`].
pub type SampleFn = fn(logits: &[f32], params: &SamplingParams, rng: &mut StdRng) -> u32;

/// The replaceable parts; `Default` gives the engine's own.
pub struct EngineParts {
    pub allocator: AllocatorFn,
    pub policy: Box<dyn SchedulingPolicy>,
    pub schedule: ScheduleFn,
    pub prepare_inputs: PrepareInputsFn,
    /// RMSNorm and rotary kernels of the CPU backend.
    pub kernels: CpuKernels,
    pub sample: SampleFn,
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
        }
    }
}
