//! Exercise 5: the roofline's counts against counts made the long way (a naive computation
//! that counts its own multiply-adds, on tensors whose sizes give the bytes), the chapter's
//! examples by hand, and the two ceilings.

mod common;

use proptest::prelude::*;
use stage4::roofline::{
    attainable_flops, bound, decode_attention_cost, linear_cost, prefill_attention_cost, Bound,
    Cost, Machine, H200_MEASURED,
};

/// A FLOP counter: each multiply-add is two.
#[derive(Default)]
struct Flops(f64);

impl Flops {
    fn mul_add(&mut self, acc: f64, a: f64, b: f64) -> f64 {
        self.0 += 2.0;
        acc + a * b
    }
}

fn values(n: usize, seed: usize) -> Vec<f64> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) % 17) as f64 / 17.0)
        .collect()
}

/// `y = x · Wᵀ`, naively, with its FLOPs and the values it moves.
fn naive_linear(m: usize, k: usize, n: usize) -> (f64, usize) {
    let (x, w) = (values(m * k, 1), values(n * k, 2));
    let mut f = Flops::default();
    let mut y = vec![0.0; m * n];
    for t in 0..m {
        for j in 0..n {
            y[t * n + j] = (0..k).fold(0.0, |acc, i| f.mul_add(acc, x[t * k + i], w[j * k + i]));
        }
    }
    (f.0, x.len() + w.len() + y.len())
}

/// Attention of `rows` query rows, each over all `keys` keys (every pair counted), naively:
/// its FLOPs and the values it moves (q, k, v read once, out written once).
fn naive_attention(rows: usize, keys: usize, h: usize, kv: usize, d: usize) -> (f64, usize) {
    let q = values(rows * h * d, 3);
    let (k, v) = (values(keys * kv * d, 4), values(keys * kv * d, 5));
    let mut f = Flops::default();
    let mut out = vec![0.0; rows * h * d];
    for r in 0..rows {
        for head in 0..h {
            let kvh = head / (h / kv);
            let qr = &q[(r * h + head) * d..][..d];
            let scores: Vec<f64> = (0..keys)
                .map(|j| {
                    let kr = &k[(j * kv + kvh) * d..][..d];
                    (0..d).fold(0.0, |acc, i| f.mul_add(acc, qr[i], kr[i]))
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let o = &mut out[(r * h + head) * d..][..d];
            for (j, pj) in p.iter().enumerate() {
                for (i, oi) in o.iter_mut().enumerate() {
                    *oi = f.mul_add(*oi, *pj, v[(j * kv + kvh) * d + i]);
                }
            }
        }
    }
    (f.0, q.len() + k.len() + v.len() + out.len())
}

fn check(what: &str, cost: Cost, flops: f64, values: usize, bytes_per_value: usize) {
    assert_eq!(
        cost.flops, flops,
        "{what}: FLOPs (a multiply-add is 2 FLOPs)"
    );
    assert_eq!(
        cost.bytes,
        (values * bytes_per_value) as f64,
        "{what}: bytes ({values} values of {bytes_per_value} bytes, each moved once)"
    );
}

proptest! {
    #![proptest_config(common::proptest_config(32))]

    #[test]
    fn linear_counts_match_a_naive_linear(m in 1usize..9, k in 1usize..17, n in 1usize..17, b in 1usize..5) {
        let (flops, values) = naive_linear(m, k, n);
        check(&format!("linear_cost({m}, {k}, {n}, {b})"), linear_cost(m, k, n, b), flops, values, b);
    }

    #[test]
    fn attention_counts_match_a_naive_attention(
        n in 1usize..12,
        kv in 1usize..4,
        group in 1usize..4,
        d in 1usize..9,
        b in 1usize..5,
    ) {
        let h = kv * group;
        let (flops, values) = naive_attention(n, n, h, kv, d);
        let what = format!("prefill_attention_cost({n}, {h}, {kv}, {d}, {b})");
        check(&what, prefill_attention_cost(n, h, kv, d, b), flops, values, b);
        let (flops, values) = naive_attention(1, n, h, kv, d);
        let what = format!("decode_attention_cost({n}, {h}, {kv}, {d}, {b})");
        check(&what, decode_attention_cost(n, h, kv, d, b), flops, values, b);
    }

    #[test]
    fn attainable_flops_is_the_lower_ceiling(intensity in 0.01f64..10_000.0) {
        let m = H200_MEASURED;
        let want = m.peak_flops.min(intensity * m.bandwidth);
        prop_assert_eq!(attainable_flops(m, intensity), want);
        let side = if intensity < m.ridge_point() { Bound::Memory } else { Bound::Compute };
        prop_assert_eq!(bound(m, intensity), side, "intensity {}", intensity);
    }
}

/// The chapter's numbers: one layer's decode attention of SmolLM2-135M (9 query heads, 3 KV
/// heads of 64) at a context of 1024, in bf16.
#[test]
fn decode_attention_of_smollm2() {
    let c = decode_attention_cost(1024, 9, 3, 64, 2);
    assert_eq!(c.flops, 2_359_296.0, "4 · 1024 · 64 · 9");
    assert_eq!(c.bytes, 788_736.0, "2 · (9·64 + 2·1024·3·64 + 9·64)");
    assert!((c.intensity() - 2.991).abs() < 1e-3, "{}", c.intensity());
    assert_eq!(bound(H200_MEASURED, c.intensity()), Bound::Memory);
    let tflops = attainable_flops(H200_MEASURED, c.intensity()) / 1e12;
    assert!((tflops - 12.63).abs() < 0.01, "{tflops} TFLOP/s");
}

/// Prefill attention of 32 heads of 128 (no GQA), in bf16: intensity N / 2. At N = 512 it is
/// past the H200's ridge (190), at N = 256 not yet.
#[test]
fn prefill_attention_crosses_the_ridge() {
    let c = prefill_attention_cost(512, 32, 32, 128, 2);
    assert_eq!(c.flops, 4_294_967_296.0, "4 · 512² · 128 · 32");
    assert_eq!(c.bytes, 16_777_216.0, "2 · 512 · 128 · (32 + 2·32 + 32)");
    assert_eq!(c.intensity(), 256.0);
    assert_eq!(bound(H200_MEASURED, 256.0), Bound::Compute);
    assert_eq!(
        prefill_attention_cost(256, 32, 32, 128, 2).intensity(),
        128.0
    );
    assert_eq!(bound(H200_MEASURED, 128.0), Bound::Memory);
}

/// A 4096 × 4096 bf16 projection: about 1 FLOP per byte for one token (every weight read for
/// one multiply-add), compute-bound by 256 tokens.
#[test]
fn a_linear_layer_from_decode_to_prefill() {
    let one = linear_cost(1, 4096, 4096, 2);
    assert_eq!(one.flops, 33_554_432.0);
    assert!(
        (one.intensity() - 0.9995).abs() < 1e-4,
        "{}",
        one.intensity()
    );
    assert_eq!(bound(H200_MEASURED, one.intensity()), Bound::Memory);
    let many = linear_cost(256, 4096, 4096, 2);
    assert!(
        (many.intensity() - 227.56).abs() < 0.01,
        "{}",
        many.intensity()
    );
    assert_eq!(bound(H200_MEASURED, many.intensity()), Bound::Compute);
}

/// The ridge point itself is compute-bound, and both ceilings meet there.
#[test]
fn at_the_ridge_point() {
    let m = Machine {
        peak_flops: 1000.0,
        bandwidth: 10.0,
    };
    assert_eq!(m.ridge_point(), 100.0);
    assert_eq!(bound(m, 100.0), Bound::Compute);
    assert_eq!(bound(m, 99.9), Bound::Memory);
    assert_eq!(attainable_flops(m, 100.0), 1000.0);
    assert_eq!(attainable_flops(m, 50.0), 500.0);
    assert_eq!(attainable_flops(m, 1e6), 1000.0);
}
