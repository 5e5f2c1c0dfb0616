//! The book as a reader sees it: checks on the built pages (book/book/) and on the quiz text.
//!
//! ```text
//! every built page (and stylesheet)  no asset from the network: no script, link, img, iframe
//!                                    (any element but <a>) with src/href/data starting with
//!                                    http:, https: or //; no url(...) or @import of one in CSS
//! every built page                   math rendered: no \( \[ $$ left in text outside code
//! every mermaid diagram              no label that Markdown reads as a list (`((+))`: mermaid
//!                                    shows "Unsupported markdown: list"); quote it: `(("+"))`
//! quizzes/*.toml                     no identifier with `_` outside backticks in a prompt,
//!                                    answer or context (mdbook-quiz turns `max_model_len` into
//!                                    max<em>model</em>len)
//! ```
//!
//! Plain string scanning, no HTML or TOML library: xtask must build in seconds.

use std::path::{Path, PathBuf};

use crate::{Row, Workspace};

/// Runs every check on `book/book/` (built just before) and `quizzes/*.toml`.
pub fn check_built_book(ws: &Workspace) -> Vec<Row> {
    let out = ws.root.join("book").join("book");
    let mut rows = Vec::new();
    if out.join("index.html").is_file() {
        let pages = files_with_ext(&out, "html");
        let styles = files_with_ext(&out, "css");
        let mut network = Vec::new();
        let mut math = Vec::new();
        let mut mermaid = Vec::new();
        let mut diagrams = 0;
        for page in &pages {
            let html = std::fs::read_to_string(page).unwrap_or_default();
            let name = page
                .strip_prefix(&out)
                .unwrap_or(page)
                .display()
                .to_string();
            let found = scan_html(&html);
            network.extend(found.network.iter().map(|p| format!("{name}: {p}")));
            math.extend(found.raw_math.iter().map(|p| format!("{name}: {p}")));
            mermaid.extend(found.mermaid.iter().map(|p| format!("{name}: {p}")));
            diagrams += found.diagrams;
        }
        for style in &styles {
            let css = std::fs::read_to_string(style).unwrap_or_default();
            let name = style
                .strip_prefix(&out)
                .unwrap_or(style)
                .display()
                .to_string();
            network.extend(css_network(&css).iter().map(|p| format!("{name}: {p}")));
        }
        let n = pages.len();
        rows.push(row(
            "book: no network assets",
            &network,
            format!(
                "{n} pages, {} stylesheets load nothing from the network",
                styles.len()
            ),
        ));
        rows.push(row(
            "book: math rendered",
            &math,
            format!("no raw \\( \\[ $$ outside code in {n} pages"),
        ));
        rows.push(row(
            "book: mermaid labels",
            &mermaid,
            format!("{diagrams} diagrams (all pages), no label read as a list"),
        ));
    } else {
        rows.push(Row::skipped("book: built pages", "no book/book/index.html"));
    }
    let mut lint = Vec::new();
    let mut questions = 0;
    for file in files_with_ext(&ws.root.join("quizzes"), "toml") {
        if file.file_name().is_some_and(|n| n == "Cargo.toml") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let name = file
            .strip_prefix(&ws.root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let (count, problems) = quiz_text_problems(&text);
        questions += count;
        lint.extend(problems.iter().map(|p| format!("{name} {p}")));
    }
    rows.push(row(
        "quiz text lint",
        &lint,
        format!("{questions} questions, every identifier with `_` in backticks"),
    ));
    rows
}

/// A pass row with `ok`, or a FAIL naming the first problem; every problem is printed.
fn row(name: &str, problems: &[String], ok: String) -> Row {
    for p in problems {
        println!("{name}: {p}");
    }
    match problems {
        [] => Row::new(name, true, ok),
        [first, ..] => Row::new(
            name,
            false,
            format!("{} problem(s), first: {first}", problems.len()),
        ),
    }
}

/// Every file under `dir` (recursively) whose name ends in `.ext`, sorted.
fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// What one page holds that it should not.
#[derive(Default, Debug)]
struct PageFindings {
    network: Vec<String>,
    raw_math: Vec<String>,
    mermaid: Vec<String>,
    diagrams: usize,
}

/// Elements whose text is code, not prose: math delimiters there are fine.
const CODE: [&str; 2] = ["code", "pre"];
/// Elements whose content is raw text up to their end tag.
const RAW_TEXT: [&str; 2] = ["script", "style"];
/// Attributes that make the browser fetch what they name.
const FETCHING: [&str; 5] = ["src", "href", "data", "poster", "srcset"];

fn scan_html(html: &str) -> PageFindings {
    let mut found = PageFindings::default();
    let mut in_code = 0usize;
    let mut mermaid: Option<String> = None;
    let mut rest = html;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |e| &after[e + 3..]);
            continue;
        }
        if rest.starts_with('<')
            && rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        {
            let end = tag_end(rest);
            let tag = rest[1..end].trim_end_matches('>');
            rest = &rest[end..];
            let closing = tag.starts_with('/');
            let name = tag_name(tag);
            if closing {
                if CODE.contains(&name.as_str()) {
                    in_code = in_code.saturating_sub(1);
                    if name == "code" {
                        if let Some(src) = mermaid.take() {
                            found.diagrams += 1;
                            found
                                .mermaid
                                .extend(mermaid_label_problems(&decode_entities(&src)));
                        }
                    }
                }
                continue;
            }
            let attrs = attributes(tag);
            if name != "a" {
                for (key, value) in &attrs {
                    if FETCHING.contains(&key.as_str()) && is_remote(value) {
                        found.network.push(format!("<{name} {key}=\"{value}\">"));
                    }
                }
            }
            if RAW_TEXT.contains(&name.as_str()) {
                let close = format!("</{name}");
                rest = rest.find(&close).map_or("", |e| &rest[e..]);
            } else if CODE.contains(&name.as_str()) && !tag.ends_with('/') {
                in_code += 1;
                let class = attrs.iter().find(|(k, _)| k == "class");
                if name == "code" && class.is_some_and(|(_, v)| v.contains("language-mermaid")) {
                    mermaid = Some(String::new());
                }
            }
            continue;
        }
        let first = rest.chars().next().map_or(1, char::len_utf8);
        let next = rest[first..].find('<').map_or(rest.len(), |i| i + first);
        let text = &rest[..next];
        if let Some(src) = &mut mermaid {
            src.push_str(text);
        } else if in_code == 0 {
            for needle in ["\\(", "\\[", "$$"] {
                if let Some(at) = text.find(needle) {
                    found
                        .raw_math
                        .push(format!("raw {needle} in \"{}\"", snippet(text, at)));
                }
            }
        }
        if text.contains("Unsupported markdown") {
            found
                .mermaid
                .push("\"Unsupported markdown\" in the page".to_string());
        }
        rest = &rest[next..];
    }
    found
}

/// The index just past the `>` that ends the tag starting at `s[0]`, skipping quoted values.
fn tag_end(s: &str) -> usize {
    let mut quote = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return i + 1,
            _ => {}
        }
    }
    s.len()
}

fn tag_name(tag: &str) -> String {
    tag.trim_start_matches('/')
        .split(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The attributes of a tag's text (without `<` and `>`), names lowercased.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    let name_len = tag.find(|c: char| c.is_whitespace()).unwrap_or(tag.len());
    let mut rest = tag[name_len..].trim_end_matches('/');
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return attrs;
        }
        let key_len = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let key = rest[..key_len].to_ascii_lowercase();
        rest = rest[key_len..].trim_start();
        let Some(after_eq) = rest.strip_prefix('=') else {
            attrs.push((key, String::new()));
            continue;
        };
        let value_text = after_eq.trim_start();
        let (value, after) = match value_text.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let body = &value_text[1..];
                let end = body.find(q).unwrap_or(body.len());
                (&body[..end], body.get(end + 1..).unwrap_or(""))
            }
            _ => {
                let end = value_text
                    .find(char::is_whitespace)
                    .unwrap_or(value_text.len());
                (&value_text[..end], &value_text[end..])
            }
        };
        attrs.push((key, value.to_string()));
        rest = after;
    }
}

fn is_remote(url: &str) -> bool {
    let url = url.trim().to_ascii_lowercase();
    url.starts_with("http:") || url.starts_with("https:") || url.starts_with("//")
}

/// `url(...)` and `@import` of remote addresses in a stylesheet.
fn css_network(css: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (marker, skip) in [("url(", 4), ("@import", 7)] {
        let mut from = 0;
        while let Some(at) = css[from..].find(marker) {
            let start = from + at + skip;
            let target = css[start..]
                .trim_start()
                .trim_start_matches(['"', '\'', '(', ' ']);
            // `@import url(...)` is the url( scan's: count it once.
            let counted = marker == "@import" && target.starts_with("url(");
            if !counted && is_remote(target) {
                problems.push(format!("{marker} {}", snippet(css, from + at)));
            }
            from = start;
        }
    }
    problems
}

/// Mermaid node and edge labels that Markdown would read as a list item: `+`, `-`, `*` or
/// `1.` alone or before a space. Mermaid renders those as "Unsupported markdown: list".
fn mermaid_label_problems(src: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for line in src.lines() {
        let line = line.trim();
        if line.starts_with("%%") {
            continue;
        }
        let mut rest = line;
        while let Some(open) = rest.find(['[', '(', '{', '|']) {
            let after = rest[open..].trim_start_matches(['[', '(', '{', '|', '/', '\\']);
            let Some(close) = after.find([']', ')', '}', '|']) else {
                break;
            };
            let label = after[..close].trim();
            // `[*]` is a state diagram's start and end state, not a label.
            let state_end = rest[open..].starts_with("[*]");
            if !state_end && !label.starts_with('"') && is_list_marker(label) {
                problems.push(format!(
                    "mermaid label `{}` (quote it)",
                    rest[open..].split_whitespace().next().unwrap_or(label)
                ));
            }
            rest = &after[close..];
            rest = rest.trim_start_matches([']', ')', '}', '|', '/', '\\']);
        }
    }
    problems
}

fn is_list_marker(label: &str) -> bool {
    let marker = label.split_whitespace().next().unwrap_or("");
    matches!(marker, "+" | "-" | "*")
        || (marker.len() > 1
            && marker.ends_with(['.', ')'])
            && marker[..marker.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_digit()))
}

fn decode_entities(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// Up to 30 characters either side of `at`, on one line.
fn snippet(text: &str, at: usize) -> String {
    let start = text[..at]
        .char_indices()
        .rev()
        .nth(29)
        .map_or(0, |(i, _)| i);
    let end = text[at..]
        .char_indices()
        .nth(30)
        .map_or(text.len(), |(i, _)| at + i);
    text[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The quiz keys whose text mdbook-quiz renders as Markdown.
const QUIZ_TEXT: [&str; 4] = [
    "prompt.prompt",
    "prompt.distractors",
    "answer.answer",
    "context",
];

/// Counts the questions of one quiz file and names every identifier with an underscore left
/// outside backticks in its Markdown text, as `Qn (id …): `ident` in key`.
fn quiz_text_problems(toml: &str) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut question = 0;
    let mut pending: Vec<String> = Vec::new();
    let mut flush = |question: usize, id: &str, pending: &mut Vec<String>| {
        for p in pending.drain(..) {
            problems.push(format!("Q{question} (id {id}): {p}"));
        }
    };
    let mut id = String::from("?");
    let mut p = TomlScan { s: toml, pos: 0 };
    while let Some(item) = p.next_item() {
        match item {
            Item::Table(name) => {
                flush(question, &id, &mut pending);
                id = String::from("?");
                if name == "[[questions]]" {
                    question += 1;
                }
            }
            Item::Pair(key, strings) => {
                if key == "id" {
                    id = strings.first().cloned().unwrap_or_default();
                }
                if QUIZ_TEXT.contains(&key.as_str()) {
                    for s in &strings {
                        for ident in bare_identifiers(s) {
                            pending.push(format!("`{ident}` outside backticks in {key}"));
                        }
                    }
                }
            }
        }
    }
    flush(question, &id, &mut pending);
    (question, problems)
}

/// Words made of letters, digits and `_` with an underscore inside (`max_model_len`), outside
/// code spans and fenced code.
fn bare_identifiers(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut prose = String::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    let bytes = prose.as_bytes();
    let mut i = 0;
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    while i < bytes.len() {
        if bytes[i] == b'`' {
            let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
            let fence = &prose[i..i + run];
            i = match prose[i + run..].find(fence) {
                Some(at) => i + run + at + run,
                None => i + run,
            };
        } else if is_word(bytes[i]) {
            let start = i;
            while i < bytes.len() && is_word(bytes[i]) {
                i += 1;
            }
            let word = &prose[start..i];
            let inner = word.trim_matches('_');
            if inner.contains('_') {
                found.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    found
}

enum Item {
    /// A table header line, such as `[[questions]]`.
    Table(String),
    /// `key = value`, with every string found in the value (arrays and inline tables included).
    Pair(String, Vec<String>),
}

/// Just enough TOML for the quiz files: headers, `key = value`, strings of the four kinds,
/// arrays, inline tables, bare scalars, comments.
struct TomlScan<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> TomlScan<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn skip_blank(&mut self, newlines: bool) {
        loop {
            let r = self.rest();
            let trimmed = if newlines {
                r.trim_start()
            } else {
                r.trim_start_matches([' ', '\t'])
            };
            self.pos += r.len() - trimmed.len();
            if trimmed.starts_with('#') {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else {
                return;
            }
        }
    }

    fn next_item(&mut self) -> Option<Item> {
        self.skip_blank(true);
        let r = self.rest();
        if r.is_empty() {
            return None;
        }
        let line_end = r.find('\n').unwrap_or(r.len());
        if r.starts_with('[') {
            self.pos += line_end;
            return Some(Item::Table(r[..line_end].trim().to_string()));
        }
        let Some(eq) = r[..line_end].find('=') else {
            self.pos += line_end;
            return self.next_item();
        };
        let key = r[..eq].trim().to_string();
        self.pos += eq + 1;
        let mut strings = Vec::new();
        self.value(&mut strings);
        Some(Item::Pair(key, strings))
    }

    /// Reads one value, pushing every string in it.
    fn value(&mut self, strings: &mut Vec<String>) {
        self.skip_blank(false);
        let r = self.rest();
        for (quote, basic) in [("\"\"\"", true), ("'''", false), ("\"", true), ("'", false)] {
            if let Some(body) = r.strip_prefix(quote) {
                let end = find_unescaped(body, quote, basic);
                let text = &body[..end];
                let text = if quote.len() == 3 {
                    text.strip_prefix('\n').unwrap_or(text)
                } else {
                    text
                };
                strings.push(if basic {
                    unescape_basic(text)
                } else {
                    text.to_string()
                });
                self.pos += quote.len() + (end + quote.len()).min(body.len());
                return;
            }
        }
        if r.starts_with('[') || r.starts_with('{') {
            let close = if r.starts_with('[') { ']' } else { '}' };
            self.pos += 1;
            loop {
                self.skip_blank(true);
                let r = self.rest();
                if r.is_empty() {
                    return;
                }
                if r.starts_with(close) {
                    self.pos += 1;
                    return;
                }
                if r.starts_with(',') {
                    self.pos += 1;
                    continue;
                }
                if close == '}' {
                    // `key = value` inside an inline table
                    match r.find(['=', '}']) {
                        Some(i) if r.as_bytes()[i] == b'=' => self.pos += i + 1,
                        _ => {}
                    }
                }
                let before = self.pos;
                self.value(strings);
                if self.pos == before {
                    self.pos += r.chars().next().map_or(1, char::len_utf8);
                }
            }
        }
        // A bare scalar: number, boolean, date.
        let end = r.find([',', ']', '}', '\n', '#']).unwrap_or(r.len());
        self.pos += end;
    }
}

/// Where the closing `quote` is in `body`; in a basic string a backslash escapes the next
/// character. The end of `body` if it is never closed.
fn find_unescaped(body: &str, quote: &str, basic: bool) -> usize {
    let mut i = 0;
    while i < body.len() {
        if basic && body.as_bytes()[i] == b'\\' {
            i += 2;
            continue;
        }
        if body[i..].starts_with(quote) {
            return i;
        }
        i += body[i..].chars().next().map_or(1, char::len_utf8);
    }
    body.len()
}

fn unescape_basic(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\n') => {
                // line-ending backslash: the newline and leading whitespace vanish
                let rest: String = chars.by_ref().collect();
                out.push_str(&unescape_basic(rest.trim_start()));
                return out;
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_from_a_cdn_is_caught_and_a_link_is_not() {
        let page = r#"<html><head><script src="https://cdn.example/mathjax.js"></script>
            <link rel="stylesheet" href="//fonts.example/css"><link href="css/local.css">
            </head><body><a href="https://github.com/x">source</a><img src='http://x/y.png'>
            <script>var u = "<img src=https://not/a/tag>";</script></body></html>"#;
        let found = scan_html(page);
        assert_eq!(found.network.len(), 3, "{:?}", found.network);
        assert!(found.network[0].contains("cdn.example"));
        assert!(found.raw_math.is_empty());
    }

    #[test]
    fn a_remote_font_in_css_is_caught() {
        let css = r#"@font-face { src: url("https://fonts.example/a.woff2"); }
            @import url(//x.example/b.css); .a { background: url(img/local.png) }"#;
        assert_eq!(css_network(css).len(), 2);
        assert!(css_network("@font-face { src: url('fonts/a.woff2') }").is_empty());
    }

    #[test]
    fn raw_math_outside_code_is_caught() {
        let page = r"<p>a sequence needs \(\lceil n / B \rceil\) blocks</p>
            <p>\[ x \]</p><p>$$y$$</p><pre><code>let s = r#\(#;</code></pre>
            <p><code>\[</code> and <math><mi>n</mi></math></p>";
        let found = scan_html(page);
        assert_eq!(found.raw_math.len(), 3, "{:?}", found.raw_math);
    }

    #[test]
    fn a_lone_plus_node_in_mermaid_is_caught_and_a_quoted_one_is_not() {
        let page = r#"<pre><code class="language-mermaid">stateDiagram-v2
            [*] --&gt; waiting
            </code></pre><pre><code class="language-mermaid">flowchart LR
            A[embed] --&gt; P((+)) --&gt; B[norm]
            A --&gt; Q(("+")) --&gt; C{-} --&gt;|1. yes| D[1 + 2]
            </code></pre>"#;
        let found = scan_html(page);
        assert_eq!(found.diagrams, 2);
        assert_eq!(found.mermaid.len(), 3, "{:?}", found.mermaid);
        assert!(found.mermaid[0].contains("((+))"));
        assert!(found.raw_math.is_empty());
    }

    #[test]
    fn unsupported_markdown_text_is_caught() {
        let found = scan_html("<div><span>Unsupported markdown: list</span></div>");
        assert_eq!(found.mermaid.len(), 1);
    }

    #[test]
    fn an_identifier_outside_backticks_names_its_question() {
        let toml = r#"
# comment with max_model_len
[[questions]]
type = "ShortAnswer"
prompt.prompt = """
How many blocks for `max_model_len` tokens?
"""
answer.answer = "14"
context = "kv_heads · head_dim bytes per token, see `block_size`"
check.args = { prompt_lens = [8, 8], output = "first_victim" }
id = "aaaa"

[[questions]]
type = "MultipleChoice"
prompt.prompt = 'Which is right?'
prompt.distractors = [
  "It frees `num_computed_tokens`.",
  'It resets num_computed_tokens',
]
answer.answer = """It keeps _all_ blocks."""
id = "bbbb"
"#;
        let (count, problems) = quiz_text_problems(toml);
        assert_eq!(count, 2);
        assert_eq!(
            problems,
            [
                "Q1 (id aaaa): `kv_heads` outside backticks in context",
                "Q1 (id aaaa): `head_dim` outside backticks in context",
                "Q2 (id bbbb): `num_computed_tokens` outside backticks in prompt.distractors",
            ]
        );
    }

    #[test]
    fn code_spans_and_fences_hide_identifiers() {
        assert!(bare_identifiers("`a_b` and ``c_d`` and\n```\ne_f\n```\n_emph_").is_empty());
        assert_eq!(bare_identifiers("x_1 and \\_ and a_b_c"), ["x_1", "a_b_c"]);
    }
}
