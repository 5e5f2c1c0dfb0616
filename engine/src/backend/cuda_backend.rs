//! The CUDA backend: bf16 tensors on one NVIDIA GPU, our NVRTC-compiled kernels (`kernels/`)
//! and cuBLAS for the projections.
//!
//! Every op launches on the GPU's one stream and returns at once; the host waits only where it
//! reads a result (the sampled ids, once per step). Outputs come from a caching
//! allocator ([`super::cuda_allocator`]) and are written in full by their kernel before anything reads them.
//! A decode step may instead replay a recorded CUDA graph ([`super::cuda_graph`]).
//!
//! Where one launch can do the work of several, the backend overrides the trait's default:
//! `qkv_rotary_and_cache` is one kernel here, three calls on the CPU; for decode batches of a
//! few tokens `add_rms_norm_qkv_rotary_cache` and `add_rms_norm_gate_up` are one GEMV each
//! (norm, projection, then rotary and the cache write, or the activation), so a decoder layer
//! is five launches.
//!
//! Each op opens a `tracing` span (target `kernel`) around its launch: on the host that is
//! the launch cost, not the kernel's run time, which the tracer measures with CUDA events.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use half::bf16;
use kernels::cudarc::driver::sys::CUevent_flags;
use kernels::cudarc::driver::{CudaEvent, CudaSlice, CudaStream, PinnedHostSlice};
use kernels::custom_all_reduce::PushTarget;
use kernels::gemv::{
    Epilogue, Gemv, NormInput, NormPrologue, RotaryCache, SplitGrid, SplitK, Staging,
};
use kernels::nccl::NcclRank;
use kernels::paged_attention::{
    max_partitions, DecodeKernel, DecodeShape, PagedAttention, SplitKWorkspace,
};
use kernels::prefill_attention::PrefillShape;
use kernels::qkv_rotary_cache::QkvShape;
use kernels::sampling::RowParams;
use kernels::skinny_gemm::{MainLoop, SkinnyGemmWorkspace};
use kernels::{Gpu, KernelError};
use rayon::prelude::*;

use super::cuda_allocator::{self, CachingAllocator};
use super::cuda_graph::{capture_sizes, padded_size, CudaGraphs, GraphKey};
use super::cuda_kernel_timer::{self, KernelScope, KernelTimer};
use super::cuda_step::{self, device, CudaStepMetadata, StepPool, StepTransfer};
use super::cuda_tensor::{CudaData, CudaTensor};
use super::cuda_tensor_parallel::RankComm;
use super::{Backend, BackendError, DType, DeviceTime, Result, StepLimits, StepSampling};
use crate::config::{EngineConfig, ModelConfig};
use crate::distributed::{CommOp, CommStats, Communicator};
use crate::outputs::ModelRunnerOutput;
use crate::sampler::{SampleFn, SampleRow};
use crate::worker::model_runner::ModelInput;

/// Most tokens a projection runs through the GEMV rather than cuBLAS: past 4 tokens the GEMV
/// streams large weights at well under cuBLAS's bandwidth (kernels/README.md: Llama-3.2-1B's
/// gate/up at 8 tokens, 45% of copy against 88%).
const GEMV_MAX_TOKENS: usize = 4;

/// Largest weight (elements) the GEMV takes for 2-4 tokens. Below it a projection is a few µs
/// of latency, which the GEMV shortens (it starts loading weights under the previous kernel,
/// and takes the norm and activation with it); above it the time is the bytes, which cuBLAS
/// streams faster once several tokens share them (kernels/README.md: gate/up of the
/// Llama-3.2-1B shape at 4 tokens, 74% of copy against cuBLAS's 89%). One token takes the
/// GEMV at every size: with split-K for few long rows it is about as fast as cuBLAS on each
/// of that shape's projections (H200, 2026-11-29, weights read from HBM: qkv 5.8 µs against
/// 6.1, o_proj 4.1 against 5.7, gate/up 18.7 against 18.0, down 10.2 against 12.7, LM head
/// 118 against 125), and it takes the norm and SiLU·mul kernels with it (batch-1 decode
/// 1.31 → 1.23 ms/token in the same run). `LAB_GEMV_MAX_WEIGHTS` overrides it ([`GemvRule`]).
const GEMV_MAX_WEIGHTS: usize = 1 << 22;

/// Block records the kernel timeline keeps between two reads (32 bytes each: 128 MiB). A
/// batch-1 decode step of the Llama-3.2-1B shape records about 20,000 blocks.
const TIMELINE_RECORDS: usize = 1 << 22;

/// Which projections of a decode batch run on the GEMV rather than cuBLAS, and how the fused
/// GEMV computes its RMSNorm prologue. The defaults are the rule above; each can be overridden
/// by an environment variable, read once when the backend opens, so that one build can be run
/// both ways in one call on the GPU machine (A/B):
/// - `LAB_GEMV_MAX_WEIGHTS=<elements>`: the GEMV takes 2-4 tokens through weights of fewer
///   elements than this (default [`GEMV_MAX_WEIGHTS`], 4194304); above it, cuBLAS with the
///   separate norm and SiLU·mul kernels.
/// - `LAB_GEMV_MAX_WEIGHTS_M1=<elements>`: the same limit for one token (default none: one
///   token takes the GEMV at every size; `0` sends every projection to cuBLAS).
/// - `LAB_GEMV_NORM=warp|block|block:<G>`: where the fused GEMV normalizes its input
///   ([`NormPrologue`]): in every warp (`warp`, the first version), or once per block into
///   shared memory with G row groups per warp (`block:G`) or a one-wave grid (`block`, the
///   default: G as small as keeps every block resident at once, 1 wherever a grid of one
///   group per warp already fits, as for every SmolLM2-135M projection). Measured on the H200
///   (2026-11-29, kernel_bench inside a CUDA graph, 1 token): Llama-3.2-1B's gate/up 26.8 µs
///   per warp, 19.5 per block (82% of copy; cuBLAS + norm + SiLU·mul 30.2), its LM head 122.5
///   against 119.1, SmolLM2's gate/up 4.5 against 3.8; batch-1 decode of the 1B shape with the
///   per-block norm on its gate/up, 1.14 → 1.00 ms/token of device time, A B A B in one call.
///   The one-wave grid (2026-12-01, `scripts/gpu-env-ab.sh`, two rounds): the 1B shape's
///   batch-1 decode 0.8705, 0.8742 → 0.8325, 0.8319 ms/token of device time against
///   `block:1` (its gate/up takes 2 groups a warp: 256 blocks for the 264 resident, where
///   `block:1` ran 512 in two waves); the 135M shape's launches are the same.
/// - `LAB_GEMV_STAGED=1|0`: split-K launches that fit one wave (Llama-3.2-1B's qkv and o_proj
///   at one token) stage their weights in shared memory before waiting for the previous
///   kernel ([`Staging::Shared`], bit for bit the split-K kernels), and the qkv launch then
///   keeps its rotary + cache epilogue. Default 1: on the H200 (2026-11-29, 13:23 UTC,
///   kernel_bench, 1 token) the 1B o_proj 4.1 → 3.1 µs, its qkv with rotary 11.5 µs in two
///   launches → 5.2 in one, and batch-1 decode of the 1B shape 1.053 → 0.969 ms/token of
///   device time, A B A B in one call (SmolLM2's launches do not stage: unchanged).
/// - `LAB_GEMV_SPLIT_BELOW=<blocks per SM>`: a launch over rows longer than 1024 takes the
///   split-K kernels when its plain grid would give the SMs fewer blocks than this (default 2,
///   [`SplitK::Auto`]; 0: never). The default was measured on Llama-3.2-1B's shapes (k = 2048);
///   at Llama-2-7B's k = 4096 split-K was faster up to about 3 blocks per SM in kernel_bench
///   (`--tp-shapes`, 2026-11-29), not yet in the engine.
/// - `LAB_GEMV_SPLIT_WAVE=1|0|blocks:<N>`: split-K launches that do not stage run in one wave
///   of blocks that each take several row groups where a block per group would take more
///   than one wave and at most two ([`SplitGrid::OneWave`], bit for bit the block per group;
///   `0`: a block per group; `blocks:N`: at most N blocks an SM at every size,
///   [`SplitGrid::BlocksPerSm`]). Default 1: on the H200 (2026-12-02) the Llama-3.2-1B
///   shape's down projection at one token (512 groups for 264 resident blocks) 10.19 → 9.46
///   µs (kernel_bench, 79% → 85% of copy), and its batch-1 decode 0.8389, 0.8386 → 0.8247,
///   0.8239 ms/token of device time (`scripts/gpu-env-ab.sh`, two rounds); the Llama-2-7B
///   shape's o_proj and down at one token (four waves) were 1.3% slower in one wave, hence
///   the two-wave limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GemvRule {
    /// Weights (elements) the GEMV takes at one token: fewer than this.
    max_weights_one_token: usize,
    /// The same at 2..=[`GEMV_MAX_TOKENS`] tokens.
    max_weights: usize,
    norm_prologue: NormPrologue,
    /// Whether split-K launches stage their weights in shared memory.
    staging: Staging,
    /// When a launch takes the split-K kernels.
    split_k: SplitK,
    /// How unstaged split-K launches cover their row groups.
    split_grid: SplitGrid,
}

impl Default for GemvRule {
    fn default() -> Self {
        GemvRule {
            max_weights_one_token: usize::MAX,
            max_weights: GEMV_MAX_WEIGHTS,
            norm_prologue: NormPrologue::PerBlock { groups_per_warp: 0 },
            staging: Staging::Shared,
            split_k: SplitK::Auto,
            split_grid: SplitGrid::OneWave,
        }
    }
}

impl GemvRule {
    /// The rule with what `var` (the environment, or a test's map) overrides; a value that
    /// does not parse is an error naming the variable.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> std::result::Result<Self, String> {
        let mut rule = GemvRule::default();
        let elements = |name: &str| -> std::result::Result<Option<usize>, String> {
            var(name)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("{name}={v}: expected a number of weight elements"))
                })
                .transpose()
        };
        if let Some(n) = elements("LAB_GEMV_MAX_WEIGHTS")? {
            rule.max_weights = n;
        }
        if let Some(n) = elements("LAB_GEMV_MAX_WEIGHTS_M1")? {
            rule.max_weights_one_token = n;
        }
        if let Some(v) = var("LAB_GEMV_NORM") {
            let bad =
                || format!("LAB_GEMV_NORM={v}: expected warp, block or block:<groups per warp>");
            rule.norm_prologue = match v.trim() {
                "warp" => NormPrologue::PerWarp,
                "block" => NormPrologue::PerBlock { groups_per_warp: 0 },
                other => match other.strip_prefix("block:").map(str::parse::<usize>) {
                    Some(Ok(g)) if g > 0 => NormPrologue::PerBlock { groups_per_warp: g },
                    _ => return Err(bad()),
                },
            };
        }
        if let Some(v) = var("LAB_GEMV_STAGED") {
            rule.staging = match v.trim() {
                "1" => Staging::Shared,
                "0" => Staging::Off,
                _ => return Err(format!("LAB_GEMV_STAGED={v}: expected 1 or 0")),
            };
        }
        if let Some(v) = var("LAB_GEMV_SPLIT_WAVE") {
            rule.split_grid = match v.trim() {
                "1" => SplitGrid::OneWave,
                "0" => SplitGrid::PerGroup,
                other => match other.strip_prefix("blocks:").map(str::parse::<usize>) {
                    Some(Ok(n)) if n > 0 => SplitGrid::BlocksPerSm(n),
                    _ => {
                        return Err(format!(
                            "LAB_GEMV_SPLIT_WAVE={v}: expected 1, 0 or blocks:<blocks per SM>"
                        ))
                    }
                },
            };
        }
        if let Some(v) = var("LAB_GEMV_SPLIT_BELOW") {
            let blocks = v.trim().parse::<usize>().map_err(|_| {
                format!("LAB_GEMV_SPLIT_BELOW={v}: expected a number of blocks per SM")
            })?;
            rule.split_k = SplitK::Below(blocks);
        }
        Ok(rule)
    }

    /// Whether a projection of `tokens` rows through `w` `[n, k]` runs on the GEMV.
    fn takes(&self, tokens: usize, w: &CudaTensor) -> bool {
        self.takes_shape(tokens, w.rows, w.cols)
    }

    /// [`GemvRule::takes`] for a weight of `rows` × `cols`.
    fn takes_shape(&self, tokens: usize, rows: usize, cols: usize) -> bool {
        let limit = if tokens == 1 {
            self.max_weights_one_token
        } else {
            self.max_weights
        };
        tokens <= GEMV_MAX_TOKENS && rows * cols < limit && Gemv::supports(tokens, cols)
    }
}

/// Which projections run on `skinny_gemm` (tensor cores, weights copied before the previous
/// kernel ends, `kernels/cuda/skinny_gemm.cu`) rather than the GEMV or cuBLAS: those of
/// `min_tokens..=max_tokens` tokens, without a bias.
///
/// By default, where its TMA + wgmma main loop was compiled (an H100 or H200), every decode
/// batch too large for the GEMV, 5 to 32 tokens: on an H200 (2026-11-30) it made the 7B decode
/// step at batch 32 faster than cuBLAS, 5.19 → 4.99 ms of device time at TP 1 and 3.39 →
/// 3.24 at TP 2 (the book's performance page). Elsewhere (its mma.sync main loop, slower than
/// cuBLAS) it is off. The environment overrides, so that one build runs every way in one call:
/// `LAB_SKINNY_MAX_TOKENS=<n>` (0 turns it off; at most [`kernels::skinny_gemm::MAX_TOKENS`]),
/// `LAB_SKINNY_MIN_TOKENS=<n>` (below 5 it takes batches from the GEMV too), `LAB_SKINNY_ROWS`
/// (the row tile: 64, or 128, [`kernels::skinny_gemm::ROW_TILES`], for every launch; unset,
/// 64 except where a launch would spill past one wave of the GPU and 128-row tiles do not:
/// `SkinnyGemm::with_one_wave`), `LAB_SKINNY_MAIN_LOOP` (`tma` or `mma`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SkinnyRule {
    min_tokens: usize,
    max_tokens: usize,
    rows: usize,
    /// `rows` may give way to 128-row tiles to keep a launch within one wave (no
    /// `LAB_SKINNY_ROWS` set).
    one_wave: bool,
    main_loop: MainLoop,
}

impl SkinnyRule {
    /// The rule on a GPU where the TMA main loop was compiled (`has_tma`) or not.
    fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        has_tma: bool,
    ) -> std::result::Result<Self, String> {
        let max = kernels::skinny_gemm::MAX_TOKENS;
        let main_loop = match var("LAB_SKINNY_MAIN_LOOP").as_deref().map(str::trim) {
            None if has_tma => MainLoop::Tma,
            None => MainLoop::MmaSync,
            Some("tma") => MainLoop::Tma,
            Some("mma") => MainLoop::MmaSync,
            Some(v) => return Err(format!("LAB_SKINNY_MAIN_LOOP={v}: expected tma or mma")),
        };
        let tokens = |name: &str, default: usize| match var(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(format!("{name}={v}: expected 0 to {max}")),
            },
        };
        let on = main_loop == MainLoop::Tma;
        let max_tokens = tokens("LAB_SKINNY_MAX_TOKENS", if on { max } else { 0 })?;
        let min_tokens = tokens("LAB_SKINNY_MIN_TOKENS", GEMV_MAX_TOKENS + 1)?.max(1);
        let tiles = kernels::skinny_gemm::ROW_TILES;
        let (rows, one_wave) = match var("LAB_SKINNY_ROWS") {
            None => (tiles[0], true),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(r) if tiles.contains(&r) => (r, false),
                _ => return Err(format!("LAB_SKINNY_ROWS={v}: expected one of {tiles:?}")),
            },
        };
        Ok(SkinnyRule {
            min_tokens,
            max_tokens,
            rows,
            one_wave,
            main_loop,
        })
    }

    fn takes(&self, tokens: usize, w: &CudaTensor, bias: Option<&CudaTensor>) -> bool {
        self.takes_shape(tokens, w.cols, bias.is_some())
    }

    /// [`SkinnyRule::takes`] for a weight of `cols` input features.
    fn takes_shape(&self, tokens: usize, cols: usize, bias: bool) -> bool {
        !bias
            && (self.min_tokens..=self.max_tokens).contains(&tokens)
            && kernels::skinny_gemm::SkinnyGemm::supports(tokens, cols)
    }
}

/// Whether decode attention reads the context before waiting for the previous kernel
/// (`kernels::paged_attention::PagedAttention::with_early_reads`): on by default since its first
/// GPU run (2026-11-30: batch-1 decode 2-4% faster on the device); `LAB_ATTENTION_EARLY=0` turns it off.
fn early_reads_from_vars(
    var: impl Fn(&str) -> Option<String>,
) -> std::result::Result<bool, String> {
    match var("LAB_ATTENTION_EARLY").as_deref().map(str::trim) {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(v) => Err(format!("LAB_ATTENTION_EARLY={v}: expected 1 or 0")),
    }
}

/// How a step's inputs reach the device and its sampled ids the host ([`StepTransfer`]):
/// kernels reading and writing page-locked host memory, unless `LAB_STEP_TRANSFER=copy` asks
/// for the copy engine (the way before, kept for A/B runs).
fn step_transfer_from_vars(
    var: impl Fn(&str) -> Option<String>,
) -> std::result::Result<StepTransfer, String> {
    match var("LAB_STEP_TRANSFER").as_deref().map(str::trim) {
        None | Some("kernel") => Ok(StepTransfer::Kernel),
        Some("copy") => Ok(StepTransfer::Copy),
        Some(v) => Err(format!("LAB_STEP_TRANSFER={v}: expected kernel or copy")),
    }
}

/// The longest context a small decode batch runs in one pass of the wide attention kernel
/// (`kernels::paged_attention::PagedAttention::with_wide_single_pass`; 0: never, split as
/// before): `LAB_ATTENTION_WIDE=N` tokens, default [`WIDE_SINGLE_PASS_TOKENS`].
fn wide_single_pass_from_vars(
    var: impl Fn(&str) -> Option<String>,
) -> std::result::Result<usize, String> {
    match var("LAB_ATTENTION_WIDE") {
        None => Ok(WIDE_SINGLE_PASS_TOKENS),
        Some(v) => (v.trim().parse::<usize>())
            .map_err(|_| format!("LAB_ATTENTION_WIDE={v}: expected a number of tokens (0: off)")),
    }
}

/// The wide single pass's default reach in tokens: one tile of the wide ring. Measured on an
/// H200 (2026-12-01, `kernel_bench --small-attention`, inside a CUDA graph): at 192 tokens it
/// beat the best split by 0.5-0.6 µs a launch (SmolLM2-135M's and Llama-3.2-1B's heads), at
/// 448 (two tiles walked one after the other) it lost by 0.6; batch-1 decode 8.7% (135M) and
/// 4.2% (1B) less device time a token at contexts of 128-256.
const WIDE_SINGLE_PASS_TOKENS: usize = 256;

/// The decode attention kernel `LAB_DECODE_ATTENTION` asks for (`mma` or `shared`), read
/// through `var` as [`GemvRule::from_vars`] reads its settings; `None` keeps the default
/// (`rings()`' first, the mma kernel). Any other value is an error naming the variable.
fn decode_kernel_from_vars(
    var: impl Fn(&str) -> Option<String>,
) -> std::result::Result<Option<DecodeKernel>, String> {
    match var("LAB_DECODE_ATTENTION") {
        None => Ok(None),
        Some(v) => match v.trim() {
            "mma" => Ok(Some(DecodeKernel::MmaWarpRings)),
            "shared" => Ok(Some(DecodeKernel::Shared)),
            _ => Err(format!("LAB_DECODE_ATTENTION={v}: expected mma or shared")),
        },
    }
}

/// Runs the model on GPU `ordinal`.
pub struct CudaBackend {
    gpu: Gpu,
    /// The GEMV kernels with the norm prologue `gemv_rule` asks for.
    gemv: Gemv,
    /// Which projections take the GEMV ([`GemvRule`]: defaults, or the environment's).
    gemv_rule: GemvRule,
    /// The decode attention kernels: the default ring per head size, or the kernel
    /// `LAB_DECODE_ATTENTION` (`mma` or `shared`) names, for A/B runs.
    paged_attention: PagedAttention,
    linear: kernels::linear::Linear,
    /// Which projections take `skinny_gemm`, and its split-K scratch (allocated once: graphs
    /// keep its address).
    skinny_rule: SkinnyRule,
    skinny_gemm: kernels::skinny_gemm::SkinnyGemm, // the rule's row tile
    skinny: Mutex<SkinnyGemmWorkspace>,
    split_k: Mutex<SplitKWorkspace>,
    /// Where every op's output comes from (no allocation per op once warm).
    activations: CachingAllocator,
    steps: StepPool,
    /// How each step's metadata reaches the device (`LAB_STEP_TRANSFER`).
    step_transfer: StepTransfer,
    limits: StepLimits,
    generation: Mutex<u64>,
    graphs: Mutex<CudaGraphs>,
    /// Decode batch sizes that replay a graph; empty when graphs are off.
    capture_sizes: Vec<usize>,
    /// The device time measured so far, and the output slots not in use.
    step_timer: Mutex<StepTimer>,
    /// Steps submitted under async scheduling whose ids were not read yet, oldest first.
    in_flight: Mutex<VecDeque<LaunchedStep>>,
    /// Where each step's sampled ids are copied to the host, apart from the kernels' stream.
    download: Arc<CudaStream>,
    /// Recorded after the last step's ids left the device: the next sampler waits for it.
    last_copy: Mutex<Option<Arc<CudaEvent>>>,
    /// Events around each op, while the tracer asks for them, and around each NCCL call.
    kernel_timer: KernelTimer,
    /// This rank's end of its tensor-parallel group; `None` runs the whole model
    /// ([`super::cuda_tensor_parallel`]).
    pub(super) comm: Option<RankComm>,
}

/// The device time of the steps so far, and the output slots of steps not in flight.
struct StepTimer {
    free: Vec<StepSlot>,
    time: DeviceTime,
}

/// Where one step's results land on the host: two events recorded on the stream before the
/// step's first kernel and after its sampler, and page-locked memory the sampled ids are
/// copied into. A slot stays with its step until the ids are read, so that under async
/// scheduling the step behind it writes into another slot.
struct StepSlot {
    start: CudaEvent,
    end: CudaEvent,
    ids: PinnedHostSlice<u32>, // [capacity]
    /// `ids`' address on the device, where the driver mapped it: the sampled ids are then
    /// written there by a kernel ([`StepTransfer::Kernel`]), not copied.
    ids_address: Option<u64>,
    /// Recorded after the ids are in `ids` (on the download stream after a copy, cudarc
    /// recording none itself with event tracking off; on the kernels' stream after the kernel
    /// that writes them). After a copy the next step's sampler waits for it.
    copied: Arc<CudaEvent>,
}

impl StepSlot {
    fn new(gpu: &Gpu, capacity: usize) -> Result<Self> {
        // SAFETY: the ids are uninitialised until a step's copy writes them; only the rows a
        // step copied are read, after that copy (`as_slice` waits for it).
        let ids = unsafe { gpu.ctx.alloc_pinned_with_flags::<u32>(capacity.max(1), 0) }
            .map_err(|e| device("allocate pinned memory", e))?;
        let copied = gpu
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING));
        Ok(StepSlot {
            start: timing_event(gpu)?,
            end: timing_event(gpu)?,
            ids_address: kernels::prepare_inputs::mapped_address(&ids).ok(),
            ids,
            copied: Arc::new(copied.map_err(|e| device("create an event", e))?),
        })
    }
}

/// A step whose kernels are queued on the stream, and how to read its output.
struct LaunchedStep {
    slot: StepSlot,
    /// Sampled rows (the real sequences; padding rows are not copied back).
    rows: usize,
    /// `[rows]` whether each row's request asked for its logits.
    wants_logits: Vec<bool>,
    /// The raw logits `[num_logits, vocab]` and `vocab`, downloaded when a row asked.
    logits: Option<(Vec<f32>, usize)>,
}

/// An event that records a timestamp (CUDA's default events do; `disable_timing` ones not).
fn timing_event(gpu: &Gpu) -> Result<CudaEvent> {
    gpu.ctx
        .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(|e| device("create a timing event", e))
}

/// A kernel-crate error as a backend error of `op`.
pub(super) fn kernel(op: &'static str) -> impl FnOnce(KernelError) -> BackendError {
    move |e| device(op, e)
}

fn shape(ok: bool, op: &'static str, detail: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(BackendError::shape(op, detail()))
    }
}

impl CudaBackend {
    /// Opens GPU `ordinal` and compiles the kernels (NVRTC, a second or so). Without a usable
    /// GPU: an error that says why.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::open(ordinal, false)
    }

    /// [`CudaBackend::new`], with the kernels built with the timeline probe when
    /// `kernel_timeline` is set ([`Backend::take_kernel_timeline`]).
    pub fn open(ordinal: usize, kernel_timeline: bool) -> Result<Self> {
        let gpu = Gpu::open_with_timeline(ordinal, kernel_timeline.then_some(TIMELINE_RECORDS))
            .map_err(kernel("open the GPU"))?;
        let linear = kernels::linear::Linear::new(&gpu.stream, 1).map_err(kernel("cuBLAS"))?;
        let split_k = SplitKWorkspace::new(&gpu.stream, 1, 1).map_err(kernel("workspace"))?;
        let gemv_rule = GemvRule::from_vars(|name| std::env::var(name).ok()).map_err(|e| {
            BackendError::Device {
                backend: "cuda",
                op: "reading the GEMV settings (LAB_GEMV_*)",
                source: e.into(),
            }
        })?;
        if gemv_rule != GemvRule::default() {
            tracing::info!(?gemv_rule, "GEMV rule from the environment");
        }
        let has_tma = gpu.kernels.skinny_gemm.has_tma();
        let skinny_rule =
            SkinnyRule::from_vars(|name| std::env::var(name).ok(), has_tma).map_err(|e| {
                BackendError::Device {
                    backend: "cuda",
                    op: "reading LAB_SKINNY_* (MAX_TOKENS, ROWS, MAIN_LOOP)",
                    source: e.into(),
                }
            })?;
        let skinny_gemm = (gpu.kernels.skinny_gemm.clone())
            .with_rows(skinny_rule.rows)
            .and_then(|sg| sg.with_main_loop(skinny_rule.main_loop))
            .map(|sg| sg.with_one_wave(skinny_rule.one_wave))
            .map_err(kernel("skinny_gemm"))?;
        // Only the mma.sync loop's split launches use the workspace (8.3 MiB on an H200); the
        // TMA loop adds its splits inside a cluster, so it gets the smallest one (64 KB).
        let mma_splits = skinny_rule.main_loop == MainLoop::MmaSync && skinny_rule.max_tokens > 0;
        let workspace_sms = if mma_splits {
            gpu.kernels.skinny_gemm.num_sms()
        } else {
            0
        };
        let skinny =
            SkinnyGemmWorkspace::new(&gpu.stream, workspace_sms).map_err(kernel("workspace"))?;
        let attention_setting = |e: String| BackendError::Device {
            backend: "cuda",
            op: "reading LAB_DECODE_ATTENTION",
            source: e.into(),
        };
        let paged_attention = match decode_kernel_from_vars(|name| std::env::var(name).ok())
            .map_err(attention_setting)?
        {
            None => gpu.kernels.paged_attention.clone(),
            Some(kernel) => (gpu.kernels.paged_attention.clone().with_kernel(kernel))
                .map_err(|e| attention_setting(e.to_string()))?,
        };
        let early = early_reads_from_vars(|name| std::env::var(name).ok()).map_err(|e| {
            BackendError::Device {
                backend: "cuda",
                op: "reading LAB_ATTENTION_EARLY",
                source: e.into(),
            }
        })?;
        // A decode step's attention follows the kernel that wrote its K/V rows (the qkv
        // projection's epilogue or qkv_rotary_cache), the contract of `with_early_reads`.
        let wide = wide_single_pass_from_vars(|name| std::env::var(name).ok()).map_err(|e| {
            BackendError::Device {
                backend: "cuda",
                op: "reading LAB_ATTENTION_WIDE",
                source: e.into(),
            }
        })?;
        let paged_attention = paged_attention
            .with_early_reads(early)
            .with_wide_single_pass(wide);
        let step_transfer =
            step_transfer_from_vars(|name| std::env::var(name).ok()).map_err(|e| {
                BackendError::Device {
                    backend: "cuda",
                    op: "reading LAB_STEP_TRANSFER",
                    source: e.into(),
                }
            })?;
        Ok(CudaBackend {
            gemv: gpu
                .kernels
                .gemv
                .clone()
                .with_norm_prologue(gemv_rule.norm_prologue)
                .with_staging(gemv_rule.staging)
                .with_split_k(gemv_rule.split_k)
                .with_split_grid(gemv_rule.split_grid),
            gemv_rule,
            paged_attention,
            linear,
            skinny_rule,
            skinny_gemm,
            skinny: Mutex::new(skinny),
            split_k: Mutex::new(split_k),
            activations: CachingAllocator::new(gpu.stream.clone(), cuda_allocator::UNLIMITED),
            steps: Arc::new(Mutex::new(None)),
            step_transfer,
            limits: StepLimits {
                max_num_tokens: 1,
                max_num_seqs: 1,
                max_model_len: 1,
                block_size: 1,
                num_heads: 1,
                num_kv_heads: 1,
                head_dim: 1,
            },
            generation: Mutex::new(0),
            graphs: Mutex::new(CudaGraphs::default()),
            capture_sizes: Vec::new(),
            step_timer: Mutex::new(StepTimer {
                free: Vec::new(),
                time: DeviceTime::default(),
            }),
            in_flight: Mutex::new(VecDeque::new()),
            download: gpu
                .ctx
                .new_stream()
                .map_err(|e| device("create a stream", e))?,
            last_copy: Mutex::new(None),
            kernel_timer: KernelTimer::default(),
            comm: None,
            gpu,
        })
    }

    /// Whether the kernels can run `model`: an attention head size they are built for
    /// ([`kernels::HEAD_DIMS`]) and whole groups of query heads per KV head. Checked before
    /// anything is loaded, so an unsupported model fails at start with the reason (or, under
    /// `--device auto`, runs on the CPU).
    pub fn supports(model: &ModelConfig) -> std::result::Result<(), String> {
        let (d, h, kv) = (
            model.head_dim,
            model.num_attention_heads,
            model.num_key_value_heads,
        );
        if !kernels::HEAD_DIMS.contains(&d) {
            return Err(format!(
                "the CUDA kernels are built for head sizes {:?}; this model's is {d}",
                kernels::HEAD_DIMS
            ));
        }
        if kv == 0 || !h.is_multiple_of(kv) {
            return Err(format!(
                "{h} query heads do not split into groups of {kv} KV heads"
            ));
        }
        Ok(())
    }

    /// Replays decode steps as CUDA graphs (on by default in the engine; see
    /// [`super::cuda_graph`]). Takes effect at [`Backend::plan_steps`].
    pub fn with_cuda_graphs(mut self, on: bool) -> Self {
        self.capture_sizes = if on { vec![1] } else { Vec::new() };
        self
    }

    /// One rank of a tensor-parallel group: the collectives go through `comm`, and the
    /// weights it is given must be this rank's shard. A group of more than one rank runs its
    /// steps eagerly: its collectives pass through the host, which a CUDA graph cannot hold.
    ///
    /// With `nccl` (this rank's communicator of the same group, on this backend's GPU) the
    /// collectives run on NCCL instead of the host, and the backend keeps its CUDA graphs if
    /// it was built with them (through the host, a group of more than one rank has none).
    ///
    /// `timeout` is the group's collective timeout: on NCCL, how long a step's GPU work may
    /// wait for the peers before the step fails (the host collectives time out by themselves).
    pub fn with_communicator(
        mut self,
        comm: Box<dyn Communicator>,
        nccl: Option<NcclRank>,
        timeout: std::time::Duration,
    ) -> Self {
        let comm = RankComm::new(comm, nccl, timeout);
        if comm.world_size > 1 && !comm.uses_nccl() {
            self.capture_sizes = Vec::new();
        }
        self.comm = Some(comm);
        self
    }

    /// The scope of one op: its `kernel` span, and its device time when the tracer asks
    /// ([`super::cuda_kernel_timer`]).
    pub(super) fn op_scope(&self, op: &'static str) -> KernelScope<'_> {
        let span = tracing::trace_span!("kernel", op);
        self.collective_scope(op, None, span)
    }

    /// `silu(gate) · up` of `x · w_gate_upᵀ` in one `skinny_gemm` launch (the SiLU·mul
    /// epilogue): `x` `[t, k]`, `w` `[2d, k]` (gate rows, then up rows) → `[t, d]`.
    fn skinny_gate_up(&self, x: &CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        const OP: &str = "linear_silu_and_mul";
        let _span = self.op_scope(OP);
        shape(x.cols == w.cols, OP, || {
            format!("x has {} columns, weight [{}, {}]", x.cols, w.rows, w.cols)
        })?;
        let mut out = self.empty(OP, x.rows, w.rows / 2)?;
        let mut ws = self.skinny.lock().unwrap_or_else(|p| p.into_inner());
        self.skinny_gemm
            .forward(
                &self.gpu.stream,
                &mut ws,
                &mut out.view_bf16_mut(OP)?,
                &x.view_bf16(OP)?,
                &w.view_bf16(OP)?,
                x.rows,
                Epilogue::SiluAndMul,
                None,
            )
            .map_err(kernel(OP))?;
        Ok(out)
    }

    /// [`Self::op_scope`] with its own span, for a collective of kind `comm` (always timed).
    pub(super) fn collective_scope(
        &self,
        op: &'static str,
        comm: Option<CommOp>,
        span: tracing::Span,
    ) -> KernelScope<'_> {
        let (ctx, stream) = (&self.gpu.ctx, &self.gpu.stream);
        self.kernel_timer.scope(ctx, stream, op, comm, span)
    }

    /// `linear(x, w)` (no bias) through `skinny_gemm`'s epilogue that also pushes the output
    /// into the peers' all-reduce inboxes (`target`), where the skinny rule takes `x` with the
    /// TMA main loop and `w` has an even number of rows; `None`, launching nothing, otherwise.
    pub(super) fn linear_pushing(
        &self,
        x: &CudaTensor, // [t, in]
        w: &CudaTensor, // [out, in]
        target: &PushTarget,
    ) -> Result<Option<CudaTensor>> {
        if !self.skinny_rule.takes(x.rows, w, None)
            || self.skinny_gemm.main_loop() != MainLoop::Tma
            || !w.rows.is_multiple_of(2)
            || x.cols != w.cols
            || x.rows * w.rows > target.capacity()
        {
            return Ok(None);
        }
        let span = tracing::trace_span!("kernel", op = "linear", n = w.rows, k = w.cols);
        let _span = self
            .kernel_timer
            .scope(&self.gpu.ctx, &self.gpu.stream, "linear", None, span);
        let mut out = self.empty("linear", x.rows, w.rows)?;
        let (mut y, xv, wv) = (
            out.view_bf16_mut("linear")?,
            x.view_bf16("linear")?,
            w.view_bf16("linear")?,
        );
        let mut ws = self.skinny.lock().unwrap_or_else(|p| p.into_inner());
        (self.skinny_gemm)
            .forward_push(
                &self.gpu.stream,
                &mut ws,
                &mut y,
                &xv,
                &wv,
                x.rows,
                None,
                target,
            )
            .map_err(kernel("linear"))?;
        Ok(Some(out))
    }

    /// This rank's end of its group, when it has one of more than one rank.
    fn group(&self) -> Option<&RankComm> {
        self.comm.as_ref().filter(|c| c.world_size > 1)
    }

    /// The stream every op runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.gpu.stream
    }

    /// The GPU: its context, stream and compiled kernels.
    pub(super) fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// (free, total) bytes of GPU memory now.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.gpu
            .ctx
            .mem_get_info()
            .map_err(|e| device("query free memory", e))
    }

    /// Graphs recorded so far.
    pub fn num_graphs(&self) -> usize {
        self.graphs.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// An uninitialized `[rows, cols]` bf16 tensor, for a kernel to fill completely.
    /// Every caller passes the tensor to a kernel that writes each of its rows × cols elements
    /// before anything reads it.
    pub(super) fn empty(&self, op: &'static str, rows: usize, cols: usize) -> Result<CudaTensor> {
        let data = self.activations.alloc(op, rows * cols)?;
        Ok(CudaTensor::pooled(data, rows, cols))
    }

    /// Sets the logits of `banned`'s (row, id) pairs to -inf, in place, before sampling
    /// (min_tokens: [`crate::min_tokens`]). The pairs are copied to the device each time: only
    /// steps with a request below its `min_tokens` have any, and those run eagerly.
    fn mask_logits(
        &self,
        logits: &mut CudaTensor, // [step.num_logits, vocab]
        step: &CudaStepMetadata,
        banned: &(Vec<u32>, Vec<u32>),
    ) -> Result<()> {
        let _span = self.op_scope("mask_logits");
        let n = step.num_logits;
        shape(logits.rows == n, "mask_logits", || {
            format!("{} logits rows for {n} sampling rows", logits.rows)
        })?;
        let stream = &self.gpu.stream;
        let dev = |e| device("copy banned token ids", e);
        let rows = stream.clone_htod(&banned.0).map_err(dev)?;
        let ids = stream.clone_htod(&banned.1).map_err(dev)?;
        let mut view = logits.view_bf16_mut("mask_logits")?;
        self.gpu
            .kernels
            .sampling
            .mask_logits(stream, &mut view, n, &rows.as_view(), &ids.as_view())
            .map_err(kernel("mask_logits"))
    }

    /// Samples `logits` `[step.num_logits, vocab]` into `out` on the device.
    fn sample_into(
        &self,
        logits: &CudaTensor,
        step: &CudaStepMetadata,
        out: &mut CudaSlice<u32>,
    ) -> Result<()> {
        let _span = self.op_scope("sample");
        let b = step.bufs();
        let n = step.num_logits;
        shape(logits.rows == n, "sample", || {
            format!("{} logits rows for {n} sampling rows", logits.rows)
        })?;
        let (t, k, p, s, pos) = (
            b.temperature().slice(0..n),
            b.top_k().slice(0..n),
            b.top_p().slice(0..n),
            b.seed().slice(0..n),
            b.position().slice(0..n),
        );
        let params = RowParams {
            temperature: &t,
            top_k: &k,
            top_p: &p,
            seed: &s,
            position: &pos,
        };
        let logits = logits.view_bf16("sample")?;
        let mut out = out.slice_mut(0..n);
        self.gpu
            .kernels
            .sampling
            .sample(&self.gpu.stream, &mut out, &logits, &params)
            .map_err(kernel("sample"))
    }
}

/// The (row, id) pairs whose logits are -inf this step: each row's `banned_token_ids`
/// (min_tokens), as two `[num_banned]` lists for [`kernels::sampling::Sampling::mask_logits`].
fn banned_pairs(rows: &[SampleRow]) -> (Vec<u32>, Vec<u32>) {
    let mut pairs = (Vec::new(), Vec::new());
    for (r, row) in rows.iter().enumerate() {
        for &id in &row.banned_token_ids {
            pairs.0.push(r as u32);
            pairs.1.push(id);
        }
    }
    pairs
}

/// Bytes of activations the largest step keeps alive at once, times two for the allocator's
/// slack: per token the residual stream and hidden state, the fused qkv and its three parts,
/// attention's output, gate/up and its activation, all bf16; plus bf16 logits for every
/// sequence, the split-K workspace and cuBLAS's.
pub fn activation_bytes(model: &ModelConfig, engine: &EngineConfig) -> usize {
    let c = model;
    let t = engine.scheduler.max_num_batched_tokens;
    let s = engine.scheduler.max_num_seqs;
    let qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim;
    let per_token =
        2 * c.hidden_size + 2 * qkv + c.num_attention_heads * c.head_dim + 3 * c.intermediate_size;
    let logits = s * c.vocab_size;
    let partitions = max_partitions(c.max_position_embeddings);
    let split_k = s * c.num_attention_heads * partitions * (c.head_dim + 2) * 4;
    2 * 2 * (t * per_token + logits) + split_k + (64 << 20)
}

/// A norm + projection (+ activation) to run as one GEMV launch.
struct NormGemv<'a> {
    op: &'static str,
    norm: &'a CudaTensor,
    eps: f32,
    w: &'a CudaTensor,
    bias: Option<&'a CudaTensor>,
    epilogue: Epilogue,
}

/// The qkv projection's rotary + cache epilogue ([`Backend::add_rms_norm_qkv_rotary_cache`]).
struct RotaryCacheArgs<'a> {
    shape: QkvShape,
    cos_sin_cache: &'a CudaTensor,
    key_cache: &'a mut CudaTensor,
    value_cache: &'a mut CudaTensor,
    step: &'a CudaStepMetadata,
}

impl CudaBackend {
    /// `residual += delta; out = rms_norm(residual) · Wᵀ` (then the epilogue) in one GEMV
    /// launch, for decode batches of up to [`GEMV_MAX_TOKENS`]; `None` when the shapes are not
    /// the GEMV's (the caller then makes the separate calls). The new residual stream goes to a
    /// fresh buffer: other blocks of the launch still read the old one. With `rope`, `W` is the
    /// qkv projection and `out` is q, rotated; k and v go into the caches.
    fn norm_gemv(
        &self,
        f: &NormGemv<'_>,
        delta: Option<&CudaTensor>,
        residual: &mut CudaTensor,
        rope: Option<RotaryCacheArgs<'_>>,
    ) -> Result<Option<CudaTensor>> {
        let (t, hidden) = (residual.rows, residual.cols);
        if !self.gemv_rule.takes(t, f.w) {
            return Ok(None);
        }
        let _span = self.op_scope(f.op);
        shape(
            f.w.cols == hidden && f.norm.rows * f.norm.cols == hidden,
            f.op,
            || {
                format!(
                    "residual [{t}, {hidden}], norm [{}, {}], weight [{}, {}]",
                    f.norm.rows, f.norm.cols, f.w.rows, f.w.cols
                )
            },
        )?;
        if let Some(d) = delta {
            shape(d.rows == t && d.cols == hidden, f.op, || {
                format!(
                    "delta [{}, {}] for residual [{t}, {hidden}]",
                    d.rows, d.cols
                )
            })?;
        }
        let width = match (&rope, f.epilogue) {
            (Some(r), _) => r.shape.num_heads * r.shape.head_dim,
            (None, Epilogue::Plain) => f.w.rows,
            (None, Epilogue::SiluAndMul) => f.w.rows / 2,
        };
        let mut out = self.empty(f.op, t, width)?;
        let mut new_residual = match delta {
            Some(_) => Some(self.empty(f.op, t, hidden)?),
            None => None,
        };
        let result = {
            let (rv, gv, wv) = (
                residual.view_bf16(f.op)?,
                f.norm.view_bf16(f.op)?,
                f.w.view_bf16(f.op)?,
            );
            let dv = delta.map(|d| d.view_bf16(f.op)).transpose()?;
            let bv = f.bias.map(|b| b.view_bf16(f.op)).transpose()?;
            let mut r_out = new_residual
                .as_mut()
                .map(|r| r.view_bf16_mut(f.op))
                .transpose()?;
            let input = NormInput {
                delta: dv.as_ref(),
                residual: &rv,
                gamma: &gv,
                eps: f.eps,
            };
            let gemv = &self.gemv;
            match rope {
                None => gemv.forward_norm(
                    &self.gpu.stream,
                    &mut out.view_bf16_mut(f.op)?,
                    r_out.as_mut(),
                    &input,
                    &wv,
                    bv.as_ref(),
                    f.epilogue,
                    t,
                ),
                Some(r) => {
                    let b = r.step.bufs();
                    let (mut kc, mut vc) = (
                        r.key_cache.view_bf16_mut(f.op)?,
                        r.value_cache.view_bf16_mut(f.op)?,
                    );
                    let (positions, slots) =
                        (b.positions().slice(0..t), b.slot_mapping().slice(0..t));
                    let table = r.cos_sin_cache.view_f32(f.op)?;
                    let mut cache = RotaryCache {
                        key_cache: &mut kc,
                        value_cache: &mut vc,
                        positions: &positions,
                        slot_mapping: &slots,
                        cos_sin_cache: &table,
                        shape: r.shape,
                    };
                    gemv.forward_norm_rope(
                        &self.gpu.stream,
                        &mut out.view_bf16_mut(f.op)?,
                        r_out.as_mut(),
                        &input,
                        &wv,
                        bv.as_ref(),
                        &mut cache,
                        t,
                    )
                }
            }
        };
        match result {
            Ok(()) => {}
            // Unaligned operands or an odd gate/up: the separate kernels do it.
            Err(KernelError::Unsupported { .. }) => return Ok(None),
            Err(e) => return Err(device(f.op, e)),
        }
        if let Some(r) = new_residual {
            *residual = r;
        }
        Ok(Some(out))
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type StepMetadata = CudaStepMetadata;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn default_dtype(&self) -> DType {
        DType::BF16
    }

    fn upload(&self, data: Vec<f32>, rows: usize, cols: usize, dtype: DType) -> Result<CudaTensor> {
        let n = data.len();
        shape(n == rows * cols, "upload", || {
            format!("{n} elements are not a {rows}x{cols} matrix")
        })?;
        let stream = &self.gpu.stream;
        let data = match dtype {
            DType::BF16 => {
                let host: Vec<bf16> = data.par_iter().map(|&v| bf16::from_f32(v)).collect();
                CudaData::BF16(stream.clone_htod(&host).map_err(|e| device("upload", e))?)
            }
            DType::F32 => CudaData::F32(stream.clone_htod(&data).map_err(|e| device("upload", e))?),
            DType::F16 => {
                return Err(BackendError::UnsupportedDType {
                    backend: "cuda",
                    op: "upload",
                    dtype,
                    supported: DType::BF16,
                })
            }
        };
        Ok(CudaTensor { data, rows, cols })
    }

    fn download(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        let stream = &self.gpu.stream;
        let dev = |e| device("download", e);
        Ok(match &t.data {
            CudaData::BF16(s) => {
                let host = stream.clone_dtoh(s).map_err(dev)?;
                host.into_par_iter().map(f32::from).collect()
            }
            CudaData::Pooled(p) => {
                let host = stream.clone_dtoh(&p.view()).map_err(dev)?;
                host.into_par_iter().map(f32::from).collect()
            }
            CudaData::F32(s) => stream.clone_dtoh(s).map_err(dev)?,
        })
    }

    fn zeros(&self, rows: usize, cols: usize, dtype: DType) -> Result<CudaTensor> {
        let stream = &self.gpu.stream;
        let dev = |e| device("zeros", e);
        let data = match dtype {
            DType::BF16 => CudaData::BF16(stream.alloc_zeros(rows * cols).map_err(dev)?),
            DType::F32 => CudaData::F32(stream.alloc_zeros(rows * cols).map_err(dev)?),
            DType::F16 => {
                return Err(BackendError::UnsupportedDType {
                    backend: "cuda",
                    op: "zeros",
                    dtype,
                    supported: DType::BF16,
                })
            }
        };
        Ok(CudaTensor { data, rows, cols })
    }

    fn shape(&self, t: &CudaTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn dtype(&self, t: &CudaTensor) -> DType {
        t.dtype()
    }

    fn all_reduce(&self, x: &mut CudaTensor) -> Result<()> {
        match self.group() {
            Some(comm) => self.group_all_reduce(comm, x),
            None => Ok(()),
        }
    }

    fn row_parallel_linear(&self, x: &CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        if let Some(comm) = self.group() {
            // The projection sends its output to the peers itself, where it can.
            if let Some(y) = self.pushing_row_parallel_linear(comm, x, w)? {
                return Ok(y);
            }
        }
        let mut y = self.linear(x, w, None)?;
        self.all_reduce(&mut y)?;
        Ok(y)
    }

    fn all_gather_columns(&self, x: CudaTensor, cols: usize) -> Result<CudaTensor> {
        match self.group() {
            Some(comm) => self.group_all_gather_columns(comm, x, cols),
            None if x.cols == cols => Ok(x),
            None => Err(BackendError::shape(
                "all_gather_columns",
                format!("{} columns on one rank, {cols} wanted", x.cols),
            )),
        }
    }

    fn comm_stats(&self) -> Option<CommStats> {
        self.comm.as_ref().map(RankComm::stats)
    }

    fn plan_steps(&mut self, limits: &StepLimits) -> Result<()> {
        self.limits = *limits;
        if !self.capture_sizes.is_empty() {
            self.capture_sizes = capture_sizes(limits.max_num_seqs);
        }
        // Split-K scratch for the largest decode batch at the longest context, allocated now:
        // a recorded graph keeps its address, so it must never be reallocated later.
        let rows = limits.max_num_seqs * limits.num_heads * max_partitions(limits.max_model_len);
        *self.split_k.lock().map_err(|_| poisoned())? =
            SplitKWorkspace::new(&self.gpu.stream, rows, limits.head_dim)
                .map_err(kernel("workspace"))?;
        // cuBLAS's bias broadcast needs a column of ones as long as the largest step.
        self.linear = kernels::linear::Linear::new(&self.gpu.stream, limits.max_num_tokens)
            .map_err(kernel("cuBLAS"))?;
        let mut generation = self.generation.lock().map_err(|_| poisoned())?;
        *generation += 1;
        let bufs = cuda_step::StepBuffers::new(&self.gpu.stream, *limits, *generation)?;
        *self.steps.lock().map_err(|_| poisoned())? = Some(bufs);
        Ok(())
    }

    fn prepare_step(&self, input: ModelInput) -> Result<CudaStepMetadata> {
        let _span = tracing::trace_span!("prepare_step", tokens = input.input_ids.len()).entered();
        let wants_logits = input.sample_rows.iter().any(|r| r.output_logits);
        let n = input.attn_metadata.num_seqs();
        let pad_to = match wants_logits {
            true => None,
            false => padded_size(n, &self.capture_sizes),
        };
        let mut generation = self.generation.lock().map_err(|_| poisoned())?;
        cuda_step::prepare(
            &self.gpu.stream,
            &self.steps,
            self.limits,
            &mut generation,
            input,
            pad_to,
            &self.gpu.kernels,
            self.step_transfer,
        )
    }

    fn embedding(&self, table: &CudaTensor, step: &CudaStepMetadata) -> Result<CudaTensor> {
        let _span = self.op_scope("embedding");
        if let Some(comm) = self.group() {
            return self.vocab_parallel_embedding(comm, table, step);
        }
        let (n, h) = (step.num_tokens, table.cols);
        let mut out = self.empty("embedding", n, h)?;
        let ids = step.bufs().input_ids().slice(0..n);
        let table = table.view_bf16("embedding")?;
        self.gpu
            .kernels
            .embedding
            .embedding(
                &self.gpu.stream,
                &mut out.view_bf16_mut("embedding")?,
                &ids,
                &table,
                h,
            )
            .map_err(kernel("embedding"))?;
        Ok(out)
    }

    fn linear(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        let span = tracing::trace_span!("kernel", op = "linear", n = w.rows, k = w.cols);
        let _span = self
            .kernel_timer
            .scope(&self.gpu.ctx, &self.gpu.stream, "linear", None, span);
        shape(x.cols == w.cols, "linear", || {
            format!("x has {} columns, weight [{}, {}]", x.cols, w.rows, w.cols)
        })?;
        let mut out = self.empty("linear", x.rows, w.rows)?;
        let bias_tensor = bias;
        let bias = bias.map(|b| b.view_bf16("linear")).transpose()?;
        let (mut y, xv, wv) = (
            out.view_bf16_mut("linear")?,
            x.view_bf16("linear")?,
            w.view_bf16("linear")?,
        );
        // A decode batch of 5-32 tokens (SkinnyRule): skinny_gemm, which starts streaming its
        // weights while the previous kernel finishes (programmatic dependent launch,
        // kernels/src/launch.rs). Up to GEMV_MAX_TOKENS tokens through a small weight: our
        // GEMV, a plain stream of the weights that starts early too. cuBLAS otherwise.
        let stream = &self.gpu.stream;
        let result = if self.skinny_rule.takes(x.rows, w, bias_tensor) {
            let mut ws = self.skinny.lock().unwrap_or_else(|p| p.into_inner());
            self.skinny_gemm.forward(
                stream,
                &mut ws,
                &mut y,
                &xv,
                &wv,
                x.rows,
                Epilogue::Plain,
                None,
            )
        } else if self.gemv_rule.takes(x.rows, w) {
            let gemv = &self.gemv; // the rule's variant (LAB_GEMV_STAGED)
            gemv.forward(stream, &mut y, &xv, &wv, bias.as_ref(), x.rows)
        } else {
            self.linear.forward(&mut y, &xv, &wv, bias.as_ref(), x.rows)
        };
        result.map_err(kernel("linear"))?;
        Ok(out)
    }

    fn rms_norm(&self, x: &CudaTensor, weight: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        let _span = self.op_scope("rms_norm");
        let mut out = self.empty("rms_norm", x.rows, x.cols)?;
        self.gpu
            .kernels
            .rms_norm
            .rms_norm(
                &self.gpu.stream,
                &mut out.view_bf16_mut("rms_norm")?,
                &x.view_bf16("rms_norm")?,
                &weight.view_bf16("rms_norm")?,
                eps,
            )
            .map_err(kernel("rms_norm"))?;
        Ok(out)
    }

    fn fused_add_rms_norm(
        &self,
        x: &mut CudaTensor,
        residual: &mut CudaTensor,
        weight: &CudaTensor,
        eps: f32,
    ) -> Result<()> {
        let _span = self.op_scope("fused_add_rms_norm");
        const OP: &str = "fused_add_rms_norm";
        self.gpu
            .kernels
            .rms_norm
            .fused_add_rms_norm(
                &self.gpu.stream,
                &mut x.view_bf16_mut(OP)?,
                &mut residual.view_bf16_mut(OP)?,
                &weight.view_bf16(OP)?,
                eps,
            )
            .map_err(kernel(OP))
    }

    fn rotary_embedding(
        &self,
        step: &CudaStepMetadata,
        q: &mut CudaTensor,
        k: &mut CudaTensor,
        head_dim: usize,
        cos_sin_cache: &CudaTensor,
    ) -> Result<()> {
        let _span = self.op_scope("rotary_embedding");
        const OP: &str = "rotary_embedding";
        let t = step.num_tokens;
        shape(q.rows == t && k.rows == t && head_dim > 0, OP, || {
            format!("q has {} rows, k {}, for {t} positions", q.rows, k.rows)
        })?;
        let (heads, kv_heads) = (q.cols / head_dim, k.cols / head_dim);
        let positions = step.bufs().positions().slice(0..t);
        self.gpu
            .kernels
            .rotary_embedding
            .rotary_embedding(
                &self.gpu.stream,
                &positions,
                &mut q.view_bf16_mut(OP)?,
                &mut k.view_bf16_mut(OP)?,
                &cos_sin_cache.view_f32(OP)?,
                heads,
                kv_heads,
                head_dim,
            )
            .map_err(kernel(OP))
    }

    fn reshape_and_cache(
        &self,
        k: &CudaTensor,
        v: &CudaTensor,
        key_cache: &mut CudaTensor,
        value_cache: &mut CudaTensor,
        step: &CudaStepMetadata,
    ) -> Result<()> {
        let _span = self.op_scope("reshape_and_cache");
        const OP: &str = "reshape_and_cache";
        let t = step.num_tokens;
        shape(k.rows == t && k.cols == key_cache.cols, OP, || {
            format!(
                "k {}x{} for {t} slots, cache rows of {}",
                k.rows, k.cols, key_cache.cols
            )
        })?;
        let slots = step.bufs().slot_mapping().slice(0..t);
        self.gpu
            .kernels
            .reshape_and_cache
            .reshape_and_cache(
                &self.gpu.stream,
                &k.view_bf16(OP)?,
                &v.view_bf16(OP)?,
                &mut key_cache.view_bf16_mut(OP)?,
                &mut value_cache.view_bf16_mut(OP)?,
                &slots,
                k.cols,
            )
            .map_err(kernel(OP))
    }

    fn paged_attention(
        &self,
        q: &CudaTensor,
        key_cache: &CudaTensor,
        value_cache: &CudaTensor,
        num_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        step: &CudaStepMetadata,
    ) -> Result<CudaTensor> {
        const OP: &str = "paged_attention";
        shape(q.rows == step.num_tokens && head_dim > 0, OP, || {
            format!("q has {} rows for {} tokens", q.rows, step.num_tokens)
        })?;
        let mut out = self.empty(OP, q.rows, q.cols)?;
        let b = step.bufs();
        let (s, width) = (step.num_seqs, step.max_blocks_per_seq);
        let tables = b.block_tables.slice(0..s * width);
        let seq_lens = b.seq_lens().slice(0..s);
        let (qv, kc, vc) = (
            q.view_bf16(OP)?,
            key_cache.view_bf16(OP)?,
            value_cache.view_bf16(OP)?,
        );
        let stream = &self.gpu.stream;
        if step.is_decode {
            let _span = self.op_scope("paged_attention_decode");
            let shape = DecodeShape {
                num_seqs: s,
                num_heads: q.cols / head_dim,
                num_kv_heads,
                head_dim,
                block_size: step.block_size,
                max_blocks_per_seq: width,
            };
            let mut ws = self.split_k.lock().map_err(|_| poisoned())?;
            self.paged_attention
                .decode(
                    stream,
                    &mut ws,
                    &mut out.view_bf16_mut(OP)?,
                    &qv,
                    &kc,
                    &vc,
                    &tables,
                    &seq_lens,
                    &shape,
                    scale,
                    step.max_seq_len,
                )
                .map_err(kernel(OP))?;
        } else {
            let _span = self.op_scope("prefill_attention");
            let shape = PrefillShape {
                num_seqs: s,
                num_tokens: step.num_tokens,
                num_heads: q.cols / head_dim,
                num_kv_heads,
                head_dim,
                block_size: step.block_size,
                max_blocks_per_seq: width,
            };
            let qsl = b.query_start_loc().slice(0..s + 1);
            self.gpu
                .kernels
                .prefill_attention
                .forward(
                    stream,
                    &mut out.view_bf16_mut(OP)?,
                    &qv,
                    &kc,
                    &vc,
                    &tables,
                    &seq_lens,
                    &qsl,
                    &shape,
                    scale,
                    step.max_query_len,
                )
                .map_err(kernel(OP))?;
        }
        Ok(out)
    }

    fn silu_and_mul(&self, x: &CudaTensor) -> Result<CudaTensor> {
        let _span = self.op_scope("silu_and_mul");
        shape(x.cols.is_multiple_of(2), "silu_and_mul", || {
            format!("{} columns do not split into gate and up", x.cols)
        })?;
        let mut out = self.empty("silu_and_mul", x.rows, x.cols / 2)?;
        self.gpu
            .kernels
            .silu_and_mul
            .silu_and_mul(
                &self.gpu.stream,
                &mut out.view_bf16_mut("silu_and_mul")?,
                &x.view_bf16("silu_and_mul")?,
                x.rows,
            )
            .map_err(kernel("silu_and_mul"))?;
        Ok(out)
    }

    fn swap_blocks(
        &self,
        cache: &mut CudaTensor,
        host: &mut super::HostKvBlocks,
        mapping: &[(u32, u32)],
        direction: super::SwapDirection,
    ) -> Result<()> {
        super::swap_blocks::cuda_swap_blocks(&self.gpu.stream, cache, host, mapping, direction)
    }

    fn split_columns(&self, x: &CudaTensor, widths: &[usize]) -> Result<Vec<CudaTensor>> {
        let _span = self.op_scope("split_columns");
        const OP: &str = "split_columns";
        let total: usize = widths.iter().sum();
        shape(total == x.cols && widths.len() == 3, OP, || {
            format!("widths {widths:?} for {} columns (three parts)", x.cols)
        })?;
        let mut parts = widths
            .iter()
            .map(|&w| self.empty(OP, x.rows, w))
            .collect::<Result<Vec<_>>>()?;
        {
            let [a, b, c] = &mut parts[..] else {
                unreachable!("three parts checked above")
            };
            self.gpu
                .kernels
                .split_columns
                .split3(
                    &self.gpu.stream,
                    [
                        &mut a.view_bf16_mut(OP)?,
                        &mut b.view_bf16_mut(OP)?,
                        &mut c.view_bf16_mut(OP)?,
                    ],
                    &x.view_bf16(OP)?,
                    x.rows,
                )
                .map_err(kernel(OP))?;
        }
        Ok(parts)
    }

    fn add_rms_norm_linear(
        &self,
        delta: Option<CudaTensor>,
        residual: &mut CudaTensor,
        norm: &CudaTensor,
        eps: f32,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        let fused = NormGemv {
            op: "add_rms_norm_linear",
            norm,
            eps,
            w,
            bias,
            epilogue: Epilogue::Plain,
        };
        if let Some(out) = self.norm_gemv(&fused, delta.as_ref(), residual, None)? {
            return Ok(out);
        }
        let x = self.add_rms_norm(delta, residual, norm, eps)?;
        self.linear(&x, w, bias)
    }

    fn add_rms_norm_gate_up(
        &self,
        delta: Option<CudaTensor>,
        residual: &mut CudaTensor,
        norm: &CudaTensor,
        eps: f32,
        w: &CudaTensor,
    ) -> Result<CudaTensor> {
        let fused = NormGemv {
            op: "add_rms_norm_gate_up",
            norm,
            eps,
            w,
            bias: None,
            epilogue: Epilogue::SiluAndMul,
        };
        if let Some(out) = self.norm_gemv(&fused, delta.as_ref(), residual, None)? {
            return Ok(out);
        }
        let x = self.add_rms_norm(delta, residual, norm, eps)?;
        if self.skinny_rule.takes(x.rows, w, None) && w.rows.is_multiple_of(2) {
            return self.skinny_gate_up(&x, w);
        }
        self.silu_and_mul(&self.linear(&x, w, None)?)
    }

    fn add_rms_norm_qkv_rotary_cache(
        &self,
        delta: Option<CudaTensor>,
        residual: &mut CudaTensor,
        norm: &CudaTensor,
        eps: f32,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        cos_sin_cache: &CudaTensor,
        key_cache: &mut CudaTensor,
        value_cache: &mut CudaTensor,
        step: &CudaStepMetadata,
    ) -> Result<CudaTensor> {
        let fused = NormGemv {
            op: "add_rms_norm_qkv_rotary_cache",
            norm,
            eps,
            w,
            bias,
            epilogue: Epilogue::Plain,
        };
        let rope = RotaryCacheArgs {
            shape: QkvShape {
                num_heads,
                num_kv_heads,
                head_dim,
            },
            cos_sin_cache,
            key_cache: &mut *key_cache,
            value_cache: &mut *value_cache,
            step,
        };
        let (t, gemv) = (residual.rows, &self.gemv);
        if gemv.fuses_rotary(t, w.rows, w.cols) {
            if let Some(q) = self.norm_gemv(&fused, delta.as_ref(), residual, Some(rope))? {
                return Ok(q);
            }
        }
        let qkv = self.add_rms_norm_linear(delta, residual, norm, eps, w, bias)?;
        self.qkv_rotary_and_cache(
            &qkv,
            num_heads,
            num_kv_heads,
            head_dim,
            cos_sin_cache,
            key_cache,
            value_cache,
            step,
        )
    }

    fn qkv_rotary_and_cache(
        &self,
        qkv: &CudaTensor,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        cos_sin_cache: &CudaTensor,
        key_cache: &mut CudaTensor,
        value_cache: &mut CudaTensor,
        step: &CudaStepMetadata,
    ) -> Result<CudaTensor> {
        let _span = self.op_scope("qkv_rotary_cache");
        const OP: &str = "qkv_rotary_and_cache";
        let t = step.num_tokens;
        let width = (num_heads + 2 * num_kv_heads) * head_dim;
        shape(qkv.rows == t && qkv.cols == width, OP, || {
            format!("qkv {}x{} for {t} tokens of {width}", qkv.rows, qkv.cols)
        })?;
        let mut q = self.empty(OP, t, num_heads * head_dim)?;
        let b = step.bufs();
        let shape = QkvShape {
            num_heads,
            num_kv_heads,
            head_dim,
        };
        self.gpu
            .kernels
            .qkv_rotary_cache
            .forward(
                &self.gpu.stream,
                &mut q.view_bf16_mut(OP)?,
                &mut key_cache.view_bf16_mut(OP)?,
                &mut value_cache.view_bf16_mut(OP)?,
                &qkv.view_bf16(OP)?,
                &b.positions().slice(0..t),
                &b.slot_mapping().slice(0..t),
                &cos_sin_cache.view_f32(OP)?,
                shape,
            )
            .map_err(kernel(OP))?;
        Ok(q)
    }

    fn gather_rows(&self, x: &CudaTensor, step: &CudaStepMetadata) -> Result<CudaTensor> {
        let _span = self.op_scope("gather_rows");
        // A row gather is an embedding lookup with `x` as the table.
        let n = step.num_logits;
        let mut out = self.empty("gather_rows", n, x.cols)?;
        let rows = step.bufs().logits_indices().slice(0..n);
        self.gpu
            .kernels
            .embedding
            .embedding(
                &self.gpu.stream,
                &mut out.view_bf16_mut("gather_rows")?,
                &rows,
                &x.view_bf16("gather_rows")?,
                x.cols,
            )
            .map_err(kernel("gather_rows"))?;
        Ok(out)
    }

    fn add_rms_norm_gather(
        &self,
        delta: Option<CudaTensor>,
        residual: CudaTensor,
        norm: &CudaTensor,
        eps: f32,
        step: &CudaStepMetadata,
    ) -> Result<CudaTensor> {
        const OP: &str = "add_rms_norm_gather";
        let _span = self.op_scope(OP);
        let n = step.num_logits;
        let mut out = self.empty(OP, n, residual.cols)?;
        let rows = step.bufs().logits_indices().slice(0..n);
        let delta = delta.as_ref().map(|d| d.view_bf16(OP)).transpose()?;
        self.gpu
            .kernels
            .rms_norm
            .add_rms_norm_rows(
                &self.gpu.stream,
                &mut out.view_bf16_mut(OP)?,
                delta.as_ref(),
                &residual.view_bf16(OP)?,
                &rows,
                &norm.view_bf16(OP)?,
                eps,
            )
            .map_err(kernel(OP))?;
        Ok(out)
    }

    fn device_time(&self) -> Option<DeviceTime> {
        self.step_timer.lock().ok().map(|t| t.time)
    }

    fn take_kernel_timeline(&self) -> Result<Option<kernels::kernel_timeline::TimelineRecords>> {
        let Some(timeline) = &self.gpu.timeline else {
            return Ok(None);
        };
        let mut timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
        let records = timeline
            .take(&self.gpu.stream)
            .map_err(kernel("read the kernel timeline"))?;
        Ok(Some(records))
    }

    fn kv_cache_budget(&self, engine: &EngineConfig, model: &ModelConfig) -> Result<usize> {
        let (free, total) = self.memory()?;
        let allowed = (total as f64 * engine.cache.gpu_memory_utilization as f64) as usize;
        let used = total - free; // weights, kernels, the CUDA context, other processes
        let activations = activation_bytes(model, engine);
        // The caching allocator may keep what was reserved for activations, no more.
        self.activations.set_limit(activations);
        allowed
            .checked_sub(used + activations)
            .filter(|&b| b > 0)
            .ok_or_else(|| {
                let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
                BackendError::OutOfMemory(format!(
                    "no room for a KV cache: {:.2} GiB of {:.2} GiB allowed by \
                     --gpu-memory-utilization {} are taken by the weights and the context ({:.2} \
                     GiB) and activations ({:.2} GiB); raise --gpu-memory-utilization or lower \
                     --max-num-batched-tokens / --max-num-seqs",
                    gib(used + activations),
                    gib(allowed),
                    engine.cache.gpu_memory_utilization,
                    gib(used),
                    gib(activations)
                ))
            })
    }

    fn run_step(
        &self,
        step: &CudaStepMetadata,
        forward: &mut dyn FnMut() -> Result<CudaTensor>,
        _host_sample: SampleFn, // sampling runs in a kernel with the same draw
    ) -> Result<ModelRunnerOutput> {
        let launched = self.launch_step(step, forward)?;
        self.read_step(launched)
    }

    fn submit_step(
        &self,
        step: &CudaStepMetadata,
        forward: &mut dyn FnMut() -> Result<CudaTensor>,
        host_sample: SampleFn,
    ) -> Result<Option<ModelRunnerOutput>> {
        // A tensor-parallel rank's step ends in its group's collectives, and per-op device
        // times (the tracer listening) are read against one step's start: run those whole.
        if self.comm.is_some() || cuda_kernel_timer::wanted() {
            return self.run_step(step, forward, host_sample).map(Some);
        }
        let launched = self.launch_step(step, forward)?;
        self.in_flight
            .lock()
            .map_err(|_| poisoned())?
            .push_back(launched);
        Ok(None)
    }

    fn wait_step(&self) -> Result<ModelRunnerOutput> {
        let launched = self.in_flight.lock().map_err(|_| poisoned())?.pop_front();
        let launched = launched
            .ok_or_else(|| BackendError::shape("wait_step", "no step was submitted to wait for"))?;
        self.read_step(launched)
    }
}

impl CudaBackend {
    /// Queues a step on the stream: its forward pass (or the graph recorded for its batch),
    /// its sampler, and the copy of the sampled ids into a host slot. Returns without waiting.
    fn launch_step(
        &self,
        step: &CudaStepMetadata,
        forward: &mut dyn FnMut() -> Result<CudaTensor>,
    ) -> Result<LaunchedStep> {
        let rows = step.sample_rows();
        let wants_logits = rows.iter().any(|r| r.output_logits);
        // min_tokens' bans as (row, id) pairs; a step with any runs eagerly (a graph replays
        // fixed launches, and how many pairs there are changes from step to step).
        let banned = banned_pairs(rows);
        let mut sampled = step.bufs().sampled.lock().map_err(|_| poisoned())?;
        let mut logits_host = None;
        let mut run = || -> Result<()> {
            let mut logits = forward()?; // [num_logits, vocab]
            if wants_logits {
                // Before the mask: the raw logits, as on the CPU.
                logits_host = Some((self.download(&logits)?, logits.cols));
            }
            if !banned.0.is_empty() {
                self.mask_logits(&mut logits, step, &banned)?;
            }
            self.sample_into(&logits, step, &mut sampled)?;
            Ok(())
        };
        let mut slot = {
            let mut timer = self.step_timer.lock().map_err(|_| poisoned())?;
            match timer.free.pop() {
                Some(slot) if slot.ids.len() >= rows.len() => slot,
                _ => StepSlot::new(&self.gpu, rows.len().max(self.limits.max_num_seqs))?,
            }
        };
        let stream = &self.gpu.stream;
        let record = |e: &CudaEvent| e.record(stream).map_err(|e| device("record an event", e));
        // The last step's ids must have left `sampled` before this step's sampler writes it.
        if let Some(copied) = self.last_copy.lock().map_err(|_| poisoned())?.take() {
            stream
                .wait(&copied)
                .map_err(|e| device("wait for a copy", e))?;
        }
        record(&slot.start)?;
        // Per-op device times, when the tracer listens: then the step runs eagerly.
        self.kernel_timer.time_every_op(cuda_kernel_timer::wanted());
        let graphable = step.is_decode
            && !wants_logits
            && banned.0.is_empty()
            && !self.capture_sizes.is_empty()
            && !self.kernel_timer.times_every_op();
        if graphable && self.capture_sizes.contains(&step.num_seqs) {
            let key = GraphKey {
                num_seqs: step.num_seqs,
                partitions: self.paged_attention.partitions(
                    step.num_seqs,
                    self.limits.num_heads,
                    self.limits.num_kv_heads,
                    self.limits.head_dim,
                    step.max_seq_len,
                ),
            };
            let generation = step.bufs().generation;
            let mut graphs = self.graphs.lock().map_err(|_| poisoned())?;
            let before = self.comm.as_ref().map(RankComm::nccl_reading);
            let mut record = |recording: bool| {
                self.kernel_timer.set_recording(recording);
                let result = run();
                self.kernel_timer.set_recording(false);
                result
            };
            let how = graphs.run(&self.gpu.stream, key, generation, &mut record)?;
            if let (Some(comm), Some(before)) = (&self.comm, &before) {
                comm.count_graph_calls(key, how, before);
            }
        } else {
            run()?;
        }
        let dev = |e| device("copy sampled ids", e);
        if let (StepTransfer::Kernel, Some(address)) = (self.step_transfer, slot.ids_address) {
            // A kernel writes the ids into the page-locked slot, on this stream: nothing to
            // wait for on another stream, and the next step's sampler may overwrite `sampled`
            // right away.
            let _send = tracing::trace_span!("kernel", op = "send_sampled_ids").entered();
            let ids = sampled.slice(0..rows.len());
            // SAFETY: `address` is `slot.ids`' mapped address (StepSlot::new), `ids.len()`
            // u32 long; the slot travels with this step and is read only after `copied`,
            // recorded below after the kernel, has been passed.
            unsafe {
                let len = slot.ids.len();
                self.gpu
                    .kernels
                    .sampling
                    .send_sampled_ids(stream, address, len, &ids)
            }
            .map_err(kernel("send sampled ids"))?;
            record(&slot.end)?;
            slot.copied.record(stream).map_err(dev)?;
            return Ok(LaunchedStep {
                slot,
                rows: rows.len(),
                wants_logits: rows.iter().map(|r| r.output_logits).collect(),
                logits: logits_host,
            });
        }
        record(&slot.end)?;
        // With copies (`LAB_STEP_TRANSFER=copy`), the ids go to the host on a stream of their
        // own, once the step is done, so that the next step's metadata copies and kernels need
        // not queue behind them; the next step's sampler, which overwrites `sampled`, waits
        // for them (`last_copy`). Into the page-locked slot itself: a copy into pageable
        // memory would wait for it.
        let download = &self.download;
        download.wait(&slot.end).map_err(dev)?;
        if !rows.is_empty() {
            let _copy = tracing::trace_span!("copy_sampled_ids", rows = rows.len()).entered();
            download
                .memcpy_dtoh(&sampled.slice(0..rows.len()), &mut slot.ids)
                .map_err(dev)?;
        }
        slot.copied.record(download).map_err(dev)?;
        *self.last_copy.lock().map_err(|_| poisoned())? = Some(slot.copied.clone());
        Ok(LaunchedStep {
            slot,
            rows: rows.len(),
            wants_logits: rows.iter().map(|r| r.output_logits).collect(),
            logits: logits_host,
        })
    }

    /// Waits for a launched step's ids and reads them (and its device time).
    fn read_step(&self, launched: LaunchedStep) -> Result<ModelRunnerOutput> {
        let LaunchedStep {
            slot,
            rows,
            wants_logits,
            logits,
        } = launched;
        let sync = tracing::trace_span!("sync_output", rows).entered();
        if let Some(comm) = self.group().filter(|c| c.on_device()) {
            comm.wait_for_gpu(&slot.end)?;
        }
        // The copy is behind the step's last kernel on the stream: once it is done, so is the
        // step, and both timing events are complete.
        slot.copied
            .synchronize()
            .map_err(|e| device("wait for a step", e))?;
        let ids = slot
            .ids
            .as_slice()
            .map_err(|e| device("read sampled ids", e))?[..rows]
            .to_vec();
        drop(sync);
        let ms = slot
            .start
            .elapsed_ms(&slot.end)
            .map_err(|e| device("read an event", e))?;
        let nccl_stats = self.comm.as_ref().map(|c| c.nccl_stats());
        self.kernel_timer.report(&slot.start, nccl_stats);
        let mut timer = self.step_timer.lock().map_err(|_| poisoned())?;
        timer.time.total += std::time::Duration::from_secs_f64(f64::from(ms) / 1e3);
        timer.time.steps += 1;
        timer.free.push(slot);
        drop(timer);
        let mut output = ModelRunnerOutput {
            sampled_token_ids: ids,
            logits: Vec::with_capacity(rows),
        };
        for (i, &wanted) in wants_logits.iter().enumerate() {
            let row = match (&logits, wanted) {
                (Some((all, vocab)), true) => Some(all[i * vocab..(i + 1) * vocab].to_vec()),
                _ => None,
            };
            output.logits.push(row);
        }
        Ok(output)
    }
}

fn poisoned() -> BackendError {
    BackendError::shape("cuda backend", "a previous step panicked holding a lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(vars: &[(&str, &str)]) -> std::result::Result<GemvRule, String> {
        GemvRule::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn gemv_rule_defaults_to_the_measured_rule() {
        let r = rule(&[]).unwrap();
        assert_eq!(r, GemvRule::default());
        // Llama-3.2-1B: gate/up [16384, 2048] on the GEMV at one token, cuBLAS at 2-4 and 8;
        // its qkv [3072, 2048] (6.3M elements) likewise; SmolLM2's gate/up [3072, 576] always.
        assert!(r.takes_shape(1, 16384, 2048) && r.takes_shape(1, 128256, 2048));
        assert!(!r.takes_shape(2, 16384, 2048) && !r.takes_shape(4, 3072, 2048));
        assert!(r.takes_shape(4, 3072, 576) && !r.takes_shape(5, 3072, 576));
        assert_eq!(
            r.norm_prologue,
            NormPrologue::PerBlock { groups_per_warp: 0 }
        );
        assert_eq!(r.staging, Staging::Shared);
    }

    #[test]
    fn skinny_rule_follows_the_environment() {
        let read = |vars: &'static [(&'static str, &'static str)], has_tma: bool| {
            SkinnyRule::from_vars(
                move |name| {
                    vars.iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.to_string())
                },
                has_tma,
            )
        };
        let tma = read(&[], true).unwrap();
        assert_eq!(tma.main_loop, MainLoop::Tma, "TMA where compiled");
        assert!(tma.takes_shape(32, 4096, false) && tma.takes_shape(5, 576, false));
        assert!(!tma.takes_shape(4, 4096, false), "1-4 tokens: the GEMV's");
        assert!(!tma.takes_shape(33, 4096, false), "past 32 tokens: cuBLAS");
        assert!(!tma.takes_shape(8, 4096, true), "no bias epilogue");
        assert!(!tma.takes_shape(8, 100, false), "k in whole 16-byte chunks");
        let mma = read(&[], false).unwrap();
        assert_eq!(mma.main_loop, MainLoop::MmaSync);
        assert!(
            !mma.takes_shape(8, 4096, false),
            "mma.sync: off, slower than cuBLAS"
        );
        let r = read(&[("LAB_SKINNY_MAX_TOKENS", "32")], false).unwrap();
        assert!(r.takes_shape(32, 4096, false), "asked for");
        let off = read(&[("LAB_SKINNY_MAX_TOKENS", "0")], true).unwrap();
        assert!(!off.takes_shape(8, 4096, false));
        let one = read(&[("LAB_SKINNY_MIN_TOKENS", "1")], true).unwrap();
        assert!(one.takes_shape(1, 4096, false), "batch 1 too");
        let zero = read(&[("LAB_SKINNY_MIN_TOKENS", "0")], true).unwrap();
        assert!(!zero.takes_shape(0, 4096, false), "no empty launch");
        assert_eq!(
            (tma.rows, tma.one_wave),
            (64, true),
            "64 rows, 128 to stay in one wave"
        );
        let fixed = read(&[("LAB_SKINNY_ROWS", "128")], true).unwrap();
        assert_eq!(
            (fixed.rows, fixed.one_wave),
            (128, false),
            "asked for: every launch"
        );
        let fixed = read(&[("LAB_SKINNY_ROWS", "64")], true).unwrap();
        assert_eq!((fixed.rows, fixed.one_wave), (64, false));
        let asked = read(&[("LAB_SKINNY_MAIN_LOOP", "mma")], true).unwrap();
        assert_eq!(asked.main_loop, MainLoop::MmaSync);
        let asked = read(&[("LAB_SKINNY_MAIN_LOOP", "tma")], false).unwrap();
        assert_eq!(
            asked.main_loop,
            MainLoop::Tma,
            "asked for: refused at start-up"
        );
        for (name, value) in [
            ("LAB_SKINNY_ROWS", "96"),
            ("LAB_SKINNY_MAX_TOKENS", "64"),
            ("LAB_SKINNY_MIN_TOKENS", "x"),
            ("LAB_SKINNY_MAIN_LOOP", "wgmma"),
        ] {
            let vars: &'static [(&str, &str)] = Box::leak(Box::new([(name, value)]));
            let err = read(vars, true).unwrap_err();
            assert!(err.contains(&format!("{name}={value}")), "{err}");
        }
    }

    #[test]
    fn early_attention_reads_follow_the_environment() {
        let read = |v: Option<&'static str>| {
            early_reads_from_vars(move |name| (name == "LAB_ATTENTION_EARLY").then_some(v?.into()))
        };
        assert_eq!(read(None), Ok(true), "on by default");
        assert_eq!(read(Some("1")), Ok(true));
        assert_eq!(read(Some(" 0")), Ok(false));
        assert!(read(Some("yes"))
            .unwrap_err()
            .contains("LAB_ATTENTION_EARLY=yes"));
    }

    #[test]
    fn step_transfer_follows_the_environment() {
        let read = |v: Option<&'static str>| {
            step_transfer_from_vars(move |name| (name == "LAB_STEP_TRANSFER").then_some(v?.into()))
        };
        assert_eq!(
            read(None),
            Ok(StepTransfer::Kernel),
            "the kernel by default"
        );
        assert_eq!(read(Some("kernel")), Ok(StepTransfer::Kernel));
        assert_eq!(read(Some(" copy ")), Ok(StepTransfer::Copy));
        assert!(read(Some("dma"))
            .unwrap_err()
            .contains("LAB_STEP_TRANSFER=dma"));
    }

    #[test]
    fn wide_single_pass_follows_the_environment() {
        let read = |v: Option<&'static str>| {
            wide_single_pass_from_vars(move |name| {
                (name == "LAB_ATTENTION_WIDE").then_some(v?.into())
            })
        };
        assert_eq!(read(None), Ok(WIDE_SINGLE_PASS_TOKENS));
        assert_eq!(read(Some(" 512")), Ok(512));
        assert_eq!(read(Some("0")), Ok(0));
        assert!(read(Some("all"))
            .unwrap_err()
            .contains("LAB_ATTENTION_WIDE=all"));
    }

    #[test]
    fn decode_attention_follows_the_environment() {
        let read = |vars: &'static [(&'static str, &'static str)]| {
            decode_kernel_from_vars(move |name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            })
        };
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(
            read(&[("LAB_DECODE_ATTENTION", " shared")]),
            Ok(Some(DecodeKernel::Shared))
        );
        assert_eq!(
            read(&[("LAB_DECODE_ATTENTION", "mma")]),
            Ok(Some(DecodeKernel::MmaWarpRings))
        );
        let err = read(&[("LAB_DECODE_ATTENTION", "fast")]).unwrap_err();
        assert!(err.contains("LAB_DECODE_ATTENTION=fast"), "{err}");
    }

    #[test]
    fn gemv_rule_follows_the_environment() {
        let r = rule(&[
            ("LAB_GEMV_MAX_WEIGHTS", "1000000000"),
            ("LAB_GEMV_NORM", "block:2"),
        ])
        .unwrap();
        assert!(r.takes_shape(4, 16384, 2048) && r.takes_shape(2, 128256, 2048));
        assert!(
            !r.takes_shape(8, 16384, 2048),
            "past GEMV_MAX_TOKENS: cuBLAS"
        );
        assert_eq!(
            r.norm_prologue,
            NormPrologue::PerBlock { groups_per_warp: 2 }
        );
        let r = rule(&[
            ("LAB_GEMV_MAX_WEIGHTS_M1", "0"),
            ("LAB_GEMV_NORM", "block:1"),
        ])
        .unwrap();
        assert!(!r.takes_shape(1, 16, 576), "0: every projection on cuBLAS");
        assert_eq!(
            r.norm_prologue,
            NormPrologue::PerBlock { groups_per_warp: 1 }
        );
        let r = rule(&[("LAB_GEMV_NORM", "block")]).unwrap();
        assert_eq!(
            r.norm_prologue,
            NormPrologue::PerBlock { groups_per_warp: 0 }
        );
        let r = rule(&[("LAB_GEMV_NORM", "warp")]).unwrap();
        assert_eq!(r.norm_prologue, NormPrologue::PerWarp);
        let r = rule(&[("LAB_GEMV_MAX_WEIGHTS_M1", "4194304")]).unwrap();
        assert!(r.takes_shape(1, 3072, 576) && !r.takes_shape(1, 2048, 2048));
        assert_eq!(
            rule(&[("LAB_GEMV_STAGED", "1")]).unwrap().staging,
            Staging::Shared
        );
        assert_eq!(
            rule(&[("LAB_GEMV_STAGED", " 0")]).unwrap().staging,
            Staging::Off
        );
        assert_eq!(rule(&[]).unwrap().split_k, SplitK::Auto);
        assert_eq!(
            rule(&[("LAB_GEMV_SPLIT_BELOW", "4")]).unwrap().split_k,
            SplitK::Below(4)
        );
        assert_eq!(rule(&[]).unwrap().split_grid, SplitGrid::OneWave);
        assert_eq!(
            rule(&[("LAB_GEMV_SPLIT_WAVE", "0")]).unwrap().split_grid,
            SplitGrid::PerGroup
        );
        assert_eq!(
            rule(&[("LAB_GEMV_SPLIT_WAVE", "blocks:1")])
                .unwrap()
                .split_grid,
            SplitGrid::BlocksPerSm(1)
        );
    }

    #[test]
    fn gemv_rule_refuses_what_does_not_parse() {
        for (name, value) in [
            ("LAB_GEMV_MAX_WEIGHTS", "4M"),
            ("LAB_GEMV_MAX_WEIGHTS_M1", "-1"),
            ("LAB_GEMV_NORM", "blocks"),
            ("LAB_GEMV_NORM", "block:0"),
            ("LAB_GEMV_NORM", "block:x"),
            ("LAB_GEMV_STAGED", "yes"),
            ("LAB_GEMV_SPLIT_BELOW", "2.5"),
            ("LAB_GEMV_SPLIT_WAVE", "on"),
            ("LAB_GEMV_SPLIT_WAVE", "blocks:0"),
        ] {
            let e = rule(&[(name, value)]).unwrap_err();
            assert!(e.starts_with(&format!("{name}={value}:")), "{e}");
        }
    }
}
