//! Property tests of the scheduler and block manager on random workloads, without a model:
//! tokens are "sampled" by a fake rule, and after every step the invariants are checked.
//! 400 workloads by default; `SCHEDULER_CASES=10000 cargo test -p engine --test
//! scheduler_properties` runs more.

use std::collections::{HashMap, HashSet};

use engine::config::SchedulerConfig;
use engine::core::block::{blocks_needed, BlockId};
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduling_policy::Fcfs;
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence};
use proptest::prelude::*;

const EOS: u32 = 2;

#[derive(Debug, Clone)]
struct Workload {
    block_size: usize,
    num_blocks: usize,
    max_num_seqs: usize,
    budget: usize,
    chunked: bool,
    /// (prompt length, max_tokens, step at which the fake model emits EOS, ignore_eos)
    requests: Vec<(usize, usize, usize, bool)>,
}

fn workload() -> impl Strategy<Value = Workload> {
    (
        1usize..=16,
        1usize..=40,
        1usize..=8,
        1usize..=96,
        any::<bool>(),
    )
        .prop_flat_map(|(block_size, num_blocks, max_num_seqs, budget, chunked)| {
            let capacity = block_size * num_blocks;
            // Prompts leave room for at least one token; without chunking they must fit a step.
            let max_prompt = if chunked {
                capacity - 1
            } else {
                (capacity - 1).min(budget)
            };
            let request = (
                1..=max_prompt.max(1),
                1usize..=24,
                0usize..30,
                any::<bool>(),
            );
            (
                Just((block_size, num_blocks, max_num_seqs, budget, chunked)),
                prop::collection::vec(request, 1..16),
            )
        })
        .prop_filter("a prompt needs room for one token", |((bs, nb, ..), _)| {
            bs * nb >= 2
        })
        .prop_map(
            |((block_size, num_blocks, max_num_seqs, budget, chunked), requests)| Workload {
                block_size,
                num_blocks,
                max_num_seqs,
                budget,
                chunked,
                requests,
            },
        )
}

fn check_blocks(s: &Scheduler, num_blocks: usize) {
    let bm = &s.block_manager;
    let mut owners: HashMap<BlockId, usize> = HashMap::new();
    for (_, table) in bm.block_tables() {
        for &b in table {
            *owners.entry(b).or_default() += 1;
        }
    }
    for (&b, &n) in &owners {
        assert_eq!(n, 1, "block {b:?} is in {n} block tables");
        assert_eq!(bm.ref_count(b), 1, "block {b:?} has the wrong ref count");
    }
    assert_eq!(
        owners.len() + bm.num_free_blocks(),
        num_blocks,
        "a block leaked"
    );
}

fn run(w: &Workload) {
    let capacity = w.block_size * w.num_blocks;
    let config = SchedulerConfig {
        max_num_seqs: w.max_num_seqs,
        max_num_batched_tokens: w.budget,
        enable_chunked_prefill: w.chunked,
        ..SchedulerConfig::default()
    };
    let bm = BlockManager::new(
        w.block_size,
        Box::new(RefCountingAllocator::new(w.num_blocks)),
    );
    let mut s = Scheduler::new(config, Box::new(Fcfs), bm, vec![EOS], capacity);
    let mut eos_at = HashMap::new();
    for (i, &(len, max_tokens, eos_step, ignore_eos)) in w.requests.iter().enumerate() {
        let params = SamplingParams {
            ignore_eos,
            ..SamplingParams::greedy(max_tokens)
        };
        s.add_sequence(Sequence::new(SeqId(i as u64), vec![7; len], params));
        eos_at.insert(SeqId(i as u64), eos_step);
    }
    let mut finished = HashSet::new();
    let mut steps = 0;
    while s.has_unfinished() {
        steps += 1;
        assert!(steps < 100_000, "no progress: the scheduler is stuck");
        let out = s.schedule();
        assert!(
            !out.is_empty(),
            "a step with unfinished requests scheduled nothing"
        );
        assert!(
            out.num_batched_tokens() <= w.budget,
            "token budget exceeded"
        );
        assert!(
            out.scheduled.len() <= w.max_num_seqs,
            "max_num_seqs exceeded"
        );
        let mut seen = HashSet::new();
        for sc in &out.scheduled {
            assert!(
                seen.insert(sc.seq_id),
                "sequence scheduled twice in one step"
            );
            assert!(
                !out.preempted.contains(&sc.seq_id),
                "scheduled and preempted"
            );
            let end = sc.start_position + sc.token_ids.len();
            assert!(
                sc.block_table.len() >= blocks_needed(end, w.block_size),
                "too few blocks"
            );
            assert!(!sc.token_ids.is_empty());
        }
        check_blocks(&s, w.num_blocks);
        let sampled: Vec<u32> = out
            .scheduled
            .iter()
            .filter(|sc| sc.needs_logits)
            .map(|sc| {
                let seq = s.sequence(sc.seq_id).unwrap();
                if seq.output_token_ids.len() == eos_at[&sc.seq_id] {
                    EOS
                } else {
                    9
                }
            })
            .collect();
        for seq in s.update_from_output(&out, &sampled) {
            assert!(
                finished.insert(seq.seq_id),
                "{:?} finished twice",
                seq.seq_id
            );
            let p = &seq.params;
            assert!(seq.output_token_ids.len() <= p.max_tokens);
            assert!(seq.num_tokens() <= capacity);
        }
        check_blocks(&s, w.num_blocks);
    }
    assert_eq!(
        finished.len(),
        w.requests.len(),
        "every request finishes exactly once"
    );
    assert_eq!(
        s.block_manager.num_free_blocks(),
        w.num_blocks,
        "all blocks free at the end"
    );
}

/// Workloads to draw: `SCHEDULER_CASES`, or 400.
fn cases() -> u32 {
    std::env::var("SCHEDULER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    #[test]
    fn random_workloads_keep_invariants(w in workload()) {
        run(&w);
    }
}

#[test]
fn out_of_blocks_preempts_the_latest_arrival() {
    // 4 blocks of 4 tokens; two 8-token prompts fill 2 blocks each. When both need a third
    // block, the later one (seq 1) is preempted so the earlier one can grow.
    let config = SchedulerConfig {
        max_num_seqs: 8,
        max_num_batched_tokens: 64,
        enable_chunked_prefill: true,
        ..SchedulerConfig::default()
    };
    let bm = BlockManager::new(4, Box::new(RefCountingAllocator::new(4)));
    let mut s = Scheduler::new(config, Box::new(Fcfs), bm, vec![], 16);
    for i in 0..2 {
        s.add_sequence(Sequence::new(
            SeqId(i),
            vec![5; 8],
            SamplingParams::greedy(8),
        ));
    }
    let out = s.schedule();
    assert_eq!(out.scheduled.len(), 2);
    s.update_from_output(&out, &[1, 1]); // both now have 9 tokens: token 8 needs a 3rd block
    let out = s.schedule(); // only one can have its 3rd block
    assert_eq!(out.preempted, vec![SeqId(1)]);
    assert_eq!(out.scheduled.len(), 1);
    assert_eq!(out.scheduled[0].seq_id, SeqId(0));
    assert_eq!(
        s.sequence(SeqId(1)).unwrap().num_computed_tokens,
        0,
        "recompute from scratch"
    );
    assert_eq!(
        s.sequence(SeqId(1)).unwrap().output_token_ids,
        vec![1],
        "outputs are kept"
    );
}
