//! Exercise 5: your `sample` against the engine's on random logits and parameters, then
//! inside the engine.

mod common;

use engine::sampler as reference;
use engine::{EngineParts, SamplingParams};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
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

    /// Same logits, parameters and seed: the same tokens, draw after draw.
    #[test]
    fn matches_the_engine(logits in logits(), params in params(), seed in any::<u64>()) {
        let (mut a, mut b) = (StdRng::seed_from_u64(seed), StdRng::seed_from_u64(seed));
        for draw in 0..4 {
            prop_assert_eq!(
                sample(&logits, &params, &mut a),
                reference::sample(&logits, &params, &mut b),
                "draw {} with {:?}", draw, params
            );
        }
    }

    /// Whatever the draw, a token outside the top k is never chosen.
    #[test]
    fn top_k_keeps_the_k_largest(logits in logits(), k in 1usize..5, seed in any::<u64>()) {
        let params = SamplingParams { top_k: Some(k), ..SamplingParams::default() };
        let mut rng = StdRng::seed_from_u64(seed);
        let token = sample(&logits, &params, &mut rng) as usize;
        let larger = logits.iter().filter(|&&v| v > logits[token]).count();
        prop_assert!(larger < k, "token {} has {} larger logits, top_k {}", token, larger, k);
    }
}

#[test]
fn greedy_takes_the_lowest_id_on_ties() {
    let mut rng = StdRng::seed_from_u64(0);
    let greedy = SamplingParams::greedy(1);
    assert_eq!(sample(&[0.0, 3.0, 1.0, 3.0], &greedy, &mut rng), 1);
    assert_eq!(sample(&[-1.0], &greedy, &mut rng), 0);
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
