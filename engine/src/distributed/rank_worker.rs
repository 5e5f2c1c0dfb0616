//! [`RankWorker`]: one rank's worker (its shard, its stage, its KV cache, its model runner) and
//! the commands it serves, whether it lives in a thread ([`super::thread_executor`]) or in a
//! process of its own ([`super::process_executor`]).
//!
//! A worker keeps, besides its runner, the per-request state a [`StepDelta`] is applied to
//! ([`StepDecoder`]): each step it rebuilds the whole [`SchedulerOutput`] from what changed and
//! runs it, as vLLM v1's workers keep their `CachedRequestState`s.
//!
//! [`SchedulerOutput`]: crate::core::scheduler_output::SchedulerOutput

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::comm_stats::CommStats;
use super::communicator::Communicator;
use super::cpu_communicator::CpuCommunicator;
use super::peer_rendezvous::PeerRendezvous;
use super::pipeline_schedule::ExecutedItem;
use super::pipeline_stage::{run_micro_batches, StageLink};
use super::step_delta::{StepDecoder, StepDelta};
use crate::backend::cpu_backend::{CpuBackend, CpuKernels};
use crate::backend::cuda_backend::CudaBackend;
use crate::backend::{Backend, DeviceTime, StepLimits};
use crate::config::{Device, EngineConfig, ModelConfig};
use crate::engine_parts::EngineParts;
use crate::error::{EngineError, Result};
use crate::model_executor::llama::LlamaForCausalLM;
use crate::model_executor::pipeline_parallel::PpStage;
use crate::model_executor::tensor_parallel::{self, TpShard};
use crate::model_source::ModelWeights;
use crate::outputs::ModelRunnerOutput;
use crate::sampler::SampleFn;
use crate::sampling_params::SamplingParams;
use crate::sequence::SeqId;
use crate::worker::cache_engine::kv_cache_bytes_per_block;
use crate::worker::model_runner::{ModelRunner, PrepareInputsFn};
use kernels::nccl::{NcclId, NcclRank};

/// What the driver asks of every rank.
#[derive(Debug, Clone)]
pub enum Command {
    /// A step: what changed since the last one, its number, and when this rank was given it
    /// (the zero of its micro-batches' wall-clock times).
    Execute(Arc<StepDelta>, u64, Instant),
    AddRequest(SeqId, SamplingParams, u64),
    CommStats,
    /// The driver is done: the rank ends (processes only; threads end when their channel
    /// closes).
    Shutdown,
}

/// What a rank answers.
#[derive(Debug)]
pub enum Reply {
    /// Its worker is built, or why not.
    Ready(Result<()>),
    /// A step's output (empty on a stage before the last), the time the rank computed and
    /// the time it waited on the previous stage, the micro-batches it ran, and its device's
    /// time over every step so far (GPU ranks).
    Output(
        Result<ModelRunnerOutput>,
        Duration,
        Duration,
        Vec<ExecutedItem>,
        Option<DeviceTime>,
    ),
    /// Boxed: a rank's counters are a large table, and every reply would carry its size.
    Stats(Option<Box<CommStats>>),
}

/// The parts of [`EngineParts`] a rank's worker runs (the others are the scheduler's).
#[derive(Clone, Copy)]
pub struct RankParts {
    pub kernels: CpuKernels,
    pub prepare_inputs: PrepareInputsFn,
    pub sample: SampleFn,
    pub shard_tensor: tensor_parallel::ShardTensorFn,
}

impl From<&EngineParts> for RankParts {
    fn from(parts: &EngineParts) -> Self {
        RankParts {
            kernels: parts.kernels,
            prepare_inputs: parts.prepare_inputs,
            sample: parts.sample,
            shard_tensor: parts.shard_tensor,
        }
    }
}

/// The cache geometry every rank shares.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub num_kv_blocks: usize,
    pub block_size: usize,
    /// The longest sequence the blocks hold.
    pub max_model_len: usize,
    pub limits: StepLimits,
}

impl Geometry {
    /// The geometry for `engine.device`, and the GPUs the ranks are placed on (0 on the CPU):
    /// on GPUs the cache is sized from their memory ([`super::rank_devices`]) unless
    /// `--num-kv-blocks` says.
    pub fn for_device(
        config: &ModelConfig,
        engine: &EngineConfig,
        layout: super::parallel_state::RankLayout,
    ) -> Result<(Self, usize)> {
        let Device::Cuda(first) = engine.device else {
            return Ok((Geometry::new(config, engine), 0));
        };
        let num_gpus = super::rank_devices::gpu_count()?;
        let mut engine = *engine;
        if engine.cache.num_kv_blocks.is_none() {
            let blocks =
                super::rank_devices::kv_blocks_on_gpus(config, &engine, layout, first, num_gpus)?;
            engine.cache.num_kv_blocks = Some(blocks);
        }
        Ok((Geometry::new(config, &engine), num_gpus))
    }

    /// The KV cache gets as many blocks as `engine.cache` allows the whole group
    /// (`--num-kv-blocks`, or the CPU budget shared by the ranks).
    pub fn new(config: &ModelConfig, engine: &EngineConfig) -> Self {
        let tp = engine.parallel.tensor_parallel_size;
        let local = tensor_parallel::rank_config(config, tp);
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
        Geometry {
            num_kv_blocks,
            block_size,
            max_model_len,
            limits: StepLimits {
                max_num_tokens: engine.scheduler.max_num_batched_tokens,
                max_num_seqs: engine.scheduler.max_num_seqs,
                max_model_len,
                block_size,
                num_heads: local.num_attention_heads,
                num_kv_heads: local.num_key_value_heads,
                head_dim: local.head_dim,
            },
        }
    }
}

/// What one rank's worker is built from.
pub struct RankSpec {
    pub world_rank: usize,
    /// Where its model runs: the CPU, or its GPU.
    pub device: Device,
    /// Its TP group's NCCL id, when the group's ranks each have a GPU of their own (the
    /// all-reduces then run on NCCL; see `backend::cuda_tensor_parallel`).
    pub nccl_id: Option<NcclId>,
    /// Whether its decode steps replay CUDA graphs: only where a step never touches the host
    /// (collectives on NCCL, no pipeline stages to receive from); see [`tp_cuda_graphs`].
    pub cuda_graphs: bool,
    /// Its TP group's meeting point for the custom all-reduce's buffers, when the group sums
    /// its small all-reduces over peer memory (threads of one process on GPUs; see
    /// `backend::cuda_tensor_parallel`).
    pub peers: Option<Arc<PeerRendezvous>>,
    pub shard: TpShard,
    pub stage: PpStage,
    /// Its stage's TP group.
    pub comm: CpuCommunicator,
    /// Its link to the neighbouring stages (`None` without pipeline parallelism).
    pub link: Option<StageLink>,
    /// Micro-batches per step under pipeline parallelism.
    pub micro_batches: usize,
    pub weights: Arc<ModelWeights>,
    /// The whole model's shape; the rank runs [`tensor_parallel::rank_config`] of it.
    pub config: ModelConfig,
    pub geometry: Geometry,
    pub parts: RankParts,
}

impl RankSpec {
    /// How errors name this rank.
    pub fn who(&self) -> String {
        match self.stage.size {
            1 => format!("tensor-parallel rank {}", self.world_rank),
            _ => format!(
                "rank {} (pipeline stage {}, tensor-parallel rank {})",
                self.world_rank, self.stage.rank, self.shard.rank
            ),
        }
    }

    /// The `rank` span every command of this rank runs in.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "rank",
            rank = self.world_rank,
            tp_rank = self.shard.rank,
            pp_rank = self.stage.rank
        )
    }
}

/// A rank's model runner on the backend of its device.
#[allow(clippy::large_enum_variant)] // one per rank, never moved in a loop
enum RankRunner {
    Cpu(ModelRunner<CpuBackend>),
    Cuda(ModelRunner<CudaBackend>),
}

/// Runs `$body` with `$r` bound to the rank's runner, whichever its backend.
macro_rules! with_runner {
    ($runner:expr, $r:ident => $body:expr) => {
        match $runner {
            RankRunner::Cpu($r) => $body,
            RankRunner::Cuda($r) => $body,
        }
    };
}

/// One rank's worker (see the [module docs](self)).
pub struct RankWorker {
    runner: RankRunner,
    link: Option<StageLink>,
    micro_batches: usize,
    who: String,
    requests: StepDecoder,
}

impl RankWorker {
    /// Loads the rank's shard, builds its model and KV cache; a panic while loading is an
    /// error naming the rank.
    pub fn build(mut spec: RankSpec) -> Result<Self> {
        let (who, link, micro_batches) = (spec.who(), spec.link.take(), spec.micro_batches);
        let runner = catch_unwind(AssertUnwindSafe(|| build_runner(spec)))
            .unwrap_or_else(|p| Err(panicked(&who, "loading its shard", p)))?;
        Ok(RankWorker {
            runner,
            link,
            micro_batches,
            who,
            requests: StepDecoder::default(),
        })
    }

    /// Serves one command; `None` for those that need no answer. After a reply carrying an
    /// error the rank must stop (its peers are out of step).
    pub fn handle(&mut self, command: Command) -> Option<Reply> {
        match command {
            Command::Execute(delta, step, step_start) => {
                Some(self.execute(&delta, step, step_start))
            }
            Command::AddRequest(id, params, seed) => {
                with_runner!(&mut self.runner, r => r.add_request(id, &params, seed));
                None
            }
            Command::CommStats => {
                // The TP group's collectives and the PP group's sends and receives.
                let stats = with_runner!(&self.runner, r => r.model.backend.comm_stats());
                let mut stats = stats.unwrap_or_default();
                if let Some(link) = &self.link {
                    stats.merge(link.stats());
                }
                Some(Reply::Stats(Some(Box::new(stats))))
            }
            Command::Shutdown => None,
        }
    }

    /// One step: rebuild it from the delta, run this rank's part, time it.
    fn execute(&mut self, delta: &StepDelta, step: u64, step_start: Instant) -> Reply {
        // The rank's part of step `step + 1` (the engine's numbering): its ops open inside.
        let _span = tracing::debug_span!("worker_step", step = step + 1).entered();
        let start = Instant::now();
        let m = self.micro_batches;
        let (runner, link, requests) = (&mut self.runner, &mut self.link, &mut self.requests);
        with_runner!(&mut *runner, r => r.remove_requests(&delta.finished));
        let result = catch_unwind(AssertUnwindSafe(|| {
            let out = tracing::debug_span!("decode_step_delta", step = step + 1)
                .in_scope(|| requests.decode(delta))
                .map_err(EngineError::Internal)?;
            with_runner!(runner, r => match link.as_mut() {
                Some(link) => Ok(run_micro_batches(r, link, &out, m, step, step_start)?),
                None => Ok(r.execute_model(&out).map(|o| (o, Vec::new()))?),
            })
        }));
        let (result, items) = match result {
            Ok(Ok((o, items))) => (Ok(o), items),
            Ok(Err(e)) => (Err(e), Vec::new()),
            Err(p) => (Err(panicked(&self.who, "running a step", p)), Vec::new()),
        };
        let recv_wait = link.as_mut().map_or(Duration::ZERO, StageLink::take_waited);
        let busy = start.elapsed().saturating_sub(recv_wait);
        let device = with_runner!(&*runner, r => r.model.backend.device_time());
        Reply::Output(result, busy, recv_wait, items, device)
    }
}

/// Whether the ranks of a group replay their decode steps as CUDA graphs: with `engine`'s graphs
/// on, a TP group on NCCL (`nccl`), no pipeline stages (a stage receives its input through the
/// host, which a recorded graph would replay from a stale address). Without graphs a rank
/// launches a step's few hundred kernels one by one, and on the Llama-2-7B shape over two
/// H200s that made TP 2 no faster than one GPU (the performance page); `--enforce-eager`
/// turns them off.
pub fn tp_cuda_graphs(engine: &EngineConfig, nccl: bool) -> bool {
    engine.cuda_graphs && nccl && engine.parallel.pipeline_parallel_size == 1
}

/// The rank's backend (on its device), shard, model and KV cache.
fn build_runner(spec: RankSpec) -> Result<RankRunner> {
    let RankSpec {
        device,
        nccl_id,
        cuda_graphs,
        peers,
        comm,
        shard,
        stage,
        weights,
        config,
        geometry,
        parts,
        ..
    } = spec;
    let rank = RankModel {
        shard,
        stage,
        weights,
        config,
        geometry,
        parts,
    };
    let timeout = comm.timeout();
    let comm = Box::new(comm);
    Ok(match device {
        // Graphs where the spec allows them (`with_communicator` turns them off again when the
        // collectives pass through the host; see `backend::cuda_tensor_parallel`).
        Device::Cuda(ordinal) => {
            let backend = CudaBackend::new(ordinal)?.with_cuda_graphs(cuda_graphs);
            let (tp_rank, tp) = (comm.rank(), comm.world_size());
            let nccl = nccl_id
                .map(|id| NcclRank::new(backend.stream().clone(), tp_rank, tp, id))
                .transpose()
                .map_err(|e| EngineError::Internal(format!("NCCL for tensor parallelism: {e}")))?;
            let mut backend = backend.with_communicator(comm, nccl, timeout);
            if let Some(peers) = peers {
                backend = backend.with_custom_all_reduce(&peers)?;
            }
            RankRunner::Cuda(rank.build(backend)?)
        }
        Device::Cpu | Device::Auto => {
            RankRunner::Cpu(rank.build(CpuBackend::with_communicator(parts.kernels, comm))?)
        }
    })
}

/// What a rank's model is made of, whatever its backend.
struct RankModel {
    shard: TpShard,
    stage: PpStage,
    weights: Arc<ModelWeights>,
    config: ModelConfig,
    geometry: Geometry,
    parts: RankParts,
}

impl RankModel {
    /// Loads the rank's shard onto `backend` and builds its model and KV cache.
    fn build<B: Backend>(self, backend: B) -> Result<ModelRunner<B>> {
        let RankModel {
            shard,
            stage,
            weights,
            config,
            geometry: g,
            parts,
        } = self;
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
pub fn panicked(who: &str, doing: &str, payload: Box<dyn Any + Send>) -> EngineError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    EngineError::Internal(format!("{who} panicked while {doing}: {message}"))
}
