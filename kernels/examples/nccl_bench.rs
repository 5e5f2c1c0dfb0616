//! NCCL all-reduce on every GPU of the machine, bf16, at 1 MiB, 64 MiB and 1 GiB: time per call
//! and bus bandwidth, the figure NCCL's own tests report (algorithm bandwidth × 2(N−1)/N: what
//! each GPU sends in a ring, per second). docs/gpu.md measured 23 / 268 / 322 GB/s on two
//! H200s with PyTorch; the distributed issue asks for 64 MiB within 10% of 268.
//!
//! Then, with `--custom`, the one-shot all-reduce over peer memory at decode sizes, alone and
//! with the residual add + RMSNorm after it, as two launches and as one (`custom_all_reduce.rs`).
//!
//! Run on the GPU machine with `NCCL_NVLS_ENABLE=0` (scripts/gpu-check.sh builds and runs it).
//! Method: 5 warm-up calls, then 20 calls timed one by one with CUDA events on rank 0's stream
//! after every stream has finished the previous call; the median is reported.

use anyhow::Result;
use half::bf16;
use kernels::cudarc::driver::{sys::CUevent_flags, CudaContext};
use kernels::custom_all_reduce::{enable_peer_access, NormLayout, PeerBuffers, PeerPtrs};
use kernels::nccl::NcclGroup;
use kernels::Kernels;

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
    if std::env::args().any(|a| a == "--custom") {
        // Streams of their own: the kernels launch with programmatic dependent launch, which
        // the legacy default stream does not take.
        let streams: Vec<_> = (0..n)
            .map(|i| Ok(CudaContext::new(i)?.new_stream()?))
            .collect::<Result<_>>()?;
        return custom(&streams);
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

/// `--custom`: µs per call of the one-shot all-reduce at `[tokens, 4096]` (Llama-2-7B's hidden
/// size) on every GPU, one rank each: the all-reduce alone, `fused_add_rms_norm` alone, the
/// two one after the other, and the fused kernel. Each is 200 calls back to back on every
/// rank's stream (launches interleaved rank by rank), timed with events on rank 0's, after 20
/// warm-up calls; the median of 5 such runs, divided by 200.
fn custom(streams: &[std::sync::Arc<kernels::cudarc::driver::CudaStream>]) -> Result<()> {
    let ctxs: Vec<_> = streams.iter().map(|s| s.context().clone()).collect();
    for a in &ctxs {
        for b in &ctxs {
            enable_peer_access(a, b)?;
        }
    }
    let ranks = streams.len();
    let kernels = ctxs
        .iter()
        .map(Kernels::load)
        .collect::<Result<Vec<_>, _>>()?;
    let mut buffers = streams
        .iter()
        .map(|s| PeerBuffers::new(s, 4 << 20, std::time::Duration::from_secs(20)))
        .collect::<Result<Vec<_>, _>>()?;
    let addresses: Vec<_> = buffers
        .iter()
        .zip(streams)
        .map(|(b, s)| b.addresses(s))
        .collect();
    let peers = PeerPtrs::new(&addresses)?;
    let hidden = 4096;
    println!("custom all-reduce: {ranks} GPUs, [tokens, {hidden}] bf16, µs per call");
    println!("| tokens | all-reduce | fused_add_rms_norm | both, two launches | fused, row groups | fused, wide rows |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for tokens in [1usize, 8, 32, 128] {
        let n = tokens * hidden;
        let ones = vec![bf16::from_f32(0.01); n];
        let mut xs = streams
            .iter()
            .map(|s| s.clone_htod(&ones))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rs = streams
            .iter()
            .map(|s| s.clone_htod(&ones))
            .collect::<Result<Vec<_>, _>>()?;
        let w = vec![bf16::from_f32(1.0); hidden];
        let ws = streams
            .iter()
            .map(|s| s.clone_htod(&w))
            .collect::<Result<Vec<_>, _>>()?;
        let mut row = Vec::new();
        for variant in 0..5 {
            let mut call = |r: usize| -> Result<()> {
                let (s, k) = (&streams[r], &kernels[r]);
                let (x, res, w) = (&mut xs[r], &mut rs[r], &ws[r]);
                if variant == 0 || variant == 2 {
                    let b = &mut buffers[r];
                    k.custom_all_reduce.all_reduce_in_place(
                        s,
                        &mut x.as_view_mut(),
                        b,
                        &peers,
                        r,
                        ranks,
                    )?;
                }
                if variant == 1 || variant == 2 {
                    let (xv, rv) = (&mut x.as_view_mut(), &mut res.as_view_mut());
                    k.rms_norm
                        .fused_add_rms_norm(s, xv, rv, &w.as_view(), 1e-5)?;
                }
                if variant >= 3 {
                    let layout = [NormLayout::Groups, NormLayout::Wide][variant - 3];
                    let (xv, rv) = (&mut x.as_view_mut(), &mut res.as_view_mut());
                    let b = &mut buffers[r];
                    let car = &k.custom_all_reduce;
                    car.all_reduce_add_rms_norm_with(
                        layout,
                        s,
                        xv,
                        rv,
                        &w.as_view(),
                        1e-5,
                        b,
                        &peers,
                        r,
                        ranks,
                    )?;
                }
                Ok(())
            };
            let mut round = |count: usize| -> Result<()> {
                for _ in 0..count {
                    for r in 0..ranks {
                        call(r)?;
                    }
                }
                Ok(())
            };
            round(20)?;
            streams.iter().try_for_each(|s| s.synchronize())?;
            let mut us = Vec::new();
            for _ in 0..5 {
                let start = ctxs[0].new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
                let end = ctxs[0].new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
                start.record(&streams[0])?;
                round(200)?;
                end.record(&streams[0])?;
                streams.iter().try_for_each(|s| s.synchronize())?;
                us.push(start.elapsed_ms(&end)? as f64 * 1e3 / 200.0);
            }
            us.sort_by(f64::total_cmp);
            row.push(format!("{:.2}", us[2]));
        }
        println!("| {tokens} | {} |", row.join(" | "));
    }
    Ok(())
}
