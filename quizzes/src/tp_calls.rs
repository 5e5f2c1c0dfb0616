//! The Stage 5 quiz's check functions: tensor parallelism, counted by the engine.
//!
//! - `tp_collectives` runs the CPU tensor-parallel engine (one thread per rank) for one
//!   forward pass and reads rank 0's communicator counters: all-reduces, all-gathers, or all
//!   calls; `part = "layers"` keeps the layers' share, measured as the difference between
//!   `layers + 1` and `layers` layers, times `layers`.
//! - `tp_all_reduce_volume`: the bytes of one forward pass's all-reduces on a shape too large
//!   for the CPU (a batch of tokens × hidden, many layers). The number of all-reduces is
//!   counted as `tp_collectives` counts them (at the question's layers and TP, on a narrow
//!   model); each is one `[tokens, hidden]` bf16 tensor (`comm_model::all_reduce_bytes`,
//!   which the run's counters confirm for its own shape); the traffic per GPU is the ratio of
//!   sent to tensor bytes the communicator counted in that run.
//! - `ring_sent_ratio` all-reduces one buffer over `ranks` threads and divides what each rank
//!   sent by the buffer's size.
//! - `tp_sizes_accepted` asks `check_tensor_parallel` about each size from 1 to `max`.
//! - `kv_head_copies`: how many ranks hold KV head 0 (`tensor_parallel::kv_heads`).
//! - `tp_step_comm`: one request through the TP engine on a model's shape with random weights;
//!   a step's counters on rank 0.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use engine::config::ModelConfig;
use engine::distributed::comm_model::all_reduce_bytes;
use engine::distributed::{CommOp, CommStats, Communicator, CpuCommunicator};
use engine::model_executor::tensor_parallel::{check_tensor_parallel, kv_heads, TpShard};
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};

use crate::engine_calls::{int, model_config, text};

type Args = toml::Table;

/// The names [`call`] answers.
pub const FUNCTIONS: &[&str] = &[
    "tp_collectives",
    "tp_all_reduce_volume",
    "ring_sent_ratio",
    "tp_sizes_accepted",
    "kv_head_copies",
    "tp_step_comm",
];

/// A narrow Llama with `layers` layers that splits over `tp`: `tp` heads and KV heads of 16.
fn narrow(layers: usize, tp: usize) -> ModelConfig {
    ModelConfig {
        num_hidden_layers: layers,
        num_attention_heads: tp,
        num_key_value_heads: tp,
        hidden_size: 16 * tp,
        intermediate_size: 32 * tp,
        ..tiny_config()
    }
}

/// Runs one request of `prompt_len` tokens through the CPU engine at `tp` ranks for
/// `new_tokens` tokens (step 0 is the prefill) and returns rank 0's counters after each step.
/// A run is deterministic and costs up to seconds, so each is made once per process: the
/// quiz templates ask several counters (and several outputs) of the same run.
fn run_steps(
    config: &ModelConfig,
    tp: usize,
    prompt_len: usize,
    new_tokens: usize,
) -> Result<Vec<CommStats>, String> {
    static RUNS: Mutex<Option<HashMap<String, Vec<CommStats>>>> = Mutex::new(None);
    let key = format!("{config:?} {tp} {prompt_len} {new_tokens}");
    let cached = || RUNS.lock().ok()?.as_ref()?.get(&key).cloned();
    if let Some(steps) = cached() {
        return Ok(steps);
    }
    let steps = run_steps_uncached(config, tp, prompt_len, new_tokens)?;
    if let Ok(mut runs) = RUNS.lock() {
        runs.get_or_insert_with(HashMap::new)
            .insert(key.clone(), steps.clone());
    }
    Ok(steps)
}

fn run_steps_uncached(
    config: &ModelConfig,
    tp: usize,
    prompt_len: usize,
    new_tokens: usize,
) -> Result<Vec<CommStats>, String> {
    let model = LoadedModel {
        name: "quiz".into(),
        config: config.clone(),
        weights: ModelWeights::Random { seed: 7 },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    };
    let mut ec = EngineConfig::default();
    ec.cache.block_size = 16;
    ec.cache.num_kv_blocks = Some(8);
    ec.parallel.tensor_parallel_size = tp;
    let mut engine = LLMEngine::new(model, ec).map_err(|e| e.to_string())?;
    let mut params = SamplingParams::greedy(new_tokens);
    params.ignore_eos = true;
    let prompt = (0..prompt_len as u32).map(|i| (i * 7 + 3) % 250).collect();
    engine
        .add_request(Prompt::TokenIds(prompt), params)
        .map_err(|e| e.to_string())?;
    let mut after = Vec::new();
    while engine.has_unfinished_requests() {
        engine.step().map_err(|e| e.to_string())?;
        let stats = engine.comm_stats();
        after.push(stats.into_iter().next().ok_or("the engine has no ranks")?);
    }
    Ok(after)
}

/// Rank 0's counters after one forward pass (a prefill of `tokens` tokens).
fn one_pass(layers: usize, tp: usize, tokens: usize) -> Result<CommStats, String> {
    let steps = run_steps(&narrow(layers, tp), tp, tokens, 1)?;
    match steps.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("{} steps instead of one", steps.len())),
    }
}

/// Calls of `op` (or of every kind, `op = None`) in one forward pass, all or the layers' share.
fn count(layers: usize, tp: usize, op: Option<CommOp>, part: &str) -> Result<u64, String> {
    let calls = |s: &CommStats| op.map_or(s.total().calls, |op| s.op(op).calls);
    let here = calls(&one_pass(layers, tp, tp)?);
    match part {
        "all" => Ok(here),
        "layers" => {
            let per_layer = calls(&one_pass(layers + 1, tp, tp)?) - here;
            Ok(per_layer * layers as u64)
        }
        other => Err(format!("`part` must be all or layers, not `{other}`")),
    }
}

fn op_named(name: &str) -> Result<Option<CommOp>, String> {
    match name {
        "all_reduce" => Ok(Some(CommOp::AllReduce)),
        "all_gather" => Ok(Some(CommOp::AllGather)),
        "total" => Ok(None),
        other => Err(format!(
            "unknown op `{other}` (all_reduce, all_gather, total)"
        )),
    }
}

fn tp_all_reduce_volume(args: &Args) -> Result<f64, String> {
    let (layers, tp) = (int(args, "layers")?, int(args, "tp")?);
    let (tokens, hidden) = (int(args, "tokens")?, int(args, "hidden")?);
    let calls = count(layers, tp, Some(CommOp::AllReduce), text(args, "part")?)?;
    // The narrow run's own all-reduces: each one [tokens, hidden] tensor (f32 on the CPU).
    let run = one_pass(layers, tp, tp)?;
    let ar = run.op(CommOp::AllReduce);
    let run_hidden = narrow(layers, tp).hidden_size;
    if ar.tensor_bytes != ar.calls * (tp * run_hidden * 4) as u64 {
        return Err(format!(
            "the run's all-reduces are not one [tokens, hidden] tensor each: {ar:?}"
        ));
    }
    let tensor = calls as f64 * all_reduce_bytes(tokens, hidden) as f64;
    match text(args, "output")? {
        "tensor_bytes" => Ok(tensor),
        "sent_per_gpu" => Ok(tensor * ar.sent_bytes as f64 / ar.tensor_bytes as f64),
        other => Err(format!(
            "unknown output `{other}` (tensor_bytes, sent_per_gpu)"
        )),
    }
}

fn ring_sent_ratio(args: &Args) -> Result<f64, String> {
    let n = int(args, "ranks")?;
    if n == 0 {
        return Err("ranks must be at least 1".into());
    }
    let len = 64 * n; // a multiple of n: no rounding
    let handles: Vec<_> = CpuCommunicator::group(n, Duration::from_secs(30))
        .into_iter()
        .map(|mut comm| {
            std::thread::spawn(move || {
                let mut buf = vec![1.0f32; len];
                comm.all_reduce_sum(&mut buf).map_err(|e| e.to_string())?;
                Ok::<_, String>(*comm.stats().op(CommOp::AllReduce))
            })
        })
        .collect();
    let mut ratio = None;
    for h in handles {
        let s = h.join().map_err(|_| "a rank panicked".to_string())??;
        let r = s.sent_bytes as f64 / s.tensor_bytes as f64;
        if ratio.is_some_and(|x| x != r) {
            return Err("the ranks sent different amounts".into());
        }
        ratio = Some(r);
    }
    ratio.ok_or_else(|| "no ranks".into())
}

fn tp_sizes_accepted(args: &Args) -> Result<f64, String> {
    let c = model_config(text(args, "model")?)?;
    let ok: Vec<usize> = (1..=int(args, "max")?)
        .filter(|&tp| check_tensor_parallel(&c, "m", tp).is_ok())
        .collect();
    match text(args, "output")? {
        "count" => Ok(ok.len() as f64),
        "largest" => ok.last().map(|&v| v as f64).ok_or_else(|| "none".into()),
        other => Err(format!("unknown output `{other}` (count, largest)")),
    }
}

fn kv_head_copies(args: &Args) -> Result<f64, String> {
    let c = ModelConfig {
        num_attention_heads: int(args, "heads")?,
        num_key_value_heads: int(args, "kv_heads")?,
        ..tiny_config()
    };
    let size = int(args, "tp")?;
    let mut c2 = c.clone();
    c2.intermediate_size = size; // the question is about heads only
    check_tensor_parallel(&c2, "the model", size).map_err(|e| e.to_string())?;
    let holders = (0..size)
        .filter(|&rank| kv_heads(&c, TpShard { rank, size }).contains(&0))
        .count();
    Ok(holders as f64)
}

fn tp_step_comm(args: &Args) -> Result<f64, String> {
    let c = model_config(text(args, "model")?)?;
    let tp = int(args, "tp")?;
    let step = int(args, "step")?;
    let steps = run_steps(&c, tp, int(args, "prompt_len")?, step + 1)?;
    let zero = CommStats::default();
    let before = if step == 0 { &zero } else { &steps[step - 1] };
    let now = steps
        .get(step)
        .ok_or("the request finished before that step")?;
    let (op, field) = text(args, "output")?
        .rsplit_once('.')
        .ok_or("output is op.field, e.g. all_reduce.sent_bytes")?;
    let op = op_named(op)?.ok_or("output names all_reduce or all_gather")?;
    let (a, b) = (now.op(op), before.op(op));
    Ok(match field {
        "calls" => a.calls - b.calls,
        "tensor_bytes" => a.tensor_bytes - b.tensor_bytes,
        "sent_bytes" => a.sent_bytes - b.sent_bytes,
        other => return Err(format!("unknown field `{other}`")),
    } as f64)
}

/// Calls the check function `name`. The engine runs behind these are deterministic (fixed
/// seeds, counted bytes) and some take a second, so each answer is computed once per process
/// (the answer tests ask for every answer several times).
pub fn call(name: &str, args: &Args) -> Result<f64, String> {
    static CACHE: Mutex<Option<HashMap<String, f64>>> = Mutex::new(None);
    let key = format!("{name} {args}");
    if let Some(&v) = CACHE
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .get(&key)
    {
        return Ok(v);
    }
    let value = compute(name, args)?;
    CACHE
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(key, value);
    Ok(value)
}

fn compute(name: &str, args: &Args) -> Result<f64, String> {
    match name {
        "tp_collectives" => {
            let op = op_named(text(args, "op")?)?;
            let (layers, tp) = (int(args, "layers")?, int(args, "tp")?);
            Ok(count(layers, tp, op, text(args, "part")?)? as f64)
        }
        "tp_all_reduce_volume" => tp_all_reduce_volume(args),
        "ring_sent_ratio" => ring_sent_ratio(args),
        "tp_sizes_accepted" => tp_sizes_accepted(args),
        "kv_head_copies" => kv_head_copies(args),
        "tp_step_comm" => tp_step_comm(args),
        other => Err(format!("`{other}` is not a stage 5 check")),
    }
}
