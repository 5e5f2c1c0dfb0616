//! Converting a Llama-family GGUF into a Hugging Face model directory.
//!
//! The engine loads Hugging Face directories (`config.json`, `model.safetensors`,
//! `tokenizer.json`, ...). A GGUF carries the same information in another shape: shape
//! parameters as `llama.*` metadata, the tokenizer as `tokenizer.ggml.*` arrays, and weights
//! quantized under llama.cpp names. This module rebuilds the directory:
//!
//! ```text
//! GGUF ──► LlamaParams ──► config.json, generation_config.json
//!      ──► hf_tensors   ──► model.safetensors (f32, HF names, q/k rows un-permuted)
//!      ──► gguf_tokenizer ► tokenizer.json, tokenizer_config.json
//! ```
//!
//! Everything is validated before anything is written, and written into a hidden sibling
//! directory that is renamed into place at the end (`partial_dir.rs`), so a conversion that
//! fails or is killed halfway leaves no half-written model for the next run to trip over.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::gguf::{GgufError, GgufFile, GgufHeader};
use super::gguf_metadata::optional;
use super::partial_dir::PartialDir;
use super::{gguf_tokenizer, hf_tensors};

/// The files of a converted model directory; a directory with all of them is complete.
pub const HF_FILES: [&str; 5] = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];

/// What can go wrong converting a GGUF, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "GGUF architecture `{0}` is not supported; only `llama` (Llama, SmolLM) files convert"
    )]
    UnsupportedArchitecture(String),
    #[error("this GGUF uses {0}, which the converter does not handle yet")]
    UnsupportedFeature(String),
    #[error("tensor `{0}` is missing from the GGUF; the file is incomplete or not a Llama model")]
    MissingTensor(String),
    #[error(
        "the GGUF has a tensor `{0}` this converter does not know; it cannot be dropped safely"
    )]
    UnexpectedTensor(String),
    #[error("tensor `{name}` has shape {found:?} but the metadata implies {expected:?}")]
    BadShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tokenizer metadata: {0}")]
    Tokenizer(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing model.safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    #[error("{0} already exists; delete it first to convert again")]
    DestinationExists(PathBuf),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The shape and numerics of a Llama-family model, read from a GGUF's `llama.*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    /// No `output.weight` in the file: the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
}

impl LlamaParams {
    pub fn from_gguf(h: &GgufHeader) -> Result<Self, ConvertError> {
        let m = &h.metadata;
        let arch = m.str("general.architecture")?;
        if arch != "llama" {
            return Err(ConvertError::UnsupportedArchitecture(arch.to_string()));
        }
        let key = |k: &str| format!("llama.{k}");
        let unsupported = |what: String| Err(ConvertError::UnsupportedFeature(what));
        let hidden_size = m.usize(&key("embedding_length"))?;
        let num_attention_heads = m.usize(&key("attention.head_count"))?;
        if num_attention_heads == 0 || !hidden_size.is_multiple_of(num_attention_heads) {
            return unsupported(format!(
                "{num_attention_heads} heads for width {hidden_size}"
            ));
        }
        let head_dim = optional(m.usize(&key("attention.key_length")))?
            .unwrap_or(hidden_size / num_attention_heads);
        // llama.cpp rotates `rope.dimension_count` dims of each head; HF Llama rotates all.
        match optional(m.usize(&key("rope.dimension_count")))? {
            Some(rot) if rot != head_dim => {
                return unsupported(format!("partial rotary ({rot} of {head_dim} dims)"))
            }
            _ => {}
        }
        match optional(m.str(&key("rope.scaling.type")))? {
            Some(kind) if kind != "none" => return unsupported(format!("rope scaling `{kind}`")),
            _ => {}
        }
        let vocab_size = match optional(m.usize(&key("vocab_size")))? {
            Some(n) => n,
            None => m.str_array("tokenizer.ggml.tokens")?.len(),
        };
        Ok(Self {
            hidden_size,
            intermediate_size: m.usize(&key("feed_forward_length"))?,
            num_hidden_layers: m.usize(&key("block_count"))?,
            num_attention_heads,
            // Without the key the model is plain multi-head attention.
            num_key_value_heads: optional(m.usize(&key("attention.head_count_kv")))?
                .unwrap_or(num_attention_heads),
            head_dim,
            vocab_size,
            max_position_embeddings: m.usize(&key("context_length"))?,
            rope_theta: optional(m.f64(&key("rope.freq_base")))?.unwrap_or(10_000.0),
            rms_norm_eps: m.f64(&key("attention.layer_norm_rms_epsilon"))?,
            tie_word_embeddings: h.tensor("output.weight").is_none(),
        })
    }
}

/// `config.json` for `LlamaForCausalLM`.
pub fn config_json(p: &LlamaParams, ids: &gguf_tokenizer::SpecialIds) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": p.hidden_size,
        "intermediate_size": p.intermediate_size,
        "num_hidden_layers": p.num_hidden_layers,
        "num_attention_heads": p.num_attention_heads,
        "num_key_value_heads": p.num_key_value_heads,
        "head_dim": p.head_dim,
        "vocab_size": p.vocab_size,
        "max_position_embeddings": p.max_position_embeddings,
        "rope_theta": p.rope_theta,
        "rope_scaling": null,
        "rms_norm_eps": p.rms_norm_eps,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "tie_word_embeddings": p.tie_word_embeddings,
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "pad_token_id": ids.pad,
        "torch_dtype": "float32",
    })
}

/// Converts the GGUF at `gguf_path` into a Hugging Face directory at `dest`, which must not
/// exist yet. Shows a progress bar over tensors on stderr.
pub fn convert_gguf_to_hf(gguf_path: &Path, dest: &Path) -> Result<(), ConvertError> {
    let file = GgufFile::open(gguf_path)?;
    let params = LlamaParams::from_gguf(&file.header)?;
    let ids = gguf_tokenizer::SpecialIds::from_gguf(&file.header)?;
    // Validate everything before writing anything.
    let plan = hf_tensors::plan(&file, &params)?;
    let tokenizer = gguf_tokenizer::tokenizer_json(&file.header)?;
    let tokenizer_config = gguf_tokenizer::tokenizer_config_json(&file.header, &params)?;
    let generation =
        json!({ "bos_token_id": ids.bos, "eos_token_id": ids.eos, "pad_token_id": ids.pad });

    write_dir_atomically(dest, |dir| {
        write_json(&dir.join("config.json"), &config_json(&params, &ids))?;
        write_json(&dir.join("generation_config.json"), &generation)?;
        write_json(&dir.join("tokenizer.json"), &tokenizer)?;
        write_json(&dir.join("tokenizer_config.json"), &tokenizer_config)?;
        hf_tensors::write_safetensors(plan, &dir.join("model.safetensors"))
    })
}

fn write_json(path: &Path, value: &Value) -> Result<(), ConvertError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| io_err(path)(e.into()))?;
    text.push('\n');
    std::fs::write(path, text).map_err(io_err(path))
}

/// Runs `fill` on a fresh hidden directory next to `dest`, then renames it to `dest`
/// (see [`PartialDir`]): `dest` appears complete or not at all.
pub fn write_dir_atomically(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<(), ConvertError>,
) -> Result<(), ConvertError> {
    if dest.exists() {
        return Err(ConvertError::DestinationExists(dest.to_path_buf()));
    }
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let dir = PartialDir::create(parent, &name).map_err(io_err(parent))?;
    fill(dir.path())?;
    dir.persist(dest).map_err(io_err(dest))
}
