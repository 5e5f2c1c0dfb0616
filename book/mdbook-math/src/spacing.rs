//! TeX's spacing where `pulldown-latex` 0.8's MathML would get the browser's.
//!
//! MathML spaces an `<mo>` by its *form*, which the browser infers from its place in the row: a
//! bracket that is not the first child is taken as infix and gets thick spaces on both sides,
//! and `\text{table}[\lfloor p / B \rfloor]` would come out as "table [ ⌊ p / B ⌋ ]". TeX
//! spaces by atom class instead: an opening bracket is an opener, a braced group such as the
//! `{,}` of `6{,}738` is an ordinary atom, and so is `/`, which MathML spaces like a binary
//! operator. We state those forms explicitly.

/// Gives bracket operators an explicit prefix/postfix form, and a lone operator in a group
/// (`<mrow><mo>,</mo></mrow>`) and a slash no space, as TeX does.
pub fn tex_spacing(mathml: &str) -> String {
    let mut out = String::with_capacity(mathml.len() + 64);
    let mut rest = mathml;
    while let Some(at) = rest.find("<mo") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(tag_end) = rest.find('>') else { break };
        let Some(close) = rest.find("</mo>") else {
            break;
        };
        let tag = &rest[..tag_end];
        let is_mo = matches!(tag.as_bytes().get(3), Some(b' ') | None);
        if !is_mo || close < tag_end || tag.contains("form=") || tag.ends_with('/') {
            out.push_str(&rest[..tag_end + 1]);
            rest = &rest[tag_end + 1..];
            continue;
        }
        let text = &rest[tag_end + 1..close];
        let alone_in_group = out.ends_with("<mrow>") && rest[close..].starts_with("</mo></mrow>");
        out.push_str(tag);
        if alone_in_group || text == "/" {
            out.push_str(r#" lspace="0em" rspace="0em""#);
        } else if matches!(text, "(" | "[" | "{" | "⌊" | "⌈" | "⟨") {
            out.push_str(r#" form="prefix""#);
        } else if matches!(text, ")" | "]" | "}" | "⌋" | "⌉" | "⟩") {
            out.push_str(r#" form="postfix""#);
        }
        out.push_str(&rest[tag_end..close]);
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::tex_spacing;

    #[test]
    fn brackets_get_their_form() {
        assert_eq!(
            tex_spacing(r#"<mn>32</mn><mo>⋅</mo><mo stretchy="true">(</mo><mn>4</mn><mo>)</mo>"#),
            r#"<mn>32</mn><mo>⋅</mo><mo stretchy="true" form="prefix">(</mo><mn>4</mn><mo form="postfix">)</mo>"#
        );
    }

    #[test]
    fn a_braced_comma_is_not_punctuation() {
        assert_eq!(
            tex_spacing("<mn>6</mn><mrow><mo>,</mo></mrow><mn>738</mn><mo>,</mo>"),
            r#"<mn>6</mn><mrow><mo lspace="0em" rspace="0em">,</mo></mrow><mn>738</mn><mo>,</mo>"#
        );
    }

    #[test]
    fn a_slash_is_not_spaced() {
        assert_eq!(
            tex_spacing("<mi>p</mi><mo>/</mo><mi>B</mi>"),
            r#"<mi>p</mi><mo lspace="0em" rspace="0em">/</mo><mi>B</mi>"#
        );
    }

    #[test]
    fn other_elements_and_explicit_forms_are_untouched() {
        let s = r#"<mover><mi>x</mi><mo form="infix">(</mo></mover><mspace width="1em" />"#;
        assert_eq!(tex_spacing(s), s);
    }
}
