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
//! book's answer. A [`Kind`] (one per kind of question, in `quizzes/src/templates/stageN.rs`,
//! one file per chapter) knows how to draw new `args` within sensible ranges and which derived
//! numbers the explanation shows; a derived number the engine decides (a chunk, a victim, a
//! planner's choice) is asked of the engine too, with another `output`. Every numeric question
//! of the book has a template (`tests/templates.rs` checks it).
//!
//! A question that says "Same batch" names the arguments it keeps from the previous question's
//! draw (`template.same`); its kind's `refit` completes them (the index of the batch's last row,
//! a position inside the kept block table).
//!
//! ```text
//! book args ─ Kind::draw(rng) ─> args ─ engine_value (engine_calls::call, cached) ─> answer
//!                                  └─ Kind::derive ─> {placeholders} ─ render ─> prompt, context
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use crate::engine_calls;
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
    /// Completes arguments after a "Same batch" question took some from the previous draw
    /// (`template.same`): e.g. the index of the batch's last row. [`keep`] for most kinds.
    pub refit: fn(Args) -> Args,
}

/// A kind's `refit` that changes nothing.
pub fn keep(args: Args) -> Args {
    args
}

/// Every kind of numeric question that has a template, chapter by chapter
/// ([`crate::templates`]).
pub fn all_kinds() -> impl Iterator<Item = &'static Kind> {
    crate::templates::BY_CHAPTER.iter().flat_map(|k| k.iter())
}

/// The kind a `template.kind` names.
pub fn kind(name: &str) -> Option<&'static Kind> {
    all_kinds().find(|k| k.name == name)
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
            format!("{where_}: unknown template kind `{kind_name}` (see quizzes/src/templates)")
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
            match self.render((self.kind().refit)(args)) {
                Ok(r) => return Ok(r),
                Err(e) => last_error = e,
            }
        }
        Err(format!("no draw fits the previous question: {last_error}"))
    }

    /// Computes the answer with the engine and fills the placeholders.
    pub fn render(&self, args: Args) -> Result<Rendered, String> {
        let value = engine_value(&self.check.function, &args)?;
        let answer = format_number(value / self.check.scale, self.check.decimals);
        let mut values = (self.kind().derive)(&args)?;
        for (k, v) in &args {
            values.entry(k.clone()).or_insert_with(|| show(v));
        }
        values.insert("answer".into(), answer.clone());
        Ok(Rendered {
            prompt: articles(&fill(&self.prompt, &values)),
            context: articles(&fill(&self.context, &values)),
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

/// "a" or "an" before a drawn number or ordinal, as it is spoken: "an 8-token prompt",
/// "an 11th step", "an eighth", "a 24-token prompt". Other words keep their article.
pub fn articles(text: &str) -> String {
    let words: Vec<&str> = text.split_inclusive(char::is_whitespace).collect();
    let mut out = String::with_capacity(text.len());
    for (i, w) in words.iter().enumerate() {
        let bare = w.trim_end();
        let next = words
            .get(i + 1)
            .map_or("", |n| n.trim_start_matches(['*', '`', '(', '_']));
        let vowel = if next.starts_with(|c: char| c.is_ascii_digit()) {
            let group: String = next.chars().take_while(|c| c.is_ascii_digit()).collect();
            Some(group.starts_with('8') || group == "11" || group == "18")
        } else if next.starts_with("eighth") || next.starts_with("eleventh") {
            Some(true)
        } else {
            None
        };
        let fixed = match (bare, vowel) {
            ("a" | "an", Some(v)) => Some(if v { "an" } else { "a" }),
            ("A" | "An", Some(v)) => Some(if v { "An" } else { "A" }),
            _ => None,
        };
        match fixed {
            Some(article) => {
                out.push_str(article);
                out.push_str(&w[bare.len()..]);
            }
            None => out.push_str(w),
        }
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

/// The engine's value for a check, remembered per process: every check function is
/// deterministic, and a session or test draws the same arguments again (a pipeline or a
/// tensor-parallel run costs milliseconds to seconds).
pub fn engine_value(function: &str, args: &Args) -> Result<f64, String> {
    static SEEN: Mutex<Option<HashMap<String, f64>>> = Mutex::new(None);
    let key = format!("{function} {args}");
    let cached = |k: &str| SEEN.lock().ok()?.as_ref()?.get(k).copied();
    if let Some(v) = cached(&key) {
        return Ok(v);
    }
    let v = engine_calls::call(function, args)?;
    if let Ok(mut seen) = SEEN.lock() {
        seen.get_or_insert_with(HashMap::new).insert(key, v);
    }
    Ok(v)
}
