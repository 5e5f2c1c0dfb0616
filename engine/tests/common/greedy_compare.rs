//! Greedy runs with logits, and their comparison across parallel layouts, shared by
//! `tensor_parallel.rs` and `pipeline_parallel.rs`.
//!
//! A split model adds its partial sums in another order than one rank, so logits may differ in
//! their last bits: they must agree within `LOGIT_TOLERANCE` while both runs have produced the
//! same tokens, and the greedy tokens must agree wherever the one-rank run's top-2 margin
//! exceeds `MARGIN` (twice the tolerance: no drift that small can swap them). At a near tie the
//! runs may rightly choose differently, and the comparison of that request stops there.

use engine::{LLMEngine, Prompt, RequestOutput, SamplingParams};

pub const LOGIT_TOLERANCE: f32 = 1e-4;
pub const MARGIN: f32 = 2.0 * LOGIT_TOLERANCE;

/// Greedy outputs with logits, in request order, and the number of steps taken.
pub fn generate(
    engine: &mut LLMEngine,
    prompts: &[Vec<u32>],
    max_tokens: usize,
) -> (Vec<RequestOutput>, u64) {
    let mut params = SamplingParams::greedy(max_tokens);
    params.ignore_eos = true;
    params.output_logits = true;
    for p in prompts {
        engine
            .add_request(Prompt::TokenIds(p.clone()), params.clone())
            .unwrap();
    }
    let (mut done, mut steps) = (Vec::new(), 0);
    while engine.has_unfinished_requests() {
        done.extend(engine.step().unwrap());
        steps += 1;
    }
    done.sort_by_key(|o| o.request_id);
    (done, steps)
}

/// The gap between the largest logit and the next.
pub fn top2_margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in logits {
        if x > a {
            (a, b) = (x, a);
        } else if x > b {
            b = x;
        }
    }
    a - b
}

/// Compares `got` with `want` as the module docs say; returns (tokens compared, tokens).
pub fn compare(want: &[RequestOutput], got: &[RequestOutput], what: &str) -> (usize, usize) {
    let (mut compared, mut total) = (0, 0);
    for (w, g) in want.iter().zip(got) {
        total += w.token_ids.len();
        for k in 0..w.token_ids.len() {
            let (wl, gl) = (&w.logits[k], &g.logits[k]);
            assert_eq!(wl.len(), gl.len(), "{what}: logits width");
            let diff = wl
                .iter()
                .zip(gl)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                diff <= LOGIT_TOLERANCE,
                "{what}: request {:?} token {k}: logits differ by {diff}",
                w.request_id
            );
            if top2_margin(wl) <= MARGIN {
                // A near tie: the runs may rightly choose differently from here.
                if w.token_ids[k] != g.token_ids[k] {
                    break;
                }
            } else {
                assert_eq!(
                    w.token_ids[k],
                    g.token_ids[k],
                    "{what}: request {:?} token {k} (margin {})",
                    w.request_id,
                    top2_margin(wl)
                );
            }
            compared += 1;
        }
    }
    (compared, total)
}
