//! What the planner is asked: the goal, the machine (GPU count, memory, links, and the rates
//! its time estimates use) and the workload (the engine's memory knobs, context, micro-batches).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::comm_model::Interconnect;
use crate::config::{EngineConfig, ModelConfig};

/// What to optimize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// The shortest decode step for one sequence (time per output token).
    Latency,
    /// The most output tokens per second over all the GPUs.
    Throughput,
}

impl FromStr for Goal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "latency" => Ok(Goal::Latency),
            "throughput" => Ok(Goal::Throughput),
            _ => Err(format!("unknown goal `{s}` (use latency or throughput)")),
        }
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if *self == Goal::Latency {
            "latency"
        } else {
            "throughput"
        })
    }
}

/// The machine. `Hardware::new` fills the per-GPU rates with the H200's, measured (gpu.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hardware {
    pub gpus: usize,
    pub gpu_memory_bytes: u64,
    pub interconnect: Interconnect,
    /// GPUs one node links with `interconnect` (8 on an HGX board); beyond, the network.
    pub gpus_per_node: usize,
    pub hbm_bytes_per_s: f64,
    pub flops_per_s: f64,
}

/// H200 device-to-device copy, 1 GiB, read + write counted: 4210 GB/s (gpu.md).
pub const H200_HBM_BYTES_PER_S: f64 = 4210e9;
/// H200 bf16 GEMM 8192³ with random data: 771 TFLOP/s (gpu.md).
pub const H200_BF16_FLOPS_PER_S: f64 = 771e12;

impl Hardware {
    /// `gpus` H200-class GPUs of `gpu_memory_gb` (10⁹ bytes) each, 8 to a node.
    pub fn new(gpus: usize, gpu_memory_gb: f64, interconnect: Interconnect) -> Self {
        Hardware {
            gpus,
            gpu_memory_bytes: (gpu_memory_gb.max(0.0) * 1e9) as u64,
            interconnect,
            gpus_per_node: 8,
            hbm_bytes_per_s: H200_HBM_BYTES_PER_S,
            flops_per_s: H200_BF16_FLOPS_PER_S,
        }
    }
}

/// What the engine serves: its memory knobs and the requests' shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// Share of each GPU's memory the engine may take.
    pub utilization: f64,
    /// Token budget of one step (sizes the activation reserve).
    pub max_batched_tokens: usize,
    /// Most sequences in one step (caps the throughput batch).
    pub max_seqs: usize,
    /// Tokens of context each sequence holds (KV it reads per step; KV room per sequence).
    pub context_tokens: usize,
    /// Micro-batches a pipeline splits a step into (with PP > 1).
    pub micro_batches: usize,
}

impl Workload {
    /// The engine's own defaults (`EngineConfig::default`), 4096 tokens of context (or the
    /// model's maximum, if shorter) and 8 micro-batches.
    pub fn for_model(c: &ModelConfig) -> Self {
        let e = EngineConfig::default();
        Workload {
            utilization: e.cache.gpu_memory_utilization as f64,
            max_batched_tokens: e.scheduler.max_num_batched_tokens,
            max_seqs: e.scheduler.max_num_seqs,
            context_tokens: c.max_position_embeddings.min(4096),
            micro_batches: 8,
        }
    }
}
