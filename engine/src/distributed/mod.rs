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
pub mod comm_model;
pub mod comm_stats;
pub mod communicator;
pub mod cpu_communicator;
pub mod memory_model;
pub mod parallel_state;
pub mod pipeline_schedule;
pub mod pipeline_stage;
pub mod plan_inputs;
pub mod plan_reasons;
pub mod planner;
pub mod ring;
pub mod thread_executor;

pub use comm_stats::{CommStats, OpStats};
pub use communicator::{CallTag, CommError, CommOp, Communicator};
pub use cpu_communicator::CpuCommunicator;
pub use pipeline_schedule::ExecutedSchedule;
pub use pipeline_stage::StageTimes;
pub use thread_executor::ThreadExecutor;
