//! How ranks that are processes find each other: a rendezvous at rank 0 over TCP, then one
//! socket per pair of ranks per group.
//!
//! `lab launch` (or any launcher: torchrun's contract) starts each process with its
//! [`LaunchSpec`]: where rank 0 listens (`--master-addr`, `--master-port`), how many nodes and
//! processes per node, and which node and local slot it is. Then:
//!
//! 1. **Rendezvous.** Rank 0 listens on the master address. Every other rank connects (retrying
//!    until the timeout: rank 0 may start later), and sends a [`Hello`]: its node and local
//!    rank, the world size and TP × PP it was started with, and the address of a listener it
//!    opened for its peers. Rank 0 checks that every rank came exactly once with the same
//!    world, and answers each with a [`Welcome`]: its rank, the world size and layout, every
//!    rank's address, and the bytes a collective library needs every rank to share before it
//!    can build its communicator. That is where rank 0 passes the 128-byte `ncclUniqueId`s
//!    from `ncclGetUniqueId`, one per TP group, to every rank's `ncclCommInitRank`
//!    ([`Shared::unique_id`]) when the ranks run on GPUs of their own; otherwise it is
//!    empty (the CPU communicator needs none). This socket
//!    stays open as the driver's control channel ([`ControlLink`]).
//! 2. **Mesh.** For each group a rank is in (its stage's TP group, its slice's PP group, and
//!    the tick channels to its neighbouring stages, see [`super::pipeline_stage`]), the higher
//!    rank of each pair connects to the lower one's listener and names the channel in a
//!    one-frame handshake; the lower rank accepts and files the socket by channel and peer.
//!    Connecting first and accepting after cannot deadlock: a connection completes in the
//!    listener's backlog before anyone calls `accept`.
//!
//! Every wait is bounded by the group's timeout; what went wrong is said in one line.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use super::cpu_communicator::CpuCommunicator;
use super::parallel_state::RankLayout;
use super::tcp_communicator::{tcp_communicator, tick_receiver, tick_sender};
use super::wire::{bad, read_frame, write_frame, WireReader, WireWriter};
use crate::error::{EngineError, Result};

/// Where this process stands in a launch (`lab launch` sets it in the environment of each
/// process it starts; [`LaunchSpec::from_env`] reads it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Where rank 0 listens for the others.
    pub master: SocketAddr,
    pub nnodes: usize,
    pub node_rank: usize,
    pub nproc_per_node: usize,
    /// This process's slot on its node, `0..nproc_per_node`.
    pub local_rank: usize,
}

/// The environment variables a launched process reads.
pub const ENV_MASTER: &str = "LAB_MASTER_ADDR";
pub const ENV_NNODES: &str = "LAB_NNODES";
pub const ENV_NODE_RANK: &str = "LAB_NODE_RANK";
pub const ENV_NPROC_PER_NODE: &str = "LAB_NPROC_PER_NODE";
pub const ENV_LOCAL_RANK: &str = "LAB_LOCAL_RANK";

impl LaunchSpec {
    /// `node_rank × nproc_per_node + local_rank`: nodes hold consecutive ranks, so a TP group
    /// (consecutive ranks, [`RankLayout`]) stays inside a node when it fits.
    pub fn rank(&self) -> usize {
        self.node_rank * self.nproc_per_node + self.local_rank
    }

    pub fn world_size(&self) -> usize {
        self.nnodes * self.nproc_per_node
    }

    /// The variables that place a process: `(name, value)` pairs for [`Self::from_env`].
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (ENV_MASTER, self.master.to_string()),
            (ENV_NNODES, self.nnodes.to_string()),
            (ENV_NODE_RANK, self.node_rank.to_string()),
            (ENV_NPROC_PER_NODE, self.nproc_per_node.to_string()),
            (ENV_LOCAL_RANK, self.local_rank.to_string()),
        ]
    }

    /// The spec `lab launch` put in this process's environment; `None` when it was not
    /// launched (no `LAB_MASTER_ADDR`), an error when a variable is missing or malformed.
    pub fn from_env() -> Result<Option<Self>> {
        let Ok(master) = std::env::var(ENV_MASTER) else {
            return Ok(None);
        };
        let bad_var = |name: &str, why: String| {
            EngineError::InvalidArgument(format!("{name}: {why} (set by `lab launch`)"))
        };
        let num = |name: &str| -> Result<usize> {
            let v = std::env::var(name).map_err(|_| bad_var(name, "not set".into()))?;
            v.parse()
                .map_err(|_| bad_var(name, format!("{v:?} is not a number")))
        };
        let master = master
            .parse()
            .map_err(|_| bad_var(ENV_MASTER, format!("{master:?} is not host:port")))?;
        let spec = LaunchSpec {
            master,
            nnodes: num(ENV_NNODES)?,
            node_rank: num(ENV_NODE_RANK)?,
            nproc_per_node: num(ENV_NPROC_PER_NODE)?,
            local_rank: num(ENV_LOCAL_RANK)?,
        };
        spec.validate()?;
        Ok(Some(spec))
    }

    /// Refuses a spec no launch can satisfy.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::InvalidArgument(m));
        if self.nnodes == 0 || self.nproc_per_node == 0 {
            return bad("--nnodes and --nproc-per-node must be at least 1".into());
        }
        if self.node_rank >= self.nnodes {
            return bad(format!(
                "--node-rank {} is not below --nnodes {}",
                self.node_rank, self.nnodes
            ));
        }
        if self.local_rank >= self.nproc_per_node {
            return bad(format!(
                "local rank {} is not below --nproc-per-node {}",
                self.local_rank, self.nproc_per_node
            ));
        }
        Ok(())
    }
}

/// A rank's first message to rank 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub rank: usize,
    pub world_size: usize,
    pub layout: RankLayout,
    /// Where this rank accepts its peers' connections.
    pub listen: SocketAddr,
}

/// Rank 0's answer: who is who.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    pub rank: usize,
    pub world_size: usize,
    pub layout: RankLayout,
    /// Every rank's listener, in rank order.
    pub addrs: Vec<SocketAddr>,
    /// What rank 0 decided for every rank.
    pub shared: Shared,
}

/// What rank 0 decides for every rank before the communicators are built, so that no rank
/// decides it alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shared {
    /// Bytes a collective library needs on every rank: the `ncclUniqueId`s (128 bytes each
    /// from `ncclGetUniqueId`, one per stage's TP group, passed to `ncclCommInitRank`) when
    /// the ranks run on GPUs of their own. Empty for the host communicators.
    pub unique_id: Vec<u8>,
    /// KV blocks every rank's cache holds: the scheduler on rank 0 hands out block ids that
    /// every rank must have, so rank 0 sizes the cache once (each process measuring its own
    /// GPU memory, while the others load, would not agree).
    pub num_kv_blocks: usize,
}

/// Message kinds of the rendezvous (the first byte of each frame).
const HELLO: u8 = 1;
const WELCOME: u8 = 2;
/// The first frame of a mesh connection.
const CHANNEL: u8 = 3;

fn put_addr(w: &mut WireWriter, a: &SocketAddr) {
    w.str(&a.to_string());
}

fn get_addr(r: &mut WireReader) -> io::Result<SocketAddr> {
    let s = r.str()?;
    s.parse()
        .map_err(|_| bad(format!("{s:?} is not an address")))
}

impl Hello {
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = WireWriter::default();
        w.u8(HELLO).usize(self.rank).usize(self.world_size);
        w.usize(self.layout.tp).usize(self.layout.pp);
        put_addr(&mut w, &self.listen);
        w.bytes
    }

    fn from_bytes(b: &[u8]) -> io::Result<Self> {
        let mut r = WireReader::new(b);
        if r.u8()? != HELLO {
            return Err(bad("expected a rank's hello"));
        }
        let hello = Hello {
            rank: r.usize()?,
            world_size: r.usize()?,
            layout: RankLayout {
                tp: r.usize()?,
                pp: r.usize()?,
            },
            listen: get_addr(&mut r)?,
        };
        r.finish()?;
        Ok(hello)
    }
}

impl Welcome {
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = WireWriter::default();
        w.u8(WELCOME).usize(self.rank).usize(self.world_size);
        w.usize(self.layout.tp).usize(self.layout.pp);
        w.usize(self.addrs.len());
        self.addrs.iter().for_each(|a| put_addr(&mut w, a));
        w.usize(self.shared.unique_id.len());
        w.bytes.extend_from_slice(&self.shared.unique_id);
        w.usize(self.shared.num_kv_blocks);
        w.bytes
    }

    fn from_bytes(b: &[u8]) -> io::Result<Self> {
        let mut r = WireReader::new(b);
        if r.u8()? != WELCOME {
            return Err(bad("expected rank 0's welcome"));
        }
        let (rank, world_size) = (r.usize()?, r.usize()?);
        let layout = RankLayout {
            tp: r.usize()?,
            pp: r.usize()?,
        };
        let n = r.usize()?;
        let addrs = (0..n.min(1 << 16))
            .map(|_| get_addr(&mut r))
            .collect::<io::Result<_>>()?;
        let k = r.usize()?;
        let unique_id = (0..k.min(1 << 16))
            .map(|_| r.u8())
            .collect::<io::Result<_>>()?;
        let num_kv_blocks = r.usize()?;
        r.finish()?;
        Ok(Welcome {
            rank,
            world_size,
            layout,
            addrs,
            shared: Shared {
                unique_id,
                num_kv_blocks,
            },
        })
    }
}

/// The control channel between the driver (rank 0) and the other ranks, kept open after the
/// rendezvous: rank 0 holds one socket per other rank (`None` at 0), the others the socket
/// to rank 0.
#[derive(Debug)]
pub enum ControlLink {
    Driver(Vec<Option<TcpStream>>),
    Worker(TcpStream),
}

/// What the bootstrap gives a rank: its place, its two communicators and its pipeline
/// neighbours' tick channels (as [`super::parallel_state::build_groups`] and the thread
/// executor give a thread), and the control channel.
#[derive(Debug)]
pub struct ProcessGroups {
    pub world_rank: usize,
    pub pp_rank: usize,
    pub tp_rank: usize,
    pub layout: RankLayout,
    pub tp: CpuCommunicator,
    pub pp: Option<CpuCommunicator>,
    pub ticks_in: Option<Receiver<u64>>,
    pub ticks_out: Option<Sender<u64>>,
    pub control: ControlLink,
    /// What rank 0 decided for every rank ([`Welcome::shared`]).
    pub shared: Shared,
}

/// A connection of the mesh: which group, which two ranks (in world numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Channel {
    Tp,
    Pp,
    /// From the lower rank's stage to the next stage (the lower rank sends).
    Ticks,
}

impl Channel {
    fn code(self) -> u8 {
        self as u8
    }
    fn from_code(c: u8) -> io::Result<Self> {
        [Channel::Tp, Channel::Pp, Channel::Ticks]
            .get(c as usize)
            .copied()
            .ok_or_else(|| bad(format!("unknown mesh channel {c}")))
    }
}

/// Every channel `rank` takes part in, with its peer.
fn channels_of(layout: RankLayout, rank: usize) -> Vec<(Channel, usize)> {
    let (p, t) = layout.coords(rank);
    let mut out: Vec<(Channel, usize)> = layout
        .tp_group(p)
        .into_iter()
        .filter(|&r| r != rank)
        .map(|r| (Channel::Tp, r))
        .collect();
    if layout.pp > 1 {
        out.extend(
            layout
                .pp_group(t)
                .into_iter()
                .filter(|&r| r != rank)
                .map(|r| (Channel::Pp, r)),
        );
        if p > 0 {
            out.push((Channel::Ticks, layout.world_rank(p - 1, t)));
        }
        if p + 1 < layout.pp {
            out.push((Channel::Ticks, layout.world_rank(p + 1, t)));
        }
    }
    out
}

fn io_err(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Io(format!("launch: {what}: {e}"))
}

/// Joins the launch as `spec` says, for a model split `layout`; every wait ends after
/// `timeout` with an error.
///
/// `shared` is what rank 0 decides for every rank and hands them in its [`Welcome`]; the other
/// ranks' argument is ignored, and they read rank 0's in the groups returned.
pub fn bootstrap(
    spec: &LaunchSpec,
    layout: RankLayout,
    timeout: Duration,
    shared: Shared,
) -> Result<ProcessGroups> {
    spec.validate()?;
    let world = spec.world_size();
    if world != layout.world_size() {
        return Err(EngineError::InvalidArgument(format!(
            "the launch has {world} processes ({} nodes × {} per node) but --tp {} × --pp {} \
             needs {} ranks",
            spec.nnodes,
            spec.nproc_per_node,
            layout.tp,
            layout.pp,
            layout.world_size()
        )));
    }
    let deadline = Instant::now() + timeout;
    let rank = spec.rank();
    let _span = tracing::info_span!("bootstrap", rank, world).entered();
    let (welcome, control, listener) = if rank == 0 {
        rendezvous_as_master(spec, layout, deadline, shared)?
    } else {
        rendezvous_as_rank(spec, layout, deadline)?
    };
    let mut sockets = connect_mesh(&welcome, &listener, deadline)?;
    let (pp_rank, tp_rank) = layout.coords(rank);
    let mut comm_of = |channel: Channel, group: Vec<usize>| -> Result<CpuCommunicator> {
        let me = group.iter().position(|&r| r == rank).expect("in its group");
        let streams = group
            .iter()
            .map(|&r| (r != rank).then(|| sockets.remove(&(channel, r))).flatten())
            .collect();
        tcp_communicator(me, group.len(), timeout, streams).map_err(|e| io_err("mesh", e))
    };
    let tp = comm_of(Channel::Tp, layout.tp_group(pp_rank))?;
    let pp = match layout.pp {
        1 => None,
        _ => Some(comm_of(Channel::Pp, layout.pp_group(tp_rank))?),
    };
    let ticks_in = match pp_rank {
        0 => None,
        _ => {
            let s = sockets.remove(&(Channel::Ticks, layout.world_rank(pp_rank - 1, tp_rank)));
            Some(tick_receiver(s.expect("connected")).map_err(|e| io_err("ticks", e))?)
        }
    };
    let ticks_out = match pp_rank + 1 < layout.pp {
        false => None,
        true => {
            let s = sockets.remove(&(Channel::Ticks, layout.world_rank(pp_rank + 1, tp_rank)));
            Some(tick_sender(s.expect("connected")).map_err(|e| io_err("ticks", e))?)
        }
    };
    Ok(ProcessGroups {
        world_rank: rank,
        pp_rank,
        tp_rank,
        layout,
        tp,
        pp,
        ticks_in,
        ticks_out,
        control,
        shared: welcome.shared,
    })
}

/// Rank 0: listen, take every other rank's hello, check them, welcome each.
fn rendezvous_as_master(
    spec: &LaunchSpec,
    layout: RankLayout,
    deadline: Instant,
    shared: Shared,
) -> Result<(Welcome, ControlLink, TcpListener)> {
    let world = spec.world_size();
    let master = TcpListener::bind(spec.master).map_err(|e| {
        io_err(
            &format!(
                "rank 0 cannot listen on --master-addr/--master-port {}",
                spec.master
            ),
            e,
        )
    })?;
    let peers = TcpListener::bind((spec.master.ip(), 0)).map_err(|e| io_err("listen", e))?;
    let mut addrs = vec![peers.local_addr().map_err(|e| io_err("listen", e))?; world];
    let mut control: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
    for _ in 1..world {
        let mut stream = accept_until(&master, deadline).map_err(|e| {
            let came = control.iter().filter(|c| c.is_some()).count();
            io_err(
                &format!(
                    "rank 0 waited for the other ranks; {came} of {} came",
                    world - 1
                ),
                e,
            )
        })?;
        let hello = read_until(&mut stream, deadline)
            .and_then(|b| Hello::from_bytes(&b))
            .map_err(|e| io_err("a rank's hello", e))?;
        let who = format!("rank {}", hello.rank);
        if hello.world_size != world || hello.layout != layout {
            return Err(EngineError::InvalidArgument(format!(
                "launch: {who} was started for {} ranks at TP {} × PP {}, rank 0 for {world} \
                 at TP {} × PP {}: give every process the same arguments",
                hello.world_size, hello.layout.tp, hello.layout.pp, layout.tp, layout.pp
            )));
        }
        if hello.rank == 0 || hello.rank >= world || control[hello.rank].is_some() {
            return Err(EngineError::InvalidArgument(format!(
                "launch: {who} came twice or is not in 1..{world} (check --node-rank on each \
                 node)"
            )));
        }
        stream
            .set_read_timeout(None)
            .map_err(|e| io_err("control", e))?;
        stream.set_nodelay(true).map_err(|e| io_err("control", e))?; // a step cannot wait
        addrs[hello.rank] = hello.listen;
        control[hello.rank] = Some(stream);
    }
    let welcome = |rank| Welcome {
        rank,
        world_size: world,
        layout,
        addrs: addrs.clone(),
        shared: shared.clone(),
    };
    for (rank, stream) in control.iter_mut().enumerate() {
        if let Some(stream) = stream {
            write_frame(stream, &welcome(rank).to_bytes())
                .map_err(|e| io_err(&format!("welcoming rank {rank}"), e))?;
        }
    }
    Ok((welcome(0), ControlLink::Driver(control), peers))
}

/// Any other rank: open a listener, reach rank 0, say hello, learn the world.
fn rendezvous_as_rank(
    spec: &LaunchSpec,
    layout: RankLayout,
    deadline: Instant,
) -> Result<(Welcome, ControlLink, TcpListener)> {
    let rank = spec.rank();
    let mut stream = loop {
        match TcpStream::connect_timeout(&spec.master, Duration::from_millis(500)) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(io_err(
                    &format!("rank {rank} could not reach rank 0 at {}", spec.master),
                    e,
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    // Peers reach this rank at the address rank 0 sees it from.
    let ip: IpAddr = stream.local_addr().map_err(|e| io_err("connect", e))?.ip();
    let listener = TcpListener::bind((ip, 0)).map_err(|e| io_err("listen", e))?;
    let hello = Hello {
        rank,
        world_size: spec.world_size(),
        layout,
        listen: listener.local_addr().map_err(|e| io_err("listen", e))?,
    };
    write_frame(&mut stream, &hello.to_bytes()).map_err(|e| io_err("hello", e))?;
    let welcome = read_until(&mut stream, deadline)
        .and_then(|b| Welcome::from_bytes(&b))
        .map_err(|e| io_err(&format!("rank {rank} waiting for rank 0's welcome"), e))?;
    if welcome.rank != rank || welcome.addrs.len() != welcome.world_size {
        return Err(io_err("welcome", "rank 0 sent a welcome for another rank"));
    }
    stream
        .set_read_timeout(None)
        .map_err(|e| io_err("control", e))?;
    stream.set_nodelay(true).map_err(|e| io_err("control", e))?; // a reply cannot wait
    Ok((welcome, ControlLink::Worker(stream), listener))
}

/// Connects to every lower peer and accepts every higher one, per channel.
fn connect_mesh(
    welcome: &Welcome,
    listener: &TcpListener,
    deadline: Instant,
) -> Result<HashMap<(Channel, usize), TcpStream>> {
    let rank = welcome.rank;
    let channels = channels_of(welcome.layout, rank);
    let mut sockets = HashMap::new();
    for &(channel, peer) in channels.iter().filter(|&&(_, peer)| peer < rank) {
        let mut s = TcpStream::connect(welcome.addrs[peer])
            .map_err(|e| io_err(&format!("rank {rank} connecting to rank {peer}"), e))?;
        let mut w = WireWriter::default();
        w.u8(CHANNEL).u8(channel.code()).usize(rank);
        write_frame(&mut s, &w.bytes).map_err(|e| io_err("mesh handshake", e))?;
        sockets.insert((channel, peer), s);
    }
    let expected = channels.iter().filter(|&&(_, peer)| peer > rank).count();
    for _ in 0..expected {
        let mut s = accept_until(listener, deadline)
            .map_err(|e| io_err(&format!("rank {rank} waiting for its peers"), e))?;
        let frame = read_until(&mut s, deadline).map_err(|e| io_err("mesh handshake", e))?;
        let mut r = WireReader::new(&frame);
        let (kind, code, peer) = (
            r.u8().map_err(|e| io_err("mesh", e))?,
            r.u8().map_err(|e| io_err("mesh", e))?,
            r.usize().map_err(|e| io_err("mesh", e))?,
        );
        let channel = Channel::from_code(code).map_err(|e| io_err("mesh", e))?;
        if kind != CHANNEL || !channels.contains(&(channel, peer)) || peer <= rank {
            return Err(io_err(
                "mesh",
                format!("unexpected connection from rank {peer}"),
            ));
        }
        s.set_read_timeout(None).map_err(|e| io_err("mesh", e))?;
        sockets.insert((channel, peer), s);
    }
    Ok(sockets)
}

/// `accept`, giving up at `deadline`.
fn accept_until(listener: &TcpListener, deadline: Instant) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One frame, giving up at `deadline`; the stream's end is an error here.
fn read_until(stream: &mut TcpStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    // Straight from the socket, no buffer: a buffer could swallow the frames that follow.
    read_frame(stream)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the socket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_welcome_round_trip() {
        let layout = RankLayout { tp: 2, pp: 2 };
        let listen: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let hello = Hello {
            rank: 3,
            world_size: 4,
            layout,
            listen,
        };
        assert_eq!(Hello::from_bytes(&hello.to_bytes()).unwrap(), hello);
        let welcome = Welcome {
            rank: 3,
            world_size: 4,
            layout,
            addrs: vec![listen; 4],
            shared: Shared {
                unique_id: vec![7; 128],
                num_kv_blocks: 12345,
            },
        };
        assert_eq!(Welcome::from_bytes(&welcome.to_bytes()).unwrap(), welcome);
        assert!(Welcome::from_bytes(&hello.to_bytes()).is_err());
    }

    /// Each channel is seen from both ends: a peer lists the rank back on the same channel.
    #[test]
    fn channels_are_symmetric() {
        for (tp, pp) in [(2, 1), (1, 3), (2, 2), (3, 2)] {
            let layout = RankLayout { tp, pp };
            for r in 0..layout.world_size() {
                for (c, peer) in channels_of(layout, r) {
                    assert!(channels_of(layout, peer).contains(&(c, r)), "{tp}x{pp} {r}");
                }
            }
        }
    }
}
