//! Random weights for any config: the tiny test model, and benchmark or parallelism runs at
//! shapes whose real weights we do not have (e.g. Llama-2-7B's).
//!
//! Each tensor's values depend only on the seed and the tensor's name, so two processes (or
//! two tensor-parallel ranks) build identical models without talking to each other.

use rayon::prelude::*;

use super::weights::{assemble, HostTensor, LlamaWeights};
use crate::config::ModelConfig;

/// SplitMix64: tiny, fast, and good enough to fill weight matrices.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the seed.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x1000_0000_01b3);
    }
    h
}

/// Uniform values in `[center - scale, center + scale]`, deterministic per (seed, name).
fn fill(seed: u64, name: &str, rows: usize, cols: usize, center: f32, scale: f32) -> HostTensor {
    let base = name_seed(seed, name);
    let mut data = vec![0.0f32; rows * cols];
    data.par_chunks_mut(4096)
        .enumerate()
        .for_each(|(chunk, out)| {
            let mut state = base ^ (chunk as u64).wrapping_mul(0xA24B_AED4_963E_E407);
            for v in out {
                let unit = (splitmix64(&mut state) >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                *v = center + scale * (2.0 * unit - 1.0);
            }
        });
    HostTensor { data, rows, cols }
}

/// One tensor with the scale of a trained model's at init: norms near 1, projections
/// `~U(±1/√in)`, so activations neither vanish nor explode over many layers.
pub fn random_tensor(seed: u64, name: &str, rows: usize, cols: usize) -> HostTensor {
    if name.ends_with("norm.weight") {
        fill(seed, name, rows, cols, 1.0, 0.1)
    } else if name.ends_with("embed_tokens.weight") || name == "lm_head.weight" {
        fill(seed, name, rows, cols, 0.0, 1.0)
    } else {
        fill(seed, name, rows, cols, 0.0, 1.0 / (cols as f32).sqrt())
    }
}

/// A whole model's random weights, fused for the forward pass.
pub fn random_weights(config: &ModelConfig, seed: u64) -> LlamaWeights<HostTensor> {
    let result: Result<_, std::convert::Infallible> = assemble(config, |name, [rows, cols]| {
        Ok(random_tensor(seed, name, rows, cols))
    });
    match result {
        Ok(w) => w,
        Err(never) => match never {},
    }
}

/// The same weights under their Hugging Face names, unfused (to write a model directory).
pub fn random_named_tensors(config: &ModelConfig, seed: u64) -> Vec<(String, HostTensor)> {
    let mut named = Vec::new();
    let _: Result<_, std::convert::Infallible> = assemble(config, |name, [rows, cols]| {
        named.push((name.to_string(), random_tensor(seed, name, rows, cols)));
        Ok(HostTensor {
            data: vec![],
            rows: 0,
            cols: 0,
        })
    });
    named
}
