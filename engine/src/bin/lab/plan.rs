//! `lab plan`: which TP×PP split to run a model with on a set of GPUs, and why.
//!
//! ```sh
//! lab plan --model llama-2-70b --gpus 8 --gpu-memory 141 --interconnect nvlink --goal latency
//! ```
//!
//! Prints every split the model allows (weights, KV cache and communication per GPU, estimated
//! step times) and the recommendation with its reasons; `--json` prints the same as one object.
//! The arithmetic is `engine::distributed::planner`'s.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use engine::config::ModelConfig;
use engine::distributed::comm_model::Interconnect;
use engine::distributed::plan_reasons::split;
use engine::distributed::planner::{plan, Candidate, Goal, Hardware, Plan, Workload};

/// The shapes of engine/configs, built in so that `--model llama-2-70b` works anywhere.
pub const BUILT_IN_SHAPES: &[(&str, &str)] = &[
    (
        "llama-2-7b",
        include_str!("../../../configs/llama-2-7b.json"),
    ),
    (
        "llama-2-70b",
        include_str!("../../../configs/llama-2-70b.json"),
    ),
    (
        "llama-3-8b",
        include_str!("../../../configs/llama-3-8b.json"),
    ),
    (
        "llama-3-70b",
        include_str!("../../../configs/llama-3-70b.json"),
    ),
    (
        "llama-3.2-1b",
        include_str!("../../../configs/llama-3.2-1b.json"),
    ),
    (
        "smollm2-135m",
        include_str!("../../../configs/smollm2-135m.json"),
    ),
];

#[derive(Args)]
pub struct PlanArgs {
    /// A config.json, a model directory holding one, or a shape of engine/configs (llama-2-7b,
    /// llama-2-70b, llama-3-8b, llama-3-70b, llama-3.2-1b, smollm2-135m).
    #[arg(long)]
    model: String,
    /// GPUs available.
    #[arg(long)]
    gpus: usize,
    /// Memory of each GPU in GB (10^9 bytes), e.g. 141 for an H200, 80 for an H100.
    #[arg(long)]
    gpu_memory: f64,
    /// How the GPUs of a node are linked: nvlink or pcie.
    #[arg(long)]
    interconnect: Interconnect,
    /// latency (shortest batch-1 decode step) or throughput (most tokens/s over all GPUs).
    #[arg(long)]
    goal: Goal,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Tokens of context per sequence [default: 4096, or the model's maximum if shorter].
    #[arg(long)]
    context: Option<usize>,
    /// Micro-batches a pipeline splits a step into [default: 8].
    #[arg(long)]
    micro_batches: Option<usize>,
    /// Most sequences in a step [default: the engine's].
    #[arg(long)]
    max_num_seqs: Option<usize>,
    /// Share of each GPU's memory the engine may take [default: the engine's].
    #[arg(long)]
    gpu_memory_utilization: Option<f64>,
    /// GPUs per node (one NVLink or PCIe domain) [default: 8].
    #[arg(long)]
    gpus_per_node: Option<usize>,
    /// HBM bandwidth per GPU in GB/s [default: 4210, an H200's measured copy rate].
    #[arg(long)]
    hbm_gb_s: Option<f64>,
    /// bf16 matmul rate per GPU in TFLOP/s [default: 771, measured on an H200].
    #[arg(long)]
    tflops: Option<f64>,
}

fn load_config(model: &str) -> anyhow::Result<ModelConfig> {
    if let Some((_, text)) = BUILT_IN_SHAPES.iter().find(|(name, _)| *name == model) {
        return Ok(ModelConfig::from_json(text)?);
    }
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(ModelConfig::from_dir(path)?);
    }
    let text = std::fs::read_to_string(path).with_context(|| {
        let names: Vec<_> = BUILT_IN_SHAPES.iter().map(|(n, _)| *n).collect();
        format!(
            "--model {model} is neither a config.json, a model directory nor one of: {}",
            names.join(", ")
        )
    })?;
    ModelConfig::from_json(&text).with_context(|| model.to_string())
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    if args.gpu_memory.is_nan() || args.gpu_memory <= 0.0 {
        anyhow::bail!(
            "--gpu-memory must be a positive number of GB, got {}",
            args.gpu_memory
        );
    }
    let config = load_config(&args.model)?;
    let mut hw = Hardware::new(args.gpus, args.gpu_memory, args.interconnect);
    hw.gpus_per_node = args.gpus_per_node.unwrap_or(hw.gpus_per_node);
    hw.hbm_bytes_per_s = args.hbm_gb_s.map_or(hw.hbm_bytes_per_s, |g| g * 1e9);
    hw.flops_per_s = args.tflops.map_or(hw.flops_per_s, |t| t * 1e12);
    let mut w = Workload::for_model(&config);
    w.context_tokens = args.context.unwrap_or(w.context_tokens);
    w.micro_batches = args.micro_batches.unwrap_or(w.micro_batches);
    w.max_seqs = args.max_num_seqs.unwrap_or(w.max_seqs);
    w.utilization = args.gpu_memory_utilization.unwrap_or(w.utilization);
    let p = plan(&config, &hw, &w, args.goal)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&as_json(&args, &config, &hw, &w, &p))?
        );
    } else {
        print!("{}", table(&args, &config, &hw, &p));
    }
    Ok(())
}

fn as_json(
    args: &PlanArgs,
    c: &ModelConfig,
    hw: &Hardware,
    w: &Workload,
    p: &Plan,
) -> serde_json::Value {
    let r = &p.candidates[p.recommended];
    serde_json::json!({
        "model": args.model,
        "layers": c.num_hidden_layers,
        "hidden_size": c.hidden_size,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "gpus": hw.gpus,
        "gpu_memory_bytes": hw.gpu_memory_bytes,
        "interconnect": hw.interconnect.to_string(),
        "link_source": hw.interconnect.link().source,
        "goal": p.goal,
        "context_tokens": w.context_tokens,
        "gpu_memory_utilization": w.utilization,
        "recommended": { "tp": r.tp, "pp": r.pp },
        "reasons": p.reasons,
        "candidates": p.candidates,
    })
}

fn row(c: &Candidate, chosen: bool) -> String {
    let dash = |x: f64, s: String| if x == 0.0 { "-".to_string() } else { s };
    format!(
        "{} {:>9} {:>3} {:>8.1} {:>8.1} {:>8.1} {:>10} {:>8} {:>8} {:>6} {:>6} {:>8.2} {:>5.0}% {:>5} {:>9.0}  {}\n",
        if chosen { "*" } else { " " },
        split(c),
        c.replicas,
        c.weight_bytes_per_gpu as f64 / 1e9,
        c.kv_bytes_per_token_per_gpu as f64 / 1e3,
        c.kv_room_bytes as f64 / 1e9,
        c.max_kv_tokens,
        dash(c.all_reduce_bytes_per_token_per_layer as f64, c.all_reduce_bytes_per_token_per_layer.to_string()),
        dash(c.ring_bytes_per_token_per_layer, format!("{:.0}", c.ring_bytes_per_token_per_layer)),
        dash(c.p2p_bytes_per_token as f64, c.p2p_bytes_per_token.to_string()),
        dash((c.pp - 1) as f64, format!("{:.0}%", c.bubble_efficiency * 100.0)),
        c.latency_s * 1e3,
        c.latency_comm_share * 100.0,
        c.batch,
        c.throughput_tokens_per_s,
        c.problem.as_deref().unwrap_or(""),
    )
}

fn table(args: &PlanArgs, c: &ModelConfig, hw: &Hardware, p: &Plan) -> String {
    let link = hw.interconnect.link();
    let mut out = format!(
        "{}: {} layers, hidden {}, {} heads, {} KV heads; {} GPU(s) of {} GB, {} ({:.0} GB/s, \
         {:.0} µs a collective: {}); goal: {}\n\n",
        args.model,
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        hw.gpus,
        args.gpu_memory,
        hw.interconnect,
        link.bytes_per_s / 1e9,
        link.latency_s * 1e6,
        link.source,
        p.goal
    );
    let head = |cols: [&str; 15]| {
        format!(
            "{} {:>9} {:>3} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>6} {:>8} {:>6} {:>5} {:>9}  {}\n",
            "", cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8],
            cols[9], cols[10], cols[11], cols[12], cols[13], cols[14]
        )
    };
    out += &head([
        "split",
        "DP",
        "weights",
        "KV/tok",
        "KV room",
        "KV tokens",
        "AR",
        "ring",
        "p2p",
        "bubble",
        "b=1 step",
        "comm",
        "batch",
        "tok/s",
        "",
    ]);
    out += &head([
        "", "", "GB/GPU", "kB/GPU", "GB/GPU", "", "B/tok/ly", "B/GPU", "B/tok", "", "ms", "", "",
        "", "",
    ]);
    for (i, cand) in p.candidates.iter().enumerate() {
        out += &row(cand, i == p.recommended);
    }
    let r = &p.candidates[p.recommended];
    out += &format!("\nRecommended for {}: {}\n", p.goal, split(r));
    for reason in &p.reasons {
        out += &format!("- {reason}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_of_engine_configs_is_built_in() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/configs");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect();
        files.sort();
        let mut built_in: Vec<String> =
            BUILT_IN_SHAPES.iter().map(|(n, _)| n.to_string()).collect();
        built_in.sort();
        assert_eq!(files, built_in);
        for (name, text) in BUILT_IN_SHAPES {
            ModelConfig::from_json(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
