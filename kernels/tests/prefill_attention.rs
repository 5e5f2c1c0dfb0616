//! Prefill attention on mixed batches against an f64 reference that follows the block tables:
//! whole prompts, chunks after a cached prefix, decode rows (chunks of 1) in one batch; chunk
//! lengths that are not multiples of the 64-row tile; contexts up to ~2000; GQA groups 1, 3
//! and 4; head sizes 64 and 128; block sizes 7 and 16; and one batch drawn at random.
//! Every cache slot that no sequence owns below its length holds NaN (unused blocks, the tail
//! of each last block): a kernel that reads one, even to multiply it by a zero weight, returns
//! NaN and fails. Outputs start as NaN, so an unwritten row fails too.
//!
//! Bound: relative L2 1e-2, as the other tests (see `common`). Inputs are exact bf16 values;
//! the kernel accumulates in f32 and rounds twice: the probabilities P to bf16 before the
//! P·V matmul (the tensor cores take bf16, as in FlashAttention) and the output, so ~2e-3 is
//! expected; a key of weight skipped or misplaced, or a wrong tile, lands far above 1e-2.
mod common;

use common::{assert_close, gpu_or_skip, poisoned, to_f64, Rng, BF16_BOUND};
use half::bf16;
use kernels::prefill_attention::{PrefillShape, BLOCK_MS};

struct Case {
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    /// Per sequence: (cached prefix, new tokens). `seq_len` = their sum.
    chunks: Vec<(usize, usize)>,
}

fn cases(rng: &mut Rng) -> Vec<Case> {
    let mut v = vec![
        // Llama-3.2-1B heads (group 4), d 128: a prompt, a decode row, a chunk after a prefix.
        Case {
            num_heads: 32,
            num_kv_heads: 8,
            head_dim: 128,
            block_size: 16,
            chunks: vec![(0, 200), (37, 1), (300, 65), (0, 1)],
        },
        // Multi-head (group 1), d 64, odd block size.
        Case {
            num_heads: 4,
            num_kv_heads: 4,
            head_dim: 64,
            block_size: 7,
            chunks: vec![(129, 100), (0, 333), (5, 1)],
        },
        // Long context: a 500-row chunk after 1500 cached tokens, d 128, block 7.
        Case {
            num_heads: 8,
            num_kv_heads: 2,
            head_dim: 128,
            block_size: 7,
            chunks: vec![(1500, 500), (0, 64), (250, 130)],
        },
        // SmolLM2-135M heads (group 3), d 64: a 1999-token prompt beside a decode row.
        Case {
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            block_size: 16,
            chunks: vec![(0, 1999), (100, 1)],
        },
    ];
    // A random batch: 6 sequences, prefixes 0..400, chunks 1..300.
    let d = if rng.below(2) == 0 { 64 } else { 128 };
    let bs = if rng.below(2) == 0 { 7 } else { 16 };
    v.push(Case {
        num_heads: 8,
        num_kv_heads: if rng.below(2) == 0 { 8 } else { 2 },
        head_dim: d,
        block_size: bs,
        chunks: (0..6)
            .map(|_| (rng.below(400), 1 + rng.below(300)))
            .collect(),
    });
    v
}

#[test]
fn prefill_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let mut rng = Rng::fresh("prefill_attention");
    let variants = BLOCK_MS.map(|m| {
        let k = gpu.kernels.prefill_attention.clone();
        k.with_block_m(m).unwrap()
    });
    for c in cases(&mut rng) {
        let (nh, nkv, d, bs) = (c.num_heads, c.num_kv_heads, c.head_dim, c.block_size);
        let n = c.chunks.len();
        let seq_lens: Vec<usize> = c.chunks.iter().map(|&(p, q)| p + q).collect();
        let mut qsl = vec![0usize];
        for &(_, q) in &c.chunks {
            qsl.push(qsl.last().unwrap() + q);
        }
        let num_tokens = qsl[n];
        let max_query_len = c.chunks.iter().map(|&(_, q)| q).max().unwrap();
        let max_blocks = seq_lens.iter().max().unwrap().div_ceil(bs);
        let needed: usize = seq_lens.iter().map(|l| l.div_ceil(bs)).sum();
        let num_blocks = needed + 3; // some blocks belong to nobody
        let order = rng.permutation(num_blocks);
        let mut tables = vec![0u32; n * max_blocks];
        let mut next = 0;
        for (i, &len) in seq_lens.iter().enumerate() {
            for b in 0..len.div_ceil(bs) {
                tables[i * max_blocks + b] = order[next] as u32;
                next += 1;
            }
        }
        // Cache: NaN everywhere, random values in the slots of positions 0..seq_len.
        let row = nkv * d;
        let (mut kc, mut vc) = (
            vec![bf16::NAN; num_blocks * bs * row],
            vec![bf16::NAN; num_blocks * bs * row],
        );
        let slot = |i: usize, p: usize| tables[i * max_blocks + p / bs] as usize * bs + p % bs;
        for (i, &len) in seq_lens.iter().enumerate() {
            for p in 0..len {
                let at = slot(i, p) * row;
                kc[at..at + row].copy_from_slice(&rng.bf16s(row, 1.0));
                vc[at..at + row].copy_from_slice(&rng.bf16s(row, 1.0));
            }
        }
        let q = rng.bf16s(num_tokens * nh * d, 3.0);
        let scale = 1.0 / (d as f32).sqrt();

        let to32 = |v: &[usize]| v.iter().map(|&x| x as u32).collect::<Vec<u32>>();
        let dq = s.clone_htod(&q).unwrap();
        let (dkc, dvc) = (s.clone_htod(&kc).unwrap(), s.clone_htod(&vc).unwrap());
        let dt = s.clone_htod(&tables).unwrap();
        let dl = s.clone_htod(&to32(&seq_lens)).unwrap();
        let dqsl = s.clone_htod(&to32(&qsl)).unwrap();
        let shape = PrefillShape {
            num_seqs: n,
            num_tokens,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            block_size: bs,
            max_blocks_per_seq: max_blocks,
        };

        // f64 reference: row j of sequence i sits at position seq_len - n_new + j and sees
        // keys 0..=that position, read through the block table.
        let (qf, kf, vf) = (to_f64(&q), to_f64(&kc), to_f64(&vc));
        let mut want = vec![0.0f64; num_tokens * nh * d];
        let mut scores = Vec::new();
        for (i, &(prefix, new)) in c.chunks.iter().enumerate() {
            for j in 0..new {
                let (t, pos) = (qsl[i] + j, prefix + j);
                for h in 0..nh {
                    let kvh = h / (nh / nkv);
                    let qv = &qf[(t * nh + h) * d..][..d];
                    let at = |p: usize| (slot(i, p) * nkv + kvh) * d;
                    scores.clear();
                    scores.extend((0..=pos).map(|p| {
                        let kr = &kf[at(p)..][..d];
                        qv.iter().zip(kr).map(|(a, b)| a * b).sum::<f64>() * scale as f64
                    }));
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = scores.iter().map(|x| (x - m).exp()).sum();
                    let o = &mut want[(t * nh + h) * d..][..d];
                    for (p, sc) in scores.iter().enumerate() {
                        let w = (sc - m).exp() / sum;
                        let vr = &vf[at(p)..][..d];
                        o.iter_mut().zip(vr).for_each(|(o, v)| *o += w * v);
                    }
                }
            }
        }
        // Both variants (64- and 128-row tiles) on the same batch, each into a fresh NaN output.
        for k in &variants {
            let mut out = poisoned(s, num_tokens * nh * d);
            k.forward(
                s,
                &mut out.as_view_mut(),
                &dq.as_view(),
                &dkc.as_view(),
                &dvc.as_view(),
                &dt.as_view(),
                &dl.as_view(),
                &dqsl.as_view(),
                &shape,
                scale,
                max_query_len,
            )
            .unwrap();
            let got = s.clone_dtoh(&out).unwrap();
            let what = format!(
                "prefill {nh}/{nkv} heads, d {d}, block {bs}, tile {}, (prefix, new) {:?}",
                k.block_m(),
                c.chunks
            );
            assert_close(&what, &got, &want, BF16_BOUND);
        }
    }
}
