//! `lab`: the engine's command line.
//!
//! - `lab generate` runs prompts through the engine (text or `--json`).
//! - `lab fetch-model smollm2` downloads and converts the real model once.
//! - `lab save-model` writes a model (random weights of a shape) as a Hugging Face directory.
//! - `lab bench` measures prefill and decode throughput; `--workload nano-vllm` runs
//!   nano-vllm's benchmark workload (throughput, TTFT, TPOT) and batch-1 decode.
//! - `lab launch` runs `generate` as one process per rank (tensor and pipeline parallelism
//!   across processes, and hosts).
//! - `lab plan` recommends a tensor × pipeline parallel split of a model over GPUs.
//! - `lab simulate` compares continuous and static batching on a simulated clock.
//! - `lab quiz` asks a chapter's quiz with fresh numbers (runs the quizzes crate's `lab-quiz`).
//! - `lab serve` serves the OpenAI API over HTTP; `lab bench-serve` loads such a server.

mod bench;
mod decode_b1;
mod decode_batch;
mod generate;
mod kernel_timeline;
mod launch;
mod nano_vllm;
mod plan;
mod py_random;
mod quiz;
mod save_model;
mod scheduler_bench;
#[cfg(feature = "serve")]
mod serve;
mod serving_bench;
mod simulate;
mod step_stats;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lab",
    version,
    about = "Inference Lab: a small, real LLM serving engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate completions for prompts.
    Generate(generate::GenerateArgs),
    /// Download and convert a known model (prints its directory as the last line).
    FetchModel {
        /// Model name; known: smollm2.
        name: String,
    },
    /// Measure prefill and decode throughput at batch 1 and 8, or a serving workload.
    Bench(bench::BenchArgs),
    /// Write a model (e.g. random weights of a config's shape) as a Hugging Face directory.
    SaveModel(save_model::SaveModelArgs),
    /// Run `generate` as one process per rank: `lab launch --nproc-per-node N -- generate ...`.
    Launch(launch::LaunchArgs),
    /// Recommend a TP×PP split of a model over GPUs (memory, communication, time), and why.
    Plan(plan::PlanArgs),
    /// Continuous vs static batching on a simulated clock, decided by the engine's scheduler.
    Simulate(Box<simulate::SimulateArgs>),
    /// A chapter's quiz in the terminal, fresh numbers each time: `lab quiz [CHAPTER] [--seed S]`.
    Quiz(quiz::QuizArgs),
    /// Serve the OpenAI API (completions, chat, streaming) over HTTP, with /metrics.
    #[cfg(feature = "serve")]
    Serve(Box<serve::ServeArgs>),
    /// Send a workload to a running server; report throughput, TTFT and inter-token latency.
    #[cfg(feature = "serve")]
    BenchServe(serve::bench::BenchServeArgs),
}

/// Which model, and the engine's knobs: shared by `generate` and `bench`.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// `tiny` (built in, random weights), `smollm2` (fetched on first use), a Hugging Face
    /// model directory, or a `.gguf` file (converted once; on the CPU its Q8_0/Q4_1 weights are
    /// computed from in their blocks, with the same results).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Ignore the directory's weights; draw random ones of the config's shape.
    #[arg(long)]
    pub random_weights: bool,
    /// Seed of random weights (the tiny model and --random-weights).
    #[arg(long, default_value_t = engine::model_source::DEFAULT_WEIGHT_SEED)]
    pub weights_seed: u64,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// KV-cache blocks (default: as many as fit 1 GiB on the CPU; on a GPU, what
    /// --gpu-memory-utilization leaves).
    #[arg(long)]
    pub num_kv_blocks: Option<usize>,
    /// Keep the KV of full blocks and reuse it for later prompts that begin the same way
    /// (automatic prefix caching). On by default: a hit skips prefill work, a miss costs a hash
    /// per block, and cached blocks are evicted when the space is needed.
    #[arg(long, overrides_with = "no_enable_prefix_caching")]
    pub enable_prefix_caching: bool,
    /// Turn automatic prefix caching off: every prompt is computed in full.
    #[arg(long, overrides_with = "enable_prefix_caching")]
    pub no_enable_prefix_caching: bool,
    /// Most sequences in one step.
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Token budget of one step (prefill chunks + decodes).
    #[arg(long, default_value_t = 2048)]
    pub max_num_batched_tokens: usize,
    /// Cap one prompt's prefill chunk at N tokens per step (vLLM's
    /// --long-prefill-token-threshold), so that a long prompt leaves budget for the prompts
    /// behind it to reach their first token; 0 (the default) is no cap. Decodes are never
    /// capped. It also cuts prompts longer than N when chunked prefill is off.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub long_prefill_token_threshold: usize,
    /// Where to run: cpu, cuda (cuda:N for GPU N), or auto (a GPU if one is usable, else the
    /// CPU).
    #[arg(long, default_value = "auto")]
    pub device: engine::config::Device,
    /// On a GPU, the fraction of its memory the engine may take; the KV cache gets what the
    /// weights and activations leave (ignored with --num-kv-blocks).
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f32,
    /// On a GPU, launch every kernel of every step instead of replaying decode steps as CUDA
    /// graphs (slower; for debugging and for measuring what graphs save).
    #[arg(long)]
    pub enforce_eager: bool,
    /// Split every layer over this many ranks (tensor parallelism), one thread each over the
    /// CPU communicator; it must divide the model's attention heads.
    #[arg(long, visible_alias = "tp", default_value_t = 1)]
    pub tensor_parallel_size: usize,
    /// Split the layers into this many stages (pipeline parallelism), each of
    /// --tensor-parallel-size ranks, one thread per rank over the CPU communicator; at most the
    /// model's layer count.
    #[arg(long, visible_alias = "pp", default_value_t = 1)]
    pub pipeline_parallel_size: usize,
    /// Under pipeline parallelism, split each step's sequences into this many micro-batches
    /// so that the stages overlap (default: --pipeline-parallel-size; never more than the
    /// step's sequences).
    #[arg(long)]
    pub pipeline_micro_batches: Option<usize>,
    /// Threads of the CPU's kernels (default: one per CPU this process may run on; the
    /// RAYON_NUM_THREADS environment variable sets the default too).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds a rank waits for a peer in a collective before failing (a hung rank ends the
    /// group with an error after this; a dead one is noticed at once).
    #[arg(long, default_value_t = 60.0)]
    pub collective_timeout: f64,
    /// `on`: a tensor-parallel group with a GPU per rank sums its small all-reduces with the
    /// one-shot kernel over peer memory (vLLM's custom all-reduce) instead of NCCL (the
    /// default; it applies with a GPU per rank and ranks as threads, NCCL elsewhere); `off`:
    /// NCCL, or the host where ranks share a GPU.
    #[arg(long, default_value_t = engine::config::CustomAllReduce::default())]
    pub custom_all_reduce: engine::config::CustomAllReduce,
    /// When the KV cache is full, how a running sequence yields its blocks: `recompute`
    /// (drop them, prefill again later; the default, see engine::core::preemption) or `swap`
    /// (copy them to host memory and back).
    #[arg(long, default_value_t = engine::core::preemption::PreemptionMode::default())]
    pub preemption_mode: engine::core::preemption::PreemptionMode,
    /// Which running sequence is preempted: policy (the one the scheduling policy ranks
    /// last), lowest-priority, latest-arrival or most-blocks.
    #[arg(long, default_value = "policy")]
    pub preemption_victim: engine::core::preemption::VictimSelection,
    /// Host memory for swapped-out KV blocks, in GiB (fractions allowed), with
    /// --preemption-mode swap; a victim that does not fit is recomputed instead.
    #[arg(long, default_value_t = 4.0)]
    pub swap_space: f64,
    /// Schedule and submit each step while the previous one still runs on the device, which
    /// fills each decode's input with the token it just sampled (vLLM's --async-scheduling):
    /// the GPU no longer waits for the host between steps; a request that stops costs one
    /// extra token of compute. On by default with one worker on a GPU (as in vLLM); off on the
    /// CPU, where there is no gap to fill, and with --tp/--pp, which it does not support yet.
    #[arg(long, overrides_with = "no_async_scheduling")]
    pub async_scheduling: bool,
    /// Turn async scheduling off: each step is scheduled once the previous one's tokens are
    /// back.
    #[arg(long, overrides_with = "async_scheduling")]
    pub no_async_scheduling: bool,
}

impl ModelArgs {
    /// [`ModelArgs::engine_config`] for a tool that times one step at a time (from its
    /// schedule to its tokens): synchronous steps unless `--async-scheduling` is given, where
    /// a GPU would otherwise schedule one step ahead.
    pub fn stepwise_engine_config(&self) -> engine::EngineConfig {
        let mut c = self.engine_config();
        if !self.async_scheduling {
            c.async_scheduling = Some(false);
        }
        c
    }

    pub fn engine_config(&self) -> engine::EngineConfig {
        let mut c = engine::EngineConfig::default();
        c.cache.block_size = self.block_size;
        c.cache.num_kv_blocks = self.num_kv_blocks;
        // The last of the two flags wins (clap keeps one); neither keeps the engine's default.
        if self.enable_prefix_caching || self.no_enable_prefix_caching {
            c.cache.enable_prefix_caching = self.enable_prefix_caching;
        }
        c.scheduler.max_num_seqs = self.max_num_seqs;
        c.scheduler.max_num_batched_tokens = self.max_num_batched_tokens;
        c.scheduler.long_prefill_token_threshold = self.long_prefill_token_threshold;
        c.device = self.device;
        c.cache.gpu_memory_utilization = self.gpu_memory_utilization;
        c.cuda_graphs = !self.enforce_eager;
        c.parallel.tensor_parallel_size = self.tensor_parallel_size;
        c.parallel.pipeline_parallel_size = self.pipeline_parallel_size;
        c.parallel.pipeline_micro_batches = self.pipeline_micro_batches;
        // A bad value falls to zero, which validate() refuses with the flag's message.
        c.parallel.collective_timeout =
            std::time::Duration::try_from_secs_f64(self.collective_timeout).unwrap_or_default();
        c.parallel.custom_all_reduce = self.custom_all_reduce;
        // As for prefix caching: the last of the two flags wins; neither keeps the default.
        if self.async_scheduling || self.no_async_scheduling {
            c.async_scheduling = Some(self.async_scheduling);
        }
        c.preemption.mode = self.preemption_mode;
        c.preemption.victim = self.preemption_victim;
        // A bad value is refused in `load` (swap_space_bytes); here it is only converted.
        c.preemption.swap_space_bytes =
            engine::core::preemption::swap_space_bytes(self.swap_space).unwrap_or(0);
        c
    }

    pub fn load(&self) -> anyhow::Result<engine::model_source::LoadedModel> {
        use engine::model_source::{load_model, ModelSpec};
        let config = self.engine_config();
        config.validate()?; // fail on bad knobs before loading 500 MB of weights
        engine::core::preemption::swap_space_bytes(self.swap_space)?;
        self.set_threads()?;
        Ok(load_model(
            &ModelSpec::parse(&self.model),
            self.random_weights,
            self.weights_seed,
        )?)
    }
}

impl ModelArgs {
    /// Builds the CPU kernels' thread pool (`--threads`, default one per CPU) on the calling
    /// thread, which must be the one that steps the engine: with one rank it becomes one of
    /// the pool's workers (see `engine::backend::cpu_thread_pool`). Call it before anything
    /// uses rayon; a second call from the same thread is a no-op.
    pub fn set_threads(&self) -> anyhow::Result<()> {
        if self.threads == Some(0) {
            anyhow::bail!("--threads must be at least 1");
        }
        let one_rank = self.tensor_parallel_size * self.pipeline_parallel_size == 1;
        engine::backend::cpu_thread_pool::build_global(self.threads, one_rank)?;
        Ok(())
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::FetchModel { name } => fetch_model(&name),
        Command::Bench(args) => bench::run(args),
        Command::SaveModel(args) => save_model::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Launch(args) => launch::run(args),
        Command::Simulate(args) => simulate::run(*args),
        Command::Quiz(args) => quiz::run(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::run(*args),
        #[cfg(feature = "serve")]
        Command::BenchServe(args) => serve::bench::run(args),
    };
    if let Err(e) = result {
        // One line: what was wrong, and the causes after colons.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn fetch_model(name: &str) -> anyhow::Result<()> {
    let dir = engine::model_loader::fetch_model::fetch_model(name)?;
    println!("{}", dir.display());
    Ok(())
}
