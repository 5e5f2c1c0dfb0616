//! # Stage 1: the scheduler
//!
//! Each step the engine asks the scheduler "who runs, and how many tokens each?". You write
//! the pieces behind the answer, in this order:
//!
//! ```text
//! 1. block_allocator   RefCountingAllocator   hands out KV blocks, counts their owners
//! 2. preemption        Fcfs, select_victim,   who matters least, and how to send a
//!                      preempt                running sequence back to the waiting queue
//! 3. scheduler         schedule               one step's batch under a token budget
//! 4. swap_space        swap_out_copies,       preemption by swap: host blocks for a
//!                      swap_in_copies,        victim's cache and back, or recompute
//!                      preemption_choice      when it does not fit
//! 5. fair_share        advance_virtual_time,  which tenant's request goes next
//!                      fair_order
//! ```
//!
//! Data flow, with your code in brackets:
//!
//! ```text
//! LLMEngine::step ─ [schedule] ─┬─ Scheduler.running / .waiting   (queues, sorted by [Fcfs])
//!                               ├─ BlockManager::allocate_slots ─ [RefCountingAllocator]
//!                               └─ cache full? [select_victim] → [preempt]
//!                 ─ model runner ─ sampler ─ Scheduler::update_from_output
//! ```
//!
//! [`engine_parts`] puts your pieces into an [`EngineParts`]; the tests build an engine from it
//! and check that it generates exactly the tokens of the engine's own parts. Run
//! `cargo test -p stage1`: every test fails with `not yet implemented: stage1: ...` until you
//! write the function it names. `cargo test -p stage1 --features reference` swaps every
//! exercise for the engine's implementation (that is how `cargo xtask check` proves the tests
//! pass).

// The stubs ignore their arguments (and some imports) until you fill them in.
#![cfg_attr(
    not(feature = "reference"),
    allow(unused_variables, unused_imports, dead_code)
)]

pub mod block_allocator;
pub mod fair_share;
pub mod preemption;
pub mod scheduler;
pub mod swap_space;

// Maintainers only: plausible wrong solutions that `cargo xtask check` proves the tests catch.
#[cfg(feature = "mutants")]
#[path = "../mutants/mod.rs"]
mod mutants;

use engine::EngineParts;

/// The engine's parts with yours in place: allocator, policy and schedule function.
pub fn engine_parts() -> EngineParts {
    EngineParts {
        allocator: |num_blocks| Box::new(block_allocator::RefCountingAllocator::new(num_blocks)),
        policy: Box::new(preemption::Fcfs),
        schedule: scheduler::schedule,
        ..EngineParts::default()
    }
}
