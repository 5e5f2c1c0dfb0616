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
//! give a partial sum that [`Backend::all_reduce`] completes (for the two projections, inside
//! [`Backend::row_parallel_linear`]), and the LM head's slice of the
//! logits is gathered with [`Backend::all_gather_columns`]. With one rank both do nothing.
//!
//! Under pipeline parallelism each stage runs [`LlamaForCausalLM::forward_stage`] over its own
//! contiguous layers ([`super::pipeline_parallel`]): the first embeds, the last norms and
//! projects to logits, and between them the residual stream and the last block's output
//! travel as [`Hidden`].

use crate::backend::{Backend, BackendError, DType, Result};
use crate::config::ModelConfig;
use crate::ops::rotary_embedding::cos_sin_cache;
use crate::worker::cache_engine::KvCache;

use super::pipeline_parallel::PpStage;
use super::weights::LlamaWeights;

/// The state one pipeline stage hands the next: the residual stream `[t, hidden]` and the
/// last block's output not yet added into it (vLLM's `IntermediateTensors` of
/// `hidden_states` and `residual`). `delta` is `None` only before the first layer.
pub struct Hidden<T> {
    pub delta: Option<T>,
    pub residual: T,
}

/// What a stage's forward pass ends with.
pub enum StageOutput<T> {
    /// Not the last stage: the state to send on.
    Hidden(Hidden<T>),
    /// The last stage: logits `[num_logits, vocab]`.
    Logits(T),
}

/// A Llama-family model on a backend.
pub struct LlamaForCausalLM<B: Backend> {
    pub config: ModelConfig,
    pub backend: B,
    weights: LlamaWeights<B::Tensor>,
    /// The pipeline stage this model runs (the whole model unless [`Self::with_stage`]):
    /// `config.num_hidden_layers` counts the stage's layers, `weights` holds only them.
    pub stage: PpStage,
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
            backend,
            weights,
            stage: PpStage::whole(config.num_hidden_layers),
            config,
            cos_sin_cache: cache,
        })
    }

    /// The same model as pipeline stage `stage`: its weights and config must be the stage's
    /// ([`super::tensor_parallel::load_stage_shard_into`]).
    pub fn with_stage(mut self, stage: PpStage) -> Self {
        self.stage = stage;
        self
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
        match self.forward_stage(step, kv_cache, None)? {
            StageOutput::Logits(logits) => Ok(logits),
            StageOutput::Hidden(_) => Err(BackendError::shape(
                "forward",
                "a pipeline stage that is not the last has no logits",
            )),
        }
    }

    /// This rank's pipeline stage of [`forward`](Self::forward): the first stage embeds the
    /// step's ids (`from_prev` is `None`), every later one starts from the previous stage's
    /// [`Hidden`] state; the stage runs its layers (its `kv_cache` holds those layers only);
    /// the last stage ends with the final norm and the LM head, every other one hands its
    /// hidden state on. The whole model is one stage that is both first and last.
    pub fn forward_stage(
        &self,
        step: &B::StepMetadata,
        kv_cache: &mut KvCache<B>,
        from_prev: Option<Hidden<B::Tensor>>,
    ) -> Result<StageOutput<B::Tensor>> {
        let (b, c, w) = (&self.backend, &self.config, &self.weights);
        let eps = c.rms_norm_eps as f32;
        let d = c.head_dim;
        let scale = 1.0 / (d as f32).sqrt();

        // The residual stream, and the last block's output not yet added into it (none
        // before the first layer): each block adds it as its first step, fused with its
        // RMSNorm. A later stage picks both up where the previous one stopped.
        let (mut residual, mut delta) = match (self.stage.is_first(), from_prev) {
            (true, None) => {
                // [t, hidden]; a rank's vocabulary slice gives zeros for ids it does not hold.
                let mut residual = b.embedding(&w.embed_tokens, step)?;
                b.all_reduce(&mut residual)?;
                (residual, None)
            }
            (false, Some(h)) => (h.residual, h.delta),
            _ => {
                let detail = "the first stage embeds; every other needs the previous one's state";
                return Err(BackendError::shape("forward_stage", detail));
            }
        };
        for (i, layer) in w.layers.iter().enumerate() {
            let _span = tracing::trace_span!("layer", layer = i).entered();
            // Attention block: residual += delta; qkv = rms_norm(residual) · W_qkvᵀ; split q, k,
            // v; rotate q and k by position; write k and v into the cache.
            let (key_cache, value_cache) = kv_cache.layer_mut(i);
            let q = b.add_rms_norm_qkv_rotary_cache(
                delta.take(),
                &mut residual,
                &layer.input_layernorm,
                eps,
                &layer.qkv_proj,
                layer.qkv_bias.as_ref(),
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
            // Row-parallel: this rank's heads' share of the output, summed over the ranks
            // (linear, then all_reduce).
            let attn_out = b.row_parallel_linear(&attn, &layer.o_proj)?;

            // MLP block (SwiGLU): residual += attn_out; silu(gate) · up of the normed stream.
            let act = b.add_rms_norm_gate_up(
                Some(attn_out),
                &mut residual,
                &layer.post_attention_layernorm,
                eps,
                &layer.gate_up_proj,
            )?;
            let mlp_out = b.row_parallel_linear(&act, &layer.down_proj)?; // row-parallel too
            delta = Some(mlp_out);
        }
        if !self.stage.is_last() {
            return Ok(StageOutput::Hidden(Hidden { delta, residual }));
        }
        // The final norm, of only the rows we sample from: the LM head projects just those.
        let last = b.add_rms_norm_gather(delta, residual, &w.norm, eps, step)?; // [num_logits, hidden]
        let logits = b.linear(&last, w.lm_head.as_ref().unwrap_or(&w.embed_tokens), None)?;
        let logits = b.all_gather_columns(logits, c.vocab_size)?; // this rank's slice → all
        Ok(StageOutput::Logits(logits))
    }
    // ANCHOR_END: forward
}
