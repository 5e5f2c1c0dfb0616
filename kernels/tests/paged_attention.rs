//! Decode paged attention against an f64 reference that follows the block tables, for short
//! contexts (single pass), long ones (4000+ tokens: split-K with partial last partitions),
//! single sequences split to fill the GPU (with that split turned off too), GQA groups 1, 2,
//! 3, 4, 6 and 8, head sizes 64 and 128, every ring of both decode kernels (`rings`: the
//! default and the mma variant), and the wide single pass of small batches. Blocks are handed
//! out in random order, and queries are scaled so that softmax is peaked: a missed or misplaced key of weight moves
//! the output well past the bound. Every launch shares one split-K workspace, as the engine's
//! do: a merge ticket left non-zero by one launch would leave the next one's output unwritten
//! (poisoned), and a merge that read a partition before it was written would be off.
mod common;

use common::{assert_close, gpu_or_skip, poisoned, to_f64, Rng, BF16_BOUND};
use kernels::paged_attention::{
    heads_per_block, rings, wide_ring, DecodeShape, SplitKWorkspace, SplitMerge, PARTITION_SIZE,
};

struct Case {
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    seq_lens: &'static [usize],
}

const CASES: [Case; 11] = [
    // Batch 1 (SmolLM2's heads): split over many blocks, the last partition partial.
    Case {
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        block_size: 16,
        seq_lens: &[190],
    },
    // Batch 1, one token: only the first partition has work.
    Case {
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        block_size: 16,
        seq_lens: &[1],
    },
    // Batch 1 (Llama-3.2-1B's heads), long: the small-batch split, partitions of 288 tokens.
    Case {
        num_heads: 32,
        num_kv_heads: 8,
        head_dim: 64,
        block_size: 16,
        seq_lens: &[4099],
    },
    // SmolLM2-135M's heads, short contexts: single pass.
    Case {
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        block_size: 16,
        seq_lens: &[1, 17, 500],
    },
    // Llama-3.2-1B's heads, long contexts: split-K, uneven partitions, a 1-token sequence.
    Case {
        num_heads: 32,
        num_kv_heads: 8,
        head_dim: 64,
        block_size: 16,
        seq_lens: &[4099, 1, 513, 2000],
    },
    // head_dim 128, 8 query heads per KV head, odd block size.
    Case {
        num_heads: 8,
        num_kv_heads: 1,
        head_dim: 128,
        block_size: 7,
        seq_lens: &[4500, 37],
    },
    // Multi-head (group 1), head_dim 128.
    Case {
        num_heads: 4,
        num_kv_heads: 4,
        head_dim: 128,
        block_size: 32,
        seq_lens: &[777, 5, 512],
    },
    // Group 2 (2 query heads per block), head_dim 128: contexts that end inside the first,
    // second and last warp's rows of a tile (the mma kernel's warps own 8 or 16 rows each),
    // and a split one.
    Case {
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 128,
        block_size: 16,
        seq_lens: &[8, 9, 40, 95, 600],
    },
    // Group 2, head_dim 64: the same at 64- and 128-token tiles (16 and 32 rows per warp).
    Case {
        num_heads: 6,
        num_kv_heads: 3,
        head_dim: 64,
        block_size: 16,
        seq_lens: &[15, 16, 17, 100, 130],
    },
    // Group 4, head_dim 128, contexts up to PARTITION_SIZE: the wide single pass at head size
    // 128 (8 rows per warp), contexts ending inside the first and second warp's rows.
    Case {
        num_heads: 8,
        num_kv_heads: 2,
        head_dim: 128,
        block_size: 16,
        seq_lens: &[8, 9, 129, 300, 512],
    },
    // Group 6: two blocks of 3 query heads per KV head.
    Case {
        num_heads: 12,
        num_kv_heads: 2,
        head_dim: 64,
        block_size: 16,
        seq_lens: &[600, 1025],
    },
];

#[test]
fn decode_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.paged_attention);
    let mut rng = Rng::fresh("paged_attention");
    let mut ws = SplitKWorkspace::new(s, 1, 64).unwrap();
    let (mut long_split_seen, mut small_split_seen) = (false, false);
    let mut wide_seen = [false; 2]; // head sizes 64, 128
    for c in &CASES {
        let (nh, nkv, d, bs) = (c.num_heads, c.num_kv_heads, c.head_dim, c.block_size);
        let n = c.seq_lens.len();
        let max_len = *c.seq_lens.iter().max().unwrap();
        let max_blocks = max_len.div_ceil(bs);
        let needed: usize = c.seq_lens.iter().map(|l| l.div_ceil(bs)).sum();
        let num_blocks = needed + 3; // some blocks belong to nobody
                                     // Hand out blocks in random order; pad tables with 0 as the engine does.
        let order = rng.permutation(num_blocks);
        let mut tables = vec![0u32; n * max_blocks];
        let mut next = 0;
        for (i, &len) in c.seq_lens.iter().enumerate() {
            for b in 0..len.div_ceil(bs) {
                tables[i * max_blocks + b] = order[next] as u32;
                next += 1;
            }
        }
        let kv_len = num_blocks * bs * nkv * d;
        let (kc, vc) = (rng.bf16s(kv_len, 1.0), rng.bf16s(kv_len, 1.0));
        let q = rng.bf16s(n * nh * d, 3.0);
        let scale = 1.0 / (d as f32).sqrt();
        let lens32: Vec<u32> = c.seq_lens.iter().map(|&l| l as u32).collect();

        let dq = s.clone_htod(&q).unwrap();
        let (dkc, dvc) = (s.clone_htod(&kc).unwrap(), s.clone_htod(&vc).unwrap());
        let (dt, dl) = (
            s.clone_htod(&tables).unwrap(),
            s.clone_htod(&lens32).unwrap(),
        );
        let mut out = poisoned(s, n * nh * d);
        let shape = DecodeShape {
            num_seqs: n,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            block_size: bs,
            max_blocks_per_seq: max_blocks,
        };
        // Every ring built for the head size (fresh poisoned output each), with and without the
        // small-batch split, its partitions merged by either merge.
        let mut gots = Vec::new();
        let splits = [
            (true, SplitMerge::ReduceKernel),
            (true, SplitMerge::LastBlock),
            (false, SplitMerge::ReduceKernel),
            (false, SplitMerge::LastBlock),
        ];
        // Early reads first (the tensor-core kernel copies all but each sequence's last K/V
        // row before its wait): launched before any other variant on this case's data, no
        // stale shared memory can hold the row it would have missed (a context of 1 token is
        // that row alone).
        // Each ring with its usual partitions (wide 0), and the default ring with the wide
        // single pass allowed up to PARTITION_SIZE (taken where the batch is small and its
        // contexts short enough).
        let variants = [true, false].into_iter().flat_map(|early| {
            let usual = rings(d)
                .iter()
                .flat_map(move |r| splits.map(|s| (early, *r, s, 0)));
            let wide = (rings(d).first().copied())
                .map(|r| (early, r, (true, SplitMerge::ReduceKernel), PARTITION_SIZE));
            usual.chain(wide)
        });
        for (early, ring, (small_split, merge), wide) in variants {
            let variant = k
                .clone()
                .with_ring(d, ring)
                .unwrap()
                .with_merge(merge)
                .with_small_batch_split(small_split)
                .with_early_reads(early)
                .with_wide_single_pass(wide);
            let p = variant.partitions(n, nh, nkv, d, max_len);
            long_split_seen |= p.count > 1 && p.min_tokens == PARTITION_SIZE;
            small_split_seen |= p.count > 1 && p.min_tokens < PARTITION_SIZE;
            if p.wide {
                assert!(wide > 0 && max_len <= wide && p.count == 1, "{p:?}");
                assert!(wide_ring(d).is_some(), "d {d}");
                wide_seen[usize::from(d == 128)] = true;
            }
            variant
                .decode(
                    s,
                    &mut ws,
                    &mut out.as_view_mut(),
                    &dq.as_view(),
                    &dkc.as_view(),
                    &dvc.as_view(),
                    &dt.as_view(),
                    &dl.as_view(),
                    &shape,
                    scale,
                    max_len,
                )
                .unwrap();
            gots.push((early, ring, merge, p, s.clone_dtoh(&out).unwrap()));
            out = poisoned(s, n * nh * d);
        }

        // f64 reference, following the block tables.
        let (qf, kf, vf) = (to_f64(&q), to_f64(&kc), to_f64(&vc));
        let mut want = vec![0.0f64; n * nh * d];
        for (i, &len) in c.seq_lens.iter().enumerate() {
            for h in 0..nh {
                let kvh = h / (nh / nkv);
                let qv = &qf[(i * nh + h) * d..][..d];
                let row = |p: usize| {
                    let slot = tables[i * max_blocks + p / bs] as usize * bs + p % bs;
                    (slot * nkv + kvh) * d
                };
                let scores: Vec<f64> = (0..len)
                    .map(|p| {
                        let kr = &kf[row(p)..][..d];
                        qv.iter().zip(kr).map(|(a, b)| a * b).sum::<f64>() * scale as f64
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = w.iter().sum();
                let o = &mut want[(i * nh + h) * d..][..d];
                for (p, wp) in w.iter().enumerate() {
                    let vr = &vf[row(p)..][..d];
                    o.iter_mut().zip(vr).for_each(|(o, v)| *o += wp / sum * v);
                }
            }
        }
        let what = format!(
            "decode {nh}/{nkv} heads, d {d}, block {bs}, lens {:?}",
            c.seq_lens
        );
        for (early, ring, merge, p, got) in &gots {
            let ring = format!(", {}, {merge:?}, early reads {early}", ring.describe());
            let mode = format!(
                ", {} partitions of at least {} tokens{}",
                p.count,
                p.min_tokens,
                if p.wide { ", wide single pass" } else { "" }
            );
            assert_close(&format!("{what}{ring}{mode}"), got, &want, BF16_BOUND);
        }
    }
    assert!(
        long_split_seen,
        "some case must be longer than PARTITION_SIZE = {PARTITION_SIZE}"
    );
    assert!(small_split_seen, "some case must split a small batch");
    assert_eq!(
        wide_seen, [true; 2],
        "the wide single pass at head sizes 64 and 128"
    );
}

/// Decode attention with o_proj in one launch (`PagedAttention::decode_o_proj`): each head
/// group's partial sum of o_proj's output against an f64 reference (the attention as above,
/// rounded to bf16 as the kernel keeps it, times that group's columns of W_o), for SmolLM2-135M's
/// and Llama-3.2-1B's heads at batch 1, groups of 2 to 4 heads at head sizes 64 and 128,
/// contexts of 1 to 256 tokens, rows of o_proj that do not divide among the cluster's blocks,
/// clusters of 2 to 8, early reads on and off. Partial sums are poisoned (NaN) before each
/// launch, so a row no block wrote fails. Batches the wide pass does not take are refused.
#[test]
fn attention_with_o_proj_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.paged_attention);
    let mut rng = Rng::fresh("paged_attention_o_proj");
    // (query heads, KV heads, head size, o_proj rows, sequence lengths)
    let cases: [(usize, usize, usize, usize, &[usize]); 6] = [
        (9, 3, 64, 576, &[190]),
        (9, 3, 64, 576, &[1]),
        (32, 8, 64, 2048, &[256]),
        (8, 2, 128, 333, &[129, 7]),
        (12, 2, 64, 100, &[64]),
        (4, 2, 128, 1000, &[33, 200, 250]),
    ];
    let bs = 16;
    for (nh, nkv, d, hidden, seq_lens) in cases {
        let n = seq_lens.len();
        let max_len = *seq_lens.iter().max().unwrap();
        let max_blocks = max_len.div_ceil(bs);
        let num_blocks = n * max_blocks + 2;
        let order = rng.permutation(num_blocks);
        let mut tables = vec![0u32; n * max_blocks];
        for (i, &len) in seq_lens.iter().enumerate() {
            for b in 0..len.div_ceil(bs) {
                tables[i * max_blocks + b] = order[i * max_blocks + b] as u32;
            }
        }
        let kv_len = num_blocks * bs * nkv * d;
        let (kc, vc) = (rng.bf16s(kv_len, 1.0), rng.bf16s(kv_len, 1.0));
        let q = rng.bf16s(n * nh * d, 3.0);
        let w_o = rng.bf16s(hidden * nh * d, 0.05);
        let scale = 1.0 / (d as f32).sqrt();
        let lens32: Vec<u32> = seq_lens.iter().map(|&l| l as u32).collect();
        let (dq, dw) = (s.clone_htod(&q).unwrap(), s.clone_htod(&w_o).unwrap());
        let (dkc, dvc) = (s.clone_htod(&kc).unwrap(), s.clone_htod(&vc).unwrap());
        let (dt, dl) = (
            s.clone_htod(&tables).unwrap(),
            s.clone_htod(&lens32).unwrap(),
        );
        let shape = DecodeShape {
            num_seqs: n,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            block_size: bs,
            max_blocks_per_seq: max_blocks,
        };
        let heads = heads_per_block(nh, nkv);
        let groups = nh / heads;

        // f64 reference: attention per head, rounded to bf16, then each group's columns.
        let (qf, kf, vf, wf) = (to_f64(&q), to_f64(&kc), to_f64(&vc), to_f64(&w_o));
        let mut attn = vec![0.0f64; n * nh * d];
        for (i, &len) in seq_lens.iter().enumerate() {
            for h in 0..nh {
                let kvh = h / (nh / nkv);
                let qv = &qf[(i * nh + h) * d..][..d];
                let row = |p: usize| {
                    let slot = tables[i * max_blocks + p / bs] as usize * bs + p % bs;
                    (slot * nkv + kvh) * d
                };
                let scores: Vec<f64> = (0..len)
                    .map(|p| {
                        let kr = &kf[row(p)..][..d];
                        qv.iter().zip(kr).map(|(a, b)| a * b).sum::<f64>() * scale as f64
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = w.iter().sum();
                let o = &mut attn[(i * nh + h) * d..][..d];
                for (p, wp) in w.iter().enumerate() {
                    let vr = &vf[row(p)..][..d];
                    o.iter_mut().zip(vr).for_each(|(o, v)| *o += wp / sum * v);
                }
            }
        }
        let attn: Vec<f64> = attn
            .iter()
            .map(|&x| half::bf16::from_f64(x).to_f64())
            .collect();
        let cols = heads * d;
        let mut want = vec![0.0f64; n * groups * hidden];
        for i in 0..n {
            for g in 0..groups {
                let a = &attn[(i * nh + g * heads) * d..][..cols];
                for r in 0..hidden {
                    let wr = &wf[r * nh * d + g * cols..][..cols];
                    want[(i * groups + g) * hidden + r] =
                        a.iter().zip(wr).map(|(x, y)| x * y).sum::<f64>();
                }
            }
        }

        for (early, cluster) in [true, false]
            .into_iter()
            .flat_map(|e| (2..=8).map(move |c| (e, c)))
        {
            let variant = k.clone().with_early_reads(early).with_wide_single_pass(256);
            let what = format!(
                "attention + o_proj {nh}/{nkv} heads, d {d}, {hidden} rows, lens {seq_lens:?}, \
                 cluster {cluster}, early reads {early}"
            );
            if !variant.takes_o_proj(&shape, max_len, hidden, cluster) {
                // Only where a block's rows of o_proj do not fit its shared memory.
                let bytes = hidden.div_ceil(cluster - 1) * cols * 2;
                assert!(
                    bytes > 200 * 1024,
                    "{what}: not taken ({bytes} bytes a block)"
                );
                continue;
            }
            let mut partials = s.clone_htod(&vec![f32::NAN; n * groups * hidden]).unwrap();
            variant
                .decode_o_proj(
                    s,
                    &mut partials.as_view_mut(),
                    &dq.as_view(),
                    &dkc.as_view(),
                    &dvc.as_view(),
                    &dt.as_view(),
                    &dl.as_view(),
                    &shape,
                    scale,
                    max_len,
                    &dw.as_view(),
                    cluster,
                )
                .unwrap();
            let got: Vec<f64> = s
                .clone_dtoh(&partials)
                .unwrap()
                .iter()
                .map(|&x| x as f64)
                .collect();
            let err = common::rel_l2(&got, &want);
            println!("{what}: relative L2 error {err:.2e}");
            assert!(err < BF16_BOUND, "{what}: relative L2 error {err:e}");
        }
        // Past the wide pass's reach (or with it off) the launch is refused.
        let narrow = k.clone().with_wide_single_pass(0);
        assert!(!narrow.takes_o_proj(&shape, max_len, hidden, 8));
    }
}
