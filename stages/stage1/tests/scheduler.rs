//! Exercise 3: your `schedule` against the engine's, step by step on random workloads, then
//! driving the engine.

mod common;

use std::collections::HashMap;

use engine::config::SchedulerConfig;
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduling_policy::Fcfs;
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence};
use engine::EngineParts;
use proptest::prelude::*;

const EOS: u32 = 2;

#[derive(Debug, Clone)]
struct Workload {
    block_size: usize,
    num_blocks: usize,
    config: SchedulerConfig,
    /// (prompt length, max_tokens, step at which the fake model emits EOS)
    requests: Vec<(usize, usize, usize)>,
}

fn workload() -> impl Strategy<Value = Workload> {
    (
        1usize..=8,
        2usize..=32,
        1usize..=6,
        1usize..=64,
        any::<bool>(),
    )
        .prop_flat_map(|(block_size, num_blocks, max_num_seqs, budget, chunked)| {
            let capacity = block_size * num_blocks;
            // As `LLMEngine::add_request` requires: room for one new token; without chunked
            // prefill, a prompt fits one step.
            let max_prompt = if chunked {
                capacity - 1
            } else {
                (capacity - 1).min(budget)
            };
            let request = (1..=max_prompt.max(1), 1usize..=12, 0usize..20);
            let config = SchedulerConfig {
                max_num_seqs,
                max_num_batched_tokens: budget,
                enable_chunked_prefill: chunked,
            };
            (
                Just((block_size, num_blocks, config)),
                prop::collection::vec(request, 1..10),
            )
        })
        .prop_map(|((block_size, num_blocks, config), requests)| Workload {
            block_size,
            num_blocks,
            config,
            requests,
        })
}

fn scheduler(w: &Workload) -> Scheduler {
    let bm = BlockManager::new(
        w.block_size,
        Box::new(RefCountingAllocator::new(w.num_blocks)),
    );
    let mut s = Scheduler::new(
        w.config,
        Box::new(Fcfs),
        bm,
        vec![EOS],
        w.block_size * w.num_blocks,
    );
    for (i, &(len, max_tokens, _)) in w.requests.iter().enumerate() {
        let p = (0..len)
            .map(|t| 3 + (t as u32 * 5 + i as u32) % 200)
            .collect();
        s.add_sequence(Sequence::new(
            SeqId(i as u64),
            p,
            SamplingParams::greedy(max_tokens),
        ));
    }
    s
}

proptest! {
    #![proptest_config(common::proptest_config(96))]

    /// Both schedulers get the same "sampled" tokens (a fake model), so every step's
    /// `SchedulerOutput` must be the same: sequences, tokens, positions, block tables,
    /// preemptions.
    #[test]
    fn schedule_matches_the_engine_step_by_step(w in workload()) {
        let mut yours = scheduler(&w);
        let mut engine = scheduler(&w);
        let eos_at: HashMap<SeqId, usize> =
            w.requests.iter().enumerate().map(|(i, r)| (SeqId(i as u64), r.2)).collect();
        let mut step = 0;
        while engine.has_unfinished() {
            step += 1;
            prop_assert!(step < 10_000, "the engine's scheduler is stuck: a test bug");
            let expected = engine.schedule();
            let got = stage1::scheduler::schedule(&mut yours);
            prop_assert_eq!(&got, &expected, "step {} of {:?}", step, w);
            let sampled: Vec<u32> = expected
                .scheduled
                .iter()
                .filter(|s| s.needs_logits)
                .map(|s| {
                    let n = engine.sequence(s.seq_id).unwrap().output_token_ids.len();
                    if n == eos_at[&s.seq_id] { EOS } else { 3 + (n as u32 % 100) }
                })
                .collect();
            let done_e: Vec<SeqId> =
                engine.update_from_output(&expected, &sampled).iter().map(|s| s.seq_id).collect();
            let done_y: Vec<SeqId> =
                yours.update_from_output(&got, &sampled).iter().map(|s| s.seq_id).collect();
            prop_assert_eq!(done_y, done_e);
        }
        prop_assert!(!yours.has_unfinished());
    }
}

fn your_scheduler() -> EngineParts {
    EngineParts {
        schedule: stage1::scheduler::schedule,
        ..EngineParts::default()
    }
}

/// "With your scheduler, the engine generates exactly the same tokens" — chunked prefill and
/// preemption included.
#[test]
fn engine_with_your_scheduler_generates_the_same_tokens() {
    let preemptions =
        common::assert_same_as_engine("your schedule", your_scheduler, common::tight_config());
    assert!(preemptions > 0, "the workload should preempt");
    common::check_smollm2("your schedule", your_scheduler());
}

#[test]
fn engine_with_your_scheduler_without_chunked_prefill() {
    common::assert_same_as_engine("your schedule", your_scheduler, common::unchunked_config());
}

/// All of stage 1 at once: your allocator, policy and scheduler in one engine.
#[test]
fn engine_with_all_of_stage1_generates_the_same_tokens() {
    common::assert_same_as_engine(
        "all of stage 1",
        stage1::engine_parts,
        common::tight_config(),
    );
}
