//! Each CPU kernel against a plain f64 reference on random inputs, and the linear kernel's
//! batch invariance (a token's output does not depend on the rest of the batch).

use engine::attention::attention_metadata::AttentionMetadata;
use engine::ops::{linear::linear, paged_attention::paged_attention, rms_norm::rms_norm};
use proptest::prelude::*;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn linear_matches_f64_and_is_batch_invariant(t in 1usize..40, k in 1usize..70, n in 1usize..150, seed: u64) {
        let x = values(t * k, seed);
        let w = values(n * k, seed ^ 1);
        let b = values(n, seed ^ 2);
        let mut out = vec![0.0; t * n];
        linear(&mut out, &x, &w, Some(&b), t);
        for j in 0..t {
            for r in 0..n {
                let want: f64 = (0..k).map(|c| x[j * k + c] as f64 * w[r * k + c] as f64).sum::<f64>() + b[r] as f64;
                prop_assert!((out[j * n + r] as f64 - want).abs() < 1e-4 * (1.0 + k as f64).sqrt());
            }
            let mut alone = vec![0.0; n];
            linear(&mut alone, &x[j * k..(j + 1) * k], &w, Some(&b), 1);
            prop_assert_eq!(&alone[..], &out[j * n..(j + 1) * n], "token {} differs alone", j);
        }
    }

    #[test]
    fn rms_norm_matches_f64(t in 1usize..5, h in 1usize..100, seed: u64) {
        let x = values(t * h, seed);
        let w = values(h, seed ^ 3);
        let mut out = vec![0.0; t * h];
        rms_norm(&mut out, &x, &w, 1e-5);
        for r in 0..t {
            let row = &x[r * h..(r + 1) * h];
            let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / h as f64;
            for i in 0..h {
                let want = row[i] as f64 / (ms + 1e-5).sqrt() * w[i] as f64;
                prop_assert!((out[r * h + i] as f64 - want).abs() < 1e-4);
            }
        }
    }

    /// Paged attention over scattered blocks equals dense causal attention in f64.
    #[test]
    fn paged_attention_matches_dense(
        seq_lens in prop::collection::vec(1usize..40, 1..4),
        new_frac in 0.0f64..1.0,
        block_size in 1usize..9,
        kv_heads in 1usize..3,
        group in 1usize..4,
        seed: u64,
    ) {
        let d = 8;
        let heads = kv_heads * group;
        let kv_row = kv_heads * d;
        let blocks_per_seq: Vec<usize> = seq_lens.iter().map(|l| l.div_ceil(block_size)).collect();
        let num_blocks: usize = blocks_per_seq.iter().sum();
        // Hand out blocks in a scrambled order so tables are not contiguous.
        let mut order: Vec<u32> = (0..num_blocks as u32).collect();
        order.sort_by_key(|b| (b.wrapping_mul(2654435761) ^ seed as u32) % 1000);
        let keys = values(num_blocks * block_size * kv_row, seed ^ 4);
        let vals = values(num_blocks * block_size * kv_row, seed ^ 5);
        let mut meta = AttentionMetadata { block_size, ..Default::default() };
        meta.max_blocks_per_seq = *blocks_per_seq.iter().max().unwrap();
        meta.query_start_loc.push(0);
        let mut next = 0;
        let mut tables = vec![];
        for (&len, &nb) in seq_lens.iter().zip(&blocks_per_seq) {
            let table: Vec<u32> = order[next..next + nb].to_vec();
            next += nb;
            let q_len = ((len as f64 * new_frac).ceil() as usize).clamp(1, len);
            for p in len - q_len..len {
                let slot = table[p / block_size] as u64 * block_size as u64 + (p % block_size) as u64;
                meta.slot_mapping.push(slot);
            }
            meta.query_start_loc.push(meta.slot_mapping.len());
            meta.seq_lens.push(len);
            let mut row = table.clone();
            row.resize(meta.max_blocks_per_seq, 0);
            meta.block_tables.extend(row);
            tables.push(table);
        }
        let t = meta.slot_mapping.len();
        let q = values(t * heads * d, seed ^ 6);
        let mut out = vec![0.0; t * heads * d];
        let scale = 1.0 / (d as f32).sqrt();
        paged_attention(&mut out, &q, &keys, &vals, kv_heads, d, scale, &meta);

        for (s, table) in tables.iter().enumerate() {
            let (start, end) = (meta.query_start_loc[s], meta.query_start_loc[s + 1]);
            let len = meta.seq_lens[s];
            for (j, row) in (start..end).enumerate() {
                let pos = len - (end - start) + j;
                for h in 0..heads {
                    let kvh = h / group;
                    let at = |cache: &[f32], p: usize, i: usize| {
                        let slot = table[p / block_size] as usize * block_size + p % block_size;
                        cache[slot * kv_row + kvh * d + i] as f64
                    };
                    let qv = |i: usize| q[row * heads * d + h * d + i] as f64;
                    let sc: Vec<f64> = (0..=pos)
                        .map(|p| (0..d).map(|i| qv(i) * at(&keys, p, i)).sum::<f64>() * scale as f64)
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|v| (v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for i in 0..d {
                        let want: f64 = (0..=pos).map(|p| e[p] / z * at(&vals, p, i)).sum();
                        let got = out[row * heads * d + h * d + i] as f64;
                        prop_assert!((got - want).abs() < 1e-5, "seq {s} token {j} head {h}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
