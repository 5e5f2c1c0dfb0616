//! silu_and_mul against an f64 reference.
mod common;

use common::{assert_close, gpu_or_skip, poisoned, to_f64, Rng, BF16_BOUND};

#[test]
fn silu_and_mul_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.silu_and_mul);
    let mut rng = Rng::fresh("silu_and_mul");
    // (num_tokens, d): SmolLM2's and Llama-3.2-1B's intermediate sizes, odd widths.
    for (t, d) in [(1, 1536), (9, 8192), (4, 100), (3, 13), (1000, 64)] {
        let x = rng.bf16s(t * 2 * d, 2.0);
        let dx = s.clone_htod(&x).unwrap();
        let mut out = poisoned(s, t * d);
        k.silu_and_mul(s, &mut out.as_view_mut(), &dx.as_view(), t)
            .unwrap();
        let xf = to_f64(&x);
        let want: Vec<f64> = xf
            .chunks(2 * d)
            .flat_map(|row| {
                let (g, u) = row.split_at(d);
                g.iter()
                    .zip(u)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect::<Vec<_>>()
            })
            .collect();
        let got = s.clone_dtoh(&out).unwrap();
        assert_close(&format!("silu_and_mul [{t}, {d}]"), &got, &want, BF16_BOUND);
    }
}
