//! Rebuilds a GGUF's Q4_1/Q8_0 blocks from the f32 weights they were dequantized to, when the
//! original file is gone (a SmolLM2 cache fetched before `fetch_model` kept the GGUF).
//!
//! ```sh
//! cargo run --release -p engine --example gguf_from_dequantized -- \
//!     ~/.cache/inference-lab/models/SmolLM2-135M-Instruct \
//!     ~/.cache/inference-lab/models/SmolLM2-135M-Instruct.gguf
//! ```
//!
//! Every block is recovered exactly or not at all: a Q4_1 block's minimum is its `m` (its
//! q = 0 element), `d` is searched among the f16 values next to `(max - m) / 15`, and the block
//! counts only if `d · q + m` gives back each of its 32 f32 values bit for bit (Q8_0 alike,
//! from `max |v| / 127`). A tensor some block of which fails stays F32. The file holds the
//! `llama.*` metadata and tensors (q/k rows permuted back to llama.cpp's order), no tokenizer:
//! enough for `model_loader::gguf_blocks`, which reads only those.

use std::path::PathBuf;

use engine::config::ModelConfig;
use engine::model_loader::gguf_writer::GgufBuilder;
use half::f16;

/// `count` f16 values on either side of `x` (and `x` rounded), as f32.
fn f16_near(x: f32, count: i32) -> impl Iterator<Item = f32> {
    let bits = f16::from_f32(x).to_bits() as i32;
    (-count..=count)
        .map(move |k| bits + k)
        .filter(|b| (0..0x7c00).contains(b))
        .map(|b| f16::from_bits(b as u16).to_f32())
}

/// One Q4_1 block (`f16 d, f16 m, 16 bytes`) whose dequantization is `v`, if there is one.
fn q4_1(v: &[f32]) -> Option<Vec<u8>> {
    let m = v.iter().copied().fold(f32::INFINITY, f32::min);
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if f16::from_f32(m).to_f32() != m {
        return None;
    }
    for d in f16_near((max - m) / 15.0, 4) {
        let q: Vec<u8> = v
            .iter()
            .map(|&x| {
                let q = if d == 0.0 { 0.0 } else { ((x - m) / d).round() };
                q.clamp(0.0, 15.0) as u8
            })
            .collect();
        if q.iter().zip(v).all(|(&q, &x)| d * q as f32 + m == x) {
            let mut b = f16::from_f32(d).to_le_bytes().to_vec();
            b.extend(f16::from_f32(m).to_le_bytes());
            b.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
            return Some(b);
        }
    }
    None
}

/// One Q8_0 block (`f16 d, 32 i8`) whose dequantization is `v`, if there is one.
fn q8_0(v: &[f32]) -> Option<Vec<u8>> {
    let amax = v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
    for d in f16_near(amax / 127.0, 4) {
        let q: Vec<i8> = v
            .iter()
            .map(|&x| {
                let q = if d == 0.0 { 0.0 } else { (x / d).round() };
                q.clamp(-128.0, 127.0) as i8
            })
            .collect();
        if q.iter().zip(v).all(|(&q, &x)| d * q as f32 == x) {
            let mut b = f16::from_f32(d).to_le_bytes().to_vec();
            b.extend(q.iter().map(|&q| q as u8));
            return Some(b);
        }
    }
    None
}

/// The tensor's blocks as (ggml type id, bytes): Q4_1, else Q8_0, else F32.
fn requantize(v: &[f32], cols: usize) -> (u32, Vec<u8>) {
    if cols.is_multiple_of(32) {
        for (id, f) in [(3, q4_1 as fn(&[f32]) -> _), (8, q8_0)] {
            let blocks: Option<Vec<Vec<u8>>> = v.chunks_exact(32).map(f).collect();
            if let Some(b) = blocks {
                return (id, b.concat());
            }
        }
    }
    (0, v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// HF's q/k row order back to llama.cpp's (the inverse of `hf_tensors::unpermute_rows`).
fn permute_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let head_dim = w.len() / cols / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for t in 0..2 {
            for i in 0..half {
                let src = (h * head_dim + t * half + i) * cols;
                let dst = (h * head_dim + 2 * i + t) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir, out] = &args[..] else {
        anyhow::bail!("usage: gguf_from_dequantized MODEL_DIR OUT.gguf");
    };
    let c = ModelConfig::from_dir(dir)?;
    let text = std::fs::read_to_string(dir.join("config.json"))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let tied = json["tie_word_embeddings"].as_bool().unwrap_or(false);
    let st = std::fs::read(dir.join("model.safetensors"))?;
    let st = safetensors::SafeTensors::deserialize(&st)?;
    let mut b = GgufBuilder::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", c.num_hidden_layers as u32)
        .u32("llama.context_length", c.max_position_embeddings as u32)
        .u32("llama.embedding_length", c.hidden_size as u32)
        .u32("llama.feed_forward_length", c.intermediate_size as u32)
        .u32("llama.attention.head_count", c.num_attention_heads as u32)
        .u32(
            "llama.attention.head_count_kv",
            c.num_key_value_heads as u32,
        )
        .u32("llama.attention.key_length", c.head_dim as u32)
        .u32("llama.rope.dimension_count", c.head_dim as u32)
        .u32("llama.vocab_size", c.vocab_size as u32)
        .f32("llama.rope.freq_base", c.rope_theta as f32)
        .f32(
            "llama.attention.layer_norm_rms_epsilon",
            c.rms_norm_eps as f32,
        );
    let mut names = vec![
        (
            "token_embd.weight".to_string(),
            "model.embed_tokens.weight".to_string(),
            None,
        ),
        (
            "output_norm.weight".into(),
            "model.norm.weight".into(),
            None,
        ),
    ];
    if !tied {
        names.push(("output.weight".into(), "lm_head.weight".into(), None));
    }
    for i in 0..c.num_hidden_layers {
        for (g, h, heads) in [
            ("attn_norm", "input_layernorm", None),
            ("ffn_norm", "post_attention_layernorm", None),
            ("attn_q", "self_attn.q_proj", Some(c.num_attention_heads)),
            ("attn_k", "self_attn.k_proj", Some(c.num_key_value_heads)),
            ("attn_v", "self_attn.v_proj", None),
            ("attn_output", "self_attn.o_proj", None),
            ("ffn_gate", "mlp.gate_proj", None),
            ("ffn_up", "mlp.up_proj", None),
            ("ffn_down", "mlp.down_proj", None),
        ] {
            let names_i = (
                format!("blk.{i}.{g}.weight"),
                format!("model.layers.{i}.{h}.weight"),
            );
            names.push((names_i.0, names_i.1, heads));
        }
    }
    let mut counts = std::collections::BTreeMap::new();
    for (gguf_name, hf_name, heads) in names {
        let t = st.tensor(&hf_name)?;
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let shape = t.shape().to_vec();
        let cols = *shape.last().unwrap_or(&1);
        let v = match heads {
            Some(h) => permute_rows(&v, h, cols),
            None => v,
        };
        let (ty, bytes) = requantize(&v, cols);
        *counts.entry(ty).or_insert(0) += 1;
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        b = b.tensor(&gguf_name, &dims, ty, bytes);
    }
    b.write_to(
        out.parent().unwrap_or(".".as_ref()),
        &out.file_name().unwrap().to_string_lossy(),
    )?;
    eprintln!(
        "wrote {} (tensors by ggml type id: {counts:?})",
        out.display()
    );
    Ok(())
}
