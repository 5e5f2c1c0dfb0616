//! Shared by the GPU tests: open the GPU or skip, compile `.cu` files with NVRTC, fresh random
//! inputs, closeness.

use std::io::Write;
use std::sync::Arc;

use kernels::cudarc::driver::{CudaContext, CudaModule, CudaStream, LaunchConfig};
use kernels::cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};
use kernels::KernelError;

/// The GPU's context and a stream, or `None` after printing why the test is skipped.
pub fn gpu_or_skip() -> Option<(Arc<CudaContext>, Arc<CudaStream>)> {
    match kernels::check_device(0) {
        Ok(()) => {
            let ctx = CudaContext::new(0).expect("open GPU 0");
            let stream = ctx.new_stream().expect("create a stream");
            Some((ctx, stream))
        }
        Err(e @ (KernelError::Unavailable(_) | KernelError::NoCompiler(_))) => {
            // Straight to stderr: the harness captures `eprintln!` of passing tests.
            // On a line of its own (scripts/gpu-check.sh looks for `^skipped:`).
            let _ = writeln!(std::io::stderr(), "\nskipped: {e}");
            None
        }
        Err(e) => panic!("opening the GPU failed: {e}"),
    }
}

/// Compiles `files` (name, source), concatenated in order, into one module, for the GPU the
/// engine's kernels are compiled for (`kernels::compile::ARCH`).
pub fn compile(dir: &str, ctx: &Arc<CudaContext>, files: &[(&str, &str)]) -> Arc<CudaModule> {
    let source: String = files
        .iter()
        .map(|(name, src)| format!("#line 1 \"{dir}/{name}\"\n{src}\n"))
        .collect();
    let name = files.last().expect("a file").0;
    let opts = CompileOptions {
        arch: Some(kernels::compile::ARCH),
        name: Some(name.to_string()),
        options: vec!["--std=c++17".to_string()],
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(source, opts).unwrap_or_else(|e| match e {
        CompileError::CompileError { log, .. } => {
            panic!("NVRTC could not compile {name}:\n{}", log.to_string_lossy())
        }
        other => panic!("NVRTC could not compile {name}: {other}"),
    });
    ctx.load_module(ptx).expect("load the compiled module")
}

/// SplitMix64, seeded from the clock (or `KERNELS_SEED`), the seed printed.
pub struct Rng(u64);

impl Rng {
    pub fn fresh(test: &str) -> Rng {
        let seed = std::env::var("KERNELS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{test}: KERNELS_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-scale, scale)`.
    pub fn f32s(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| scale * ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0))
            .collect()
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
        v
    }
}

/// Elementwise `|got − want| <= tol · (1 + |want|)`; a NaN says the kernel left it unwritten.
/// Prints the relative L2 error as well (the figure the kernels crate's tests print).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let mut worst = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            !g.is_nan() || w.is_nan(),
            "{what}: element {i} is NaN: the kernel did not write it (is the .cu file still \
             the stub?)"
        );
        let err = (g - w).abs() / (1.0 + w.abs());
        assert!(err <= tol, "{what}: element {i} is {g}, it should be {w}");
        worst = worst.max(err);
    }
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    let l2 = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    println!(
        "{what}: relative L2 error {l2:.1e}, largest |got - want| / (1 + |want|) {worst:.1e} \
         (bound {tol:.0e})"
    );
}

/// One block of `threads` threads per point of `grid`, with `shared_bytes` of dynamic shared
/// memory.
pub fn config(grid: (usize, usize), threads: usize, shared_bytes: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0 as u32, grid.1 as u32, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: shared_bytes as u32,
    }
}
