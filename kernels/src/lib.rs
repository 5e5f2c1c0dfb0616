//! Inference Lab's CUDA kernels: the GPU twins of the engine's CPU ops (`engine::ops`), in
//! bf16 with f32 arithmetic, compiled from CUDA C by NVRTC when the program starts.
//!
//! # Map
//! ```text
//! cuda/*.cu ──include_str!──► compile.rs (NVRTC, sm_90) ──CUBIN──► Kernels::load (one module per file)
//!                                  └─ kernel_cache.rs: the CUBINs of earlier runs, on disk
//!
//! one step of a decoder layer, as the engine will call it:
//!   embedding.rs          ids ─► hidden states
//!   rms_norm.rs           RMSNorm, and the fused residual add + RMSNorm
//!   rotary_embedding.rs   rotate q and k by position
//!   reshape_and_cache.rs  write k, v into the paged KV cache (slot_mapping)
//!   paged_attention.rs    decode attention through block tables: single pass or split-K
//!   prefill_attention.rs  attention for mixed batches (prefill, chunks, decode), tiled
//!                         FlashAttention-2 style on tensor cores
//!   linear.rs             every projection (qkv, o, gate/up, down, lm head): cuBLAS bf16 GEMM
//!   gemv.rs               the same for 1..8 tokens (decode): a plain weight stream
//!   silu_and_mul.rs       the MLP's activation
//!   split_columns.rs      fused qkv output → q, k, v
//!   qkv_rotary_cache.rs   split + rotary + reshape_and_cache in one launch (what the engine runs)
//!   sampling.rs           argmax, and temperature/top-k/top-p with a Philox draw, on the device
//! custom_all_reduce.rs    tensor parallelism's small all-reduces, one hop over peer memory
//! copy_rows.rs            a step's block tables: the used corner of a wide device matrix
//! prepare_inputs.rs       a step's metadata, tables and hand-over from page-locked host memory
//! launch.rs               every launch, with programmatic dependent launch (PDL)
//! kernel_timeline.rs      when each block of each kernel waited and was let go (a probe)
//! error.rs                KernelError: every wrapper returns Result; cudarc errors mapped
//! roofline.rs             the ceilings the kernels are compared with: copy GB/s, GEMM TFLOP/s
//! ```
//! Layouts and metadata mean what they mean on the CPU: the KV cache is
//! `[num_blocks, block_size, num_kv_heads, head_dim]` per layer, a slot is a row of it, and
//! block tables and sequence lengths are those of `engine::attention::AttentionMetadata`
//! (as `u32` on the device; slots as `u64`).
//!
//! # No GPU
//! cudarc loads the driver at run time and panics at the first driver call if it is missing.
//! [`gpu_available`] looks for the libraries without calling into them; [`Gpu::open`] calls
//! it first, so a program without a GPU gets [`KernelError::Unavailable`], never a panic.

pub mod compile;
pub mod copy_rows;
pub mod custom_all_reduce;
pub mod embedding;
pub mod error;
pub mod gemv;
pub mod kernel_cache;
pub mod kernel_timeline;
pub mod launch;
pub mod linear;
pub mod linear_lt;
pub mod nccl;
pub mod paged_attention;
pub mod prefill_attention;
pub mod prepare_inputs;
pub mod qkv_rotary_cache;
pub mod reshape_and_cache;
pub mod rms_norm;
pub mod roofline;
pub mod rotary_embedding;
pub mod sampling;
pub mod silu_and_mul;
pub mod skinny_gemm;
pub mod split_columns;

use std::sync::Arc;

pub use cudarc;
use cudarc::driver::{CudaContext, CudaModule, CudaStream, LaunchConfig};
pub use error::{KernelError, Result};

/// Whether this machine can run the kernels: the driver library (libcuda) and NVRTC can be
/// loaded. Makes no driver call, so it is safe where cudarc would panic.
pub fn gpu_available() -> Result<()> {
    // SAFETY: `is_culib_present` only tries to dlopen the library by its known names and
    // returns whether that worked; it calls no function of the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(KernelError::Unavailable(
            "libcuda, the NVIDIA driver library, was not found".into(),
        ));
    }
    // SAFETY: as above, for libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(KernelError::NoCompiler("libnvrtc was not found".into()));
    }
    Ok(())
}

/// Head sizes the attention kernels (decode and prefill) are instantiated for.
pub const HEAD_DIMS: [usize; 2] = [64, 128];

/// The oldest GPU generation the kernels run on: they use sm_90's instructions (Hopper;
/// `cp.async`, bf16 `mma.sync`, programmatic dependent launch) and are compiled at start-up
/// for the GPU found, which must be this one or newer.
pub const MIN_COMPUTE_CAPABILITY: (i32, i32) = (9, 0);

/// Checks that GPU `ordinal` exists and is new enough for the kernels ([`MIN_COMPUTE_CAPABILITY`]).
/// Calls [`gpu_available`] first, so it never panics on a machine without a driver.
pub fn check_device(ordinal: usize) -> Result<()> {
    gpu_available()?;
    let count = CudaContext::device_count()
        .map_err(|e| KernelError::Unavailable(format!("driver found, but {e}")))?;
    if ordinal >= count as usize {
        return Err(KernelError::Unavailable(format!(
            "driver found, {count} device(s), asked for device {ordinal}"
        )));
    }
    let dev = cudarc::driver::result::device::get(ordinal as i32)?;
    use cudarc::driver::sys::CUdevice_attribute as A;
    // SAFETY: `dev` was returned by `device::get` just above.
    let (major, minor) = unsafe {
        (
            cudarc::driver::result::device::get_attribute(
                dev,
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
            )?,
            cudarc::driver::result::device::get_attribute(
                dev,
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
            )?,
        )
    };
    if (major, minor) < MIN_COMPUTE_CAPABILITY {
        let (want_major, want_minor) = MIN_COMPUTE_CAPABILITY;
        return Err(KernelError::Unavailable(format!(
            "GPU {ordinal} is sm_{major}{minor}; the kernels need sm_{want_major}{want_minor} (Hopper) or newer"
        )));
    }
    Ok(())
}

/// Every kernel file, in the order of the modules [`Kernels::load`] loads.
pub(crate) const SOURCES: [(&str, &str); 14] = [
    (embedding::FILE, embedding::SOURCE),
    (rms_norm::FILE, rms_norm::SOURCE),
    (rotary_embedding::FILE, rotary_embedding::SOURCE),
    (reshape_and_cache::FILE, reshape_and_cache::SOURCE),
    (paged_attention::FILE, paged_attention::SOURCE),
    (silu_and_mul::FILE, silu_and_mul::SOURCE),
    (sampling::FILE, sampling::SOURCE),
    (prefill_attention::FILE, prefill_attention::SOURCE),
    (split_columns::FILE, split_columns::SOURCE),
    (gemv::FILE, gemv::SOURCE),
    (qkv_rotary_cache::FILE, qkv_rotary_cache::SOURCE),
    (custom_all_reduce::FILE, custom_all_reduce::SOURCE),
    (skinny_gemm::FILE, skinny_gemm::SOURCE),
    (prepare_inputs::FILE, prepare_inputs::SOURCE),
];

/// Every kernel of the crate, compiled and loaded into one context.
#[derive(Debug, Clone)]
pub struct Kernels {
    pub embedding: embedding::Embedding,
    pub rms_norm: rms_norm::RmsNorm,
    pub rotary_embedding: rotary_embedding::RotaryEmbedding,
    pub reshape_and_cache: reshape_and_cache::ReshapeAndCache,
    pub paged_attention: paged_attention::PagedAttention,
    pub prefill_attention: prefill_attention::PrefillAttention,
    pub silu_and_mul: silu_and_mul::SiluAndMul,
    pub sampling: sampling::Sampling,
    pub split_columns: split_columns::SplitColumns,
    pub gemv: gemv::Gemv,
    pub qkv_rotary_cache: qkv_rotary_cache::QkvRotaryCache,
    pub custom_all_reduce: custom_all_reduce::CustomAllReduce,
    pub skinny_gemm: skinny_gemm::SkinnyGemm,
    pub prepare_inputs: prepare_inputs::PrepareInputs,
}

impl Kernels {
    /// Compiles every `.cu` file, in parallel (NVRTC takes 0.05-0.3 s per file, and seconds for
    /// paged_attention's instantiations on a slow CPU), or takes them from the kernel cache,
    /// and loads them.
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        Self::load_with(ctx, None)
    }

    /// [`Kernels::load`], with the timeline probe compiled into every kernel and pointed at
    /// `timeline` when one is given ([`kernel_timeline`]; `stream` is the one it was made on).
    pub fn load_with(
        ctx: &Arc<CudaContext>,
        timeline: Option<(&kernel_timeline::KernelTimeline, &Arc<CudaStream>)>,
    ) -> Result<Self> {
        use cudarc::driver::sys::CUdevice_attribute as A;
        let arch = compile::arch((
            ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        ));
        let arch = arch.as_str();
        let ptx = std::thread::scope(|s| {
            let jobs: Vec<_> = SOURCES
                .iter()
                .enumerate()
                .map(|(i, &(file, src))| {
                    let prelude = timeline
                        .map(|_| kernel_timeline::KernelTimeline::prelude(i))
                        .unwrap_or_default();
                    s.spawn(move || compile::compile_with(file, &prelude, src, arch))
                })
                .collect();
            jobs.into_iter()
                .map(|j| j.join().expect("NVRTC compile thread panicked"))
                .collect::<Result<Vec<_>>>()
        })?;
        // The GEMV's and decode attention's split-K rules compare their grids with the SMs.
        let num_sms = ctx.attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )? as usize;
        let modules = ptx
            .into_iter()
            .map(|p| ctx.load_module(p))
            .collect::<Result<Vec<Arc<CudaModule>>, _>>()?;
        if let Some((timeline, stream)) = timeline {
            for module in &modules {
                timeline.attach(module, stream)?;
            }
        }
        Ok(Self {
            embedding: embedding::Embedding::load(&modules[0])?,
            rms_norm: rms_norm::RmsNorm::load(&modules[1])?,
            rotary_embedding: rotary_embedding::RotaryEmbedding::load(&modules[2])?,
            reshape_and_cache: reshape_and_cache::ReshapeAndCache::load(&modules[3])?,
            paged_attention: paged_attention::PagedAttention::load(&modules[4], num_sms)?,
            silu_and_mul: silu_and_mul::SiluAndMul::load(&modules[5])?,
            sampling: sampling::Sampling::load(&modules[6])?,
            prefill_attention: prefill_attention::PrefillAttention::load(&modules[7])?,
            split_columns: split_columns::SplitColumns::load(&modules[8])?,
            gemv: gemv::Gemv::load(&modules[9], num_sms)?,
            qkv_rotary_cache: qkv_rotary_cache::QkvRotaryCache::load(&modules[10])?,
            custom_all_reduce: custom_all_reduce::CustomAllReduce::load(&modules[11])?,
            skinny_gemm: skinny_gemm::SkinnyGemm::load(
                &modules[12],
                num_sms,
                arch == compile::ARCH_HOPPER_FEATURES,
            )?,
            prepare_inputs: prepare_inputs::PrepareInputs::load(&modules[13])?,
        })
    }
}

/// One GPU, ready: its context, the stream the kernels run on (one, created by [`Gpu::open`];
/// cross-stream event tracking is off), the kernels.
#[derive(Debug)]
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub kernels: Kernels,
    /// Where the kernels' timeline probe writes, when they were built with it
    /// ([`Gpu::open_with_timeline`]).
    pub timeline: Option<std::sync::Mutex<kernel_timeline::KernelTimeline>>,
}

impl Gpu {
    /// Opens GPU `ordinal` and compiles the kernels. Without a driver or device:
    /// [`KernelError::Unavailable`] (no panic).
    pub fn open(ordinal: usize) -> Result<Self> {
        Self::open_with_timeline(ordinal, None)
    }

    /// [`Gpu::open`], with the kernels built with the timeline probe and room for
    /// `timeline_records` block records when that is given ([`kernel_timeline`]).
    pub fn open_with_timeline(ordinal: usize, timeline_records: Option<usize>) -> Result<Self> {
        check_device(ordinal)?;
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: everything this crate and the engine launch goes to the one stream made
        // below, in program order, so no buffer needs cudarc's cross-stream events (which would
        // add an event record per argument per launch, and nodes to every captured graph).
        unsafe { ctx.disable_event_tracking() };
        // Not the legacy default stream: CUDA graphs can only be captured on a stream of our own.
        let stream = ctx.new_stream()?;
        let timeline = timeline_records
            .map(|n| kernel_timeline::KernelTimeline::new(&stream, n))
            .transpose()?;
        let kernels = Kernels::load_with(&ctx, timeline.as_ref().map(|t| (t, &stream)))?;
        Ok(Self {
            ctx,
            stream,
            kernels,
            timeline: timeline.map(std::sync::Mutex::new),
        })
    }
}

/// Work items per row of `width` bf16: 16-byte vectors (8 values) when the width allows them,
/// as the kernels decide.
pub(crate) fn vector_units(width: usize) -> usize {
    if width.is_multiple_of(8) {
        width / 8
    } else {
        width
    }
}

/// Launch shape for the row kernels that also split a row over blocks: `blockIdx.x` is the row,
/// `blockIdx.y` one of `gridDim.y` slices of at most 256 work items, a work item per thread.
/// With one block per row, a decode batch of 32 rows would run 32 blocks on 132 SMs, each
/// thread walking its row's items one dependent trip to memory after another (SiLU·mul of
/// Llama-2-7B: 1376 vectors a row, 7.5 µs for 32 rows on the H200, Nsight Compute, 2026-11-29).
pub(crate) fn row_tiles_launch(rows: usize, units: usize) -> Result<LaunchConfig> {
    let threads = (units.div_ceil(32) * 32).clamp(32, 256);
    let tiles = units.div_ceil(threads).max(1);
    Ok(LaunchConfig {
        grid_dim: (
            error::to_u32("row kernel", "rows", rows)?,
            error::to_u32("row kernel", "slices of a row", tiles)?,
            1,
        ),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Launch shape for the row kernels: one block per row, threads for `units` work items per
/// row (a warp multiple, at most 256; wider rows loop).
pub(crate) fn row_launch(rows: usize, units: usize) -> Result<LaunchConfig> {
    let threads = (units.div_ceil(32) * 32).clamp(32, 256) as u32;
    Ok(LaunchConfig {
        grid_dim: (error::to_u32("row kernel", "rows", rows)?, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}
