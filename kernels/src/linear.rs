//! `y = x · Wᵀ (+ bias)`: every projection of the model, the twin of `engine::ops::linear::linear`,
//! through cuBLAS in bf16 with f32 accumulation (no kernel of ours: cuBLAS's GEMMs are at the
//! tensor cores' ceiling, and decode's skinny GEMMs at the memory's).
//!
//! Weights keep the engine's (Hugging Face's) layout, `[out_features, in_features]` row-major.
//! cuBLAS is column-major, and a row-major `[r, c]` matrix is the same bytes as a column-major
//! `[c, r]` one. So `y[m, n] = x[m, k] · W[n, k]ᵀ` (row-major) is, read column-major,
//! `yᵀ[n, m] = W'ᵀ · xᵀ` where `W'` = W's bytes seen as `[k, n]`: one GEMM with
//! `transa = T` (lda = k), `transb = N` (ldb = k), `ldc = n`, and no copy or transpose.
//!
//! Bias: cuBLAS's plain GEMM has no epilogue, so `out` is first filled with the bias broadcast
//! over the tokens (a rank-1 GEMM, `bias[n, 1] · ones[1, m]`, exact in bf16), then the main
//! GEMM adds to it with `beta = 1`. Measured on the H200, most shapes then round twice (the
//! product to bf16, then the sum: relative error 2.3e-3 against 1.7e-3 without a bias, i.e.
//! √2 times), so cuBLAS evidently rounds `x · Wᵀ` before adding C. A cuBLASLt bias epilogue
//! would round once; the models we run (Llama, SmolLM2) have no bias, so it is not worth a
//! second library here.
//!
//! Not batch invariant (the CPU twin is): cuBLAS picks its algorithm, and so its summation
//! order, by shape, so a token's output may differ in the last bf16 bit between batch sizes.

use std::sync::Arc;

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr};
use half::bf16;

use crate::error::{check_len, KernelError, Result};

const K: &str = "linear";

/// cuBLAS's scratch space: 32 MiB, what NVIDIA recommends for Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLAS handle bound to one stream, created once (handle creation allocates and takes
/// milliseconds), plus the column of ones the bias broadcast multiplies.
///
/// The handle is given its workspace up front (`cublasSetWorkspace`): a GEMM recorded into a
/// CUDA graph must not allocate, and with its own workspace cuBLAS never does.
#[derive(Debug)]
pub struct Linear {
    blas: CudaBlas,
    ones: CudaSlice<bf16>, // [max_tokens]
    _workspace: CudaSlice<u8>,
}

impl Linear {
    /// A handle whose launches go to `stream`, for batches of up to `max_tokens` tokens when a
    /// bias is given (no limit without one). Without libcublas: [`KernelError::Unavailable`].
    pub fn new(stream: &Arc<CudaStream>, max_tokens: usize) -> Result<Self> {
        // SAFETY: only tries to dlopen libcublas by its known names; calls nothing in it.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(KernelError::Unavailable(
                "libcublas, from the CUDA toolkit, was not found".into(),
            ));
        }
        let blas = CudaBlas::new(stream.clone())?;
        let workspace = stream.alloc_zeros::<u8>(WORKSPACE_BYTES)?;
        {
            let (ptr, _sync) = workspace.device_ptr(stream);
            // SAFETY: FFI call on a live handle; the workspace is WORKSPACE_BYTES of device
            // memory owned by this struct, so it outlives every GEMM the handle runs.
            unsafe {
                cudarc::cublas::sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    ptr as *mut std::ffi::c_void,
                    WORKSPACE_BYTES,
                )
            }
            .result()?;
        }
        Ok(Self {
            blas,
            ones: stream.clone_htod(&vec![bf16::ONE; max_tokens.max(1)])?,
            _workspace: workspace,
        })
    }

    /// `out[t, j] = Σ_i x[t, i] · weight[j, i]` (+ `bias[j]`), sums in f32, rounded to bf16.
    /// `in_features = x.len() / num_tokens`, `out_features = out.len() / num_tokens`.
    pub fn forward(
        &self,
        out: &mut CudaViewMut<'_, bf16>, // [num_tokens, out_features]
        x: &CudaView<'_, bf16>,          // [num_tokens, in_features]
        weight: &CudaView<'_, bf16>,     // [out_features, in_features]
        bias: Option<&CudaView<'_, bf16>>, // [out_features]
        num_tokens: usize,
    ) -> Result<()> {
        if num_tokens == 0 {
            check_len(K, "out", out.len(), 0)?;
            return check_len(K, "x", x.len(), 0);
        }
        let (k, n) = (x.len() / num_tokens, out.len() / num_tokens);
        check_len(K, "x", x.len(), num_tokens * k)?;
        check_len(K, "out", out.len(), num_tokens * n)?;
        check_len(K, "weight", weight.len(), n * k)?;
        if n == 0 {
            return Ok(());
        }
        let (m32, n32, k32) = (
            c_int("num_tokens", num_tokens)?,
            c_int("n", n)?,
            c_int("k", k)?,
        );
        let mut beta = 0.0;
        if let Some(bias) = bias {
            check_len(K, "bias", bias.len(), n)?;
            if num_tokens > self.ones.len() {
                return Err(KernelError::Unsupported {
                    kernel: K,
                    what: format!(
                        "{num_tokens} tokens with a bias; this handle was made for {}",
                        self.ones.len()
                    ),
                });
            }
            // outᵀ[n, m] = bias[n, 1] · ones[1, m] (column-major): the bias on every token.
            let cfg = GemmConfig {
                transa: cublasOperation_t::CUBLAS_OP_N,
                transb: cublasOperation_t::CUBLAS_OP_N,
                m: n32,
                n: m32,
                k: 1,
                alpha: bf16::ONE,
                lda: n32,
                ldb: 1,
                beta: bf16::ZERO,
                ldc: n32,
            };
            let ones = self.ones.slice(..num_tokens);
            // SAFETY: bias holds n elements (n x 1, lda = n), ones at least num_tokens
            // (1 x m, ldb = 1), out n * num_tokens (ldc = n); all checked above.
            unsafe { self.blas.gemm(cfg, bias, &ones, out) }?;
            beta = 1.0;
        }
        // outᵀ[n, m] = W'ᵀ · xᵀ with W' = weight as column-major [k, n], xᵀ = x as [k, m].
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: n32,
            n: m32,
            k: k32,
            alpha: bf16::ONE,
            lda: k32,
            ldb: k32,
            beta: bf16::from_f32(beta),
            ldc: n32,
        };
        // SAFETY: weight holds n * k elements (k x n, lda = k, read transposed), x num_tokens * k
        // (k x m, ldb = k), out num_tokens * n (n x m, ldc = n); all checked above. The handle
        // is bound to the stream the views were made on (cudarc records the accesses).
        unsafe { self.blas.gemm(cfg, weight, x, out) }?;
        Ok(())
    }
}

/// cuBLAS takes 32-bit signed sizes: refuse larger ones rather than wrap.
fn c_int(what: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| KernelError::Unsupported {
        kernel: K,
        what: format!("{what} = {v} does not fit cuBLAS's 32-bit int"),
    })
}
