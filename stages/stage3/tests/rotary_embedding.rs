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

/// The chapter's example: head_dim 4, rope_theta 10000, so pair 0 = (v[0], v[2]) turns by
/// `p · 1` and pair 1 = (v[1], v[3]) by `p · 0.01` radians. Queries (2 heads) and the key
/// (1 head) of a token at position 1.
#[test]
fn the_chapters_example_pairs_halves_not_neighbours() {
    let config = engine::config::ModelConfig {
        head_dim: 4,
        rope_theta: 10000.0,
        rope_scaling: None,
        ..tiny_config()
    };
    let cache = cos_sin_cache(&config, 4);
    let mut q = vec![1.0, 0.0, 0.0, 0.0, /* head 2 */ 0.0, 1.0, 0.0, 0.0];
    let mut k = vec![2.0, 0.0, 0.0, 1.0];
    rotary_embedding(&[1], &mut q, &mut k, 4, &cache);
    let (c0, s0) = (1f32.cos(), 1f32.sin());
    let (c1, s1) = (0.01f32.cos(), 0.01f32.sin());
    // (1, 0) turned by 1 rad lands in v[0] and v[2]; v[1] and v[3] stay 0.
    common::assert_close("query head 0", &q[..4], &[c0, 0.0, s0, 0.0], 1e-6);
    common::assert_close("query head 1", &q[4..], &[0.0, c1, 0.0, s1], 1e-6);
    // Keys turn by the same angles: pair 0 (2, 0) → (2cos 1, 2sin 1); pair 1 (0, 1) → (−sin 0.01, cos 0.01).
    common::assert_close("key", &k, &[2.0 * c0, -s1, 2.0 * s0, c1], 1e-6);
}

/// Rotation keeps every pair's length, for queries and keys alike.
#[test]
fn rotation_keeps_lengths() {
    let cache = cos_sin_cache(&tiny_config(), 64);
    let q0: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let k0: Vec<f32> = q0[..32].iter().map(|v| v * 0.5 - 1.0).collect();
    let (mut q, mut k) = (q0.clone(), k0.clone());
    rotary_embedding(&[5, 41], &mut q, &mut k, 16, &cache);
    let norms = |v: &[f32]| -> Vec<f32> {
        v.chunks(16)
            .flat_map(|h| (0..8).map(move |i| (h[i] * h[i] + h[i + 8] * h[i + 8]).sqrt()))
            .collect()
    };
    common::assert_close("query pair lengths", &norms(&q), &norms(&q0), 1e-5);
    common::assert_close("key pair lengths", &norms(&k), &norms(&k0), 1e-5);
    assert_ne!(k, k0, "the keys must be rotated too");
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
