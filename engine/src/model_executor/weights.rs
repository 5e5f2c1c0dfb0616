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

impl<T> LlamaWeights<T> {
    /// The same weights with `f` applied to every tensor, in [`assemble_into`]'s order.
    pub fn try_map<U, E>(self, mut f: impl FnMut(T) -> Result<U, E>) -> Result<LlamaWeights<U>, E> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in self.layers {
            layers.push(LayerWeights {
                qkv_proj: f(l.qkv_proj)?,
                qkv_bias: l.qkv_bias.map(&mut f).transpose()?,
                input_layernorm: f(l.input_layernorm)?,
                o_proj: f(l.o_proj)?,
                post_attention_layernorm: f(l.post_attention_layernorm)?,
                gate_up_proj: f(l.gate_up_proj)?,
                down_proj: f(l.down_proj)?,
            });
        }
        Ok(LlamaWeights {
            embed_tokens: f(self.embed_tokens)?,
            layers,
            norm: f(self.norm)?,
            lm_head: self.lm_head.map(f).transpose()?,
        })
    }
}

impl LlamaWeights<HostTensor> {
    /// Moves every tensor to the backend, in the backend's [`Backend::default_dtype`].
    pub fn upload<B: Backend>(self, b: &B) -> Result<LlamaWeights<B::Tensor>> {
        let dtype = b.default_dtype();
        self.try_map(|t| b.upload(t.data, t.rows, t.cols, dtype))
    }
}

// ANCHOR: assemble
/// Assembles fused weights from a source of named host tensors (file or random), handing each
/// finished tensor to `up` as soon as it is built (a backend's upload: the model then never
/// sits whole in host memory; only one fused tensor at a time does).
pub fn assemble_into<T, E>(
    c: &ModelConfig,
    mut get: impl FnMut(&str, [usize; 2]) -> Result<HostTensor, E>,
    mut up: impl FnMut(HostTensor) -> Result<T, E>,
) -> Result<LlamaWeights<T>, E> {
    let (h, d) = (c.hidden_size, c.head_dim);
    let (q, kv) = (c.num_attention_heads * d, c.num_key_value_heads * d);
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut g = |name: &str, shape| get(&format!("{p}.{name}"), shape);
        let qkv_proj = up(HostTensor::stack_rows(vec![
            g("self_attn.q_proj.weight", [q, h])?,
            g("self_attn.k_proj.weight", [kv, h])?,
            g("self_attn.v_proj.weight", [kv, h])?,
        ]))?;
        let qkv_bias = if c.attention_bias {
            let parts = [("q", q), ("k", kv), ("v", kv)]
                .into_iter()
                .map(|(n, w)| g(&format!("self_attn.{n}_proj.bias"), [1, w]))
                .collect::<Result<Vec<_>, E>>()?;
            let data = parts.into_iter().flat_map(|p| p.data).collect::<Vec<_>>();
            Some(up(HostTensor {
                rows: 1,
                cols: data.len(),
                data,
            })?)
        } else {
            None
        };
        layers.push(LayerWeights {
            input_layernorm: up(g("input_layernorm.weight", [1, h])?)?,
            qkv_proj,
            qkv_bias,
            o_proj: up(g("self_attn.o_proj.weight", [h, q])?)?,
            post_attention_layernorm: up(g("post_attention_layernorm.weight", [1, h])?)?,
            gate_up_proj: up(HostTensor::stack_rows(vec![
                g("mlp.gate_proj.weight", [c.intermediate_size, h])?,
                g("mlp.up_proj.weight", [c.intermediate_size, h])?,
            ]))?,
            down_proj: up(g("mlp.down_proj.weight", [h, c.intermediate_size])?)?,
        });
    }
    Ok(LlamaWeights {
        embed_tokens: up(get("model.embed_tokens.weight", [c.vocab_size, h])?)?,
        layers,
        norm: up(get("model.norm.weight", [1, h])?)?,
        lm_head: if c.tie_word_embeddings {
            None
        } else {
            Some(up(get("lm_head.weight", [c.vocab_size, h])?)?)
        },
    })
}
// ANCHOR_END: assemble

/// [`assemble_into`] keeping every tensor on the host.
pub fn assemble<E>(
    c: &ModelConfig,
    get: impl FnMut(&str, [usize; 2]) -> Result<HostTensor, E>,
) -> Result<LlamaWeights<HostTensor>, E> {
    assemble_into(c, get, Ok)
}

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
