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
//! - `cluster barrier`: one launch in thread block clusters (sm_90), each cluster's blocks
//!   meeting at the hardware's cluster barrier (`barrier.cluster.arrive.release` /
//!   `wait.acquire`) after each stage, block `r` of a cluster reading the word of block `r + 1`
//!   of the same cluster (through global memory, or, `DSMEM`, from that block's shared memory
//!   with `ld.shared::cluster`). This is the price of a stage boundary inside a kernel that
//!   fuses stages which depend on each other only within a group of blocks (the heads of one
//!   KV head, say), against a kernel boundary under PDL.
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

__device__ __forceinline__ u32 cluster_rank() {
    u32 r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ u32 cluster_blocks() {
    u32 n;
    asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(n));
    return n;
}
// The cluster barrier: release this block's writes (global and shared), acquire the others'.
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// Stages inside each cluster: block r of a cluster reads the word block r + 1 of the same
// cluster wrote in the stage before (global memory, from L2), then the cluster barrier.
extern "C" __global__ void cluster_stages(u32* words, u32 stages) {
    const u32 n = gridDim.x, b = blockIdx.x, r = cluster_rank(), size = cluster_blocks();
    const u32 next = b - r + (r + 1) % size;
    for (u32 s = 0; s < stages; ++s) {
        if (threadIdx.x == 0) {
            const u32 prev = __ldcg(&words[(s & 1) * n + next]);
            __stcg(&words[((s + 1) & 1) * n + b], prev + 1);
        }
        cluster_sync();
    }
}

// The same through distributed shared memory: each block keeps its two words in its own shared
// memory and reads its neighbour's across the cluster (ld.shared::cluster); the last words go
// to global memory for the check.
extern "C" __global__ void cluster_stages_dsmem(u32* words, u32 stages) {
    __shared__ u32 mine[2];
    const u32 n = gridDim.x, b = blockIdx.x, r = cluster_rank(), size = cluster_blocks();
    if (threadIdx.x == 0) {
        mine[0] = 0;
        mine[1] = 0;
    }
    cluster_sync();  // every block's words are set before any is read
    const u32 local = (u32)__cvta_generic_to_shared(mine);
    u32 remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"((r + 1) % size));
    for (u32 s = 0; s < stages; ++s) {
        if (threadIdx.x == 0) {
            u32 prev;
            asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(prev) : "r"(remote + (s & 1) * 4) : "memory");
            mine[(s + 1) & 1] = prev + 1;
        }
        cluster_sync();
    }
    if (threadIdx.x == 0) words[(stages & 1) * n + b] = mine[stages & 1];
    cluster_sync();  // no block leaves while a neighbour may still read its shared memory
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
    cluster: CudaFunction,
    cluster_dsmem: CudaFunction,
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
        cluster: module.load_function("cluster_stages")?,
        cluster_dsmem: module.load_function("cluster_stages_dsmem")?,
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
    // Clusters: 128 blocks (a whole number of clusters of every size), one per SM at most.
    println!();
    println!("| blocks | threads | cluster | cluster barrier | cluster barrier, DSMEM |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for threads in [128, 256] {
        for size in [2, 4, 8, 16] {
            let global = bench.cluster_us(128, threads, size, false);
            let dsmem = bench.cluster_us(128, threads, size, true);
            let show =
                |r: Result<f64>| r.map_or_else(|e| format!("({e})"), |us| format!("{us:.3}"));
            println!(
                "| 128 | {threads} | {size} | {} | {} |",
                show(global),
                show(dsmem)
            );
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

    /// µs per stage of one launch in clusters of `size` blocks, `STAGES` stages each ended by
    /// the cluster barrier (the neighbour's word read from global memory, or from its shared
    /// memory with `dsmem`). Clusters of 16 are beyond the portable 8 and are allowed first.
    fn cluster_us(&self, blocks: u32, threads: u32, size: u32, dsmem: bool) -> Result<f64> {
        let func = if dsmem {
            &self.cluster_dsmem
        } else {
            &self.cluster
        };
        if size > 8 {
            // SAFETY: sets one attribute of a function of this context.
            unsafe {
                sys::cuFuncSetAttribute(
                    func.cu_function(),
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED,
                    1,
                )
            }
            .result()?;
        }
        let s = self.stream();
        let mut words = s.alloc_zeros::<u32>(2 * blocks as usize)?;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let ms = roofline::time_ms(&self.gpu.ctx, s, || {
            s.memset_zeros(&mut words)?;
            // SAFETY: cluster_stages(_dsmem)(u32* words, u32 stages) touches words[0..2 ·
            // blocks]; the grid is a whole number of clusters, whose blocks the hardware runs
            // at once, so every cluster barrier completes.
            unsafe {
                Launch::new(s, func)
                    .cluster((size, 1, 1))
                    .arg(&mut words)
                    .arg(&STAGES)
                    .launch(cfg)?;
            }
            anyhow::Ok(())
        })?;
        self.check(
            &words,
            blocks,
            if dsmem { "cluster, DSMEM" } else { "cluster" },
        )?;
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
