//! Exercise 6: your `sample` against the engine's on random logits and parameters, then
//! inside the engine.

mod common;

use engine::philox;
use engine::sampler as reference;
use engine::{EngineParts, SamplingParams};
use proptest::prelude::*;
use stage3::sampler::sample;

fn params() -> impl Strategy<Value = SamplingParams> {
    (
        prop::sample::select(vec![0.0f32, 0.3, 1.0, 1.7]),
        prop::option::of(1usize..12),
        prop::sample::select(vec![0.1f32, 0.5, 0.9, 1.0]),
    )
        .prop_map(|(temperature, top_k, top_p)| SamplingParams {
            temperature,
            top_k,
            top_p,
            ..SamplingParams::default()
        })
}

/// Logits with deliberate ties (values on a coarse grid).
fn logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec((-8i32..8).prop_map(|v| v as f32 * 0.5), 1..40)
}

proptest! {
    #![proptest_config(common::proptest_config(256))]

    /// Same logits, parameters and draws: the same tokens. The draws are the engine's, for a
    /// random seed at the positions of four consecutive tokens.
    #[test]
    fn matches_the_engine(logits in logits(), params in params(), seed in any::<u64>()) {
        for position in 0..4 {
            let draw = philox::uniform(seed, position);
            prop_assert_eq!(
                sample(&logits, &params, draw),
                reference::sample(&logits, &params, draw),
                "draw {} with {:?}", draw, params
            );
        }
    }

    /// Whatever the draw, a token outside the top k is never chosen.
    #[test]
    fn top_k_keeps_the_k_largest(logits in logits(), k in 1usize..5, draw in draw()) {
        let params = SamplingParams { top_k: Some(k), ..SamplingParams::default() };
        let token = sample(&logits, &params, draw) as usize;
        let larger = logits.iter().filter(|&&v| v > logits[token]).count();
        prop_assert!(larger < k, "token {} has {} larger logits, top_k {}", token, larger, k);
    }
}

/// A draw as the engine makes them: a multiple of 2⁻²⁴ in `[0, 1)`.
fn draw() -> impl Strategy<Value = f32> {
    (0u32..1 << 24).prop_map(|i| i as f32 / 16_777_216.0)
}

/// Draws spread over `[0, 1)`, the largest just below 1. The draw is an argument, so each
/// boundary below is hit on every run, not left to luck.
const DRAWS: [f32; 6] = [0.0, 0.2, 0.45, 0.55, 0.8, 1.0 - 1.0 / 16_777_216.0];

fn random(temperature: f32, top_k: Option<usize>, top_p: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        ..SamplingParams::default()
    }
}

/// The chapter's example: probabilities 0.5, 0.3, 0.15, 0.05 and top-p 0.75 keep two tokens,
/// renormalized to 0.625 and 0.375; the draw `u` is scaled by the kept mass 0.8 and walked
/// down them: `u < 0.625` gives token 0, otherwise token 1.
#[test]
fn the_chapters_top_p_example() {
    let logits = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
    let params = random(1.0, None, 0.75);
    for (u, token) in [
        (0.0, 0),
        (0.2, 0),
        (0.6, 0),
        (0.62, 0),
        (0.63, 1),
        (0.9, 1),
        (0.99, 1),
    ] {
        assert_eq!(
            sample(&logits, &params, u),
            token,
            "draw u = {u} with probabilities [0.5, 0.3, 0.15, 0.05], top_p 0.75"
        );
    }
}

/// Top-p keeps the shortest prefix whose mass *reaches* p. Two equal logits have probability
/// 0.5 each: with top_p = 0.5 the first alone reaches it, so only token 0 is ever drawn.
#[test]
fn top_p_keeps_the_prefix_that_reaches_p_exactly() {
    let params = random(1.0, None, 0.5);
    for u in DRAWS {
        assert_eq!(
            sample(&[2.0, 2.0], &params, u),
            0,
            "logits [2, 2], top_p 0.5, draw u = {u}: token 0's 0.5 already reaches top_p"
        );
    }
}

/// Top-k comes first and renormalizes, then top-p acts on the renormalized probabilities.
/// Four equal logits, top_k 2: the two survivors have 0.5 each, so top_p 0.45 keeps one.
/// (Top-p over all four, 0.25 each, would keep two.)
#[test]
fn top_k_comes_before_top_p() {
    let params = random(1.0, Some(2), 0.45);
    for u in DRAWS {
        assert_eq!(
            sample(&[1.0, 1.0, 1.0, 1.0], &params, u),
            0,
            "logits [1, 1, 1, 1], top_k 2, top_p 0.45, draw u = {u}"
        );
    }
}

/// Temperature comes before top-p. Logits [1, 0] at temperature 0.5 give probabilities
/// 0.881 and 0.119, so top_p 0.85 keeps token 0 alone. (At temperature 1 they are 0.731 and
/// 0.269, and top-p would keep both.)
#[test]
fn temperature_comes_before_top_p() {
    let params = random(0.5, None, 0.85);
    for u in DRAWS {
        assert_eq!(
            sample(&[1.0, 0.0], &params, u),
            0,
            "logits [1, 0], temperature 0.5, top_p 0.85, draw u = {u}"
        );
    }
}

/// Temperature sharpens (below 1) or flattens (above 1) the distribution: with logits
/// [ln 3, 0] (probabilities 0.75 and 0.25 at temperature 1) and temperature 2 the
/// probabilities are 3^½ / (3^½ + 1) = 0.634 and 0.366.
#[test]
fn temperature_divides_the_logits() {
    let params = random(2.0, None, 1.0);
    let logits = [3f32.ln(), 0.0];
    for (u, token) in [(0.6, 0), (0.63, 0), (0.64, 1), (0.7, 1)] {
        assert_eq!(
            sample(&logits, &params, u),
            token,
            "logits [ln 3, 0], temperature 2, draw u = {u}"
        );
    }
}

#[test]
fn greedy_takes_the_lowest_id_on_ties() {
    let greedy = SamplingParams::greedy(1);
    for u in DRAWS {
        assert_eq!(sample(&[0.0, 3.0, 1.0, 3.0], &greedy, u), 1, "draw u = {u}");
        assert_eq!(sample(&[-1.0], &greedy, u), 0, "draw u = {u}");
    }
}

fn your_sampler() -> EngineParts {
    EngineParts {
        sample,
        ..EngineParts::default()
    }
}

/// "With your sampler, the engine generates exactly the same tokens", greedy and seeded.
#[test]
fn engine_with_your_sampler_generates_the_same_tokens() {
    common::assert_same_as_engine("your sampler (greedy)", your_sampler, &common::greedy());
    common::assert_same_as_engine("your sampler (seeded)", your_sampler, &common::random());
    common::check_smollm2("your sampler", your_sampler());
}
