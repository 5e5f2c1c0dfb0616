//! Exercise 2: your `Fcfs`, `select_victim` and `preempt` against the engine's, under FCFS
//! and under policies that are not FCFS.

mod common;

use std::cmp::Ordering;

use common::{add_running, add_waiting, empty_scheduler, LatestFirst, Policy, ShortestPromptFirst};
use engine::config::SchedulerConfig;
use engine::core::scheduler::Scheduler;
use engine::core::scheduling_policy::{self as reference, SchedulingPolicy};
use engine::sequence::{SeqId, SequenceStatus};
use engine::EngineParts;
use proptest::prelude::*;
use stage1::preemption::{preempt, select_victim, Fcfs};

fn config() -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: 64,
        max_num_batched_tokens: 1024,
        enable_chunked_prefill: true,
        ..SchedulerConfig::default()
    }
}

/// Prompt length of request `id` in the random tests: varied, so that shortest-prompt-first
/// is not arrival order.
fn prompt_len(id: u64) -> usize {
    1 + (id as usize * 7) % 9
}

/// A scheduler under `policy` whose running queue holds `ids` (in this order), each with its
/// whole cache and `id % 3` generated tokens, and whose waiting queue holds `waiting`.
fn scheduler_running(ids: &[u64], waiting: &[u64], policy: Policy) -> Scheduler {
    let mut s = empty_scheduler(2, 256, config(), policy.boxed());
    for &id in ids {
        let (p, o) = (prompt_len(id), id as usize % 3);
        add_running(&mut s, id, p, o, p + o);
    }
    for &id in waiting {
        add_waiting(&mut s, id, prompt_len(id), 0);
    }
    s
}

/// Everything `preempt` may change, for comparison.
fn snapshot(s: &Scheduler, ids: &[u64]) -> String {
    let seqs: Vec<String> = ids
        .iter()
        .map(|&id| {
            let q = s.sequence(SeqId(id)).unwrap();
            format!(
                "{id}: prompt {:?} output {:?} computed {} {:?} preemptions {} blocks {:?}",
                q.prompt_token_ids,
                q.output_token_ids,
                q.num_computed_tokens,
                q.status,
                q.num_preemptions,
                s.block_manager.block_table(SeqId(id))
            )
        })
        .collect();
    format!(
        "running {:?}\nwaiting {:?}\nfree blocks {}\n{}",
        s.running,
        s.waiting,
        s.block_manager.num_free_blocks(),
        seqs.join("\n")
    )
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

    #[test]
    fn fcfs_orders_like_the_engine(a in 0u64..100, b in 0u64..100) {
        let (a, b) = (common::sequence(a, 3, 0), common::sequence(b, 3, 0));
        prop_assert_eq!(Fcfs.compare(&a, &b), reference::Fcfs.compare(&a, &b));
        prop_assert_eq!(Fcfs.compare(&a, &a), Ordering::Equal);
    }

    /// On a random running queue (not sorted), under a random policy, the victim is the
    /// engine's, and preempting it leaves the scheduler in the engine's state.
    #[test]
    fn select_victim_and_preempt_match_the_engine(
        ids in prop::sample::subsequence((0u64..40).collect::<Vec<_>>(), 0..12).prop_shuffle(),
        waiting in prop::sample::subsequence((40u64..60).collect::<Vec<_>>(), 0..3),
        policy in common::policy(),
    ) {
        let mut yours = scheduler_running(&ids, &waiting, policy);
        let mut engine = scheduler_running(&ids, &waiting, policy);
        let victim = select_victim(&yours);
        prop_assert_eq!(victim, engine.select_victim(), "victim of running {:?} under {:?}", ids, policy);
        if let Some(v) = victim {
            preempt(&mut yours, v);
            engine.preempt(v);
            let all: Vec<u64> = ids.iter().chain(&waiting).copied().collect();
            prop_assert_eq!(snapshot(&yours, &all), snapshot(&engine, &all), "after preempting {:?}", v);
        }
    }
}

/// Worked by hand: under FCFS the victim is the latest arrival, wherever it is in the queue.
#[test]
fn under_fcfs_the_victim_is_the_latest_arrival() {
    let s = scheduler_running(&[3, 7, 5], &[], Policy::Fcfs);
    assert_eq!(select_victim(&s), Some(SeqId(7)));
    let empty = scheduler_running(&[], &[8], Policy::Fcfs);
    assert_eq!(
        select_victim(&empty),
        None,
        "nothing runs, so there is no victim"
    );
}

/// Worked by hand: the victim is the one the scheduler's policy ranks last, whatever arrived
/// when. Under shortest-prompt-first, request 1 (9 prompt tokens) goes before request 2
/// (2 tokens) although it arrived first; under latest-first, request 1 is the victim too.
#[test]
fn the_victim_is_the_one_the_policy_ranks_last() {
    for policy in [Policy::ShortestPromptFirst, Policy::LatestFirst] {
        let mut s = empty_scheduler(2, 64, config(), policy.boxed());
        add_running(&mut s, 1, 9, 0, 9);
        add_running(&mut s, 2, 2, 0, 2);
        assert_eq!(
            select_victim(&s),
            Some(SeqId(1)),
            "under {}, request 1 matters least",
            s.policy().name()
        );
    }
    // The policies above are the test's own, not the engine's.
    let (long, short) = (common::sequence(1, 9, 0), common::sequence(2, 2, 0));
    assert_eq!(ShortestPromptFirst.compare(&short, &long), Ordering::Less);
    assert_eq!(LatestFirst.compare(&short, &long), Ordering::Less);
}

/// Worked by hand: preempting request 1 (6 prompt + 2 generated tokens, 4 blocks of 2).
#[test]
fn preemption_by_recompute_frees_the_cache_and_keeps_the_output() {
    let mut s = empty_scheduler(2, 16, config(), Policy::Fcfs.boxed());
    add_running(&mut s, 0, 4, 1, 5);
    add_running(&mut s, 1, 6, 2, 8);
    add_waiting(&mut s, 5, 3, 0);
    add_waiting(&mut s, 6, 3, 0);
    let free_before = s.block_manager.num_free_blocks();
    let output = s.sequence(SeqId(1)).unwrap().output_token_ids.clone();

    preempt(&mut s, SeqId(1));

    assert_eq!(
        s.running,
        vec![SeqId(0)],
        "request 1 left the running queue"
    );
    assert_eq!(
        Vec::from(s.waiting.clone()),
        vec![SeqId(1), SeqId(5), SeqId(6)],
        "request 1 waits at the front: it ran before anything that waits"
    );
    assert_eq!(
        s.block_manager.block_table(SeqId(1)),
        &[],
        "its blocks are freed"
    );
    assert_eq!(s.block_manager.num_free_blocks(), free_before + 4);
    let q = s.sequence(SeqId(1)).unwrap();
    assert_eq!(q.num_computed_tokens, 0, "its KV cache is gone");
    assert_eq!(q.status, SequenceStatus::Waiting);
    assert_eq!(q.num_preemptions, 1);
    assert_eq!(q.output_token_ids, output, "what it generated is kept");
    let other = s.sequence(SeqId(0)).unwrap();
    assert_eq!(
        (
            other.num_computed_tokens,
            s.block_manager.block_table(SeqId(0)).len()
        ),
        (5, 3),
        "request 0 is untouched"
    );
}

fn your_policy() -> EngineParts {
    EngineParts {
        policy: Box::new(Fcfs),
        ..EngineParts::default()
    }
}

/// "With your policy, the engine preempts the same sequences and generates the same tokens."
#[test]
fn engine_with_your_policy_generates_the_same_tokens() {
    let preemptions =
        common::assert_same_as_engine("your Fcfs policy", your_policy, common::tight_config());
    assert!(preemptions > 0, "the workload should preempt");
    common::check_smollm2("your Fcfs policy", your_policy());
}
