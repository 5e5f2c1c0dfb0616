//! The device sampler against the CPU's: `engine::sampler::sample(row, params,
//! engine::philox::uniform(seed, position))`, token for token, and the device's Philox4x32-10
//! against `engine::philox`, bit for bit; and the sampler against its first version
//! (`sample_reference`), which computes the same function: token for token on every row,
//! excluded or not.
//!
//! Exclusions. The CPU sums f32 probabilities one by one in sorted order; the device sums
//! exact fixed-point weights. Where the CPU's cumulative mass lies within [`EPS`] of top_p or
//! of the scaled draw, at the boundary that decides the token, the two may round to different
//! sides: such rows are counted and printed, not compared, and must stay under 1%. Every
//! other row must match exactly.
mod common;

use common::{gpu_or_skip, Rng};
use engine::sampling_params::SamplingParams;
use half::bf16;

/// Margin beyond the CPU's measured drift: the device's own sums are exact to ~1e-9 (2^-40
/// fixed point, `expf` within 2 ulp).
const EPS: f64 = 1e-6;

fn params(temperature: f32, top_k: u32, top_p: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k: (top_k > 0).then_some(top_k as usize),
        top_p,
        ..SamplingParams::default()
    }
}

/// Logits shaped like a language model's: 2-16 plausible tokens ~22 above a wide tail
/// (N(0, 2)), as bf16 values (so equal logits occur and the lowest-id rule decides).
fn lm_logits(rng: &mut Rng, vocab: usize) -> Vec<f32> {
    let mut row: Vec<f32> = (0..vocab)
        .map(|_| bf16::from_f64(rng.normal(2.0)).to_f32())
        .collect();
    for _ in 0..2 + rng.below(15) {
        row[rng.below(vocab)] = bf16::from_f64(22.0 + rng.normal(1.5)).to_f32();
    }
    row
}

/// Whether the CPU's decision for this row is a rounding coin flip: at a boundary that
/// decides the token (the top-p cut, or the chosen token's edges under the draw), the CPU's
/// f32 cumulative mass lies within `EPS` plus twice its own rounding drift (its distance from
/// the exact f64 sum) of top_p or of the draw. Returns that margin if so. Follows
/// `engine::sampler::sample` step by step, in f32 as it does, with an exact shadow.
fn cpu_margin(logits: &[f32], p: &SamplingParams, draw: f32) -> Option<f64> {
    if p.is_greedy() {
        return None;
    }
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    if let Some(k) = p.top_k {
        ids.truncate(k.max(1));
    }
    let max = logits[ids[0] as usize];
    let mut probs: Vec<f32> = ids
        .iter()
        .map(|&i| ((logits[i as usize] - max) / p.temperature).exp())
        .collect();
    let exact: Vec<f64> = ids
        .iter()
        .map(|&i| ((logits[i as usize] as f64 - max as f64) / p.temperature as f64).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|q| *q /= total);
    let exact_total: f64 = exact.iter().sum();
    // (CPU's normalized mass, exact one) before each kept token, and after the last.
    let cums = |probs: &[f32], total32: f32, total64: f64| {
        let (mut c32, mut c64) = (0.0f32, 0.0f64);
        let mut v = vec![(0.0, 0.0)];
        for (&q, &e) in probs.iter().zip(&exact) {
            c32 += q;
            c64 += e;
            v.push(((c32 / total32) as f64, c64 / total64));
        }
        v
    };
    let mut worst: Option<f64> = None;
    let mut check = |(cpu, exact): (f64, f64), at: f64| {
        let margin = (cpu - at).abs();
        if margin <= EPS + 2.0 * (cpu - exact).abs() {
            worst = Some(worst.map_or(margin, |w: f64| w.min(margin)));
        }
    };
    if p.top_p < 1.0 {
        let c = cums(&probs, 1.0, exact_total);
        let keep = (1..c.len())
            .find(|&i| c[i].0 as f32 >= p.top_p)
            .unwrap_or(c.len() - 1);
        check(c[keep], p.top_p as f64);
        if keep > 1 {
            check(c[keep - 1], p.top_p as f64);
        }
        probs.truncate(keep);
    }
    let total: f32 = probs.iter().sum();
    let exact_kept: f64 = exact[..probs.len()].iter().sum();
    let c = cums(&probs, total, exact_kept);
    // The chosen token j: the CPU walks `draw * total` down; its edges are c[j] and c[j + 1]
    // (0 and the kept total are exact on both sides).
    let mut left = draw * total;
    let j = probs
        .iter()
        .position(|&q| {
            let hit = left < q;
            left -= q;
            hit
        })
        .unwrap_or(probs.len() - 1);
    if j > 0 {
        check(c[j], draw as f64);
    }
    if j + 2 < c.len() {
        check(c[j + 1], draw as f64);
    }
    worst
}

#[test]
fn philox_on_the_device_is_bit_identical() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.sampling);
    let mut rng = Rng::fresh("philox");
    let n = 100_000;
    let mut seeds: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
    let mut positions: Vec<u64> = (0..n)
        .map(|i| match i % 3 {
            0 => rng.below(1 << 20) as u64,
            1 => rng.next_u64() >> (rng.below(64) as u32),
            _ => i as u64,
        })
        .collect();
    seeds[..4].copy_from_slice(&[0, u64::MAX, 0, 42]);
    positions[..4].copy_from_slice(&[0, u64::MAX, u64::MAX, 0]);
    let (d_seeds, d_pos) = (
        s.clone_htod(&seeds).unwrap(),
        s.clone_htod(&positions).unwrap(),
    );
    let mut bits = s.clone_htod(&vec![u32::MAX; 4 * n]).unwrap();
    let mut uniforms = s.clone_htod(&vec![f32::NAN; n]).unwrap();
    k.philox(
        s,
        &mut bits.as_view_mut(),
        &mut uniforms.as_view_mut(),
        &d_seeds.as_view(),
        &d_pos.as_view(),
    )
    .unwrap();
    let (bits, uniforms) = (
        s.clone_dtoh(&bits).unwrap(),
        s.clone_dtoh(&uniforms).unwrap(),
    );
    for i in 0..n {
        let (seed, pos) = (seeds[i], positions[i]);
        let want = engine::philox::philox4x32_10(
            [pos as u32, (pos >> 32) as u32, 0, 0],
            [seed as u32, (seed >> 32) as u32],
        );
        assert_eq!(
            bits[4 * i..4 * i + 4],
            want,
            "bits, seed {seed}, position {pos}"
        );
        if let Ok(p) = usize::try_from(pos) {
            let want = engine::philox::uniform(seed, p);
            assert_eq!(
                uniforms[i].to_bits(),
                want.to_bits(),
                "uniform({seed}, {pos})"
            );
        }
    }
    println!("philox: {n} (seed, position) pairs, bits and uniforms exact");
}

/// Runs both kernels (f32 and bf16 logits holding the same values) on `rows` and returns
/// their tokens.
#[allow(clippy::type_complexity)]
fn run_device(
    gpu: &kernels::Gpu,
    logits: &[f32],
    rows: &[(SamplingParams, u64, u64)],
) -> (Vec<u32>, Vec<u32>) {
    let s = &gpu.stream;
    let n = rows.len();
    let temperature: Vec<f32> = rows.iter().map(|r| r.0.temperature).collect();
    let top_k: Vec<u32> = rows.iter().map(|r| r.0.top_k.unwrap_or(0) as u32).collect();
    let top_p: Vec<f32> = rows.iter().map(|r| r.0.top_p).collect();
    let seed: Vec<u64> = rows.iter().map(|r| r.1).collect();
    let position: Vec<u64> = rows.iter().map(|r| r.2).collect();
    let (t, k, p, sd, pos) = (
        s.clone_htod(&temperature).unwrap(),
        s.clone_htod(&top_k).unwrap(),
        s.clone_htod(&top_p).unwrap(),
        s.clone_htod(&seed).unwrap(),
        s.clone_htod(&position).unwrap(),
    );
    let (t, k, p, sd, pos) = (
        t.as_view(),
        k.as_view(),
        p.as_view(),
        sd.as_view(),
        pos.as_view(),
    );
    let params = kernels::sampling::RowParams {
        temperature: &t,
        top_k: &k,
        top_p: &p,
        seed: &sd,
        position: &pos,
    };
    let d32 = s.clone_htod(logits).unwrap();
    let as_bf16: Vec<bf16> = logits.iter().map(|&v| bf16::from_f32(v)).collect();
    let d16 = s.clone_htod(&as_bf16).unwrap();
    // Poisoned: an unwritten row keeps u32::MAX, never a token.
    let mut out32 = s.clone_htod(&vec![u32::MAX; n]).unwrap();
    let mut out16 = s.clone_htod(&vec![u32::MAX; n]).unwrap();
    let mut ref32 = s.clone_htod(&vec![u32::MAX; n]).unwrap();
    let mut ref16 = s.clone_htod(&vec![u32::MAX; n]).unwrap();
    let k = &gpu.kernels.sampling;
    k.sample_f32(s, &mut out32.as_view_mut(), &d32.as_view(), &params)
        .unwrap();
    k.sample(s, &mut out16.as_view_mut(), &d16.as_view(), &params)
        .unwrap();
    k.sample_f32_reference(s, &mut ref32.as_view_mut(), &d32.as_view(), &params)
        .unwrap();
    k.sample_reference(s, &mut ref16.as_view_mut(), &d16.as_view(), &params)
        .unwrap();
    let (got32, got16) = (s.clone_dtoh(&out32).unwrap(), s.clone_dtoh(&out16).unwrap());
    let (ref32, ref16) = (s.clone_dtoh(&ref32).unwrap(), s.clone_dtoh(&ref16).unwrap());
    let differ = |got: &[u32], want: &[u32]| -> Vec<String> {
        let rows = got
            .iter()
            .zip(want)
            .enumerate()
            .filter(|(_, (g, w))| g != w);
        rows.map(|(i, (g, w))| format!("row {i}: {g} vs {w}"))
            .collect()
    };
    let (d32, d16) = (differ(&got32, &ref32), differ(&got16, &ref16));
    assert!(
        d32.is_empty(),
        "sample_f32 vs its reference:\n{}",
        d32.join("\n")
    );
    assert!(
        d16.is_empty(),
        "sample vs its reference:\n{}",
        d16.join("\n")
    );
    (got32, got16)
}

#[test]
fn device_sampler_matches_the_cpu_sampler() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = Rng::fresh("sample");
    let (mut compared, mut excluded) = (0, 0);
    for vocab in [49152, 128256] {
        let mut rows = Vec::new();
        for temperature in [0.0, 0.5, 1.0, 1.5] {
            for top_k in [0, 1, 20] {
                for top_p in [1.0, 0.9, 0.5] {
                    for _ in 0..16 {
                        let pos = match rng.below(4) {
                            0 => rng.next_u64() >> 16,
                            _ => rng.below(4096) as u64,
                        };
                        rows.push((params(temperature, top_k, top_p), rng.next_u64(), pos));
                    }
                }
            }
        }
        let mut logits = Vec::with_capacity(rows.len() * vocab);
        for _ in 0..rows.len() {
            logits.extend(lm_logits(&mut rng, vocab));
        }
        let (got32, got16) = run_device(&gpu, &logits, &rows);
        let mut mismatches = Vec::new();
        for (i, ((p, seed, pos), row)) in rows.iter().zip(logits.chunks(vocab)).enumerate() {
            let draw = engine::philox::uniform(*seed, *pos as usize);
            let want = engine::sampler::sample(row, p, draw);
            assert!(
                got32[i] < vocab as u32 && got16[i] < vocab as u32,
                "row {i} unwritten"
            );
            if let Some(margin) = cpu_margin(row, p, draw) {
                excluded += 1;
                println!(
                    "  excluded: vocab {vocab}, T {}, top_k {:?}, top_p {}, margin {margin:.1e}: \
                     cpu {want}, device {} / {}",
                    p.temperature, p.top_k, p.top_p, got32[i], got16[i]
                );
                continue;
            }
            compared += 1;
            if got32[i] != want || got16[i] != want {
                mismatches.push(format!(
                    "row {i}: T {}, top_k {:?}, top_p {}, seed {seed}, position {pos}, draw \
                     {draw}: cpu {want}, device f32 {} bf16 {}",
                    p.temperature, p.top_k, p.top_p, got32[i], got16[i]
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "vocab {vocab}:\n{}",
            mismatches.join("\n")
        );
    }
    let total = compared + excluded;
    println!(
        "sample: {compared} of {total} rows exact (f32 and bf16 logits), {excluded} excluded \
         (CPU mass within its own drift + {EPS:.0e} of top_p or the draw)"
    );
    assert!(
        excluded * 100 < total,
        "{excluded} of {total} rows excluded: more than 1%"
    );
}

#[test]
fn exact_boundaries() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = Rng::fresh("sample boundaries");
    let vocab = 1000;
    let n = 64;
    let mut logits = vec![-1.0e30f32; n * vocab];
    let mut rows = Vec::new();
    for r in 0..n {
        let row = &mut logits[r * vocab..(r + 1) * vocab];
        // Two equal logits, ids 300 and 700: top_p 0.5 keeps exactly one (mass 0.5 >= 0.5),
        // the lower id, whatever the draw.
        row[700] = 2.5;
        row[300] = 2.5;
        rows.push((params(1.0, 0, 0.5), rng.next_u64(), r as u64));
    }
    // Greedy with ties: the lowest id among the largest; also greedy on a plain row.
    for (r, ties) in [(0, [17, 5, 900]), (1, [999, 998, 3])] {
        let row = &mut logits[(n - 2 + r) * vocab..(n - 1 + r) * vocab];
        row.iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i % 7) as f32);
        for id in ties {
            row[id] = 9.0;
        }
        rows[n - 2 + r] = (params(0.0, 0, 1.0), 1, 1);
    }
    // top_k 1 with a tie: the lower id, whatever the temperature and draw.
    let row = &mut logits[(n - 3) * vocab..(n - 2) * vocab];
    row.fill(0.0);
    rows[n - 3] = (params(2.0, 1, 1.0), 7, 9);
    let (got32, got16) = run_device(&gpu, &logits, &rows);
    let mut want = vec![300u32; n];
    want[n - 3] = 0;
    want[n - 2] = 5;
    want[n - 1] = 3;
    for (r, ((p, seed, pos), row)) in rows.iter().zip(logits.chunks(vocab)).enumerate() {
        let cpu = engine::sampler::sample(row, p, engine::philox::uniform(*seed, *pos as usize));
        assert_eq!(cpu, want[r], "the CPU's answer, row {r}");
    }
    assert_eq!(got32, want, "f32");
    assert_eq!(got16, want, "bf16");
    println!("sample boundaries: ties and top_p = 0.5 on two equal logits exact");
}
