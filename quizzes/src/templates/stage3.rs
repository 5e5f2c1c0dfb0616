//! Stage 3's numeric questions: parameters, weight bytes, KV cache sizes, GQA, the model
//! runner's inputs, RMSNorm, sampling and paged attention.

use super::*;
use crate::engine_calls::model_config;
use crate::template::{thousands, Args, Kind, Rng, Values};

/// Stage 3's kinds.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "kv_bytes_per_token",
        check_fn: "kv_cache_bytes_per_block",
        draw: draw_kv_per_token,
        derive: derive_kv,
    },
    Kind {
        name: "kv_block_mib",
        check_fn: "kv_cache_bytes_per_block",
        draw: draw_kv_block_mib,
        derive: derive_kv,
    },
    Kind {
        name: "kv_blocks_for_budget",
        check_fn: "num_blocks_for_budget",
        draw: draw_kv_budget,
        derive: derive_kv,
    },
    Kind {
        name: "queries_per_kv_head",
        check_fn: "num_queries_per_kv",
        draw: draw_model,
        derive: derive_heads,
    },
    Kind {
        name: "weight_bytes",
        check_fn: "weight_bytes",
        draw: draw_weight_bytes,
        derive: derive_weight_bytes,
    },
];

// Another model, the same precision (the precision is in the question's words).
fn draw_weight_bytes(rng: &mut Rng, book: &Args) -> Args {
    with_any_model(rng, book)
}

fn derive_weight_bytes(args: &Args) -> Result<Values, String> {
    let id = text(args, "model")?;
    let config = model_config(id)?;
    let name = model_name(id);
    let bits = int(args, "bits")?;
    let bytes = engine::model_executor::weights::weight_bytes(&config, bits);
    Ok(values(&[
        ("model_name", name.clone()),
        (
            "params",
            thousands(engine::model_executor::weights::parameter_count(&config)),
        ),
        ("bytes", thousands(bytes)),
        ("gib", format!("{:.2}", bytes as f64 / (1u64 << 30) as f64)),
    ]))
}

// Bytes of KV cache per token: another model, another element size.
fn draw_kv_per_token(rng: &mut Rng, book: &Args) -> Args {
    let mut args = with_any_model(rng, book);
    set(&mut args, "dtype_bytes", rng.pick(&[1, 2, 4]));
    args
}

// One block in MiB, an integer: the Llama models at block sizes that make whole MiB.
fn draw_kv_block_mib(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let (id, block_size) = rng.pick(&[
        ("llama-2-7b", 2),
        ("llama-2-7b", 16),
        ("llama-2-7b", 32),
        ("llama-2-7b", 64),
        ("llama-3.2-1b", 32),
        ("llama-3.2-1b", 64),
        ("llama-3.2-1b", 128),
    ]);
    args.insert("model".into(), toml::Value::String(id.into()));
    set(&mut args, "block_size", block_size);
    args
}

// Blocks for a budget of f32 KV cache: another model, block size and budget.
fn draw_kv_budget(rng: &mut Rng, book: &Args) -> Args {
    let mut args = with_any_model(rng, book);
    set(&mut args, "block_size", rng.pick(&[8, 16, 32]));
    set(
        &mut args,
        "budget_bytes",
        rng.pick(&[1u64 << 28, 1 << 29, 1 << 30, 1 << 31, 1 << 32]),
    );
    args
}

/// The model's shape and the KV sizes the explanations show.
fn derive_kv(args: &Args) -> Result<Values, String> {
    let id = text(args, "model")?;
    let c = model_config(id)?;
    let name = model_name(id);
    let block_size = int(args, "block_size")? as usize;
    let dtype_bytes = args
        .get("dtype_bytes")
        .map_or(Ok(4), |_| int(args, "dtype_bytes"))? as usize;
    let per_token = engine::worker::cache_engine::kv_cache_bytes_per_block(&c, 1, dtype_bytes);
    let per_block = per_token * block_size;
    let mut v = values(&[
        ("model_name", name.clone()),
        ("layers", c.num_hidden_layers.to_string()),
        ("kv_heads", c.num_key_value_heads.to_string()),
        ("head_dim", c.head_dim.to_string()),
        (
            "dtype_name",
            match dtype_bytes {
                1 => "FP8",
                2 => "BF16",
                _ => "FP32",
            }
            .to_string(),
        ),
        ("token_bytes", thousands(per_token as u64)),
        (
            "token_mib",
            format!("{}", per_token as f64 / (1u64 << 20) as f64),
        ),
        ("block_bytes", thousands(per_block as u64)),
    ]);
    if let Ok(budget) = int(args, "budget_bytes") {
        let blocks = budget as usize / per_block.max(1);
        v.insert("budget_bytes_text".into(), thousands(budget));
        v.insert(
            "budget_gib".into(),
            format!("{}", budget as f64 / (1u64 << 30) as f64),
        );
        v.insert("budget_power".into(), power_of_two(budget.trailing_zeros()));
        v.insert("tokens".into(), thousands((blocks * block_size) as u64));
    }
    Ok(v)
}

// Another of the models the book knows.
fn draw_model(rng: &mut Rng, book: &Args) -> Args {
    with_any_model(rng, book)
}

fn derive_heads(args: &Args) -> Result<Values, String> {
    let id = text(args, "model")?;
    let c = model_config(id)?;
    let name = model_name(id);
    Ok(values(&[
        ("model_name", name.clone()),
        ("q_heads", c.num_attention_heads.to_string()),
        ("kv_heads", c.num_key_value_heads.to_string()),
    ]))
}
