//! `long_prefill_token_threshold`: with it above 0, no step gives one sequence more than the
//! threshold of tokens, and nothing else changes: every request still finishes exactly once,
//! with the same greedy tokens as without the cap. First on the scheduler alone over random
//! workloads (fake tokens, a tiny KV cache that forces preemption), then on the tiny model.

use std::collections::{HashMap, HashSet};

use engine::config::{EngineConfig, SchedulerConfig};
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduler_output::SchedulerOutput;
use engine::core::scheduling_policy::Fcfs;
use engine::model_source::{load_model, ModelSpec};
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence};
use engine::{EngineParts, LLMEngine, Prompt};
use proptest::prelude::*;

/// Cases of each property; `LONG_PREFILL_CASES` raises it (e.g. 10000) for a long run.
fn cases(default: u32) -> u32 {
    std::env::var("LONG_PREFILL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Panics if a step gives one sequence more tokens than the threshold or spends more than
/// the budget.
fn check_step(config: &SchedulerConfig, out: &SchedulerOutput) {
    let threshold = config.long_prefill_token_threshold;
    for sc in &out.scheduled {
        assert!(
            threshold == 0 || sc.token_ids.len() <= threshold,
            "{:?} got {} tokens in one step, past the threshold of {threshold}",
            sc.seq_id,
            sc.token_ids.len()
        );
    }
    assert!(out.num_batched_tokens() <= config.max_num_batched_tokens);
}

#[derive(Debug, Clone)]
struct Workload {
    block_size: usize,
    num_blocks: usize,
    budget: usize,
    chunked: bool,
    threshold: usize,
    /// (prompt length, max_tokens)
    requests: Vec<(usize, usize)>,
}

fn workload() -> impl Strategy<Value = Workload> {
    (
        1usize..=8,
        4usize..=24,
        1usize..=64,
        any::<bool>(),
        1usize..=40,
    )
        .prop_flat_map(|(block_size, num_blocks, budget, chunked, threshold)| {
            let capacity = block_size * num_blocks;
            // A prompt leaves room for a token; without chunking it must fit a step.
            let max_prompt = if chunked {
                capacity - 1
            } else {
                (capacity - 1).min(budget)
            };
            let request = (1..=max_prompt.max(1), 1usize..=12);
            (
                Just((block_size, num_blocks, budget, chunked, threshold)),
                prop::collection::vec(request, 1..10),
            )
        })
        .prop_map(
            |((block_size, num_blocks, budget, chunked, threshold), requests)| Workload {
                block_size,
                num_blocks,
                budget,
                chunked,
                threshold,
                requests,
            },
        )
}

/// Runs `w` on the scheduler with `threshold`, a fake model sampling token 9 (never EOS):
/// returns each request's output tokens, checking every step on the way.
fn run_scheduler(w: &Workload, threshold: usize) -> HashMap<SeqId, Vec<u32>> {
    let config = SchedulerConfig {
        max_num_seqs: 4,
        max_num_batched_tokens: w.budget,
        enable_chunked_prefill: w.chunked,
        long_prefill_token_threshold: threshold,
    };
    let capacity = w.block_size * w.num_blocks;
    let bm = BlockManager::new(
        w.block_size,
        Box::new(RefCountingAllocator::new(w.num_blocks)),
    )
    .with_prefix_caching(false);
    let mut s = Scheduler::new(config, Box::new(Fcfs), bm, vec![2], capacity);
    for (i, &(len, max_tokens)) in w.requests.iter().enumerate() {
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(max_tokens)
        };
        s.add_sequence(Sequence::new(SeqId(i as u64), vec![7; len], params));
    }
    let mut outputs = HashMap::new();
    let mut steps = 0;
    while s.has_unfinished() {
        steps += 1;
        assert!(steps < 100_000, "no progress: the scheduler is stuck");
        let out = s.schedule();
        assert!(!out.is_empty(), "a step with work left scheduled nothing");
        check_step(&config, &out);
        let sampled = vec![9; out.scheduled.iter().filter(|sc| sc.needs_logits).count()];
        for seq in s.update_from_output(&out, &sampled) {
            let prev = outputs.insert(seq.seq_id, seq.output_token_ids.clone());
            assert!(prev.is_none(), "{:?} finished twice", seq.seq_id);
        }
    }
    assert_eq!(outputs.len(), w.requests.len(), "a request never finished");
    assert_eq!(
        s.block_manager.num_free_blocks(),
        w.num_blocks,
        "a block leaked"
    );
    outputs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// No step gives a sequence more than the threshold, every request finishes once with
    /// all its tokens, under preemption (a cache of 4 to 24 blocks) and with chunking off.
    #[test]
    fn the_threshold_caps_every_chunk_and_changes_no_output(w in workload()) {
        let capped = run_scheduler(&w, w.threshold);
        let uncapped = run_scheduler(&w, 0);
        prop_assert_eq!(capped, uncapped);
    }
}

// ---- The tiny model: the same greedy tokens with and without the threshold ----

/// `Scheduler::schedule`, with every step checked against the scheduler's own config.
fn checked_schedule(s: &mut Scheduler) -> SchedulerOutput {
    let out = s.schedule();
    check_step(s.config(), &out);
    out
}

fn tiny_engine(budget: usize, threshold: usize, chunked: bool) -> LLMEngine {
    let mut c = EngineConfig::default();
    c.cache.block_size = 4;
    c.cache.num_kv_blocks = Some(48);
    c.scheduler.max_num_seqs = 4;
    c.scheduler.max_num_batched_tokens = budget;
    c.scheduler.enable_chunked_prefill = chunked;
    c.scheduler.long_prefill_token_threshold = threshold;
    let parts = EngineParts {
        schedule: checked_schedule,
        ..EngineParts::default()
    };
    let model = load_model(&ModelSpec::Tiny, false, 0).unwrap();
    LLMEngine::with_parts(model, c, parts).unwrap()
}

/// Each request's greedy tokens, by request id; each id must finish exactly once.
fn greedy_tokens(e: &mut LLMEngine, prompts: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(5)
    };
    for p in prompts {
        e.add_request(Prompt::TokenIds(p.clone()), params.clone())
            .unwrap();
    }
    let mut out = Vec::new();
    while e.has_unfinished_requests() {
        out.extend(e.step().unwrap());
    }
    let ids: HashSet<SeqId> = out.iter().map(|o| o.request_id).collect();
    assert_eq!(ids.len(), out.len(), "a request finished twice");
    assert_eq!(out.len(), prompts.len(), "a request never finished");
    out.sort_by_key(|o| o.request_id);
    out.into_iter().map(|o| o.token_ids).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(12)))]

    #[test]
    fn tiny_model_tokens_are_the_same_with_the_threshold(
        budget in 8usize..48,
        threshold in 1usize..24,
        chunked in any::<bool>(),
        prompts in prop::collection::vec(prop::collection::vec(3u32..200, 1..40), 1..6),
    ) {
        // Without chunking a prompt must fit a step.
        let prompts: Vec<Vec<u32>> = prompts
            .into_iter()
            .map(|mut p| {
                if !chunked {
                    p.truncate(budget);
                }
                p
            })
            .collect();
        let capped = greedy_tokens(&mut tiny_engine(budget, threshold, chunked), &prompts);
        let uncapped = greedy_tokens(&mut tiny_engine(budget, 0, chunked), &prompts);
        prop_assert_eq!(capped, uncapped);
    }
}

/// The cap shows in the step statistics: a 40-token prompt under a threshold of 8 takes five
/// prefill steps of 8 tokens, where without it one step of the budget (64) holds it all.
#[test]
fn a_long_prompt_is_prefilled_in_chunks_of_the_threshold() {
    let prefill_tokens = |threshold| {
        let mut e = tiny_engine(64, threshold, true);
        e.record_step_stats = true;
        greedy_tokens(&mut e, &[(10..50).collect()]);
        e.step_stats
            .iter()
            .map(|s| s.num_prefill_tokens)
            .filter(|&n| n > 0)
            .collect::<Vec<_>>()
    };
    assert_eq!(prefill_tokens(8), vec![8; 5]);
    assert_eq!(prefill_tokens(0), vec![40]);
}

// ---- `lab generate --long-prefill-token-threshold N` ----

const PROMPTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/prefix_caching_prompts.json"
);

/// Runs `lab generate --json --stats` on the tiny model with a budget of 64; returns stdout
/// (the JSON outputs) and the (prefill tokens, prefill sequences) of the first step.
fn lab_generate(extra: &[&str]) -> (String, (usize, usize)) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["generate", "--model", "tiny", "--prompts-file", PROMPTS])
        .args(["--max-tokens", "3", "--json", "--stats"])
        .args(["--max-num-batched-tokens", "64"])
        .args(extra)
        .output()
        .expect("lab runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lab failed: {stderr}");
    // The stats table: a header, then one line per step (step, prefill, decode, p_seqs, ...).
    let first: Vec<usize> = stderr
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .expect("a first step in the stats")
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .collect();
    (String::from_utf8(out.stdout).unwrap(), (first[1], first[3]))
}

/// Five prompts of more than 8 tokens: without a threshold the first step's 64 tokens all go
/// to the first prompt; with 8, each of the five gets 8. The tokens are the same.
#[test]
fn lab_generate_takes_the_threshold() {
    let (capped, first_capped) = lab_generate(&["--long-prefill-token-threshold", "8"]);
    let (uncapped, first_uncapped) = lab_generate(&[]);
    assert_eq!(first_uncapped, (64, 1));
    assert_eq!(first_capped, (40, 5));
    assert_eq!(
        capped, uncapped,
        "the same outputs with and without the threshold"
    );
}

#[test]
fn a_bad_threshold_is_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["generate", "--model", "tiny", "--prompt", "hi"])
        .args(["--long-prefill-token-threshold", "1.5"])
        .output()
        .expect("lab runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--long-prefill-token-threshold") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
