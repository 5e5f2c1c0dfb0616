//! The execution model's own tests: what it counts, what it orders, what it refuses.
//! (Given code, not an exercise: these pass from the start.)

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;

/// Runs `f`, which must panic, and returns its message.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("this should have panicked");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// `out[i] = x[i * stride + offset]` for `n` elements, one thread per element.
fn gather(n: usize, stride: usize, offset: usize, threads: usize) -> LaunchStats {
    let x: Vec<f32> = (0..n * stride + offset).map(|i| i as f32).collect();
    let x = Global::from_slice("x", &x);
    let out = Global::filled("out", n, f32::NAN);
    let stats = launch(
        "gather",
        LaunchConfig::new(n.div_ceil(threads), threads),
        || async {
            let i = block_idx().x * block_dim().x + thread_idx().x;
            if i < n {
                out.store(i, x.load(i * stride + offset));
            }
        },
    );
    let want: Vec<f32> = (0..n).map(|i| (i * stride + offset) as f32).collect();
    assert_eq!(out.to_vec(), want);
    stats
}

#[test]
fn a_coalesced_copy_moves_only_what_it_asks_for() {
    let s = gather(1024, 1, 0, 128);
    let (loads, stores) = (s.buffer("x").loads, s.buffer("out").stores);
    // 32 warps' instructions of 32 consecutive f32 = 128 bytes = 4 sectors each.
    assert_eq!(loads.requests, 32);
    assert_eq!(loads.requested_bytes, 4096);
    assert_eq!(loads.sectors, 128);
    assert_eq!(loads.efficiency(), 1.0);
    assert_eq!(loads.sectors_per_request(), 4.0);
    assert_eq!(stores, loads);
}

#[test]
fn a_strided_copy_wastes_the_rest_of_each_sector() {
    // Stride 2: each 32-byte sector holds 4 wanted floats of 8: 50%.
    let s = gather(1024, 2, 0, 128).buffer("x").loads;
    assert_eq!((s.sectors, s.efficiency()), (256, 0.5));
    // Stride 8 (and more): one float per sector: 12.5%, 32 sectors per request.
    let s = gather(1024, 8, 0, 128).buffer("x").loads;
    assert_eq!((s.sectors, s.efficiency()), (1024, 0.125));
    assert_eq!(s.sectors_per_request(), 32.0);
    // The stores stay coalesced.
    assert_eq!(
        gather(1024, 8, 0, 128).buffer("out").stores.efficiency(),
        1.0
    );
}

#[test]
fn a_misaligned_copy_touches_one_sector_more_per_warp() {
    // 128 bytes starting 4 bytes into a sector span 5 sectors: 80%.
    let s = gather(1024, 1, 1, 128).buffer("x").loads;
    assert_eq!((s.requests, s.sectors), (32, 160));
    assert_eq!(s.efficiency(), 0.8);
}

#[test]
fn a_partial_last_warp_is_one_request_with_fewer_lanes() {
    // 100 elements: 3 full warps and one of 4 lanes (16 bytes in one sector).
    let s = gather(100, 1, 0, 128).buffer("x").loads;
    assert_eq!((s.requests, s.requested_bytes, s.sectors), (4, 400, 13));
}

#[test]
fn a_value_every_lane_reads_is_requested_once() {
    let x = Global::from_slice("x", &[7.0f32; 8]);
    let out = Global::filled("out", 64, 0.0f32);
    let s = launch("broadcast", LaunchConfig::new(1, 64), || async {
        out.store(thread_idx().x, x.load(0));
    });
    let loads = s.buffer("x").loads;
    assert_eq!(
        (loads.requests, loads.requested_bytes, loads.sectors),
        (2, 8, 2)
    );
    assert_eq!(loads.efficiency(), 0.125);
}

#[test]
fn the_k_th_pass_of_a_loop_is_one_instruction_per_warp() {
    // One block of 64 threads strides over 200 elements: passes of 64, 64, 64, 8. Each pass
    // is one request per warp that has lanes in it: 2 + 2 + 2 + 1.
    let x = Global::from_slice("x", &[1.0f32; 200]);
    let sum = Global::filled("sum", 64, 0.0f32);
    let s = launch("strided", LaunchConfig::new(1, 64), || async {
        let mut acc = 0.0;
        let mut i = thread_idx().x;
        while i < 200 {
            acc += x.load(i);
            i += block_dim().x;
        }
        sum.store(thread_idx().x, acc);
    });
    assert_eq!(s.buffer("x").loads.requests, 7);
    assert_eq!(s.buffer("x").loads.efficiency(), 1.0);
    assert_eq!(sum.to_vec().iter().sum::<f32>(), 200.0);
}

#[test]
fn indices_are_numbered_as_in_cuda() {
    let cfg = LaunchConfig::new((3, 2), (4, 2));
    let out = Global::filled("out", 48, usize::MAX);
    launch("ids", cfg, || async {
        let (b, t, bd, gd) = (block_idx(), thread_idx(), block_dim(), grid_dim());
        let block = b.x + b.y * gd.x;
        out.store(
            block * bd.count() + t.x + t.y * bd.x,
            block * 100 + t.y * 10 + t.x,
        );
    });
    let out = out.to_vec();
    assert_eq!(out[0], 0);
    assert_eq!(out[5], 11); // thread (1, 1) of block (0, 0)
    assert_eq!(out[47], 5 * 100 + 13); // thread (3, 1) of block (2, 1)
}

#[test]
fn a_barrier_orders_shared_memory_between_threads() {
    // Each thread writes its slot, then reads its neighbour's: right only after the barrier.
    let out = Global::filled("out", 96, 0u32);
    let s = launch("rotate", LaunchConfig::new(1, 96), || async {
        let t = thread_idx().x;
        let s = shared::<u32>(96);
        s.set(t, t as u32 * 10);
        sync_threads().await;
        out.store(t, s.get((t + 1) % 96));
    });
    let want: Vec<u32> = (0..96).map(|t| ((t + 1) % 96) * 10).collect();
    assert_eq!(out.to_vec(), want);
    assert_eq!((s.shared_bytes_per_block, s.barriers_per_block), (384, 1));
}

#[test]
fn a_missing_barrier_is_a_race() {
    // After a barrier, thread 0 writes slot 0 and reads slot 1; thread 1 then writes slot 1,
    // which thread 0 has read since that barrier: thread 0 may have read the old value or
    // the new one, depending on timing.
    let msg = panic_message(|| {
        launch("no barrier", LaunchConfig::new(1, 64), || async {
            let t = thread_idx().x;
            let s = shared::<f32>(64);
            s.set(t, 1.0);
            sync_threads().await;
            s.set(t, 2.0);
            let _ = s.get((t + 1) % 64);
        });
    });
    assert!(msg.contains("shared-memory race"), "{msg}");
    assert!(
        msg.contains("thread (1, 0, 0): shared-memory race: this thread writes element 1"),
        "{msg}"
    );
    assert!(msg.contains("which thread (0, 0, 0) has read"), "{msg}");
    // A write, then another thread's read, with no barrier between.
    let msg = panic_message(|| {
        launch("no barrier", LaunchConfig::new(1, 64), || async {
            let t = thread_idx().x;
            let s = shared::<f32>(1);
            if t == 0 {
                s.set(0, 1.0);
            }
            sync_threads().await;
            if t == 0 {
                s.set(0, 2.0);
            }
            let _ = s.get(0);
        });
    });
    assert!(msg.contains("this thread reads element 0"), "{msg}");
    assert!(msg.contains("which thread (0, 0, 0) has written"), "{msg}");
}

#[test]
fn reading_shared_memory_nobody_wrote_is_an_error() {
    let msg = panic_message(|| {
        launch("uninitialized", LaunchConfig::new(1, 32), || async {
            let s = shared::<f32>(32);
            let _ = s.get(thread_idx().x);
        });
    });
    assert!(msg.contains("which no thread has written"), "{msg}");
}

#[test]
fn each_block_gets_its_own_shared_memory() {
    let out = Global::filled("out", 4, 0u32);
    launch("per block", LaunchConfig::new(4, 32), || async {
        let s = shared::<u32>(1);
        if thread_idx().x == 0 {
            s.set(0, block_idx().x as u32);
        }
        sync_threads().await;
        if thread_idx().x == 31 {
            out.store(block_idx().x, s.get(0));
        }
    });
    assert_eq!(out.to_vec(), [0, 1, 2, 3]);
}

#[test]
fn out_of_bounds_is_an_error_naming_the_thread() {
    let x = Global::from_slice("x", &[0.0f32; 40]);
    let msg = panic_message(|| {
        launch("oob", LaunchConfig::new(2, 32), || async {
            let _ = x.load(block_idx().x * block_dim().x + thread_idx().x);
        });
    });
    assert!(
        msg.contains("block (1, 0, 0), thread (8, 0, 0)") && msg.contains("x[40]"),
        "{msg}"
    );
    assert!(msg.contains("out of bounds: `x` has 40 elements"), "{msg}");
    let msg = panic_message(|| {
        launch("oob", LaunchConfig::new(1, 32), || async {
            shared::<f32>(8).set(thread_idx().x, 0.0);
        });
    });
    assert!(
        msg.contains("thread (8, 0, 0)") && msg.contains("out of bounds"),
        "{msg}"
    );
}

#[test]
fn a_barrier_that_some_threads_skip_is_an_error() {
    let msg = panic_message(|| {
        launch("early return", LaunchConfig::new(1, 64), || async {
            if thread_idx().x >= 40 {
                return;
            }
            sync_threads().await;
        });
    });
    assert!(msg.contains("has returned from the kernel"), "{msg}");
}

#[test]
fn warp_sum_and_shuffles_exchange_registers() {
    let out = Global::filled("out", 64 * 4, 0.0f32);
    launch("shuffles", LaunchConfig::new(1, 64), || async {
        let t = thread_idx().x;
        let lane = (t % 32) as f32;
        out.store(t * 4, warp_sum(lane).await);
        out.store(t * 4 + 1, warp_max(-lane).await);
        out.store(t * 4 + 2, shfl(lane, 5).await);
        out.store(t * 4 + 3, shfl_down(lane, 4).await);
    });
    let out = out.to_vec();
    for t in 0..64 {
        let lane = (t % 32) as f32;
        let down = if t % 32 + 4 < 32 { lane + 4.0 } else { lane };
        assert_eq!(out[t * 4..][..4], [496.0, 0.0, 5.0, down], "thread {t}");
    }
}

#[test]
fn a_shuffle_needs_every_lane_of_a_full_warp() {
    let msg = panic_message(|| {
        launch("divergent", LaunchConfig::new(1, 32), || async {
            if thread_idx().x < 16 {
                let _ = warp_sum(1.0).await;
            }
        });
    });
    assert!(msg.contains("every lane of a warp"), "{msg}");
    let msg = panic_message(|| {
        launch("partial", LaunchConfig::new(1, 48), || async {
            let _ = warp_sum(1.0).await;
        });
    });
    assert!(msg.contains("shuffles need a full warp"), "{msg}");
}

#[test]
fn kernels_cannot_run_outside_a_launch_or_launch_kernels() {
    let msg = panic_message(|| {
        thread_idx();
    });
    assert!(msg.contains("outside a kernel"), "{msg}");
    let msg = panic_message(|| {
        launch("outer", LaunchConfig::new(1, 1), || async {
            launch("inner", LaunchConfig::new(1, 1), || async {});
        });
    });
    assert!(msg.contains("from inside kernel `outer`"), "{msg}");
    // A failed launch leaves nothing behind: the next one runs.
    let x = Global::filled("x", 1, 0u32);
    launch("after", LaunchConfig::new(1, 1), || async { x.store(0, 1) });
    assert_eq!(x.to_vec(), [1]);
}

#[test]
fn impossible_launch_shapes_are_refused() {
    let msg = panic_message(|| {
        launch("big", LaunchConfig::new(1, 2048), || async {});
    });
    assert!(msg.contains("more than the 1024"), "{msg}");
    let msg = panic_message(|| {
        launch("empty", LaunchConfig::new(0, 32), || async {});
    });
    assert!(msg.contains("non-empty"), "{msg}");
}
