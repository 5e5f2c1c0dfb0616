//! The communicator over TCP sockets against the one over channels: for random group sizes and
//! lengths, every collective gives the same bits on every rank and every rank counts the same
//! calls, tensor bytes and sent bytes.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use engine::distributed::tcp_communicator::tcp_communicator;
use engine::distributed::{CommError, Communicator, CpuCommunicator};
use proptest::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A group of `n` ranks over loopback sockets, one per pair.
fn tcp_group(n: usize) -> Vec<Box<dyn Communicator>> {
    let mut streams: Vec<Vec<Option<TcpStream>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let pairs = (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b)));
    for (a, b) in pairs {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        streams[b][a] = Some(client);
        streams[a][b] = Some(server);
    }
    streams
        .into_iter()
        .enumerate()
        .map(|(rank, s)| {
            Box::new(tcp_communicator(rank, n, TIMEOUT, s).unwrap()) as Box<dyn Communicator>
        })
        .collect()
}

fn channel_group(n: usize) -> Vec<Box<dyn Communicator>> {
    CpuCommunicator::group(n, TIMEOUT)
        .into_iter()
        .map(|c| Box::new(c) as Box<dyn Communicator>)
        .collect()
}

/// Rank `r`'s input: distinct, awkward values (sums round).
fn input(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((rank * 7919 + i * 104_729) % 1000) as f32 / 7.0 - 70.0)
        .collect()
}

/// Every collective once on every rank; each rank's results, bit patterns, and its counters
/// `(calls, failures, tensor bytes, sent bytes)` per op.
type RankResult = (Vec<u32>, Vec<(u64, u64, u64, u64)>);

fn run_all(group: Vec<Box<dyn Communicator>>, len: usize, root: usize) -> Vec<RankResult> {
    let n = group.len();
    std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|mut c| {
                s.spawn(move || -> Result<RankResult, CommError> {
                    let r = c.rank();
                    let mut out: Vec<f32> = Vec::new();
                    let mut buf = input(r, len);
                    c.all_reduce_sum(&mut buf)?;
                    out.extend(&buf);
                    let mut gathered = vec![0.0; n * len];
                    c.all_gather(&input(r, len), &mut gathered)?;
                    out.extend(&gathered);
                    let mut mine = vec![0.0; len];
                    c.reduce_scatter_sum(&input(r, n * len), &mut mine)?;
                    out.extend(&mine);
                    let mut b = input(r, len);
                    c.broadcast(&mut b, root)?;
                    out.extend(&b);
                    if n > 1 {
                        c.send(&input(r, len), (r + 1) % n)?;
                        let mut got = vec![0.0; len];
                        c.recv(&mut got, (r + n - 1) % n)?;
                        out.extend(&got);
                    }
                    c.barrier()?;
                    let stats = c
                        .stats()
                        .iter()
                        .map(|(_, o)| (o.calls, o.failures, o.tensor_bytes, o.sent_bytes))
                        .collect();
                    Ok((out.iter().map(|x| x.to_bits()).collect(), stats))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn sockets_and_channels_agree_bit_for_bit_and_byte_for_byte(
        n in 1usize..=4,
        len in 0usize..300,
        root_seed in 0usize..4,
    ) {
        let root = root_seed % n;
        let over_tcp = run_all(tcp_group(n), len, root);
        let over_channels = run_all(channel_group(n), len, root);
        prop_assert_eq!(over_tcp, over_channels);
    }
}

/// Chunks far larger than the sockets' buffers: every rank sends before it receives in each
/// ring step, so this deadlocks unless the sockets are drained while ranks send.
#[test]
fn a_large_all_reduce_does_not_deadlock_on_full_socket_buffers() {
    let len = 4 << 20; // 16 MiB a rank, chunks of 5.3 MiB
    let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = tcp_group(3)
            .into_iter()
            .map(|mut c| {
                s.spawn(move || {
                    let mut buf = vec![c.rank() as f32 + 1.0; len];
                    c.all_reduce_sum(&mut buf).map(|()| buf)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    for buf in sums {
        assert!(buf.iter().all(|&x| x == 6.0));
    }
}
