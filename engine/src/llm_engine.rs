//! The engine loop (vLLM's `LLMEngine`): add requests, then `step()` until all are done.
//!
//! One step = schedule → execute → update:
//! the scheduler picks the batch and its tokens, the executor runs the model and samples the
//! next token of each sequence that reached its last token (on the worker, where the logits
//! are), and the scheduler appends them, checks stop conditions and frees finished requests'
//! blocks.

use crate::backend::cpu_backend::CpuBackend;
use crate::backend::cuda_backend::CudaBackend;
use crate::backend::{Backend, StepLimits};
use crate::config::EngineConfig;
use crate::config::{Device, ModelConfig};
use crate::core::block_manager::BlockManager;
use crate::core::preemption::PreemptionMode;
use crate::core::prefix_cache::PrefixCacheStats;
use crate::core::scheduler::Scheduler;
use crate::core::scheduler_output::SchedulerOutput;
use crate::core::step_stats::StepStats;
use crate::distributed::process_executor::ProcessExecutor;
use crate::distributed::thread_executor::ThreadExecutor;
use crate::engine_parts::{EngineParts, ScheduleFn};
use crate::error::{EngineError, Result};
use crate::executor::Executor;
use crate::model_executor::llama::LlamaForCausalLM;
use crate::model_executor::pipeline_parallel::check_pipeline_parallel;
use crate::model_executor::tensor_parallel::check_tensor_parallel;
use crate::model_source::{LoadedModel, ModelWeights};
use crate::sampling_params::SamplingParams;
use crate::sequence::{FinishReason, SeqId, Sequence, SequenceStatus};
use crate::tokenizer::Tokenizer;
use crate::worker::cache_engine::kv_cache_bytes_per_block;
use crate::worker::model_runner::ModelRunner;
use tracing::field::Empty;

/// A prompt as text (tokenized by the engine) or as token ids.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    TokenIds(Vec<u32>),
}

/// A finished request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutput {
    pub request_id: SeqId,
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    /// Generated text, special tokens left out.
    pub text: String,
    pub finish_reason: FinishReason,
    pub num_preemptions: usize,
    /// Raw logits of each generated token, if the request asked for them.
    pub logits: Vec<Vec<f32>>,
}

/// Counters over the engine's life, for tests, benches and the tracer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub num_steps: usize,
    pub num_preemptions: usize,
    pub num_batched_tokens: usize,
    pub max_batched_tokens_in_a_step: usize,
    /// Sequences swapped out and back in (preemption by swap), and the blocks copied each way.
    pub num_swapped_out: usize,
    pub num_swapped_in: usize,
    pub blocks_swapped_out: usize,
    pub blocks_swapped_in: usize,
    /// Prefix cache lookups, queried and hit tokens, evictions so far (all 0 when it is off).
    pub prefix_cache: PrefixCacheStats,
    /// The same counts for the last step alone.
    pub last_step_prefix_cache: PrefixCacheStats,
}

/// The span around each step's scheduling, with the step's number in `step` (from 1, as
/// [`StepStats::step`]): the scheduler's own spans (such as the prefix cache's) open inside it.
pub const SCHEDULE_SPAN: &str = "schedule";

/// The span around each step's forward pass and sampling on the workers (`step`, the batch's
/// sequences `seqs` and tokens `tokens`): the kernels' and collectives' spans open inside it.
pub const EXECUTE_SPAN: &str = "execute_model";

/// The engine: tokenizer, scheduler and executor.
pub struct LLMEngine {
    pub tokenizer: Tokenizer,
    pub scheduler: Scheduler,
    executor: Box<dyn Executor>,
    pub config: EngineConfig,
    /// Longest sequence (prompt + output) one request may reach.
    pub max_model_len: usize,
    pub num_kv_blocks: usize,
    next_seq_id: u64,
    pub stats: EngineStats,
    /// `Scheduler::schedule` unless replaced (see [`EngineParts`]).
    schedule: ScheduleFn,
    /// What the last step did (`None` before the first).
    last_step_stats: Option<StepStats>,
    /// Every step's [`StepStats`], in order, while [`LLMEngine::record_step_stats`] is on
    /// (off by default: a long-running engine would keep them all).
    pub step_stats: Vec<StepStats>,
    pub record_step_stats: bool,
    /// Under async scheduling, the steps submitted and not yet completed, oldest first, with
    /// their numbers (at most two: the one running and the one queued behind it).
    in_flight: std::collections::VecDeque<(usize, SchedulerOutput)>,
}

impl LLMEngine {
    /// An engine on `config.device` with the engine's own parts.
    pub fn new(model: LoadedModel, config: EngineConfig) -> Result<Self> {
        Self::with_parts(model, config, EngineParts::default())
    }

    /// An engine built from the given parts (a learner's, in the stages). The learner's
    /// kernels are CPU kernels: on a GPU the engine's own CUDA kernels run instead.
    pub fn with_parts(
        model: LoadedModel,
        mut config: EngineConfig,
        parts: EngineParts,
    ) -> Result<Self> {
        config.validate()?;
        let device = match (config.device, config.device.resolve()?) {
            // `auto` means "the GPU if it can run this model": the tiny model's 16-wide heads,
            // say, have no CUDA kernels, so it runs on the CPU.
            (Device::Auto, Device::Cuda(n)) if CudaBackend::supports(&model.config).is_ok() => {
                Device::Cuda(n)
            }
            (Device::Auto, Device::Cuda(_)) => Device::Cpu,
            (_, Device::Cuda(n)) => {
                CudaBackend::supports(&model.config).map_err(|why| {
                    EngineError::InvalidArgument(format!("--device cuda: {why}; use --device cpu"))
                })?;
                Device::Cuda(n)
            }
            (_, resolved) => resolved,
        };
        let tp = config.parallel.tensor_parallel_size;
        let pp = config.parallel.pipeline_parallel_size;
        if tp > 1 || pp > 1 {
            let name = std::path::Path::new(&model.name).file_name();
            let name = name.map_or(model.name.clone(), |n| n.to_string_lossy().into_owned());
            check_tensor_parallel(&model.config, &name, tp)?;
            check_pipeline_parallel(&model.config, &name, pp)?;
        }
        // The ranks read the device from the config: the resolved one, never `auto`; and the
        // engine's config says whether it schedules one step ahead.
        config.device = device;
        config.async_scheduling = Some(config.async_scheduling_on(device));
        let _span = tracing::info_span!("engine_start", %device, tp, pp).entered();
        let LoadedModel {
            name: _,
            config: model_config,
            weights,
            tokenizer,
            eos_token_ids,
        } = model;
        let built = match device {
            Device::Cpu | Device::Cuda(_)
                if (tp > 1 || pp > 1) && config.parallel.launch.is_some() =>
            {
                // Launched (`lab launch`): this process is rank 0, the others are processes.
                let launch = config.parallel.launch.expect("checked in the guard");
                let executor =
                    ProcessExecutor::new(weights, model_config, &config, &parts, &launch)?;
                BuiltExecutor {
                    num_swap_blocks: 0, // validate() refuses swap with several ranks
                    num_kv_blocks: executor.num_kv_blocks,
                    max_model_len: executor.max_model_len,
                    executor: Box::new(executor),
                }
            }
            Device::Cpu | Device::Cuda(_) if tp > 1 || pp > 1 => {
                let executor = ThreadExecutor::new(weights, model_config, &config, &parts)?;
                BuiltExecutor {
                    num_swap_blocks: 0, // validate() refuses swap with several ranks
                    num_kv_blocks: executor.num_kv_blocks,
                    max_model_len: executor.max_model_len,
                    executor: Box::new(executor),
                }
            }
            Device::Cpu => {
                let backend = CpuBackend::new(parts.kernels);
                build_executor(backend, model_config, weights, &config, &parts)?
            }
            Device::Cuda(ordinal) => {
                let backend = CudaBackend::open(ordinal, config.kernel_timeline)?
                    .with_cuda_graphs(config.cuda_graphs);
                build_executor(backend, model_config, weights, &config, &parts)?
            }
            Device::Auto => unreachable!("resolve() never returns Auto"),
        };
        let block_manager = BlockManager::new(
            config.cache.block_size,
            (parts.allocator)(built.num_kv_blocks),
        )
        .with_prefix_caching(config.cache.enable_prefix_caching);
        let scheduler = Scheduler::new(
            config.scheduler,
            parts.policy,
            block_manager,
            eos_token_ids,
            built.max_model_len,
        )
        .with_preemption(config.preemption, built.num_swap_blocks);
        Ok(LLMEngine {
            tokenizer,
            scheduler,
            executor: built.executor,
            config,
            max_model_len: built.max_model_len,
            num_kv_blocks: built.num_kv_blocks,
            next_seq_id: 0,
            stats: EngineStats::default(),
            schedule: parts.schedule,
            last_step_stats: None,
            step_stats: Vec::new(),
            record_step_stats: false,
            in_flight: std::collections::VecDeque::new(),
        })
    }

    /// What the last step scheduled, preempted and swapped, and the blocks it left free
    /// (`None` before the first step).
    pub fn last_step_stats(&self) -> Option<&StepStats> {
        self.last_step_stats.as_ref()
    }

    pub fn model_config(&self) -> &crate::config::ModelConfig {
        self.executor.model_config()
    }

    /// Device time of the steps so far, where the backend measures it (the GPU): a benchmark
    /// subtracts two readings to split a step's wall time into the device's and the host's.
    pub fn device_time(&self) -> Option<crate::backend::DeviceTime> {
        self.executor.device_time()
    }

    /// The kernel timeline's block records since the last call: when each block of each
    /// kernel reached its wait for the previous kernel and was let go, on the device's clock
    /// (`kernels::kernel_timeline`). `None` unless the engine was built with
    /// [`EngineConfig::kernel_timeline`] on one GPU.
    pub fn take_kernel_timeline(
        &mut self,
    ) -> Result<Option<kernels::kernel_timeline::TimelineRecords>> {
        self.executor.take_kernel_timeline()
    }

    /// Each rank's communicator counters so far, in world-rank order (empty with one rank):
    /// how many collectives a step made, and the bytes they moved; under pipeline parallelism
    /// a rank's TP collectives and its sends to and receives from the next and previous stages.
    pub fn comm_stats(&mut self) -> Vec<crate::distributed::CommStats> {
        self.executor.comm_stats()
    }

    /// Each rank's busy and idle time over the steps so far, in world-rank order (empty with
    /// one rank): under pipeline parallelism, how much of each step a stage sat in the bubble.
    pub fn stage_times(&self) -> Vec<crate::distributed::StageTimes> {
        self.executor.stage_times()
    }

    /// Under pipeline parallelism, the schedule the last step ran: each stage's micro-batches
    /// in order, in wall-clock time and in ticks (`None` with one stage).
    pub fn pipeline_schedule(&self) -> Option<crate::distributed::ExecutedSchedule> {
        self.executor.pipeline_schedule()
    }

    /// With several ranks, what telling them each step has cost: the bytes of the deltas
    /// sent against those of whole scheduler outputs (`None` with one rank).
    pub fn broadcast_stats(&self) -> Option<crate::distributed::BroadcastStats> {
        self.executor.broadcast_stats()
    }

    // ANCHOR: add_request
    /// Validates and queues a request; returns its id.
    pub fn add_request(&mut self, prompt: Prompt, params: SamplingParams) -> Result<SeqId> {
        let span = tracing::debug_span!("add_request", request = Empty);
        let _entered = span.enter();
        params.validate()?;
        let ids = match prompt {
            Prompt::Text(text) => self.tokenizer.encode(&text)?,
            Prompt::TokenIds(ids) => ids,
        };
        if ids.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        let vocab = self.model_config().vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::InvalidRequest(format!(
                "prompt token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        if ids.len() >= self.max_model_len {
            return Err(EngineError::InvalidRequest(format!(
                "the prompt has {} tokens, but at most {} fit with room for one new token \
                 (KV cache: {} blocks of {} tokens; model: {} positions); use a shorter \
                 prompt or raise --num-kv-blocks",
                ids.len(),
                self.max_model_len - 1,
                self.num_kv_blocks,
                self.config.cache.block_size,
                self.model_config().max_position_embeddings,
            )));
        }
        let sched = &self.config.scheduler;
        if !sched.enable_chunked_prefill && ids.len() > sched.max_num_batched_tokens {
            return Err(EngineError::InvalidRequest(format!(
                "the prompt has {} tokens, more than --max-num-batched-tokens ({}), and \
                 chunked prefill is off",
                ids.len(),
                sched.max_num_batched_tokens
            )));
        }
        let stops = params.all_stop_token_ids(self.scheduler.eos_token_ids());
        if params.min_tokens > 0 && stops.iter().filter(|&&t| (t as usize) < vocab).count() == vocab
        {
            return Err(EngineError::InvalidRequest(format!(
                "min_tokens is {} but every token of the vocabulary (size {vocab}) is a stop \
                 token: nothing is left to sample",
                params.min_tokens
            )));
        }
        let id = SeqId(self.next_seq_id);
        self.next_seq_id += 1;
        span.record("request", id.0);
        // Drawn once, here: an unseeded request stays random, and every token it samples is
        // still a pure function of (seed, position).
        let seed = params.seed.unwrap_or_else(fresh_seed);
        // The worker bans every id that would end the request until `min_tokens` are out, the
        // model's EOS included: its copy of the parameters lists them all as stop ids.
        let worker_params = SamplingParams {
            stop_token_ids: stops,
            ..params.clone()
        };
        self.executor.add_request(id, &worker_params, seed);
        self.scheduler.add_sequence(Sequence::new(id, ids, params));
        Ok(id)
    }
    // ANCHOR_END: add_request

    /// Drops a queued or running request; its blocks return to the pool.
    pub fn abort_request(&mut self, id: SeqId) -> bool {
        self.executor.remove_requests(&[id]);
        self.scheduler.abort_sequence(id)
    }

    pub fn has_unfinished_requests(&self) -> bool {
        self.scheduler.has_unfinished()
    }

    // ANCHOR: step
    /// Runs one step; returns the requests that finished in it.
    pub fn step(&mut self) -> Result<Vec<RequestOutput>> {
        if self.config.async_scheduling == Some(true) {
            return self.step_async();
        }
        let Some(out) = self.schedule_step()? else {
            return Ok(Vec::new());
        };
        let output = {
            let (step, seqs) = (self.stats.num_steps + 1, out.scheduled.len());
            let tokens = out.num_batched_tokens();
            let _span = tracing::debug_span!(EXECUTE_SPAN, step, seqs, tokens).entered();
            self.executor.execute_model(&out)?
        };
        self.count_step(&out);
        let step = self.stats.num_steps;
        let span = tracing::debug_span!("update_from_output", step, finished = Empty).entered();
        self.keep_logits(&out, output.logits);
        let finished = self
            .scheduler
            .update_from_output(&out, &output.sampled_token_ids);
        span.record("finished", finished.len());
        drop(span);
        self.finish_requests(finished, step)
    }
    // ANCHOR_END: step

    /// Schedules the next step, makes its swap copies and records what it decided; `None`
    /// when there is no batch to run.
    fn schedule_step(&mut self) -> Result<Option<SchedulerOutput>> {
        let (out, schedule_span) = {
            let step = self.stats.num_steps + 1;
            let span = tracing::debug_span!(
                SCHEDULE_SPAN,
                step,
                prefill_tokens = Empty,
                decode_tokens = Empty,
                preempted = Empty,
                swapped_out = Empty,
                swapped_in = Empty,
                prefix_hit_tokens = Empty,
                requests = Empty
            );
            let out = span.in_scope(|| (self.schedule)(&mut self.scheduler));
            (out, span)
        };
        let swaps = self.scheduler.take_swaps();
        // Lookups happen in `schedule`: this reading closes the step's prefix cache counts.
        let prefix_cache = self.scheduler.block_manager.prefix_cache_stats();
        self.stats.last_step_prefix_cache = prefix_cache.since(&self.stats.prefix_cache);
        self.stats.prefix_cache = prefix_cache;
        // The copies go first: a block swapped out may be written by this step's forward.
        self.executor.swap_blocks(&swaps)?;
        let mut stats = StepStats::of_step(self.stats.num_steps + 1, &out, &swaps, &self.scheduler);
        stats.prefix_cache_queried_tokens = self.stats.last_step_prefix_cache.queried_tokens;
        stats.prefix_cache_hit_tokens = self.stats.last_step_prefix_cache.hit_tokens;
        self.stats.num_swapped_out += stats.num_swapped_out;
        self.stats.num_swapped_in += stats.num_swapped_in;
        self.stats.blocks_swapped_out += stats.blocks_swapped_out;
        self.stats.blocks_swapped_in += stats.blocks_swapped_in;
        // ANCHOR: schedule_span
        // The scheduler's decision on its span; nothing is formatted unless someone listens.
        if !schedule_span.is_disabled() {
            schedule_span.record("prefill_tokens", stats.num_prefill_tokens);
            schedule_span.record("decode_tokens", stats.num_decode_tokens);
            schedule_span.record("preempted", stats.num_preempted);
            schedule_span.record("swapped_out", stats.num_swapped_out);
            schedule_span.record("swapped_in", stats.num_swapped_in);
            schedule_span.record("prefix_hit_tokens", stats.prefix_cache_hit_tokens);
            let ids = out.scheduled.iter().map(|s| s.seq_id.0.to_string());
            schedule_span.record("requests", ids.collect::<Vec<_>>().join(" "));
        }
        // ANCHOR_END: schedule_span
        self.last_step_stats = Some(stats);
        if self.record_step_stats {
            self.step_stats.push(stats);
        }
        if out.is_empty() && !swaps.is_empty() {
            // Only swaps this step (every running sequence yielded): the next step runs them.
            self.stats.num_steps += 1;
            return Ok(None);
        }
        if out.is_empty() {
            if self.has_unfinished_requests() && self.in_flight.is_empty() {
                // Cannot happen by construction (a lone request always fits the cache); if it
                // did, looping would hang the caller, so say so instead.
                return Err(EngineError::Internal(
                    "the scheduler made no progress with requests pending".into(),
                ));
            }
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// Counts a step that ran `out`.
    fn count_step(&mut self, out: &SchedulerOutput) {
        self.stats.num_steps += 1;
        self.stats.num_preemptions += out.preempted.len();
        self.stats.num_batched_tokens += out.num_batched_tokens();
        self.stats.max_batched_tokens_in_a_step = self
            .stats
            .max_batched_tokens_in_a_step
            .max(out.num_batched_tokens());
    }

    /// Keeps the logits rows of the requests that asked for them.
    fn keep_logits(&mut self, out: &SchedulerOutput, logits: Vec<Option<Vec<f32>>>) {
        let sampling = out.scheduled.iter().filter(|s| s.needs_logits);
        for (s, row) in sampling.zip(logits) {
            if let Some(row) = row {
                // Gone if it finished while a later step was in flight (async scheduling).
                if let Some(seq) = self.scheduler.sequence_mut(s.seq_id) {
                    seq.logits.push(row);
                }
            }
        }
    }

    /// Tells the workers that `finished` left, and turns them into outputs.
    fn finish_requests(
        &mut self,
        finished: Vec<Sequence>,
        step: usize,
    ) -> Result<Vec<RequestOutput>> {
        for seq in &finished {
            // A request leaves: its id, the step it finished in, its output's length.
            let _span = tracing::debug_span!(
                "finish_request",
                request = seq.seq_id.0,
                step,
                output_tokens = seq.output_token_ids.len(),
                reason = ?seq.status
            )
            .entered();
        }
        let ids: Vec<SeqId> = finished.iter().map(|seq| seq.seq_id).collect();
        self.executor.remove_requests(&ids);
        finished
            .into_iter()
            .map(|seq| self.to_output(seq))
            .collect()
    }

    // ANCHOR: step_async
    /// One step of async scheduling (vLLM v1's `--async-scheduling`): the next step is
    /// scheduled and submitted while the previous one still runs on the device, its decodes
    /// fed by placeholders that the device fills with the previous step's sampled tokens; then
    /// the previous step's tokens are read back and applied, one step late. The device never
    /// waits for the host between two steps. The cost: a request that stops is computed one
    /// token past its end (that token is dropped), and finishes are reported one step later.
    fn step_async(&mut self) -> Result<Vec<RequestOutput>> {
        let scheduled = match self.schedule_step()? {
            Some(out) => {
                let (step, seqs) = (self.stats.num_steps + 1, out.scheduled.len());
                let tokens = out.num_batched_tokens();
                let span = tracing::debug_span!(EXECUTE_SPAN, step, seqs, tokens).entered();
                self.scheduler.update_after_schedule(&out);
                self.executor.submit_model(&out)?;
                drop(span);
                self.count_step(&out);
                self.in_flight.push_back((step, out));
                true
            }
            None => false,
        };
        // The oldest step completes once another is queued behind it; or when nothing new
        // was scheduled (its tokens are what the scheduler waits for); or when no request is
        // left, so that nothing stays in flight once the engine is idle.
        let mut finished = Vec::new();
        while !self.in_flight.is_empty()
            && (self.in_flight.len() > 1 || !scheduled || !self.has_unfinished_requests())
        {
            let (step, out) = self.in_flight.pop_front().expect("checked non-empty");
            let output = {
                let _span = tracing::debug_span!("wait_for_output", step).entered();
                self.executor.complete_model()?
            };
            let span = tracing::debug_span!("update_from_output", step, finished = Empty).entered();
            self.keep_logits(&out, output.logits);
            let done = self
                .scheduler
                .update_from_async_output(&out, &output.sampled_token_ids);
            span.record("finished", done.len());
            drop(span);
            finished.extend(self.finish_requests(done, step)?);
        }
        Ok(finished)
    }
    // ANCHOR_END: step_async

    fn to_output(&self, seq: Sequence) -> Result<RequestOutput> {
        let SequenceStatus::Finished(finish_reason) = seq.status else {
            unreachable!("only finished sequences are returned")
        };
        Ok(RequestOutput {
            request_id: seq.seq_id,
            text: self.tokenizer.decode(&seq.output_token_ids, true)?,
            prompt_token_ids: seq.prompt_token_ids,
            token_ids: seq.output_token_ids,
            finish_reason,
            num_preemptions: seq.num_preemptions,
            logits: seq.logits,
        })
    }
}

/// A seed for a request that gave none, without a dependency: the standard library's
/// `RandomState` is keyed from the operating system's randomness (once per thread, and every
/// new one differs); the time is only the input it hashes.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

/// A model runner on its backend, and the cache geometry it was given.
struct BuiltExecutor {
    executor: Box<dyn Executor>,
    num_kv_blocks: usize,
    /// Host blocks of the swap space (0 unless the preemption mode is swap).
    num_swap_blocks: usize,
    max_model_len: usize,
}

/// Loads the weights onto `backend`, sizes the KV cache from what the backend has left
/// (`--num-kv-blocks` wins if given), and builds the model runner.
fn build_executor<B: Backend + 'static>(
    backend: B,
    model_config: ModelConfig,
    weights: ModelWeights,
    config: &EngineConfig,
    parts: &EngineParts,
) -> Result<BuiltExecutor>
where
    B::Tensor: 'static,
{
    let c = &model_config;
    let block_size = config.cache.block_size;
    // Tensor by tensor onto the backend, in its dtype.
    let dtype = backend.default_dtype();
    let gguf = weights.gguf_path().map(std::path::Path::to_path_buf);
    let mut weights =
        weights.load_into(c, |t| Ok(backend.upload(t.data, t.rows, t.cols, dtype)?))?;
    if let Some(gguf) = gguf {
        // The CPU backend computes from the GGUF's blocks, with the same bits (see there).
        crate::model_loader::gguf_blocks::keep_gguf_blocks(&backend, c, &mut weights, &gguf)?;
    }
    // Packed once here, so the CPU backend keeps no row-major copy beside the panels.
    crate::model_loader::pack_weights::pack_weights(&backend, &mut weights)?;
    let num_kv_blocks = match config.cache.num_kv_blocks {
        Some(n) => n,
        None => {
            let budget = backend.kv_cache_budget(config, c)?;
            let dtype_bytes = backend.default_dtype().size_in_bytes();
            (budget / kv_cache_bytes_per_block(c, block_size, dtype_bytes)).max(1)
        }
    };
    let max_model_len = c
        .max_position_embeddings
        .min(num_kv_blocks * block_size)
        .min(c.sliding_window.unwrap_or(usize::MAX));
    let limits = StepLimits {
        max_num_tokens: config.scheduler.max_num_batched_tokens,
        max_num_seqs: config.scheduler.max_num_seqs,
        max_model_len,
        block_size,
        num_heads: c.num_attention_heads,
        num_kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
    };
    let mut llama = LlamaForCausalLM::new(model_config, backend, weights)?;
    llama.backend.plan_steps(&limits)?;
    let mut runner = ModelRunner::new(llama, num_kv_blocks, block_size)?;
    runner.prepare_inputs = parts.prepare_inputs;
    runner.sample = parts.sample;
    // The swap space holds blocks in the cache's own dtype, every layer's keys and values.
    let num_swap_blocks = match config.preemption.mode {
        PreemptionMode::Swap => {
            let dtype_bytes = runner.model.backend.default_dtype().size_in_bytes();
            let block_bytes =
                kv_cache_bytes_per_block(&runner.model.config, block_size, dtype_bytes);
            config.preemption.swap_space_bytes / block_bytes.max(1)
        }
        PreemptionMode::Recompute => 0,
    };
    runner
        .kv_cache
        .allocate_swap_space(&runner.model.backend, num_swap_blocks);
    Ok(BuiltExecutor {
        executor: Box::new(runner),
        num_kv_blocks,
        num_swap_blocks,
        max_model_len,
    })
}
