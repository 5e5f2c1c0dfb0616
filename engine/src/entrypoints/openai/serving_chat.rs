//! `POST /v1/chat/completions` (vLLM's `OpenAIServingChat`, `serving_chat.py`): the messages
//! go through the model's chat template (as `lab generate --chat` does for one message), and
//! the reply comes back as the assistant's message.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use tracing::Instrument;

use super::protocol::{
    parse_body, unix_time, ApiError, ChatCompletionRequest, ChatContent, SamplingFields, Usage,
};
use super::serving_engine::{
    error_response, json_response, stream_response, Delta, Generation, OpenAIServing, StreamFormat,
};
use crate::chat_template::ChatMessage;

pub async fn create_chat_completion(
    State(serving): State<Arc<OpenAIServing>>,
    body: Bytes,
) -> Response {
    let request_id = serving.request_id("chatcmpl");
    let span = tracing::info_span!("chat_completion", %request_id);
    chat(&serving, &body, request_id)
        .instrument(span)
        .await
        .unwrap_or_else(|e| error_response(&e))
}

/// The messages as the template wants them: text content only.
fn messages(request: &ChatCompletionRequest) -> Result<Vec<ChatMessage>, ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::bad_param("messages", "messages is empty"));
    }
    request
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let content = match &m.content {
                None => String::new(),
                Some(ChatContent::Text(t)) => t.clone(),
                Some(ChatContent::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::bad_param(
                                    "messages",
                                    format!(
                                        "messages[{i}]: content parts of type {kind:?} are not \
                                         supported (only \"text\", with its text)"
                                    ),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage {
                role: m.role.clone(),
                content,
            })
        })
        .collect()
}

async fn chat(
    serving: &OpenAIServing,
    body: &[u8],
    request_id: String,
) -> Result<Response, ApiError> {
    let request: ChatCompletionRequest = parse_body(body)?;
    let fields: SamplingFields = parse_body(body)?;
    serving.check_model(&request.model)?;
    if request.tools.as_ref().is_some_and(|t| !t.is_null()) {
        return Err(ApiError::bad_param("tools", "tools are not supported"));
    }
    if request
        .response_format
        .as_ref()
        .is_some_and(|f| !(f.is_null() || f.get("type").and_then(Value::as_str) == Some("text")))
    {
        return Err(ApiError::bad_param(
            "response_format",
            "only {\"type\": \"text\"} is supported",
        ));
    }
    let params = fields.to_params()?;
    let messages = messages(&request)?;
    let info = serving.ready()?;
    let template = info.tokenizer.chat_template.as_ref().ok_or_else(|| {
        ApiError::bad_request("this model has no chat template; use /v1/completions")
    })?;
    let add_generation_prompt = request.add_generation_prompt.unwrap_or(true);
    let prompt = template.apply(&messages, add_generation_prompt)?;
    let prompt_ids = info.tokenizer.encode(&prompt)?;
    // No max_tokens: as much as the model has room for (OpenAI's and vLLM's chat default).
    let mut generation = Generation::start(
        serving,
        Arc::clone(&info),
        &request_id,
        vec![prompt_ids],
        &params,
        None,
    )
    .await?;
    let format = ChatFormat {
        id: request_id,
        model: serving.model_name.clone(),
        created: unix_time(),
        return_token_ids: params.return_token_ids,
    };
    if params.stream {
        return Ok(stream_response(
            generation,
            format,
            params.include_usage,
            params.return_token_ids,
        ));
    }
    generation.finish().await?;
    let choices: Vec<Value> = generation
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut choice = json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": null,
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
            });
            if params.return_token_ids {
                choice["token_ids"] = json!(c.token_ids);
            }
            choice
        })
        .collect();
    let mut response = json!({
        "id": format.id,
        "object": "chat.completion",
        "created": format.created,
        "model": format.model,
        "choices": choices,
        "usage": generation.usage(),
    });
    if params.return_token_ids {
        response["prompt_token_ids"] = json!(generation.prompt_token_ids[0]);
    }
    Ok(json_response(StatusCode::OK, &response))
}

struct ChatFormat {
    id: String,
    model: String,
    created: u64,
    return_token_ids: bool,
}

impl ChatFormat {
    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
}

impl StreamFormat for ChatFormat {
    /// The assistant's role comes first, in a chunk of its own for each choice.
    fn first(&self, num_choices: usize) -> Vec<Value> {
        (0..num_choices)
            .map(|i| {
                self.chunk(json!([{
                    "index": i,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": null,
                    "finish_reason": null,
                }]))
            })
            .collect()
    }

    fn delta(&self, d: &Delta) -> Value {
        let mut choice = json!({
            "index": d.index,
            "delta": {"content": d.text},
            "logprobs": null,
            "finish_reason": d.finish_reason,
            "stop_reason": d.stop_reason,
        });
        if self.return_token_ids {
            choice["token_ids"] = json!(d.token_ids);
        }
        self.chunk(json!([choice]))
    }

    fn usage(&self, usage: Usage) -> Value {
        let mut chunk = self.chunk(json!([]));
        chunk["usage"] = json!(usage);
        chunk
    }
}
