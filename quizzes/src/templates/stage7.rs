//! Stage 7's numeric questions: hybrid TP × PP, answered by the engine's rank layout, memory
//! model and planner.

use super::*;
use crate::hybrid_calls::model;
use crate::template::{keep, thousands, Args, Kind, Rng, Values};

/// Stage 7's kinds.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "rank_stage",
        check_fn: "rank_place",
        draw: draw_rank,
        derive: derive_rank,
        refit: keep,
    },
    Kind {
        name: "rank_sends_to",
        check_fn: "rank_place",
        draw: draw_rank,
        derive: derive_rank,
        refit: sender_rank,
    },
    Kind {
        name: "tp_weight_gb",
        check_fn: "split_memory",
        draw: draw_split,
        derive: derive_split,
        refit: keep,
    },
    Kind {
        name: "last_stage_weight_gb",
        check_fn: "split_memory",
        draw: draw_split,
        derive: derive_split,
        refit: keep,
    },
    Kind {
        name: "middle_stage_weight_gb",
        check_fn: "split_memory",
        draw: draw_split,
        derive: derive_split,
        refit: keep,
    },
    Kind {
        name: "split_kv_bytes_per_token",
        check_fn: "split_memory",
        draw: draw_split,
        derive: derive_split,
        refit: keep,
    },
    Kind {
        name: "kv_bytes_past_kv_heads",
        check_fn: "split_memory",
        draw: draw_split,
        derive: derive_split,
        refit: keep,
    },
    Kind {
        name: "plan_latency_pp",
        check_fn: "plan",
        draw: draw_plan,
        derive: derive_plan,
        refit: keep,
    },
    Kind {
        name: "plan_throughput_replicas",
        check_fn: "plan",
        draw: draw_plan,
        derive: derive_plan,
        refit: keep,
    },
];

// TP 2, 4 or 8 × PP 2 to 4, any rank (a rank of a stage before the last for `sends_to`).
fn draw_rank(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let (tp, pp) = (rng.pick(&[2, 4, 8]), rng.range(2, 4));
    set(&mut args, "tp", tp);
    set(&mut args, "pp", pp);
    set(&mut args, "rank", rng.range(0, tp * pp - 1));
    sender_rank(args)
}

/// A rank that has a next stage to send to, for the question that asks where it sends.
fn sender_rank(mut args: Args) -> Args {
    if text(&args, "output") == Ok("sends_to") {
        let (tp, pp) = (int(&args, "tp").unwrap_or(1), int(&args, "pp").unwrap_or(2));
        let senders = (pp.max(2) - 1) * tp.max(1);
        let rank = int(&args, "rank").unwrap_or(0);
        set(&mut args, "rank", rank % senders);
    }
    args
}

fn derive_rank(args: &Args) -> Result<Values, String> {
    let (tp, pp) = (int(args, "tp")?, int(args, "pp")?);
    let place = |o: &str| engine_with("rank_place", args, &[("output", s(o))]).map(|v| v as u64);
    let (stage, slice, first) = (place("stage")?, place("tp_rank")?, place("tp_group_first")?);
    let world = tp * pp;
    let w = number_word(world);
    let mut c = w.chars();
    let world_word = c.next().map_or(w.clone(), |f| {
        f.to_uppercase().collect::<String>() + c.as_str()
    });
    Ok(values(&[
        ("world_word", world_word),
        ("stage", stage.to_string()),
        ("slice", slice.to_string()),
        ("group_first", first.to_string()),
        ("group_last", (first + tp - 1).to_string()),
        ("next_stage", (stage + 1).to_string()),
    ]))
}

/// The untied models whose shapes the split questions use.
const SPLIT_MODELS: &[&str] = &["llama-2-70b", "llama-3-70b", "llama-3-8b", "llama-2-7b"];

// A model and a split that fit the question: TP alone, the last or a middle stage of TP × PP,
// a KV cache over TP × PP, or TP past the KV heads (by the book's own split).
fn draw_split(rng: &mut Rng, book: &Args) -> Args {
    let (book_tp, book_pp) = (int(book, "tp").unwrap_or(1), int(book, "pp").unwrap_or(1));
    let stage = int(book, "stage").ok();
    let mut args = with_model(rng, book, SPLIT_MODELS);
    let (tp, pp) = if book_tp > 8 {
        // Past the KV heads: the models with 8 KV heads.
        args.insert(
            "model".into(),
            s(rng.pick(&["llama-2-70b", "llama-3-70b", "llama-3-8b"])),
        );
        (rng.pick(&[16, 32]), 1)
    } else if book_pp == 1 {
        (rng.pick(&[2, 4, 8]), 1)
    } else if stage.is_some_and(|s| s + 1 < book_pp) {
        (rng.pick(&[2, 4, 8]), rng.pick(&[4, 8]))
    } else {
        (rng.pick(&[2, 4, 8]), rng.pick(&[2, 4]))
    };
    set(&mut args, "tp", tp);
    set(&mut args, "pp", pp);
    if let Some(st) = stage {
        let st = if st + 1 == book_pp {
            pp - 1
        } else {
            rng.range(1, pp - 2)
        };
        set(&mut args, "stage", st);
    }
    args
}

fn derive_split(args: &Args) -> Result<Values, String> {
    use engine::distributed::memory_model::{layers_per_stage, stage_weight_bytes_per_gpu};
    let c = model(args)?;
    let (tp, pp) = (int(args, "tp")?, int(args, "pp")?);
    let ask = |changes: &[(&str, toml::Value)]| {
        engine_with("split_memory", args, changes).map(|v| v as u64)
    };
    let value = ask(&[])?;
    let layers = c.num_hidden_layers;
    let stage_layers = match int(args, "stage") {
        Ok(st) => layers_per_stage(layers, pp as usize)
            .get(st as usize)
            .copied()
            .ok_or("`stage` is past the last stage")?,
        Err(_) => layers_per_stage(layers, pp as usize)[0],
    };
    // One layer's parameters on one GPU: a middle stage of a pipeline of one layer a stage
    // holds exactly one layer and no table.
    let per_layer = stage_weight_bytes_per_gpu(&c, tp as usize, layers)
        .get(1)
        .copied()
        .unwrap_or(0)
        / 2;
    let fraction = match tp {
        1 => "all",
        2 => "half",
        4 => "a quarter",
        8 => "an eighth",
        _ => "a share",
    };
    let kv = c.num_key_value_heads as u64;
    let mut v = values(&[
        ("model_name", model_name(text(args, "model")?)),
        ("layers", layers.to_string()),
        ("hidden", c.hidden_size.to_string()),
        ("q_heads", c.num_attention_heads.to_string()),
        ("kv_heads", kv.to_string()),
        ("head_dim", c.head_dim.to_string()),
        ("mlp", c.intermediate_size.to_string()),
        ("vocab", c.vocab_size.to_string()),
        ("gpus", (tp * pp).to_string()),
        ("nodes_word", number_word(tp * pp / 8)),
        ("stage_layers", stage_layers.to_string()),
        ("fraction", fraction.to_string()),
        ("per_layer", thousands(per_layer)),
        ("vocab_rows", (c.vocab_size as u64 / tp.max(1)).to_string()),
        ("last_stage", pp.saturating_sub(1).to_string()),
        ("value_text", thousands(value)),
        ("params", thousands(value / 2)),
        ("kv_per_gpu", (kv / tp.max(1)).max(1).to_string()),
        ("copies", (tp / kv.max(1)).max(1).to_string()),
    ]);
    if text(args, "output") == Ok("kv_bytes_per_token") && tp > 8 {
        v.insert("tp8_text".into(), thousands(ask(&[("tp", i(8))])?));
    }
    Ok(v)
}

// A model, 8 to 32 GPUs of 16 to 141 GB: the first combination the planner can place.
fn draw_plan(rng: &mut Rng, book: &Args) -> Args {
    for _ in 0..50 {
        let mut args = with_model(rng, book, SPLIT_MODELS);
        set(&mut args, "gpus", rng.pick(&[8, 16, 24, 32]));
        let memory = rng.pick(&[16.0, 24.0, 48.0, 80.0, 141.0]);
        args.insert("gpu_memory_gb".into(), toml::Value::Float(memory));
        if engine("plan", &args).is_ok() {
            return args;
        }
    }
    book.clone()
}

fn derive_plan(args: &Args) -> Result<Values, String> {
    let chosen = |o: &str| engine_with("plan", args, &[("output", s(o))]).map(|v| v as u64);
    let (tp, pp) = (chosen("tp")?, chosen("pp")?);
    let memory = crate::engine_calls::float(args, "gpu_memory_gb")?;
    let gpu_name = match memory as u64 {
        141 => "H200s".to_string(),
        80 => "H100s".to_string(),
        gb => format!("GPUs of {gb} GB"),
    };
    Ok(values(&[
        ("memory_text", short(memory, 1)),
        ("gpu_name", gpu_name),
        ("rec_tp", tp.to_string()),
        ("rec_pp", pp.to_string()),
        ("copy_gpus", (tp * pp).to_string()),
    ]))
}
