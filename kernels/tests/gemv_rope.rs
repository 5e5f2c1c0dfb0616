//! `gemv_norm_rope` (norm + qkv projection + rotary + cache write in one launch) against the
//! kernels it replaces, run on the same inputs: `gemv_norm` (the same GEMV entry point with a
//! plain epilogue) then `qkv_rotary_cache`. q, the new residual stream, every written cache row
//! and every row left alone (NaN-poisoned) must be equal bit for bit, with padding rows
//! (`PADDING_SLOT`) writing q only; each entry point (warp per row group, split-K, split-K
//! staged in shared memory) against itself (tests/gemv.rs checks the staged plain launch
//! against split-K's bit for bit). `qkv_rotary_cache` is checked against the separate kernels, and those against f64,
//! in their own tests.
mod common;

use common::{gpu_or_skip, poisoned, Rng};
use half::bf16;
use kernels::gemv::{NormInput, RotaryCache, SplitK, Staging, MAX_TOKENS, STAGED_MAX_TOKENS};
use kernels::qkv_rotary_cache::QkvShape;
use kernels::reshape_and_cache::PADDING_SLOT;

fn bits(v: &[bf16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn fused_rope_gemv_equals_gemv_then_qkv_rotary_cache() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels);
    let mut rng = Rng::fresh("gemv_rope");
    const MAX_POS: usize = 512;
    let eps = 1e-5f32;
    // (hidden, heads, kv heads, head_dim, bias): SmolLM2, Llama-3.2-1B, head size 128 with a
    // bias (as Qwen's qkv has), a ragged small one.
    for (hidden, nh, nkv, d, with_bias) in [
        (576, 9, 3, 64, false),
        (2048, 32, 8, 64, false),
        (1024, 8, 2, 128, true),
        (40, 3, 1, 8, true),
    ] {
        let n = (nh + 2 * nkv) * d;
        let kv_row = nkv * d;
        let slots = 4 * MAX_TOKENS;
        let w = s
            .clone_htod(&rng.bf16s(n * hidden, 1.0 / (hidden as f64).sqrt()))
            .unwrap();
        let gamma = s.clone_htod(&rng.bf16s(hidden, 1.0)).unwrap();
        let bias = s.clone_htod(&rng.bf16s(n, 0.5)).unwrap();
        let table: Vec<f32> = (0..MAX_POS * d).map(|_| rng.normal(1.0) as f32).collect();
        let dtable = s.clone_htod(&table).unwrap();
        let shape = QkvShape {
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
        };
        for m in 1..=4 {
            let residual = s.clone_htod(&rng.bf16s(m * hidden, 1.0)).unwrap();
            let delta = s.clone_htod(&rng.bf16s(m * hidden, 1.0)).unwrap();
            let positions: Vec<u32> = (0..m).map(|_| rng.below(MAX_POS) as u32).collect();
            // Distinct slots; the second token a padding row.
            let slot_mapping: Vec<u64> = rng.permutation(slots)[..m]
                .iter()
                .enumerate()
                .map(|(i, &v)| if i == 1 { PADDING_SLOT } else { v as u64 })
                .collect();
            let dpos = s.clone_htod(&positions).unwrap();
            let dslots = s.clone_htod(&slot_mapping).unwrap();
            let variants = [
                (SplitK::Never, Staging::Off),
                (SplitK::Always, Staging::Off),
                (SplitK::Always, Staging::Shared),
            ];
            for (with_delta, (split, staging)) in [false, true]
                .into_iter()
                .flat_map(|d| variants.map(|v| (d, v)))
            {
                let gemv = k.gemv.clone().with_split_k(split).with_staging(staging);
                if staging == Staging::Shared {
                    // The staged kernels must be what runs (every shape here fits one wave),
                    // up to STAGED_MAX_TOKENS; past it, the split ones.
                    let staged = m <= STAGED_MAX_TOKENS;
                    assert_eq!(gemv.stages(m, n, hidden, true), staged, "{m} tokens");
                    assert_eq!(gemv.fuses_rotary(m, n, hidden), staged, "{m} tokens");
                }
                let (dv, rv, gv, bv) = (
                    delta.as_view(),
                    residual.as_view(),
                    gamma.as_view(),
                    bias.as_view(),
                );
                let input = NormInput {
                    partials: None,
                    delta: with_delta.then_some(&dv),
                    residual: &rv,
                    gamma: &gv,
                    eps,
                };
                let b = with_bias.then_some(&bv);
                // Unfused: the GEMV's plain epilogue, then qkv_rotary_cache.
                let mut qkv = poisoned(s, m * n);
                let mut r_want = poisoned(s, m * hidden);
                let (mut q_want, mut kc_want, mut vc_want) = (
                    poisoned(s, m * nh * d),
                    poisoned(s, slots * kv_row),
                    poisoned(s, slots * kv_row),
                );
                let mut rw = r_want.as_view_mut();
                gemv.forward_norm(
                    s,
                    &mut qkv.as_view_mut(),
                    with_delta.then_some(&mut rw),
                    &input,
                    &w.as_view(),
                    b,
                    kernels::gemv::Epilogue::Plain,
                    m,
                )
                .unwrap();
                k.qkv_rotary_cache
                    .forward(
                        s,
                        &mut q_want.as_view_mut(),
                        &mut kc_want.as_view_mut(),
                        &mut vc_want.as_view_mut(),
                        &qkv.as_view(),
                        &dpos.as_view(),
                        &dslots.as_view(),
                        &dtable.as_view(),
                        shape,
                    )
                    .unwrap();
                // Fused.
                let mut r_got = poisoned(s, m * hidden);
                let (mut q_got, mut kc_got, mut vc_got) = (
                    poisoned(s, m * nh * d),
                    poisoned(s, slots * kv_row),
                    poisoned(s, slots * kv_row),
                );
                let (mut kcv, mut vcv) = (kc_got.as_view_mut(), vc_got.as_view_mut());
                let (pv, sv, tv) = (dpos.as_view(), dslots.as_view(), dtable.as_view());
                let mut rope = RotaryCache {
                    key_cache: &mut kcv,
                    value_cache: &mut vcv,
                    positions: &pv,
                    slot_mapping: &sv,
                    cos_sin_cache: &tv,
                    shape,
                };
                let mut rg = r_got.as_view_mut();
                gemv.forward_norm_rope(
                    s,
                    &mut q_got.as_view_mut(),
                    with_delta.then_some(&mut rg),
                    &input,
                    &w.as_view(),
                    b,
                    &mut rope,
                    m,
                )
                .unwrap();
                let what = format!(
                    "gemv_norm_rope {nh}/{nkv} heads of {d}, hidden {hidden}, {m} tokens, \
                     delta {with_delta}, bias {with_bias}, split-K {split:?}, {staging:?}"
                );
                for (name, got, want) in [
                    ("q", &q_got, &q_want),
                    ("key cache", &kc_got, &kc_want),
                    ("value cache", &vc_got, &vc_want),
                    ("residual stream", &r_got, &r_want),
                ] {
                    let (got, want) = (s.clone_dtoh(got).unwrap(), s.clone_dtoh(want).unwrap());
                    assert!(bits(&got) == bits(&want), "{what}: {name} differs");
                }
            }
        }
    }
}

#[test]
fn fused_rope_gemv_refuses_mismatched_shapes() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels);
    let mut rng = Rng::fresh("gemv_rope_refuses");
    let (hidden, nh, nkv, d) = (64, 2, 1, 16);
    let n = (nh + 2 * nkv) * d;
    let w = s.clone_htod(&rng.bf16s(n * hidden, 0.1)).unwrap();
    let gamma = s.clone_htod(&rng.bf16s(hidden, 1.0)).unwrap();
    let residual = s.clone_htod(&rng.bf16s(hidden, 1.0)).unwrap();
    let table = s.clone_htod(&vec![0.5f32; 8 * d]).unwrap();
    let pos = s.clone_htod(&[1u32]).unwrap();
    let slots = s.clone_htod(&[0u64]).unwrap();
    let (mut kc, mut vc) = (poisoned(s, 4 * nkv * d), poisoned(s, 4 * nkv * d));
    let mut q = poisoned(s, nh * d);
    let (gv, rv) = (gamma.as_view(), residual.as_view());
    let input = NormInput {
        partials: None,
        delta: None,
        residual: &rv,
        gamma: &gv,
        eps: 1e-5,
    };
    let (mut kcv, mut vcv) = (kc.as_view_mut(), vc.as_view_mut());
    let (pv, sv, tv) = (pos.as_view(), slots.as_view(), table.as_view());
    // One KV head too many for the weight's rows.
    let mut rope = RotaryCache {
        key_cache: &mut kcv,
        value_cache: &mut vcv,
        positions: &pv,
        slot_mapping: &sv,
        cos_sin_cache: &tv,
        shape: QkvShape {
            num_heads: nh,
            num_kv_heads: nkv + 1,
            head_dim: d,
        },
    };
    let err = k
        .gemv
        .forward_norm_rope(
            s,
            &mut q.as_view_mut(),
            None,
            &input,
            &w.as_view(),
            None,
            &mut rope,
            1,
        )
        .unwrap_err();
    assert!(err.to_string().contains("weight rows"), "{err}");
}
