//! Runs [`decode_window`] `--runs` times after a warm-up and prints the medians: a step's wall
//! and device time, tokens/s, and with several ranks each rank's collectives per step beside
//! the closed form (and one JSON line with `--json`).

use engine::distributed::CommStats;
use engine::tracer::SpanTotals;
use engine::LLMEngine;

use super::{
    all_reduce, all_reduce_values, check_batch_size, decode_window, predicted_all_reduce_bytes,
    prompts, step_floor_ms, Window,
};
use crate::bench::roofline;
use crate::decode_b1::{DECODE_STEPS, PROMPT_LEN};
use crate::nano_vllm::percentile;
use crate::ModelArgs;

/// What the time columns are measured with, for the output to say so.
const CLOCKS: &str = "step time: host wall clock around the steps; collective time: wall time \
     inside the host communicator's calls, waiting for peers included; for calls on NCCL, \
     device time between CUDA events around each call";

/// The spans `--host-spans` sums: the engine's step (scheduling, the executor, the outputs),
/// the hand-off to the ranks and the wait for them, and in each rank its step, rebuilding it
/// from the delta, laying out its inputs, its metadata upload, the graph launch and the wait
/// for its sampled ids.
const HOST_SPANS: &[&str] = &[
    "schedule",
    "execute_model",
    "update_from_output",
    "hand_off",
    "wait_for_ranks",
    "worker_step",
    "decode_step_delta",
    "prepare_inputs",
    "prepare_step",
    "cuda_graph_replay",
    "copy_sampled_ids",
    "wait_for_output",
    "sync_output",
];

/// Loads the model, checks `batch`, runs the windows and prints the report.
pub fn run(
    model: &ModelArgs,
    batch: usize,
    runs: usize,
    json: bool,
    host_spans: bool,
) -> anyhow::Result<()> {
    // Steps one at a time unless asked: this report compares a step across layouts (TP 1
    // against TP 2), and with several ranks steps are never scheduled ahead.
    let mut config = model.stepwise_engine_config();
    // Checked before the model loads: a bad flag fails at once.
    check_batch_size(batch, config.scheduler.max_num_seqs)?;
    // Every run repeats the same prompts: with prefix caching a later run's prefill would reuse
    // an earlier run's KV. Only the decode steps are timed, but they should be the same steps
    // in every run.
    config.cache.enable_prefix_caching = false;
    // All N prompts prefill in one step, so that all N reach their first token together and
    // then decode together (with chunked prefill the first ones would be steps ahead).
    let budget = &mut config.scheduler.max_num_batched_tokens;
    *budget = (*budget).max(batch * PROMPT_LEN);
    // On a GPU its copy bandwidth, measured in this run before the engine takes the memory:
    // the step's floor is against it (one GPU's: a group's GPUs are one model). The kernels'
    // pool first, on this thread, before anything uses rayon (`load` asks again: a no-op).
    let device = config.device.resolve()?;
    model.set_threads()?;
    let ceilings = roofline::measure(device)?;
    // Listening before the engine starts, so that its ranks' threads report too.
    let spans = host_spans.then(|| SpanTotals::new(HOST_SPANS));
    if let Some(s) = &spans {
        tracing::subscriber::set_global_default(s.clone())
            .map_err(|e| anyhow::anyhow!("--host-spans: cannot listen to the spans: {e}"))?;
    }
    let mut engine = LLMEngine::new(model.load()?, config)?;
    let c = engine.model_config().clone();
    let (tp, pp) = (model.tensor_parallel_size, model.pipeline_parallel_size);
    eprintln!(
        "model {} ({} layers, hidden {}, vocab {}), tp {tp} × pp {pp} on {}, {} KV blocks of {}; \
         prefix caching off, token budget {} a step",
        model.model,
        c.num_hidden_layers,
        c.hidden_size,
        c.vocab_size,
        engine.config.device,
        engine.num_kv_blocks,
        engine.config.cache.block_size,
        engine.config.scheduler.max_num_batched_tokens,
    );

    let prompts = prompts(batch, c.vocab_size);
    decode_window(&mut engine, &prompts)?; // warm-up: page in weights, grow allocations
    if let Some(s) = &spans {
        s.reset(); // only the timed windows' steps
    }
    let windows = (0..runs.max(1))
        .map(|_| decode_window(&mut engine, &prompts))
        .collect::<anyhow::Result<Vec<Window>>>()?;
    let per_step = |seconds: f64| 1e3 * seconds / DECODE_STEPS as f64;
    let median = |v: Vec<f64>| percentile(&v, 50.0);
    let ms = median(windows.iter().map(|w| per_step(w.wall_s)).collect());
    let device: Vec<f64> = windows
        .iter()
        .filter_map(|w| w.device_s.map(per_step))
        .collect();
    let device_ms = (!device.is_empty()).then(|| median(device));

    println!(
        "decode at batch {batch} (tp {tp}, pp {pp}): {ms:.3} ms/step wall, {:.1} tokens/s \
         (median of {}; {DECODE_STEPS} steps, each decoding all {batch} requests, after \
         {PROMPT_LEN}-token prompts)",
        batch as f64 / (ms * 1e-3),
        windows.len(),
    );
    let mut report = serde_json::json!({
        "engine": "inference-lab",
        "workload": "decode",
        "model": model.model,
        "device": engine.config.device.to_string(),
        "async_scheduling": engine.config.async_scheduling,
        "batch_size": batch,
        "tp": tp,
        "pp": pp,
        "prompt_len": PROMPT_LEN,
        "decode_steps": DECODE_STEPS,
        "runs": windows.len(),
        "ms_per_step": ms,
        "tokens_per_s": batch as f64 / (ms * 1e-3),
    });
    if let Some(device) = device_ms {
        println!("  of which the device: {device:.3} ms/step (first kernel to sampled ids)");
        report["device_ms_per_step"] = device.into();
    }
    if let (Some(g), 1) = (&ceilings, pp) {
        let floor = step_floor_ms(&c, tp, batch, g.copy_gb_s);
        let of = |t: f64| format!("{:.0}%", 100.0 * floor / t);
        println!(
            "  floor: {floor:.3} ms/step (the weights and KV a rank reads, at this run's copy \
             bandwidth of {:.0} GB/s): {} of the wall time, {} of the device time",
            g.copy_gb_s,
            of(ms),
            device_ms.map_or("n/a".into(), of),
        );
        report["ceilings"] = roofline::json(g);
        report["floor_ms_per_step"] = floor.into();
    }
    let ranks = windows.last().map_or(0, |w| w.comm.len());
    if ranks > 1 {
        let (value_bytes, values) = all_reduce_values(&engine.config);
        // On NCCL a collective's time is GPU time, so its share is of the step's GPU time; and
        // a replayed CUDA graph calls nothing on the host, so nothing times its collectives.
        let nccl = value_bytes == 2;
        let untimed = engine::distributed::rank_worker::tp_cuda_graphs(&engine.config, nccl);
        let share_of = if nccl { device_ms.unwrap_or(ms) } else { ms };
        println!("  per step and rank ({CLOCKS}):");
        if untimed {
            println!(
                "  (collective times: not measured here: decode steps replay CUDA graphs, whose \
                 NCCL calls no event surrounds; with --enforce-eager every call is timed)"
            );
        }
        println!(
            "  | rank | all-reduce calls | tensor bytes | closed form | sent bytes | all-reduce \
             ms | share of step | all collectives ms | share of step |"
        );
        let mut rows = Vec::with_capacity(ranks);
        let mut differ = Vec::new();
        for rank in 0..ranks {
            let of_rank = |w: &Window| w.comm[rank].clone();
            let stats: Vec<CommStats> = windows.iter().map(of_rank).collect();
            let predicted = predicted_all_reduce_bytes(&c, (tp, pp, rank / tp), batch, value_bytes);
            let row = RankRow::new(&stats, predicted, !untimed);
            let time = |t: Option<f64>| match t {
                Some(t) => format!("{t:.3} | {:.1}%", 100.0 * t / share_of),
                None => "n/a | n/a".to_string(),
            };
            println!(
                "  | {rank} | {} | {} | {} | {} | {} | {} |",
                row.calls_per_step(),
                row.tensor_bytes_per_step(),
                row.predicted_per_step,
                row.sent_bytes_per_step(),
                time(row.all_reduce_ms),
                time(row.comm_ms),
            );
            if row.tensor_bytes != row.predicted_per_step * DECODE_STEPS as u64 {
                differ.push(rank.to_string());
            }
            rows.push(row.json(rank, share_of));
        }
        println!(
            "  closed form: per layer 2 all-reduces (after o_proj and down_proj), and 1 after the \
             embedding on the first stage, each of {batch} rows × {} hidden × {value_bytes} bytes \
             ({values}); the LM head's logits are all-gathered, in \"all collectives\" only",
            c.hidden_size
        );
        match differ.is_empty() {
            true => println!("  all-reduce tensor bytes: measured = closed form on every rank"),
            false => println!(
                "  all-reduce tensor bytes: measured differs from the closed form on rank(s) {}",
                differ.join(", ")
            ),
        }
        report["all_reduce_value_bytes"] = value_bytes.into();
        report["all_reduce_matches_closed_form"] = differ.is_empty().into();
        let split = host_split(&windows, ms, device_ms);
        for (row, times) in rows.iter_mut().zip(&split.ranks) {
            row["step_ms_per_step"] = times.0.into();
            row["outside_ms_per_step"] = times.1.into();
        }
        report["engine_ms_per_step"] = split.engine_ms.into();
        report["ranks"] = rows.into();
    }
    if let Some(s) = &spans {
        // Each window's one prefill step is in the sums too: 1 call in DECODE_STEPS + 1.
        println!(
            "  host time by span and thread, µs per call (a call per step; each window's \
             prefill step included):"
        );
        let mut by_span = serde_json::Map::new();
        for ((name, thread), t) in s.totals() {
            let us = t.total.as_secs_f64() * 1e6 / t.count.max(1) as f64;
            println!("    {name:<20} {thread:<16} {us:>9.1}  ({} calls)", t.count);
            by_span.insert(format!("{name}@{thread}"), us.into());
        }
        report["host_spans_us_per_call"] = by_span.into();
    }
    if json {
        println!("{report}");
    }
    Ok(())
}

/// Where a step's wall time goes besides the device, per step (medians over the windows): each
/// rank's own part of the step (preparing it, running it: on a GPU launching it and waiting
/// for the device, reading the sampled ids back), the time outside it while the executor
/// waited (the hand-off both ways, and waiting for the other ranks), and the engine's own
/// time around the executor (scheduling, the outputs).
struct HostSplit {
    /// (its part, outside it), ms per step, in world-rank order.
    ranks: Vec<(f64, f64)>,
    /// The step's wall time less the executor's (busy + outside of rank 0), ms per step.
    engine_ms: f64,
}

/// [`HostSplit`] from the windows' rank times, printed as a table; `ms` and `device_ms` are
/// the step's median wall and device times.
fn host_split(windows: &[Window], ms: f64, device_ms: Option<f64>) -> HostSplit {
    let ranks = windows.last().map_or(0, |w| w.ranks.len());
    let per_step = |f: &dyn Fn(&Window) -> f64| {
        let v: Vec<f64> = windows.iter().map(f).collect();
        1e3 * percentile(&v, 50.0) / DECODE_STEPS as f64
    };
    let times: Vec<(f64, f64)> = (0..ranks)
        .map(|r| {
            (
                per_step(&|w| w.ranks[r].busy.as_secs_f64()),
                per_step(&|w| w.ranks[r].idle.as_secs_f64()),
            )
        })
        .collect();
    let executor = times.first().map_or(0.0, |(busy, idle)| busy + idle);
    // Never below zero unless the ranks' clocks miscount: the executor runs inside the step.
    let engine_ms = ms - executor;
    println!(
        "  where a step's wall time goes, ms per step (host clocks; the device's part is \
         rank 0's, {}):",
        device_ms.map_or("not measured here".into(), |d| format!("{d:.3}"))
    );
    println!(
        "  | rank | its part of the step (preparing it, running it, reading the ids back) | \
         outside it (hand-off both ways, waiting for the other ranks) |"
    );
    for (r, (busy, idle)) in times.iter().enumerate() {
        println!("  | {r} | {busy:.3} | {idle:.3} |");
    }
    println!("  the engine around the executor (scheduling, outputs): {engine_ms:.3}");
    HostSplit {
        ranks: times,
        engine_ms,
    }
}

/// One rank's collectives over the timed windows: counts from the last window (every window
/// makes the same calls), times as medians over the windows.
struct RankRow {
    /// All-reduce totals over the last window.
    calls: u64,
    tensor_bytes: u64,
    sent_bytes: u64,
    /// The closed form for one step.
    predicted_per_step: u64,
    /// Median times per step; `None` where nothing timed the calls (CUDA graphs on NCCL).
    all_reduce_ms: Option<f64>,
    comm_ms: Option<f64>,
}

impl RankRow {
    fn new(windows: &[CommStats], predicted_per_step: u64, timed: bool) -> Self {
        let last = windows.last().map(all_reduce).copied().unwrap_or_default();
        let ms_per_step = |f: &dyn Fn(&CommStats) -> std::time::Duration| {
            let v: Vec<f64> = windows.iter().map(|s| f(s).as_secs_f64()).collect();
            1e3 * percentile(&v, 50.0) / DECODE_STEPS as f64
        };
        RankRow {
            calls: last.calls,
            tensor_bytes: last.tensor_bytes,
            sent_bytes: last.sent_bytes,
            predicted_per_step,
            all_reduce_ms: timed.then(|| ms_per_step(&|s| all_reduce(s).time)),
            comm_ms: timed.then(|| ms_per_step(&|s| s.total().time)),
        }
    }

    fn calls_per_step(&self) -> f64 {
        self.calls as f64 / DECODE_STEPS as f64
    }

    fn tensor_bytes_per_step(&self) -> f64 {
        self.tensor_bytes as f64 / DECODE_STEPS as f64
    }

    fn sent_bytes_per_step(&self) -> f64 {
        self.sent_bytes as f64 / DECODE_STEPS as f64
    }

    /// The row as JSON; `step_ms` is the median step's time the shares are of.
    fn json(&self, rank: usize, step_ms: f64) -> serde_json::Value {
        serde_json::json!({
            "rank": rank,
            "all_reduce_calls": self.calls,
            "all_reduce_tensor_bytes": self.tensor_bytes,
            "all_reduce_sent_bytes": self.sent_bytes,
            "all_reduce_calls_per_step": self.calls_per_step(),
            "all_reduce_tensor_bytes_per_step": self.tensor_bytes_per_step(),
            "predicted_all_reduce_tensor_bytes_per_step": self.predicted_per_step,
            "all_reduce_sent_bytes_per_step": self.sent_bytes_per_step(),
            "all_reduce_ms_per_step": self.all_reduce_ms,
            "all_reduce_share": self.all_reduce_ms.map(|t| t / step_ms),
            "comm_ms_per_step": self.comm_ms,
            "comm_share": self.comm_ms.map(|t| t / step_ms),
        })
    }
}
