//! Each step tells the ranks only what changed (`engine::distributed::step_delta`): on a long
//! run with many running requests the bytes sent per step fall far below the whole scheduler
//! output's, and the tokens stay exactly those of one rank that was given every whole output.
//!
//! Pipeline parallelism computes bit for bit what one rank does, so the comparison is exact.

use engine::config::ModelConfig;
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};

fn model() -> LoadedModel {
    LoadedModel {
        name: "tiny".into(),
        config: ModelConfig {
            num_hidden_layers: 2,
            ..tiny_config()
        },
        weights: ModelWeights::Random { seed: 5 },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    }
}

fn engine(pp: usize, num_kv_blocks: usize) -> LLMEngine {
    let mut c = EngineConfig::default();
    c.cache.block_size = 4;
    c.cache.num_kv_blocks = Some(num_kv_blocks);
    c.scheduler.max_num_seqs = 32;
    c.parallel.pipeline_parallel_size = pp;
    LLMEngine::new(model(), c).unwrap()
}

/// Greedy tokens of every request, in order, and the preemptions the run had.
fn run(engine: &mut LLMEngine, requests: usize, max_tokens: usize) -> (Vec<Vec<u32>>, usize) {
    let mut params = SamplingParams::greedy(max_tokens);
    params.ignore_eos = true;
    for r in 0..requests {
        let prompt: Vec<u32> = (0..5 + r % 11)
            .map(|i| ((r * 37 + i * 11) % 250 + 3) as u32)
            .collect();
        engine
            .add_request(Prompt::TokenIds(prompt), params.clone())
            .unwrap();
    }
    let mut done = Vec::new();
    while engine.has_unfinished_requests() {
        done.extend(engine.step().unwrap());
    }
    done.sort_by_key(|o| o.request_id);
    let tokens = done.into_iter().map(|o| o.token_ids).collect();
    (tokens, engine.stats.num_preemptions)
}

#[test]
fn deltas_are_much_smaller_than_whole_outputs_and_change_no_token() {
    let (requests, max_tokens) = (32, 96);
    // Room for every request at once: a long run of decodes of 32 running requests.
    let (want, _) = run(&mut engine(1, 1024), requests, max_tokens);
    let mut pp = engine(2, 1024);
    let (got, _) = run(&mut pp, requests, max_tokens);
    assert_eq!(got, want, "the ranks rebuilt every step exactly");
    let b = pp.broadcast_stats().expect("two ranks are told each step");
    eprintln!(
        "{} steps: {} B/step as deltas, {} B/step whole ({:.1}x)",
        b.steps,
        b.delta_bytes / b.steps,
        b.full_bytes / b.steps,
        b.full_bytes as f64 / b.delta_bytes as f64
    );
    assert!(
        b.delta_bytes * 5 < b.full_bytes,
        "deltas {} B, whole outputs {} B",
        b.delta_bytes,
        b.full_bytes
    );
    assert!(
        engine(1, 64).broadcast_stats().is_none(),
        "one rank is told nothing"
    );
}

/// A cache too small for every request: requests are preempted and come back in other
/// blocks, which the ranks must be sent whole again.
#[test]
fn preempted_requests_come_back_whole_and_change_no_token() {
    let (want, preempted) = run(&mut engine(1, 40), 12, 40);
    assert!(preempted > 0, "the run must preempt to test this");
    let mut pp = engine(2, 40);
    let (got, pp_preempted) = run(&mut pp, 12, 40);
    assert_eq!((got, pp_preempted), (want, preempted));
    let b = pp.broadcast_stats().unwrap();
    assert!(b.delta_bytes < b.full_bytes);
}
