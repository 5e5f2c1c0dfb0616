//! `y = x · Wᵀ (+ bias)` for 1 to [`MAX_TOKENS`] tokens: the projections of a small decode
//! batch, where cuBLAS's tiled GEMMs cost several microseconds more than streaming the weights.
//! Kernel: `cuda/gemv.cu`. Same contract and layout as [`crate::linear::Linear::forward`]
//! (weights `[out_features, in_features]`, f32 sums rounded once to bf16), for the shapes
//! [`Gemv::supports`] accepts.
//!
//! The engine's decode path for small weights (`engine/src/backend/cuda_backend.rs`, up to 4
//! tokens). Launched alone inside a CUDA graph it took 2.6-3.9 µs where cuBLAS took 2.9-4.4 at
//! SmolLM2-135M's sizes, yet it first made the engine's batch-1 decode slower (1.58 against
//! 1.23 ms/token). It became a gain (1.05 → 0.87 ms, H200, 2026-11-28) once the step's
//! activations stopped being graph allocation nodes and every kernel used programmatic
//! dependent launch, which lets the GEMV load its weights under the previous kernel's tail; and
//! more (0.75 ms) with [`Gemv::forward_norm`], which also does the RMSNorm before the projection
//! and SiLU·mul after gate/up. On large matrices cuBLAS streams faster, so the engine keeps it
//! there for batches of 2-4 tokens.
//!
//! A matrix with few, long rows (Llama-3.2-1B's o_proj and down: 2048 rows of 2048 and 8192)
//! gives the warp-per-rows split too few blocks for the GPU's SMs, each warp walking its rows
//! one round trip after another; those launches take the split-K entry points instead
//! ([`SplitK`]), where a block's eight warps share the rows and divide k.

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut, DevicePtr, LaunchConfig,
};
use half::bf16;

use crate::error::{check_len, to_u32, KernelError, Result};
use crate::launch::Launch;

pub(crate) const FILE: &str = "gemv.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/gemv.cu");

/// Most tokens one launch takes (the kernel keeps `tokens × rows` sums in registers).
pub const MAX_TOKENS: usize = 8;
/// Threads per block (`GEMV_THREADS` in the kernel).
const THREADS: u32 = 256;

/// 16-byte chunks of a row one lane loads per trip to memory (`UNROLL` in the kernel).
const UNROLL: usize = 4;

/// When a launch uses the split-K entry points (the block's warps share rows and divide k).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitK {
    /// When the plain grid would give the SMs fewer than two blocks each and a warp would need
    /// more than one trip to memory per row ([`Gemv::splits`]).
    Auto,
    /// Never (the bench's baseline).
    Never,
    /// Always (the bench's other side).
    Always,
}

/// Output features per warp for `m` tokens (`ROWS` of the kernel's entry points).
fn rows_per_warp(m: usize) -> usize {
    if m == 1 {
        4
    } else {
        2
    }
}

/// The compiled kernels, one per token count and variant.
#[derive(Debug, Clone)]
pub struct Gemv {
    by_tokens: Vec<CudaFunction>,  // [MAX_TOKENS], index m - 1
    norm: Vec<CudaFunction>,       // the same with the RMSNorm prologue
    norm_glu: Vec<CudaFunction>,   // ... and the SiLU·mul epilogue
    split: [Vec<CudaFunction>; 3], // the three again, split-K (`_split`)
    num_sms: usize,
    split_k: SplitK,
}

/// The RMSNorm before a projection, as `fused_add_rms_norm` (or `rms_norm` for the first
/// layer) would run it: the residual stream is `residual + delta`, stored in `residual_out`.
pub struct NormInput<'a, 'b> {
    /// The previous block's output, `[num_tokens, k]`; `None` before the first layer.
    pub delta: Option<&'a CudaView<'b, bf16>>,
    /// The residual stream so far, `[num_tokens, k]`.
    pub residual: &'a CudaView<'b, bf16>,
    /// The norm's weight, `[k]`.
    pub gamma: &'a CudaView<'b, bf16>,
    pub eps: f32,
}

/// What follows the projection in the same launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// `out = y (+ bias)`, `[num_tokens, n]`.
    Plain,
    /// `W` is gate_up `[2d, k]`: `out = silu(gate) · up`, `[num_tokens, d]`, no bias.
    SiluAndMul,
}

impl Gemv {
    pub(crate) fn load(module: &Arc<CudaModule>, num_sms: usize) -> Result<Self> {
        let load = |prefix: &str, suffix: &str| {
            (1..=MAX_TOKENS)
                .map(|m| module.load_function(&format!("{prefix}_m{m}{suffix}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            by_tokens: load("gemv", "")?,
            norm: load("gemv_norm", "")?,
            norm_glu: load("gemv_norm_glu", "")?,
            split: [
                load("gemv", "_split")?,
                load("gemv_norm", "_split")?,
                load("gemv_norm_glu", "_split")?,
            ],
            num_sms,
            split_k: SplitK::Auto,
        })
    }

    /// The same kernels with another split-K rule (the bench times each against the other).
    pub fn with_split_k(mut self, split_k: SplitK) -> Self {
        self.split_k = split_k;
        self
    }

    /// Whether a launch of `features` output features (row groups of `per_warp`) over rows of
    /// `k` takes the split-K entry points. Splitting pays when the plain grid is short of
    /// blocks (under two per SM: an SM then has one or two blocks' loads in flight and idles
    /// in between) and a lane would walk a row in more than one trip to memory; with rows of at
    /// most 32 × UNROLL chunks (k ≤ 1024) there is only one trip, and splitting adds a
    /// shared-memory reduction for nothing.
    pub fn splits(&self, features: usize, per_warp: usize, k: usize) -> bool {
        match self.split_k {
            SplitK::Never => false,
            SplitK::Always => true,
            SplitK::Auto => {
                let warps_per_block = THREADS as usize / 32;
                let plain_blocks = features.div_ceil(per_warp * warps_per_block);
                plain_blocks < 2 * self.num_sms && k / 8 > 32 * UNROLL
            }
        }
    }

    /// `residual_out = residual + delta; out = rms_norm(residual_out) · Wᵀ`, then the
    /// epilogue, in one launch: a decode layer's norm, projection and (for gate/up) activation.
    /// `residual_out` is written only when `delta` is given, and must not alias `residual`
    /// (other blocks still read the old stream while one block writes the new one).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_norm(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, bf16>, // [num_tokens, n or n / 2]
        residual_out: Option<&mut CudaViewMut<'_, bf16>>, // [num_tokens, k]
        input: &NormInput<'_, '_>,
        weight: &CudaView<'_, bf16>,       // [n, k]
        bias: Option<&CudaView<'_, bf16>>, // [n], Plain only
        epilogue: Epilogue,
        num_tokens: usize,
    ) -> Result<()> {
        const K: &str = "gemv_norm";
        let k = input.gamma.len();
        if !Self::supports(num_tokens, k) {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: format!("{num_tokens} tokens of {k} features (1..={MAX_TOKENS}, k % 8 == 0)"),
            });
        }
        let n = weight.len() / k;
        check_len(K, "weight", weight.len(), n * k)?;
        check_len(K, "residual", input.residual.len(), num_tokens * k)?;
        let width = match epilogue {
            Epilogue::Plain => n,
            Epilogue::SiluAndMul => {
                if !n.is_multiple_of(2) || bias.is_some() {
                    return Err(KernelError::Unsupported {
                        kernel: K,
                        what: format!("SiLU·mul needs an even gate_up ({n} rows) and no bias"),
                    });
                }
                n / 2
            }
        };
        check_len(K, "out", out.len(), num_tokens * width)?;
        if let Some(b) = bias {
            check_len(K, "bias", b.len(), n)?;
        }
        if let Some(d) = input.delta {
            check_len(K, "delta", d.len(), num_tokens * k)?;
            match &residual_out {
                Some(r) => check_len(K, "residual_out", r.len(), num_tokens * k)?,
                None => {
                    return Err(KernelError::Unsupported {
                        kernel: K,
                        what: "a delta without residual_out to store the new stream".into(),
                    })
                }
            }
        }
        let aligned = {
            let mut bits = 0u64;
            for v in [input.residual, input.gamma, weight]
                .into_iter()
                .chain(input.delta)
            {
                bits |= v.device_ptr(stream).0;
            }
            if let Some(r) = &residual_out {
                bits |= r.device_ptr(stream).0;
            }
            bits.is_multiple_of(16)
        };
        if !aligned {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: "an operand is not 16-byte aligned".into(),
            });
        }
        if width == 0 {
            return Ok(());
        }
        let rows = rows_per_warp(num_tokens);
        let per_group = match epilogue {
            Epilogue::Plain => rows,
            Epilogue::SiluAndMul => rows / 2,
        };
        let split = self.splits(width, per_group, k);
        // Split-K: a block per row group; otherwise a row group per warp.
        let features_per_block = per_group * if split { 1 } else { THREADS as usize / 32 };
        let cfg = LaunchConfig {
            grid_dim: (
                to_u32(K, "blocks", width.div_ceil(features_per_block))?,
                1,
                1,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n32, k32) = (to_u32(K, "n", n)?, to_u32(K, "k", k)?);
        let null: u64 = 0;
        let function = match (epilogue, split) {
            (Epilogue::Plain, false) => &self.norm[num_tokens - 1],
            (Epilogue::SiluAndMul, false) => &self.norm_glu[num_tokens - 1],
            (Epilogue::Plain, true) => &self.split[1][num_tokens - 1],
            (Epilogue::SiluAndMul, true) => &self.split[2][num_tokens - 1],
        };
        let mut launch = Launch::new(stream, function);
        launch.arg(out);
        match residual_out {
            Some(r) => launch.arg(r),
            None => launch.arg(&null),
        };
        match input.delta {
            Some(d) => launch.arg(d),
            None => launch.arg(&null),
        };
        launch
            .arg(input.residual)
            .arg(input.gamma)
            .arg(&input.eps)
            .arg(weight);
        if epilogue == Epilogue::Plain {
            match bias {
                Some(b) => launch.arg(b),
                None => launch.arg(&null),
            };
        }
        launch.arg(&n32).arg(&k32);
        // SAFETY: the arguments follow gemv_norm_m* and its _split twin (out, residual_out or null, delta or null,
        // residual, gamma, float eps, w, bias or null, u32 n, u32 k) or gemv_norm_glu_m* (the
        // same without bias); every length was checked above against num_tokens, k and n,
        // operands are 16-byte aligned, and residual_out is given whenever delta is.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }

    /// Whether [`Gemv::forward`] takes `num_tokens` rows of `in_features`: 1 to
    /// [`MAX_TOKENS`] tokens and whole 16-byte chunks per row.
    pub fn supports(num_tokens: usize, in_features: usize) -> bool {
        (1..=MAX_TOKENS).contains(&num_tokens) && in_features > 0 && in_features.is_multiple_of(8)
    }

    /// `out[t, j] = Σ_i x[t, i] · weight[j, i]` (+ `bias[j]`), sums in f32, rounded to bf16.
    pub fn forward(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, bf16>, // [num_tokens, out_features]
        x: &CudaView<'_, bf16>,          // [num_tokens, in_features]
        weight: &CudaView<'_, bf16>,     // [out_features, in_features]
        bias: Option<&CudaView<'_, bf16>>, // [out_features]
        num_tokens: usize,
    ) -> Result<()> {
        const K: &str = "gemv";
        let k = x.len() / num_tokens.max(1);
        if !Self::supports(num_tokens, k) {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: format!("{num_tokens} tokens of {k} features (1..={MAX_TOKENS}, k % 8 == 0)"),
            });
        }
        let n = out.len() / num_tokens;
        check_len(K, "x", x.len(), num_tokens * k)?;
        check_len(K, "out", out.len(), num_tokens * n)?;
        check_len(K, "weight", weight.len(), n * k)?;
        if let Some(b) = bias {
            check_len(K, "bias", b.len(), n)?;
        }
        // The kernel reads x and W as 16-byte vectors.
        let aligned = {
            let (xp, _x) = x.device_ptr(stream);
            let (wp, _w) = weight.device_ptr(stream);
            (xp | wp) % 16 == 0
        };
        if !aligned {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: "x or weight is not 16-byte aligned".into(),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let rows = rows_per_warp(num_tokens);
        let split = self.splits(n, rows, k);
        let rows_per_block = rows * if split { 1 } else { THREADS as usize / 32 };
        let cfg = LaunchConfig {
            grid_dim: (to_u32(K, "blocks", n.div_ceil(rows_per_block))?, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n32, k32) = (to_u32(K, "n", n)?, to_u32(K, "k", k)?);
        let null: u64 = 0;
        let function = if split {
            &self.split[0][num_tokens - 1]
        } else {
            &self.by_tokens[num_tokens - 1]
        };
        let mut launch = Launch::new(stream, function);
        launch.arg(out).arg(x).arg(weight);
        match bias {
            Some(b) => launch.arg(b),
            None => launch.arg(&null), // a null `const bf16*`: no bias
        };
        launch.arg(&n32).arg(&k32);
        // SAFETY: the signature matches gemv_m* and gemv_m*_split (out, x, w, bias or null, u32 n, u32 k); x holds
        // num_tokens rows of k, weight n rows of k, out num_tokens rows of n, bias n (checked),
        // k % 8 == 0 and x, weight are 16-byte aligned (checked); the kernel clamps rows to n.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
