//! The Llama family's weights, fused the way the forward pass wants them.
//!
//! Hugging Face stores q, k and v as three matrices, and gate and up as two. We stack each
//! group into one matrix at load time (as vLLM's `QKVParallelLinear` and
//! `MergedColumnParallelLinear` do): one pass over the activations instead of three, and one
//! weight stream instead of three for a decode step.

use crate::backend::{Backend, Result};
use crate::config::ModelConfig;

/// One decoder layer's weights, shapes `[out_features, in_features]`.
pub struct LayerWeights<T> {
    pub input_layernorm: T,          // [1, hidden]
    pub qkv_proj: T,                 // [(heads + 2·kv_heads)·head_dim, hidden]
    pub qkv_bias: Option<T>,         // [1, (heads + 2·kv_heads)·head_dim]
    pub o_proj: T,                   // [hidden, heads·head_dim]
    pub post_attention_layernorm: T, // [1, hidden]
    pub gate_up_proj: T,             // [2·intermediate, hidden]
    pub down_proj: T,                // [hidden, intermediate]
}

/// The whole model's weights.
pub struct LlamaWeights<T> {
    pub embed_tokens: T, // [vocab, hidden]
    pub layers: Vec<LayerWeights<T>>,
    pub norm: T, // [1, hidden]
    /// `[vocab, hidden]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<T>,
}

/// A host matrix on its way to a backend.
pub struct HostTensor {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl HostTensor {
    /// Stacks matrices with equal column counts on top of each other.
    pub fn stack_rows(parts: Vec<HostTensor>) -> HostTensor {
        let cols = parts[0].cols;
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut data = Vec::with_capacity(rows * cols);
        for p in parts {
            debug_assert_eq!(p.cols, cols);
            data.extend(p.data);
        }
        HostTensor { data, rows, cols }
    }
}

impl LlamaWeights<HostTensor> {
    /// Moves every tensor to the backend, in the backend's [`Backend::default_dtype`].
    pub fn upload<B: Backend>(self, b: &B) -> Result<LlamaWeights<B::Tensor>> {
        let dtype = b.default_dtype();
        let up = |t: HostTensor| b.upload(t.data, t.rows, t.cols, dtype);
        let layers = self.layers.into_iter().map(|l| {
            Ok(LayerWeights {
                input_layernorm: up(l.input_layernorm)?,
                qkv_proj: up(l.qkv_proj)?,
                qkv_bias: l.qkv_bias.map(up).transpose()?,
                o_proj: up(l.o_proj)?,
                post_attention_layernorm: up(l.post_attention_layernorm)?,
                gate_up_proj: up(l.gate_up_proj)?,
                down_proj: up(l.down_proj)?,
            })
        });
        Ok(LlamaWeights {
            embed_tokens: up(self.embed_tokens)?,
            layers: layers.collect::<Result<_>>()?,
            norm: up(self.norm)?,
            lm_head: self.lm_head.map(up).transpose()?,
        })
    }
}

// ANCHOR: assemble
/// Assembles fused weights from a source of named host tensors (file or random).
pub fn assemble<E>(
    c: &ModelConfig,
    mut get: impl FnMut(&str, [usize; 2]) -> Result<HostTensor, E>,
) -> Result<LlamaWeights<HostTensor>, E> {
    let (h, d) = (c.hidden_size, c.head_dim);
    let (q, kv) = (c.num_attention_heads * d, c.num_key_value_heads * d);
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut g = |name: &str, shape| get(&format!("{p}.{name}"), shape);
        let qkv_proj = HostTensor::stack_rows(vec![
            g("self_attn.q_proj.weight", [q, h])?,
            g("self_attn.k_proj.weight", [kv, h])?,
            g("self_attn.v_proj.weight", [kv, h])?,
        ]);
        let qkv_bias = if c.attention_bias {
            let parts = [("q", q), ("k", kv), ("v", kv)]
                .into_iter()
                .map(|(n, w)| g(&format!("self_attn.{n}_proj.bias"), [1, w]))
                .collect::<Result<Vec<_>, E>>()?;
            let data = parts.into_iter().flat_map(|p| p.data).collect::<Vec<_>>();
            Some(HostTensor {
                rows: 1,
                cols: data.len(),
                data,
            })
        } else {
            None
        };
        layers.push(LayerWeights {
            input_layernorm: g("input_layernorm.weight", [1, h])?,
            qkv_proj,
            qkv_bias,
            o_proj: g("self_attn.o_proj.weight", [h, q])?,
            post_attention_layernorm: g("post_attention_layernorm.weight", [1, h])?,
            gate_up_proj: HostTensor::stack_rows(vec![
                g("mlp.gate_proj.weight", [c.intermediate_size, h])?,
                g("mlp.up_proj.weight", [c.intermediate_size, h])?,
            ]),
            down_proj: g("mlp.down_proj.weight", [h, c.intermediate_size])?,
        });
    }
    Ok(LlamaWeights {
        embed_tokens: get("model.embed_tokens.weight", [c.vocab_size, h])?,
        layers,
        norm: get("model.norm.weight", [1, h])?,
        lm_head: if c.tie_word_embeddings {
            None
        } else {
            Some(get("lm_head.weight", [c.vocab_size, h])?)
        },
    })
}
// ANCHOR_END: assemble

// ANCHOR: weight_bytes
/// Parameters of a model: the sum of the shapes [`assemble`] asks for (no weights are read or
/// made). A tied LM head is counted once, with the embeddings.
pub fn parameter_count(config: &ModelConfig) -> u64 {
    let mut total = 0u64;
    let counted: Result<_, std::convert::Infallible> = assemble(config, |_, [rows, cols]| {
        total += (rows * cols) as u64;
        Ok(HostTensor {
            data: Vec::new(),
            rows: 0,
            cols: 0,
        })
    });
    drop(counted);
    total
}

/// Bytes the weights take at `bits_per_parameter` bits each (16 for FP16/BF16, 8 for INT8, 4
/// for INT4), rounded up to whole bytes. Quantized formats add scale factors on top (about a
/// bit per weight for GGUF's Q4_1); this counts the parameters alone.
pub fn weight_bytes(config: &ModelConfig, bits_per_parameter: u64) -> u64 {
    (parameter_count(config) * bits_per_parameter).div_ceil(8)
}
// ANCHOR_END: weight_bytes
