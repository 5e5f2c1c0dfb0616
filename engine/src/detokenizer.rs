//! Token ids to text one step at a time (vLLM's `IncrementalDetokenizer`,
//! `vllm/v1/engine/detokenizer.py`, after Hugging Face's text-generation-inference).
//!
//! A streaming server sends each request's new text as soon as its tokens are sampled. Decoding
//! each new token alone is wrong twice over:
//! - a byte-level tokenizer (GPT-2's, SmolLM2's, the tiny model's) can split one UTF-8
//!   character over several tokens: `é` is two bytes, an emoji four, and decoding a lone
//!   first byte gives the replacement character U+FFFD;
//! - some tokenizers decode a token differently depending on what comes before it (SentencePiece
//!   drops the leading space of the first token of a decode).
//!
//! So the detokenizer decodes a short window that starts a few tokens *before* the new ones
//! (`prefix_offset`), subtracts the text of the window's old part (up to `read_offset`), and
//! emits the difference only when it does not end in U+FFFD: an unfinished character is held
//! back until the token that completes it arrives. The pieces it emits concatenate to the
//! whole text, and none of them splits a character.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// How many prompt tokens before the first new one the first window starts with (vLLM's
/// `INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET`): enough context for a tokenizer's spacing rules.
const INITIAL_OFFSET: usize = 5;

// ANCHOR: incremental_detokenizer
/// One request's decoding state: its token ids (the prompt's tail, then the generated ones) and
/// the window offsets into them.
#[derive(Debug, Clone)]
pub struct IncrementalDetokenizer {
    /// The last few prompt tokens (context only, never emitted), then every generated token.
    token_ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// End of the text already emitted: tokens from here on are new.
    read_offset: usize,
    skip_special_tokens: bool,
}

impl IncrementalDetokenizer {
    /// A detokenizer for the output that follows `prompt_token_ids`.
    pub fn new(prompt_token_ids: &[u32], skip_special_tokens: bool) -> Self {
        let tail = &prompt_token_ids[prompt_token_ids.len().saturating_sub(INITIAL_OFFSET)..];
        IncrementalDetokenizer {
            token_ids: tail.to_vec(),
            prefix_offset: 0,
            read_offset: tail.len(),
            skip_special_tokens,
        }
    }

    /// Adds one generated token; returns the text it completes (often the token's own text;
    /// empty while a character is unfinished, and then the whole character at once).
    pub fn push(&mut self, tokenizer: &Tokenizer, token_id: u32) -> Result<String> {
        self.token_ids.push(token_id);
        self.emit(tokenizer, false)
    }

    /// The text still held back (an unfinished character, shown as U+FFFD): call once when the
    /// request ends, so that the pieces add up to the decoding of every token.
    pub fn flush(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        self.emit(tokenizer, true)
    }

    fn emit(&mut self, tokenizer: &Tokenizer, last: bool) -> Result<String> {
        let skip = self.skip_special_tokens;
        let prefix =
            tokenizer.decode(&self.token_ids[self.prefix_offset..self.read_offset], skip)?;
        let whole = tokenizer.decode(&self.token_ids[self.prefix_offset..], skip)?;
        // Nothing new yet (a special token skipped, say), or the new text ends inside a
        // character: hold it back until a later token finishes it.
        if whole.len() <= prefix.len() || (whole.ends_with('\u{FFFD}') && !last) {
            return Ok(String::new());
        }
        // The window's old part decodes to the same text with or without the new tokens for the
        // tokenizers we know; if one ever rewrote it, `get` keeps us from slicing inside a
        // character, and the text stays held back until it settles.
        let Some(new_text) = whole
            .get(prefix.len()..)
            .filter(|_| whole.starts_with(&prefix))
        else {
            return Ok(String::new());
        };
        let new_text = new_text.to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.token_ids.len();
        Ok(new_text)
    }
}
// ANCHOR_END: incremental_detokenizer

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny_model::tiny_tokenizer;

    /// Feeds `text`'s tokens one at a time; returns the pieces.
    fn pieces(tok: &Tokenizer, prompt: &str, text: &str) -> Vec<String> {
        let prompt_ids = tok.encode(prompt).unwrap();
        let ids = tok.encode(text).unwrap();
        let mut d = IncrementalDetokenizer::new(&prompt_ids, true);
        let mut out: Vec<String> = ids.iter().map(|&id| d.push(tok, id).unwrap()).collect();
        out.push(d.flush(tok).unwrap());
        out
    }

    #[test]
    fn multi_byte_characters_are_never_split() {
        // The tiny tokenizer has one token per byte: "é" is 2 tokens, "世" 3, "🎉" 4.
        let tok = tiny_tokenizer();
        let text = "héllo 世界 🎉! naïve ☃";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids.len(), text.len(), "one token per byte");
        let pieces = pieces(&tok, "Prompt: ", text);
        assert_eq!(pieces.concat(), text);
        for p in &pieces {
            assert!(!p.contains('\u{FFFD}'), "piece {p:?} splits a character");
        }
        // Each multi-byte character arrives whole, with the token of its last byte.
        assert!(pieces.contains(&"🎉".to_string()), "{pieces:?}");
        let empty = pieces.iter().filter(|p| p.is_empty()).count();
        let continuation_bytes = text.bytes().filter(|b| b & 0xC0 == 0x80).count();
        assert_eq!(
            empty,
            continuation_bytes + 1,
            "held back, plus the empty flush"
        );
    }

    #[test]
    fn an_unfinished_character_is_flushed_at_the_end() {
        let tok = tiny_tokenizer();
        // The first two bytes of "世" (E4 B8 96): the request ended mid-character.
        let ids = tok.encode("世").unwrap();
        let mut d = IncrementalDetokenizer::new(&[], true);
        assert_eq!(d.push(&tok, ids[0]).unwrap(), "");
        assert_eq!(d.push(&tok, ids[1]).unwrap(), "");
        let rest = d.flush(&tok).unwrap();
        assert_eq!(rest, tok.decode(&ids[..2], true).unwrap());
        assert!(rest.contains('\u{FFFD}'));
        assert_eq!(
            d.flush(&tok).unwrap(),
            "",
            "a second flush has nothing left"
        );
    }

    #[test]
    fn special_tokens_are_skipped_or_kept() {
        let tok = tiny_tokenizer();
        let end = tok.token_to_id("<|im_end|>").expect("ChatML token");
        let a = tok.encode("a").unwrap()[0];
        let mut skip = IncrementalDetokenizer::new(&[], true);
        let mut keep = IncrementalDetokenizer::new(&[], false);
        let s: String = [a, end, a]
            .iter()
            .map(|&t| skip.push(&tok, t).unwrap())
            .collect();
        let k: String = [a, end, a]
            .iter()
            .map(|&t| keep.push(&tok, t).unwrap())
            .collect();
        assert_eq!(s, "aa");
        assert_eq!(k, "a<|im_end|>a");
    }
}
