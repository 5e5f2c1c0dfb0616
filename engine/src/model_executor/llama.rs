//! The Llama forward pass (also Mistral and Qwen2), written once over any [`Backend`].
//!
//! ```text
//! ids ─ embed ─┬─ [RMSNorm ─ qkv ─ rotary ─ cache ─ paged attention ─ o_proj] ─(+)─┐
//!              │                                                                   │
//!              └───────── residual stream ──── [RMSNorm ─ gate_up ─ SiLU·mul ─ down] ─(+)─ … ─ norm ─ lm_head
//! ```
//! Only the rows that need logits (each sequence's last scheduled token) go through the final
//! norm's output projection: a 600-token prefill computes one row of logits, not 600.
//!
//! Under tensor parallelism every rank runs this same code on its shard of the weights
//! ([`super::tensor_parallel`]): each holds a slice of the heads, of the MLP and of the
//! vocabulary, so four places need the other ranks: the embedding, o_proj and down_proj each
//! give a partial sum that [`Backend::all_reduce`] completes, and the LM head's slice of the
//! logits is gathered with [`Backend::all_gather_columns`]. With one rank both do nothing.

use crate::backend::{Backend, DType, Result};
use crate::config::ModelConfig;
use crate::ops::rotary_embedding::cos_sin_cache;
use crate::worker::cache_engine::KvCache;

use super::weights::LlamaWeights;

/// A Llama-family model on a backend.
pub struct LlamaForCausalLM<B: Backend> {
    pub config: ModelConfig,
    pub backend: B,
    weights: LlamaWeights<B::Tensor>,
    /// `[max_position, head_dim]` cosines and sines for rotary embeddings.
    cos_sin_cache: B::Tensor,
}

impl<B: Backend> LlamaForCausalLM<B> {
    /// Fails if the backend cannot hold the rotary table.
    pub fn new(config: ModelConfig, backend: B, weights: LlamaWeights<B::Tensor>) -> Result<Self> {
        let (max_pos, d) = (config.max_position_embeddings, config.head_dim);
        // f32 on every backend: the CUDA rotary kernel reads f32 cos/sin too
        // (kernels/src/rotary_embedding.rs), so the rotation is as exact as the CPU's.
        let cache = backend.upload(cos_sin_cache(&config, max_pos), max_pos, d, DType::F32)?;
        Ok(LlamaForCausalLM {
            config,
            backend,
            weights,
            cos_sin_cache: cache,
        })
    }

    // ANCHOR: forward
    /// Runs the step's tokens through the model, writing their keys and values into
    /// `kv_cache`, and returns logits `[step.logits_indices.len(), vocab]` for the rows that
    /// sample. `step` is the batch layout already in the backend's memory
    /// ([`Backend::prepare_step`]): no layer copies anything from the host.
    pub fn forward(
        &self,
        step: &B::StepMetadata, // ids, positions, slots, block tables, logits rows
        kv_cache: &mut KvCache<B>,
    ) -> Result<B::Tensor> {
        let (b, c, w) = (&self.backend, &self.config, &self.weights);
        let eps = c.rms_norm_eps as f32;
        let d = c.head_dim;
        let scale = 1.0 / (d as f32).sqrt();

        // [t, hidden]; a rank's vocabulary slice gives zeros for ids it does not hold.
        let mut residual = b.embedding(&w.embed_tokens, step)?;
        b.all_reduce(&mut residual)?;
        // The last block's output, not yet added into the residual stream (none before the
        // first layer). Each block adds it as its first step, fused with its RMSNorm.
        let mut delta: Option<B::Tensor> = None;
        for (i, layer) in w.layers.iter().enumerate() {
            // Attention block: residual += delta; qkv = rms_norm(residual) · W_qkvᵀ.
            let qkv = b.add_rms_norm_linear(
                delta.take(),
                &mut residual,
                &layer.input_layernorm,
                eps,
                &layer.qkv_proj,
                layer.qkv_bias.as_ref(),
            )?;
            // Split q, k, v; rotate q and k by position; write k and v into the cache.
            let (key_cache, value_cache) = kv_cache.layer_mut(i);
            let q = b.qkv_rotary_and_cache(
                &qkv,
                c.num_attention_heads,
                c.num_key_value_heads,
                d,
                &self.cos_sin_cache,
                key_cache,
                value_cache,
                step,
            )?;
            let attn = b.paged_attention(
                &q,
                key_cache,
                value_cache,
                c.num_key_value_heads,
                d,
                scale,
                step,
            )?;
            // Row-parallel: this rank's heads' share of the output; the sum of all ranks' is it.
            let mut attn_out = b.linear(&attn, &layer.o_proj, None)?;
            b.all_reduce(&mut attn_out)?;

            // MLP block (SwiGLU): residual += attn_out; silu(gate) · up of the normed stream.
            let act = b.add_rms_norm_gate_up(
                Some(attn_out),
                &mut residual,
                &layer.post_attention_layernorm,
                eps,
                &layer.gate_up_proj,
            )?;
            let mut mlp_out = b.linear(&act, &layer.down_proj, None)?; // row-parallel too
            b.all_reduce(&mut mlp_out)?;
            delta = Some(mlp_out);
        }
        let hidden = b.add_rms_norm(delta, &mut residual, &w.norm, eps)?;
        // `hidden` is norm(final residual); project only the rows we sample from.
        let last = b.gather_rows(&hidden, step)?; // [num_logits, hidden]
        let logits = b.linear(&last, w.lm_head.as_ref().unwrap_or(&w.embed_tokens), None)?;
        b.all_gather_columns(logits, c.vocab_size) // this rank's vocabulary slice → all of it
    }
    // ANCHOR_END: forward
}
