//! The AVX-512F micro-kernel: a register tile of `MR = 12` tokens × `NR = 32` outputs.
//!
//! AVX-512 has 32 vector registers of 16 floats. The tile keeps 12 × 2 = 24 of them as
//! accumulators (token `r`, outputs `0..16` and `16..32`), 2 hold the panel's 32 weights of
//! the current `k`, and 1 the broadcast `x[r, k]`. Per `k` that is 2 weight loads and 12
//! broadcasts for 24 FMAs (384 multiply-adds): the loads stay well under the two per cycle a
//! core issues, so the FMA units set the pace. Each accumulator lane is one output's chain
//! (see `cpu_gemm`'s module doc); a tile of fewer tokens runs fewer rows of the same chains.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output rows per panel (two vectors of 16).
pub const NR: usize = 32;
/// Tokens per tile.
pub const MR: usize = 12;

/// `c[r][j] = chain(c[r][j] or 0, x[r, 0..kc] · w[0..kc][j])` for `rows ≤ MR` tokens.
#[cfg(target_arch = "x86_64")]
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
    assert!(
        std::arch::is_x86_feature_detected!("avx512f"),
        "no AVX-512F"
    );
    assert!((1..=MR).contains(&rows) && c.len() >= rows * NR && w.len() >= kc * NR);
    assert!(x.len() >= (rows - 1) * x_stride + kc);
    macro_rules! run {
        ($($r:literal)*) => {
            match rows {
                // SAFETY: AVX-512F was detected just above, and the asserts bound every
                // access `kernel` makes: `rows` rows of `c` and `x`, `kc` rows of `w`.
                $($r => unsafe { kernel::<$r>(c, x, x_stride, w, kc, first) },)*
                _ => unreachable!(),
            }
        };
    }
    run!(1 2 3 4 5 6 7 8 9 10 11 12);
}

/// The tile for exactly `R` tokens. Caller guarantees AVX-512F and the bounds `tile` asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>(
    c: &mut [f32],
    x: &[f32],
    x_stride: usize,
    w: &[f32],
    kc: usize,
    first: bool,
) {
    let (cp, xp, wp) = (c.as_mut_ptr(), x.as_ptr(), w.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if !first {
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: row r < R of c holds NR = 32 floats.
            unsafe {
                a[0] = _mm512_loadu_ps(cp.add(r * NR));
                a[1] = _mm512_loadu_ps(cp.add(r * NR + 16));
            }
        }
    }
    for kk in 0..kc {
        // SAFETY: kk < kc, and w holds kc rows of 32 floats.
        let (w0, w1) = unsafe {
            (
                _mm512_loadu_ps(wp.add(kk * NR)),
                _mm512_loadu_ps(wp.add(kk * NR + 16)),
            )
        };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and kk < kc, inside x's (R - 1) * x_stride + kc floats.
            let xv = _mm512_set1_ps(unsafe { *xp.add(r * x_stride + kk) });
            a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
            a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        // SAFETY: as for the loads of c.
        unsafe {
            _mm512_storeu_ps(cp.add(r * NR), a[0]);
            _mm512_storeu_ps(cp.add(r * NR + 16), a[1]);
        }
    }
}
