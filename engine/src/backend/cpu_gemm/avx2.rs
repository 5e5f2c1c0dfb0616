//! The AVX2 + FMA micro-kernel: a register tile of `MR = 6` tokens × `NR = 16` outputs.
//!
//! AVX2 has 16 vector registers of 8 floats. The tile keeps 6 × 2 = 12 of them as
//! accumulators (token `r`, outputs `0..8` and `8..16`), 2 hold the panel's 16 weights of the
//! current `k`, and 1 the broadcast `x[r, k]`: 15 of 16. Per `k`, 2 weight loads and 6
//! broadcasts feed 12 FMAs, and 12 independent chains cover the FMA's latency (4 cycles) on
//! two FMA units. Each accumulator lane is one output's chain (see `cpu_gemm`'s module doc).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::packed_blocks::{BlockSlice, QK};
#[cfg(target_arch = "x86_64")]
use super::PREFETCH_NEAR;

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
    ahead: usize, // floats ahead to prefetch w into L2; PREFETCH_NEAR bytes into L1 (0: none)
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
                $($r => unsafe { kernel::<$r>(c, x, x_stride, w, kc, first, ahead) },)*
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
    ahead: usize,
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
        // The weight stream's line, asked for at two distances (see `PREFETCH_AHEAD`): far
        // ahead into L2, near ahead from there into L1. A prefetch never faults, so an
        // address past the slice (another panel's, or none) is harmless.
        if ahead > 0 {
            _mm_prefetch::<_MM_HINT_T1>(wp.wrapping_add(kk * NR + ahead).cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(kk * NR + PREFETCH_NEAR / 4).cast::<i8>());
        }
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

/// [`tile`] from a weight in its blocks, dequantized in registers: per `k`, the panel's 16
/// quantized values are loaded (two 8-byte loads), widened to 32-bit lanes, converted to f32,
/// multiplied by the block's scales (and, Q4_1, the minimum added: a separate add, not an FMA)
/// and fed straight to the FMAs. Those are [`BlockSlice`]'s expressions, lane by lane, so the
/// weights and every chain are the f32 path's, bit for bit; nothing is stored and read back.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub fn tile_blocks(
    c: &mut [f32], // [rows][NR]
    x: &[f32],     // row r, column kk at x[r * x_stride + kk]
    x_stride: usize,
    w: BlockSlice, // [kc][NR] in blocks
    rows: usize,
    kc: usize,
    first: bool,
    ahead: usize, // bytes of quants: prefetch the blocks this far ahead (0: never)
) {
    let has =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    assert!(has, "no AVX2 + FMA");
    assert!((1..=MR).contains(&rows) && c.len() >= rows * NR);
    assert!(kc.is_multiple_of(QK) && w.kc(NR) >= kc && x.len() >= (rows - 1) * x_stride + kc);
    macro_rules! run {
        ($($r:literal)*) => {
            match rows {
                // SAFETY: AVX2 and FMA were detected just above, and the asserts bound every
                // access `kernel_blocks` makes: `rows` rows of `c` and `x`, `kc` rows of `w`.
                $($r => unsafe { kernel_blocks::<$r>(c, x, x_stride, w, kc, first, ahead) },)*
                _ => unreachable!(),
            }
        };
    }
    run!(1 2 3 4 5 6);
}

/// [`tile_blocks`] for exactly `R` tokens. Caller guarantees AVX2 + FMA and the bounds
/// `tile_blocks` asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_blocks<const R: usize>(
    c: &mut [f32],
    x: &[f32],
    x_stride: usize,
    w: BlockSlice,
    kc: usize,
    first: bool,
    ahead: usize,
) {
    let (cp, xp) = (c.as_mut_ptr(), x.as_ptr());
    let (sp, mp, qp) = (w.scales.as_ptr(), w.mins.as_ptr(), w.quants.as_ptr());
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
    // The FMAs of one `k` for every token: the chains of `tile`, in the same order. (Macros,
    // not closures, so the intrinsics inline under this function's target feature.)
    macro_rules! fma_rows {
        ($kk:expr, $w0:expr, $w1:expr) => {
            let (kk, w0, w1) = ($kk, $w0, $w1);
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: r < R and kk < kc, inside x's (R - 1) * x_stride + kc floats.
                let xv = _mm256_set1_ps(unsafe { *xp.add(r * x_stride + kk) });
                a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
            }
        };
    }
    // 8 bytes at `q`, widened to 8 lanes of i32 (signed for Q8_0, unsigned for Q4_1).
    // SAFETY (both): every `q` passed has 8 bytes of the slice from it (half a Q8_0 row of 16,
    // or a whole Q4_1 row of 8).
    macro_rules! widen {
        (i8, $q:expr) => {
            _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64($q.cast()) })
        };
        (u8, $q:expr) => {
            _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64($q.cast()) })
        };
    }
    let low = _mm256_set1_epi32(0x0f);
    // Whole blocks ahead, at least one.
    let blocks_ahead = ahead.div_ceil(w.block_quant_bytes(NR));
    for b in 0..kc / QK {
        if ahead > 0 {
            w.prefetch(b + blocks_ahead, NR);
        }
        // SAFETY: block b < kc / 32 has NR scales (and minimums) in the slice.
        let d0 = unsafe { _mm256_loadu_ps(sp.add(b * NR)) };
        let d1 = unsafe { _mm256_loadu_ps(sp.add(b * NR + 8)) };
        if !w.q4 {
            for i in 0..QK {
                let kk = b * QK + i;
                let q = qp.wrapping_add(kk * NR); // row kk < kc of the Q8_0 slice
                let w0 = _mm256_mul_ps(d0, _mm256_cvtepi32_ps(widen!(i8, q)));
                let w1 = _mm256_mul_ps(d1, _mm256_cvtepi32_ps(widen!(i8, q.wrapping_add(8))));
                fma_rows!(kk, w0, w1);
            }
        } else {
            // SAFETY: as for the scales.
            let m0 = unsafe { _mm256_loadu_ps(mp.add(b * NR)) };
            let m1 = unsafe { _mm256_loadu_ps(mp.add(b * NR + 8)) };
            // Row kk of the panel is 8 bytes: the low nibbles are outputs 0..8, the high ones
            // 8..16 (`BlockSlice`'s layout), so one widening serves both halves.
            for i in 0..QK {
                let kk = b * QK + i;
                let q = widen!(u8, qp.wrapping_add(kk * NR / 2)); // row kk < kc of the slice
                let (q0, q1) = (_mm256_and_si256(q, low), _mm256_srli_epi32::<4>(q));
                // gguf-py's `d * q + m` in one FMA: `d · q` (an f16 times a 4-bit integer)
                // is exact in f32, so the one rounding is the add's, as in a multiply then
                // an add.
                let w0 = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(q0), m0);
                let w1 = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(q1), m1);
                fma_rows!(kk, w0, w1);
            }
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
