//! The model's chat template: Jinja text that turns a list of messages into the prompt string
//! the model was trained on (for SmolLM2, ChatML: `<|im_start|>role\ncontent<|im_end|>\n`).
//!
//! transformers renders it with Jinja2 using `trim_blocks` and `lstrip_blocks`; minijinja,
//! configured the same way and with Python-compatible string methods, renders the same text.

use std::path::Path;

use crate::error::{EngineError, Result};

/// One chat message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A compiled chat template with the special-token strings it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

fn bad(msg: String) -> EngineError {
    EngineError::ChatTemplate(msg)
}

impl ChatTemplate {
    pub fn new(source: String, bos_token: String, eos_token: String) -> Self {
        ChatTemplate {
            source,
            bos_token,
            eos_token,
        }
    }

    /// `chat_template.jinja`, else `tokenizer_config.json`'s `chat_template` (a string, or a
    /// list of named templates of which we take `default`). `None` if the model has none.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let config: serde_json::Value =
            match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
                Ok(text) => serde_json::from_str(&text)
                    .map_err(|e| bad(format!("tokenizer_config.json: invalid JSON: {e}")))?,
                Err(_) => serde_json::Value::Null,
            };
        let token = |key: &str| match config.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        };
        let source = if let Ok(text) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
            Some(text)
        } else {
            match config.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(String::from)),
                _ => None,
            }
        };
        Ok(source.map(|s| ChatTemplate::new(s, token("bos_token"), token("eos_token"))))
    }

    /// The `tokenizer_config.json` that [`ChatTemplate::from_dir`] reads back as this template.
    pub fn tokenizer_config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "chat_template": self.source,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        })
    }

    // ANCHOR: apply_chat_template
    /// Renders `messages`, ending with the assistant's turn opener when
    /// `add_generation_prompt` is set (as transformers' `apply_chat_template(tokenize=False)`).
    pub fn apply(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", &self.source)
            .map_err(|e| bad(format!("cannot parse: {e}")))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| bad(format!("cannot render: {e}")))
    }
    // ANCHOR_END: apply_chat_template
}
