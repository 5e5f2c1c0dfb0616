//! `lab save-model` and the library under it: a model written as a bf16 Hugging Face directory
//! loads back through the normal loader as the same weights rounded to bf16, and generates
//! exactly what the in-memory model with those rounded weights generates. Also token-id prompts
//! in `lab generate --prompts-file`, which the GPU check feeds such a directory.

use std::path::Path;

use engine::config::EngineConfig;
use engine::model_executor::weights::{HostTensor, LlamaWeights};
use engine::model_loader::hf_writer::{save_model, DiskDtype};
use engine::model_source::{load_model, LoadedModel, ModelSpec};
use engine::{Prompt, SamplingParams, LLM};

mod common;
use common::lab_cli::lab;
use common::scratch_dir::ScratchDir;

/// A path for the test to write, inside a directory removed when dropped.
fn temp_path(name: &str) -> ScratchDir {
    ScratchDir::child("lab-save-", name)
}

/// Every tensor of the model in a fixed order, with a name for messages.
fn tensors(w: &LlamaWeights<HostTensor>) -> Vec<(String, &HostTensor)> {
    let mut all = vec![
        ("embed".to_string(), &w.embed_tokens),
        ("norm".into(), &w.norm),
    ];
    all.extend(w.lm_head.iter().map(|t| ("lm_head".to_string(), t)));
    for (i, l) in w.layers.iter().enumerate() {
        let mut parts = vec![
            ("input_layernorm", &l.input_layernorm),
            ("qkv_proj", &l.qkv_proj),
            ("o_proj", &l.o_proj),
            ("post_attention_layernorm", &l.post_attention_layernorm),
            ("gate_up_proj", &l.gate_up_proj),
            ("down_proj", &l.down_proj),
        ];
        parts.extend(l.qkv_bias.iter().map(|b| ("qkv_bias", b)));
        all.extend(
            parts
                .into_iter()
                .map(|(n, t)| (format!("layer {i} {n}"), t)),
        );
    }
    all
}

fn round_to_bf16(model: &mut LoadedModel) {
    let w = model.host_weights().unwrap();
    let mut all: Vec<&mut HostTensor> = vec![&mut w.embed_tokens, &mut w.norm];
    all.extend(w.lm_head.as_mut());
    for l in &mut w.layers {
        all.extend([
            &mut l.input_layernorm,
            &mut l.qkv_proj,
            &mut l.o_proj,
            &mut l.post_attention_layernorm,
            &mut l.gate_up_proj,
            &mut l.down_proj,
        ]);
        all.extend(l.qkv_bias.as_mut());
    }
    for t in all {
        t.data
            .iter_mut()
            .for_each(|v| *v = DiskDtype::Bf16.round(*v));
    }
}

fn greedy(model: LoadedModel, prompts: &[Prompt]) -> Vec<Vec<u32>> {
    let mut llm = LLM::new(model, EngineConfig::default()).unwrap();
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(24)
    };
    let out = llm.generate_prompts(prompts.to_vec(), &params).unwrap();
    out.into_iter().map(|o| o.token_ids).collect()
}

/// Saves `spec` (random weights when `random`) in bf16, loads the directory back, and checks
/// weights, config, end-of-sequence ids and greedy tokens against the bf16-rounded original.
fn round_trip(spec: ModelSpec, random: bool, name: &str) {
    let dir = temp_path(name);
    save_model(load_model(&spec, random, 5).unwrap(), DiskDtype::Bf16, &dir).unwrap();
    let mut loaded = load_model(&ModelSpec::Dir(dir.to_path_buf()), false, 0).unwrap();
    let mut want = load_model(&spec, random, 5).unwrap();
    round_to_bf16(&mut want);
    assert_eq!(loaded.config, want.config);
    assert_eq!(loaded.eos_token_ids, want.eos_token_ids);
    let (got_w, want_w) = (
        tensors(loaded.host_weights().unwrap()),
        tensors(want.host_weights().unwrap()),
    );
    assert_eq!(got_w.len(), want_w.len());
    for ((name, got), (_, want)) in got_w.iter().zip(&want_w) {
        assert_eq!((got.rows, got.cols), (want.rows, want.cols), "{name}");
        assert!(
            got.data == want.data,
            "{name}: values differ from the bf16-rounded ones"
        );
    }
    // Some weights must actually have moved in rounding, or this test proves nothing.
    let mut original = load_model(&spec, random, 5).unwrap();
    assert_ne!(
        original.host_weights().unwrap().embed_tokens.data,
        want.host_weights().unwrap().embed_tokens.data
    );

    let prompts = [
        Prompt::Text("Hello there".into()),
        Prompt::TokenIds(vec![7, 100, 3, 250, 42]),
    ];
    assert_eq!(greedy(loaded, &prompts), greedy(want, &prompts));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tiny_model_round_trips_through_a_bf16_directory() {
    round_trip(ModelSpec::Tiny, false, "tiny");
}

#[test]
fn random_config_with_bias_and_tied_head_round_trips() {
    let config = temp_path("config.json");
    let json = r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 128,
        "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 64, "vocab_size": 300, "rope_theta": 100000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        "attention_bias": true, "tie_word_embeddings": true, "bos_token_id": 1,
        "eos_token_id": [2, 5]}"#;
    std::fs::write(&config, json).unwrap();
    round_trip(ModelSpec::Dir(config.to_path_buf()), true, "config-dir");
    std::fs::remove_file(config).unwrap();
}

fn generate_json(model: &Path, prompts_file: &Path) -> serde_json::Value {
    let (code, stdout, stderr) = lab(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompts-file",
        prompts_file.to_str().unwrap(),
        "--max-tokens",
        "6",
        "--ignore-eos",
        "--json",
        "--logit-margins",
    ]);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).expect("stdout is one JSON array")
}

#[test]
fn cli_saves_a_conditioned_model_that_generates_from_token_ids() {
    let (dir, prompts) = (temp_path("cli-dir"), temp_path("prompts.json"));
    let dir_s = dir.to_str().unwrap();
    let save = |out: &str, extra: &[&str]| {
        let mut args = vec!["save-model", "--model", "tiny", "--out", out];
        args.extend_from_slice(extra);
        lab(&args)
    };
    let (code, stdout, stderr) = save(dir_s, &["--embed-scale", "0.25", "--query-scale", "2"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), dir_s);
    for file in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        assert!(dir.join(file).is_file(), "{file} written");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
    assert_eq!(config["model_type"], "llama");

    // A second save to the same place, and bad scales, fail in one line.
    let elsewhere = temp_path("never-written");
    for (out, extra, needle) in [
        (dir_s, &[][..], "already exists"),
        (
            elsewhere.to_str().unwrap(),
            &["--query-scale", "0"][..],
            "query scale",
        ),
    ] {
        let (code, _, stderr) = save(out, extra);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    assert!(!elsewhere.exists(), "nothing written on error");

    // Text and token ids in one file; ids go in untokenized.
    std::fs::write(&prompts, r#"["Hi", [5, 6, 7, 8], "Hi"]"#).unwrap();
    let out = generate_json(&dir, &prompts);
    let out = out.as_array().unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[1]["prompt"], serde_json::json!([5, 6, 7, 8]));
    assert_eq!(out[1]["prompt_token_ids"], serde_json::json!([5, 6, 7, 8]));
    assert_eq!(
        out[0]["token_ids"], out[2]["token_ids"],
        "same prompt, same tokens"
    );
    for o in out {
        let ids = o["token_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 6);
        let margins = o["margins"].as_array().unwrap();
        let runner_up = o["runner_up_ids"].as_array().unwrap();
        assert_eq!((margins.len(), runner_up.len()), (6, 6));
        for ((m, r), id) in margins.iter().zip(runner_up).zip(ids) {
            assert!(m.as_f64().unwrap() >= 0.0);
            assert_ne!(r, id, "the runner-up is another token");
        }
    }

    // Token ids cannot be wrapped in a chat template; malformed items are named.
    let (code, _, stderr) = lab(&[
        "generate",
        "--model",
        dir_s,
        "--prompts-file",
        prompts.to_str().unwrap(),
        "--chat",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("prompt 2 is token ids"), "{stderr}");
    std::fs::write(&prompts, r#"["Hi", [5, -1]]"#).unwrap();
    let (code, _, stderr) = lab(&["generate", "--prompts-file", prompts.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("strings or arrays of token ids"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&prompts).unwrap();
}
