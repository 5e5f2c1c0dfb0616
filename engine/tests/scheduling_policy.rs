//! The scheduling policies on the scheduler alone (no model: each sampled token is 9):
//! priority order, fair share's and QoS's bound on a light tenant's wait behind a heavy
//! one, QoS's overdue-first rule, and the same bound failing under FCFS (so the property
//! can fail).

use std::time::Duration;

use engine::config::SchedulerConfig;
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduling_policy::policy_from_name;
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn scheduler(policy: &str, weights: &[(String, f64)], max_num_seqs: usize) -> Scheduler {
    let config = SchedulerConfig {
        max_num_seqs,
        max_num_batched_tokens: 64,
        enable_chunked_prefill: true,
        ..SchedulerConfig::default()
    };
    let bm = BlockManager::new(4, Box::new(RefCountingAllocator::new(256)));
    let policy = policy_from_name(policy, weights).expect("known policy");
    Scheduler::new(config, policy, bm, vec![2], 1024)
}

fn request(id: u64, tenant: &str, priority: i32, max_tokens: usize) -> Sequence {
    let params = SamplingParams {
        ignore_eos: true,
        tenant: tenant.into(),
        priority,
        ..SamplingParams::greedy(max_tokens)
    };
    Sequence::new(SeqId(id), vec![5; 6], params)
}

/// One step; returns the ids it scheduled.
fn step(s: &mut Scheduler) -> Vec<SeqId> {
    let out = s.schedule();
    let sampled = vec![9; out.scheduled.iter().filter(|x| x.needs_logits).count()];
    s.update_from_output(&out, &sampled);
    out.scheduled.iter().map(|x| x.seq_id).collect()
}

/// Steps until `id` is first scheduled (counting that step); `None` if it never is.
fn steps_until_scheduled(s: &mut Scheduler, id: SeqId) -> Option<usize> {
    for n in 1..=10_000 {
        if step(s).contains(&id) {
            return Some(n);
        }
        if !s.has_unfinished() {
            return None;
        }
    }
    None
}

/// A heavy tenant queues `heavy` requests, some steps run, then the light tenant sends one.
/// Returns the steps the light request waited for its first token's step.
fn light_wait(policy: &str, heavy: usize, warmup: usize, slots: usize, weight: f64) -> usize {
    let weights = [("heavy".to_string(), weight)];
    let mut s = scheduler(policy, &weights, slots);
    for i in 0..heavy {
        s.add_sequence(request(i as u64, "heavy", 0, 8));
    }
    for _ in 0..warmup {
        step(&mut s);
    }
    let light = SeqId(heavy as u64);
    s.add_sequence(request(light.0, "light", 0, 8));
    steps_until_scheduled(&mut s, light).expect("the light request runs")
}

proptest! {
    #![proptest_config(Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0xfa1e),
        ..Config::with_cases(64)
    })]

    /// Under fair share and QoS, a tenant under its weight waits at most until a slot frees
    /// (a running request finishes: at most its 8 tokens) plus a step, however many
    /// requests the heavy tenant has queued, and whatever the heavy tenant's weight.
    #[test]
    fn a_light_tenant_is_never_starved_by_a_heavy_one(
        heavy in 1usize..60,
        warmup in 0usize..20,
        slots in 1usize..4,
        weight in prop::sample::select(vec![0.5, 1.0, 2.0, 8.0]),
        policy in prop::sample::select(vec!["fair", "qos"]),
    ) {
        let waited = light_wait(policy, heavy, warmup, slots, weight);
        prop_assert!(waited <= 8 + 2, "{policy}: the light request waited {waited} steps");
    }
}

#[test]
fn fcfs_starves_the_light_tenant_behind_a_long_queue() {
    // The property above fails under FCFS: the light request waits for all 40 heavy ones.
    let waited = light_wait("fcfs", 40, 0, 2, 1.0);
    assert!(waited > 8 + 2, "FCFS let it in after {waited} steps");
}

#[test]
fn priority_admits_lower_values_first() {
    let mut s = scheduler("priority", &[], 1);
    s.add_sequence(request(0, "", 2, 1));
    s.add_sequence(request(1, "", 0, 1));
    s.add_sequence(request(2, "", 1, 1));
    let order: Vec<SeqId> = (0..3).flat_map(|_| step(&mut s)).collect();
    assert_eq!(order, [SeqId(1), SeqId(2), SeqId(0)]);
}

#[test]
fn qos_serves_overdue_requests_first() {
    let mut s = scheduler("qos", &[], 1);
    s.add_sequence(request(0, "a", 0, 1));
    let mut late = request(1, "b", 5, 1);
    late.params.deadline = Some(Duration::ZERO); // overdue from its arrival
    s.add_sequence(late);
    let mut later = request(2, "a", 0, 1);
    later.params.deadline = Some(Duration::from_secs(3600)); // not yet due
    s.add_sequence(later);
    let order: Vec<SeqId> = (0..3).flat_map(|_| step(&mut s)).collect();
    assert_eq!(order[0], SeqId(1), "the overdue request first: {order:?}");
}

#[test]
fn fair_share_follows_the_weights_when_both_are_backlogged() {
    // One slot, requests of 4 tokens: admission alone decides the shares. Tenant "a" weighs
    // 3, "b" 1: of the requests started, a gets about three for every one of b's.
    let weights = [("a".to_string(), 3.0)];
    let mut s = scheduler("fair", &weights, 1);
    for i in 0..40 {
        s.add_sequence(request(2 * i, "a", 0, 4));
        s.add_sequence(request(2 * i + 1, "b", 0, 4));
    }
    let mut started = Vec::new();
    while started.len() < 24 {
        for id in step(&mut s) {
            if !started.contains(&id) {
                started.push(id);
            }
        }
    }
    let a = started.iter().filter(|id| id.0 % 2 == 0).count();
    assert!((17..=19).contains(&a), "a started {a} of 24");
}
