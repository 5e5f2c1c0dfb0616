//! # Stage 7: hybrid parallelism, TP × PP
//!
//! Stage 5 split each layer across `tp` ranks; stage 6 split the layers into `pp` stages. Here
//! both run at once on `tp × pp` ranks, and you write the two pieces of arithmetic that the
//! engine's hybrid run and its planner stand on:
//!
//! ```text
//! 1. parallel_state   coords, world_rank,          which rank is which: a world rank's stage
//!                     stage_ranks, tp_group_of,    and TP slice, the ranks it all-reduces with
//!                     pp_group_of                  and the ranks it sends to and receives from
//! 2. memory_model     kv_heads_per_rank,           what one GPU holds under TP × PP: its
//!                     weight_bytes_per_gpu,        weights, its KV cache per token, the tokens
//!                     kv_bytes_per_token_per_gpu,  of context it has room for, and whether the
//!                     stage_weight_bytes_per_gpu,  split runs at all (what `lab plan` decides
//!                     kv_tokens_per_gpu, fits      with)
//! ```
//!
//! Where they sit in the engine:
//!
//! ```text
//! LLMEngine ─ ThreadExecutor::new: one thread per world rank
//!   └ parallel_state::build_groups: for each rank [coords] → (pp_rank, tp_rank),
//!       a TP communicator over [tp_group_of], a PP link over [pp_group_of]
//! lab plan ─ planner::evaluate, for every TP × PP with TP·PP ≤ GPUs:
//!   └ [stage_weight_bytes_per_gpu] ← [weight_bytes_per_gpu] ← [kv_heads_per_rank]
//!     [kv_tokens_per_gpu] ← [kv_bytes_per_token_per_gpu]    → [fits] → the table's rows
//! ```
//!
//! Run `cargo test -p stage7`: every test fails with `not yet implemented: stage7: ...` until
//! you write the function it names. `cargo test -p stage7 --features reference` swaps every
//! exercise for the engine's implementation (that is how `cargo xtask check` proves the tests
//! pass; it also runs the plausible wrong solutions in `mutants/` and requires the tests to
//! catch each one).

// The stubs ignore their arguments (and some imports) until you fill them in.
#![cfg_attr(
    not(feature = "reference"),
    allow(unused_variables, unused_imports, dead_code)
)]

// Maintainers only: plausible wrong solutions that the tests must catch (see mutants/mod.rs).
#[cfg(feature = "mutants")]
#[path = "../mutants/mod.rs"]
mod mutants;

pub mod memory_model;
pub mod parallel_state;
