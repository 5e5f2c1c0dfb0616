//! The Stage 4 quiz's check functions: the kernel sequence of a forward step, the cost of
//! attention, CUDA graph sizes and a warp's memory transactions.
//!
//! - `kernel_launches` counts the kernel sequence the book's data file lists
//!   (`book/src/stage4/forward-step-kernels.toml`), which `engine/tests/kernel_sequence.rs`
//!   checks against the launches the engine records, for a model's number of layers.
//! - `attention_cost` takes the (query row, key) pairs from the engine's own paged attention
//!   (which slots each row reads, `engine_calls::attention_read_slots`) and prices
//!   each pair in FLOPs; bytes are the least traffic an attention kernel can have.
//! - `cuda_graph_size` asks the engine's CUDA graph code which batch sizes it captures.
//! - `warp_load` counts the 32-byte sectors one warp's load touches.

use engine::backend::cuda_graph::{capture_sizes, padded_size};

use crate::engine_calls::{attention_read_slots, int, model_config, text};

type Args = toml::Table;

/// The names [`call`] answers.
pub const FUNCTIONS: &[&str] = &[
    "kernel_launches",
    "attention_cost",
    "cuda_graph_size",
    "warp_load",
];

/// The book's kernel sequence (the CUDA backend's; `[cpu]` lists the CPU's substitutions).
const KERNELS: &str = include_str!("../../book/src/stage4/forward-step-kernels.toml");

fn list(v: Option<&toml::Value>, what: &str) -> Result<Vec<String>, String> {
    let bad = || format!("forward-step-kernels.toml: `{what}` is not a list of names");
    v.and_then(|v| v.as_array())
        .ok_or_else(bad)?
        .iter()
        .map(|s| s.as_str().map(str::to_string).ok_or_else(bad))
        .collect()
}

/// The CPU's ops for the GPU's `gpu` launches, by the data file's `[cpu]` table: a list
/// replaces every launch of an op, `{ first, then }` its first launch in the step and the rest,
/// and a key of several names separated by spaces that run of launches.
fn on_cpu(cpu: &toml::Table, gpu: &[String]) -> Result<Vec<String>, String> {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    let mut rest = gpu;
    while let Some(op) = rest.first() {
        // A key of several names ("a b") replaces that run of launches as a whole.
        let run = cpu.iter().find(|(key, _)| {
            let names: Vec<&str> = key.split(' ').collect();
            names.len() > 1 && rest.iter().take(names.len()).map(String::as_str).eq(names)
        });
        if let Some((key, v)) = run {
            all.extend(list(Some(v), &format!("cpu.\"{key}\""))?);
            rest = &rest[key.split(' ').count()..];
            continue;
        }
        rest = &rest[1..];
        let first = seen.insert(op.clone());
        all.extend(match cpu.get(op) {
            Some(toml::Value::Table(t)) => {
                let which = if first { "first" } else { "then" };
                list(t.get(which), &format!("cpu.{op}.{which}"))?
            }
            Some(v) => list(Some(v), &format!("cpu.{op}"))?,
            None => vec![op.clone()],
        });
    }
    Ok(all)
}

/// Kernel launches of one forward step of `model`: `step` is `decode` or `prefill`, `backend`
/// `cuda` (default) or `cpu`; `output` is `total` or `per_layer` (a layer after the first).
fn kernel_launches(args: &Args) -> Result<f64, String> {
    let book: toml::Table = toml::from_str(KERNELS).map_err(|e| e.to_string())?;
    let name = text(args, "step")?;
    let step = book
        .get(name)
        .and_then(|s| s.as_table())
        .ok_or_else(|| format!("no step `{name}` in the data file"))?;
    let ops = |part: &str| list(step.get(part), &format!("{name}.{part}"));
    let layers = model_config(text(args, "model")?)?.num_hidden_layers;
    let (before, per_layer, after) = (ops("before")?, ops("per_layer")?, ops("after")?);
    // The first layer's kernels, where the file lists them apart.
    let first_layer = match step.get("first_layer") {
        Some(_) => ops("first_layer")?,
        None => per_layer.clone(),
    };
    // The whole step for `n` layers, on the backend asked for.
    let launches = |n: usize| -> Result<usize, String> {
        let mut all = before.clone();
        for layer in 0..n {
            all.extend(
                if layer == 0 { &first_layer } else { &per_layer }
                    .iter()
                    .cloned(),
            );
        }
        all.extend(after.iter().cloned());
        match args
            .get("backend")
            .and_then(|b| b.as_str())
            .unwrap_or("cuda")
        {
            "cuda" => Ok(all.len()),
            "cpu" => {
                let cpu = book["cpu"].as_table().ok_or("no [cpu] table")?;
                Ok(on_cpu(cpu, &all)?.len())
            }
            other => Err(format!("unknown backend `{other}`")),
        }
    };
    Ok(match text(args, "output")? {
        "total" => launches(layers)?,
        "per_layer" => launches(2)? - launches(1)?,
        other => return Err(format!("unknown output `{other}`")),
    } as f64)
}

/// One layer's attention for one sequence of `seq_len` tokens whose last `query_len` are this
/// step's rows (1: a decode; `seq_len`: a whole prompt), with `num_heads` query heads and
/// `num_kv_heads` KV heads of size `head_dim`, stored in `dtype_bytes` per element.
///
/// - `pairs`: (query row, key) pairs the engine's paged attention computes, counted from what
///   it reads: `query_len · (seq_len − query_len) + query_len · (query_len + 1) / 2` (causal).
/// - `qk_flops`: q·k for every pair and query head, `head_dim` multiply-adds of 2 FLOPs each
///   (how the GEMM ceiling's TFLOP/s count): `2 · head_dim · num_heads · pairs`.
/// - `flops`: that and p·V, as many again: `4 · head_dim · num_heads · pairs` (the softmax's
///   exponentials and sums, a few per pair, are left out).
/// - `bytes`: the least a kernel moves: q read and the output written once
///   (`query_len · num_heads · head_dim` each), K and V read once
///   (`seq_len · num_kv_heads · head_dim` each).
/// - `intensity`: `flops / bytes`, FLOPs per byte.
fn attention_cost(args: &Args) -> Result<f64, String> {
    let (n, q) = (int(args, "seq_len")?, int(args, "query_len")?);
    let (h, kv, d) = (
        int(args, "num_heads")?,
        int(args, "num_kv_heads")?,
        int(args, "head_dim")?,
    );
    let elem = int(args, "dtype_bytes")? as f64;
    let pairs = attention_pairs(n, q)? as f64;
    let qk_flops = 2.0 * (d * h) as f64 * pairs;
    let flops = 2.0 * qk_flops;
    let bytes = elem * (2 * q * h * d + 2 * n * kv * d) as f64;
    Ok(match text(args, "output")? {
        "pairs" => pairs,
        "qk_flops" => qk_flops,
        "flops" => flops,
        "bytes" => bytes,
        "intensity" => flops / bytes,
        other => return Err(format!("unknown output `{other}`")),
    })
}

/// The (query row, key) pairs the engine's paged attention computes for a sequence of `n`
/// tokens whose last `q` are rows, remembered per process: reading them off a one-hot cache
/// costs `q · n²` (a second for a 1024-token prompt in a debug build), and the quiz templates
/// ask for several outputs of the same shape.
fn attention_pairs(n: usize, q: usize) -> Result<usize, String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashMap<(usize, usize), usize>>> = Mutex::new(None);
    let cached = || SEEN.lock().ok()?.as_ref()?.get(&(n, q)).copied();
    if let Some(p) = cached() {
        return Ok(p);
    }
    let pairs = attention_read_slots(16, n, q)?.iter().map(Vec::len).sum();
    if let Ok(mut seen) = SEEN.lock() {
        seen.get_or_insert_with(HashMap::new).insert((n, q), pairs);
    }
    Ok(pairs)
}

/// The engine's CUDA graph sizes for `max_num_seqs`: `output` `padded` is the batch a decode
/// of `num_seqs` sequences replays as (0: none, it runs eagerly), `num_sizes` how many sizes
/// have a graph.
fn cuda_graph_size(args: &Args) -> Result<f64, String> {
    let sizes = capture_sizes(int(args, "max_num_seqs")?);
    Ok(match text(args, "output")? {
        "padded" => padded_size(int(args, "num_seqs")?, &sizes).unwrap_or(0),
        "num_sizes" => sizes.len(),
        other => return Err(format!("unknown output `{other}`")),
    } as f64)
}

/// Bytes the memory system moves at a time for a global load (an L2 sector).
pub const SECTOR_BYTES: usize = 32;

/// One warp's load: thread `i` of 32 reads `elem_bytes` at element `i · stride` of an array
/// that starts on a sector boundary. The memory system moves whole 32-byte sectors, so the
/// warp costs every sector any thread touches. `output`: `sectors`, `bytes_moved`, or
/// `efficiency_percent`: the distinct bytes asked for ÷ the bytes moved (Nsight Compute's
/// global load efficiency; Stage 4's execution model counts the same way).
fn warp_load(args: &Args) -> Result<f64, String> {
    let (elem, stride) = (int(args, "elem_bytes")?, int(args, "stride")?);
    if elem == 0 {
        return Err("elem_bytes must be at least 1".into());
    }
    let bytes: std::collections::BTreeSet<usize> = (0..32)
        .flat_map(|i| i * stride * elem..(i * stride + 1) * elem)
        .collect();
    let sectors: std::collections::BTreeSet<usize> =
        bytes.iter().map(|b| b / SECTOR_BYTES).collect();
    let moved = sectors.len() * SECTOR_BYTES;
    Ok(match text(args, "output")? {
        "sectors" => sectors.len() as f64,
        "bytes_moved" => moved as f64,
        "efficiency_percent" => 100.0 * bytes.len() as f64 / moved as f64,
        other => return Err(format!("unknown output `{other}`")),
    })
}

/// Calls the Stage 4 check function `name`.
pub fn call(name: &str, args: &Args) -> Result<f64, String> {
    match name {
        "kernel_launches" => kernel_launches(args),
        "attention_cost" => attention_cost(args),
        "cuda_graph_size" => cuda_graph_size(args),
        "warp_load" => warp_load(args),
        other => Err(format!("`{other}` is not a Stage 4 check function")),
    }
}
