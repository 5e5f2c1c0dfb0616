//! [`ThreadExecutor`]: tensor and pipeline parallelism in one process, one thread per rank.
//!
//! `tp × pp` ranks, laid out as [`super::parallel_state`] says (TP rank fastest). Under
//! pipeline parallelism (pp > 1) a rank runs its stage's layers only
//! ([`crate::model_executor::pipeline_parallel`]), its weights are its TP shard of those
//! layers ([`load_stage_shard_into`]) and its KV cache holds those layers
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
//! ([`load_shard_into`]), a KV cache of its own KV heads (the same number of
//! blocks on every rank, so one block table serves them all) and a [`ModelRunner`]. The engine
//! thread drives them over channels, as vLLM's `MultiprocExecutor` drives its worker processes:
//! every rank gets every command (what changed in a step's `SchedulerOutput`, a
//! [`StepDelta`](super::step_delta::StepDelta), and a new request's sampling parameters) and
//! runs the same forward pass on its shard ([`RankWorker`]), meeting the others in the
//! collectives. Every rank gathers the same logits and draws with the same seed, so every
//! rank samples the same tokens; rank 0's are returned (and checked against the others').
//!
//! The same driver serves ranks that are processes ([`super::process_executor`]): there a rank
//! is a `RankHandle::Remote`, a thread that writes its commands to its control socket and
//! one that reads its replies into the same channel, so everything below holds for both.
//!
//! Failure: a rank whose step fails or panics reports it and, when its thread ends, drops its
//! communicator, so the other ranks' collectives fail at once ([`CommError::PeerGone`]); a rank
//! that hangs makes the others' collectives time out. Once one rank has reported an error the
//! executor waits at most the group's timeout for the rest, then returns the first error; it
//! refuses every later step, because the ranks are no longer in step.
//!
//! [`CommError::PeerGone`]: crate::distributed::CommError::PeerGone
//! [`load_stage_shard_into`]: crate::model_executor::tensor_parallel::load_stage_shard_into
//! [`load_shard_into`]: crate::model_executor::tensor_parallel::load_shard_into
//! [`CpuBackend`]: crate::backend::cpu_backend::CpuBackend
//! [`CpuCommunicator`]: super::cpu_communicator::CpuCommunicator
//! [`ModelRunner`]: crate::worker::model_runner::ModelRunner

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::net::TcpStream;

use super::comm_stats::CommStats;
use super::control_messages::{decode_reply, encode_command};
use super::parallel_state::{build_groups, RankLayout};
use super::peer_rendezvous::PeerRendezvous;
use super::pipeline_schedule::ExecutedSchedule;
use super::pipeline_stage::{StageLink, StageTimes};
use super::rank_devices::{custom_all_reduce_group, nccl_ids, rank_device};
use super::rank_worker::{
    tp_cuda_graphs, Command, Geometry, RankParts, RankSpec, RankWorker, Reply,
};
use super::spin_wait::{recv_until, spin_for};
use super::step_delta::StepEncoder;
use super::wire::{read_frame, write_frame};
use crate::backend::DeviceTime;
use crate::config::{Device, EngineConfig, ModelConfig};
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

/// Tensor- and pipeline-parallel ranks as threads of this process (see the
/// [module docs](self)).
pub struct ThreadExecutor {
    /// The whole model's shape (what the engine validates requests against).
    config: ModelConfig,
    layout: RankLayout,
    /// Per world rank, its steps' busy and idle time.
    times: Vec<StageTimes>,
    /// Rank 0's device time over every step so far, as its last reply said (GPU ranks).
    device_time: Option<DeviceTime>,
    /// Steps run so far, and what the pipeline ran in the last one.
    steps: u64,
    schedule: Option<ExecutedSchedule>,
    commands: Vec<Sender<Command>>,
    replies: Receiver<(usize, Reply)>,
    threads: Vec<JoinHandle<()>>,
    timeout: Duration,
    /// Set by the first failed step: the ranks are out of step from then on.
    failed: Option<String>,
    /// What the ranks hold of each request; each step sends only what changed.
    encoder: StepEncoder,
    /// KV blocks on every rank, and the longest sequence they hold.
    pub num_kv_blocks: usize,
    pub max_model_len: usize,
    /// Rank 0's device (rank 0 always runs in this process; a launch's ranks share one
    /// `--device`): how long this thread polls for the ranks' replies before it sleeps
    /// (`spin_wait::spin_for`).
    device: Device,
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
        let (geometry, num_gpus) = Geometry::for_device(&config, engine, layout)?;
        let nccl_ids = nccl_ids(engine.device, layout, num_gpus, layout.world_size())?;
        let peers: Vec<Option<Arc<PeerRendezvous>>> = (0..layout.pp)
            .map(|p| {
                let gpus: Vec<Device> = (0..tp)
                    .map(|t| rank_device(engine.device, layout.world_rank(p, t), num_gpus))
                    .collect();
                custom_all_reduce_group(engine, &gpus)
                    .then(|| Arc::new(PeerRendezvous::new(tp, timeout)))
            })
            .collect();
        let weights = Arc::new(weights);
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
        let ranks = build_groups(layout, timeout)
            .into_iter()
            .map(|groups| {
                let r = groups.world_rank;
                let (from_prev, to_next) = (ticks_in[r].take(), ticks_out[r].take());
                RankHandle::Thread(Box::new(RankSpec {
                    world_rank: groups.world_rank,
                    device: rank_device(engine.device, r, num_gpus),
                    nccl_id: nccl_ids[groups.pp_rank],
                    cuda_graphs: tp_cuda_graphs(engine, nccl_ids[groups.pp_rank].is_some()),
                    peers: peers[groups.pp_rank].clone(),
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
                    parts: RankParts::from(parts),
                }))
            })
            .collect();
        Self::start(config, layout, timeout, geometry, ranks)
    }

    /// Starts each rank where its handle says (in world-rank order) and returns once all are
    /// ready, or with the first error. A remote rank gets a forwarding thread that writes
    /// each command to its control socket and a reader thread that turns its frames into
    /// replies, so the executor drives threads and processes the same way.
    pub(super) fn start(
        config: ModelConfig,
        layout: RankLayout,
        timeout: Duration,
        geometry: Geometry,
        ranks: Vec<RankHandle>,
    ) -> Result<Self> {
        let world = ranks.len();
        let (reply_tx, replies) = mpsc::channel();
        let mut executor = ThreadExecutor {
            config,
            layout,
            times: vec![StageTimes::default(); world],
            device_time: None,
            steps: 0,
            schedule: None,
            commands: Vec::with_capacity(world),
            replies,
            threads: Vec::with_capacity(world),
            timeout,
            failed: None,
            encoder: StepEncoder::default(),
            num_kv_blocks: geometry.num_kv_blocks,
            max_model_len: geometry.max_model_len,
            device: Device::Cpu,
        };
        for (rank, handle) in ranks.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let replies = reply_tx.clone();
            let thread = match handle {
                RankHandle::Thread(spec) => {
                    if rank == 0 {
                        executor.device = spec.device;
                    }
                    let (p, t) = layout.coords(rank);
                    let name = match layout.pp {
                        1 => format!("tp-rank-{t}"),
                        _ => format!("pp-{p}-tp-{t}"),
                    };
                    std::thread::Builder::new()
                        .name(name)
                        .spawn(move || serve(*spec, rx, replies))
                }
                RankHandle::Remote(stream) => remote_rank(rank, stream, rx, replies),
            }
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
        let (start, loading) = (Instant::now(), command.is_none());
        // A rank that stops where no collective waits on it (while the ranks load, or after
        // its step's last collective, before its reply) makes no peer time out. So once one
        // rank has answered, the others get three times as long as it took, plus the group's
        // timeout: they load the same shards, and a step's ranks end within a few of its
        // micro-batches of each other.
        let mut ready_by: Option<Instant> = None;
        while got.iter().any(Option::is_none) {
            // Until a rank fails, a step takes as long as it takes; after, the rest have the
            // group's timeout to report (their collectives fail within it).
            let next = match (&first_error, ready_by) {
                (Some(_), _) => self.replies.recv_timeout(self.timeout),
                (None, by) => recv_until(&self.replies, spin_for(self.device), by),
            };
            if let (Err(RecvTimeoutError::Timeout), None) = (&next, &first_error) {
                let waiting: Vec<usize> = (0..n).filter(|&r| got[r].is_none()).collect();
                let what = if loading { "load" } else { "answer the step" };
                let why = format!(
                    "timed out after {:.1} s waiting for rank(s) {waiting:?} to {what} (stopped \
                     or hung?); the other ranks had answered",
                    start.elapsed().as_secs_f64()
                );
                self.failed = Some(why.clone());
                return Err(EngineError::Internal(why));
            }
            let Ok((rank, reply)) = next else { break };
            if ready_by.is_none() {
                ready_by = Some(Instant::now() + 3 * start.elapsed() + self.timeout);
            }
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

    /// What the step broadcasts have cost so far: steps, and bytes sent as deltas against
    /// what the whole outputs would have cost (per rank; every rank gets the same).
    pub fn step_encoder(&self) -> &StepEncoder {
        &self.encoder
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
        // Told with the next step, as vLLM's `finished_req_ids`.
        self.encoder.finish(ids);
    }

    fn execute_model(&mut self, scheduler_output: &SchedulerOutput) -> Result<ModelRunnerOutput> {
        // The hand-off: the step as a delta to every rank, then the wait for their replies
        // (numbered as the engine's steps, from 1: with several ranks each reaches them).
        let span = tracing::debug_span!("hand_off", step = self.steps + 1).entered();
        let delta = Arc::new(self.encoder.encode(scheduler_output));
        drop(span);
        let (step, start) = (self.steps, Instant::now());
        let span = tracing::debug_span!("wait_for_ranks", step = step + 1).entered();
        let replies = self.gather(Some(&|| Command::Execute(Arc::clone(&delta), step, start)))?;
        drop(span);
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
            let Reply::Output(Ok(o), busy, recv_wait, items, device) = reply else {
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
            if rank == 0 {
                self.device_time = device;
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

    /// The first rank's device time: a TP group's ranks run the same kernels on the same
    /// shapes, in step with each other. Not for pipeline stages, whose steps overlap: no one
    /// stage's time is the step's.
    fn device_time(&self) -> Option<DeviceTime> {
        self.device_time.filter(|_| self.layout.pp == 1)
    }

    fn stage_times(&self) -> Vec<StageTimes> {
        self.times.clone()
    }

    fn pipeline_schedule(&self) -> Option<ExecutedSchedule> {
        self.schedule.clone()
    }

    fn broadcast_stats(&self) -> Option<crate::distributed::BroadcastStats> {
        Some(self.encoder.stats())
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
    /// Closing the command channels ends each rank's loop; then every thread is joined. A
    /// group that never failed is told to shut down first, so that a rank in another process
    /// exits cleanly; after a failure it is not: it sees its driver's connection close and
    /// exits with an error, as its peers' failure means (otherwise a rank idle between two
    /// steps when the driver failed would take the close for a clean end and exit 0).
    fn drop(&mut self) {
        if self.failed.is_none() {
            for commands in &self.commands {
                let _ = commands.send(Command::Shutdown);
            }
        }
        self.commands.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Where a rank runs.
pub(super) enum RankHandle {
    /// A thread of this process, built from its spec (boxed: a spec holds two communicators).
    Thread(Box<RankSpec>),
    /// Another process, behind its control socket (it has built its own worker).
    Remote(TcpStream),
}

/// A remote rank's two threads: one forwards commands to its socket (returned, joined on
/// drop), one reads its replies (detached: it ends when the socket closes). When the socket
/// ends, the reader reports the rank gone, once.
fn remote_rank(
    rank: usize,
    stream: TcpStream,
    commands: Receiver<Command>,
    replies: Sender<(usize, Reply)>,
) -> std::io::Result<JoinHandle<()>> {
    let mut reader = stream.try_clone()?;
    std::thread::Builder::new()
        .name(format!("rank-{rank}-replies"))
        .spawn(move || {
            let gone = loop {
                match read_frame(&mut reader) {
                    Ok(Some(frame)) => match decode_reply(&frame) {
                        Ok(reply) => {
                            if replies.send((rank, reply)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            break format!("rank {rank} sent a reply this driver cannot read: {e}")
                        }
                    },
                    Ok(None) => {
                        break format!(
                            "rank {rank}'s process closed its connection (it ended or was killed)"
                        )
                    }
                    // A killed process's kernel may reset the socket rather than close
                    // it (data was in flight): that, too, means the rank is gone.
                    Err(e) => {
                        break format!(
                        "rank {rank} is gone: its connection broke ({e}; it ended or was killed)"
                    )
                    }
                }
            };
            let _ = replies.send((rank, Reply::Ready(Err(EngineError::Io(gone)))));
        })?;
    std::thread::Builder::new()
        .name(format!("rank-{rank}-commands"))
        .spawn(move || {
            let mut stream = stream;
            for command in commands {
                if write_frame(&mut stream, &encode_command(&command)).is_err() {
                    return; // the reader reports it
                }
            }
            // The executor is dropped: the rank ends, cleanly if the executor sent `Shutdown`
            // (a group that never failed), with an error on the bare close otherwise.
            let _ = stream.shutdown(std::net::Shutdown::Write);
        })
}

/// One rank's thread: builds its worker, then serves commands until the channel closes or a
/// step fails (the rank's communicator is dropped with the worker, so its peers fail at once
/// too).
fn serve(spec: RankSpec, commands: Receiver<Command>, replies: Sender<(usize, Reply)>) {
    let (rank, spec_device) = (spec.world_rank, spec.device);
    let _span = spec.span().entered();
    let mut worker = match RankWorker::build(spec) {
        Ok(worker) => worker,
        Err(e) => {
            let _ = replies.send((rank, Reply::Ready(Err(e))));
            return;
        }
    };
    if replies.send((rank, Reply::Ready(Ok(())))).is_err() {
        return;
    }
    while let Ok(command) = recv_until(&commands, spin_for(spec_device), None) {
        let Some(reply) = worker.handle(command) else {
            continue;
        };
        let failed = matches!(reply, Reply::Output(Err(_), ..));
        if replies.send((rank, reply)).is_err() || failed {
            return; // drops the communicator: the peers fail now, not at a timeout
        }
    }
}
