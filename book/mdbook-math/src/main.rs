//! `mdbook-math`: the book's own mdBook preprocessor.
//!
//! The book must read the same offline as online, so nothing is left for the browser to fetch:
//!
//! - TeX math written `\\( … \\)` (inline) or `\\[ … \\]` (display) becomes MathML when the book
//!   is built. Browsers lay MathML out themselves (MathML Core: Chromium 109+, Firefox,
//!   Safari), so the pages carry no script and no font for it.
//! - Code blocks lose the indentation they share, so a method included from inside an `impl`
//!   starts at the left margin.
//!
//! mdBook runs it as `cargo run -q --release -p mdbook-math` from `book/` (see `book/book.toml`),
//! after its `links` preprocessor has expanded every `{{#include}}`, with `[context, book]` as
//! JSON on standard input; the book, rewritten, goes back on standard output. `supports
//! <renderer>` answers yes for every renderer.

mod braces;
mod chapter;
mod dedent;
mod math;
mod spacing;

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::Value;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("supports") {
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mdbook-math: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading standard input: {e}"))?;
    let parsed: Value =
        serde_json::from_str(&input).map_err(|e| format!("standard input is not JSON: {e}"))?;
    let Value::Array(mut pair) = parsed else {
        return Err("expected [context, book] on standard input".into());
    };
    if pair.len() != 2 {
        return Err("expected [context, book] on standard input".into());
    }
    let mut book = pair.pop().expect("two elements");
    let mut errors = Vec::new();
    rewrite_chapters(&mut book, &mut errors);
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    let out = serde_json::to_string(&book).map_err(|e| e.to_string())?;
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| format!("writing standard output: {e}"))
}

/// Rewrites the `content` of every chapter, at any depth of `sub_items`. A chapter is any
/// object with a string `content` and a `name`; walking the JSON generically keeps this
/// preprocessor independent of the other fields of mdBook's `Book`.
fn rewrite_chapters(value: &mut Value, errors: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let name = map
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            if let Some(Value::String(content)) = map.get_mut("content") {
                match chapter::process(content) {
                    Ok(new) => *content = new,
                    Err(e) => errors.push(format!("chapter \"{name}\": {e}")),
                }
            }
            for (_, v) in map.iter_mut() {
                rewrite_chapters(v, errors);
            }
        }
        Value::Array(items) => {
            for v in items {
                rewrite_chapters(v, errors);
            }
        }
        _ => {}
    }
}
