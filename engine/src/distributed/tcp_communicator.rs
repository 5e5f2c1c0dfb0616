//! A [`CpuCommunicator`] whose ranks are processes: the same collectives over TCP sockets.
//!
//! The collectives (the ring all-reduce, all-gather, broadcast along the ring, send/recv,
//! barrier), their [`CallTag`] checks, their timeouts and their [`CommStats`] are the
//! in-process communicator's, line for line: only the wire differs. A message to a peer is one
//! frame on the socket to that peer ([`super::wire`]): its tag, then its `f32`s. Per socket, a
//! reader thread decodes frames into a channel, the very channel an in-process peer would have
//! sent into, so a receive waits with the same `recv_timeout` and a closed socket looks like a
//! dropped peer ([`CommError::PeerGone`]) at once.
//!
//! Why a reader thread rather than reading in the collective: in a ring step every rank sends
//! to its right neighbour before it receives from its left. With a blocking write and nobody
//! reading, a chunk larger than the kernel's socket buffers would block every rank in its send
//! forever. The reader threads always drain the sockets, so a send blocks only while its peer
//! is truly not taking data (hung or stopped); past the group's timeout that send fails with
//! [`CommError::Timeout`].
//!
//! Byte counts: [`CommStats`] counts payload bytes as in one process. On the wire each message
//! also carries a header of about 30 bytes (frame length, op, sequence number, count, root,
//! payload length), not counted, as NCCL's protocol overhead is not in its bus bandwidth either.
//!
//! [`CommError::PeerGone`]: super::CommError::PeerGone
//! [`CommError::Timeout`]: super::CommError::Timeout
//! [`CallTag`]: super::CallTag
//! [`CommStats`]: super::CommStats

use std::io::{self, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use super::communicator::{CallTag, CommOp};
use super::cpu_communicator::{CpuCommunicator, Message, Outbox, PostError};
use super::wire::{bad, read_frame, WireReader, WireWriter};

/// Rank `rank`'s communicator in a group of `world_size` processes, over `streams[p]`, a
/// connected socket to peer `p` (`None` at `rank`). Every peer's socket must be there.
pub fn tcp_communicator(
    rank: usize,
    world_size: usize,
    timeout: Duration,
    streams: Vec<Option<TcpStream>>,
) -> io::Result<CpuCommunicator> {
    let mut to: Vec<Option<Box<dyn Outbox>>> = Vec::with_capacity(world_size);
    let mut from = Vec::with_capacity(world_size);
    for (peer, stream) in streams.into_iter().enumerate() {
        match stream {
            None if peer == rank => {
                to.push(None);
                from.push(None);
            }
            None => {
                return Err(io::Error::other(format!(
                    "rank {rank}: no connection to rank {peer}"
                )))
            }
            Some(stream) => {
                stream.set_nodelay(true)?; // a decode step's chunks are small: send them now
                stream.set_write_timeout(Some(timeout))?;
                let reader = stream.try_clone()?;
                let (tx, rx) = mpsc::channel();
                spawn_reader(
                    format!("rank-{rank}-from-{peer}"),
                    reader,
                    tx,
                    decode_message,
                )?;
                to.push(Some(Box::new(TcpOutbox { stream })));
                from.push(Some(rx));
            }
        }
    }
    Ok(CpuCommunicator::from_links(
        rank, world_size, timeout, to, from,
    ))
}

/// The write half of a socket to one peer.
#[derive(Debug)]
struct TcpOutbox {
    stream: TcpStream,
}

impl Outbox for TcpOutbox {
    fn post(&mut self, message: Message) -> Result<(), PostError> {
        let payload = encode_message(&message);
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        frame.extend_from_slice(&payload);
        self.stream.write_all(&frame).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => PostError::TimedOut,
            _ => PostError::Gone,
        })
    }
}

impl Drop for TcpOutbox {
    /// Closing both directions ends this rank's reader thread and tells the peer at once that
    /// this rank is gone, as dropping a channel does in one process.
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A thread that decodes frames from `stream` into `tx` until the stream ends or breaks (then
/// `tx` is dropped, and the receiver sees the peer gone).
fn spawn_reader<T: Send + 'static>(
    name: String,
    stream: TcpStream,
    tx: Sender<T>,
    decode: fn(&[u8]) -> io::Result<T>,
) -> io::Result<()> {
    std::thread::Builder::new().name(name).spawn(move || {
        let mut stream = BufReader::new(stream);
        while let Ok(Some(frame)) = read_frame(&mut stream) {
            let Ok(item) = decode(&frame) else { break };
            if tx.send(item).is_err() {
                break; // our communicator is gone
            }
        }
    })?;
    Ok(())
}

/// One message as bytes: op, sequence number, count, root (`u64::MAX` for none), payload.
fn encode_message(m: &Message) -> Vec<u8> {
    let mut w = WireWriter::default();
    w.u8(m.tag.op.index() as u8)
        .u64(m.tag.seq)
        .usize(m.tag.count)
        .u64(m.tag.root.map_or(u64::MAX, |r| r as u64))
        .f32s(&m.data);
    w.bytes
}

fn decode_message(bytes: &[u8]) -> io::Result<Message> {
    let mut r = WireReader::new(bytes);
    let op = *CommOp::ALL
        .get(r.u8()? as usize)
        .ok_or_else(|| bad("an unknown collective"))?;
    let seq = r.u64()?;
    let count = r.usize()?;
    let root = match r.u64()? {
        u64::MAX => None,
        root => Some(root as usize),
    };
    let data = r.f32s()?;
    r.finish()?;
    Ok(Message {
        tag: CallTag {
            op,
            seq,
            count,
            root,
        },
        data,
    })
}

/// The sending end of a pipeline boundary's tick channel over `stream` (see
/// [`super::pipeline_stage::StageLink::with_ticks`]): a thread forwards each tick as a frame.
pub fn tick_sender(stream: TcpStream) -> io::Result<Sender<u64>> {
    stream.set_nodelay(true)?;
    let (tx, rx) = mpsc::channel::<u64>();
    std::thread::Builder::new()
        .name("pp-ticks-out".into())
        .spawn(move || {
            let mut stream = stream;
            for tick in rx {
                let frame = [8u64.to_le_bytes(), tick.to_le_bytes()].concat();
                if stream.write_all(&frame).is_err() {
                    break;
                }
            }
            let _ = stream.shutdown(Shutdown::Both);
        })?;
    Ok(tx)
}

/// The receiving end of a pipeline boundary's tick channel over `stream`.
pub fn tick_receiver(stream: TcpStream) -> io::Result<Receiver<u64>> {
    let (tx, rx) = mpsc::channel();
    spawn_reader("pp-ticks-in".into(), stream, tx, |b| {
        let mut r = WireReader::new(b);
        let tick = r.u64()?;
        r.finish()?;
        Ok(tick)
    })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips() {
        let m = Message {
            tag: CallTag {
                op: CommOp::Broadcast,
                seq: 9,
                count: 3,
                root: Some(2),
            },
            data: vec![1.0, -0.5, f32::MIN_POSITIVE],
        };
        assert_eq!(decode_message(&encode_message(&m)).unwrap(), m);
        let mut none = m.clone();
        none.tag.root = None;
        assert_eq!(decode_message(&encode_message(&none)).unwrap(), none);
        assert!(decode_message(&encode_message(&m)[..10]).is_err());
    }
}
