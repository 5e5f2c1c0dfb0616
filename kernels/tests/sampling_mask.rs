//! `min_tokens`' mask on the device (`Sampling::mask_logits`): the listed (row, id) logits
//! become -inf, bit for bit as `engine::min_tokens::mask_logits` does on the host, and nothing
//! else changes; ids past the vocabulary are skipped. Then both device samplers on masked rows:
//! never a banned id; greedy equals the CPU's argmax of the masked row; random sampling equals
//! its first version (`sample_reference`) on every row and the CPU's `sample` on nearly every
//! row (the CPU's f32 sums may round the other way at a boundary, see `sampling_random.rs`);
//! a row with one id left gives that id under any parameters.
//!
//! Without a GPU every test prints `skipped: ...` and passes.
mod common;

use common::{gpu_or_skip, Rng};
use engine::min_tokens::mask_logits;
use engine::philox;
use engine::sampler::sample;
use engine::sampling_params::SamplingParams;
use half::bf16;
use kernels::sampling::RowParams;

/// Logits shaped like a language model's (as in `sampling_random.rs`): 5-8 plausible tokens
/// ~22 above a wide tail (N(0, 2)), as bf16 values. Banning up to 4 of them leaves some: the
/// draw then lands among a few large probabilities, where the CPU's f32 sums and the device's
/// exact ones agree (in the tail they may round to different neighbours).
fn lm_logits(rng: &mut Rng, vocab: usize) -> Vec<f32> {
    let mut row: Vec<f32> = (0..vocab)
        .map(|_| bf16::from_f64(rng.normal(2.0)).to_f32())
        .collect();
    for _ in 0..5 + rng.below(4) {
        row[rng.below(vocab)] = bf16::from_f64(22.0 + rng.normal(1.5)).to_f32();
    }
    row
}

/// Row `r`'s banned ids: its 1-3 largest logits (the ones a sampler would pick), a random id,
/// and an id past the vocabulary (skipped).
fn banned_for(rng: &mut Rng, row: &[f32]) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..row.len() as u32).collect();
    ids.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    let mut banned = ids[..1 + rng.below(3)].to_vec();
    banned.push(rng.below(row.len()) as u32);
    banned.push(row.len() as u32 + rng.below(10) as u32);
    banned
}

#[test]
fn masking_sets_exactly_the_listed_logits_to_minus_infinity() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.sampling);
    let mut rng = Rng::fresh("mask_logits");
    for (n, vocab) in [(1, 7), (5, 1000), (9, 49152), (3, 128256)] {
        let logits: Vec<f32> = (0..n).flat_map(|_| lm_logits(&mut rng, vocab)).collect();
        // Rows with bans and rows without (every other one).
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        let mut want = logits.clone();
        for r in (0..n).step_by(2) {
            let banned = banned_for(&mut rng, &logits[r * vocab..(r + 1) * vocab]);
            mask_logits(&mut want[r * vocab..(r + 1) * vocab], &banned);
            rows.extend(std::iter::repeat_n(r as u32, banned.len()));
            ids.extend(banned);
        }
        let (d_rows, d_ids) = (s.clone_htod(&rows).unwrap(), s.clone_htod(&ids).unwrap());
        let mut d32 = s.clone_htod(&logits).unwrap();
        k.mask_logits_f32(
            s,
            &mut d32.as_view_mut(),
            n,
            &d_rows.as_view(),
            &d_ids.as_view(),
        )
        .unwrap();
        let got = s.clone_dtoh(&d32).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "f32 [{n}, {vocab}]");
        let as_bf16: Vec<bf16> = logits.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut d16 = s.clone_htod(&as_bf16).unwrap();
        k.mask_logits(
            s,
            &mut d16.as_view_mut(),
            n,
            &d_rows.as_view(),
            &d_ids.as_view(),
        )
        .unwrap();
        let got: Vec<f32> = s
            .clone_dtoh(&d16)
            .unwrap()
            .iter()
            .map(|v| v.to_f32())
            .collect();
        assert_eq!(bits(&got), bits(&want), "bf16 [{n}, {vocab}]");
        println!("mask [{n}, {vocab}], {} pairs: exact", rows.len());
    }
    // Nothing to mask, and mismatched lists.
    let mut d = s.clone_htod(&vec![1.0f32; 8]).unwrap();
    let empty = s.clone_htod(&vec![0u32; 1]).unwrap();
    k.mask_logits_f32(
        s,
        &mut d.as_view_mut(),
        2,
        &empty.slice(0..0),
        &empty.slice(0..0),
    )
    .unwrap();
    assert_eq!(s.clone_dtoh(&d).unwrap(), vec![1.0f32; 8]);
    let two = s.clone_htod(&vec![0u32; 2]).unwrap();
    assert!(k
        .mask_logits_f32(s, &mut d.as_view_mut(), 2, &two.as_view(), &empty.as_view())
        .is_err());
}

#[test]
fn samplers_never_pick_a_masked_id_and_agree_with_the_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.sampling);
    let mut rng = Rng::fresh("mask_then_sample");
    let (n, vocab) = (256, 49152);
    let logits: Vec<f32> = (0..n).flat_map(|_| lm_logits(&mut rng, vocab)).collect();
    let mut masked = logits.clone();
    let (mut rows, mut ids, mut bans) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..n {
        let banned = banned_for(&mut rng, &logits[r * vocab..(r + 1) * vocab]);
        mask_logits(&mut masked[r * vocab..(r + 1) * vocab], &banned);
        rows.extend(std::iter::repeat_n(r as u32, banned.len()));
        ids.extend(banned.iter().copied());
        bans.push(banned);
    }
    // A quarter greedy; the rest with temperature, and top-k / top-p on some.
    let params: Vec<SamplingParams> = (0..n)
        .map(|r| SamplingParams {
            temperature: if r % 4 == 0 {
                0.0
            } else {
                0.5 + rng.below(5) as f32 * 0.1
            },
            top_k: (r % 3 == 1).then(|| 1 + rng.below(20)),
            top_p: if r % 5 == 2 { 0.8 } else { 1.0 },
            ..SamplingParams::default()
        })
        .collect();
    let seeds: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
    let positions: Vec<u64> = (0..n).map(|_| rng.below(4096) as u64).collect();
    let d = |v: Vec<f32>| s.clone_htod(&v).unwrap();
    let (t, p) = (
        d(params.iter().map(|q| q.temperature).collect()),
        d(params.iter().map(|q| q.top_p).collect()),
    );
    let top_k = s
        .clone_htod(
            &params
                .iter()
                .map(|q| q.top_k.unwrap_or(0) as u32)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let (seed, pos) = (
        s.clone_htod(&seeds).unwrap(),
        s.clone_htod(&positions).unwrap(),
    );
    let (tv, kv, pv, sv, posv) = (
        t.as_view(),
        top_k.as_view(),
        p.as_view(),
        seed.as_view(),
        pos.as_view(),
    );
    let row_params = RowParams {
        temperature: &tv,
        top_k: &kv,
        top_p: &pv,
        seed: &sv,
        position: &posv,
    };
    let as_bf16: Vec<bf16> = logits.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut d16 = s.clone_htod(&as_bf16).unwrap();
    let (d_rows, d_ids) = (s.clone_htod(&rows).unwrap(), s.clone_htod(&ids).unwrap());
    k.mask_logits(
        s,
        &mut d16.as_view_mut(),
        n,
        &d_rows.as_view(),
        &d_ids.as_view(),
    )
    .unwrap();
    let mut out = s.clone_htod(&vec![u32::MAX; n]).unwrap();
    k.sample(s, &mut out.as_view_mut(), &d16.as_view(), &row_params)
        .unwrap();
    let got = s.clone_dtoh(&out).unwrap();
    let mut out = s.clone_htod(&vec![u32::MAX; n]).unwrap();
    k.sample_reference(s, &mut out.as_view_mut(), &d16.as_view(), &row_params)
        .unwrap();
    let first_version = s.clone_dtoh(&out).unwrap();
    assert_eq!(got, first_version, "the sampler and its first version");
    let mut cpu_differs = 0;
    for r in 0..n {
        assert!(
            !bans[r].contains(&got[r]),
            "row {r}: sampled banned id {}",
            got[r]
        );
        let row = &masked[r * vocab..(r + 1) * vocab];
        let draw = philox::uniform(seeds[r], positions[r] as usize);
        let cpu = sample(row, &params[r], draw);
        if params[r].is_greedy() {
            assert_eq!(got[r], cpu, "row {r}: greedy on the masked row");
        } else if got[r] != cpu {
            cpu_differs += 1;
        }
    }
    println!("{n} rows masked then sampled; the CPU differs on {cpu_differs} random rows");
    assert!(
        cpu_differs * 100 <= n,
        "{cpu_differs} of {n} rows differ from the CPU"
    );

    // One id left in the row: every sampler takes it.
    let vocab = 7;
    let one: Vec<bf16> = (0..vocab).map(|i| bf16::from_f32(i as f32)).collect();
    let banned: Vec<u32> = (0..vocab as u32).filter(|&i| i != 2).collect();
    let mut d1 = s.clone_htod(&one).unwrap();
    let (r1, i1) = (
        s.clone_htod(&vec![0u32; banned.len()]).unwrap(),
        s.clone_htod(&banned).unwrap(),
    );
    k.mask_logits(s, &mut d1.as_view_mut(), 1, &r1.as_view(), &i1.as_view())
        .unwrap();
    for (temperature, top_k, top_p) in [
        (0.0f32, 0u32, 1.0f32),
        (1.0, 0, 1.0),
        (2.0, 3, 0.5),
        (0.7, 1, 1.0),
    ] {
        let (t, kk, p) = (
            s.clone_htod(&vec![temperature]).unwrap(),
            s.clone_htod(&vec![top_k]).unwrap(),
            s.clone_htod(&vec![top_p]).unwrap(),
        );
        let (sd, ps) = (
            s.clone_htod(&vec![7u64]).unwrap(),
            s.clone_htod(&vec![3u64]).unwrap(),
        );
        let (tv, kv, pv, sv, psv) = (
            t.as_view(),
            kk.as_view(),
            p.as_view(),
            sd.as_view(),
            ps.as_view(),
        );
        let rp = RowParams {
            temperature: &tv,
            top_k: &kv,
            top_p: &pv,
            seed: &sv,
            position: &psv,
        };
        let mut out = s.clone_htod(&vec![u32::MAX]).unwrap();
        k.sample(s, &mut out.as_view_mut(), &d1.as_view(), &rp)
            .unwrap();
        assert_eq!(
            s.clone_dtoh(&out).unwrap(),
            vec![2],
            "t {temperature} k {top_k} p {top_p}"
        );
    }
}
