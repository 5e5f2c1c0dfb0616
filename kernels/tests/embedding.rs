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
