//! SwiGLU's activation: `silu(gate) * up`, where gate and up are the two halves of one fused
//! projection.

use rayon::prelude::*;

/// `silu(x) = x * sigmoid(x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

// ANCHOR: silu_and_mul
/// `out[t, i] = silu(x[t, i]) * x[t, d + i]` for `i < d`.
pub fn silu_and_mul(
    out: &mut [f32], // [num_tokens, d]
    x: &[f32],       // [num_tokens, 2 * d]: gate then up
    num_tokens: usize,
) {
    assert_eq!(
        out.len() * 2,
        x.len(),
        "silu_and_mul: x must be twice as wide as out"
    );
    if num_tokens == 0 {
        return;
    }
    let d = out.len() / num_tokens;
    out.par_chunks_mut(d)
        .zip(x.par_chunks(2 * d))
        .for_each(|(o, x)| {
            let (gate, up) = x.split_at(d);
            for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                *o = silu(g) * u;
            }
        });
}
// ANCHOR_END: silu_and_mul
