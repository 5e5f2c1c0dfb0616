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
//!
//! On large matrices the per-warp norm prologue is itself a cost: every warp of Llama-3.2-1B's
//! gate/up (4096 of them at one token) reads the residual stream, the delta and gamma through
//! L2 and sums squares before its first product. [`NormPrologue::PerBlock`] computes the norm
//! once per block into shared memory instead, in `rms_norm`'s own order (bit for bit the
//! unfused kernels), and lets a warp stream several row groups; `kernel_bench` times both
//! against cuBLAS with the separate norm and SiLU·mul kernels. The engine's gate/up takes it,
//! in one wave of blocks (H200, 2026-12-01: 4.5% less device time a token on the 1B shape).
//!
//! Split-K itself leaves the two small projections of the 1B shape (qkv [3072, 2048] and
//! o_proj [2048, 2048], 12.6 and 8.4 MB) at about half the copy bandwidth at one token: 768 and
//! 512 blocks that each load 16 KB and then reduce, in several short waves. [`Staging::Shared`]
//! takes the same launches through the `_staged` entry points instead: one wave of about one
//! block per SM, each copying its whole share of W (64-96 KB) into shared memory before it
//! waits for the previous kernel, then the split kernel's arithmetic on it (bit for bit). On the
//! H200 (2026-11-29) o_proj went from 48% to 63% of copy bandwidth and qkv with its rotary and
//! cache write from two launches to one.
//!
//! A split-K launch with more groups than the GPU holds blocks at once runs in waves, and each
//! block of a later wave starts its one trip to memory only when an earlier block has left.
//! [`SplitGrid::OneWave`] takes such launches (up to two waves' worth) through the
//! `_split_wave` entry points: as many blocks as are resident at once, each taking row groups
//! `b, b + blocks, ...` and sending the next group's loads out before the current group's sums
//! meet; bit for bit the `_split` kernels (the 1B shape's down projection: 78.6% → 84.7% of
//! copy bandwidth, H200, 2026-12-02).

use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut, DevicePtr, LaunchConfig,
};
use half::bf16;

use crate::error::{check_aligned16, check_len, to_u32, KernelError, Result};
use crate::launch::Launch;
use crate::qkv_rotary_cache::QkvShape;

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
    /// more than one trip to memory per row ([`Gemv::splits`]): `Below(2)`.
    Auto,
    /// The same with another number of blocks per SM under which a launch splits (the engine's
    /// `LAB_GEMV_SPLIT_BELOW`, to measure the rule at other shapes: on the H200 at Llama-2-7B's
    /// k = 4096, plain grids of 2.6 and 2.9 blocks per SM were 23% and 22% slower than split-K;
    /// kernel_bench --tp-shapes, 2026-11-29).
    Below(usize),
    /// Never (the bench's baseline).
    Never,
    /// Always (the bench's other side).
    Always,
}

/// Where [`Gemv::forward_norm`] computes the RMSNorm of its input (not the split-K launches,
/// whose block already shares it, nor [`Gemv::forward_norm_rope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPrologue {
    /// Every warp normalizes the input for itself (`gemv_norm*_m*`): no barrier, but every warp
    /// reads the residual stream, the delta and gamma (12 KB at k = 2048) through L2 and sums
    /// squares before its first product. The default: what the engine has measured.
    PerWarp,
    /// Once per block, into shared memory (`gemv_norm*_m*_block`), then each warp streams
    /// `groups_per_warp` row groups one after another (0: as many as it takes for the grid to
    /// fit one wave of resident blocks). Bit for bit `rms_norm` (or `fused_add_rms_norm`) then
    /// [`Gemv::forward`]. Where it does not apply (rows longer than 8192, or split-K
    /// launches that split k) the launch falls back to [`NormPrologue::PerWarp`].
    PerBlock { groups_per_warp: usize },
}

/// Output features per warp for `m` tokens (`ROWS` of the kernel's entry points).
fn rows_per_warp(m: usize) -> usize {
    if m == 1 {
        4
    } else {
        2
    }
}

/// When a split-K launch stages its weights in shared memory (the `_staged` entry points).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staging {
    /// Never: the `_split` entry points (what the engine has measured; the default).
    Off,
    /// Where the launch is split-K, takes at most [`STAGED_MAX_TOKENS`] tokens of rows of at
    /// most 8192, and the whole weight fits one wave of blocks (about one per SM) of at most
    /// 16 row groups and 100 KB of shared memory each ([`Gemv::stages`]). Bit for bit the
    /// `_split` entry points.
    Shared,
}

/// How a plain split-K launch that is not staged covers its row groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitGrid {
    /// A block per row group (`_split`), in as many waves as that takes (what [`Gemv`] starts
    /// with).
    PerGroup,
    /// One wave (`_split_wave`) where a block per group would take more than one wave and at
    /// most two: as many blocks as the GPU holds at once, each taking row groups `b, b +
    /// blocks, ...` and loading the next group's weights before the current group's sums meet.
    /// Bit for bit [`SplitGrid::PerGroup`]. The engine's: on the H200 (2026-12-02, one token)
    /// Llama-3.2-1B's down [2048, 8192], 512 groups for 264 resident blocks, 10.19 → 9.46 µs
    /// (kernel_bench: 79% → 85% of the copy bandwidth) and its batch-1 decode 1.8% faster;
    /// but the Llama-2-7B shape's o_proj and down (1024 groups each, four waves) made its
    /// batch-1 step 1.3% slower, where a block per group keeps the SMs evenly loaded to the
    /// end (a launch's blocks are handed to SMs as others finish, while a wave's blocks each
    /// own a fixed share); beyond two waves a block per group is launched.
    OneWave,
    /// The same kernel on a grid of at most this many blocks an SM (fewer than the GPU holds:
    /// room beside them for the next kernel's blocks, which can then load their weights
    /// before this launch ends). Bit for bit [`SplitGrid::PerGroup`].
    BlocksPerSm(usize),
}

/// Most tokens the `_staged` entry points take (`GEMV_STAGED` in the kernel).
pub const STAGED_MAX_TOKENS: usize = 3;
/// Row groups one staged block takes at most (`STAGE_MAX_GROUPS`).
const STAGE_MAX_GROUPS: usize = 16;
/// Longest row (16-byte chunks) the staged kernel takes: 4 chunks a thread (`STAGE_X_CHUNKS`).
const STAGE_MAX_CHUNKS: usize = 4 * THREADS as usize;
/// Shared memory a staged block's weights may take: two blocks then fit in an SM's 228 KB,
/// so the next kernel's block can start its copies beside this one.
const STAGE_MAX_BYTES: usize = 100 << 10;

/// Rows per warp of the `_block` entry points (`GEMV_BLOCK_NORM` in the kernel).
fn block_rows_per_warp(m: usize) -> usize {
    if m <= 2 {
        4
    } else {
        2
    }
}

/// A `_block` entry point: `block[epilogue][m - 1]`.
type BlockKernel = (usize, usize);

/// Longest row (16-byte chunks) the `_block` entry points normalize: rms_norm's threads for
/// it (4 chunks each) must fit in the GEMV's block.
const BLOCK_NORM_MAX_CHUNKS: usize = 4 * THREADS as usize;

/// The compiled kernels, one per token count and variant.
#[derive(Debug, Clone)]
pub struct Gemv {
    by_tokens: Vec<CudaFunction>,   // [MAX_TOKENS], index m - 1
    norm: Vec<CudaFunction>,        // the same with the RMSNorm prologue
    norm_glu: Vec<CudaFunction>,    // ... and the SiLU·mul epilogue
    norm_rope: Vec<CudaFunction>,   // the RMSNorm prologue and the rotary + cache epilogue
    split: [Vec<CudaFunction>; 4],  // the four again, split-K (`_split`)
    block: [Vec<CudaFunction>; 2],  // norm and norm_glu with the norm once per block (`_block`)
    staged: [Vec<CudaFunction>; 4], // the four of `split` with W staged in shared memory, m <= 3
    split_wave: Vec<CudaFunction>,  // gemv_m*_split_wave: plain split-K in one wave
    /// Blocks of `split_wave[m - 1]` an SM holds at once, asked of the driver once at load.
    split_wave_resident: Vec<usize>,
    /// Blocks of a `_block` kernel an SM holds at once, by (kernel, shared memory bytes): asked
    /// of the driver once per pair (the shared memory is the launch's `m · k` inputs, so it is
    /// not known at load), then answered from here, as a one-wave launch needs it every time.
    block_resident: Arc<Mutex<Vec<(BlockKernel, usize, usize)>>>,
    num_sms: usize,
    split_k: SplitK,
    norm_prologue: NormPrologue,
    staging: Staging,
    split_grid: SplitGrid,
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

/// The rotary embedding and the cache write after a qkv projection
/// ([`Gemv::forward_norm_rope`]): the operands of [`crate::qkv_rotary_cache`].
pub struct RotaryCache<'a, 'b> {
    /// `[num_blocks, block_size, num_kv_heads, head_dim]` each.
    pub key_cache: &'a mut CudaViewMut<'b, bf16>,
    pub value_cache: &'a mut CudaViewMut<'b, bf16>,
    /// `[num_tokens]`: each token's position, and its cache slot (`PADDING_SLOT`: none).
    pub positions: &'a CudaView<'b, u32>,
    pub slot_mapping: &'a CudaView<'b, u64>,
    /// `[max_position, head_dim]`: head_dim / 2 cosines, then as many sines.
    pub cos_sin_cache: &'a CudaView<'b, f32>,
    pub shape: QkvShape,
}

/// What follows the projection in the same launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// `out = y (+ bias)`, `[num_tokens, n]`.
    Plain,
    /// `W` is gate_up `[2d, k]`: `out = silu(gate) · up`, `[num_tokens, d]`, no bias.
    SiluAndMul,
}

/// The `_block` kernels (index m - 1) allowed the shared memory their longest rows need:
/// m tokens of 8192 bf16 (128 KB at 8 tokens), past the 48 KB a launch gets by default.
fn with_shared(functions: Vec<CudaFunction>) -> Result<Vec<CudaFunction>> {
    use cudarc::driver::sys::CUfunction_attribute as A;
    for (i, f) in functions.iter().enumerate() {
        let bytes = (i + 1) * BLOCK_NORM_MAX_CHUNKS * 16;
        f.set_attribute(
            A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )?;
    }
    Ok(functions)
}

/// The `_staged` kernels allowed [`STAGE_MAX_BYTES`] of dynamic shared memory, and asking for
/// the largest shared-memory carveout (two such blocks per SM).
fn with_stage_shared(functions: Vec<CudaFunction>) -> Result<Vec<CudaFunction>> {
    use cudarc::driver::sys::CUfunction_attribute as A;
    for f in &functions {
        f.set_attribute(
            A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            STAGE_MAX_BYTES as i32,
        )?;
        f.set_attribute(A::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100)?;
    }
    Ok(functions)
}

impl Gemv {
    pub(crate) fn load(module: &Arc<CudaModule>, num_sms: usize) -> Result<Self> {
        let load = |prefix: &str, suffix: &str| {
            (1..=MAX_TOKENS)
                .map(|m| module.load_function(&format!("{prefix}_m{m}{suffix}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let staged = |prefix: &str| {
            let functions = (1..=STAGED_MAX_TOKENS)
                .map(|m| module.load_function(&format!("{prefix}_m{m}_staged")))
                .collect::<Result<Vec<_>, _>>()?;
            with_stage_shared(functions)
        };
        let split_wave = load("gemv", "_split_wave")?;
        Ok(Self {
            by_tokens: load("gemv", "")?,
            norm: load("gemv_norm", "")?,
            norm_glu: load("gemv_norm_glu", "")?,
            norm_rope: load("gemv_norm_rope", "")?,
            split: [
                load("gemv", "_split")?,
                load("gemv_norm", "_split")?,
                load("gemv_norm_glu", "_split")?,
                load("gemv_norm_rope", "_split")?,
            ],
            block: [
                with_shared(load("gemv_norm", "_block")?)?,
                with_shared(load("gemv_norm_glu", "_block")?)?,
            ],
            staged: [
                staged("gemv")?,
                staged("gemv_norm")?,
                staged("gemv_norm_glu")?,
                staged("gemv_norm_rope")?,
            ],
            split_wave_resident: (split_wave.iter())
                .map(|f| f.occupancy_max_active_blocks_per_multiprocessor(THREADS, 0, None))
                .map(|r| r.map(|blocks| (blocks as usize).max(1)))
                .collect::<Result<_, _>>()?,
            split_wave,
            block_resident: Arc::default(),
            num_sms,
            split_k: SplitK::Auto,
            norm_prologue: NormPrologue::PerWarp,
            staging: Staging::Off,
            split_grid: SplitGrid::PerGroup,
        })
    }

    /// Blocks of the `_block` kernel `kernel` an SM holds at once with `shared` bytes of dynamic
    /// shared memory (at least 1): asked of the driver the first time, remembered after.
    fn block_resident(&self, kernel: BlockKernel, shared: usize) -> Result<usize> {
        let mut known = self
            .block_resident
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(&(_, _, blocks)) = known.iter().find(|(k, s, _)| *k == kernel && *s == shared) {
            return Ok(blocks);
        }
        let blocks = self.block[kernel.0][kernel.1]
            .occupancy_max_active_blocks_per_multiprocessor(THREADS, shared, None)?
            .max(1) as usize;
        known.push((kernel, shared, blocks));
        Ok(blocks)
    }

    /// The same kernels with plain split-K launches in one wave or a block per row group.
    pub fn with_split_grid(mut self, split_grid: SplitGrid) -> Self {
        self.split_grid = split_grid;
        self
    }

    /// How plain split-K launches that are not staged cover their row groups.
    pub fn split_grid(&self) -> SplitGrid {
        self.split_grid
    }

    /// The same kernels with split-K launches staged in shared memory or not.
    pub fn with_staging(mut self, staging: Staging) -> Self {
        self.staging = staging;
        self
    }

    /// Whether split-K launches are staged where they can be.
    pub fn staging(&self) -> Staging {
        self.staging
    }

    /// Row groups per block of the staged launch of `features` output features (or row pairs)
    /// in groups of `per_group`, each group `rows` rows of `k`, for `num_tokens` tokens; `None`
    /// where it does not apply (staging off, too many tokens, rows too long, or more weight
    /// than one wave of blocks holds). The caller has decided the launch is split-K.
    fn staged_groups(
        &self,
        num_tokens: usize,
        features: usize,
        per_group: usize,
        rows: usize,
        k: usize,
    ) -> Option<usize> {
        if self.staging != Staging::Shared
            || num_tokens > STAGED_MAX_TOKENS
            || k / 8 > STAGE_MAX_CHUNKS
        {
            return None;
        }
        let max = (STAGE_MAX_BYTES / (rows * k * 2)).min(STAGE_MAX_GROUPS);
        let per_block = features.div_ceil(per_group).div_ceil(self.num_sms.max(1));
        (1..=max).contains(&per_block).then_some(per_block)
    }

    /// Whether a launch for `num_tokens` tokens through a weight of `n` rows of `k` takes the
    /// `_staged` entry points; `pairs`: its rows are taken in pairs (SiLU·mul's gate and up,
    /// or the rotary epilogue's). For the bench and the tests, which must know which kernel
    /// they time or check.
    pub fn stages(&self, num_tokens: usize, n: usize, k: usize, pairs: bool) -> bool {
        if !Self::supports(num_tokens, k) {
            return false;
        }
        let rows = rows_per_warp(num_tokens);
        let (features, per_group) = if pairs { (n / 2, rows / 2) } else { (n, rows) };
        self.splits(features, per_group, k)
            && self
                .staged_groups(num_tokens, features, per_group, rows, k)
                .is_some()
    }

    /// The same kernels with the norm prologue computed per warp or per block.
    pub fn with_norm_prologue(mut self, norm_prologue: NormPrologue) -> Self {
        self.norm_prologue = norm_prologue;
        self
    }

    /// The norm prologue [`Gemv::forward_norm`] uses where it applies.
    pub fn norm_prologue(&self) -> NormPrologue {
        self.norm_prologue
    }

    /// Whether [`Gemv::forward_norm_rope`] is worth its launch for `num_tokens` rows through a
    /// qkv projection of `n` rows of `k`: when the launch is not split-K. Measured on the H200
    /// (2026-11-29, batch-1 decode, same run): with the warp-per-rows split the fused launch
    /// saves its separate rotary kernel (SmolLM2-135M's shape, 0.617 → 0.572 ms of device time
    /// per token); split-K, where one thread per block runs the epilogue after the block's
    /// reduction, it was 1% slower than the two launches (Llama-3.2-1B's, 1.159 → 1.171 ms).
    /// Staged ([`Staging::Shared`]), the epilogue is spread over the block's first threads,
    /// so a staged split-K launch fuses it too (not yet measured).
    pub fn fuses_rotary(&self, num_tokens: usize, n: usize, k: usize) -> bool {
        Self::supports(num_tokens, k)
            && (!self.splits(n / 2, rows_per_warp(num_tokens) / 2, k)
                || self.stages(num_tokens, n, k, true))
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
            SplitK::Auto => self.splits_below(2, features, per_warp, k),
            SplitK::Below(blocks_per_sm) => self.splits_below(blocks_per_sm, features, per_warp, k),
        }
    }

    /// [`SplitK::Below`]: the plain grid gives the SMs fewer than `blocks_per_sm` blocks each,
    /// and a lane walks a row in more than one trip to memory.
    fn splits_below(
        &self,
        blocks_per_sm: usize,
        features: usize,
        per_warp: usize,
        k: usize,
    ) -> bool {
        let warps_per_block = THREADS as usize / 32;
        let plain_blocks = features.div_ceil(per_warp * warps_per_block);
        plain_blocks < blocks_per_sm * self.num_sms && k / 8 > 32 * UNROLL
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
        self.norm_launch(
            stream,
            out,
            residual_out,
            input,
            weight,
            bias,
            epilogue,
            None,
            num_tokens,
        )
    }

    /// The attention block's way in, in one launch: `residual_out = residual + delta`, `qkv =
    /// rms_norm(residual_out) · W_qkvᵀ (+ bias)`, then what [`crate::qkv_rotary_cache`] does
    /// with `qkv`: q rotated by each token's position into `q_out`, k rotated and v into the
    /// paged cache at the token's slot, with its results bit for bit (same rounding to bf16 of
    /// each projection before the rotation). The projection's rows are taken in rotary pairs
    /// (element i and i + head_dim/2 of a head), so one warp holds both values it rotates.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_norm_rope(
        &self,
        stream: &Arc<CudaStream>,
        q_out: &mut CudaViewMut<'_, bf16>, // [num_tokens, num_heads · head_dim]
        residual_out: Option<&mut CudaViewMut<'_, bf16>>, // [num_tokens, k]
        input: &NormInput<'_, '_>,
        weight: &CudaView<'_, bf16>, // [(num_heads + 2 num_kv_heads) · head_dim, k]
        bias: Option<&CudaView<'_, bf16>>, // [n]
        rope: &mut RotaryCache<'_, '_>,
        num_tokens: usize,
    ) -> Result<()> {
        const K: &str = "gemv_norm_rope";
        let QkvShape {
            num_heads,
            num_kv_heads,
            head_dim,
        } = rope.shape;
        if head_dim == 0 || !head_dim.is_multiple_of(2) || num_kv_heads == 0 {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: format!("head_dim {head_dim} (even, > 0), {num_kv_heads} KV heads"),
            });
        }
        let kv_row = num_kv_heads * head_dim;
        check_len(K, "q_out", q_out.len(), num_tokens * num_heads * head_dim)?;
        check_len(
            K,
            "weight rows",
            weight.len() / input.gamma.len().max(1),
            num_heads * head_dim + 2 * kv_row,
        )?;
        check_len(K, "positions", rope.positions.len(), num_tokens)?;
        check_len(K, "slot_mapping", rope.slot_mapping.len(), num_tokens)?;
        check_len(
            K,
            "value_cache",
            rope.value_cache.len(),
            rope.key_cache.len(),
        )?;
        check_len(
            K,
            "key_cache",
            rope.key_cache.len(),
            rope.key_cache.len() / kv_row * kv_row,
        )?;
        check_len(
            K,
            "cos_sin_cache",
            rope.cos_sin_cache.len(),
            rope.cos_sin_cache.len() / head_dim * head_dim,
        )?;
        self.norm_launch(
            stream,
            q_out,
            residual_out,
            input,
            weight,
            bias,
            Epilogue::Plain,
            Some(rope),
            num_tokens,
        )
    }

    /// The launch behind [`Gemv::forward_norm`] and [`Gemv::forward_norm_rope`] (`rope` given:
    /// the rotary + cache epilogue, `out` is q).
    #[allow(clippy::too_many_arguments)]
    fn norm_launch(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, bf16>,
        residual_out: Option<&mut CudaViewMut<'_, bf16>>,
        input: &NormInput<'_, '_>,
        weight: &CudaView<'_, bf16>,
        bias: Option<&CudaView<'_, bf16>>,
        epilogue: Epilogue,
        rope: Option<&mut RotaryCache<'_, '_>>,
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
            Epilogue::Plain if rope.is_some() => {
                if !n.is_multiple_of(2) {
                    return Err(KernelError::Unsupported {
                        kernel: K,
                        what: format!("rotary pairs of a qkv of {n} rows"),
                    });
                }
                n / 2 // row pairs
            }
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
        if rope.is_none() {
            check_len(K, "out", out.len(), num_tokens * width)?;
        }
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
            Epilogue::Plain if rope.is_none() => rows,
            _ => rows / 2, // (gate, up) or rotary pairs
        };
        let split = self.splits(width, per_group, k);
        // The norm once per block: its own launch.
        if let NormPrologue::PerBlock { groups_per_warp } = self.norm_prologue {
            let shared = num_tokens * k * 2; // the tokens' normed input, bf16
            if rope.is_none() && !split && k / 8 <= BLOCK_NORM_MAX_CHUNKS {
                let per_group = match epilogue {
                    Epilogue::Plain => block_rows_per_warp(num_tokens),
                    Epilogue::SiluAndMul => block_rows_per_warp(num_tokens) / 2,
                };
                let kernel = match epilogue {
                    Epilogue::Plain => (0, num_tokens - 1),
                    Epilogue::SiluAndMul => (1, num_tokens - 1),
                };
                let function = &self.block[kernel.0][kernel.1];
                let warps = THREADS as usize / 32;
                let groups = width.div_ceil(per_group);
                let groups_per_warp = match groups_per_warp {
                    0 => {
                        // One wave: every block resident at once, each SM's share streamed by
                        // the warps it holds.
                        let per_sm = self.block_resident(kernel, shared)?;
                        groups.div_ceil(warps * per_sm * self.num_sms)
                    }
                    g => g,
                };
                let cfg = LaunchConfig {
                    grid_dim: (
                        to_u32(K, "blocks", groups.div_ceil(warps * groups_per_warp))?,
                        1,
                        1,
                    ),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: to_u32(K, "shared memory", shared)?,
                };
                let (n32, k32) = (to_u32(K, "n", n)?, to_u32(K, "k", k)?);
                let g32 = to_u32(K, "groups per warp", groups_per_warp)?;
                let null: u64 = 0;
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
                launch.arg(&n32).arg(&k32).arg(&g32);
                // SAFETY: the arguments follow gemv_norm_m*_block (out, residual_out or null,
                // delta or null, residual, gamma, float eps, w, bias or null, u32 n, u32 k, u32
                // groups) or gemv_norm_glu_m*_block (the same without bias); every length was
                // checked above against num_tokens, k and n, operands are 16-byte aligned,
                // residual_out is given whenever delta is, k / 8 <= 4 x THREADS (the norm's
                // threads fit the block) and the dynamic shared memory is num_tokens · k bf16,
                // within the default limit; the grid covers width / per_group row groups of
                // groups_per_warp per warp, and the kernel clamps rows to n.
                unsafe { launch.launch(cfg) }?;
                return Ok(());
            }
        }
        // Split-K: a block per row group (staged: `groups` of them); otherwise a row group per
        // warp.
        let staged = if split {
            self.staged_groups(num_tokens, width, per_group, rows, k)
        } else {
            None
        };
        let features_per_block = per_group
            * match (staged, split) {
                (Some(groups), _) => groups,
                (None, true) => 1,
                (None, false) => THREADS as usize / 32,
            };
        let cfg = LaunchConfig {
            grid_dim: (
                to_u32(K, "blocks", width.div_ceil(features_per_block))?,
                1,
                1,
            ),
            block_dim: (THREADS, 1, 1),
            // Staged: the block's row groups of W.
            shared_mem_bytes: to_u32(K, "shared memory", staged.unwrap_or(0) * rows * k * 2)?,
        };
        let (n32, k32) = (to_u32(K, "n", n)?, to_u32(K, "k", k)?);
        let null: u64 = 0;
        let variant = match (epilogue, rope.is_some()) {
            (Epilogue::Plain, false) => 1,
            (Epilogue::SiluAndMul, _) => 2,
            (Epilogue::Plain, true) => 3,
        };
        let function = match (variant, split) {
            _ if staged.is_some() => &self.staged[variant][num_tokens - 1],
            (_, true) => &self.split[variant][num_tokens - 1],
            (1, false) => &self.norm[num_tokens - 1],
            (2, false) => &self.norm_glu[num_tokens - 1],
            _ => &self.norm_rope[num_tokens - 1],
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
        let groups32 = to_u32(K, "groups", staged.unwrap_or(0))?;
        if staged.is_some() {
            launch.arg(&groups32);
        }
        let shape32;
        if let Some(r) = rope {
            let s = r.shape;
            shape32 = [
                to_u32(K, "num_heads", s.num_heads)?,
                to_u32(K, "num_kv_heads", s.num_kv_heads)?,
                to_u32(K, "head_dim", s.head_dim)?,
            ];
            launch
                .arg(&mut *r.key_cache)
                .arg(&mut *r.value_cache)
                .arg(r.positions)
                .arg(r.slot_mapping)
                .arg(r.cos_sin_cache);
            for a in &shape32 {
                launch.arg(a);
            }
        }
        // SAFETY: with `rope`, the arguments follow gemv_norm_rope_m* (as gemv_norm_m*, then
        // key_cache, value_cache, positions, slot_mapping, cos_sin_cache, u32 num_heads,
        // num_kv_heads, head_dim; lengths checked by forward_norm_rope, cache rows and table rows
        // read at slot_mapping[t] and positions[t], which the caller guarantees in range, as for
        // qkv_rotary_cache). Otherwise they follow gemv_norm_m* and its _split twin (out, residual_out or null, delta or null,
        // residual, gamma, float eps, w, bias or null, u32 n, u32 k) or gemv_norm_glu_m* (the
        // same without bias); every length was checked above against num_tokens, k and n,
        // operands are 16-byte aligned, and residual_out is given whenever delta is. The
        // `_staged` twins take u32 groups after k; staged_groups checked num_tokens <= 3,
        // k / 8 <= 4 x THREADS and groups <= 16, and the dynamic shared memory (groups · rows ·
        // k bf16, <= 100 KB) is what the kernel copies W into and within the allowed size.
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
        check_aligned16(K, stream, x, weight)?;
        if n == 0 {
            return Ok(());
        }
        let rows = rows_per_warp(num_tokens);
        let split = self.splits(n, rows, k);
        let staged = if split {
            self.staged_groups(num_tokens, n, rows, rows, k)
        } else {
            None
        };
        let mut one_wave = split && staged.is_none() && self.split_grid != SplitGrid::PerGroup;
        let rows_per_block = rows
            * match (staged, split) {
                (Some(groups), _) => groups,
                (None, true) => 1,
                (None, false) => THREADS as usize / 32,
            };
        let mut blocks = n.div_ceil(rows_per_block);
        if one_wave {
            // As many blocks as are resident at once; each takes every `blocks`-th row group.
            let resident = self.split_wave_resident[num_tokens - 1];
            let per_sm = match self.split_grid {
                SplitGrid::BlocksPerSm(asked) => asked.clamp(1, resident),
                _ => resident,
            };
            // OneWave only where a block per group would take two waves at most (see its doc).
            one_wave = matches!(self.split_grid, SplitGrid::BlocksPerSm(_))
                || blocks <= 2 * resident * self.num_sms;
            if one_wave {
                blocks = blocks.min(per_sm * self.num_sms);
            }
        }
        let cfg = LaunchConfig {
            grid_dim: (to_u32(K, "blocks", blocks)?, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: to_u32(K, "shared memory", staged.unwrap_or(0) * rows * k * 2)?,
        };
        let (n32, k32) = (to_u32(K, "n", n)?, to_u32(K, "k", k)?);
        let groups32 = to_u32(K, "groups", staged.unwrap_or(0))?;
        let null: u64 = 0;
        let function = if staged.is_some() {
            &self.staged[0][num_tokens - 1]
        } else if one_wave {
            &self.split_wave[num_tokens - 1]
        } else if split {
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
        if staged.is_some() {
            launch.arg(&groups32);
        }
        // gemv_m*_staged takes u32 groups after k (<= 16, its shared memory groups · rows · k
        // bf16 <= 100 KB, num_tokens <= 3 and k / 8 <= 4 x THREADS: checked by staged_groups).
        // SAFETY: the signature matches gemv_m*, gemv_m*_split and gemv_m*_split_wave (out, x,
        // w, bias or null, u32 n, u32 k); x holds num_tokens rows of k, weight n rows of k, out
        // num_tokens rows of n, bias n (checked), k % 8 == 0 and x, weight are 16-byte aligned
        // (checked); the kernel clamps rows to n, and the wave kernel's grid-stride loop stops
        // at the last row group.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// NVRTC needs no GPU: where its library is found (CI has none), gemv.cu, with its
    /// `_staged` entry points (cp.async, up to 100 KB of dynamic shared memory) and its
    /// `_split_wave` ones, compiles and
    /// assembles for the H200's sm_90, and every entry point `Gemv::load` asks for is in it
    /// (looked up in the PTX, where each is an `.entry`).
    #[test]
    fn gemv_cu_compiles_with_every_entry_point() {
        let Some(entries) = crate::compile::entry_points(super::FILE, super::SOURCE) else {
            return;
        };
        let has = |name: &str| entries.iter().any(|e| e == name);
        for prefix in ["gemv", "gemv_norm", "gemv_norm_glu", "gemv_norm_rope"] {
            for m in 1..=super::MAX_TOKENS {
                for suffix in ["", "_split"] {
                    let name = format!("{prefix}_m{m}{suffix}");
                    assert!(has(&name), "{name} is not in the PTX");
                }
            }
            for m in 1..=super::STAGED_MAX_TOKENS {
                let name = format!("{prefix}_m{m}_staged");
                assert!(has(&name), "{name} is not in the PTX");
            }
        }
        for m in 1..=super::MAX_TOKENS {
            let name = format!("gemv_m{m}_split_wave");
            assert!(has(&name), "{name} is not in the PTX");
        }
    }
}
