//! Exercise 2: RMSNorm as a GPU kernel (the engine's is kernels/cuda/rms_norm.cu, in bf16).
//!
//! The math is stage 3's: `out[t][i] = x[t][i] / sqrt(mean_j(x[t][j]²) + eps) · weight[i]`.
//! The kernel gives each token row to one block (`block_idx().x` is the row), and the block's
//! threads share the row: a few hundred threads for a row of thousands of values, so each
//! thread takes several. Which ones it takes decides the memory traffic:
//!
//! - **strided** (thread `t` takes `t`, `t + blockDim`, `t + 2·blockDim`, ...): in each pass
//!   the 32 lanes of a warp read 32 neighbouring floats, 128 bytes in 4 sectors. Coalesced.
//! - **chunked** (thread `t` takes `t·c` to `t·c + c − 1`): in each pass the lanes read floats
//!   `c` apart, each in a sector of its own once `c ≥ 8`: 32 sectors for the same 128 bytes.
//!
//! Both give the same numbers. The tests measure the sectors: on rows that are a whole number
//! of sectors long, every load of `x` and `weight` and every store of `out` must move only the
//! bytes it asks for (100% efficiency), as the strided loop does.
//!
//! Test: `cargo test -p stage4 --test rms_norm` (uses your `block_sum` of exercise 1).

use crate::gpu::{launch, Global, LaunchConfig, LaunchStats};
#[cfg(not(feature = "reference"))]
use crate::{
    block_reduce::block_sum,
    gpu::{block_dim, block_idx, thread_idx},
};

#[cfg(feature = "mutants")]
pub use crate::mutants::rms_norm::rms_norm_kernel;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use crate::reference::rms_norm::rms_norm_kernel;

// HINT: two passes over the row: the sum of squares (each thread its own elements, then
//   `block_sum`), then every element scaled. Where does the row start in `x`?
// HINT: `hidden_size` is `weight.len()`; rows are not a multiple of the block size, and a
//   thread may have no element at all (a row of 40 values, a block of 64 threads).
// Going further: the second pass reads `x` again. The engine's kernel keeps each thread's
//   elements in registers between the passes (a small array per thread): here, a `Vec`.
//   How many sectors of `x` does that save?

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// One block per token row, any number of threads (a multiple of 32): normalizes row
/// `block_idx().x` of `x` into the same row of `out`, times `weight`.
pub async fn rms_norm_kernel(
    out: &Global<f32>,    // [num_tokens, hidden_size]
    x: &Global<f32>,      // [num_tokens, hidden_size]
    weight: &Global<f32>, // [hidden_size]
    eps: f32,
) {
    todo!(
        "stage4: rms_norm_kernel in stages/stage4/src/rms_norm.rs — block_idx().x is the \
         row; each thread strides over it by block_dim().x, block_sum of the squares, \
         then scale and store"
    )
}
// ANCHOR_END: stub

// ANCHOR: host
/// The host side (given): uploads `x` and `weight`, launches one block of `threads` per
/// token row, copies the result into `out` and returns what the launch moved. `out` starts
/// as NaN on the device, so an element the kernel does not write comes back NaN.
pub fn rms_norm(
    out: &mut [f32], // [num_tokens, hidden_size]
    x: &[f32],       // [num_tokens, hidden_size]
    weight: &[f32],  // [hidden_size]
    eps: f32,
    threads: usize,
) -> LaunchStats {
    let num_tokens = x.len() / weight.len().max(1);
    let (x, weight) = (
        Global::from_slice("x", x),
        Global::from_slice("weight", weight),
    );
    let d_out = Global::filled("out", out.len(), f32::NAN);
    if num_tokens == 0 {
        return LaunchStats::default();
    }
    let config = LaunchConfig::new(num_tokens, threads);
    let stats = launch("rms_norm", config, || {
        rms_norm_kernel(&d_out, &x, &weight, eps)
    });
    out.copy_from_slice(&d_out.to_vec());
    stats
}
// ANCHOR_END: host

/// [`rms_norm`] with 128 threads per row and the engine's signature (`engine::ops::rms_norm`):
/// put it in `EngineParts { kernels: CpuKernels { rms_norm: rms_norm_for_engine, .. }, .. }`
/// and the engine's CPU forward pass runs your kernel, on this model of a GPU, for the RMSNorm
/// that is not fused with a residual add (the first layer's input norm).
pub fn rms_norm_for_engine(
    out: &mut [f32], // [num_tokens, hidden_size]
    x: &[f32],       // [num_tokens, hidden_size]
    weight: &[f32],  // [hidden_size]
    eps: f32,
) {
    rms_norm(out, x, weight, eps, 128);
}
