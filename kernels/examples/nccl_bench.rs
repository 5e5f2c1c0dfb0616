//! NCCL all-reduce on every GPU of the machine, bf16, at 1 MiB, 64 MiB and 1 GiB: time per call
//! and bus bandwidth, the figure NCCL's own tests report (algorithm bandwidth × 2(N−1)/N: what
//! each GPU sends in a ring, per second). docs/gpu.md measured 23 / 268 / 322 GB/s on two
//! H200s with PyTorch; the distributed issue asks for 64 MiB within 10% of 268.
//!
//! Run on the GPU machine with `NCCL_NVLS_ENABLE=0` (scripts/gpu-check.sh builds and runs it).
//! Method: 5 warm-up calls, then 20 calls timed one by one with CUDA events on rank 0's stream
//! after every stream has finished the previous call; the median is reported.

use anyhow::Result;
use half::bf16;
use kernels::cudarc::driver::{sys::CUevent_flags, CudaContext};
use kernels::nccl::NcclGroup;

fn main() -> Result<()> {
    kernels::gpu_available()?;
    kernels::nccl::nccl_available()?;
    let n = CudaContext::device_count()? as usize;
    if n < 2 {
        // Not an error on a one-GPU machine: there is nothing to measure, and the GPU check
        // reads this line as the tests' skips.
        println!("skipped: an all-reduce needs two GPUs; this machine has {n}");
        return Ok(());
    }
    let streams: Vec<_> = (0..n)
        .map(|i| Ok(CudaContext::new(i)?.default_stream()))
        .collect::<Result<_>>()?;
    let group = NcclGroup::new(streams.clone())?;
    let ctx0 = streams[0].context();
    println!("nccl_bench: {n} GPUs, bf16 all-reduce, median of 20 after 5 warm-up");
    println!("| size | ms | algorithm GB/s | bus GB/s |");
    println!("| --- | ---: | ---: | ---: |");
    for bytes in [1usize << 20, 64 << 20, 1 << 30] {
        let len = bytes / 2;
        let mut bufs = streams
            .iter()
            .map(|s| s.alloc_zeros::<bf16>(len))
            .collect::<Result<Vec<_>, _>>()?;
        let sync = || streams.iter().try_for_each(|s| s.synchronize());
        for _ in 0..5 {
            group.all_reduce_sum(&mut bufs)?;
        }
        sync()?;
        let mut ms = Vec::new();
        for _ in 0..20 {
            let start = ctx0.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            let end = ctx0.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            start.record(&streams[0])?;
            group.all_reduce_sum(&mut bufs)?;
            end.record(&streams[0])?;
            sync()?;
            ms.push(start.elapsed_ms(&end)? as f64);
        }
        ms.sort_by(f64::total_cmp);
        let t = ms[ms.len() / 2];
        let algo = bytes as f64 / (t * 1e-3) / 1e9;
        let bus = algo * 2.0 * (n as f64 - 1.0) / n as f64;
        println!("| {} MiB | {t:.4} | {algo:.0} | {bus:.0} |", bytes >> 20);
    }
    Ok(())
}
