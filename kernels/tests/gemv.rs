//! gemv (decode-time projections, 1 to 8 tokens) against an f64 reference, at the projection
//! sizes of the SmolLM2-135M and Llama-3.2-1B shapes and at sizes that end mid-warp and
//! mid-block (n not a multiple of the rows a block takes, k of one 16-byte chunk).
//!
//! Bound: [`BF16_BOUND`], as for `linear` (f32 sums, one bf16 rounding of each output). A row
//! skipped at the end, a chunk read twice or a missing bias gives errors near 1, and an
//! unwritten (NaN-poisoned) element NaN.
mod common;

use common::{assert_close, gpu_or_skip, linear_reference, poisoned, to_f64, Rng, BF16_BOUND};
use std::sync::Arc;

use half::bf16;
use kernels::cudarc::driver::{CudaSlice, CudaStream};
use kernels::gemv::{Gemv, SplitK, MAX_TOKENS};

/// `g.forward` of `m` tokens of `x` through `w` (`[n, k]`, `bias`) into a fresh poisoned
/// output, read back.
fn forward_out(
    g: &Gemv,
    s: &Arc<CudaStream>,
    x: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    bias: Option<&CudaSlice<bf16>>,
    m: usize,
    n: usize,
) -> Vec<bf16> {
    let mut out = poisoned(s, m * n);
    let bias = bias.map(|b| b.as_view());
    g.forward(
        s,
        &mut out.as_view_mut(),
        &x.as_view(),
        &w.as_view(),
        bias.as_ref(),
        m,
    )
    .unwrap();
    s.clone_dtoh(&out).unwrap()
}

#[test]
fn gemv_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let mut rng = Rng::fresh("gemv");
    // Both entry points on every shape: a warp per row group, and split-K.
    let splits =
        [SplitK::Never, SplitK::Always].map(|m| (m, gpu.kernels.gemv.clone().with_split_k(m)));
    // (n, k): SmolLM2's qkv, gate/up and down; Llama-3.2-1B's qkv and down; ragged sizes.
    for (n, k) in [
        (960, 576),
        (3072, 576),
        (576, 1536),
        (3072, 2048),
        (2048, 8192),
        (17, 8),
        (1, 24),
        (131, 40),
    ] {
        let w = rng.bf16s(n * k, 1.0 / (k as f64).sqrt());
        let bias = rng.bf16s(n, 0.5);
        let (dw, db) = (s.clone_htod(&w).unwrap(), s.clone_htod(&bias).unwrap());
        let (wf, bf) = (to_f64(&w), to_f64(&bias));
        for m in 1..=MAX_TOKENS {
            let x = rng.bf16s(m * k, 1.0);
            let dx = s.clone_htod(&x).unwrap();
            let xf = to_f64(&x);
            for (b, (split, g)) in [false, true]
                .into_iter()
                .flat_map(|b| splits.iter().map(move |g| (b, g)))
            {
                let got = forward_out(g, s, &dx, &dw, b.then_some(&db), m, n);
                let want = linear_reference(&xf, &wf, b.then_some(&bf[..]), m, n, k);
                let what = format!(
                    "gemv [{m}, {k}] x [{n}, {k}]^T{}, split-K {split:?}",
                    if b { " + bias" } else { "" }
                );
                assert_close(&what, &got, &want, BF16_BOUND);
            }
        }
    }
}

#[test]
fn gemv_refuses_what_it_cannot_do() {
    assert!(!Gemv::supports(0, 64));
    assert!(!Gemv::supports(MAX_TOKENS + 1, 64));
    assert!(!Gemv::supports(1, 12)); // not whole 16-byte chunks
    assert!(Gemv::supports(MAX_TOKENS, 8));
}

/// The fused launch (`forward_norm`) against the unfused kernels it replaces, run on the same
/// inputs: `fused_add_rms_norm` (or `rms_norm` without a delta), then `gemv`, then
/// `silu_and_mul`. The new residual stream must be bit for bit the stored one; the output may
/// differ only where the norm's 1/rms differs in its last bit (its sum of squares is added in
/// another order), far below bf16 noise: relative L2 ≤ 1e-3 (a missed token, row or chunk,
/// or a wrong gate/up pairing, gives errors near 1; unwritten outputs stay NaN).
///
/// The norm once per block ([`NormPrologue::PerBlock`]) adds its squares in `rms_norm`'s own
/// order, so its output must equal the unfused one bit for bit; it runs with one row group per
/// warp, with two (the next group's loads before the current group's reduction) and with the
/// one-wave grid. Shapes: the two norm-fed projections of SmolLM2-135M and Llama-3.2-1B (qkv,
/// gate/up), the 1B shape's LM head behind its final norm, the longest row the per-block norm
/// takes (k = 8192: 256 norm threads) and rows whose norm threads are not a power of two.
#[test]
fn fused_norm_gemv_matches_the_unfused_kernels() {
    use kernels::gemv::{Epilogue, NormInput, NormPrologue};
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k_) = (&gpu.stream, &gpu.kernels);
    let mut rng = Rng::fresh("gemv_norm");
    let eps = 1e-5f32;
    // (per-warp or per-block norm, split-K): the unfused reference runs the same split.
    let warp = NormPrologue::PerWarp;
    let block = |groups_per_warp| NormPrologue::PerBlock { groups_per_warp };
    let variants = [
        (warp, SplitK::Never),
        (warp, SplitK::Always),
        (block(1), SplitK::Never),
        (block(2), SplitK::Never),
        (block(0), SplitK::Never),
    ];
    // (n, k, epilogue): SmolLM2's qkv and gate/up, Llama-3.2-1B's qkv, o-sized and gate/up
    // and LM head, rows of 8192, ragged (k = 4104: 160 norm threads).
    for (n, k, epilogue) in [
        (960, 576, Epilogue::Plain),
        (3072, 576, Epilogue::SiluAndMul),
        (3072, 2048, Epilogue::Plain),
        (2048, 2048, Epilogue::Plain),
        (16384, 2048, Epilogue::SiluAndMul),
        (128256, 2048, Epilogue::Plain),
        (1030, 8192, Epilogue::SiluAndMul),
        (131, 4104, Epilogue::Plain),
        (17, 8, Epilogue::Plain),
        (34, 16, Epilogue::SiluAndMul),
    ] {
        let w = s
            .clone_htod(&rng.bf16s(n * k, 1.0 / (k as f64).sqrt()))
            .unwrap();
        let gamma = s.clone_htod(&rng.bf16s(k, 1.0)).unwrap();
        let width = if epilogue == Epilogue::Plain {
            n
        } else {
            n / 2
        };
        for m in 1..=MAX_TOKENS {
            let residual = s.clone_htod(&rng.bf16s(m * k, 1.0)).unwrap();
            let delta = s.clone_htod(&rng.bf16s(m * k, 1.0)).unwrap();
            for (with_delta, (prologue, split)) in [false, true]
                .into_iter()
                .flat_map(|d| variants.map(|v| (d, v)))
            {
                let gemv = k_
                    .gemv
                    .clone()
                    .with_split_k(split)
                    .with_norm_prologue(prologue);
                // Unfused.
                let mut x = s.clone_htod(&s.clone_dtoh(&delta).unwrap()).unwrap();
                let mut r = s.clone_htod(&s.clone_dtoh(&residual).unwrap()).unwrap();
                let normed = if with_delta {
                    let (mut xv, mut rv) = (x.as_view_mut(), r.as_view_mut());
                    k_.rms_norm
                        .fused_add_rms_norm(s, &mut xv, &mut rv, &gamma.as_view(), eps)
                        .unwrap();
                    x.clone()
                } else {
                    let mut out = poisoned(s, m * k);
                    let rv = residual.as_view();
                    k_.rms_norm
                        .rms_norm(s, &mut out.as_view_mut(), &rv, &gamma.as_view(), eps)
                        .unwrap();
                    out
                };
                let mut y = poisoned(s, m * n);
                let nv = normed.as_view();
                gemv.forward(s, &mut y.as_view_mut(), &nv, &w.as_view(), None, m)
                    .unwrap();
                let want = if epilogue == Epilogue::Plain {
                    y
                } else {
                    let mut act = poisoned(s, m * width);
                    let yv = y.as_view();
                    k_.silu_and_mul
                        .silu_and_mul(s, &mut act.as_view_mut(), &yv, m)
                        .unwrap();
                    act
                };
                // Fused.
                let mut out = poisoned(s, m * width);
                let mut r_out = poisoned(s, m * k);
                let (dv, rv, gv) = (delta.as_view(), residual.as_view(), gamma.as_view());
                let input = NormInput {
                    partials: None,
                    delta: with_delta.then_some(&dv),
                    residual: &rv,
                    gamma: &gv,
                    eps,
                };
                let mut r_out_view = r_out.as_view_mut();
                gemv.forward_norm(
                    s,
                    &mut out.as_view_mut(),
                    with_delta.then_some(&mut r_out_view),
                    &input,
                    &w.as_view(),
                    None,
                    epilogue,
                    m,
                )
                .unwrap();
                let what = format!(
                    "gemv_norm {epilogue:?} [{m}, {k}] x [{n}, {k}]^T, delta {with_delta}, \
                     split-K {split:?}, norm {prologue:?}"
                );
                let got = s.clone_dtoh(&out).unwrap();
                let want_bf16 = s.clone_dtoh(&want).unwrap();
                let want = to_f64(&want_bf16);
                if prologue == warp {
                    assert_close(&what, &got, &want, 1e-3);
                } else {
                    // Bit for bit (unwritten outputs are NaN and differ from any value).
                    let differ = (got.iter().zip(&want_bf16))
                        .filter(|(a, b)| a.to_bits() != b.to_bits())
                        .count();
                    assert!(
                        differ == 0,
                        "{what}: {differ} of {} outputs differ from the unfused kernels \
                         (relative L2 {:e})",
                        got.len(),
                        common::rel_l2(&to_f64(&got), &want)
                    );
                }
                if with_delta {
                    let (got_r, want_r) =
                        (s.clone_dtoh(&r_out).unwrap(), s.clone_dtoh(&r).unwrap());
                    assert!(got_r == want_r, "{what}: the new residual stream differs");
                }
            }
        }
    }
}

/// The staged split-K entry points ([`Staging::Shared`]: a block's share of W copied into
/// shared memory before the wait, one wave of blocks) against the `_split` ones they replace,
/// bit for bit (same chunks per thread, same warp order, same norm): `forward` with and without
/// a bias, `forward_norm` (plain and SiLU·mul, with and without a delta, the new residual
/// stream too), at 1 to [`STAGED_MAX_TOKENS`] tokens. Shapes: Llama-3.2-1B's qkv and o_proj (the two it is for),
/// SmolLM2's qkv and gate/up, rows of 8192 (4 chunks a thread), and ragged ones (a last block
/// with fewer row groups, a last row group cut short, k of one chunk). Each launch is asserted to take the staged kernels
/// ([`Gemv::stages`]), so the test cannot pass on the split ones; the plain launches are also
/// checked against the f64 reference.
#[test]
fn staged_gemv_equals_split_k_bit_for_bit() {
    use kernels::gemv::{Epilogue, NormInput, Staging, STAGED_MAX_TOKENS};
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k_) = (&gpu.stream, &gpu.kernels);
    let mut rng = Rng::fresh("gemv_staged");
    let eps = 1e-5f32;
    let split = k_.gemv.clone().with_split_k(SplitK::Always);
    let staged = split.clone().with_staging(Staging::Shared);
    let bits = |v: &[half::bf16]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (n, k, epilogue) in [
        (3072, 2048, Epilogue::Plain),
        (2048, 2048, Epilogue::Plain),
        (1030, 1024, Epilogue::Plain),
        (960, 576, Epilogue::Plain),
        (576, 1536, Epilogue::SiluAndMul),
        (66, 8192, Epilogue::SiluAndMul),
        (131, 40, Epilogue::Plain),
        (34, 8, Epilogue::SiluAndMul),
    ] {
        let pairs = epilogue == Epilogue::SiluAndMul;
        let width = if pairs { n / 2 } else { n };
        let w = rng.bf16s(n * k, 1.0 / (k as f64).sqrt());
        let bias = rng.bf16s(n, 0.5);
        let (dw, db) = (s.clone_htod(&w).unwrap(), s.clone_htod(&bias).unwrap());
        let gamma = s.clone_htod(&rng.bf16s(k, 1.0)).unwrap();
        let (wf, bf) = (to_f64(&w), to_f64(&bias));
        for m in 1..=STAGED_MAX_TOKENS {
            assert!(
                staged.stages(m, n, k, false)
                    && staged.stages(m, n, k, pairs)
                    && !split.stages(m, n, k, pairs),
                "[{n}, {k}] at {m} tokens: the staged kernels must take it"
            );
            let x = rng.bf16s(m * k, 1.0);
            let dx = s.clone_htod(&x).unwrap();
            // Plain GEMV, with and without bias (pairs or not: all n rows).
            for b in [false, true] {
                let outs: Vec<_> = [&split, &staged]
                    .map(|g| forward_out(g, s, &dx, &dw, b.then_some(&db), m, n))
                    .into();
                let what = format!("staged gemv [{m}, {k}] x [{n}, {k}]^T, bias {b}");
                let want = linear_reference(&to_f64(&x), &wf, b.then_some(&bf[..]), m, n, k);
                assert_close(&what, &outs[1], &want, BF16_BOUND);
                assert!(
                    bits(&outs[0]) == bits(&outs[1]),
                    "{what}: differs from split-K"
                );
            }
            // Norm-fed, with and without a delta.
            let residual = s.clone_htod(&rng.bf16s(m * k, 1.0)).unwrap();
            let delta = s.clone_htod(&rng.bf16s(m * k, 1.0)).unwrap();
            for with_delta in [false, true] {
                let (dv, rv, gv) = (delta.as_view(), residual.as_view(), gamma.as_view());
                let input = NormInput {
                    partials: None,
                    delta: with_delta.then_some(&dv),
                    residual: &rv,
                    gamma: &gv,
                    eps,
                };
                let mut got = Vec::new();
                for g in [&split, &staged] {
                    let mut out = poisoned(s, m * width);
                    let mut r_out = poisoned(s, m * k);
                    let mut rv_out = r_out.as_view_mut();
                    g.forward_norm(
                        s,
                        &mut out.as_view_mut(),
                        with_delta.then_some(&mut rv_out),
                        &input,
                        &dw.as_view(),
                        None,
                        epilogue,
                        m,
                    )
                    .unwrap();
                    got.push((s.clone_dtoh(&out).unwrap(), s.clone_dtoh(&r_out).unwrap()));
                }
                let what = format!(
                    "staged gemv_norm {epilogue:?} [{m}, {k}] x [{n}, {k}]^T, delta {with_delta}"
                );
                assert!(
                    got[0].0.iter().all(|v| !v.is_nan()),
                    "{what}: split-K left outputs unwritten"
                );
                assert!(
                    bits(&got[0].0) == bits(&got[1].0),
                    "{what}: differs from split-K"
                );
                if with_delta {
                    assert!(
                        bits(&got[0].1) == bits(&got[1].1),
                        "{what}: the new residual stream differs"
                    );
                }
            }
        }
    }
}

/// The one-wave split-K entry points ([`SplitGrid::OneWave`]: as many blocks as the GPU holds,
/// each taking every `blocks`-th row group and loading the next group's weights before the
/// current group's sums meet) against the block-per-group `_split` ones, bit for bit, and
/// against the f64 reference, at 1 to [`MAX_TOKENS`] tokens, with and without a bias. Shapes:
/// Llama-3.2-1B's down (512 row groups at one token, 1024 at more: several groups a block on
/// any GPU of fewer than 256 SMs), a ragged one (a last group cut short, groups not a multiple
/// of the grid), and small ones whose groups all fit one wave (a group a block, as `_split`).
/// [`SplitGrid::OneWave`] takes the wave kernel only up to two waves' worth of groups (the
/// down shape at one token on an H200); [`SplitGrid::BlocksPerSm`]`(1)` takes it at every
/// shape, with several groups a block wherever groups outnumber SMs.
#[test]
fn split_k_in_one_wave_equals_a_block_per_group_bit_for_bit() {
    use kernels::gemv::SplitGrid;
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let mut rng = Rng::fresh("gemv_split_wave");
    let per_group = gpu.kernels.gemv.clone().with_split_k(SplitK::Always);
    let one_wave = per_group.clone().with_split_grid(SplitGrid::OneWave);
    let one_a_sm = per_group.clone().with_split_grid(SplitGrid::BlocksPerSm(1));
    let bits = |v: &[half::bf16]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (n, k) in [(2048, 8192), (4099, 1032), (576, 1536), (17, 8)] {
        let w = rng.bf16s(n * k, 1.0 / (k as f64).sqrt());
        let bias = rng.bf16s(n, 0.5);
        let (dw, db) = (s.clone_htod(&w).unwrap(), s.clone_htod(&bias).unwrap());
        let (wf, bf) = (to_f64(&w), to_f64(&bias));
        for m in 1..=MAX_TOKENS {
            let x = rng.bf16s(m * k, 1.0);
            let dx = s.clone_htod(&x).unwrap();
            for b in [false, true] {
                let outs = [&per_group, &one_wave, &one_a_sm]
                    .map(|g| forward_out(g, s, &dx, &dw, b.then_some(&db), m, n));
                let what = format!("one-wave split-K gemv [{m}, {k}] x [{n}, {k}]^T, bias {b}");
                let want = linear_reference(&to_f64(&x), &wf, b.then_some(&bf[..]), m, n, k);
                assert_close(&what, &outs[1], &want, BF16_BOUND);
                assert!(
                    bits(&outs[0]) == bits(&outs[1]) && bits(&outs[0]) == bits(&outs[2]),
                    "{what}: differs from a block per group"
                );
            }
        }
    }
}

/// The norm-once-per-block kernels take the previous block's output as partial sums
/// ([`NormInput::partials`], f32 `[t, P, k]`, as `PagedAttention::decode_o_proj` leaves
/// o_proj's): bit for bit what they compute from the bf16 of their sum (added in order 0..P,
/// as the kernel does) given as the delta, the new residual stream too. SiLU·mul and plain, 1
/// to 4 tokens, 1 to 8 partial sums, SmolLM2-135M's and Llama-3.2-1B's gate/up and a ragged
/// shape. Partial sums are refused (not misread) by a launch that normalizes per warp.
#[test]
fn norm_gemv_adds_partial_sums_as_their_bf16_sum() {
    use kernels::gemv::{Epilogue, NormInput, NormPrologue};
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k_) = (&gpu.stream, &gpu.kernels);
    let mut rng = Rng::fresh("gemv_partials");
    let eps = 1e-5f32;
    let per_block = NormPrologue::PerBlock { groups_per_warp: 0 };
    let gemv = k_.gemv.clone().with_norm_prologue(per_block);
    let cases = [
        (1, 576, 3072, Epilogue::SiluAndMul, 3),
        (1, 2048, 16384, Epilogue::SiluAndMul, 8),
        (2, 576, 3072, Epilogue::SiluAndMul, 1),
        (4, 104, 70, Epilogue::Plain, 5),
        (3, 576, 512, Epilogue::Plain, 2),
    ];
    for (m, k, n, epilogue, parts) in cases {
        let what =
            format!("gemv_norm {epilogue:?} [{m}, {k}] x [{n}, {k}]^T, {parts} partial sums");
        assert!(
            gemv.norm_per_block(m, n, k, epilogue),
            "{what}: not per block"
        );
        let width = if epilogue == Epilogue::Plain {
            n
        } else {
            n / 2
        };
        let partials: Vec<f32> = (0..m * parts * k).map(|_| rng.normal(0.5) as f32).collect();
        // The delta they stand for: their f32 sum in group order, rounded to bf16.
        let delta: Vec<bf16> = (0..m * k)
            .map(|i| {
                let (t, c) = (i / k, i % k);
                let sum = (0..parts).fold(0.0f32, |a, p| a + partials[(t * parts + p) * k + c]);
                bf16::from_f32(sum)
            })
            .collect();
        let w = s.clone_htod(&rng.bf16s(n * k, 0.05)).unwrap();
        let residual = s.clone_htod(&rng.bf16s(m * k, 1.0)).unwrap();
        let gamma = s.clone_htod(&rng.bf16s(k, 1.0)).unwrap();
        let (dp, dd) = (
            s.clone_htod(&partials).unwrap(),
            s.clone_htod(&delta).unwrap(),
        );
        let (pv, dv) = (dp.as_view(), dd.as_view());
        let (rv, gv) = (residual.as_view(), gamma.as_view());
        let run = |gemv: &kernels::gemv::Gemv, with_partials: bool| {
            let (mut out, mut r_out) = (poisoned(s, m * width), poisoned(s, m * k));
            let input = NormInput {
                partials: with_partials.then_some(&pv),
                delta: (!with_partials).then_some(&dv),
                residual: &rv,
                gamma: &gv,
                eps,
            };
            let result = gemv.forward_norm(
                s,
                &mut out.as_view_mut(),
                Some(&mut r_out.as_view_mut()),
                &input,
                &w.as_view(),
                None,
                epilogue,
                m,
            );
            result.map(|()| (s.clone_dtoh(&out).unwrap(), s.clone_dtoh(&r_out).unwrap()))
        };
        let (want, want_r) = run(&gemv, false).unwrap();
        let (got, got_r) = run(&gemv, true).unwrap();
        let differ = (got.iter().zip(&want))
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert!(
            differ == 0,
            "{what}: {differ} of {} outputs differ",
            got.len()
        );
        assert!(got_r == want_r, "{what}: the new residual stream differs");
        let per_warp = k_.gemv.clone().with_norm_prologue(NormPrologue::PerWarp);
        assert!(
            run(&per_warp, true).is_err(),
            "{what}: per warp took partial sums"
        );
    }
}
