//! Exercise 2: your `Fcfs`, `select_victim` and `preempt` against the engine's.

mod common;

use std::cmp::Ordering;

use engine::config::SchedulerConfig;
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduling_policy::{self as reference, SchedulingPolicy};
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence};
use engine::EngineParts;
use proptest::prelude::*;
use stage1::preemption::{preempt, select_victim, Fcfs};

fn seq(id: u64) -> Sequence {
    Sequence::new(SeqId(id), vec![7; 3], SamplingParams::greedy(4))
}

/// A scheduler whose running queue holds `ids` (in this order), each with a block or more.
fn scheduler_running(ids: &[u64], waiting: &[u64]) -> Scheduler {
    let config = SchedulerConfig {
        max_num_seqs: 64,
        max_num_batched_tokens: 1024,
        enable_chunked_prefill: true,
    };
    let bm = BlockManager::new(2, Box::new(RefCountingAllocator::new(256)));
    let mut s = Scheduler::new(config, Box::new(reference::Fcfs), bm, vec![], 64);
    for &id in ids {
        s.add_sequence(seq(id));
        s.waiting.retain(|&w| w != SeqId(id));
        s.running.push(SeqId(id));
        assert!(s.block_manager.allocate_slots(SeqId(id), 3));
        let q = s.sequence_mut(SeqId(id)).unwrap();
        q.num_computed_tokens = 3;
        q.status = engine::sequence::SequenceStatus::Running;
    }
    for &id in waiting {
        s.add_sequence(seq(id));
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
                "{id}: computed {} {:?} preemptions {} blocks {:?}",
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
        let (a, b) = (seq(a), seq(b));
        prop_assert_eq!(Fcfs.compare(&a, &b), reference::Fcfs.compare(&a, &b));
        prop_assert_eq!(Fcfs.compare(&a, &a), Ordering::Equal);
    }

    /// On a random running queue (not sorted), the victim is the engine's, and preempting it
    /// leaves the scheduler in the engine's state.
    #[test]
    fn select_victim_and_preempt_match_the_engine(
        ids in prop::sample::subsequence((0u64..40).collect::<Vec<_>>(), 0..12).prop_shuffle(),
        waiting in prop::sample::subsequence((40u64..60).collect::<Vec<_>>(), 0..3),
    ) {
        let mut yours = scheduler_running(&ids, &waiting);
        let mut engine = scheduler_running(&ids, &waiting);
        let victim = select_victim(&yours);
        prop_assert_eq!(victim, engine.select_victim(), "victim of running {:?}", ids);
        if let Some(v) = victim {
            preempt(&mut yours, v);
            engine.preempt(v);
            let all: Vec<u64> = ids.iter().chain(&waiting).copied().collect();
            prop_assert_eq!(snapshot(&yours, &all), snapshot(&engine, &all), "after preempting {:?}", v);
        }
    }
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
