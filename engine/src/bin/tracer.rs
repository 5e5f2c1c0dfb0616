//! `tracer`: one request through the engine, traced from the inside.
//!
//! Runs the engine with [`engine::tracer::SpanRecorder`] listening to its spans (every step's
//! scheduling and forward pass, every op, every collective, on every rank's thread), then
//! prints a timeline of the steps and a table of where the time went, and writes a Chrome
//! trace that Perfetto (<https://ui.perfetto.dev>) opens.
//!
//! ```sh
//! cargo run --release --bin tracer -- --model smollm2 --prompt "The capital of France is" \
//!     --max-tokens 16 --tp 3 --trace-out trace.json
//! ```

use std::process::ExitCode;

use clap::Parser;
use engine::config::Device;
use engine::model_source::{load_model, ModelSpec};
use engine::tracer::report::{ms, request_rows, step_rows};
use engine::tracer::{
    bottlenecks, chrome_trace, device_bottlenecks, html_timeline, measure_overhead,
    measured_all_reduce, parse_workload, predicted_all_reduce, predicted_all_reduce_one_shot,
    run_workload, Component, RecordedSpan, SpanRecorder, WorkloadRequest,
};
use engine::{EngineConfig, Prompt, SamplingParams, LLM};

#[derive(Parser)]
#[command(
    about = "Trace one request through the engine: steps, ops, collectives; a Chrome trace for Perfetto"
)]
struct Args {
    /// `tiny` (built in, random weights), `smollm2` (fetched on first use), or a Hugging Face
    /// model directory.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// Ignore the directory's weights; draw random ones of the config's shape.
    #[arg(long)]
    random_weights: bool,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Tensor-parallel ranks.
    #[arg(long, default_value_t = 1)]
    tp: usize,
    /// Pipeline stages.
    #[arg(long, default_value_t = 1)]
    pp: usize,
    #[arg(long, default_value = "The capital of France is")]
    prompt: String,
    #[arg(long, default_value_t = 8)]
    max_tokens: usize,
    /// Where to write the Chrome trace (JSON).
    #[arg(long, default_value = "trace.json")]
    trace_out: std::path::PathBuf,
    /// Also write the trace as a self-contained HTML page: a swimlane per thread, the tables.
    #[arg(long)]
    html: Option<std::path::PathBuf>,
    /// A batch of requests instead of `--prompt`: `N,PROMPT,OUTPUT[,EVERY]` (N requests of
    /// PROMPT tokens making OUTPUT tokens, one arriving every EVERY steps) or a JSONL file of
    /// `{"prompt"|"prompt_tokens", "max_tokens", "arrival_step"}` lines.
    #[arg(long)]
    workload: Option<String>,
    /// Measure what tracing costs instead: the workload RUNS times with tracing off and on
    /// (one rank only), medians printed. A benchmark: build with --release.
    #[arg(long, value_name = "RUNS")]
    overhead: Option<usize>,
    /// Threads of the CPU's kernels (default: one per CPU this process may run on; the
    /// RAYON_NUM_THREADS environment variable sets the default too), as `lab --threads`.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.threads != Some(0), "--threads must be at least 1");
    // This thread steps the engine: with one rank it is one of the pool's workers.
    engine::backend::cpu_thread_pool::build_global(args.threads, args.tp * args.pp == 1)?;
    let workload = match &args.workload {
        Some(spec) => Some(parse_workload(spec).map_err(anyhow::Error::msg)?),
        None => None,
    };
    if let Some(runs) = args.overhead {
        return overhead(&args, workload, runs);
    }
    let recorder = SpanRecorder::default();
    tracing::subscriber::set_global_default(recorder.clone())?;
    let model = load_model(&ModelSpec::parse(&args.model), args.random_weights, 0)?;
    let mut config = EngineConfig {
        device: args.device,
        // One step at a time, each from its schedule to its update, as the timeline and the
        // book's request journey read them (on a GPU `lab` schedules one step ahead).
        async_scheduling: Some(false),
        ..EngineConfig::default()
    };
    config.parallel.tensor_parallel_size = args.tp;
    config.parallel.pipeline_parallel_size = args.pp;
    let mut llm = LLM::new(model, config)?;
    let (loaded, _) = recorder.spans();
    match &workload {
        Some(w) => {
            let out = run_workload(&mut llm.engine, w)?;
            let tokens: usize = out.iter().map(|o| o.token_ids.len()).sum();
            println!("{} requests, {tokens} output tokens\n", out.len());
        }
        None => {
            let out = llm.generate(&[&args.prompt], &SamplingParams::greedy(args.max_tokens))?;
            println!("prompt: {:?}\noutput: {:?}\n", args.prompt, out[0].text);
        }
    }
    // The requests' part of the run: what came after loading.
    let (run, threads) = recorder.spans_since(loaded.len());
    let run = &run[..];
    print_timeline(run);
    if workload.is_some() {
        print_requests(run);
    }
    print_bottlenecks(run);
    let comm = llm.engine.comm_stats();
    if args.tp > 1 && args.pp == 1 {
        print_comm_check(run, &llm, &comm[0], args.tp);
    }
    if args.pp > 1 {
        print_pipeline(&llm);
    }
    if !comm.is_empty() {
        println!("\ncollectives (bytes each rank's communicator counted):");
        for (rank, s) in comm.iter().enumerate() {
            let t = s.total();
            println!(
                "  rank {rank}: {} calls, {} bytes in tensors, {} bytes sent, {:.3} ms",
                t.calls,
                t.tensor_bytes,
                t.sent_bytes,
                t.time.as_secs_f64() * 1e3
            );
        }
    }
    let trace = chrome_trace(run, &threads);
    std::fs::write(&args.trace_out, serde_json::to_vec(&trace)?)?;
    println!(
        "\nChrome trace: {} ({} spans; open it in https://ui.perfetto.dev)",
        args.trace_out.display(),
        run.len()
    );
    if let Some(path) = &args.html {
        let title = format!(
            "tracer: {} on {}, TP={} PP={}",
            args.model, llm.engine.config.device, args.tp, args.pp
        );
        std::fs::write(path, html_timeline(run, &threads, &title))?;
        println!("HTML timeline: {} (opens offline)", path.display());
    }
    if args.model == "tiny" {
        println!(
            "\nThis was the built-in tiny model (random weights). The real one, fetched once:\n  \
             cargo run --release --bin tracer -- --model smollm2 --tp 3 --html trace.html"
        );
    }
    Ok(())
}

/// One line per request: when it joined, the steps it was first scheduled and finished in.
fn print_requests(spans: &[RecordedSpan]) {
    println!(
        "\n| request | added at ms | first step | finished in step | finished at ms | tokens |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let opt = |d: Option<std::time::Duration>| d.map(ms).unwrap_or_default();
    for r in request_rows(spans) {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.request,
            opt(r.added_at),
            r.first_step.unwrap_or_default(),
            r.finished_step.unwrap_or_default(),
            opt(r.finished_at),
            r.output_tokens
        );
    }
}

/// `--overhead RUNS`: the workload (or the prompt) with tracing off and on, on one rank.
fn overhead(
    args: &Args,
    workload: Option<Vec<WorkloadRequest>>,
    runs: usize,
) -> anyhow::Result<()> {
    if args.tp != 1 || args.pp != 1 {
        anyhow::bail!("--overhead runs on one rank (the ranks' threads would need a global subscriber): drop --tp/--pp");
    }
    let model = load_model(&ModelSpec::parse(&args.model), args.random_weights, 0)?;
    let config = EngineConfig {
        device: args.device,
        async_scheduling: Some(false), // as the traced run above
        ..EngineConfig::default()
    };
    let mut llm = LLM::new(model, config)?;
    let requests = workload.unwrap_or_else(|| {
        vec![WorkloadRequest {
            prompt: Prompt::Text(args.prompt.clone()),
            max_tokens: args.max_tokens,
            arrival_step: 0,
        }]
    });
    let o = measure_overhead(&mut llm.engine, &requests, runs)?;
    println!(
        "tracing overhead: {} on {}, {} request(s), median of {} runs each way",
        args.model,
        llm.engine.config.device,
        requests.len(),
        o.runs
    );
    println!("| tracing | ms per run | vs off |");
    println!("| --- | ---: | ---: |");
    println!("| off (no subscriber) | {} | |", ms(o.off));
    println!(
        "| on (every span recorded) | {} | {:+.1}% |",
        ms(o.on),
        o.on_cost() * 100.0
    );
    println!(
        "\n{} spans a run; a span site with tracing off costs {:.1} ns, {:.4}% of the untraced run",
        o.spans_per_run,
        o.disabled_span_ns,
        o.off_cost() * 100.0
    );
    Ok(())
}

/// One line per step: its scheduling, its forward pass (with the batch), in milliseconds.
fn print_timeline(spans: &[RecordedSpan]) {
    println!("| step | at ms | schedule ms | execute ms | seqs | tokens | prefill | decode |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in step_rows(spans) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.step,
            ms(r.at),
            ms(r.schedule),
            ms(r.execute),
            r.seqs,
            r.tokens,
            r.prefill_tokens,
            r.decode_tokens
        );
    }
}

fn print_bottlenecks(spans: &[RecordedSpan]) {
    println!("\nwhere the time went (own time of each component, all threads):");
    print_components("component", &bottlenecks(spans));
    let gpu = device_bottlenecks(spans);
    if !gpu.is_empty() {
        println!(
            "\nthe GPU's time by op (CUDA events around each op; steps ran without CUDA graphs):"
        );
        print_components("op", &gpu);
    }
}

/// The 15 largest rows of a bottleneck table.
fn print_components(what: &str, rows: &[Component]) {
    println!("| {what} | calls | ms | share |");
    println!("| --- | ---: | ---: | ---: |");
    for c in rows.iter().take(15) {
        println!(
            "| {} | {} | {:.3} | {:.1}% |",
            c.name,
            c.calls,
            c.self_time.as_secs_f64() * 1e3,
            c.share * 100.0
        );
    }
}

/// The all-reduce traffic the course's formulas give for the steps that ran, beside rank 0's
/// counters.
fn print_comm_check(
    spans: &[RecordedSpan],
    llm: &LLM,
    rank0: &engine::distributed::CommStats,
    tp: usize,
) {
    let tokens: Vec<usize> = spans
        .iter()
        .filter(|s| s.name == "execute_model")
        .filter_map(|s| s.fields.get("tokens")?.parse().ok())
        .collect();
    let c = llm.engine.model_config();
    // The GPUs sum bf16 values (2 bytes: NCCL, or the custom all-reduce); the CPU
    // communicator sums f32 (4 bytes), the CPU engine's and the host path's.
    use engine::distributed::rank_devices::{all_reduce_backend, AllReduceBackend};
    let backend = all_reduce_backend(&llm.engine.config);
    let value_bytes = backend.value_bytes();
    let (layers, hidden) = (c.num_hidden_layers, c.hidden_size);
    // The custom all-reduce sends (N−1)× a tensor up to its buffers' capacity, the ring 2(N−1)/N.
    let (p, how) = match backend {
        AllReduceBackend::Custom => {
            let cap = engine::backend::cuda_tensor_parallel::CUSTOM_ALL_REDUCE_CAPACITY;
            let p = predicted_all_reduce_one_shot(&tokens, layers, hidden, value_bytes, tp, cap);
            (p, "one-shot (N−1) up to its buffers, ring 2(N−1)/N beyond")
        }
        _ => (
            predicted_all_reduce(&tokens, layers, hidden, value_bytes, tp),
            "ring 2(N−1)/N",
        ),
    };
    let m = measured_all_reduce(rank0);
    println!(
        "
all-reduce traffic of rank 0: the formulas against the counters"
    );
    println!("| | calls | tensor bytes | bytes sent |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| predicted: (1 + 2 × layers) per step, tokens × hidden each, {how} | {} | {} | {:.0} |",
        p.calls, p.tensor_bytes, p.sent_bytes
    );
    println!(
        "| measured | {} | {} | {:.0} |",
        m.calls, m.tensor_bytes, m.sent_bytes
    );
    let equal = (p.calls, p.tensor_bytes) == (m.calls, m.tensor_bytes);
    println!(
        "all-reduce calls and tensor bytes: {}",
        match equal {
            true => "measured = predicted",
            false => "measured differs from predicted",
        }
    );
}

/// Each stage's busy and idle time over the run, against the bubble the formula predicts for
/// the micro-batches the last step had.
fn print_pipeline(llm: &LLM) {
    use engine::distributed::pipeline_schedule::pipeline_efficiency;
    let Some(schedule) = llm.engine.pipeline_schedule() else {
        return;
    };
    let (m, st) = (schedule.num_micro_batches, schedule.num_stages);
    println!("\npipeline: {st} stages, {m} micro-batch(es) in the last step");
    println!(
        "  predicted efficiency M/(M+S-1) = {:.3}; the last step's schedule, in ticks: {:.3}",
        pipeline_efficiency(m, st),
        1.0 - schedule.bubble().fraction()
    );
    println!("| stage rank | busy ms | waiting for the previous stage ms | idle share |");
    println!("| ---: | ---: | ---: | ---: |");
    for (rank, t) in llm.engine.stage_times().iter().enumerate() {
        println!(
            "| {rank} | {:.3} | {:.3} | {:.1}% |",
            t.busy.as_secs_f64() * 1e3,
            t.recv_wait.as_secs_f64() * 1e3,
            t.idle_fraction() * 100.0
        );
    }
}
