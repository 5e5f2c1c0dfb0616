//! `y = x · Wᵀ`: every projection of the model. Weights are stored as Hugging Face does,
//! `[out_features, in_features]`, row-major.
//!
//! One kernel for every batch size, written so that it is *batch invariant*: each output
//! element is computed by exactly the same sequence of floating-point operations whether its
//! token runs alone, in a batch of eight decodes, or inside a 600-token prefill chunk. That is
//! what lets the engine promise that batching, chunked prefill and preemption never change a
//! request's tokens (a blocked GEMM library changes its summation order with the batch shape).
//!
//! - decode (few tokens) is bound by reading the weights from memory: each weight row is
//!   streamed from memory once and multiplied with every token while it sits in L1 cache.
//! - prefill (many tokens) is bound by arithmetic: a tile of weight rows stays in L2 cache
//!   while all tokens pass over it, two rows by four tokens at a time (eight accumulators of
//!   eight lanes in AVX2 registers, two weight loads and four token loads per eight FMAs).
//!
//! The CPU backend no longer calls this kernel: it runs [`crate::backend::cpu_gemm`], which
//! packs the weights into panels and keeps one FMA chain per output (the same promise, about
//! twice as fast). This one stays as the unpacked, readable version of the idea.

use rayon::prelude::*;

// ANCHOR: linear
/// `out[t, n] = Σ_k x[t, k] · weight[n, k]` (+ `bias[n]`).
pub fn linear(
    out: &mut [f32],      // [num_tokens, out_features]
    x: &[f32],            // [num_tokens, in_features]
    weight: &[f32],       // [out_features, in_features]
    bias: Option<&[f32]>, // [out_features]
    num_tokens: usize,
) {
    if num_tokens == 0 {
        return;
    }
    let k = x.len() / num_tokens;
    let n = weight.len() / k;
    assert_eq!(out.len(), num_tokens * n, "linear: out has the wrong size");
    // Work in [n, t] so that each task owns a contiguous piece of the result.
    let mut out_t = vec![0.0f32; n * num_tokens];
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // x86 alone reads it
    let use_fma = fma_available();
    out_t
        .par_chunks_mut(ROWS_PER_TASK * num_tokens)
        .enumerate()
        .for_each(|(task, o)| {
            let rows = &weight[task * ROWS_PER_TASK * k..][..(o.len() / num_tokens) * k];
            #[cfg(target_arch = "x86_64")]
            if use_fma {
                // SAFETY: kernel-launch boundary; `fma_available` checked at run time that this
                // CPU has AVX2 and FMA, the only requirement of the target-feature function.
                unsafe { row_tile_avx2(o, x, rows, num_tokens, k) };
                return;
            }
            {
                row_tile(o, x, rows, num_tokens, k)
            }
        });
    for (r, row) in out_t.chunks(num_tokens).enumerate() {
        let b = bias.map_or(0.0, |b| b[r]);
        for (j, &v) in row.iter().enumerate() {
            out[j * n + r] = v + b;
        }
    }
}
// ANCHOR_END: linear

/// Weight rows per parallel task: 64 rows of 576..1536 floats (150..400 KB) stay in L2 while
/// every token passes over them, and 2..16 threads still get balanced work.
const ROWS_PER_TASK: usize = 64;

fn fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `row_tile` with the micro-kernel in AVX2 registers (see `micro_avx2`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_tile_avx2(out: &mut [f32], x: &[f32], rows: &[f32], t: usize, k: usize) {
    let num_rows = rows.len() / k;
    let mut j = 0;
    while j < t {
        let nt = (t - j).min(4);
        let mut r = 0;
        while r < num_rows {
            let nr = (num_rows - r).min(2);
            let w = &rows[r * k..(r + nr) * k];
            match (nr, nt) {
                (2, 4) => store(out, t, r, j, micro_avx2::<2, 4>(w, x, j, k)),
                (2, 3) => store(out, t, r, j, micro_avx2::<2, 3>(w, x, j, k)),
                (2, 2) => store(out, t, r, j, micro_avx2::<2, 2>(w, x, j, k)),
                (2, _) => store(out, t, r, j, micro_avx2::<2, 1>(w, x, j, k)),
                (_, 4) => store(out, t, r, j, micro_avx2::<1, 4>(w, x, j, k)),
                (_, 3) => store(out, t, r, j, micro_avx2::<1, 3>(w, x, j, k)),
                (_, 2) => store(out, t, r, j, micro_avx2::<1, 2>(w, x, j, k)),
                (_, _) => store(out, t, r, j, micro_avx2::<1, 1>(w, x, j, k)),
            }
            r += nr;
        }
        j += nt;
    }
}

/// `micro::<R, NT, true>` written with AVX2 intrinsics, because the compiler does not keep
/// the 2×4 accumulators of the portable version in registers. Same arithmetic, in the same
/// order: 8 lanes of fused multiply-adds over k, the fixed-tree lane sum, then the tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn micro_avx2<const R: usize, const NT: usize>(
    w: &[f32], // [R, k]
    x: &[f32], // [tokens, k]
    j0: usize,
    k: usize,
) -> [[f32; NT]; R] {
    use std::arch::x86_64::*;
    let w = &w[..R * k];
    let x = &x[j0 * k..(j0 + NT) * k];
    let main = k - k % 8;
    let mut acc = [[_mm256_setzero_ps(); NT]; R];
    let mut c = 0;
    while c < main {
        let mut xv = [_mm256_setzero_ps(); NT];
        for (i, xv) in xv.iter_mut().enumerate() {
            // SAFETY: kernel boundary. `x` was sliced to NT rows of k floats and
            // c + 8 <= main <= k, so the 8 floats read lie inside row i.
            *xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(i * k + c)) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: as above, for the R rows of k floats of `w`.
            let wv = unsafe { _mm256_loadu_ps(w.as_ptr().add(r * k + c)) };
            for (acc, xv) in acc.iter_mut().zip(xv.iter()) {
                *acc = _mm256_fmadd_ps(wv, *xv, *acc);
            }
        }
        c += 8;
    }
    let mut result = [[0.0f32; NT]; R];
    for r in 0..R {
        for i in 0..NT {
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds exactly 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][i]) };
            let tail: f32 = (main..k).map(|c| w[r * k + c] * x[i * k + c]).sum();
            result[r][i] = horizontal_sum(&lanes) + tail;
        }
    }
    result
}

/// `out[r, j] = rows[r] · x[j]` for every weight row `r` of the tile and every token `j`.
fn row_tile(out: &mut [f32], x: &[f32], rows: &[f32], t: usize, k: usize) {
    let num_rows = rows.len() / k;
    let mut j = 0;
    while j < t {
        let nt = (t - j).min(4);
        let mut r = 0;
        while r < num_rows {
            let nr = (num_rows - r).min(2);
            let w = &rows[r * k..(r + nr) * k];
            match (nr, nt) {
                (2, 4) => store(out, t, r, j, micro::<2, 4>(w, x, j, k)),
                (2, 3) => store(out, t, r, j, micro::<2, 3>(w, x, j, k)),
                (2, 2) => store(out, t, r, j, micro::<2, 2>(w, x, j, k)),
                (2, _) => store(out, t, r, j, micro::<2, 1>(w, x, j, k)),
                (_, 4) => store(out, t, r, j, micro::<1, 4>(w, x, j, k)),
                (_, 3) => store(out, t, r, j, micro::<1, 3>(w, x, j, k)),
                (_, 2) => store(out, t, r, j, micro::<1, 2>(w, x, j, k)),
                (_, _) => store(out, t, r, j, micro::<1, 1>(w, x, j, k)),
            }
            r += nr;
        }
        j += nt;
    }
}

#[inline(always)]
fn store<const R: usize, const NT: usize>(
    out: &mut [f32],
    t: usize,
    r: usize,
    j: usize,
    v: [[f32; NT]; R],
) {
    for (i, row) in v.iter().enumerate() {
        out[(r + i) * t + j..][..NT].copy_from_slice(row);
    }
}

/// Dot products of `R` weight rows with tokens `j0..j0 + NT`, eight lanes at a time (the
/// portable version, for CPUs without AVX2/FMA). Every (row, token) pair follows the same
/// operation order for any `R`, `NT`: batch invariance.
#[inline(always)]
fn micro<const R: usize, const NT: usize>(
    w: &[f32],
    x: &[f32],
    j0: usize,
    k: usize,
) -> [[f32; NT]; R] {
    let ws: [&[f32]; R] = std::array::from_fn(|i| &w[i * k..(i + 1) * k]);
    let xs: [&[f32]; NT] = std::array::from_fn(|i| &x[(j0 + i) * k..(j0 + i + 1) * k]);
    let mut acc = [[[0.0f32; 8]; NT]; R];
    let main = k - k % 8;
    for c in (0..main).step_by(8) {
        for (acc, w) in acc.iter_mut().zip(ws.iter()) {
            let wc = &w[c..c + 8];
            for (acc, xs) in acc.iter_mut().zip(xs.iter()) {
                let xc = &xs[c..c + 8];
                for l in 0..8 {
                    acc[l] += wc[l] * xc[l];
                }
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|i| {
            let tail: f32 = (main..k).map(|c| ws[r][c] * xs[i][c]).sum();
            horizontal_sum(&acc[r][i]) + tail
        })
    })
}

/// Sums eight lanes in a fixed tree order.
#[inline(always)]
fn horizontal_sum(a: &[f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// Plain dot product with eight partial sums (vectorizes without reassociation flags).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}
