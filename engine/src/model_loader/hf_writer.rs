//! A model in memory → a Hugging Face directory that transformers (and our loader) read as is.
//!
//! Why write one: to check the engine against transformers on a machine that the real weights
//! cannot reach, both must run the *same* weights. So the engine draws random weights of a real
//! model's shape, writes them here, and transformers loads the directory:
//!
//! ```text
//! LoadedModel ─┬─ config  ─► config.json              (a LlamaConfig: shape, rotary, ids)
//!              │          ─► generation_config.json   (end-of-sequence ids)
//!              ├─ weights ─► model.safetensors        (unfused q/k/v and gate/up, HF names)
//!              └─ tokenizer ► tokenizer.json, tokenizer_config.json
//! ```
//!
//! The forward pass wants q/k/v and gate/up stacked ([`assemble`] fuses them at load time);
//! Hugging Face stores them apart, so [`unfuse`] splits them again, its exact inverse.
//!
//! This module uses the engine's [`ModelConfig`] and weights: unlike the GGUF converter beside
//! it (`gguf_to_hf`, which knows nothing of the engine), it belongs to the engine itself.
//!
//! [`assemble`]: crate::model_executor::weights::assemble

use std::borrow::Cow;
use std::path::Path;

use safetensors::{Dtype, View};
use serde_json::{json, Value};

use super::partial_dir::PartialDir;
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::model_executor::weights::{HostTensor, LlamaWeights};
use crate::model_source::LoadedModel;

/// How weights are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskDtype {
    F32,
    /// What transformers runs on a GPU: 8 bits of mantissa, f32's range.
    Bf16,
}

impl DiskDtype {
    /// `value` as it reads back after a round trip through this dtype (round to nearest even).
    pub fn round(self, value: f32) -> f32 {
        match self {
            DiskDtype::F32 => value,
            DiskDtype::Bf16 => half::bf16::from_f32(value).to_f32(),
        }
    }

    /// The name `config.json` gives it (`torch_dtype`).
    fn torch_name(self) -> &'static str {
        match self {
            DiskDtype::F32 => "float32",
            DiskDtype::Bf16 => "bfloat16",
        }
    }
}

/// `model_type` of each architecture [`ModelConfig`] accepts.
fn model_type(architecture: &str) -> &'static str {
    match architecture {
        "MistralForCausalLM" => "mistral",
        "Qwen2ForCausalLM" => "qwen2",
        _ => "llama",
    }
}

/// `config.json`: every field [`ModelConfig::from_json`] reads, written so that it reads back
/// equal, in the form transformers' `LlamaConfig` (and its Mistral/Qwen2 twins) expects.
pub fn config_json(c: &ModelConfig, dtype: DiskDtype) -> Value {
    let rope_scaling = c.rope_scaling.as_ref().map(|s| {
        json!({
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        })
    });
    let eos = match c.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    let mut config = json!({
        "architectures": [c.architecture],
        "model_type": model_type(&c.architecture),
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_position_embeddings,
        "rope_theta": c.rope_theta,
        "rope_scaling": rope_scaling,
        "rms_norm_eps": c.rms_norm_eps,
        "hidden_act": "silu",
        "attention_bias": c.attention_bias,
        "mlp_bias": false,
        "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": eos,
        "torch_dtype": dtype.torch_name(),
    });
    if let Some(window) = c.sliding_window {
        config["sliding_window"] = window.into();
    }
    config
}

/// `generation_config.json`: the ids that end generation (they may differ from config.json's).
pub fn generation_config_json(c: &ModelConfig, eos_token_ids: &[u32]) -> Value {
    json!({ "bos_token_id": c.bos_token_id, "eos_token_id": eos_token_ids })
}

/// Cuts a matrix into consecutive blocks of rows (`rows` must add up to its row count).
fn split_rows(mut t: HostTensor, rows: &[usize]) -> Vec<HostTensor> {
    debug_assert_eq!(rows.iter().sum::<usize>(), t.rows);
    let mut parts = Vec::with_capacity(rows.len());
    // Split from the end so that each `split_off` moves only the part it returns.
    for &r in rows.iter().rev() {
        let data = t.data.split_off(t.data.len() - r * t.cols);
        parts.push(HostTensor {
            data,
            rows: r,
            cols: t.cols,
        });
    }
    parts.reverse();
    parts
}

/// The fused weights under their Hugging Face names, q/k/v and gate/up split apart: the inverse
/// of [`assemble`](crate::model_executor::weights::assemble). Norms and biases stay `[1, n]`.
pub fn unfuse(c: &ModelConfig, w: LlamaWeights<HostTensor>) -> Vec<(String, HostTensor)> {
    let (q, kv) = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    let mut named = vec![
        ("model.embed_tokens.weight".to_string(), w.embed_tokens),
        ("model.norm.weight".to_string(), w.norm),
    ];
    if let Some(lm_head) = w.lm_head {
        named.push(("lm_head.weight".to_string(), lm_head));
    }
    for (i, layer) in w.layers.into_iter().enumerate() {
        let mut put = |name: &str, t| named.push((format!("model.layers.{i}.{name}"), t));
        put("input_layernorm.weight", layer.input_layernorm);
        put(
            "post_attention_layernorm.weight",
            layer.post_attention_layernorm,
        );
        put("self_attn.o_proj.weight", layer.o_proj);
        put("mlp.down_proj.weight", layer.down_proj);
        let qkv = split_rows(layer.qkv_proj, &[q, kv, kv]);
        for (part, t) in ["q", "k", "v"].into_iter().zip(qkv) {
            put(&format!("self_attn.{part}_proj.weight"), t);
        }
        if let Some(bias) = layer.qkv_bias {
            // [1, q + 2·kv] → three [1, n]: a row vector's columns are its values.
            let mut data = bias.data;
            let v = data.split_off(q + kv);
            let k = data.split_off(q);
            for (part, data) in [("q", data), ("k", k), ("v", v)] {
                let cols = data.len();
                put(
                    &format!("self_attn.{part}_proj.bias"),
                    HostTensor {
                        data,
                        rows: 1,
                        cols,
                    },
                );
            }
        }
        let intermediate = c.intermediate_size;
        let gate_up = split_rows(layer.gate_up_proj, &[intermediate, intermediate]);
        for (part, t) in ["gate", "up"].into_iter().zip(gate_up) {
            put(&format!("mlp.{part}_proj.weight"), t);
        }
    }
    named
}

/// A host tensor as the safetensors writer sees it: converted to the disk dtype only when the
/// writer reaches it, so memory holds one converted tensor at a time, not a second model.
struct DiskTensor<'a> {
    tensor: &'a HostTensor,
    /// PyTorch shape: `[n]` for a row vector (norms, biases), else `[rows, cols]`.
    shape: Vec<usize>,
    dtype: DiskDtype,
}

impl View for DiskTensor<'_> {
    fn dtype(&self) -> Dtype {
        match self.dtype {
            DiskDtype::F32 => Dtype::F32,
            DiskDtype::Bf16 => Dtype::BF16,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data_len(&self) -> usize {
        self.tensor.data.len() * self.dtype().bitsize() / 8
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let values = &self.tensor.data;
        Cow::Owned(match self.dtype {
            DiskDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DiskDtype::Bf16 => values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        })
    }
}

/// Writes named tensors as one `model.safetensors` at `path`.
pub fn write_safetensors(
    named: &[(String, HostTensor)],
    dtype: DiskDtype,
    path: &Path,
) -> Result<()> {
    let views = named.iter().map(|(name, t)| {
        let shape = match t.rows {
            1 => vec![t.cols],
            rows => vec![rows, t.cols],
        };
        let view = DiskTensor {
            tensor: t,
            shape,
            dtype,
        };
        (name.clone(), view)
    });
    super::hf_tensors::serialize_for_pytorch(views, path)
        .map_err(|e| EngineError::Io(format!("cannot write {}: {e}", path.display())))
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("a JSON value serializes") + "\n";
    std::fs::write(path, text)
        .map_err(|e| EngineError::Io(format!("cannot write {}: {e}", path.display())))
}

/// Writes `model` as a Hugging Face directory at `dest`, which must not exist yet; the
/// directory appears complete or not at all (see [`PartialDir`]). The tokenizer is the model's
/// own: for a random-weight shape that is the tiny byte-level one, whose 259 ids fit any
/// vocabulary, so the directory loads anywhere without a special case.
pub fn save_model(model: LoadedModel, dtype: DiskDtype, dest: &Path) -> Result<()> {
    if dest.exists() {
        return Err(EngineError::InvalidArgument(format!(
            "{} already exists; delete it first or choose another --out",
            dest.display()
        )));
    }
    let io = |e: std::io::Error| EngineError::Io(format!("cannot write {}: {e}", dest.display()));
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let dir = PartialDir::create(parent.unwrap_or(Path::new(".")), &name).map_err(io)?;
    let path = |file: &str| dir.path().join(file);

    write_json(&path("config.json"), &config_json(&model.config, dtype))?;
    let generation = generation_config_json(&model.config, &model.eos_token_ids);
    write_json(&path("generation_config.json"), &generation)?;
    let tokenizer = model.tokenizer.to_json()?;
    std::fs::write(path("tokenizer.json"), tokenizer).map_err(io)?;
    if let Some(template) = &model.tokenizer.chat_template {
        write_json(
            &path("tokenizer_config.json"),
            &template.tokenizer_config_json(),
        )?;
    }
    let named = unfuse(&model.config, model.weights.into_host(&model.config)?);
    write_safetensors(&named, dtype, &path("model.safetensors"))?;
    dir.persist(dest).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_executor::random_weights::{random_named_tensors, random_weights};
    use crate::tiny_model::tiny_config;

    #[test]
    fn unfuse_inverts_assemble() {
        let mut c = tiny_config();
        c.attention_bias = true; // exercise the bias split too
        c.tie_word_embeddings = true;
        let mut want = random_named_tensors(&c, 7);
        let mut got = unfuse(&c, random_weights(&c, 7));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let names = |v: &[(String, HostTensor)]| v.iter().map(|n| n.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&got), names(&want));
        assert!(!names(&got).contains(&"lm_head.weight".to_string()), "tied");
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            assert_eq!((g.rows, g.cols), (w.rows, w.cols), "{name}");
            assert_eq!(g.data, w.data, "{name}");
        }
    }

    #[test]
    fn config_json_reads_back_equal() {
        let mut c = tiny_config();
        c.rope_scaling = Some(crate::config::model_config::Llama3RopeScaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        });
        c.eos_token_ids = vec![2, 5];
        c.tie_word_embeddings = true;
        let text = config_json(&c, DiskDtype::Bf16).to_string();
        assert_eq!(ModelConfig::from_json(&text).unwrap(), c);
        assert!(text.contains(r#""torch_dtype":"bfloat16""#));
    }

    #[test]
    fn bf16_rounds_to_nearest() {
        assert_eq!(DiskDtype::Bf16.round(1.0), 1.0);
        // 1 + 2^-9 is halfway between 1 and 1 + 2^-8 (bf16's step at 1): ties go to even.
        assert_eq!(DiskDtype::Bf16.round(1.0 + 1.0 / 512.0), 1.0);
        assert_eq!(DiskDtype::Bf16.round(1.0 + 3.0 / 512.0), 1.0 + 1.0 / 128.0);
        assert_eq!(DiskDtype::F32.round(0.1), 0.1);
    }
}
