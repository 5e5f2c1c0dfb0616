//! The scheduler's preemption choices beyond recompute: which victim, swapping it out, and
//! resuming swapped sequences (a child of `scheduler.rs`, so it shares its private state).

use super::Scheduler;
use crate::core::block::blocks_needed;
use crate::core::preemption::{PreemptionMode, VictimSelection};
use crate::core::scheduler_output::SchedulerOutput;
use crate::core::swap_space::preemption_choice;
use crate::sequence::{SeqId, SequenceStatus};

impl Scheduler {
    // ANCHOR: select_victim_after
    /// The victim when `running[i]` cannot get its blocks: chosen as the preemption config's
    /// [`VictimSelection`] says among `running[i + 1..]` (not yet scheduled this step), or
    /// `running[i]` itself when none is left. The sequence being scheduled is never chosen
    /// while another could be, so the first in policy order always progresses, whatever
    /// the selection: no request can be preempted forever.
    pub fn select_victim_after(&self, i: usize) -> SeqId {
        let candidates = &self.running[i + 1..];
        let seqs = &self.seqs;
        let pick = match self.preemption.victim {
            VictimSelection::Policy => candidates
                .iter()
                .max_by(|a, b| self.policy.compare(&seqs[a], &seqs[b])),
            VictimSelection::LowestPriority => candidates
                .iter()
                .max_by_key(|id| (seqs[id].params.priority, **id)),
            VictimSelection::LatestArrival => candidates.iter().max(),
            VictimSelection::MostBlocks => candidates
                .iter()
                .max_by_key(|&&id| (self.block_manager.block_table(id).len(), id)),
        };
        pick.copied().unwrap_or(self.running[i])
    }
    // ANCHOR_END: select_victim_after

    // ANCHOR: preempt_victim
    /// Preempts `victim` by swap when the mode says so and its blocks fit the swap space,
    /// by recompute otherwise (a swap that does not fit falls back, and says so in the log).
    pub fn preempt_victim(&mut self, victim: SeqId, out: &mut SchedulerOutput) {
        let blocks = self.block_manager.block_table(victim).len();
        let free_host = self.swap_space.num_free_blocks();
        if preemption_choice(self.preemption.mode, blocks, free_host) == PreemptionMode::Swap {
            let _span = tracing::debug_span!("swap_out", seq = victim.0, blocks).entered();
            if let Some(copies) = self.swap_space.swap_out(&mut self.block_manager, victim) {
                self.running.retain(|&r| r != victim);
                let seq = self
                    .seqs
                    .get_mut(&victim)
                    .expect("a running sequence exists");
                seq.status = SequenceStatus::Swapped;
                seq.num_preemptions += 1;
                self.swapped.push_back(victim);
                self.swaps.swap_out.extend(copies);
                self.swaps.swapped_out.push(victim);
                return;
            }
        }
        if self.preemption.mode == PreemptionMode::Swap {
            tracing::info!(
                seq = victim.0,
                blocks,
                free_swap_blocks = self.swap_space.num_free_blocks(),
                "swap space full: preempting by recompute instead (raise --swap-space)"
            );
        }
        self.preempt(victim);
        out.preempted.push(victim);
    }
    // ANCHOR_END: preempt_victim

    // ANCHOR: resume_swapped
    /// Copies swapped sequences back, most important first, while the budget, the sequence
    /// slots and the free blocks last, and schedules each for its uncomputed tokens in the
    /// same step. Returns the budget left.
    pub(super) fn resume_swapped(&mut self, out: &mut SchedulerOutput, mut budget: usize) -> usize {
        while budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(&id) = self.swapped.front() else {
                break;
            };
            let seq = &self.seqs[&id];
            let computed = seq.num_computed_tokens;
            let num_new = super::running_chunk(seq.num_uncomputed_tokens(), budget, &self.config);
            let total = computed + num_new;
            let block_size = self.block_manager.block_size();
            // All or nothing: blocks for the copied-back tokens and the new ones, or wait.
            if blocks_needed(total, block_size) > self.block_manager.num_free_blocks() {
                break;
            }
            let _span = tracing::debug_span!("swap_in", seq = id.0, computed).entered();
            let Some(copies) = self
                .swap_space
                .swap_in(&mut self.block_manager, id, computed)
            else {
                break;
            };
            let grown = self.block_manager.allocate_slots(id, total);
            debug_assert!(grown, "free blocks were counted above");
            self.swapped.pop_front();
            self.running.push(id);
            self.seqs.get_mut(&id).expect("exists").status = SequenceStatus::Running;
            self.swaps.swap_in.extend(copies);
            self.swaps.swapped_in.push(id);
            self.push_scheduled(out, id, num_new);
            budget -= num_new;
        }
        budget
    }
    // ANCHOR_END: resume_swapped
}
