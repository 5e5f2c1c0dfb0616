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
