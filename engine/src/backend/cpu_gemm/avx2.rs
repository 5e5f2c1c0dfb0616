//! The AVX2 + FMA micro-kernel: a register tile of `MR = 6` tokens × `NR = 16` outputs.
//!
//! AVX2 has 16 vector registers of 8 floats. The tile keeps 6 × 2 = 12 of them as
//! accumulators (token `r`, outputs `0..8` and `8..16`), 2 hold the panel's 16 weights of the
//! current `k`, and 1 the broadcast `x[r, k]`: 15 of 16. Per `k`, 2 weight loads and 6
//! broadcasts feed 12 FMAs, and 12 independent chains cover the FMA's latency (4 cycles) on
//! two FMA units. Each accumulator lane is one output's chain (see `cpu_gemm`'s module doc).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output rows per panel (two vectors of 8).
pub const NR: usize = 16;
/// Tokens per tile.
pub const MR: usize = 6;

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
    let has =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    assert!(has, "no AVX2 + FMA");
    assert!((1..=MR).contains(&rows) && c.len() >= rows * NR && w.len() >= kc * NR);
    assert!(x.len() >= (rows - 1) * x_stride + kc);
    macro_rules! run {
        ($($r:literal)*) => {
            match rows {
                // SAFETY: AVX2 and FMA were detected just above, and the asserts bound every
                // access `kernel` makes: `rows` rows of `c` and `x`, `kc` rows of `w`.
                $($r => unsafe { kernel::<$r>(c, x, x_stride, w, kc, first) },)*
                _ => unreachable!(),
            }
        };
    }
    run!(1 2 3 4 5 6);
}

/// The tile for exactly `R` tokens. Caller guarantees AVX2 + FMA and the bounds `tile` asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize>(
    c: &mut [f32],
    x: &[f32],
    x_stride: usize,
    w: &[f32],
    kc: usize,
    first: bool,
) {
    let (cp, xp, wp) = (c.as_mut_ptr(), x.as_ptr(), w.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    if !first {
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: row r < R of c holds NR = 16 floats.
            unsafe {
                a[0] = _mm256_loadu_ps(cp.add(r * NR));
                a[1] = _mm256_loadu_ps(cp.add(r * NR + 8));
            }
        }
    }
    for kk in 0..kc {
        // SAFETY: kk < kc, and w holds kc rows of 16 floats.
        let (w0, w1) = unsafe {
            (
                _mm256_loadu_ps(wp.add(kk * NR)),
                _mm256_loadu_ps(wp.add(kk * NR + 8)),
            )
        };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and kk < kc, inside x's (R - 1) * x_stride + kc floats.
            let xv = _mm256_set1_ps(unsafe { *xp.add(r * x_stride + kk) });
            a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
            a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        // SAFETY: as for the loads of c.
        unsafe {
            _mm256_storeu_ps(cp.add(r * NR), a[0]);
            _mm256_storeu_ps(cp.add(r * NR + 8), a[1]);
        }
    }
}
