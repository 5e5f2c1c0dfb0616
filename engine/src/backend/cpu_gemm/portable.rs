//! The portable micro-kernel: plain Rust, any CPU. It is also the reference the SIMD kernels
//! are tested against, so it spells out the contract: one `mul_add` chain per output, in the
//! order of `k` (`f32::mul_add` is one IEEE rounding, exactly what a hardware FMA does; on a
//! CPU without FMA it is a libm call, slow but exact).

use super::packed_blocks::BlockSlice;

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

/// [`tile`] from a weight in its blocks: each row `kk` of the panel is dequantized into a
/// register-sized array ([`BlockSlice::row`]) right before its `NR` FMAs, for every token of
/// the tile at once, so nothing is written to memory and the chains are [`tile`]'s.
#[allow(clippy::too_many_arguments)]
pub fn tile_blocks(
    c: &mut [f32], // [rows][NR]
    x: &[f32],     // row r, column kk at x[r * x_stride + kk]
    x_stride: usize,
    w: BlockSlice, // [kc][NR] in blocks
    rows: usize,
    kc: usize,
    first: bool,
) {
    assert!((1..=MR).contains(&rows) && c.len() >= rows * NR && w.kc(NR) >= kc);
    let mut acc = [[0.0f32; NR]; MR];
    if !first {
        for (a, c) in acc.iter_mut().zip(c.chunks_exact(NR)).take(rows) {
            a.copy_from_slice(c);
        }
    }
    for kk in 0..kc {
        let wv = w.row::<NR>(kk);
        for (r, a) in acc.iter_mut().enumerate().take(rows) {
            let xv = x[r * x_stride + kk];
            for (a, &wv) in a.iter_mut().zip(&wv) {
                *a = xv.mul_add(wv, *a);
            }
        }
    }
    for (a, c) in acc.iter().zip(c.chunks_exact_mut(NR)).take(rows) {
        c.copy_from_slice(a);
    }
}
