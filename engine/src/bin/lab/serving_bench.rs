//! `lab bench --workload nano-vllm` and `--workload decode-b1`: the serving benchmark.
//!
//! `nano-vllm` runs nano-vllm's workload (`nano_vllm`) on one engine, then the batch-1 decode
//! figure (`decode_b1`) on the same engine; `decode-b1` runs only the latter. The report's
//! JSON keys are the ones `scripts/bench_transformers_gpu.py` prints, so the two compare
//! field by field.
//!
//! On a GPU the ceilings are measured first (`bench::roofline`) and each figure is also given
//! against them: batch-1 decode as GB/s read (% of copy), the workload as the linear layers'
//! TFLOP/s (% of the GEMM) and decode attention's KV-cache reads in GB/s (extra JSON keys).

use clap::Args;
use engine::LLMEngine;

use crate::bench::roofline;
use crate::nano_vllm::{percentile, ServingResult};
use crate::{decode_b1, nano_vllm, ModelArgs};

/// The workload's size (nano-vllm's `bench.py` values by default).
#[derive(Args)]
pub struct ServingArgs {
    /// nano-vllm workload: requests, all submitted at t = 0.
    #[arg(long, default_value_t = 256)]
    num_requests: usize,
    /// nano-vllm workload: longest prompt; lengths are uniform in 100..=this (all equal to
    /// this when it is below 100).
    #[arg(long, default_value_t = 1024)]
    max_input_len: usize,
    /// nano-vllm workload: longest output; lengths are uniform in 100..=this (likewise).
    #[arg(long, default_value_t = 1024)]
    max_output_len: usize,
    /// nano-vllm workload: run only its first N requests (drawn as in the full workload, so
    /// the same requests as the transformers script's `--limit N`).
    #[arg(long)]
    limit: Option<usize>,
}

impl ServingArgs {
    /// The nano-vllm requests these arguments describe (the first `--limit` of them), checked.
    pub fn workload(&self) -> anyhow::Result<nano_vllm::Workload> {
        let n = self.num_requests;
        anyhow::ensure!(n >= 1, "--num-requests must be at least 1");
        anyhow::ensure!(
            self.max_input_len >= 1 && self.max_output_len >= 1,
            "--max-input-len and --max-output-len must be at least 1"
        );
        let limit = self.limit.unwrap_or(n);
        anyhow::ensure!(
            (1..=n).contains(&limit),
            "--limit {limit} must be between 1 and --num-requests ({n})"
        );
        let mut w = nano_vllm::workload(n, self.max_input_len, self.max_output_len);
        w.prompts.truncate(limit);
        w.max_tokens.truncate(limit);
        Ok(w)
    }
}

/// Loads the model, runs the workload (unless `decode_only`) and batch-1 decode, and prints
/// the report (and one JSON line with `json`).
pub fn run(
    model: &ModelArgs,
    args: &ServingArgs,
    decode_only: bool,
    runs: usize,
    json: bool,
    kernel_timeline: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    // Checked before the model loads: a bad flag fails at once.
    let workload = args.workload()?;
    let mut config = model.engine_config();
    config.kernel_timeline = kernel_timeline.is_some();
    config.validate()?;
    let device = config.device.resolve()?;
    anyhow::ensure!(
        kernel_timeline.is_none() || matches!(device, engine::config::Device::Cuda(_)),
        "--kernel-timeline records the CUDA kernels: it needs a GPU (--device cuda), found \
         {device}"
    );
    let gpu = roofline::measure(device)?; // before the engine takes the GPU's memory
    let mut engine = LLMEngine::new(model.load()?, config)?;
    let vocab = engine.model_config().vocab_size;
    let c = engine.model_config().clone();
    eprintln!(
        "model {} ({} layers, vocab {vocab}), {} KV blocks of {}, max {} seqs and {} tokens a step",
        model.model,
        engine.model_config().num_hidden_layers,
        engine.num_kv_blocks,
        engine.config.cache.block_size,
        engine.config.scheduler.max_num_seqs,
        engine.config.scheduler.max_num_batched_tokens,
    );
    if vocab <= 10_000 {
        eprintln!("note: ids above the vocabulary ({vocab}) wrap around it (id % {vocab})");
    }

    let mut report = serde_json::json!({
        "engine": "inference-lab",
        "workload": if decode_only { "decode-b1" } else { "nano-vllm" },
        "model": model.model,
        "device": device.to_string(),
        "async_scheduling": engine.config.async_scheduling,
    });
    if let Some(g) = &gpu {
        report["ceilings"] = roofline::json(g);
    }
    if !decode_only {
        let w = workload;
        let r = nano_vllm::run(&mut engine, &w)?;
        print_result(&r);
        let fields = result_json(&r);
        report.as_object_mut().unwrap().extend(fields);
        report["max_num_seqs"] = engine.config.scheduler.max_num_seqs.into();
        report["max_num_batched_tokens"] = engine.config.scheduler.max_num_batched_tokens.into();
        report["num_kv_blocks"] = engine.num_kv_blocks.into();
        report["batched_tokens"] = r.batched_tokens.into();
        if let Some(g) = &gpu {
            // Linear layers: every processed token through the projections, every output token
            // through the LM head. Decode attention: each output token after the first reads
            // its request's whole context.
            let flops = roofline::linear_flops(&c, r.batched_tokens, r.output_tokens);
            let tflop_s = flops / r.wall_s / 1e12;
            let context: f64 = w
                .prompts
                .iter()
                .zip(&w.max_tokens)
                .map(|(p, &m)| roofline::decode_context_tokens(p.len(), m))
                .sum();
            let kv_bytes = context * roofline::kv_bytes_per_token(&c);
            let (kv_gb_s, kv_pct) = roofline::gb_s(kv_bytes, r.wall_s, g);
            println!(
                "  linear layers: {tflop_s:.1} TFLOP/s, {:.1}% of the GEMM ceiling (2 × projection \
                 weights × {} tokens processed + 2 × LM head × {} sampled; attention excluded)",
                100.0 * tflop_s / g.gemm_tflop_s,
                r.batched_tokens,
                r.output_tokens
            );
            println!(
                "  decode attention: {:.1} GB of KV cache read, {kv_gb_s:.0} GB/s over the whole \
                 run ({kv_pct:.1}% of copy)",
                kv_bytes / 1e9
            );
            report["linear_tflop_s"] = tflop_s.into();
            report["linear_of_gemm"] = (tflop_s / g.gemm_tflop_s).into();
            report["decode_kv_bytes"] = kv_bytes.into();
            report["decode_kv_gb_s"] = kv_gb_s.into();
            report["decode_kv_of_copy"] = (kv_pct / 100.0).into();
        }
    }
    let b1 = decode_b1::ms_per_token(&mut engine, runs)?;
    let ms = b1.ms_per_token;
    println!(
        "batch-1 decode: {ms:.3} ms/token (median of {}; {} tokens after a {}-token prompt)",
        runs.max(1),
        decode_b1::DECODE_STEPS,
        decode_b1::PROMPT_LEN
    );
    report["decode_b1_ms_per_token"] = ms.into();
    if let Some(device) = b1.device_ms_per_token {
        if engine.config.async_scheduling == Some(true) {
            println!(
                "  of which the device: {device:.3} ms/token (first kernel to sampled ids); \
                 async scheduling prepares each step while the one before runs"
            );
        } else {
            println!(
                "  of which the device: {device:.3} ms/token (first kernel to sampled ids); the \
                 host's part, {:.3} ms, is time the device waits",
                ms - device
            );
        }
        report["decode_b1_device_ms_per_token"] = device.into();
    }
    if let Some(g) = &gpu {
        // Bytes a decode token reads: the bf16 weights, and K and V of its context, which
        // grows from PROMPT_LEN + 1 to PROMPT_LEN + DECODE_STEPS over the timed steps.
        let (prompt, steps) = (decode_b1::PROMPT_LEN, decode_b1::DECODE_STEPS);
        let context = roofline::decode_context_tokens(prompt, 1 + steps) / steps as f64;
        let weights = roofline::weight_bytes_read(&c);
        let kv = context * roofline::kv_bytes_per_token(&c);
        let (gb_s, pct) = roofline::gb_s(weights + kv, ms * 1e-3, g);
        println!(
            "  {:.1} MB read per token ({:.1} MB bf16 weights + {:.2} MB KV at a mean context of \
             {context}): {gb_s:.0} GB/s, {pct:.1}% of copy",
            (weights + kv) / 1e6,
            weights / 1e6,
            kv / 1e6
        );
        report["decode_b1_bytes_per_token"] = (weights + kv).into();
        report["decode_b1_gb_s"] = gb_s.into();
        report["decode_b1_of_copy"] = (pct / 100.0).into();
    }
    if let Some(path) = kernel_timeline {
        // The timed runs' records are dropped; one more window is recorded alone.
        engine.take_kernel_timeline()?;
        let prompts = crate::decode_batch::prompts(1, vocab);
        crate::decode_batch::decode_window(&mut engine, &prompts)?;
        let records = engine
            .take_kernel_timeline()?
            .ok_or_else(|| anyhow::anyhow!("--kernel-timeline: the engine recorded no timeline"))?;
        let steps = crate::kernel_timeline::steps(&records);
        report["kernel_timeline"] =
            crate::kernel_timeline::report(&steps, c.num_hidden_layers, records.dropped, path)?;
    }
    if json {
        println!("{report}");
    }
    Ok(())
}

fn print_result(r: &ServingResult) {
    println!(
        "nano-vllm workload: {} requests at t=0, {} prompt + {} output tokens",
        r.requests, r.prompt_tokens, r.output_tokens
    );
    println!(
        "  {:.2} s, {} steps, {} preemptions: {:.1} output tok/s, {:.1} total tok/s",
        r.wall_s,
        r.steps,
        r.preemptions,
        r.output_tokens as f64 / r.wall_s,
        (r.prompt_tokens + r.output_tokens) as f64 / r.wall_s
    );
    let named = [
        ("TTFT", &r.ttft_s),
        ("TPOT", &r.tpot_s),
        ("E2E latency", &r.latency_s),
    ];
    for (name, v) in named {
        let [p50, p90, p99] = [50.0, 90.0, 99.0].map(|p| 1e3 * percentile(v, p));
        println!("  {name} ms: p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}");
    }
}

fn result_json(r: &ServingResult) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::json!({
        "requests": r.requests,
        "prompt_tokens": r.prompt_tokens,
        "output_tokens": r.output_tokens,
        "wall_s": r.wall_s,
        "output_tok_per_s": r.output_tokens as f64 / r.wall_s,
        "total_tok_per_s": (r.prompt_tokens + r.output_tokens) as f64 / r.wall_s,
        "steps": r.steps,
        "preemptions": r.preemptions,
    });
    for (name, v) in [
        ("ttft", &r.ttft_s),
        ("tpot", &r.tpot_s),
        ("latency", &r.latency_s),
    ] {
        for p in [50, 90, 99] {
            m[format!("{name}_ms_p{p}")] = (1e3 * percentile(v, p as f64)).into();
        }
    }
    match m {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("built as an object"),
    }
}
