//! `lab bench`: prefill and decode throughput at batch 1 and 8, next to the machine's ceiling.
//! (`--workload nano-vllm` and `--workload decode-b1` are the serving benchmark instead:
//! `serving_bench`; `--workload decode --batch-size N` times a decode step of N requests and
//! its collectives: `decode_batch`; `--workload scheduler` times the host's work per step
//! alone: `scheduler_bench`.)
//!
//! Workloads (fixed so runs compare across machines and against transformers' baseline,
//! `docs/baseline-transformers.md`):
//! - prefill: 1 × 512-token prompt, and 8 × 128-token prompts, in one step each;
//! - decode: 1 and 8 prompts of 16 tokens, 64 new tokens each (greedy, EOS ignored);
//!   decode tok/s counts the 63 tokens after the first, over the steps that made them.
//!
//! Ceilings: a batch-1 decode step reads every weight once, so memory bandwidth (measured
//! here by streaming a large buffer) over weight bytes bounds tokens/s; prefill is bound by
//! arithmetic, 2 FLOPs per weight per token through the layers' projections and per LM-head
//! weight per sampled row (`roofline::linear_flops`), against the FMA units' peak measured
//! at start-up (`compute_probe`; `--peak-gflops` sets it instead). Each row's ceiling is the
//! lower of the two.
//!
//! On a GPU the ceilings are measured on it first (`roofline`: copy bandwidth, bf16 GEMM
//! TFLOP/s) and the weights are bf16. On both, every row's ceiling is the roofline's
//! `min(tokens a step makes × bandwidth / weight bytes, peak FLOP/s / the step's linear
//! FLOPs)`.

use std::time::Instant;

use clap::Args;
use engine::{LLMEngine, Prompt, SamplingParams};

use crate::serving_bench::ServingArgs;
use crate::ModelArgs;

pub mod compute_probe;
pub mod llama_cpp;
pub mod memory_probe;
pub mod roofline;
pub mod transformers;

/// What `lab bench` measures.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Workload {
    /// Prefill and decode throughput at batch 1 and 8, against the machine's ceilings.
    PrefillDecode,
    /// nano-vllm's bench.py workload on one engine, then batch-1 decode ms/token.
    NanoVllm,
    /// Batch-1 decode ms/token alone.
    DecodeB1,
    /// A decode step at --batch-size requests, and with several ranks its collectives:
    /// `decode_batch`.
    Decode,
    /// The host's work per step on nano-vllm's workload without a model (scheduling, stats,
    /// input layout): `scheduler_bench`.
    Scheduler,
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Which benchmark to run.
    #[arg(long, value_enum, default_value_t = Workload::PrefillDecode)]
    workload: Workload,
    #[command(flatten)]
    serving: ServingArgs,
    /// --workload decode: requests that decode together in each timed step (at most
    /// --max-num-seqs).
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// --workload decode: also split each step's host time by span (the engine's step, the
    /// hand-off to the ranks, each rank's preparing, graph launch and wait for its output),
    /// µs per step and thread, with only those spans listened to.
    #[arg(long)]
    host_spans: bool,
    /// Measured runs per workload (the best is reported, after one warm-up run; batch-1
    /// decode of the serving workloads, and --workload decode, report the median).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The CPU's f32 FMA peak in GFLOP/s, for the compute ceiling of prefill and batch 8
    /// (default: measured at start-up, every thread running FMAs on registers with the GEMM's
    /// instruction set). Ignored on a GPU, whose GEMM rate is measured on it.
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Also print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Time Hugging Face transformers on the same four workloads, in the same run, with this
    /// Python (torch and transformers installed): `scripts/bench_transformers.py` runs after
    /// each round of ours, and the table gains its tok/s and our ratio to it. CPU only.
    #[arg(long, value_name = "PYTHON")]
    transformers: Option<std::path::PathBuf>,
    /// The Hugging Face directory transformers loads (default: --model, when it is one).
    #[arg(long, value_name = "DIR")]
    transformers_model: Option<std::path::PathBuf>,
    /// Where `bench_transformers.py` is (default: the repository's scripts/).
    #[arg(long, value_name = "PATH")]
    transformers_script: Option<std::path::PathBuf>,
    /// Time a prebuilt llama.cpp (npm's node-llama-cpp) on the batch-1 workloads, in the same
    /// run, with this node binary: `scripts/bench_llama_cpp.mjs` runs after each round of ours
    /// (and transformers'), on the same GGUF, and the table gains its tok/s and our ratio to
    /// it. CPU only; --model must be a .gguf or a fetched model (or see --llama-cpp-model).
    #[arg(long, value_name = "NODE")]
    llama_cpp: Option<std::path::PathBuf>,
    /// Where `bench_llama_cpp.mjs` is (default: the repository's scripts/).
    #[arg(long, value_name = "PATH")]
    llama_cpp_script: Option<std::path::PathBuf>,
    /// The directory where `npm i node-llama-cpp` ran (default: node's own resolution from
    /// the script's directory).
    #[arg(long, value_name = "DIR")]
    llama_cpp_package: Option<std::path::PathBuf>,
    /// The GGUF llama.cpp loads (default: the one our engine computes from). llama.cpp needs
    /// the file's tokenizer metadata, which our engine does not read.
    #[arg(long, value_name = "PATH")]
    llama_cpp_model: Option<std::path::PathBuf>,
    /// --workload decode-b1 on a GPU: build the kernels with the timeline probe, and after
    /// the timed runs record one more window's steps kernel by kernel inside their CUDA graphs
    /// (when each kernel's blocks waited and were let go): a table of where a step's device
    /// time goes, and the launches as a Chrome trace written to PATH (Perfetto opens it). The
    /// probe moves the times a little: compare with a run without it.
    #[arg(long, value_name = "PATH")]
    kernel_timeline: Option<std::path::PathBuf>,
    /// Rounds of the whole bench; with --transformers or --llama-cpp each round is ours then
    /// theirs (A B A B), and each round's ratio is printed.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

struct Row {
    name: &'static str,
    tokens_per_s: f64,
    ceiling: f64,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.workload == Workload::Decode {
        let (batch, runs) = (args.batch_size, args.runs);
        return crate::decode_batch::run(&args.model, batch, runs, args.json, args.host_spans);
    }
    anyhow::ensure!(!args.host_spans, "--host-spans is for --workload decode");
    anyhow::ensure!(
        args.kernel_timeline.is_none() || args.workload == Workload::DecodeB1,
        "--kernel-timeline is for --workload decode-b1"
    );
    anyhow::ensure!(
        args.batch_size == 1,
        "--batch-size is for --workload decode; this workload has its own batches"
    );
    if args.workload == Workload::Scheduler {
        return crate::scheduler_bench::run(&args.model, &args.serving, args.runs, args.json);
    }
    if args.workload != Workload::PrefillDecode {
        let decode_only = args.workload == Workload::DecodeB1;
        return crate::serving_bench::run(
            &args.model,
            &args.serving,
            decode_only,
            args.runs,
            args.json,
            args.kernel_timeline.as_deref(),
        );
    }
    let mut config = args.model.engine_config();
    // Every run repeats the same prompts: with prefix caching the warm-up's KV would be reused
    // and later prefills would compute almost nothing.
    config.cache.enable_prefix_caching = false;
    let device = config.device.resolve()?;
    // The kernels' pool first (this thread steps the engine), before anything uses rayon.
    args.model.set_threads()?;
    let gpu = roofline::measure(device)?; // before the engine takes the GPU's memory
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let transformers = match &args.transformers {
        None => None,
        Some(python) => {
            anyhow::ensure!(
                gpu.is_none(),
                "--transformers compares on the CPU; on a GPU, scripts/gpu-bench.sh runs \
                 transformers beside `lab bench`"
            );
            let dir = (args.transformers_model.clone())
                .unwrap_or_else(|| std::path::PathBuf::from(&args.model.model));
            Some(transformers::Transformers::new(
                python.clone(),
                args.transformers_script.clone(),
                dir,
                args.runs,
                rayon::current_num_threads(),
            )?)
        }
    };
    let llama_script = match &args.llama_cpp {
        None => None,
        Some(node) => {
            anyhow::ensure!(gpu.is_none(), "--llama-cpp compares on the CPU only");
            Some(llama_cpp::check_before_load(
                node,
                args.llama_cpp_script.clone(),
                args.llama_cpp_package.as_deref(),
                &args.model.model,
                args.llama_cpp_model.as_deref(),
            )?)
        }
    };
    config.scheduler.max_num_batched_tokens = config.scheduler.max_num_batched_tokens.max(1024);
    let model = args.model.load()?;
    let c = model.config.clone();
    let llama = match (&args.llama_cpp, llama_script) {
        (Some(node), Some(script)) => Some(llama_cpp::LlamaCpp {
            node: node.clone(),
            script,
            package: args.llama_cpp_package.clone(),
            gguf: llama_cpp::choose_gguf(
                &args.model.model,
                args.llama_cpp_model.as_deref(),
                model.weights.gguf_path(),
            )?,
            reps: args.runs,
            threads: rayon::current_num_threads(),
            vocab: c.vocab_size,
        }),
        _ => None,
    };
    // On the CPU a model converted from a GGUF computes from its Q8_0/Q4_1 blocks: a decode
    // step streams those bytes, not 4 per weight.
    let blocks = match (&gpu, model.weights.gguf_path()) {
        (None, Some(gguf)) => Some(engine::model_loader::gguf_blocks::streamed_weight_bytes(
            gguf,
        )?),
        _ => None,
    };
    if let Some(l) = &llama {
        l.check()?;
    }
    let mut engine = LLMEngine::new(model, config)?;

    let weight_params = weight_params(&c);
    let cpu_weight_bytes = blocks.unwrap_or(weight_params as f64 * 4.0);
    let mut probe = gpu.is_none().then(memory_probe::MemoryProbe::new);
    // Decode steps per second that memory allows (every weight read once a step), and the
    // FLOP/s the linear layers can run at: the CPU's FMA peak, the GPU's bf16 GEMM rate.
    let (decode_ceiling, peak_flops) =
        match &gpu {
            None => {
                let weight_bytes = cpu_weight_bytes;
                let reads = probe.as_mut().expect("a probe on the CPU").measure(5);
                let (bandwidth, gemv) = (reads.plain, reads.gemm);
                eprintln!(
                "model {} ({:.0} M weights, {:.0} MB {} streamed per decode token), {} threads, \
                 GEMM on {}, read bandwidth {:.1} GB/s; the f32 GEMM at 1 token streams {:.1} \
                 GB/s ({:.0}%)",
                args.model.model,
                weight_params as f64 / 1e6,
                weight_bytes / 1e6,
                if blocks.is_some() { "in GGUF blocks (Q4_1/Q8_0, f32 scales)" } else { "f32" },
                rayon::current_num_threads(),
                engine::backend::cpu_gemm::Isa::detect().name(),
                bandwidth / 1e9,
                gemv / 1e9,
                100.0 * gemv / bandwidth,
            );
                if blocks.is_some() {
                    let q4 = memory_probe::gemm_blocks_read();
                    eprintln!(
                    "the Q4_1 block GEMM at 1 token streams {:.1} GB/s of blocks ({:.0}% of the \
                     read): the memory ceiling below is the faster read / block bytes",
                    q4 / 1e9,
                    100.0 * q4 / bandwidth,
                );
                }
                let compute = compute_probe::measure();
                let cpu_peak = args.peak_gflops.map_or(compute.peak, |g| g * 1e9);
                eprintln!(
                    "FMA peak {:.0} GFLOP/s on {} threads{}; the f32 GEMM at 512 tokens runs \
                     {:.0} GFLOP/s ({:.0}% of the measured peak)",
                    cpu_peak / 1e9,
                    rayon::current_num_threads(),
                    match args.peak_gflops {
                        Some(_) => format!(" (--peak-gflops; measured {:.0})", compute.peak / 1e9),
                        None => String::new(),
                    },
                    compute.gemm / 1e9,
                    100.0 * compute.gemm / compute.peak,
                );
                // At start-up, for the header; each batch-1 decode run is then compared with
                // the ceiling measured right beside it (memory_probe's doc says why).
                (reads.best() / weight_bytes, cpu_peak)
            }
            Some(ceilings) => {
                let weight_bytes = roofline::weight_bytes_read(&c);
                eprintln!(
                    "model {} ({:.0} M weights, {:.0} MB bf16 read per decode step), on {device}",
                    args.model.model,
                    weight_params as f64 / 1e6,
                    weight_bytes / 1e6,
                );
                (
                    ceilings.copy_gb_s * 1e9 / weight_bytes,
                    ceilings.gemm_tflop_s * 1e12,
                )
            }
        };
    // A step of `tokens` (of which `sampled` go through the LM head), in tokens/s: no faster
    // than its linear FLOPs at the peak, nor than the memory streams the weights once a step.
    let roof = |tokens: usize, sampled: usize| {
        let compute = tokens as f64 * peak_flops / roofline::linear_flops(&c, tokens, sampled);
        compute.min(tokens as f64 * decode_ceiling)
    };

    let mut measure = |engine: &mut LLMEngine| -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        for (name, batch, len) in [("prefill b=1 x512", 1, 512), ("prefill b=8 x128", 8, 128)] {
            let best = best_of(args.runs, || prefill_time(engine, batch, len, c.vocab_size))?;
            rows.push(Row {
                name,
                tokens_per_s: (batch * len) as f64 / best,
                ceiling: roof(batch * len, batch),
            });
        }
        for (name, batch) in [("decode b=1", 1), ("decode b=8", 8)] {
            let decode = || decode_time(engine, batch, c.vocab_size);
            let (best, ceiling) = match (batch, probe.as_mut()) {
                // The CPU's batch 1: against the memory ceiling measured beside each run.
                (1, Some(probe)) => {
                    best_beside_ceiling(args.runs, probe, cpu_weight_bytes, 63.0, decode)?
                }
                _ => {
                    let best = best_of(args.runs, decode)?;
                    (best, roof(batch, batch))
                }
            };
            rows.push(Row {
                name,
                tokens_per_s: (batch * 63) as f64 / best,
                ceiling,
            });
        }
        Ok(rows)
    };

    let mut json_rows = Vec::new();
    let mut llama_build = None;
    for round in 1..=args.rounds {
        let rows = measure(&mut engine)?;
        // transformers runs after ours, in the same round: A B A B over the rounds.
        let theirs = transformers.as_ref().map(|t| t.run()).transpose()?;
        let llamas = llama.as_ref().map(|l| l.run()).transpose()?;
        if args.rounds > 1 {
            println!("round {round} of {}", args.rounds);
        }
        let mut baselines = Vec::new();
        if let Some(t) = &theirs {
            baselines.push(("transformers", "lab / tf", t.as_slice()));
        }
        if let Some(l) = &llamas {
            llama_build = Some(l.build.clone());
            baselines.push(("llama.cpp", "lab / llama", l.tokens_per_s.as_slice()));
        }
        print_rows(&rows, &baselines);
        for r in &rows {
            let mut row = serde_json::json!({
                "workload": r.name,
                "tokens_per_s": r.tokens_per_s,
                "ceiling": r.ceiling,
                "device": device.to_string(),
                "round": round,
            });
            if let Some(g) = &gpu {
                row["ceilings"] = roofline::json(g);
            }
            if let Some(t) = theirs_for(theirs.as_deref(), r.name) {
                row["transformers_tokens_per_s"] = t.into();
            }
            let llama_tps = llamas.as_ref().map(|l| l.tokens_per_s.as_slice());
            if let Some(t) = theirs_for(llama_tps, r.name) {
                row["llama_cpp_tokens_per_s"] = t.into();
            }
            json_rows.push(row);
        }
    }
    match &gpu {
        None => println!(
            "(decode b=1 ceiling: the faster read / {} weight bytes; prefill: {:.0} GFLOP/s / \
             the step's linear FLOPs; decode b=8: the lower of the two)",
            if blocks.is_some() { "block" } else { "f32" },
            peak_flops / 1e9
        ),
        Some(g) => println!(
            "(ceiling: min(tokens a step makes × {:.0} GB/s / bf16 weight bytes, {:.1} TFLOP/s / \
             the step's linear FLOPs), the copy and GEMM measured above)",
            g.copy_gb_s, g.gemm_tflop_s
        ),
    }
    if transformers.is_some() {
        println!(
            "(transformers: scripts/bench_transformers.py on the same workloads, {} threads, \
             after our runs in each round)",
            rayon::current_num_threads()
        );
    }
    if let (Some(l), Some(build)) = (&llama, &llama_build) {
        println!(
            "(llama.cpp: {build} via scripts/bench_llama_cpp.mjs, batch 1 only, {} threads, on \
             {}, the same prompt ids, after our runs in each round)",
            l.threads,
            l.gguf.display()
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&json_rows)?);
    }
    Ok(())
}

/// Another engine's tokens/s per workload: (its name, the ratio's header, the rates).
type Baseline<'a> = (&'a str, &'a str, &'a [(&'static str, f64)]);

/// The results table; for each baseline (transformers, llama.cpp), two more columns: its
/// tokens/s and our ratio to it, blank where it did not run that workload.
fn print_rows(rows: &[Row], baselines: &[Baseline]) {
    print!(
        "{:<18} {:>12} {:>12} {:>10}",
        "workload", "tokens/s", "ceiling", "of ceiling"
    );
    for (name, ratio, _) in baselines {
        print!(" {name:>13} {ratio:>11}");
    }
    println!();
    for r in rows {
        print!(
            "{:<18} {:>12.1} {:>12.1} {:>9.0}%",
            r.name,
            r.tokens_per_s,
            r.ceiling,
            100.0 * r.tokens_per_s / r.ceiling
        );
        for (_, _, theirs) in baselines {
            match theirs_for(Some(theirs), r.name) {
                Some(t) => print!(" {:>13.1} {:>10.2}×", t, r.tokens_per_s / t),
                None => print!(" {:>13} {:>11}", "", ""),
            }
        }
        println!();
    }
    // A ceiling is measured, so a disturbed probe (a VM's core taken away while it ran) can
    // set it too low; say so rather than let a ratio above 100% pass as a result.
    for r in rows.iter().filter(|r| r.tokens_per_s > r.ceiling) {
        println!(
            "({} ran above its measured ceiling: the probe was disturbed, so that ratio says nothing)",
            r.name
        );
    }
}

/// A baseline's tokens/s for one of our workloads, if it was run.
fn theirs_for(theirs: Option<&[(&str, f64)]>, name: &str) -> Option<f64> {
    theirs?.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Weights touched per token: every matrix, the LM head once more if tied (the embedding
/// lookup reads one row, the LM head the whole matrix).
fn weight_params(c: &engine::config::ModelConfig) -> usize {
    let (h, i, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let attn = h * (c.num_attention_heads * d) * 2 + h * (c.num_key_value_heads * d) * 2;
    let mlp = 3 * h * i;
    c.num_hidden_layers * (attn + mlp + 2 * h) + c.vocab_size * h + h
}

fn best_of(runs: usize, mut f: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    f()?; // warm-up: page in weights, grow allocations
    let mut best = f64::INFINITY;
    for _ in 0..runs.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}

/// [`best_of`] for a run of `steps` steps bound by memory: the memory ceiling (steps per
/// second: the faster read / `weight_bytes` a step streams) is measured right before and right
/// after every timed run, and the best run comes back with the faster of its own two (see
/// `memory_probe`). Every run's ratio is printed.
fn best_beside_ceiling(
    runs: usize,
    probe: &mut memory_probe::MemoryProbe,
    weight_bytes: f64,
    steps: f64,
    mut f: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<(f64, f64)> {
    f()?; // warm-up
    let mut best = (f64::INFINITY, 0.0);
    let mut ratios = Vec::new();
    for _ in 0..runs.max(1) {
        let before = probe.measure(3);
        let seconds = f()?;
        let after = probe.measure(3);
        let ceiling = before.max(after).best() / weight_bytes; // steps per second
        ratios.push(format!("{:.0}%", 100.0 * steps / seconds / ceiling));
        if seconds < best.0 {
            best = (seconds, ceiling);
        }
    }
    eprintln!(
        "batch-1 decode runs against the ceiling beside each: {}",
        ratios.join(", ")
    );
    Ok(best)
}

/// Deterministic prompt ids away from the special tokens.
fn prompt(seed: usize, len: usize, vocab: usize) -> Vec<u32> {
    let lo = 16.min(vocab - 1);
    (0..len)
        .map(|i| (lo + (seed * 7919 + i * 104_729) % (vocab - lo)) as u32)
        .collect()
}

fn add(
    engine: &mut LLMEngine,
    batch: usize,
    len: usize,
    max_tokens: usize,
    vocab: usize,
) -> anyhow::Result<()> {
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(max_tokens)
    };
    for b in 0..batch {
        engine.add_request(Prompt::TokenIds(prompt(b, len, vocab)), params.clone())?;
    }
    Ok(())
}

/// Seconds of the one step that prefills `batch` prompts of `len` tokens.
fn prefill_time(
    engine: &mut LLMEngine,
    batch: usize,
    len: usize,
    vocab: usize,
) -> anyhow::Result<f64> {
    add(engine, batch, len, 1, vocab)?;
    let t = Instant::now();
    while engine.has_unfinished_requests() {
        engine.step()?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Seconds of the 63 decode steps after the prefill step.
fn decode_time(engine: &mut LLMEngine, batch: usize, vocab: usize) -> anyhow::Result<f64> {
    add(engine, batch, 16, 64, vocab)?;
    engine.step()?; // prefill + first token
    let t = Instant::now();
    while engine.has_unfinished_requests() {
        engine.step()?;
    }
    Ok(t.elapsed().as_secs_f64())
}
