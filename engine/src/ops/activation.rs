//! SwiGLU's activation: `silu(gate) * up`, where gate and up are the two halves of one fused
//! projection.

use rayon::prelude::*;

use super::expf::exp_in_place;

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
            silu_times_up(o, gate, up);
        });
}
// ANCHOR_END: silu_and_mul

/// One row: `o[i] = gate[i] / (1 + exp(-gate[i])) * up[i]`, the exps of the row at once
/// (`f32::exp`'s bits). With AVX-512 (or AVX) the same loops are compiled for its 16-float
/// (8-float) registers: each lane does the scalar code's negation, add, division and
/// multiply, so the bits are the same.
fn silu_times_up(o: &mut [f32], gate: &[f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected just above.
        return unsafe { silu_times_up_avx512(o, gate, up) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX was detected just above.
        return unsafe { silu_times_up_avx(o, gate, up) };
    }
    silu_times_up_plain(o, gate, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn silu_times_up_avx(o: &mut [f32], gate: &[f32], up: &[f32]) {
    silu_times_up_plain(o, gate, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_times_up_avx512(o: &mut [f32], gate: &[f32], up: &[f32]) {
    silu_times_up_plain(o, gate, up)
}

/// [`silu_and_mul`]'s arithmetic on a gate already in `gate_out` (overwritten with the
/// result), element by element: `gate_out[i] = silu(gate_out[i]) · up[i]`, the same bits.
/// The CPU GEMM's fused gate/up epilogue (`cpu_gemm::gemm_silu_and_mul`) runs it on each
/// task's tile.
pub fn silu_times_up_in_place(gate_out: &mut [f32], up: &[f32]) {
    assert_eq!(gate_out.len(), up.len(), "one up value per gate value");
    // A row of at most a tile: copied so that `silu_times_up` reads the gate it overwrites.
    let mut gate = [0.0f32; 512];
    for (o, u) in gate_out.chunks_mut(512).zip(up.chunks(512)) {
        let g = &mut gate[..o.len()];
        g.copy_from_slice(o);
        silu_times_up(o, g, u);
    }
}

#[inline(always)]
fn silu_times_up_plain(o: &mut [f32], gate: &[f32], up: &[f32]) {
    for (o, &g) in o.iter_mut().zip(gate) {
        *o = -g;
    }
    exp_in_place(o);
    for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + *o) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row-at-once exps give what `silu(g) * u` gives, bit for bit.
    #[test]
    fn bitwise_silu_times_up() {
        let (t, d) = (3, 37);
        let x: Vec<f32> = (0..t * 2 * d)
            .map(|i| (i as f32 * 0.77).sin() * 12.0)
            .collect();
        let mut out = vec![0.0; t * d];
        silu_and_mul(&mut out, &x, t);
        for (r, row) in out.chunks_exact(d).enumerate() {
            let (g, u) = x[r * 2 * d..(r + 1) * 2 * d].split_at(d);
            for i in 0..d {
                assert_eq!(
                    row[i].to_bits(),
                    (silu(g[i]) * u[i]).to_bits(),
                    "row {r}, {i}"
                );
            }
        }
    }
}
