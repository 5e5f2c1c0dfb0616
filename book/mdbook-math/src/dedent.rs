//! Removing the indentation that every line of a code block shares.
//!
//! `{{#include file.rs:anchor}}` copies lines as they stand in the source, so a method anchored
//! inside an `impl` arrives four spaces in. mdBook 0.5.4 has no option to strip that, so we do
//! it here, after `links` has expanded the include.

/// Returns the block's lines with their common leading spaces removed, down to `keep`: the
/// fence's own indentation, which a fence inside a list item needs to stay in the item. Blank
/// lines do not count towards the common indentation.
pub fn dedent(lines: &[&str], keep: usize) -> String {
    let common = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| leading_spaces(l))
        .min()
        .unwrap_or(0);
    let cut = common.saturating_sub(keep);
    lines
        .iter()
        .map(|l| &l[cut.min(leading_spaces(l))..])
        .collect()
}

fn leading_spaces(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

#[cfg(test)]
mod tests {
    use super::dedent;

    #[test]
    fn removes_only_what_all_lines_share() {
        let lines = ["    fn f() {\n", "\n", "        g();\n", "    }\n"];
        assert_eq!(dedent(&lines, 0), "fn f() {\n\n    g();\n}\n");
    }

    #[test]
    fn keeps_the_fence_indentation() {
        let lines = ["      a\n", "        b\n"];
        assert_eq!(dedent(&lines, 2), "  a\n    b\n");
    }

    #[test]
    fn a_block_at_the_margin_is_unchanged() {
        let lines = ["a\n", "  b\n"];
        assert_eq!(dedent(&lines, 0), "a\n  b\n");
        assert_eq!(dedent(&[], 0), "");
    }
}
