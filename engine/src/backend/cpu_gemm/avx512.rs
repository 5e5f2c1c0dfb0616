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

#[cfg(target_arch = "x86_64")]
use super::packed_blocks::{BlockSlice, QK};
#[cfg(target_arch = "x86_64")]
use super::PREFETCH_NEAR;

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
    ahead: usize, // floats ahead to prefetch w into L2; PREFETCH_NEAR bytes into L1 (0: none)
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
                $($r => unsafe { kernel::<$r>(c, x, x_stride, w, kc, first, ahead) },)*
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
    ahead: usize,
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
        // The weight stream's lines, asked for at two distances (see `PREFETCH_AHEAD`): far
        // ahead into L2, near ahead from there into L1. A prefetch never faults, so an
        // address past the slice (another panel's, or none) is harmless.
        if ahead > 0 {
            let far = wp.wrapping_add(kk * NR + ahead).cast::<i8>();
            _mm_prefetch::<_MM_HINT_T1>(far);
            _mm_prefetch::<_MM_HINT_T1>(far.wrapping_add(64));
            let near = wp.wrapping_add(kk * NR + PREFETCH_NEAR / 4).cast::<i8>();
            _mm_prefetch::<_MM_HINT_T0>(near);
            _mm_prefetch::<_MM_HINT_T0>(near.wrapping_add(64));
        }
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

/// [`tile`] from a weight in its blocks, dequantized in registers: per `k`, the panel's 32
/// quantized values are loaded (Q8_0: two 16-byte loads; Q4_1: one, of 32 nibbles), widened
/// to 32-bit lanes, converted to f32, multiplied by the block's scales (and, Q4_1, the minimum
/// added) and fed straight to the FMAs. Those are [`BlockSlice`]'s expressions, lane by lane, so the
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
    assert!(
        std::arch::is_x86_feature_detected!("avx512f"),
        "no AVX-512F"
    );
    assert!((1..=MR).contains(&rows) && c.len() >= rows * NR);
    assert!(kc.is_multiple_of(QK) && w.kc(NR) >= kc && x.len() >= (rows - 1) * x_stride + kc);
    macro_rules! run {
        ($($r:literal)*) => {
            match rows {
                // SAFETY: AVX-512F was detected just above, and the asserts bound every
                // access `kernel_blocks` makes: `rows` rows of `c` and `x`, `kc` rows of `w`.
                $($r => unsafe { kernel_blocks::<$r>(c, x, x_stride, w, kc, first, ahead) },)*
                _ => unreachable!(),
            }
        };
    }
    run!(1 2 3 4 5 6 7 8 9 10 11 12);
}

/// [`tile_blocks`] for exactly `R` tokens. Caller guarantees AVX-512F and the bounds
/// `tile_blocks` asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
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
    // The FMAs of one `k` for every token: the chains of `tile`, in the same order. (Macros,
    // not closures, so the intrinsics inline under this function's target feature.)
    macro_rules! fma_rows {
        ($kk:expr, $w0:expr, $w1:expr) => {
            let (kk, w0, w1) = ($kk, $w0, $w1);
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: r < R and kk < kc, inside x's (R - 1) * x_stride + kc floats.
                let xv = _mm512_set1_ps(unsafe { *xp.add(r * x_stride + kk) });
                a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
            }
        };
    }
    // 16 bytes at `q`, widened to 16 lanes of i32 (signed for Q8_0, unsigned for Q4_1).
    // SAFETY (both): every `q` passed has 16 bytes of the slice from it (half a Q8_0 row of 32,
    // or a whole Q4_1 row of 16).
    macro_rules! widen {
        (i8, $q:expr) => {
            _mm512_cvtepi8_epi32(unsafe { _mm_loadu_si128($q.cast()) })
        };
        (u8, $q:expr) => {
            _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128($q.cast()) })
        };
    }
    let low = _mm512_set1_epi32(0x0f);
    // Whole blocks ahead, at least one.
    let blocks_ahead = ahead.div_ceil(w.block_quant_bytes(NR));
    for b in 0..kc / QK {
        if ahead > 0 {
            w.prefetch(b + blocks_ahead, NR);
        }
        // SAFETY: block b < kc / 32 has NR scales (and minimums) in the slice.
        let d0 = unsafe { _mm512_loadu_ps(sp.add(b * NR)) };
        let d1 = unsafe { _mm512_loadu_ps(sp.add(b * NR + 16)) };
        if !w.q4 {
            for i in 0..QK {
                let kk = b * QK + i;
                let q = qp.wrapping_add(kk * NR); // row kk < kc of the Q8_0 slice
                let w0 = _mm512_mul_ps(d0, _mm512_cvtepi32_ps(widen!(i8, q)));
                let w1 = _mm512_mul_ps(d1, _mm512_cvtepi32_ps(widen!(i8, q.wrapping_add(16))));
                fma_rows!(kk, w0, w1);
            }
        } else {
            // SAFETY: as for the scales.
            let m0 = unsafe { _mm512_loadu_ps(mp.add(b * NR)) };
            let m1 = unsafe { _mm512_loadu_ps(mp.add(b * NR + 16)) };
            // Row kk of the panel is 16 bytes: the low nibbles are outputs 0..16, the high
            // ones 16..32 (`BlockSlice`'s layout), so one widening serves both halves.
            for i in 0..QK {
                let kk = b * QK + i;
                let q = widen!(u8, qp.wrapping_add(kk * NR / 2)); // row kk < kc of the slice
                let (q0, q1) = (_mm512_and_si512(q, low), _mm512_srli_epi32::<4>(q));
                // gguf-py's `d * q + m` in one FMA: `d · q` (an f16 times a 4-bit integer)
                // is exact in f32, so the one rounding is the add's, as in a multiply then
                // an add.
                let w0 = _mm512_fmadd_ps(d0, _mm512_cvtepi32_ps(q0), m0);
                let w1 = _mm512_fmadd_ps(d1, _mm512_cvtepi32_ps(q1), m1);
                fma_rows!(kk, w0, w1);
            }
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
