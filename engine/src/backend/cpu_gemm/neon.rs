//! The aarch64 NEON micro-kernel: a register tile of `MR = 6` tokens × `NR = 16` outputs.
//!
//! NEON has 32 vector registers of 4 floats. The tile keeps 6 × 4 = 24 of them as accumulators
//! (token `r`, outputs in four groups of 4), 4 hold the panel's 16 weights of the current `k`,
//! and 1 the broadcast `x[r, k]`: 29 of 32. `vfmaq_f32` is a fused multiply-add (one
//! rounding), so each lane runs exactly the chain of `cpu_gemm`'s module doc.

use std::arch::aarch64::*;

/// Output rows per panel (four vectors of 4).
pub const NR: usize = 16;
/// Tokens per tile.
pub const MR: usize = 6;

/// `c[r][j] = chain(c[r][j] or 0, x[r, 0..kc] · w[0..kc][j])` for `rows ≤ MR` tokens.
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
    assert!((1..=MR).contains(&rows) && c.len() >= rows * NR && w.len() >= kc * NR);
    assert!(x.len() >= (rows - 1) * x_stride + kc);
    macro_rules! run {
        ($($r:literal)*) => {
            match rows {
                // SAFETY: NEON is part of every aarch64 target Rust supports, and the asserts
                // bound every access `kernel` makes: `rows` rows of `c` and `x`, `kc` of `w`.
                $($r => unsafe { kernel::<$r>(c, x, x_stride, w, kc, first) },)*
                _ => unreachable!(),
            }
        };
    }
    run!(1 2 3 4 5 6);
}

/// The tile for exactly `R` tokens. Caller guarantees the bounds `tile` asserts.
#[target_feature(enable = "neon")]
unsafe fn kernel<const R: usize>(
    c: &mut [f32],
    x: &[f32],
    x_stride: usize,
    w: &[f32],
    kc: usize,
    first: bool,
) {
    let (cp, xp, wp) = (c.as_mut_ptr(), x.as_ptr(), w.as_ptr());
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    if !first {
        for (r, a) in acc.iter_mut().enumerate() {
            for (q, a) in a.iter_mut().enumerate() {
                // SAFETY: row r < R of c holds NR = 16 floats.
                *a = unsafe { vld1q_f32(cp.add(r * NR + 4 * q)) };
            }
        }
    }
    for kk in 0..kc {
        // SAFETY: kk < kc, and w holds kc rows of 16 floats.
        let wv: [float32x4_t; 4] =
            std::array::from_fn(|q| unsafe { vld1q_f32(wp.add(kk * NR + 4 * q)) });
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and kk < kc, inside x's (R - 1) * x_stride + kc floats.
            let xv = vdupq_n_f32(unsafe { *xp.add(r * x_stride + kk) });
            for (a, &wq) in a.iter_mut().zip(&wv) {
                *a = vfmaq_f32(*a, xv, wq);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (q, &a) in a.iter().enumerate() {
            // SAFETY: as for the loads of c.
            unsafe { vst1q_f32(cp.add(r * NR + 4 * q), a) };
        }
    }
}
