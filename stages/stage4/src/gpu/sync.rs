//! Waiting for other threads: the block barrier and the warp shuffles.
//!
//! Each is a future, and a kernel waits with `.await`: `__syncthreads();` is
//! `sync_threads().await;`, `v += __shfl_xor_sync(0xffffffff, v, 16);` is
//! `v += shfl_xor(v, 16).await;`. The `.await` is where this thread stops until the others
//! arrive; the executor (`launch.rs`) then lets them all go on. Forgetting the `.await` makes
//! the call do nothing, and the compiler warns ("futures do nothing unless you `.await`").
//!
//! Shuffles exchange registers between the 32 lanes of a warp, without shared memory and
//! without a block barrier. Here every lane of the warp must call the same shuffle (CUDA's
//! mask `0xffffffff`), and a block whose size is not a multiple of 32 cannot shuffle in its
//! last, partial warp.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::dim::WARP_SIZE;
use super::state::{with_thread, Site, Wait};

/// `__syncthreads()`: waits until every thread of the block has arrived here. Stores to
/// shared (and global) memory made before it are seen by every thread after it.
#[track_caller]
pub fn sync_threads() -> SyncThreads {
    SyncThreads {
        site: std::panic::Location::caller(),
        arrived: false,
    }
}

/// The future of [`sync_threads`].
#[must_use = "sync_threads() does nothing unless you `.await` it"]
pub struct SyncThreads {
    site: Site,
    arrived: bool,
}

impl Future for SyncThreads {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.arrived {
            // The executor polls a waiting thread again only once it has released the barrier.
            return Poll::Ready(());
        }
        with_thread("sync_threads()", |l, t| {
            l.waits[t] = Wait::Barrier(this.site)
        });
        this.arrived = true;
        Poll::Pending
    }
}

/// A value a shuffle can move: it travels between lanes as 64 bits.
pub trait Lane: Copy + Unpin + 'static {
    fn to_bits(self) -> u64;
    fn from_bits(bits: u64) -> Self;
}

impl Lane for f32 {
    fn to_bits(self) -> u64 {
        f32::to_bits(self) as u64
    }
    fn from_bits(bits: u64) -> Self {
        f32::from_bits(bits as u32)
    }
}

impl Lane for u32 {
    fn to_bits(self) -> u64 {
        self as u64
    }
    fn from_bits(bits: u64) -> Self {
        bits as u32
    }
}

impl Lane for usize {
    fn to_bits(self) -> u64 {
        self as u64
    }
    fn from_bits(bits: u64) -> Self {
        bits as usize
    }
}

/// `__shfl_xor_sync(0xffffffff, value, lane_mask)`: the value of lane `lane ^ lane_mask`.
/// With masks 16, 8, 4, 2, 1 every lane ends up combining all 32 values ([`warp_sum`]).
#[track_caller]
pub fn shfl_xor<T: Lane>(value: T, lane_mask: usize) -> Shuffle<T> {
    shuffle(value, Source::Xor(lane_mask))
}

/// `__shfl_sync(0xffffffff, value, src_lane)`: the value of lane `src_lane` (a broadcast).
#[track_caller]
pub fn shfl<T: Lane>(value: T, src_lane: usize) -> Shuffle<T> {
    shuffle(value, Source::Lane(src_lane))
}

/// `__shfl_down_sync(0xffffffff, value, delta)`: the value of lane `lane + delta`, or this
/// lane's own value where that is past lane 31.
#[track_caller]
pub fn shfl_down<T: Lane>(value: T, delta: usize) -> Shuffle<T> {
    shuffle(value, Source::Down(delta))
}

#[track_caller]
fn shuffle<T: Lane>(value: T, source: Source) -> Shuffle<T> {
    Shuffle {
        value,
        source,
        site: std::panic::Location::caller(),
        posted: false,
    }
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Xor(usize),
    Lane(usize),
    Down(usize),
}

/// The future of a shuffle: resolves to the value read from the source lane.
#[must_use = "a shuffle does nothing unless you `.await` it"]
pub struct Shuffle<T> {
    value: T,
    source: Source,
    site: Site,
    posted: bool,
}

impl<T: Lane> Future for Shuffle<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        with_thread("a shuffle", |l, t| {
            let (warp, lane) = (t / WARP_SIZE, t % WARP_SIZE);
            if this.posted {
                let bits = l.warps[warp].results[lane]
                    .take()
                    .expect("a lane is polled again only once its warp has exchanged");
                return Poll::Ready(T::from_bits(bits));
            }
            let src = match this.source {
                Source::Xor(mask) if mask < WARP_SIZE => lane ^ mask,
                Source::Lane(src) if src < WARP_SIZE => src,
                Source::Down(delta) => {
                    if lane + delta < WARP_SIZE {
                        lane + delta
                    } else {
                        lane
                    }
                }
                _ => panic!(
                    "{}: shuffle at {} names a lane past 31 ({:?})",
                    l.whereabouts(t),
                    this.site,
                    this.source
                ),
            };
            l.warps[warp].posted[lane] = Some((this.value.to_bits(), src));
            l.waits[t] = Wait::Warp(this.site);
            this.posted = true;
            Poll::Pending
        })
    }
}

/// The sum of `value` over the 32 lanes of the warp, in every lane: five butterfly steps,
/// `v += shfl_xor(v, 16)`, then 8, 4, 2, 1. After step `k` each lane holds the sum of a group of
/// `2^k` lanes; the last step joins the two halves of the warp.
pub async fn warp_sum(value: f32) -> f32 {
    let mut v = value;
    let mut mask = WARP_SIZE / 2;
    while mask > 0 {
        v += shfl_xor(v, mask).await;
        mask /= 2;
    }
    v
}

/// The maximum of `value` over the 32 lanes of the warp, in every lane (as [`warp_sum`]).
pub async fn warp_max(value: f32) -> f32 {
    let mut v = value;
    let mut mask = WARP_SIZE / 2;
    while mask > 0 {
        v = v.max(shfl_xor(v, mask).await);
        mask /= 2;
    }
    v
}
