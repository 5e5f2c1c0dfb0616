//! [`ProcessExecutor`]: tensor and pipeline parallelism with one process per rank, as vLLM's
//! `MultiprocExecutor` (and, across hosts, as torchrun starts ranks).
//!
//! `lab launch --nproc-per-node N -- generate --tp 2 ...` starts N copies of `lab generate`,
//! each told its place ([`LaunchSpec`]). Every process loads the model and joins the launch
//! ([`super::bootstrap`]): rank 0 is the **driver**, it runs the engine (scheduler,
//! tokenizer, output) with this executor and a worker for its own shard; every other rank runs
//! [`super::process_worker::serve_rank`], a worker that serves the driver's commands over its
//! control socket until told to stop. Each rank's worker is the same [`RankWorker`] the thread
//! executor runs, with its own shard, stage and KV cache, and communicators over TCP
//! ([`super::tcp_communicator`]) that run the same ring and count the same bytes.
//!
//! The driver is the [`ThreadExecutor`]'s: its own rank runs in a thread, and each other rank
//! is a pair of threads that write its commands to its socket and read its replies, so steps,
//! the check that the ranks sampled alike, failures and counters are one code path for threads
//! and processes. A step crosses as a [`StepDelta`](super::step_delta::StepDelta): what
//! changed since the last one.
//!
//! Failure: a rank that dies closes its sockets; its peers' collectives fail at once and the
//! driver's reader sees its control socket end, so every rank stops with a one-line error
//! naming the rank, and `lab launch` exits non-zero. A hung rank makes its peers' collectives
//! time out after `--collective-timeout`.
//!
//! [`RankWorker`]: super::rank_worker::RankWorker

use std::sync::Arc;

use super::bootstrap::{bootstrap, ControlLink, LaunchSpec, Shared};
use super::comm_stats::CommStats;
use super::parallel_state::RankLayout;
use super::pipeline_schedule::ExecutedSchedule;
use super::pipeline_stage::{StageLink, StageTimes};
use super::rank_devices::{nccl_ids, rank_device};
use super::rank_worker::{tp_cuda_graphs, Geometry, RankParts, RankSpec};
use super::step_delta::StepEncoder;
use super::thread_executor::{RankHandle, ThreadExecutor};
use crate::backend::DeviceTime;
use crate::config::{EngineConfig, ModelConfig};
use crate::core::scheduler_output::SchedulerOutput;
use crate::engine_parts::EngineParts;
use crate::error::{EngineError, Result};
use crate::executor::Executor;
use crate::model_executor::pipeline_parallel::PpStage;
use crate::model_executor::tensor_parallel::TpShard;
use crate::model_source::ModelWeights;
use crate::outputs::ModelRunnerOutput;
use crate::sampling_params::SamplingParams;
use crate::sequence::SeqId;
use kernels::nccl::NcclId;

/// The driver's executor: rank 0 of a launch (see the [module docs](self)).
pub struct ProcessExecutor {
    inner: ThreadExecutor,
    /// KV blocks on every rank, and the longest sequence they hold.
    pub num_kv_blocks: usize,
    pub max_model_len: usize,
}

impl ProcessExecutor {
    /// Joins the launch `spec` as rank 0, loads rank 0's shard, and returns once every rank
    /// has built its worker (or with the first error).
    pub fn new(
        weights: ModelWeights,
        config: ModelConfig,
        engine: &EngineConfig,
        parts: &EngineParts,
        spec: &LaunchSpec,
    ) -> Result<Self> {
        if spec.rank() != 0 {
            return Err(EngineError::InvalidArgument(format!(
                "rank {} is a worker: it serves rank 0 (process_worker::serve_rank) and runs \
                 no engine",
                spec.rank()
            )));
        }
        let joined = join_launch(weights, &config, engine, parts, spec)?;
        let ControlLink::Driver(control) = joined.control else {
            unreachable!("rank 0 drives")
        };
        let mut ranks = vec![RankHandle::Thread(Box::new(joined.spec))];
        ranks.extend(
            control
                .into_iter()
                .skip(1)
                .flatten()
                .map(RankHandle::Remote),
        );
        let timeout = engine.parallel.collective_timeout;
        let inner = ThreadExecutor::start(config, joined.layout, timeout, joined.geometry, ranks)?;
        Ok(ProcessExecutor {
            num_kv_blocks: inner.num_kv_blocks,
            max_model_len: inner.max_model_len,
            inner,
        })
    }

    /// What the step broadcasts have cost so far (see [`ThreadExecutor::step_encoder`]).
    pub fn step_encoder(&self) -> &StepEncoder {
        self.inner.step_encoder()
    }
}

/// What joining a launch gives one rank.
pub(super) struct Joined {
    pub spec: RankSpec,
    pub control: ControlLink,
    pub layout: RankLayout,
    pub geometry: Geometry,
}

/// Bootstraps this process's rank and describes its worker: the same [`RankSpec`] the thread
/// executor builds for a thread, over TCP communicators.
pub(super) fn join_launch(
    weights: ModelWeights,
    config: &ModelConfig,
    engine: &EngineConfig,
    parts: &EngineParts,
    spec: &LaunchSpec,
) -> Result<Joined> {
    let layout = RankLayout {
        tp: engine.parallel.tensor_parallel_size,
        pp: engine.parallel.pipeline_parallel_size,
    };
    // Rank 0 sizes the KV cache and makes the NCCL ids before anyone loads a weight (the
    // others wait in the rendezvous), then hands both to every rank.
    let shared = match spec.rank() {
        0 => {
            let (geometry, num_gpus) = Geometry::for_device(config, engine, layout)?;
            let ids = nccl_ids(engine.device, layout, num_gpus, spec.nproc_per_node)?;
            Shared {
                unique_id: ids.iter().flatten().flat_map(|id| id.to_bytes()).collect(),
                num_kv_blocks: geometry.num_kv_blocks,
            }
        }
        _ => Shared::default(),
    };
    let groups = bootstrap(spec, layout, engine.parallel.collective_timeout, shared)?;
    let mut engine = *engine;
    engine.cache.num_kv_blocks = Some(groups.shared.num_kv_blocks);
    let (geometry, num_gpus) = Geometry::for_device(config, &engine, layout)?;
    // One id per stage's TP group, or none: the host path.
    let nccl_id = groups
        .shared
        .unique_id
        .chunks(NcclId::LEN)
        .nth(groups.pp_rank)
        .map(NcclId::from_bytes)
        .transpose()
        .map_err(|e| EngineError::Internal(format!("rank 0's NCCL id: {e}")))?;
    let link = groups
        .pp
        .map(|c| StageLink::new(c).with_ticks(groups.ticks_in, groups.ticks_out));
    let spec = RankSpec {
        world_rank: groups.world_rank,
        device: rank_device(engine.device, groups.world_rank, num_gpus),
        cuda_graphs: tp_cuda_graphs(&engine, nccl_id.is_some()),
        nccl_id,
        // Another process's device addresses mean nothing here (that would take CUDA IPC).
        peers: None,
        shard: TpShard {
            rank: groups.tp_rank,
            size: layout.tp,
        },
        stage: PpStage::new(config.num_hidden_layers, groups.pp_rank, layout.pp),
        comm: groups.tp,
        link,
        micro_batches: engine.parallel.pipeline_micro_batches.unwrap_or(layout.pp),
        weights: Arc::new(weights),
        config: config.clone(),
        geometry,
        parts: RankParts::from(parts),
    };
    Ok(Joined {
        spec,
        control: groups.control,
        layout,
        geometry,
    })
}

impl Executor for ProcessExecutor {
    fn add_request(&mut self, id: SeqId, params: &SamplingParams, seed: u64) {
        self.inner.add_request(id, params, seed)
    }

    fn remove_requests(&mut self, ids: &[SeqId]) {
        self.inner.remove_requests(ids)
    }

    fn execute_model(&mut self, scheduler_output: &SchedulerOutput) -> Result<ModelRunnerOutput> {
        self.inner.execute_model(scheduler_output)
    }

    fn model_config(&self) -> &ModelConfig {
        self.inner.model_config()
    }

    fn device_time(&self) -> Option<DeviceTime> {
        self.inner.device_time()
    }

    fn comm_stats(&mut self) -> Vec<CommStats> {
        self.inner.comm_stats()
    }

    fn stage_times(&self) -> Vec<StageTimes> {
        self.inner.stage_times()
    }

    fn pipeline_schedule(&self) -> Option<ExecutedSchedule> {
        self.inner.pipeline_schedule()
    }

    fn broadcast_stats(&self) -> Option<super::BroadcastStats> {
        self.inner.broadcast_stats()
    }
}
