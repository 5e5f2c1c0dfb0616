//! RMSNorm and fused add + RMSNorm against an f64 reference, at widths that take the vector
//! path (multiples of 8), the scalar path (not), and rows longer than the register cache.
mod common;

use common::{assert_close, gpu_or_skip, poisoned, to_f64, Rng, BF16_BOUND};

const EPS: f32 = 1e-5;
/// (num_tokens, hidden_size): SmolLM2, Llama-3.2-1B at 7 tokens, odd widths, a long row.
const SHAPES: [(usize, usize); 5] = [(1, 576), (7, 2048), (33, 100), (3, 13), (5, 8200)];

/// A norm's weight: near 1, as trained ones are.
fn norm_weight(rng: &mut Rng, h: usize) -> Vec<half::bf16> {
    rng.bf16s(h, 0.3)
        .iter()
        .map(|v| *v + half::bf16::ONE)
        .collect()
}

fn reference(x: &[f64], w: &[f64]) -> Vec<f64> {
    let h = w.len();
    x.chunks(h)
        .flat_map(|row| {
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / h as f64 + EPS as f64).sqrt();
            row.iter().zip(w).map(move |(v, w)| v * inv * w)
        })
        .collect()
}

#[test]
fn rms_norm_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.rms_norm);
    let mut rng = Rng::fresh("rms_norm");
    for (t, h) in SHAPES {
        let x = rng.bf16s(t * h, 2.0);
        let w = norm_weight(&mut rng, h);
        let (dx, dw) = (s.clone_htod(&x).unwrap(), s.clone_htod(&w).unwrap());
        let mut out = poisoned(s, t * h);
        k.rms_norm(s, &mut out.as_view_mut(), &dx.as_view(), &dw.as_view(), EPS)
            .unwrap();
        let got = s.clone_dtoh(&out).unwrap();
        let want = reference(&to_f64(&x), &to_f64(&w));
        assert_close(&format!("rms_norm [{t}, {h}]"), &got, &want, BF16_BOUND);
    }
}

#[test]
fn fused_add_rms_norm_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.rms_norm);
    let mut rng = Rng::fresh("fused_add_rms_norm");
    for (t, h) in SHAPES {
        let x = rng.bf16s(t * h, 1.0);
        let r = rng.bf16s(t * h, 3.0);
        let w = norm_weight(&mut rng, h);
        let (mut dx, mut dr) = (s.clone_htod(&x).unwrap(), s.clone_htod(&r).unwrap());
        let dw = s.clone_htod(&w).unwrap();
        k.fused_add_rms_norm(
            s,
            &mut dx.as_view_mut(),
            &mut dr.as_view_mut(),
            &dw.as_view(),
            EPS,
        )
        .unwrap();
        let sum: Vec<f64> = to_f64(&x)
            .iter()
            .zip(to_f64(&r))
            .map(|(a, b)| a + b)
            .collect();
        let want = reference(&sum, &to_f64(&w));
        let (got_x, got_r) = (s.clone_dtoh(&dx).unwrap(), s.clone_dtoh(&dr).unwrap());
        assert_close(
            &format!("fused_add residual [{t}, {h}]"),
            &got_r,
            &sum,
            BF16_BOUND,
        );
        assert_close(
            &format!("fused_add normed [{t}, {h}]"),
            &got_x,
            &want,
            BF16_BOUND,
        );
    }
}

/// The last layer's way out: the sampled rows of `residual + delta` normalized, bit for bit what
/// fused_add_rms_norm (rms_norm without delta) then a gather give, near the f64 reference, the
/// inputs untouched, and a row index past the tokens a row of NaN.
#[test]
fn add_rms_norm_rows_is_the_norm_then_the_gather() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, k) = (&gpu.stream, &gpu.kernels.rms_norm);
    let mut rng = Rng::fresh("add_rms_norm_rows");
    for (t, h) in SHAPES {
        let x = rng.bf16s(t * h, 1.0);
        let r = rng.bf16s(t * h, 3.0);
        let w = norm_weight(&mut rng, h);
        // Last row first, a repeat, the first row, then one past the tokens.
        let rows: Vec<u32> = vec![t as u32 - 1, t as u32 / 2, t as u32 - 1, 0, t as u32];
        let (dx, dr, dw) = (
            s.clone_htod(&x).unwrap(),
            s.clone_htod(&r).unwrap(),
            s.clone_htod(&w).unwrap(),
        );
        let drows = s.clone_htod(&rows).unwrap();
        for with_delta in [true, false] {
            let what = format!("[{t}, {h}], delta {with_delta}");
            let mut out = poisoned(s, rows.len() * h);
            let delta = dx.as_view();
            k.add_rms_norm_rows(
                s,
                &mut out.as_view_mut(),
                with_delta.then_some(&delta),
                &dr.as_view(),
                &drows.as_view(),
                &dw.as_view(),
                EPS,
            )
            .unwrap();
            let got = s.clone_dtoh(&out).unwrap();
            // The two kernels it replaces, on copies.
            let normed = if with_delta {
                let (mut nx, mut nr) = (s.clone_htod(&x).unwrap(), s.clone_htod(&r).unwrap());
                k.fused_add_rms_norm(
                    s,
                    &mut nx.as_view_mut(),
                    &mut nr.as_view_mut(),
                    &dw.as_view(),
                    EPS,
                )
                .unwrap();
                s.clone_dtoh(&nx).unwrap()
            } else {
                let mut nx = poisoned(s, t * h);
                k.rms_norm(s, &mut nx.as_view_mut(), &dr.as_view(), &dw.as_view(), EPS)
                    .unwrap();
                s.clone_dtoh(&nx).unwrap()
            };
            let stream: Vec<f64> = if with_delta {
                to_f64(&x)
                    .iter()
                    .zip(to_f64(&r))
                    .map(|(a, b)| a + b)
                    .collect()
            } else {
                to_f64(&r)
            };
            let want_all = reference(&stream, &to_f64(&w));
            let (mut exact, mut want) = (Vec::new(), Vec::new());
            for &row in &rows[..rows.len() - 1] {
                let at = row as usize * h;
                exact.extend_from_slice(&normed[at..at + h]);
                want.extend_from_slice(&want_all[at..at + h]);
            }
            let gathered = &got[..exact.len()];
            let same = gathered
                .iter()
                .zip(&exact)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{what}: not the norm then the gather, bit for bit");
            assert_close(
                &format!("add_rms_norm_rows {what}"),
                gathered,
                &want,
                BF16_BOUND,
            );
            assert!(
                got[exact.len()..].iter().all(|v| v.is_nan()),
                "{what}: a row past the tokens must be NaN"
            );
            assert_eq!(
                s.clone_dtoh(&dr).unwrap(),
                r,
                "{what}: the residual was written"
            );
            assert_eq!(s.clone_dtoh(&dx).unwrap(), x, "{what}: delta was written");
        }
    }
}
