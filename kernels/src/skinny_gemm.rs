//! `y = x · Wᵀ` for decode batches of 1 to [`MAX_TOKENS`] tokens through large weights, on
//! tensor cores, with the weights' first tiles copied before the previous kernel ends
//! (programmatic dependent launch). Kernel and design: `cuda/skinny_gemm.cu`. Same contract
//! and layout as [`crate::linear::Linear::forward`] without a bias (weights
//! `[out_features, in_features]`, f32 sums rounded once to bf16), and an optional SiLU·mul
//! epilogue for gate_up ([`Epilogue::SiluAndMul`], the fused twin of cuBLAS followed by
//! `silu_and_mul`).
//!
//! Where it sits: between the GEMV (1-4 tokens, [`crate::gemv`]) and cuBLAS (prefill and large
//! decode batches). Two main loops ([`MainLoop`]): `mma.sync` fed by `cp.async`, slower than
//! cuBLAS on an H200 (25-70% of copy), and the Tensor Memory Accelerator feeding `wgmma`
//! (sm_90a only), which streams a 7B layer's projections at 66-94% of copy and took the
//! engine's 7B decode step at batch 32 from 5.26 to 5.10 ms at TP 1 and from 3.39 to 3.25 at
//! TP 2 (2026-11-30; the book's performance page). The engine uses the second by default.
//!
//! A launch is `row tiles × splits` blocks: a row tile is 64 weight rows (or 32 gate and 32 up
//! rows; 128 with [`SkinnyGemm::with_rows`]), and when there are few tiles the k range is
//! split ([`SkinnyGemm::splits`]) and the splits' f32 sums are added in a fixed order (the same
//! bits on every run): by the last block of each tile, through a [`SkinnyGemmWorkspace`] (one
//! per stream), in the mma.sync loop; inside a thread block cluster of the tile's splits, from
//! shared memory, in the TMA loop.

use std::sync::{Arc, OnceLock};

use cudarc::driver::sys::{self, CUtensorMap};
use cudarc::driver::LaunchConfig;
use cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr,
};
use half::bf16;

use crate::custom_all_reduce::PushTarget;
use crate::error::{check_aligned16, check_len, to_u32, KernelError, Result};
use crate::gemv::Epilogue;
use crate::launch::Launch;

pub(crate) const FILE: &str = "skinny_gemm.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/skinny_gemm.cu");

/// Most tokens one launch takes: 4 tiles of 8 (the kernel's `MT` ≤ 4).
pub const MAX_TOKENS: usize = 32;
/// Weight rows per block (the kernel's `R`, 16 per warp: 2·R threads) that the kernels are
/// compiled for, the default first; k values per pipeline stage (`SG_KC`), stages (`SG_STAGES`).
pub const ROW_TILES: [usize; 2] = [64, 128];
const MAX_ROWS: usize = ROW_TILES[1];
const KC: usize = 64;
const STAGES: usize = 4;
/// The most blocks a split launch may have: its partial sums are sized by it.
const MAX_SPLIT_BLOCKS_PER_SM: usize = 4;
/// A split takes at least this many stages of k (512 values), so that its copies pipeline.
const MIN_STAGES_PER_SPLIT: usize = 8;
/// The most splits of the TMA main loop: a row tile's splits are one cluster, and 8 blocks is
/// the largest cluster every sm_90 GPU runs.
const MAX_CLUSTER: usize = 8;

/// How a launch copies and multiplies its tiles (`cuda/skinny_gemm.cu` has both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MainLoop {
    /// A `cp.async` per 16 bytes per thread, `mma.sync` from registers: any sm_90 GPU.
    MmaSync,
    /// The Tensor Memory Accelerator copies whole tiles, `wgmma` multiplies them from shared
    /// memory: only where the kernels were compiled for sm_90a (an H100 or H200).
    Tma,
}

/// The compiled kernels per main loop: `[row tile][epilogue][token tiles - 1]` (the TMA ones
/// only where they can run, with a third epilogue: plain, pushing to the all-reduce's peers),
/// and the row tile and main loop launches use.
#[derive(Debug, Clone)]
pub struct SkinnyGemm {
    functions: [[Vec<CudaFunction>; 2]; 2],
    tma_functions: Option<[[Vec<CudaFunction>; 3]; 2]>,
    rows: usize,
    main_loop: MainLoop,
    num_sms: usize,
    /// Whether a launch of the TMA main loop at its default split may take 128-row tiles
    /// instead of `rows` to stay within one wave ([`Self::with_one_wave`]).
    one_wave: bool,
    /// Clusters resident at once per `[row tile][plain, SiLU·mul][token tiles - 1][splits - 1]`
    /// of the TMA kernels (the occupancy calculator), filled at the first launch that needs it;
    /// `None` if the calculator failed, and launches then keep their default split.
    resident: Arc<OnceLock<Option<ResidentClusters>>>,
}

type ResidentClusters = [[[[usize; MAX_CLUSTER]; MAX_TOKENS / 8]; 2]; 2];

/// The splits' f32 sums and the per-tile tickets of split launches on one stream (launches on
/// one stream run one after another, so they can share it; tickets are zero between launches).
#[derive(Debug)]
pub struct SkinnyGemmWorkspace {
    partials: CudaSlice<f32>, // [split blocks, MAX_TOKENS, MAX_ROWS]
    tickets: CudaSlice<u32>,  // [split blocks]
}

impl SkinnyGemmWorkspace {
    /// Room for the largest split launch of the mma.sync loop on a GPU of `num_sms` SMs (8.3
    /// MiB on an H200's 132; the TMA loop needs none: `num_sms` 0 gives the smallest, 64 KB).
    pub fn new(stream: &Arc<CudaStream>, num_sms: usize) -> Result<Self> {
        let blocks = MAX_SPLIT_BLOCKS_PER_SM * num_sms.max(1);
        Ok(Self {
            partials: stream.alloc_zeros(blocks * MAX_TOKENS * MAX_ROWS)?,
            tickets: stream.alloc_zeros(blocks)?,
        })
    }

    /// The most blocks (row tiles × splits) a split launch may have with this workspace.
    pub fn split_blocks(&self) -> usize {
        self.tickets.len()
    }
}

/// Dynamic shared memory of a launch with `rows` weight rows and `tiles` token tiles a block:
/// the ring of W and x stages. The TMA ring has `SG_TMA_STAGES(R)` stages and starts on a
/// 1024-byte boundary (the swizzle's period), so it asks for 1 KB more to align itself.
fn ring_bytes(main_loop: MainLoop, rows: usize, tiles: usize) -> usize {
    match main_loop {
        MainLoop::MmaSync => STAGES * (rows + 8 * tiles) * KC * 2,
        MainLoop::Tma => tma_stages(rows) * (rows + 8 * tiles) * KC * 2 + 1024,
    }
}

/// `SG_TMA_STAGES(R)` of the kernel file.
fn tma_stages(rows: usize) -> usize {
    if rows == 64 {
        6
    } else {
        5
    }
}

/// A TMA descriptor of a row-major bf16 matrix `[rows, cols]` at `ptr`, copied in boxes of
/// `box_rows` rows × 64 columns (one 128-byte row each) with the 128-byte swizzle wgmma reads;
/// what lies outside the matrix arrives as zeros.
fn tensor_map(
    ptr: sys::CUdeviceptr,
    rows: usize,
    cols: usize,
    box_rows: usize,
) -> Result<CUtensorMap> {
    use sys::{
        CUtensorMapDataType as D, CUtensorMapFloatOOBfill as F, CUtensorMapInterleave as I,
        CUtensorMapL2promotion as P, CUtensorMapSwizzle as S,
    };
    let mut map = CUtensorMap { opaque: [0; 16] };
    let dims = [cols as u64, rows as u64]; // innermost first
    let strides = [(cols * 2) as u64]; // bytes between rows (the innermost stride is implied)
    let boxes = [KC as u32, box_rows as u32];
    let element_strides = [1u32, 1];
    // SAFETY: every pointer is to a live local array of the rank (2) the call is given (rank -
    // 1 for the strides); `ptr` is a device address, 16-byte aligned and its row stride a
    // multiple of 16 (the caller checked both); the call only encodes, reading no device memory.
    unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            D::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            2,
            ptr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            element_strides.as_ptr(),
            I::CU_TENSOR_MAP_INTERLEAVE_NONE,
            S::CU_TENSOR_MAP_SWIZZLE_128B,
            P::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            F::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    }
    .result()?;
    Ok(map)
}

/// Row tiles of `rows` rows over a weight of `n` rows (gate_up: `rows / 2` output columns).
fn row_tiles(rows: usize, n: usize, epilogue: Epilogue) -> usize {
    match epilogue {
        Epilogue::Plain => n.div_ceil(rows),
        Epilogue::SiluAndMul => (n / 2).div_ceil(rows / 2),
    }
}

/// The kernel file's entry point for `prefix` (`skinny_gemm` or `skinny_gemm_glu`), row tiles
/// of `rows` and `mt` token tiles: the default tile has no row suffix.
fn entry_name(prefix: &str, rows: usize, mt: usize) -> String {
    if rows == ROW_TILES[0] {
        format!("{prefix}_t{mt}")
    } else {
        format!("{prefix}_r{rows}_t{mt}")
    }
}

/// [`SkinnyGemm::splits`] on a GPU of `num_sms` SMs.
pub fn default_splits(num_sms: usize, tiles: usize, k: usize) -> usize {
    let stages = k.div_ceil(KC);
    let wanted = (2 * num_sms).div_ceil(tiles.max(1));
    let most =
        (stages / MIN_STAGES_PER_SPLIT).min(MAX_SPLIT_BLOCKS_PER_SM * num_sms / tiles.max(1));
    wanted.min(most).max(1)
}

/// The splits a launch over `k` values makes when `wanted` are asked for, and the 64-value
/// stages each takes: whole stages per split, no split left empty, and for the TMA main loop
/// (whose splits of a row tile are one cluster) at most [`MAX_CLUSTER`].
fn launch_splits(main_loop: MainLoop, wanted: usize, k: usize) -> (usize, usize) {
    let stages = k.div_ceil(KC);
    let most = match main_loop {
        MainLoop::Tma => MAX_CLUSTER.min(stages),
        MainLoop::MmaSync => stages,
    };
    let stages_per_split = stages.div_ceil(wanted.clamp(1, most.max(1)));
    (stages.div_ceil(stages_per_split), stages_per_split)
}

impl SkinnyGemm {
    /// `tma`: whether the module was compiled for sm_90a, where the TMA main loop runs.
    pub(crate) fn load(module: &Arc<CudaModule>, num_sms: usize, tma: bool) -> Result<Self> {
        use cudarc::driver::sys::CUfunction_attribute as A;
        let load = |main_loop: MainLoop, prefix: &str, rows: usize| -> Result<Vec<CudaFunction>> {
            (1..=MAX_TOKENS / 8)
                .map(|mt| {
                    let f = module.load_function(&entry_name(prefix, rows, mt))?;
                    // Rings past 48 KB (the default limit) must be asked for.
                    f.set_attribute(
                        A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        ring_bytes(main_loop, rows, mt) as i32,
                    )?;
                    Ok(f)
                })
                .collect()
        };
        let [small, large] = ROW_TILES;
        let family =
            |main_loop: MainLoop, plain: &str, glu: &str| -> Result<[[Vec<CudaFunction>; 2]; 2]> {
                Ok([
                    [load(main_loop, plain, small)?, load(main_loop, glu, small)?],
                    [load(main_loop, plain, large)?, load(main_loop, glu, large)?],
                ])
            };
        let tma_functions = if tma {
            let [[plain_s, glu_s], [plain_l, glu_l]] =
                family(MainLoop::Tma, "skinny_gemm_tma", "skinny_gemm_tma_glu")?;
            let push = "skinny_gemm_tma_push";
            Some([
                [plain_s, glu_s, load(MainLoop::Tma, push, small)?],
                [plain_l, glu_l, load(MainLoop::Tma, push, large)?],
            ])
        } else {
            None
        };
        Ok(Self {
            functions: family(MainLoop::MmaSync, "skinny_gemm", "skinny_gemm_glu")?,
            tma_functions,
            rows: small,
            main_loop: MainLoop::MmaSync,
            num_sms,
            one_wave: false,
            resident: Arc::new(OnceLock::new()),
        })
    }

    /// The same kernels, with launches of the TMA main loop at their default split kept within
    /// one wave: where a grid of [`Self::rows`]-row tiles and the default split would not fit
    /// the GPU at once (its clusters of splits must share a GPC: the occupancy calculator
    /// counts them), it takes 128-row tiles at that split if those fit, else fewer splits.
    /// A grid that spills runs its last clusters alone, after the rest (Llama-3.2-1B's gate/up
    /// at 32 tokens: 256 tiles × 2 splits of 64 rows, 198 clusters at once, 25.1 µs; 128 tiles
    /// × 2 of 128 rows, 132 at once, 19.5 µs on an H200, `kernel_bench --skinny-sweep`).
    pub fn with_one_wave(mut self, on: bool) -> Self {
        self.one_wave = on;
        self
    }

    /// The same kernels with the given main loop; [`MainLoop::Tma`] only where
    /// [`Self::has_tma`].
    pub fn with_main_loop(mut self, main_loop: MainLoop) -> Result<Self> {
        if main_loop == MainLoop::Tma && !self.has_tma() {
            return Err(KernelError::Unsupported {
                kernel: "skinny_gemm",
                what: "the TMA main loop on this GPU (it needs sm_90a: an H100 or H200)".into(),
            });
        }
        self.main_loop = main_loop;
        Ok(self)
    }

    /// Whether the TMA + wgmma main loop was compiled for this GPU.
    pub fn has_tma(&self) -> bool {
        self.tma_functions.is_some()
    }

    /// The main loop launches use.
    pub fn main_loop(&self) -> MainLoop {
        self.main_loop
    }

    /// The same kernels with row tiles of `rows` weight rows (one of [`ROW_TILES`]).
    pub fn with_rows(mut self, rows: usize) -> Result<Self> {
        if !ROW_TILES.contains(&rows) {
            return Err(KernelError::Unsupported {
                kernel: "skinny_gemm",
                what: format!("row tiles of {rows} rows (compiled: {ROW_TILES:?})"),
            });
        }
        self.rows = rows;
        Ok(self)
    }

    /// How many blocks of a launch over `num_tokens` tokens one SM holds at once (the CUDA
    /// occupancy calculator: the ring of shared memory is what limits it).
    pub fn blocks_per_sm(&self, num_tokens: usize, epilogue: Epilogue) -> Result<usize> {
        let token_tiles = num_tokens.clamp(1, MAX_TOKENS).div_ceil(8);
        let e = usize::from(epilogue == Epilogue::SiluAndMul);
        let r = usize::from(self.rows != ROW_TILES[0]);
        let function = match (self.main_loop, &self.tma_functions) {
            (MainLoop::Tma, Some(tma)) => &tma[r][e][token_tiles - 1],
            _ => &self.functions[r][e][token_tiles - 1],
        };
        let smem = ring_bytes(self.main_loop, self.rows, token_tiles);
        let threads = 2 * self.rows as u32;
        Ok(function.occupancy_max_active_blocks_per_multiprocessor(threads, smem, None)? as usize)
    }

    /// How many clusters of `splits` blocks (the TMA main loop's launch of a row tile) over
    /// `num_tokens` tokens the GPU runs at once.
    pub fn resident_clusters(
        &self,
        stream: &Arc<CudaStream>,
        num_tokens: usize,
        epilogue: Epilogue,
        splits: usize,
    ) -> Result<usize> {
        let Some(table) = self.resident_table(stream) else {
            return Err(KernelError::Unsupported {
                kernel: "skinny_gemm",
                what: "cluster occupancy (no TMA main loop, or the occupancy calculator failed)"
                    .into(),
            });
        };
        let token_tiles = num_tokens.clamp(1, MAX_TOKENS).div_ceil(8);
        let e = usize::from(epilogue == Epilogue::SiluAndMul);
        let r = usize::from(self.rows != ROW_TILES[0]);
        Ok(table[r][e][token_tiles - 1][splits.clamp(1, MAX_CLUSTER) - 1])
    }

    /// Every TMA kernel's clusters resident at once, asked of the occupancy calculator once
    /// (128 questions, a few milliseconds) and shared by every clone; `None` without the TMA
    /// kernels or if a question failed (asked once: the answer is kept either way).
    fn resident_table(&self, stream: &Arc<CudaStream>) -> Option<&ResidentClusters> {
        let ask = || -> Result<ResidentClusters> {
            let Some(tma) = &self.tma_functions else {
                return Err(KernelError::Unsupported {
                    kernel: "skinny_gemm",
                    what: "clusters without the TMA main loop".into(),
                });
            };
            let mut table: ResidentClusters = Default::default();
            for (r, rows) in ROW_TILES.into_iter().enumerate() {
                for (e, per_epilogue) in table[r].iter_mut().enumerate() {
                    for (mt, per_tiles) in per_epilogue.iter_mut().enumerate() {
                        let smem = ring_bytes(MainLoop::Tma, rows, mt + 1) as u32;
                        let function = &tma[r][e][mt];
                        for (s, clusters) in per_tiles.iter_mut().enumerate() {
                            let cluster = (1, s as u32 + 1, 1);
                            *clusters = crate::launch::max_active_clusters(
                                stream,
                                function,
                                2 * rows as u32,
                                smem,
                                cluster,
                            )?;
                        }
                    }
                }
            }
            Ok(table)
        };
        self.resident.get_or_init(|| ask().ok()).as_ref()
    }

    /// The row tile and split a launch over `n` rows of `k` takes: the given `splits`, or the
    /// default for [`Self::rows`]-row tiles, kept within one wave where
    /// [`Self::with_one_wave`] asks for it.
    fn plan(
        &self,
        stream: &Arc<CudaStream>,
        n: usize,
        k: usize,
        num_tokens: usize,
        epilogue: Epilogue,
        splits: Option<usize>,
    ) -> (usize, usize) {
        let tiles = self.row_tiles(n, epilogue);
        if let Some(s) = splits {
            return (self.rows, s);
        }
        let wanted = self.splits(tiles, k);
        if !self.one_wave || self.main_loop != MainLoop::Tma || self.tma_functions.is_none() {
            return (self.rows, wanted);
        }
        let Some(table) = self.resident_table(stream) else {
            return (self.rows, wanted); // no occupancy figures: the default split
        };
        let (e, mt) = (
            usize::from(epilogue == Epilogue::SiluAndMul),
            num_tokens.div_ceil(8),
        );
        let fits = |rows: usize, splits: usize| {
            let r = usize::from(rows != ROW_TILES[0]);
            row_tiles(rows, n, epilogue) <= table[r][e][mt - 1][splits - 1]
        };
        let (mut s, _) = launch_splits(MainLoop::Tma, wanted, k);
        if fits(self.rows, s) {
            return (self.rows, s);
        }
        let large = ROW_TILES[1];
        if self.rows != large && fits(large, s) {
            return (large, s);
        }
        while s > 1 && !fits(self.rows, s) {
            s = launch_splits(MainLoop::Tma, s - 1, k).0;
        }
        (self.rows, s)
    }

    /// Weight rows per row tile.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The GPU's SMs, to size a [`SkinnyGemmWorkspace`].
    pub fn num_sms(&self) -> usize {
        self.num_sms
    }

    /// Whether a launch takes `num_tokens` rows of `in_features`: 1 to [`MAX_TOKENS`] tokens
    /// and whole 16-byte chunks per row.
    pub fn supports(num_tokens: usize, in_features: usize) -> bool {
        (1..=MAX_TOKENS).contains(&num_tokens) && in_features > 0 && in_features.is_multiple_of(8)
    }

    /// Row tiles of a weight of `n` rows: [`Self::rows`] rows each, or half as many output
    /// columns of gate_up.
    pub fn row_tiles(&self, n: usize, epilogue: Epilogue) -> usize {
        row_tiles(self.rows, n, epilogue)
    }

    /// How many ways the k range of a weight of `tiles` row tiles and `k` columns is split: so
    /// that the grid gives every SM about two blocks, no split has fewer than 512 k values, and
    /// the grid fits the workspace.
    pub fn splits(&self, tiles: usize, k: usize) -> usize {
        default_splits(self.num_sms, tiles, k)
    }

    /// `out[t, j] = Σ_i x[t, i] · weight[j, i]` (plain), or with [`Epilogue::SiluAndMul`]
    /// `out[t, j] = silu(y[t, j]) · y[t, d + j]` where `y` is that product and `d = n / 2`.
    /// `splits`: the k range's split ([`SkinnyGemm::splits`] when `None`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        stream: &Arc<CudaStream>,
        workspace: &mut SkinnyGemmWorkspace,
        out: &mut CudaViewMut<'_, bf16>, // [num_tokens, n] (plain) or [num_tokens, n / 2]
        x: &CudaView<'_, bf16>,          // [num_tokens, k]
        weight: &CudaView<'_, bf16>,     // [n, k]
        num_tokens: usize,
        epilogue: Epilogue,
        splits: Option<usize>,
    ) -> Result<()> {
        self.launch(
            stream, workspace, out, x, weight, num_tokens, epilogue, splits, None,
        )
    }

    /// The plain [`Self::forward`] of a row-parallel projection whose output an all-reduce
    /// sums next: each pair of outputs also goes into slot `rank` of every peer's inbox as
    /// soon as it is summed, so that the all-reduce only receives
    /// ([`crate::custom_all_reduce::CustomAllReduce::receive_in_place`] on `out`, the next
    /// launch on this stream). The TMA main loop only; `out` must fit an inbox slot and `n` be
    /// even (outputs go out as 32-bit pairs).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_push(
        &self,
        stream: &Arc<CudaStream>,
        workspace: &mut SkinnyGemmWorkspace,
        out: &mut CudaViewMut<'_, bf16>, // [num_tokens, n]
        x: &CudaView<'_, bf16>,          // [num_tokens, k]
        weight: &CudaView<'_, bf16>,     // [n, k]
        num_tokens: usize,
        splits: Option<usize>,
        push: &PushTarget,
    ) -> Result<()> {
        let n = weight.len() / (x.len() / num_tokens.max(1)).max(1);
        if self.main_loop != MainLoop::Tma || !n.is_multiple_of(2) || out.len() > push.capacity() {
            return Err(KernelError::Unsupported {
                kernel: "skinny_gemm",
                what: format!(
                    "pushing {} outputs of {n} columns with the {:?} main loop (the TMA one, an \
                     even width, at most {} values)",
                    out.len(),
                    self.main_loop,
                    push.capacity()
                ),
            });
        }
        let plain = Epilogue::Plain;
        self.launch(
            stream,
            workspace,
            out,
            x,
            weight,
            num_tokens,
            plain,
            splits,
            Some(push),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        stream: &Arc<CudaStream>,
        workspace: &mut SkinnyGemmWorkspace,
        out: &mut CudaViewMut<'_, bf16>, // [num_tokens, n] (plain) or [num_tokens, n / 2]
        x: &CudaView<'_, bf16>,          // [num_tokens, k]
        weight: &CudaView<'_, bf16>,     // [n, k]
        num_tokens: usize,
        epilogue: Epilogue,
        splits: Option<usize>,
        push: Option<&PushTarget>,
    ) -> Result<()> {
        const K: &str = "skinny_gemm";
        let k = x.len() / num_tokens.max(1);
        if !Self::supports(num_tokens, k) {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: format!("{num_tokens} tokens of {k} features (1..={MAX_TOKENS}, k % 8 == 0)"),
            });
        }
        check_len(K, "x", x.len(), num_tokens * k)?;
        let n = weight.len() / k;
        check_len(K, "weight", weight.len(), n * k)?;
        let width = match epilogue {
            Epilogue::Plain => n,
            Epilogue::SiluAndMul => {
                if !n.is_multiple_of(2) {
                    return Err(KernelError::Unsupported {
                        kernel: K,
                        what: format!("gate_up with an odd number of rows ({n})"),
                    });
                }
                n / 2
            }
        };
        check_len(K, "out", out.len(), num_tokens * width)?;
        check_aligned16(K, stream, x, weight)?;
        if n == 0 {
            return Ok(());
        }
        let (rows, wanted) = self.plan(stream, n, k, num_tokens, epilogue, splits);
        let tiles = row_tiles(rows, n, epilogue);
        let (splits, stages_per_split) = launch_splits(self.main_loop, wanted, k);
        if self.main_loop == MainLoop::MmaSync
            && splits > 1
            && tiles * splits > workspace.split_blocks()
        {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: format!(
                    "{tiles} row tiles x {splits} splits: the workspace holds {} split blocks",
                    workspace.split_blocks()
                ),
            });
        }
        let token_tiles = num_tokens.div_ceil(8);
        let cfg = LaunchConfig {
            grid_dim: (
                to_u32(K, "row tiles", tiles)?,
                to_u32(K, "splits", splits)?,
                1,
            ),
            block_dim: (to_u32(K, "threads", 2 * rows)?, 1, 1),
            shared_mem_bytes: to_u32(
                K,
                "shared memory",
                ring_bytes(self.main_loop, rows, token_tiles),
            )?,
        };
        let (m32, n32, k32) = (
            to_u32(K, "num_tokens", num_tokens)?,
            to_u32(K, "n", n)?,
            to_u32(K, "k", k)?,
        );
        let per_split = to_u32(K, "k per split", stages_per_split * KC)?;
        let e = match epilogue {
            Epilogue::Plain => 0,
            Epilogue::SiluAndMul => 1,
        };
        let r = usize::from(rows != ROW_TILES[0]);
        let maps;
        let function;
        let mut launch;
        match (self.main_loop, &self.tma_functions) {
            (MainLoop::Tma, Some(tma)) => {
                // Boxes of half a row tile (the kernel copies a tile's two halves: plain rows
                // 0..R/2 and R/2..R, or R/2 gate rows and their R/2 up rows) and of the launch's
                // token tiles; rows past the matrices' ends arrive as zeros.
                maps = [
                    tensor_map(weight.device_ptr(stream).0, n, k, rows / 2)?,
                    tensor_map(x.device_ptr(stream).0, num_tokens, k, 8 * token_tiles)?,
                ];
                function = &tma[r][if push.is_some() { 2 } else { e }][token_tiles - 1];
                launch = Launch::new(stream, function);
                launch
                    .cluster((1, to_u32(K, "splits", splits)?, 1))
                    .arg(out)
                    .arg(&maps[0])
                    .arg(&maps[1]);
            }
            _ => {
                function = &self.functions[r][e][token_tiles - 1];
                launch = Launch::new(stream, function);
                launch
                    .arg(out)
                    .arg(&mut workspace.partials)
                    .arg(&mut workspace.tickets)
                    .arg(x)
                    .arg(weight);
            }
        }
        launch.arg(&m32).arg(&n32).arg(&k32).arg(&per_split);
        if let Some(push) = push {
            launch.arg(push);
        }
        // SAFETY: the arguments follow skinny_gemm[_tma][_glu|_push][_r{R}]_t{MT} (out, then
        // partials, tickets, x and w, or the TMA descriptors of w and x, then u32 m, n, k,
        // k_per_split, then for _push the SgPush by value, whose inboxes each hold a slot
        // per rank of `capacity` >= out's values, checked, and n even, checked); the TMA kernels in clusters of their splits, at most 8), launched with the 2·R threads it is compiled for; x holds
        // num_tokens <= 8·MT rows of k, weight n rows of k, out num_tokens rows of n (or n / 2
        // with SiLU·mul, n even), all checked; the descriptors describe exactly those
        // matrices (the TMA reads nothing outside them); k % 8 == 0 and k_per_split is whole
        // 64-value stages, so every 16-byte copy is inside its row; x and weight are 16-byte
        // aligned (checked); a split launch's tiles x splits blocks fit the workspace
        // (checked; its partials hold MAX_ROWS >= R rows a block), whose tickets are zero
        // between launches (the kernel resets them); the dynamic shared memory is the ring
        // the kernel indexes, within the size set at load; the TMA kernels exist only where
        // the module was compiled for sm_90a (`tma_functions`).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// NVRTC needs no GPU: where its library is found, skinny_gemm.cu compiles for sm_90,
    /// and every entry point `SkinnyGemm::load` asks for is in it (an `.entry` of the PTX).
    #[test]
    fn skinny_gemm_cu_compiles_with_every_entry_point() {
        let Some(entries) = crate::compile::entry_points(super::FILE, super::SOURCE) else {
            return;
        };
        let prefixes = [
            "skinny_gemm",
            "skinny_gemm_glu",
            "skinny_gemm_tma",
            "skinny_gemm_tma_glu",
            "skinny_gemm_tma_push",
        ];
        for prefix in prefixes {
            for rows in super::ROW_TILES {
                for mt in 1..=super::MAX_TOKENS / 8 {
                    let name = super::entry_name(prefix, rows, mt);
                    assert!(entries.contains(&name), "{name} is not in the PTX");
                }
            }
        }
    }

    #[test]
    fn row_tiles_and_splits() {
        use super::*;
        assert_eq!(row_tiles(64, 4096, Epilogue::Plain), 64);
        assert_eq!(row_tiles(64, 4097, Epilogue::Plain), 65);
        assert_eq!(row_tiles(64, 2 * 5504, Epilogue::SiluAndMul), 172);
        assert_eq!(row_tiles(128, 2 * 5504, Epilogue::SiluAndMul), 86);
        assert_eq!(entry_name("skinny_gemm", 64, 2), "skinny_gemm_t2");
        assert_eq!(
            entry_name("skinny_gemm_glu", 128, 4),
            "skinny_gemm_glu_r128_t4"
        );
        assert_eq!(ring_bytes(MainLoop::MmaSync, 64, 4), 48 * 1024);
        assert_eq!(ring_bytes(MainLoop::MmaSync, 128, 4), 80 * 1024);
        // 6 stages of 8 KB of W and 4 KB of x, 5 of 16 + 4: 2 blocks an SM (227 KB).
        assert_eq!(ring_bytes(MainLoop::Tma, 64, 4), 73 * 1024);
        assert_eq!(ring_bytes(MainLoop::Tma, 128, 4), 101 * 1024);
        // A Llama-2-7B TP 2 rank on an H200 (132 SMs): o_proj [4096, 2048] and down
        // [4096, 5504] split so that about 264 blocks run, gate_up's 172 tiles in two.
        assert_eq!(default_splits(132, 64, 2048), 4); // 32 stages: at most 4 of 8
        assert_eq!(default_splits(132, 64, 5504), 5);
        assert_eq!(default_splits(132, 172, 4096), 2);
        assert_eq!(default_splits(132, 344, 4096), 1);
        assert_eq!(default_splits(132, 1, 256), 1); // too short to split

        // Whole stages, no empty split, clusters of at most 8.
        assert_eq!(launch_splits(MainLoop::MmaSync, 3, 4096), (3, 22)); // 22 + 22 + 20
        assert_eq!(launch_splits(MainLoop::MmaSync, 7, 200), (4, 1)); // 4 stages only
        assert_eq!(launch_splits(MainLoop::MmaSync, 9, 8192), (9, 15));
        assert_eq!(launch_splits(MainLoop::Tma, 9, 8192), (8, 16));
        assert_eq!(launch_splits(MainLoop::Tma, 7, 5504), (7, 13)); // 86 stages: 6 x 13 + 8
        assert_eq!(launch_splits(MainLoop::Tma, 0, 64), (1, 1));

        // Never more split blocks than the workspace holds.
        assert!(64 * default_splits(132, 64, 1 << 20) <= MAX_SPLIT_BLOCKS_PER_SM * 132);
    }
}
