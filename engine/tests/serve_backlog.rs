//! The server's listener holds a burst of connections far larger than tokio's default backlog
//! (128, the standard library's) before it accepts any: on the H200 machine bursts of 1000
//! clients overflowed it and some were reset (`api_server::LISTEN_BACKLOG`). Nothing accepts
//! here, so every connection below is completed by the kernel alone and waits in the listen
//! queue; past the backlog the kernel drops the handshake and `connect` times out.

use std::net::TcpStream;
use std::time::Duration;

use engine::entrypoints::openai::api_server;

/// Connections in the burst: past tokio's 128 (and the 1024 some servers use), within the
/// 4096 asked for. With tokio's `bind` the 129th times out.
const BURST: usize = 1536;

/// A Linux setting as a number, or `None` where it cannot be read.
fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The soft limit on open files (`/proc/self/limits`), or `None` where it cannot be read.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    Some(soft.parse().unwrap_or(u64::MAX)) // "unlimited"
}

#[test]
fn the_listener_holds_a_burst_far_larger_than_tokios_default_backlog() {
    // The burst needs the kernel to allow the backlog and this process the sockets.
    match (
        read_number("/proc/sys/net/core/somaxconn"),
        open_files_limit(),
    ) {
        (Some(cap), Some(files)) if cap > BURST as u64 && files > BURST as u64 + 64 => {}
        (cap, files) => {
            eprintln!(
                "skipped: needs Linux with net.core.somaxconn > {BURST} and more than {} open \
                 files (somaxconn {cap:?}, open files {files:?})",
                BURST + 64
            );
            return;
        }
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(api_server::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let burst: Vec<TcpStream> = (0..BURST)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("connection {i} of {BURST} was not held: {e}"))
        })
        .collect();
    assert_eq!(burst.len(), BURST);
    drop(listener);
}
