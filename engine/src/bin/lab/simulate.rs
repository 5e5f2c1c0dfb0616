//! `lab simulate`: continuous vs static batching on a simulated clock, thousands of requests
//! in seconds, decided by the engine's own scheduler (engine::simulator).
//!
//! ```sh
//! lab simulate --num-requests 10000                      # H200 roofline, SmolLM2-135M shape
//! lab simulate --calibrate cpu-cost.json --model smollm2 --device cpu   # fit the CPU model
//! lab simulate --cost cpu-cost.json --validate --model smollm2 --device cpu --num-requests 24 \
//!              --prompt-len uniform:16-128 --output-len uniform:4-32 --max-num-seqs 8
//! lab simulate --num-requests 2000 --shape llama-3-8b --arrival poisson:35 \
//!              --plots book/src/stage2                   # the book's Stage 2 plots
//! ```

use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use engine::config::ModelConfig;
use engine::core::scheduling_policy::policy_from_name;
use engine::simulator::calibrate::{default_plan, fit, measure, step_error};
use engine::simulator::engine_run::{recording_parts, run_engine};
use engine::simulator::metrics::RunReport;
use engine::simulator::simulate::{simulate_continuous, SimConfig};
use engine::simulator::static_batching::simulate_static;
use engine::simulator::step_cost::{GpuCeilings, LinearCost, RooflineCost, StepCost};
use engine::simulator::sweep::run_sweeps;
use engine::simulator::workload::{Arrival, LengthDist, SimRequest, WorkloadSpec};
use engine::worker::cache_engine::kv_cache_bytes_per_block;
use engine::LLMEngine;

use crate::ModelArgs;

#[derive(Args)]
pub struct SimulateArgs {
    /// Requests in the workload.
    #[arg(long, default_value_t = 10_000)]
    num_requests: usize,
    /// Arrival process: all (every request at t = 0), poisson:RATE (requests/s) or
    /// interval:SECONDS.
    #[arg(long, default_value = "all")]
    arrival: String,
    /// Prompt lengths: fixed:N or uniform:LO-HI.
    #[arg(long, default_value = "uniform:64-512")]
    prompt_len: String,
    /// Output lengths (EOS ignored): fixed:N or uniform:LO-HI.
    #[arg(long, default_value = "uniform:16-512")]
    output_len: String,
    /// A tenant and its share of the requests, NAME=SHARE (repeatable).
    #[arg(long = "tenant", value_parser = parse_name_weight)]
    tenants: Vec<(String, f64)>,
    /// The first N prompt tokens are the same in every request (a shared system prompt).
    #[arg(long, default_value_t = 0)]
    shared_prefix: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Step-cost model: h200 (the roofline from gpu.md's ceilings for --shape) or a JSON file
    /// written by --calibrate.
    #[arg(long, default_value = "h200")]
    cost: String,
    /// Model shape of the roofline: a shape of engine/configs (smollm2-135m, llama-3.2-1b,
    /// llama-3-8b, ...) or a config.json.
    #[arg(long, default_value = "smollm2-135m")]
    shape: String,
    /// fcfs, priority, fair or qos (qos deadlines read the wall clock, not the simulated one).
    #[arg(long, default_value = "fcfs")]
    scheduling_policy: String,
    /// Weight of a tenant under fair or qos, NAME=WEIGHT (repeatable).
    #[arg(long = "tenant-weight", value_parser = parse_name_weight)]
    tenant_weights: Vec<(String, f64)>,
    /// Never split a prompt over steps (a prompt waits for a step with room for all of it).
    #[arg(long)]
    no_chunked_prefill: bool,
    /// Run --model on the engine for a few steps of each calibration shape, fit the linear
    /// cost model, write it to this JSON file, and stop.
    #[arg(long, value_name = "FILE")]
    calibrate: Option<std::path::PathBuf>,
    /// Also run the workload on the real engine (--model) and print the model's error.
    #[arg(long)]
    validate: bool,
    /// Also sweep the token budget and the batch size on this workload and write the book's
    /// SVG charts and the sweeps' numbers (sweeps.json) into this directory.
    #[arg(long, value_name = "DIR")]
    plots: Option<std::path::PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

fn parse_name_weight(s: &str) -> Result<(String, f64), String> {
    let (name, w) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=NUMBER"))?;
    let w: f64 = w
        .parse()
        .ok()
        .filter(|w: &f64| w.is_finite() && *w > 0.0)
        .ok_or_else(|| format!("{w:?} is not a positive number"))?;
    Ok((name.to_string(), w))
}

fn load_shape(shape: &str) -> anyhow::Result<ModelConfig> {
    if let Some((_, text)) = crate::plan::BUILT_IN_SHAPES
        .iter()
        .find(|(n, _)| *n == shape)
    {
        return Ok(ModelConfig::from_json(text)?);
    }
    let path = std::path::Path::new(shape);
    if path.is_dir() {
        return Ok(ModelConfig::from_dir(path)?);
    }
    let text = std::fs::read_to_string(path).with_context(|| {
        let names: Vec<_> = crate::plan::BUILT_IN_SHAPES
            .iter()
            .map(|(n, _)| *n)
            .collect();
        format!("--shape {shape:?} is neither a config file nor one of {names:?}")
    })?;
    Ok(ModelConfig::from_json(&text)?)
}

enum Cost {
    Roofline(RooflineCost),
    Linear(LinearCost),
}

impl Cost {
    fn model(&self) -> &dyn StepCost {
        match self {
            Cost::Roofline(c) => c,
            Cost::Linear(c) => c,
        }
    }
}

fn load_cost(args: &SimulateArgs, shape: &ModelConfig) -> anyhow::Result<Cost> {
    if args.cost == "h200" {
        return Ok(Cost::Roofline(RooflineCost::new(
            shape,
            GpuCeilings::h200(),
        )));
    }
    let text = std::fs::read_to_string(&args.cost).with_context(|| {
        format!(
            "--cost must be h200 or a file from --calibrate: {}",
            args.cost
        )
    })?;
    let c: LinearCost = serde_json::from_str(&text)
        .with_context(|| format!("--cost {} is not a calibrated cost model", args.cost))?;
    Ok(Cost::Linear(c))
}

fn workload_spec(args: &SimulateArgs, vocab_size: usize) -> anyhow::Result<WorkloadSpec> {
    if args.num_requests == 0 {
        bail!("--num-requests must be at least 1");
    }
    Ok(WorkloadSpec {
        num_requests: args.num_requests,
        arrival: Arrival::parse(&args.arrival)?,
        prompt_len: LengthDist::parse("--prompt-len", &args.prompt_len)?,
        output_len: LengthDist::parse("--output-len", &args.output_len)?,
        tenants: args.tenants.clone(),
        shared_prefix: args.shared_prefix,
        vocab_size,
        seed: args.seed,
    })
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let policy = policy_from_name(&args.scheduling_policy, &args.tenant_weights)?;
    let mut engine_config = args.model.engine_config();
    engine_config.scheduler.enable_chunked_prefill = !args.no_chunked_prefill;
    engine_config.validate()?;
    if let Some(path) = &args.calibrate {
        return calibrate(&args, path, policy);
    }
    let shape = load_shape(&args.shape)?;
    let cost = load_cost(&args, &shape)?;
    if args.validate {
        return validate(&args, cost.model(), policy);
    }
    drop(policy);
    let spec = workload_spec(&args, shape.vocab_size.min(50_000))?;
    let requests = spec.generate()?;
    // Without --num-kv-blocks: room for max-num-seqs requests of the longest length, so the
    // comparison is of batching, not of preemption (give a smaller cache to see preemption).
    let bs = engine_config.cache.block_size;
    let longest = spec.prompt_len.max().max(spec.shared_prefix) + spec.output_len.max();
    let num_kv_blocks = args
        .model
        .num_kv_blocks
        .unwrap_or(engine_config.scheduler.max_num_seqs * longest.div_ceil(bs));
    let dtype_bytes = if matches!(cost, Cost::Roofline(_)) {
        2
    } else {
        4
    };
    let config = SimConfig {
        engine: engine_config,
        num_kv_blocks,
        num_swap_blocks: engine_config.preemption.swap_space_bytes
            / kv_cache_bytes_per_block(&shape, bs, dtype_bytes).max(1),
        max_model_len: (num_kv_blocks * bs).min(shape.max_position_embeddings),
        policy: args.scheduling_policy.clone(),
        tenant_weights: args.tenant_weights.clone(),
    };
    if let Some(dir) = &args.plots {
        return plots(&args, dir, &config, &spec, cost.model());
    }
    let t0 = Instant::now();
    let continuous = simulate_continuous(&config, &requests, cost.model(), None)?;
    let static_ = simulate_static(&config, &requests, cost.model())?;
    let wall_s = t0.elapsed().as_secs_f64();
    let cost_name = match &cost {
        Cost::Roofline(_) => format!("{} for {}", cost.model().name(), args.shape),
        Cost::Linear(_) => format!("{} from {}", cost.model().name(), args.cost),
    };
    if args.json {
        let json = serde_json::json!({
            "workload": workload_json(&args, &requests),
            "cost_model": cost_name,
            "num_kv_blocks": num_kv_blocks,
            "max_num_seqs": engine_config.scheduler.max_num_seqs,
            "max_num_batched_tokens": engine_config.scheduler.max_num_batched_tokens,
            "continuous": continuous,
            "static": static_,
            "continuous_over_static": ratios(&continuous, &static_),
            "simulation_wall_s": wall_s,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!("{}", describe_workload(&args, &requests));
    println!(
        "cost model: {cost_name}; {num_kv_blocks} KV blocks of {bs}, --max-num-seqs {}, \
         --max-num-batched-tokens {}",
        engine_config.scheduler.max_num_seqs, engine_config.scheduler.max_num_batched_tokens
    );
    print_table(&[&continuous, &static_]);
    let r = ratios(&continuous, &static_);
    println!(
        "continuous / static: throughput {:.2}x, mean latency {:.2}x, mean TTFT {:.2}x, \
         utilization {:.0}% vs {:.0}%",
        r["throughput"].as_f64().unwrap_or(0.0),
        r["mean_latency"].as_f64().unwrap_or(0.0),
        r["mean_ttft"].as_f64().unwrap_or(0.0),
        100.0 * continuous.utilization,
        100.0 * static_.utilization
    );
    println!("simulated both in {wall_s:.2} s");
    Ok(())
}

/// Token budgets of the `--plots` sweep (also the largest prefill chunk).
const SWEEP_BUDGETS: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];
/// Batch sizes (`--max-num-seqs`) of the `--plots` sweep.
const SWEEP_BATCH_SIZES: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];
/// Arrival rates of the `--plots` load sweep, as fractions of `--arrival poisson:RATE`.
const SWEEP_LOADS: [f64; 8] = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6];

/// `--plots DIR`: both sweeps, their charts and numbers written to `dir`, a summary printed.
fn plots(
    args: &SimulateArgs,
    dir: &std::path::Path,
    config: &SimConfig,
    spec: &WorkloadSpec,
    cost: &dyn StepCost,
) -> anyhow::Result<()> {
    // The load sweep scales the workload's own Poisson rate (an offline batch has none).
    let Arrival::Poisson { rate } = spec.arrival else {
        bail!("--plots needs --arrival poisson:RATE (the load sweep runs at fractions of RATE)");
    };
    let rates: Vec<f64> = SWEEP_LOADS.iter().map(|f| f * rate).collect();
    let t0 = Instant::now();
    let sweeps = run_sweeps(
        config,
        spec,
        cost,
        &SWEEP_BUDGETS,
        &SWEEP_BATCH_SIZES,
        &rates,
    )?;
    let requests = &spec.generate()?;
    let wall_s = t0.elapsed().as_secs_f64();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let charts = sweeps.charts();
    for (file, chart) in &charts {
        let path = dir.join(file);
        std::fs::write(&path, chart.to_svg())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let json = serde_json::json!({
        "workload": workload_json(args, requests),
        "cost_model": cost.name(),
        "shape": args.shape,
        "num_kv_blocks": config.num_kv_blocks,
        "max_num_seqs": config.engine.scheduler.max_num_seqs,
        "max_num_batched_tokens": config.engine.scheduler.max_num_batched_tokens,
        "sweeps": sweeps,
        "continuous_over_static": ratios(&sweeps.continuous, &sweeps.static_),
    });
    let path = dir.join("sweeps.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", describe_workload(args, requests));
    println!(
        "cost model: {} for {}; {} KV blocks, --max-num-seqs {}, --max-num-batched-tokens {}",
        cost.name(),
        args.shape,
        config.num_kv_blocks,
        config.engine.scheduler.max_num_seqs,
        config.engine.scheduler.max_num_batched_tokens
    );
    print_table(&[&sweeps.continuous, &sweeps.static_]);
    println!(
        "{:>8} {:>10} {:>22} {:>22} {:>8}",
        "budget", "out tok/s", "TTFT p50/p90 ms", "TPOT p50/p99 ms", "steps"
    );
    for p in &sweeps.budgets {
        println!(
            "{:>8} {:>10.1} {:>22} {:>22} {:>8}",
            p.max_num_batched_tokens,
            p.output_tokens_per_s,
            format!("{:.2}/{:.2}", 1e3 * p.ttft_s.p50, 1e3 * p.ttft_s.p90),
            format!("{:.3}/{:.3}", 1e3 * p.tpot_s.p50, 1e3 * p.tpot_s.p99),
            p.steps
        );
    }
    println!(
        "{:>8} {:>22} {:>22} {:>14}",
        "seqs", "cont. tok/s, lat s", "static tok/s, lat s", "util c/s"
    );
    for p in &sweeps.batch_sizes {
        let (c, s) = (&p.continuous, &p.static_);
        println!(
            "{:>8} {:>22} {:>22} {:>14}",
            p.max_num_seqs,
            format!("{:.1}, {:.3}", c.output_tokens_per_s, c.mean_latency_s),
            format!("{:.1}, {:.3}", s.output_tokens_per_s, s.mean_latency_s),
            format!(
                "{:.0}%/{:.0}%",
                100.0 * c.utilization,
                100.0 * s.utilization
            )
        );
    }
    println!(
        "{:>8} {:>22} {:>22}",
        "req/s", "cont. tok/s, lat s", "static tok/s, lat s"
    );
    for p in &sweeps.loads {
        let (c, s) = (&p.continuous, &p.static_);
        println!(
            "{:>8.1} {:>22} {:>22}",
            p.rate,
            format!("{:.1}, {:.3}", c.output_tokens_per_s, c.mean_latency_s),
            format!("{:.1}, {:.3}", s.output_tokens_per_s, s.mean_latency_s),
        );
    }
    let names: Vec<&str> = charts.iter().map(|(f, _)| *f).collect();
    println!(
        "wrote {} and sweeps.json to {} ({} simulations in {wall_s:.1} s)",
        names.join(", "),
        dir.display(),
        4 + SWEEP_BUDGETS.len() + 2 * SWEEP_BATCH_SIZES.len() + 2 * SWEEP_LOADS.len()
    );
    Ok(())
}

fn ratios(c: &RunReport, s: &RunReport) -> serde_json::Value {
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    serde_json::json!({
        "throughput": div(c.output_tokens_per_s, s.output_tokens_per_s),
        "mean_latency": div(c.latency_s.mean, s.latency_s.mean),
        "mean_ttft": div(c.ttft_s.mean, s.ttft_s.mean),
    })
}

fn workload_json(args: &SimulateArgs, requests: &[SimRequest]) -> serde_json::Value {
    serde_json::json!({
        "requests": requests.len(),
        "arrival": args.arrival,
        "prompt_len": args.prompt_len,
        "output_len": args.output_len,
        "prompt_tokens": requests.iter().map(|r| r.prompt.len()).sum::<usize>(),
        "output_tokens": requests.iter().map(|r| r.output_len).sum::<usize>(),
        "shared_prefix": args.shared_prefix,
        "tenants": args.tenants,
        "seed": args.seed,
    })
}

fn describe_workload(args: &SimulateArgs, requests: &[SimRequest]) -> String {
    format!(
        "workload: {} requests, arrival {}, prompts {} ({} tokens), outputs {} ({} tokens), \
         seed {}",
        requests.len(),
        args.arrival,
        args.prompt_len,
        requests.iter().map(|r| r.prompt.len()).sum::<usize>(),
        args.output_len,
        requests.iter().map(|r| r.output_len).sum::<usize>(),
        args.seed
    )
}

fn print_table(reports: &[&RunReport]) {
    println!(
        "{:<11} {:>8} {:>10} {:>10} {:>6} {:>26} {:>26} {:>8}",
        "scheme",
        "steps",
        "total s",
        "out tok/s",
        "util",
        "latency p50/p90/p99 s",
        "TTFT p50/p90/p99 s",
        "preempt"
    );
    for r in reports {
        let p = |x: &engine::simulator::metrics::Percentiles| {
            format!("{:.3}/{:.3}/{:.3}", x.p50, x.p90, x.p99)
        };
        println!(
            "{:<11} {:>8} {:>10.3} {:>10.1} {:>5.1}% {:>26} {:>26} {:>8}",
            r.scheme,
            r.steps,
            r.total_s,
            r.output_tokens_per_s,
            100.0 * r.utilization,
            p(&r.latency_s),
            p(&r.ttft_s),
            r.preemptions
        );
    }
}

fn build_engine(
    args: &SimulateArgs,
    policy: Box<dyn engine::core::scheduling_policy::SchedulingPolicy>,
) -> anyhow::Result<LLMEngine> {
    // Steps one at a time unless asked: calibration and validation time each step from its
    // schedule to its tokens.
    let mut config = args.model.stepwise_engine_config();
    config.scheduler.enable_chunked_prefill = !args.no_chunked_prefill;
    Ok(LLMEngine::with_parts(
        args.model.load()?,
        config,
        recording_parts(policy),
    )?)
}

fn calibrate(
    args: &SimulateArgs,
    path: &std::path::Path,
    policy: Box<dyn engine::core::scheduling_policy::SchedulingPolicy>,
) -> anyhow::Result<()> {
    let mut engine = build_engine(args, policy)?;
    let t0 = Instant::now();
    let steps = measure(&mut engine, &default_plan())?;
    let samples: Vec<_> = steps.iter().map(|s| (s.shape, s.seconds)).collect();
    let cost = fit(&samples)?;
    std::fs::write(path, serde_json::to_string_pretty(&cost)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "calibrated on {} steps of --model {} in {:.1} s: overhead {:.3} ms, {:.4} ms/token, \
         {:.4} ms/sampled sequence, {:.3} ns/attention pair; mean |error| per step {:.1}%",
        samples.len(),
        args.model.model,
        t0.elapsed().as_secs_f64(),
        cost.overhead_s * 1e3,
        cost.per_token_s * 1e3,
        cost.per_sampled_seq_s * 1e3,
        cost.per_attention_pair_s * 1e9,
        100.0 * step_error(&cost, &samples)
    );
    println!("{}", path.display());
    Ok(())
}

fn validate(
    args: &SimulateArgs,
    cost: &dyn StepCost,
    policy: Box<dyn engine::core::scheduling_policy::SchedulingPolicy>,
) -> anyhow::Result<()> {
    let mut engine = build_engine(args, policy)?;
    let spec = workload_spec(args, engine.model_config().vocab_size)?;
    let requests = spec.generate()?;
    let real = run_engine(&mut engine, &requests)?;
    let config = SimConfig {
        engine: engine.config,
        num_kv_blocks: engine.num_kv_blocks,
        num_swap_blocks: engine.scheduler.swap_space.num_free_blocks(),
        max_model_len: engine.max_model_len,
        policy: args.scheduling_policy.clone(),
        tenant_weights: args.tenant_weights.clone(),
    };
    let mut trace = Vec::new();
    let sim = simulate_continuous(&config, &requests, cost, Some(&mut trace))?;
    let same_batches = trace == real.batches();
    let rel = |s: f64, r: f64| (s - r) / r;
    let per_request = |f: fn(&engine::simulator::metrics::RequestTimes) -> Option<f64>| {
        let errs: Vec<f64> = (sim.request_times.iter().zip(&real.report.request_times))
            .filter_map(|(s, r)| Some(rel(f(s)? - s.arrival_s, f(r)? - r.arrival_s).abs()))
            .collect();
        errs.iter().sum::<f64>() / errs.len().max(1) as f64
    };
    let latency_err = per_request(|t| t.finish_s);
    let ttft_err = per_request(|t| t.first_token_s);
    let samples: Vec<_> = real.steps.iter().map(|s| (s.shape, s.seconds)).collect();
    let step_err = step_error(cost, &samples);
    let total_err = rel(sim.total_s, real.report.total_s);
    if args.json {
        let json = serde_json::json!({
            "workload": workload_json(args, &requests),
            "cost_model": args.cost,
            "engine": real.report,
            "simulated": sim,
            "same_batches": same_batches,
            "error": {
                "total_time": total_err,
                "mean_abs_request_latency": latency_err,
                "mean_abs_ttft": ttft_err,
                "mean_abs_step_time": step_err,
            },
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!("{}", describe_workload(args, &requests));
    println!("cost model: {} from {}", cost.name(), args.cost);
    let mut real_report = real.report.clone();
    real_report.scheme = "engine".into();
    let mut sim_report = sim.clone();
    sim_report.scheme = "simulated".into();
    print_table(&[&real_report, &sim_report]);
    println!(
        "scheduled batches: {} (engine {} steps, simulator {})",
        if same_batches {
            "identical"
        } else {
            "DIFFERENT"
        },
        real.steps.len(),
        trace.len()
    );
    println!(
        "model error: total time {:+.1}%, per-request latency mean |error| {:.1}%, TTFT mean \
         |error| {:.1}%, step time mean |error| {:.1}%",
        100.0 * total_err,
        100.0 * latency_err,
        100.0 * ttft_err,
        100.0 * step_err
    );
    Ok(())
}
