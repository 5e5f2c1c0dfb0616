//! Exercise 1: your `compose_batch` against the batch the engine's `Scheduler` builds from
//! the same queues (with a cache that never runs out), then on cases worked by hand.

mod common;

use engine::config::SchedulerConfig;
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduling_policy::Fcfs;
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence, SequenceStatus};
use proptest::prelude::*;
use stage2::batch_composer::{compose_batch, BatchPlan};

fn sched_config(max_num_seqs: usize, budget: usize, chunked: bool) -> SchedulerConfig {
    with_threshold(max_num_seqs, budget, chunked, 0)
}

/// `sched_config` with a long-prefill threshold (0 is off).
fn with_threshold(
    max_num_seqs: usize,
    budget: usize,
    chunked: bool,
    threshold: usize,
) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs,
        max_num_batched_tokens: budget,
        enable_chunked_prefill: chunked,
        long_prefill_token_threshold: threshold,
    }
}

/// The batch the engine's scheduler builds when `running[i]` running sequences and
/// `waiting[i]` waiting prompts have that many uncomputed tokens, in FCFS order, with blocks
/// for everything.
fn engine_plan(config: SchedulerConfig, running: &[usize], waiting: &[usize]) -> BatchPlan {
    let block_size = 4;
    let computed = 5; // each running sequence has 5 tokens in the cache already
    let total: usize =
        running.iter().map(|u| u + computed).sum::<usize>() + waiting.iter().sum::<usize>();
    // Prefix caching off: the prompts below share their first ids, and a hit would change
    // how many tokens are uncomputed.
    let blocks = BlockManager::new(block_size, Box::new(RefCountingAllocator::new(total + 64)))
        .with_prefix_caching(false);
    let mut s = Scheduler::new(config, Box::new(Fcfs), blocks, vec![], 1 << 20);
    let params = || {
        let mut p = SamplingParams::greedy(1000);
        p.ignore_eos = true;
        p
    };
    for (i, &u) in running.iter().enumerate() {
        let id = SeqId(i as u64);
        let prompt = (0..(computed + u) as u32).collect();
        s.add_sequence(Sequence::new(id, prompt, params()));
        s.waiting.pop_back();
        assert!(s.block_manager.allocate_slots(id, computed));
        let seq = s.sequence_mut(id).unwrap();
        seq.num_computed_tokens = computed;
        seq.status = SequenceStatus::Running;
        s.running.push(id);
    }
    for (j, &u) in waiting.iter().enumerate() {
        let id = SeqId((running.len() + j) as u64);
        s.add_sequence(Sequence::new(id, (0..u as u32).collect(), params()));
    }
    let out = s.schedule();
    assert!(
        out.preempted.is_empty(),
        "the cache is large enough for everything"
    );
    let mut plan = BatchPlan::default();
    for sched in &out.scheduled {
        let n = sched.token_ids.len();
        if (sched.seq_id.0 as usize) < running.len() {
            plan.running.push(n);
        } else {
            plan.waiting.push(n);
        }
    }
    plan
}

/// Mostly decodes (1 token), some chunks still to prefill.
fn uncomputed() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(1usize), 1 => 1usize..100]
}

proptest! {
    #![proptest_config(common::proptest_config(512))]

    #[test]
    fn matches_the_engines_scheduler(
        max_num_seqs in 1usize..10,
        budget in 1usize..80,
        chunked in any::<bool>(),
        threshold in prop_oneof![Just(0usize), 1usize..100],
        running in prop::collection::vec(uncomputed(), 0..8),
        waiting in prop::collection::vec(1usize..120, 0..8),
    ) {
        let config = with_threshold(max_num_seqs, budget, chunked, threshold);
        prop_assert_eq!(
            compose_batch(&config, &running, &waiting),
            engine_plan(config, &running, &waiting),
            "max_num_seqs {}, budget {}, chunked prefill {}, threshold {}, running {:?}, \
             waiting {:?}",
            max_num_seqs, budget, chunked, threshold, running, waiting
        );
    }
}

/// The chapter's example: four decodes and a 4096-token prompt under a budget of 512. The
/// decodes go first; the prompt's first chunk is what they leave.
#[test]
fn decodes_first_then_the_chunk_the_budget_leaves() {
    let config = sched_config(16, 512, true);
    let plan = compose_batch(&config, &[1, 1, 1, 1], &[4096, 300]);
    assert_eq!(plan.running, vec![1, 1, 1, 1], "every decode runs, first");
    assert_eq!(
        plan.waiting,
        vec![508],
        "the prompt gets 512 - 4; the 300-token one waits"
    );
    assert_eq!(plan.num_batched_tokens(), 512);
}

/// When the budget runs out inside the running queue, the rest of it waits a step, and no
/// prompt starts.
#[test]
fn a_spent_budget_ends_the_step() {
    let config = sched_config(16, 10, true);
    let plan = compose_batch(&config, &[8, 1, 1, 1, 1], &[5]);
    assert_eq!(
        plan.running,
        vec![8, 1, 1],
        "8 + 1 + 1 spends the budget of 10"
    );
    assert!(
        plan.waiting.is_empty(),
        "nothing is admitted with no budget left"
    );
}

/// Without chunked prefill, a prompt that fits the budget left exactly is not cut: it runs.
#[test]
fn a_prompt_of_exactly_the_budget_left_runs_whole() {
    let config = sched_config(16, 8, false);
    let plan = compose_batch(&config, &[1, 1], &[6, 3]);
    assert_eq!(
        plan.waiting,
        vec![6],
        "6 tokens fit the 6 left; then the budget is spent"
    );
}

/// Without chunked prefill, a prompt that would be cut waits, and the ones behind it too.
#[test]
fn a_prompt_that_would_be_cut_waits_and_blocks_the_queue() {
    let config = sched_config(16, 8, false);
    let plan = compose_batch(&config, &[1, 1, 1], &[6, 2]);
    assert_eq!(plan.running, vec![1, 1, 1]);
    assert!(
        plan.waiting.is_empty(),
        "6 tokens do not fit the 5 left, so the prompt waits; the 2-token one behind it must \
         not overtake it, got {:?}",
        plan.waiting
    );
    let chunked = sched_config(16, 8, true);
    assert_eq!(
        compose_batch(&chunked, &[1, 1, 1], &[6, 2]).waiting,
        vec![5]
    );
}

/// A prompt longer than any step's budget is chunked even without chunked prefill (a long
/// sequence preempted for recompute would otherwise wait forever).
#[test]
fn a_prompt_that_can_never_fit_is_chunked_anyway() {
    let config = sched_config(16, 8, false);
    assert_eq!(compose_batch(&config, &[], &[20]).waiting, vec![8]);
    assert_eq!(compose_batch(&config, &[1], &[20]).waiting, vec![7]);
}

/// `max_num_seqs` counts every running sequence: with 3 seats and 2 running, one prompt is
/// admitted, not two.
#[test]
fn seats_are_counted_with_the_running_sequences() {
    let config = sched_config(3, 100, true);
    let plan = compose_batch(&config, &[1, 1], &[4, 4, 4]);
    assert_eq!(
        plan.waiting,
        vec![4],
        "2 running + 1 admitted fill the 3 seats"
    );
    let full = sched_config(2, 100, true);
    assert!(compose_batch(&full, &[1, 1], &[4]).waiting.is_empty());
}

/// With a long-prefill threshold, one prompt's chunk is capped, so the budget it leaves
/// reaches the prompt behind it: the chapter's example with a threshold of 256.
#[test]
fn the_long_prefill_threshold_caps_a_chunk() {
    let config = with_threshold(16, 512, true, 256);
    let plan = compose_batch(&config, &[1, 1, 1, 1], &[4096, 300]);
    assert_eq!(
        plan.running,
        vec![1, 1, 1, 1],
        "a decode is below any threshold"
    );
    assert_eq!(
        plan.waiting,
        vec![256, 252],
        "the 4096-token prompt gets 256, the 300-token one the 252 left"
    );
    // A running prompt's next chunk is capped too.
    let plan = compose_batch(&with_threshold(16, 100, true, 30), &[80, 1], &[50]);
    assert_eq!(plan.running, vec![30, 1]);
    assert_eq!(plan.waiting, vec![30]);
}

/// With chunked prefill off the threshold still cuts a long prompt (as in vLLM V1), and the
/// capped chunk, like a whole prompt, waits for a step with room for all of it.
#[test]
fn the_threshold_applies_without_chunked_prefill() {
    let config = with_threshold(64, 64, false, 16);
    assert_eq!(
        compose_batch(&config, &[], &[100, 10]).waiting,
        vec![16, 10]
    );
    assert!(
        compose_batch(&config, &[1; 50], &[100]).waiting.is_empty(),
        "16 tokens do not fit the 14 left"
    );
}

/// Nothing to do: an empty plan.
#[test]
fn empty_queues_give_an_empty_plan() {
    let config = sched_config(4, 16, true);
    assert_eq!(compose_batch(&config, &[], &[]), BatchPlan::default());
}
