//! Exercise 4: your `rotary_embedding` against the engine's, then inside the engine.

mod common;

use engine::backend::cpu_backend::CpuKernels;
use engine::ops::rotary_embedding::{self as reference, cos_sin_cache};
use engine::tiny_model::tiny_config;
use engine::EngineParts;
use proptest::prelude::*;
use stage3::rotary_embedding::rotary_embedding;

const MAX_POSITION: usize = 512;

/// (head_dim, num_heads, num_kv_heads, positions, query, key)
type Case = (usize, usize, usize, Vec<usize>, Vec<f32>, Vec<f32>);

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec![2usize, 4, 8, 16, 64]),
        1usize..5,
        1usize..3,
        prop::collection::vec(0usize..MAX_POSITION, 0..6),
    )
        .prop_flat_map(|(d, heads, kv_heads, positions)| {
            let t = positions.len();
            (
                Just((d, heads, kv_heads, positions)),
                prop::collection::vec(-4.0f32..4.0, t * heads * d),
                prop::collection::vec(-4.0f32..4.0, t * kv_heads * d),
            )
        })
        .prop_map(|((d, h, kv, p), q, k)| (d, h, kv, p, q, k))
}

proptest! {
    #![proptest_config(common::proptest_config(128))]

    #[test]
    fn matches_the_engine((d, _heads, _kv_heads, positions, q, k) in case()) {
        let config = engine::config::ModelConfig { head_dim: d, ..tiny_config() };
        let cache = cos_sin_cache(&config, MAX_POSITION);
        let (mut q1, mut k1) = (q.clone(), k.clone());
        let (mut q2, mut k2) = (q, k);
        rotary_embedding(&positions, &mut q1, &mut k1, d, &cache);
        reference::rotary_embedding(&positions, &mut q2, &mut k2, d, &cache);
        common::assert_close("query", &q1, &q2, 1e-5);
        common::assert_close("key", &k1, &k2, 1e-5);
    }
}

#[test]
fn position_zero_changes_nothing() {
    let cache = cos_sin_cache(&tiny_config(), 8);
    let q0: Vec<f32> = (0..32).map(|i| i as f32 - 7.5).collect();
    let (mut q, mut k) = (q0.clone(), q0[..16].to_vec());
    rotary_embedding(&[0], &mut q, &mut k, 16, &cache);
    assert_eq!(q, q0, "position 0 rotates by angle 0");
}

fn your_rotary() -> EngineParts {
    EngineParts {
        kernels: CpuKernels {
            rotary_embedding,
            ..CpuKernels::default()
        },
        ..EngineParts::default()
    }
}

/// "With your rotary embedding, the engine generates exactly the same tokens."
#[test]
fn engine_with_your_rotary_embedding_generates_the_same_tokens() {
    common::assert_same_as_engine("your rotary_embedding", your_rotary, &common::greedy());
    common::check_smollm2("your rotary_embedding", your_rotary());
}
