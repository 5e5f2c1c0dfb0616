//! # Stage 5: tensor parallelism
//!
//! One model, several ranks (threads here, GPUs in production), each holding a slice of every
//! weight matrix. You write the two pieces that make that work:
//!
//! ```text
//! 1. ring_all_reduce   ring_all_reduce   every rank's buffer becomes the sum over all ranks,
//!                                        each rank talking only to its two ring neighbours
//! 2. shard_tensor      shard_tensor      the slice of one weight a rank holds: q/k/v by heads,
//!                                        gate/up by rows, o_proj/down by columns, ...
//! ```
//!
//! Where they sit in the engine's tensor-parallel forward pass (`--tp N`, one thread per rank,
//! `engine::distributed::ThreadExecutor`):
//!
//! ```text
//! load:  whole weight ─ [shard_tensor] ─ the rank's slice (EngineParts::shard_tensor)
//! step:  embed (its vocabulary rows) ─ all-reduce
//!        each layer: qkv (its heads) ─ attention ─ o_proj (its columns) ─ all-reduce
//!                    gate/up (its rows) ─ down (its columns) ─ all-reduce
//!        lm_head (its vocabulary rows) ─ all-gather ─ sample
//! ```
//!
//! The engine's all-reduce is the ring of `engine/src/distributed/ring.rs`; exercise 1 builds
//! the same algorithm from the communicator's point-to-point `send` and `recv`. [`engine_parts`]
//! puts your `shard_tensor` into an [`EngineParts`]; the end-to-end test runs the engine at TP
//! 2, 3 and 4 with it and requires the greedy tokens of one rank.
//!
//! Run `cargo test -p stage5`: every test fails with `not yet implemented: stage5: ...` until
//! you write the function it names. `cargo test -p stage5 --features reference` swaps each
//! exercise for the engine's implementation.

// The stubs ignore their arguments (and some imports) until you fill them in.
#![cfg_attr(
    not(feature = "reference"),
    allow(unused_variables, unused_imports, dead_code)
)]

// Maintainers only: plausible wrong solutions that the tests must catch (see mutants/mod.rs).
#[cfg(feature = "mutants")]
#[path = "../mutants/mod.rs"]
mod mutants;

pub mod ring_all_reduce;
pub mod shard_tensor;

use engine::EngineParts;

/// The engine's parts with your weight sharding in place.
pub fn engine_parts() -> EngineParts {
    EngineParts {
        shard_tensor: shard_tensor::shard_tensor,
        ..EngineParts::default()
    }
}
