//! The two inner loops of the CPU's paged attention, the scores `q · k` and the weighted sum
//! of values, in AVX registers where the CPU has them, **bitwise** the plain loops.
//!
//! Bitwise, because attention's arithmetic is part of what the engine promises: every output
//! is computed in one fixed order whatever the batch, and the reference tests hold the greedy
//! tokens equal to transformers'. So the vector code does exactly the plain code's roundings,
//! in the same order, only several at a time:
//!
//! - a score is [`dot`]: eight partial sums over the head's dimensions (`acc[l] += q[8c+l] ·
//!   k[8c+l]`, a multiply then an add, never fused), summed from lane 0 to lane 7, then times
//!   `scale`. One AVX register holds the eight partial sums of one key; eight keys' registers
//!   are transposed so that one vertical add per lane position sums eight keys' lanes in
//!   order, at once.
//! - an output is `Σ_p w[p] · v_p[d]` in the order of `p`, a multiply then an add, then times
//!   `1 / Σ w`. Lanes are dimensions `d`: each lane is one output's chain.
//!
//! The plain loops ([`scores_portable`], [`add_weighted_values_portable`]) run on other CPUs
//! and when the head size is not a multiple of 8; `tests` check that the two agree bit for bit.

use std::ops::Range;

use super::linear::dot;

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
    /// x86-64 AVX (8 floats a register); heads of a multiple of 8 dimensions.
    Avx,
    /// Plain Rust, any CPU and any head size.
    Portable,
}

impl Simd {
    /// The fastest version this CPU runs for heads of `head_dim`.
    pub fn detect(head_dim: usize) -> Simd {
        #[cfg(target_arch = "x86_64")]
        if head_dim.is_multiple_of(8) && std::arch::is_x86_feature_detected!("avx") {
            return Simd::Avx;
        }
        let _ = head_dim;
        Simd::Portable
    }

    /// `scores[p] = dot(q, key_cache[rows[p]..][..head_dim]) * scale`.
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
            // SAFETY: `Avx` comes from `detect`, which saw AVX and a head size of 8s; `check`
            // and `KeyRows::new` bound every key inside the cache.
            Simd::Avx => unsafe { avx::scores(scores, q, key_cache, rows.rows, scale) },
            _ => scores_portable(scores, q, key_cache, rows.rows, scale),
        }
    }

    /// `out += Σ_p w[p] · value_cache[rows[p]..][..head_dim]`, in the order of `p`: each
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
            _ => add_weighted_values_portable(out, w, value_cache, rows.rows),
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
    for (s, &row) in scores.iter_mut().zip(rows) {
        *s = dot(q, &key_cache[row..][..q.len()]) * scale;
    }
}

/// [`Simd::add_weighted_values`] in plain Rust.
pub fn add_weighted_values_portable(
    out: &mut [f32], // [head_dim]
    w: &[f32],       // [rows.len()]
    value_cache: &[f32],
    rows: &[usize],
) {
    for (&wp, &row) in w.iter().zip(rows) {
        let v = &value_cache[row..][..out.len()];
        out.iter_mut().zip(v).for_each(|(o, &v)| *o += wp * v);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    use super::dot;

    /// What `[f32]::iter().sum()` starts from (and the sum of no terms): [`dot`] adds its
    /// lanes onto it and adds the empty tail of a head of 8s, so the vector code does too.
    fn empty_sum() -> f32 {
        std::iter::empty::<f32>().sum()
    }

    /// See [`super::Simd::scores`]. Caller guarantees AVX, `q.len() % 8 == 0` and every
    /// `rows[p] + q.len() <= key_cache.len()`.
    #[target_feature(enable = "avx")]
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
            // acc[j] = key p + j's eight partial sums, dimensions in the order of `dot`.
            let mut acc = [_mm256_setzero_ps(); 8];
            for c in 0..head_dim / 8 {
                // SAFETY: 8c + 8 <= head_dim, and rows[p + j] + head_dim <= the cache.
                let qv = unsafe { _mm256_loadu_ps(q.as_ptr().add(8 * c)) };
                for (j, a) in acc.iter_mut().enumerate() {
                    let kv = unsafe { _mm256_loadu_ps(kp.add(rows[p + j] + 8 * c)) };
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(qv, kv));
                }
            }
            let s = _mm256_add_ps(sum_lanes_in_order(acc, zero), zero);
            // SAFETY: p + 8 <= n = scores.len().
            unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(p), _mm256_mul_ps(s, scale_v)) };
            p += 8;
        }
        for (s, &row) in scores[p..].iter_mut().zip(&rows[p..]) {
            *s = dot(q, &key_cache[row..][..head_dim]) * scale;
        }
    }

    /// Lane `j` of the result is `((z + a_j[0]) + a_j[1]) + … + a_j[7]`: an 8 × 8 transpose,
    /// then seven vertical adds, lane 0 first.
    #[inline]
    #[target_feature(enable = "avx")]
    fn sum_lanes_in_order(a: [__m256; 8], z: __m256) -> __m256 {
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
        let lanes = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        lanes.iter().fold(z, |s, &l| _mm256_add_ps(s, l))
    }

    /// See [`super::Simd::add_weighted_values`]; the caller guarantees as for [`scores`],
    /// with `out` the head.
    #[target_feature(enable = "avx")]
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

    /// `o[d] += Σ_p w[p] · v[rows[p] + d]` for `8 · C` dimensions, one chain per lane.
    #[inline]
    #[target_feature(enable = "avx")]
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
                *a = _mm256_add_ps(*a, _mm256_mul_ps(e, vv));
            }
        }
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * c), *a) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let simd = Simd::detect(head_dim);
            for n in [1, 7, 8, 9, 17, 64, 101] {
                let slots = n + 5;
                let cache = values(slots * head_dim, (head_dim * n) as u64);
                let offsets: Vec<usize> = (0..n).map(|p| (p * 7 + 3) % slots * head_dim).collect();
                let rows = KeyRows::new(&offsets, head_dim, cache.len());
                let q = values(head_dim, n as u64);
                let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
                simd.scores(&mut a, &q, &cache, rows, 0.125);
                scores_portable(&mut b, &q, &cache, &offsets, 0.125);
                assert_eq!(bits(&a), bits(&b), "scores, {head_dim} {n}");
                let (mut oa, mut ob) = (vec![0.0; head_dim], vec![0.0; head_dim]);
                for k0 in (0..n).step_by(5) {
                    let k1 = (k0 + 5).min(n);
                    simd.add_weighted_values(&mut oa, &a[k0..k1], &cache, rows.slice(k0..k1));
                }
                add_weighted_values_portable(&mut ob, &b, &cache, &offsets);
                assert_eq!(bits(&oa), bits(&ob), "values, {head_dim} {n}");
            }
        }
    }
}
