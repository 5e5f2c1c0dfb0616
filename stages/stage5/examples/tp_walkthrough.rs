//! One request through the tensor-parallel engine, step by step, with the engine's own
//! counters: what each rank's communicator did (calls, tensor bytes, bytes sent, time inside
//! the calls) and how long each step took, at TP 1 and at TP `N`.
//!
//! ```sh
//! cargo run --release -p stage5 --example tp_walkthrough            # SmolLM2-135M's shape, TP 3
//! cargo run --release -p stage5 --example tp_walkthrough -- 1 2     # the tiny model at TP 2
//! ```
//!
//! The weights are random (drawn from a seed), so nothing is downloaded; the shapes are the
//! model's, and so are the collectives and their sizes. This uses the engine's own parts; put
//! `stage5::engine_parts()` in `LLMEngine::with_parts` to run with your `shard_tensor`.

use std::time::{Duration, Instant};

use engine::config::ModelConfig;
use engine::distributed::{CommOp, CommStats, OpStats};
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};

/// SmolLM2-135M's shape (quizzes/configs/smollm2-135m.json): 30 layers, hidden 576, 9 heads
/// and 3 KV heads of 64, MLP 1536, 49,152 ids, tied embeddings.
fn smollm2_shape() -> ModelConfig {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../quizzes/configs/smollm2-135m.json"
    );
    let text = std::fs::read_to_string(path).expect("quizzes/configs/smollm2-135m.json");
    ModelConfig::from_json(&text).expect("a model config")
}

fn engine(config: &ModelConfig, tp: usize) -> LLMEngine {
    let model = LoadedModel {
        name: "walkthrough".into(),
        config: config.clone(),
        weights: ModelWeights::Random { seed: 5 },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    };
    let mut c = EngineConfig::default();
    c.cache.block_size = 16;
    c.cache.num_kv_blocks = Some(16);
    c.parallel.tensor_parallel_size = tp;
    LLMEngine::new(model, c).expect("an engine")
}

fn diff(now: &OpStats, before: &OpStats) -> OpStats {
    OpStats {
        calls: now.calls - before.calls,
        failures: now.failures - before.failures,
        tensor_bytes: now.tensor_bytes - before.tensor_bytes,
        sent_bytes: now.sent_bytes - before.sent_bytes,
        time: now.time - before.time,
    }
}

/// Runs one request of `prompt_len` tokens for `new_tokens` tokens; prints each step.
fn walk(config: &ModelConfig, tp: usize, prompt_len: usize, new_tokens: usize) -> Vec<u32> {
    let mut e = engine(config, tp);
    let mut params = SamplingParams::greedy(new_tokens);
    params.ignore_eos = true;
    let prompt: Vec<u32> = (0..prompt_len as u32).map(|i| (i * 7 + 3) % 250).collect();
    e.add_request(Prompt::TokenIds(prompt), params).unwrap();
    println!("TP {tp}: one request, {prompt_len} prompt tokens, {new_tokens} new");
    let mut before: Vec<CommStats> = e.comm_stats();
    let (mut step, mut tokens, mut total) = (0, Vec::new(), Duration::ZERO);
    while e.has_unfinished_requests() {
        let start = Instant::now();
        let out = e.step().unwrap();
        let wall = start.elapsed();
        total += wall;
        let now = e.comm_stats();
        let kind = if step == 0 { "prefill" } else { "decode " };
        print!("  step {step} {kind} {:>8.2} ms", wall.as_secs_f64() * 1e3);
        if let (Some(n), Some(b)) = (now.first(), before.first()) {
            for op in [CommOp::AllReduce, CommOp::AllGather] {
                let d = diff(n.op(op), b.op(op));
                print!(
                    " | {op} x{}: {} B tensors, {} B sent, {:.2} ms",
                    d.calls,
                    d.tensor_bytes,
                    d.sent_bytes,
                    d.time.as_secs_f64() * 1e3
                );
            }
        }
        println!();
        for o in out {
            tokens = o.token_ids;
        }
        before = now;
        step += 1;
    }
    // Every rank did the same: print each rank's totals.
    for (rank, s) in e.comm_stats().iter().enumerate() {
        let t = s.total();
        println!(
            "  rank {rank}: {} calls, {} B sent, {:.2} ms in collectives",
            t.calls,
            t.sent_bytes,
            t.time.as_secs_f64() * 1e3
        );
    }
    println!(
        "  all steps: {:.1} ms; tokens {tokens:?}",
        total.as_secs_f64() * 1e3
    );
    tokens
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("usage: tp_walkthrough [MODEL(0 smollm2-shape, 1 tiny)] [TP]")
        })
        .collect();
    let (config, default_tp) = match args.first() {
        Some(1) => (tiny_config(), 2),
        _ => (smollm2_shape(), 3),
    };
    let tp = args.get(1).copied().unwrap_or(default_tp);
    let one = walk(&config, 1, 16, 4);
    let many = walk(&config, tp, 16, 4);
    println!("same tokens at TP 1 and TP {tp}: {}", one == many);
}
