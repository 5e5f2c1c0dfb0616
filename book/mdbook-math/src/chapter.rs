//! One chapter's Markdown, split into fenced code blocks and the prose between them.
//!
//! Code is never touched by the math pass (a listing may well contain `\\(`), and prose is
//! never dedented. The split follows CommonMark's fences: a line of three or more backticks or
//! tildes opens a block, and the first line of at least as many of the same character, with
//! nothing after them, closes it (an unclosed fence runs to the end of the chapter).

use crate::{dedent, math};

/// Rewrites a chapter: math in prose becomes MathML, fenced code loses its shared indentation.
pub fn process(markdown: &str) -> Result<String, String> {
    let mut out = String::with_capacity(markdown.len() * 2);
    let mut prose = String::new();
    let mut line_no = 1;
    let mut prose_start = 1;
    let mut lines = markdown.split_inclusive('\n');
    while let Some(line) = lines.next() {
        let Some(fence) = Fence::open(line) else {
            prose.push_str(line);
            line_no += 1;
            continue;
        };
        out.push_str(&math::render_prose(&prose, prose_start)?);
        prose.clear();
        out.push_str(line);
        line_no += 1;
        let mut body = Vec::new();
        let mut close = None;
        for l in lines.by_ref() {
            line_no += 1;
            if fence.closed_by(l) {
                close = Some(l);
                break;
            }
            body.push(l);
        }
        out.push_str(&dedent::dedent(&body, fence.indent));
        out.push_str(close.unwrap_or(""));
        prose_start = line_no;
    }
    out.push_str(&math::render_prose(&prose, prose_start)?);
    Ok(out)
}

/// An opening code fence: its character, length and indentation.
struct Fence {
    ch: u8,
    len: usize,
    indent: usize,
}

impl Fence {
    fn open(line: &str) -> Option<Fence> {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        let ch = *rest.as_bytes().first()?;
        if ch != b'`' && ch != b'~' {
            return None;
        }
        let len = rest.bytes().take_while(|&b| b == ch).count();
        // A backtick fence's info string may not contain a backtick (that would be a code span).
        if len < 3 || (ch == b'`' && rest[len..].contains('`')) {
            return None;
        }
        Some(Fence { ch, len, indent })
    }

    fn closed_by(&self, line: &str) -> bool {
        let rest = line.trim_start_matches(' ');
        let run = rest.bytes().take_while(|&b| b == self.ch).count();
        run >= self.len && rest[run..].trim().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::process;

    #[test]
    fn math_in_prose_is_rendered_and_code_is_left_alone() {
        let md = "Blocks: \\\\(n\\\\).\n\n```rust\nlet s = \"\\\\(n\\\\)\";\n```\n";
        let out = process(md).unwrap();
        assert!(out.starts_with("Blocks: <math"), "{out}");
        assert!(out.contains("let s = \"\\\\(n\\\\)\";"), "{out}");
    }

    #[test]
    fn a_listing_from_inside_an_impl_starts_at_the_margin() {
        let md = "```rust\n    fn f() {\n        1\n    }\n```\ntext\n";
        assert_eq!(
            process(md).unwrap(),
            "```rust\nfn f() {\n    1\n}\n```\ntext\n"
        );
    }

    #[test]
    fn a_fence_in_a_list_item_keeps_the_item_indentation() {
        let md = "- item\n\n  ```rust\n      x();\n  ```\n";
        assert_eq!(process(md).unwrap(), "- item\n\n  ```rust\n  x();\n  ```\n");
    }

    #[test]
    fn a_longer_fence_is_not_closed_by_a_shorter_one() {
        let md = "````md\n```\n\\\\(x\\\\)\n````\n";
        assert_eq!(process(md).unwrap(), md);
    }
}
