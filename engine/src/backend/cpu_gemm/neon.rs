//! The aarch64 NEON micro-kernel: a register tile of `MR = 6` tokens × `NR = 16` outputs.
//!
//! NEON has 32 vector registers of 4 floats. The tile keeps 6 × 4 = 24 of them as accumulators
//! (token `r`, outputs in four groups of 4), 4 hold the panel's 16 weights of the current `k`,
//! and 1 the broadcast `x[r, k]`: 29 of 32. `vfmaq_f32` is a fused multiply-add (one
//! rounding), so each lane runs exactly the chain of `cpu_gemm`'s module doc.

use std::arch::aarch64::*;

use super::packed_blocks::{BlockSlice, QK};

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

/// [`tile`] from a weight in its blocks, dequantized in registers: per `k`, the panel's 16
/// quantized values are loaded (one 16-byte load), widened to four vectors of 32-bit lanes,
/// converted to f32, multiplied by the block's scales (`vmulq_f32`; Q4_1 then adds the
/// minimum with `vaddq_f32`, not a fused `vfmaq`) and fed straight to the FMAs: the
/// expressions of [`BlockSlice`], lane by lane, so the chains are the f32 path's.
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
    assert!((1..=MR).contains(&rows) && c.len() >= rows * NR);
    assert!(kc.is_multiple_of(QK) && w.kc(NR) >= kc && x.len() >= (rows - 1) * x_stride + kc);
    macro_rules! run {
        ($($r:literal)*) => {
            match rows {
                // SAFETY: NEON is part of every aarch64 target Rust supports, and the asserts
                // bound every access `kernel_blocks` makes: `rows` rows of `c` and `x`, `kc`
                // rows of `w`.
                $($r => unsafe { kernel_blocks::<$r>(c, x, x_stride, w, kc, first) },)*
                _ => unreachable!(),
            }
        };
    }
    run!(1 2 3 4 5 6);
}

/// [`tile_blocks`] for exactly `R` tokens. Caller guarantees the bounds `tile_blocks` asserts.
#[target_feature(enable = "neon")]
unsafe fn kernel_blocks<const R: usize>(
    c: &mut [f32],
    x: &[f32],
    x_stride: usize,
    w: BlockSlice,
    kc: usize,
    first: bool,
) {
    let (cp, xp) = (c.as_mut_ptr(), x.as_ptr());
    let (sp, mp, qp) = (w.scales.as_ptr(), w.mins.as_ptr(), w.quants.as_ptr());
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    if !first {
        for (r, a) in acc.iter_mut().enumerate() {
            for (q, a) in a.iter_mut().enumerate() {
                // SAFETY: row r < R of c holds NR = 16 floats.
                *a = unsafe { vld1q_f32(cp.add(r * NR + 4 * q)) };
            }
        }
    }
    // The FMAs of one `k` for every token: the chains of `tile`, in the same order.
    macro_rules! fma_rows {
        ($kk:expr, $wv:expr) => {
            let (kk, wv): (usize, [float32x4_t; 4]) = ($kk, $wv);
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: r < R and kk < kc, inside x's (R - 1) * x_stride + kc floats.
                let xv = vdupq_n_f32(unsafe { *xp.add(r * x_stride + kk) });
                for (a, &wq) in a.iter_mut().zip(&wv) {
                    *a = vfmaq_f32(*a, xv, wq);
                }
            }
        };
    }
    for b in 0..kc / QK {
        // SAFETY: block b < kc / 32 has NR scales (and minimums) in the slice.
        let d: [float32x4_t; 4] =
            std::array::from_fn(|g| unsafe { vld1q_f32(sp.add(b * NR + 4 * g)) });
        if !w.q4 {
            for i in 0..QK {
                let kk = b * QK + i;
                // SAFETY: row kk < kc of the Q8_0 slice holds NR = 16 bytes.
                let q = unsafe { vld1q_s8(qp.add(kk * NR).cast()) };
                let (lo, hi) = (vmovl_s8(vget_low_s8(q)), vmovl_high_s8(q));
                let ints = [
                    vmovl_s16(vget_low_s16(lo)),
                    vmovl_high_s16(lo),
                    vmovl_s16(vget_low_s16(hi)),
                    vmovl_high_s16(hi),
                ];
                let wv: [float32x4_t; 4] =
                    std::array::from_fn(|g| vmulq_f32(d[g], vcvtq_f32_s32(ints[g])));
                fma_rows!(kk, wv);
            }
        } else {
            // SAFETY: as for the scales.
            let m: [float32x4_t; 4] =
                std::array::from_fn(|g| unsafe { vld1q_f32(mp.add(b * NR + 4 * g)) });
            // Row kk of the panel is 8 bytes: the low nibbles are outputs 0..8, the high ones
            // 8..16 (`BlockSlice`'s layout).
            for i in 0..QK {
                let kk = b * QK + i;
                // SAFETY: row kk < kc of the Q4_1 slice holds NR / 2 = 8 bytes.
                let q = unsafe { vld1_u8(qp.add(kk * NR / 2)) };
                let q = vcombine_u8(vand_u8(q, vdup_n_u8(0x0f)), vshr_n_u8::<4>(q));
                let (lo, hi) = (vmovl_u8(vget_low_u8(q)), vmovl_high_u8(q));
                let ints = [
                    vmovl_u16(vget_low_u16(lo)),
                    vmovl_high_u16(lo),
                    vmovl_u16(vget_low_u16(hi)),
                    vmovl_high_u16(hi),
                ];
                // gguf-py's `d * q + m` in one fused multiply-add: `d · q` (an f16 times a
                // 4-bit integer) is exact in f32, so the one rounding is the add's.
                let wv: [float32x4_t; 4] =
                    std::array::from_fn(|g| vfmaq_f32(m[g], d[g], vcvtq_f32_u32(ints[g])));
                fma_rows!(kk, wv);
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
