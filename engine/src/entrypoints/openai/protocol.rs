//! The OpenAI API's request and response bodies (vLLM's `entrypoints/openai/protocol.py`).
//!
//! Requests are parsed with serde: a field of the wrong type is a 400 that names it, and fields
//! we do not know are ignored (clients send many). Parameters we know but do not implement
//! (logprobs, penalties, ...) are refused with a 400 when set to anything but their neutral
//! value, rather than silently ignored: a client that asks for them would get wrong results.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sampling_params::SamplingParams;

/// An error as OpenAI's API returns it: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorResponse {
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorInfo {
    pub message: String,
    /// `BadRequestError`, `NotFoundError`, `ServiceUnavailableError`, `InternalServerError`.
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: u16,
}

/// A request error: the HTTP status, and what went wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 about one parameter.
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
        }
    }

    pub fn body(&self) -> ErrorResponse {
        let kind = match self.status {
            400 => "BadRequestError",
            404 => "NotFoundError",
            405 => "MethodNotAllowedError",
            503 => "ServiceUnavailableError",
            _ => "InternalServerError",
        };
        ErrorResponse {
            error: ErrorInfo {
                message: self.message.clone(),
                kind: kind.into(),
                param: self.param.clone(),
                code: self.status,
            },
        }
    }
}

impl From<crate::EngineError> for ApiError {
    fn from(e: crate::EngineError) -> Self {
        use crate::EngineError as E;
        match e {
            E::InvalidRequest(_) | E::Sampling(_) | E::Tokenizer(_) | E::ChatTemplate(_) => {
                ApiError::bad_request(e.to_string())
            }
            other => ApiError::new(500, other.to_string()),
        }
    }
}

/// Parses a request body, naming the problem (and the place in the body) on failure.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let e = e.into_inner();
        match e.classify() {
            serde_json::error::Category::Data if path != "." => {
                ApiError::bad_param(&path, format!("invalid request: {path}: {e}"))
            }
            serde_json::error::Category::Data => {
                ApiError::bad_request(format!("invalid request: {e}"))
            }
            _ => ApiError::bad_request(format!("the request body is not valid JSON: {e}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// `prompt` of a completion request: text, token ids, or a list of either.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(
    untagged,
    expecting = "a string, a list of strings, a list of token ids or a list of token id lists"
)]
pub enum PromptInput {
    Text(String),
    TokenIds(Vec<u32>),
    Texts(Vec<String>),
    TokenIdLists(Vec<Vec<u32>>),
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct StreamOptions {
    /// Send a last chunk with the usage counts (and no choices) before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling fields common to completions and chat, OpenAI's and vLLM's extra ones: parsed
/// from the same body as the endpoint's own fields (each struct ignores the other's), so that a
/// field of the wrong type is named in the error.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SamplingFields {
    pub max_tokens: Option<u64>,
    /// Chat's newer name for `max_tokens`.
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// vLLM's: keep the k most likely tokens; 0 or -1 keep all.
    pub top_k: Option<i64>,
    pub seed: Option<u64>,
    pub stop: Option<StopInput>,
    /// vLLM's: token ids that end the request.
    #[serde(default)]
    pub stop_token_ids: Vec<u32>,
    /// vLLM's: keep generating past end-of-sequence tokens.
    #[serde(default)]
    pub ignore_eos: bool,
    /// vLLM's: generate at least this many tokens before a stop ends the request.
    pub min_tokens: Option<u64>,
    pub n: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// vLLM's: return the prompt's and each choice's token ids.
    #[serde(default)]
    pub return_token_ids: bool,
    /// vLLM's: decode special tokens too (true skips them, as by default).
    pub skip_special_tokens: Option<bool>,
    /// vLLM's: scheduling priority under `--scheduling-policy priority` or `qos` (lower first).
    #[serde(default)]
    pub priority: i32,
    /// OpenAI's end-user id: the tenant the request is billed to under `--scheduling-policy
    /// fair` or `qos` (empty: the default tenant).
    #[serde(default)]
    pub user: String,
    /// Known parameters this server does not implement: refused unless neutral.
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<Value>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub logit_bias: Option<Value>,
    pub best_of: Option<u64>,
    pub min_p: Option<f32>,
    pub include_stop_str_in_output: Option<bool>,
}

/// How a request is to be run, checked: the engine's parameters and the server's own.
#[derive(Debug, Clone)]
pub struct RequestParams {
    /// `max_tokens` and `min_tokens` are set per prompt, from its length, by
    /// [`RequestParams::for_prompt`].
    pub sampling: SamplingParams,
    pub max_tokens: Option<usize>,
    /// vLLM's: no stop token or stop string ends a choice before it has this many tokens.
    pub min_tokens: usize,
    pub n: usize,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub return_token_ids: bool,
    pub skip_special_tokens: bool,
}

impl SamplingFields {
    /// Checks the fields and turns them into engine parameters (the prompt's length is checked
    /// against the model later, in [`RequestParams::for_prompt`]).
    pub fn to_params(&self) -> Result<RequestParams, ApiError> {
        self.refuse_unsupported()?;
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) | (None, Some(m)) => {
                if m == 0 {
                    return Err(ApiError::bad_param(
                        "max_tokens",
                        "max_tokens must be at least 1",
                    ));
                }
                Some(usize::try_from(m).unwrap_or(usize::MAX))
            }
            (None, None) => None,
        };
        let n = self.n.unwrap_or(1);
        if n == 0 {
            return Err(ApiError::bad_param("n", "n must be at least 1"));
        }
        if n > 64 {
            return Err(ApiError::bad_param("n", format!("n is {n}; at most 64")));
        }
        let top_k = match self.top_k {
            None | Some(0) | Some(-1) => None,
            Some(k) if k > 0 => Some(usize::try_from(k).unwrap_or(usize::MAX)),
            Some(k) => {
                return Err(ApiError::bad_param(
                    "top_k",
                    format!("top_k must be -1 or 0 (all tokens) or at least 1, got {k}"),
                ))
            }
        };
        let stop = match &self.stop {
            None => vec![],
            Some(StopInput::One(s)) => vec![s.clone()],
            Some(StopInput::Many(v)) => v.clone(),
        };
        if stop.iter().any(String::is_empty) {
            return Err(ApiError::bad_param("stop", "a stop string is empty"));
        }
        let min_tokens = usize::try_from(self.min_tokens.unwrap_or(0)).unwrap_or(usize::MAX);
        if let Some(max) = max_tokens {
            if min_tokens > max {
                return Err(ApiError::bad_param(
                    "min_tokens",
                    format!("min_tokens ({min_tokens}) is more than max_tokens ({max})"),
                ));
            }
        }
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_k,
            top_p: self.top_p.unwrap_or(1.0),
            seed: self.seed,
            max_tokens: 1, // set per prompt
            stop_token_ids: self.stop_token_ids.clone(),
            ignore_eos: self.ignore_eos,
            min_tokens: 0, // set per prompt, with max_tokens
            priority: self.priority,
            tenant: self.user.clone(),
            ..SamplingParams::default()
        };
        sampling.validate().map_err(|e| {
            // The engine's message starts with the parameter's name: name it in `param` too.
            let message = e.to_string();
            let known = ["temperature", "top_p", "top_k", "max_tokens", "min_tokens"];
            let param = known.into_iter().find(|p| {
                let text = message.trim_start_matches("invalid sampling parameters: ");
                text.starts_with(&format!("{p} "))
            });
            match param {
                Some(p) => ApiError::bad_param(p, message),
                None => ApiError::bad_request(message),
            }
        })?;
        Ok(RequestParams {
            sampling,
            max_tokens,
            min_tokens,
            n: n as usize,
            stop,
            stream: self.stream,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            return_token_ids: self.return_token_ids,
            skip_special_tokens: self.skip_special_tokens.unwrap_or(true),
        })
    }

    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        let unsupported = |param: &str| {
            Err(ApiError::bad_param(
                param,
                format!("{param} is not supported by this server"),
            ))
        };
        let set = |v: &Option<Value>| {
            v.as_ref()
                .is_some_and(|v| !(v.is_null() || *v == Value::Bool(false)))
        };
        if set(&self.logprobs) {
            return unsupported("logprobs");
        }
        if set(&self.top_logprobs) && self.top_logprobs != Some(Value::from(0)) {
            return unsupported("top_logprobs");
        }
        if self.presence_penalty.is_some_and(|p| p != 0.0) {
            return unsupported("presence_penalty");
        }
        if self.frequency_penalty.is_some_and(|p| p != 0.0) {
            return unsupported("frequency_penalty");
        }
        if self.repetition_penalty.is_some_and(|p| p != 1.0) {
            return unsupported("repetition_penalty");
        }
        if self
            .logit_bias
            .as_ref()
            .is_some_and(|b| !b.is_null() && b.as_object().is_none_or(|m| !m.is_empty()))
        {
            return unsupported("logit_bias");
        }
        if self.best_of.is_some_and(|b| Some(b) != self.n && b != 1) {
            return unsupported("best_of");
        }
        if self.min_p.is_some_and(|p| p != 0.0) {
            return unsupported("min_p");
        }
        if self.include_stop_str_in_output == Some(true) {
            return unsupported("include_stop_str_in_output");
        }
        Ok(())
    }
}

impl RequestParams {
    /// The engine's parameters for one prompt of `prompt_len` tokens: `max_tokens` defaults to
    /// `default_max` (16 for completions, as OpenAI's; what the model has left for chat), and
    /// prompt + output must fit the model, as vLLM checks before accepting a request.
    pub fn for_prompt(
        &self,
        prompt_len: usize,
        max_model_len: usize,
        default_max: Option<usize>,
    ) -> Result<SamplingParams, ApiError> {
        if prompt_len == 0 {
            return Err(ApiError::bad_param("prompt", "the prompt is empty"));
        }
        if prompt_len >= max_model_len {
            return Err(ApiError::bad_request(format!(
                "This model's maximum context length is {max_model_len} tokens (the model's \
                 positions and the KV cache). However, your prompt has {prompt_len} tokens, \
                 which leaves no room for a completion. Please shorten the prompt."
            )));
        }
        let room = max_model_len - prompt_len;
        let max_tokens = self.max_tokens.or(default_max).unwrap_or(room);
        if max_tokens > room {
            return Err(ApiError::bad_param(
                "max_tokens",
                format!(
                    "This model's maximum context length is {max_model_len} tokens (the model's \
                     positions and the KV cache). However, you requested {} tokens \
                     ({prompt_len} in the prompt, {max_tokens} for the completion). Please \
                     reduce the prompt or max_tokens.",
                    prompt_len.saturating_add(max_tokens)
                ),
            ));
        }
        if self.min_tokens > max_tokens {
            // max_tokens was not given, and its default (16 for completions, the context's
            // room for chat) is below min_tokens.
            return Err(ApiError::bad_param(
                "min_tokens",
                format!(
                    "min_tokens ({}) is more than max_tokens ({max_tokens}, the default for \
                     this prompt); set max_tokens",
                    self.min_tokens
                ),
            ));
        }
        Ok(SamplingParams {
            max_tokens,
            min_tokens: self.min_tokens,
            ..self.sampling.clone()
        })
    }
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: PromptInput,
    /// Refused when true (the prompt is not echoed back).
    #[serde(default)]
    pub echo: bool,
    pub suffix: Option<String>,
}

/// One message of a chat: `content` is a string or a list of parts of which only `text` parts
/// are understood.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessageInput {
    pub role: String,
    pub content: Option<ChatContent>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of content parts")]
pub enum ChatContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessageInput>,
    /// vLLM's: end the prompt with the assistant's turn opener (true by default).
    pub add_generation_prompt: Option<bool>,
    /// Tool calls are not implemented: refused when given.
    pub tools: Option<Value>,
    pub response_format: Option<Value>,
}

/// `usage` of a response.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Seconds since the Unix epoch (the `created` field).
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
