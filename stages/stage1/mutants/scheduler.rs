//! Wrong schedules: the engine's `Scheduler::schedule`, rewritten with switches so that
//! `INFERENCE_LAB_MUTANT` can turn one of its rules off.

use engine::core::scheduler::Scheduler;
use engine::core::scheduler_output::SchedulerOutput;
use engine::sequence::SequenceStatus;

use super::active;

const SCHEDULE_MUTANTS: [&str; 4] = [
    "schedule_never_sorts",
    "schedule_admits_after_preemption",
    "schedule_skips_waiting_that_does_not_fit",
    "schedule_chunks_without_chunked_prefill",
];

/// The engine's schedule, or a copy of it with one rule broken.
pub fn schedule(s: &mut Scheduler) -> SchedulerOutput {
    if !SCHEDULE_MUTANTS.iter().any(|m| active(m)) {
        return s.schedule();
    }
    let mut budget = s.config().max_num_batched_tokens;
    let mut out = SchedulerOutput::default();
    if !active("schedule_never_sorts") {
        s.sort_by_policy();
    }

    let mut i = 0;
    while i < s.running.len() && budget > 0 {
        let id = s.running[i];
        let seq = s.sequence(id).expect("running sequences exist");
        let num_new = seq.num_uncomputed_tokens().min(budget);
        let total = seq.num_computed_tokens + num_new;
        loop {
            if s.block_manager.allocate_slots(id, total) {
                out.scheduled.push(s.scheduled_sequence(id, num_new));
                budget -= num_new;
                i += 1;
                break;
            }
            let victim = s.select_victim().expect("running holds at least `id`");
            s.preempt(victim);
            out.preempted.push(victim);
            if victim == id {
                break;
            }
        }
    }

    // `j`: the waiting sequence tried next; always 0 unless the mutant skips sequences.
    let mut j = 0;
    while (out.preempted.is_empty() || active("schedule_admits_after_preemption"))
        && budget > 0
        && s.running.len() < s.config().max_num_seqs
    {
        let Some(&id) = s.waiting.get(j) else {
            break;
        };
        let seq = s.sequence(id).expect("waiting sequences exist");
        let uncomputed = seq.num_uncomputed_tokens();
        let num_new = uncomputed.min(budget);
        let fits_a_step = uncomputed <= s.config().max_num_batched_tokens;
        let chunking_off = !s.config().enable_chunked_prefill
            && !active("schedule_chunks_without_chunked_prefill");
        if num_new < uncomputed && chunking_off && fits_a_step {
            break;
        }
        let total = seq.num_computed_tokens + num_new;
        if !s.block_manager.allocate_slots(id, total) {
            if active("schedule_skips_waiting_that_does_not_fit") {
                j += 1;
                continue;
            }
            break;
        }
        s.waiting.remove(j);
        s.running.push(id);
        s.sequence_mut(id).expect("exists").status = SequenceStatus::Running;
        out.scheduled.push(s.scheduled_sequence(id, num_new));
        budget -= num_new;
    }
    out
}
