//! Preemption by swap and by recompute, under every scheduling policy and victim selection,
//! on the tiny model with a KV cache so small that requests are preempted again and again.
//!
//! For random workloads (prefix caching on or off, prompts sharing their first tokens): every
//! request finishes exactly once; after every step a device block's owners are the tables
//! holding it, a used host block belongs to exactly one swapped sequence, and the free
//! counts add up; at the end every block is free (or cached, unowned); and each request's
//! greedy tokens are the tokens it generates alone on a roomy cache.
//!
//! `PREEMPTION_CASES=10000 cargo test -p engine --test preemption --release` runs 10,000
//! workloads; the default, 48, takes under a second (about a third of the swap-mode ones
//! swap, the rest preempt by recompute or fit).

use std::collections::{HashMap, HashSet};

use engine::config::EngineConfig;
use engine::core::block::BlockId;
use engine::core::preemption::{PreemptionConfig, PreemptionMode, VictimSelection};
use engine::core::scheduling_policy::policy_from_name;
use engine::llm_engine::LLMEngine;
use engine::model_source::{load_model, ModelSpec};
use engine::sampling_params::SamplingParams;
use engine::{EngineParts, Prompt};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

const POLICIES: [&str; 4] = ["fcfs", "priority", "fair", "qos"];
const VICTIMS: [VictimSelection; 4] = [
    VictimSelection::Policy,
    VictimSelection::LowestPriority,
    VictimSelection::LatestArrival,
    VictimSelection::MostBlocks,
];

fn cases() -> u32 {
    std::env::var("PREEMPTION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

#[derive(Debug, Clone)]
struct Request {
    prompt: Vec<u32>,
    max_tokens: usize,
    priority: i32,
    tenant: String,
}

#[derive(Debug, Clone)]
struct Workload {
    block_size: usize,
    num_blocks: usize,
    /// Host blocks of the swap space (0: every swap falls back to recompute).
    swap_blocks: usize,
    budget: usize,
    max_num_seqs: usize,
    mode: PreemptionMode,
    victim: VictimSelection,
    policy: &'static str,
    prefix_caching: bool,
    /// Async scheduling: each step scheduled while the one before it is in flight.
    async_scheduling: bool,
    requests: Vec<Request>,
}

fn request(max_prompt: usize) -> impl Strategy<Value = Request> {
    (
        prop::collection::vec(3u32..250, 1..=max_prompt),
        1usize..=10,
        0i32..3,
        0u8..3,
    )
        .prop_map(|(prompt, max_tokens, priority, tenant)| Request {
            prompt,
            max_tokens,
            priority,
            tenant: format!("t{tenant}"),
        })
}

fn workload() -> impl Strategy<Value = Workload> {
    (
        prop::sample::select(vec![2usize, 4]),
        4usize..=10,
        0usize..=12,
        4usize..=32,
        1usize..=6,
        any::<bool>(),
        0usize..4,
        0usize..4,
        (any::<bool>(), 0usize..10),
    )
        .prop_flat_map(|(bs, nb, swap, budget, seqs, swap_mode, v, p, caching)| {
            // A request's prompt and output must fit the whole cache, so that it ends as it
            // would alone on a roomy one.
            let capacity = bs * nb;
            // The first tokens of every prompt are the same, so the prefix cache has hits.
            let shared = caching.1;
            let fit = move |mut r: Request| {
                for (i, t) in r.prompt.iter_mut().take(shared).enumerate() {
                    *t = 3 + i as u32;
                }
                r.prompt.truncate(capacity - 1);
                r.max_tokens = r.max_tokens.min(capacity - r.prompt.len());
                r
            };
            (
                Just((bs, nb, swap, budget, seqs, swap_mode, v, p, caching.0)),
                prop::collection::vec(request(20).prop_map(fit), 1..=7),
            )
        })
        .prop_map(
            |(
                (block_size, num_blocks, swap_blocks, budget, max_num_seqs, swap, v, p, caching),
                requests,
            )| {
                Workload {
                    block_size,
                    num_blocks,
                    swap_blocks,
                    budget,
                    max_num_seqs,
                    mode: if swap {
                        PreemptionMode::Swap
                    } else {
                        PreemptionMode::Recompute
                    },
                    victim: VICTIMS[v],
                    policy: POLICIES[p],
                    prefix_caching: caching,
                    async_scheduling: false,
                    requests,
                }
            },
        )
}

/// Bytes of one KV block of the tiny model in f32 (keys and values, every layer).
fn block_bytes(block_size: usize) -> usize {
    let model = load_model(&ModelSpec::Tiny, false, 0).expect("tiny model");
    engine::worker::cache_engine::kv_cache_bytes_per_block(&model.config, block_size, 4)
}

fn engine_for(w: &Workload) -> LLMEngine {
    let mut config = EngineConfig::default();
    config.cache.block_size = w.block_size;
    config.cache.num_kv_blocks = Some(w.num_blocks);
    config.cache.enable_prefix_caching = w.prefix_caching;
    config.scheduler.max_num_batched_tokens = w.budget;
    config.scheduler.max_num_seqs = w.max_num_seqs;
    config.scheduler.enable_chunked_prefill = true;
    config.async_scheduling = Some(w.async_scheduling);
    config.preemption = PreemptionConfig {
        mode: w.mode,
        victim: w.victim,
        swap_space_bytes: w.swap_blocks * block_bytes(w.block_size),
    };
    let parts = EngineParts {
        policy: policy_from_name(w.policy, &[("t0".into(), 3.0)]).expect("known policy"),
        ..EngineParts::default()
    };
    let model = load_model(&ModelSpec::Tiny, false, 0).expect("tiny model");
    LLMEngine::with_parts(model, config, parts).expect("engine starts")
}

fn params(r: &Request) -> SamplingParams {
    SamplingParams {
        ignore_eos: true,
        priority: r.priority,
        tenant: r.tenant.clone(),
        ..SamplingParams::greedy(r.max_tokens)
    }
}

/// Each request alone on a cache with room for everything.
fn alone(requests: &[Request]) -> Vec<Vec<u32>> {
    let model = load_model(&ModelSpec::Tiny, false, 0).expect("tiny model");
    let mut config = EngineConfig::default();
    config.cache.num_kv_blocks = Some(64);
    let mut e = LLMEngine::new(model, config).expect("engine starts");
    requests
        .iter()
        .map(|r| {
            e.add_request(Prompt::TokenIds(r.prompt.clone()), params(r))
                .expect("valid request");
            let mut out = Vec::new();
            while e.has_unfinished_requests() {
                out.extend(e.step().expect("step runs"));
            }
            assert_eq!(out.len(), 1);
            out.pop().unwrap().token_ids
        })
        .collect()
}

/// Device and host blocks: each used one in exactly one table, the free counts add up.
fn check_blocks(e: &LLMEngine) {
    let s = &e.scheduler;
    let bm = &s.block_manager;
    // A device block may be shared (a cached prefix): its owners are then exactly the tables
    // holding it. Free blocks include cached ones no table holds.
    let mut owners: HashMap<BlockId, u32> = HashMap::new();
    for (_, table) in bm.block_tables() {
        for &b in table {
            *owners.entry(b).or_default() += 1;
        }
    }
    for (&b, &n) in &owners {
        assert_eq!(bm.ref_count(b), n, "device block {b:?} in {n} tables");
    }
    assert_eq!(owners.len() + bm.num_free_blocks(), bm.num_total_blocks());
    let sw = &s.swap_space;
    let mut host: HashSet<BlockId> = HashSet::new();
    for (seq, table) in sw.block_tables() {
        assert!(
            s.swapped.contains(seq),
            "{seq:?} holds host blocks but is not swapped"
        );
        assert!(
            bm.block_table(*seq).is_empty(),
            "{seq:?} is swapped and holds device blocks"
        );
        for &b in table {
            assert!(host.insert(b), "host block {b:?} in two tables");
            assert_eq!(sw.ref_count(b), 1);
        }
    }
    assert_eq!(host.len() + sw.num_free_blocks(), sw.num_total_blocks());
    assert_eq!(sw.block_tables().count(), s.num_swapped());
}

fn run(w: &Workload) -> (Vec<Vec<u32>>, LLMEngine) {
    let mut e = engine_for(w);
    let ids: Vec<_> = w
        .requests
        .iter()
        .map(|r| {
            e.add_request(Prompt::TokenIds(r.prompt.clone()), params(r))
                .expect("valid request")
        })
        .collect();
    let mut done: HashMap<_, Vec<u32>> = HashMap::new();
    let limit = 50 * w.requests.len() * 40;
    for _ in 0..limit {
        if !e.has_unfinished_requests() {
            break;
        }
        for o in e.step().expect("step runs") {
            assert!(
                done.insert(o.request_id, o.token_ids).is_none(),
                "{:?} finished twice",
                o.request_id
            );
        }
        check_blocks(&e);
    }
    assert!(!e.has_unfinished_requests(), "no progress in {limit} steps");
    let bm = &e.scheduler.block_manager;
    assert_eq!(
        bm.num_free_blocks(),
        bm.num_total_blocks(),
        "device blocks leaked"
    );
    let sw = &e.scheduler.swap_space;
    assert_eq!(
        sw.num_free_blocks(),
        sw.num_total_blocks(),
        "host blocks leaked"
    );
    let tokens = ids
        .iter()
        .map(|id| done.remove(id).expect("every request finishes"))
        .collect();
    (tokens, e)
}

proptest! {
    #![proptest_config(Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5a4a9),
        ..Config::with_cases(cases())
    })]

    #[test]
    fn every_request_finishes_once_with_its_tokens_alone(w in workload()) {
        let want = alone(&w.requests);
        let (tokens, _) = run(&w);
        prop_assert_eq!(&tokens, &want);
        // The same workload with each step scheduled while the one before it runs: the
        // placeholders, the token computed past a request's end, the late finishes.
        let (tokens, _) = run(&Workload { async_scheduling: true, ..w });
        prop_assert_eq!(&tokens, &want, "async scheduling");
    }
}

/// A fixed workload that must swap: four requests whose outputs outgrow an 8-block cache.
fn crowded(mode: PreemptionMode, swap_blocks: usize, policy: &'static str) -> Workload {
    let requests = (0..4)
        .map(|i| Request {
            prompt: (0..6).map(|j| 3 + (i * 37 + j * 11) % 240).collect(),
            max_tokens: 10,
            priority: (3 - i) as i32,
            tenant: format!("t{}", i % 2),
        })
        .collect();
    Workload {
        block_size: 4,
        num_blocks: 8,
        swap_blocks,
        budget: 64,
        max_num_seqs: 4,
        mode,
        victim: VictimSelection::Policy,
        policy,
        prefix_caching: false,
        async_scheduling: false,
        requests,
    }
}

#[test]
fn swap_mode_swaps_out_and_back_in_and_keeps_the_tokens() {
    for policy in POLICIES {
        let w = crowded(PreemptionMode::Swap, 16, policy);
        let (tokens, e) = run(&w);
        assert_eq!(tokens, alone(&w.requests), "{policy}");
        let s = &e.stats;
        assert!(
            s.num_swapped_out > 0,
            "{policy}: nothing was swapped: {s:?}"
        );
        assert_eq!(s.num_swapped_out, s.num_swapped_in, "{policy}");
        assert_eq!(s.blocks_swapped_out, s.blocks_swapped_in, "{policy}");
        assert_eq!(
            s.num_preemptions, 0,
            "{policy}: the swap space had room: {s:?}"
        );
    }
}

#[test]
fn a_full_swap_space_falls_back_to_recompute() {
    let w = crowded(PreemptionMode::Swap, 0, "fcfs");
    let (tokens, e) = run(&w);
    assert_eq!(tokens, alone(&w.requests));
    assert_eq!(e.stats.num_swapped_out, 0);
    assert!(e.stats.num_preemptions > 0, "{:?}", e.stats);
}

#[test]
fn recompute_mode_never_swaps() {
    let w = crowded(PreemptionMode::Recompute, 16, "fcfs");
    let (tokens, e) = run(&w);
    assert_eq!(tokens, alone(&w.requests));
    assert_eq!(e.stats.num_swapped_out, 0);
    assert!(e.stats.num_preemptions > 0, "{:?}", e.stats);
}

#[test]
fn step_stats_add_up_to_the_engine_counters() {
    let w = crowded(PreemptionMode::Swap, 16, "fcfs");
    let mut e = engine_for(&w);
    e.record_step_stats = true;
    for r in &w.requests {
        e.add_request(Prompt::TokenIds(r.prompt.clone()), params(r))
            .unwrap();
    }
    while e.has_unfinished_requests() {
        e.step().unwrap();
    }
    let steps = &e.step_stats;
    assert_eq!(steps.len(), e.stats.num_steps);
    let sum = |f: fn(&engine::core::step_stats::StepStats) -> usize| -> usize {
        steps.iter().map(f).sum()
    };
    assert_eq!(sum(|s| s.num_batched_tokens()), e.stats.num_batched_tokens);
    assert_eq!(sum(|s| s.num_swapped_out), e.stats.num_swapped_out);
    assert_eq!(sum(|s| s.blocks_swapped_in), e.stats.blocks_swapped_in);
    // Every prompt token is prefilled once (swap keeps the cache), every output token but
    // the last is decoded once.
    let prompt: usize = w.requests.iter().map(|r| r.prompt.len()).sum();
    let decode: usize = w.requests.iter().map(|r| r.max_tokens - 1).sum();
    assert_eq!(sum(|s| s.num_prefill_tokens), prompt);
    assert_eq!(sum(|s| s.num_decode_tokens), decode);
    assert!(steps
        .iter()
        .all(|s| s.num_swapped_in == 0 || s.num_swapped_out == 0));
    assert_eq!(e.last_step_stats(), steps.last());
}

#[test]
fn swap_is_refused_with_several_ranks() {
    let mut config = EngineConfig::default();
    config.preemption.mode = PreemptionMode::Swap;
    config.parallel.tensor_parallel_size = 2;
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("--preemption-mode swap"), "{err}");
}

#[test]
fn bad_flags_are_one_line_errors() {
    assert!("sideways".parse::<PreemptionMode>().is_err());
    assert!("youngest".parse::<VictimSelection>().is_err());
    assert!(engine::core::preemption::swap_space_bytes(-1.0).is_err());
    assert_eq!(
        engine::core::preemption::swap_space_bytes(1.0).unwrap(),
        1 << 30
    );
    assert!(policy_from_name("lottery", &[]).is_err());
    assert!(policy_from_name("fair", &[("a".into(), 0.0)]).is_err());
}

#[test]
fn cpu_swap_blocks_round_trip_and_refuse_bad_input() {
    use engine::backend::cpu_backend::{CpuBackend, CpuTensor};
    use engine::backend::{Backend, DType, HostData, HostKvBlocks, SwapDirection};
    let b = CpuBackend::default();
    // 4 device blocks of 2 rows of width 3; block k's rows hold 10k, 10k+1, ...
    let data: Vec<f32> = (0..4)
        .flat_map(|k| (0..6).map(move |i| (10 * k + i) as f32))
        .collect();
    let mut cache = CpuTensor {
        data: data.clone(),
        rows: 8,
        cols: 3,
        ..Default::default()
    };
    let mut host = HostKvBlocks::zeros(DType::F32, 2, 2, 3);
    b.swap_blocks(&mut cache, &mut host, &[(3, 0), (1, 1)], SwapDirection::Out)
        .unwrap();
    let HostData::F32(h) = &host.data else {
        panic!("f32 host blocks")
    };
    assert_eq!(&h[..6], &data[18..24]);
    assert_eq!(&h[6..], &data[6..12]);
    cache.data.fill(-1.0);
    b.swap_blocks(&mut cache, &mut host, &[(0, 0), (2, 1)], SwapDirection::In)
        .unwrap();
    assert_eq!(&cache.data[..6], &data[18..24]);
    assert_eq!(&cache.data[12..18], &data[6..12]);
    assert!(cache.data[6..12].iter().all(|&x| x == -1.0), "untouched");
    // A block outside either side, another width, another dtype: errors, nothing copied.
    let before = cache.data.clone();
    for mapping in [[(4u32, 0u32)], [(0, 2)]] {
        let err = b.swap_blocks(&mut cache, &mut host, &mapping, SwapDirection::In);
        assert!(err.unwrap_err().to_string().contains("swap_blocks"));
    }
    let mut wide = HostKvBlocks::zeros(DType::F32, 2, 2, 4);
    assert!(b
        .swap_blocks(&mut cache, &mut wide, &[(0, 0)], SwapDirection::In)
        .is_err());
    let mut bf16 = HostKvBlocks::zeros(DType::BF16, 2, 2, 3);
    assert!(b
        .swap_blocks(&mut cache, &mut bf16, &[(0, 0)], SwapDirection::In)
        .is_err());
    assert_eq!(cache.data, before);
    let HostData::BF16(z) = &bf16.data else {
        panic!("bf16 host blocks")
    };
    assert!(z.iter().all(|x| x.to_f32() == 0.0) && z.len() == 12);
}

#[test]
fn a_swap_that_does_not_fit_changes_nothing() {
    use engine::core::block_allocator::RefCountingAllocator;
    use engine::core::block_manager::BlockManager;
    use engine::core::swap_space::SwapSpace;
    use engine::sequence::SeqId;
    let mut bm = BlockManager::new(4, Box::new(RefCountingAllocator::new(8)));
    let (a, b) = (SeqId(0), SeqId(1));
    assert!(bm.allocate_slots(a, 12) && bm.allocate_slots(b, 8));
    let mut swap = SwapSpace::new(4);
    let copies = swap.swap_out(&mut bm, a).expect("3 blocks fit 4");
    assert_eq!(copies.len(), 3);
    assert!(bm.block_table(a).is_empty());
    assert_eq!(bm.num_free_blocks(), 6);
    // b's 2 blocks do not fit the 1 host block left.
    assert!(swap.swap_out(&mut bm, b).is_none());
    assert_eq!(bm.block_table(b).len(), 2);
    assert_eq!(swap.num_free_blocks(), 1);
    // Back in: fresh device blocks, one per host block, in order.
    let back = swap.swap_in(&mut bm, a, 12).expect("6 free device blocks");
    assert_eq!(
        back.iter().map(|c| c.host).collect::<Vec<_>>(),
        copies.iter().map(|c| c.host).collect::<Vec<_>>()
    );
    assert_eq!(
        back.iter().map(|c| c.device).collect::<Vec<_>>(),
        bm.block_table(a)
    );
    assert_eq!(swap.num_free_blocks(), 4);
}
