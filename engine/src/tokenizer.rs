//! Text ↔ token ids through Hugging Face's `tokenizers` (the same Rust library transformers
//! uses), plus the model's chat template.

use std::path::Path;

use crate::chat_template::ChatTemplate;
use crate::error::{EngineError, Result};

/// A model's tokenizer and, if it has one, its chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub chat_template: Option<ChatTemplate>,
}

impl Tokenizer {
    /// Loads `<dir>/tokenizer.json` and the chat template beside it.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let bytes = std::fs::read(&path)
            .map_err(|e| EngineError::Tokenizer(format!("cannot read {}: {e}", path.display())))?;
        let mut tok = Self::from_json_bytes(&bytes)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
        tok.chat_template = ChatTemplate::from_dir(dir)?;
        Ok(tok)
    }

    /// Parses the contents of a `tokenizer.json`.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| EngineError::Tokenizer(format!("invalid tokenizer.json: {e}")))?;
        Ok(Tokenizer {
            inner,
            chat_template: None,
        })
    }

    /// Token ids of `text` as `tokenizer(text)` in transformers gives them: special-token
    /// strings such as `<|im_start|>` become their single ids, and the tokenizer's own
    /// post-processor decides about BOS (SmolLM2 adds none; Llama adds `<s>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| EngineError::Tokenizer(format!("cannot encode prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The tokenizer as `tokenizer.json` text (what [`Tokenizer::from_json_bytes`] reads back).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| EngineError::Tokenizer(format!("cannot serialize the tokenizer: {e}")))
    }

    /// Text of `ids`, optionally without special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| EngineError::Tokenizer(format!("cannot decode: {e}")))
    }

    /// Tokens the tokenizer knows, special ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if it is one token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
