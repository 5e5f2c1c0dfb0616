//! The portable micro-kernel: plain Rust, any CPU. It is also the reference the SIMD kernels
//! are tested against, so it spells out the contract: one `mul_add` chain per output, in the
//! order of `k` (`f32::mul_add` is one IEEE rounding, exactly what a hardware FMA does; on a
//! CPU without FMA it is a libm call, slow but exact).

/// Output rows per panel.
pub const NR: usize = 16;
/// Tokens per tile.
pub const MR: usize = 4;

/// `c[r][j] = chain(c[r][j] or 0, x[r, 0..kc] · w[0..kc][j])` for `rows` tokens.
#[allow(clippy::too_many_arguments)]
pub fn tile(
    c: &mut [f32], // [rows][NR]
    x: &[f32],     // row r, column kk at x[r * x_stride + kk]
    x_stride: usize,
    w: &[f32], // [kc][NR]
    rows: usize,
    kc: usize,
    first: bool,
) {
    for r in 0..rows {
        let c = &mut c[r * NR..(r + 1) * NR];
        let x = &x[r * x_stride..][..kc];
        let mut acc = [0.0f32; NR];
        if !first {
            acc.copy_from_slice(c);
        }
        for (&xv, w) in x.iter().zip(w.chunks_exact(NR)) {
            for (a, &wv) in acc.iter_mut().zip(w) {
                *a = xv.mul_add(wv, *a);
            }
        }
        c.copy_from_slice(&acc);
    }
}
