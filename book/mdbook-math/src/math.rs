//! TeX math in Markdown prose, rendered to MathML at build time.
//!
//! The chapters write math as MathJax would read it after Markdown: `\\( … \\)` inline and
//! `\\[ … \\]` display, with Markdown's backslash escapes inside (`\_` for a subscript, so that
//! emphasis does not eat it). We find the delimiters outside code spans, undo the escapes to get
//! the TeX, render it with `pulldown-latex`, and put the MathML back as one line of inline HTML.
//! Markdown still parses the text between the tags, so every ASCII punctuation character there
//! is written as an entity: `*`, `_` or `|` inside a formula cannot turn into emphasis or a table
//! cell.

use pulldown_latex::config::DisplayMode;
use pulldown_latex::{push_mathml, Parser, RenderConfig, Storage};

/// Replaces every formula in `text` (prose, no fenced code) with MathML. `first_line` is the
/// chapter line `text` starts on, for error messages.
pub fn render_prose(text: &str, first_line: usize) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0; // text[..copied] is in `out` already
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => {
                let run = run_length(bytes, i, b'`');
                i = code_span_end(bytes, i, run).unwrap_or(i + run);
            }
            b'\\'
                if i + 2 < bytes.len()
                    && bytes[i + 1] == b'\\'
                    && matches!(bytes[i + 2], b'(' | b'[') =>
            {
                let display = bytes[i + 2] == b'[';
                let closer = if display { b']' } else { b')' };
                let line = first_line + text[..i].matches('\n').count();
                let end = find_closer(bytes, i + 3, closer)
                    .ok_or_else(|| format!("line {line}: formula opened here is never closed"))?;
                let tex = unescape(&text[i + 3..end]);
                let mathml = to_mathml(&tex, display).map_err(|e| format!("line {line}: {e}"))?;
                out.push_str(&text[copied..i]);
                let mathml = crate::braces::css_underbraces(&crate::spacing::tex_spacing(&mathml));
                out.push_str(&protect(&mathml));
                i = end + 3;
                copied = i;
            }
            // Any other escape pair stands for itself (`\\` is one backslash, `\`` no code span).
            b'\\' if i + 1 < bytes.len() && bytes[i + 1].is_ascii_punctuation() => i += 2,
            _ => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

fn run_length(bytes: &[u8], at: usize, b: u8) -> usize {
    bytes[at..].iter().take_while(|&&c| c == b).count()
}

/// The end of a code span opened by `run` backticks at `at`: just past the next run of exactly
/// `run` backticks, or `None` when there is none (then the backticks are literal text).
fn code_span_end(bytes: &[u8], at: usize, run: usize) -> Option<usize> {
    let mut j = at + run;
    while j < bytes.len() {
        if bytes[j] == b'`' {
            let n = run_length(bytes, j, b'`');
            if n == run {
                return Some(j + n);
            }
            j += n;
        } else {
            j += 1;
        }
    }
    None
}

/// Where the formula ends: the `\\` of the `\\)` or `\\]` that closes it. Escape pairs inside are
/// skipped whole, so `\\\\` (TeX's `\\`) is not mistaken for the start of a closer.
fn find_closer(bytes: &[u8], from: usize, closer: u8) -> Option<usize> {
    let mut j = from;
    while j + 1 < bytes.len() {
        if bytes[j] == b'\\' && bytes[j + 1].is_ascii_punctuation() {
            if bytes[j + 1] == b'\\' && bytes.get(j + 2) == Some(&closer) {
                return Some(j);
            }
            j += 2;
        } else {
            j += 1;
        }
    }
    None
}

/// Undoes the Markdown backslash escapes a formula needs: `\\` → `\`, `\_` → `_`, and the same
/// for `` ` `` `*` `[` `]` `(` `)` `<` `~`, which Markdown could otherwise read as syntax.
/// Other punctuation keeps its backslash, because there the author means TeX: `\,` `\;` `\!`
/// are spaces, `\{` `\|` `\%` literal symbols (Markdown alone would drop the backslash, and
/// MathJax would then have shown `min(a,; b)` for `min(a,\; b)`). A backslash before a letter
/// (`\frac`) is always kept.
pub fn unescape(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next) = chars.peek() {
                if "\\_`*[]()<~".contains(next) {
                    out.push(next);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// Renders TeX as MathML. Any parse error (an unknown command, a missing brace) is an error
/// here, not a red fragment on the page.
pub fn to_mathml(tex: &str, display: bool) -> Result<String, String> {
    let storage = Storage::new();
    let events: Vec<_> = Parser::new(tex, &storage).collect();
    if let Some(Err(e)) = events.iter().find(|e| e.is_err()) {
        return Err(format!("cannot render `{}`: {e}", tex.trim()));
    }
    let config = RenderConfig {
        display_mode: if display {
            DisplayMode::Block
        } else {
            DisplayMode::Inline
        },
        ..RenderConfig::default()
    };
    let mut mathml = String::new();
    push_mathml(&mut mathml, events.into_iter(), config)
        .map_err(|e| format!("cannot render `{}`: {e}", tex.trim()))?;
    Ok(mathml)
}

/// Makes MathML safe to hand back to Markdown: one line, tags as they are, and in the text
/// between them every ASCII punctuation character as a numeric entity (existing entities such
/// as `&lt;` are kept). Attributes get the space between them that CommonMark's raw-HTML rule
/// demands (`pulldown-latex` 0.8 writes `stretchy="true"minsize="1.2em"` for `\big(`).
pub fn protect(mathml: &str) -> String {
    let mut out = String::with_capacity(mathml.len() * 2);
    let mut in_tag = false;
    let mut in_quotes = false;
    let mut rest = mathml;
    while let Some(c) = rest.chars().next() {
        let len = c.len_utf8();
        match c {
            '\n' | '\r' => out.push(' '),
            '"' if in_tag => {
                out.push(c);
                in_quotes = !in_quotes;
                let next = rest[1..].chars().next();
                if !in_quotes && next.is_some_and(|n| n.is_ascii_alphabetic()) {
                    out.push(' ');
                }
            }
            _ if in_quotes => out.push(c),
            '<' if !in_tag => {
                in_tag = true;
                out.push(c);
            }
            '>' if in_tag => {
                in_tag = false;
                out.push(c);
            }
            '&' if !in_tag => {
                let entity = rest.find(';').filter(|&end| {
                    rest[1..end]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'#')
                });
                match entity {
                    Some(end) => {
                        out.push_str(&rest[..=end]);
                        rest = &rest[end + 1..];
                        continue;
                    }
                    None => out.push_str("&#38;"),
                }
            }
            c if !in_tag && c.is_ascii_punctuation() => {
                out.push_str(&format!("&#{};", c as u32));
            }
            c => out.push(c),
        }
        rest = &rest[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_escapes_are_undone() {
        assert_eq!(
            unescape(r"\text{kv\_heads} \\ \* \frac"),
            r"\text{kv_heads} \ * \frac"
        );
        assert_eq!(unescape(r"a,\; b\, \{c\}"), r"a,\; b\, \{c\}");
    }

    #[test]
    fn inline_and_display_formulas_become_math_elements() {
        let out = render_prose(
            "a \\\\(x\\_i\\\\) and\n\\\\[ \\lceil n / B \\rceil \\\\]\n",
            1,
        )
        .unwrap();
        assert!(out.starts_with("a <math"), "{out}");
        assert!(out.contains("<msub>"), "{out}");
        assert!(out.contains("display=\"block\""), "{out}");
        assert!(!out.contains("\\\\("), "{out}");
        assert!(!out.contains("\\\\["), "{out}");
    }

    #[test]
    fn code_spans_are_left_alone() {
        let text = "write `\\\\(x\\\\)` or ``a ` \\\\[y\\\\]``.";
        assert_eq!(render_prose(text, 1).unwrap(), text);
    }

    #[test]
    fn text_between_tags_cannot_become_markdown() {
        let out = protect("<mi>a_b</mi><mo>*</mo><mo>&lt;</mo><mo>|</mo>");
        assert_eq!(
            out,
            "<mi>a&#95;b</mi><mo>&#42;</mo><mo>&lt;</mo><mo>&#124;</mo>"
        );
        let out = protect("<mo a=\"x>y\"b=\"1\">(</mo>");
        assert_eq!(out, "<mo a=\"x>y\" b=\"1\">&#40;</mo>");
    }

    #[test]
    fn an_unknown_command_or_an_unclosed_formula_is_an_error() {
        let err = render_prose("line one\nsee \\\\(\\nosuchcommand{x}\\\\)", 10).unwrap_err();
        assert!(err.starts_with("line 11:"), "{err}");
        assert!(render_prose("\\\\(x", 1).is_err());
    }

    #[test]
    fn everything_the_book_writes_renders() {
        for tex in [
            r"\underbrace{2 \cdot 32000 \cdot 4096}_{\text{embed + head}} + 32 \cdot \big(\underbrace{4 \cdot 4096^2}_{q,k,v,o}\big) = 6{,}738{,}415{,}616",
            r"\left\lceil n / B \right\rceil",
            r"\text{table}[\lfloor p / B \rfloor] \cdot B + (p \bmod B)",
            r"\text{out}_i = \frac{x_i}{\sqrt{\frac{1}{h}\sum_j x_j^2 + \varepsilon}} \cdot w_i",
            r"x' = x \cos\phi - y \sin\phi, \qquad y' = y \cos\phi + x \sin\phi.",
            r"\sqrt{12.5} \approx 3.5355",
            r"\min(\text{num_tokens} - \text{num_computed_tokens},\; \text{budget left})",
            r"p_i = e^{(z_i - z_{\max})/T} / \sum_j e^{(z_j - z_{\max})/T}",
        ] {
            let mathml = to_mathml(tex, true).unwrap_or_else(|e| panic!("{e}"));
            assert!(!mathml.contains("merror"), "{tex}: {mathml}");
        }
    }
}
