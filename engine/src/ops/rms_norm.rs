//! RMSNorm: scale each token's hidden vector to unit root-mean-square, then by a learned
//! weight. Unlike LayerNorm there is no mean subtraction and no bias.

use rayon::prelude::*;

// ANCHOR: rms_norm
/// `out[t] = x[t] / sqrt(mean(x[t]²) + eps) * weight`, computed in f32 as transformers does.
pub fn rms_norm(
    out: &mut [f32], // [num_tokens, hidden_size]
    x: &[f32],       // [num_tokens, hidden_size]
    weight: &[f32],  // [hidden_size]
    eps: f32,
) {
    let h = weight.len();
    out.par_chunks_mut(h)
        .zip(x.par_chunks(h))
        .for_each(|(o, x)| {
            let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / h as f32;
            let inv_rms = 1.0 / (mean_sq + eps).sqrt();
            for ((o, &x), &w) in o.iter_mut().zip(x).zip(weight) {
                *o = w * (x * inv_rms);
            }
        });
}
// ANCHOR_END: rms_norm

// ANCHOR: fused_add_rms_norm
/// The pre-norm residual step of a decoder layer in one pass: `residual += x`, then
/// `x = rms_norm(residual)`. Saves a read and a write of the hidden states per layer.
pub fn fused_add_rms_norm(
    x: &mut [f32],        // [num_tokens, hidden_size]; in: layer output, out: normed
    residual: &mut [f32], // [num_tokens, hidden_size]; in: residual stream, out: updated
    weight: &[f32],       // [hidden_size]
    eps: f32,
) {
    let h = weight.len();
    x.par_chunks_mut(h)
        .zip(residual.par_chunks_mut(h))
        .for_each(|(x, r)| {
            for (r, &v) in r.iter_mut().zip(x.iter()) {
                *r += v;
            }
            let mean_sq = r.iter().map(|v| v * v).sum::<f32>() / h as f32;
            let inv_rms = 1.0 / (mean_sq + eps).sqrt();
            for ((x, &r), &w) in x.iter_mut().zip(r.iter()).zip(weight) {
                *x = w * (r * inv_rms);
            }
        });
}
// ANCHOR_END: fused_add_rms_norm
