//! # The book's quizzes, checked against the engine
//!
//! Every chapter ends with an mdbook-quiz file (`quizzes/*.toml`). A numeric question carries a
//! `check` table that names what computes its answer:
//!
//! ```toml
//! check = { fn = "slot_for_position", args = { block_table = [5, 12, 8], block_size = 16, position = 33 } }
//! ```
//!
//! mdbook-quiz ignores the table; this crate reads it, calls the engine function it names
//! ([`engine_calls::call`], a table from names to engine calls; Stage 4's are in
//! [`gpu_calls`]), formats the result the way the prompt asks (`scale` divides it, `decimals`
//! rounds it) and compares it with `answer.answer`
//! and every `answer.alternatives` entry. A multiple-choice question whose answer is a number
//! can carry a `check` too: its answer must be the engine's value and no distractor may be. A
//! wrong answer is an error naming the file and the question.
//!
//! ```text
//! quizzes/stage1.toml ─ parse ─> Question { prompt, answer, check }
//!                                   └ engine_calls::call(fn, args) ─> f64 ─ format ─> compare
//! ```
pub mod batching_calls;
pub mod engine_calls;
pub mod gpu_calls;
pub mod hybrid_calls;
pub mod pp_calls;
pub mod progress;
pub mod quiz_session;
pub mod template;
pub mod templates;
pub mod tp_calls;

use std::path::{Path, PathBuf};

/// What a `check` table asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// A name from [`engine_calls::FUNCTIONS`].
    pub function: String,
    pub args: toml::Table,
    /// The engine's value is divided by this before rounding (e.g. 1e9 for GB).
    pub scale: f64,
    /// Digits after the decimal point in the expected answer.
    pub decimals: u32,
}

/// One question of a quiz file, with what the checker needs.
#[derive(Debug, Clone)]
pub struct Question {
    /// 1-based position in the file.
    pub number: usize,
    pub kind: String,
    pub prompt: String,
    pub answer: String,
    pub alternatives: Vec<String>,
    /// A multiple-choice question's wrong choices (`prompt.distractors`).
    pub distractors: Vec<String>,
    pub check: Option<Check>,
}

impl Question {
    /// "question 3 (\"Token 33 of a sequence…\")": how failures name a question.
    pub fn label(&self) -> String {
        let words: String = self.prompt.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = words.chars().take(60).collect();
        format!("question {} (\"{short}…\")", self.number)
    }
}

/// A parsed quiz file.
#[derive(Debug, Clone)]
pub struct QuizFile {
    pub path: PathBuf,
    pub questions: Vec<Question>,
}

/// The quiz directory (this crate's root).
pub fn quiz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `*.toml` quiz file, sorted by name.
pub fn quiz_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(quiz_dir())
        .expect("quizzes/ is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "Cargo.toml"))
        .collect();
    files.sort();
    files
}

fn text_at<'a>(t: &'a toml::Table, outer: &str, inner: &str) -> Option<&'a toml::Value> {
    t.get(outer)?.as_table()?.get(inner)
}

/// Parses quiz TOML text (mdbook-quiz's schema plus our `check` tables).
pub fn parse_quiz(path: &Path, text: &str) -> Result<QuizFile, String> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| format!("{}: invalid TOML: {e}", path.display()))?;
    let raw = table
        .get("questions")
        .and_then(|q| q.as_array())
        .ok_or_else(|| format!("{}: no [[questions]]", path.display()))?;
    let mut questions = Vec::new();
    for (i, q) in raw.iter().enumerate() {
        let where_ = || format!("{} question {}", path.display(), i + 1);
        let q = q
            .as_table()
            .ok_or_else(|| format!("{}: not a table", where_()))?;
        let kind = q
            .get("type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{}: missing `type`", where_()))?
            .to_string();
        let prompt = text_at(q, "prompt", "prompt")
            .or_else(|| text_at(q, "prompt", "program"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{}: missing prompt", where_()))?
            .to_string();
        let answer = match text_at(q, "answer", "answer") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(toml::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" | "),
            _ if kind == "Tracing" => String::new(),
            _ => return Err(format!("{}: missing answer.answer", where_())),
        };
        let strings = |outer: &str, inner: &str| -> Vec<String> {
            text_at(q, outer, inner)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let alternatives = strings("answer", "alternatives");
        let distractors = strings("prompt", "distractors");
        let check = match q.get("check") {
            None => None,
            Some(c) => Some(parse_check(c).map_err(|e| format!("{}: {e}", where_()))?),
        };
        questions.push(Question {
            number: i + 1,
            kind,
            prompt,
            answer,
            alternatives,
            distractors,
            check,
        });
    }
    Ok(QuizFile {
        path: path.to_path_buf(),
        questions,
    })
}

fn parse_check(v: &toml::Value) -> Result<Check, String> {
    let t = v.as_table().ok_or("`check` is not a table")?;
    let function = t
        .get("fn")
        .and_then(|f| f.as_str())
        .ok_or("`check` has no `fn`")?
        .to_string();
    let args = t
        .get("args")
        .and_then(|a| a.as_table())
        .cloned()
        .unwrap_or_default();
    let scale = match t.get("scale") {
        None => 1.0,
        Some(toml::Value::Float(f)) => *f,
        Some(toml::Value::Integer(i)) => *i as f64,
        Some(_) => return Err("`check.scale` is not a number".into()),
    };
    let decimals = match t.get("decimals") {
        None => 0,
        Some(toml::Value::Integer(i)) if (0..=9).contains(i) => *i as u32,
        Some(_) => return Err("`check.decimals` must be an integer 0..=9".into()),
    };
    Ok(Check {
        function,
        args,
        scale,
        decimals,
    })
}

/// Reads and parses a quiz file.
pub fn load_quiz(path: &Path) -> Result<QuizFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_quiz(path, &text)
}

/// The answer string a check expects: the engine's value, scaled and rounded as the prompt says.
pub fn expected_answer(check: &Check) -> Result<String, String> {
    let value = engine_calls::call(&check.function, &check.args)?;
    Ok(format_number(value / check.scale, check.decimals))
}

/// `value` with exactly `decimals` digits after the point (no thousands separators).
pub fn format_number(value: f64, decimals: u32) -> String {
    format!("{:.*}", decimals as usize, value)
}

/// The number an answer spelling means: "13.48 GB", "slot 129", "1,024" and "6 738 415 616"
/// all read as numbers; `None` when the text holds none.
pub fn parse_number(text: &str) -> Option<f64> {
    let chars: Vec<char> = text.trim().chars().collect();
    // Drop thousands separators: commas, underscores, and spaces between two digits.
    let mut cleaned = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let between_digits = i > 0
            && i + 1 < chars.len()
            && chars[i - 1].is_ascii_digit()
            && chars[i + 1].is_ascii_digit();
        if c == ',' || c == '_' || (c == ' ' && between_digits) {
            continue;
        }
        cleaned.push(c);
    }
    let is_num = |c: char| c.is_ascii_digit() || c == '.' || c == '-';
    let start = cleaned.find(|c: char| c.is_ascii_digit() || c == '.')?;
    let start = if start > 0 && cleaned[..start].ends_with('-') {
        start - 1
    } else {
        start
    };
    let rest = &cleaned[start..];
    let end = rest.find(|c: char| !is_num(c)).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Checks one question; `Err` names the file and question and says what the engine computes.
pub fn check_question(file: &Path, q: &Question) -> Result<(), String> {
    let Some(check) = &q.check else {
        return Ok(());
    };
    let fail = |msg: String| Err(format!("{} {}: {msg}", file.display(), q.label()));
    if q.kind != "ShortAnswer" && q.kind != "MultipleChoice" {
        return fail(format!(
            "`check` is for ShortAnswer and MultipleChoice, not {}",
            q.kind
        ));
    }
    let expected = match expected_answer(check) {
        Ok(e) => e,
        Err(e) => return fail(format!("{}: {e}", check.function)),
    };
    if q.answer.trim() != expected {
        return fail(format!(
            "answer is {:?}, but the engine's {} gives {expected:?}",
            q.answer, check.function
        ));
    }
    let want = parse_number(&expected).expect("a formatted number parses");
    // A distractor that means the engine's answer would make a right choice count as wrong.
    for d in &q.distractors {
        if d.trim().parse::<f64>().is_ok_and(|v| v == want) {
            return fail(format!(
                "distractor {d:?} is the engine's answer ({})",
                check.function
            ));
        }
    }
    for alt in &q.alternatives {
        match parse_number(alt) {
            Some(v) if v == want => {}
            _ => {
                return fail(format!(
                    "alternative {alt:?} does not mean {expected} (the engine's {})",
                    check.function
                ))
            }
        }
    }
    Ok(())
}

/// Checks every question of a file; returns one message per failing question.
pub fn check_file(quiz: &QuizFile) -> Vec<String> {
    quiz.questions
        .iter()
        .filter_map(|q| check_question(&quiz.path, q).err())
        .collect()
}
