//! `roofline::measure`: never panics without a GPU, gives figures in the range any GPU the
//! kernels run on can reach, and gives back the memory it took (the engine sizes its KV cache
//! from free memory right after `lab bench` measures).

use std::io::Write;

use kernels::cudarc::driver::CudaContext;
use kernels::roofline::{measure, COPY_BYTES, GEMM_SIZE};
use kernels::KernelError;

#[test]
fn a_device_that_is_not_there_is_an_error_not_a_panic() {
    match measure(1000) {
        Err(KernelError::Unavailable(_) | KernelError::NoCompiler(_)) => {}
        other => panic!("measure(1000) gave {other:?}"),
    }
}

#[test]
fn ceilings_are_plausible_and_their_memory_is_given_back() {
    if let Err(e) = kernels::check_device(0) {
        let _ = writeln!(std::io::stderr(), "skipped: {e}");
        return;
    }
    // Holding the primary context keeps it (and so the free-memory figure) alive across the
    // call; `measure` retains the same context.
    let ctx = CudaContext::new(0).unwrap();
    let (free_before, _) = ctx.mem_get_info().unwrap();
    let c = measure(0).unwrap();
    let (free_after, total) = ctx.mem_get_info().unwrap();
    println!("{c}; free memory {free_before} -> {free_after} of {total} bytes");

    // Sm_90 parts: ~2-5 TB/s of HBM copy, hundreds of dense bf16 TFLOP/s. A unit slip (bytes
    // counted once, ms taken as s, FLOPs as multiply-adds) lands outside these ranges.
    assert!(
        (500.0..20_000.0).contains(&c.copy_gb_s),
        "copy {} GB/s",
        c.copy_gb_s
    );
    assert!(
        (50.0..5_000.0).contains(&c.gemm_tflop_s),
        "GEMM {} TFLOP/s",
        c.gemm_tflop_s
    );
    let copy = 2.0 * COPY_BYTES as f64 / (c.copy_ms * 1e-3) / 1e9;
    let gemm = 2.0 * (GEMM_SIZE as f64).powi(3) / (c.gemm_ms * 1e-3) / 1e12;
    assert!((copy - c.copy_gb_s).abs() < 1e-9 * copy);
    assert!((gemm - c.gemm_tflop_s).abs() < 1e-9 * gemm);
    assert!(!c.device_name.is_empty());
    // ~2.4 GiB were allocated; all of it comes back (64 MiB of slack for the driver's own
    // bookkeeping, far below any of the buffers).
    assert!(
        free_after + (64 << 20) >= free_before,
        "free memory fell from {free_before} to {free_after} bytes"
    );
}
