//! `\underbrace` drawn by CSS instead of by a stretched glyph.
//!
//! `pulldown-latex` writes `\underbrace{x}` as `<munder>x<mo stretchy="true">⏟</mo></munder>`,
//! and the browser is meant to stretch the brace glyph to the width of `x`. Chromium 156 gets
//! that wrong as soon as a formula holds two such braces (Stage 3's parameter count has four):
//! all but one come out too short and shifted. A single `<mrow class="underbrace">` around `x`,
//! with the brace painted under it by `book/math.css` in the text colour, is the same everywhere.

const BRACE: &str = r#"<mo stretchy="true">⏟</mo></munder>"#;
const OPEN: &str = "<munder>";

/// Rewrites every `<munder>x<mo stretchy="true">⏟</mo></munder>` as
/// `<mrow class="underbrace">x</mrow>`; anything else is copied as it is.
pub fn css_underbraces(mathml: &str) -> String {
    let mut out = String::with_capacity(mathml.len() + 64);
    // Where each `<munder>` still open starts in `out`.
    let mut open: Vec<usize> = Vec::new();
    let mut rest = mathml;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with(BRACE) {
            let start = open.last().copied().filter(|&s| out[s..].starts_with(OPEN));
            if let Some(start) = start {
                open.pop();
                out.replace_range(start..start + OPEN.len(), r#"<mrow class="underbrace">"#);
                out.push_str("</mrow>");
                rest = &rest[BRACE.len()..];
                continue;
            }
        }
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        let tag = &rest[..end];
        if tag.starts_with("<munder") && !tag.ends_with("/>") {
            open.push(out.len());
        } else if tag == "</munder>" {
            open.pop();
        }
        out.push_str(tag);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::css_underbraces;

    #[test]
    fn a_labelled_underbrace_becomes_a_classed_row() {
        let mathml = concat!(
            r#"<munder><munder><mrow><mn>2</mn></mrow><mo stretchy="true">⏟</mo></munder>"#,
            r#"<mrow><mtext>embed</mtext></mrow></munder>"#
        );
        assert_eq!(
            css_underbraces(mathml),
            concat!(
                r#"<munder><mrow class="underbrace"><mrow><mn>2</mn></mrow></mrow>"#,
                r#"<mrow><mtext>embed</mtext></mrow></munder>"#
            )
        );
    }

    #[test]
    fn other_munders_are_untouched() {
        let mathml =
            r#"<munder><mo>∑</mo><mi>j</mi></munder><munder><mi>x</mi><mo>_</mo></munder>"#;
        assert_eq!(css_underbraces(mathml), mathml);
    }
}
