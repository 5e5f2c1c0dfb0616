//! o_proj's GEMV merging split decode attention's partitions in its prologue
//! (`Gemv::forward_merged` after `PagedAttention::decode_unmerged`) against the two launches it
//! replaces (`decode`, whose reduce kernel merges, then `Gemv::forward`): the same bf16 values
//! go into the same products, so the outputs agree bit for bit. Batches of 1-4 sequences with
//! contexts split into several partitions (the small-batch split), outputs poisoned first. And both against an f64 reference of attention
//! followed by the projection.
mod common;

use common::{assert_close, gpu_or_skip, poisoned, to_f64, Rng, BF16_BOUND};
use kernels::paged_attention::{DecodeShape, SplitKWorkspace};

#[test]
fn merged_gemv_equals_reduce_then_gemv() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let (pa, gemv) = (&gpu.kernels.paged_attention, &gpu.kernels.gemv);
    let mut rng = Rng::fresh("gemv_merge");
    let mut ws = SplitKWorkspace::new(s, 1, 64).unwrap();
    // (query heads, KV heads, hidden, context lengths)
    // SmolLM2-135M's attention at batches 1-4, one TP rank's share of it (3 heads), and a
    // small model's. (Llama-3.2-1B's o_proj runs split-K, where the GEMV does not merge.)
    let cases: [(usize, usize, usize, &[usize]); 5] = [
        (9, 3, 576, &[190]),
        (9, 3, 576, &[1, 700]),
        (9, 3, 576, &[64, 65, 300, 2049]),
        (3, 1, 576, &[190, 33, 1000]),
        (4, 2, 256, &[17, 129]),
    ];
    assert!(
        !gemv.merges(1, 2048, 2048),
        "Llama-3.2-1B's o_proj is split-K at one token; the merge is not for it"
    );
    let (d, bs) = (64, 16);
    let mut split_seen = false;
    for (nh, nkv, hidden, lens) in cases {
        let n = lens.len();
        let max_len = *lens.iter().max().unwrap();
        let max_blocks = max_len.div_ceil(bs);
        let num_blocks: usize = lens.iter().map(|l| l.div_ceil(bs)).sum::<usize>() + 2;
        let order = rng.permutation(num_blocks);
        let mut tables = vec![0u32; n * max_blocks];
        let mut next = 0;
        for (i, &len) in lens.iter().enumerate() {
            for b in 0..len.div_ceil(bs) {
                tables[i * max_blocks + b] = order[next] as u32;
                next += 1;
            }
        }
        let kv_len = num_blocks * bs * nkv * d;
        let (kc, vc) = (rng.bf16s(kv_len, 1.0), rng.bf16s(kv_len, 1.0));
        let q = rng.bf16s(n * nh * d, 3.0);
        let w = rng.bf16s(hidden * nh * d, 0.05);
        let lens32: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
        let (dq, dkc, dvc) = (
            s.clone_htod(&q).unwrap(),
            s.clone_htod(&kc).unwrap(),
            s.clone_htod(&vc).unwrap(),
        );
        let (dt, dl, dw) = (
            s.clone_htod(&tables).unwrap(),
            s.clone_htod(&lens32).unwrap(),
            s.clone_htod(&w).unwrap(),
        );
        let shape = DecodeShape {
            num_seqs: n,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            block_size: bs,
            max_blocks_per_seq: max_blocks,
        };
        let scale = 1.0 / (d as f32).sqrt();
        let what = format!("{nh}/{nkv} heads, hidden {hidden}, lens {lens:?}");
        assert!(
            gemv.merges(n, hidden, nh * d),
            "{what}: the merge should take this shape"
        );

        // The two launches: decode (its reduce kernel merges), then the plain GEMV.
        let mut attn = poisoned(s, n * nh * d);
        pa.decode(
            s,
            &mut ws,
            &mut attn.as_view_mut(),
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
        let mut want = poisoned(s, n * hidden);
        gemv.forward(
            s,
            &mut want.as_view_mut(),
            &attn.as_view(),
            &dw.as_view(),
            None,
            n,
        )
        .unwrap();
        let attn_host = s.clone_dtoh(&attn).unwrap();
        let want = s.clone_dtoh(&want).unwrap();

        // The one: decode without its merge, then the GEMV that merges.
        let mut unused = poisoned(s, n * nh * d);
        let parts = pa
            .decode_unmerged(
                s,
                &mut ws,
                &mut unused.as_view_mut(),
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
        assert!(parts.count > 1, "{what}: a small batch splits its contexts");
        split_seen = true;
        let mut got = poisoned(s, n * hidden);
        gemv.forward_merged(
            s,
            &mut got.as_view_mut(),
            &ws,
            &dl.as_view(),
            parts,
            d,
            &dw.as_view(),
            None,
            n,
        )
        .unwrap();
        let got = s.clone_dtoh(&got).unwrap();
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "{what}: {differ} of {} outputs differ from reduce + GEMV",
            got.len()
        );

        // Both against f64: attention's bf16 output (checked by paged_attention's own test)
        // times W.
        let (af, wf) = (to_f64(&attn_host), to_f64(&w));
        let k = nh * d;
        let reference: Vec<f64> = (0..n * hidden)
            .map(|i| {
                let (t, f) = (i / hidden, i % hidden);
                (0..k).map(|j| af[t * k + j] * wf[f * k + j]).sum()
            })
            .collect();
        assert_close(&what, &got, &reference, BF16_BOUND);
    }
    assert!(split_seen);
}
