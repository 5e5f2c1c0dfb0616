//! [`StepDelta`]: what a step tells every rank, as vLLM v1 does: only what changed.
//!
//! A [`SchedulerOutput`] carries each scheduled sequence's whole block table, so a decode step
//! of 64 sequences at 1,000 tokens of context each (blocks of 16) repeats 64 × 63 block ids
//! that every rank was already told, to add one token per sequence. Each rank instead keeps,
//! per running request, its block table and the position its next tokens start at
//! ([`StepDecoder`]), and a step carries:
//!
//! - a **new** request (first scheduled, or whose table no longer extends what the rank
//!   holds: preempted and rescheduled, swapped back into other blocks) in full;
//! - a **cached** request as its id, this step's tokens (one, at decode) and the blocks
//!   appended to its table since the last step (usually none; one every `block_size` tokens);
//! - the ids of requests **finished** (done or aborted) and **preempted** since the last step,
//!   which the ranks forget.
//!
//! The driver's [`StepEncoder`] keeps the same per-request state as every rank's decoder, so it
//! knows what each rank holds without asking. `decode(encode(out)) == out` for every step, by
//! construction (the encoder sends a request in full whenever the delta could not rebuild it),
//! and the tests check it over random step sequences. Sampling parameters travel once, when a
//! request arrives (`Executor::add_request`), as in vLLM's `NewRequestData`.
//!
//! Sizes are measured in the [`super::wire`] format: [`StepEncoder::full_bytes`] is what the
//! whole output costs in the same format, so the two counters compare like with like.

use std::collections::HashMap;
use std::io;

use super::wire::{bad, WireReader, WireWriter};
use crate::core::block::BlockId;
use crate::core::scheduler_output::{ScheduledSequence, SchedulerOutput};
use crate::sequence::SeqId;

/// One scheduled sequence of a [`StepDelta`], in batch order.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduledDelta {
    /// Sent whole: the rank did not hold it, or holds a table this one does not extend.
    New(ScheduledSequence),
    /// The rank holds its table and knows where its tokens start.
    Cached {
        seq_id: SeqId,
        token_ids: Vec<u32>,
        /// Appended to the table the rank holds.
        new_blocks: Vec<BlockId>,
        needs_logits: bool,
    },
}

/// What one step sends every rank (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepDelta {
    /// Requests finished or aborted since the last step: the ranks forget them, sampling
    /// parameters included.
    pub finished: Vec<SeqId>,
    /// This step's `SchedulerOutput::preempted`: the ranks forget their tables (the request
    /// comes back as new when it is rescheduled).
    pub preempted: Vec<SeqId>,
    pub scheduled: Vec<ScheduledDelta>,
}

/// What a rank (and the driver, for it) holds of one running request.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    block_table: Vec<BlockId>,
    /// Where the request's next tokens start: the last step's start plus its tokens.
    next_position: usize,
}

/// The per-request state a rank keeps, shared by the encoder and the decoder so that both
/// apply a step the same way.
#[derive(Debug, Default, Clone)]
struct HeldRequests {
    held: HashMap<SeqId, Held>,
}

impl HeldRequests {
    fn forget(&mut self, ids: &[SeqId]) {
        ids.iter().for_each(|id| {
            self.held.remove(id);
        });
    }

    fn remember(&mut self, s: &ScheduledSequence) {
        let held = Held {
            block_table: s.block_table.clone(),
            next_position: s.start_position + s.token_ids.len(),
        };
        self.held.insert(s.seq_id, held);
    }
}

/// What the step broadcasts have cost so far, per rank (every rank is sent the same bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BroadcastStats {
    /// Steps sent.
    pub steps: u64,
    /// Wire bytes of the deltas actually sent.
    pub delta_bytes: u64,
    /// Wire bytes the whole `SchedulerOutput`s would have taken, in the same format.
    pub full_bytes: u64,
}

/// The driver's side: turns each step's [`SchedulerOutput`] into a [`StepDelta`] and counts
/// what both forms cost on the wire.
#[derive(Debug, Default, Clone)]
pub struct StepEncoder {
    requests: HeldRequests,
    /// Finished since the last step, to go out with the next one.
    finished: Vec<SeqId>,
    /// Steps encoded, and the wire bytes of their deltas and of their whole outputs.
    pub steps: u64,
    pub delta_bytes: u64,
    pub full_bytes: u64,
    /// Reused to measure both forms each step (no allocation once grown).
    scratch: WireWriter,
}

impl StepEncoder {
    /// The counters, as one value.
    pub fn stats(&self) -> BroadcastStats {
        BroadcastStats {
            steps: self.steps,
            delta_bytes: self.delta_bytes,
            full_bytes: self.full_bytes,
        }
    }

    /// Requests that finished or were aborted: every rank forgets them with the next step.
    pub fn finish(&mut self, ids: &[SeqId]) {
        self.requests.forget(ids);
        self.finished.extend_from_slice(ids);
    }

    /// The delta of `out` against what the ranks hold, which then holds `out`'s tables.
    pub fn encode(&mut self, out: &SchedulerOutput) -> StepDelta {
        self.requests.forget(&out.preempted);
        let scheduled = out
            .scheduled
            .iter()
            .map(|s| match self.requests.held.get_mut(&s.seq_id) {
                Some(h)
                    if h.next_position == s.start_position
                        && s.block_table.starts_with(&h.block_table) =>
                {
                    let new_blocks = s.block_table[h.block_table.len()..].to_vec();
                    h.block_table.extend_from_slice(&new_blocks);
                    h.next_position = s.start_position + s.token_ids.len();
                    ScheduledDelta::Cached {
                        seq_id: s.seq_id,
                        token_ids: s.token_ids.clone(),
                        new_blocks,
                        needs_logits: s.needs_logits,
                    }
                }
                _ => {
                    self.requests.remember(s);
                    ScheduledDelta::New(s.clone())
                }
            })
            .collect();
        let delta = StepDelta {
            finished: std::mem::take(&mut self.finished),
            preempted: out.preempted.clone(),
            scheduled,
        };
        self.steps += 1;
        let w = &mut self.scratch;
        w.bytes.clear();
        delta.write(w);
        self.delta_bytes += w.bytes.len() as u64;
        w.bytes.clear();
        write_full(w, out);
        self.full_bytes += w.bytes.len() as u64;
        delta
    }
}

/// A rank's side: rebuilds each step's [`SchedulerOutput`] from its delta.
#[derive(Debug, Default, Clone)]
pub struct StepDecoder {
    requests: HeldRequests,
}

impl StepDecoder {
    /// The step `delta` stands for. Fails (naming the request) on a cached request this rank
    /// does not hold: the driver and the rank are out of step.
    pub fn decode(&mut self, delta: &StepDelta) -> Result<SchedulerOutput, String> {
        self.requests.forget(&delta.finished);
        self.requests.forget(&delta.preempted);
        let mut scheduled = Vec::with_capacity(delta.scheduled.len());
        for d in &delta.scheduled {
            let s = match d {
                ScheduledDelta::New(s) => s.clone(),
                ScheduledDelta::Cached {
                    seq_id,
                    token_ids,
                    new_blocks,
                    needs_logits,
                } => {
                    let held = self.requests.held.get_mut(seq_id).ok_or_else(|| {
                        format!(
                            "the step names request {} as cached, but this rank does not hold \
                             it: the driver and the rank are out of step",
                            seq_id.0
                        )
                    })?;
                    // The table grows in place; the step's copy is the whole table.
                    held.block_table.extend_from_slice(new_blocks);
                    let start_position = held.next_position;
                    held.next_position += token_ids.len();
                    scheduled.push(ScheduledSequence {
                        seq_id: *seq_id,
                        token_ids: token_ids.clone(),
                        start_position,
                        block_table: held.block_table.clone(),
                        needs_logits: *needs_logits,
                    });
                    continue;
                }
            };
            self.requests.remember(&s);
            scheduled.push(s);
        }
        Ok(SchedulerOutput {
            scheduled,
            preempted: delta.preempted.clone(),
        })
    }
}

/// The wire size of `out` sent whole: every sequence as a new one (what each step cost before
/// deltas, in the same format).
pub fn full_bytes(out: &SchedulerOutput) -> u64 {
    let mut w = WireWriter::default();
    write_full(&mut w, out);
    w.bytes.len() as u64
}

/// `out` in the wire form of a [`StepDelta`] whose every sequence is new (none finished).
fn write_full(w: &mut WireWriter, out: &SchedulerOutput) {
    put_ids(w, &[]);
    put_ids(w, &out.preempted);
    w.usize(out.scheduled.len());
    out.scheduled.iter().for_each(|s| write_new(w, s));
}

/// A sequence sent whole: kind 0, its id and tokens, where they start, its table, and whether
/// it samples.
fn write_new(w: &mut WireWriter, s: &ScheduledSequence) {
    w.u8(0).varint(s.seq_id.0).u32s(&s.token_ids);
    w.usize(s.start_position);
    put_blocks(w, &s.block_table);
    w.bool(s.needs_logits);
}

fn put_ids(w: &mut WireWriter, ids: &[SeqId]) {
    w.usize(ids.len());
    ids.iter().for_each(|id| {
        w.varint(id.0);
    });
}

fn get_ids(r: &mut WireReader) -> io::Result<Vec<SeqId>> {
    let n = r.usize()?;
    (0..n).map(|_| r.varint().map(SeqId)).collect()
}

fn put_blocks(w: &mut WireWriter, blocks: &[BlockId]) {
    w.usize(blocks.len());
    blocks.iter().for_each(|b| {
        w.u32(b.0);
    });
}

fn get_blocks(r: &mut WireReader) -> io::Result<Vec<BlockId>> {
    Ok(r.u32s()?.into_iter().map(BlockId).collect())
}

impl StepDelta {
    /// The wire form: finished ids, preempted ids, then each sequence (a kind byte, its id,
    /// its tokens; a new one's start position, whole table and flag; a cached one's appended
    /// blocks and flag).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = WireWriter::default();
        self.write(&mut w);
        w.bytes
    }

    pub fn write(&self, w: &mut WireWriter) {
        put_ids(w, &self.finished);
        put_ids(w, &self.preempted);
        w.usize(self.scheduled.len());
        for d in &self.scheduled {
            match d {
                ScheduledDelta::New(s) => write_new(w, s),
                ScheduledDelta::Cached {
                    seq_id,
                    token_ids,
                    new_blocks,
                    needs_logits,
                } => {
                    w.u8(1).varint(seq_id.0).u32s(token_ids);
                    put_blocks(w, new_blocks);
                    w.bool(*needs_logits);
                }
            }
        }
    }

    pub fn read(r: &mut WireReader) -> io::Result<Self> {
        let finished = get_ids(r)?;
        let preempted = get_ids(r)?;
        let n = r.usize()?;
        let mut scheduled = Vec::new();
        for _ in 0..n {
            let kind = r.u8()?;
            let seq_id = SeqId(r.varint()?);
            let token_ids = r.u32s()?;
            scheduled.push(match kind {
                0 => ScheduledDelta::New(ScheduledSequence {
                    seq_id,
                    token_ids,
                    start_position: r.usize()?,
                    block_table: get_blocks(r)?,
                    needs_logits: r.bool()?,
                }),
                1 => ScheduledDelta::Cached {
                    seq_id,
                    token_ids,
                    new_blocks: get_blocks(r)?,
                    needs_logits: r.bool()?,
                },
                k => return Err(bad(format!("a scheduled sequence of unknown kind {k}"))),
            });
        }
        Ok(StepDelta {
            finished,
            preempted,
            scheduled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(id: u64, start: usize, len: usize, blocks: &[u32]) -> ScheduledSequence {
        ScheduledSequence {
            seq_id: SeqId(id),
            token_ids: (0..len as u32).map(|t| t + id as u32).collect(),
            start_position: start,
            block_table: blocks.iter().copied().map(BlockId).collect(),
            needs_logits: true,
        }
    }

    fn step(scheduled: Vec<ScheduledSequence>, preempted: &[u64]) -> SchedulerOutput {
        SchedulerOutput {
            scheduled,
            preempted: preempted.iter().copied().map(SeqId).collect(),
        }
    }

    /// A prefill, two decodes (the second crossing into a new block), a preemption and the
    /// request's return in other blocks.
    #[test]
    fn decodes_send_tokens_and_new_blocks_only() {
        let (mut enc, mut dec) = (StepEncoder::default(), StepDecoder::default());
        let steps = [
            step(vec![seq(7, 0, 4, &[3])], &[]),
            step(vec![seq(7, 4, 1, &[3, 9])], &[]),
            step(vec![seq(7, 5, 1, &[3, 9])], &[]),
            step(vec![], &[7]),
            step(vec![seq(7, 0, 6, &[1, 2])], &[]),
        ];
        let mut kinds = Vec::new();
        for out in &steps {
            let delta = enc.encode(out);
            let wire = StepDelta::read(&mut WireReader::new(&delta.to_bytes())).unwrap();
            assert_eq!(wire, delta);
            assert_eq!(&dec.decode(&wire).unwrap(), out);
            kinds.extend(delta.scheduled.iter().map(|d| match d {
                ScheduledDelta::New(_) => "new".to_string(),
                ScheduledDelta::Cached { new_blocks, .. } => format!("+{}", new_blocks.len()),
            }));
        }
        assert_eq!(kinds, ["new", "+1", "+0", "new"]);
        assert!(enc.delta_bytes < enc.full_bytes);
    }

    #[test]
    fn a_cached_request_the_rank_does_not_hold_is_an_error() {
        let delta = StepDelta {
            scheduled: vec![ScheduledDelta::Cached {
                seq_id: SeqId(3),
                token_ids: vec![1],
                new_blocks: vec![],
                needs_logits: true,
            }],
            ..StepDelta::default()
        };
        let err = StepDecoder::default().decode(&delta).unwrap_err();
        assert!(err.contains("request 3"), "{err}");
    }

    proptest! {
        /// Random steps of a scheduler-like process (requests arrive, grow by random chunks,
        /// gain blocks, are preempted into other blocks, finish): every rank rebuilds every
        /// step exactly, from the bytes; the byte counters are those of the wire form.
        #[test]
        fn every_step_round_trips(ops in prop::collection::vec((0u64..6, 0usize..4, any::<bool>()), 1..60)) {
            let (mut enc, mut dec) = (StepEncoder::default(), StepDecoder::default());
            // id -> (position, blocks)
            let mut live: std::collections::BTreeMap<u64, (usize, Vec<u32>)> = Default::default();
            let mut next_block = 0u32;
            let (mut sent, mut whole) = (0u64, 0u64);
            for (id, action, flag) in ops {
                let mut preempted = Vec::new();
                match action {
                    0 if live.contains_key(&id) => {
                        live.remove(&id);
                        enc.finish(&[SeqId(id)]);
                    }
                    1 if live.contains_key(&id) => {
                        live.remove(&id);
                        preempted.push(id);
                    }
                    _ => {
                        let e = live.entry(id).or_insert((0, Vec::new()));
                        if flag || e.1.is_empty() {
                            e.1.push(next_block);
                            next_block += 1;
                        }
                    }
                }
                let scheduled = live
                    .iter()
                    .map(|(&id, (pos, blocks))| seq(id, *pos, 1 + (id as usize % 3), blocks))
                    .collect::<Vec<_>>();
                for s in &scheduled {
                    live.get_mut(&s.seq_id.0).unwrap().0 += s.token_ids.len();
                }
                let out = step(scheduled, &preempted);
                let bytes = enc.encode(&out).to_bytes();
                sent += bytes.len() as u64;
                let all_new = StepDelta {
                    finished: Vec::new(),
                    preempted: out.preempted.clone(),
                    scheduled: out.scheduled.iter().cloned().map(ScheduledDelta::New).collect(),
                };
                prop_assert_eq!(full_bytes(&out), all_new.to_bytes().len() as u64);
                whole += full_bytes(&out);
                let delta = StepDelta::read(&mut WireReader::new(&bytes)).unwrap();
                prop_assert_eq!(dec.decode(&delta).unwrap(), out);
            }
            prop_assert_eq!((enc.delta_bytes, enc.full_bytes), (sent, whole));
            prop_assert!(enc.delta_bytes <= enc.full_bytes + 16 * enc.steps);
        }
    }
}
