//! `kernel<<<grid, block>>>(args)`: running a kernel's threads, and their barriers.
//!
//! A kernel is an `async fn`; [`launch`] calls it once per thread to get that thread's future,
//! then runs one block at a time, like an SM running one resident block:
//!
//! ```text
//! for each block of the grid (blockIdx.x fastest):
//!     loop:
//!         sweep: run every runnable thread, in order 0, 1, 2, ..., until it returns or
//!                reaches an `.await` (a barrier or a shuffle)
//!         every lane of a warp at the same shuffle?    exchange their values, run them again
//!         every thread at the same sync_threads()?     open the barrier (a new epoch)
//!         all returned?                                 next block
//!         anything else                                 an error: a deadlock on the GPU
//! ```
//!
//! One thread runs at a time, so a run is deterministic and needs no locks. What makes it a
//! fair model of a GPU is what it refuses: a thread that reads what another thread wrote in
//! shared memory without a barrier between them is reported (`shared.rs`), and so are
//! barriers and shuffles that not every thread reaches. Between barriers the threads of a real
//! block interleave in any order; a kernel that is correct here under those checks is correct
//! for every order.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::dim::{Dim3, LaunchConfig, WARP_SIZE};
use super::state::{set_thread, with_launch, Launch, LaunchGuard, Wait, WarpExchange};
use super::traffic::LaunchStats;

/// Runs `body` (the kernel, with its arguments bound) on `config.grid` blocks of
/// `config.block` threads, and returns what it did to global memory.
///
/// ```
/// use stage4::gpu::{launch, thread_idx, block_idx, block_dim, Global, LaunchConfig};
///
/// // out[i] = 2 * x[i], one thread per element.
/// let x = Global::from_slice("x", &[1.0f32, 2.0, 3.0, 4.0]);
/// let out = Global::filled("out", 4, f32::NAN);
/// let stats = launch("double", LaunchConfig::new(2, 2), || async {
///     let i = block_idx().x * block_dim().x + thread_idx().x;
///     out.store(i, 2.0 * x.load(i));
/// });
/// assert_eq!(out.to_vec(), [2.0, 4.0, 6.0, 8.0]);
/// assert_eq!(stats.buffer("x").loads.requested_bytes, 16);
/// ```
///
/// Errors in the kernel (an index out of bounds, a shared-memory race, a barrier that not
/// every thread reaches) panic with a message naming the block and thread.
pub fn launch<F, Fut>(kernel: &str, config: LaunchConfig, body: F) -> LaunchStats
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    config.validate(kernel);
    let guard = LaunchGuard::install(Launch::new(kernel, config));
    let threads = config.block.count();
    for b in 0..config.grid.count() {
        with_launch(|l| begin_block(l, config.grid.unflatten(b), threads));
        run_block(&body, threads);
        with_launch(end_block);
    }
    guard.finish()
}

fn begin_block(l: &mut Launch, block_idx: Dim3, threads: usize) {
    l.block_idx = block_idx;
    l.epoch = 0;
    l.waits = vec![Wait::Running; threads];
    l.warps = vec![WarpExchange::default(); threads.div_ceil(WARP_SIZE)];
    l.shared.clear();
    l.shared_bytes = 0;
}

fn end_block(l: &mut Launch) {
    l.recorder.fold_into(&mut l.stats);
    let s = &mut l.stats;
    s.shared_bytes_per_block = s.shared_bytes_per_block.max(l.shared_bytes);
    s.barriers_per_block = s.barriers_per_block.max(l.epoch);
}

fn run_block<F, Fut>(body: &F, threads: usize)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut futures: Vec<Pin<Box<Fut>>> = (0..threads)
        .map(|t| {
            set_thread(Some(t));
            let f = Box::pin(body());
            set_thread(None);
            f
        })
        .collect();
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        for (t, future) in futures.iter_mut().enumerate() {
            if with_launch(|l| l.waits[t]) != Wait::Running {
                continue;
            }
            set_thread(Some(t));
            let poll = future.as_mut().poll(&mut cx);
            set_thread(None);
            with_launch(|l| match poll {
                Poll::Ready(()) => l.waits[t] = Wait::Done,
                Poll::Pending if l.waits[t] == Wait::Running => panic!(
                    "{}: the kernel awaited something other than `sync_threads()` or a \
                     shuffle, which nothing here would ever wake",
                    l.whereabouts(t)
                ),
                Poll::Pending => {}
            });
        }
        if !with_launch(release) {
            return;
        }
    }
}

/// After a sweep (no thread runnable): lets waiting threads go on. Returns false when every
/// thread has returned; panics where the GPU would hang or misbehave.
fn release(l: &mut Launch) -> bool {
    if l.waits.iter().all(|w| *w == Wait::Done) {
        return false;
    }
    let threads = l.waits.len();
    let mut released = false;
    for warp in 0..l.warps.len() {
        let lanes = warp * WARP_SIZE..(warp * WARP_SIZE + WARP_SIZE).min(threads);
        let Some(first) = lanes.clone().find(|&t| matches!(l.waits[t], Wait::Warp(_))) else {
            continue;
        };
        let at = l.waits[first];
        assert!(
            lanes.len() == WARP_SIZE,
            "{}: {}, in warp {warp}, which has {} lanes: shuffles need a full warp of \
             {WARP_SIZE} (make the block size a multiple of {WARP_SIZE})",
            l.whereabouts(first),
            describe(at),
            lanes.len()
        );
        if let Some(other) = lanes.clone().find(|&t| l.waits[t] != at) {
            panic!(
                "{}: {}, but lane {} of the same warp {}: every lane of a warp must take \
                 part in the same shuffle",
                l.whereabouts(first),
                describe(at),
                other % WARP_SIZE,
                describe(l.waits[other])
            );
        }
        let exchange = &mut l.warps[warp];
        for lane in 0..WARP_SIZE {
            let (_, src) = exchange.posted[lane].expect("every lane posted");
            exchange.results[lane] = Some(exchange.posted[src].expect("every lane posted").0);
        }
        exchange.posted = [None; WARP_SIZE];
        lanes.for_each(|t| l.waits[t] = Wait::Running);
        released = true;
    }
    if released {
        return true;
    }
    // No shuffle pending: every thread that has not returned waits at a barrier.
    let first = (0..threads)
        .find(|&t| matches!(l.waits[t], Wait::Barrier(_)))
        .expect("not all returned and no shuffle pending: someone is at a barrier");
    let at = l.waits[first];
    if let Some(other) = (0..threads).find(|&t| l.waits[t] != at) {
        panic!(
            "{}: {}, but thread {} {}: every thread of the block must reach the same \
             `sync_threads()` (on a GPU this hangs, or is undefined)",
            l.whereabouts(first),
            describe(at),
            l.config.block.unflatten(other),
            describe(l.waits[other])
        );
    }
    l.epoch += 1;
    l.waits.iter_mut().for_each(|w| *w = Wait::Running);
    true
}

fn describe(w: Wait) -> String {
    match w {
        Wait::Barrier(site) => format!("waits at the `sync_threads()` at {site}"),
        Wait::Warp(site) => format!("waits at the shuffle at {site}"),
        Wait::Done => "has returned from the kernel".to_string(),
        Wait::Running => "is running".to_string(),
    }
}
