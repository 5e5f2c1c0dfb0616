//! A peer that never launches its all-reduce must not leave this GPU spinning for ever: past
//! its spin limit the kernel traps, and the rank's stream reports an error (which the engine's
//! host, waiting with its own shorter timeout, has already turned into a collective timeout).
//! A trap spoils the GPU's context for the rest of the process, so this test has a test binary
//! of its own.
mod common;

use std::time::{Duration, Instant};

use common::{gpu_or_skip, poisoned};
use half::bf16;
use kernels::custom_all_reduce::{PeerBuffers, PeerPtrs};

#[test]
fn a_missing_peer_ends_the_wait_with_an_error() {
    let Some(gpu) = gpu_or_skip() else { return };
    let peer_stream = gpu.ctx.new_stream().unwrap();
    let limit = Duration::from_millis(200);
    let mut mine = PeerBuffers::new(&gpu.stream, 4096, 2, limit).unwrap();
    let theirs = PeerBuffers::new(&peer_stream, 4096, 2, limit).unwrap();
    gpu.stream.synchronize().unwrap();
    peer_stream.synchronize().unwrap();
    let peers = PeerPtrs::new(&[mine.address(&gpu.stream), theirs.address(&peer_stream)]).unwrap();
    let x = gpu.stream.clone_htod(&vec![bf16::ONE; 4096]).unwrap();
    let mut out = poisoned(&gpu.stream, 4096);
    // Rank 0 of 2 launches; rank 1 never does.
    gpu.kernels
        .custom_all_reduce
        .all_reduce(
            &gpu.stream,
            &mut out.as_view_mut(),
            &x.as_view(),
            &mut mine,
            &peers,
            0,
            2,
        )
        .unwrap();
    let done = gpu.stream.record_event(None).unwrap();
    let start = Instant::now();
    let outcome = loop {
        match done.try_is_complete() {
            Ok(true) => break Ok(()),
            Ok(false) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(false) => panic!("still spinning 20 s after a 200 ms spin limit"),
            Err(e) => break Err(e),
        }
    };
    let waited = start.elapsed();
    assert!(
        outcome.is_err(),
        "the all-reduce finished without its peer: it read a half-written sum"
    );
    println!(
        "a missing peer: the stream failed after {waited:?} (spin limit {limit:?}): {}",
        outcome.unwrap_err()
    );
}
