//! The fused qkv kernel against the three kernels it replaces (split_columns, rotary_embedding,
//! reshape_and_cache), run on the same inputs: the results must be equal bit for bit, q, every
//! written cache row, and every row left alone (NaN-poisoned), with padding rows
//! (`PADDING_SLOT`) writing q only. The three kernels are each checked against f64 in their
//! own tests.
mod common;

use common::{gpu_or_skip, poisoned, Rng};
use kernels::qkv_rotary_cache::QkvShape;
use kernels::reshape_and_cache::PADDING_SLOT;

#[test]
fn fused_qkv_equals_split_rotary_and_cache() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels);
    let mut rng = Rng::fresh("qkv_rotary_cache");
    const MAX_POS: usize = 2048;
    // (tokens, heads, kv heads, head_dim, slots): SmolLM2, Llama-3.2-1B, d 128, one token.
    for (t, nh, nkv, d, slots) in [
        (37, 9, 3, 64, 160),
        (5, 32, 8, 64, 64),
        (13, 4, 2, 128, 32),
        (1, 8, 8, 128, 4),
    ] {
        let (qw, kvw) = (nh * d, nkv * d);
        let qkv = rng.bf16s(t * (qw + 2 * kvw), 1.0);
        let table: Vec<f32> = (0..MAX_POS * d).map(|_| rng.normal(1.0) as f32).collect();
        let positions: Vec<u32> = (0..t).map(|_| rng.below(MAX_POS) as u32).collect();
        // Distinct slots; every fourth token a padding row.
        let slot_mapping: Vec<u64> = rng.permutation(slots)[..t]
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 4 == 3 { PADDING_SLOT } else { v as u64 })
            .collect();
        let dqkv = s.clone_htod(&qkv).unwrap();
        let dtable = s.clone_htod(&table).unwrap();
        let dpos = s.clone_htod(&positions).unwrap();
        let dslots = s.clone_htod(&slot_mapping).unwrap();

        // The three kernels.
        let (mut q, mut kk, mut v) = (
            poisoned(s, t * qw),
            poisoned(s, t * kvw),
            poisoned(s, t * kvw),
        );
        k.split_columns
            .split3(
                s,
                [
                    &mut q.as_view_mut(),
                    &mut kk.as_view_mut(),
                    &mut v.as_view_mut(),
                ],
                &dqkv.as_view(),
                t,
            )
            .unwrap();
        k.rotary_embedding
            .rotary_embedding(
                s,
                &dpos.as_view(),
                &mut q.as_view_mut(),
                &mut kk.as_view_mut(),
                &dtable.as_view(),
                nh,
                nkv,
                d,
            )
            .unwrap();
        let (mut kc1, mut vc1) = (poisoned(s, slots * kvw), poisoned(s, slots * kvw));
        k.reshape_and_cache
            .reshape_and_cache(
                s,
                &kk.as_view(),
                &v.as_view(),
                &mut kc1.as_view_mut(),
                &mut vc1.as_view_mut(),
                &dslots.as_view(),
                kvw,
            )
            .unwrap();

        // The fused kernel.
        let mut q2 = poisoned(s, t * qw);
        let (mut kc2, mut vc2) = (poisoned(s, slots * kvw), poisoned(s, slots * kvw));
        let shape = QkvShape {
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
        };
        k.qkv_rotary_cache
            .forward(
                s,
                &mut q2.as_view_mut(),
                &mut kc2.as_view_mut(),
                &mut vc2.as_view_mut(),
                &dqkv.as_view(),
                &dpos.as_view(),
                &dslots.as_view(),
                &dtable.as_view(),
                shape,
            )
            .unwrap();

        let bits = |b: &kernels::cudarc::driver::CudaSlice<half::bf16>| -> Vec<u16> {
            s.clone_dtoh(b)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let what = format!("[{t} tokens, {nh}/{nkv} heads, d {d}]");
        assert_eq!(bits(&q2), bits(&q), "q {what}");
        assert_eq!(bits(&kc2), bits(&kc1), "key cache {what}");
        assert_eq!(bits(&vc2), bits(&vc1), "value cache {what}");
        println!(
            "qkv_rotary_cache {what}: equal to split + rotary + reshape_and_cache, bit for bit"
        );
    }
}
