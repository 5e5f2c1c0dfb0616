//! Software prefetch in the CPU GEMM, on against off, pair by pair in one process: the GEMMs
//! of one decode step of SmolLM2-135M in f32 (30 layers of qkv [960, 576], o [576, 576],
//! gate_up [3072, 576], down [576, 1536], then the LM head [49152, 576]: 538 MB, more than any
//! L3), back to back at each token count, with `PackedWeight::prefetch_ahead` set to 0 and to
//! each distance asked for, the order swapped every pair (a VM's speed drifts by more than the
//! effect within minutes, so only pairs are compared).
//!
//! At one token the GEMM never prefetches (`cpu_gemm::panel_times_x`, measured with this
//! example before that rule: 10-15% faster without on an AMD Zen 3), so there "on" and "off"
//! are the same code.
//!
//! The same for weights kept in their GGUF blocks (FORMAT `q8_0` or `q4_1`: the same shapes,
//! 143 or 85 MB, dequantized in registers by the micro-kernel).
//!
//! `cargo run --release -p engine --example gemm_prefetch_ab [-- PAIRS [FORMAT [TOKENS...]]]`
//! (`LAB_CPU_PREFETCH=BYTES` sets the distance that is "on"; default `PREFETCH_AHEAD`.)
use engine::backend::cpu_gemm::{gemm, gemm_blocks, Isa, PackedBlocks, PackedWeight};
use engine::model_loader::dequant::GgmlType;
use std::time::Instant;

/// One of the step's weights, packed as FORMAT says.
enum Weight {
    F32(PackedWeight),
    Blocks(PackedBlocks),
}

impl Weight {
    fn new(format: &str, n: usize, k: usize, isa: Isa) -> Weight {
        let ggml = match format {
            "f32" => return Weight::F32(PackedWeight::pack(&vec![0.01f32; n * k], n, k, isa)),
            "q8_0" => GgmlType::Q8_0,
            "q4_1" => GgmlType::Q4_1,
            other => panic!("FORMAT is f32, q8_0 or q4_1, not {other}"),
        };
        // Each block: its scale (and minimum) 0.01 as f16, then quants from an LCG.
        let (mut s, mut bytes) = (0x5eedu64, Vec::new());
        for _ in 0..n * k / 32 {
            let head = if ggml == GgmlType::Q4_1 { 2 } else { 1 };
            for _ in 0..head {
                bytes.extend(half::f16::from_f32(0.01).to_le_bytes());
            }
            for _ in 0..ggml.block_bytes() - 2 * head {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                bytes.push((s >> 56) as u8);
            }
        }
        Weight::Blocks(PackedBlocks::pack(&bytes, ggml, n, k, isa).expect("blocks"))
    }

    fn shape(&self) -> (usize, usize, usize) {
        match self {
            Weight::F32(w) => (w.n, w.k, w.data.len() * 4),
            Weight::Blocks(w) => (w.n, w.k, w.bytes()),
        }
    }

    fn run(&mut self, t: usize, ahead: usize) {
        let (n, k, _) = self.shape();
        let (x, mut out) = (vec![1.0f32; t * k], vec![0.0f32; t * n]);
        match self {
            Weight::F32(w) => {
                w.prefetch_ahead = ahead;
                gemm(&mut out, &x, w, None, t);
            }
            Weight::Blocks(w) => {
                w.prefetch_ahead = ahead;
                gemm_blocks(&mut out, &x, w, None, t);
            }
        }
        std::hint::black_box(&out);
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse().ok());
    let pairs: usize = args.next().unwrap_or(10);
    // The one argument that is not a number, if any.
    let format = std::env::args()
        .skip(1)
        .find(|a| a.parse::<usize>().is_err())
        .unwrap_or_else(|| "f32".into());
    let tokens: Vec<usize> = args.collect();
    let tokens = if tokens.is_empty() {
        vec![1, 8]
    } else {
        tokens
    };
    // This thread becomes the pool's worker 0, as the engine's stepping thread is.
    engine::backend::cpu_thread_pool::build_global(None, true).expect("the pool");
    let isa = Isa::detect();
    let on = isa.prefetch_ahead();
    let pack = |n: usize, k: usize| Weight::new(&format, n, k, isa);
    let mut layers = Vec::new();
    for _ in 0..30 {
        for (n, k) in [(960, 576), (576, 576), (3072, 576), (576, 1536)] {
            layers.push(pack(n, k));
        }
    }
    layers.push(pack(49152, 576));
    let bytes: usize = layers.iter().map(|w| w.shape().2).sum();
    println!(
        "{} threads, {}, {format}, {:.0} MB per step, prefetch {on} bytes ahead against none",
        rayon::current_num_threads(),
        isa.name(),
        bytes as f64 / 1e6
    );
    for &t in &tokens {
        let step = |layers: &mut [Weight], ahead: usize| {
            let start = Instant::now();
            for w in layers.iter_mut() {
                w.run(t, ahead);
            }
            start.elapsed().as_secs_f64()
        };
        step(&mut layers, 0);
        let (mut off_s, mut on_s, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for pair in 0..pairs {
            let (a, b) = if pair % 2 == 0 {
                let a = step(&mut layers, 0);
                (a, step(&mut layers, on))
            } else {
                let b = step(&mut layers, on);
                (step(&mut layers, 0), b)
            };
            off_s.push(a);
            on_s.push(b);
            ratios.push(b / a);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let faster = ratios.iter().filter(|&&r| r < 1.0).count();
        let (off, on_t, r) = (median(&mut off_s), median(&mut on_s), median(&mut ratios));
        println!(
            "{t:>3} tokens: off {:.2} ms ({:.1} GB/s), on {:.2} ms ({:.1} GB/s), on/off median {r:.3}, on faster in {faster} of {pairs}",
            off * 1e3,
            bytes as f64 / off / 1e9,
            on_t * 1e3,
            bytes as f64 / on_t / 1e9,
        );
    }
}
