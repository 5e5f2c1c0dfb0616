//! Rotary position embedding (RoPE), in the "NeoX" layout Hugging Face Llama uses: the head
//! vector's first half and second half form the (x, y) pairs rotated by position·frequency.
//!
//! Like vLLM, the cos/sin values for every position are computed once into a cache; the
//! kernel then only looks them up.

use rayon::prelude::*;

use crate::config::{Llama3RopeScaling, ModelConfig};

/// Inverse frequencies `1 / theta^(2i/d)` for `i < d/2`, with Llama-3 scaling if configured.
pub fn inv_freq(head_dim: usize, theta: f64, scaling: Option<&Llama3RopeScaling>) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            // transformers computes this in f32: round once, as it does.
            let f = (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32;
            match scaling {
                None => f,
                Some(s) => llama3_scale(f as f64, s) as f32,
            }
        })
        .collect()
}

/// Llama 3.1's rule: keep high frequencies, divide low ones by `factor`, blend in between.
fn llama3_scale(freq: f64, s: &Llama3RopeScaling) -> f64 {
    let old_len = s.original_max_position_embeddings as f64;
    let low_freq_wavelen = old_len / s.low_freq_factor;
    let high_freq_wavelen = old_len / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    if wavelen < high_freq_wavelen {
        freq
    } else if wavelen > low_freq_wavelen {
        freq / s.factor
    } else {
        let smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}

/// `[max_position, head_dim]`: for each position, `head_dim/2` cosines then `head_dim/2` sines.
pub fn cos_sin_cache(config: &ModelConfig, max_position: usize) -> Vec<f32> {
    let d = config.head_dim;
    let freqs = inv_freq(d, config.rope_theta, config.rope_scaling.as_ref());
    let mut cache = vec![0.0f32; max_position * d];
    cache.par_chunks_mut(d).enumerate().for_each(|(pos, row)| {
        let (cos, sin) = row.split_at_mut(d / 2);
        for (i, &f) in freqs.iter().enumerate() {
            let angle = pos as f32 * f; // f32 product, as transformers
            cos[i] = angle.cos();
            sin[i] = angle.sin();
        }
    });
    cache
}

// ANCHOR: rotary_embedding
/// Rotates every head of `query` and `key` in place by its token's position.
/// For pair `(x, y) = (v[i], v[i + d/2])`: `x' = x·cos − y·sin`, `y' = y·cos + x·sin`.
pub fn rotary_embedding(
    positions: &[usize], // [num_tokens]
    query: &mut [f32],   // [num_tokens, num_heads, head_dim]
    key: &mut [f32],     // [num_tokens, num_kv_heads, head_dim]
    head_dim: usize,
    cos_sin_cache: &[f32], // [max_position, head_dim]
) {
    let rotate = |x: &mut [f32], pos: usize| {
        let row = &cos_sin_cache[pos * head_dim..(pos + 1) * head_dim];
        let (cos, sin) = row.split_at(head_dim / 2);
        for head in x.chunks_mut(head_dim) {
            let (a, b) = head.split_at_mut(head_dim / 2);
            for i in 0..head_dim / 2 {
                let (x, y) = (a[i], b[i]);
                a[i] = x * cos[i] - y * sin[i];
                b[i] = y * cos[i] + x * sin[i];
            }
        }
    };
    let n = positions.len();
    if n == 0 {
        return;
    }
    let (qw, kw) = (query.len() / n, key.len() / n);
    query
        .par_chunks_mut(qw)
        .zip(positions)
        .for_each(|(q, &p)| rotate(q, p));
    key.par_chunks_mut(kw)
        .zip(positions)
        .for_each(|(k, &p)| rotate(k, p));
}
// ANCHOR_END: rotary_embedding

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let s = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let plain = inv_freq(128, 500000.0, None);
        let scaled = inv_freq(128, 500000.0, Some(&s));
        // Wavelength 2π/f below 8192/4 = 2048 tokens: unchanged.
        assert_eq!(plain[0], scaled[0]);
        // Wavelength above 8192 tokens: divided by the factor.
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 8.0).abs() < 1e-12);
        // In between: between the two.
        for (p, q) in plain.iter().zip(&scaled) {
            assert!(*q <= *p && *q >= *p / 8.0 * 0.999);
        }
    }

    #[test]
    fn rotation_preserves_norm_and_position_zero_is_identity() {
        let cfg = crate::tiny_model::tiny_config();
        let cache = cos_sin_cache(&cfg, 64);
        let d = cfg.head_dim;
        let q0: Vec<f32> = (0..d).map(|i| i as f32 * 0.1 - 0.5).collect();
        let (mut q, mut k) = (q0.clone(), q0.clone());
        rotary_embedding(&[0], &mut q, &mut k, d, &cache);
        assert_eq!(q, q0);
        rotary_embedding(&[37], &mut q, &mut k, d, &cache);
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>();
        assert!((norm(&q) - norm(&q0)).abs() < 1e-4);
        assert_ne!(q, q0);
    }
}
