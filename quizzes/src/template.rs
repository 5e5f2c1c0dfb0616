//! # Question templates: the book's numeric questions with fresh numbers
//!
//! A numeric question of a quiz file can carry a `template` table beside its `check`:
//!
//! ```toml
//! check.fn = "slot_for_position"
//! check.args = { block_table = [5, 12, 8], block_size = 16, position = 16 }
//! template.kind = "slot_for_position"
//! template.prompt = "… block table is `{block_table}` … **position {position}** …"
//! template.context = "… {physical} · {block_size} + {offset} = {answer}."
//! ```
//!
//! The template's text is the question's one text: rendered with the book's `check.args` it
//! must give the book's prompt exactly, and the start of the book's context (a test checks
//! both; the book may add a remark after the context that only fits its own numbers). The
//! answer is always `engine_calls::call(check.fn, args)`, the same engine call that checks the
//! book's answer. A [`Kind`] (the registry, one per kind of question) knows how to draw new
//! `args` within sensible ranges and which derived numbers the explanation shows.
//!
//! ```text
//! book args ─ Kind::draw(rng) ─> args ─ engine_calls::call ─> answer
//!                                  └─ Kind::derive ─> {placeholders} ─ render ─> prompt, context
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use crate::engine_calls::{self, model_config};
use crate::{format_number, Check};

/// Arguments of an engine call, as in a `check.args` table.
pub type Args = toml::Table;

/// Placeholder values of a rendered question: `{name}` → text.
pub type Values = BTreeMap<String, String>;

/// A small deterministic generator (SplitMix64): the same `--seed` replays the same quiz on
/// every machine, without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next_u64() as usize % items.len()]
    }

    /// The slice in a random order (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.range(0, i as u64) as usize;
            items.swap(i, j);
        }
    }
}

/// One kind of numeric question: how to draw its parameters and what its explanation shows.
pub struct Kind {
    /// The name a `template.kind` uses.
    pub name: &'static str,
    /// The `check.fn` whose engine call computes the answer.
    pub check_fn: &'static str,
    /// New arguments; keeps what it does not draw (e.g. `output`, `bits`) from the book's.
    pub draw: fn(&mut Rng, &Args) -> Args,
    /// The derived numbers the prompt and explanation show, from the arguments.
    pub derive: fn(&Args) -> Result<Values, String>,
}

/// The registry: every kind of numeric question that has a template.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "slot_for_position",
        check_fn: "slot_for_position",
        draw: draw_slot,
        derive: derive_slot,
    },
    Kind {
        name: "slot_of_last_token",
        check_fn: "slot_for_position",
        draw: draw_last_token_slot,
        derive: derive_slot,
    },
    Kind {
        name: "blocks_needed",
        check_fn: "blocks_needed",
        draw: draw_blocks_needed,
        derive: derive_blocks_needed,
    },
    Kind {
        name: "chunked_prefill_second_step",
        check_fn: "chunked_prefill",
        draw: draw_chunked_second_step,
        derive: derive_chunked_second_step,
    },
    Kind {
        name: "mixed_batch_tokens",
        check_fn: "schedule_mixed_batch",
        draw: draw_mixed_batch,
        derive: derive_mixed_batch,
    },
    Kind {
        name: "mixed_batch_prefill_blocks",
        check_fn: "schedule_mixed_batch",
        draw: draw_mixed_batch,
        derive: derive_mixed_batch,
    },
    Kind {
        name: "mixed_batch_new_blocks",
        check_fn: "schedule_mixed_batch",
        draw: draw_mixed_batch,
        derive: derive_mixed_batch,
    },
    Kind {
        name: "chunked_prefill_first_logits",
        check_fn: "chunked_prefill",
        draw: draw_chunked_first_step,
        derive: derive_chunked_first_step,
    },
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
        name: "ring_sent_ratio",
        check_fn: "ring_sent_ratio",
        draw: draw_ring,
        derive: derive_ring,
    },
    Kind {
        name: "weight_bytes",
        check_fn: "weight_bytes",
        draw: draw_weight_bytes,
        derive: derive_weight_bytes,
    },
];

/// The kind a `template.kind` names.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// A question's `template` table.
#[derive(Debug, Clone)]
pub struct Template {
    /// 1-based position of the question in its file.
    pub number: usize,
    pub kind: String,
    pub prompt: String,
    pub context: String,
    /// Arguments taken from the previous question's draw (`template.same`), for a question
    /// that says "Same batch": it keeps the previous question's batch and draws the rest.
    pub same: Vec<String>,
    /// The book's `check` (its args are the book's parameters).
    pub check: Check,
    /// The book's prompt and context, to compare with the rendered template.
    pub book_prompt: String,
    pub book_context: String,
    pub book_answer: String,
}

/// A template rendered with some arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub args: Args,
    pub prompt: String,
    pub context: String,
    /// The engine's answer, scaled and rounded as the question asks.
    pub answer: String,
    pub decimals: u32,
}

/// Every `template` table of a quiz file (text), with the question's book version.
pub fn parse_templates(path: &Path, text: &str) -> Result<Vec<Template>, String> {
    let quiz = crate::parse_quiz(path, text)?;
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let raw = table
        .get("questions")
        .and_then(|q| q.as_array())
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for (q, value) in quiz.questions.iter().zip(&raw) {
        let Some(t) = value.get("template") else {
            continue;
        };
        let where_ = format!("{} {}", path.display(), q.label());
        let field = |name: &str| {
            t.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("{where_}: template has no `{name}` string"))
        };
        let check = q
            .check
            .clone()
            .ok_or_else(|| format!("{where_}: a template needs the question's `check`"))?;
        let kind_name = field("kind")?;
        let k = kind(&kind_name).ok_or_else(|| {
            format!("{where_}: unknown template kind `{kind_name}` (see template::KINDS)")
        })?;
        if k.check_fn != check.function {
            return Err(format!(
                "{where_}: kind `{kind_name}` is computed by `{}`, the check names `{}`",
                k.check_fn, check.function
            ));
        }
        out.push(Template {
            number: q.number,
            kind: kind_name,
            prompt: field("prompt")?,
            context: field("context")?,
            same: match t.get("same") {
                None => vec![],
                Some(v) => v
                    .as_array()
                    .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
                    .ok_or_else(|| format!("{where_}: `template.same` is a list of names"))?,
            },
            check,
            book_prompt: q.prompt.clone(),
            book_context: value
                .get("context")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            book_answer: q.answer.clone(),
        });
    }
    Ok(out)
}

impl Template {
    pub fn kind(&self) -> &'static Kind {
        kind(&self.kind).expect("parse_templates checked the kind")
    }

    /// The template with the book's own numbers.
    pub fn render_book(&self) -> Result<Rendered, String> {
        self.render(self.check.args.clone())
    }

    /// The template with freshly drawn numbers.
    pub fn draw(&self, rng: &mut Rng) -> Result<Rendered, String> {
        self.render((self.kind().draw)(rng, &self.check.args))
    }

    /// Freshly drawn numbers that keep the `same` arguments of the previous question's draw
    /// (when there is one): draws until the engine accepts the combination.
    pub fn draw_after(&self, rng: &mut Rng, previous: Option<&Args>) -> Result<Rendered, String> {
        let Some(previous) = previous.filter(|_| !self.same.is_empty()) else {
            return self.draw(rng);
        };
        let mut last_error = String::new();
        for _ in 0..200 {
            let mut args = (self.kind().draw)(rng, &self.check.args);
            for key in &self.same {
                if let Some(v) = previous.get(key) {
                    args.insert(key.clone(), v.clone());
                }
            }
            match self.render(args) {
                Ok(r) => return Ok(r),
                Err(e) => last_error = e,
            }
        }
        Err(format!("no draw fits the previous question: {last_error}"))
    }

    /// Computes the answer with the engine and fills the placeholders.
    pub fn render(&self, args: Args) -> Result<Rendered, String> {
        let value = engine_calls::call(&self.check.function, &args)?;
        let answer = format_number(value / self.check.scale, self.check.decimals);
        let mut values = (self.kind().derive)(&args)?;
        for (k, v) in &args {
            values.entry(k.clone()).or_insert_with(|| show(v));
        }
        values.insert("answer".into(), answer.clone());
        Ok(Rendered {
            prompt: fill(&self.prompt, &values),
            context: fill(&self.context, &values),
            args,
            answer,
            decimals: self.check.decimals,
        })
    }
}

/// Replaces every `{name}` that `values` knows; other braces stay as they are.
pub fn fill(text: &str, values: &Values) -> String {
    let mut out = text.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// A TOML value as the book writes it: `16`, `[5, 12, 8]`, `llama-2-7b`.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => {
            let items: Vec<String> = a.iter().map(show).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// Whether `given` is right for an answer of `expected` with `decimals` digits: the number it
/// means is within half a unit of the last digit (so "13.48", "13.48 GB" and "13.477" are
/// right for 13.48, "13.49" is not).
pub fn grade(given: &str, expected: &str, decimals: u32) -> bool {
    let (Some(g), Some(e)) = (crate::parse_number(given), crate::parse_number(expected)) else {
        return false;
    };
    (g - e).abs() <= 0.5 * 10f64.powi(-(decimals as i32)) + 1e-9
}

/// `1234567` → `1,234,567`, as the book writes large counts.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "128", "128 and 256", "128, 256 and 512".
fn spoken_list(items: &[usize]) -> String {
    let words: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    match words.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

fn int(args: &Args, key: &str) -> Result<u64, String> {
    args.get(key)
        .and_then(|v| v.as_integer())
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| format!("argument `{key}` must be a non-negative integer"))
}

fn ints(args: &Args, key: &str) -> Result<Vec<u64>, String> {
    let list = args
        .get(key)
        .and_then(|v| v.as_array())
        .ok_or_else(|| format!("argument `{key}` must be a list"))?;
    list.iter()
        .map(|v| {
            v.as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| format!("argument `{key}` must hold non-negative integers"))
        })
        .collect()
}

fn set(args: &mut Args, key: &str, v: u64) {
    args.insert(key.into(), toml::Value::Integer(v as i64));
}

fn set_list(args: &mut Args, key: &str, v: &[u64]) {
    let list = v.iter().map(|&x| toml::Value::Integer(x as i64)).collect();
    args.insert(key.into(), toml::Value::Array(list));
}

fn values(pairs: &[(&str, String)]) -> Values {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

// slot = table[p / B] · B + p mod B: a table of 2 to 5 distinct physical blocks, a position
// the table holds.
fn draw_slot(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let block_size = rng.pick(&[4, 8, 16, 32]);
    let mut pool: Vec<u64> = (0..64).collect();
    rng.shuffle(&mut pool);
    let len = rng.range(2, 5) as usize;
    set_list(&mut args, "block_table", &pool[..len]);
    set(&mut args, "block_size", block_size);
    set(
        &mut args,
        "position",
        rng.range(0, len as u64 * block_size - 1),
    );
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
    let mut pool: Vec<u64> = (0..64).collect();
    rng.shuffle(&mut pool);
    let len = num_tokens.div_ceil(block_size) as usize;
    set_list(&mut args, "block_table", &pool[..len]);
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

/// "1st", "2nd", "49th", "112th".
fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
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

/// The models a weight question draws from, with the names the book gives them.
const MODELS: &[(&str, &str)] = &[
    ("llama-2-7b", "Llama-2-7B"),
    ("llama-3.2-1b", "Llama-3.2-1B"),
    ("smollm2-135m", "SmolLM2-135M"),
];

// Another model, the same precision (the precision is in the question's words).
fn draw_weight_bytes(rng: &mut Rng, book: &Args) -> Args {
    let mut args = book.clone();
    let (id, _) = rng.pick(MODELS);
    args.insert("model".into(), toml::Value::String(id.into()));
    args
}

fn derive_weight_bytes(args: &Args) -> Result<Values, String> {
    let id = engine_calls::text(args, "model")?;
    let config = model_config(id)?;
    let name = MODELS
        .iter()
        .find(|(m, _)| *m == id)
        .map_or(id, |(_, name)| name);
    let bits = int(args, "bits")?;
    let bytes = engine::model_executor::weights::weight_bytes(&config, bits);
    Ok(values(&[
        ("model_name", name.to_string()),
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
    let mut args = book.clone();
    let (id, _) = rng.pick(MODELS);
    args.insert("model".into(), toml::Value::String(id.into()));
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
    let mut args = book.clone();
    let (id, _) = rng.pick(MODELS);
    args.insert("model".into(), toml::Value::String(id.into()));
    set(&mut args, "block_size", rng.pick(&[8, 16, 32]));
    set(
        &mut args,
        "budget_bytes",
        rng.pick(&[1u64 << 28, 1 << 29, 1 << 30, 1 << 31, 1 << 32]),
    );
    args
}

/// "2⁸" … "2³²": a power of two as the book writes it.
fn power_of_two(exp: u32) -> String {
    const DIGITS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let sup: String = exp
        .to_string()
        .chars()
        .map(|c| DIGITS[c.to_digit(10).unwrap_or(0) as usize])
        .collect();
    format!("2{sup}")
}

/// The model's shape and the KV sizes the explanations show.
fn derive_kv(args: &Args) -> Result<Values, String> {
    let id = engine_calls::text(args, "model")?;
    let c = model_config(id)?;
    let name = MODELS
        .iter()
        .find(|(m, _)| *m == id)
        .map_or(id, |(_, name)| name);
    let block_size = int(args, "block_size")? as usize;
    let dtype_bytes = args
        .get("dtype_bytes")
        .map_or(Ok(4), |_| int(args, "dtype_bytes"))? as usize;
    let per_token = engine::worker::cache_engine::kv_cache_bytes_per_block(&c, 1, dtype_bytes);
    let per_block = per_token * block_size;
    let mut v = values(&[
        ("model_name", name.to_string()),
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
    let mut args = book.clone();
    let (id, _) = rng.pick(MODELS);
    args.insert("model".into(), toml::Value::String(id.into()));
    args
}

fn derive_heads(args: &Args) -> Result<Values, String> {
    let id = engine_calls::text(args, "model")?;
    let c = model_config(id)?;
    let name = MODELS
        .iter()
        .find(|(m, _)| *m == id)
        .map_or(id, |(_, name)| name);
    Ok(values(&[
        ("model_name", name.to_string()),
        ("q_heads", c.num_attention_heads.to_string()),
        ("kv_heads", c.num_key_value_heads.to_string()),
    ]))
}

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
