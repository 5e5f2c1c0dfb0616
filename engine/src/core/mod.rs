//! The engine core: block allocation, block tables, scheduling policy and the scheduler.
pub mod batch_composer;
pub mod block;
pub mod block_allocator;
pub mod block_hash;
pub mod block_manager;
pub mod evictor;
pub mod fair_share;
pub mod id_hash;
pub mod preemption;
pub mod prefix_cache;
pub mod qos_policy;
pub mod scheduler;
pub mod scheduler_output;
pub mod scheduling_policy;
pub mod step_stats;
pub mod swap_space;
