//! How long one engine step takes, as a function of the step's shape.
//!
//! A step's time is set by what it computes, not by which requests it belongs to, so a few
//! counts of the batch are enough ([`StepShape`]). Two models:
//!
//! - [`LinearCost`]: `overhead + per_token × tokens + per_sampled_seq × rows sampled +
//!   per_attention_pair × (query, key) pairs`. On a CPU each term is real work: the fixed
//!   cost of a step (scheduling, input preparation, per-layer dispatch), the projections and
//!   MLP that every token goes through, the LM head and sampler that run once per sequence
//!   that samples (a decode is one token *and* one sampled row), and attention, whose work
//!   grows with context. Its coefficients are fitted to the engine's own measured steps
//!   ([`super::calibrate`]).
//! - [`RooflineCost`]: a GPU step moves the weights once plus the context's KV and does
//!   2 FLOPs per weight per token plus attention; it takes the longer of bytes ÷ bandwidth
//!   and FLOPs ÷ GEMM rate, and never less than its launch floor (a chain of kernels each
//!   costing a few microseconds however small the batch). Built from measured ceilings, not
//!   fitted to GPU runs.

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::core::scheduler::Scheduler;
use crate::core::scheduler_output::SchedulerOutput;
use crate::distributed::memory_model::{kv_bytes_per_token_per_gpu, layer_params_per_rank};

// ANCHOR: step_shape
/// The counts of one step that its time depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StepShape {
    /// Sequences in the batch (prefill chunks and decodes).
    pub num_seqs: usize,
    /// Tokens computed: prompt chunks plus one per decode.
    pub num_tokens: usize,
    /// Of those, tokens of prompts (or of recomputes after preemption).
    pub num_prefill_tokens: usize,
    /// Sequences past their prompt computing one token.
    pub num_decode_seqs: usize,
    /// Sequences whose chunk reaches their last token, so the step samples for them.
    pub num_sampled: usize,
    /// (query, key) pairs attention scores: a chunk of `n` tokens starting at position `s`
    /// attends causally, `n·s + n(n+1)/2` pairs; a decode at position `s` has `s + 1`.
    pub attention_pairs: usize,
    /// Context tokens whose keys and values the step reads or writes: `s + n` per sequence.
    pub kv_tokens: usize,
}
// ANCHOR_END: step_shape

impl StepShape {
    /// The shape of `out`, a batch `scheduler` just built (it knows each prompt's length,
    /// which tells a decode from a prefill).
    pub fn of(out: &SchedulerOutput, scheduler: &Scheduler) -> Self {
        let mut shape = StepShape::default();
        for s in &out.scheduled {
            let (n, start) = (s.token_ids.len(), s.start_position);
            let prompt_len = scheduler
                .sequence(s.seq_id)
                .map_or(0, |q| q.prompt_token_ids.len());
            shape.num_seqs += 1;
            shape.num_tokens += n;
            if n == 1 && start >= prompt_len {
                shape.num_decode_seqs += 1;
            } else {
                shape.num_prefill_tokens += n;
            }
            shape.num_sampled += usize::from(s.needs_logits);
            shape.attention_pairs += n * start + n * (n + 1) / 2;
            shape.kv_tokens += start + n;
        }
        shape
    }
}

/// Seconds one step of a given shape takes.
pub trait StepCost {
    fn step_seconds(&self, shape: &StepShape) -> f64;
    /// What the model is, for reports.
    fn name(&self) -> String;
}

// ANCHOR: linear_cost
/// `overhead + per_token·tokens + per_sampled_seq·sampled + per_attention_pair·pairs`, in
/// seconds; saved and loaded as JSON (`lab simulate --calibrate` writes it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearCost {
    pub overhead_s: f64,
    pub per_token_s: f64,
    pub per_sampled_seq_s: f64,
    pub per_attention_pair_s: f64,
}

impl LinearCost {
    /// The model's inputs for one shape, in coefficient order.
    pub fn features(shape: &StepShape) -> [f64; 4] {
        [
            1.0,
            shape.num_tokens as f64,
            shape.num_sampled as f64,
            shape.attention_pairs as f64,
        ]
    }

    pub fn from_coefficients(c: [f64; 4]) -> Self {
        LinearCost {
            overhead_s: c[0],
            per_token_s: c[1],
            per_sampled_seq_s: c[2],
            per_attention_pair_s: c[3],
        }
    }

    pub fn coefficients(&self) -> [f64; 4] {
        [
            self.overhead_s,
            self.per_token_s,
            self.per_sampled_seq_s,
            self.per_attention_pair_s,
        ]
    }
}

impl StepCost for LinearCost {
    fn step_seconds(&self, shape: &StepShape) -> f64 {
        let x = Self::features(shape);
        self.coefficients().iter().zip(x).map(|(c, x)| c * x).sum()
    }

    fn name(&self) -> String {
        "linear (calibrated)".into()
    }
}
// ANCHOR_END: linear_cost

/// The ceilings of a GPU, measured (gpu.md) or given.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GpuCeilings {
    /// Device memory bandwidth, bytes/s (H200: 4210e9, a 1 GiB device-to-device copy).
    pub bytes_per_s: f64,
    /// Dense bf16 GEMM rate, FLOP/s (H200: 771e12, an 8192³ GEMM).
    pub flops_per_s: f64,
    /// Seconds one kernel launch costs a step however small its work.
    pub seconds_per_kernel: f64,
}

impl GpuCeilings {
    /// The H200's ceilings from gpu.md, and 4 µs a kernel: the engine's batch-1 decode of the
    /// SmolLM2-135M shape, 0.74 ms for 185 kernels (book/src/performance.md, 2026-11-28).
    pub fn h200() -> Self {
        GpuCeilings {
            bytes_per_s: crate::distributed::plan_inputs::H200_HBM_BYTES_PER_S,
            flops_per_s: crate::distributed::plan_inputs::H200_BF16_FLOPS_PER_S,
            seconds_per_kernel: 4e-6,
        }
    }
}

// ANCHOR: roofline_cost
/// A bf16 model on one GPU: `max(launch floor, bytes / bandwidth, FLOPs / GEMM rate)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RooflineCost {
    pub gpu: GpuCeilings,
    /// bf16 bytes of every weight a step reads (layers, final norm, LM head).
    pub weight_bytes: f64,
    /// Parameters each token multiplies through (the decoder layers).
    pub layer_params: f64,
    /// Parameters of the LM head, multiplied once per sampled row.
    pub lm_head_params: f64,
    /// bf16 bytes of one token's keys and values, all layers.
    pub kv_bytes_per_token: f64,
    /// FLOPs of one (query, key) pair over all layers and heads: scores and the weighted sum.
    pub flops_per_attention_pair: f64,
    /// Kernels one step launches: 6 a layer plus 5 (the engine's fused decode path).
    pub kernels_per_step: f64,
}

impl RooflineCost {
    pub fn new(c: &ModelConfig, gpu: GpuCeilings) -> Self {
        let layers = c.num_hidden_layers as f64;
        let layer_params = layers * layer_params_per_rank(c, 1) as f64;
        let lm_head_params = (c.vocab_size * c.hidden_size) as f64;
        RooflineCost {
            gpu,
            weight_bytes: 2.0 * (layer_params + lm_head_params + c.hidden_size as f64),
            layer_params,
            lm_head_params,
            kv_bytes_per_token: kv_bytes_per_token_per_gpu(c, 1, c.num_hidden_layers) as f64,
            // QKᵀ and P·V: 2 FLOPs per multiply-add, head_dim each, every query head.
            flops_per_attention_pair: 4.0 * layers * (c.num_attention_heads * c.head_dim) as f64,
            kernels_per_step: 6.0 * layers + 5.0,
        }
    }
}

impl StepCost for RooflineCost {
    fn step_seconds(&self, shape: &StepShape) -> f64 {
        if shape.num_seqs == 0 {
            return 0.0;
        }
        let bytes = self.weight_bytes + self.kv_bytes_per_token * shape.kv_tokens as f64;
        let flops = 2.0 * self.layer_params * shape.num_tokens as f64
            + 2.0 * self.lm_head_params * shape.num_sampled as f64
            + self.flops_per_attention_pair * shape.attention_pairs as f64;
        let floor = self.kernels_per_step * self.gpu.seconds_per_kernel;
        floor
            .max(bytes / self.gpu.bytes_per_s)
            .max(flops / self.gpu.flops_per_s)
    }

    fn name(&self) -> String {
        "roofline (H200 ceilings)".into()
    }
}
// ANCHOR_END: roofline_cost
