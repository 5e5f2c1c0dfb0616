//! The GPU's ceilings, measured in the same process as the figures compared with them: how
//! fast memory can be streamed, and how fast the tensor cores multiply bf16 matrices.
//!
//! A kernel (or a whole decode step) that moves `B` bytes in `t` seconds runs at `B / t`; that
//! number means little until it is set beside what the chip can do. Datasheet peaks are not
//! reachable (the H200's 4.8 TB/s is ~4.2 in practice, and clocks vary by board and
//! temperature), so we measure two ceilings instead, the way `kernel_bench` and `lab bench`
//! report their ratios:
//! - **copy**: a 1 GiB device-to-device copy; bytes read + written per second. A kernel that
//!   streams memory once (RMSNorm, decode attention, a batch-1 GEMM) cannot beat it by much.
//! - **GEMM**: an 8192³ bf16 matrix multiply through our own cuBLAS call ([`Linear`]), f32
//!   accumulation; 2·M·N·K FLOPs per second. Large prefill steps are bound by it.
//!
//! Method: random data (never zeros: power and so clocks depend on the bits), buffers far
//! larger than the 50 MB L2, [`WARMUP`] launches, then [`REPS`] launches each between two CUDA
//! events; the median is reported ([`time_ms`]).

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaSlice, CudaStream};
use half::bf16;

use crate::error::{KernelError, Result};
use crate::linear::Linear;

/// Untimed launches before the timed ones (clocks ramp, caches and TLBs fill).
pub const WARMUP: usize = 5;
/// Timed launches; the median is reported.
pub const REPS: usize = 20;
/// Bytes the copy ceiling copies (1 GiB; it reads and writes this much).
pub const COPY_BYTES: usize = 1 << 30;
/// M = N = K of the GEMM ceiling.
pub const GEMM_SIZE: usize = 8192;

/// What this GPU reached on the two reference workloads.
#[derive(Debug, Clone, PartialEq)]
pub struct Ceilings {
    /// The driver's name for the device, e.g. `NVIDIA H200`.
    pub device_name: String,
    /// Device-to-device copy of [`COPY_BYTES`]: bytes read + written, in 1e9 bytes/s.
    pub copy_gb_s: f64,
    /// Median milliseconds of that copy.
    pub copy_ms: f64,
    /// bf16 GEMM of [`GEMM_SIZE`]³ through [`Linear`] (cuBLAS), in 1e12 FLOP/s.
    pub gemm_tflop_s: f64,
    /// Median milliseconds of that GEMM.
    pub gemm_ms: f64,
}

impl std::fmt::Display for Ceilings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: copy {:.0} GB/s (1 GiB device to device, read + write), bf16 GEMM {:.1} \
             TFLOP/s ({GEMM_SIZE}³, cuBLAS); median of {REPS} after {WARMUP} warm-up",
            self.device_name, self.copy_gb_s, self.gemm_tflop_s
        )
    }
}

/// Measures GPU `ordinal`'s ceilings on a context and stream of its own, and frees everything
/// it allocated before returning (so a caller that measures first and then sizes a KV cache
/// from free memory loses nothing). Takes about a second, ~2.4 GiB of GPU memory meanwhile.
/// Without a driver or device: [`KernelError::Unavailable`], never a panic.
pub fn measure(ordinal: usize) -> Result<Ceilings> {
    crate::check_device(ordinal)?;
    let ctx = CudaContext::new(ordinal)?;
    // SAFETY: every buffer below is used on the one stream made next, in program order, so
    // none needs cudarc's cross-stream events (as in `Gpu::open`).
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream()?;
    let ceilings = measure_on(&ctx, &stream)?;
    stream.synchronize()?; // the buffers' asynchronous frees are done
    Ok(ceilings)
}

/// [`measure`] on a context and stream the caller already has (`kernel_bench` times its kernels
/// on the same stream).
pub fn measure_on(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>) -> Result<Ceilings> {
    let device_name = ctx.name()?;

    let n = COPY_BYTES / std::mem::size_of::<bf16>();
    let src = random_bf16(stream, n, 1)?;
    let mut dst = uninit_bf16(stream, n)?;
    let copy_ms = time_ms(ctx, stream, || {
        Ok::<_, KernelError>(stream.memcpy_dtod(&src, &mut dst)?)
    })?;
    drop((src, dst));

    let s = GEMM_SIZE;
    let linear = Linear::new(stream, 1)?;
    let (x, w) = (
        random_bf16(stream, s * s, 20)?,
        random_bf16(stream, s * s, 21)?,
    );
    let mut out = uninit_bf16(stream, s * s)?;
    let gemm_ms = time_ms(ctx, stream, || {
        linear.forward(&mut out.as_view_mut(), &x.as_view(), &w.as_view(), None, s)
    })?;

    Ok(Ceilings {
        device_name,
        copy_gb_s: 2.0 * COPY_BYTES as f64 / (copy_ms * 1e-3) / 1e9,
        copy_ms,
        gemm_tflop_s: 2.0 * (s * s * s) as f64 / (gemm_ms * 1e-3) / 1e12,
        gemm_ms,
    })
}

/// Median milliseconds of `f` (which launches work on `stream`) over [`REPS`] launches after
/// [`WARMUP`], each timed by CUDA events recorded on `stream` around it.
pub fn time_ms<E: From<KernelError>>(
    ctx: &Arc<CudaContext>,
    stream: &Arc<CudaStream>,
    mut f: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<f64, E> {
    let driver = |e: cudarc::driver::DriverError| E::from(KernelError::from(e));
    for _ in 0..WARMUP {
        f()?;
    }
    let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut times = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let start = ctx.new_event(flags).map_err(driver)?;
        let end = ctx.new_event(flags).map_err(driver)?;
        start.record(stream).map_err(driver)?;
        f()?;
        end.record(stream).map_err(driver)?;
        times.push(start.elapsed_ms(&end).map_err(driver)? as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[REPS / 2])
}

/// `n` random bf16 values in [-2, 2): a chunk of up to 16 Mi values drawn on the host by an
/// xorshift seeded with `seed`, uploaded once, then tiled on the device.
pub fn random_bf16(stream: &Arc<CudaStream>, n: usize, seed: u64) -> Result<CudaSlice<bf16>> {
    let chunk = n.min(16 << 20);
    let mut x = seed | 1;
    let host: Vec<bf16> = (0..chunk)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bf16::from_f32(((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0)
        })
        .collect();
    let src = stream.clone_htod(&host)?;
    let mut buf = uninit_bf16(stream, n)?;
    let mut at = 0;
    while at < n {
        let len = chunk.min(n - at);
        stream.memcpy_dtod(&src.slice(..len), &mut buf.slice_mut(at..at + len))?;
        at += len;
    }
    Ok(buf)
}

/// `n` bf16 of device memory, not initialized (write before reading: the contents are
/// whatever was there).
pub fn uninit_bf16(stream: &Arc<CudaStream>, n: usize) -> Result<CudaSlice<bf16>> {
    // SAFETY: device memory is never read by Rust code until copied to the host, and every
    // bit pattern is a valid bf16, so stale contents are garbage values, not undefined
    // behaviour.
    Ok(unsafe { stream.alloc::<bf16>(n) }?)
}
