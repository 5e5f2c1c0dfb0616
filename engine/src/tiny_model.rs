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

/// Writes the tiny model as a Hugging Face directory (`config.json`, `generation_config.json`,
/// f32 `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`) at `dir`, which must
/// not exist yet: the smallest real model directory, for tests of the loaders and for looking
/// at what such a directory holds.
pub fn write_tiny_model_dir(dir: &std::path::Path, seed: u64) -> crate::Result<()> {
    use crate::model_loader::hf_writer::{save_model, DiskDtype};
    use crate::model_source::{load_model, ModelSpec};
    save_model(
        load_model(&ModelSpec::Tiny, false, seed)?,
        DiskDtype::F32,
        dir,
    )
}
