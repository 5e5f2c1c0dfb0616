//! Exercise 2: your RMSNorm kernel against the engine's CPU RMSNorm, on random rows of any
//! width and blocks of any size; then its memory traffic: coalesced loads and stores.

mod common;

use common::Kind::{Loads, Stores};
use engine::backend::cpu_backend::CpuKernels;
use engine::config::EngineConfig;
use engine::model_source::{load_model, ModelSpec};
use engine::ops::rms_norm as engine_ops;
use engine::{EngineParts, SamplingParams, LLM};
use proptest::prelude::*;
use stage4::rms_norm::{rms_norm, rms_norm_for_engine};

/// `(x, weight)`: `[tokens, hidden]` and `[hidden]`, hidden from 1 to 600 (rarely a multiple
/// of the block).
fn rows() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (1usize..5, 1usize..600).prop_flat_map(|(t, h)| {
        (
            prop::collection::vec(-10.0f32..10.0, t * h),
            prop::collection::vec(-2.0f32..2.0, h),
        )
    })
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    #[test]
    fn matches_the_engine(
        (x, w) in rows(),
        eps in prop::sample::select(vec![1e-6f32, 1e-5, 0.1]),
        threads in prop::sample::select(vec![32usize, 64, 128, 256]),
    ) {
        let mut yours = vec![0.0; x.len()];
        let mut engine = vec![0.0; x.len()];
        rms_norm(&mut yours, &x, &w, eps, threads);
        engine_ops::rms_norm(&mut engine, &x, &w, eps);
        if let Some((i, a, b)) = common::first_difference(&yours, &engine, 1e-5) {
            return Err(TestCaseError::fail(format!(
                "rms_norm of {} rows of {}, {threads} threads: out[{i}] (row {}, column {}) is \
                 {a}, the engine's is {b}",
                x.len() / w.len(), w.len(), i / w.len(), i % w.len()
            )));
        }
    }
}

/// The chapter's example of stage 3: `[3, 4]` has mean square 12.5.
#[test]
fn the_worked_example() {
    let mut out = [0.0; 4];
    rms_norm(&mut out, &[3.0, 4.0, 0.0, 2.0], &[1.0, 1.0], 0.0, 32);
    let r = 2f32.sqrt();
    common::assert_close(
        "rms_norm of rows [3, 4] and [0, 2]",
        &out,
        &[0.848_528, 1.131_371, 0.0, r],
        1e-5,
    );
    let mut out = [0.0; 2];
    rms_norm(&mut out, &[3.0, 4.0], &[2.0, -1.0], 0.5, 64);
    common::assert_close(
        "rms_norm([3, 4], weight [2, -1], eps 0.5)",
        &out,
        &[1.664_101, -1.109_4],
        1e-5,
    );
}

/// A row much longer than the block: each thread takes many elements.
#[test]
fn rows_longer_than_the_block() {
    let h = 4096 + 40;
    let x: Vec<f32> = (0..2 * h)
        .map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0)
        .collect();
    let w: Vec<f32> = (0..h).map(|i| 1.0 + (i % 7) as f32 / 7.0).collect();
    let (mut yours, mut engine) = (vec![0.0; 2 * h], vec![0.0; 2 * h]);
    rms_norm(&mut yours, &x, &w, 1e-6, 128);
    engine_ops::rms_norm(&mut engine, &x, &w, 1e-6);
    common::assert_close("2 rows of 4136, 128 threads", &yours, &engine, 1e-5);
}

/// Rows a whole number of sectors wide (a multiple of 8 floats): every warp instruction that
/// loads `x` or `weight` or stores `out` must touch only the sectors its bytes are in.
#[test]
fn loads_and_stores_are_coalesced() {
    for (tokens, hidden, threads) in [(3, 256, 64), (2, 576, 128), (4, 1000, 256), (1, 64, 32)] {
        let x: Vec<f32> = (0..tokens * hidden)
            .map(|i| (i % 13) as f32 - 6.0)
            .collect();
        let w = vec![0.5f32; hidden];
        let mut out = vec![0.0; x.len()];
        let stats = rms_norm(&mut out, &x, &w, 1e-5, threads);
        let what = format!("rms_norm of {tokens} rows of {hidden}, {threads} threads");
        common::assert_coalesced(&what, &stats, "x", Loads);
        common::assert_coalesced(&what, &stats, "weight", Loads);
        common::assert_coalesced(&what, &stats, "out", Stores);
        // And the kernel reads every element it needs: at least the row, once.
        let x_bytes = (4 * tokens * hidden) as u64;
        assert!(
            stats.buffer("x").loads.requested_bytes >= x_bytes,
            "{what}: fewer bytes of x read than x holds\n{stats}"
        );
    }
}

/// "With your kernel, the engine generates exactly the same tokens": the tiny model (2 layers,
/// hidden size 64) on three prompts, its first layer's input norm run by your kernel on the
/// model GPU at every step.
#[test]
fn the_engine_generates_the_same_tokens_with_your_kernel() {
    let prompts = ["The paged KV cache", "a", "Kernels, grids and warps"];
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(12)
    };
    let generate = |parts: EngineParts| -> Vec<Vec<u32>> {
        let model =
            load_model(&ModelSpec::Tiny, false, 0).expect("the tiny model is built in code");
        let mut llm =
            LLM::with_parts(model, EngineConfig::default(), parts).expect("engine starts");
        let out = llm.generate(&prompts, &params).expect("generation runs");
        out.into_iter().map(|o| o.token_ids).collect()
    };
    let yours = generate(EngineParts {
        kernels: CpuKernels {
            rms_norm: rms_norm_for_engine,
            ..CpuKernels::default()
        },
        ..EngineParts::default()
    });
    assert_eq!(
        yours,
        generate(EngineParts::default()),
        "tokens with your RMSNorm kernel"
    );
}
