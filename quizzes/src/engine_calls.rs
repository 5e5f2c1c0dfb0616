//! The dispatch table: a quiz's `check.fn` name → a call into the engine.
//!
//! Each entry runs the engine's own code (a function, the scheduler, the model runner's input
//! preparation, the sampler), never a second copy of a formula, so that a quiz answer is
//! exactly what the engine computes.

use std::path::PathBuf;

use engine::attention::attention_metadata::AttentionMetadata;
use engine::config::{CacheConfig, EngineConfig, ModelConfig, SchedulerConfig};
use engine::core::block::{blocks_needed, slot_for_position, BlockId};
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduler_output::{ScheduledSequence, SchedulerOutput};
use engine::core::scheduling_policy::Fcfs;
use engine::model_executor::weights::{parameter_count, weight_bytes};
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence};
use engine::worker::cache_engine::{kv_cache_bytes_per_block, num_blocks_for_budget};
use engine::worker::model_runner::prepare_inputs;

/// The names a `check.fn` may use.
pub const FUNCTIONS: &[&str] = &[
    "slot_for_position",
    "blocks_needed",
    "kv_cache_bytes_per_block",
    "num_blocks_for_budget",
    "num_queries_per_kv",
    "parameter_count",
    "weight_bytes",
    "schedule_mixed_batch",
    "fcfs_preemption",
    "chunked_prefill",
    "max_model_len",
    "prepare_inputs",
    "rms_norm",
    "sample_support",
    "argmax",
    "paged_attention_reads",
    "paged_attention_kv_head",
];

type Args = toml::Table;

pub(crate) fn int(args: &Args, key: &str) -> Result<usize, String> {
    args.get(key)
        .and_then(|v| v.as_integer())
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| format!("argument `{key}` must be a non-negative integer"))
}

pub(crate) fn float(args: &Args, key: &str) -> Result<f64, String> {
    match args.get(key) {
        Some(toml::Value::Float(f)) => Ok(*f),
        Some(toml::Value::Integer(i)) => Ok(*i as f64),
        _ => Err(format!("argument `{key}` must be a number")),
    }
}

fn ints(args: &Args, key: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("argument `{key}` must be a list of non-negative integers");
    let list = args.get(key).and_then(|v| v.as_array()).ok_or_else(bad)?;
    list.iter()
        .map(|v| {
            v.as_integer()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(bad)
        })
        .collect()
}

fn floats(args: &Args, key: &str) -> Result<Vec<f32>, String> {
    let bad = || format!("argument `{key}` must be a list of numbers");
    let list = args.get(key).and_then(|v| v.as_array()).ok_or_else(bad)?;
    list.iter()
        .map(|v| match v {
            toml::Value::Float(f) => Ok(*f as f32),
            toml::Value::Integer(i) => Ok(*i as f32),
            _ => Err(bad()),
        })
        .collect()
}

pub(crate) fn text<'a>(args: &'a Args, key: &str) -> Result<&'a str, String> {
    args.get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("argument `{key}` must be a string"))
}

fn table(args: &Args) -> Result<Vec<BlockId>, String> {
    Ok(ints(args, "block_table")?
        .into_iter()
        .map(|b| BlockId(b as u32))
        .collect())
}

/// A model's config by name: the engine's `configs/*.json`, our SmolLM2 copy, or `tiny`.
pub fn model_config(name: &str) -> Result<ModelConfig, String> {
    if name == "tiny" {
        return Ok(engine::tiny_model::tiny_config());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = match name {
        "llama-2-7b" | "llama-3.2-1b" => root.join(format!("../engine/configs/{name}.json")),
        "smollm2-135m" => root.join("configs/smollm2-135m.json"),
        other => return Err(format!("unknown model `{other}`")),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    ModelConfig::from_json(&text).map_err(|e| e.to_string())
}

fn scheduler(block_size: usize, num_blocks: usize, budget: usize) -> Scheduler {
    let config = SchedulerConfig {
        max_num_seqs: 256,
        max_num_batched_tokens: budget,
        enable_chunked_prefill: true,
        ..SchedulerConfig::default()
    };
    let blocks = BlockManager::new(block_size, Box::new(RefCountingAllocator::new(num_blocks)));
    Scheduler::new(config, Box::new(Fcfs), blocks, vec![], usize::MAX)
}

/// Token id 7 for everything: the model is not run, only the bookkeeping.
fn request(id: u64, len: usize) -> Sequence {
    Sequence::new(SeqId(id), vec![7; len], SamplingParams::greedy(1000))
}

/// Applies a step as if the model sampled token 7 for every sequence that needed logits.
fn finish_step(s: &mut Scheduler, out: &SchedulerOutput) {
    let n = out.scheduled.iter().filter(|x| x.needs_logits).count();
    s.update_from_output(out, &vec![7; n]);
}

/// Decodes of `decode_context_lens` (tokens already in the cache) batched with new prompts of
/// `prefill_lens`, through the engine's scheduler.
fn schedule_mixed_batch(args: &Args) -> Result<f64, String> {
    let block_size = int(args, "block_size")?;
    let budget = int(args, "max_num_batched_tokens")?;
    let num_blocks = int(args, "num_blocks").unwrap_or(10_000);
    let mut s = scheduler(block_size, num_blocks, budget);
    let mut next = 0;
    // Prefill the decoding requests' prompts (one token short of their context) and sample
    // one token each: they now hold `context` tokens in the cache and have one new token.
    let contexts = ints(args, "decode_context_lens")?;
    for &c in &contexts {
        s.add_sequence(request(next, c));
        next += 1;
    }
    if !contexts.is_empty() {
        let warm = s.schedule();
        if warm.scheduled.len() != contexts.len() || warm.scheduled.iter().any(|x| !x.needs_logits)
        {
            return Err("the decode contexts do not fit one step".into());
        }
        finish_step(&mut s, &warm);
    }
    let first_prefill = next;
    for &p in &ints(args, "prefill_lens")? {
        s.add_sequence(request(next, p));
        next += 1;
    }
    let free_before = s.block_manager.num_free_blocks();
    let out = s.schedule();
    let value = match text(args, "output")? {
        "num_batched_tokens" => out.num_batched_tokens(),
        "num_scheduled" => out.scheduled.len(),
        "prefill_blocks" => out
            .scheduled
            .iter()
            .filter(|x| x.seq_id.0 >= first_prefill)
            .map(|x| x.block_table.len())
            .sum(),
        "new_blocks" => free_before - s.block_manager.num_free_blocks(),
        "total_blocks" => s.block_manager.num_total_blocks() - s.block_manager.num_free_blocks(),
        "logits_rows" => prepare_inputs(&out, block_size).logits_indices.len(),
        other => return Err(format!("unknown output `{other}`")),
    };
    Ok(value as f64)
}

/// Requests of `prompt_lens` admitted into a cache of `num_blocks`, then decoded step by step
/// until the scheduler first preempts.
fn fcfs_preemption(args: &Args) -> Result<f64, String> {
    let block_size = int(args, "block_size")?;
    let mut s = scheduler(block_size, int(args, "num_blocks")?, 1 << 20);
    for (i, &p) in ints(args, "prompt_lens")?.iter().enumerate() {
        s.add_sequence(request(i as u64, p));
    }
    for _ in 0..1000 {
        let out = s.schedule();
        if let Some(&victim) = out.preempted.first() {
            return Ok(match text(args, "output")? {
                "first_victim" => victim.0 as usize,
                "num_preempted" => out.preempted.len(),
                "num_scheduled" => out.scheduled.len(),
                "num_waiting" => s.num_waiting(),
                other => return Err(format!("unknown output `{other}`")),
            } as f64);
        }
        finish_step(&mut s, &out);
    }
    Err("no preemption within 1000 steps".into())
}

/// One prompt through chunked prefill: what step `step` (1-based) computes.
fn chunked_prefill(args: &Args) -> Result<f64, String> {
    let block_size = int(args, "block_size")?;
    let mut s = scheduler(block_size, 10_000, int(args, "max_num_batched_tokens")?);
    s.add_sequence(request(0, int(args, "prompt_len")?));
    let step = int(args, "step")?;
    for k in 1..=step {
        let out = s.schedule();
        if k == step {
            return Ok(match text(args, "output")? {
                "num_batched_tokens" => out.num_batched_tokens(),
                "logits_rows" => prepare_inputs(&out, block_size).logits_indices.len(),
                "blocks" => out.scheduled[0].block_table.len(),
                other => return Err(format!("unknown output `{other}`")),
            } as f64);
        }
        finish_step(&mut s, &out);
    }
    Err("`step` must be at least 1".into())
}

/// The engine's longest sequence for the tiny model with a cache of this size.
fn max_model_len(args: &Args) -> Result<f64, String> {
    let config = EngineConfig {
        cache: CacheConfig {
            block_size: int(args, "block_size")?,
            num_kv_blocks: Some(int(args, "num_kv_blocks")?),
            kv_cache_memory_bytes: 0,
            ..EngineConfig::default().cache
        },
        ..EngineConfig::default()
    };
    let model = engine::model_source::load_model(&engine::model_source::ModelSpec::Tiny, false, 0)
        .map_err(|e| e.to_string())?;
    let llm = engine::LLMEngine::new(model, config).map_err(|e| e.to_string())?;
    Ok(llm.max_model_len as f64)
}

/// A batch given as `seqs = [{ start_position, num_tokens, block_table, needs_logits }]`,
/// laid out by the model runner; returns `field[index]`.
fn prepare(args: &Args) -> Result<f64, String> {
    let block_size = int(args, "block_size")?;
    let seqs = args
        .get("seqs")
        .and_then(|v| v.as_array())
        .ok_or("argument `seqs` must be a list of tables")?;
    let mut out = SchedulerOutput::default();
    for (i, v) in seqs.iter().enumerate() {
        let t = v.as_table().ok_or("each of `seqs` must be a table")?;
        let start = int(t, "start_position")?;
        out.scheduled.push(ScheduledSequence {
            seq_id: SeqId(i as u64),
            token_ids: vec![7; int(t, "num_tokens")?],
            start_position: start,
            block_table: table(t)?,
            needs_logits: t
                .get("needs_logits")
                .and_then(|b| b.as_bool())
                .unwrap_or(true),
        });
    }
    let input = prepare_inputs(&out, block_size);
    let index = int(args, "index")?;
    let m = &input.attn_metadata;
    let value = match text(args, "field")? {
        "slot_mapping" => m.slot_mapping.get(index).map(|&v| v as usize),
        "positions" => input.positions.get(index).copied(),
        "query_start_loc" => m.query_start_loc.get(index).copied(),
        "seq_lens" => m.seq_lens.get(index).copied(),
        "logits_indices" => input.logits_indices.get(index).copied(),
        "num_tokens" => Some(m.num_tokens()),
        other => return Err(format!("unknown field `{other}`")),
    };
    value
        .map(|v| v as f64)
        .ok_or_else(|| format!("index {index} is out of range"))
}

/// Element `index` of the engine's RMSNorm of one row `x`.
fn rms_norm(args: &Args) -> Result<f64, String> {
    let x = floats(args, "x")?;
    let weight = floats(args, "weight")?;
    let mut out = vec![0.0; x.len()];
    engine::ops::rms_norm::rms_norm(&mut out, &x, &weight, float(args, "eps")? as f32);
    out.get(int(args, "index")?)
        .map(|&v| v as f64)
        .ok_or_else(|| "index out of range".into())
}

/// How many distinct tokens the engine's sampler picks from these logits over `draws` evenly
/// spaced draws in `[0, 1)`: the size of the candidate set that survives top-k and top-p.
fn sample_support(args: &Args) -> Result<f64, String> {
    let logits = floats(args, "logits")?;
    let params = SamplingParams {
        temperature: float(args, "temperature")? as f32,
        top_k: int(args, "top_k").ok(),
        top_p: float(args, "top_p")? as f32,
        ..SamplingParams::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    let draws = int(args, "draws")?;
    for i in 0..draws {
        let draw = i as f32 / draws as f32;
        seen.insert(engine::sampler::sample(&logits, &params, draw));
    }
    Ok(seen.len() as f64)
}

/// The cache slots the engine's paged attention reads for each query row of a sequence of
/// `seq_len` tokens whose last `query_len` are this step's rows (1: a decode), with blocks of
/// `block_size`: one list per row, in row order. Every cache slot's value is one-hot on the
/// slot's number and every key is zero, so a row's output is nonzero exactly at the slots it
/// read.
pub(crate) fn attention_read_slots(
    block_size: usize,
    seq_len: usize,
    query_len: usize,
) -> Result<Vec<Vec<usize>>, String> {
    if block_size == 0 || query_len == 0 || query_len > seq_len {
        return Err("need block_size > 0 and 0 < query_len <= seq_len".into());
    }
    let num_blocks = seq_len.div_ceil(block_size);
    let slots = num_blocks * block_size;
    // A scattered table: logical block i lives in physical block num_blocks - 1 - i.
    let table: Vec<u32> = (0..num_blocks as u32).rev().collect();
    let slot_of = |p: usize| table[p / block_size] as usize * block_size + p % block_size;
    let meta = AttentionMetadata {
        slot_mapping: (seq_len - query_len..seq_len)
            .map(|p| slot_of(p) as u64)
            .collect(),
        query_start_loc: vec![0, query_len],
        seq_lens: vec![seq_len],
        block_tables: table,
        max_blocks_per_seq: num_blocks,
        block_size,
    };
    let keys = vec![0.0; slots * slots];
    let mut values = vec![0.0; slots * slots];
    for s in 0..slots {
        values[s * slots + s] = 1.0;
    }
    let query = vec![1.0; query_len * slots];
    let mut out = vec![0.0; query_len * slots];
    engine::ops::paged_attention::paged_attention(
        &mut out, &query, &keys, &values, 1, slots, 1.0, &meta,
    );
    Ok(out
        .chunks_exact(slots)
        .map(|row| (0..slots).filter(|&s| row[s] != 0.0).collect())
        .collect())
}

/// What the engine's paged attention reads for one query row ([`attention_read_slots`]): row
/// `row` (default the last) of `query_len` (default 1: a decode). `output`: `keys` (how many
/// slots) or `blocks` (how many distinct cache blocks).
fn paged_attention_reads(args: &Args) -> Result<f64, String> {
    let (block_size, seq_len) = (int(args, "block_size")?, int(args, "seq_len")?);
    let query_len = int(args, "query_len").unwrap_or(1);
    let row = int(args, "row").unwrap_or(query_len.saturating_sub(1));
    if row >= query_len {
        return Err("need row < query_len".into());
    }
    let read = attention_read_slots(block_size, seq_len, query_len)?.swap_remove(row);
    let value = match text(args, "output")? {
        "keys" => read.len(),
        "blocks" => {
            let blocks: std::collections::BTreeSet<usize> =
                read.iter().map(|s| s / block_size).collect();
            blocks.len()
        }
        other => return Err(format!("unknown output `{other}`")),
    };
    Ok(value as f64)
}

/// Which KV head the engine's paged attention gives query head `query_head` of `num_heads`,
/// with `num_kv_heads` KV heads: every value of KV head j is j, so the head's output is j.
fn paged_attention_kv_head(args: &Args) -> Result<f64, String> {
    let (heads, kv_heads) = (int(args, "num_heads")?, int(args, "num_kv_heads")?);
    let h = int(args, "query_head")?;
    if kv_heads == 0 || heads % kv_heads != 0 || h >= heads {
        return Err("need num_kv_heads dividing num_heads and query_head < num_heads".into());
    }
    let meta = AttentionMetadata {
        slot_mapping: vec![0],
        query_start_loc: vec![0, 1],
        seq_lens: vec![1],
        block_tables: vec![0],
        max_blocks_per_seq: 1,
        block_size: 1,
    };
    let keys = vec![0.0; kv_heads];
    let values: Vec<f32> = (0..kv_heads).map(|j| j as f32).collect();
    let mut out = vec![f32::NAN; heads];
    engine::ops::paged_attention::paged_attention(
        &mut out,
        &vec![1.0; heads],
        &keys,
        &values,
        kv_heads,
        1,
        1.0,
        &meta,
    );
    Ok(out[h] as f64)
}

/// The token the engine's greedy `argmax` picks from `vocab_size` logits that are all 0 except
/// 1 at each of `largest` (equal largest logits, a tie when there are several).
fn argmax(args: &Args) -> Result<f64, String> {
    let mut logits = vec![0.0; int(args, "vocab_size")?];
    for id in ints(args, "largest")? {
        *logits
            .get_mut(id)
            .ok_or_else(|| format!("id {id} is not below vocab_size"))? = 1.0;
    }
    if logits.is_empty() {
        return Err("vocab_size must be at least 1".into());
    }
    Ok(engine::sampler::argmax(&logits) as f64)
}

/// Calls the engine function a `check.fn` names.
pub fn call(name: &str, args: &Args) -> Result<f64, String> {
    let model = || model_config(text(args, "model")?);
    let value = match name {
        "slot_for_position" => {
            let t = table(args)?;
            let (b, p) = (int(args, "block_size")?, int(args, "position")?);
            // Let the engine decide: it panics when the table has no block for `p`.
            std::panic::catch_unwind(|| slot_for_position(&t, b, p))
                .map_err(|_| {
                    format!(
                        "the engine refuses position {p}: block table {t:?} (block size {b}) \
                         has no logical block {}",
                        p / b
                    )
                })?
                .0 as f64
        }
        "blocks_needed" => blocks_needed(int(args, "num_tokens")?, int(args, "block_size")?) as f64,
        "kv_cache_bytes_per_block" => kv_cache_bytes_per_block(
            &model()?,
            int(args, "block_size")?,
            int(args, "dtype_bytes")?,
        ) as f64,
        "num_blocks_for_budget" => num_blocks_for_budget(
            &model()?,
            int(args, "block_size")?,
            int(args, "budget_bytes")?,
        ) as f64,
        "num_queries_per_kv" => model()?.num_queries_per_kv() as f64,
        "parameter_count" => parameter_count(&model()?) as f64,
        "weight_bytes" => weight_bytes(&model()?, int(args, "bits")? as u64) as f64,
        "schedule_mixed_batch" => schedule_mixed_batch(args)?,
        "fcfs_preemption" => fcfs_preemption(args)?,
        "chunked_prefill" => chunked_prefill(args)?,
        "max_model_len" => max_model_len(args)?,
        "prepare_inputs" => prepare(args)?,
        "rms_norm" => rms_norm(args)?,
        "sample_support" => sample_support(args)?,
        "argmax" => argmax(args)?,
        "paged_attention_reads" => paged_attention_reads(args)?,
        "paged_attention_kv_head" => paged_attention_kv_head(args)?,
        other if crate::gpu_calls::FUNCTIONS.contains(&other) => {
            crate::gpu_calls::call(other, args)?
        }
        other if crate::hybrid_calls::FUNCTIONS.contains(&other) => {
            crate::hybrid_calls::call(other, args)?
        }
        other if crate::tp_calls::FUNCTIONS.contains(&other) => crate::tp_calls::call(other, args)?,
        other if crate::pp_calls::FUNCTIONS.contains(&other) => crate::pp_calls::call(other, args)?,
        other if crate::batching_calls::FUNCTIONS.contains(&other) => {
            crate::batching_calls::call(other, args)?
        }
        other => {
            return Err(format!(
                "unknown check function `{other}` (known: {}, {})",
                FUNCTIONS.join(", "),
                crate::gpu_calls::FUNCTIONS.join(", ")
            ))
        }
    };
    Ok(value)
}
