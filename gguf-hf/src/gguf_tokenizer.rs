//! Rebuilding `tokenizer.json` and `tokenizer_config.json` from a GGUF's `tokenizer.ggml.*`.
//!
//! A GGUF stores a byte-level BPE tokenizer as data — the token strings, the merge list, a
//! type per token — but not its *pipeline*: how text is split before BPE runs. That lives in
//! llama.cpp's code, keyed by the name in `tokenizer.ggml.pre`. So we write the data as-is and
//! choose the pipeline by that name. Choosing wrong is quiet: SmolLM2's "smollm" splits every
//! digit apart first, and without that step `"a  2"` tokenizes as `[81, 216, 216, 34]` instead
//! of `[81, 256, 34]` — plausible ids, different model input.

use serde_json::{json, Map, Value};

use super::gguf::GgufHeader;
use super::gguf_metadata::optional;
use super::gguf_to_hf::{ConvertError, LlamaParams};

/// llama.cpp's token types (`enum llama_token_type`) that become added tokens.
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// The special token ids a GGUF names, checked to be inside the vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
}

impl SpecialIds {
    pub fn from_gguf(h: &GgufHeader) -> Result<Self, ConvertError> {
        let n_tokens = h.metadata.str_array("tokenizer.ggml.tokens")?.len();
        let id = |name: &str| -> Result<Option<u32>, ConvertError> {
            let key = format!("tokenizer.ggml.{name}_token_id");
            match optional(h.metadata.usize(&key))? {
                Some(id) if id >= n_tokens => Err(ConvertError::Tokenizer(format!(
                    "{key} = {id} is outside the {n_tokens}-token vocabulary"
                ))),
                id => Ok(id.map(|id| id as u32)),
            }
        };
        Ok(Self {
            bos: id("bos")?,
            eos: id("eos")?,
            pad: id("padding")?,
            unk: id("unknown")?,
        })
    }
}

/// `tokenizer.ggml.token_type`, or every token NORMAL (1) if the file has no types.
fn token_types(h: &GgufHeader, n_tokens: usize) -> Result<Vec<u64>, ConvertError> {
    let types = optional(h.metadata.u64_array("tokenizer.ggml.token_type"))?;
    let types = types.unwrap_or_else(|| vec![1; n_tokens]);
    if types.len() != n_tokens {
        let why = format!("{} token types for {n_tokens} tokens", types.len());
        return Err(ConvertError::Tokenizer(why));
    }
    Ok(types)
}

// ANCHOR: pre_tokenizer
/// The pre-tokenizer (text splitting before BPE) that llama.cpp uses for `tokenizer.ggml.pre`.
fn pre_tokenizer(pre: &str) -> Result<Value, ConvertError> {
    // GPT-2's split: contractions, letter runs, number runs, punctuation, whitespace; and every
    // byte mapped to a printable character so BPE runs on strings.
    let byte_level = json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
    });
    match pre {
        "gpt2" | "default" => Ok(byte_level),
        // SmolLM2: each digit becomes its own piece first, so numbers tokenize digit by digit.
        "smollm" => Ok(json!({
            "type": "Sequence",
            "pretokenizers": [{ "type": "Digits", "individual_digits": true }, byte_level],
        })),
        other => Err(ConvertError::UnsupportedFeature(format!(
            "pre-tokenizer `{other}` (known: smollm, gpt2, default); add it to gguf_tokenizer.rs"
        ))),
    }
}
// ANCHOR_END: pre_tokenizer

/// `tokenizer.json` for the byte-level BPE tokenizer in `h`.
pub fn tokenizer_json(h: &GgufHeader) -> Result<Value, ConvertError> {
    let model = h.metadata.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(ConvertError::UnsupportedFeature(format!(
            "tokenizer model `{model}` (only byte-level BPE, `gpt2`, is supported)"
        )));
    }
    let pre = optional(h.metadata.str("tokenizer.ggml.pre"))?.unwrap_or("default");
    let tokens = h.metadata.str_array("tokenizer.ggml.tokens")?;
    let types = token_types(h, tokens.len())?;

    let mut vocab = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        if vocab.insert(token.to_string(), json!(id)).is_some() {
            return Err(ConvertError::Tokenizer(format!(
                "token {token:?} appears twice in the vocabulary"
            )));
        }
    }
    let merges = h
        .metadata
        .str_array("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok(json!([a, b])),
            None => Err(ConvertError::Tokenizer(format!(
                "merge {m:?} is not two tokens separated by a space"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Control tokens (`<|im_start|>`) must match whole, before BPE, or chat prompts would be
    // cut into `<`, `|`, `im`, ...; they are `special` so decoding can skip them.
    let added: Vec<Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED)
        .map(|(id, (token, &ty))| {
            json!({
                "id": id, "content": token, "special": ty == TOKEN_TYPE_CONTROL,
                "single_word": false, "lstrip": false, "rstrip": false, "normalized": false,
            })
        })
        .collect();

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre)?,
        // Byte-level processing and decoding as Hugging Face's GPT-2 style tokenizers do.
        "post_processor": {
            "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true,
        },
        "decoder": {
            "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true,
        },
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}

/// `tokenizer_config.json`: special token strings, BOS/EOS policy and the chat template.
pub fn tokenizer_config_json(h: &GgufHeader, p: &LlamaParams) -> Result<Value, ConvertError> {
    let tokens = h.metadata.str_array("tokenizer.ggml.tokens")?;
    let ids = SpecialIds::from_gguf(h)?;
    let text = |id: Option<u32>| id.map(|i| tokens[i as usize]);
    let types = token_types(h, tokens.len())?;
    let control: Vec<&str> = tokens
        .iter()
        .zip(types)
        .filter(|(_, ty)| *ty == TOKEN_TYPE_CONTROL)
        .map(|(token, _)| *token)
        .collect();
    let m = &h.metadata;
    Ok(json!({
        "tokenizer_class": "GPT2Tokenizer",
        // Whether encoding a text prepends BOS / appends EOS. SmolLM2 does neither: its chat
        // template writes `<|im_start|>` itself.
        "add_bos_token": optional(m.bool("tokenizer.ggml.add_bos_token"))?.unwrap_or(false),
        "add_eos_token": optional(m.bool("tokenizer.ggml.add_eos_token"))?.unwrap_or(false),
        "bos_token": text(ids.bos),
        "eos_token": text(ids.eos),
        "pad_token": text(ids.pad),
        "unk_token": text(ids.unk),
        "additional_special_tokens": control,
        "chat_template": optional(m.str("tokenizer.chat_template"))?,
        "clean_up_tokenization_spaces": false,
        "model_max_length": p.max_position_embeddings,
    }))
}
