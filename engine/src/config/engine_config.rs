//! The engine's knobs: how the KV cache is cut into blocks and how much a step may schedule.

use super::device::Device;
use crate::error::{EngineError, Result};

/// Paged KV cache geometry (vLLM's `CacheConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// Blocks in the cache; `None` sizes the cache from `kv_cache_memory_bytes`.
    pub num_kv_blocks: Option<usize>,
    /// Memory budget for the KV cache on the CPU when `num_kv_blocks` is not given.
    pub kv_cache_memory_bytes: usize,
    /// On a GPU, the fraction of its memory the engine may use (weights, activations and KV
    /// cache); the KV cache gets what the weights and activations leave (vLLM's
    /// `--gpu-memory-utilization`).
    pub gpu_memory_utilization: f32,
    /// Keep the KV of full blocks after their request ends and reuse it for any later request
    /// whose tokens begin the same way (automatic prefix caching, vLLM's
    /// `--enable-prefix-caching`; [`crate::core::prefix_cache`]). On by default, as in vLLM V1:
    /// a hit skips the prefill of the shared prefix (a system prompt, a chat history, a
    /// preempted request's own tokens), while a miss costs only a hash per full block, and a
    /// cached block takes no memory a new request could use (it is evicted when a fresh block
    /// is needed). On the CPU, greedy outputs are the same with it on or off, bit for bit
    /// (`engine/tests/prefix_caching.rs`).
    pub enable_prefix_caching: bool,
}

/// Per-step limits (vLLM's `SchedulerConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// At most this many sequences run in one step.
    pub max_num_seqs: usize,
    /// Token budget of one step: prefill chunks plus one token per decode.
    pub max_num_batched_tokens: usize,
    /// Let a prompt be split over steps when it does not fit the remaining budget.
    pub enable_chunked_prefill: bool,
    /// When above 0, one sequence's prefill chunk is at most this many tokens per step
    /// (vLLM's `long_prefill_token_threshold`), so that one long prompt cannot take the whole
    /// budget while shorter prompts behind it wait for their first token. 0 (the default)
    /// leaves a chunk all the budget left. As in vLLM V1 the cap applies with chunked
    /// prefill off too: a prompt longer than the threshold is then computed in chunks of the
    /// threshold (the cap is itself a chunking), and each such chunk, like a whole prompt
    /// shorter than the threshold, waits for a step with room for all of it. A threshold of `max_num_batched_tokens` or more changes
    /// nothing. Decodes (1 token) are never affected.
    pub long_prefill_token_threshold: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_num_seqs: 64,
            max_num_batched_tokens: 2048,
            enable_chunked_prefill: true,
            long_prefill_token_threshold: 0,
        }
    }
}

/// How the model is split over ranks (vLLM's `ParallelConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelConfig {
    /// Ranks that each hold a slice of every layer (`--tensor-parallel-size`, `--tp`): 1 runs
    /// the model whole; more runs one thread per rank over the CPU communicator
    /// ([`crate::distributed::thread_executor`]).
    pub tensor_parallel_size: usize,
    /// Stages the layers are split into (`--pipeline-parallel-size`, `--pp`), each a group of
    /// `tensor_parallel_size` ranks: `tp × pp` threads in all. 1 runs every layer on every
    /// rank; more runs contiguous layer ranges per stage
    /// ([`crate::model_executor::pipeline_parallel`]).
    pub pipeline_parallel_size: usize,
    /// Micro-batches a step's sequences are split into under pipeline parallelism
    /// (`--pipeline-micro-batches`), so that the stages overlap; `None` takes
    /// `pipeline_parallel_size` (enough to keep every stage busy once the pipeline is full, as
    /// vLLM keeps `pp` batches in flight). A step never has more micro-batches than sequences.
    /// Ignored without pipeline parallelism.
    pub pipeline_micro_batches: Option<usize>,
    /// How long a rank waits for a peer in a collective before the step fails (a hung rank
    /// ends in an error after this, not in a hang). A dead rank is noticed at once.
    pub collective_timeout: std::time::Duration,
    /// Where a tensor-parallel group on GPUs sums its small all-reduces with the one-shot
    /// kernel over peer memory (`--custom-all-reduce`; `kernels::custom_all_reduce`) instead
    /// of NCCL or the host.
    pub custom_all_reduce: CustomAllReduce,
    /// Set in a process started by `lab launch`: its place in the launch. The ranks are then
    /// processes ([`crate::distributed::process_executor`]) instead of threads; `None` runs
    /// every rank as a thread of this process.
    pub launch: Option<crate::distributed::bootstrap::LaunchSpec>,
}

/// Whether the one-shot all-reduce over peer memory replaces NCCL for a TP group's small
/// all-reduces (vLLM's custom all-reduce). Only between the threads of one process (they can
/// share device addresses), and only with one GPU per rank: where ranks share a GPU, a device-
/// wide synchronization in one rank's thread (a `cuMemFree`, a synchronous copy) would wait
/// for a peer's all-reduce kernel, which spins until that same thread launches its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CustomAllReduce {
    /// NCCL (or the host) sums every all-reduce.
    Off,
    /// The custom kernel, across GPUs that can reach each other's memory (NVLink or PCIe peer
    /// access); NCCL for larger all-reduces, and wherever it does not apply (ranks as
    /// processes, ranks sharing a GPU, no peer access). The default, as in vLLM: on two H200s
    /// it made the Llama-2-7B decode step at batch 32 0.16 ms shorter than NCCL inside the
    /// same CUDA graphs (the book's performance page). A peer that never arrives ends the
    /// step at the collective timeout, as on NCCL.
    #[default]
    On,
}

impl std::str::FromStr for CustomAllReduce {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(CustomAllReduce::On),
            "off" => Ok(CustomAllReduce::Off),
            other => Err(format!("`{other}`: expected on or off")),
        }
    }
}

impl std::fmt::Display for CustomAllReduce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CustomAllReduce::On => "on",
            CustomAllReduce::Off => "off",
        })
    }
}

impl Default for ParallelConfig {
    fn default() -> Self {
        ParallelConfig {
            tensor_parallel_size: 1,
            pipeline_parallel_size: 1,
            pipeline_micro_batches: None,
            collective_timeout: std::time::Duration::from_secs(60),
            custom_all_reduce: CustomAllReduce::default(),
            launch: None,
        }
    }
}

/// Everything the engine needs besides the model itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    pub cache: CacheConfig,
    pub scheduler: SchedulerConfig,
    /// Where the model runs.
    pub device: Device,
    /// Record decode steps as CUDA graphs and replay them (GPU only; vLLM's opposite flag is
    /// `--enforce-eager`).
    pub cuda_graphs: bool,
    pub parallel: ParallelConfig,
    /// How a running sequence yields its KV blocks when the cache is full, which one does,
    /// and the host swap space (`--preemption-mode`, `--preemption-victim`, `--swap-space`).
    pub preemption: crate::core::preemption::PreemptionConfig,
    /// Schedule and submit each step while the previous one still runs (vLLM's
    /// `--async-scheduling`; see `LLMEngine::step`): on a GPU the device no longer waits for
    /// the host between steps. `None`, the default (as in vLLM, which turns it on where it is
    /// supported): on for one worker on a GPU, off on the CPU (whose backend computes a step
    /// inside its submit: there is nothing to overlap) and with several ranks (not supported
    /// yet). `Some(true)` asks for it (refused with several ranks), `Some(false)` turns it
    /// off. A running engine's config holds its choice ([`EngineConfig::async_scheduling_on`]).
    pub async_scheduling: Option<bool>,
    /// Build the CUDA kernels with the timeline probe (`lab bench --kernel-timeline`): every
    /// block records when it reached its wait for the previous kernel and when it was let go,
    /// read back with `LLMEngine::take_kernel_timeline`. One GPU worker only; a diagnostic,
    /// off by default (kernels built without it carry no trace of it).
    pub kernel_timeline: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache: CacheConfig {
                block_size: 16,
                num_kv_blocks: None,
                kv_cache_memory_bytes: 1 << 30,
                gpu_memory_utilization: 0.9,
                enable_prefix_caching: true,
            },
            scheduler: SchedulerConfig::default(),
            // The library runs where it is told; `lab` defaults to `--device auto`.
            device: Device::Cpu,
            cuda_graphs: true,
            parallel: ParallelConfig::default(),
            preemption: Default::default(),
            async_scheduling: None,
            kernel_timeline: false,
        }
    }
}

impl EngineConfig {
    /// Whether steps are scheduled one ahead on `device` (a resolved one, never `auto`):
    /// `async_scheduling` where it is given, otherwise when one worker runs on a GPU.
    pub fn async_scheduling_on(&self, device: Device) -> bool {
        let ranks = self.parallel.tensor_parallel_size * self.parallel.pipeline_parallel_size;
        self.async_scheduling
            .unwrap_or(ranks == 1 && matches!(device, Device::Cuda(_)))
    }

    /// Rejects values that cannot work, with a message naming the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(EngineError::InvalidArgument(m.to_string()));
        if self.cache.block_size == 0 {
            return bad("--block-size must be at least 1");
        }
        if self.cache.num_kv_blocks == Some(0) {
            return bad("--num-kv-blocks must be at least 1");
        }
        if self.scheduler.max_num_seqs == 0 {
            return bad("--max-num-seqs must be at least 1");
        }
        if self.scheduler.max_num_batched_tokens == 0 {
            return bad("--max-num-batched-tokens must be at least 1");
        }
        if self.parallel.tensor_parallel_size == 0 {
            return bad("--tensor-parallel-size must be at least 1");
        }
        if self.parallel.pipeline_parallel_size == 0 {
            return bad("--pipeline-parallel-size must be at least 1");
        }
        if self.parallel.pipeline_micro_batches == Some(0) {
            return bad("--pipeline-micro-batches must be at least 1");
        }
        if self.parallel.collective_timeout.is_zero() {
            return bad("the collective timeout must be longer than zero");
        }
        let parallel = self.parallel.tensor_parallel_size * self.parallel.pipeline_parallel_size;
        if self.preemption.mode == crate::core::preemption::PreemptionMode::Swap && parallel > 1 {
            return bad(
                "--preemption-mode swap runs with one worker for now (each rank would \
                 need its own swap space); use recompute with --tensor-parallel-size or \
                 --pipeline-parallel-size",
            );
        }
        if self.async_scheduling == Some(true) && parallel > 1 {
            return bad(
                "--async-scheduling runs with one worker for now (the ranks would each need \
                 the previous step's sampled tokens); leave it out with \
                 --tensor-parallel-size or --pipeline-parallel-size",
            );
        }
        if self.kernel_timeline && (parallel > 1 || matches!(self.device, Device::Cpu)) {
            return bad(
                "--kernel-timeline records the CUDA kernels of one worker: give it with \
                 --device cuda (or auto on a GPU machine) and without \
                 --tensor-parallel-size or --pipeline-parallel-size",
            );
        }
        let u = self.cache.gpu_memory_utilization;
        if !(u > 0.0 && u <= 1.0) {
            return bad(&format!(
                "--gpu-memory-utilization must be in (0, 1], got {u}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel timeline records CUDA kernels: asked for on the CPU or with several ranks it
    /// is refused before anything loads, naming the flag.
    #[test]
    fn the_kernel_timeline_is_refused_on_the_cpu_and_with_several_ranks() {
        let mut config = EngineConfig {
            kernel_timeline: true,
            ..EngineConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--kernel-timeline"), "{err}");
        config.device = Device::Cuda(0);
        config.validate().expect("one GPU worker may record it");
        config.parallel.tensor_parallel_size = 2;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--kernel-timeline"), "{err}");
    }
}
