//! Stage 3's numeric questions: parameters, weight bytes, KV cache sizes, GQA, the model
//! runner's inputs, RMSNorm, sampling and paged attention.

use super::*;
use crate::template::{keep, thousands, Args, Kind, Rng, Values};

/// Stage 3's kinds.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "kv_bytes_per_token",
        check_fn: "kv_cache_bytes_per_block",
        draw: draw_kv_per_token,
        derive: derive_kv,
        refit: keep,
    },
    Kind {
        name: "kv_block_mib",
        check_fn: "kv_cache_bytes_per_block",
        draw: draw_kv_block_mib,
        derive: derive_kv,
        refit: keep,
    },
    Kind {
        name: "kv_blocks_for_budget",
        check_fn: "num_blocks_for_budget",
        draw: draw_kv_budget,
        derive: derive_kv,
        refit: keep,
    },
    Kind {
        name: "queries_per_kv_head",
        check_fn: "num_queries_per_kv",
        draw: draw_model,
        derive: derive_heads,
        refit: keep,
    },
    Kind {
        name: "weight_bytes",
        check_fn: "weight_bytes",
        draw: draw_weight_bytes,
        derive: derive_weight_bytes,
        refit: keep,
    },
    Kind {
        name: "parameter_count_config",
        check_fn: "parameter_count",
        draw: with_any_model,
        derive: derive_parameter_count,
        refit: keep,
    },
    Kind {
        name: "parameter_count_shape",
        check_fn: "parameter_count",
        draw: with_any_model,
        derive: derive_parameter_count,
        refit: keep,
    },
    Kind {
        name: "decode_row_slot",
        check_fn: "prepare_inputs",
        draw: draw_decode_and_prefill,
        derive: derive_decode_and_prefill,
        refit: keep,
    },
    Kind {
        name: "last_row_slot",
        check_fn: "prepare_inputs",
        draw: draw_decode_and_prefill,
        derive: derive_decode_and_prefill,
        refit: last_row,
    },
    Kind {
        name: "query_start_loc_total",
        check_fn: "prepare_inputs",
        draw: draw_decode_and_prefill,
        derive: derive_decode_and_prefill,
        refit: keep,
    },
    Kind {
        name: "logits_rows_first_step",
        check_fn: "chunked_prefill",
        draw: draw_one_step_prompt,
        derive: derive_one_step_prompt,
        refit: keep,
    },
    Kind {
        name: "rms_norm_first",
        check_fn: "rms_norm",
        draw: draw_rms_norm,
        derive: derive_rms_norm,
        refit: keep,
    },
    Kind {
        name: "top_p_support",
        check_fn: "sample_support",
        draw: draw_four_tokens,
        derive: derive_four_tokens,
        refit: keep,
    },
    Kind {
        name: "top_k_support",
        check_fn: "sample_support",
        draw: draw_four_tokens,
        derive: derive_four_tokens,
        refit: keep,
    },
    Kind {
        name: "greedy_tie",
        check_fn: "argmax",
        draw: draw_tie,
        derive: derive_tie,
        refit: keep,
    },
    Kind {
        name: "decode_blocks_read",
        check_fn: "paged_attention_reads",
        draw: draw_decode_reads,
        derive: derive_reads,
        refit: keep,
    },
    Kind {
        name: "gqa_kv_head",
        check_fn: "paged_attention_kv_head",
        draw: draw_query_head,
        derive: derive_query_head,
        refit: keep,
    },
    Kind {
        name: "chunk_first_row_keys",
        check_fn: "paged_attention_reads",
        draw: draw_chunk_reads,
        derive: derive_reads,
        refit: keep,
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

// The engine's parameter count split into what every layer holds and the rest (tables and
// the final norm), by counting the model with one layer more.
fn derive_parameter_count(args: &Args) -> Result<Values, String> {
    use engine::model_executor::weights::parameter_count;
    let id = text(args, "model")?;
    let c = model_config(id)?;
    let mut deeper = c.clone();
    deeper.num_hidden_layers += 1;
    let (all, layers) = (parameter_count(&c), c.num_hidden_layers as u64);
    let per_layer = parameter_count(&deeper) - all;
    let rest = all - layers * per_layer;
    let tied = c.tie_word_embeddings;
    Ok(values(&[
        ("model_name", model_name(id)),
        ("layers", layers.to_string()),
        ("hidden", c.hidden_size.to_string()),
        ("mlp", c.intermediate_size.to_string()),
        ("vocab", c.vocab_size.to_string()),
        ("q_heads", c.num_attention_heads.to_string()),
        ("kv_heads", c.num_key_value_heads.to_string()),
        ("head_dim", c.head_dim.to_string()),
        (
            "lm_head",
            if tied {
                "LM head tied to the embeddings"
            } else {
                "untied LM head"
            }
            .to_string(),
        ),
        (
            "lm_head_bold",
            if tied {
                "LM head **tied** to the embeddings"
            } else {
                "LM head **untied**"
            }
            .to_string(),
        ),
        (
            "tables",
            if tied {
                "The embeddings (counted once: the LM head reuses them)"
            } else {
                "Embeddings and LM head"
            }
            .to_string(),
        ),
        ("per_layer", thousands(per_layer)),
        ("rest", thousands(rest)),
        ("total", thousands(all)),
    ]))
}

/// A `seqs` entry of `prepare_inputs`.
fn seq(start: u64, num_tokens: u64, table: &[u64]) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("start_position".into(), i(start));
    t.insert("num_tokens".into(), i(num_tokens));
    t.insert(
        "block_table".into(),
        toml::Value::Array(table.iter().map(|&b| i(b)).collect()),
    );
    toml::Value::Table(t)
}

// Sequence A decodes one token at a position of 1 to 6 blocks; sequence B prefills 2 to 3
// blocks' worth; their tables are scattered and disjoint.
fn draw_decode_and_prefill(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let b = rng.pick(&[8, 16, 32]);
    let pos_a = rng.range(1, 6 * b - 1);
    let len_b = rng.range(2, 3 * b);
    let (na, nb) = (pos_a / b + 1, len_b.div_ceil(b));
    let blocks = scattered_blocks(rng, (na + nb) as usize);
    let (table_a, table_b) = blocks.split_at(na as usize);
    set(&mut args, "block_size", b);
    args.insert(
        "seqs".into(),
        toml::Value::Array(vec![seq(pos_a, 1, table_a), seq(0, len_b, table_b)]),
    );
    last_row(args)
}

/// The index of the batch's last row, for the question that asks for it.
fn last_row(mut args: Args) -> Args {
    if text(&args, "field") == Ok("slot_mapping") && int(&args, "index").is_ok_and(|i| i > 0) {
        let rows: u64 = seqs(&args)
            .map(|s| s.iter().map(|(_, n, _)| n).sum())
            .unwrap_or(1);
        set(&mut args, "index", rows.saturating_sub(1));
    }
    args
}

/// `(start_position, num_tokens, block_table)` of each of `seqs`.
fn seqs(args: &Args) -> Result<Vec<(u64, u64, Vec<u64>)>, String> {
    let list = args
        .get("seqs")
        .and_then(|v| v.as_array())
        .ok_or("argument `seqs` must be a list")?;
    list.iter()
        .map(|v| {
            let t = v.as_table().ok_or("each of `seqs` is a table")?;
            Ok((
                int(t, "start_position")?,
                int(t, "num_tokens")?,
                ints(t, "block_table")?,
            ))
        })
        .collect()
}

fn derive_decode_and_prefill(args: &Args) -> Result<Values, String> {
    let b = int(args, "block_size")?.max(1);
    let all = seqs(args)?;
    let [(pos_a, 1, table_a), (0, len_b, table_b)] = all.as_slice() else {
        return Err("this template's batch is one decode and one prefill".into());
    };
    let show = |t: &[u64]| {
        let items: Vec<String> = t.iter().map(|x| x.to_string()).collect();
        format!("[{}]", items.join(", "))
    };
    // Where a position of a table lives: (logical block, physical block, offset).
    let place = |p: u64, t: &[u64]| -> Result<(u64, u64, u64), String> {
        let logical = p / b;
        let physical = *t.get(logical as usize).ok_or("a position past its table")?;
        Ok((logical, physical, p % b))
    };
    let (la, pa, oa) = place(*pos_a, table_a)?;
    let last = len_b - 1;
    let (lb, pb, ob) = place(last, table_b)?;
    Ok(values(&[
        ("pos_a", pos_a.to_string()),
        ("table_a", show(table_a)),
        ("len_b", len_b.to_string()),
        ("table_b", show(table_b)),
        ("logical_a", la.to_string()),
        ("physical_a", pa.to_string()),
        ("offset_a", oa.to_string()),
        ("last_pos_b", last.to_string()),
        ("logical_b", lb.to_string()),
        ("physical_b", pb.to_string()),
        ("offset_b", ob.to_string()),
        ("rows", (1 + len_b).to_string()),
        ("seq_len_a", (pos_a + 1).to_string()),
    ]))
}

// A prompt within or beyond one step's budget: its first step's logits rows.
fn draw_one_step_prompt(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let budget = rng.pick(&[512, 1024, 2048]);
    set(&mut args, "max_num_batched_tokens", budget);
    set(&mut args, "prompt_len", rng.range(16, 2 * budget));
    args
}

fn derive_one_step_prompt(args: &Args) -> Result<Values, String> {
    let (n, budget) = (
        int(args, "prompt_len")?,
        int(args, "max_num_batched_tokens")?,
    );
    let rows = engine("chunked_prefill", args)? as u64;
    let fits = n <= budget;
    Ok(values(&[
        (
            "fits",
            if fits {
                "fits one step"
            } else {
                "needs more than one step"
            }
            .to_string(),
        ),
        (
            "that_step",
            if fits {
                "in that step"
            } else {
                "in its first step"
            }
            .to_string(),
        ),
        ("chunk", n.min(budget).to_string()),
        (
            "rows_text",
            format!("{rows} row{}", if rows == 1 { "" } else { "s" }),
        ),
    ]))
}

fn floats(args: &Args, key: &str) -> Result<Vec<f64>, String> {
    let list = args
        .get(key)
        .and_then(|v| v.as_array())
        .ok_or_else(|| format!("argument `{key}` must be a list"))?;
    list.iter()
        .map(|v| match v {
            toml::Value::Float(f) => Ok(*f),
            toml::Value::Integer(i) => Ok(*i as f64),
            _ => Err(format!("argument `{key}` must hold numbers")),
        })
        .collect()
}

fn set_floats(args: &mut Args, key: &str, v: &[f64]) {
    let list = v.iter().map(|&x| toml::Value::Float(x)).collect();
    args.insert(key.into(), toml::Value::Array(list));
}

// A row of two distinct integers from 1 to 12, weight 1 and eps 0.
fn draw_rms_norm(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let a = rng.range(1, 12);
    let b = (a + rng.range(1, 11) - 1) % 12 + 1;
    set_floats(&mut args, "x", &[a as f64, b as f64]);
    args
}

fn derive_rms_norm(args: &Args) -> Result<Values, String> {
    let x = floats(args, "x")?;
    let [a, b] = x.as_slice() else {
        return Err("this template's row has two elements".into());
    };
    let mean_sq = (a * a + b * b) / 2.0;
    Ok(values(&[
        ("x_text", format!("[{}, {}]", short(*a, 4), short(*b, 4))),
        ("a", short(*a, 4)),
        ("b", short(*b, 4)),
        ("mean_sq", short(mean_sq, 4)),
        ("rms", format!("{:.4}", mean_sq.sqrt())),
    ]))
}

/// Four probabilities, largest first, none of whose running sums is one of [`TOP_PS`].
const DISTRIBUTIONS: &[[f64; 4]] = &[
    [0.5, 0.3, 0.15, 0.05],
    [0.4, 0.3, 0.2, 0.1],
    [0.6, 0.2, 0.15, 0.05],
    [0.7, 0.15, 0.1, 0.05],
    [0.35, 0.3, 0.2, 0.15],
    [0.45, 0.35, 0.15, 0.05],
];

const TOP_PS: &[f64] = &[0.32, 0.42, 0.58, 0.66, 0.75, 0.83, 0.92];

// Four tokens with one of [`DISTRIBUTIONS`] (logits their natural logs); a top-p or a top-k.
fn draw_four_tokens(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let probs = rng.pick(DISTRIBUTIONS);
    let logits: Vec<f64> = probs.iter().map(|p| (p.ln() as f32) as f64).collect();
    set_floats(&mut args, "logits", &logits);
    if args.contains_key("top_k") {
        set(&mut args, "top_k", rng.range(2, 4));
    } else {
        args.insert("top_p".into(), toml::Value::Float(rng.pick(TOP_PS)));
    }
    args
}

fn derive_four_tokens(args: &Args) -> Result<Values, String> {
    let probs: Vec<f64> = floats(args, "logits")?.iter().map(|l| l.exp()).collect();
    let p = crate::engine_calls::float(args, "top_p")?;
    let texts: Vec<String> = probs.iter().map(|&q| short(q, 2)).collect();
    // The running sums until one reaches p: "0.5 < 0.75, then 0.5 + 0.3 = 0.8 ≥ 0.75".
    let (mut steps, mut sum) = (Vec::new(), 0.0);
    for (k, q) in probs.iter().enumerate() {
        sum += q;
        let terms = texts[..=k].join(" + ");
        let lhs = if k == 0 {
            terms
        } else {
            format!("{terms} = {}", short(sum, 2))
        };
        let reached = sum >= p - 1e-9;
        steps.push(format!(
            "{lhs} {} {}",
            if reached { "≥" } else { "<" },
            short(p, 2)
        ));
        if reached {
            break;
        }
    }
    let k = int(args, "top_k").unwrap_or(probs.len() as u64) as usize;
    let kept: f64 = probs.iter().take(k).sum();
    let renorm: Vec<String> = texts
        .iter()
        .take(k)
        .map(|t| format!("{t}/{}", short(kept, 2)))
        .collect();
    Ok(values(&[
        ("probs_text", spoken_list(&texts)),
        ("top_p_text", short(p, 2)),
        ("mass_steps", steps.join(", then ")),
        ("renormalized", spoken_list(&renorm)),
    ]))
}

// Two distinct ids tie for the largest logit among 16 to 64.
fn draw_tie(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let vocab = rng.pick(&[16, 32, 64]);
    let mut ids: Vec<u64> = (0..vocab).collect();
    rng.shuffle(&mut ids);
    set(&mut args, "vocab_size", vocab);
    set_list(&mut args, "largest", &ids[..2]);
    args
}

fn derive_tie(args: &Args) -> Result<Values, String> {
    let ids = ints(args, "largest")?;
    let [a, b] = ids.as_slice() else {
        return Err("this template's tie is between two ids".into());
    };
    Ok(values(&[("id_a", a.to_string()), ("id_b", b.to_string())]))
}

// A decode at a position of up to 10 blocks.
fn draw_decode_reads(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let b = rng.pick(&[8, 16, 32]);
    set(&mut args, "block_size", b);
    set(&mut args, "seq_len", rng.range(b + 1, 10 * b));
    args
}

// A chunk of 2 or more rows after at least one cached token.
fn draw_chunk_reads(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let seq_len = rng.range(8, 64);
    set(&mut args, "seq_len", seq_len);
    set(&mut args, "query_len", rng.range(2, seq_len - 2));
    args
}

fn derive_reads(args: &Args) -> Result<Values, String> {
    let (b, n) = (int(args, "block_size")?.max(1), int(args, "seq_len")?);
    let q = int(args, "query_len").unwrap_or(1);
    let blocks = engine_with("paged_attention_reads", args, &[("output", s("blocks"))])? as u64;
    Ok(values(&[
        ("position", n.saturating_sub(1).to_string()),
        ("last_block", (n.saturating_sub(1) / b).to_string()),
        ("blocks_word", number_word(blocks)),
        ("cached", n.saturating_sub(q).to_string()),
    ]))
}

// One of the models' head shapes, any query head.
fn draw_query_head(rng: &mut Rng, book: &Args) -> Args {
    let mut args = with_any_model(rng, book);
    if let Ok(c) = text(&args, "model").and_then(model_config) {
        set(&mut args, "num_heads", c.num_attention_heads as u64);
        set(&mut args, "num_kv_heads", c.num_key_value_heads as u64);
        set(
            &mut args,
            "query_head",
            rng.range(0, c.num_attention_heads as u64 - 1),
        );
    }
    args
}

fn derive_query_head(args: &Args) -> Result<Values, String> {
    let (h, kv) = (int(args, "num_heads")?, int(args, "num_kv_heads")?.max(1));
    let c = model_config(text(args, "model")?)?;
    if (c.num_attention_heads as u64, c.num_key_value_heads as u64) != (h, kv) {
        return Err("the heads are the model's".into());
    }
    let group = h / kv;
    let first = int(args, "query_head")? / group.max(1) * group;
    Ok(values(&[
        ("model_name", model_name(text(args, "model")?)),
        ("group", group.to_string()),
        ("group_first", first.to_string()),
        ("group_last", (first + group - 1).to_string()),
    ]))
}
