//! The driver's [`Command`]s and the ranks' [`Reply`]s as bytes, for ranks that are processes:
//! one frame each on the control socket between rank 0 and every other rank
//! ([`super::bootstrap::ControlLink`]).
//!
//! A step is its [`StepDelta`]'s bytes ([`StepDelta::write`]) behind a kind byte and the step
//! number; the instant a step started does not cross processes, so a rank takes the moment the
//! frame arrived as its step's zero. An error crosses as its message and comes back as
//! [`EngineError::Io`] with the same text. A request's sampling parameters cross as what a
//! worker samples with (temperature, top-k, top-p, seed, whether to return logits, and for
//! `min_tokens` the floor and the stop ids it bans until then); the other stopping and
//! scheduling fields are the scheduler's, on rank 0, and keep their defaults on the other
//! ranks.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::comm_stats::{CommStats, OpStats};
use super::communicator::CommOp;
use super::pipeline_schedule::ExecutedItem;
use super::rank_worker::{Command, Reply};
use super::step_delta::StepDelta;
use super::wire::{bad, WireReader, WireWriter};
use crate::backend::DeviceTime;
use crate::error::{EngineError, Result};
use crate::outputs::ModelRunnerOutput;
use crate::sampling_params::SamplingParams;
use crate::sequence::SeqId;

const EXECUTE: u8 = 0;
const ADD_REQUEST: u8 = 1;
const COMM_STATS: u8 = 2;
const SHUTDOWN: u8 = 3;

const READY: u8 = 0;
const OUTPUT: u8 = 1;
const STATS: u8 = 2;

/// `command` as one frame's payload.
pub fn encode_command(command: &Command) -> Vec<u8> {
    let mut w = WireWriter::default();
    match command {
        Command::Execute(delta, step, _) => {
            w.u8(EXECUTE).u64(*step);
            delta.write(&mut w);
        }
        Command::AddRequest(id, p, seed) => {
            w.u8(ADD_REQUEST).u64(id.0).u64(*seed);
            w.bytes.extend_from_slice(&p.temperature.to_le_bytes());
            w.bool(p.top_k.is_some()).usize(p.top_k.unwrap_or(0));
            w.bytes.extend_from_slice(&p.top_p.to_le_bytes());
            w.bool(p.seed.is_some()).u64(p.seed.unwrap_or(0));
            w.bool(p.output_logits);
            w.usize(p.min_tokens).u32s(&p.stop_token_ids);
        }
        Command::CommStats => {
            w.u8(COMM_STATS);
        }
        Command::Shutdown => {
            w.u8(SHUTDOWN);
        }
    }
    w.bytes
}

fn f32_of(r: &mut WireReader) -> io::Result<f32> {
    Ok(f32::from_bits(r.u32()?))
}

/// The command in a frame; an `Execute`'s start is `received`.
pub fn decode_command(bytes: &[u8], received: Instant) -> io::Result<Command> {
    let mut r = WireReader::new(bytes);
    let command = match r.u8()? {
        EXECUTE => {
            let step = r.u64()?;
            Command::Execute(Arc::new(StepDelta::read(&mut r)?), step, received)
        }
        ADD_REQUEST => {
            let (id, seed) = (SeqId(r.u64()?), r.u64()?);
            let temperature = f32_of(&mut r)?;
            let top_k = (r.bool()?, r.usize()?);
            let top_p = f32_of(&mut r)?;
            let p_seed = (r.bool()?, r.u64()?);
            let params = SamplingParams {
                temperature,
                top_k: top_k.0.then_some(top_k.1),
                top_p,
                seed: p_seed.0.then_some(p_seed.1),
                output_logits: r.bool()?,
                min_tokens: r.usize()?,
                stop_token_ids: r.u32s()?,
                ..SamplingParams::default()
            };
            Command::AddRequest(id, params, seed)
        }
        COMM_STATS => Command::CommStats,
        SHUTDOWN => Command::Shutdown,
        k => return Err(bad(format!("unknown command {k}"))),
    };
    r.finish()?;
    Ok(command)
}

fn put_result<T>(w: &mut WireWriter, r: &Result<T>, ok: impl FnOnce(&mut WireWriter, &T)) {
    match r {
        Ok(v) => {
            w.bool(true);
            ok(w, v);
        }
        Err(e) => {
            w.bool(false).str(&e.to_string());
        }
    }
}

fn put_duration(w: &mut WireWriter, d: Duration) {
    w.u64(d.as_nanos() as u64);
}

fn get_duration(r: &mut WireReader) -> io::Result<Duration> {
    Ok(Duration::from_nanos(r.u64()?))
}

/// `reply` as one frame's payload.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut w = WireWriter::default();
    match reply {
        Reply::Ready(result) => {
            w.u8(READY);
            put_result(&mut w, result, |_, _| {});
        }
        Reply::Output(result, busy, recv_wait, items, device) => {
            w.u8(OUTPUT);
            put_result(&mut w, result, |w, o: &ModelRunnerOutput| {
                w.u32s(&o.sampled_token_ids).usize(o.logits.len());
                for row in &o.logits {
                    w.bool(row.is_some()).f32s(row.as_deref().unwrap_or(&[]));
                }
            });
            put_duration(&mut w, *busy);
            put_duration(&mut w, *recv_wait);
            w.usize(items.len());
            for i in items {
                w.usize(i.stage).usize(i.micro_batch).usize(i.num_seqs);
                w.u64(i.tick_start).u64(i.tick_end);
                for d in [i.wall_start, i.wall_end, i.recv_wait] {
                    put_duration(&mut w, d);
                }
            }
            w.bool(device.is_some());
            let device = device.unwrap_or_default();
            w.u64(device.steps);
            put_duration(&mut w, device.total);
        }
        Reply::Stats(stats) => {
            w.u8(STATS).bool(stats.is_some());
            for (_, s) in stats.as_deref().cloned().unwrap_or_default().iter() {
                w.u64(s.calls)
                    .u64(s.failures)
                    .u64(s.tensor_bytes)
                    .u64(s.sent_bytes);
                put_duration(&mut w, s.time);
            }
        }
    }
    w.bytes
}

/// The reply in a frame.
pub fn decode_reply(bytes: &[u8]) -> io::Result<Reply> {
    let mut r = WireReader::new(bytes);
    let remote = |m: String| EngineError::Io(m);
    let reply = match r.u8()? {
        READY => match r.bool()? {
            true => Reply::Ready(Ok(())),
            false => Reply::Ready(Err(remote(r.str()?))),
        },
        OUTPUT => {
            let result = match r.bool()? {
                true => {
                    let sampled_token_ids = r.u32s()?;
                    let n = r.usize()?;
                    let mut logits = Vec::new();
                    for _ in 0..n {
                        let (some, row) = (r.bool()?, r.f32s()?);
                        logits.push(some.then_some(row));
                    }
                    Ok(ModelRunnerOutput {
                        sampled_token_ids,
                        logits,
                    })
                }
                false => Err(remote(r.str()?)),
            };
            let (busy, recv_wait) = (get_duration(&mut r)?, get_duration(&mut r)?);
            let n = r.usize()?;
            let mut items = Vec::new();
            for _ in 0..n {
                items.push(ExecutedItem {
                    stage: r.usize()?,
                    micro_batch: r.usize()?,
                    num_seqs: r.usize()?,
                    tick_start: r.u64()?,
                    tick_end: r.u64()?,
                    wall_start: get_duration(&mut r)?,
                    wall_end: get_duration(&mut r)?,
                    recv_wait: get_duration(&mut r)?,
                });
            }
            let (some, steps, total) = (r.bool()?, r.u64()?, get_duration(&mut r)?);
            let device = some.then_some(DeviceTime { total, steps });
            Reply::Output(result, busy, recv_wait, items, device)
        }
        STATS => {
            let some = r.bool()?;
            let mut stats = CommStats::default();
            for op in CommOp::ALL {
                let s = OpStats {
                    calls: r.u64()?,
                    failures: r.u64()?,
                    tensor_bytes: r.u64()?,
                    sent_bytes: r.u64()?,
                    time: get_duration(&mut r)?,
                };
                stats.set(op, s);
            }
            Reply::Stats(some.then(|| Box::new(stats)))
        }
        k => return Err(bad(format!("unknown reply {k}"))),
    };
    r.finish()?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::block::BlockId;
    use crate::core::scheduler_output::ScheduledSequence;
    use crate::distributed::step_delta::ScheduledDelta;

    #[test]
    fn commands_round_trip() {
        let now = Instant::now();
        let delta = StepDelta {
            finished: vec![SeqId(4)],
            preempted: vec![],
            scheduled: vec![ScheduledDelta::New(ScheduledSequence {
                seq_id: SeqId(5),
                token_ids: vec![1, 2],
                start_position: 0,
                block_table: vec![BlockId(3)],
                needs_logits: true,
            })],
        };
        let b = encode_command(&Command::Execute(Arc::new(delta.clone()), 9, now));
        let Command::Execute(got, 9, _) = decode_command(&b, now).unwrap() else {
            panic!("not the step")
        };
        assert_eq!(*got, delta);
        let params = SamplingParams {
            temperature: 0.7,
            top_k: Some(3),
            top_p: 0.9,
            seed: Some(11),
            output_logits: true,
            min_tokens: 4,
            stop_token_ids: vec![2, 9],
            ..SamplingParams::default()
        };
        let b = encode_command(&Command::AddRequest(SeqId(1), params.clone(), 7));
        let Command::AddRequest(SeqId(1), got, 7) = decode_command(&b, now).unwrap() else {
            panic!("not the request")
        };
        assert_eq!(got, params);
        assert!(decode_command(&[9], now).is_err());
    }

    #[test]
    fn replies_round_trip() {
        let out = ModelRunnerOutput {
            sampled_token_ids: vec![5, 6],
            logits: vec![None, Some(vec![0.5, 1.5])],
        };
        let ms = Duration::from_millis(3);
        let item = ExecutedItem {
            stage: 1,
            micro_batch: 0,
            num_seqs: 2,
            tick_start: 1,
            tick_end: 2,
            wall_start: ms,
            wall_end: 2 * ms,
            recv_wait: ms,
        };
        let device = Some(DeviceTime {
            total: 5 * ms,
            steps: 7,
        });
        let reply = Reply::Output(Ok(out.clone()), ms, ms, vec![item.clone()], device);
        let Reply::Output(Ok(got), busy, _, items, got_device) =
            decode_reply(&encode_reply(&reply)).unwrap()
        else {
            panic!("not an output")
        };
        assert_eq!(
            (got, busy, items, got_device),
            (out, ms, vec![item], device)
        );
        let mut stats = CommStats::default();
        stats.record(CommOp::AllReduce, 400, 400, ms, false);
        let b = encode_reply(&Reply::Stats(Some(Box::new(stats.clone()))));
        let Reply::Stats(Some(got)) = decode_reply(&b).unwrap() else {
            panic!("not stats")
        };
        assert_eq!(*got, stats);
        let err = EngineError::Io("rank 1: gone".into());
        let b = encode_reply(&Reply::Ready(Err(err)));
        let Reply::Ready(Err(got)) = decode_reply(&b).unwrap() else {
            panic!("not an error")
        };
        assert_eq!(got.to_string(), "rank 1: gone");
    }
}
