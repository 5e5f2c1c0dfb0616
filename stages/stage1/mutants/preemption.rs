//! Wrong policies, victims and preemptions: the engine's, with one mistake switched on by
//! `INFERENCE_LAB_MUTANT`.

use std::cmp::Ordering;

use engine::core::scheduler::Scheduler;
use engine::core::scheduling_policy::{self as reference, SchedulingPolicy};
use engine::sequence::{SeqId, Sequence, SequenceStatus};

use super::active;

/// The engine's FCFS, or (`fcfs_latest_first`) the same comparison the wrong way round.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fcfs;

impl SchedulingPolicy for Fcfs {
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        if active("fcfs_latest_first") {
            b.seq_id.cmp(&a.seq_id)
        } else {
            reference::Fcfs.compare(a, b)
        }
    }

    fn name(&self) -> &'static str {
        reference::Fcfs.name()
    }
}

/// The engine's victim, or a wrong one.
pub fn select_victim(s: &Scheduler) -> Option<SeqId> {
    if active("select_victim_earliest_arrival") {
        s.running.iter().copied().min()
    } else if active("select_victim_ignores_policy") {
        // Right under FCFS, whatever the scheduler's policy says.
        s.running.iter().copied().max()
    } else {
        s.select_victim()
    }
}

const PREEMPT_MUTANTS: [&str; 4] = [
    "preempt_pushes_back",
    "preempt_keeps_blocks",
    "preempt_keeps_computed_tokens",
    "preempt_drops_output",
];

/// The engine's preemption by recompute, or the same with one step wrong.
pub fn preempt(s: &mut Scheduler, id: SeqId) {
    if !PREEMPT_MUTANTS.iter().any(|m| active(m)) {
        return s.preempt(id);
    }
    s.running.retain(|&r| r != id);
    if !active("preempt_keeps_blocks") {
        s.block_manager.free(id);
    }
    let seq = s.sequence_mut(id).expect("a running sequence exists");
    if !active("preempt_keeps_computed_tokens") {
        seq.num_computed_tokens = 0;
    }
    if active("preempt_drops_output") {
        seq.output_token_ids.clear(); // "recompute" read as "start over"
    }
    seq.status = SequenceStatus::Waiting;
    seq.num_preemptions += 1;
    if active("preempt_pushes_back") {
        s.waiting.push_back(id);
    } else {
        s.waiting.push_front(id);
    }
}
