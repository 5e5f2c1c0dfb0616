//! skinny_gemm (tensor-core GEMM for 1-32 tokens, split-K with an in-kernel reduction), both
//! main loops (mma.sync; TMA + wgmma where compiled), against an f64 reference: plain and SiLU·mul epilogues, token counts that fill 1-4 tiles of 8
//! partly, weights whose rows are not a multiple of either row tile (64, 128) and whose k is not a
//! multiple of the 64-value stage, and several split counts (the last block of each tile adds
//! the splits' sums).
//!
//! Bound: [`BF16_BOUND`] (see `common`). A wrong fragment mapping, a stage read twice or
//! skipped, a split's sums lost or a tile's rows swapped give errors near 1; an unwritten
//! (NaN-poisoned) element gives NaN.
mod common;

use common::{assert_close, gpu_or_skip, linear_reference, poisoned, to_f64, Rng, BF16_BOUND};
use kernels::gemv::Epilogue;
use kernels::skinny_gemm::{MainLoop, SkinnyGemm, SkinnyGemmWorkspace, ROW_TILES};

fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

/// Every main loop compiled for this GPU: mma.sync always, TMA + wgmma on sm_90a.
fn main_loops(sg: &SkinnyGemm) -> Vec<MainLoop> {
    let mut loops = vec![MainLoop::MmaSync];
    if sg.has_tma() {
        loops.push(MainLoop::Tma);
    } else {
        println!("the TMA main loop was not compiled for this GPU (sm_90a only): not tested");
    }
    loops
}

#[test]
fn matches_the_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let sg = &gpu.kernels.skinny_gemm;
    let mut ws = SkinnyGemmWorkspace::new(s, sg.num_sms()).unwrap();
    let mut rng = Rng::fresh("skinny_gemm");
    let mut checked = 0;
    // (rows n, k, epilogue): a TP 2 rank's o_proj of Llama-2-7B; a weight of 200 rows
    // (3 full tiles and 8 rows) and k = 4104 (64 stages and 8 values); gate_up of 2 x 100
    // rows (3 full 32-column tiles and 4 columns) over SmolLM2's 576; a small odd one.
    let shapes = [
        (4096, 2048, Epilogue::Plain),
        (200, 4104, Epilogue::Plain),
        (200, 576, Epilogue::SiluAndMul),
        (328, 200, Epilogue::Plain),
    ];
    for (n, k, epilogue) in shapes {
        let w = rng.bf16s(n * k, 1.0 / (k as f64).sqrt());
        let dw = s.clone_htod(&w).unwrap();
        let wf = to_f64(&w);
        let width = match epilogue {
            Epilogue::Plain => n,
            Epilogue::SiluAndMul => n / 2,
        };
        for m in [1, 5, 8, 13, 32] {
            let x = rng.bf16s(m * k, 1.0);
            let dx = s.clone_htod(&x).unwrap();
            let y = linear_reference(&to_f64(&x), &wf, None, m, n, k);
            let want: Vec<f64> = match epilogue {
                Epilogue::Plain => y,
                Epilogue::SiluAndMul => (0..m * width)
                    .map(|i| {
                        let (t, j) = (i / width, i % width);
                        silu(y[t * n + j]) * y[t * n + width + j]
                    })
                    .collect(),
            };
            for (main_loop, rows, splits) in main_loops(sg).into_iter().flat_map(|l| {
                ROW_TILES
                    .into_iter()
                    .flat_map(move |r| [None, Some(1), Some(3), Some(7)].map(|s| (l, r, s)))
            }) {
                let sg = (sg.clone().with_rows(rows))
                    .and_then(|sg| sg.with_main_loop(main_loop))
                    .unwrap();
                let mut first = None;
                // Twice: the second launch finds the tickets the first one reset.
                for run in 0..2 {
                    let mut out = poisoned(s, m * width);
                    sg.forward(
                        s,
                        &mut ws,
                        &mut out.as_view_mut(),
                        &dx.as_view(),
                        &dw.as_view(),
                        m,
                        epilogue,
                        splits,
                    )
                    .unwrap();
                    let got = s.clone_dtoh(&out).unwrap();
                    let what = format!(
                        "skinny_gemm {main_loop:?} {epilogue:?} [{m}, {k}] x [{n}, {k}]^T, \
                         {rows}-row tiles, splits {splits:?}, run {run}"
                    );
                    assert_close(&what, &got, &want, BF16_BOUND);
                    match &first {
                        None => first = Some(got),
                        Some(f) => assert!(
                            f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{what}: not the same bits as the first run"
                        ),
                    }
                    checked += 1;
                }
            }
        }
    }
    println!("skinny_gemm: {checked} launches agree with the f64 reference");
}

/// `with_one_wave`: a launch that would spill past one wave of the GPU with 64-row tiles at
/// its default split takes 128-row tiles (or fewer splits), and still matches the reference:
/// Llama-3.2-1B's gate/up (2 × 8192 rows over 2048) at 16 and 32 tokens, which spills on an
/// H200, and a small shape that fits either way.
#[test]
fn one_wave_tiles_match_the_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let sg = &gpu.kernels.skinny_gemm;
    if !sg.has_tma() {
        println!("skipped: the one-wave choice is the TMA main loop's (sm_90a: an H100/H200)");
        return;
    }
    let sg = (sg.clone().with_main_loop(MainLoop::Tma))
        .unwrap()
        .with_one_wave(true);
    let mut ws = SkinnyGemmWorkspace::new(s, sg.num_sms()).unwrap();
    let mut rng = Rng::fresh("skinny_gemm_one_wave");
    for (n, k, epilogue) in [
        (2 * 8192, 2048, Epilogue::SiluAndMul),
        (328, 200, Epilogue::Plain),
    ] {
        let w = rng.bf16s(n * k, 1.0 / (k as f64).sqrt());
        let (dw, wf) = (s.clone_htod(&w).unwrap(), to_f64(&w));
        let width = if epilogue == Epilogue::Plain {
            n
        } else {
            n / 2
        };
        for m in [16, 32] {
            let x = rng.bf16s(m * k, 1.0);
            let dx = s.clone_htod(&x).unwrap();
            let y = linear_reference(&to_f64(&x), &wf, None, m, n, k);
            let want: Vec<f64> = (0..m * width)
                .map(|i| {
                    let (t, j) = (i / width, i % width);
                    match epilogue {
                        Epilogue::Plain => y[i],
                        Epilogue::SiluAndMul => silu(y[t * n + j]) * y[t * n + width + j],
                    }
                })
                .collect();
            let mut out = poisoned(s, m * width);
            let (xv, wv) = (dx.as_view(), dw.as_view());
            sg.forward(
                s,
                &mut ws,
                &mut out.as_view_mut(),
                &xv,
                &wv,
                m,
                epilogue,
                None,
            )
            .unwrap();
            let got = s.clone_dtoh(&out).unwrap();
            let what = format!("skinny_gemm one wave {epilogue:?} [{m}, {k}] x [{n}, {k}]^T");
            assert_close(&what, &got, &want, BF16_BOUND);
            println!("{what}: agrees with the f64 reference");
        }
    }
}

#[test]
fn refuses_what_it_cannot_take() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let sg = &gpu.kernels.skinny_gemm;
    let mut ws = SkinnyGemmWorkspace::new(s, sg.num_sms()).unwrap();
    let (x, w) = (poisoned(s, 33 * 64), poisoned(s, 64 * 64));
    let mut out = poisoned(s, 33 * 64);
    let too_many = sg.forward(
        s,
        &mut ws,
        &mut out.as_view_mut(),
        &x.as_view(),
        &w.as_view(),
        33,
        Epilogue::Plain,
        None,
    );
    assert!(too_many.is_err(), "33 tokens are more than a launch takes");
    let (x, w) = (poisoned(s, 4 * 64), poisoned(s, 63 * 64));
    let mut out = poisoned(s, 4 * 64);
    let short = sg.forward(
        s,
        &mut ws,
        &mut out.as_view_mut(),
        &x.as_view(),
        &w.as_view(),
        4,
        Epilogue::Plain,
        None,
    );
    assert!(
        short.is_err(),
        "an output sized for 64 rows against a weight of 63"
    );
    assert!(
        !SkinnyGemm::supports(4, 100),
        "k must be whole 16-byte chunks"
    );
}
