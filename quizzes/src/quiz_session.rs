//! # A quiz session in the terminal (`lab quiz`)
//!
//! Asks a chapter's questions in the book's order: a numeric question with a template gets
//! fresh numbers ([`crate::template`]) and is graded against the engine's answer; a numeric
//! question without one is asked as the book has it; a multiple-choice question lists its
//! choices shuffled; a free-text short answer is compared with the book's answer and
//! alternatives. Answers come one per line from any reader (the terminal, a pipe or an
//! `--answers` file). End of input stops the session; every answer is saved to the progress
//! file as soon as it is graded, so Ctrl-C keeps what was answered.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use crate::progress::Progress;
use crate::template::{self, Rng, Template};

/// The chapter a quiz file is (`stage1` for `quizzes/stage1.toml`).
pub fn chapter_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The quiz file of a chapter given as `stage1`, `1` or `stage1.toml`.
pub fn find_chapter(name: &str) -> Result<std::path::PathBuf, String> {
    let wanted = name.trim_end_matches(".toml");
    let wanted = if wanted.chars().all(|c| c.is_ascii_digit()) {
        format!("stage{wanted}")
    } else {
        wanted.to_string()
    };
    let files = crate::quiz_files();
    files
        .iter()
        .find(|p| chapter_name(p) == wanted)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<String> = files.iter().map(|p| chapter_name(p)).collect();
            format!(
                "no quiz for chapter `{name}`; chapters: {}",
                names.join(", ")
            )
        })
}

/// What a session did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// chapter → kind → (right, asked).
    pub scores: BTreeMap<String, BTreeMap<String, (u32, u32)>>,
    /// Whether input ended before the last question.
    pub stopped_early: bool,
}

impl Summary {
    pub fn right_and_asked(&self) -> (u32, u32) {
        self.scores
            .values()
            .flat_map(|k| k.values())
            .fold((0, 0), |(r, a), &(r2, a2)| (r + r2, a + a2))
    }
}

/// One question as the session asks it.
enum Ask {
    /// A number, graded within half a unit of its last digit.
    Number {
        prompt: String,
        answer: String,
        decimals: u32,
        context: String,
    },
    /// Choices shown in this order; `right` are their indices.
    Choice {
        prompt: String,
        choices: Vec<String>,
        right: Vec<usize>,
        context: String,
    },
    /// Free text, compared case-insensitively with the answer and alternatives.
    Text {
        prompt: String,
        accepted: Vec<String>,
        context: String,
    },
}

fn strings(v: Option<&toml::Value>) -> Vec<String> {
    match v {
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

/// Runs one chapter's quiz. `progress` is the saved progress before the session; after each
/// graded answer it is saved again with this session's scores so far (when `save` is set).
pub fn run_chapter(
    path: &Path,
    rng: &mut Rng,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    summary: &mut Summary,
    progress: &Progress,
    save: bool,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let quiz = crate::parse_quiz(path, &text)?;
    let templates: Vec<Template> = template::parse_templates(path, &text)?;
    let raw: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
    let raw = raw
        .get("questions")
        .and_then(|q| q.as_array())
        .cloned()
        .unwrap_or_default();
    let chapter = chapter_name(path);
    // The last drawn arguments, for a question that says "Same batch" (`template.same`).
    let mut previous: Option<template::Args> = None;
    let io = |e: std::io::Error| format!("cannot write to the terminal: {e}");
    writeln!(
        out,
        "== {chapter}: {} questions (an empty line skips one) ==",
        quiz.questions.len()
    )
    .map_err(io)?;
    for (q, value) in quiz.questions.iter().zip(&raw) {
        let context = value
            .get("context")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .trim()
            .to_string();
        let (kind, ask) = if let Some(t) = templates.iter().find(|t| t.number == q.number) {
            let r = t.draw_after(rng, previous.as_ref())?;
            previous = Some(r.args.clone());
            let ask = Ask::Number {
                prompt: r.prompt,
                answer: r.answer,
                decimals: r.decimals,
                context: r.context,
            };
            (t.kind.clone(), ask)
        } else if let Some(check) = q.check.as_ref().filter(|_| q.kind == "ShortAnswer") {
            let ask = Ask::Number {
                prompt: q.prompt.clone(),
                answer: q.answer.clone(),
                decimals: check.decimals,
                context,
            };
            (check.function.clone(), ask)
        } else if q.kind == "MultipleChoice" {
            let answers = strings(value.get("answer").and_then(|a| a.get("answer")));
            let mut choices: Vec<(String, bool)> = answers
                .into_iter()
                .map(|a| (a, true))
                .chain(q.distractors.iter().map(|d| (d.clone(), false)))
                .collect();
            rng.shuffle(&mut choices);
            let right = (0..choices.len()).filter(|&i| choices[i].1).collect();
            let ask = Ask::Choice {
                prompt: q.prompt.clone(),
                choices: choices.into_iter().map(|c| c.0).collect(),
                right,
                context,
            };
            ("multiple-choice".to_string(), ask)
        } else if q.kind == "ShortAnswer" {
            let mut accepted = vec![q.answer.clone()];
            accepted.extend(q.alternatives.iter().cloned());
            let ask = Ask::Text {
                prompt: q.prompt.clone(),
                accepted,
                context,
            };
            ("short-answer".to_string(), ask)
        } else {
            writeln!(
                out,
                "\n[{}/{}] (a {} question: answer it in the book)",
                q.number,
                quiz.questions.len(),
                q.kind
            )
            .map_err(io)?;
            continue;
        };
        writeln!(out, "\n[{}/{}] {kind}", q.number, quiz.questions.len()).map_err(io)?;
        let (prompt, context) = match &ask {
            Ask::Number {
                prompt, context, ..
            }
            | Ask::Choice {
                prompt, context, ..
            }
            | Ask::Text {
                prompt, context, ..
            } => (prompt.trim(), context.trim()),
        };
        writeln!(out, "{prompt}").map_err(io)?;
        if let Ask::Choice { choices, right, .. } = &ask {
            for (i, c) in choices.iter().enumerate() {
                writeln!(out, "  {}. {}", i + 1, c.trim()).map_err(io)?;
            }
            let hint = if right.len() > 1 {
                "choose all that apply, e.g. 1,3"
            } else {
                "a number"
            };
            write!(out, "answer ({hint}): ").map_err(io)?;
        } else {
            write!(out, "answer: ").map_err(io)?;
        }
        out.flush().map_err(io)?;
        let mut line = String::new();
        let n = input
            .read_line(&mut line)
            .map_err(|e| format!("cannot read an answer: {e}"))?;
        if n == 0 {
            writeln!(out, "\n(end of input: stopping; answers so far are kept)").map_err(io)?;
            summary.stopped_early = true;
            return Ok(());
        }
        let given = line.trim();
        if given.is_empty() {
            let shown = match &ask {
                Ask::Number { answer, .. } => answer.clone(),
                Ask::Choice { right, .. } => {
                    let names: Vec<String> = right.iter().map(|i| (i + 1).to_string()).collect();
                    names.join(",")
                }
                Ask::Text { accepted, .. } => accepted[0].clone(),
            };
            writeln!(out, "skipped (answer: {shown})\n{context}").map_err(io)?;
            continue;
        }
        let (right, shown) = match &ask {
            Ask::Number {
                answer, decimals, ..
            } => (template::grade(given, answer, *decimals), answer.clone()),
            Ask::Choice { choices, right, .. } => {
                let mut picked: Vec<usize> = given
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| s.parse::<usize>().ok())
                    .filter(|&i| i >= 1 && i <= choices.len())
                    .map(|i| i - 1)
                    .collect();
                picked.sort();
                picked.dedup();
                let names: Vec<String> = right.iter().map(|i| (i + 1).to_string()).collect();
                (&picked == right, names.join(","))
            }
            Ask::Text { accepted, .. } => (
                accepted
                    .iter()
                    .any(|a| a.trim().eq_ignore_ascii_case(given)),
                accepted[0].clone(),
            ),
        };
        let verdict = if right { "right" } else { "wrong" };
        writeln!(out, "{verdict} (answer: {shown})\n{context}").map_err(io)?;
        let entry = summary
            .scores
            .entry(chapter.clone())
            .or_default()
            .entry(kind)
            .or_default();
        entry.0 += u32::from(right);
        entry.1 += 1;
        if save {
            progress
                .with_session(&chapter, &summary.scores[&chapter])
                .save()?;
        }
    }
    Ok(())
}
