//! The errata page's Stage 1 entries (book/src/errata.md): each source claim, put to the engine.
//!
//! Every test builds the engine's own scheduler and block manager on a constructed case and
//! drives it with a fake model (a made-up sampled token per sequence that needs one), so what
//! is asserted is what the engine computes.

use std::cmp::Ordering;
use std::collections::HashSet;

use engine::config::SchedulerConfig;
use engine::core::block::{blocks_needed, slot_for_position, BlockId};
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduler_output::SchedulerOutput;
use engine::core::scheduling_policy::{Fcfs, SchedulingPolicy};
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence, SequenceStatus};

/// An FCFS scheduler over `num_blocks` blocks of `block_size` tokens, chunked prefill on.
fn scheduler(block_size: usize, num_blocks: usize, budget: usize) -> Scheduler {
    scheduler_with(block_size, num_blocks, budget, Box::new(Fcfs))
}

fn scheduler_with(
    block_size: usize,
    num_blocks: usize,
    budget: usize,
    policy: Box<dyn SchedulingPolicy>,
) -> Scheduler {
    let config = SchedulerConfig {
        max_num_seqs: 64,
        max_num_batched_tokens: budget,
        enable_chunked_prefill: true,
        ..SchedulerConfig::default()
    };
    let blocks = BlockManager::new(block_size, Box::new(RefCountingAllocator::new(num_blocks)));
    Scheduler::new(config, policy, blocks, vec![], block_size * num_blocks)
}

fn add(s: &mut Scheduler, id: u64, prompt_len: usize) {
    let prompt = (0..prompt_len as u32).map(|t| 3 + t % 200).collect();
    s.add_sequence(Sequence::new(
        SeqId(id),
        prompt,
        SamplingParams::greedy(1000),
    ));
}

/// The model's side of a step: one made-up token for each sequence that needs logits.
fn finish_step(s: &mut Scheduler, out: &SchedulerOutput) {
    let sampled: Vec<u32> = out
        .scheduled
        .iter()
        .filter(|q| q.needs_logits)
        .map(|_| 7)
        .collect();
    s.update_from_output(out, &sampled);
}

fn ids(out: &SchedulerOutput) -> Vec<u64> {
    out.scheduled.iter().map(|q| q.seq_id.0).collect()
}

/// Week 3 review, Q1, the source's example: A holds 100 blocks, B 50, 30 are free and the
/// waiting C needs 60. The engine preempts nobody: running A and B decode (their next tokens
/// fit their blocks) and C waits for blocks. Preemption only ever makes room for a *running*
/// sequence.
#[test]
fn errata_preemption_is_not_used_to_admit_a_waiting_request() {
    let mut s = scheduler(16, 180, 4096);
    add(&mut s, 0, 1599); // A: 100 blocks once prefilled; its next token fits the 100th
    add(&mut s, 1, 799); // B: 50 blocks; its next token fits the 50th
    let first = s.schedule();
    finish_step(&mut s, &first);
    assert_eq!(s.block_manager.block_table(SeqId(0)).len(), 100);
    assert_eq!(s.block_manager.block_table(SeqId(1)).len(), 50);
    assert_eq!(s.block_manager.num_free_blocks(), 30);
    add(&mut s, 2, 960); // C: needs 60 blocks
    assert_eq!(blocks_needed(960, 16), 60);

    let out = s.schedule();
    assert!(
        out.preempted.is_empty(),
        "the engine preempted {:?}",
        out.preempted
    );
    assert_eq!(ids(&out), vec![0, 1], "A and B decode, C waits");
    assert_eq!(s.waiting.front(), Some(&SeqId(2)));
    assert_eq!(s.block_manager.num_free_blocks(), 30);
}

/// Week 3 review, Q1: when a running request does need a block and none is free, the victim
/// is the one the policy ranks last (under FCFS the latest arrival, B, though A is longer), by
/// recompute: B's blocks are freed, its computed tokens reset, and it waits at the front of
/// the queue. Nothing is swapped, and nothing is admitted in that step.
#[test]
fn errata_preemption_takes_the_latest_arrival_by_recompute() {
    let mut s = scheduler(16, 150, 4096);
    add(&mut s, 0, 1600); // A: 100 full blocks; its next token (position 1600) needs a 101st
    add(&mut s, 1, 800); // B: 50 full blocks
    let first = s.schedule();
    finish_step(&mut s, &first);
    assert_eq!(s.block_manager.num_free_blocks(), 0);
    add(&mut s, 2, 16); // C: waiting, one block

    let out = s.schedule();
    assert_eq!(
        out.preempted,
        vec![SeqId(1)],
        "B, the latest arrival, not A, the longest"
    );
    assert_eq!(
        ids(&out),
        vec![0],
        "A decodes; nothing is admitted after a preemption"
    );
    let b = s.sequence(SeqId(1)).unwrap();
    assert_eq!(b.num_computed_tokens, 0, "recompute: B's cache is gone");
    assert_eq!(b.status, SequenceStatus::Waiting);
    assert_eq!(
        b.output_token_ids.len(),
        1,
        "B keeps the token it generated"
    );
    assert_eq!(s.block_manager.block_table(SeqId(1)), &[] as &[BlockId]);
    assert_eq!(Vec::from(s.waiting.clone()), vec![SeqId(1), SeqId(2)]);
    assert_eq!(
        s.block_manager.num_free_blocks(),
        49,
        "B's 50 blocks, less A's new one"
    );
}

/// Week 3 review, Q2: "Prefill blocks: ⌈896/16⌉ = 56". Blocks belong to sequences, so a batch
/// needs Σ⌈nᵢ/16⌉. For 128, 256 and 512 tokens both give 56 (all are multiples of 16); for
/// two 100-token prompts the batch formula says 13 and the engine allocates 14.
#[test]
fn errata_blocks_are_counted_per_sequence() {
    for (lens, batch_formula, engine) in [(vec![128, 256, 512], 56, 56), (vec![100, 100], 13, 14)] {
        let mut s = scheduler(16, 1000, 4096);
        for (i, &n) in lens.iter().enumerate() {
            add(&mut s, i as u64, n);
        }
        let out = s.schedule();
        assert_eq!(out.num_batched_tokens(), lens.iter().sum::<usize>());
        let total: usize = lens.iter().sum();
        assert_eq!(blocks_needed(total, 16), batch_formula);
        assert_eq!(
            1000 - s.block_manager.num_free_blocks(),
            engine,
            "blocks the engine allocated for prompts of {lens:?}"
        );
    }
}

/// Week 3 review, Q2: "Decode blocks: Already allocated, just append slots". A decode needs a
/// new block when its token's position is a multiple of the block size: with blocks of 16, a
/// 16-token prompt fills one block, and its first decode (position 16) allocates a second. The
/// decode at position 17 allocates nothing.
#[test]
fn errata_a_decode_at_a_block_boundary_allocates() {
    let mut s = scheduler(16, 8, 4096);
    add(&mut s, 0, 16);
    let prefill = s.schedule();
    finish_step(&mut s, &prefill);
    assert_eq!(
        s.block_manager.num_free_blocks(),
        7,
        "the prompt fills one block"
    );

    let decode = s.schedule();
    assert_eq!(decode.scheduled[0].start_position, 16);
    assert_eq!(
        s.block_manager.num_free_blocks(),
        6,
        "position 16 starts a second block"
    );
    assert_eq!(decode.scheduled[0].block_table.len(), 2);
    finish_step(&mut s, &decode);

    let next = s.schedule();
    assert_eq!(next.scheduled[0].start_position, 17);
    assert_eq!(
        s.block_manager.num_free_blocks(),
        6,
        "position 17 fits the second block"
    );

    // The same, asked of the block manager directly.
    let mut bm = BlockManager::new(16, Box::new(RefCountingAllocator::new(8)));
    assert!(bm.allocate_slots(SeqId(9), 16));
    assert_eq!(bm.num_free_blocks(), 7);
    assert!(
        bm.allocate_slots(SeqId(9), 17),
        "room for the token at position 16"
    );
    assert_eq!(bm.num_free_blocks(), 6);
}

/// A priority with an SLA: overdue requests first, then high priority, then the rest; within
/// a class, arrival order. The classes come from a table, as a tenant's config would.
struct OverdueThenPriority {
    overdue: HashSet<u64>,
    high: HashSet<u64>,
}

impl OverdueThenPriority {
    fn class(&self, id: u64) -> u8 {
        if self.overdue.contains(&id) {
            0
        } else if self.high.contains(&id) {
            1
        } else {
            2
        }
    }
}

impl SchedulingPolicy for OverdueThenPriority {
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        let key = |s: &Sequence| (self.class(s.seq_id.0), s.seq_id);
        key(a).cmp(&key(b))
    }

    fn name(&self) -> &'static str {
        "overdue-then-priority"
    }
}

/// Week 3 review, Q5: the multi-tenant pseudo-code builds its order by concatenating lists,
/// so an overdue high-priority request is listed twice. Written as a policy (a comparison),
/// the order has each request once, and the scheduler charges every scheduled token to one
/// budget: each request is scheduled at most once, in the policy's order, within the budget.
#[test]
fn errata_a_priority_order_lists_each_request_once() {
    let overdue: HashSet<u64> = [1, 4].into();
    let high: HashSet<u64> = [1, 2].into(); // request 1 is overdue *and* high priority
    let queue: Vec<u64> = (0..6).collect();

    // The source's construction, on the same queue: request 1 appears twice.
    let concatenated: Vec<u64> = queue
        .iter()
        .filter(|r| overdue.contains(r))
        .chain(queue.iter().filter(|r| high.contains(r)))
        .chain(queue.iter().filter(|r| !high.contains(r)))
        .copied()
        .collect();
    assert_eq!(concatenated, vec![1, 4, 1, 2, 0, 3, 4, 5]);

    // The engine, with the same classes as a policy, and a budget for three 10-token prompts.
    let policy = OverdueThenPriority { overdue, high };
    let mut s = scheduler_with(16, 64, 30, Box::new(policy));
    for &id in &queue {
        add(&mut s, id, 10);
    }
    let out = s.schedule();
    assert_eq!(
        ids(&out),
        vec![1, 4, 2],
        "overdue first, then high priority, each once"
    );
    assert!(out.num_batched_tokens() <= 30);
}

/// Week 3 review, Q11, the slot-mapping example: token 49 of a 50-token sequence with block
/// table [5, 12, 8] (block size 16) is said to go to slot 8·16 + 1 = 129. Position 49 is in
/// logical block 3, which that table does not have: the engine refuses to map it.
#[test]
fn errata_token_49_does_not_fit_a_three_block_table() {
    let table = [BlockId(5), BlockId(12), BlockId(8)];
    // 50 tokens need 4 blocks; the table has 3.
    assert_eq!(blocks_needed(50, 16), 4);
    assert!(blocks_needed(50, 16) > table.len());
    // Position 49 is in logical block 3, which does not exist: the engine panics.
    let refused = std::panic::catch_unwind(|| slot_for_position(&table, 16, 49));
    assert!(
        refused.is_err(),
        "the engine mapped position 49 with 3 blocks"
    );
    // Slot 129 (block 8, offset 1) belongs to position 33.
    assert_eq!(slot_for_position(&table, 16, 33).0, 129);
    // With a fourth block, position 49 has a slot in that block.
    let four = [BlockId(5), BlockId(12), BlockId(8), BlockId(20)];
    assert_eq!(slot_for_position(&four, 16, 49).0, 20 * 16 + 1);
    // And the quiz checker reports the refusal instead of crashing.
    let args: toml::Table =
        toml::from_str("block_table = [5, 12, 8]\nblock_size = 16\nposition = 49").unwrap();
    let err = quizzes::engine_calls::call("slot_for_position", &args).unwrap_err();
    assert!(err.contains("refuses position 49"), "{err}");
}

/// Week 3 review, Q11: a 50-token sequence *can* have a three-block table: chunked prefill
/// with a budget of 40 computes positions 0..40 first, and 40 tokens need 3 blocks. What holds
/// is that a position's block is allocated before the position is scheduled: the table grows
/// to 4 blocks in the step that schedules positions 40..50. Checked for every budget.
#[test]
fn errata_a_position_has_its_block_before_it_is_scheduled() {
    let mut s = scheduler(16, 8, 40);
    add(&mut s, 0, 50);
    let first = s.schedule();
    assert_eq!(first.scheduled[0].token_ids.len(), 40);
    assert_eq!(
        first.scheduled[0].block_table.len(),
        3,
        "a 50-token prompt, 40 tokens in: three blocks"
    );
    finish_step(&mut s, &first);
    assert_eq!(s.sequence(SeqId(0)).unwrap().num_tokens(), 50);
    assert_eq!(s.block_manager.block_table(SeqId(0)).len(), 3);
    let second = s.schedule();
    assert_eq!(second.scheduled[0].start_position, 40);
    assert_eq!(second.scheduled[0].block_table.len(), 4);

    for budget in 1..=60 {
        let mut s = scheduler(16, 8, budget);
        add(&mut s, 0, 50);
        for _ in 0..60 {
            let out = s.schedule();
            for q in &out.scheduled {
                let last = q.start_position + q.token_ids.len() - 1;
                assert!(
                    last / 16 < q.block_table.len(),
                    "budget {budget}: position {last} scheduled with {} blocks",
                    q.block_table.len()
                );
            }
            finish_step(&mut s, &out);
        }
    }
}

/// One request of the source's Q5 pseudo-code: tenant, overdue or not, and its priority
/// string ('high', 'normal', or anything else a client may send).
#[derive(Clone, Copy, Debug, PartialEq)]
struct SourceRequest {
    id: u64,
    tenant: &'static str,
    overdue: bool,
    priority: &'static str,
}

/// The source's `schedule()` as written, with the undefined `budget` taken as one budget of
/// `budget` requests for the step: tenants visited in order, each tenant's list built by
/// concatenating its overdue, 'high' and 'normal' requests.
fn source_q5_order(tenants: &[&str], queue: &[SourceRequest], budget: usize) -> Vec<u64> {
    let mut scheduled = Vec::new();
    for &t in tenants {
        let mine: Vec<&SourceRequest> = queue.iter().filter(|r| r.tenant == t).collect();
        let order = mine
            .iter()
            .filter(|r| r.overdue)
            .chain(mine.iter().filter(|r| r.priority == "high"))
            .chain(mine.iter().filter(|r| r.priority == "normal"));
        for r in order {
            if scheduled.len() < budget {
                scheduled.push(r.id);
            }
        }
    }
    scheduled
}

/// Week 3 review, Q5: "Priority: SLA-violating > high-priority > normal", inside a loop over
/// tenants. Overdue-first holds only within a tenant: tenant B's overdue request waits behind
/// every request of tenant A that fits the step. A request whose priority is neither 'high'
/// nor 'normal' is never listed, so never scheduled. The engine's `qos` policy serves the
/// overdue request first across tenants, and a request of any priority is served.
#[test]
fn errata_q5_overdue_first_only_within_a_tenant_and_other_priorities_starve() {
    let r = |id, tenant, overdue, priority| SourceRequest {
        id,
        tenant,
        overdue,
        priority,
    };
    let queue = [
        r(0, "a", false, "normal"),
        r(1, "a", false, "normal"),
        r(2, "a", false, "low"),
        r(3, "b", true, "normal"),
    ];
    // A budget of two requests: tenant A fills it, B's overdue request waits.
    assert_eq!(source_q5_order(&["a", "b"], &queue, 2), vec![0, 1]);
    // Any budget: request 2 ("low") never appears; request 3 appears twice.
    assert_eq!(source_q5_order(&["a", "b"], &queue, 100), vec![0, 1, 3, 3]);

    // The engine's qos policy on the same queue (overdue = a deadline of 0), one request per
    // step: the overdue request first, then the rest, each once, "low" (priority 1) included.
    let policy = engine::core::scheduling_policy::policy_from_name("qos", &[]).unwrap();
    let mut s = scheduler_with(16, 64, 10, policy);
    for q in &queue {
        let mut params = SamplingParams::greedy(1);
        params.tenant = q.tenant.to_string();
        params.priority = i32::from(q.priority == "low");
        params.deadline = q.overdue.then_some(std::time::Duration::ZERO);
        s.add_sequence(Sequence::new(SeqId(q.id), vec![5; 10], params));
    }
    let mut order = Vec::new();
    while s.has_unfinished() {
        let out = s.schedule();
        order.extend(ids(&out));
        finish_step(&mut s, &out);
        assert!(order.len() <= queue.len(), "a request was scheduled twice");
    }
    assert_eq!(order[0], 3, "the overdue request of tenant b goes first");
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2, 3], "every request once");
}

/// Week 3 review, Q5: "tenant_budget = self.total_budget * tenant_config.weight". With weights
/// 3 and 1 (the usual way to say "three times as much") the budgets add up to 4 steps' worth;
/// only weights normalized to sum to 1 give a step's budget. The engine's `fair` policy shares
/// by weight over time instead (tokens / weight, furthest behind first): over 40 one-request
/// steps the weights 3 and 1 give A 30 steps, 75% of the tokens, and a tenant arriving late is
/// served one step after it arrives, where FCFS makes it wait behind all 100 of A's requests.
#[test]
fn errata_q5_weights_share_tokens_in_the_engines_fair_policy() {
    let (total_budget, weights) = (512.0, [3.0, 1.0]);
    let budgets: f64 = weights.iter().map(|w| total_budget * w).sum();
    assert_eq!(
        budgets,
        4.0 * total_budget,
        "the source's budgets, unnormalized"
    );

    let share = |policy: &str, late_b: bool| -> (usize, usize) {
        let weights = [("a".to_string(), 3.0), ("b".to_string(), 1.0)];
        let weights = if late_b { &weights[..0] } else { &weights[..] };
        let policy = engine::core::scheduling_policy::policy_from_name(policy, weights).unwrap();
        let mut s = scheduler_with(16, 1000, 32, policy);
        let add_tenant = |s: &mut Scheduler, tenant: &str, first: u64, n: u64| {
            for id in first..first + n {
                let mut params = SamplingParams::greedy(1);
                params.tenant = tenant.to_string();
                s.add_sequence(Sequence::new(SeqId(id), vec![5; 32], params));
            }
        };
        add_tenant(&mut s, "a", 0, 100);
        if !late_b {
            add_tenant(&mut s, "b", 100, 100);
        }
        let (mut a_steps, mut b_first) = (0, 0);
        for step in 1..=200 {
            if late_b && step == 11 {
                add_tenant(&mut s, "b", 1000, 1);
            }
            let out = s.schedule();
            if out.is_empty() {
                break;
            }
            assert_eq!(out.scheduled.len(), 1, "one 32-token request per step");
            let id = out.scheduled[0].seq_id.0;
            if id < 100 && step <= 40 {
                a_steps += 1;
            }
            if id >= 100 && b_first == 0 {
                b_first = step;
            }
            finish_step(&mut s, &out);
        }
        (a_steps, b_first)
    };
    assert_eq!(share("fair", false).0, 30, "A's 75% of 40 steps");
    assert_eq!(share("fcfs", false).0, 40, "FCFS: all to A");
    assert_eq!(share("fair", true).1, 12, "late B served next");
    assert_eq!(share("fcfs", true).1, 101, "late B behind all of A");
}
