//! A tiny Llama built in code: same architecture as the real model, random weights from a
//! fixed seed, a byte-level tokenizer with ChatML special tokens. It needs no download, runs
//! a step in microseconds, and is the model of the fast tests and the offline default.

use crate::chat_template::ChatTemplate;
use crate::config::ModelConfig;
use crate::tokenizer::Tokenizer;

/// Special tokens (ids 0, 1, 2), as in SmolLM2.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The tiny model's shape: 2 layers, GQA with 4 query and 2 KV heads, 259 tokens (3 special
/// tokens and one per byte).
pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        architecture: "LlamaForCausalLM".into(),
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        vocab_size: 256 + SPECIAL_TOKENS.len(),
        max_position_embeddings: 4096,
        rope_theta: 10000.0,
        rope_scaling: None,
        rms_norm_eps: 1e-5,
        attention_bias: false,
        tie_word_embeddings: false,
        sliding_window: None,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

/// GPT-2's byte-to-character map: byte-level BPE writes each byte as a printable character.
pub fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).expect("valid code point")
}

/// A `tokenizer.json` with one token per byte (ids 3..259) and no merges.
pub fn tiny_tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
        vocab.insert(s.to_string(), i.into());
    }
    for b in 0..=255u8 {
        vocab.insert(
            byte_to_char(b).to_string(),
            (SPECIAL_TOKENS.len() + b as usize).into(),
        );
    }
    let added: Vec<_> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
        "trim_offsets": true, "use_regex": true});
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    })
    .to_string()
}

/// ChatML, the format SmolLM2 uses.
pub const TINY_CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The tiny model's tokenizer, chat template included.
pub fn tiny_tokenizer() -> Tokenizer {
    let mut tok = Tokenizer::from_json_bytes(tiny_tokenizer_json().as_bytes())
        .expect("the tiny tokenizer is valid");
    tok.chat_template = Some(ChatTemplate::new(
        TINY_CHAT_TEMPLATE.into(),
        SPECIAL_TOKENS[1].into(),
        SPECIAL_TOKENS[2].into(),
    ));
    tok
}

/// Writes the tiny model as a Hugging Face directory (`config.json`, `model.safetensors`,
/// `tokenizer.json`, `tokenizer_config.json`): the smallest real model directory, for tests
/// of the loaders and for looking at what such a directory holds.
pub fn write_tiny_model_dir(dir: &std::path::Path, seed: u64) -> crate::Result<()> {
    use crate::error::EngineError;
    let io = |e: std::io::Error| EngineError::Io(format!("cannot write {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let c = tiny_config();
    let config = serde_json::json!({
        "architectures": [c.architecture], "model_type": "llama",
        "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim,
        "vocab_size": c.vocab_size, "max_position_embeddings": c.max_position_embeddings,
        "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps, "hidden_act": "silu",
        "tie_word_embeddings": c.tie_word_embeddings, "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_ids[0], "torch_dtype": "float32",
    });
    let tok_config = serde_json::json!({
        "chat_template": TINY_CHAT_TEMPLATE, "bos_token": SPECIAL_TOKENS[1],
        "eos_token": SPECIAL_TOKENS[2], "add_bos_token": false,
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("JSON value");
    std::fs::write(dir.join("config.json"), pretty(&config)).map_err(io)?;
    std::fs::write(dir.join("tokenizer_config.json"), pretty(&tok_config)).map_err(io)?;
    std::fs::write(dir.join("tokenizer.json"), tiny_tokenizer_json()).map_err(io)?;

    let named = crate::model_executor::random_weights::random_named_tensors(&c, seed);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = named
        .into_iter()
        .map(|(name, t)| {
            let shape = if t.rows == 1 {
                vec![t.cols]
            } else {
                vec![t.rows, t.cols]
            };
            (
                name,
                shape,
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes.iter().map(|(name, shape, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .expect("shape matches data");
        (name.clone(), view)
    });
    safetensors::tensor::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .map_err(|e| EngineError::Io(format!("cannot write model.safetensors: {e}")))
}
