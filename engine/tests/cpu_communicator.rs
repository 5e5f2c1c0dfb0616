//! The CPU communicator against its contract: results against f64 references, bit-identical
//! all-reduce on every rank, the bytes each rank sends against the ring's formulas, and every
//! failure (a silent rank, a dead rank, mismatched calls) ending in a clear error in time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engine::distributed::{CommError, CommOp, Communicator, CpuCommunicator};
use proptest::prelude::*;

const LONG: Duration = Duration::from_secs(20);
const SHORT: Duration = Duration::from_millis(200);

/// Runs `f` on every rank of a fresh group, one thread each, and returns each rank's result
/// with its communicator (kept alive until every rank has finished, so no rank's failure shows
/// up as another's `PeerGone`).
fn run_group<T: Send>(
    n: usize,
    timeout: Duration,
    f: impl Fn(&mut CpuCommunicator) -> T + Sync,
) -> Vec<(T, CpuCommunicator)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = CpuCommunicator::group(n, timeout)
            .into_iter()
            .map(|mut comm| {
                let f = &f;
                s.spawn(move || (f(&mut comm), comm))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a rank panicked"))
            .collect()
    })
}

/// Like [`run_group`], but each rank drops its communicator as soon as it is done, as a real
/// worker does when it fails; returns each rank's result and how long it took.
fn run_group_dropping<T: Send>(
    n: usize,
    timeout: Duration,
    f: impl Fn(CpuCommunicator) -> T + Sync,
) -> Vec<(T, Duration)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = CpuCommunicator::group(n, timeout)
            .into_iter()
            .map(|comm| {
                let f = &f;
                s.spawn(move || {
                    let start = Instant::now();
                    (f(comm), start.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a rank panicked"))
            .collect()
    })
}

/// Deterministic inputs in [-1, 1): rank `rank`'s `len` values for a case seeded `seed`.
fn input(seed: u64, rank: usize, len: usize) -> Vec<f32> {
    let mut x = seed ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The ring's chunk sizes as the docs state them: chunk c is c·len/N .. (c+1)·len/N.
fn chunk_len(len: usize, n: usize, c: usize) -> usize {
    (c + 1) * len / n - c * len / n
}

fn check_all_reduce(n: usize, len: usize, seed: u64) {
    let results = run_group(n, LONG, |comm| {
        let mut buf = input(seed, comm.rank(), len);
        comm.all_reduce_sum(&mut buf).map(|()| buf)
    });
    let inputs: Vec<Vec<f32>> = (0..n).map(|r| input(seed, r, len)).collect();
    let first = results[0].0.as_ref().expect("all-reduce failed").clone();
    for (rank, (out, comm)) in results.iter().enumerate() {
        let out = out.as_ref().expect("all-reduce failed");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(out),
            bits(&first),
            "rank {rank} differs from rank 0 (n={n}, len={len})"
        );
        // The exact sum, and a bound on f32 rounding over n − 1 additions of values in [-1, 1).
        for (i, &got) in out.iter().enumerate() {
            let exact: f64 = inputs.iter().map(|x| x[i] as f64).sum();
            let bound = n as f64 * n as f64 * f32::EPSILON as f64;
            assert!(
                (got as f64 - exact).abs() <= bound,
                "n={n} len={len} i={i}: {got} vs {exact}"
            );
        }
        // Sent bytes: every chunk but `rank` in the reduce-scatter half, every chunk but
        // `rank + 1` in the all-gather half.
        let stats = comm.stats().op(CommOp::AllReduce);
        let sent = 2 * len - chunk_len(len, n, rank) - chunk_len(len, n, (rank + 1) % n);
        assert_eq!(
            stats.sent_bytes,
            4 * sent as u64,
            "n={n} len={len} rank={rank}"
        );
        assert_eq!(
            (stats.calls, stats.failures, stats.tensor_bytes),
            (1, 0, 4 * len as u64)
        );
        if len.is_multiple_of(n) {
            assert_eq!(stats.sent_bytes as usize, 2 * (n - 1) * 4 * len / n);
        } else {
            let ideal = 2.0 * (n - 1) as f64 / n as f64 * (4 * len) as f64;
            assert!(
                (stats.sent_bytes as f64 - ideal).abs() < 8.0,
                "within 2 elements"
            );
        }
    }
    let total: u64 = results
        .iter()
        .map(|(_, c)| c.stats().op(CommOp::AllReduce).sent_bytes)
        .sum();
    assert_eq!(
        total as usize,
        2 * (n - 1) * 4 * len,
        "the group sends 2(N−1)·size"
    );
}

#[test]
fn all_reduce_edge_lengths_for_every_world_size() {
    for n in 1usize..=8 {
        for len in [0, 1, n - 1, n, n + 1, 2 * n + 3, 64] {
            check_all_reduce(n, len, (n * 1000 + len) as u64);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn all_reduce_matches_f64_sum_and_ring_traffic(n in 1usize..=8, len in 0usize..300, seed: u64) {
        check_all_reduce(n, len, seed);
    }

    #[test]
    fn all_gather_and_reduce_scatter_are_exact(n in 1usize..=8, count in 0usize..40, seed: u64) {
        let results = run_group(n, LONG, |comm| {
            let rank = comm.rank();
            let mut gathered = vec![f32::NAN; n * count];
            comm.all_gather(&input(seed, rank, count), &mut gathered).unwrap();
            let mut scattered = vec![f32::NAN; count];
            comm.reduce_scatter_sum(&input(seed, rank, n * count), &mut scattered).unwrap();
            (gathered, scattered)
        });
        let expected_gather: Vec<f32> = (0..n).flat_map(|r| input(seed, r, count)).collect();
        let inputs: Vec<Vec<f32>> = (0..n).map(|r| input(seed, r, n * count)).collect();
        for (rank, ((gathered, scattered), comm)) in results.iter().enumerate() {
            prop_assert_eq!(gathered, &expected_gather);
            for (i, &got) in scattered.iter().enumerate() {
                let j = rank * count + i;
                let exact: f64 = inputs.iter().map(|x| x[j] as f64).sum();
                prop_assert!((got as f64 - exact).abs() <= (n * n) as f64 * f32::EPSILON as f64);
            }
            // (N − 1)/N of the whole tensor, exactly: the blocks are equal.
            let whole = 4 * (n * count) as u64;
            for op in [CommOp::AllGather, CommOp::ReduceScatter] {
                let stats = comm.stats().op(op);
                prop_assert_eq!(stats.tensor_bytes, whole);
                prop_assert_eq!(stats.sent_bytes, whole / n as u64 * (n as u64 - 1));
            }
        }
    }

    #[test]
    fn broadcast_copies_the_root(n in 1usize..=8, len in 0usize..50, root_pick: usize, seed: u64) {
        let root = root_pick % n;
        let results = run_group(n, LONG, |comm| {
            let mut buf = input(seed, comm.rank(), len);
            comm.broadcast(&mut buf, root).unwrap();
            buf
        });
        for (rank, (buf, comm)) in results.iter().enumerate() {
            prop_assert_eq!(buf, &input(seed, root, len));
            // Along the ring from the root: all but the rank before the root forward it once.
            let forwards = n > 1 && (rank + 1) % n != root;
            let sent = if forwards { 4 * len as u64 } else { 0 };
            prop_assert_eq!(comm.stats().op(CommOp::Broadcast).sent_bytes, sent);
        }
    }
}

#[test]
fn send_recv_deliver_in_order_around_the_ring() {
    for n in 2..=5 {
        let results = run_group(n, LONG, |comm| {
            let (rank, right, left) = (
                comm.rank(),
                (comm.rank() + 1) % n,
                (comm.rank() + n - 1) % n,
            );
            let mut got = Vec::new();
            for msg in 0..3 {
                comm.send(&input(msg, rank, 5 + msg as usize), right)
                    .unwrap();
            }
            for msg in 0..3 {
                let mut buf = vec![0.0; 5 + msg as usize];
                comm.recv(&mut buf, left).unwrap();
                got.push(buf);
            }
            got
        });
        for (rank, (got, comm)) in results.iter().enumerate() {
            let left = (rank + n - 1) % n;
            for (msg, buf) in got.iter().enumerate() {
                assert_eq!(buf, &input(msg as u64, left, 5 + msg));
            }
            let send = comm.stats().op(CommOp::Send);
            assert_eq!((send.calls, send.sent_bytes), (3, 4 * (5 + 6 + 7)));
            assert_eq!(comm.stats().op(CommOp::Recv).sent_bytes, 0);
        }
    }
}

#[test]
fn nobody_leaves_a_barrier_before_everyone_arrives() {
    let n = 4;
    let arrived = AtomicUsize::new(0);
    run_group(n, LONG, |comm| {
        std::thread::sleep(Duration::from_millis(10 * comm.rank() as u64));
        arrived.fetch_add(1, Ordering::SeqCst);
        comm.barrier().unwrap();
        assert_eq!(arrived.load(Ordering::SeqCst), n);
    });
}

#[test]
fn a_rank_that_never_calls_makes_the_others_time_out() {
    let results = run_group(4, SHORT, |comm| {
        let start = Instant::now();
        if comm.rank() == 3 {
            return (Ok(()), start.elapsed());
        }
        let mut buf = vec![1.0; 100];
        (comm.all_reduce_sum(&mut buf), start.elapsed())
    });
    for (rank, ((result, elapsed), comm)) in results.iter().enumerate().take(3) {
        let err = result.clone().unwrap_err();
        assert!(
            matches!(err, CommError::Timeout { op: CommOp::AllReduce, rank: r, .. } if r == rank),
            "rank {rank}: {err}"
        );
        assert!(
            *elapsed >= SHORT && *elapsed < SHORT + Duration::from_secs(2),
            "{elapsed:?}"
        );
        // The failed call is counted, and the communicator refuses what follows.
        assert_eq!(comm.stats().op(CommOp::AllReduce).failures, 1);
    }
    // Rank 0 waits on its left neighbour, rank 3, the silent one, and names it.
    let msg = results[0].0 .0.clone().unwrap_err().to_string();
    assert!(
        msg.contains("all_reduce timed out") && msg.contains("rank 3"),
        "{msg}"
    );
    let (_, mut comm0) = results.into_iter().next().unwrap();
    let err = comm0.barrier().unwrap_err();
    assert!(
        matches!(
            err,
            CommError::Broken {
                op: CommOp::Barrier,
                rank: 0
            }
        ),
        "{err}"
    );
}

#[test]
fn a_recv_with_no_sender_and_a_lonely_barrier_time_out() {
    let results = run_group(2, SHORT, |comm| match comm.rank() {
        0 => comm.recv(&mut [0.0; 3], 1),
        _ => Ok(()),
    });
    let err = results[0].0.clone().unwrap_err();
    assert!(
        matches!(
            err,
            CommError::Timeout {
                op: CommOp::Recv,
                rank: 0,
                peer: 1,
                ..
            }
        ),
        "{err}"
    );
    let results = run_group(3, SHORT, |comm| {
        if comm.rank() == 0 {
            Ok(())
        } else {
            comm.barrier()
        }
    });
    for (result, _) in &results[1..] {
        let err = result.clone().unwrap_err();
        assert!(
            matches!(
                err,
                CommError::Timeout {
                    op: CommOp::Barrier,
                    peer: 0,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn a_dropped_or_panicked_rank_ends_the_group_quickly_with_peer_gone() {
    for panics in [false, true] {
        // The others start only once rank 2 is gone, so that who notices first is fixed.
        let gone = std::sync::Barrier::new(4);
        let results = run_group_dropping(4, LONG, |mut comm| {
            if comm.rank() == 2 {
                if panics {
                    // Its communicator is dropped as the thread unwinds.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                        let _owned = comm;
                        panic!("rank 2 fails on purpose (this message is expected)");
                    }));
                } else {
                    drop(comm);
                }
                gone.wait();
                return Ok(());
            }
            gone.wait();
            let mut buf = vec![1.0; 64];
            comm.all_reduce_sum(&mut buf)
        });
        for (rank, (result, elapsed)) in results.iter().enumerate() {
            if rank == 2 {
                continue;
            }
            let err = result.clone().unwrap_err();
            // A rank only talks to its ring neighbours (it sends right, receives from the
            // left), so the peer it finds gone is one of them.
            let (left, right) = ((rank + 3) % 4, (rank + 1) % 4);
            assert!(
                matches!(err, CommError::PeerGone { rank: r, peer, .. }
                    if r == rank && (peer == left || peer == right)),
                "rank {rank}: {err}"
            );
            assert!(
                *elapsed < Duration::from_secs(2),
                "rank {rank} took {elapsed:?}"
            );
        }
        // Rank 1's first act is to send to rank 2, already gone: it names rank 2. The others
        // may name whichever neighbour left first (a rank that fails drops its communicator,
        // and so on around the ring: rank 3, say, sends to rank 0 before it waits on rank 2,
        // and rank 0 may have failed by then).
        let err = results[1].0.clone().unwrap_err();
        assert!(
            matches!(
                err,
                CommError::PeerGone {
                    rank: 1,
                    peer: 2,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn mismatched_lengths_ops_and_orders_fail_clearly() {
    // Rank 1 all-reduces 10 elements, the others 12.
    let results = run_group_dropping(3, LONG, |mut comm| {
        let mut buf = vec![1.0; if comm.rank() == 1 { 10 } else { 12 }];
        comm.all_reduce_sum(&mut buf)
    });
    let err = results[1].0.clone().unwrap_err();
    let expected = CommError::LengthMismatch {
        op: CommOp::AllReduce,
        rank: 1,
        peer: 0,
        ours: 10,
        theirs: 12,
    };
    assert_eq!(err, expected);
    assert!(
        err.to_string()
            .contains("every rank must pass the same length"),
        "{err}"
    );
    assert!(results
        .iter()
        .all(|(r, t)| r.is_err() && *t < Duration::from_secs(2)));

    // Rank 0 all-reduces while rank 1 all-gathers.
    let results = run_group(2, LONG, |comm| {
        if comm.rank() == 0 {
            comm.all_reduce_sum(&mut [1.0; 4])
        } else {
            comm.all_gather(&[1.0; 2], &mut [0.0; 4])
        }
    });
    let msg = results[0].0.clone().unwrap_err().to_string();
    assert!(
        msg.contains("all_reduce #0") && msg.contains("all_gather #0"),
        "{msg}"
    );
    assert!(matches!(results[1].0, Err(CommError::CallMismatch { .. })));

    // Rank 1 issues a barrier that rank 0 does not.
    let results = run_group(2, LONG, |comm| {
        if comm.rank() == 1 {
            let _ = comm.barrier();
        }
        comm.all_reduce_sum(&mut [1.0; 4])
    });
    let err = results[0].0.clone().unwrap_err();
    assert!(
        matches!(
            err,
            CommError::CallMismatch {
                rank: 0,
                peer: 1,
                ..
            }
        ),
        "{err}"
    );

    // Different broadcast roots: with two ranks each thinks it is the root and only sends, so
    // the broadcast itself cannot tell; the stale message is caught by the next call.
    let results = run_group(2, LONG, |comm| {
        comm.broadcast(&mut [1.0; 4], comm.rank())?;
        comm.all_reduce_sum(&mut [1.0; 4])
    });
    for (rank, (result, _)) in results.iter().enumerate() {
        let err = result.clone().unwrap_err();
        let CommError::CallMismatch { ours, theirs, .. } = err else {
            panic!("rank {rank}: {err}")
        };
        assert_eq!(
            (ours.op, ours.seq, theirs.op, theirs.root),
            (CommOp::AllReduce, 1, CommOp::Broadcast, Some(1 - rank))
        );
    }
}

#[test]
fn bad_arguments_fail_before_sending_and_leave_the_communicator_usable() {
    let results = run_group(2, LONG, |comm| {
        let rank = comm.rank();
        let errors = [
            comm.all_gather(&[1.0; 3], &mut [0.0; 5]).unwrap_err(),
            comm.reduce_scatter_sum(&[1.0; 5], &mut [0.0; 3])
                .unwrap_err(),
            comm.send(&[1.0], rank).unwrap_err(),
            comm.recv(&mut [0.0], 2).unwrap_err(),
            comm.broadcast(&mut [0.0], 7).unwrap_err(),
        ];
        assert_eq!(comm.stats().total().sent_bytes, 0);
        let mut buf = [rank as f32 + 1.0; 3];
        comm.all_reduce_sum(&mut buf).unwrap();
        (errors, buf)
    });
    let (errors, buf) = &results[0].0;
    assert_eq!(buf, &[3.0; 3]);
    assert!(matches!(
        errors[0],
        CommError::BadLength {
            op: CommOp::AllGather,
            ..
        }
    ));
    assert!(errors[0].to_string().contains("needs 6"), "{}", errors[0]);
    assert!(matches!(
        errors[1],
        CommError::BadLength {
            op: CommOp::ReduceScatter,
            ..
        }
    ));
    assert!(matches!(
        errors[2],
        CommError::BadRank {
            op: CommOp::Send,
            peer: 0,
            ..
        }
    ));
    assert!(matches!(
        errors[3],
        CommError::BadRank {
            op: CommOp::Recv,
            peer: 2,
            ..
        }
    ));
    assert!(matches!(
        errors[4],
        CommError::BadRank {
            op: CommOp::Broadcast,
            peer: 7,
            ..
        }
    ));
}

#[test]
fn a_group_of_one_reduces_to_copies() {
    let mut comm = CpuCommunicator::group(1, SHORT).pop().unwrap();
    let mut buf = [1.5, -2.0];
    comm.all_reduce_sum(&mut buf).unwrap();
    comm.broadcast(&mut buf, 0).unwrap();
    comm.barrier().unwrap();
    let mut gathered = [0.0; 2];
    comm.all_gather(&buf, &mut gathered).unwrap();
    let mut scattered = [0.0; 2];
    comm.reduce_scatter_sum(&gathered, &mut scattered).unwrap();
    assert_eq!(
        (buf, gathered, scattered),
        ([1.5, -2.0], [1.5, -2.0], [1.5, -2.0])
    );
    assert_eq!(comm.stats().total().sent_bytes, 0);
    assert_eq!(comm.stats().total().calls, 5);
    assert!(CpuCommunicator::group(0, SHORT).is_empty());
}
