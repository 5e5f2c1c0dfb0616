//! Exercise 3: your `schedule` against the engine's, step by step on random workloads, then
//! driving the engine.

mod common;

use std::collections::HashMap;

use common::{add_running, add_waiting, empty_scheduler, Policy, EOS};
use engine::config::SchedulerConfig;
use engine::core::scheduler::Scheduler;
use engine::core::scheduler_output::SchedulerOutput;
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence};
use engine::EngineParts;
use proptest::prelude::*;
use stage1::scheduler::schedule;

#[derive(Debug, Clone)]
struct Workload {
    block_size: usize,
    num_blocks: usize,
    config: SchedulerConfig,
    policy: Policy,
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
        common::policy(),
    )
        .prop_flat_map(
            |(block_size, num_blocks, max_num_seqs, budget, chunked, policy)| {
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
                    ..SchedulerConfig::default()
                };
                (
                    Just((block_size, num_blocks, config, policy)),
                    prop::collection::vec(request, 1..10),
                )
            },
        )
        .prop_map(
            |((block_size, num_blocks, config, policy), requests)| Workload {
                block_size,
                num_blocks,
                config,
                policy,
                requests,
            },
        )
}

fn scheduler(w: &Workload) -> Scheduler {
    let mut s = empty_scheduler(w.block_size, w.num_blocks, w.config, w.policy.boxed());
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
    /// preemptions. The policy is FCFS or one of the test's own.
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
            let got = schedule(&mut yours);
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

fn config(max_num_batched_tokens: usize, enable_chunked_prefill: bool) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: 4,
        max_num_batched_tokens,
        enable_chunked_prefill,
        ..SchedulerConfig::default()
    }
}

/// (sequence, number of tokens) of each scheduled sequence, in batch order.
fn granted(out: &SchedulerOutput) -> Vec<(u64, usize)> {
    out.scheduled
        .iter()
        .map(|s| (s.seq_id.0, s.token_ids.len()))
        .collect()
}

/// The chapter's worked example (blocks of 4, 8 blocks, budget 8, chunked prefill on):
/// request 0 decodes at position 8 and needs a third block, request 1 decodes within its
/// second block, request 2 (10 tokens) gets the 6 tokens of budget left, and request 3 none.
#[test]
fn the_chapters_worked_example() {
    let mut s = empty_scheduler(4, 8, config(8, true), Policy::Fcfs.boxed());
    add_running(&mut s, 0, 8, 1, 8);
    add_running(&mut s, 1, 5, 1, 5);
    add_waiting(&mut s, 2, 10, 0);
    add_waiting(&mut s, 3, 3, 0);
    let out = schedule(&mut s);
    assert_eq!(granted(&out), vec![(0, 1), (1, 1), (2, 6)]);
    let starts: Vec<usize> = out.scheduled.iter().map(|q| q.start_position).collect();
    let tables: Vec<usize> = out.scheduled.iter().map(|q| q.block_table.len()).collect();
    let logits: Vec<bool> = out.scheduled.iter().map(|q| q.needs_logits).collect();
    assert_eq!(starts, vec![8, 5, 0]);
    assert_eq!(tables, vec![3, 2, 2]);
    assert_eq!(logits, vec![true, true, false]);
    assert!(out.preempted.is_empty());
    assert_eq!(s.block_manager.num_free_blocks(), 1);
    assert_eq!(Vec::from(s.waiting.clone()), vec![SeqId(3)]);
}

/// Worked by hand: under shortest-prompt-first, request 1 (4 tokens) is admitted before
/// request 0 (12 tokens), which arrived first; the budget of 4 has no room for both.
#[test]
fn admission_follows_the_policy_not_the_arrival_order() {
    let mut s = empty_scheduler(4, 16, config(4, true), Policy::ShortestPromptFirst.boxed());
    add_waiting(&mut s, 0, 12, 0);
    add_waiting(&mut s, 1, 4, 0);
    let out = schedule(&mut s);
    assert_eq!(granted(&out), vec![(1, 4)], "the shorter prompt goes first");
    assert_eq!(s.running, vec![SeqId(1)]);
    assert_eq!(Vec::from(s.waiting.clone()), vec![SeqId(0)]);
}

/// Worked by hand (4 blocks of 4, budget 4): requests 0 and 1 each hold 2 blocks and decode
/// their 9th token, which needs a third block. Request 0 preempts request 1, takes one of its
/// two blocks and 1 token of budget. One block and 3 tokens of budget are left, enough for a
/// 3-token chunk of request 1, but a step that preempted admits nothing.
#[test]
fn a_step_that_preempted_admits_nothing() {
    let mut s = empty_scheduler(4, 4, config(4, true), Policy::Fcfs.boxed());
    add_running(&mut s, 0, 8, 1, 8);
    add_running(&mut s, 1, 8, 1, 8);
    let out = schedule(&mut s);
    assert_eq!(
        out.preempted,
        vec![SeqId(1)],
        "the latest arrival is the victim"
    );
    assert_eq!(
        granted(&out),
        vec![(0, 1)],
        "nothing is admitted after a preemption"
    );
    assert_eq!(s.block_manager.num_free_blocks(), 1);
    assert_eq!(Vec::from(s.waiting.clone()), vec![SeqId(1)]);
}

/// Worked by hand (4 blocks of 4): request 0 runs and holds 2 blocks. Request 1 (12 tokens)
/// needs 3 blocks and does not fit the 2 free ones; request 2 (4 tokens) would. Admission
/// stops at request 1: skipping it would let short requests overtake a long one for ever.
#[test]
fn admission_stops_at_a_waiting_sequence_that_does_not_fit() {
    let mut s = empty_scheduler(4, 4, config(64, true), Policy::Fcfs.boxed());
    add_running(&mut s, 0, 7, 1, 7);
    add_waiting(&mut s, 1, 12, 0);
    add_waiting(&mut s, 2, 4, 0);
    let out = schedule(&mut s);
    assert_eq!(
        granted(&out),
        vec![(0, 1)],
        "only the running request's decode"
    );
    assert!(out.preempted.is_empty());
    assert_eq!(Vec::from(s.waiting.clone()), vec![SeqId(1), SeqId(2)]);
}

/// Worked by hand (budget 8, chunked prefill off): after request 0's decode, 7 tokens of
/// budget are left and request 1's prompt has 8. It would have to be cut, so it waits for a
/// step with room for all of it.
#[test]
fn without_chunked_prefill_a_prompt_waits_for_room() {
    let mut s = empty_scheduler(4, 16, config(8, false), Policy::Fcfs.boxed());
    add_running(&mut s, 0, 4, 1, 4);
    add_waiting(&mut s, 1, 8, 0);
    let out = schedule(&mut s);
    assert_eq!(
        granted(&out),
        vec![(0, 1)],
        "request 1 is not cut into chunks"
    );
    assert_eq!(Vec::from(s.waiting.clone()), vec![SeqId(1)]);
}

/// Worked by hand (budget 8, chunked prefill off): request 0 was preempted after generating
/// 6 tokens, so it has 12 to recompute, more than any step's budget. Waiting for a step with
/// room for all of it would be waiting for ever: it is chunked anyway.
#[test]
fn a_sequence_longer_than_any_step_is_chunked_even_without_chunked_prefill() {
    let mut s = empty_scheduler(4, 16, config(8, false), Policy::Fcfs.boxed());
    add_waiting(&mut s, 0, 6, 6);
    let out = schedule(&mut s);
    assert_eq!(granted(&out), vec![(0, 8)]);
    assert!(
        !out.scheduled[0].needs_logits,
        "a non-final chunk samples nothing"
    );
}

fn your_scheduler() -> EngineParts {
    EngineParts {
        schedule,
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
