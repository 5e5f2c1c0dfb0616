//! Times RMSNorm, reshape_and_cache, decode paged attention and a decode-shaped GEMM at large
//! sizes and compares their achieved bandwidth with a device-to-device copy measured in the same
//! run; times prefill attention and an 8192³ GEMM (cuBLAS, `linear`) in TFLOP/s against the bf16
//! GEMM ceiling of docs/gpu.md; times random sampling against its first version.
//!
//! Run on the GPU machine: `kernel_bench` (built by `scripts/gpu-check.sh build`);
//! `kernel_bench --tp-shapes` times only one layer's projections of the Llama-2-7B shape on one
//! GPU against one rank of TP 2 (does a kernel on half the weights take half the time?);
//! `kernel_bench --lt-algos` times cuBLASLt's ranked algorithms for those projections;
//! `kernel_bench --skinny` times `skinny_gemm` (each main loop compiled for the GPU, each row
//! tile) against cuBLAS on them at 8-32 tokens; `kernel_bench --small-attention` times only
//! decode attention at small batches (each split and merge, and the wide single pass);
//! `kernel_bench --fused-norm` times only the norm-fed GEMVs (`fused_norm_gemv`) beside the copy,
//! then the 1B shape's down and o_proj at one token (each GEMV entry point and cuBLAS).
//! Method (`kernels::roofline`, which also measures the copy and the 8192³ GEMM): random data
//! (never zeros), buffers far larger than the 50 MB L2, 5 warm-up launches, then 20 launches
//! each between two CUDA events; the median is reported. Bytes counted are the bytes a kernel
//! must move at minimum (reads + writes).

use anyhow::{bail, Result};
use kernels::cudarc::driver::CudaSlice;
use kernels::gemv::{Epilogue, Gemv, NormInput, NormPrologue, RotaryCache, SplitK, Staging};
use kernels::linear::Linear;
use kernels::paged_attention::{
    rings, DecodeShape, PagedAttention, SplitKWorkspace, SplitMerge, PARTITION_SIZE,
};
use kernels::prefill_attention::{PrefillShape, BLOCK_MS};
use kernels::roofline::{self, random_bf16, uninit_bf16, REPS, WARMUP};
use kernels::sampling::RowParams;
use kernels::Gpu;

/// bf16 GEMM 8192³ on the H200 through PyTorch (docs/gpu.md): the tensor-core ceiling that
/// prefill attention's and `linear`'s TFLOP/s are compared with (`linear` 8192³, the first
/// TFLOP/s row, is the same GEMM through our cuBLAS call, measured by `kernels::roofline`).
const BF16_GEMM_TFLOPS: f64 = 771.0;

/// Launches of a kernel in each recorded graph the benchmarks time (so that one graph replay
/// gives their mean without the host's launch cost).
const BACK_TO_BACK: usize = 50;

/// Median milliseconds of one of `reps` launches of `f`, recorded once as a CUDA graph and
/// replayed: the kernels' time on the GPU, without the host's launch cost (which, for kernels of
/// a few microseconds, is what timing launches from the host measures). As in a decode step.
fn graph_ms(gpu: &Gpu, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    f()?; // warm-up (and any lazy setup) outside the capture
    let s = &gpu.stream;
    s.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    let recorded = (0..reps).try_for_each(|_| f());
    let graph = s.end_capture(CUgraphInstantiate_flags(0))?;
    recorded?;
    let graph = graph.ok_or_else(|| anyhow::anyhow!("empty capture"))?;
    Ok(time_ms(gpu, || Ok(graph.launch()?))? / reps as f64)
}

/// Median milliseconds of `f` (see `roofline::time_ms`).
fn time_ms(gpu: &Gpu, f: impl FnMut() -> Result<()>) -> Result<f64> {
    roofline::time_ms(&gpu.ctx, &gpu.stream, f)
}

/// `0..n` in a shuffled order (Fisher-Yates driven by a 64-bit LCG whose state `x` carries
/// over between calls), so cache blocks are not laid out in sequence order, as after a real
/// run of allocations and frees.
fn shuffled(n: usize, x: &mut u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..order.len()).rev() {
        *x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (*x >> 33) as usize % (i + 1));
    }
    order
}

/// `n` bf16 logits drawn from a normal distribution (Box-Muller over a 64-bit LCG), with the
/// spread of a language model head's output (std ~2-3), not uniform noise.
fn normal_bf16(n: usize, std: f64, seed: u64) -> Vec<half::bf16> {
    let mut x = seed;
    let mut uniform = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            half::bf16::from_f64(std * z)
        })
        .collect()
}

struct Row {
    kernel: String,
    size: String,
    ms: f64,
    gbs: f64,
}

/// One decode batch's attention operands: `seqs` sequences of `ctx_len` cached tokens each,
/// `nh` query and `nkv` KV heads of `d`, blocks of `bs` tokens handed out in shuffled order.
struct DecodeInputs {
    shape: DecodeShape,
    ctx_len: usize,
    kc: CudaSlice<half::bf16>,
    vc: CudaSlice<half::bf16>,
    q: CudaSlice<half::bf16>,
    out: CudaSlice<half::bf16>,
    tables: CudaSlice<u32>,
    seq_lens: CudaSlice<u32>,
    /// Bytes one call must move: K and V, q in and out, the block tables.
    bytes: usize,
}

impl DecodeInputs {
    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu: &Gpu,
        seqs: usize,
        ctx_len: usize,
        nh: usize,
        nkv: usize,
        d: usize,
        bs: usize,
        x: &mut u64,
    ) -> Result<Self> {
        let s = &gpu.stream;
        let max_blocks = ctx_len.div_ceil(bs);
        let num_blocks = seqs * max_blocks;
        let kv_len = num_blocks * bs * nkv * d;
        Ok(Self {
            shape: DecodeShape {
                num_seqs: seqs,
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: d,
                block_size: bs,
                max_blocks_per_seq: max_blocks,
            },
            ctx_len,
            kc: random_bf16(s, kv_len, 8)?,
            vc: random_bf16(s, kv_len, 9)?,
            q: random_bf16(s, seqs * nh * d, 10)?,
            out: uninit_bf16(s, seqs * nh * d)?,
            tables: s.clone_htod(&shuffled(num_blocks, x))?,
            seq_lens: s.clone_htod(&vec![ctx_len as u32; seqs])?,
            bytes: 2 * kv_len * 2 + 2 * seqs * nh * d * 2 + num_blocks * 4,
        })
    }

    fn run(&mut self, gpu: &Gpu, pa: &PagedAttention, ws: &mut SplitKWorkspace) -> Result<()> {
        let scale = 1.0 / (self.shape.head_dim as f32).sqrt();
        Ok(pa.decode(
            &gpu.stream,
            ws,
            &mut self.out.as_view_mut(),
            &self.q.as_view(),
            &self.kc.as_view(),
            &self.vc.as_view(),
            &self.tables.as_view(),
            &self.seq_lens.as_view(),
            &self.shape,
            scale,
            self.ctx_len,
        )?)
    }
}

/// One shape and token count of [`fused_norm_gemv`]: microseconds per launch sequence, by name.
struct FusedRow {
    what: &'static str,
    n: usize,
    k: usize,
    tokens: usize,
    times: Vec<(String, f64)>,
}

/// The norm + projection (+ SiLU·mul) in one GEMV launch against what it replaces, each timed
/// inside a CUDA graph of 50 back-to-back repetitions (as a decode step runs them), weights
/// read from HBM (copies cycled as for the GEMV rows above), µs per repetition:
/// - `fused, per-warp norm`: `Gemv::forward_norm` as the engine runs it today (every warp
///   normalizes its input; split-K where the engine's rule splits);
/// - `fused, per-block norm, G groups`: the norm once per block, each warp streaming G row
///   groups (`one wave`: G from the occupancy, every block resident at once);
/// - `cuBLAS + norm (+ SiLU)`: `fused_add_rms_norm`, the cuBLAS GEMM, and for gate/up
///   `silu_and_mul`: the three launches the fused one replaces when the engine takes cuBLAS.
///
/// Shapes: Llama-3.2-1B's qkv [3072, 2048] and gate/up [16384, 2048] (the two norm-fed
/// projections of a layer) and the LM head [128256, 2048] behind the final norm (the engine
/// does not fuse that one yet); and SmolLM2-135M's gate/up [3072, 576], where the engine
/// keeps the per-warp norm (a launch of a few µs: latency, not bytes), to see what the
/// per-block norm's barriers cost there. Percent of copy counts the weights only.
fn fused_norm_gemv(gpu: &Gpu, copy_gb_s: f64) -> Result<Vec<FusedRow>> {
    let block = |groups_per_warp| NormPrologue::PerBlock { groups_per_warp };
    let variants: Vec<(&str, Gemv)> = [
        ("fused, per-warp norm", NormPrologue::PerWarp),
        ("fused, per-block norm, G 1", block(1)),
        ("fused, per-block norm, G 2", block(2)),
        ("fused, per-block norm, G 4", block(4)),
        ("fused, per-block norm, one wave", block(0)),
    ]
    .into_iter()
    .map(|(name, p)| (name, gpu.kernels.gemv.clone().with_norm_prologue(p)))
    .collect();
    let shapes = [
        ("1B qkv", 3072usize, 2048usize, Epilogue::Plain),
        ("1B gate/up", 16384, 2048, Epilogue::SiluAndMul),
        ("1B LM head", 128256, 2048, Epilogue::Plain),
        ("135M gate/up", 3072, 576, Epilogue::SiluAndMul),
    ];
    fused_norm_rows(gpu, copy_gb_s, &shapes, &[1, 2, 4, 8], &variants)
}

/// [`fused_norm_gemv`]'s timings for any `shapes` (name, n, k, epilogue), token counts and
/// GEMV variants, each beside cuBLAS + norm (+ SiLU·mul).
fn fused_norm_rows(
    gpu: &Gpu,
    copy_gb_s: f64,
    shapes: &[(&'static str, usize, usize, Epilogue)],
    tokens: &[usize],
    variants: &[(&str, Gemv)],
) -> Result<Vec<FusedRow>> {
    const L2_BYTES: usize = 50 << 20;
    let (s, k_) = (&gpu.stream, &gpu.kernels);
    let lin = Linear::new(s, tokens.iter().copied().max().unwrap_or(1))?;
    let mut rows = Vec::new();
    for &(what, n, k, epilogue) in shapes {
        let copies = (2 * L2_BYTES).div_ceil(n * k * 2);
        let ws = (0..copies)
            .map(|c| random_bf16(s, n * k, 40 + c as u64))
            .collect::<Result<Vec<_>, _>>()?;
        let gamma = random_bf16(s, k, 39)?;
        let width = if epilogue == Epilogue::Plain {
            n
        } else {
            n / 2
        };
        for &m in tokens {
            let delta = random_bf16(s, m * k, 41)?;
            let residual = random_bf16(s, m * k, 42)?;
            let mut r_out = uninit_bf16(s, m * k)?;
            let mut out = uninit_bf16(s, m * width)?;
            let mut times = Vec::new();
            for (name, g) in variants {
                let mut i = 0;
                let us = 1e3
                    * graph_ms(gpu, BACK_TO_BACK, || {
                        i += 1;
                        let (dv, rv, gv) = (delta.as_view(), residual.as_view(), gamma.as_view());
                        let input = NormInput {
                            partials: None,
                            delta: Some(&dv),
                            residual: &rv,
                            gamma: &gv,
                            eps: 1e-5,
                        };
                        Ok(g.forward_norm(
                            s,
                            &mut out.as_view_mut(),
                            Some(&mut r_out.as_view_mut()),
                            &input,
                            &ws[i % copies].as_view(),
                            None,
                            epilogue,
                            m,
                        )?)
                    })?;
                times.push((name.to_string(), us));
            }
            // Unfused: the norm in place (x becomes the normed input, r the new stream), the
            // GEMM, then SiLU·mul for gate/up.
            let mut x = random_bf16(s, m * k, 43)?;
            let mut r = random_bf16(s, m * k, 44)?;
            let mut y = uninit_bf16(s, m * n)?;
            let mut i = 0;
            let us = 1e3
                * graph_ms(gpu, BACK_TO_BACK, || {
                    i += 1;
                    k_.rms_norm.fused_add_rms_norm(
                        s,
                        &mut x.as_view_mut(),
                        &mut r.as_view_mut(),
                        &gamma.as_view(),
                        1e-5,
                    )?;
                    lin.forward(
                        &mut y.as_view_mut(),
                        &x.as_view(),
                        &ws[i % copies].as_view(),
                        None,
                        m,
                    )?;
                    if epilogue == Epilogue::SiluAndMul {
                        k_.silu_and_mul
                            .silu_and_mul(s, &mut out.as_view_mut(), &y.as_view(), m)?;
                    }
                    Ok(())
                })?;
            let name = if epilogue == Epilogue::Plain {
                "cuBLAS + norm"
            } else {
                "cuBLAS + norm + SiLU"
            };
            times.push((name.to_string(), us));
            for (name, us) in &times {
                let pct = 100.0 * (n * k * 2) as f64 / (us * 1e-6) / 1e9 / copy_gb_s;
                println!("{what:<12} {m} tok  {name:<32} {us:>9.1} us  {pct:>5.1}% of copy");
            }
            rows.push(FusedRow {
                what,
                n,
                k,
                tokens: m,
                times,
            });
        }
    }
    Ok(rows)
}

/// Llama-3.2-1B's two small projections of a layer, which the split-K GEMV streams at about
/// half the copy bandwidth at one token (12:31 UTC, 2026-11-29: qkv with the norm 39%, o_proj
/// ~49%), as the engine launches them today against the staged split-K kernels
/// ([`Staging::Shared`]: one wave, each block's W copied into shared memory before the wait),
/// inside the same CUDA graph of 50 back-to-back launches as the rows above, weights read from
/// HBM (copies cycled past the L2). Rows (µs per repetition; percent of copy counts weights):
/// - `1B o_proj` [2048, 2048], `Gemv::forward`: `split-K (engine)` and `split-K staged`;
/// - `1B qkv` [3072, 2048] behind its norm, `Gemv::forward_norm`: `norm + split-K (engine)` and
///   `norm + split-K staged`; then with the rotary embedding and the cache write:
///   `norm + split-K, then qkv_rotary_cache (engine)` (two launches, as the engine runs them
///   today) and `norm + split-K staged + rotary, one launch` (`forward_norm_rope`, which the
///   staged kernel keeps fused under split-K).
///
/// Each row says which it ran: a staged row whose launch did not stage (a GPU with fewer SMs
/// than the H200's 132) is an error, not a silent split-K time.
fn staged_gemv(gpu: &Gpu, copy_gb_s: f64) -> Result<Vec<FusedRow>> {
    use kernels::qkv_rotary_cache::QkvShape;
    const L2_BYTES: usize = 50 << 20;
    const MAX_POS: usize = 4096;
    let (s, k_) = (&gpu.stream, &gpu.kernels);
    // The engine's GEMV (LAB_GEMV_* unset): split-K where Gemv::splits says so, the
    // per-block norm in a one-wave grid where it applies (not under split-K); here staging off.
    let engine = k_
        .gemv
        .clone()
        .with_norm_prologue(NormPrologue::PerBlock { groups_per_warp: 0 });
    let staged = engine.clone().with_staging(Staging::Shared);
    let shape = QkvShape {
        num_heads: 32,
        num_kv_heads: 8,
        head_dim: 64,
    };
    let kv_row = shape.num_kv_heads * shape.head_dim;
    let mut rows = Vec::new();
    for (what, n, k) in [("1B o_proj", 2048usize, 2048usize), ("1B qkv", 3072, 2048)] {
        let qkv = what == "1B qkv";
        for g in [&engine, &staged] {
            let want = g.staging() == Staging::Shared;
            for m in [1usize, 2] {
                if g.stages(m, n, k, false) != want || (qkv && g.stages(m, n, k, true) != want) {
                    bail!("{what} at {m} tokens: staged {want} expected, the GEMV's rule differs");
                }
            }
        }
        let copies = (2 * L2_BYTES).div_ceil(n * k * 2);
        let ws = (0..copies)
            .map(|c| random_bf16(s, n * k, 60 + c as u64))
            .collect::<Result<Vec<_>, _>>()?;
        let gamma = random_bf16(s, k, 59)?;
        let table: Vec<f32> = (0..MAX_POS * shape.head_dim)
            .map(|i| ((i % 97) as f32 / 97.0) - 0.5)
            .collect();
        let table = s.clone_htod(&table)?;
        for m in [1usize, 2] {
            let x = random_bf16(s, m * k, 61)?;
            let delta = random_bf16(s, m * k, 62)?;
            let residual = random_bf16(s, m * k, 63)?;
            let mut r_out = uninit_bf16(s, m * k)?;
            let mut out = uninit_bf16(s, m * n)?;
            let mut q = uninit_bf16(s, m * shape.num_heads * shape.head_dim)?;
            let slots = 64 * m;
            let (mut kc, mut vc) = (
                uninit_bf16(s, slots * kv_row)?,
                uninit_bf16(s, slots * kv_row)?,
            );
            let positions =
                s.clone_htod(&(0..m as u32).map(|t| 1000 + 7 * t).collect::<Vec<_>>())?;
            let slot_mapping =
                s.clone_htod(&(0..m as u64).map(|t| 3 + 5 * t).collect::<Vec<_>>())?;
            let mut times = Vec::new();
            if !qkv {
                for (name, g) in [("split-K (engine)", &engine), ("split-K staged", &staged)] {
                    let mut i = 0;
                    let us = 1e3
                        * graph_ms(gpu, BACK_TO_BACK, || {
                            i += 1;
                            Ok(g.forward(
                                s,
                                &mut out.as_view_mut(),
                                &x.as_view(),
                                &ws[i % copies].as_view(),
                                None,
                                m,
                            )?)
                        })?;
                    times.push((name.to_string(), us));
                }
            } else {
                let variants = [
                    ("norm + split-K (engine)", &engine, false),
                    ("norm + split-K staged", &staged, false),
                    (
                        "norm + split-K, then qkv_rotary_cache (engine)",
                        &engine,
                        true,
                    ),
                    ("norm + split-K staged + rotary, one launch", &staged, true),
                ];
                for (name, g, rotary) in variants {
                    let mut i = 0;
                    let us = 1e3
                        * graph_ms(gpu, BACK_TO_BACK, || {
                            i += 1;
                            let (dv, rv, gv) =
                                (delta.as_view(), residual.as_view(), gamma.as_view());
                            let input = NormInput {
                                partials: None,
                                delta: Some(&dv),
                                residual: &rv,
                                gamma: &gv,
                                eps: 1e-5,
                            };
                            let wv = ws[i % copies].as_view();
                            let (pv, sv, tv) =
                                (positions.as_view(), slot_mapping.as_view(), table.as_view());
                            if rotary && g.fuses_rotary(m, n, k) {
                                let (mut kcv, mut vcv) = (kc.as_view_mut(), vc.as_view_mut());
                                let mut rope = RotaryCache {
                                    key_cache: &mut kcv,
                                    value_cache: &mut vcv,
                                    positions: &pv,
                                    slot_mapping: &sv,
                                    cos_sin_cache: &tv,
                                    shape,
                                };
                                g.forward_norm_rope(
                                    s,
                                    &mut q.as_view_mut(),
                                    Some(&mut r_out.as_view_mut()),
                                    &input,
                                    &wv,
                                    None,
                                    &mut rope,
                                    m,
                                )?;
                                return Ok(());
                            }
                            g.forward_norm(
                                s,
                                &mut out.as_view_mut(),
                                Some(&mut r_out.as_view_mut()),
                                &input,
                                &wv,
                                None,
                                Epilogue::Plain,
                                m,
                            )?;
                            if rotary {
                                k_.qkv_rotary_cache.forward(
                                    s,
                                    &mut q.as_view_mut(),
                                    &mut kc.as_view_mut(),
                                    &mut vc.as_view_mut(),
                                    &out.as_view(),
                                    &pv,
                                    &sv,
                                    &tv,
                                    shape,
                                )?;
                            }
                            Ok(())
                        })?;
                    times.push((name.to_string(), us));
                }
            }
            for (name, us) in &times {
                let pct = 100.0 * (n * k * 2) as f64 / (us * 1e-6) / 1e9 / copy_gb_s;
                println!("{what:<12} {m} tok  {name:<48} {us:>9.1} us  {pct:>5.1}% of copy");
            }
            rows.push(FusedRow {
                what,
                n,
                k,
                tokens: m,
                times,
            });
        }
    }
    Ok(rows)
}

/// [`staged_gemv`]'s rows as one table, a line per variant (the two shapes have different ones).
fn print_staged_table(rows: &[FusedRow], copy_gb_s: f64) {
    if rows.is_empty() {
        return;
    }
    println!(
        "
split-K GEMV today vs staged in shared memory, inside a CUDA graph (% of copy, weights only):"
    );
    println!("| weights | tokens | launch | µs | of copy |");
    println!("| --- | ---: | --- | ---: | ---: |");
    for r in rows {
        for (name, us) in &r.times {
            let pct = 100.0 * (r.n * r.k * 2) as f64 / (us * 1e-6) / 1e9 / copy_gb_s;
            println!(
                "| {} [{}, {}] | {} | {name} | {us:.1} | {pct:.0}% |",
                r.what, r.n, r.k, r.tokens
            );
        }
    }
}

/// The fused-versus-unfused rows as one table: µs and percent of the copy bandwidth (weights
/// only), one column per variant.
fn print_fused_table(rows: &[FusedRow], copy_gb_s: f64) {
    let Some(first) = rows.first() else { return };
    println!("\nnorm + projection (+ SiLU·mul) inside a CUDA graph, µs (% of copy, weights only):");
    let names: Vec<&str> = first.times.iter().map(|(n, _)| n.as_str()).collect();
    println!("| weights | tokens | {} |", names.join(" | "));
    println!("| --- | ---: |{}", " ---: |".repeat(names.len()));
    for r in rows {
        let cells: Vec<String> = r
            .times
            .iter()
            .map(|(_, us)| {
                let pct = 100.0 * (r.n * r.k * 2) as f64 / (us * 1e-6) / 1e9 / copy_gb_s;
                format!("{us:.1} ({pct:.0}%)")
            })
            .collect();
        println!(
            "| {} [{}, {}] | {} | {} |",
            r.what,
            r.n,
            r.k,
            r.tokens,
            cells.join(" | ")
        );
    }
}

/// One launch of a projection: `out = x · Wᵀ` on views of `[m, n]`, `[m, k]` and `[n, k]`.
type Projection<'a> = dyn Fn(
        &mut cudarc::driver::CudaViewMut<'_, half::bf16>,
        &cudarc::driver::CudaView<'_, half::bf16>,
        &cudarc::driver::CudaView<'_, half::bf16>,
    ) -> Result<()>
    + 'a;

/// Times the decode projections `[m, k] x [n, k]^T` for each `(n, k)` of `shapes` and each `m`
/// of `tokens`: our GEMV, warp per row group and split-K (where it takes `m` tokens), against
/// cuBLAS (`linear`) on the same operands; `push(kernel, size, ms, bytes)` gets each, bytes =
/// the weights read. Timed inside a CUDA graph of 50 launches (graph_ms), as a decode step runs
/// them; the launches cycle through copies of W that together exceed the 50 MB L2 twice, so
/// that each reads its weights from HBM as a decode step does (one copy when W alone is that
/// large).
fn decode_projections(
    gpu: &Gpu,
    shapes: &[(usize, usize)],
    tokens: &[usize],
    push: &mut dyn FnMut(&str, String, f64, f64),
) -> Result<()> {
    use kernels::gemv::Gemv;
    const L2_BYTES: usize = 50 << 20;
    let (s, k) = (&gpu.stream, &gpu.kernels);
    let max_m = tokens.iter().copied().max().unwrap_or(1);
    let lin = Linear::new(s, max_m)?;
    let never = k.gemv.clone().with_split_k(SplitK::Never);
    let always = k.gemv.clone().with_split_k(SplitK::Always);
    let one_wave = always
        .clone()
        .with_split_grid(kernels::gemv::SplitGrid::OneWave);
    let engine = k.gemv.clone();
    for &(n, kk) in shapes {
        let copies = (2 * L2_BYTES).div_ceil(n * kk * 2);
        let ws = (0..copies)
            .map(|c| random_bf16(s, n * kk, 22 + c as u64))
            .collect::<Result<Vec<_>, _>>()?;
        for &m in tokens {
            let x = random_bf16(s, m * kk, 23)?;
            let mut out = uninit_bf16(s, m * n)?;
            let size = format!("[{m}, {kk}] x [{n}, {kk}]^T");
            let gemvs = [
                ("gemv", &never),
                ("gemv split-K", &always),
                ("gemv split-K, one wave", &one_wave),
                ("gemv (engine's rule)", &engine),
            ];
            // One graph of BACK_TO_BACK launches of `f`, each on the next copy of W.
            let mut cycled = |f: &Projection<'_>| {
                let mut i = 0;
                graph_ms(gpu, BACK_TO_BACK, || {
                    i += 1;
                    f(
                        &mut out.as_view_mut(),
                        &x.as_view(),
                        &ws[i % copies].as_view(),
                    )
                })
            };
            for (name, g) in gemvs.into_iter().filter(|_| Gemv::supports(m, kk)) {
                let ms = cycled(&|o, xv, wv| Ok(g.forward(s, o, xv, wv, None, m)?))?;
                push(name, size.clone(), ms, (n * kk * 2) as f64);
            }
            let ms = cycled(&|o, xv, wv| Ok(lin.forward(o, xv, wv, None, m)?))?;
            push("linear (cuBLAS, same)", size, ms, (n * kk * 2) as f64);
        }
    }
    Ok(())
}

/// A weight's (out_features n, in_features k).
type Shape = (usize, usize);

/// One layer's projections of the Llama-2-7B shape (hidden 4096, MLP 11008): (name, TP 1's
/// (n, k), a TP 2 rank's). qkv and gate/up split their outputs, o and down their inputs.
const LAYER_7B: [(&str, Shape, Shape); 4] = [
    ("qkv", (3 * 4096, 4096), (3 * 4096 / 2, 4096)),
    ("o_proj", (4096, 4096), (4096, 4096 / 2)),
    ("gate_up", (2 * 11008, 4096), (11008, 4096)),
    ("down", (4096, 11008), (4096, 11008 / 2)),
];

/// `kernel_bench --tp-shapes`: the copy bandwidth, then one layer's projections of the
/// Llama-2-7B shape on one GPU (TP 1) and on one rank of TP 2 (each weight halved along the
/// dimension tensor parallelism splits), at 1 and 32 tokens, and per token count the layer's
/// projection time at TP 2 over TP 1: 0.5 if the kernels halved with the bytes. Then the
/// norm-fed projections (qkv, gate/up) as the engine launches them, fused with the norm, at
/// one token, under the engine's split-K rule and three others (`LAB_GEMV_SPLIT_BELOW` sets
/// the engine's).
fn tp_shapes(gpu: &Gpu) -> Result<()> {
    let ceilings = roofline::measure_on(&gpu.ctx, &gpu.stream)?;
    println!(
        "copy (d2d) 1 GiB: {:.4} ms, {:.0} GB/s",
        ceilings.copy_ms, ceilings.copy_gb_s
    );
    let layer = LAYER_7B;
    let (h, f) = (4096usize, 11008usize);
    let tokens = [1usize, 32];
    // (tp, name, m) -> fastest ms of the variants, as the engine would pick per shape.
    let mut best = std::collections::BTreeMap::<(usize, &str, usize), f64>::new();
    for (tp, pick) in [(1usize, 0usize), (2, 1)] {
        for &(name, tp1, tp2) in &layer {
            let shape = if pick == 0 { tp1 } else { tp2 };
            for m in tokens {
                let mut push = |kernel: &str, size: String, ms: f64, bytes: f64| {
                    let gbs = bytes / (ms * 1e-3) / 1e9;
                    let pct = 100.0 * gbs / ceilings.copy_gb_s;
                    println!(
                        "tp {tp} {name:<8} {kernel:<24} {size:<30} {:>8.2} µs {gbs:>6.0} GB/s {pct:>4.0}%",
                        ms * 1e3
                    );
                    let e = best.entry((tp, name, m)).or_insert(f64::INFINITY);
                    *e = e.min(ms);
                };
                decode_projections(gpu, &[shape], &[m], &mut push)?;
            }
        }
    }
    // The engine runs qkv and gate/up fused with the layer's norm (and SiLU·mul): those
    // launches at both sizes, one token, under the engine's split-K rule and others.
    let engine = gpu
        .kernels
        .gemv
        .clone()
        .with_norm_prologue(NormPrologue::PerBlock { groups_per_warp: 0 })
        .with_staging(Staging::Shared);
    let variants: Vec<(&str, Gemv)> = [
        ("fused, engine's rule", SplitK::Auto),
        ("fused, split below 4 blocks/SM", SplitK::Below(4)),
        ("fused, split-K always", SplitK::Always),
        ("fused, split-K never", SplitK::Never),
    ]
    .into_iter()
    .map(|(name, split)| (name, engine.clone().with_split_k(split)))
    .collect();
    let fused = [
        ("TP 1 qkv", 3 * h, h, Epilogue::Plain),
        ("TP 2 qkv", 3 * h / 2, h, Epilogue::Plain),
        ("TP 1 gate/up", 2 * f, h, Epilogue::SiluAndMul),
        ("TP 2 gate/up", f, h, Epilogue::SiluAndMul),
    ];
    fused_norm_rows(gpu, ceilings.copy_gb_s, &fused, &[1], &variants)?;
    println!("\n| tokens | TP 1 layer µs | TP 2 rank layer µs | TP 2 / TP 1 |");
    println!("| ---: | ---: | ---: | ---: |");
    for m in tokens {
        let sum = |tp| -> f64 {
            layer
                .iter()
                .map(|(name, ..)| best[&(tp, *name, m)])
                .sum::<f64>()
                * 1e3
        };
        let (one, two) = (sum(1), sum(2));
        println!("| {m} | {one:.1} | {two:.1} | {:.2} |", two / one);
    }
    Ok(())
}

/// `kernel_bench --lt-algos`: the decode projections of the Llama-2-7B shape (TP 1, and one
/// rank of TP 2) at 8, 32 and 128 tokens: cuBLAS's GEMM as `linear` calls it, then each of
/// cuBLASLt's ranked algorithms for the shape (`kernels::linear_lt`), each in a graph of 50
/// launches over weights far larger than L2. Prints the heuristic's first pick and the fastest.
fn lt_algos(gpu: &Gpu) -> Result<()> {
    use kernels::linear_lt::LinearLt;
    const L2_BYTES: usize = 50 << 20;
    let ceilings = roofline::measure_on(&gpu.ctx, &gpu.stream)?;
    let copy = ceilings.copy_gb_s;
    println!("copy (d2d) 1 GiB: {copy:.0} GB/s");
    let s = &gpu.stream;
    let lin = Linear::new(s, 256)?;
    let lt = LinearLt::new(s)?;
    let shapes = [1, 2].into_iter().flat_map(|tp| {
        LAYER_7B.map(|(name, one, two)| {
            let (n, k) = if tp == 1 { one } else { two };
            (format!("tp{tp} {name}"), n, k)
        })
    });
    println!("| shape | m | MB | cuBLAS µs (% copy) | Lt first µs | Lt best µs (% copy) | best's rank, config |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for (name, n, kk) in shapes {
        let bytes = (n * kk * 2) as f64;
        let copies = (2 * L2_BYTES).div_ceil(n * kk * 2);
        let ws = (0..copies)
            .map(|c| random_bf16(s, n * kk, 40 + c as u64))
            .collect::<Result<Vec<_>, _>>()?;
        for m in [8usize, 32, 128] {
            let x = random_bf16(s, m * kk, 41)?;
            let mut out = uninit_bf16(s, m * n)?;
            let mut i = 0;
            let base = graph_ms(gpu, BACK_TO_BACK, || {
                i += 1;
                Ok(lin.forward(
                    &mut out.as_view_mut(),
                    &x.as_view(),
                    &ws[i % copies].as_view(),
                    None,
                    m,
                )?)
            })?;
            let plans = lt.candidates(m, n, kk, 24)?;
            let mut times = Vec::new();
            for plan in &plans {
                let mut i = 0;
                let ms = graph_ms(gpu, BACK_TO_BACK, || {
                    i += 1;
                    Ok(lt.forward(
                        plan,
                        &mut out.as_view_mut(),
                        &x.as_view(),
                        &ws[i % copies].as_view(),
                    )?)
                });
                times.push(ms.unwrap_or(f64::INFINITY));
            }
            let (bi, best) = times
                .iter()
                .copied()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, f64::NAN));
            let pct = |ms: f64| 100.0 * bytes / (ms * 1e-3) / 1e9 / copy;
            println!(
                "| {name} | {m} | {:.1} | {:.2} ({:.0}%) | {:.2} | {:.2} ({:.0}%) | {} of {}, {} |",
                bytes / 1e6,
                base * 1e3,
                pct(base),
                times[0] * 1e3,
                best * 1e3,
                pct(best),
                bi,
                plans.len(),
                plans[bi].describe()
            );
        }
    }
    Ok(())
}

/// Milliseconds of one projection through cuBLAS as `linear` calls it (then `silu_and_mul` for
/// gate/up), in a graph of 50 launches cycling over `wts` (copies past L2).
#[allow(clippy::too_many_arguments)]
fn cublas_ms(
    gpu: &Gpu,
    lin: &Linear,
    x: &CudaSlice<half::bf16>,       // [m, k]
    y: &mut CudaSlice<half::bf16>,   // [m, n]
    act: &mut CudaSlice<half::bf16>, // [m, n / 2]
    wts: &[CudaSlice<half::bf16>],   // each [n, k]
    m: usize,
    glu: bool,
) -> Result<f64> {
    let (s, k) = (&gpu.stream, &gpu.kernels);
    let mut i = 0;
    graph_ms(gpu, BACK_TO_BACK, || {
        i += 1;
        let w = &wts[i % wts.len()];
        lin.forward(&mut y.as_view_mut(), &x.as_view(), &w.as_view(), None, m)?;
        if glu {
            k.silu_and_mul
                .silu_and_mul(s, &mut act.as_view_mut(), &y.as_view(), m)?;
        }
        Ok(())
    })
}

/// Milliseconds of one `skinny_gemm` launch at `splits` (its default when `None`), in a graph
/// of 50 launches cycling over the weights (copies past L2). `launch`: x `[m, k]`, the weight
/// copies (each `[n, k]`), m, the epilogue.
fn skinny_ms(
    gpu: &Gpu,
    sg: &kernels::skinny_gemm::SkinnyGemm,
    ws: &mut kernels::skinny_gemm::SkinnyGemmWorkspace,
    out: &mut CudaSlice<half::bf16>, // [m, n] or [m, n / 2]
    launch: (
        &CudaSlice<half::bf16>,
        &[CudaSlice<half::bf16>],
        usize,
        Epilogue,
    ),
    splits: Option<usize>,
) -> Result<f64> {
    let (x, wts, m, epilogue) = launch;
    let mut i = 0;
    graph_ms(gpu, BACK_TO_BACK, || {
        i += 1;
        let w = &wts[i % wts.len()];
        let (xv, wv) = (x.as_view(), w.as_view());
        let mut o = out.as_view_mut();
        Ok(sg.forward(&gpu.stream, ws, &mut o, &xv, &wv, m, epilogue, splits)?)
    })
}

/// The projections `--skinny` and `--skinny-sweep` time, as (model, name, n, k): the 7B layer
/// at TP 1 and a TP 2 rank, then Llama-3.2-1B's and SmolLM2-135M's.
fn skinny_shapes() -> Vec<(String, &'static str, usize, usize)> {
    let mut shapes = Vec::new();
    for tp in [1usize, 2] {
        for (name, one, two) in LAYER_7B {
            let (n, kk) = if tp == 1 { one } else { two };
            shapes.push((format!("7B tp{tp}"), name, n, kk));
        }
    }
    for (model, h, f, kv) in [("1B", 2048, 8192, 512), ("135M", 576, 1536, 192)] {
        shapes.push((model.into(), "qkv", h + 2 * kv, h));
        shapes.push((model.into(), "o_proj", h, h));
        shapes.push((model.into(), "gate_up", 2 * f, h));
        shapes.push((model.into(), "down", h, f));
    }
    shapes
}

/// `kernel_bench --skinny`: the decode projections of the Llama-2-7B shape (TP 1 and a TP 2
/// rank) at 8, 16 and 32 tokens: cuBLAS as `linear` calls it against `skinny_gemm` at its
/// default split and at others, each in a graph of 50 launches over weights far larger than
/// L2; gate/up also with the SiLU·mul epilogue against cuBLAS followed by `silu_and_mul`.
fn skinny(gpu: &Gpu) -> Result<()> {
    use kernels::skinny_gemm::{MainLoop, SkinnyGemmWorkspace, ROW_TILES};
    const L2_BYTES: usize = 50 << 20;
    let ceilings = roofline::measure_on(&gpu.ctx, &gpu.stream)?;
    let copy = ceilings.copy_gb_s;
    println!("copy (d2d) 1 GiB: {copy:.0} GB/s");
    let (s, k) = (&gpu.stream, &gpu.kernels);
    let sg = &k.skinny_gemm;
    let mut ws = SkinnyGemmWorkspace::new(s, sg.num_sms())?;
    let lin = Linear::new(s, 256)?;
    // Per main loop and row tile (64, 128 weight rows a block): the default split, then the
    // best of 1-8. The TMA main loop where it was compiled (sm_90a).
    let mut variants: Vec<(MainLoop, usize)> = ROW_TILES.map(|r| (MainLoop::MmaSync, r)).to_vec();
    if sg.has_tma() {
        variants.extend(ROW_TILES.map(|r| (MainLoop::Tma, r)));
    }
    let mut header = "| shape | m | MB | cuBLAS µs (% copy) |".to_string();
    for (main_loop, rows) in &variants {
        header +=
            &format!(" {main_loop:?} {rows} rows: default µs (% copy, splits) | best (splits) |");
    }
    println!("{header}");
    println!(
        "| --- | ---: | ---: | ---: |{}",
        " ---: | ---: |".repeat(variants.len())
    );
    {
        for (model, name, n, kk) in skinny_shapes() {
            let bytes = (n * kk * 2) as f64;
            let copies = (2 * L2_BYTES).div_ceil(n * kk * 2);
            let wts = (0..copies)
                .map(|c| random_bf16(s, n * kk, 50 + c as u64))
                .collect::<Result<Vec<_>, _>>()?;
            let glu = name == "gate_up";
            for m in [8usize, 16, 32] {
                let x = random_bf16(s, m * kk, 51)?;
                let mut y = uninit_bf16(s, m * n)?;
                let mut act = uninit_bf16(s, m * n / 2)?;
                let base = cublas_ms(gpu, &lin, &x, &mut y, &mut act, &wts, m, glu)?;
                let epilogue = if glu {
                    Epilogue::SiluAndMul
                } else {
                    Epilogue::Plain
                };
                let pct = |ms: f64| 100.0 * bytes / (ms * 1e-3) / 1e9 / copy;
                let label = if glu { "gate_up + SiLU·mul" } else { name };
                let mut row = format!(
                    "| {model} {label} | {m} | {:.1} | {:.2} ({:.0}%) |",
                    bytes / 1e6,
                    base * 1e3,
                    pct(base)
                );
                for &(main_loop, rows) in &variants {
                    let sg = sg.clone().with_rows(rows)?.with_main_loop(main_loop)?;
                    let tiles = sg.row_tiles(n, epilogue);
                    let default = sg.splits(tiles, kk);
                    let mut times = Vec::new();
                    for splits in [default, 1, 2, 4, 8] {
                        // A split launch's partial sums must fit the workspace (forward
                        // refuses more); the TMA main loop's splits meet in a cluster.
                        if main_loop == MainLoop::MmaSync
                            && splits > 1
                            && tiles * splits > ws.split_blocks()
                        {
                            continue;
                        }
                        let out = if glu { &mut act } else { &mut y };
                        let launch = (&x, &wts[..], m, epilogue);
                        let ms = skinny_ms(gpu, &sg, &mut ws, out, launch, Some(splits))?;
                        times.push((splits, ms));
                    }
                    let (bs, best) = times[1..]
                        .iter()
                        .copied()
                        .min_by(|a, b| a.1.total_cmp(&b.1))
                        .unwrap_or((0, f64::NAN));
                    row += &format!(
                        " {:.2} ({:.0}%, {default}) | {:.2} ({bs}) |",
                        times[0].1 * 1e3,
                        pct(times[0].1),
                        best * 1e3
                    );
                }
                println!("{row}");
            }
        }
    }
    Ok(())
}

/// `kernel_bench --skinny-sweep`: the TMA main loop at every split 1-8 and both row tiles,
/// 8/16/24/32 tokens, the shapes of `--skinny`, beside cuBLAS (as `linear` calls it) and the
/// default split: the data a split rule is fitted to. Each row also gives how many blocks an
/// SM holds (the occupancy calculator) and how many row tiles the weight has.
fn skinny_sweep(gpu: &Gpu) -> Result<()> {
    use kernels::skinny_gemm::{MainLoop, SkinnyGemmWorkspace, ROW_TILES};
    const L2_BYTES: usize = 50 << 20;
    let ceilings = roofline::measure_on(&gpu.ctx, &gpu.stream)?;
    println!("copy (d2d) 1 GiB: {:.0} GB/s", ceilings.copy_gb_s);
    let (s, k) = (&gpu.stream, &gpu.kernels);
    let sg = k.skinny_gemm.clone().with_main_loop(MainLoop::Tma)?;
    let mut ws = SkinnyGemmWorkspace::new(s, sg.num_sms())?;
    let lin = Linear::new(s, 256)?;
    println!(
        "| shape | m | MB | cuBLAS µs | default µs (splits) | rows | tiles | blocks/SM | µs at splits 1..8 | clusters resident at splits 1..8 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |");
    for (model, name, n, kk) in skinny_shapes() {
        let bytes = (n * kk * 2) as f64;
        let copies = (2 * L2_BYTES).div_ceil(n * kk * 2);
        let wts = (0..copies)
            .map(|c| random_bf16(s, n * kk, 50 + c as u64))
            .collect::<Result<Vec<_>, _>>()?;
        let glu = name == "gate_up";
        let epilogue = if glu {
            Epilogue::SiluAndMul
        } else {
            Epilogue::Plain
        };
        for m in [8usize, 16, 24, 32] {
            let x = random_bf16(s, m * kk, 51)?;
            let mut y = uninit_bf16(s, m * n)?;
            let mut act = uninit_bf16(s, m * n / 2)?;
            let base = cublas_ms(gpu, &lin, &x, &mut y, &mut act, &wts, m, glu)?;
            let mut run = |sg: &kernels::skinny_gemm::SkinnyGemm, splits: Option<usize>| {
                let out = if glu { &mut act } else { &mut y };
                skinny_ms(gpu, sg, &mut ws, out, (&x, &wts[..], m, epilogue), splits)
            };
            let label = if glu { "gate_up + SiLU·mul" } else { name };
            let tiles0 = sg.row_tiles(n, epilogue);
            let default = run(&sg, None)?;
            for rows in ROW_TILES {
                let sg = sg.clone().with_rows(rows)?;
                let tiles = sg.row_tiles(n, epilogue);
                let mut times = Vec::new();
                let mut clusters = Vec::new();
                for splits in 1..=8 {
                    times.push(format!("{:.2}", run(&sg, Some(splits))? * 1e3));
                    clusters.push(sg.resident_clusters(s, m, epilogue, splits)?.to_string());
                }
                times.push(format!("| clusters at once: {}", clusters.join(" ")));
                println!(
                    "| {model} {label} | {m} | {:.1} | {:.2} | {:.2} ({}) | {rows} | {tiles} | {} | {} |",
                    bytes / 1e6,
                    base * 1e3,
                    default * 1e3,
                    sg.splits(tiles0, kk),
                    sg.blocks_per_sm(m, epilogue)?,
                    times.join(" ")
                );
            }
        }
    }
    Ok(())
}

/// Decode attention at small batches (`kernel_bench --small-attention` runs only this), each
/// variant timed by `push`.
fn small_batch_attention(
    gpu: &Gpu,
    ws: &mut SplitKWorkspace,
    bs: usize,
    x: &mut u64,
    push: &mut impl FnMut(&str, String, f64, f64),
) -> Result<()> {
    // Decode attention at small batches, where a step's time is latency: SmolLM2-135M's and
    // Llama-3.2-1B's heads, contexts of decode-b1 (128-256 tokens) and longer, inside a CUDA
    // graph of 50 launches as a decode step runs it: no split, then the small-batch split with
    // partitions of at least 32 or 64 tokens, merged by the reduce kernel or by the last block,
    // and (contexts up to 512) the wide single pass.
    for (seqs, ctx_len, nh, nkv) in [
        (1usize, 192usize, 9usize, 3usize),
        (1, 448, 9, 3),
        (1, 2048, 9, 3),
        (1, 192, 32, 8),
        (1, 448, 32, 8),
        (4, 192, 32, 8),
        (16, 192, 9, 3),
        (40, 192, 9, 3),
        (16, 192, 32, 8),
        (1, 2048, 32, 8),
    ] {
        let mut inp = DecodeInputs::new(gpu, seqs, ctx_len, nh, nkv, 64, bs, x)?;
        let base = gpu.kernels.paged_attention.clone();
        let mut variants = vec![(base.clone().with_small_batch_split(false), "no split")];
        for (min, merge, what) in [
            (32, SplitMerge::ReduceKernel, "min 32, reduce kernel"),
            (64, SplitMerge::ReduceKernel, "min 64, reduce kernel"),
            (32, SplitMerge::LastBlock, "min 32, last block merges"),
            (64, SplitMerge::LastBlock, "min 64, last block merges"),
        ] {
            let pa = base.clone().with_split_min_tokens(min).with_merge(merge);
            variants.push((pa, what));
        }
        // One block of 16 warps per head group over the whole context (contexts up to 512).
        let wide = base.clone().with_wide_single_pass(PARTITION_SIZE);
        if wide.partitions(seqs, nh, nkv, 64, ctx_len).wide {
            variants.push((wide, "wide single pass, 16 warps"));
        }
        for (pa, what) in &variants {
            let p = pa.partitions(seqs, nh, nkv, 64, ctx_len);
            // The kernel's partition_tokens: an even split in 32-token granules, at least min.
            let size = (ctx_len.div_ceil(p.count).div_ceil(32) * 32).max(p.min_tokens);
            let used = ctx_len.div_ceil(size);
            let ms = graph_ms(gpu, 50, || inp.run(gpu, pa, ws))?;
            let size = format!(
                "{seqs} seqs x {ctx_len} tok, {nh}/{nkv} heads, {} partitions ({used} used), {what}",
                p.count
            );
            push(
                "paged_attention decode, small batch",
                size,
                ms,
                inp.bytes as f64,
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let gpu = match Gpu::open(0) {
        Ok(g) => g,
        Err(e) => bail!("kernel_bench needs a GPU: {e}"),
    };
    if std::env::args().nth(1).as_deref() == Some("--tp-shapes") {
        return tp_shapes(&gpu);
    }
    if std::env::args().nth(1).as_deref() == Some("--lt-algos") {
        return lt_algos(&gpu);
    }
    if std::env::args().nth(1).as_deref() == Some("--skinny") {
        return skinny(&gpu);
    }
    if std::env::args().nth(1).as_deref() == Some("--skinny-sweep") {
        return skinny_sweep(&gpu);
    }
    if std::env::args().nth(1).as_deref() == Some("--fused-norm") {
        let ceilings = roofline::measure_on(&gpu.ctx, &gpu.stream)?;
        println!("copy (d2d) {:.0} GB/s", ceilings.copy_gb_s);
        fused_norm_gemv(&gpu, ceilings.copy_gb_s)?;
        // Then the plain projections beside them in a 1B layer (down, o_proj), one token.
        let mut print = |kernel: &str, size: String, ms: f64, bytes: f64| {
            let gbs = bytes / (ms * 1e-3) / 1e9;
            let of_copy = 100.0 * gbs / ceilings.copy_gb_s;
            println!(
                "{kernel:<28} {size:<44} {:>8.2} us {gbs:>6.0} GB/s {of_copy:>5.1}% of copy",
                ms * 1e3
            );
        };
        return decode_projections(&gpu, &[(2048, 8192), (2048, 2048)], &[1], &mut print);
    }
    if std::env::args().nth(1).as_deref() == Some("--small-attention") {
        let mut ws = SplitKWorkspace::new(&gpu.stream, 1, 128)?;
        let mut print = |kernel: &str, size: String, ms: f64, bytes: f64| {
            let gbs = bytes / (ms * 1e-3) / 1e9;
            println!(
                "{kernel:<36} {size:<84} {:>8.2} us {gbs:>6.0} GB/s",
                ms * 1e3
            );
        };
        return small_batch_attention(&gpu, &mut ws, 16, &mut 7u64, &mut print);
    }
    let s = &gpu.stream;
    let k = &gpu.kernels;
    let mut rows: Vec<Row> = Vec::new();
    let mut push = |kernel: &str, size: String, ms: f64, bytes: f64| {
        let gbs = bytes / (ms * 1e-3) / 1e9;
        println!("{kernel:<28} {size:<44} {ms:>9.4} ms {gbs:>8.0} GB/s");
        rows.push(Row {
            kernel: kernel.into(),
            size,
            ms,
            gbs,
        });
    };

    // The ceilings (kernels::roofline): device-to-device copy, 1 GiB, which the others'
    // GB/s are measured against; linear (cuBLAS bf16) at 8192³ in TFLOP/s.
    let ceilings = roofline::measure_on(&gpu.ctx, s)?;
    push(
        "copy (d2d)",
        "1 GiB".into(),
        ceilings.copy_ms,
        roofline::COPY_BYTES as f64 * 2.0,
    );
    let g = roofline::GEMM_SIZE;
    let size = format!("[{g}, {g}] x [{g}, {g}]^T bf16");
    let (ms, tflops) = (ceilings.gemm_ms, ceilings.gemm_tflop_s);
    println!(
        "{:<28} {size:<44} {ms:>9.4} ms {tflops:>8.1} TFLOP/s",
        "linear"
    );
    let mut flop_rows: Vec<(String, String, f64, f64)> = vec![("linear".into(), size, ms, tflops)];

    // linear (cuBLAS bf16): a decode-shaped GEMM, 16 tokens x 8192 -> 8192 (gpu.md: 0.049 ms,
    // 2722 GB/s through PyTorch). GB/s counts the weights only (128 MiB; x and out are 0.5 MiB).
    let lin = Linear::new(s, 16)?;
    let (m, n, kk) = (16usize, 8192usize, 8192usize);
    let (x, w) = (random_bf16(s, m * kk, 20)?, random_bf16(s, n * kk, 21)?);
    let mut out = uninit_bf16(s, m * n)?;
    let ms = time_ms(&gpu, || {
        Ok(lin.forward(&mut out.as_view_mut(), &x.as_view(), &w.as_view(), None, m)?)
    })?;
    let size = format!("[{m}, {kk}] x [{n}, {kk}]^T bf16");
    push("linear (decode, weights)", size, ms, (n * kk * 2) as f64);
    drop((lin, x, w, out));

    // Decode projections, 1, 2 and 4 tokens (the engine's GEMV range): our GEMV, warp per row
    // group and split-K, against cuBLAS on the same operands, at SmolLM2-135M's qkv and down and
    // every projection of Llama-3.2-1B (qkv, o, gate/up, down, LM head).
    let shapes = [
        (960usize, 576usize),
        (576, 1536),
        (3072, 2048),
        (2048, 2048),
        (16384, 2048),
        (2048, 8192),
        (128256, 2048),
    ];
    decode_projections(&gpu, &shapes, &[1, 2, 4], &mut push)?;

    // The norm (+ SiLU·mul) fused into the GEMV against what it replaces, at Llama-3.2-1B's
    // norm-fed shapes and 1/2/4/8 tokens (its own table at the end). A failure here is printed,
    // not fatal: the rest of the bench still runs.
    let copy_gb_s = ceilings.copy_gb_s;
    let fused = match fused_norm_gemv(&gpu, copy_gb_s) {
        Ok(rows) => rows,
        Err(e) => {
            println!("fused norm + GEMV rows failed: {e:#}");
            Vec::new()
        }
    };
    for f in &fused {
        for (name, us) in &f.times {
            let size = format!("[{}, {k}] x [{}, {k}]^T", f.tokens, f.n, k = f.k);
            push(name, size, us * 1e-3, (f.n * f.k * 2) as f64);
        }
    }
    // Llama-3.2-1B's qkv and o_proj: split-K as the engine runs it against the staged
    // kernels (their own table at the end). A failure is printed, not fatal.
    let staged = match staged_gemv(&gpu, copy_gb_s) {
        Ok(rows) => rows,
        Err(e) => {
            println!("staged split-K GEMV rows failed: {e:#}");
            Vec::new()
        }
    };
    for f in &staged {
        for (name, us) in &f.times {
            let size = format!("[{}, {k}] x [{}, {k}]^T", f.tokens, f.n, k = f.k);
            push(name, size, us * 1e-3, (f.n * f.k * 2) as f64);
        }
    }

    // RMSNorm: 32768 tokens x 4096 (the size gpu.md's naive figure used).
    let (t, h) = (32768usize, 4096usize);
    let x = random_bf16(s, t * h, 2)?;
    let w = random_bf16(s, h, 3)?;
    let mut out = uninit_bf16(s, t * h)?;
    let ms = time_ms(&gpu, || {
        Ok(k.rms_norm
            .rms_norm(s, &mut out.as_view_mut(), &x.as_view(), &w.as_view(), 1e-5)?)
    })?;
    push(
        "rms_norm",
        format!("[{t}, {h}] bf16"),
        ms,
        (2 * t * h * 2 + h * 2) as f64,
    );
    let mut r = random_bf16(s, t * h, 4)?;
    let ms = time_ms(&gpu, || {
        let (xv, rv) = (&mut out.as_view_mut(), &mut r.as_view_mut());
        Ok(k.rms_norm
            .fused_add_rms_norm(s, xv, rv, &w.as_view(), 1e-5)?)
    })?;
    push(
        "fused_add_rms_norm",
        format!("[{t}, {h}] bf16"),
        ms,
        (4 * t * h * 2 + h * 2) as f64,
    );
    drop((x, w, out, r));

    // reshape_and_cache: a 65536-token prefill, 8 KV heads x 128, block size 16, blocks in
    // shuffled order.
    let (t, row, bs) = (65536usize, 8 * 128, 16usize);
    let num_blocks = t / bs;
    let mut x = 7u64;
    let order = shuffled(num_blocks, &mut x);
    let slots: Vec<u64> = (0..t)
        .map(|i| order[i / bs] as u64 * bs as u64 + (i % bs) as u64)
        .collect();
    let dslots = s.clone_htod(&slots)?;
    let (key, value) = (random_bf16(s, t * row, 5)?, random_bf16(s, t * row, 6)?);
    let (mut kc, mut vc) = (uninit_bf16(s, t * row)?, uninit_bf16(s, t * row)?);
    let ms = time_ms(&gpu, || {
        let (kcv, vcv) = (&mut kc.as_view_mut(), &mut vc.as_view_mut());
        let (kv, vv) = (&key.as_view(), &value.as_view());
        Ok(k.reshape_and_cache
            .reshape_and_cache(s, kv, vv, kcv, vcv, &dslots.as_view(), row)?)
    })?;
    push(
        "reshape_and_cache",
        format!("{t} tokens x {row} (k and v) bf16"),
        ms,
        (4 * t * row * 2 + t * 8) as f64,
    );
    drop((key, value, kc, vc));

    // Decode paged attention: 1 GiB of KV cache read per call, block size 16, shuffled blocks.
    let mut ws = SplitKWorkspace::new(s, 1, 128)?;
    for (seqs, ctx_len, nh, nkv, d) in [
        (64, 4096, 32, 8, 128),
        (128, 4096, 32, 8, 64),
        (8, 32768, 32, 8, 64),
        (512, 1024, 32, 8, 64),
    ] {
        let mut inp = DecodeInputs::new(&gpu, seqs, ctx_len, nh, nkv, d, bs, &mut x)?;
        // Every ring built for the head size (both kernels), timed one after the other, the
        // default first and once more last: A B C .. A shows how far the GPU drifted meanwhile.
        let all = rings(d);
        for (i, &ring) in all.iter().chain(all.first()).enumerate() {
            let pa = k.paged_attention.clone().with_ring(d, ring)?;
            let ms = time_ms(&gpu, || inp.run(&gpu, &pa, &mut ws))?;
            let again = if i == all.len() { ", again" } else { "" };
            let ring = format!(", {}{again}", ring.describe());
            let size = format!("{seqs} seqs x {ctx_len} tok, {nh}/{nkv} heads, d {d}{ring}");
            push("paged_attention decode", size, ms, inp.bytes as f64);
        }
    }

    small_batch_attention(&gpu, &mut ws, bs, &mut x, &mut push)?;

    // Random sampling at temperature 0.6 (nano-vllm's workload: [256, 49152]; Llama-3's vocab:
    // [64, 128256]), the kernel against its first version (`sample_reference`, same tokens;
    // 324 us by Nsight Compute on [256, 49152] in a decode step), on the same normal logits
    // (std 2.5, bf16). Timed inside a CUDA graph of 20 launches; GB/s = the logits read once.
    // Between launches the logits stay in L2 (25 MB < 50 MB), as they may after the LM head.
    const SAMPLE_REPS: usize = 20;
    let occ = k.sampling.sample_occupancy()?;
    println!(
        "sample kernel: {} registers, {} B local, {} B shared, {} blocks of {} threads per SM",
        occ.registers, occ.local_bytes, occ.shared_bytes, occ.blocks_per_sm, occ.threads
    );
    for (seqs, vocab, top_k, top_p) in [
        (256usize, 49152usize, 0u32, 1.0f32),
        (256, 49152, 50, 0.9),
        (64, 128256, 0, 1.0),
    ] {
        let logits = s.clone_htod(&normal_bf16(seqs * vocab, 2.5, 30))?;
        let temperature = s.clone_htod(&vec![0.6f32; seqs])?;
        let top_ks = s.clone_htod(&vec![top_k; seqs])?;
        let top_ps = s.clone_htod(&vec![top_p; seqs])?;
        let seeds: Vec<u64> = (0..seqs as u64).map(|i| i * 7919 + 1).collect();
        let positions: Vec<u64> = (0..seqs as u64).map(|i| 100 + i).collect();
        let (seeds, positions) = (s.clone_htod(&seeds)?, s.clone_htod(&positions)?);
        let (tv, kv, pv) = (temperature.as_view(), top_ks.as_view(), top_ps.as_view());
        let (sv, qv) = (seeds.as_view(), positions.as_view());
        let params = RowParams {
            temperature: &tv,
            top_k: &kv,
            top_p: &pv,
            seed: &sv,
            position: &qv,
        };
        let (mut new, mut old) = (s.alloc_zeros::<u32>(seqs)?, s.alloc_zeros::<u32>(seqs)?);
        let lv = logits.as_view();
        let size = match top_k {
            0 => format!("[{seqs}, {vocab}] bf16, T 0.6"),
            _ => format!("[{seqs}, {vocab}] bf16, T 0.6, top-k {top_k}, top-p {top_p}"),
        };
        let bytes = (seqs * vocab * 2) as f64;
        let ms = graph_ms(&gpu, SAMPLE_REPS, || {
            Ok(k.sampling.sample(s, &mut new.as_view_mut(), &lv, &params)?)
        })?;
        push("sample_bf16", size.clone(), ms, bytes);
        let ms = graph_ms(&gpu, SAMPLE_REPS, || {
            Ok(k.sampling
                .sample_reference(s, &mut old.as_view_mut(), &lv, &params)?)
        })?;
        push("sample_bf16 (reference)", size, ms, bytes);
        let (new, old) = (s.clone_dtoh(&new)?, s.clone_dtoh(&old)?);
        let same = new.iter().zip(&old).filter(|(a, b)| a == b).count();
        println!("  sample_bf16 and its reference: {same} of {seqs} tokens identical");
    }

    // Prefill attention: whole prompts (no cached prefix), block size 16, shuffled blocks.
    // FLOPs: causal attention computes q·k for the n(n+1)/2 (row, key) pairs of a sequence and
    // adds p·v for the same pairs, d multiply-adds each, a multiply-add counted as 2 FLOPs:
    // 4·d·n(n+1)/2 per head (≈ 4·n²·d/2). Softmax's exponentials are not counted.
    for (seqs, n, nh, nkv, d) in [
        (8usize, 1024usize, 32usize, 8usize, 128usize),
        (8, 1024, 32, 8, 64),
        (2, 8192, 32, 8, 128),
    ] {
        let max_blocks = n / bs;
        let num_blocks = seqs * max_blocks;
        let tables = shuffled(num_blocks, &mut x);
        let kv_len = num_blocks * bs * nkv * d;
        let (kc, vc) = (random_bf16(s, kv_len, 11)?, random_bf16(s, kv_len, 12)?);
        let q = random_bf16(s, seqs * n * nh * d, 13)?;
        let mut out = uninit_bf16(s, seqs * n * nh * d)?;
        let qsl: Vec<u32> = (0..=seqs as u32).map(|i| i * n as u32).collect();
        let (dt, dl, dqsl) = (
            s.clone_htod(&tables)?,
            s.clone_htod(&vec![n as u32; seqs])?,
            s.clone_htod(&qsl)?,
        );
        let shape = PrefillShape {
            num_seqs: seqs,
            num_tokens: seqs * n,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            block_size: bs,
            max_blocks_per_seq: max_blocks,
        };
        let scale = 1.0 / (d as f32).sqrt();
        for block_m in BLOCK_MS {
            let pa = k.prefill_attention.clone().with_block_m(block_m)?;
            let ms = time_ms(&gpu, || {
                Ok(pa.forward(
                    s,
                    &mut out.as_view_mut(),
                    &q.as_view(),
                    &kc.as_view(),
                    &vc.as_view(),
                    &dt.as_view(),
                    &dl.as_view(),
                    &dqsl.as_view(),
                    &shape,
                    scale,
                    n,
                )?)
            })?;
            let flops = (seqs * nh) as f64 * 4.0 * d as f64 * (n * (n + 1) / 2) as f64;
            let tflops = flops / (ms * 1e-3) / 1e12;
            let size = format!("{seqs} x {n} tok, {nh}/{nkv} heads, d {d}, tile {block_m}");
            println!(
                "{:<28} {size:<44} {ms:>9.4} ms {tflops:>8.1} TFLOP/s",
                "prefill_attention"
            );
            flop_rows.push(("prefill_attention".into(), size, ms, tflops));
        }
    }

    let copy = rows[0].gbs;
    println!(
        "\nkernel_bench on {}: median of {REPS} after {WARMUP} warm-up, CUDA events",
        ceilings.device_name
    );
    println!("| kernel | size | ms | GB/s | of copy |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for r in &rows {
        let pct = 100.0 * r.gbs / copy;
        println!(
            "| {} | {} | {:.4} | {:.0} | {:.0}% |",
            r.kernel, r.size, r.ms, r.gbs, pct
        );
    }
    print_fused_table(&fused, copy_gb_s);
    print_staged_table(&staged, copy_gb_s);
    println!("\n| kernel | size | ms | TFLOP/s | of bf16 GEMM ({BF16_GEMM_TFLOPS:.0}) |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for (kernel, size, ms, tf) in &flop_rows {
        let pct = 100.0 * tf / BF16_GEMM_TFLOPS;
        println!("| {kernel} | {size} | {ms:.4} | {tf:.1} | {pct:.1}% |");
    }
    Ok(())
}
