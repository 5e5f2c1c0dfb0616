//! Device argmax against the CPU sampler's (`engine::sampler::argmax`: the first index of the
//! maximum, a NaN never the maximum), with many ties: logits are drawn from a few values, so
//! the lowest-id rule is exercised in every row; and rows with NaN and infinities.
mod common;

use common::{gpu_or_skip, Rng};
use engine::sampler::argmax as cpu_argmax;
use half::bf16;

#[test]
fn argmax_picks_the_lowest_id_among_the_largest() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.sampling);
    let mut rng = Rng::fresh("argmax");
    // (num_seqs, vocab_size, distinct values): heavy ties, a few ties, real vocabularies.
    for (n, vocab, levels) in [
        (4, 49152, 7),
        (3, 128256, 1000),
        (1, 128256, 3),
        (5, 7, 2),
        (4, 2000, 5),
        (33, 2000, 5),
        (64, 1000, 50),
    ] {
        let mut logits: Vec<f32> = (0..n * vocab)
            .map(|_| bf16::from_f32(rng.below(levels) as f32 * 0.25 - 3.0).to_f32())
            .collect();
        logits[..vocab].fill(-1.0); // an all-equal row: id 0
                                    // Rows the CPU and the device must read alike however a model goes wrong: a NaN at
                                    // id 0 (the old host loop returned it) and later on, a row of NaN (id 0), a row of
                                    // -inf (id 0), +inf at the end and twice.
        if n >= 3 && vocab >= 7 {
            let row = |r: usize| r * vocab..(r + 1) * vocab;
            logits[vocab] = f32::NAN;
            logits[vocab + vocab / 2] = f32::NAN;
            logits[row(2)].fill(f32::NAN);
            if n >= 4 {
                logits[row(3)].fill(f32::NEG_INFINITY);
            }
            if n >= 5 {
                logits[5 * vocab - 1] = f32::INFINITY;
                logits[4 * vocab + 3] = f32::INFINITY;
            }
        }
        let want: Vec<u32> = logits.chunks(vocab).map(cpu_argmax).collect();
        let as_bf16: Vec<bf16> = logits.iter().map(|&v| bf16::from_f32(v)).collect();
        let (d32, d16) = (
            s.clone_htod(&logits).unwrap(),
            s.clone_htod(&as_bf16).unwrap(),
        );
        let mut out = s.clone_htod(&vec![u32::MAX; n]).unwrap();
        k.argmax(s, &mut out.as_view_mut(), &d16.as_view()).unwrap();
        assert_eq!(
            s.clone_dtoh(&out).unwrap(),
            want,
            "bf16 argmax [{n}, {vocab}]"
        );
        let mut out = s.clone_htod(&vec![u32::MAX; n]).unwrap();
        k.argmax_f32(s, &mut out.as_view_mut(), &d32.as_view())
            .unwrap();
        assert_eq!(
            s.clone_dtoh(&out).unwrap(),
            want,
            "f32 argmax [{n}, {vocab}]"
        );
        // The sampler's greedy rows: up to 4 rows each split over blocks that merge their
        // slices' best (the last block of a row by ticket), beyond one block a row. Run twice,
        // as graph replays would: each row's ticket must have been reset.
        for round in 0..2 {
            let zeros_f = s.clone_htod(&vec![0.0f32; n]).unwrap();
            let zeros_u = s.clone_htod(&vec![0u32; n]).unwrap();
            let ones = s.clone_htod(&vec![1.0f32; n]).unwrap();
            let zeros_64 = s.clone_htod(&vec![0u64; n]).unwrap();
            let (t, k0, p1, z) = (
                zeros_f.as_view(),
                zeros_u.as_view(),
                ones.as_view(),
                zeros_64.as_view(),
            );
            let params = kernels::sampling::RowParams {
                temperature: &t,
                top_k: &k0,
                top_p: &p1,
                seed: &z,
                position: &z,
            };
            let mut out = s.clone_htod(&vec![u32::MAX; n]).unwrap();
            k.sample(s, &mut out.as_view_mut(), &d16.as_view(), &params)
                .unwrap();
            assert_eq!(
                s.clone_dtoh(&out).unwrap(),
                want,
                "bf16 greedy sample [{n}, {vocab}], round {round}"
            );
            let mut out = s.clone_htod(&vec![u32::MAX; n]).unwrap();
            k.sample_f32(s, &mut out.as_view_mut(), &d32.as_view(), &params)
                .unwrap();
            assert_eq!(
                s.clone_dtoh(&out).unwrap(),
                want,
                "f32 greedy sample [{n}, {vocab}], round {round}"
            );
        }
        println!("argmax [{n}, {vocab}], {levels} distinct values: exact (argmax and the sampler's greedy rows)");
    }
}
