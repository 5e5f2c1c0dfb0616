//! Stage 4's numeric questions: the kernels of a forward step, CUDA graph sizes, the cost of
//! attention and a warp's memory transactions (the engine's own counts, no GPU needed).

use super::*;
use crate::template::{keep, thousands, Args, Kind, Rng, Values};

/// Stage 4's kinds.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "decode_kernel_launches",
        check_fn: "kernel_launches",
        draw: with_any_model,
        derive: derive_kernel_launches,
        refit: keep,
    },
    Kind {
        name: "cuda_graph_padded_batch",
        check_fn: "cuda_graph_size",
        draw: draw_graph_sizes,
        derive: derive_graph_sizes,
        refit: keep,
    },
    Kind {
        name: "cuda_graph_count",
        check_fn: "cuda_graph_size",
        draw: draw_graph_sizes,
        derive: derive_graph_sizes,
        refit: keep,
    },
    Kind {
        name: "decode_qk_flops",
        check_fn: "attention_cost",
        draw: draw_one_head,
        derive: derive_attention_cost,
        refit: keep,
    },
    Kind {
        name: "decode_attention_intensity",
        check_fn: "attention_cost",
        draw: draw_model_attention,
        derive: derive_attention_cost,
        refit: keep,
    },
    Kind {
        name: "prefill_attention_intensity",
        check_fn: "attention_cost",
        draw: draw_model_attention,
        derive: derive_attention_cost,
        refit: prefill_rows,
    },
    Kind {
        name: "warp_load_efficiency",
        check_fn: "warp_load",
        draw: draw_warp_load,
        derive: derive_warp_load,
        refit: keep,
    },
];

fn derive_kernel_launches(args: &Args) -> Result<Values, String> {
    let id = text(args, "model")?;
    let c = model_config(id)?;
    Ok(values(&[
        ("model_name", model_name(id)),
        ("layers", c.num_hidden_layers.to_string()),
    ]))
}

// A `max_num_seqs` of 32 to 512 (a multiple of 8) and a decode batch of 2 up to it.
fn draw_graph_sizes(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let max = 8 * rng.range(4, 64);
    set(&mut args, "max_num_seqs", max);
    if args.contains_key("num_seqs") {
        set(&mut args, "num_seqs", rng.range(2, max));
    }
    args
}

fn derive_graph_sizes(args: &Args) -> Result<Values, String> {
    let sizes = engine_with("cuda_graph_size", args, &[("output", s("num_sizes"))])? as u64;
    Ok(values(&[(
        "multiples",
        sizes.saturating_sub(3).to_string(),
    )]))
}

// One head of dimension 64 or 128 over 256 to 2048 cached tokens.
fn draw_one_head(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    set(&mut args, "seq_len", rng.pick(&[256, 512, 1024, 2048]));
    set(&mut args, "head_dim", rng.pick(&[64, 128]));
    args
}

// A model's heads (bf16) over 128 to 2048 tokens (a decode) or a prompt of up to 512.
fn draw_model_attention(rng: &mut Rng, book: &Args) -> Args {
    let mut args = with_any_model(rng, book);
    if let Ok(c) = text(&args, "model").and_then(model_config) {
        set(&mut args, "num_heads", c.num_attention_heads as u64);
        set(&mut args, "num_kv_heads", c.num_key_value_heads as u64);
        set(&mut args, "head_dim", c.head_dim as u64);
    }
    // A prefill's cost is counted by running paged attention on every (row, key) pair of a
    // one-hot cache: cubic in the prompt, so prompts stay at 512 tokens or fewer.
    let prefill = int(book, "query_len").is_ok_and(|q| q > 1);
    let lens: &[u64] = if prefill {
        &[128, 256, 384, 512]
    } else {
        &[128, 256, 512, 1024, 2048]
    };
    set(&mut args, "seq_len", rng.pick(lens));
    prefill_rows(args)
}

/// A prefill question's query rows are the whole prompt.
fn prefill_rows(mut args: Args) -> Args {
    if int(&args, "query_len").is_ok_and(|q| q > 1) {
        let n = int(&args, "seq_len").unwrap_or(1);
        set(&mut args, "query_len", n);
    }
    args
}

fn derive_attention_cost(args: &Args) -> Result<Values, String> {
    let cost = |output: &str| {
        engine_with("attention_cost", args, &[("output", s(output))]).map(|v| v as u64)
    };
    let mut v = values(&[
        ("pairs", thousands(cost("pairs")?)),
        ("qk_flops", thousands(cost("qk_flops")?)),
        ("flops", thousands(cost("flops")?)),
        ("bytes", thousands(cost("bytes")?)),
        ("seq_len_next", (int(args, "seq_len")? + 1).to_string()),
    ]);
    if let Ok(id) = text(args, "model") {
        let c = model_config(id)?;
        let heads = (int(args, "num_heads")?, int(args, "num_kv_heads")?);
        if heads != (c.num_attention_heads as u64, c.num_key_value_heads as u64) {
            return Err("the heads are the model's".into());
        }
        v.insert("model_name".into(), model_name(id));
    }
    Ok(v)
}

/// Element types by size, as the question names them.
const ELEMENTS: &[(u64, &str)] = &[(1, "int8"), (2, "bf16"), (4, "f32"), (8, "f64")];

// A column of a row-major matrix of 2 to 64 columns of 1- to 8-byte elements.
fn draw_warp_load(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    set(&mut args, "elem_bytes", rng.pick(ELEMENTS).0);
    set(&mut args, "stride", rng.pick(&[2, 4, 8, 16, 32, 64]));
    args
}

fn derive_warp_load(args: &Args) -> Result<Values, String> {
    let (elem, stride) = (int(args, "elem_bytes")?, int(args, "stride")?);
    let name = ELEMENTS
        .iter()
        .find(|(b, _)| *b == elem)
        .map_or("element", |(_, n)| n);
    let load =
        |output: &str| engine_with("warp_load", args, &[("output", s(output))]).map(|v| v as u64);
    Ok(values(&[
        ("type_name", name.to_string()),
        ("row_bytes", (elem * stride).to_string()),
        ("asked", (32 * elem).to_string()),
        ("sectors", load("sectors")?.to_string()),
        ("moved", load("bytes_moved")?.to_string()),
    ]))
}
