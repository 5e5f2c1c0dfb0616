//! `min_tokens` (vLLM's): until a request has `min_tokens` output tokens, its stop tokens (the
//! model's EOS unless `ignore_eos`, and its `stop_token_ids`) cannot be sampled: their logits
//! are -inf before the sampler runs.
//!
//! - On the tiny model, a token that greedy decoding emits at step k becomes the model's EOS:
//!   without `min_tokens` the request stops at step k; with `min_tokens = m > k` it goes on,
//!   every step's token is the argmax of the raw logits with the stop token masked (below m) or
//!   not (from m on), and the first m tokens hold no stop token. The same with the token as a
//!   `stop_token_id`.
//! - A property over random workloads (random sampling, top-k, top-p, stop ids, chunked prefill,
//!   prefix caching, a KV cache small enough to preempt): every token is what the engine's
//!   sampler picks from that step's raw logits, masked exactly while fewer than `min_tokens`
//!   tokens are out, with the draw of the token's position. With `min_tokens = 0` nothing is
//!   ever masked: outputs are those of the sampler alone, as before `min_tokens` existed.
//! - On a GPU (skipped without one): the same greedy check through the sampling kernel and the
//!   mask kernel, eager and with CUDA graphs.
//!
//! `MIN_TOKENS_CASES=1000 cargo test -p engine --test min_tokens --release` runs a long search.

use engine::config::{Device, ModelConfig};
use engine::min_tokens::mask_logits;
use engine::model_source::{load_model, LoadedModel, ModelSpec, ModelWeights};
use engine::sampler::{argmax, sample};
use engine::sequence::FinishReason;
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{philox, EngineConfig, EngineParts, Prompt, RequestOutput, SamplingParams, LLM};
use proptest::prelude::*;
use proptest::test_runner::Config;

mod common;
use common::gpu::gpu_or_skip;

fn cases() -> u32 {
    std::env::var("MIN_TOKENS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn tiny(eos_token_ids: Vec<u32>) -> LoadedModel {
    let mut m = load_model(&ModelSpec::Tiny, false, 0).expect("tiny model");
    m.eos_token_ids = eos_token_ids;
    m
}

fn cpu_config() -> EngineConfig {
    let mut c = EngineConfig {
        device: Device::Cpu,
        ..EngineConfig::default()
    };
    c.cache.num_kv_blocks = Some(64);
    c.cache.block_size = 16;
    c
}

fn prompts() -> Vec<Prompt> {
    (0..3)
        .map(|p| {
            Prompt::TokenIds(
                (0..5 + 7 * p)
                    .map(|i| 3 + ((i * 37 + p * 11) % 256) as u32)
                    .collect(),
            )
        })
        .collect()
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        output_logits: true,
        ..SamplingParams::default()
    }
}

/// Checks that each token of `out` is what `params`' sampler picks from the step's raw logits
/// with `stops` masked while fewer than `min_tokens` are out, and that it ended as it should.
fn check_tokens(out: &RequestOutput, params: &SamplingParams, stops: &[u32]) -> Result<(), String> {
    let m = params.min_tokens;
    let n = out.token_ids.len();
    if out.logits.len() != n {
        return Err(format!("{} logits rows for {n} tokens", out.logits.len()));
    }
    let seed = params.seed.unwrap_or(0);
    for (i, (&token, raw)) in out.token_ids.iter().zip(&out.logits).enumerate() {
        let mut row = raw.clone();
        if i < m {
            mask_logits(&mut row, stops);
        }
        let draw = philox::uniform(seed, out.prompt_token_ids.len() + i);
        let mut want = sample(&row, params, draw);
        if i < m && stops.contains(&want) {
            // The sampler's walk ran off its kept tokens by rounding (rare): the engine's guard.
            want = argmax(&row);
        }
        if token != want {
            return Err(format!(
                "request {:?} token {i}: {token}, the sampler on the {} logits gives {want}",
                out.request_id,
                if i < m { "masked" } else { "raw" }
            ));
        }
        if i < m && stops.contains(&token) {
            return Err(format!(
                "token {i} is stop token {token}, below min_tokens {m}"
            ));
        }
        if i + 1 < n && stops.contains(&token) {
            return Err(format!("stop token {token} at {i} did not end the request"));
        }
    }
    match out.finish_reason {
        FinishReason::Stop if n <= m || !stops.contains(&out.token_ids[n - 1]) => Err(format!(
            "stopped after {n} tokens (min_tokens {m}) on {:?}",
            out.token_ids.last()
        )),
        FinishReason::Length if n != params.max_tokens => {
            Err(format!("length after {n} of {} tokens", params.max_tokens))
        }
        _ => Ok(()),
    }
}

/// The first step k >= 1 of `tokens` whose token has not appeared before, and that token.
fn fresh_token(tokens: &[u32]) -> Option<(usize, u32)> {
    (1..tokens.len())
        .find(|&k| !tokens[..k].contains(&tokens[k]))
        .map(|k| (k, tokens[k]))
}

/// Greedy decoding would emit `t` at step k < min_tokens; as EOS, then as a stop token id, it
/// ends the request at k without min_tokens and is skipped until min_tokens with it.
fn check_min_tokens_past_a_stop(
    model: impl Fn(Vec<u32>) -> LoadedModel,
    config: impl Fn() -> EngineConfig,
) {
    let max = 16;
    let mut probe = greedy(max);
    probe.ignore_eos = true;
    let free = LLM::new(model(vec![]), config())
        .unwrap()
        .generate_prompts(prompts(), &probe)
        .unwrap();
    let (k, t) = fresh_token(&free[0].token_ids[..8]).expect("a token new at some step < 8");
    let m = k + 5;
    println!("greedy emits {t} first at step {k}; min_tokens {m}");

    // As the model's EOS.
    let mut llm = LLM::new(model(vec![t]), config()).unwrap();
    let plain = llm.generate_prompts(prompts(), &greedy(max)).unwrap();
    assert_eq!(plain[0].token_ids, free[0].token_ids[..=k]);
    assert_eq!(plain[0].finish_reason, FinishReason::Stop);
    let params = SamplingParams {
        min_tokens: m,
        ..greedy(max)
    };
    let floor = llm.generate_prompts(prompts(), &params).unwrap();
    let first = &floor[0];
    assert!(first.token_ids.len() >= m, "{:?}", first.token_ids);
    assert_eq!(first.token_ids[..k], free[0].token_ids[..k]);
    assert_ne!(first.token_ids[k], t);
    for out in &floor {
        check_tokens(out, &params, &[t]).unwrap();
    }
    // The step where t was the argmax: the runner-up was taken.
    let mut row = first.logits[k].clone();
    assert_eq!(argmax(&row), t);
    mask_logits(&mut row, &[t]);
    assert_eq!(first.token_ids[k], argmax(&row));

    // As a stop token id, the model's EOS (none here) aside.
    let mut llm = LLM::new(model(vec![]), config()).unwrap();
    let params = SamplingParams {
        stop_token_ids: vec![t],
        min_tokens: m,
        ..greedy(max)
    };
    let by_id = llm.generate_prompts(prompts(), &params).unwrap();
    assert_eq!(by_id[0].token_ids, first.token_ids);
    for out in &by_id {
        check_tokens(out, &params, &[t]).unwrap();
    }
    // With ignore_eos the EOS is not a stop token, so nothing is masked.
    let mut llm = LLM::new(model(vec![t]), config()).unwrap();
    let params = SamplingParams {
        ignore_eos: true,
        min_tokens: m,
        ..greedy(max)
    };
    let ignored = llm.generate_prompts(prompts(), &params).unwrap();
    assert_eq!(ignored[0].token_ids, free[0].token_ids);
}

#[test]
fn greedy_goes_past_its_eos_until_min_tokens() {
    check_min_tokens_past_a_stop(tiny, cpu_config);
}

/// A sampler that ignores the mask (here: always the tiny model's EOS, id 2).
fn always_eos(_logits: &[f32], _params: &SamplingParams, _draw: f32) -> u32 {
    2
}

/// A sampler that hands back a banned id anyway (a learner's that does not skip -inf, or the
/// rounding case) gets the masked row's argmax instead, until min_tokens; then it may stop.
#[test]
fn a_sampler_that_returns_a_banned_id_is_overruled_until_min_tokens() {
    let parts = EngineParts {
        sample: always_eos,
        ..EngineParts::default()
    };
    let mut llm = LLM::with_parts(tiny(vec![2]), cpu_config(), parts).unwrap();
    let params = SamplingParams {
        min_tokens: 5,
        ..greedy(12)
    };
    for out in llm.generate_prompts(prompts(), &params).unwrap() {
        assert_eq!(out.token_ids.len(), 6, "{:?}", out.token_ids);
        for (i, raw) in out.logits[..5].iter().enumerate() {
            let mut row = raw.clone();
            mask_logits(&mut row, &[2]);
            assert_eq!(out.token_ids[i], argmax(&row));
        }
        assert_eq!(out.token_ids[5], 2);
        assert_eq!(out.finish_reason, FinishReason::Stop);
    }
}

#[test]
fn min_tokens_above_max_tokens_or_over_the_whole_vocabulary_is_refused() {
    let mut llm = LLM::new(tiny(vec![2]), cpu_config()).unwrap();
    let params = SamplingParams {
        min_tokens: 5,
        ..greedy(4)
    };
    let err = llm.generate_prompts(prompts(), &params).unwrap_err();
    assert!(err.to_string().contains("min_tokens (5)"), "{err}");
    // Every token a stop token: nothing could be sampled below min_tokens.
    let vocab = tiny_config().vocab_size as u32;
    let params = SamplingParams {
        min_tokens: 1,
        stop_token_ids: (3..vocab + 5).collect(), // with EOS (2): all but 0 and 1
        ..greedy(4)
    };
    let outs = llm.generate_prompts(prompts(), &params).unwrap();
    assert!(outs.iter().all(|o| o.token_ids[0] < 2), "{outs:?}");
    let params = SamplingParams {
        stop_token_ids: (0..vocab).collect(),
        ..params
    };
    let err = llm.generate_prompts(prompts(), &params).unwrap_err();
    assert!(
        err.to_string().contains("nothing is left to sample"),
        "{err}"
    );
}

#[derive(Debug, Clone)]
struct Case {
    prompts: Vec<Vec<u32>>,
    params: Vec<SamplingParams>,
    block_size: usize,
    num_blocks: usize,
    budget: usize,
    prefix_caching: bool,
}

fn params() -> impl Strategy<Value = SamplingParams> {
    (
        prop_oneof![Just(0.0f32), 0.3f32..2.0],
        prop::option::of(1usize..40),
        prop_oneof![Just(1.0f32), 0.2f32..1.0],
        any::<u64>(),
        1usize..=12,
        0usize..=12,
        prop::collection::vec(3u32..259, 0..40),
        any::<bool>(),
    )
        .prop_map(
            |(temperature, top_k, top_p, seed, max, min, stops, ignore_eos)| SamplingParams {
                temperature,
                top_k,
                top_p,
                seed: Some(seed),
                max_tokens: max,
                min_tokens: min.min(max),
                stop_token_ids: stops,
                ignore_eos,
                output_logits: true,
                ..SamplingParams::default()
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=4).prop_flat_map(|n| {
        (
            prop::collection::vec(prop::collection::vec(3u32..259, 1..=30), n),
            prop::collection::vec(params(), n),
            prop::sample::select(vec![2usize, 4, 8]),
            any::<bool>(),
            4usize..=32,
            0usize..=24,
        )
            .prop_map(
                |(prompts, params, block_size, prefix_caching, budget, extra)| {
                    // Room for the longest request alone (so it always finishes), and sometimes
                    // not for all of them at once (so some are preempted and recomputed).
                    let longest = prompts
                        .iter()
                        .zip(&params)
                        .map(|(p, q)| (p.len() + q.max_tokens).div_ceil(block_size))
                        .max()
                        .unwrap_or(1);
                    Case {
                        prompts,
                        params,
                        block_size,
                        num_blocks: longest + 1 + extra / block_size,
                        budget,
                        prefix_caching,
                    }
                },
            )
    })
}

proptest! {
    #![proptest_config(Config { cases: cases(), ..Config::default() })]

    /// Every token is the sampler's pick from its step's raw logits, masked exactly while the
    /// request has fewer than min_tokens tokens (never when min_tokens = 0).
    #[test]
    fn every_token_is_the_masked_sample(c in case()) {
        let mut config = cpu_config();
        config.cache.block_size = c.block_size;
        config.cache.num_kv_blocks = Some(c.num_blocks);
        config.cache.enable_prefix_caching = c.prefix_caching;
        config.scheduler.max_num_batched_tokens = c.budget;
        config.scheduler.enable_chunked_prefill = true;
        let eos = tiny_config().eos_token_ids;
        let mut llm = LLM::new(tiny(eos.clone()), config).unwrap();
        let requests = c
            .prompts
            .iter()
            .zip(&c.params)
            .map(|(p, q)| (Prompt::TokenIds(p.clone()), q.clone()))
            .collect();
        let outputs = llm.generate_requests(requests).unwrap();
        prop_assert_eq!(outputs.len(), c.prompts.len());
        for (out, p) in outputs.iter().zip(&c.params) {
            let stops = p.all_stop_token_ids(&eos);
            if let Err(e) = check_tokens(out, p, &stops) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

// ---- GPU ------------------------------------------------------------------------------------

/// The tiny model with a head size the CUDA kernels have (64).
fn gpu_model(eos_token_ids: Vec<u32>) -> LoadedModel {
    let mut c: ModelConfig = tiny_config();
    c.head_dim = 64;
    c.hidden_size = 256;
    c.intermediate_size = 512;
    LoadedModel {
        name: "random d64".into(),
        config: c,
        weights: ModelWeights::Random { seed: 7 },
        tokenizer: tiny_tokenizer(),
        eos_token_ids,
    }
}

fn gpu_config(graphs: bool) -> EngineConfig {
    let mut c = EngineConfig {
        device: Device::Cuda(0),
        cuda_graphs: graphs,
        ..EngineConfig::default()
    };
    c.cache.block_size = 16;
    c.cache.num_kv_blocks = Some(64);
    c.scheduler.max_num_seqs = 8;
    c
}

/// Through the CUDA sampling kernel and the mask kernel: greedy on the GPU's own (bf16) logits
/// is exact, so every check of the CPU test holds as it is.
#[test]
fn on_the_gpu_greedy_goes_past_its_eos_until_min_tokens() {
    if !gpu_or_skip() {
        return;
    }
    check_min_tokens_past_a_stop(gpu_model, || gpu_config(false));
}

/// With CUDA graphs on, decode steps without bans replay graphs and steps with bans run
/// eagerly; either way no stop token comes before min_tokens. (Graphs pad the batch, so their
/// bf16 tokens may differ from the eager run's at near ties: counted, not required equal.)
#[test]
fn on_the_gpu_cuda_graphs_keep_min_tokens() {
    if !gpu_or_skip() {
        return;
    }
    let max = 16;
    let mut probe = greedy(max);
    probe.ignore_eos = true;
    let free = LLM::new(gpu_model(vec![]), gpu_config(false))
        .unwrap()
        .generate_prompts(prompts(), &probe)
        .unwrap();
    let (k, t) = fresh_token(&free[0].token_ids[..8]).expect("a token new at some step < 8");
    let params = SamplingParams {
        min_tokens: k + 5,
        output_logits: false,
        ..greedy(max)
    };
    let run = |graphs| {
        LLM::new(gpu_model(vec![t]), gpu_config(graphs))
            .unwrap()
            .generate_prompts(prompts(), &params)
            .unwrap()
    };
    let (eager, graphed) = (run(false), run(true));
    let m = params.min_tokens;
    let mut same = 0;
    for (e, g) in eager.iter().zip(&graphed) {
        for out in [e, g] {
            let got = &out.token_ids;
            assert!(got.len() >= m && !got[..m].contains(&t), "{got:?}");
        }
        same += usize::from(e.token_ids == g.token_ids);
    }
    println!(
        "{same} of {} requests equal with and without graphs",
        eager.len()
    );
    assert_ne!(eager[0].token_ids[k], t);
}
