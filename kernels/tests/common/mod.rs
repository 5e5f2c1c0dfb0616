//! Shared by the kernel tests: open the GPU or skip, fresh random inputs, poisoned outputs,
//! relative L2 error against an f64 reference.
//!
//! Error bound. bf16 keeps 8 significant bits: rounding one value costs at most 2^-9 ≈ 2e-3
//! relative, ~1.1e-3 RMS. Inputs are exact bf16 values and the references compute in f64 from
//! them, so the error measured is the kernels' own: f32 accumulation (negligible) and one or
//! two bf16 roundings of the output (as transformers rounds). That lands near 1e-3..4e-3;
//! [`BF16_BOUND`] = 1e-2 leaves headroom while a wrong index, a skipped token of weight or an
//! unwritten (NaN) element gives 1e-1 or more, or NaN, which fails `err <= bound`.
#![allow(dead_code)] // each test binary uses part of this module

use std::io::Write;
use std::sync::Arc;

use half::bf16;
use kernels::cudarc::driver::{CudaSlice, CudaStream};
use kernels::{Gpu, KernelError};

pub const BF16_BOUND: f64 = 1e-2;

/// The GPU, or `None` after printing why the test is skipped (`skipped: no CUDA driver (...)`). Other errors fail the test.
pub fn gpu_or_skip() -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(gpu) => Some(gpu),
        Err(e @ (KernelError::Unavailable(_) | KernelError::NoCompiler(_))) => {
            // Straight to stderr, not `eprintln!`: the test harness captures the macros'
            // output of passing tests, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "skipped: {e}");
            None
        }
        Err(e) => panic!("opening the GPU failed: {e}"),
    }
}

/// SplitMix64: fresh inputs every run (seed from the clock), reproducible with
/// `KERNELS_SEED=<seed>`, printed by every test.
pub struct Rng(u64);

impl Rng {
    pub fn fresh(test: &str) -> Self {
        let seed = std::env::var("KERNELS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("{test}: KERNELS_SEED={seed}");
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Roughly normal (sum of 4 uniforms, rescaled), times `scale`.
    pub fn normal(&mut self, scale: f64) -> f64 {
        let s: f64 = (0..4)
            .map(|_| (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
            .sum();
        (s - 2.0) * (3.0f64).sqrt() * scale
    }

    pub fn bf16s(&mut self, n: usize, scale: f64) -> Vec<bf16> {
        (0..n).map(|_| bf16::from_f64(self.normal(scale))).collect()
    }

    /// A random permutation of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            v.swap(i, self.below(i + 1));
        }
        v
    }
}

pub fn to_f64(v: &[bf16]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// `‖got − want‖₂ / ‖want‖₂`; NaN if `got` holds a NaN (so `err <= bound` fails).
pub fn rel_l2(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "compared buffers differ in length");
    let num: f64 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Asserts the relative L2 error is within `bound`, printing it either way.
pub fn assert_close(what: &str, got: &[bf16], want: &[f64], bound: f64) {
    let err = rel_l2(&to_f64(got), want);
    println!("{what}: relative L2 error {err:.2e} (bound {bound:.0e})");
    assert!(
        err <= bound,
        "{what}: relative L2 error {err:e} > {bound:e}"
    );
}

/// A device buffer of `n` NaNs: an element the kernel fails to write stays NaN.
pub fn poisoned(stream: &Arc<CudaStream>, n: usize) -> CudaSlice<bf16> {
    stream
        .clone_htod(&vec![bf16::NAN; n])
        .expect("upload poisoned buffer")
}

/// `out[t, j] = Σ_i x[t, i] · w[j, i] + bias[j]` in f64, rows split over the CPU's threads.
pub fn linear_reference(
    x: &[f64],
    w: &[f64],
    bias: Option<&[f64]>,
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    let threads = std::thread::available_parallelism().map_or(4, |p| p.get());
    let rows_per = n.div_ceil(threads);
    // Work in [n, m] so that each thread owns a contiguous range of weight rows.
    let mut out_t = vec![0.0f64; n * m];
    std::thread::scope(|s| {
        for (c, chunk) in out_t.chunks_mut(rows_per * m).enumerate() {
            s.spawn(move || {
                for (r, o) in chunk.chunks_mut(m).enumerate() {
                    let j = c * rows_per + r;
                    let wr = &w[j * k..][..k];
                    for (t, o) in o.iter_mut().enumerate() {
                        let xr = &x[t * k..][..k];
                        *o = xr.iter().zip(wr).map(|(a, b)| a * b).sum::<f64>()
                            + bias.map_or(0.0, |b| b[j]);
                    }
                }
            });
        }
    });
    for (j, row) in out_t.chunks(m).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            out[t * n + j] = v;
        }
    }
    out
}
