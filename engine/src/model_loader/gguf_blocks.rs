//! Computing from a GGUF's own blocks: after a model's weights are on the backend (f32, from
//! the converted safetensors), each linear layer whose GGUF tensors are Q8_0/Q4_1 is handed to
//! the backend again as blocks ([`Backend::upload_blocks`]); a backend that computes from
//! blocks (the CPU's) replaces the f32 weight with them, the others keep theirs.
//!
//! Why automatic: on the CPU the block GEMM gives the very bits of the f32 GEMM on the
//! dequantized weights (`cpu_gemm::packed_blocks`), so the output cannot change, while the
//! bytes a decode step reads drop about fourfold. The norms stay f32 (vectors), and so does
//! the embedding table for its lookup; when the LM head is tied to it, the table also gets its
//! blocks, which the LM head's GEMM reads.

use std::collections::HashMap;
use std::path::Path;

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::model_executor::weights::LlamaWeights;
use gguf_hf::dequant::GgmlType;
use gguf_hf::gguf::GgufFile;
use gguf_hf::gguf_to_hf::LlamaParams;
use gguf_hf::hf_tensors::plan;

/// A tensor's blocks by Hugging Face name: `Some((format, bytes))` for a Q8_0/Q4_1 tensor in HF
/// row order, `None` for a plain one.
pub type BlockSource<'a> = dyn FnMut(&str) -> Result<Option<(GgmlType, Vec<u8>)>> + 'a;

/// Replaces every linear weight of `weights` whose tensors `get` has in blocks (all parts of a
/// fused one, in one format) with the backend's block tensor. Returns how many it replaced
/// (0 on a backend without block tensors).
pub fn keep_blocks<B: Backend>(
    backend: &B,
    c: &ModelConfig,
    weights: &mut LlamaWeights<B::Tensor>,
    get: &mut BlockSource,
) -> Result<usize> {
    let _span = tracing::debug_span!("keep_blocks").entered();
    let (h, d, ff) = (c.hidden_size, c.head_dim, c.intermediate_size);
    let (q, kv) = (c.num_attention_heads * d, c.num_key_value_heads * d);
    let mut replaced = 0;
    // The fused weight of `parts` (stacked rows, as `assemble_into` stacks the f32 ones).
    let mut fused = |parts: &[String], rows: usize, cols: usize| -> Result<Option<B::Tensor>> {
        let mut format = None;
        let mut bytes = Vec::new();
        for name in parts {
            let Some((ty, b)) = get(name)? else {
                return Ok(None);
            };
            if format.is_some_and(|f| f != ty) {
                return Ok(None);
            }
            format = Some(ty);
            bytes.extend(b);
        }
        let Some(format) = format else {
            return Ok(None);
        };
        Ok(backend.upload_blocks(format, &bytes, rows, cols)?)
    };
    for (i, layer) in weights.layers.iter_mut().enumerate() {
        let p = |n: &str| format!("model.layers.{i}.{n}.weight");
        let slots = [
            (
                &mut layer.qkv_proj,
                vec![
                    p("self_attn.q_proj"),
                    p("self_attn.k_proj"),
                    p("self_attn.v_proj"),
                ],
                q + 2 * kv,
                h,
            ),
            (&mut layer.o_proj, vec![p("self_attn.o_proj")], h, q),
            (
                &mut layer.gate_up_proj,
                vec![p("mlp.gate_proj"), p("mlp.up_proj")],
                2 * ff,
                h,
            ),
            (&mut layer.down_proj, vec![p("mlp.down_proj")], h, ff),
        ];
        for (slot, parts, rows, cols) in slots {
            if let Some(t) = fused(&parts, rows, cols)? {
                *slot = t;
                replaced += 1;
            }
        }
    }
    match weights.lm_head.as_mut() {
        Some(lm_head) => {
            if let Some(t) = fused(&["lm_head.weight".to_string()], c.vocab_size, h)? {
                *lm_head = t;
                replaced += 1;
            }
        }
        // Tied: the LM head is the embedding table, which the lookup still reads as f32.
        None => {
            if let Some((format, bytes)) = get("model.embed_tokens.weight")? {
                if backend.attach_blocks(&mut weights.embed_tokens, format, &bytes)? {
                    replaced += 1;
                }
            }
        }
    }
    Ok(replaced)
}

/// [`keep_blocks`] from the GGUF file at `path` (the one the model directory was converted
/// from).
pub fn keep_gguf_blocks<B: Backend>(
    backend: &B,
    c: &ModelConfig,
    weights: &mut LlamaWeights<B::Tensor>,
    path: &Path,
) -> Result<usize> {
    let err = |e: &dyn std::fmt::Display| EngineError::Weights(format!("{}: {e}", path.display()));
    let file = GgufFile::open(path).map_err(|e| err(&e))?;
    let params = LlamaParams::from_gguf(&file.header).map_err(|e| err(&e))?;
    let planned = plan(&file, &params).map_err(|e| err(&e))?;
    let by_name: HashMap<&str, _> = planned.iter().map(|t| (t.hf_name.as_str(), t)).collect();
    keep_blocks(backend, c, weights, &mut |name| match by_name.get(name) {
        Some(t) => t.blocks().map_err(|e| err(&e)),
        None => Ok(None),
    })
}

/// Bytes of weights a batch-1 decode step streams when the CPU computes from the GGUF at
/// `path` ([`keep_gguf_blocks`]), in the form the kernels read them: a Q4_1 matrix 24 bytes
/// per 32 weights and a Q8_0 one 36 (`PackedBlocks` keeps the f16 scale, and Q4_1's minimum,
/// widened to f32 beside the quantized bytes: the file itself holds 20 and 34), every other
/// tensor 4 bytes per value (f32). Each matrix counts once; the embedding table counts only
/// when it is also the LM head (tied), since the lookup reads one row of it.
pub fn streamed_weight_bytes(path: &Path) -> Result<f64> {
    let err = |e: &dyn std::fmt::Display| EngineError::Weights(format!("{}: {e}", path.display()));
    let file = GgufFile::open(path).map_err(|e| err(&e))?;
    let params = LlamaParams::from_gguf(&file.header).map_err(|e| err(&e))?;
    let planned = plan(&file, &params).map_err(|e| err(&e))?;
    let untied = planned.iter().any(|t| t.hf_name == "lm_head.weight");
    let mut bytes = 0.0;
    for t in &planned {
        if untied && t.hf_name == "model.embed_tokens.weight" {
            continue;
        }
        let values = t.shape.iter().product::<usize>() as f64;
        bytes += match t.blocks().map_err(|e| err(&e))?.map(|(ty, _)| ty) {
            Some(GgmlType::Q4_1) => values * 24.0 / 32.0,
            Some(GgmlType::Q8_0) => values * 36.0 / 32.0,
            _ => values * 4.0,
        };
    }
    Ok(bytes)
}
