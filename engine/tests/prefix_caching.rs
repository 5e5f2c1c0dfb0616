//! Automatic prefix caching: regression tests for bugs other engines shipped, each checked on
//! the scheduler's decisions (no model) and, where tokens can go wrong, on the tiny model's
//! greedy tokens with the cache on and off.

use engine::config::{EngineConfig, SchedulerConfig};
use engine::core::block::BlockId;
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduler_output::SchedulerOutput;
use engine::core::scheduling_policy::Fcfs;
use engine::model_source::{load_model, ModelSpec};
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence};
use engine::worker::model_runner::prepare_inputs;
use engine::{LLMEngine, Prompt};

const BS: usize = 4;

fn scheduler(num_blocks: usize, budget: usize) -> Scheduler {
    let config = SchedulerConfig {
        max_num_seqs: 8,
        max_num_batched_tokens: budget,
        enable_chunked_prefill: true,
        ..SchedulerConfig::default()
    };
    let bm = BlockManager::new(BS, Box::new(RefCountingAllocator::new(num_blocks)))
        .with_prefix_caching(true);
    Scheduler::new(config, Box::new(Fcfs), bm, vec![], BS * num_blocks)
}

fn add(s: &mut Scheduler, id: u64, prompt: Vec<u32>, max_tokens: usize) {
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(max_tokens)
    };
    s.add_sequence(Sequence::new(SeqId(id), prompt, params));
}

/// One step with a fake model that samples token 9; returns the batch and who finished.
fn step(s: &mut Scheduler) -> (SchedulerOutput, Vec<SeqId>) {
    let out = s.schedule();
    let sampled = vec![9; out.scheduled.iter().filter(|x| x.needs_logits).count()];
    let done = s.update_from_output(&out, &sampled);
    (out, done.iter().map(|q| q.seq_id).collect())
}

fn run_to_end(s: &mut Scheduler) {
    for _ in 0..1000 {
        if !s.has_unfinished() {
            return;
        }
        step(s);
    }
    panic!("the scheduler is stuck");
}

fn prompt(range: std::ops::Range<u32>) -> Vec<u32> {
    range.collect()
}

#[test]
fn a_whole_prompt_hit_still_computes_the_last_block() {
    // Two full blocks, both cached by the first request. The second request must not count
    // its last token as cached (its logits give the first output token): it hits one block
    // and recomputes the second, starting at position 4.
    let mut s = scheduler(8, 64);
    add(&mut s, 0, prompt(10..18), 1);
    run_to_end(&mut s);
    add(&mut s, 1, prompt(10..18), 1);
    let (out, done) = step(&mut s);
    let x = &out.scheduled[0];
    assert_eq!((x.start_position, x.token_ids.len()), (4, 4));
    assert!(x.needs_logits, "the last token's logits are computed");
    assert_eq!(done, [SeqId(1)]);
    let stats = s.block_manager.prefix_cache_stats();
    assert_eq!((stats.queried_tokens, stats.hit_tokens), (8 + 8, 4));

    // One token more than the cached blocks: both blocks hit, one token is computed.
    add(&mut s, 2, prompt(10..19), 1);
    let (out, _) = step(&mut s);
    let x = &out.scheduled[0];
    assert_eq!((x.start_position, x.token_ids.clone()), (8, vec![18]));
}

#[test]
fn a_request_hits_blocks_computed_earlier_in_the_same_step() {
    // Both arrive together. Request 0's blocks are registered as it is scheduled; request 1,
    // scheduled after it in the same batch, shares its first two blocks and computes only its
    // own tail (the step writes request 0's KV before attention reads it).
    let mut s = scheduler(16, 64);
    add(&mut s, 0, prompt(10..19), 1);
    add(&mut s, 1, [prompt(10..18), prompt(60..63)].concat(), 1);
    let (out, _) = step(&mut s);
    let (zero, one) = (&out.scheduled[0], &out.scheduled[1]);
    assert_eq!((zero.seq_id, zero.start_position), (SeqId(0), 0));
    assert_eq!((one.seq_id, one.start_position), (SeqId(1), 8));
    assert_eq!(one.block_table[..2], zero.block_table[..2]);
    assert_eq!(out.num_batched_tokens(), 9 + 3);
}

#[test]
fn a_hit_is_free_of_budget_and_starts_computing_after_the_prefix() {
    // Budget 5: without the cache, the 13-token prompt would take 3 steps; with 8 cached
    // tokens it takes one step of its 5 new tokens, beside nothing else.
    let mut s = scheduler(16, 5);
    add(&mut s, 0, prompt(10..22), 1); // 12 tokens: 3 blocks cached
    run_to_end(&mut s);
    add(&mut s, 1, [prompt(10..18), prompt(40..45)].concat(), 1);
    let (out, done) = step(&mut s);
    assert_eq!(out.num_batched_tokens(), 5);
    assert_eq!(out.scheduled[0].start_position, 8);
    assert_eq!(done, [SeqId(1)], "finished in one step");
}

#[test]
fn chunked_prefill_after_a_hit_reads_the_right_key_length() {
    // 8 cached tokens, then 10 new ones in chunks of 4: each chunk's keys are the cached
    // prefix plus every token computed so far (seq_len = start + chunk), never the chunk alone
    // and never the prefix counted twice.
    let mut s = scheduler(16, 4);
    add(&mut s, 0, prompt(10..19), 1); // blocks [10..14) [14..18) cached
    run_to_end(&mut s);
    add(&mut s, 1, [prompt(10..18), prompt(50..60)].concat(), 1);
    let cached = s.block_manager.get_computed_blocks(&Sequence::new(
        SeqId(9),
        prompt(10..19),
        SamplingParams::greedy(1),
    ));
    assert_eq!(cached.num_tokens, 8);
    let mut chunks = Vec::new();
    loop {
        let (out, done) = step(&mut s);
        let input = prepare_inputs(&out, BS);
        let x = &out.scheduled[0];
        let end = x.start_position + x.token_ids.len();
        assert_eq!(
            input.attn_metadata.seq_lens,
            [end],
            "key length of the chunk"
        );
        assert_eq!(input.attn_metadata.query_start_loc, [0, x.token_ids.len()]);
        let want: Vec<usize> = (x.start_position..end).collect();
        assert_eq!(input.positions, want);
        assert_eq!(
            x.block_table[..2],
            cached.blocks[..],
            "the cached blocks lead"
        );
        chunks.push((x.start_position, x.token_ids.len(), x.needs_logits));
        if !done.is_empty() {
            break;
        }
    }
    assert_eq!(chunks, [(8, 4, false), (12, 4, false), (16, 2, true)]);
}

#[test]
fn a_prefix_hit_after_the_sharing_request_was_preempted() {
    // 6 blocks of 4. Request 0 (8-token prompt P + 2) computes P; request 1 (P + 3) shares
    // P's two blocks. When both need room, request 1 (the latest) is preempted by recompute:
    // its shared blocks must stay with request 0, and when it comes back it hits P again,
    // with the right ref counts and a start after the hit.
    let mut s = scheduler(6, 64);
    add(&mut s, 0, prompt(10..20), 10);
    step(&mut s); // request 0's prompt: blocks 0, 1 registered; 2 is partial
    add(&mut s, 1, [prompt(10..18), prompt(70..73)].concat(), 10);
    let (out, _) = step(&mut s);
    let shared: Vec<BlockId> = s.block_manager.block_table(SeqId(0))[..2].to_vec();
    let one = out.scheduled.iter().find(|x| x.seq_id == SeqId(1)).unwrap();
    assert_eq!(one.start_position, 8, "request 1 hit P");
    assert_eq!(one.block_table[..2], shared[..]);
    assert!(shared.iter().all(|&b| s.block_manager.ref_count(b) == 2));

    let mut preempted = false;
    let mut rehit = false;
    for _ in 0..100 {
        if !s.has_unfinished() {
            break;
        }
        let (out, _) = step(&mut s);
        if out.preempted.contains(&SeqId(1)) {
            preempted = true;
            // Request 0 still owns P; the cache never parked a block it holds.
            for &b in &shared {
                assert_eq!(s.block_manager.ref_count(b), 1);
                assert!(!s.block_manager.is_parked(b));
            }
            assert_eq!(s.sequence(SeqId(1)).unwrap().num_computed_tokens, 0);
        }
        if let Some(x) = out.scheduled.iter().find(|x| x.seq_id == SeqId(1)) {
            if preempted && !rehit {
                rehit = true;
                assert!(x.start_position >= 8, "back after preemption, it hits P");
                assert_eq!(x.start_position % BS, 0, "a hit ends on a block boundary");
                assert_eq!(x.block_table[..2], shared[..]);
            }
        }
    }
    assert!(
        preempted && rehit,
        "the test must preempt request 1 and bring it back"
    );
    assert_eq!(s.block_manager.num_free_blocks(), 6, "no block leaked");
}

#[test]
fn eviction_under_pressure_never_takes_a_block_someone_holds() {
    // 4 blocks of 4. Request 0 caches two blocks and finishes: both parked. Request 1 hits
    // the first; request 2 then needs 3 fresh blocks: the 1 free block, and the parked one
    // nobody holds, are not enough without the held one, so it waits; with 2 it gets them,
    // evicting only the unheld parked block.
    let mut bm =
        BlockManager::new(BS, Box::new(RefCountingAllocator::new(4))).with_prefix_caching(true);
    let a = Sequence::new(SeqId(0), prompt(10..19), SamplingParams::greedy(1));
    assert!(bm.allocate_slots(a.seq_id, 9));
    let mut a = a;
    a.num_computed_tokens = 9;
    bm.cache_full_blocks(&a, 9);
    let cached = bm.block_table(a.seq_id)[..2].to_vec();
    bm.free(a.seq_id);
    assert_eq!(bm.num_parked_blocks(), 2);

    let b = Sequence::new(SeqId(1), prompt(10..16), SamplingParams::greedy(1));
    let hit = bm.get_computed_blocks(&b);
    assert_eq!(hit.blocks, cached[..1]);
    assert!(bm.allocate_slots_with_prefix(b.seq_id, 6, &hit));
    assert_eq!(bm.block_table(b.seq_id)[0], cached[0]);

    assert!(
        !bm.allocate_slots(SeqId(2), 12),
        "3 blocks: only 2 can be had"
    );
    assert!(bm.block_table(SeqId(2)).is_empty(), "all or nothing");
    assert!(bm.allocate_slots(SeqId(2), 8));
    assert!(!bm.block_table(SeqId(2)).contains(&cached[0]));
    assert_eq!(bm.ref_count(cached[0]), 1, "still request 1's");
    assert_eq!(bm.prefix_cache_stats().num_evictions, 1);
    let hit = bm.get_computed_blocks(&Sequence::new(
        SeqId(3),
        prompt(10..19),
        SamplingParams::greedy(1),
    ));
    assert_eq!(hit.blocks, cached[..1], "the held block is still found");
}

// ---- The tiny model: the same greedy tokens with the cache on and off ----

fn engine(prefix_caching: bool, num_kv_blocks: usize, budget: usize) -> LLMEngine {
    let mut c = EngineConfig::default();
    c.cache.block_size = BS;
    c.cache.num_kv_blocks = Some(num_kv_blocks);
    c.cache.enable_prefix_caching = prefix_caching;
    c.scheduler.max_num_batched_tokens = budget;
    c.scheduler.max_num_seqs = 4;
    LLMEngine::new(load_model(&ModelSpec::Tiny, false, 0).unwrap(), c).unwrap()
}

/// Runs `waves` of prompts, each wave added after the one before has run `gap` steps.
fn tokens(e: &mut LLMEngine, waves: &[Vec<Vec<u32>>], gap: usize) -> Vec<Vec<u32>> {
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(6)
    };
    let mut out = Vec::new();
    for wave in waves {
        for p in wave {
            e.add_request(Prompt::TokenIds(p.clone()), params.clone())
                .unwrap();
        }
        for _ in 0..gap {
            out.extend(e.step().unwrap());
        }
    }
    while e.has_unfinished_requests() {
        out.extend(e.step().unwrap());
    }
    out.sort_by_key(|o| o.request_id);
    out.into_iter().map(|o| o.token_ids).collect()
}

fn shared_prefix_waves() -> Vec<Vec<Vec<u32>>> {
    let system = prompt(30..47); // 17 tokens: 4 full blocks and one more
    let with = |tail: std::ops::Range<u32>| [system.clone(), prompt(tail)].concat();
    vec![
        vec![with(60..63)],
        vec![with(80..86), system[..16].to_vec(), with(60..63)],
        vec![system[..9].to_vec(), with(90..101)],
    ]
}

#[test]
fn shared_prefixes_give_the_same_tokens_with_the_cache_on_and_off() {
    for (blocks, budget) in [(64, 2048), (64, 5), (12, 7)] {
        let mut on = engine(true, blocks, budget);
        let mut off = engine(false, blocks, budget);
        let waves = shared_prefix_waves();
        assert_eq!(
            tokens(&mut on, &waves, 2),
            tokens(&mut off, &waves, 2),
            "{blocks} blocks, budget {budget}"
        );
        let hits = on.stats.prefix_cache.hit_tokens;
        assert!(hits > 0, "{blocks} blocks, budget {budget}: no hit");
        assert_eq!(off.stats.prefix_cache.hit_tokens, 0);
        if blocks == 12 {
            assert!(on.stats.num_preemptions > 0, "the small cache preempts");
        } else {
            assert_eq!(
                on.stats.num_batched_tokens + hits,
                off.stats.num_batched_tokens,
                "every hit token is one the model did not compute, no more"
            );
        }
    }
}

#[test]
fn eviction_takes_the_least_recently_used_block_and_a_sequence_tail_first() {
    // 6 blocks of 2. Request 0 caches [a0 a1] and finishes, then request 1 caches [b0 b1]
    // and finishes: 4 parked blocks, 2 free. A request needing 3 fresh blocks takes the 2
    // free ones and evicts one parked block: request 0's tail a1 (oldest request, and within
    // it the tail first). a0 is still found; all of request 1 is.
    let mut bm =
        BlockManager::new(2, Box::new(RefCountingAllocator::new(6))).with_prefix_caching(true);
    for (id, p) in [(0, prompt(10..14)), (1, prompt(20..24))] {
        let mut q = Sequence::new(SeqId(id), p, SamplingParams::greedy(1));
        assert!(bm.allocate_slots(q.seq_id, 4));
        q.num_computed_tokens = 4;
        bm.cache_full_blocks(&q, 4);
        bm.free(q.seq_id);
    }
    assert_eq!(bm.num_parked_blocks(), 4);
    assert!(bm.allocate_slots(SeqId(2), 6));
    let found = |bm: &BlockManager, p: Vec<u32>| {
        let q = Sequence::new(SeqId(3), [p, vec![0]].concat(), SamplingParams::greedy(1));
        bm.get_computed_blocks(&q).num_tokens
    };
    assert_eq!(found(&bm, prompt(10..14)), 2, "a0 stays, a1 went");
    assert_eq!(found(&bm, prompt(20..24)), 4, "request 1 is more recent");
}

#[test]
fn same_step_hits_are_right_across_ranks_and_micro_batches() {
    // A hit on a block computed in the same step is right only if its writer runs first: on
    // every tensor-parallel rank, and on every pipeline stage, where the step's sequences go
    // through in micro-batches in batch order (the writer's micro-batch first).
    let system = prompt(30..47);
    let wave: Vec<Vec<u32>> = (0..4)
        .map(|i| [system.clone(), prompt(60 + i..64 + i)].concat())
        .collect();
    for (tp, pp, micro) in [
        (2, 1, None),
        (1, 2, Some(2)),
        (1, 2, Some(4)),
        (2, 2, Some(3)),
    ] {
        let run = |caching: bool| {
            let mut c = EngineConfig::default();
            c.cache.block_size = BS;
            c.cache.num_kv_blocks = Some(64);
            c.cache.enable_prefix_caching = caching;
            c.parallel.tensor_parallel_size = tp;
            c.parallel.pipeline_parallel_size = pp;
            c.parallel.pipeline_micro_batches = micro;
            let model = load_model(&ModelSpec::Tiny, false, 0).unwrap();
            let mut e = LLMEngine::new(model, c).unwrap();
            let t = tokens(&mut e, std::slice::from_ref(&wave), 0);
            (t, e.stats.prefix_cache.hit_tokens)
        };
        let ((on, hits), (off, _)) = (run(true), run(false));
        assert_eq!(on, off, "tp {tp}, pp {pp}, micro-batches {micro:?}");
        assert_eq!(
            hits,
            3 * 16,
            "three requests hit the first's 4 blocks in step 1"
        );
    }
}

// ---- Tracing: each admission's lookup, inside its step's `schedule` span ----

mod spans {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::subscriber::Interest;
    use tracing::{Event, Metadata, Subscriber};

    /// A span's name, its fields as text, and its parent's index in the log.
    pub type Logged = (String, Vec<(String, String)>, Option<usize>);

    /// Keeps the `schedule` and `prefix_cache` spans, with the span each was opened in.
    #[derive(Clone, Default)]
    pub struct Log {
        pub spans: Arc<Mutex<Vec<Logged>>>,
        entered: Arc<Mutex<Vec<usize>>>,
    }

    struct Fields<'a>(&'a mut Vec<(String, String)>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }

    impl Subscriber for Log {
        fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
            if self.enabled(meta) {
                Interest::sometimes()
            } else {
                Interest::never()
            }
        }
        fn enabled(&self, meta: &Metadata<'_>) -> bool {
            meta.is_span() && ["schedule", "prefix_cache"].contains(&meta.name())
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let mut fields = Vec::new();
            span.record(&mut Fields(&mut fields));
            let parent = self.entered.lock().unwrap().last().copied();
            let mut spans = self.spans.lock().unwrap();
            spans.push((span.metadata().name().to_string(), fields, parent));
            Id::from_u64(spans.len() as u64)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, id: &Id) {
            self.entered
                .lock()
                .unwrap()
                .push(id.into_u64() as usize - 1);
        }
        fn exit(&self, _: &Id) {
            self.entered.lock().unwrap().pop();
        }
    }
}

#[test]
fn each_lookup_opens_a_span_with_request_step_and_hit_tokens() {
    // tracing-core caches each callsite's interest for the whole process. While ours is the
    // only dispatcher registered, a callsite first hit on another test's thread is asked of
    // *that* thread's default (none) and cached as "never", so this test once saw no span at
    // all (CI, 2026-11-30). A global default that wants nothing makes two dispatchers, and
    // every registration then asks ours as well.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    let log = spans::Log::default();
    let mut e = engine(true, 64, 2048);
    tracing::subscriber::with_default(log.clone(), || {
        tokens(&mut e, &[vec![prompt(10..19)], vec![prompt(10..20)]], 2);
    });
    let spans = log.spans.lock().unwrap();
    let field = |i: usize, k: &str| {
        let f = &spans[i].1;
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let lookups: Vec<(String, String, String, String)> = (0..spans.len())
        .filter(|&i| spans[i].0 == "prefix_cache")
        .map(|i| {
            let step = spans[i].2.expect("opened inside the schedule span");
            assert_eq!(spans[step].0, "schedule");
            (
                field(step, "step"),
                field(i, "request_id"),
                field(i, "queried_tokens"),
                field(i, "hit_tokens"),
            )
        })
        .collect();
    let s = |v: &[&str; 4]| v.map(String::from).into();
    assert_eq!(
        lookups,
        [s(&["1", "0", "9", "0"]), s(&["3", "1", "10", "8"])],
        "(step, request, queried, hit): request 1 arrives after step 2 and hits 2 blocks"
    );
}
