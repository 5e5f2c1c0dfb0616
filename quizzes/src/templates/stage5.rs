//! Stage 5's numeric questions: tensor parallelism, counted by the CPU engine's communicators.

use super::*;
use crate::template::{keep, thousands, Args, Kind, Rng, Values};

/// Stage 5's kinds.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "ring_sent_ratio",
        check_fn: "ring_sent_ratio",
        draw: draw_ring,
        derive: derive_ring,
        refit: keep,
    },
    Kind {
        name: "tp_collectives_per_pass",
        check_fn: "tp_collectives",
        draw: draw_tp_layers,
        derive: derive_tp_layers,
        refit: keep,
    },
    Kind {
        name: "tp_all_reduce_tensor_gib",
        check_fn: "tp_all_reduce_volume",
        draw: draw_tp_layers,
        derive: derive_tp_layers,
        refit: keep,
    },
    Kind {
        name: "tp_all_reduce_sent_gib",
        check_fn: "tp_all_reduce_volume",
        draw: draw_tp_layers,
        derive: derive_tp_layers,
        refit: keep,
    },
    Kind {
        name: "largest_tp_size",
        check_fn: "tp_sizes_accepted",
        draw: draw_tp_sizes,
        derive: derive_tp_sizes,
        refit: keep,
    },
    Kind {
        name: "kv_head_copies",
        check_fn: "kv_head_copies",
        draw: draw_kv_copies,
        derive: derive_kv_copies,
        refit: keep,
    },
    Kind {
        name: "tp_decode_sent_bytes",
        check_fn: "tp_step_comm",
        draw: draw_step_comm,
        derive: derive_step_comm,
        refit: keep,
    },
];

// A ring of 2 to 8 ranks (each draw runs the CPU communicator's all-reduce on that many
// threads, so the test stays small).
fn draw_ring(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    set(&mut args, "ranks", rng.range(2, 8));
    args
}

fn derive_ring(args: &Args) -> Result<Values, String> {
    let n = int(args, "ranks")?;
    Ok(values(&[(
        "sent_steps",
        (2 * n.saturating_sub(1)).to_string(),
    )]))
}

// A Llama of 4 to 32 layers at TP 2 or 4 (each new shape is one CPU forward pass, or two
// for the layers' share, on a narrow model).
fn draw_tp_layers(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    set(&mut args, "layers", rng.pick(&[4, 8, 16, 32]));
    set(&mut args, "tp", rng.pick(&[2, 4]));
    if args.contains_key("tokens") {
        let (seqs, len) = (rng.pick(&[4, 8, 16, 32, 64]), rng.pick(&[512, 1024, 2048]));
        set(&mut args, "sequences", seqs);
        set(&mut args, "seq_len", len);
        set(&mut args, "tokens", seqs * len);
        set(&mut args, "hidden", rng.pick(&[2048, 4096, 5120, 8192]));
    }
    args
}

fn derive_tp_layers(args: &Args) -> Result<Values, String> {
    let (layers, tp) = (int(args, "layers")?, int(args, "tp")?);
    let mut counts = Args::new();
    set(&mut counts, "layers", layers);
    set(&mut counts, "tp", tp);
    counts.insert("op".into(), s("all_reduce"));
    counts.insert("part".into(), s("layers"));
    let layer_calls = engine("tp_collectives", &counts)? as u64;
    let mut v = values(&[
        ("layer_calls", layer_calls.to_string()),
        ("layer_calls_plus_one", (layer_calls + 1).to_string()),
    ]);
    if let Ok(tokens) = int(args, "tokens") {
        let (seqs, len) = (int(args, "sequences")?, int(args, "seq_len")?);
        if seqs * len != tokens {
            return Err("`tokens` is `sequences` × `seq_len`".into());
        }
        let tensor_mib = (tokens * int(args, "hidden")? * 2) as f64 / (1u64 << 20) as f64;
        let mut ring = Args::new();
        set(&mut ring, "ranks", tp);
        let ratio = engine("ring_sent_ratio", &ring)?;
        let total = engine_with(
            "tp_all_reduce_volume",
            args,
            &[("output", s("tensor_bytes"))],
        )? as u64;
        v.insert("tensor_mib".into(), short(tensor_mib, 2));
        v.insert("ratio".into(), short(ratio, 4));
        v.insert("sent_mib".into(), short(ratio * tensor_mib, 2));
        v.insert("tensor_bytes_text".into(), thousands(total));
    }
    Ok(v)
}

// One of the models, sizes up to its number of heads.
fn draw_tp_sizes(rng: &mut Rng, book: &Args) -> Args {
    let mut args = with_any_model(rng, book);
    if let Ok(c) = text(&args, "model").and_then(model_config) {
        set(&mut args, "max", c.num_attention_heads as u64);
    }
    args
}

fn derive_tp_sizes(args: &Args) -> Result<Values, String> {
    use engine::model_executor::tensor_parallel::check_tensor_parallel;
    let id = text(args, "model")?;
    let c = model_config(id)?;
    let accepted: Vec<u64> = (1..=int(args, "max")?)
        .filter(|&tp| check_tensor_parallel(&c, "m", tp as usize).is_ok())
        .collect();
    Ok(values(&[
        ("model_name", model_name(id)),
        ("q_heads", c.num_attention_heads.to_string()),
        ("kv_heads", c.num_key_value_heads.to_string()),
        ("mlp", c.intermediate_size.to_string()),
        ("accepted", spoken_list(&accepted)),
    ]))
}

// More ranks than KV heads: TP a multiple (2 or 4) of the KV heads that divides the heads.
fn draw_kv_copies(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let heads = rng.pick(&[16, 32, 64]);
    let kv = rng.pick(&[2, 4, 8]);
    let tp = (kv * rng.pick(&[2, 4])).min(heads);
    set(&mut args, "heads", heads);
    set(&mut args, "kv_heads", kv);
    set(&mut args, "tp", tp);
    args
}

fn derive_kv_copies(args: &Args) -> Result<Values, String> {
    let (heads, tp) = (int(args, "heads")?, int(args, "tp")?.max(1));
    Ok(values(&[("heads_per_rank", (heads / tp).to_string())]))
}

// The tiny model's shape at TP 2 or 4 (a SmolLM2 run costs seconds on the CPU).
fn draw_step_comm(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    args.insert("model".into(), s("tiny"));
    set(&mut args, "tp", rng.pick(&[2, 4]));
    set(&mut args, "prompt_len", rng.pick(&[8, 16]));
    args
}

fn derive_step_comm(args: &Args) -> Result<Values, String> {
    let id = text(args, "model")?;
    let c = model_config(id)?;
    let tp = int(args, "tp")?.max(1);
    let field = |f: &str| {
        engine_with(
            "tp_step_comm",
            args,
            &[("output", s(&format!("all_reduce.{f}")))],
        )
        .map(|v| v as u64)
    };
    let (calls, tensor, sent) = (
        field("calls")?,
        field("tensor_bytes")?,
        field("sent_bytes")?,
    );
    // 2(N − 1)/N as a fraction in lowest terms: 4/3, 3/2, 1.
    let (num, den) = (2 * (tp - 1), tp);
    let g = gcd(num, den).max(1);
    let ratio = if den / g == 1 {
        (num / g).to_string()
    } else {
        format!("{}/{}", num / g, den / g)
    };
    let name = model_name(id);
    Ok(values(&[
        ("shape_of", format!("{}'s shape", capitalized(&name))),
        ("layers", c.num_hidden_layers.to_string()),
        ("hidden", c.hidden_size.to_string()),
        ("calls", calls.to_string()),
        ("row_bytes", thousands(tensor / calls.max(1))),
        ("ratio_text", ratio),
        ("sent_each", thousands(sent / calls.max(1))),
        ("sent_text", thousands(sent)),
    ]))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// "The tiny model" for "the tiny model".
fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| {
        f.to_uppercase().collect::<String>() + c.as_str()
    })
}
