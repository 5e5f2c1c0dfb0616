//! The engine core: block allocation, block tables, scheduling policy and the scheduler.
pub mod block;
pub mod block_allocator;
pub mod block_manager;
pub mod scheduler;
pub mod scheduler_output;
pub mod scheduling_policy;
