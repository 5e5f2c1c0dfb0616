//! # Stage 4: GPU kernels
//!
//! The engine's CUDA backend runs a handful of kernels per layer (`kernels/cuda/*.cu`). In
//! this stage you write four of them, and the arithmetic that says how fast they can be:
//!
//! ```text
//! 0. gpu                 (given) a CUDA-like GPU on the CPU: grid, blocks, warps, shared
//!                        memory, barriers, shuffles, and global memory that counts sectors
//! 1. block_reduce        block_sum, block_max           every thread of a block agrees on one number
//! 2. rms_norm            rms_norm_kernel                one block per token, coalesced loads
//! 3. reshape_and_cache   reshape_and_cache_kernel       k and v into their slots of the paged cache
//! 4. paged_attention     paged_attention_decode_kernel  one block per (sequence, head)
//! 5. roofline            linear_cost, ...               FLOPs, bytes, and which ceiling binds
//! ```
//!
//! Where they sit in one layer of the engine's forward step on the GPU:
//!
//! ```text
//! hidden ─ [rms_norm] ─ qkv projection ─ rotary ─ [reshape_and_cache] ─ [paged_attention]
//!        ─ o projection ─ [rms_norm] (fused with the residual add) ─ MLP ─ ...
//! ```
//!
//! Each kernel exercise is an `async fn` run by [`gpu::launch`] on a grid of blocks of
//! threads, exactly as the CUDA kernel would be; its host-side wrapper (given, below the
//! kernel) uploads the inputs, launches, and returns the [`gpu::LaunchStats`], the sectors each
//! buffer moved. The tests compare the result with the engine's CPU ops (`engine::ops`) on
//! random inputs, and the sectors with what a coalesced kernel moves.
//!
//! Run `cargo test -p stage4`: every exercise test fails with `not yet implemented: stage4:
//! ...` until you write the function it names. `cargo test -p stage4 --features reference`
//! swaps every exercise for the reference solution (how `cargo xtask check` proves the tests
//! pass; it also runs the plausible wrong solutions in `mutants/` and requires the tests to
//! catch each one). On a machine with an NVIDIA GPU, `cargo test -p stage4 --test cuda` runs
//! your `.cu` versions of exercises 2 to 4 (`cuda/`) on the real thing.

// The stubs ignore their arguments (and some imports) until you fill them in.
#![cfg_attr(
    not(feature = "reference"),
    allow(unused_variables, unused_imports, dead_code)
)]

// Maintainers only: the reference solutions, and plausible wrong ones that the tests must catch.
#[cfg(feature = "mutants")]
#[path = "../mutants/mod.rs"]
mod mutants;
#[cfg(feature = "reference")]
#[path = "../reference/mod.rs"]
mod reference;

pub mod block_reduce;
pub mod gpu;
pub mod paged_attention;
pub mod reshape_and_cache;
pub mod rms_norm;
pub mod roofline;
