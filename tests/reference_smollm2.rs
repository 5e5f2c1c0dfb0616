//! The engine against Hugging Face transformers on the real model (SmolLM2-135M-Instruct,
//! float32, CPU): same token ids from the tokenizer, the same greedy tokens, first-step
//! logits within tolerance, and all of it unchanged by batching, preemption and chunking.
//!
//! Skips (with a message) when the model has not been fetched; CI fetches it first.

use engine::config::EngineConfig;
use engine::model_source::{load_model, ModelSpec};
use engine::{Prompt, SamplingParams, LLM};
use integration_tests::{reference, smollm2_dir, Reference};

fn model_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let dir = smollm2_dir();
    if dir.is_none() {
        eprintln!("skipping {test}: SmolLM2 is not fetched (run `lab fetch-model smollm2`)");
    }
    dir
}

fn llm(dir: &std::path::Path, config: EngineConfig) -> LLM {
    let model = load_model(&ModelSpec::Dir(dir.to_path_buf()), false, 0).expect("model loads");
    LLM::new(model, config).expect("engine starts")
}

#[test]
fn tokenizer_matches_transformers() {
    let Some(dir) = model_or_skip("tokenizer_matches_transformers") else {
        return;
    };
    let tok = engine::tokenizer::Tokenizer::from_dir(&dir).unwrap();
    let r = reference();
    for case in &r.tokenizer_cases {
        assert_eq!(
            tok.encode(&case.text).unwrap(),
            case.ids,
            "ids of {:?}",
            case.text
        );
        assert_eq!(
            tok.decode(&case.ids, false).unwrap(),
            case.decoded,
            "decode of {:?}",
            case.text
        );
    }
    for g in &r.generations {
        assert_eq!(
            tok.encode(&g.prompt).unwrap(),
            g.prompt_token_ids,
            "prompt {}",
            g.id
        );
    }
}

#[test]
fn chat_template_matches_transformers() {
    let Some(dir) = model_or_skip("chat_template_matches_transformers") else {
        return;
    };
    let llm = llm(&dir, EngineConfig::default());
    for g in reference().generations.iter().filter(|g| g.chat) {
        let user = g
            .chat_user_message
            .as_deref()
            .expect("chat prompts record the message");
        assert_eq!(
            llm.chat_prompt(user).unwrap(),
            g.prompt,
            "chat prompt {}",
            g.id
        );
    }
}

/// Runs every reference prompt in one batch and compares tokens and first-step logits.
fn check_generations(r: &Reference, llm: &mut LLM) {
    let params = SamplingParams {
        ignore_eos: true,
        output_logits: true,
        ..SamplingParams::greedy(r.new_tokens)
    };
    let prompts = r
        .generations
        .iter()
        .map(|g| Prompt::TokenIds(g.prompt_token_ids.clone()))
        .collect();
    let outputs = llm.generate_prompts(prompts, &params).unwrap();
    for (g, o) in r.generations.iter().zip(&outputs) {
        if let Some(step) = g
            .token_ids
            .iter()
            .zip(&o.token_ids)
            .position(|(a, b)| a != b)
        {
            panic!(
                "prompt {}: token {step} is {} but transformers gives {} (its top-2 margin there: {})\n\
                 ours:   {:?}\nthem:   {:?}",
                g.id, o.token_ids[step], g.token_ids[step], g.step_margins[step], o.token_ids, g.token_ids
            );
        }
        let logits = &o.logits[0];
        for &(id, want) in &g.first_step_top_logits {
            let got = logits[id as usize];
            assert!(
                (got - want).abs() <= r.logits_tolerance,
                "prompt {}: first-step logit of token {id} is {got}, transformers {want}",
                g.id
            );
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let Some(dir) = model_or_skip("greedy_generation_matches_transformers") else {
        return;
    };
    check_generations(&reference(), &mut llm(&dir, EngineConfig::default()));
}

/// The same from the GGUF's own Q4_1/Q8_0 blocks on the CPU, when the GGUF is kept beside the
/// directory (`<dir>.gguf`, as `lab fetch-model` keeps it since it computes from blocks).
#[test]
fn greedy_generation_from_gguf_blocks_matches_transformers() {
    let test = "greedy_generation_from_gguf_blocks_matches_transformers";
    let Some(dir) = model_or_skip(test) else {
        return;
    };
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let gguf = dir.with_file_name(format!("{name}.gguf"));
    if !gguf.is_file() {
        eprintln!("skipping {test}: no {}", gguf.display());
        return;
    }
    let mut model = load_model(&ModelSpec::Dir(dir.clone()), false, 0).expect("model loads");
    model.weights = engine::model_source::ModelWeights::Gguf { dir, gguf };
    let mut llm = LLM::new(model, EngineConfig::default()).expect("engine starts");
    check_generations(&reference(), &mut llm);
}

#[test]
fn matches_transformers_under_preemption_and_chunked_prefill() {
    let Some(dir) = model_or_skip("matches_transformers_under_preemption_and_chunked_prefill")
    else {
        return;
    };
    let r = reference();
    let mut config = EngineConfig::default();
    // 40 blocks of 16 = 640 slots: the longest prompt (~600 tokens) plus its output fits alone,
    // the whole batch (~1200 tokens) does not, so requests are preempted and recomputed.
    config.cache.num_kv_blocks = Some(40);
    // A budget of 64 tokens cuts every prompt longer than that into chunks.
    config.scheduler.max_num_batched_tokens = 64;
    let mut llm = llm(&dir, config);
    check_generations(&r, &mut llm);
    assert!(
        llm.engine.stats.num_preemptions > 0,
        "expected preemptions with 40 blocks"
    );
    assert!(llm.engine.stats.max_batched_tokens_in_a_step <= 64);
}

/// Tensor parallelism over 3 ranks (SmolLM2 has 9 query and 3 KV heads: one KV head each),
/// one thread per rank on the CPU communicator: still transformers' tokens and logits.
#[test]
fn tensor_parallel_3_matches_transformers() {
    let Some(dir) = model_or_skip("tensor_parallel_3_matches_transformers") else {
        return;
    };
    let mut config = EngineConfig::default();
    config.parallel.tensor_parallel_size = 3;
    check_generations(&reference(), &mut llm(&dir, config));
}

/// Tensor × pipeline parallelism, 3 × 2 ranks: layers 0..15 and 15..30 in two stages of three
/// TP ranks each; the last stage holds its own copy of the tied embedding as its LM head, read
/// from the safetensors file. Still transformers' tokens and logits.
#[test]
fn tp_3_times_pp_2_matches_transformers() {
    let Some(dir) = model_or_skip("tp_3_times_pp_2_matches_transformers") else {
        return;
    };
    let mut config = EngineConfig::default();
    config.parallel.tensor_parallel_size = 3;
    config.parallel.pipeline_parallel_size = 2;
    check_generations(&reference(), &mut llm(&dir, config));
}
