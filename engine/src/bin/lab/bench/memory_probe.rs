//! The CPU's memory ceiling for a batch-1 decode step, measured beside the step itself.
//!
//! A batch-1 decode token streams every weight once, so what memory gives bounds it. Two reads
//! estimate that bound, and the faster is the ceiling:
//! - a plain streaming sum with 32 independent partial sums per thread (one partial sum would
//!   make every add wait for the one before, and measure the adder instead of memory, as this
//!   probe did until 2026-11-29);
//! - the linear layers' own GEMM at one token over a 256 MiB packed weight: the decode step's
//!   access pattern, panels split over the threads, each streamed once.
//!
//! Both read huge-page buffers, as the engine's packed weights are (`backend::huge_pages`).
//!
//! **Why "beside".** On a shared machine the bandwidth a VM gets moves by a factor of two
//! within a minute (on the 2-core Zen 4: 33 to 62 GB/s over four bench runs in a row), so a
//! ceiling measured once at start-up and a decode timed a minute later can be 50% or 120% of
//! each other by chance. `lab bench` therefore measures the ceiling right before and right
//! after every timed batch-1 decode run, and compares each run to the faster of those.

use std::time::Instant;

use engine::backend::cpu_gemm::{gemm, gemm_blocks, Isa, PackedBlocks, PackedWeight};
use engine::backend::huge_pages::HugePageVec;
use engine::model_loader::dequant::GgmlType;
use rayon::prelude::*;

/// The probes' buffers, allocated once (about 768 MiB) and reused by every measurement.
pub struct MemoryProbe {
    /// 512 MiB of ones for the plain read.
    plain: HugePageVec<f32>,
    /// A 256 MiB f32 weight `[n, 576]`, packed as the engine packs its layers.
    packed: PackedWeight,
    /// `[576]` and `[n]`: the GEMM's one token and its output.
    x: Vec<f32>,
    out: Vec<f32>,
}

/// One measurement, bytes per second.
#[derive(Debug, Clone, Copy)]
pub struct Reads {
    /// The plain streaming sum.
    pub plain: f64,
    /// The GEMM at one token.
    pub gemm: f64,
}

impl Reads {
    /// The ceiling: the faster of the two.
    pub fn best(self) -> f64 {
        self.plain.max(self.gemm)
    }

    /// The faster of two measurements, read by read.
    pub fn max(self, other: Reads) -> Reads {
        Reads {
            plain: self.plain.max(other.plain),
            gemm: self.gemm.max(other.gemm),
        }
    }
}

impl MemoryProbe {
    pub fn new() -> Self {
        let k = 576;
        let n = (64 << 20) / k;
        let mut plain = HugePageVec::<f32>::zeroed(128 << 20);
        plain.fill(1.0);
        let packed = PackedWeight::pack(&vec![0.5f32; n * k], n, k, Isa::detect());
        MemoryProbe {
            plain,
            packed,
            x: vec![1.0; k],
            out: vec![0.0; n],
        }
    }

    /// Both reads, each the best of `reps`.
    pub fn measure(&mut self, reps: usize) -> Reads {
        Reads {
            plain: self.plain_read(reps),
            gemm: self.gemm_read(reps),
        }
    }

    fn plain_read(&self, reps: usize) -> f64 {
        let best = best_seconds(reps, || {
            let s: f32 = (self.plain)
                .par_chunks(1 << 16)
                .map(|c| {
                    let mut acc = [0.0f32; 32];
                    for x in c.chunks_exact(32) {
                        for l in 0..32 {
                            acc[l] += x[l];
                        }
                    }
                    acc.iter().sum::<f32>()
                })
                .sum();
            std::hint::black_box(s);
        });
        (self.plain.len() * 4) as f64 / best
    }

    fn gemm_read(&mut self, reps: usize) -> f64 {
        let (out, x, packed) = (&mut self.out, &self.x, &self.packed);
        let best = best_seconds(reps, || {
            gemm(out, x, packed, None, 1);
            std::hint::black_box(&*out);
        });
        packed.data.len() as f64 * 4.0 / best
    }
}

/// What the block GEMM at one token streams over about 192 MiB of Q4_1 blocks (the layout and
/// kernel a GGUF model's decode runs), bytes of blocks per second, best of 5. Measured once,
/// for the report: the decode ceiling stays the faster read above.
pub fn gemm_blocks_read() -> f64 {
    let k = 576;
    let n = (256 << 20) / k;
    // Q4_1 blocks of scale 1/64 and minimum 0 (f16 0x2400, 0x0000) over varied nibbles.
    let block: Vec<u8> = [0x00, 0x24, 0x00, 0x00]
        .into_iter()
        .chain((0..16).map(|i| (i * 37 % 256) as u8))
        .collect();
    let bytes = block.repeat(n * k / 32);
    let packed =
        PackedBlocks::pack(&bytes, GgmlType::Q4_1, n, k, Isa::detect()).expect("whole Q4_1 blocks");
    drop(bytes);
    let (x, mut out) = (vec![1.0f32; k], vec![0.0f32; n]);
    let best = best_seconds(5, || {
        gemm_blocks(&mut out, &x, &packed, None, 1);
        std::hint::black_box(&out);
    });
    packed.bytes() as f64 / best
}

/// The fastest of `reps` timed calls of `f` (at least one), in seconds.
pub(super) fn best_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}
