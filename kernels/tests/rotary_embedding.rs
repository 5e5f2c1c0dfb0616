//! Rotary embedding against an f64 reference using the same f32 cos/sin table.
mod common;

use common::{assert_close, gpu_or_skip, to_f64, Rng, BF16_BOUND};

const MAX_POS: usize = 4096;

/// `[MAX_POS, d]` cosines then sines, as `engine::ops::rotary_embedding::cos_sin_cache`.
fn cos_sin(d: usize, theta: f64) -> Vec<f32> {
    let mut cache = vec![0.0f32; MAX_POS * d];
    for (pos, row) in cache.chunks_mut(d).enumerate() {
        for i in 0..d / 2 {
            let f = (1.0 / theta.powf((2 * i) as f64 / d as f64)) as f32;
            let angle = pos as f32 * f;
            row[i] = angle.cos();
            row[d / 2 + i] = angle.sin();
        }
    }
    cache
}

fn reference(x: &[f64], positions: &[u32], d: usize, cache: &[f32]) -> Vec<f64> {
    let width = x.len() / positions.len();
    let mut out = x.to_vec();
    for (t, row) in out.chunks_mut(width).enumerate() {
        let cs = &cache[positions[t] as usize * d..][..d];
        for head in row.chunks_mut(d) {
            for i in 0..d / 2 {
                let (a, b) = (head[i], head[i + d / 2]);
                let (c, s) = (cs[i] as f64, cs[d / 2 + i] as f64);
                head[i] = a * c - b * s;
                head[i + d / 2] = b * c + a * s;
            }
        }
    }
    out
}

#[test]
fn rotary_embedding_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.rotary_embedding);
    let mut rng = Rng::fresh("rotary_embedding");
    // (num_tokens, num_heads, num_kv_heads, head_dim)
    for (t, nh, nkv, d) in [
        (5, 9, 3, 64),
        (3, 32, 8, 128),
        (2, 2, 1, 6),
        (300, 4, 4, 64),
    ] {
        let cache = cos_sin(d, 10000.0);
        let positions: Vec<u32> = (0..t).map(|_| rng.below(MAX_POS) as u32).collect();
        let q = rng.bf16s(t * nh * d, 1.0);
        let kk = rng.bf16s(t * nkv * d, 1.0);
        let (mut dq, mut dk) = (s.clone_htod(&q).unwrap(), s.clone_htod(&kk).unwrap());
        let dpos = s.clone_htod(&positions).unwrap();
        let dcache = s.clone_htod(&cache).unwrap();
        k.rotary_embedding(
            s,
            &dpos.as_view(),
            &mut dq.as_view_mut(),
            &mut dk.as_view_mut(),
            &dcache.as_view(),
            nh,
            nkv,
            d,
        )
        .unwrap();
        let want_q = reference(&to_f64(&q), &positions, d, &cache);
        let want_k = reference(&to_f64(&kk), &positions, d, &cache);
        let shape = format!("[{t}, {nh}/{nkv}, {d}]");
        assert_close(
            &format!("rotary q {shape}"),
            &s.clone_dtoh(&dq).unwrap(),
            &want_q,
            BF16_BOUND,
        );
        assert_close(
            &format!("rotary k {shape}"),
            &s.clone_dtoh(&dk).unwrap(),
            &want_k,
            BF16_BOUND,
        );
    }
}
