//! Errata, Stage 3: the kernel order of one decoder layer.
//!
//! A source lists, per layer, three separate Q, K and V matmuls and writes the KV cache
//! (`reshape_and_cache`) last, after the MLP. The engine runs one fused `qkv_proj`, and writes
//! this step's keys and values into the cache *before* paged attention, which must read them:
//! a token attends to itself, and a prefill chunk's rows attend to each other.
//!
//! The tests run the engine's own forward pass on a backend that records every kernel call
//! (and delegates it to the CPU backend), so they fail if the order in
//! `engine/src/model_executor/llama.rs` changes.

use std::sync::Mutex;

use engine::backend::cpu_backend::{CpuBackend, CpuTensor};
use engine::backend::{Backend, DType, Result};
use engine::config::ModelConfig;
use engine::core::block::BlockId;
use engine::core::scheduler_output::{ScheduledSequence, SchedulerOutput};
use engine::model_executor::llama::LlamaForCausalLM;
use engine::model_executor::random_weights::{random_tensor, random_weights};
use engine::sequence::SeqId;
use engine::tiny_model::tiny_config;
use engine::worker::cache_engine::KvCache;
use engine::worker::model_runner::{prepare_inputs, ModelInput};

/// The CPU backend, recording the name of each kernel it runs. At each `paged_attention` it
/// also records whether the cache already holds, in this step's slots, the keys and values the
/// last `reshape_and_cache` was given.
#[derive(Default)]
struct Recorder {
    cpu: CpuBackend,
    calls: Mutex<Vec<String>>,
    /// This step's (keys, values) as given to the last `reshape_and_cache`.
    written: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
    /// One entry per `paged_attention` call: did the cache hold this step's k and v?
    cache_ready: Mutex<Vec<bool>>,
}

impl Recorder {
    fn log(&self, call: impl Into<String>) {
        self.calls.lock().unwrap().push(call.into());
    }
}

/// Whether rows `slots` of `cache` `[slots, width]` are `rows` `[t, width]`.
fn holds(cache: &[f32], rows: &[f32], slots: &[u64]) -> bool {
    let width = rows.len() / slots.len().max(1);
    slots.iter().enumerate().all(|(t, &s)| {
        cache[s as usize * width..(s as usize + 1) * width] == rows[t * width..(t + 1) * width]
    })
}

impl Backend for Recorder {
    type Tensor = CpuTensor;
    type StepMetadata = ModelInput;

    fn name(&self) -> &'static str {
        "recorder"
    }
    fn default_dtype(&self) -> DType {
        self.cpu.default_dtype()
    }
    fn upload(&self, data: Vec<f32>, rows: usize, cols: usize, dtype: DType) -> Result<CpuTensor> {
        self.cpu.upload(data, rows, cols, dtype)
    }
    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        self.cpu.download(t)
    }
    fn zeros(&self, rows: usize, cols: usize, dtype: DType) -> Result<CpuTensor> {
        self.cpu.zeros(rows, cols, dtype)
    }
    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        self.cpu.shape(t)
    }
    fn dtype(&self, t: &CpuTensor) -> DType {
        self.cpu.dtype(t)
    }
    fn prepare_step(&self, input: ModelInput) -> Result<ModelInput> {
        self.log("prepare_step");
        self.cpu.prepare_step(input)
    }
    fn embedding(&self, table: &CpuTensor, step: &ModelInput) -> Result<CpuTensor> {
        self.log("embedding");
        self.cpu.embedding(table, step)
    }
    fn linear(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> Result<CpuTensor> {
        // Named by the weight's shape [out, in].
        self.log(format!("linear {}x{}", w.rows, w.cols));
        self.cpu.linear(x, w, bias)
    }
    fn rms_norm(&self, x: &CpuTensor, weight: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        self.log("rms_norm");
        self.cpu.rms_norm(x, weight, eps)
    }
    fn fused_add_rms_norm(
        &self,
        x: &mut CpuTensor,
        residual: &mut CpuTensor,
        weight: &CpuTensor,
        eps: f32,
    ) -> Result<()> {
        self.log("fused_add_rms_norm");
        self.cpu.fused_add_rms_norm(x, residual, weight, eps)
    }
    fn rotary_embedding(
        &self,
        step: &ModelInput,
        q: &mut CpuTensor,
        k: &mut CpuTensor,
        head_dim: usize,
        cos_sin_cache: &CpuTensor,
    ) -> Result<()> {
        self.log("rotary_embedding");
        self.cpu
            .rotary_embedding(step, q, k, head_dim, cos_sin_cache)
    }
    fn reshape_and_cache(
        &self,
        k: &CpuTensor,
        v: &CpuTensor,
        key_cache: &mut CpuTensor,
        value_cache: &mut CpuTensor,
        step: &ModelInput,
    ) -> Result<()> {
        self.log("reshape_and_cache");
        *self.written.lock().unwrap() = Some((k.data.clone(), v.data.clone()));
        self.cpu
            .reshape_and_cache(k, v, key_cache, value_cache, step)
    }
    fn paged_attention(
        &self,
        q: &CpuTensor,
        key_cache: &CpuTensor,
        value_cache: &CpuTensor,
        num_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        step: &ModelInput,
    ) -> Result<CpuTensor> {
        self.log("paged_attention");
        let slots = &step.attn_metadata.slot_mapping;
        let ready = match &*self.written.lock().unwrap() {
            Some((k, v)) => holds(&key_cache.data, k, slots) && holds(&value_cache.data, v, slots),
            None => false,
        };
        self.cache_ready.lock().unwrap().push(ready);
        self.cpu.paged_attention(
            q,
            key_cache,
            value_cache,
            num_kv_heads,
            head_dim,
            scale,
            step,
        )
    }
    fn silu_and_mul(&self, x: &CpuTensor) -> Result<CpuTensor> {
        self.log("silu_and_mul");
        self.cpu.silu_and_mul(x)
    }
    fn split_columns(&self, x: &CpuTensor, widths: &[usize]) -> Result<Vec<CpuTensor>> {
        self.log(format!("split_columns {widths:?}"));
        self.cpu.split_columns(x, widths)
    }
    fn gather_rows(&self, x: &CpuTensor, step: &ModelInput) -> Result<CpuTensor> {
        self.log("gather_rows");
        self.cpu.gather_rows(x, step)
    }
}

/// The tiny model on the recorder: a 5-token prefill (positions 0 to 4), then a decode of
/// position 5, block size 4, block table [3, 1]. Returns the recorder's calls of each step.
fn run_two_steps() -> (Vec<Vec<String>>, Vec<bool>, ModelConfig) {
    let config = tiny_config();
    let rec = Recorder::default();
    let weights = random_weights(&config, 7).upload(&rec).unwrap();
    let model = LlamaForCausalLM::new(config.clone(), rec, weights).unwrap();
    let mut cache = KvCache::new(&model.backend, &config, 8, 4).unwrap();
    let table = vec![BlockId(3), BlockId(1)];
    let mut steps = Vec::new();
    for (start, ids) in [(0, vec![10, 11, 12, 13, 14]), (5, vec![15])] {
        let out = SchedulerOutput {
            scheduled: vec![ScheduledSequence {
                seq_id: SeqId(0),
                token_ids: ids,
                start_position: start,
                block_table: table.clone(),
                needs_logits: true,
            }],
            preempted: vec![],
        };
        let input = prepare_inputs(&out, 4);
        let step = model.backend.prepare_step(input).unwrap();
        model.forward(&step, &mut cache).unwrap();
        steps.push(std::mem::take(&mut *model.backend.calls.lock().unwrap()));
    }
    let ready = model.backend.cache_ready.lock().unwrap().clone();
    (steps, ready, config)
}

/// The kernels of one step, in the engine's order (tiny model: hidden 64, 4 query heads and
/// 2 KV heads of 16, MLP 128, 2 layers, vocabulary 259).
fn expected_calls(c: &ModelConfig) -> Vec<String> {
    let (h, d) = (c.hidden_size, c.head_dim);
    let (q, kv) = (c.num_attention_heads * d, c.num_key_value_heads * d);
    // The step's metadata goes to the backend once, before any layer: no layer takes a host
    // slice, so a GPU copies it once per step, not once per layer.
    let mut calls = vec![
        "prepare_step".to_string(),
        "embedding".to_string(),
        "rms_norm".to_string(),
    ];
    for _ in 0..c.num_hidden_layers {
        calls.extend([
            format!("linear {}x{h}", q + 2 * kv), // one fused qkv_proj
            format!("split_columns {:?}", [q, kv, kv]),
            "rotary_embedding".into(),
            "reshape_and_cache".into(), // this step's k, v into their slots...
            "paged_attention".into(),   // ...before attention reads them
            format!("linear {h}x{q}"),  // o_proj
            "fused_add_rms_norm".into(),
            format!("linear {}x{h}", 2 * c.intermediate_size), // fused gate_up_proj
            "silu_and_mul".into(),
            format!("linear {h}x{}", c.intermediate_size), // down_proj
            "fused_add_rms_norm".into(),
        ]);
    }
    calls.extend(["gather_rows".into(), format!("linear {}x{h}", c.vocab_size)]);
    calls
}

/// Errata "kernel order": per layer, one fused qkv matmul (not three), then rotary, then
/// `reshape_and_cache`, then paged attention, o_proj, and the MLP; the cache is written before
/// attention, never after the MLP. Prefill and decode alike.
#[test]
fn errata_kernel_order_cache_write_before_attention_and_one_qkv_matmul() {
    let (steps, _, config) = run_two_steps();
    let expected = expected_calls(&config);
    for (step, calls) in ["prefill", "decode"].iter().zip(&steps) {
        assert_eq!(calls, &expected, "the {step} step's kernels");
    }
}

/// When attention runs, the cache already holds this step's keys and values in their slots:
/// the prefill's five tokens and the decode's one, in every layer.
#[test]
fn errata_attention_finds_this_steps_keys_and_values_in_the_cache() {
    let (_, ready, config) = run_two_steps();
    assert_eq!(ready.len(), 2 * config.num_hidden_layers);
    assert!(
        ready.iter().all(|&r| r),
        "paged attention ran before this step's keys and values were in the cache: {ready:?}"
    );
}

/// `qkv_proj` is one matrix: q's, k's and v's weights stacked, in that order, so one matmul
/// computes all three.
#[test]
fn errata_qkv_proj_is_q_k_and_v_stacked() {
    let c = tiny_config();
    let (h, d) = (c.hidden_size, c.head_dim);
    let (q, kv) = (c.num_attention_heads * d, c.num_key_value_heads * d);
    let weights = random_weights(&c, 7);
    let layer = &weights.layers[1];
    assert_eq!((layer.qkv_proj.rows, layer.qkv_proj.cols), (q + 2 * kv, h));
    let part = |name: &str, rows| {
        random_tensor(
            7,
            &format!("model.layers.1.self_attn.{name}.weight"),
            rows,
            h,
        )
        .data
    };
    let stacked = [part("q_proj", q), part("k_proj", kv), part("v_proj", kv)].concat();
    assert_eq!(layer.qkv_proj.data, stacked);
}
