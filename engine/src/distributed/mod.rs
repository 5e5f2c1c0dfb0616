//! Distributed inference: splitting one model over several GPUs (tensor and pipeline
//! parallelism) and the arithmetic that decides how to split it.
//!
//! - `planner`: picks TP×PP for a model, a GPU count and a goal, and says why; it reads
//!   `memory_model` (what each GPU holds) and `comm_model` (what the ranks exchange, and
//!   how long that and a decode step take); `plan_inputs` holds what it is asked,
//!   `plan_reasons` chooses and says why in words.
pub mod comm_model;
pub mod memory_model;
pub mod plan_inputs;
pub mod plan_reasons;
pub mod planner;
