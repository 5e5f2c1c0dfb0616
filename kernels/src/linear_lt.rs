//! The same `y = x · Wᵀ` as [`crate::linear::Linear`], through cuBLASLt with the algorithm
//! chosen by us rather than by cuBLAS's heuristic: the decode step's skinny GEMMs
//! (`num_tokens` of 1-256, weights of tens of megabytes) are bound by how fast their weights
//! stream, and the heuristic's first pick does not always stream them fastest. On a TP 2
//! rank of the Llama-2-7B shape at 32 tokens, cuBLAS ran o_proj at 58% and down at 69% of the
//! copy bandwidth (`kernel_bench --tp-shapes`, 2026-11-29).
//!
//! [`LinearLt::candidates`] asks cuBLASLt for its ranked algorithms for one shape (tile, split
//! of k, reduction scheme, stages); a caller times them on the device and keeps the fastest as
//! a [`LtPlan`], which [`LinearLt::forward`] then runs. A plan is bound to its shape (the
//! layouts are part of it); its algorithm, and so its summation order, never changes while
//! the plan lives, so a plan recorded in a CUDA graph computes what it computed when timed.
//!
//! What it found (`kernel_bench --lt-algos`, two H200s' first GPU, 2026-11-30 02:41 UTC, copy
//! 4,192 GB/s): cuBLASLt offers 8 configurations of one kernel family for each decode shape of
//! the Llama-2-7B shape, and at a TP 2 rank's shapes none beats cuBLAS's own pick by more than
//! 2% (o_proj 6.83 µs, 59% of copy; down 15.67 µs, 69%, at 32 tokens). At TP 1 the best
//! beats it on gate/up by 4-5% (48.9 → 46.6 µs at 32 tokens). So the engine keeps `linear.rs`;
//! a faster skinny GEMM has to be a kernel of ours.
//!
//! Layout, as in `linear.rs`: weights `[out_features, in_features]` row-major, which cuBLAS
//! (column-major) reads as `[k, n]` and transposes; `x` `[m, k]` row-major is `[k, m]`
//! column-major; `out` `[m, n]` row-major is `[n, m]` column-major. f32 accumulation, one
//! rounding to bf16.

use std::ffi::c_void;
use std::mem::{size_of, MaybeUninit};
use std::sync::Arc;

use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
use half::bf16;

use crate::error::{check_len, KernelError, Result};

const K: &str = "linear_lt";

/// cuBLASLt's scratch space for split-k partial sums: 32 MiB, NVIDIA's advice for Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLASLt handle and its workspace, launching on one stream.
pub struct LinearLt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
}

// SAFETY: a cuBLASLt handle may be used from any thread, one call at a time; every use here
// goes through `&self` on the stream the handle was made for, as cudarc's own CudaBlasLT does.
unsafe impl Send for LinearLt {}
// SAFETY: as above: cublasLtMatmul on one handle from several threads is allowed by cuBLASLt.
unsafe impl Sync for LinearLt {}

impl std::fmt::Debug for LinearLt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinearLt").finish_non_exhaustive()
    }
}

/// One shape `[m, k] x [n, k]ᵀ` with the algorithm chosen for it: the descriptors cuBLASLt
/// needs at every launch, made once.
pub struct LtPlan {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t, // W: [k, n] column-major, read transposed
    b: sys::cublasLtMatrixLayout_t, // x: [k, m]
    c: sys::cublasLtMatrixLayout_t, // out: [n, m]
    algo: sys::cublasLtMatmulAlgo_t,
    /// Scratch this algorithm needs (at most the handle's workspace).
    workspace_bytes: usize,
    /// cuBLASLt's rank of this algorithm in its heuristic's list (0: its first pick).
    pub rank: usize,
}

// SAFETY: the descriptors are plain host structures cuBLASLt only reads during a matmul.
unsafe impl Send for LtPlan {}
// SAFETY: as above; nothing mutates them after creation.
unsafe impl Sync for LtPlan {}

impl std::fmt::Debug for LtPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LtPlan[{}x{}x{}, {}]",
            self.m,
            self.n,
            self.k,
            self.describe()
        )
    }
}

impl Drop for LtPlan {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created by this plan and is destroyed once, here.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.c);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

impl LtPlan {
    /// The algorithm's configuration, as cuBLASLt names it: `id/tile/splitK/reduction/stages`.
    pub fn describe(&self) -> String {
        let get = |attr| -> i64 {
            let mut v: u32 = 0;
            let mut written = 0usize;
            // SAFETY: reads one 32-bit attribute of a valid algo struct into `v`.
            let status = unsafe {
                sys::cublasLtMatmulAlgoConfigGetAttribute(
                    &self.algo,
                    attr,
                    (&mut v) as *mut u32 as *mut c_void,
                    size_of::<u32>(),
                    &mut written,
                )
            };
            if status == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                v as i64
            } else {
                -1
            }
        };
        use sys::cublasLtMatmulAlgoConfigAttributes_t as A;
        format!(
            "algo {} tile {} split-k {} reduction {} stages {}",
            get(A::CUBLASLT_ALGO_CONFIG_ID),
            get(A::CUBLASLT_ALGO_CONFIG_TILE_ID),
            get(A::CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
            get(A::CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME),
            get(A::CUBLASLT_ALGO_CONFIG_STAGES_ID),
        )
    }
}

impl Drop for LinearLt {
    fn drop(&mut self) {
        // SAFETY: the handle was created in `new` and is destroyed once, here.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

impl LinearLt {
    /// A handle launching on `stream`. Without libcublasLt: [`KernelError::Unavailable`].
    pub fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        // SAFETY: only tries to dlopen libcublasLt by its known names; calls nothing in it.
        if !unsafe { sys::is_culib_present() } {
            return Err(KernelError::Unavailable(
                "libcublasLt, from the CUDA toolkit, was not found".into(),
            ));
        }
        stream.context().bind_to_thread()?;
        let handle = lt::create_handle().map_err(lt_error)?;
        let workspace = stream.alloc_zeros::<u8>(WORKSPACE_BYTES)?;
        Ok(Self {
            handle,
            workspace,
            stream: stream.clone(),
        })
    }

    /// Up to `max` algorithms for `[m, k] x [n, k]ᵀ`, in cuBLASLt's order (its first pick
    /// first), each ready to run. Fewer when cuBLASLt has fewer; an error when it has none.
    pub fn candidates(&self, m: usize, n: usize, k: usize, max: usize) -> Result<Vec<LtPlan>> {
        let mut found: Vec<sys::cublasLtMatmulHeuristicResult_t> = Vec::with_capacity(max);
        let probe = self.describe_shape(m, n, k, None, 0)?;
        let pref = lt::create_matmul_pref().map_err(lt_error)?;
        let ws = WORKSPACE_BYTES as u64;
        let mut count: i32 = 0;
        // SAFETY: `pref` is live; the attribute is a u64 read from `ws`. The heuristic writes
        // at most `max` results into `found`'s spare capacity and their number into `count`.
        let status = unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&ws) as *const u64 as *const c_void,
                size_of::<u64>(),
            )
            .and_then(|_| {
                sys::cublasLtMatmulAlgoGetHeuristic(
                    self.handle,
                    probe.desc,
                    probe.a,
                    probe.b,
                    probe.c,
                    probe.c,
                    pref,
                    max as i32,
                    found.as_mut_ptr(),
                    &mut count,
                )
                .result()
            })
        };
        // SAFETY: created above, destroyed once.
        let _ = unsafe { lt::destroy_matmul_pref(pref) };
        status.map_err(lt_error)?;
        // SAFETY: cuBLASLt initialised the first `count` (≤ max) results.
        unsafe { found.set_len((count.max(0) as usize).min(max)) };
        let plans: Vec<LtPlan> = found
            .into_iter()
            .enumerate()
            .filter(|(_, r)| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
            .map(|(rank, r)| self.describe_shape(m, n, k, Some(r), rank))
            .collect::<Result<_>>()?;
        if plans.is_empty() {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: format!("cuBLASLt has no algorithm for [{m}, {k}] x [{n}, {k}]^T in bf16"),
            });
        }
        Ok(plans)
    }

    /// The descriptors of one shape; with a heuristic result, the plan that runs it.
    fn describe_shape(
        &self,
        m: usize,
        n: usize,
        k: usize,
        result: Option<sys::cublasLtMatmulHeuristicResult_t>,
        rank: usize,
    ) -> Result<LtPlan> {
        use sys::cudaDataType::{CUDA_R_16BF, CUDA_R_32F};
        let desc = lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, CUDA_R_32F)
            .map_err(lt_error)?;
        let transpose: i32 = 1; // CUBLAS_OP_T
                                // SAFETY: `desc` is live; TRANSA is an i32 read from `transpose`.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&transpose) as *const i32 as *const c_void,
                size_of::<i32>(),
            )
        }
        .map_err(lt_error)?;
        let layout = |rows: usize, cols: usize, ld: usize| {
            lt::create_matrix_layout(CUDA_R_16BF, rows as u64, cols as u64, ld as i64)
                .map_err(lt_error)
        };
        let empty = MaybeUninit::<sys::cublasLtMatmulAlgo_t>::zeroed();
        Ok(LtPlan {
            m,
            n,
            k,
            desc,
            a: layout(k, n, k)?,
            b: layout(k, m, k)?,
            c: layout(n, m, n)?,
            // SAFETY: an all-zero algo struct is what cuBLASLt's own initialisers start from;
            // it is only a placeholder in the probe, which never runs.
            algo: result.map_or_else(|| unsafe { empty.assume_init() }, |r| r.algo),
            workspace_bytes: result.map_or(0, |r| r.workspaceSize),
            rank,
        })
    }

    /// `out[t, j] = Σ_i x[t, i] · weight[j, i]` with `plan`'s algorithm (shape checked).
    pub fn forward(
        &self,
        plan: &LtPlan,
        out: &mut CudaViewMut<'_, bf16>, // [m, n]
        x: &CudaView<'_, bf16>,          // [m, k]
        weight: &CudaView<'_, bf16>,     // [n, k]
    ) -> Result<()> {
        let (m, n, k) = (plan.m, plan.n, plan.k);
        check_len(K, "x", x.len(), m * k)?;
        check_len(K, "out", out.len(), m * n)?;
        check_len(K, "weight", weight.len(), n * k)?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let s = &self.stream;
        let (w, _w) = weight.device_ptr(s);
        let (xp, _x) = x.device_ptr(s);
        let (o, _o) = out.device_ptr_mut(s);
        let (ws, _ws) = self.workspace.device_ptr(s);
        // SAFETY: the layouts in `plan` describe exactly the lengths checked above; the
        // workspace is WORKSPACE_BYTES ≥ the algorithm's need (the heuristic was asked for no
        // more); all pointers belong to `s`'s context and the launch is ordered on `s`.
        unsafe {
            lt::matmul(
                self.handle,
                plan.desc,
                (&alpha) as *const f32 as *const c_void,
                (&beta) as *const f32 as *const c_void,
                w as *const c_void,
                plan.a,
                xp as *const c_void,
                plan.b,
                o as *const c_void,
                plan.c,
                o as *mut c_void,
                plan.c,
                &plan.algo,
                ws as *mut c_void,
                plan.workspace_bytes.min(WORKSPACE_BYTES),
                s.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(lt_error)
    }
}

fn lt_error(e: lt::CublasError) -> KernelError {
    KernelError::Unsupported {
        kernel: K,
        what: format!("cuBLASLt call failed: {e:?}"),
    }
}
