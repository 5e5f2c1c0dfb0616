//! Packing a model's linear weights once, at load, so that a backend keeps one copy of each.
//!
//! The CPU's GEMM reads weights packed into panels (`backend::cpu_gemm`); packed lazily, on
//! first use, the row-major matrix stayed beside the panels for the life of the engine, and
//! an f32 model took twice its size in memory. Packing here, with the weights still mutable,
//! lets the backend drop the row-major copy ([`Backend::pack_weight`]).

use crate::backend::Backend;
use crate::error::Result;
use crate::model_executor::weights::LlamaWeights;

/// Hands every linear weight of `weights` to [`Backend::pack_weight`]: the four projections of
/// each layer, and the LM head, or the embedding table when the head is tied to it (the CPU
/// backend's lookup then reads the packed table). An untied embedding table, read by the
/// lookup only, and the norms stay as they are.
pub fn pack_weights<B: Backend>(backend: &B, weights: &mut LlamaWeights<B::Tensor>) -> Result<()> {
    let _span = tracing::debug_span!("pack_weights").entered();
    for layer in &mut weights.layers {
        for t in [
            &mut layer.qkv_proj,
            &mut layer.o_proj,
            &mut layer.gate_up_proj,
            &mut layer.down_proj,
        ] {
            backend.pack_weight(t)?;
        }
    }
    match weights.lm_head.as_mut() {
        Some(lm_head) => backend.pack_weight(lm_head)?,
        None => backend.pack_weight(&mut weights.embed_tokens)?,
    }
    Ok(())
}
