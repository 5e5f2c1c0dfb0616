//! `config.json` of a Hugging Face Llama-family model, read into one validated struct.
//!
//! LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM share one architecture: pre-norm
//! decoder layers with RMSNorm, rotary embeddings, grouped-query attention and a SwiGLU MLP.
//! They differ only in details this struct records: how many KV heads, the rotary base and
//! scaling, whether q/k/v projections carry a bias (Qwen2), and whether the LM head shares the
//! token-embedding matrix (`tie_word_embeddings`).

use serde::Deserialize;
use std::path::Path;

use crate::error::{EngineError, Result};

/// Architectures whose weights and forward pass this engine implements.
pub const SUPPORTED_ARCHITECTURES: &[&str] =
    &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

/// Llama-3 style rotary scaling ("rope_type": "llama3"): long wavelengths are stretched by
/// `factor`, short ones kept, and a smooth ramp in between.
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

// ANCHOR: model_config
/// The model's shape and numerics, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub rms_norm_eps: f64,
    /// q/k/v projections have a bias (Qwen2 always; Llama when `attention_bias` is true).
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
    /// Attention looks back at most this many tokens (Mistral). We attend to the whole
    /// context, so the engine caps sequence length at the window, where both agree.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}
// ANCHOR_END: model_config

/// `config.json` as written by transformers; every field optional so that we can name what
/// is missing instead of failing inside serde.
#[derive(Deserialize, Default)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    rope_theta: Option<f64>,
    /// transformers 5 writes `rope_parameters: {rope_theta, rope_type, ...}`.
    rope_parameters: Option<serde_json::Value>,
    rope_scaling: Option<serde_json::Value>,
    rms_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::Config(msg.into())
}

/// `eos_token_id` is a number or a list of numbers in Hugging Face files.
pub(crate) fn token_ids(value: &Option<serde_json::Value>) -> Result<Vec<u32>> {
    let as_id = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(format!("token id {v} is not a non-negative integer")))
    };
    match value {
        None | Some(serde_json::Value::Null) => Ok(vec![]),
        Some(serde_json::Value::Array(items)) => items.iter().map(as_id).collect(),
        Some(v) => Ok(vec![as_id(v)?]),
    }
}

impl ModelConfig {
    /// Reads and validates `<dir>/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&text).map_err(|e| match e {
            EngineError::Config(m) => bad(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and validates the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let architecture = match (&raw.architectures, &raw.model_type) {
            (Some(a), _) if !a.is_empty() => a[0].clone(),
            (_, Some(t)) => match t.as_str() {
                "llama" => "LlamaForCausalLM".into(),
                "mistral" => "MistralForCausalLM".into(),
                "qwen2" => "Qwen2ForCausalLM".into(),
                other => other.to_string(),
            },
            _ => return Err(bad("neither `architectures` nor `model_type` is set")),
        };
        if !SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(bad(format!(
                "architecture {architecture} is not supported (supported: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            )));
        }
        let need = |v: Option<usize>, name: &str| -> Result<usize> {
            match v {
                Some(0) => Err(bad(format!("`{name}` must be positive"))),
                Some(n) => Ok(n),
                None => Err(bad(format!("missing `{name}`"))),
            }
        };
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_attention_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let num_key_value_heads = need(
            raw.num_key_value_heads.or(Some(num_attention_heads)),
            "num_key_value_heads",
        )?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(bad(format!(
                "num_attention_heads ({num_attention_heads}) is not a multiple of \
                 num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = match raw.head_dim {
            Some(d) => need(Some(d), "head_dim")?,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => return Err(bad("hidden_size is not a multiple of num_attention_heads")),
        };
        if head_dim % 2 != 0 {
            return Err(bad(format!(
                "head_dim ({head_dim}) must be even for rotary embeddings"
            )));
        }
        if let Some(act) = &raw.hidden_act {
            if act != "silu" {
                return Err(bad(format!(
                    "hidden_act `{act}` is not supported (only silu)"
                )));
            }
        }
        if raw.mlp_bias == Some(true) {
            return Err(bad("mlp_bias = true is not supported"));
        }
        let rope_params = raw.rope_parameters.as_ref();
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                rope_params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|v| v.as_f64())
            })
            .unwrap_or(10000.0);
        if rope_theta <= 0.0 || !rope_theta.is_finite() {
            return Err(bad(format!(
                "rope_theta must be positive, got {rope_theta}"
            )));
        }
        // transformers 5 writes `rope_scaling: null` beside `rope_parameters`: skip the null.
        let scaling = raw
            .rope_scaling
            .as_ref()
            .filter(|v| !v.is_null())
            .or(rope_params);
        let rope_scaling = parse_rope_scaling(scaling)?;
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(1e-6);
        if rms_norm_eps <= 0.0 || !rms_norm_eps.is_finite() {
            return Err(bad(format!(
                "rms_norm_eps must be positive, got {rms_norm_eps}"
            )));
        }
        let bos = token_ids(&raw.bos_token_id)?;
        Ok(ModelConfig {
            attention_bias: raw
                .attention_bias
                .unwrap_or(architecture == "Qwen2ForCausalLM"),
            architecture,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_hidden_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            max_position_embeddings: need(
                raw.max_position_embeddings.or(Some(4096)),
                "max_position_embeddings",
            )?,
            rope_theta,
            rope_scaling,
            rms_norm_eps,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            // Qwen2 carries a window but only uses it with `use_sliding_window: true`.
            sliding_window: raw
                .sliding_window
                .filter(|_| raw.use_sliding_window != Some(false)),
            bos_token_id: bos.first().copied(),
            eos_token_ids: token_ids(&raw.eos_token_id)?,
        })
    }

    // ANCHOR: num_queries_per_kv
    /// Number of query heads that share one KV head (the "G" of GQA).
    pub fn num_queries_per_kv(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
    // ANCHOR_END: num_queries_per_kv

    /// Width of the q, k and v projections together.
    pub fn qkv_size(&self) -> usize {
        (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim
    }
}

/// Accepts no scaling, `default`, or Llama-3 scaling; anything else is an error rather than a
/// silently different model.
fn parse_rope_scaling(v: Option<&serde_json::Value>) -> Result<Option<Llama3RopeScaling>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str());
    match kind {
        None | Some("default") => Ok(None),
        Some("llama3") => {
            let num = |k: &str| {
                v.get(k)
                    .and_then(|x| x.as_f64())
                    .ok_or_else(|| bad(format!("rope_scaling (llama3) is missing `{k}`")))
            };
            Ok(Some(Llama3RopeScaling {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
            }))
        }
        Some(other) => Err(bad(format!("rope scaling type `{other}` is not supported"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: &str = r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100, "eos_token_id": [5, 6]}"#;

    fn with(extra: &str) -> Result<ModelConfig> {
        ModelConfig::from_json(&LLAMA.replacen('{', &format!("{{{extra}"), 1))
    }

    #[test]
    fn defaults_and_derived_values() {
        let c = ModelConfig::from_json(LLAMA).unwrap();
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.num_queries_per_kv(), 2);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.eos_token_ids, vec![5, 6]);
        assert!(!c.attention_bias && !c.tie_word_embeddings);
    }

    #[test]
    fn transformers5_rope_parameters_and_llama3_scaling() {
        let c = with(
            r#""rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3",
            "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192},"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rope_scaling.unwrap().factor, 32.0);
    }

    #[test]
    fn qwen2_has_attention_bias() {
        let c = ModelConfig::from_json(&LLAMA.replace("LlamaForCausalLM", "Qwen2ForCausalLM"));
        assert!(c.unwrap().attention_bias);
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |json: &str| ModelConfig::from_json(json).unwrap_err().to_string();
        assert!(err("{").contains("invalid JSON"));
        assert!(
            err(&LLAMA.replace("LlamaForCausalLM", "GPT2LMHeadModel")).contains("not supported")
        );
        assert!(err(&LLAMA.replace(r#""hidden_size": 64,"#, "")).contains("hidden_size"));
        assert!(
            err(&LLAMA.replace(r#""num_key_value_heads": 2"#, r#""num_key_value_heads": 3"#))
                .contains("multiple")
        );
        assert!(
            with(r#""rope_scaling": {"rope_type": "yarn", "factor": 4.0},"#)
                .unwrap_err()
                .to_string()
                .contains("yarn")
        );
        assert!(with(r#""hidden_act": "gelu","#)
            .unwrap_err()
            .to_string()
            .contains("gelu"));
    }
}
