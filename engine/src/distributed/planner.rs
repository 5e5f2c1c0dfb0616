//! The parallelism planner (`lab plan`): for a model, a number of GPUs and a goal, every TP×PP
//! split the model allows, what each GPU holds and sends, an estimated decode step, and the one
//! to use with the reasons in words (`plan_reasons`).
//!
//! The estimates are a model, not a measurement: a decode step reads each GPU's weights and the
//! KV of its batch at the HBM bandwidth (or computes at the arithmetic peak, whichever is
//! slower), then pays for its all-reduces and pipeline sends on the link (latency + bytes over
//! bandwidth). Pipelines run synchronously: a step's micro-batches fill and drain the stages
//! every step, so the bubble M/(M+S−1) is paid each step (vLLM hides it by keeping S batches
//! in flight; our engine's first pipeline does not).

use serde::Serialize;

use super::comm_model::{self as comm, Link};
use super::memory_model as mem;
pub use super::plan_inputs::{Goal, Hardware, Workload};
use crate::config::ModelConfig;

/// One TP×PP split and what it costs. Byte figures are per GPU, for the stage that holds the
/// most; times are estimates (see the module's comment).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub tp: usize,
    pub pp: usize,
    /// Copies of the model the GPUs hold side by side (data parallelism).
    pub replicas: usize,
    pub layers_per_stage: Vec<usize>,
    pub weight_bytes_per_gpu: u64,
    pub kv_bytes_per_token_per_gpu: u64,
    pub activation_reserve_bytes: u64,
    pub kv_room_bytes: i64,
    pub max_kv_tokens: u64,
    /// Bytes all-reduced per token per layer (2 all-reduces of hidden × 2 bytes; 0 at TP=1).
    pub all_reduce_bytes_per_token_per_layer: u64,
    /// What each GPU sends for them in a ring: 2(TP−1)/TP of it.
    pub ring_bytes_per_token_per_layer: f64,
    /// Bytes one pipeline boundary carries per token (0 at PP=1).
    pub p2p_bytes_per_token: u64,
    /// A TP group spans more than one node (its all-reduces go over the network).
    pub tp_crosses_nodes: bool,
    /// Estimated batch-1 decode step (seconds) and its communication share.
    pub latency_s: f64,
    pub latency_comm_share: f64,
    /// Sequences per replica at the throughput estimate: as many as the KV room holds, at most
    /// `max_seqs`; the micro-batches they are split into, and the pipeline's efficiency then.
    pub batch: usize,
    pub micro_batches: usize,
    pub bubble_efficiency: f64,
    pub throughput_step_s: f64,
    pub throughput_tokens_per_s: f64,
    /// Why this split cannot run, if it cannot.
    pub problem: Option<String>,
}

/// Every candidate, the one recommended, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub goal: Goal,
    pub candidates: Vec<Candidate>,
    /// Index into `candidates`.
    pub recommended: usize,
    pub reasons: Vec<String>,
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("no TP size up to {gpus} GPUs splits this model: {why}")]
    NoTpSplit { gpus: usize, why: String },
    #[error("the model does not fit: {0}")]
    DoesNotFit(String),
}

/// A decode stage's seconds for `tokens` sequences of `context` tokens: weights and KV read
/// (or the matmuls, if slower), the stage's all-reduces, and the send to the next stage.
fn stage_seconds(
    c: &ModelConfig,
    hw: &Hardware,
    links: (&Link, &Link),
    (tp, pp, layers): (usize, usize, usize),
    (weights, kv_per_token): (u64, u64),
    (tokens, context): (usize, usize),
) -> (f64, f64) {
    let bytes = weights as f64 + (tokens * context) as f64 * kv_per_token as f64;
    // Two FLOPs (multiply, add) per weight per token; attention's own FLOPs are left out.
    let flops = 2.0 * (weights / mem::BF16_BYTES) as f64 * tokens as f64;
    let work = comm::roofline_time(bytes, flops, hw.hbm_bytes_per_s, hw.flops_per_s);
    let mut talk = 0.0;
    if tp > 1 {
        let traffic = comm::ring_traffic_per_gpu(comm::all_reduce_bytes(tokens, c.hidden_size), tp);
        let n = (layers * comm::ALL_REDUCES_PER_LAYER) as f64;
        talk += n * comm::transfer_time(links.0, traffic);
    }
    if pp > 1 {
        let bytes = comm::p2p_bytes_per_token(c.hidden_size) * tokens as u64;
        talk += comm::transfer_time(links.1, bytes as f64);
    }
    (work + talk, talk)
}

/// Evaluates one split; `None` when the model cannot be cut this way (see
/// [`mem::tp_split_error`]; PP at most the layer count).
pub fn evaluate(
    c: &ModelConfig,
    hw: &Hardware,
    w: &Workload,
    tp: usize,
    pp: usize,
) -> Option<Candidate> {
    if mem::tp_split_error(c, tp).is_some() || pp == 0 || pp > c.num_hidden_layers {
        return None;
    }
    let stages = mem::layers_per_stage(c.num_hidden_layers, pp);
    let per_stage: Vec<(u64, u64)> = (mem::stage_weight_bytes_per_gpu(c, tp, pp).into_iter())
        .zip(mem::stage_kv_bytes_per_token_per_gpu(c, tp, pp))
        .collect();
    let reserve = mem::activation_reserve_bytes(c, tp, w.max_batched_tokens, w.max_seqs);
    let room = |weights| mem::kv_room_bytes(hw.gpu_memory_bytes, w.utilization, weights, reserve);
    let kv_room = per_stage.iter().map(|&(wb, _)| room(wb)).min().unwrap();
    let (memory, utilization) = (hw.gpu_memory_bytes, w.utilization);
    let max_kv_tokens = mem::kv_tokens_per_gpu(c, tp, pp, memory, utilization, reserve);

    let node_link = hw.interconnect.link();
    let network = comm::network_link();
    let tp_crosses_nodes = tp > hw.gpus_per_node;
    let tp_link = if tp_crosses_nodes {
        &network
    } else {
        &node_link
    };
    let pp_link = if tp * pp > hw.gpus_per_node {
        &network
    } else {
        &node_link
    };
    // The slowest stage sets the pace of the pipeline.
    let step = |tokens: usize| {
        (stages.iter().zip(&per_stage))
            .map(|(&l, &wk)| {
                stage_seconds(
                    c,
                    hw,
                    (tp_link, pp_link),
                    (tp, pp, l),
                    wk,
                    (tokens, w.context_tokens),
                )
            })
            .fold((0.0, 0.0), |a: (f64, f64), b| if b.0 > a.0 { b } else { a })
    };
    let (stage1, talk1) = step(1);
    let latency_s = comm::pipeline_time(1, pp, stage1);

    let batch = (max_kv_tokens / w.context_tokens as u64).min(w.max_seqs as u64) as usize;
    let micro_batches = if pp == 1 {
        1
    } else {
        w.micro_batches.min(batch).max(1)
    };
    let (stage_b, _) = step(batch.div_ceil(micro_batches).max(1));
    let throughput_step_s = comm::pipeline_time(micro_batches, pp, stage_b);
    let replicas = hw.gpus / (tp * pp);

    let layer_bytes = comm::all_reduce_bytes(1, c.hidden_size) * comm::ALL_REDUCES_PER_LAYER as u64;
    let all_reduce = if tp > 1 { layer_bytes } else { 0 };
    let heaviest = per_stage.iter().max_by_key(|p| p.0).unwrap();
    // The same test as `mem::fits`, split by cause for the message.
    let problem = if kv_room <= 0 {
        let need = (heaviest.0 + reserve) as f64 / 1e9;
        let usable = hw.gpu_memory_bytes as f64 * w.utilization / 1e9;
        Some(format!(
            "weights and activations need {need:.1} GB per GPU, {usable:.1} GB usable"
        ))
    } else if batch == 0 {
        let ctx = w.context_tokens;
        Some(format!(
            "KV room for {max_kv_tokens} tokens, less than one sequence of {ctx}"
        ))
    } else {
        None
    };
    Some(Candidate {
        tp,
        pp,
        replicas,
        layers_per_stage: stages,
        weight_bytes_per_gpu: heaviest.0,
        kv_bytes_per_token_per_gpu: per_stage.iter().map(|p| p.1).max().unwrap(),
        activation_reserve_bytes: reserve,
        kv_room_bytes: kv_room,
        max_kv_tokens,
        all_reduce_bytes_per_token_per_layer: all_reduce,
        ring_bytes_per_token_per_layer: comm::ring_traffic_per_gpu(all_reduce, tp),
        p2p_bytes_per_token: if pp > 1 {
            comm::p2p_bytes_per_token(c.hidden_size)
        } else {
            0
        },
        tp_crosses_nodes,
        latency_s,
        latency_comm_share: talk1 / stage1,
        batch,
        micro_batches,
        bubble_efficiency: comm::bubble_efficiency(micro_batches, pp),
        throughput_step_s,
        throughput_tokens_per_s: if batch == 0 {
            0.0
        } else {
            (replicas * batch) as f64 / throughput_step_s
        },
        problem,
    })
}

/// Every split the model allows with TP·PP ≤ GPUs, in order of TP then PP.
pub fn candidates(c: &ModelConfig, hw: &Hardware, w: &Workload) -> Vec<Candidate> {
    let mut all = Vec::new();
    for tp in 1..=hw.gpus {
        for pp in 1..=hw.gpus / tp {
            all.extend(evaluate(c, hw, w, tp, pp));
        }
    }
    all
}

/// Plans `c` on `hw` for `goal`: every candidate, the best that runs, and the reasons.
pub fn plan(c: &ModelConfig, hw: &Hardware, w: &Workload, goal: Goal) -> Result<Plan, PlanError> {
    check_inputs(hw, w)?;
    let candidates = candidates(c, hw, w);
    if candidates.is_empty() {
        let why = mem::tp_split_error(c, 1).unwrap_or_default();
        return Err(PlanError::NoTpSplit { gpus: hw.gpus, why });
    }
    let Some(recommended) = super::plan_reasons::choose(&candidates, goal) else {
        return Err(PlanError::DoesNotFit(super::plan_reasons::closest_miss(
            &candidates,
            hw,
        )));
    };
    let reasons = super::plan_reasons::explain(c, hw, w, goal, &candidates, recommended);
    Ok(Plan {
        goal,
        candidates,
        recommended,
        reasons,
    })
}

fn check_inputs(hw: &Hardware, w: &Workload) -> Result<(), PlanError> {
    let bad = |m: &str| Err(PlanError::InvalidArgument(m.to_string()));
    if hw.gpus == 0 {
        return bad("--gpus must be at least 1");
    }
    if hw.gpu_memory_bytes == 0 {
        return bad("--gpu-memory must be a positive number of GB");
    }
    if !(w.utilization > 0.0 && w.utilization <= 1.0) {
        return bad("--gpu-memory-utilization must be in (0, 1]");
    }
    if w.context_tokens == 0 || w.micro_batches == 0 || w.max_seqs == 0 {
        return bad("--context, --micro-batches and --max-num-seqs must be at least 1");
    }
    if hw.gpus_per_node == 0 || !(hw.hbm_bytes_per_s > 0.0 && hw.flops_per_s > 0.0) {
        return bad("GPUs per node, HBM bandwidth and FLOP rate must be positive");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
