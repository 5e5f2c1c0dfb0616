//! Embedding lookup is a copy: exact check, plus the NaN row for an id past the table.
mod common;

use common::{gpu_or_skip, poisoned, Rng};

#[test]
fn embedding_copies_rows_and_flags_bad_ids() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.embedding);
    let mut rng = Rng::fresh("embedding");
    // (vocab_size, hidden_size, num_tokens)
    for (vocab, h, t) in [(1000, 576, 17), (50, 30, 5), (49152, 2048, 3)] {
        let table = rng.bf16s(vocab * h, 1.0);
        let mut ids: Vec<u32> = (0..t).map(|_| rng.below(vocab) as u32).collect();
        ids[t - 1] = vocab as u32; // one past the table
        let (dt, di) = (s.clone_htod(&table).unwrap(), s.clone_htod(&ids).unwrap());
        let mut out = poisoned(s, t * h);
        k.embedding(s, &mut out.as_view_mut(), &di.as_view(), &dt.as_view(), h)
            .unwrap();
        let got = s.clone_dtoh(&out).unwrap();
        for (i, &id) in ids[..t - 1].iter().enumerate() {
            assert_eq!(
                &got[i * h..][..h],
                &table[id as usize * h..][..h],
                "token {i}, id {id}"
            );
        }
        assert!(
            got[(t - 1) * h..].iter().all(|v| v.is_nan()),
            "bad id must give NaN"
        );
        println!("embedding [{vocab}, {h}] x {t} tokens: exact");
    }
}

#[test]
fn vocab_parallel_embedding_zeroes_other_ranks_rows() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.embedding);
    let mut rng = Rng::fresh("vocab_parallel_embedding");
    // (vocab, hidden, ranks): SmolLM2's vocabulary over 3 ranks (it divides), an uneven one
    // padded to a multiple of 4 as the engine pads it.
    for (vocab, h, ranks) in [(49152usize, 576usize, 3usize), (1003, 64, 4)] {
        let rows = vocab.div_ceil(ranks);
        let table = rng.bf16s(rows * ranks * h, 1.0);
        let mut ids: Vec<u32> = (0..40).map(|_| rng.below(vocab) as u32).collect();
        ids.extend([
            0,
            (rows - 1) as u32,
            rows as u32,
            (vocab - 1) as u32,
            vocab as u32,
        ]);
        let di = s.clone_htod(&ids).unwrap();
        let mut sum = vec![0.0f32; ids.len() * h];
        for r in 0..ranks {
            let shard = s
                .clone_htod(&table[r * rows * h..(r + 1) * rows * h])
                .unwrap();
            let mut out = poisoned(s, ids.len() * h);
            k.vocab_parallel(
                s,
                &mut out.as_view_mut(),
                &di.as_view(),
                &shard.as_view(),
                r * rows,
                vocab,
                h,
            )
            .unwrap();
            for (acc, v) in sum.iter_mut().zip(s.clone_dtoh(&out).unwrap()) {
                *acc += v.to_f32();
            }
        }
        // Summed over the ranks (the all-reduce), every id in the vocabulary is its own row
        // exactly once; the id past it stays NaN.
        for (i, &id) in ids.iter().enumerate() {
            let got = &sum[i * h..][..h];
            if (id as usize) < vocab {
                let want: Vec<f32> = table[id as usize * h..][..h]
                    .iter()
                    .map(|v| v.to_f32())
                    .collect();
                assert_eq!(got, &want[..], "id {id} over {ranks} ranks");
            } else {
                assert!(
                    got.iter().all(|v| v.is_nan()),
                    "id {id} past the vocabulary must give NaN"
                );
            }
        }
        println!("vocab-parallel embedding [{vocab}, {h}] over {ranks} ranks: exact");
    }
}
