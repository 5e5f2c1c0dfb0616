//! [`ThreadExecutor`]: tensor and pipeline parallelism in one process, one thread per rank.
//!
//! `tp × pp` ranks, laid out as [`super::parallel_state`] says (TP rank fastest). Under
//! pipeline parallelism (pp > 1) a rank runs its stage's layers only
//! ([`crate::model_executor::pipeline_parallel`]), its weights are its TP shard of those
//! layers ([`tensor_parallel::load_stage_shard_into`]) and its KV cache holds those layers
//! only; a step goes through the stages one after the other, each stage's ranks receiving the
//! previous stage's hidden state and sending theirs on ([`StageLink`]), and only the last
//! stage samples: its tokens are the step's. A step's sequences go through the pipeline in
//! micro-batches (`ParallelConfig::pipeline_micro_batches`, by default as many as stages), each
//! stage sending one on as soon as it is done and starting the next
//! ([`super::pipeline_stage::run_micro_batches`]), so the stages overlap; the step still ends
//! before the next is scheduled. Each rank's busy and idle time is measured
//! ([`ThreadExecutor::stage_times`]), and the schedule each step ran is recorded
//! ([`ThreadExecutor::pipeline_schedule`]) so that the bubble can be seen.
//!
//! Each rank's thread owns a whole worker: a [`CpuBackend`] holding that rank's
//! [`CpuCommunicator`], the rank's shard of the weights
//! ([`tensor_parallel::load_shard_into`]), a KV cache of its own KV heads (the same number of
//! blocks on every rank, so one block table serves them all) and a [`ModelRunner`]. The engine
//! thread drives them over channels, as vLLM's `MultiprocExecutor` drives its worker processes:
//! every rank gets every command (a step's `SchedulerOutput`, a new request's sampling
//! parameters, finished ids) and runs the same forward pass on its shard, meeting the others in
//! the collectives. Every rank gathers the same logits and draws with the same seed, so every
//! rank samples the same tokens; rank 0's are returned (and checked against the others').
//!
//! Failure: a rank whose step fails or panics reports it and, when its thread ends, drops its
//! communicator, so the other ranks' collectives fail at once ([`CommError::PeerGone`]); a rank
//! that hangs makes the others' collectives time out. Once one rank has reported an error the
//! executor waits at most the group's timeout for the rest, then returns the first error; it
//! refuses every later step, because the ranks are no longer in step.
//!
//! [`CommError::PeerGone`]: crate::distributed::CommError::PeerGone

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::comm_stats::CommStats;
use super::cpu_communicator::CpuCommunicator;
use super::parallel_state::{build_groups, RankLayout};
use super::pipeline_schedule::{ExecutedItem, ExecutedSchedule};
use super::pipeline_stage::{run_micro_batches, StageLink, StageTimes};
use crate::backend::cpu_backend::CpuBackend;
use crate::backend::cpu_backend::CpuKernels;
use crate::backend::{Backend, DeviceTime, StepLimits};
use crate::config::{EngineConfig, ModelConfig};
use crate::core::scheduler_output::SchedulerOutput;
use crate::engine_parts::EngineParts;
use crate::error::{EngineError, Result};
use crate::executor::Executor;
use crate::model_executor::llama::LlamaForCausalLM;
use crate::model_executor::pipeline_parallel::PpStage;
use crate::model_executor::tensor_parallel::{self, TpShard};
use crate::model_source::ModelWeights;
use crate::outputs::ModelRunnerOutput;
use crate::sampler::SampleFn;
use crate::sampling_params::SamplingParams;
use crate::sequence::SeqId;
use crate::worker::cache_engine::kv_cache_bytes_per_block;
use crate::worker::model_runner::ModelRunner;
use crate::worker::model_runner::PrepareInputsFn;

/// What the engine thread asks of every rank.
enum Command {
    /// A step: its batch, its number, and when the executor sent it (the schedule's zero).
    Execute(Arc<SchedulerOutput>, u64, Instant),
    AddRequest(SeqId, SamplingParams, u64),
    RemoveRequests(Vec<SeqId>),
    CommStats,
}

/// What a rank answers.
enum Reply {
    /// Its worker is built, or why not.
    Ready(Result<()>),
    /// A step's output (empty on a stage before the last), the time the rank computed and
    /// the time it waited on the previous stage, and the micro-batches it ran.
    Output(
        Result<ModelRunnerOutput>,
        Duration,
        Duration,
        Vec<ExecutedItem>,
    ),
    /// Boxed: a rank's counters are a large table, and every reply would carry its size.
    Stats(Option<Box<CommStats>>),
}

/// The parts of [`EngineParts`] a rank's worker runs (the others are the scheduler's).
#[derive(Clone, Copy)]
struct RankParts {
    kernels: CpuKernels,
    prepare_inputs: PrepareInputsFn,
    sample: SampleFn,
    shard_tensor: tensor_parallel::ShardTensorFn,
}

/// The cache geometry every rank shares.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    num_kv_blocks: usize,
    block_size: usize,
    limits: StepLimits,
}

/// Tensor- and pipeline-parallel ranks as threads of this process (see the
/// [module docs](self)).
pub struct ThreadExecutor {
    /// The whole model's shape (what the engine validates requests against).
    config: ModelConfig,
    layout: RankLayout,
    /// Per world rank, its steps' busy and idle time.
    times: Vec<StageTimes>,
    /// Steps run so far, and what the pipeline ran in the last one.
    steps: u64,
    schedule: Option<ExecutedSchedule>,
    commands: Vec<Sender<Command>>,
    replies: Receiver<(usize, Reply)>,
    threads: Vec<JoinHandle<()>>,
    timeout: Duration,
    /// Set by the first failed step: the ranks are out of step from then on.
    failed: Option<String>,
    /// KV blocks on every rank, and the longest sequence they hold.
    pub num_kv_blocks: usize,
    pub max_model_len: usize,
}

impl ThreadExecutor {
    /// Starts `tensor_parallel_size × pipeline_parallel_size` ranks, each loading its shard of
    /// its stage of `weights`, and returns once all are ready (or the first error). The KV cache gets as many
    /// blocks as `engine.cache` allows the whole group (`--num-kv-blocks`, or the CPU budget
    /// shared by the ranks). A collective waits `engine.parallel.collective_timeout` for a peer;
    /// once a rank has failed, the executor waits as long for the others to report.
    pub fn new(
        weights: ModelWeights,
        config: ModelConfig,
        engine: &EngineConfig,
        parts: &EngineParts,
    ) -> Result<Self> {
        let tp = engine.parallel.tensor_parallel_size;
        let layout = RankLayout {
            tp,
            pp: engine.parallel.pipeline_parallel_size,
        };
        let world = layout.world_size();
        let timeout = engine.parallel.collective_timeout;
        let local = tensor_parallel::rank_config(&config, tp);
        let block_size = engine.cache.block_size;
        let num_kv_blocks = engine.cache.num_kv_blocks.unwrap_or_else(|| {
            // The budget is the host's, for all ranks together (they share its memory). Each
            // stage holds its own layers' blocks, so the stages together hold every layer
            // once per TP rank: a block costs `tp` times one rank's whole-model block.
            let per_block = tp * kv_cache_bytes_per_block(&local, block_size, 4);
            (engine.cache.kv_cache_memory_bytes / per_block).max(1)
        });
        let max_model_len = config
            .max_position_embeddings
            .min(num_kv_blocks * block_size)
            .min(config.sliding_window.unwrap_or(usize::MAX));
        let geometry = Geometry {
            num_kv_blocks,
            block_size,
            limits: StepLimits {
                max_num_tokens: engine.scheduler.max_num_batched_tokens,
                max_num_seqs: engine.scheduler.max_num_seqs,
                max_model_len,
                block_size,
                num_heads: local.num_attention_heads,
                num_kv_heads: local.num_key_value_heads,
                head_dim: local.head_dim,
            },
        };
        let weights = Arc::new(weights);
        let (reply_tx, replies) = mpsc::channel();
        let mut executor = ThreadExecutor {
            config: config.clone(),
            layout,
            times: vec![StageTimes::default(); world],
            steps: 0,
            schedule: None,
            commands: Vec::with_capacity(world),
            replies,
            threads: Vec::with_capacity(world),
            timeout,
            failed: None,
            num_kv_blocks,
            max_model_len,
        };
        let micro_batches = engine.parallel.pipeline_micro_batches.unwrap_or(layout.pp);
        // Per TP slice, a channel per stage boundary for the pipeline's ticks.
        let mut ticks_in: Vec<Option<Receiver<u64>>> = (0..world).map(|_| None).collect();
        let mut ticks_out: Vec<Option<Sender<u64>>> = (0..world).map(|_| None).collect();
        for p in 1..layout.pp {
            for t in 0..tp {
                let (tx, rx) = mpsc::channel();
                ticks_out[layout.world_rank(p - 1, t)] = Some(tx);
                ticks_in[layout.world_rank(p, t)] = Some(rx);
            }
        }
        for groups in build_groups(layout, timeout) {
            let r = groups.world_rank;
            let (from_prev, to_next) = (ticks_in[r].take(), ticks_out[r].take());
            let (tx, rx) = mpsc::channel();
            let name = match layout.pp {
                1 => format!("tp-rank-{}", groups.tp_rank),
                _ => format!("pp-{}-tp-{}", groups.pp_rank, groups.tp_rank),
            };
            let rank = Rank {
                world_rank: groups.world_rank,
                shard: TpShard {
                    rank: groups.tp_rank,
                    size: tp,
                },
                stage: PpStage::new(config.num_hidden_layers, groups.pp_rank, layout.pp),
                comm: groups.tp,
                link: groups
                    .pp
                    .map(|c| StageLink::new(c).with_ticks(from_prev, to_next)),
                micro_batches,
                weights: Arc::clone(&weights),
                config: config.clone(),
                geometry,
                parts: RankParts {
                    kernels: parts.kernels,
                    prepare_inputs: parts.prepare_inputs,
                    sample: parts.sample,
                    shard_tensor: parts.shard_tensor,
                },
                replies: reply_tx.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || rank.run(rx))
                .map_err(|e| EngineError::Io(format!("cannot start a rank's thread: {e}")))?;
            executor.commands.push(tx);
            executor.threads.push(thread);
        }
        drop(reply_tx); // only the ranks hold senders: all gone means all ended
        executor.gather(None)?; // every rank's `Ready`, or the first error
        Ok(executor)
    }

    /// Sends `command()` to every rank (with `None`, sends nothing: the ranks' first replies
    /// are their `Ready`) and collects one reply from each, in rank order. Fails with the first
    /// error a rank reports, once the others have answered or the timeout has passed.
    fn gather(&mut self, command: Option<&dyn Fn() -> Command>) -> Result<Vec<Reply>> {
        if let Some(why) = &self.failed {
            return Err(EngineError::Internal(format!(
                "the parallel group failed earlier ({why}); build a new engine"
            )));
        }
        if let Some(command) = command {
            for (rank, tx) in self.commands.iter().enumerate() {
                if tx.send(command()).is_err() {
                    let why = format!("rank {rank}'s worker thread has ended");
                    self.failed = Some(why.clone());
                    return Err(EngineError::Internal(why));
                }
            }
        }
        let n = self.commands.len();
        let mut got: Vec<Option<Reply>> = (0..n).map(|_| None).collect();
        let mut first_error: Option<EngineError> = None;
        while got.iter().any(Option::is_none) {
            // Until a rank fails, a step takes as long as it takes; after, the rest have the
            // group's timeout to report (their collectives fail within it).
            let next = match first_error {
                None => self
                    .replies
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(_) => self.replies.recv_timeout(self.timeout),
            };
            let Ok((rank, reply)) = next else { break };
            match reply {
                Reply::Ready(Err(e)) | Reply::Output(Err(e), ..) => {
                    first_error.get_or_insert(e);
                    got[rank] = Some(Reply::Stats(None)); // answered, with an error
                }
                reply => got[rank] = Some(reply),
            }
        }
        if let Some(e) = first_error {
            self.failed = Some(e.to_string());
            return Err(e);
        }
        if got.iter().any(Option::is_none) {
            let why = "a parallel rank's thread ended without answering".to_string();
            self.failed = Some(why.clone());
            return Err(EngineError::Internal(why));
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// Sends a command that needs no answer; a rank that is gone is noticed at the next step.
    fn tell(&self, command: impl Fn() -> Command) {
        for tx in &self.commands {
            let _ = tx.send(command());
        }
    }
}

impl Executor for ThreadExecutor {
    fn add_request(&mut self, id: SeqId, params: &SamplingParams, seed: u64) {
        self.tell(|| Command::AddRequest(id, params.clone(), seed));
    }

    fn remove_requests(&mut self, ids: &[SeqId]) {
        self.tell(|| Command::RemoveRequests(ids.to_vec()));
    }

    fn execute_model(&mut self, scheduler_output: &SchedulerOutput) -> Result<ModelRunnerOutput> {
        let out = Arc::new(scheduler_output.clone());
        let (step, start) = (self.steps, Instant::now());
        let replies = self.gather(Some(&|| Command::Execute(Arc::clone(&out), step, start)))?;
        let wall = start.elapsed();
        self.steps += 1;
        let mut outputs = Vec::with_capacity(replies.len());
        let mut schedule = ExecutedSchedule {
            step,
            num_stages: self.layout.pp,
            wall,
            ..ExecutedSchedule::default()
        };
        for (rank, reply) in replies.into_iter().enumerate() {
            let Reply::Output(Ok(o), busy, recv_wait, items) = reply else {
                return Err(EngineError::Internal(
                    "a rank answered a step with something else".into(),
                ));
            };
            // What the step's wall time holds beyond this rank's own work is its bubble.
            let t = &mut self.times[rank];
            t.steps += 1;
            t.busy += busy;
            t.recv_wait += recv_wait;
            t.idle += wall.saturating_sub(busy);
            // A stage's TP ranks run the same items: its first rank's stand for the stage.
            if self.layout.coords(rank).1 == 0 {
                schedule.items.extend(items);
            }
            outputs.push(o);
        }
        if self.layout.pp > 1 {
            schedule.num_micro_batches = schedule.stage_order(0).len();
            self.schedule = Some(schedule);
        }
        // Only the last stage samples: its first TP rank's tokens are the step's.
        let last = self.layout.world_rank(self.layout.pp - 1, 0);
        let mut outputs = outputs.into_iter().enumerate().skip(last);
        let (_, first) = outputs.next().expect("at least one rank");
        // Same logits, same seeds: the ranks must agree, or their shards do not add up.
        for (rank, other) in outputs {
            if other.sampled_token_ids != first.sampled_token_ids {
                let why = format!("rank {rank} sampled other tokens than rank {last}");
                self.failed = Some(why.clone());
                return Err(EngineError::Internal(why));
            }
        }
        Ok(first)
    }

    fn model_config(&self) -> &ModelConfig {
        &self.config
    }

    fn backend_name(&self) -> &'static str {
        "cpu"
    }

    fn device_time(&self) -> Option<DeviceTime> {
        None
    }

    fn stage_times(&self) -> Vec<StageTimes> {
        self.times.clone()
    }

    fn pipeline_schedule(&self) -> Option<ExecutedSchedule> {
        self.schedule.clone()
    }

    fn comm_stats(&mut self) -> Vec<CommStats> {
        match self.gather(Some(&|| Command::CommStats)) {
            Ok(replies) => replies
                .into_iter()
                .filter_map(|r| match r {
                    Reply::Stats(s) => s.map(|s| *s),
                    _ => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for ThreadExecutor {
    /// Closing the command channels ends each rank's loop; then every thread is joined.
    fn drop(&mut self) {
        self.commands.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What one rank's thread starts with.
struct Rank {
    world_rank: usize,
    shard: TpShard,
    stage: PpStage,
    /// Its stage's TP group.
    comm: CpuCommunicator,
    /// Its link to the neighbouring stages (`None` without pipeline parallelism).
    link: Option<StageLink>,
    /// Micro-batches per step under pipeline parallelism.
    micro_batches: usize,
    weights: Arc<ModelWeights>,
    /// The whole model's shape; the rank runs [`tensor_parallel::rank_config`] of it.
    config: ModelConfig,
    geometry: Geometry,
    parts: RankParts,
    replies: Sender<(usize, Reply)>,
}

impl Rank {
    /// Builds this rank's worker, then serves commands until the channel closes or a step
    /// fails (the rank's communicator is dropped with it, so its peers fail at once too).
    fn run(mut self, commands: Receiver<Command>) {
        let (rank, replies) = (self.world_rank, self.replies.clone());
        let who = match self.stage.size {
            1 => format!("tensor-parallel rank {rank}"),
            _ => format!(
                "rank {rank} (pipeline stage {}, tensor-parallel rank {})",
                self.stage.rank, self.shard.rank
            ),
        };
        let _span = tracing::info_span!(
            "rank",
            rank,
            tp_rank = self.shard.rank,
            pp_rank = self.stage.rank
        )
        .entered();
        let mut link = self.link.take();
        let micro_batches = self.micro_batches;
        let built = catch_unwind(AssertUnwindSafe(|| self.build()))
            .unwrap_or_else(|p| Err(panicked(&who, "loading its shard", p)));
        let mut runner = match built {
            Ok(runner) => runner,
            Err(e) => {
                let _ = replies.send((rank, Reply::Ready(Err(e))));
                return;
            }
        };
        if replies.send((rank, Reply::Ready(Ok(())))).is_err() {
            return;
        }
        while let Ok(command) = commands.recv() {
            let reply = match command {
                Command::Execute(out, step, step_start) => {
                    let start = Instant::now();
                    let m = micro_batches;
                    let result = catch_unwind(AssertUnwindSafe(|| match link.as_mut() {
                        Some(link) => {
                            run_micro_batches(&mut runner, link, &out, m, step, step_start)
                        }
                        None => runner.execute_model(&out).map(|o| (o, Vec::new())),
                    }));
                    let (result, items) = match result {
                        Ok(Ok((o, items))) => (Ok(o), items),
                        Ok(Err(e)) => (Err(EngineError::from(e)), Vec::new()),
                        Err(p) => (Err(panicked(&who, "running a step", p)), Vec::new()),
                    };
                    let recv_wait = link.as_mut().map_or(Duration::ZERO, StageLink::take_waited);
                    let busy = start.elapsed().saturating_sub(recv_wait);
                    let failed = result.is_err();
                    let _ = replies.send((rank, Reply::Output(result, busy, recv_wait, items)));
                    if failed {
                        return; // drops the communicator: the peers fail now, not at a timeout
                    }
                    continue;
                }
                Command::AddRequest(id, params, seed) => {
                    runner.add_request(id, &params, seed);
                    continue;
                }
                Command::RemoveRequests(ids) => {
                    runner.remove_requests(&ids);
                    continue;
                }
                Command::CommStats => {
                    // The TP group's collectives and the PP group's sends and receives.
                    let mut stats = runner.model.backend.comm_stats().unwrap_or_default();
                    if let Some(link) = &link {
                        stats.merge(link.stats());
                    }
                    Reply::Stats(Some(Box::new(stats)))
                }
            };
            if replies.send((rank, reply)).is_err() {
                return;
            }
        }
    }

    /// The rank's backend, shard, model and KV cache.
    fn build(self) -> Result<ModelRunner<CpuBackend>> {
        let Rank {
            shard,
            stage,
            comm,
            weights,
            config,
            geometry: g,
            parts,
            ..
        } = self;
        let backend = CpuBackend::with_communicator(parts.kernels, Box::new(comm));
        let dtype = backend.default_dtype();
        let shard_weights = tensor_parallel::load_stage_shard_with(
            &weights,
            &config,
            shard,
            &stage,
            parts.shard_tensor,
            |t| Ok(backend.upload(t.data, t.rows, t.cols, dtype)?),
        )?;
        drop(weights);
        // The rank's shape: its heads and MLP slice, its stage's layers (and so its KV cache).
        let mut local = tensor_parallel::rank_config(&config, shard.size);
        local.num_hidden_layers = stage.layers.len();
        let mut llama = LlamaForCausalLM::new(local, backend, shard_weights)?.with_stage(stage);
        llama.backend.plan_steps(&g.limits)?;
        let mut runner = ModelRunner::new(llama, g.num_kv_blocks, g.block_size)?;
        runner.prepare_inputs = parts.prepare_inputs;
        runner.sample = parts.sample;
        Ok(runner)
    }
}

/// A rank's panic as an engine error, with the panic's message when it has one.
fn panicked(who: &str, doing: &str, payload: Box<dyn Any + Send>) -> EngineError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    EngineError::Internal(format!("{who} panicked while {doing}: {message}"))
}
