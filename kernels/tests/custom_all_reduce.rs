//! The one-shot all-reduce against the sum computed on the host, bit for bit (the kernel adds
//! in rank order in f32 and rounds once, as the host does here). On one GPU the ranks share it,
//! each on a stream of its own (their launches run at once and wait for each other on the
//! GPU); with two GPUs or more, one rank per GPU over peer access as well. Outputs start as NaN,
//! so an unwritten element fails; calls of different lengths follow each other, so an inbox
//! word left unreset or a counter left wrong by one call breaks the next.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{gpu_or_skip, poisoned, Rng};
use half::bf16;
use kernels::cudarc::driver::{CudaContext, CudaStream};
use kernels::custom_all_reduce::{enable_peer_access, PeerBuffers, PeerPtrs};
use kernels::Kernels;

/// Lengths in call order: one vector, a decode step's [1, 576] and [32, 4096], odd multiples
/// of 8, and the largest the buffers hold (more blocks than the grid's cap).
const LENGTHS: [usize; 7] = [8, 576, 131_072, 4104, 8, 1 << 20, 24];
const CAPACITY: usize = 1 << 20;

/// Waits for every stream, or panics after a few seconds (a deadlock: a rank waiting for
/// values never sent).
fn finish(streams: &[Arc<CudaStream>]) {
    let start = Instant::now();
    for s in streams {
        let done = s.record_event(None).unwrap();
        while !done.is_complete() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "custom all-reduce did not finish in 10 s: a rank waited for values never sent"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn ranks_sharing_one_gpu_sum_exactly() {
    let Some(gpu) = gpu_or_skip() else { return };
    for ranks in [2, 3] {
        let mut streams = vec![gpu.stream.clone()];
        streams.extend((1..ranks).map(|_| gpu.ctx.new_stream().unwrap()));
        check(&vec![&gpu.kernels; ranks], &streams, "one GPU");
    }
}

#[test]
fn one_rank_per_gpu_over_peer_access() {
    let Some(gpu) = gpu_or_skip() else { return };
    let n = CudaContext::device_count().unwrap() as usize;
    if n < 2 {
        println!("skipped: peer access needs two GPUs; this machine has {n}");
        return;
    }
    let ctxs: Vec<_> = (0..n).map(|i| CudaContext::new(i).unwrap()).collect();
    for a in &ctxs {
        for b in &ctxs {
            if let Err(e) = enable_peer_access(a, b) {
                println!("skipped: {e}");
                return;
            }
        }
    }
    let streams: Vec<_> = ctxs.iter().map(|c| c.new_stream().unwrap()).collect();
    // A loaded function belongs to its context: each GPU gets its own.
    let per_gpu: Vec<_> = ctxs.iter().map(|c| Kernels::load(c).unwrap()).collect();
    drop(gpu);
    check(
        &per_gpu.iter().collect::<Vec<_>>(),
        &streams,
        "one rank per GPU",
    );
}

/// Runs every length of LENGTHS with rank r on `streams[r]` (its kernels `kernels[r]`, from
/// its GPU's module) and checks every rank's output.
fn check(kernels: &[&Kernels], streams: &[Arc<CudaStream>], what: &str) {
    let ranks = streams.len();
    let mut rng = Rng::fresh("custom_all_reduce");
    let mut buffers: Vec<PeerBuffers> = streams
        .iter()
        .map(|s| PeerBuffers::new(s, CAPACITY, ranks, Duration::from_secs(20)).unwrap())
        .collect();
    let addresses: Vec<_> = buffers
        .iter()
        .zip(streams)
        .map(|(b, s)| b.address(s))
        .collect();
    let peers = PeerPtrs::new(&addresses).unwrap();
    for n in LENGTHS {
        let mut inputs: Vec<Vec<bf16>> = (0..ranks).map(|_| rng.bf16s(n, 1.0)).collect();
        // Two all-ones bf16 words (NaNs whose bits are the kernel's EMPTY marker) in the
        // largest call: the sum must still arrive, as a NaN there.
        if n == 1 << 20 {
            for i in [0, 1, n / 2, n / 2 + 1] {
                inputs[ranks - 1][i] = bf16::from_bits(0xffff);
            }
        }
        let xs: Vec<_> = inputs
            .iter()
            .zip(streams)
            .map(|(h, s)| s.clone_htod(h).unwrap())
            .collect();
        let mut outs: Vec<_> = streams.iter().map(|s| poisoned(s, n)).collect();
        for r in 0..ranks {
            streams[r].context().bind_to_thread().unwrap();
            kernels[r]
                .custom_all_reduce
                .all_reduce(
                    &streams[r],
                    &mut outs[r].as_view_mut(),
                    &xs[r].as_view(),
                    &mut buffers[r],
                    &peers,
                    r,
                    ranks,
                )
                .unwrap();
        }
        finish(streams);
        let want: Vec<u16> = (0..n)
            .map(|i| bf16::from_f32(inputs.iter().fold(0.0f32, |a, h| a + h[i].to_f32())).to_bits())
            .collect();
        for (r, (out, s)) in outs.iter().zip(streams).enumerate() {
            let got: Vec<u16> = s
                .clone_dtoh(out)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let nan = |b: u16| bf16::from_bits(b).is_nan();
            let bad = (got.iter().zip(&want)).position(|(&g, &w)| g != w && !(nan(g) && nan(w)));
            assert!(
                bad.is_none(),
                "{what}: rank {r} of {ranks}, {n} values: element {bad:?} differs"
            );
        }
        println!("custom all-reduce, {what}, {ranks} ranks, {n} values: exact");
    }
}

/// A row-parallel projection that pushes its output into the peers' inboxes
/// (`SkinnyGemm::forward_push`), then the receiving half of the all-reduce
/// (`receive_in_place`): exactly the host's rank-order sum of each rank's plain projection
/// (`SkinnyGemm::forward` with the same tile and split), at several shapes, splits and row
/// tiles, with whole all-reduces of other lengths between them (the two kinds of call share
/// the inboxes' halves and the call counters).
#[test]
fn a_pushing_projection_then_the_receiving_half_sums_exactly() {
    use kernels::gemv::Epilogue;
    use kernels::skinny_gemm::{MainLoop, SkinnyGemmWorkspace};
    let Some(gpu) = gpu_or_skip() else { return };
    if !gpu.kernels.skinny_gemm.has_tma() {
        println!("skipped: the pushing projection is the TMA main loop's (sm_90a: an H100/H200)");
        return;
    }
    // (tokens, n, k, row tile, splits; None: the default); between each, a whole all-reduce.
    let calls: [(usize, usize, usize, usize, Option<usize>); 5] = [
        (32, 4096, 2048, 64, None),
        (8, 576, 576, 64, Some(1)),
        (13, 1000, 512, 128, Some(3)),
        (32, 4096, 5504, 64, Some(5)),
        (5, 2048, 1024, 128, None),
    ];
    for ranks in [2, 3] {
        let mut streams = vec![gpu.stream.clone()];
        streams.extend((1..ranks).map(|_| gpu.ctx.new_stream().unwrap()));
        let mut rng = Rng::fresh("skinny_gemm_push");
        let mut buffers: Vec<PeerBuffers> = streams
            .iter()
            .map(|s| PeerBuffers::new(s, CAPACITY, ranks, Duration::from_secs(20)).unwrap())
            .collect();
        let addresses: Vec<_> = (buffers.iter().zip(&streams))
            .map(|(b, s)| b.address(s))
            .collect();
        let peers = PeerPtrs::new(&addresses).unwrap();
        let mut workspaces: Vec<_> = streams
            .iter()
            .map(|s| SkinnyGemmWorkspace::new(s, gpu.kernels.skinny_gemm.num_sms()).unwrap())
            .collect();
        for (m, n, k, rows, splits) in calls {
            let sg = (gpu
                .kernels
                .skinny_gemm
                .clone()
                .with_main_loop(MainLoop::Tma))
            .and_then(|s| s.with_rows(rows))
            .unwrap();
            let xs: Vec<_> = (0..ranks).map(|_| rng.bf16s(m * k, 1.0)).collect();
            let ws: Vec<_> = (0..ranks).map(|_| rng.bf16s(n * k, 0.05)).collect();
            let (mut plain, mut pushed) = (Vec::new(), Vec::new());
            for r in 0..ranks {
                let s = &streams[r];
                let (x, w) = (s.clone_htod(&xs[r]).unwrap(), s.clone_htod(&ws[r]).unwrap());
                let mut alone = poisoned(s, m * n);
                let ws_r = &mut workspaces[r];
                sg.forward(
                    s,
                    ws_r,
                    &mut alone.as_view_mut(),
                    &x.as_view(),
                    &w.as_view(),
                    m,
                    Epilogue::Plain,
                    splits,
                )
                .unwrap();
                plain.push(s.clone_dtoh(&alone).unwrap());
                let mut out = poisoned(s, m * n);
                let target = buffers[r].push_target(s, &peers, r, ranks).unwrap();
                sg.forward_push(
                    s,
                    ws_r,
                    &mut out.as_view_mut(),
                    &x.as_view(),
                    &w.as_view(),
                    m,
                    splits,
                    &target,
                )
                .unwrap();
                let k = &gpu.kernels.custom_all_reduce;
                k.receive_in_place(s, &mut out.as_view_mut(), &mut buffers[r], &peers, r, ranks)
                    .unwrap();
                pushed.push(out);
            }
            finish(&streams);
            let want: Vec<u16> = (0..m * n)
                .map(|i| {
                    bf16::from_f32(plain.iter().fold(0.0f32, |a, p| a + p[i].to_f32())).to_bits()
                })
                .collect();
            for (r, out) in pushed.iter().enumerate() {
                let got = streams[r].clone_dtoh(out).unwrap();
                let bad = (got.iter().zip(&want)).position(|(g, &w)| g.to_bits() != w);
                assert!(
                    bad.is_none(),
                    "rank {r} of {ranks}, [{m}, {n}] x k {k}, {rows} rows, splits {splits:?}: \
                     element {bad:?} differs"
                );
            }
            // A whole all-reduce between two pushing ones.
            let between: Vec<_> = (0..ranks).map(|_| rng.bf16s(4104, 1.0)).collect();
            let mut bufs: Vec<_> = (between.iter().zip(&streams))
                .map(|(h, s)| s.clone_htod(h).unwrap())
                .collect();
            for r in 0..ranks {
                let k = &gpu.kernels.custom_all_reduce;
                k.all_reduce_in_place(
                    &streams[r],
                    &mut bufs[r].as_view_mut(),
                    &mut buffers[r],
                    &peers,
                    r,
                    ranks,
                )
                .unwrap();
            }
            finish(&streams);
            let want: Vec<u16> = (0..4104)
                .map(|i| {
                    bf16::from_f32(between.iter().fold(0.0f32, |a, h| a + h[i].to_f32())).to_bits()
                })
                .collect();
            for (r, b) in bufs.iter().enumerate() {
                let got = streams[r].clone_dtoh(b).unwrap();
                assert!(
                    got.iter().zip(&want).all(|(g, &w)| g.to_bits() == w),
                    "the whole all-reduce after a pushing one, rank {r}"
                );
            }
            println!("pushing projection + receive, {ranks} ranks on one GPU, [{m}, {n}] x k {k}, {rows} rows, splits {splits:?}: exact");
        }
    }
}
