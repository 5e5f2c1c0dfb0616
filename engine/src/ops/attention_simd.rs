//! The two inner loops of the CPU's paged attention, the scores `q · k` and the weighted sum
//! of values, in vector registers where the CPU has them, **bitwise** the plain loops.
//!
//! Bitwise, because attention's arithmetic is part of what the engine promises: every output
//! is computed in one fixed order whatever the batch, and the reference tests hold the greedy
//! tokens equal to transformers'. So the vector code does exactly the plain code's roundings,
//! in the same order, only several at a time. Every multiply-add is **fused** (one rounding,
//! `f32::mul_add`): it is one instruction instead of two on every CPU with FMA, and on a CPU
//! without it the plain loops stay exact (a slower library call).
//!
//! - a score is [`dot_fused`]: eight partial sums over the head's dimensions (`acc[l] =
//!   fma(q[8c+l], k[8c+l], acc[l])` for `c` in order), summed from lane 0 to lane 7, then
//!   times `scale`. For a decode row (a few query heads), with AVX + FMA, one register holds
//!   the eight partial sums of one key, and eight keys' registers are transposed so that one
//!   vertical add per lane position sums eight keys' lanes in order, at once. For a prefill's
//!   runs of rows the keys go the other way round: a block of keys is first copied
//!   dimension-major ([`TransposedKeys`]), so that one register holds one dimension of 16
//!   keys (AVX-512) or 8 (AVX); one register per partial sum then runs its chain (register
//!   `l` takes dimensions `l, l + 8, …`, the chains of lane `l`), and the adds from partial
//!   sum 0 to 7 are plain vertical adds, no transpose per key.
//! - an output is `Σ_p w[p] · v_p[d]` as a chain `o = fma(w[p], v_p[d], o)` in the order of
//!   `p`, then times `1 / Σ w`. Lanes are dimensions `d`: each lane is one output's chain.
//!   A chain waits for its previous fused multiply-add (4 cycles), so with 16-float registers
//!   one head of 64 dimensions (4 chains per key) would leave the FMA units idle half the
//!   time: [`Simd::add_weighted_values_heads`] runs several heads' chains side by side.
//!
//! The plain loops ([`scores_portable`], [`add_weighted_values_portable`]) run on other CPUs
//! and when the head size is not a multiple of 8; `tests` check that every version agrees bit
//! for bit with them.

use std::ops::Range;

/// `Σ_i a[i] · b[i]` as attention's scores define it: lane `l` of eight is the fused chain
/// `acc[l] = fma(a[8c+l], b[8c+l], acc[l])` over `c` in order, the lanes are then added from
/// 0 to 7 onto the empty sum, and a tail of fewer than eight (heads not a multiple of 8) is
/// one more fused chain from the empty sum, added last.
#[inline(always)]
pub fn dot_fused(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .fold(empty_sum(), |s, (x, y)| x.mul_add(*y, s));
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    acc.iter().fold(empty_sum(), |s, &a| s + a) + tail
}

/// What `[f32]::iter().sum()` starts from (and the sum of no terms, `-0.0`): the lanes of
/// [`dot_fused`] are added onto it, as a `sum()` would, so the vector code starts there too.
fn empty_sum() -> f32 {
    std::iter::empty::<f32>().sum()
}

/// The tiles in which the vector versions score a row's query heads against a block of keys
/// copied dimension-major: `(h0, h, g0, g)` for heads `h0..h0 + h` (at most `max_heads` a
/// tile) against groups `g0..g0 + g` of keys (at most `per_pass(h)` a tile), heads in the
/// outer loop, every (head, group) exactly once. AVX and AVX-512 walk them alike and differ
/// only in those limits (how many accumulators their registers hold).
fn score_tiles(
    heads: usize,
    groups: usize,
    max_heads: usize,
    per_pass: impl Fn(usize) -> usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let (mut h0, mut g0) = (0, 0);
    std::iter::from_fn(move || {
        if groups == 0 || h0 >= heads {
            return None;
        }
        let h = (heads - h0).min(max_heads);
        let g = (groups - g0).min(per_pass(h));
        let tile = (h0, h, g0, g);
        g0 += g;
        if g0 >= groups {
            (h0, g0) = (h0 + h, 0);
        }
        Some(tile)
    })
}

/// Where each key (and its value) starts in one layer's caches, checked once to leave a whole
/// head inside both, so the vector loops read inside the caches without checking again.
#[derive(Debug, Clone, Copy)]
pub struct KeyRows<'a> {
    rows: &'a [usize],
    head_dim: usize,
    cache_len: usize,
}

impl<'a> KeyRows<'a> {
    /// Panics unless every `row + head_dim <= cache_len`.
    pub fn new(rows: &'a [usize], head_dim: usize, cache_len: usize) -> KeyRows<'a> {
        let end = rows.iter().map(|&r| r + head_dim).max().unwrap_or(0);
        assert!(
            end <= cache_len,
            "a key ends at {end}, past the cache's {cache_len}"
        );
        KeyRows {
            rows,
            head_dim,
            cache_len,
        }
    }

    /// Keys `range` of these.
    pub fn slice(self, range: Range<usize>) -> KeyRows<'a> {
        KeyRows {
            rows: &self.rows[range],
            ..self
        }
    }

    /// How many keys.
    pub fn len(self) -> usize {
        self.rows.len()
    }

    /// No keys.
    pub fn is_empty(self) -> bool {
        self.rows.is_empty()
    }

    /// The bounds the loops rely on, for a `cache` and a head `v` of `head_dim` floats.
    fn check(self, cache: &[f32], head: &[f32]) {
        assert!(
            cache.len() >= self.cache_len,
            "the keys were checked on a larger cache"
        );
        assert_eq!(
            head.len(),
            self.head_dim,
            "a head of {} floats",
            self.head_dim
        );
    }
}

/// Which version of the loops a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// x86-64 AVX-512F (16 floats a register); heads of a multiple of 16 dimensions. Its
    /// scores read keys through [`TransposedKeys`].
    Avx512,
    /// x86-64 AVX with FMA (8 floats a register); heads of a multiple of 8 dimensions.
    Avx,
    /// Plain Rust, any CPU and any head size.
    Portable,
}

impl Simd {
    /// The fastest version this CPU runs for heads of `head_dim`.
    pub fn detect(head_dim: usize) -> Simd {
        Simd::available(head_dim)[0]
    }

    /// Every version this CPU runs for heads of `head_dim`, fastest first (the tests run
    /// them all).
    pub fn available(head_dim: usize) -> Vec<Simd> {
        let mut versions = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if head_dim.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx512f") {
                versions.push(Simd::Avx512);
            }
            if head_dim.is_multiple_of(8)
                && std::arch::is_x86_feature_detected!("avx")
                && std::arch::is_x86_feature_detected!("fma")
            {
                versions.push(Simd::Avx);
            }
        }
        let _ = head_dim;
        versions.push(Simd::Portable);
        versions
    }

    /// Whether this version's scores are fastest through [`TransposedKeys`] when `heads`
    /// query heads read each block of keys. The copy costs a gather per 16 keys and
    /// dimension with AVX-512 (an 8 × 8 transpose in registers per 8 keys and 8 dimensions
    /// with AVX), about what 16 keys' scores for 8 heads cost, so it pays for a prefill's
    /// runs of rows and not for a decode's single row (whose keys [`Simd::scores`] reads in
    /// place, 8 lanes at a time).
    pub fn transposes_keys(self, heads: usize) -> bool {
        matches!(self, Simd::Avx512 | Simd::Avx) && heads >= 8
    }

    /// `scores[p] = dot_fused(q, key_cache[rows[p]..][..head_dim]) * scale`.
    pub fn scores(
        self,
        scores: &mut [f32], // [rows.len()]
        q: &[f32],          // [head_dim]: one query head
        key_cache: &[f32],  // one layer's keys
        rows: KeyRows,
        scale: f32,
    ) {
        rows.check(key_cache, q);
        assert_eq!(scores.len(), rows.len(), "one score per key");
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx` comes from `available`, which saw AVX, FMA and a head size of
            // 8s; `check` and `KeyRows::new` bound every key inside the cache.
            Simd::Avx => unsafe { avx::scores(scores, q, key_cache, rows.rows, scale) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F includes AVX and FMA, and a head of 16s is one of 8s; the rows
            // are bounded as above. (Without a copy of the keys the 8-lane loop is the
            // fastest: see `transposes_keys`.)
            Simd::Avx512 => unsafe { avx::scores(scores, q, key_cache, rows.rows, scale) },
            _ => scores_portable(scores, q, key_cache, rows.rows, scale),
        }
    }

    /// [`Simd::scores`] for several query heads of one KV head, `q` `[heads, head_dim]`:
    /// head `h`'s scores go to `scores[h * stride..][..rows.len()]`, [`Simd::scores`]' bits.
    /// With AVX-512 (and its VL extension, for 32 registers of 8 floats) each key is loaded
    /// once for up to three heads: a decode row's query heads of one KV head (GQA) share
    /// every load, where one head at a time loaded each key once per head.
    #[allow(clippy::too_many_arguments)]
    pub fn scores_heads(
        self,
        scores: &mut [f32], // [heads][stride]
        stride: usize,
        q: &[f32], // [heads, head_dim]
        key_cache: &[f32],
        rows: KeyRows,
        scale: f32,
    ) {
        let head_dim = rows.head_dim;
        assert!(head_dim > 0 && q.len().is_multiple_of(head_dim));
        let heads = q.len() / head_dim;
        assert!(heads == 0 || (heads - 1) * stride + rows.len() <= scores.len());
        match self {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 if heads > 1 && std::arch::is_x86_feature_detected!("avx512vl") => {
                rows.check(key_cache, &q[..head_dim]);
                // SAFETY: `Avx512` comes from `available`, which saw AVX-512F (every CPU with
                // it has AVX and FMA) and a head size of 16s; AVX-512VL was detected just
                // above; `check` bounds every row, the asserts every head's query and scores.
                unsafe {
                    avx::scores_heads(scores, stride, q, head_dim, key_cache, rows.rows, scale)
                }
            }
            _ => {
                for (h, qh) in q.chunks_exact(head_dim).enumerate() {
                    let sc = &mut scores[h * stride..][..rows.len()];
                    self.scores(sc, qh, key_cache, rows, scale);
                }
            }
        }
    }

    /// `out[d] = fma(w[p], value_cache[rows[p] + d], out[d])` for `p` in order: each
    /// element's chain goes on from the value `out` holds (zeros for a first block of keys).
    pub fn add_weighted_values(
        self,
        out: &mut [f32],     // [head_dim]: one query head's output so far
        w: &[f32],           // [rows.len()]
        value_cache: &[f32], // one layer's values
        rows: KeyRows,
    ) {
        rows.check(value_cache, out);
        assert_eq!(w.len(), rows.len(), "one weight per key");
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as for `scores`.
            Simd::Avx => unsafe { avx::add_weighted_values(out, w, value_cache, rows.rows) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512` comes from `available`, which saw AVX-512F and a head size of
            // 16s; the rows are bounded as for `scores`.
            Simd::Avx512 => unsafe { avx512::add_weighted_values(out, w, value_cache, rows.rows) },
            _ => add_weighted_values_portable(out, w, value_cache, rows.rows),
        }
    }

    /// [`Simd::add_weighted_values`] for `heads` heads over the same keys at once: head `h`'s
    /// output is `out[h * head_dim..][..head_dim]` and its weights `w[h * w_stride..]
    /// [..rows.len()]`. Each head's chains are exactly the single head's; AVX-512 runs
    /// several heads' chains side by side so that the FMA units are not waiting on one chain.
    pub fn add_weighted_values_heads(
        self,
        out: &mut [f32], // [heads, head_dim]
        w: &[f32],       // [heads][w_stride], the first rows.len() of each used
        w_stride: usize,
        value_cache: &[f32],
        rows: KeyRows,
    ) {
        let head_dim = rows.head_dim;
        assert!(head_dim > 0 && out.len().is_multiple_of(head_dim));
        let heads = out.len() / head_dim;
        assert!(heads == 0 || (heads - 1) * w_stride + rows.len() <= w.len());
        match self {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => {
                rows.check(value_cache, &out[..head_dim.min(out.len())]);
                // SAFETY: `Avx512` comes from `available` (AVX-512F, a head size of 16s);
                // `check` bounds every row, and the asserts every head's weights.
                unsafe { avx512::add_weighted_values_heads(out, w, w_stride, value_cache, rows) }
            }
            _ => {
                for (h, o) in out.chunks_exact_mut(head_dim).enumerate() {
                    let w = &w[h * w_stride..][..rows.len()];
                    self.add_weighted_values(o, w, value_cache, rows);
                }
            }
        }
    }
}

/// A block of keys copied dimension-major, `[head_dim][stride]` (`stride` = the keys rounded
/// up to 16, the extra keys zero), for the vector versions' scores: one vector load then holds
/// one dimension of 16 keys (AVX-512) or 8 (AVX). Filled once per block of keys and read by
/// every query head of the block's task.
#[derive(Debug, Default)]
pub struct TransposedKeys {
    data: Vec<f32>, // [head_dim][stride]
    len: usize,
    stride: usize,
    head_dim: usize,
}

impl TransposedKeys {
    /// Copies the keys at `rows` of `key_cache`, dimension-major.
    pub fn fill(&mut self, key_cache: &[f32], rows: KeyRows) {
        assert!(
            key_cache.len() >= rows.cache_len,
            "the keys were checked on a larger cache"
        );
        let (n, head_dim) = (rows.len(), rows.head_dim);
        let stride = n.next_multiple_of(16);
        self.data.clear();
        self.data.resize(head_dim * stride, 0.0);
        (self.len, self.stride, self.head_dim) = (n, stride, head_dim);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && rows.cache_len <= i32::MAX as usize {
            // SAFETY: AVX-512F was detected; `KeyRows::new` bounds every key inside the
            // first `cache_len` floats of the cache (asserted at least that long above), and
            // those offsets fit the gather's 32-bit indices.
            return unsafe {
                avx512::transpose(&mut self.data, stride, key_cache, rows.rows, head_dim)
            };
        }
        #[cfg(target_arch = "x86_64")]
        if head_dim.is_multiple_of(8) && std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX was detected and the head is whole eights; `KeyRows::new` bounds
            // every key inside the first `cache_len` floats of the cache, and `data` holds
            // `head_dim` rows of `stride` (a multiple of 16) floats.
            return unsafe {
                avx::transpose(&mut self.data, stride, key_cache, rows.rows, head_dim)
            };
        }
        for (p, &row) in rows.rows.iter().enumerate() {
            for (d, &k) in key_cache[row..][..head_dim].iter().enumerate() {
                self.data[d * stride + p] = k;
            }
        }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `scores[p] = dot_fused(q, key p) * scale` for the block's first `scores.len()` keys, bitwise
    /// [`scores_portable`]; with [`Simd::Portable`], the plain loop over the
    /// copied keys.
    pub fn scores(&self, simd: Simd, scores: &mut [f32], q: &[f32], scale: f32) {
        assert!(scores.len() <= self.len, "more scores than keys");
        assert_eq!(q.len(), self.head_dim, "a head of {} floats", self.head_dim);
        match simd {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512` comes from `available` (AVX-512F, a head size of 16s), and
            // `data` holds `head_dim` rows of `stride >= scores.len()` keys (asserted above).
            Simd::Avx512 => unsafe { avx512::scores(scores, q, &self.data, self.stride, scale) },
            #[cfg(target_arch = "x86_64")]
            Simd::Avx => self.scores_heads(simd, scores, 0, q, scores.len(), scale),
            _ => {
                let mut k = vec![0.0; self.head_dim];
                for (p, s) in scores.iter_mut().enumerate() {
                    for (d, k) in k.iter_mut().enumerate() {
                        *k = self.data[d * self.stride + p];
                    }
                    *s = dot_fused(q, &k) * scale;
                }
            }
        }
    }
}

impl TransposedKeys {
    /// [`TransposedKeys::scores`] for several query heads over the block's first `n` keys, `q`
    /// `[heads, head_dim]`: head `h`'s scores go to `scores[h * stride..][..n]`, the same bits
    /// as one call per head. With AVX-512 each 16 keys' dimension is loaded once for up to
    /// four heads (a prefill row's query heads of one KV head), with AVX each 8 keys' for up
    /// to three, where one call per head loaded it once per head: a load and a broadcast per
    /// FMA, more than the load ports give.
    pub fn scores_heads(
        &self,
        simd: Simd,
        scores: &mut [f32], // [heads][stride]
        stride: usize,
        q: &[f32], // [heads, head_dim]
        n: usize,
        scale: f32,
    ) {
        let head_dim = self.head_dim;
        assert!(n <= self.len, "more scores than keys");
        assert!(
            head_dim > 0 && q.len().is_multiple_of(head_dim),
            "whole heads"
        );
        let heads = q.len() / head_dim;
        assert!(heads == 0 || (heads - 1) * stride + n <= scores.len());
        match simd {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512` comes from `available` (AVX-512F, a head size of 16s); `data`
            // holds `head_dim` rows of `self.stride >= n` keys, a multiple of 16 (`fill`), and
            // the asserts above keep every head's query and scores inside `q` and `scores`.
            Simd::Avx512 => unsafe {
                avx512::scores_heads(
                    scores.as_mut_ptr(),
                    stride,
                    q,
                    head_dim,
                    &self.data,
                    self.stride,
                    n,
                    scale,
                )
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx` comes from `available` (AVX and FMA, a head size of 8s); `data`
            // holds `head_dim` rows of `self.stride >= n` keys, a multiple of 16 (`fill`), and
            // the asserts above keep every head's query and scores inside `q` and `scores`.
            Simd::Avx => unsafe {
                avx::scores_heads_transposed(
                    scores.as_mut_ptr(),
                    stride,
                    q,
                    head_dim,
                    &self.data,
                    self.stride,
                    n,
                    scale,
                )
            },
            _ => {
                for (h, qh) in q.chunks_exact(head_dim).enumerate() {
                    self.scores(simd, &mut scores[h * stride..][..n], qh, scale);
                }
            }
        }
    }
}

/// [`Simd::scores`] in plain Rust.
pub fn scores_portable(
    scores: &mut [f32], // [rows.len()]
    q: &[f32],          // [head_dim]
    key_cache: &[f32],
    rows: &[usize],
    scale: f32,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: FMA was detected just above.
        return unsafe { with_fma::scores(scores, q, key_cache, rows, scale) };
    }
    scores_plain(scores, q, key_cache, rows, scale)
}

/// [`Simd::add_weighted_values`] in plain Rust.
pub fn add_weighted_values_portable(
    out: &mut [f32], // [head_dim]
    w: &[f32],       // [rows.len()]
    value_cache: &[f32],
    rows: &[usize],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: FMA was detected just above.
        return unsafe { with_fma::add_weighted_values(out, w, value_cache, rows) };
    }
    add_weighted_values_plain(out, w, value_cache, rows)
}

#[inline(always)]
fn scores_plain(scores: &mut [f32], q: &[f32], key_cache: &[f32], rows: &[usize], scale: f32) {
    for (s, &row) in scores.iter_mut().zip(rows) {
        *s = dot_fused(q, &key_cache[row..][..q.len()]) * scale;
    }
}

#[inline(always)]
fn add_weighted_values_plain(out: &mut [f32], w: &[f32], value_cache: &[f32], rows: &[usize]) {
    for (&wp, &row) in w.iter().zip(rows) {
        let v = &value_cache[row..][..out.len()];
        out.iter_mut()
            .zip(v)
            .for_each(|(o, &v)| *o = wp.mul_add(v, *o));
    }
}

/// The plain loops compiled for x86-64 with FMA: there `f32::mul_add` is one instruction,
/// where a build for baseline x86-64 calls the C library's `fmaf` (exact, but about thirty
/// times slower). Same code, same bits.
#[cfg(target_arch = "x86_64")]
mod with_fma {
    #[target_feature(enable = "fma")]
    pub unsafe fn scores(s: &mut [f32], q: &[f32], keys: &[f32], rows: &[usize], scale: f32) {
        super::scores_plain(s, q, keys, rows, scale)
    }

    #[target_feature(enable = "fma")]
    pub unsafe fn add_weighted_values(o: &mut [f32], w: &[f32], values: &[f32], rows: &[usize]) {
        super::add_weighted_values_plain(o, w, values, rows)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    use super::{dot_fused, empty_sum};

    /// See [`super::Simd::scores`]. Caller guarantees AVX and FMA, `q.len() % 8 == 0` and
    /// every `rows[p] + q.len() <= key_cache.len()`.
    #[target_feature(enable = "avx,fma")]
    pub unsafe fn scores(
        scores: &mut [f32],
        q: &[f32],
        key_cache: &[f32],
        rows: &[usize],
        scale: f32,
    ) {
        let (n, head_dim) = (rows.len(), q.len());
        let kp = key_cache.as_ptr();
        let (zero, scale_v) = (_mm256_set1_ps(empty_sum()), _mm256_set1_ps(scale));
        let mut p = 0;
        while p + 8 <= n {
            // acc[j] = key p + j's eight partial sums, dimensions in `dot_fused`'s order.
            let mut acc = [_mm256_setzero_ps(); 8];
            for c in 0..head_dim / 8 {
                // SAFETY: 8c + 8 <= head_dim, and rows[p + j] + head_dim <= the cache.
                let qv = unsafe { _mm256_loadu_ps(q.as_ptr().add(8 * c)) };
                for (j, a) in acc.iter_mut().enumerate() {
                    let kv = unsafe { _mm256_loadu_ps(kp.add(rows[p + j] + 8 * c)) };
                    *a = _mm256_fmadd_ps(qv, kv, *a);
                }
            }
            // Then the empty tail of a head of 8s, as `dot_fused` adds it.
            let s = _mm256_add_ps(sum_lanes_in_order(acc, zero), zero);
            // SAFETY: p + 8 <= n = scores.len().
            unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(p), _mm256_mul_ps(s, scale_v)) };
            p += 8;
        }
        for (s, &row) in scores[p..].iter_mut().zip(&rows[p..]) {
            *s = dot_fused(q, &key_cache[row..][..head_dim]) * scale;
        }
    }

    /// [`scores`] for `H` query heads of one KV head at once: each key's chunk is loaded
    /// once and multiplied into every head's partial sums (`8 · H` accumulators, so `H > 1`
    /// needs AVX-512VL's 32 registers). Head `h`'s scores go to `scores[h * stride..]`, its
    /// query is `q[h * head_dim..]`; every score is [`scores`]' bits.
    #[inline(always)]
    unsafe fn scores_heads_body<const H: usize>(
        scores: *mut f32, // [H][stride]
        stride: usize,
        q: &[f32], // [H, head_dim]
        key_cache: &[f32],
        rows: &[usize],
        scale: f32,
    ) {
        let (n, head_dim) = (rows.len(), q.len() / H);
        let kp = key_cache.as_ptr();
        let (zero, scale_v) = (_mm256_set1_ps(empty_sum()), _mm256_set1_ps(scale));
        let mut p = 0;
        while p + 8 <= n {
            let mut acc = [[_mm256_setzero_ps(); 8]; H];
            let key: [*const f32; 8] = std::array::from_fn(|j| kp.wrapping_add(rows[p + j]));
            for c in 0..head_dim / 8 {
                let qv: [__m256; H] = std::array::from_fn(|h| {
                    // SAFETY: h * head_dim + 8c + 8 <= q.len().
                    unsafe { _mm256_loadu_ps(q.as_ptr().add(h * head_dim + 8 * c)) }
                });
                for (j, &k) in key.iter().enumerate() {
                    // SAFETY: rows[p + j] + head_dim <= the cache (the caller's bound).
                    let kv = unsafe { _mm256_loadu_ps(k.add(8 * c)) };
                    for h in 0..H {
                        acc[h][j] = _mm256_fmadd_ps(qv[h], kv, acc[h][j]);
                    }
                }
            }
            for (h, acc) in acc.into_iter().enumerate() {
                let s = _mm256_add_ps(sum_lanes_in_order(acc, zero), zero);
                // SAFETY: p + 8 <= n <= stride, head h's row inside the caller's scores.
                unsafe { _mm256_storeu_ps(scores.add(h * stride + p), _mm256_mul_ps(s, scale_v)) };
            }
            p += 8;
        }
        for h in 0..H {
            let qh = &q[h * head_dim..][..head_dim];
            for (i, &row) in rows.iter().enumerate().skip(p) {
                // SAFETY: i < n <= stride.
                unsafe {
                    *scores.add(h * stride + i) =
                        dot_fused(qh, &key_cache[row..][..head_dim]) * scale
                };
            }
        }
    }

    /// [`scores_heads_body`] for up to 3 heads with AVX-512's registers.
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub unsafe fn scores_heads(
        scores: &mut [f32], // [heads][stride]
        stride: usize,
        q: &[f32], // [heads, head_dim]
        head_dim: usize,
        key_cache: &[f32],
        rows: &[usize],
        scale: f32,
    ) {
        let heads = q.len() / head_dim;
        assert!(heads == 0 || (heads - 1) * stride + rows.len() <= scores.len());
        let mut h0 = 0;
        while h0 < heads {
            let h = (heads - h0).min(3);
            let (qh, out) = (
                &q[h0 * head_dim..][..h * head_dim],
                scores[h0 * stride..].as_mut_ptr(),
            );
            // SAFETY: heads h0..h0 + h have their scores inside `scores` (asserted) and
            // their queries in `qh`; the rows are the caller's.
            unsafe {
                match h {
                    1 => scores_heads_body::<1>(out, stride, qh, key_cache, rows, scale),
                    2 => scores_heads_body::<2>(out, stride, qh, key_cache, rows, scale),
                    _ => scores_heads_body::<3>(out, stride, qh, key_cache, rows, scale),
                }
            }
            h0 += h;
        }
    }

    /// Lane `j` of the result is `((z + a_j[0]) + a_j[1]) + … + a_j[7]`: an 8 × 8 transpose,
    /// then seven vertical adds, lane 0 first.
    #[inline]
    #[target_feature(enable = "avx")]
    fn sum_lanes_in_order(a: [__m256; 8], z: __m256) -> __m256 {
        transpose8(a).iter().fold(z, |s, &l| _mm256_add_ps(s, l))
    }

    /// Register `i` of the result holds lane `i` of `a[0..8]`, in that order.
    #[inline]
    #[target_feature(enable = "avx")]
    fn transpose8(a: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(a[0], a[1]);
        let t1 = _mm256_unpackhi_ps(a[0], a[1]);
        let t2 = _mm256_unpacklo_ps(a[2], a[3]);
        let t3 = _mm256_unpackhi_ps(a[2], a[3]);
        let t4 = _mm256_unpacklo_ps(a[4], a[5]);
        let t5 = _mm256_unpackhi_ps(a[4], a[5]);
        let t6 = _mm256_unpacklo_ps(a[6], a[7]);
        let t7 = _mm256_unpackhi_ps(a[6], a[7]);
        // u_i: lane i of keys 0..4 in the low half, lane i + 4 in the high half.
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// `keys[d * stride + p] = key_cache[rows[p] + d]`, eight keys' eight dimensions at a
    /// time: eight loads, an 8 × 8 transpose in registers ([`transpose8`]; AVX has no fast
    /// gather), eight stores. Keys past the last of a group of eight are zeros. Caller
    /// guarantees AVX, `head_dim` a multiple of 8, `keys` of `head_dim * stride` floats with
    /// `stride` a multiple of 8 and at least `rows.len()`, and every `rows[p] + head_dim` at
    /// most `key_cache.len()`.
    #[target_feature(enable = "avx")]
    pub unsafe fn transpose(
        keys: &mut [f32], // [head_dim][stride]
        stride: usize,
        key_cache: &[f32],
        rows: &[usize], // [n]
        head_dim: usize,
    ) {
        assert!(keys.len() >= head_dim * stride && stride >= rows.len());
        assert!(stride.is_multiple_of(8) && head_dim.is_multiple_of(8));
        let (kp, out) = (key_cache.as_ptr(), keys.as_mut_ptr());
        for (p0, group) in (0..rows.len()).step_by(8).zip(rows.chunks(8)) {
            for c in 0..head_dim / 8 {
                let v: [__m256; 8] = std::array::from_fn(|j| match group.get(j) {
                    // SAFETY: rows[p] + 8c + 8 <= rows[p] + head_dim <= the cache.
                    Some(&r) => unsafe { _mm256_loadu_ps(kp.add(r + 8 * c)) },
                    None => _mm256_setzero_ps(),
                });
                for (l, t) in transpose8(v).into_iter().enumerate() {
                    // SAFETY: 8c + l < head_dim and p0 + 8 <= stride.
                    unsafe { _mm256_storeu_ps(out.add((8 * c + l) * stride + p0), t) };
                }
            }
        }
    }

    /// Scores of `H` query heads for `8 · G` keys from `p` (the last of them masked at `n`),
    /// the keys dimension-major: [`super::avx512`]'s tile with registers of 8 keys. Partial
    /// sum `l` of `dot_fused` is one accumulator per (head, 8 keys), finished before `l + 1`
    /// begins and added onto a running sum, so `H · G` pairs take `2 · H · G` of the 16
    /// registers, `G` more the keys and one the broadcast query value: up to 6 pairs.
    #[inline]
    #[target_feature(enable = "avx,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores_tile<const H: usize, const G: usize>(
        sc: *mut f32, // head h's score of key p at sc + h * sc_stride + p
        sc_stride: usize,
        q: *const f32, // [H, head_dim]
        head_dim: usize,
        keys: *const f32, // [head_dim][stride]
        stride: usize,
        p: usize,
        n: usize,
        scale: f32,
    ) {
        let z = _mm256_set1_ps(empty_sum());
        let mut sum = [[z; G]; H];
        for l in 0..8 {
            let mut acc = [[_mm256_setzero_ps(); G]; H];
            for c in 0..head_dim / 8 {
                let d = 8 * c + l;
                // SAFETY: d < head_dim and p + 8 * G <= stride (the caller's bounds).
                let k: [__m256; G] = std::array::from_fn(|g| unsafe {
                    _mm256_loadu_ps(keys.add(d * stride + p + 8 * g))
                });
                for (h, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: head h < H of q holds head_dim floats.
                    let qd = _mm256_set1_ps(unsafe { *q.add(h * head_dim + d) });
                    for (a, &k) in acc.iter_mut().zip(&k) {
                        *a = _mm256_fmadd_ps(qd, k, *a);
                    }
                }
            }
            for (s, a) in sum.iter_mut().zip(&acc) {
                for (s, &a) in s.iter_mut().zip(a) {
                    *s = _mm256_add_ps(*s, a);
                }
            }
        }
        let (scale_v, lane) = (
            _mm256_set1_ps(scale),
            _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0),
        );
        for (h, s) in sum.iter().enumerate() {
            for (g, &s) in s.iter().enumerate() {
                // The empty tail of a head of 8s, then the scale: `dot_fused`'s order.
                let s = _mm256_mul_ps(_mm256_add_ps(s, z), scale_v);
                let first = p + 8 * g;
                let left = n.saturating_sub(first);
                let at = sc.wrapping_add(h * sc_stride + first);
                if left >= 8 {
                    // SAFETY: head h's scores[first..first + 8] lie inside its n.
                    unsafe { _mm256_storeu_ps(at, s) };
                } else {
                    // Lanes below `left` only (all ones where `lane < left`).
                    let left = _mm256_set1_ps(left as f32);
                    let mask = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(lane, left));
                    // SAFETY: the mask keeps the store inside head h's scores[first..n].
                    unsafe { _mm256_maskstore_ps(at, mask, s) };
                }
            }
        }
    }

    /// See [`super::TransposedKeys::scores_heads`]. Caller guarantees AVX and FMA, `head_dim`
    /// a multiple of 8, `keys` `[head_dim][stride]` with `stride >= n` a multiple of 8, and
    /// `(heads - 1) * sc_stride + n` scores writable at `sc`.
    #[target_feature(enable = "avx,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn scores_heads_transposed(
        sc: *mut f32, // [heads][sc_stride]
        sc_stride: usize,
        q: &[f32], // [heads, head_dim]
        head_dim: usize,
        keys: &[f32], // [head_dim][stride], dimension-major
        stride: usize,
        n: usize,
        scale: f32,
    ) {
        assert!(keys.len() >= head_dim * stride && stride >= n && stride.is_multiple_of(8));
        let heads = q.len() / head_dim;
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        // Up to 6 (head, 8 keys) pairs a tile: 4 groups of keys for one head, 2 for 2-3.
        let tiles = super::score_tiles(heads, n.div_ceil(8), 3, |h| if h == 1 { 4 } else { 2 });
        for (h0, h, g0, g) in tiles {
            let (s, qh, p) = (
                sc.wrapping_add(h0 * sc_stride),
                qp.wrapping_add(h0 * head_dim),
                8 * g0,
            );
            macro_rules! tile {
                ($(($h:literal, $g:literal))*) => {
                    match (h, g) {
                        // SAFETY: heads h0..h0 + h of q and of the scores exist; keys
                        // p..p + 8 * g lie inside the stride (g0 + g <= groups and
                        // 8 * groups <= stride); stores are masked at n.
                        $(($h, $g) => unsafe {
                            scores_tile::<$h, $g>(s, sc_stride, qh, head_dim, kp, stride, p, n, scale)
                        },)*
                        _ => unreachable!("1-3 heads, 1-4 groups"),
                    }
                };
            }
            tile!((1, 1)(1, 2)(1, 3)(1, 4)(2, 1)(2, 2)(3, 1)(3, 2));
        }
    }

    /// See [`super::Simd::add_weighted_values`]; the caller guarantees as for [`scores`],
    /// with `out` the head.
    #[target_feature(enable = "avx,fma")]
    pub unsafe fn add_weighted_values(
        out: &mut [f32],
        w: &[f32],
        value_cache: &[f32],
        rows: &[usize],
    ) {
        let head_dim = out.len();
        // Up to 64 dimensions (8 registers) per pass over the keys.
        for d0 in (0..head_dim).step_by(64) {
            let o = &mut out[d0..(d0 + 64).min(head_dim)];
            let v = value_cache.as_ptr().wrapping_add(d0);
            macro_rules! pass {
                ($($c:literal)*) => {
                    match o.len() / 8 {
                        // SAFETY: rows[p] + d0 + 8 * C <= rows[p] + head_dim <= the cache.
                        $($c => unsafe { values::<$c>(o, w, v, rows) },)*
                        _ => unreachable!("head_dim is a multiple of 8"),
                    }
                };
            }
            pass!(1 2 3 4 5 6 7 8);
        }
    }

    /// `o[d] = fma(w[p], v[rows[p] + d], o[d])` over `p` for `8 · C` dimensions, one chain
    /// per lane.
    #[inline]
    #[target_feature(enable = "avx,fma")]
    unsafe fn values<const C: usize>(
        o: &mut [f32], // [8 * C]
        w: &[f32],     // [num_keys]
        v: *const f32,
        rows: &[usize],
    ) {
        // SAFETY: o holds 8 * C floats.
        let mut acc: [__m256; C] =
            std::array::from_fn(|c| unsafe { _mm256_loadu_ps(o.as_ptr().add(8 * c)) });
        for (&wp, &row) in w.iter().zip(rows) {
            let e = _mm256_set1_ps(wp);
            for (c, a) in acc.iter_mut().enumerate() {
                // SAFETY: the caller's bound on every row.
                let vv = unsafe { _mm256_loadu_ps(v.add(row + 8 * c)) };
                *a = _mm256_fmadd_ps(e, vv, *a);
            }
        }
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * c), *a) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{empty_sum, KeyRows};

    /// See [`super::TransposedKeys::scores`]. Caller guarantees AVX-512F, `q.len() % 16 ==
    /// 0`, and `keys` `[q.len()][stride]` with `stride >= scores.len()`, a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn scores(
        scores: &mut [f32], // [n]
        q: &[f32],          // [head_dim]
        keys: &[f32],       // [head_dim][stride], dimension-major
        stride: usize,
        scale: f32,
    ) {
        let (n, head_dim) = (scores.len(), q.len());
        assert!(keys.len() >= head_dim * stride && stride >= n && stride.is_multiple_of(16));
        let (z, scale_v) = (_mm512_set1_ps(empty_sum()), _mm512_set1_ps(scale));
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        // 16 keys per group, two groups per pass: 16 chains, each waiting for its previous
        // FMA only every 16, enough to keep both FMA units busy.
        let mut p = 0;
        while p < n {
            let two = p + 16 < n;
            let (mut acc0, mut acc1) = ([_mm512_setzero_ps(); 8], [_mm512_setzero_ps(); 8]);
            // Dimensions in eights, `l` a constant in the unrolled inner loop, so that the
            // accumulators stay in registers (an index `d % 8` would put them on the stack).
            for c in 0..head_dim / 8 {
                for (l, (a0, a1)) in acc0.iter_mut().zip(&mut acc1).enumerate() {
                    let d = 8 * c + l;
                    // SAFETY: d < head_dim; key p + 31 < stride when `two` (stride is a
                    // multiple of 16 and at least n > p + 16), else p + 15 < stride.
                    let qd = _mm512_set1_ps(unsafe { *qp.add(d) });
                    let k0 = unsafe { _mm512_loadu_ps(kp.add(d * stride + p)) };
                    *a0 = _mm512_fmadd_ps(qd, k0, *a0);
                    if two {
                        let k1 = unsafe { _mm512_loadu_ps(kp.add(d * stride + p + 16)) };
                        *a1 = _mm512_fmadd_ps(qd, k1, *a1);
                    }
                }
            }
            for (g, acc) in [acc0, acc1].iter().enumerate().take(1 + usize::from(two)) {
                // ((z + a0) + a1) + … + a7, then the empty tail of a head of 8s, then scale:
                // `dot_fused`'s order, 16 keys at once.
                let s = acc.iter().fold(z, |s, &a| _mm512_add_ps(s, a));
                let s = _mm512_mul_ps(_mm512_add_ps(s, z), scale_v);
                let left = n - (p + 16 * g);
                let mask: __mmask16 = if left >= 16 { 0xffff } else { (1 << left) - 1 };
                // SAFETY: the mask keeps the store inside scores[p + 16g..n].
                unsafe { _mm512_mask_storeu_ps(scores.as_mut_ptr().add(p + 16 * g), mask, s) };
            }
            p += 32;
        }
    }

    /// Scores of `H` query heads for `16 · G` keys from `p` (the last of them masked at
    /// `n`), the keys dimension-major. `dot_fused` keeps eight partial sums, lane `l` taking
    /// dimensions `l, l + 8, …`, and adds them onto the empty sum from 0 to 7: partial sum
    /// `l` is finished before `l + 1` begins, so one accumulator per (head, 16 keys) holds
    /// it and one more the running sum, where eight registers held all eight at once. That
    /// leaves room for `H · G` (head, keys) pairs, up to 12, side by side: each key load
    /// serves `H` heads, each broadcast of a query value `G` groups of keys.
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores_tile<const H: usize, const G: usize>(
        sc: *mut f32, // head h's score of key p at sc + h * sc_stride + p
        sc_stride: usize,
        q: *const f32, // [H, head_dim]
        head_dim: usize,
        keys: *const f32, // [head_dim][stride]
        stride: usize,
        p: usize,
        n: usize,
        scale: f32,
    ) {
        let z = _mm512_set1_ps(empty_sum());
        let mut sum = [[z; G]; H];
        for l in 0..8 {
            let mut acc = [[_mm512_setzero_ps(); G]; H];
            for c in 0..head_dim / 8 {
                let d = 8 * c + l;
                // SAFETY: d < head_dim and p + 16 * G <= stride (the caller's bounds).
                let k: [__m512; G] = std::array::from_fn(|g| unsafe {
                    _mm512_loadu_ps(keys.add(d * stride + p + 16 * g))
                });
                for (h, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: head h < H of q holds head_dim floats.
                    let qd = _mm512_set1_ps(unsafe { *q.add(h * head_dim + d) });
                    for (a, &k) in acc.iter_mut().zip(&k) {
                        *a = _mm512_fmadd_ps(qd, k, *a);
                    }
                }
            }
            for (s, a) in sum.iter_mut().zip(&acc) {
                for (s, &a) in s.iter_mut().zip(a) {
                    *s = _mm512_add_ps(*s, a);
                }
            }
        }
        let scale_v = _mm512_set1_ps(scale);
        for (h, s) in sum.iter().enumerate() {
            for (g, &s) in s.iter().enumerate() {
                // The empty tail of a head of 8s, then the scale: `dot_fused`'s order.
                let s = _mm512_mul_ps(_mm512_add_ps(s, z), scale_v);
                let first = p + 16 * g;
                let left = n.saturating_sub(first);
                let mask: __mmask16 = if left >= 16 { 0xffff } else { (1 << left) - 1 };
                // SAFETY: the mask keeps the store inside head h's scores[first..n].
                unsafe { _mm512_mask_storeu_ps(sc.add(h * sc_stride + first), mask, s) };
            }
        }
    }

    /// See [`super::TransposedKeys::scores_heads`]. Caller guarantees AVX-512F, `head_dim` a
    /// multiple of 16, `keys` `[head_dim][stride]` with `stride >= n` a multiple of 16, and
    /// `(heads - 1) * sc_stride + n` scores writable at `sc`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn scores_heads(
        sc: *mut f32, // [heads][sc_stride]
        sc_stride: usize,
        q: &[f32], // [heads, head_dim]
        head_dim: usize,
        keys: &[f32], // [head_dim][stride], dimension-major
        stride: usize,
        n: usize,
        scale: f32,
    ) {
        assert!(keys.len() >= head_dim * stride && stride >= n && stride.is_multiple_of(16));
        let heads = q.len() / head_dim;
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        // Up to 12 (head, 16 keys) pairs a tile: 3 or 4 groups of keys for 1-4 heads.
        let tiles = super::score_tiles(heads, n.div_ceil(16), 4, |h| if h == 4 { 3 } else { 4 });
        for (h0, h, g0, g) in tiles {
            let (s, qh, p) = (
                sc.wrapping_add(h0 * sc_stride),
                qp.wrapping_add(h0 * head_dim),
                16 * g0,
            );
            macro_rules! tile {
                ($(($h:literal, $g:literal))*) => {
                    match (h, g) {
                        // SAFETY: heads h0..h0 + h of q and of the scores exist; keys
                        // p..p + 16 * g lie inside the stride (g0 + g <= groups and
                        // 16 * groups <= stride); stores are masked at n.
                        $(($h, $g) => unsafe {
                            scores_tile::<$h, $g>(s, sc_stride, qh, head_dim, kp, stride, p, n, scale)
                        },)*
                        _ => unreachable!("1-4 heads, 1-4 groups"),
                    }
                };
            }
            tile!(
                (1, 1)(1, 2)(1, 3)(1, 4)(2, 1)(2, 2)(2, 3)(2, 4)(3, 1)(3, 2)(3, 3)(3, 4)(4, 1)(
                    4, 2
                )(4, 3)
            );
        }
    }

    /// `keys[d * stride + p] = key_cache[rows[p] + d]`: 16 keys' dimension `d` in one
    /// gather. Caller guarantees AVX-512F, `keys` of `head_dim * stride` floats with a
    /// `stride` of 16s, at least `rows.len()`, and every `rows[p] + head_dim` at most
    /// `key_cache.len()`, itself at most `i32::MAX`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose(
        keys: &mut [f32], // [head_dim][stride]
        stride: usize,
        key_cache: &[f32],
        rows: &[usize], // [n]
        head_dim: usize,
    ) {
        assert!(keys.len() >= head_dim * stride && stride >= rows.len());
        let (kp, out) = (key_cache.as_ptr(), keys.as_mut_ptr());
        for (p0, group) in (0..rows.len()).step_by(16).zip(rows.chunks(16)) {
            let mut idx = [0i32; 16];
            for (i, &r) in idx.iter_mut().zip(group) {
                *i = r as i32; // < key_cache.len() <= i32::MAX
            }
            let mask: __mmask16 = if group.len() == 16 {
                0xffff
            } else {
                (1 << group.len()) - 1
            };
            // SAFETY: idx is 16 i32s.
            let vi = unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) };
            for d in 0..head_dim {
                // SAFETY: the masked lanes read rows[p] + d < key_cache.len(); the others
                // read nothing and give 0. p0 + 16 <= stride, d < head_dim.
                unsafe {
                    let g = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, vi, kp.add(d));
                    _mm512_storeu_ps(out.add(d * stride + p0), g);
                }
            }
        }
    }

    /// See [`super::Simd::add_weighted_values`]; the caller guarantees AVX-512F, a head of
    /// 16s, and every `rows[p] + out.len() <= value_cache.len()`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn add_weighted_values(
        out: &mut [f32],
        w: &[f32],
        value_cache: &[f32],
        rows: &[usize],
    ) {
        let rows = KeyRows {
            rows,
            head_dim: out.len(),
            cache_len: value_cache.len(),
        };
        // SAFETY: one head is `heads` of one, with the caller's guarantees.
        unsafe { add_weighted_values_heads(out, w, 0, value_cache, rows) }
    }

    /// See [`super::Simd::add_weighted_values_heads`]. Caller guarantees AVX-512F, a head of
    /// 16s, every `rows[p] + head_dim <= value_cache.len()`, and every head's weights
    /// inside `w`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn add_weighted_values_heads(
        out: &mut [f32], // [heads, head_dim]
        w: &[f32],       // [heads][w_stride]
        w_stride: usize,
        value_cache: &[f32],
        rows: KeyRows,
    ) {
        let head_dim = rows.head_dim;
        let heads = out.len() / head_dim;
        // Up to 128 dimensions (8 registers) of up to 16 / C heads per pass over the keys:
        // at most 16 accumulators, and at least 8 chains whenever there are two heads.
        for d0 in (0..head_dim).step_by(128) {
            let c = (head_dim - d0).min(128) / 16;
            let per_pass = (16 / c).clamp(1, 4);
            let mut h0 = 0;
            while h0 < heads {
                let h = per_pass.min(heads - h0);
                let o = out[h0 * head_dim..].as_mut_ptr().wrapping_add(d0);
                let wp = w[(h0 * w_stride).min(w.len())..].as_ptr();
                let v = value_cache.as_ptr().wrapping_add(d0);
                macro_rules! pass {
                    ($(($c:literal, $h:literal))*) => {
                        match (c, h) {
                            // SAFETY: heads h0..h0 + h hold head_dim floats of `out` and
                            // their weights; rows[p] + d0 + 16 * C <= rows[p] + head_dim,
                            // inside the cache.
                            $(($c, $h) => unsafe {
                                values::<$c, $h>(o, head_dim, wp, w_stride, v, rows.rows)
                            },)*
                            _ => unreachable!("C in 1..=8, H in 1..=4"),
                        }
                    };
                }
                pass!(
                    (1, 1)(1, 2)(1, 3)(1, 4)(2, 1)(2, 2)(2, 3)(2, 4)(3, 1)(3, 2)(3, 3)(3, 4)(4, 1)(
                        4, 2
                    )(4, 3)(4, 4)(5, 1)(5, 2)(5, 3)(6, 1)(6, 2)(7, 1)(7, 2)(
                        8, 1
                    )(8, 2)
                );
                h0 += h;
            }
        }
    }

    /// For heads `0..H` and `16 · C` dimensions: `o[h·o_stride + d] = fma(w[h·w_stride + p],
    /// v[rows[p] + d], o[h·o_stride + d])` over `p` in order, one chain per lane. The `H`
    /// heads share each value's loads; their `H · C` chains run side by side.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn values<const C: usize, const H: usize>(
        o: *mut f32, // head h's dimensions at o + h * o_stride
        o_stride: usize,
        w: *const f32, // head h's weights at w + h * w_stride, rows.len() of them
        w_stride: usize,
        v: *const f32,
        rows: &[usize],
    ) {
        // SAFETY (loads and stores of o and w): the caller's bounds, above.
        let mut acc: [[__m512; C]; H] = std::array::from_fn(|h| {
            std::array::from_fn(|c| unsafe { _mm512_loadu_ps(o.add(h * o_stride + 16 * c)) })
        });
        for (p, &row) in rows.iter().enumerate() {
            // SAFETY: the caller's bound on every row.
            let vv: [__m512; C] =
                std::array::from_fn(|c| unsafe { _mm512_loadu_ps(v.add(row + 16 * c)) });
            for (h, a) in acc.iter_mut().enumerate() {
                let e = _mm512_set1_ps(unsafe { *w.add(h * w_stride + p) });
                for (a, &vv) in a.iter_mut().zip(&vv) {
                    *a = _mm512_fmadd_ps(e, vv, *a);
                }
            }
        }
        for (h, a) in acc.iter().enumerate() {
            for (c, a) in a.iter().enumerate() {
                unsafe { _mm512_storeu_ps(o.add(h * o_stride + 16 * c), *a) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (head, group) once, heads in the outer loop, tiles within both limits, for the
    /// AVX and the AVX-512 limits.
    #[test]
    fn score_tiles_cover_every_head_and_group_once() {
        let avx = |h: usize| if h == 1 { 4 } else { 2 };
        let avx512 = |h: usize| if h == 4 { 3 } else { 4 };
        let limits: [(usize, &dyn Fn(usize) -> usize); 2] = [(3, &avx), (4, &avx512)];
        for (max_heads, per_pass) in limits {
            for heads in 0..10 {
                for groups in 0..11 {
                    let mut seen = vec![0u32; heads * groups];
                    let mut last_h0 = 0;
                    for (h0, h, g0, g) in score_tiles(heads, groups, max_heads, per_pass) {
                        assert!(h >= 1 && h <= max_heads && g >= 1 && g <= per_pass(h));
                        assert!(h0 >= last_h0, "heads in the outer loop");
                        last_h0 = h0;
                        for hh in h0..h0 + h {
                            for gg in g0..g0 + g {
                                seen[hh * groups + gg] += 1;
                            }
                        }
                    }
                    assert!(
                        seen.iter().all(|&c| c == 1),
                        "{heads} heads, {groups} groups"
                    );
                }
            }
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// Every version this CPU has gives the plain loops' bits, over head sizes, key counts
    /// that are and are not multiples of 8, rows in a scattered order, and values summed in
    /// one call or in blocks of keys.
    #[test]
    fn every_version_is_bitwise_the_plain_loops() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for head_dim in [8, 16, 24, 64, 72, 128] {
            for simd in Simd::available(head_dim) {
                for n in [1, 7, 8, 9, 17, 31, 32, 33, 64, 101] {
                    let slots = n + 5;
                    let cache = values(slots * head_dim, (head_dim * n) as u64);
                    let offsets: Vec<usize> =
                        (0..n).map(|p| (p * 7 + 3) % slots * head_dim).collect();
                    let rows = KeyRows::new(&offsets, head_dim, cache.len());
                    let q = values(head_dim, n as u64);
                    let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
                    simd.scores(&mut a, &q, &cache, rows, 0.125);
                    scores_portable(&mut b, &q, &cache, &offsets, 0.125);
                    assert_eq!(bits(&a), bits(&b), "{simd:?} scores, {head_dim} {n}");
                    // Several query heads over the same keys: each head's bits are its own
                    // call's, for every count of heads a pass may take.
                    for heads in [1, 2, 3, 4, 7] {
                        let stride = n + 2;
                        let qs = values(heads * head_dim, (heads + n) as u64);
                        let mut many = vec![f32::NAN; heads * stride];
                        simd.scores_heads(&mut many, stride, &qs, &cache, rows, 0.125);
                        for (h, qh) in qs.chunks_exact(head_dim).enumerate() {
                            let mut one = vec![0.0; n];
                            scores_portable(&mut one, qh, &cache, &offsets, 0.125);
                            let got = &many[h * stride..][..n];
                            assert_eq!(bits(got), bits(&one), "{simd:?} {heads} heads' scores");
                        }
                    }
                    let (mut oa, mut ob) = (vec![0.0; head_dim], vec![0.0; head_dim]);
                    for k0 in (0..n).step_by(5) {
                        let k1 = (k0 + 5).min(n);
                        simd.add_weighted_values(&mut oa, &a[k0..k1], &cache, rows.slice(k0..k1));
                    }
                    add_weighted_values_portable(&mut ob, &b, &cache, &offsets);
                    assert_eq!(bits(&oa), bits(&ob), "{simd:?} values, {head_dim} {n}");
                    // Several heads over the same keys, each with its own weights: each head's
                    // bits are the single head's, for every count of heads a pass may take.
                    for heads in [1, 2, 3, 5, 9] {
                        let stride = n + 3;
                        let w = values(heads * stride, (heads * n) as u64 + 7);
                        let mut many = vec![0.0; heads * head_dim];
                        for k0 in (0..n).step_by(5) {
                            let k1 = (k0 + 5).min(n);
                            let o = &mut many[..];
                            simd.add_weighted_values_heads(
                                o,
                                &w[k0..],
                                stride,
                                &cache,
                                rows.slice(k0..k1),
                            );
                        }
                        for h in 0..heads {
                            let mut one = vec![0.0; head_dim];
                            add_weighted_values_portable(
                                &mut one,
                                &w[h * stride..][..n],
                                &cache,
                                &offsets,
                            );
                            let got = &many[h * head_dim..][..head_dim];
                            assert_eq!(
                                bits(got),
                                bits(&one),
                                "{simd:?} {heads} heads, head {h}, {head_dim} {n}"
                            );
                        }
                    }
                    // Through the dimension-major copy: every prefix of the block.
                    let mut keys = TransposedKeys::default();
                    keys.fill(&cache, rows);
                    for heads in [1, 2, 3, 4, 5, 9] {
                        let stride = n + 3;
                        let qs = values(heads * head_dim, (heads + 2 * n) as u64);
                        for m in [n, n / 2, 1] {
                            let mut many = vec![f32::NAN; heads * stride];
                            keys.scores_heads(simd, &mut many, stride, &qs, m, 0.125);
                            for (h, qh) in qs.chunks_exact(head_dim).enumerate() {
                                let mut one = vec![0.0; m];
                                scores_portable(&mut one, qh, &cache, &offsets[..m], 0.125);
                                let row = &many[h * stride..][..stride];
                                assert_eq!(
                                    bits(&row[..m]),
                                    bits(&one),
                                    "{simd:?} copied keys, {heads} heads, {head_dim} {n} {m}"
                                );
                                assert!(
                                    row[m..].iter().all(|v| v.is_nan()),
                                    "{simd:?} {heads} heads wrote past {m} scores"
                                );
                            }
                        }
                    }
                    for m in [n, n / 2, 1] {
                        let mut c = vec![f32::NAN; n];
                        keys.scores(simd, &mut c[..m], &q, 0.125);
                        assert_eq!(
                            bits(&c[..m]),
                            bits(&b[..m]),
                            "{simd:?} copied keys, {head_dim} {n} {m}"
                        );
                        assert!(
                            c[m..].iter().all(|v| v.is_nan()),
                            "{simd:?} wrote past {m} scores"
                        );
                    }
                }
            }
        }
    }
}
