//! The CPU's GEMM for every linear layer: `out[t, n] = Σ_k x[t, k] · w[n, k]` (+ `bias[n]`),
//! packed, cache-blocked, chosen at run time for the CPU it runs on, and **batch invariant**.
//!
//! ## The one rule that makes it batch invariant
//! Every output element is one chain of fused multiply-adds, in the order of `k`:
//!
//! ```text
//! acc = 0;  for k in 0..K { acc = fma(x[t, k], w[n, k], acc) }   out[t, n] = acc + bias[n]
//! ```
//!
//! The chain does not depend on how many tokens run, where a token sits in the batch, which
//! register tile or which thread computes it: a tile of 12 tokens runs 12 such chains side by
//! side (one per lane), a decode token runs one. Splitting `K` into blocks of [`KC`] (so a
//! weight slice stays in L1 while every token passes over it) only parks the chain in memory
//! between blocks and picks it up again: the sequence of roundings is the same. Every ISA path
//! does exactly this arithmetic (an FMA is one IEEE rounding on every CPU), so the paths agree
//! bit for bit with the portable one, which `tests/cpu_gemm.rs` checks.
//!
//! A BLAS GEMM is not like this: it splits `K` across threads or picks its blocking from the
//! matrix shape, so a token's output changes with the batch.
//!
//! ## Layout
//! The weights are packed once ([`PackedWeight::pack`]) into *panels* of `NR` output rows,
//! `k`-major: `panel[p][k][j] = w[p·NR + j, k]`, the last panel padded with zero rows. A
//! micro-kernel then reads `NR` consecutive floats per `k` (one or two vector loads), which is
//! what an outer-product register tile wants. The threads share out (block of `MC` tokens,
//! panel) tasks; a task runs its chains in a small per-thread tile `[tokens][NR]` and, when
//! they are complete, writes that tile (plus the bias) into its rectangle of `[tokens, N]`.
//!
//! One file per instruction set, each with its own register tile: [`avx512`], [`avx2`],
//! `neon` (aarch64 only) and [`portable`] (any CPU, and the reference of the tests). Each
//! has a second micro-kernel, `tile_blocks`, for weights kept in their GGUF blocks
//! ([`packed_blocks`]): it dequantizes each `k`'s weights in registers and feeds them to the
//! same FMA chains.

pub mod avx2;
pub mod avx512;
pub mod fma_peak;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod packed_blocks;
pub mod portable;

pub use packed_blocks::{BlockSlice, PackedBlocks};

use rayon::prelude::*;

use crate::backend::cpu_thread_pool::for_each_task;
use crate::backend::huge_pages::HugePageVec;

/// Length of a `K` block: `NR × KC` floats of one panel (32 KB for AVX-512's 32 rows) stay in
/// L1 while every token tile passes over them. A constant, never derived from the shapes: the
/// chain of each output is the same whatever it is (see the module doc), and keeping it fixed
/// keeps the blocking out of any argument about invariance.
pub const KC: usize = 256;

// A parallel task is one panel (of one token block). A panel is the smallest unit a GEMM can
// share out (its outputs' chains run over the whole `K`), and one panel is still 74-196 KB of
// SmolLM2's weights, far more work than a task costs. Two panels a task made SmolLM2's qkv,
// o_proj and down 15, 9 and 9 tasks: on two threads one thread always ran one task more (a
// 5/4 split is 11% longer than an even one). On a 2-core Xeon (2026-11-30,
// `examples/decode_weight_stream.rs`, three alternations of two builds) one decode step's 121
// GEMMs streamed at a median 0.81-0.83 of one large GEMM's rate with two panels a task and
// 0.87-0.91 with one.

/// Most tasks a thread takes as one job: one. Left to itself, rayon halves a parallel loop
/// only a few times (a number that grows with the threads, renewed when a half is stolen),
/// then runs each piece as one serial job: of a decode GEMM's 18-96 panels a thread would
/// take runs of 4-24 that the other thread cannot steal from, so the GEMM ended with one
/// thread waiting up to several panels (5-16 µs each) for the other, 121 times a step. With
/// one task a job, the threads finish within one panel of each other; a job costs rayon well
/// under a microsecond. Measured on a 2-core Xeon (2026-11-30,
/// `examples/decode_weight_stream.rs`, a decode step's 121 GEMMs of SmolLM2, the two settings
/// alternated in one process, medians of 15): 18.7-18.8 ms against 19.8-20.7 at 1 token,
/// 23.3-24.0 against 25.5-26.4 at 8. One task at a time is also how
/// [`for_each_task`] shares them out, from a counter rather than rayon's halves (since
/// 2026-12-01: see there); any other value takes rayon's loop with that many a job.
pub const TASKS_PER_JOB: usize = 1;

/// Tokens per parallel task (a token block): the block's `MC × KC` slice of `x` (128 KB)
/// stays in L2 while the task's panels pass over it, where the whole of a 512-token `x`
/// (1.2..3 MB) would be fetched from L3 again for every panel.
const MC: usize = 128;

/// How far ahead (bytes) the x86 micro-kernels prefetch an f32 weight they stream into L2;
/// [`PREFETCH_NEAR`] is how far ahead they then move it from L2 into L1. A decode step reads
/// each weight once, and at 8 tokens the FMAs between two cache lines are slow enough that the
/// hardware's own prefetchers fall behind: on a 2-core Xeon (2026-11-30,
/// `examples/cpu_gemm_speed.rs`, the 113 MB LM head from memory) 8 tokens streamed 11-14 GB/s
/// without any prefetch and 17-21 GB/s prefetching into L1 at 4-6 KiB ahead.
///
/// Why two distances, as we read it (this VM exposes no hardware counters to confirm it): a
/// prefetch into L1 holds one of the core's few L1 miss buffers (16 on recent Intel cores)
/// until its line arrives from memory, so only about 16 lines are in flight, about 8 GB/s a
/// core at ~120 ns a line: short of a core's share of the memory once the FMAs take time too.
/// L2 tracks many more misses of its own, so a far prefetch into L2 keeps more lines coming,
/// and the near prefetch then finds its line in L2. Measured on the same Xeon (2026-11-30,
/// a 536 MB GEMM, the variants alternated in one process by a scratch harness, medians of 9;
/// `examples/gemm_prefetch_ab.rs` compares builds, see the book): L2 at 8 KiB plus L1
/// at 1 KiB streamed 8 tokens at 26.7-26.9 GB/s against 22.1-23.1 with L1 at 4 KiB alone, 4
/// tokens at 28.9 against 26.2, 12 tokens at 23.6 against 21.8, and 1 token unchanged (29.0
/// against 29.6). Distances, not cache-sized blocks, so they hold for every shape.
pub const PREFETCH_AHEAD: usize = 8192;

/// How far ahead (bytes) the x86 micro-kernels move an f32 weight from L2 into L1 (see
/// [`PREFETCH_AHEAD`]): a few hundred cycles of the kernel at 8 tokens, which covers L2's
/// latency several times over.
pub const PREFETCH_NEAR: usize = 1024;

/// How far ahead (bytes of quants) the x86 micro-kernels prefetch a weight kept in its GGUF
/// blocks, into L1 only: the distance the f32 kernels used before they had two, kept for the
/// blocks' kernels, which move a quarter of the bytes per FMA or less; the two-distance
/// scheme is not measured on them.
pub const BLOCKS_PREFETCH_AHEAD: usize = 4096;

/// The instruction set a GEMM runs with, from the fastest this CPU supports down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 AVX-512F: 32 registers of 16 floats.
    Avx512,
    /// x86-64 AVX2 + FMA: 16 registers of 8 floats.
    Avx2,
    /// aarch64 NEON (Advanced SIMD, always present): 32 registers of 4 floats.
    Neon,
    /// Plain Rust with `f32::mul_add`; any CPU.
    Portable,
}

/// [`Isa::detect`].
impl Default for Isa {
    fn default() -> Self {
        Isa::detect()
    }
}

impl Isa {
    /// The best instruction set this CPU has, detected at run time; the environment variable
    /// `LAB_CPU_GEMM` (`avx512`, `avx2`, `neon`, `portable`) picks another one it has, for
    /// benchmarks (an unknown or unavailable name is ignored).
    pub fn detect() -> Isa {
        let available = Isa::available();
        let wanted = std::env::var("LAB_CPU_GEMM").ok();
        let wanted = wanted.and_then(|name| available.iter().find(|i| i.name() == name));
        *wanted.unwrap_or(&available[0])
    }

    /// The lower-case name `LAB_CPU_GEMM` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
            Isa::Portable => "portable",
        }
    }

    /// Every instruction set this CPU can run, best first (the tests run them all).
    #[allow(clippy::vec_init_then_push)] // which pushes there are depends on the target
    pub fn available() -> Vec<Isa> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                isas.push(Isa::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        isas.push(Isa::Neon);
        isas.push(Isa::Portable);
        isas
    }

    /// Output rows per panel: the register tile's width (two vectors on x86, four on NEON).
    pub fn nr(self) -> usize {
        match self {
            Isa::Avx512 => avx512::NR,
            Isa::Avx2 => avx2::NR,
            Isa::Neon => 16,
            Isa::Portable => portable::NR,
        }
    }

    /// Most tokens for which [`Dequantize::Auto`] dequantizes a weight in blocks in registers
    /// (each register tile of tokens again) rather than once into the L1 buffer. With
    /// AVX-512's tile of 12 the two were about equal at 12 tokens and the buffer 10-20%
    /// faster from 16 (a 2-core Intel Xeon); with AVX2's tile of 6, registers were 1.7-2.4×
    /// the buffer at 8 tokens, 1.2-1.8× at 16, and about even at 18-32 on Q4_1 (a 2-core AMD
    /// EPYC Zen 3, 2026-12-01, `examples/cpu_gemm_blocks_speed.rs`): its buffer fills more
    /// slowly than its registers widen, so a batch of 8, two tiles, lost 2× in the buffer.
    pub fn blocks_in_registers_up_to(self) -> usize {
        match self {
            Isa::Avx2 => 16,
            _ => self.mr(),
        }
    }

    /// How far ahead of its reads (bytes) the micro-kernel prefetches a streamed f32 weight
    /// into L2: `LAB_CPU_PREFETCH` (bytes, 0 = never, which also turns off the near prefetch
    /// into L1; a benchmark knob, so like `LAB_CPU_GEMM` a value that is not a number is
    /// ignored) or [`PREFETCH_AHEAD`] on x86; 0 on the paths that do not prefetch (NEON,
    /// portable).
    pub fn prefetch_ahead(self) -> usize {
        self.prefetch_or(PREFETCH_AHEAD)
    }

    /// [`Isa::prefetch_ahead`] for weights in their GGUF blocks: `LAB_CPU_PREFETCH` or
    /// [`BLOCKS_PREFETCH_AHEAD`] on x86, 0 elsewhere.
    pub fn blocks_prefetch_ahead(self) -> usize {
        self.prefetch_or(BLOCKS_PREFETCH_AHEAD)
    }

    fn prefetch_or(self, default: usize) -> usize {
        match self {
            Isa::Avx512 | Isa::Avx2 => std::env::var("LAB_CPU_PREFETCH")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default),
            Isa::Neon | Isa::Portable => 0,
        }
    }

    /// Tokens per register tile.
    fn mr(self) -> usize {
        match self {
            Isa::Avx512 => avx512::MR,
            Isa::Avx2 => avx2::MR,
            Isa::Neon => 6,
            Isa::Portable => portable::MR,
        }
    }
}

/// A weight `[N, K]` packed into panels of `nr` rows for one [`Isa`] (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeight {
    pub isa: Isa,
    /// Output features (rows of the unpacked weight).
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// `[panels][k][nr]`, `panels = ceil(n / nr)`, on huge pages (a decode step streams it).
    pub data: HugePageVec<f32>,
    /// Bytes ahead of its reads at which the micro-kernel prefetches `data`
    /// ([`Isa::prefetch_ahead`]; 0 = never). Speed only: the values are the same either way.
    pub prefetch_ahead: usize,
    /// Most tasks (panels) a thread takes as one job, the rest of them out of other threads'
    /// reach ([`TASKS_PER_JOB`]; `usize::MAX`: rayon's own splitting). Speed only.
    pub tasks_per_job: usize,
}

impl PackedWeight {
    /// Packs `weight` `[n, k]` (row-major, Hugging Face's `[out, in]`) for `isa`.
    pub fn pack(weight: &[f32], n: usize, k: usize, isa: Isa) -> PackedWeight {
        assert_eq!(weight.len(), n * k, "pack: weight is not {n}x{k}");
        let nr = isa.nr();
        let panels = n.div_ceil(nr);
        let mut data = HugePageVec::zeroed(panels * k * nr);
        data.par_chunks_mut((k * nr).max(1))
            .enumerate()
            .for_each(|(p, panel)| {
                for j in 0..nr.min(n - p * nr) {
                    let row = &weight[(p * nr + j) * k..][..k];
                    for (c, &v) in row.iter().enumerate() {
                        panel[c * nr + j] = v;
                    }
                }
            });
        let prefetch_ahead = isa.prefetch_ahead();
        PackedWeight {
            isa,
            n,
            k,
            data,
            prefetch_ahead,
            tasks_per_job: TASKS_PER_JOB,
        }
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(self.isa.nr())
    }

    /// Row `r` of the unpacked weight into `dst` `[k]`.
    pub fn row_into(&self, r: usize, dst: &mut [f32]) {
        let nr = self.isa.nr();
        let (p, j) = (r / nr, r % nr);
        assert!(
            r < self.n && dst.len() == self.k,
            "row_into: row {r} of {}",
            self.n
        );
        let panel = &self.data[p * self.k * nr..(p + 1) * self.k * nr];
        for (v, w) in dst.iter_mut().zip(panel.chunks_exact(nr)) {
            *v = w[j];
        }
    }

    /// The weight unpacked, `[n, k]` row-major (what [`PackedWeight::pack`] was given).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut w = vec![0.0f32; self.n * self.k];
        for (r, row) in w.chunks_exact_mut(self.k.max(1)).enumerate() {
            self.row_into(r, row);
        }
        w
    }
}

// ANCHOR: gemm
/// `out[t, n] = Σ_k x[t, k] · w[n, k]` (+ `bias[n]`) with the packed weight's instruction set.
/// The result is bitwise the same for every `num_tokens`, every row's place in `x`, every
/// [`Isa`] and every thread count.
pub fn gemm(
    out: &mut [f32],      // [num_tokens, n]
    x: &[f32],            // [num_tokens, k]
    w: &PackedWeight,     // [n, k] packed
    bias: Option<&[f32]>, // [n]
    num_tokens: usize,
) {
    gemm_panels(out, x, Panels::F32(w), bias, num_tokens)
}
// ANCHOR_END: gemm

/// [`gemm`] from a weight kept in its Q8_0/Q4_1 blocks, dequantized inside the micro-kernel,
/// in registers (or, for a task of many tokens, once per panel `K` block into an L1 buffer:
/// see [`Dequantize`]). The result is bitwise [`gemm`]'s on the dequantized f32 weight (see
/// [`packed_blocks`]).
pub fn gemm_blocks(
    out: &mut [f32],      // [num_tokens, n]
    x: &[f32],            // [num_tokens, k]
    w: &PackedBlocks,     // [n, k] in blocks
    bias: Option<&[f32]>, // [n]
    num_tokens: usize,
) {
    gemm_blocks_with(out, x, w, bias, num_tokens, Dequantize::Auto)
}

/// [`gemm_blocks`] with the dequantization's place chosen (the tests run every one; the
/// outputs are the same bits).
pub fn gemm_blocks_with(
    out: &mut [f32],      // [num_tokens, n]
    x: &[f32],            // [num_tokens, k]
    w: &PackedBlocks,     // [n, k] in blocks
    bias: Option<&[f32]>, // [n]
    num_tokens: usize,
    how: Dequantize,
) {
    gemm_panels(out, x, Panels::Blocks(w, how), bias, num_tokens)
}

/// SwiGLU's gate/up projection with its activation as the GEMM's epilogue: `out[t, i] =
/// silu(g) · u` where `g` and `u` are outputs `i` and `d + i` of `gemm(x, w)` (`w` `[2·d, k]`,
/// gate rows then up rows), the same bits as [`gemm`] followed by
/// [`crate::ops::activation::silu_and_mul`]. Each task computes a gate panel and the up panel
/// `d` rows below it, then writes only their activation: the `[t, 2·d]` projection is never
/// stored, nor read back by a second pass (at 512 tokens of SmolLM2, 6.3 MB a layer that
/// went out to L3 and back). Needs `d` to be a whole number of panels
/// ([`silu_and_mul_fits`]).
pub fn gemm_silu_and_mul(
    out: &mut [f32],  // [num_tokens, d]
    x: &[f32],        // [num_tokens, k]
    w: &PackedWeight, // [2·d, k] packed: gate rows, then up rows
    num_tokens: usize,
) {
    assert!(
        silu_and_mul_fits(w.n, w.isa),
        "gate/up halves of {} rows",
        w.n
    );
    gemm_panels_with(
        out,
        x,
        Panels::F32(w),
        None,
        num_tokens,
        Epilogue::SiluAndMul,
    )
}

/// [`gemm_silu_and_mul`] from a weight kept in its GGUF blocks: the same bits as
/// [`gemm_blocks`] followed by [`crate::ops::activation::silu_and_mul`].
pub fn gemm_blocks_silu_and_mul(
    out: &mut [f32],  // [num_tokens, d]
    x: &[f32],        // [num_tokens, k]
    w: &PackedBlocks, // [2·d, k] in blocks: gate rows, then up rows
    num_tokens: usize,
) {
    assert!(
        silu_and_mul_fits(w.n, w.isa),
        "gate/up halves of {} rows",
        w.n
    );
    let w = Panels::Blocks(w, Dequantize::Auto);
    gemm_panels_with(out, x, w, None, num_tokens, Epilogue::SiluAndMul)
}

/// Whether a gate/up weight of `n` rows splits into halves of whole panels of `isa`, as
/// [`gemm_silu_and_mul`] needs (so that gate panel `p` and up panel `p + d / nr` hold the
/// same outputs `i` of the two halves).
pub fn silu_and_mul_fits(n: usize, isa: Isa) -> bool {
    n.is_multiple_of(2) && (n / 2).is_multiple_of(isa.nr())
}

/// What a GEMM task does with its complete chains.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Epilogue {
    /// Store them (plus the bias) in its rectangle of the output.
    Store,
    /// The gate panel's and the matching up panel's chains → `silu(g) · u`.
    SiluAndMul,
}

/// Where a weight in blocks becomes f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dequantize {
    /// In registers for a task of one register tile of tokens or fewer, else in a buffer.
    Auto,
    /// In registers, inside the micro-kernel, for every register tile of tokens.
    InRegisters,
    /// Once per panel `K` block, into an L1 buffer the micro-kernel then reads.
    Buffer,
}

/// One thread's buffers, reused by every task it runs, so a step neither allocates nor
/// zeroes them per task.
#[derive(Default)]
struct Scratch {
    /// The task's chains, `[tokens][nr]`, until they are complete and go to the output.
    tile: Vec<f32>,
    /// A panel's dequantized `K` block (weights in blocks only), `[KC][nr]`.
    dequantized: Vec<f32>,
    /// The up panel's chains, `[tokens][nr]`, beside the gate panel's in `tile`
    /// ([`gemm_silu_and_mul`] only).
    up: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// `out` `[t, n]` shared by a GEMM's tasks, each of which writes one rectangle (its token
/// block's rows × its panel's columns). The rectangles are disjoint, but they interleave in
/// memory (every row holds a piece of every panel), so no safe split of the slice gives them
/// out; this type hands each task its rows one at a time, bounds checked.
struct SharedOut<'a> {
    ptr: *mut f32,
    rows: usize,
    n: usize,
    /// Holds `out`'s mutable borrow for as long as this exists.
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: `SharedOut` is a pointer to `out` that keeps `out` mutably borrowed for its whole
// life (the `PhantomData`), so nothing else reads or writes it meanwhile; see `row_mut` for
// why no two tasks touch the same element.
unsafe impl Send for SharedOut<'_> {}
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    fn new(out: &'a mut [f32], rows: usize, n: usize) -> SharedOut<'a> {
        assert_eq!(out.len(), rows * n);
        SharedOut {
            ptr: out.as_mut_ptr(),
            rows,
            n,
            _out: std::marker::PhantomData,
        }
    }

    /// Columns `col..col + cols` of row `row`.
    ///
    /// # Safety
    /// No two live slices from this call may overlap: the caller is the task that owns the
    /// rectangle `(row, col..col + cols)` belongs to, and each task asks for each of its rows
    /// once at a time.
    #[allow(clippy::mut_from_ref)] // the disjointness is the caller's contract, above
    unsafe fn row_mut(&self, row: usize, col: usize, cols: usize) -> &mut [f32] {
        assert!(
            row < self.rows && col + cols <= self.n,
            "outside the output"
        );
        // SAFETY: inside `out` (asserted); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(row * self.n + col), cols) }
    }
}

/// Where the micro-kernel's `[kc][nr]` weight slices come from.
#[derive(Clone, Copy)]
enum Panels<'a> {
    /// Read in place from f32 panels.
    F32(&'a PackedWeight),
    /// Dequantized from blocks, one `K` block at a time.
    Blocks(&'a PackedBlocks, Dequantize),
}

impl Panels<'_> {
    fn shape(self) -> (usize, usize, Isa, usize) {
        match self {
            Panels::F32(w) => (w.n, w.k, w.isa, w.panels()),
            Panels::Blocks(w, _) => (w.n, w.k, w.isa, w.panels()),
        }
    }

    fn tasks_per_job(self) -> usize {
        match self {
            Panels::F32(w) => w.tasks_per_job,
            Panels::Blocks(..) => TASKS_PER_JOB,
        }
    }
}

/// The GEMM's body, shared by both weight kinds: tasks, then the scatter with the bias.
fn gemm_panels(
    out: &mut [f32],      // [num_tokens, n]
    x: &[f32],            // [num_tokens, k]
    w: Panels,            // [n, k]
    bias: Option<&[f32]>, // [n]
    num_tokens: usize,
) {
    gemm_panels_with(out, x, w, bias, num_tokens, Epilogue::Store)
}

/// [`gemm_panels`] with the tasks' epilogue chosen: for [`Epilogue::SiluAndMul`], `out` is
/// `[num_tokens, n / 2]` and a task's panel `p` is a gate panel (`p < panels / 2`), computed
/// together with up panel `p + panels / 2`.
fn gemm_panels_with(
    out: &mut [f32],      // [num_tokens, n], or [num_tokens, n / 2] for SiluAndMul
    x: &[f32],            // [num_tokens, k]
    w: Panels,            // [n, k]
    bias: Option<&[f32]>, // [n] (Store only)
    num_tokens: usize,
    epilogue: Epilogue,
) {
    let (n, k, isa, panels) = w.shape();
    let t = num_tokens;
    let (width, task_panels) = match epilogue {
        Epilogue::Store => (n, panels),
        Epilogue::SiluAndMul => (n / 2, panels / 2),
    };
    assert_eq!(x.len(), t * k, "gemm: x is not {t}x{k}");
    assert_eq!(out.len(), t * width, "gemm: out is not {t}x{width}");
    assert!(
        epilogue == Epilogue::Store || bias.is_none(),
        "no bias before SiLU·mul"
    );
    if t == 0 || n == 0 {
        return;
    }
    let nr = isa.nr();
    // Tasks are (token block, panel) pairs; each owns the rectangle of `out` at its block's
    // rows and its panel's columns.
    let tasks: Vec<(usize, usize)> = (0..t)
        .step_by(MC)
        .flat_map(|t0| (0..task_panels).map(move |p| (t0, p)))
        .collect();
    let shared = SharedOut::new(out, t, width);
    let run_task = |(t0, p): (usize, usize)| {
        let rows = MC.min(t - t0);
        let x = &x[t0 * k..(t0 + rows) * k];
        SCRATCH.with_borrow_mut(|s| {
            s.tile.resize(rows * nr, 0.0);
            if k == 0 {
                s.tile.fill(0.0); // no chain to run: each output is the empty sum
            }
            panel_times_x(isa, &mut s.tile, x, w, p, rows, k, &mut s.dequantized);
            if epilogue == Epilogue::SiluAndMul {
                s.up.resize(rows * nr, 0.0);
                if k == 0 {
                    s.up.fill(0.0);
                }
                let up = p + task_panels;
                panel_times_x(isa, &mut s.up, x, w, up, rows, k, &mut s.dequantized);
                // silu(gate) · up over the whole tile, in place of the gate's chains:
                // element by element, so the tile's layout is the output rows'.
                crate::ops::activation::silu_times_up_in_place(&mut s.tile, &s.up);
            }
            // The complete chains → the output, adding the bias after the chain.
            let (col, cols) = (p * nr, nr.min(width - p * nr));
            for (r, chains) in s.tile.chunks_exact(nr).enumerate() {
                // SAFETY: (token block, panel) pairs are distinct tasks, so this row's
                // columns `col..col + cols` belong to this task alone.
                let dst = unsafe { shared.row_mut(t0 + r, col, cols) };
                // Element loops, not `copy_from_slice`: a row is one panel wide (32
                // floats on AVX-512), which the compiler copies in a few vector moves
                // where `copy_from_slice` of a length it cannot see calls `memmove`.
                match bias {
                    Some(b) => {
                        for ((d, &v), &b) in dst.iter_mut().zip(chains).zip(&b[col..]) {
                            *d = v + b;
                        }
                    }
                    None => dst.iter_mut().zip(chains).for_each(|(d, &v)| *d = v),
                }
            }
        });
    };
    match w.tasks_per_job() {
        // The default: one task at a time from a shared counter (see `cpu_thread_pool`).
        1 => for_each_task(tasks.len(), || (), |_, i| run_task(tasks[i])),
        // For the A/B against rayon's own splitting (`examples/decode_weight_stream.rs`).
        per_job => tasks
            .into_par_iter()
            .with_max_len(per_job)
            .for_each(run_task),
    }
}

/// Panel `p` against every token: `c[t][j] = Σ_k x[t, k] · panel[k][j]`, `K` in blocks of
/// [`KC`], tokens in tiles of the ISA's `MR`.
#[allow(clippy::too_many_arguments)]
fn panel_times_x(
    isa: Isa,
    c: &mut [f32], // [t][nr]
    x: &[f32],     // [t, k]
    w: Panels,     // panel p: [k][nr]
    p: usize,
    t: usize,
    k: usize,
    scratch: &mut Vec<f32>, // [KC][nr], for a dequantized K block
) {
    let (nr, mr) = (isa.nr(), isa.mr());
    // One token (a batch-1 decode) asks for a new line of weights every one or two FMAs, a
    // plain stream the hardware's own prefetchers keep up with; software prefetches there
    // only take load slots. In pairs in one process (`examples/gemm_prefetch_ab.rs`, a decode
    // step's GEMMs, 7 pairs each): on an AMD EPYC Zen 3 (2026-12-01) f32 at 1 token streamed
    // 10-15% faster without them, at every distance tried (2-32 KiB), Q4_1 5% faster, while
    // from 2 tokens up they helped (f32: 1% at 2, 5% at 4, 17-20% at 6-8); on an Intel Xeon
    // (2026-11-30) 1 token was 2% faster without them.
    let single = t == 1;
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        // The slice, and how far ahead the micro-kernel prefetches it: floats of an f32
        // panel, bytes of quants of a weight in blocks, nothing for the dequantized buffer
        // (already in L1: the dequantization just wrote it).
        let (w, ahead) = match w {
            Panels::F32(w) => (
                Slice::F32(&w.data[(p * k + k0) * nr..(p * k + k0 + kc) * nr]),
                w.prefetch_ahead / 4,
            ),
            Panels::Blocks(b, how) if in_buffer(how, isa, t) => {
                // Once per (panel, K block), whatever the number of tokens that use it.
                b.dequantize_panel(p, k0, kc, scratch);
                (Slice::F32(scratch), 0)
            }
            Panels::Blocks(b, _) => (Slice::Blocks(b.k_block(p, k0, kc)), b.prefetch_ahead),
        };
        let ahead = if single { 0 } else { ahead };
        let first = k0 == 0;
        let mut t0 = 0;
        while t0 < t {
            let rows = mr.min(t - t0);
            let xs = &x[t0 * k + k0..]; // row r, column k0 + c at xs[r * k + c]
            let cs = &mut c[t0 * nr..(t0 + rows) * nr];
            match w {
                Slice::F32(w) => micro_kernel(isa, cs, xs, k, w, rows, kc, first, ahead),
                Slice::Blocks(w) => micro_kernel_blocks(isa, cs, xs, k, w, rows, kc, first, ahead),
            }
            t0 += rows;
        }
        k0 += kc;
    }
}

/// One panel's `K` block as a micro-kernel reads it.
#[derive(Clone, Copy)]
enum Slice<'a> {
    /// `[kc][nr]` f32 weights.
    F32(&'a [f32]),
    /// The same weights in their blocks, dequantized in registers by the micro-kernel.
    Blocks(BlockSlice<'a>),
}

/// Whether a task of `t` tokens dequantizes its weights into the buffer rather than in
/// registers. In registers, every register tile of tokens dequantizes the panel again; so up
/// to one tile (`t ≤ MR`: decode) each weight is dequantized once either way and registers
/// save the buffer's store and reload, while above it the buffer shares one dequantization
/// among all the tiles (from how many tokens that wins: [`Isa::blocks_in_registers_up_to`]). Measured (`examples/cpu_gemm_blocks_speed.rs`, AVX-512, one core):
/// registers 1.4× the buffer at 1 token on Q4_1 and 2.7× on the Q8_0 LM head, about equal at
/// 12, 0.8–0.9× at 16 to 128. Either way the values and the chains are the same, so the
/// choice changes the speed only.
fn in_buffer(how: Dequantize, isa: Isa, t: usize) -> bool {
    match how {
        Dequantize::Auto => t > isa.blocks_in_registers_up_to(),
        Dequantize::InRegisters => false,
        Dequantize::Buffer => true,
    }
}

/// Dispatches one register tile from blocks to its ISA's micro-kernel.
#[allow(clippy::too_many_arguments)]
#[inline]
fn micro_kernel_blocks(
    isa: Isa,
    c: &mut [f32], // [rows][nr]: the chains so far (read unless `first`), then the new ones
    x: &[f32],     // row r, column c at x[r * x_stride + c]
    x_stride: usize,
    w: BlockSlice, // [kc][nr] in blocks
    rows: usize,
    kc: usize,
    first: bool,
    ahead: usize, // bytes of quants: how far ahead the x86 kernels prefetch the blocks
) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ahead; // only the x86 kernels prefetch
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::tile_blocks(c, x, x_stride, w, rows, kc, first, ahead),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::tile_blocks(c, x, x_stride, w, rows, kc, first, ahead),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::tile_blocks(c, x, x_stride, w, rows, kc, first),
        Isa::Portable => portable::tile_blocks(c, x, x_stride, w, rows, kc, first),
        #[allow(unreachable_patterns)]
        _ => unreachable!("{isa:?} is never detected on this architecture"),
    }
}

/// Dispatches one register tile to its ISA's micro-kernel.
#[allow(clippy::too_many_arguments)]
#[inline]
fn micro_kernel(
    isa: Isa,
    c: &mut [f32], // [rows][nr]: the chains so far (read unless `first`), then the new ones
    x: &[f32],     // row r, column c at x[r * x_stride + c]
    x_stride: usize,
    w: &[f32], // [kc][nr]
    rows: usize,
    kc: usize,
    first: bool,
    ahead: usize, // floats: how far ahead of its reads the x86 kernels prefetch `w`
) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ahead; // only the x86 kernels prefetch
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::tile(c, x, x_stride, w, rows, kc, first, ahead),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::tile(c, x, x_stride, w, rows, kc, first, ahead),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::tile(c, x, x_stride, w, rows, kc, first),
        Isa::Portable => portable::tile(c, x, x_stride, w, rows, kc, first),
        #[allow(unreachable_patterns)]
        _ => unreachable!("{isa:?} is never detected on this architecture"),
    }
}
