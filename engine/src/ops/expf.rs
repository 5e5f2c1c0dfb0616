//! `f32::exp` over a whole slice, four or eight lanes at a time where that gives the same bits.
//!
//! Softmax and SwiGLU take an `exp` per score and per activation: 35 M and 24 M of them in a
//! 512-token prefill of SmolLM2-135M, a few nanoseconds each through the C library. Rust's
//! `f32::exp` calls the platform's `expf`; on x86-64 Linux that is glibc's (2.27 and later),
//! whose FMA build computes, in double precision:
//!
//! ```text
//! kd = fma(32/ln2, x, 0x1.8p52)      k = round(x·32/ln2), through the bits of kd
//! r  = fma(32/ln2, x, -(kd - 0x1.8p52))
//! s  = 2^(k/32)                      table T[k % 32] plus k's bits shifted into the exponent
//! y  = fma(fma(r, C0, C1), r·r, fma(r, C2, 1)) · s,   rounded to f32
//! ```
//!
//! [`exp_in_place`] does exactly that in vector registers: eight f64 lanes with AVX-512F (the
//! table held in four registers, read by permutes), else four with AVX2 + FMA (the table read
//! by a gather); lanes outside glibc's main path, `|x| ≥ 88`, infinities and NaN, go to the
//! scalar call. Whether this platform's `f32::exp` *is* that function is not assumed: the
//! first call checks the vector code against it on 2^18 inputs spread over the whole range,
//! and if a single bit differs (another C library, a build without FMA) that path is not
//! used, and without one every call is the scalar one. Either way the values are
//! `f32::exp`'s, so no result of the engine changes.

#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

/// Runs the one-time check of the vector `exp` now (2^18 values, a few milliseconds) rather
/// than inside the first prefill, where a trace would charge it to attention. The CPU backend
/// calls it when it is built.
pub fn prepare() {
    // No span: it runs once per process, whichever backend is built first, so a span would
    // appear in one trace and not the next.
    #[cfg(target_arch = "x86_64")]
    let _ = vector_is_exact();
}

/// `v[i] = v[i].exp()` for every element, bitwise `f32::exp`.
pub fn exp_in_place(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match vector_path() {
        // SAFETY: `vector_path` names a path only where its features were detected.
        Some(Path::Avx512) => return unsafe { avx512::exp_in_place(v) },
        // SAFETY: as above.
        Some(Path::Avx2) => return unsafe { avx2::exp_in_place(v) },
        None => {}
    }
    v.iter_mut().for_each(|x| *x = x.exp());
}

/// A vector version of the same steps.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Eight lanes of f64 in AVX-512F registers; the table read by two-register permutes.
    Avx512,
    /// Four lanes of f64 in AVX2 + FMA registers; the table read by a gather.
    Avx2,
}

/// Whether the vector `exp` gives `f32::exp`'s bits on this machine (checked once).
#[cfg(target_arch = "x86_64")]
pub fn vector_is_exact() -> bool {
    vector_path().is_some()
}

/// The fastest vector path this machine has that gives `f32::exp`'s bits on every check
/// input (checked once per process), if any.
#[cfg(target_arch = "x86_64")]
pub fn vector_path() -> Option<Path> {
    static PATH: OnceLock<Option<Path>> = OnceLock::new();
    *PATH.get_or_init(|| {
        let x = check_inputs();
        let want: Vec<u32> = x.iter().map(|v| v.exp().to_bits()).collect();
        let exact = |run: unsafe fn(&mut [f32])| {
            let mut y = x.clone();
            // SAFETY: each caller below passes a path whose features it detected.
            unsafe { run(&mut y) };
            y.iter().map(|v| v.to_bits()).eq(want.iter().copied())
        };
        if std::arch::is_x86_feature_detected!("avx512f") && exact(avx512::exp_in_place) {
            return Some(Path::Avx512);
        }
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if avx2 && exact(avx2::exp_in_place) {
            return Some(Path::Avx2);
        }
        None
    })
}

/// Inputs the check runs: 2^18 values from -110 to 95 (through the main path's whole range,
/// the subnormal results and both edges), each nudged by a few ulps, and the special values.
#[cfg(target_arch = "x86_64")]
fn check_inputs() -> Vec<f32> {
    let n = 1 << 18;
    let mut x: Vec<f32> = (0..n)
        .map(|i| {
            let v = -110.0 + 205.0 * i as f32 / n as f32;
            f32::from_bits(v.to_bits().wrapping_add((i % 7) as u32))
        })
        .collect();
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    x.extend([
        88.0, 88.72, 88.73, -87.3, -103.2, -103.97, -104.0, 1e-8, -1e-8,
    ]);
    x
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// glibc's `__exp2f_data`: `T[i] = asuint64(2^(i/32)) - (i << 47)`.
    pub(super) const T: [u64; 32] = [
        0x3ff0000000000000,
        0x3fefd9b0d3158574,
        0x3fefb5586cf9890f,
        0x3fef9301d0125b51,
        0x3fef72b83c7d517b,
        0x3fef54873168b9aa,
        0x3fef387a6e756238,
        0x3fef1e9df51fdee1,
        0x3fef06fe0a31b715,
        0x3feef1a7373aa9cb,
        0x3feedea64c123422,
        0x3feece086061892d,
        0x3feebfdad5362a27,
        0x3feeb42b569d4f82,
        0x3feeab07dd485429,
        0x3feea47eb03a5585,
        0x3feea09e667f3bcd,
        0x3fee9f75e8ec5f74,
        0x3feea11473eb0187,
        0x3feea589994cce13,
        0x3feeace5422aa0db,
        0x3feeb737b0cdc5e5,
        0x3feec49182a3f090,
        0x3feed503b23e255d,
        0x3feee89f995ad3ad,
        0x3feeff76f2fb5e47,
        0x3fef199bdd85529c,
        0x3fef3720dcef9069,
        0x3fef5818dcfba487,
        0x3fef7c97337b9b5f,
        0x3fefa4afa2a490da,
        0x3fefd0765b6e4540,
    ];
    /// `32 / ln 2`, the rounding shift `0x1.8p52`, and the polynomial's `C0, C1, C2`.
    pub(super) const INV_LN2_N: u64 = 0x40471547652b82fe;
    pub(super) const SHIFT: u64 = 0x4338000000000000;
    pub(super) const C: [u64; 3] = [0x3ebc6af84b912394, 0x3f2ebfce50fac4f3, 0x3f962e42ff0c52d6];

    /// See [`super::exp_in_place`]. Caller guarantees AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_in_place(v: &mut [f32]) {
        let d = |bits: u64| _mm256_set1_pd(f64::from_bits(bits));
        let (inv_ln2_n, shift, one) = (d(INV_LN2_N), d(SHIFT), _mm256_set1_pd(1.0));
        let (c0, c1, c2) = (d(C[0]), d(C[1]), d(C[2]));
        let (mask_11, top_main, low5) = (
            _mm_set1_epi32(0x7ff),
            _mm_set1_epi32(0x42a),
            _mm256_set1_epi64x(31),
        );
        let mut chunks = v.chunks_exact_mut(4);
        for x4 in &mut chunks {
            // SAFETY: x4 holds 4 floats.
            let x = unsafe { _mm_loadu_ps(x4.as_ptr()) };
            // glibc's `abstop = (asuint(x) >> 20) & 0x7ff`; above 0x42a, not the main path.
            let top = _mm_and_si128(_mm_srli_epi32::<20>(_mm_castps_si128(x)), mask_11);
            if _mm_movemask_epi8(_mm_cmpgt_epi32(top, top_main)) != 0 {
                x4.iter_mut().for_each(|x| *x = x.exp());
                continue;
            }
            let xd = _mm256_cvtps_pd(x);
            let kd = _mm256_fmadd_pd(inv_ln2_n, xd, shift);
            let ki = _mm256_castpd_si256(kd);
            let kd = _mm256_sub_pd(kd, shift);
            let r = _mm256_fmsub_pd(inv_ln2_n, xd, kd);
            // SAFETY: every index is masked to 0..32, inside T.
            let t = unsafe {
                _mm256_i64gather_epi64::<8>(T.as_ptr().cast(), _mm256_and_si256(ki, low5))
            };
            let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
            let z = _mm256_fmadd_pd(r, c0, c1);
            let r2 = _mm256_mul_pd(r, r);
            let y = _mm256_fmadd_pd(r, c2, one);
            let y = _mm256_mul_pd(_mm256_fmadd_pd(z, r2, y), s);
            // SAFETY: as for the load.
            unsafe { _mm_storeu_ps(x4.as_mut_ptr(), _mm256_cvtpd_ps(y)) };
        }
        chunks
            .into_remainder()
            .iter_mut()
            .for_each(|x| *x = x.exp());
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::avx2::{C, INV_LN2_N, SHIFT, T};

    /// See [`super::exp_in_place`]: the AVX2 steps eight lanes at a time, the 32-entry table
    /// held in four registers and read with two permutes and a blend instead of a gather.
    /// Caller guarantees AVX-512F (which includes FMA on 512-bit registers).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_in_place(v: &mut [f32]) {
        let d = |bits: u64| _mm512_set1_pd(f64::from_bits(bits));
        let (inv_ln2_n, shift, one) = (d(INV_LN2_N), d(SHIFT), _mm512_set1_pd(1.0));
        let (c0, c1, c2) = (d(C[0]), d(C[1]), d(C[2]));
        // SAFETY: T holds 32 u64s, four registers of eight.
        let t: [__m512i; 4] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_si512(T.as_ptr().add(8 * i).cast()) });
        let (mask_11, top_main) = (_mm256_set1_epi32(0x7ff), _mm256_set1_epi32(0x42a));
        let (low5, bit4) = (_mm512_set1_epi64(31), _mm512_set1_epi64(16));
        let mut chunks = v.chunks_exact_mut(8);
        for x8 in &mut chunks {
            // SAFETY: x8 holds 8 floats.
            let x = unsafe { _mm256_loadu_ps(x8.as_ptr()) };
            // glibc's `abstop = (asuint(x) >> 20) & 0x7ff`; above 0x42a, not the main path.
            let top = _mm256_and_si256(_mm256_srli_epi32::<20>(_mm256_castps_si256(x)), mask_11);
            if _mm256_movemask_epi8(_mm256_cmpgt_epi32(top, top_main)) != 0 {
                x8.iter_mut().for_each(|x| *x = x.exp());
                continue;
            }
            let xd = _mm512_cvtps_pd(x);
            let kd = _mm512_fmadd_pd(inv_ln2_n, xd, shift);
            let ki = _mm512_castpd_si512(kd);
            let kd = _mm512_sub_pd(kd, shift);
            let r = _mm512_fmsub_pd(inv_ln2_n, xd, kd);
            // T[ki % 32]: bits 0..3 pick one of 16 entries from a pair of registers, bit 4
            // picks the pair.
            let i = _mm512_and_si512(ki, low5);
            let lo = _mm512_permutex2var_epi64(t[0], i, t[1]);
            let hi = _mm512_permutex2var_epi64(t[2], i, t[3]);
            let tk = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(i, bit4), lo, hi);
            let s = _mm512_castsi512_pd(_mm512_add_epi64(tk, _mm512_slli_epi64::<47>(ki)));
            let z = _mm512_fmadd_pd(r, c0, c1);
            let r2 = _mm512_mul_pd(r, r);
            let y = _mm512_fmadd_pd(r, c2, one);
            let y = _mm512_mul_pd(_mm512_fmadd_pd(z, r2, y), s);
            // SAFETY: as for the load.
            unsafe { _mm256_storeu_ps(x8.as_mut_ptr(), _mm512_cvtpd_ps(y)) };
        }
        chunks
            .into_remainder()
            .iter_mut()
            .for_each(|x| *x = x.exp());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever path this machine takes, the values are `f32::exp`'s, specials included.
    #[test]
    fn bitwise_f32_exp() {
        let mut x: Vec<f32> = (0..20_000).map(|i| -120.0 + i as f32 * 0.0107).collect();
        x.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            88.9,
            -104.5,
        ]);
        let want: Vec<u32> = x.iter().map(|v| v.exp().to_bits()).collect();
        exp_in_place(&mut x);
        let got: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want);
    }

    /// The two vector versions implement the same steps, so they agree bit for bit with each
    /// other on every check input, whichever C library is underneath (the first-use check
    /// only picks the first that matches `f32::exp`, so a broken AVX2 path would otherwise go
    /// unnoticed on an AVX-512 machine).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_versions_agree() {
        let has = |f| match f {
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            _ => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
        };
        if !(has("avx512f") && has("avx2")) {
            eprintln!("skipped: this CPU has not both AVX-512F and AVX2 + FMA");
            return;
        }
        let (mut a, mut b) = (check_inputs(), check_inputs());
        // SAFETY: both feature sets were detected just above.
        unsafe {
            avx512::exp_in_place(&mut a);
            avx2::exp_in_place(&mut b);
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b));
    }

    /// On the machine these numbers were measured on (x86-64, glibc with FMA) the vector path
    /// is the one taken; elsewhere this only reports.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn reports_which_path() {
        eprintln!("vector exp here: {:?}", vector_path());
    }
}
