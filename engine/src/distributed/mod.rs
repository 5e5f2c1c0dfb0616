//! Distributed inference: splitting one model over several GPUs (tensor and pipeline
//! parallelism) and the arithmetic that decides how to split it.
//!
//! - `planner`: picks TP×PP for a model, a GPU count and a goal, and says why; it reads
//!   `memory_model` (what each GPU holds) and `comm_model` (what the ranks exchange, and
//!   how long that and a decode step take); `plan_inputs` holds what it is asked,
//!   `plan_reasons` chooses and says why in words.
//! - `communicator`: the `Communicator` trait a rank's worker calls (all-reduce, all-gather,
//!   reduce-scatter, broadcast, send/recv, barrier), its `CommError`, and `comm_stats`, the
//!   bytes and time every call records. `cpu_communicator`: ranks as threads of one process
//!   over channels, all-reduce by the `ring` algorithm (explained there, with N = 4 worked).
//! - `thread_executor`: tensor and pipeline parallelism with one thread per rank over
//!   `CpuCommunicator`, each rank a worker with its shard of the weights
//!   (`crate::model_executor::tensor_parallel`) for its stage's layers
//!   (`crate::model_executor::pipeline_parallel`), behind the engine's `Executor` trait.
//!   `parallel_state`: rank ↔ (pp_rank, tp_rank) and each rank's TP and PP groups;
//!   `pipeline_stage`: a stage's sends and receives of the hidden state, micro-batch by
//!   micro-batch, and its busy and idle time; `pipeline_schedule`: which stage runs which
//!   micro-batch when, the bubble, and the schedule a step executed.
//!   `rank_worker`: one rank's worker and the commands it serves, the same in a thread and
//!   in a process, on the CPU or a GPU (`rank_devices`: which GPU, how large a KV cache); `step_delta`: each step tells the ranks only what changed (new requests,
//!   new blocks, finished ids), and counts the bytes against whole outputs; `spin_wait`: how
//!   the threads wait for each step's hand-off when the ranks are on GPUs.
//! - Ranks as processes (`lab launch`): `bootstrap` (the rendezvous at rank 0 over TCP, the
//!   hook for NCCL's unique id, a socket per pair of ranks per group), `tcp_communicator`
//!   (`CpuCommunicator`'s collectives over those sockets), `process_executor` (rank 0, the
//!   driver) and `process_worker` (every other rank), `control_messages` (the driver's
//!   commands and the ranks' replies as bytes) and `wire` (the byte format).
pub mod bootstrap;
pub mod comm_model;
pub mod comm_stats;
pub mod communicator;
pub mod control_messages;
pub mod cpu_communicator;
pub mod memory_model;
pub mod parallel_state;
pub mod peer_rendezvous;
pub mod pipeline_schedule;
pub mod pipeline_stage;
pub mod plan_inputs;
pub mod plan_reasons;
pub mod planner;
pub mod process_executor;
pub mod process_worker;
pub mod rank_devices;
pub mod rank_worker;
pub mod ring;
pub mod spin_wait;
pub mod step_delta;
pub mod tcp_communicator;
pub mod thread_executor;
pub mod wire;

pub use comm_stats::{CommStats, OpStats};
pub use communicator::{CallTag, CommError, CommOp, Communicator};
pub use cpu_communicator::CpuCommunicator;
pub use pipeline_schedule::ExecutedSchedule;
pub use pipeline_stage::StageTimes;
pub use process_executor::ProcessExecutor;
pub use step_delta::BroadcastStats;
pub use thread_executor::ThreadExecutor;
