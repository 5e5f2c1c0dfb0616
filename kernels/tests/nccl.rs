//! NCCL all-reduce over every GPU of the machine against the sum computed on the host. Needs
//! two GPUs and libnccl; otherwise it prints `skipped: ...` and passes (CI has neither).
//! Run it with `NCCL_NVLS_ENABLE=0` on our GPU machines (`scripts/gpu-check.sh` sets it).
mod common;

use std::io::Write;

use common::Rng;
use half::bf16;
use kernels::cudarc::driver::CudaContext;
use kernels::nccl::{nccl_available, NcclGroup};

/// The GPUs' streams, or `None` (with the reason printed) when there are fewer than two or no
/// NCCL.
fn streams_or_skip() -> Option<Vec<std::sync::Arc<kernels::cudarc::driver::CudaStream>>> {
    let skip = |why: String| {
        let _ = writeln!(std::io::stderr(), "skipped: {why}");
        None
    };
    if let Err(e) = kernels::gpu_available().and_then(|()| nccl_available()) {
        return skip(e.to_string());
    }
    let n = match CudaContext::device_count() {
        Ok(n) => n as usize,
        Err(e) => return skip(format!("driver found, but {e}")),
    };
    if n < 2 {
        return skip(format!(
            "an all-reduce needs two GPUs; this machine has {n}"
        ));
    }
    Some(
        (0..n)
            .map(|i| CudaContext::new(i).expect("GPU context").default_stream())
            .collect(),
    )
}

/// The GPUs there are, one or more, or `None` (with the reason printed) without a GPU or NCCL:
/// for the tests whose ranks are threads, which run on one GPU too.
fn gpus_or_skip() -> Option<usize> {
    if let Err(e) = kernels::gpu_available().and_then(|()| nccl_available()) {
        let _ = writeln!(std::io::stderr(), "skipped: {e}");
        return None;
    }
    Some(CudaContext::device_count().expect("device count") as usize)
}

#[test]
fn all_reduce_sums_every_rank_exactly() {
    let Some(streams) = streams_or_skip() else {
        return;
    };
    let group = NcclGroup::new(streams.clone()).expect("NCCL group");
    let n = group.world_size();
    let mut rng = Rng::fresh("nccl");
    // Lengths that are and are not multiples of the rank count and of NCCL's chunking.
    for len in [1usize, 7, 4096, 1 << 20, (1 << 20) + 3] {
        // Small integers: every partial sum is exact in bf16, so the result must be exact
        // whatever order NCCL adds in.
        let host: Vec<Vec<bf16>> = (0..n)
            .map(|_| {
                (0..len)
                    .map(|_| bf16::from_f32((rng.below(17) as f32) - 8.0))
                    .collect()
            })
            .collect();
        let mut bufs: Vec<_> = host
            .iter()
            .zip(&streams)
            .map(|(h, s)| s.clone_htod(h).unwrap())
            .collect();
        group.all_reduce_sum(&mut bufs).unwrap();
        let want: Vec<f32> = (0..len)
            .map(|i| host.iter().map(|h| h[i].to_f32()).sum())
            .collect();
        for (r, (buf, s)) in bufs.iter().zip(&streams).enumerate() {
            let got = s.clone_dtoh(buf).unwrap();
            let bad = got.iter().zip(&want).position(|(g, w)| g.to_f32() != *w);
            assert!(
                bad.is_none(),
                "rank {r} of {n}, {len} elements: element {bad:?} differs"
            );
        }
    }
}

#[test]
fn all_reduce_refuses_mismatched_buffers() {
    let Some(streams) = streams_or_skip() else {
        return;
    };
    let group = NcclGroup::new(streams.clone()).expect("NCCL group");
    let mut one: Vec<_> = streams[..1]
        .iter()
        .map(|s| s.alloc_zeros::<bf16>(8).unwrap())
        .collect();
    assert!(
        group.all_reduce_sum(&mut one).is_err(),
        "one buffer for several ranks"
    );
    let mut uneven: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(i, s)| s.alloc_zeros::<bf16>(8 + i).unwrap())
        .collect();
    assert!(
        group.all_reduce_sum(&mut uneven).is_err(),
        "buffers of different lengths"
    );
}

/// One thread per GPU, each a rank of its own (`NcclRank`, as the engine's workers hold them):
/// every rank's output is every rank's input in rank order. Runs on one GPU too (a group of
/// one rank, where the gather is a copy), so the call itself is exercised on every GPU machine.
#[test]
fn all_gather_lays_ranks_out_in_order() {
    use kernels::nccl::{NcclId, NcclRank};
    let Some(n) = gpus_or_skip() else {
        return;
    };
    let id = NcclId::new().expect("NCCL id");
    let bytes = id.to_bytes();
    // Rank r's values r · 64 + i: small integers, exact in bf16.
    let len = 37usize; // not a multiple of anything NCCL chunks by
    let value = |r: usize, i: usize| bf16::from_f32((r * 64 + i) as f32);
    let got: Vec<Vec<bf16>> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..n)
            .map(|r| {
                s.spawn(move || {
                    let stream = CudaContext::new(r).expect("GPU context").default_stream();
                    let id = NcclId::from_bytes(&bytes).unwrap();
                    let rank = NcclRank::new(stream.clone(), r, n, id).expect("NCCL rank");
                    let host: Vec<bf16> = (0..len).map(|i| value(r, i)).collect();
                    let input = stream.clone_htod(&host).unwrap();
                    let mut output = stream.alloc_zeros::<bf16>(n * len).unwrap();
                    rank.all_gather(&input.as_view(), &mut output.as_view_mut())
                        .unwrap();
                    let mut short = stream.alloc_zeros::<bf16>(n * len - 1).unwrap();
                    assert!(
                        rank.all_gather(&input.as_view(), &mut short.as_view_mut())
                            .is_err(),
                        "an output one element short is refused"
                    );
                    stream.clone_dtoh(&output).unwrap()
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let want: Vec<bf16> = (0..n)
        .flat_map(|r| (0..len).map(move |i| value(r, i)))
        .collect();
    for (r, g) in got.iter().enumerate() {
        assert_eq!(g, &want, "rank {r} of {n}");
    }
    println!("nccl all_gather over {n} GPU(s): exact");
}

/// The engine's TP ranks record their decode steps, NCCL calls included, as CUDA graphs (on
/// NCCL, without pipeline stages): an all-reduce and an all-gather captured once, then
/// replayed on new inputs written into the same buffers, give each replay's sum and gather.
/// One thread per GPU, as the engine's ranks; runs on one GPU too (a group of one).
#[test]
fn nccl_calls_replay_in_a_cuda_graph() {
    use kernels::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    use kernels::nccl::{NcclId, NcclRank};
    let Some(n) = gpus_or_skip() else {
        return;
    };
    let bytes = NcclId::new().expect("NCCL id").to_bytes();
    let len = 4096usize;
    // Replay k's input on rank r: small integers, exact in bf16 and in their sums.
    let value = |k: usize, r: usize, i: usize| bf16::from_f32(((k * 7 + r * 3 + i) % 17) as f32);
    std::thread::scope(|s| {
        for r in 0..n {
            s.spawn(move || {
                let ctx = CudaContext::new(r).expect("GPU context");
                // SAFETY: everything below runs on the one stream made next, in program order,
                // so no buffer needs cudarc's cross-stream events; as in `kernels::Gpu::open`,
                // they are off because their records and waits would break the capture.
                unsafe { ctx.disable_event_tracking() };
                let stream = ctx.new_stream().unwrap(); // a graph cannot capture the legacy stream
                let id = NcclId::from_bytes(&bytes).unwrap();
                let rank = NcclRank::new(stream.clone(), r, n, id).expect("NCCL rank");
                let mut sum = stream.alloc_zeros::<bf16>(len).unwrap();
                let input = stream.alloc_zeros::<bf16>(len).unwrap();
                let mut gathered = stream.alloc_zeros::<bf16>(n * len).unwrap();
                // One eager call of each first, as in the engine, whose first step of a batch
                // size runs eagerly and the second is recorded.
                rank.all_reduce_sum(&mut sum.as_view_mut()).unwrap();
                rank.all_gather(&input.as_view(), &mut gathered.as_view_mut())
                    .unwrap();
                stream.synchronize().unwrap();
                stream
                    .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                    .unwrap();
                rank.all_reduce_sum(&mut sum.as_view_mut()).unwrap();
                rank.all_gather(&input.as_view(), &mut gathered.as_view_mut())
                    .unwrap();
                let graph = stream
                    .end_capture(CUgraphInstantiate_flags(0))
                    .unwrap()
                    .expect("the capture recorded the calls");
                let mut input = input;
                for k in 0..3 {
                    let mine: Vec<bf16> = (0..len).map(|i| value(k, r, i)).collect();
                    stream.memcpy_htod(&mine, &mut sum).unwrap();
                    stream.memcpy_htod(&mine, &mut input).unwrap();
                    graph.launch().unwrap();
                    let got_sum = stream.clone_dtoh(&sum).unwrap();
                    let got_gather = stream.clone_dtoh(&gathered).unwrap();
                    for (i, got) in got_sum.iter().enumerate() {
                        let want: f32 = (0..n).map(|q| value(k, q, i).to_f32()).sum();
                        assert_eq!(got.to_f32(), want, "replay {k}, rank {r}, sum {i}");
                    }
                    for q in 0..n {
                        for i in 0..len {
                            assert_eq!(
                                got_gather[q * len + i],
                                value(k, q, i),
                                "replay {k}, rank {r}, gathered from {q}, element {i}"
                            );
                        }
                    }
                }
            });
        }
    });
    println!("nccl all-reduce and all-gather replayed from a CUDA graph over {n} GPU(s): exact");
}
