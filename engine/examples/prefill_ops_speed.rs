//! Where a prefill's CPU time goes, op by op, in CPU seconds (the process's, from
//! `/proc/self/stat`, so other load on a shared machine does not inflate them) beside wall
//! time: the GEMM on SmolLM2-135M's four projection shapes at `TOKENS` tokens (default 512),
//! as GFLOP per CPU-second, then the paged attention of one `TOKENS`-token sequence attending
//! causally to itself (9 query heads over 3 KV heads of 64, blocks of 16 in reverse order),
//! 30 layers, as CPU nanoseconds per (query head, key) pair, for every version of its inner
//! loops this CPU has (`ops::attention_simd::Simd`), alternated.
//!
//! `RAYON_NUM_THREADS=1 cargo run --release -p engine --example prefill_ops_speed [-- TOKENS]`
use engine::attention::attention_metadata::AttentionMetadata;
use engine::backend::cpu_gemm::{gemm, Isa, PackedWeight};
use engine::ops::attention_simd::Simd;
use engine::ops::paged_attention::paged_attention_with;

/// User + system CPU seconds of this process (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn main() {
    let t: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    gemm_shapes(t);
    let (kv_heads, group, d, bs, layers) = (3usize, 3usize, 64usize, 16usize, 30);
    let nb = t.div_ceil(bs);
    let kv_row = kv_heads * d;
    let value = |i: usize, m: usize| ((i * m) % 1000) as f32 * 0.002 - 1.0;
    let k: Vec<f32> = (0..nb * bs * kv_row).map(|i| value(i, 7919)).collect();
    let v: Vec<f32> = (0..nb * bs * kv_row).map(|i| value(i, 104729)).collect();
    let q: Vec<f32> = (0..t * kv_heads * group * d)
        .map(|i| value(i, 31))
        .collect();
    let table: Vec<u32> = (0..nb as u32).rev().collect();
    let meta = AttentionMetadata {
        slot_mapping: (0..t)
            .map(|p| (table[p / bs] as usize * bs + p % bs) as u64)
            .collect(),
        query_start_loc: vec![0, t],
        seq_lens: vec![t],
        block_tables: table,
        max_blocks_per_seq: nb,
        block_size: bs,
    };
    let mut out = vec![0.0; q.len()];
    let scale = 1.0 / (d as f32).sqrt();
    let pairs = (t * (t + 1) / 2 * kv_heads * group * layers) as f64;
    // Every version of the inner loops this CPU has, alternated (A B A B …, the order
    // reversed each round) so that a machine whose speed drifts treats them alike.
    let versions = Simd::available(d);
    let mut cpu_ns = vec![Vec::new(); versions.len()];
    let rounds = 4;
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..versions.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let run = |out: &mut [f32]| {
                paged_attention_with(versions[i], out, &q, &k, &v, kv_heads, d, scale, &meta)
            };
            run(&mut out); // warm-up
            let (cpu0, wall0) = (cpu_seconds(), std::time::Instant::now());
            for _ in 0..layers {
                run(&mut out);
            }
            let wall = wall0.elapsed().as_secs_f64();
            let checksum: f64 = out.iter().map(|&x| x as f64).sum();
            let cpu = match (cpu0, cpu_seconds()) {
                (Some(a), Some(b)) => b - a,
                _ => wall,
            };
            cpu_ns[i].push(cpu / pairs * 1e9);
            println!(
                "{t} tokens, {layers} layers, {:?}: {:.1} ms CPU, {:.1} ms wall, {:.2} ns CPU \
                 per (head, key) pair (checksum {checksum:.4})",
                versions[i],
                cpu * 1e3,
                wall * 1e3,
                cpu / pairs * 1e9
            );
        }
    }
    for (v, ns) in versions.iter().zip(&mut cpu_ns) {
        ns.sort_by(f64::total_cmp);
        println!(
            "{v:?}: median {:.2} ns CPU per pair over {rounds} rounds",
            ns[rounds / 2]
        );
    }
}

/// The GEMM at `t` tokens on the four projection shapes, 40 calls each.
fn gemm_shapes(t: usize) {
    let shapes = [
        ("qkv_proj", 960, 576),
        ("o_proj", 576, 576),
        ("gate_up", 3072, 576),
        ("down_proj", 576, 1536),
    ];
    for (name, n, k) in shapes {
        let w: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
        let x: Vec<f32> = (0..t * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0; t * n];
        let p = PackedWeight::pack(&w, n, k, Isa::detect());
        gemm(&mut out, &x, &p, None, t); // warm-up
        let reps = 40;
        let (cpu0, wall0) = (cpu_seconds(), std::time::Instant::now());
        for _ in 0..reps {
            gemm(&mut out, &x, &p, None, t);
        }
        let wall = wall0.elapsed().as_secs_f64();
        let flop = 2.0 * (t * n * k * reps) as f64;
        let cpu = match (cpu0, cpu_seconds()) {
            (Some(a), Some(b)) => format!("{:6.1} GFLOP per CPU-second, ", flop / (b - a) / 1e9),
            _ => String::new(),
        };
        println!(
            "{name:>9} [{n}x{k}] t={t} ({}): {cpu}{:6.1} GFLOP/s wall",
            Isa::detect().name(),
            flop / wall / 1e9
        );
    }
}
