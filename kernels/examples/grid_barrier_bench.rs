//! What one stage of a decode step costs at its boundary: a kernel boundary (one kernel ends,
//! the next starts) against a grid-wide barrier inside one persistent kernel.
//!
//! A batch-1 decode step of a small model is a chain of a few hundred kernels of a few
//! microseconds, and most of each is the boundary: the previous grid drains, the next one's
//! blocks start, their first loads wait. A persistent kernel (one launch for a layer or a step,
//! its blocks meeting at a barrier between stages) replaces each boundary with a barrier. This
//! measures both with the same trivial stage, so that the difference is the price of the
//! boundary itself: every block's thread 0 reads one word another block wrote in the stage
//! before and writes its own (double-buffered), so a stage that started too early would read
//! a stale word, and the final words are checked.
//!
//! - `chain, PDL`: `STAGES` launches of a one-stage kernel with programmatic dependent launch,
//!   recorded as a CUDA graph and replayed (as the engine's decode steps are);
//! - `chain, plain`: the same without the PDL attribute;
//! - `barrier`: one launch of a kernel that runs the `STAGES` stages itself, its blocks meeting
//!   at a barrier after each: an arrival counter in global memory (one release `atom.add` per
//!   block), spun on with acquire loads until every block of this stage has arrived;
//! - `barrier, red`: the same arriving with `red.release` (an add that returns nothing).
//!
//! Each at one and two blocks per SM (all blocks must be resident at once for the barrier).
//! Run on the GPU machine: `grid_barrier_bench` (built with `cargo build --release -p kernels
//! --example grid_barrier_bench`).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use kernels::cudarc::driver::{
    sys, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use kernels::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use kernels::launch::Launch;
use kernels::roofline;
use kernels::Gpu;

/// Stages per measurement (kernels in the chain, barriers in the persistent kernel).
const STAGES: u32 = 2000;

/// The PDL protocol (`griddepcontrol`) as in `cuda/common.cuh`, then the two kernels.
const SOURCE: &str = r#"
typedef unsigned int u32;

__device__ __forceinline__ void wait_for_previous_kernel() {
    asm volatile("griddepcontrol.wait;" ::: "memory");
}
__device__ __forceinline__ void allow_next_kernel() {
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// One stage: block b reads the word block b + 1 wrote in the stage before (buffer s & 1) and
// writes its own, plus one, into the other buffer. After S stages from zeros every word is S.
__device__ __forceinline__ void stage(u32* words, u32 s) {
    const u32 n = gridDim.x, b = blockIdx.x;
    if (threadIdx.x == 0) {
        const u32 prev = __ldcg(&words[(s & 1) * n + (b + 1) % n]);  // from L2, not a stale L1 line
        __stcg(&words[((s + 1) & 1) * n + b], prev + 1);
    }
}

// One stage a launch (the chain).
extern "C" __global__ void chain_stage(u32* words, u32 s) {
    wait_for_previous_kernel();
    stage(words, s);
    allow_next_kernel();
}

// Every stage in one launch, a grid barrier after each. `arrived` counts arrivals over the
// whole run: after stage s every block has arrived s + 1 times, so the barrier waits for
// (s + 1) · gridDim.x without ever resetting the counter.
__device__ __forceinline__ void grid_barrier(u32* arrived, u32 target) {
    __syncthreads();  // the block's stage is done
    if (threadIdx.x == 0) {
        u32 seen;
        // Release: this block's writes are visible before its arrival is.
        asm volatile("atom.add.release.gpu.u32 %0, [%1], 1;" : "=r"(seen) : "l"(arrived) : "memory");
        while (seen < target) {
            // Acquire: the other blocks' writes are visible once their arrivals are seen.
            asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(seen) : "l"(arrived) : "memory");
        }
    }
    __syncthreads();
}

// The same, arriving with a reduction that returns nothing (`red`): the block does not wait
// for its own arrival's round trip before it starts polling.
__device__ __forceinline__ void grid_barrier_red(u32* arrived, u32 target) {
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(arrived) : "memory");
        u32 seen = 0;
        while (seen < target) {
            asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(seen) : "l"(arrived) : "memory");
        }
    }
    __syncthreads();
}

extern "C" __global__ void persistent_stages(u32* words, u32* arrived, u32 stages, u32 red) {
    for (u32 s = 0; s < stages; ++s) {
        stage(words, s);
        if (red) {
            grid_barrier_red(arrived, (s + 1) * gridDim.x);
        } else {
            grid_barrier(arrived, (s + 1) * gridDim.x);
        }
    }
}
"#;

struct Bench {
    gpu: Gpu,
    _module: Arc<CudaModule>,
    chain: CudaFunction,
    persistent: CudaFunction,
    sms: u32,
}

fn main() -> Result<()> {
    let gpu = match Gpu::open(0) {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("grid_barrier_bench: skipped, no usable GPU ({e})");
            return Ok(());
        }
    };
    let (major, minor) = (
        gpu.ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
        gpu.ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
    );
    let ptx = compile_ptx_with_opts(
        SOURCE,
        CompileOptions {
            arch: Some(Box::leak(format!("sm_{major}{minor}").into_boxed_str())),
            ..Default::default()
        },
    )
    .context("compiling the benchmark's kernels")?;
    let module = gpu.ctx.load_module(ptx)?;
    let sms = gpu
        .ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?
        as u32;
    let bench = Bench {
        chain: module.load_function("chain_stage")?,
        persistent: module.load_function("persistent_stages")?,
        _module: module,
        gpu,
        sms,
    };
    println!(
        "{} SMs, {STAGES} stages; µs per stage (median of {} timed runs)",
        bench.sms,
        roofline::REPS
    );
    println!("| blocks | threads | chain, PDL | chain, plain | barrier | barrier, red |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for per_sm in [1, 2] {
        for threads in [128, 256] {
            let blocks = per_sm * bench.sms;
            let pdl = bench.chain_us(blocks, threads, true)?;
            let plain = bench.chain_us(blocks, threads, false)?;
            let barrier = bench.barrier_us(blocks, threads, false)?;
            let red = bench.barrier_us(blocks, threads, true)?;
            println!("| {blocks} | {threads} | {pdl:.3} | {plain:.3} | {barrier:.3} | {red:.3} |");
        }
    }
    Ok(())
}

impl Bench {
    fn stream(&self) -> &Arc<CudaStream> {
        &self.gpu.stream
    }

    /// Checks that every word of the buffer the last stage wrote holds `STAGES`.
    fn check(&self, words: &CudaSlice<u32>, blocks: u32, what: &str) -> Result<()> {
        let host = self.stream().clone_dtoh(words)?;
        let last = (STAGES & 1) as usize * blocks as usize;
        let bad = host[last..last + blocks as usize]
            .iter()
            .filter(|&&w| w != STAGES)
            .count();
        if bad > 0 {
            bail!("{what}: {bad} of {blocks} blocks read a stale word");
        }
        Ok(())
    }

    /// µs per kernel of a chain of `STAGES` one-stage kernels, replayed as a graph.
    fn chain_us(&self, blocks: u32, threads: u32, pdl: bool) -> Result<f64> {
        use kernels::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        let s = self.stream();
        let mut words = s.alloc_zeros::<u32>(2 * blocks as usize)?;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        s.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let mut recorded = Ok(());
        for stage in 0..STAGES {
            // SAFETY: chain_stage(u32* words, u32 s) reads and writes words[0..2 · blocks],
            // the buffer's length, at most.
            let r = unsafe {
                if pdl {
                    Launch::new(s, &self.chain)
                        .arg(&mut words)
                        .arg(&stage)
                        .launch(cfg)
                } else {
                    s.launch_builder(&self.chain)
                        .arg(&mut words)
                        .arg(&stage)
                        .launch(cfg)
                        .map(|_| ())
                }
            };
            if let Err(e) = r {
                recorded = Err(e);
                break;
            }
        }
        let graph = s.end_capture(CUgraphInstantiate_flags(0))?;
        recorded?;
        let graph = graph.context("an empty capture")?;
        let ms = roofline::time_ms(&self.gpu.ctx, s, || {
            s.memset_zeros(&mut words)?;
            graph.launch()?;
            anyhow::Ok(())
        })?;
        self.check(&words, blocks, if pdl { "chain, PDL" } else { "chain" })?;
        Ok(ms * 1e3 / STAGES as f64)
    }

    /// µs per stage of one persistent kernel running `STAGES` stages with a grid barrier each.
    fn barrier_us(&self, blocks: u32, threads: u32, red: bool) -> Result<f64> {
        let red = u32::from(red);
        let s = self.stream();
        let mut words = s.alloc_zeros::<u32>(2 * blocks as usize)?;
        let mut arrived = s.alloc_zeros::<u32>(1)?;
        let resident = self.resident_blocks(threads)?;
        if blocks > resident {
            bail!("{blocks} blocks of {threads} threads do not fit at once ({resident} do)");
        }
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let ms = roofline::time_ms(&self.gpu.ctx, s, || {
            s.memset_zeros(&mut words)?;
            s.memset_zeros(&mut arrived)?;
            // SAFETY: persistent_stages(u32* words, u32* arrived, u32 stages, u32 red) touches
            // words[0..2 · blocks] and arrived[0]; every block is resident (checked above), so
            // the barrier's spin ends.
            unsafe {
                s.launch_builder(&self.persistent)
                    .arg(&mut words)
                    .arg(&mut arrived)
                    .arg(&STAGES)
                    .arg(&red)
                    .launch(cfg)?;
            }
            anyhow::Ok(())
        })?;
        self.check(&words, blocks, "barrier")?;
        Ok(ms * 1e3 / STAGES as f64)
    }

    /// How many blocks of `threads` threads of the persistent kernel the GPU holds at once.
    fn resident_blocks(&self, threads: u32) -> Result<u32> {
        let mut per_sm: std::ffi::c_int = 0;
        // SAFETY: one out-pointer to a live integer; the function belongs to this context.
        unsafe {
            sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(
                &mut per_sm,
                self.persistent.cu_function(),
                threads as i32,
                0,
            )
        }
        .result()?;
        Ok(per_sm as u32 * self.sms)
    }
}
