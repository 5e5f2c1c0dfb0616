//! Tensor parallelism on the CPU (one thread per rank, `ThreadExecutor`) against one rank.
//!
//! Random-weight Llama shapes, small enough that the whole file runs in seconds. The ranks add
//! the row-parallel partial sums in another order than one rank's matrix products do, so the
//! logits differ in the last bits. The tests therefore check two things: the logits agree
//! within `LOGIT_TOLERANCE` wherever both runs have produced the same tokens so far, and the
//! greedy tokens agree wherever the one-rank run's top-2 margin exceeds `MARGIN` (twice the
//! tolerance, so rounding cannot swap them); at a token whose margin is smaller the two runs
//! may part, and that request is compared no further. The tests also require that almost
//! every token was compared, so they cannot pass by skipping.

use engine::config::ModelConfig;
use engine::distributed::{CommOp, CommStats};
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, EngineParts, LLMEngine, Prompt, SamplingParams};
use proptest::prelude::*;

mod common;
use common::greedy_compare::{compare, generate, LOGIT_TOLERANCE};

/// A small Llama: `heads` query heads and `kv` KV heads of 16, `vocab` ids (the tiny model's
/// byte tokenizer's 259 fit), two layers.
fn shape(heads: usize, kv: usize, vocab: usize, tied: bool) -> ModelConfig {
    ModelConfig {
        hidden_size: heads * 16,
        intermediate_size: heads * 32,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        vocab_size: vocab,
        tie_word_embeddings: tied,
        ..tiny_config()
    }
}

fn model(config: &ModelConfig, name: &str, seed: u64) -> LoadedModel {
    LoadedModel {
        name: name.into(),
        config: config.clone(),
        weights: ModelWeights::Random { seed },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    }
}

fn engine_config(tp: usize) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.cache.block_size = 4;
    c.cache.num_kv_blocks = Some(64);
    c.parallel.tensor_parallel_size = tp;
    c
}

fn engine(config: &ModelConfig, tp: usize, seed: u64) -> LLMEngine {
    LLMEngine::new(model(config, "test", seed), engine_config(tp)).unwrap()
}

/// Prompts of 3 to 19 tokens; with several in one batch, steps mix prefill and decode.
fn prompts(n: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|p| {
            (0..3 + (p * 7) % 17)
                .map(|i| ((p * 31 + i * 13 + 5) % vocab) as u32)
                .collect()
        })
        .collect()
}

/// Runs `config` at TP = 1 and at each of `tps` and compares them.
fn check_matches_one_rank(config: &ModelConfig, tps: &[usize], max_tokens: usize) {
    let prompts = prompts(5, 259.min(config.vocab_size));
    let want = generate(&mut engine(config, 1, 3), &prompts, max_tokens).0;
    for &tp in tps {
        let got = generate(&mut engine(config, tp, 3), &prompts, max_tokens).0;
        let (compared, total) = compare(&want, &got, &format!("TP {tp}"));
        assert!(
            compared * 10 >= total * 9,
            "TP {tp}: only {compared} of {total} tokens had a clear margin"
        );
    }
}

#[test]
fn greedy_tokens_at_tp_2_and_4_equal_tp_1() {
    // 998 ids: at TP 4 each rank holds 250 rows, the last two of them padding.
    check_matches_one_rank(&shape(8, 4, 998, false), &[2, 4], 12);
}

#[test]
fn tied_embeddings_share_the_vocab_shard() {
    check_matches_one_rank(&shape(4, 2, 300, true), &[2], 8);
}

#[test]
fn tp_3_runs_a_nine_head_model() {
    check_matches_one_rank(&shape(9, 3, 500, false), &[3], 10);
}

#[test]
fn kv_heads_are_replicated_when_ranks_outnumber_them() {
    // 2 KV heads over 4 ranks: ranks 0-1 hold KV head 0, ranks 2-3 KV head 1.
    check_matches_one_rank(&shape(8, 2, 400, false), &[4], 10);
}

#[test]
fn a_size_that_does_not_divide_the_heads_is_refused() {
    let config = shape(9, 3, 500, false);
    let err = LLMEngine::new(model(&config, "SmolLM2-135M", 0), engine_config(2))
        .err()
        .expect("TP 2 of 9 heads must be refused")
        .to_string();
    assert!(
        err.contains(
            "SmolLM2-135M has 9 attention heads; --tensor-parallel-size must divide them \
             (1, 3 or 9)"
        ),
        "{err}"
    );
    // KV heads that neither divide nor are divided by the size: 12 heads, 4 KV heads, TP 6.
    let err = LLMEngine::new(model(&shape(12, 4, 300, false), "m", 0), engine_config(6))
        .err()
        .expect("TP 6 of 4 KV heads must be refused")
        .to_string();
    assert!(err.contains("m has 4 key-value heads"), "{err}");
}

/// Rank `rank`'s elements sent by one ring all-reduce of `len` elements over `n` ranks: every
/// chunk but its own in the first half, every chunk but the next rank's in the second
/// (engine/src/distributed/ring.rs).
fn ring_sent(len: usize, n: usize, rank: usize) -> usize {
    let chunk = |i: usize| (i + 1) * len / n - i * len / n;
    2 * len - chunk(rank) - chunk((rank + 1) % n)
}

#[test]
fn one_step_makes_two_all_reduces_per_layer_plus_one_and_one_gather() {
    for tp in [2, 3, 4] {
        let config = match tp {
            3 => shape(9, 3, 998, false),
            _ => shape(8, 4, 998, false),
        };
        let (layers, hidden) = (config.num_hidden_layers, config.hidden_size);
        let mut engine = engine(&config, tp, 1);
        let prompt: Vec<u32> = (0..7).collect();
        let out = generate(&mut engine, std::slice::from_ref(&prompt), 1).0; // one step: the prefill
        assert_eq!(out[0].token_ids.len(), 1);
        let stats: Vec<CommStats> = engine.comm_stats();
        assert_eq!(stats.len(), tp);
        let len = prompt.len() * hidden; // elements of one all-reduce: [tokens, hidden]
        let vocab_rows = config.vocab_size.div_ceil(tp);
        for (rank, s) in stats.iter().enumerate() {
            let ar = s.op(CommOp::AllReduce);
            let calls = (2 * layers + 1) as u64;
            assert_eq!(ar.calls, calls, "TP {tp} rank {rank}");
            assert_eq!(ar.tensor_bytes, calls * (len * 4) as u64);
            assert_eq!(ar.sent_bytes, calls * (ring_sent(len, tp, rank) * 4) as u64);
            // Within the ring's rounding of 2(N-1)/N of each all-reduce's bytes.
            let ideal = 2.0 * (tp - 1) as f64 / tp as f64 * (len * 4) as f64;
            let per_call = ar.sent_bytes as f64 / calls as f64;
            assert!(
                (per_call - ideal).abs() <= 2.0 * 4.0,
                "{per_call} vs {ideal}"
            );
            let ag = s.op(CommOp::AllGather);
            // One row of logits per rank's shard, gathered from all.
            let gathered = (tp * vocab_rows * 4) as u64;
            assert_eq!((ag.calls, ag.tensor_bytes), (1, gathered), "TP {tp}");
            assert_eq!(ag.sent_bytes, gathered / tp as u64 * (tp - 1) as u64);
            assert_eq!(s.total().calls, calls + 1, "no other collective");
            assert_eq!(s.total().failures, 0);
        }
    }
    // One rank has no communicator.
    let mut one = engine(&shape(4, 2, 300, false), 1, 1);
    generate(&mut one, &[vec![1, 2, 3]], 1);
    assert!(one.comm_stats().is_empty());
}

/// The engine's fused add + RMSNorm, except on tensor-parallel rank 1's thread.
fn fused_add_rms_norm_failing_on_rank_1(x: &mut [f32], res: &mut [f32], w: &[f32], eps: f32) {
    if std::thread::current().name() == Some("tp-rank-1") {
        panic!("injected failure");
    }
    engine::ops::rms_norm::fused_add_rms_norm(x, res, w, eps)
}

#[test]
fn a_rank_that_panics_fails_the_step_and_every_later_one() {
    let mut parts = EngineParts::default();
    parts.kernels.fused_add_rms_norm = fused_add_rms_norm_failing_on_rank_1;
    let config = shape(4, 2, 300, false);
    let mut engine =
        LLMEngine::with_parts(model(&config, "test", 0), engine_config(2), parts).unwrap();
    let start = std::time::Instant::now();
    engine
        .add_request(Prompt::TokenIds(vec![1, 2, 3]), SamplingParams::greedy(4))
        .unwrap();
    let err = engine.step().expect_err("the step fails").to_string();
    assert!(
        err.contains("rank 1 panicked") && err.contains("injected failure"),
        "{err}"
    );
    // Rank 0 learns at once that rank 1 is gone, not after the 60 s timeout.
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    let again = engine.step().expect_err("later steps fail too").to_string();
    assert!(again.contains("failed earlier"), "{again}");
}

/// The engine's fused add + RMSNorm, after a pause on tensor-parallel rank 1's thread.
fn fused_add_rms_norm_slow_on_rank_1(x: &mut [f32], res: &mut [f32], w: &[f32], eps: f32) {
    if std::thread::current().name() == Some("tp-rank-1") {
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    engine::ops::rms_norm::fused_add_rms_norm(x, res, w, eps)
}

#[test]
fn a_hung_rank_fails_the_step_after_the_timeout() {
    let mut parts = EngineParts::default();
    parts.kernels.fused_add_rms_norm = fused_add_rms_norm_slow_on_rank_1;
    let mut config = engine_config(2);
    config.parallel.collective_timeout = std::time::Duration::from_millis(200);
    let shape = shape(4, 2, 300, false);
    let mut engine = LLMEngine::with_parts(model(&shape, "test", 0), config, parts).unwrap();
    engine
        .add_request(Prompt::TokenIds(vec![1, 2, 3]), SamplingParams::greedy(4))
        .unwrap();
    let start = std::time::Instant::now();
    let err = engine.step().expect_err("rank 0 times out").to_string();
    // Rank 0 waits 200 ms for rank 1, fails, and the executor waits 200 ms more for rank 1.
    assert!(
        err.contains("rank 0: all_reduce timed out") && err.contains("rank 1"),
        "{err}"
    );
    assert!(start.elapsed() < std::time::Duration::from_millis(1400));
    drop(engine); // joins rank 1 once it wakes and finds rank 0 gone
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Random shapes and rank counts: one step's logits match one rank's.
    #[test]
    fn one_step_logits_match_one_rank(
        heads_per_rank in 1usize..4,
        tp in 1usize..5,
        kv_split in any::<bool>(),
        vocab in 259usize..700,
        tied in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let heads = heads_per_rank * tp;
        // KV heads: split over the ranks, or fewer than the ranks (replicated).
        let kv = if kv_split || tp == 1 { tp } else { 1.max(tp / 2) };
        let kv = if heads.is_multiple_of(kv) { kv } else { tp };
        let config = shape(heads, kv, vocab, tied);
        let prompts = prompts(3, 259);
        let want = generate(&mut engine(&config, 1, seed), &prompts, 2).0;
        let got = generate(&mut engine(&config, tp, seed), &prompts, 2).0;
        for (w, g) in want.iter().zip(&got) {
            // The first token's logits come from the same prompt in both runs.
            let diff = w.logits[0].iter().zip(&g.logits[0]).map(|(a, b)| (a - b).abs());
            let diff = diff.fold(0.0, f32::max);
            prop_assert!(diff <= LOGIT_TOLERANCE, "TP {} heads {} kv {}: {}", tp, heads, kv, diff);
        }
    }
}

/// `lab generate --tp 2` prints what `--tp 1` prints.
#[test]
fn lab_generate_with_tp_2_prints_the_same_text() {
    let run = |tp: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
            .args([
                "generate",
                "--device",
                "cpu",
                "--tp",
                tp,
                "--max-tokens",
                "12",
                "--prompt",
                "hello world",
                "--prompt",
                "tensor parallel",
            ])
            .output()
            .expect("lab runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let one = run("1");
    assert!(one.contains("output:"), "{one}");
    assert_eq!(run("2"), one);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["generate", "--device", "cpu", "--tp", "3", "--prompt", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("must divide them (1, 2 or 4)"), "{stderr}");
}
