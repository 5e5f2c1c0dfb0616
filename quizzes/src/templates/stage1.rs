//! Stage 1's numeric questions: block tables, mixed batches, chunked prefill, preemption,
//! tenants and prefix caching, each answered by the engine's block functions or scheduler.

use super::*;
use crate::template::{keep, Args, Kind, Rng, Values};

/// Stage 1's kinds.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "slot_for_position",
        check_fn: "slot_for_position",
        draw: draw_slot,
        derive: derive_slot,
        refit: position_in_table,
    },
    Kind {
        name: "slot_of_last_token",
        check_fn: "slot_for_position",
        draw: draw_last_token_slot,
        derive: derive_slot,
        refit: keep,
    },
    Kind {
        name: "blocks_needed",
        check_fn: "blocks_needed",
        draw: draw_blocks_needed,
        derive: derive_blocks_needed,
        refit: keep,
    },
    Kind {
        name: "chunked_prefill_second_step",
        check_fn: "chunked_prefill",
        draw: draw_chunked_second_step,
        derive: derive_chunked_second_step,
        refit: keep,
    },
    Kind {
        name: "mixed_batch_tokens",
        check_fn: "schedule_mixed_batch",
        draw: draw_mixed_batch,
        derive: derive_mixed_batch,
        refit: keep,
    },
    Kind {
        name: "mixed_batch_prefill_blocks",
        check_fn: "schedule_mixed_batch",
        draw: draw_mixed_batch,
        derive: derive_mixed_batch,
        refit: keep,
    },
    Kind {
        name: "mixed_batch_new_blocks",
        check_fn: "schedule_mixed_batch",
        draw: draw_mixed_batch,
        derive: derive_mixed_batch,
        refit: keep,
    },
    Kind {
        name: "chunked_prefill_first_logits",
        check_fn: "chunked_prefill",
        draw: draw_chunked_first_step,
        derive: derive_chunked_first_step,
        refit: keep,
    },
    Kind {
        name: "fcfs_first_victim",
        check_fn: "fcfs_preemption",
        draw: draw_full_cache,
        derive: derive_full_cache,
        refit: keep,
    },
    Kind {
        name: "fcfs_preemption_step_scheduled",
        check_fn: "fcfs_preemption",
        draw: draw_full_cache,
        derive: derive_full_cache,
        refit: keep,
    },
    Kind {
        name: "max_model_len",
        check_fn: "max_model_len",
        draw: draw_max_model_len,
        derive: derive_max_model_len,
        refit: keep,
    },
    Kind {
        name: "fair_share_percent",
        check_fn: "tenant_share",
        draw: draw_fair_share,
        derive: derive_tenants,
        refit: keep,
    },
    Kind {
        name: "fair_late_tenant_step",
        check_fn: "tenant_share",
        draw: draw_fair_late_tenant,
        derive: derive_tenants,
        refit: keep,
    },
    Kind {
        name: "qos_overdue_step",
        check_fn: "tenant_share",
        draw: draw_qos_overdue,
        derive: derive_tenants,
        refit: keep,
    },
    Kind {
        name: "prefix_hit_shared_prefix",
        check_fn: "prefix_hit",
        draw: draw_shared_prefix,
        derive: derive_prefix_hit,
        refit: keep,
    },
    Kind {
        name: "prefix_hit_same_prompt",
        check_fn: "prefix_hit",
        draw: draw_same_prompt,
        derive: derive_prefix_hit,
        refit: keep,
    },
    Kind {
        name: "swap_out_blocks",
        check_fn: "preemption_cost",
        draw: draw_preemption_case,
        derive: derive_preemption_case,
        refit: keep,
    },
    Kind {
        name: "recompute_resume_tokens",
        check_fn: "preemption_cost",
        draw: draw_preemption_case,
        derive: derive_preemption_case,
        refit: keep,
    },
    Kind {
        name: "swap_fallback_resume_tokens",
        check_fn: "preemption_cost",
        draw: draw_preemption_case,
        derive: derive_preemption_case,
        refit: keep,
    },
];

// slot = table[p / B] · B + p mod B: a table of 2 to 5 distinct physical blocks, a position
// the table holds.
fn draw_slot(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let block_size = rng.pick(&[4, 8, 16, 32]);
    let len = rng.range(2, 5) as usize;
    set_list(&mut args, "block_table", &scattered_blocks(rng, len));
    set(&mut args, "block_size", block_size);
    set(
        &mut args,
        "position",
        rng.range(0, len as u64 * block_size - 1),
    );
    args
}

/// A position the block table holds, for a question that keeps the previous question's table
/// ("same table, another position"): the drawn position wrapped into the table's range.
fn position_in_table(mut args: Args) -> Args {
    let len = ints(&args, "block_table").map_or(1, |t| t.len() as u64);
    let capacity = (len * int(&args, "block_size").unwrap_or(1)).max(1);
    let p = int(&args, "position").unwrap_or(0);
    set(&mut args, "position", p % capacity);
    args
}

fn derive_slot(args: &Args) -> Result<Values, String> {
    let table = ints(args, "block_table")?;
    let (b, p) = (int(args, "block_size")?, int(args, "position")?);
    let logical = p / b.max(1);
    let physical = table
        .get(logical as usize)
        .ok_or_else(|| format!("position {p} is past the table"))?;
    Ok(values(&[
        ("num_tokens", (p + 1).to_string()),
        ("logical", logical.to_string()),
        ("offset", (p % b.max(1)).to_string()),
        ("physical", physical.to_string()),
    ]))
}

// A sequence of n tokens with a table of exactly ⌈n / B⌉ blocks; its last token's slot.
fn draw_last_token_slot(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let block_size = rng.pick(&[4, 8, 16, 32]);
    let num_tokens = rng.range(1, 5 * block_size);
    let len = num_tokens.div_ceil(block_size) as usize;
    set_list(&mut args, "block_table", &scattered_blocks(rng, len));
    set(&mut args, "block_size", block_size);
    set(&mut args, "position", num_tokens - 1);
    args
}

// ⌈n / B⌉ blocks for n tokens.
fn draw_blocks_needed(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    set(&mut args, "block_size", rng.pick(&[4, 8, 16, 32]));
    set(&mut args, "num_tokens", rng.range(1, 400));
    args
}

fn derive_blocks_needed(args: &Args) -> Result<Values, String> {
    let (n, b) = (int(args, "num_tokens")?, int(args, "block_size")?.max(1));
    let blocks = n.div_ceil(b);
    let fewer = blocks.saturating_sub(1);
    Ok(values(&[
        ("capacity", (blocks * b).to_string()),
        ("fewer", fewer.to_string()),
        ("fewer_capacity", (fewer * b).to_string()),
    ]))
}

// A prompt longer than the budget and at most twice it: its second step is its last.
fn draw_chunked_second_step(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let budget = rng.pick(&[128, 256, 384, 512, 1024, 2048]);
    set(&mut args, "max_num_batched_tokens", budget);
    set(&mut args, "prompt_len", rng.range(budget + 1, 2 * budget));
    args
}

fn derive_chunked_second_step(args: &Args) -> Result<Values, String> {
    let (n, budget) = (
        int(args, "prompt_len")?,
        int(args, "max_num_batched_tokens")?,
    );
    if int(args, "step")? != 2 || n <= budget || n > 2 * budget {
        return Err("this template asks for the second and last step of a prompt".into());
    }
    Ok(values(&[("rest", (n - budget).to_string())]))
}

// One to four new prompts and one to eight decodes, within a budget of 2048.
fn draw_mixed_batch(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let prompts: Vec<u64> = (0..rng.range(1, 4)).map(|_| rng.range(16, 500)).collect();
    let block_size = rng.pick(&[8, 16, 32]);
    // Half the time the decodes' next token starts a new block.
    let context = if rng.range(0, 1) == 0 {
        block_size * rng.range(1, 8)
    } else {
        rng.range(17, 200)
    };
    set(&mut args, "block_size", block_size);
    let decodes = vec![context; rng.range(1, 8) as usize];
    set_list(&mut args, "prefill_lens", &prompts);
    set_list(&mut args, "decode_context_lens", &decodes);
    set(&mut args, "max_num_batched_tokens", 2048);
    args
}

fn derive_mixed_batch(args: &Args) -> Result<Values, String> {
    let prompts: Vec<usize> = ints(args, "prefill_lens")?
        .into_iter()
        .map(|x| x as usize)
        .collect();
    let contexts = ints(args, "decode_context_lens")?;
    let decodes = contexts.len();
    let context = contexts.first().copied().unwrap_or(0);
    if contexts.iter().any(|&c| c != context) {
        return Err("the template's decodes share one context length".into());
    }
    let b = int(args, "block_size")?.max(1) as usize;
    let sum: Vec<String> = prompts.iter().map(|p| p.to_string()).collect();
    let ceil_terms: Vec<String> = prompts.iter().map(|p| format!("⌈{p} / {b}⌉")).collect();
    let block_counts: Vec<String> = prompts.iter().map(|p| p.div_ceil(b).to_string()).collect();
    let prefill_blocks: usize = prompts.iter().map(|p| p.div_ceil(b)).sum();
    let starts_block = (context as usize).is_multiple_of(b);
    let decode_new = if starts_block { decodes } else { 0 };
    let plural = |n: usize, one: &str, many: &str| if n == 1 { one } else { many }.to_string();
    Ok(values(&[
        ("num_prompts", prompts.len().to_string()),
        ("prompts_word", plural(prompts.len(), "prompt", "prompts")),
        ("prompt_list", spoken_list(&prompts)),
        ("num_decodes", decodes.to_string()),
        ("requests_word", plural(decodes, "request", "requests")),
        ("prompt_sum", sum.join(" + ")),
        ("block_terms", ceil_terms.join(" + ")),
        ("block_counts", block_counts.join(" + ")),
        ("prefill_blocks", prefill_blocks.to_string()),
        ("context", context.to_string()),
        ("context_blocks", (context as usize).div_ceil(b).to_string()),
        ("next_token", ordinal(context + 1)),
        ("decode_block", (context as usize / b).to_string()),
        (
            "decode_block_news",
            if starts_block {
                "a block it does not have yet, so each decode allocates one"
            } else {
                "a block it already has, so the decodes allocate none"
            }
            .to_string(),
        ),
        ("decode_new", decode_new.to_string()),
    ]))
}

// The first step of a prompt alone: its logits rows (1 when the chunk reaches the prompt's
// last token, else 0).
fn draw_chunked_first_step(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let budget = rng.pick(&[128, 256, 512, 1024, 2048]);
    set(&mut args, "max_num_batched_tokens", budget);
    set(&mut args, "prompt_len", rng.range(16, 2 * budget));
    args
}

fn derive_chunked_first_step(args: &Args) -> Result<Values, String> {
    let (n, budget) = (
        int(args, "prompt_len")?,
        int(args, "max_num_batched_tokens")?,
    );
    if int(args, "step")? != 1 {
        return Err("this template asks for the first step".into());
    }
    let chunk = n.min(budget);
    let (reaches, rows) = if chunk == n {
        ("reaches", "1 row")
    } else {
        ("does not reach", "0 rows")
    };
    Ok(values(&[
        ("chunk", chunk.to_string()),
        ("reaches", reaches.to_string()),
        ("rows", rows.to_string()),
    ]))
}

// n requests of k full blocks each fill a cache of n · k blocks; their next tokens each need
// block k + 1. (k >= 2 keeps "blocks" plural in the text.)
fn draw_full_cache(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let (b, n, k) = (rng.pick(&[4, 8, 16]), rng.range(2, 5), rng.range(2, 3));
    set(&mut args, "block_size", b);
    set(&mut args, "num_blocks", n * k);
    set_list(&mut args, "prompt_lens", &vec![k * b; n as usize]);
    args
}

fn derive_full_cache(args: &Args) -> Result<Values, String> {
    let (b, prompts) = (int(args, "block_size")?, ints(args, "prompt_lens")?);
    let p = prompts.first().copied().unwrap_or(0);
    let k = p.div_ceil(b.max(1));
    let n = prompts.len() as u64;
    if prompts.iter().any(|&x| x != p) || p % b.max(1) != 0 || int(args, "num_blocks")? != n * k {
        return Err("this template's requests fill the cache with full blocks".into());
    }
    let ids: Vec<u64> = (0..n).collect();
    let victim = engine_with("fcfs_preemption", args, &[("output", s("first_victim"))])?;
    Ok(values(&[
        ("request_list", spoken_list(&ids)),
        ("prompt_len", p.to_string()),
        (
            "all_requests",
            if n == 2 {
                "both".to_string()
            } else {
                format!("all {}", number_word(n))
            },
        ),
        ("blocks_each", k.to_string()),
        ("next_block_word", ordinal_word(k + 1)),
        ("victim", victim.to_string()),
    ]))
}

// The tiny model (4096 positions) with caches below and above 4096 tokens.
fn draw_max_model_len(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    set(&mut args, "block_size", rng.pick(&[8, 16, 32]));
    set(
        &mut args,
        "num_kv_blocks",
        rng.pick(&[40, 100, 150, 200, 300, 600]),
    );
    args
}

fn derive_max_model_len(args: &Args) -> Result<Values, String> {
    let cache = int(args, "num_kv_blocks")? * int(args, "block_size")?;
    let longest = engine("max_model_len", args)? as u64;
    Ok(values(&[
        ("cache_tokens", cache.to_string()),
        ("longest_prompt", longest.saturating_sub(1).to_string()),
    ]))
}

/// A tenant table as `tenant_share` reads it.
fn tenant(name: &str, weight: u64, requests: u64, extra: &[(&str, u64)]) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("name".into(), s(name));
    t.insert("weight".into(), i(weight));
    t.insert("requests".into(), i(requests));
    for (k, v) in extra {
        t.insert(k.to_string(), i(*v));
    }
    toml::Value::Table(t)
}

fn set_tenants(args: &mut Args, tenants: Vec<toml::Value>) {
    args.insert("tenants".into(), toml::Value::Array(tenants));
}

// Two tenants with weights 1 to 4 share the first 20 to 100 steps.
fn draw_fair_share(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let (a, b) = (rng.range(1, 4), rng.range(1, 4));
    set_tenants(
        &mut args,
        vec![tenant("a", a, 100, &[]), tenant("b", b, 100, &[])],
    );
    set(&mut args, "steps", rng.pick(&[20, 40, 60, 100]));
    args
}

// B arrives at step 2 to 30 while A's long queue runs.
fn draw_fair_late_tenant(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let (a, b) = (rng.range(1, 3), rng.range(1, 3));
    let arrive = rng.range(2, 30);
    set_tenants(
        &mut args,
        vec![
            tenant("a", a, 100, &[]),
            tenant("b", b, 1, &[("arrive_step", arrive)]),
        ],
    );
    args
}

// An overdue request arrives while A still has requests queued.
fn draw_qos_overdue(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let queued = rng.range(5, 20);
    let arrive = rng.range(2, queued);
    set_tenants(
        &mut args,
        vec![
            tenant("a", 1, queued, &[]),
            tenant("late", 1, 1, &[("arrive_step", arrive), ("deadline_ms", 0)]),
        ],
    );
    args
}

fn derive_tenants(args: &Args) -> Result<Values, String> {
    let list = args
        .get("tenants")
        .and_then(|v| v.as_array())
        .ok_or("argument `tenants` must be a list")?;
    let field = |i: usize, k: &str| {
        list.get(i)
            .and_then(|t| t.as_table())
            .and_then(|t| int(t, k).ok())
            .unwrap_or(0)
    };
    let mut v = values(&[
        ("weight_a", field(0, "weight").to_string()),
        ("weight_b", field(1, "weight").to_string()),
        ("requests_a", field(0, "requests").to_string()),
        ("arrive_step", field(1, "arrive_step").to_string()),
    ]);
    if let Ok(steps) = int(args, "steps") {
        // Tenant A's steps: its share (the engine's percentage) of the steps, one prompt a step.
        let percent = engine("tenant_share", args)?;
        v.insert("steps".into(), steps.to_string());
        v.insert(
            "a_steps".into(),
            ((percent * steps as f64 / 100.0).round() as u64).to_string(),
        );
    }
    Ok(v)
}

// A system prompt of 1 to 12 blocks and a bit, shared by two longer prompts.
fn draw_shared_prefix(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let b = rng.pick(&[8, 16, 32]);
    let prefix = rng.range(b, 12 * b);
    set(&mut args, "block_size", b);
    set(&mut args, "prefix_len", prefix);
    set(&mut args, "first_len", prefix + 20);
    set(&mut args, "prompt_len", prefix + rng.range(1, 100));
    args
}

// The same prompt twice, 2 to 10 blocks and a bit long.
fn draw_same_prompt(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let b = rng.pick(&[8, 16, 32]);
    let len = rng.range(2 * b, 10 * b);
    set(&mut args, "block_size", b);
    for k in ["prefix_len", "first_len", "prompt_len"] {
        set(&mut args, k, len);
    }
    args
}

fn derive_prefix_hit(args: &Args) -> Result<Values, String> {
    let (b, prefix) = (int(args, "block_size")?.max(1), int(args, "prefix_len")?);
    let hit = engine_with("prefix_hit", args, &[("output", s("hit_tokens"))])? as u64;
    let computed = engine_with("prefix_hit", args, &[("output", s("computed_tokens"))])? as u64;
    Ok(values(&[
        ("full_blocks", (prefix / b).to_string()),
        ("last_hit", hit.saturating_sub(1).to_string()),
        ("hit_blocks", (hit / b).to_string()),
        ("computed", computed.to_string()),
    ]))
}

// Three requests of k blocks each (k = 3 to 5) in a cache of 3k + 1 blocks: when their
// (kB + 1)th tokens need block k + 1, request 0 takes the free block and request 1 preempts
// request 2. A swap space smaller than k blocks (2 to k − 1) forces the fallback.
fn draw_preemption_case(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let (b, k) = (rng.pick(&[8, 16]), rng.range(3, 5));
    let prompt = rng.range((k - 1) * b + 1, k * b);
    set(&mut args, "block_size", b);
    set(&mut args, "num_blocks", 3 * k + 1);
    set_list(&mut args, "prompt_lens", &[prompt; 3]);
    set(&mut args, "max_tokens", k * b - prompt + 11);
    if args.contains_key("swap_blocks") {
        set(&mut args, "swap_blocks", rng.range(2, k - 1));
    }
    args
}

fn derive_preemption_case(args: &Args) -> Result<Values, String> {
    let (b, prompts) = (int(args, "block_size")?.max(1), ints(args, "prompt_lens")?);
    let p = prompts.first().copied().unwrap_or(0);
    let k = p.div_ceil(b);
    if prompts.len() != 3
        || prompts.iter().any(|&x| x != p)
        || int(args, "num_blocks")? != 3 * k + 1
    {
        return Err("this template's three requests leave one block free".into());
    }
    if int(args, "swap_blocks").is_ok_and(|h| h >= k) {
        return Err("this template's swap space is smaller than the victim".into());
    }
    Ok(values(&[
        ("prompt_len", p.to_string()),
        ("blocks_each", k.to_string()),
        ("next_token", ordinal(k * b + 1)),
        ("next_block_word", ordinal_word(k + 1)),
        ("computed", (k * b).to_string()),
        ("generated", (k * b + 1 - p).to_string()),
    ]))
}
