//! Prefix caching on random workloads with a tiny KV cache: requests that share prefixes,
//! arrive in waves, are chunked and preempted. Two property tests:
//!
//! - the scheduler with a *simulated* KV cache (no model): every slot a step writes holds the
//!   KV of its sequence's whole prefix (a value chained over the tokens), and every position a
//!   sequence reads back must hold its own prefix's value. A hit on the wrong block, or on a
//!   block not computed yet, a block evicted or overwritten while someone still holds it, all
//!   show up as a wrong value. After
//!   every step: no block leaked or owned twice; at the end every request finished once and
//!   the outputs (a function of what was read) equal the run with the cache off;
//! - the tiny model: greedy tokens with the cache on equal the tokens with it off; every
//!   request finishes once, and no block is leaked or owned twice after any step.
//!
//! `PREFIX_CACHING_CASES=10000 cargo test -p engine --test prefix_caching_properties` runs
//! more cases than CI's default.

use std::collections::{HashMap, HashSet};

use engine::config::{EngineConfig, SchedulerConfig};
use engine::core::block::{slot_for_position, BlockId};
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduling_policy::Fcfs;
use engine::model_source::{load_model, ModelSpec};
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence};
use engine::{LLMEngine, Prompt};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed};

const EOS: u32 = 2;

fn cases(default: u32) -> Config {
    let cases = std::env::var("PREFIX_CACHING_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x9e_f1c5),
        ..Config::with_cases(cases)
    }
}

#[derive(Debug, Clone)]
struct Request {
    prompt: Vec<u32>,
    max_tokens: usize,
    ignore_eos: bool,
    /// The step (or wave) at which it arrives.
    arrival: usize,
}

#[derive(Debug, Clone)]
struct Workload {
    block_size: usize,
    num_blocks: usize,
    budget: usize,
    chunked: bool,
    max_num_seqs: usize,
    requests: Vec<Request>,
}

/// Prompts are one of three shared prefixes cut at a random length, then a random tail over
/// a four-token alphabet (so tails collide too).
fn workload(max_blocks: usize, max_arrival: usize) -> impl Strategy<Value = Workload> {
    let request = (
        0usize..3,
        0usize..24,
        prop::collection::vec(3u32..7, 1..8),
        1usize..10,
        any::<bool>(),
        0..=max_arrival,
    );
    (
        1usize..=4,
        4..=max_blocks,
        2usize..=48,
        any::<bool>(),
        1usize..=6,
        prop::collection::vec(request, 1..10),
    )
        .prop_map(
            |(block_size, num_blocks, budget, chunked, max_num_seqs, reqs)| {
                let capacity = block_size * num_blocks;
                // Room for one new token; without chunking a prompt must fit one step.
                let max_prompt = if chunked {
                    capacity - 1
                } else {
                    (capacity - 1).min(budget)
                };
                let requests = reqs
                    .into_iter()
                    .map(|(prefix, cut, tail, max_tokens, ignore_eos, arrival)| {
                        let shared = (0..cut as u32).map(|i| 10 + prefix as u32 * 40 + i);
                        let mut prompt: Vec<u32> = shared.chain(tail).collect();
                        prompt.truncate(max_prompt);
                        Request {
                            prompt,
                            max_tokens,
                            ignore_eos,
                            arrival,
                        }
                    })
                    .collect();
                Workload {
                    block_size,
                    num_blocks,
                    budget,
                    chunked,
                    max_num_seqs,
                    requests,
                }
            },
        )
}

/// The "KV" of position `pos`: a value chained over every token up to it, as real keys and
/// values depend on the whole prefix.
fn kv_value(seq: &Sequence, pos: usize) -> u64 {
    (0..=pos).fold(0xcbf2_9ce4_8422_2325, |h, i| {
        (h ^ u64::from(seq.token_at(i))).wrapping_mul(0x100_0000_01b3)
    })
}

fn check_blocks(s: &Scheduler, num_blocks: usize) {
    let bm = &s.block_manager;
    let mut owners: HashMap<BlockId, u32> = HashMap::new();
    for (id, table) in bm.block_tables() {
        let distinct: HashSet<_> = table.iter().collect();
        assert_eq!(distinct.len(), table.len(), "{id:?} holds a block twice");
        for &b in table {
            *owners.entry(b).or_default() += 1;
        }
    }
    for (&b, &n) in &owners {
        assert_eq!(bm.ref_count(b), n, "block {b:?}: ref count vs owners");
        assert!(!bm.is_parked(b), "block {b:?} is parked but owned");
    }
    assert_eq!(
        owners.len() + bm.num_free_blocks(),
        num_blocks,
        "a block leaked"
    );
}

/// Runs `w` on the scheduler over a simulated KV cache; returns each request's outputs and
/// the tokens found in the cache.
fn simulate(w: &Workload, prefix_caching: bool) -> (Vec<Vec<u32>>, usize) {
    let config = SchedulerConfig {
        max_num_seqs: w.max_num_seqs,
        max_num_batched_tokens: w.budget,
        enable_chunked_prefill: w.chunked,
        ..SchedulerConfig::default()
    };
    let bm = BlockManager::new(
        w.block_size,
        Box::new(RefCountingAllocator::new(w.num_blocks)),
    )
    .with_prefix_caching(prefix_caching);
    let capacity = w.block_size * w.num_blocks;
    let mut s = Scheduler::new(config, Box::new(Fcfs), bm, vec![EOS], capacity);
    let mut kv: Vec<Option<u64>> = vec![None; capacity];
    let mut outputs: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut step = 0;
    while outputs.len() < w.requests.len() {
        for (i, r) in w.requests.iter().enumerate() {
            if r.arrival == step {
                let params = SamplingParams {
                    ignore_eos: r.ignore_eos,
                    ..SamplingParams::greedy(r.max_tokens)
                };
                s.add_sequence(Sequence::new(SeqId(i as u64), r.prompt.clone(), params));
            }
        }
        step += 1;
        assert!(step < 10_000, "no progress: the scheduler is stuck");
        let out = s.schedule();
        check_blocks(&s, w.num_blocks);
        // In batch order, each sequence writes its tokens' KV, then reads its whole context:
        // the strictest order a step may run in (micro-batches of one), so a hit on a block
        // computed in this step is right only if its writer comes earlier in the batch.
        let mut sampled = Vec::new();
        for x in &out.scheduled {
            let seq = s.sequence(x.seq_id).unwrap();
            let end = x.start_position + x.token_ids.len();
            for pos in x.start_position..end {
                let slot = slot_for_position(&x.block_table, w.block_size, pos).0 as usize;
                kv[slot] = Some(kv_value(seq, pos));
            }
            if !x.needs_logits {
                continue;
            }
            let mut read = 0u64;
            for pos in 0..end {
                let slot = slot_for_position(&x.block_table, w.block_size, pos).0 as usize;
                let want = kv_value(seq, pos);
                assert_eq!(
                    kv[slot],
                    Some(want),
                    "{:?} reads wrong KV at {pos}",
                    x.seq_id
                );
                read = read.rotate_left(5) ^ want;
            }
            sampled.push(if read.is_multiple_of(13) {
                EOS
            } else {
                3 + (read % 5) as u32
            });
        }
        for seq in s.update_from_output(&out, &sampled) {
            let first = outputs.insert(seq.seq_id, seq.output_token_ids).is_none();
            assert!(first, "{:?} finished twice", seq.seq_id);
        }
        check_blocks(&s, w.num_blocks);
    }
    assert!(!s.has_unfinished());
    assert_eq!(s.block_manager.num_free_blocks(), w.num_blocks);
    let outputs = (0..w.requests.len())
        .map(|i| outputs.remove(&SeqId(i as u64)).unwrap())
        .collect();
    (outputs, s.block_manager.prefix_cache_stats().hit_tokens)
}

proptest! {
    #![proptest_config(cases(256))]
    #[test]
    fn simulated_kv_is_right_and_outputs_match_the_cache_off(w in workload(24, 12)) {
        let (on, _) = simulate(&w, true);
        let (off, no_hits) = simulate(&w, false);
        prop_assert_eq!(no_hits, 0);
        prop_assert_eq!(on, off);
    }
}

/// Runs `w` on the tiny model, each request added at the start of step `arrival`.
fn generate(w: &Workload, prefix_caching: bool) -> (Vec<Vec<u32>>, usize) {
    let mut c = EngineConfig::default();
    c.cache.block_size = w.block_size;
    c.cache.num_kv_blocks = Some(w.num_blocks);
    c.cache.enable_prefix_caching = prefix_caching;
    c.scheduler.max_num_batched_tokens = w.budget;
    c.scheduler.enable_chunked_prefill = w.chunked;
    c.scheduler.max_num_seqs = w.max_num_seqs;
    let model = load_model(&ModelSpec::Tiny, false, 0).unwrap();
    let mut e = LLMEngine::new(model, c).unwrap();
    let mut outputs = HashMap::new();
    let mut step = 0;
    while outputs.len() < w.requests.len() {
        for r in w.requests.iter().filter(|r| r.arrival == step) {
            let params = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(r.max_tokens)
            };
            e.add_request(Prompt::TokenIds(r.prompt.clone()), params)
                .unwrap();
        }
        step += 1;
        assert!(step < 10_000, "no progress");
        let done = e.step().unwrap();
        check_blocks(&e.scheduler, w.num_blocks);
        for o in done {
            assert!(
                outputs.insert(o.request_id, o.token_ids).is_none(),
                "finished twice"
            );
        }
    }
    let mut ids: Vec<_> = outputs.into_iter().collect();
    ids.sort();
    let hits = e.stats.prefix_cache.hit_tokens;
    (ids.into_iter().map(|(_, t)| t).collect(), hits)
}

proptest! {
    #![proptest_config(cases(64))]
    #[test]
    fn greedy_tokens_match_the_cache_off(w in workload(16, 6)) {
        let (on, _hits) = generate(&w, true);
        let (off, no_hits) = generate(&w, false);
        prop_assert_eq!(no_hits, 0);
        prop_assert_eq!(on, off);
    }
}

#[test]
fn the_random_workloads_do_hit_the_cache() {
    // The properties above mean little if hits are rare: over a fixed sample of the same
    // workloads, a good share must find something in the cache.
    let mut runner = proptest::test_runner::TestRunner::new(cases(256));
    let mut with_hits = 0;
    for _ in 0..200 {
        let w = workload(24, 12).new_tree(&mut runner).unwrap().current();
        if simulate(&w, true).1 > 0 {
            with_hits += 1;
        }
    }
    assert!(
        with_hits >= 50,
        "{with_hits} of 200 workloads hit the cache"
    );
}
