//! `POST /v1/completions` (vLLM's `OpenAIServingCompletion`, `serving_completion.py`): text in,
//! text out, one choice per prompt and `n`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use tracing::Instrument;

use super::protocol::{
    parse_body, unix_time, ApiError, CompletionRequest, PromptInput, SamplingFields, Usage,
};
use super::serving_engine::{
    error_response, json_response, stream_response, Delta, Generation, OpenAIServing, StreamFormat,
};

/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: usize = 16;

pub async fn create_completion(State(serving): State<Arc<OpenAIServing>>, body: Bytes) -> Response {
    let request_id = serving.request_id("cmpl");
    let span = tracing::info_span!("completion", %request_id);
    completion(&serving, &body, request_id)
        .instrument(span)
        .await
        .unwrap_or_else(|e| error_response(&e))
}

async fn completion(
    serving: &OpenAIServing,
    body: &[u8],
    request_id: String,
) -> Result<Response, ApiError> {
    let request: CompletionRequest = parse_body(body)?;
    let fields: SamplingFields = parse_body(body)?;
    serving.check_model(&request.model)?;
    if request.echo {
        return Err(ApiError::bad_param("echo", "echo is not supported"));
    }
    if request.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_param("suffix", "suffix is not supported"));
    }
    let params = fields.to_params()?;
    let info = serving.ready()?;
    let tokenizer = &info.tokenizer;
    let prompts: Vec<Vec<u32>> = match request.prompt {
        PromptInput::Text(t) => vec![tokenizer.encode(&t)?],
        PromptInput::Texts(ts) => ts
            .iter()
            .map(|t| tokenizer.encode(t))
            .collect::<Result<_, _>>()?,
        PromptInput::TokenIds(ids) => vec![ids],
        PromptInput::TokenIdLists(lists) => lists,
    };
    if prompts.is_empty() {
        return Err(ApiError::bad_param("prompt", "the prompt list is empty"));
    }
    let mut generation = Generation::start(
        serving,
        info,
        &request_id,
        prompts,
        &params,
        Some(DEFAULT_MAX_TOKENS),
    )
    .await?;
    let format = CompletionFormat {
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
    let n = params.n;
    let choices: Vec<Value> = generation
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut choice = json!({
                "index": i,
                "text": c.text,
                "logprobs": null,
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
            });
            if params.return_token_ids {
                choice["token_ids"] = json!(c.token_ids);
                choice["prompt_token_ids"] = json!(generation.prompt_token_ids[i / n]);
            }
            choice
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": format.id,
            "object": "text_completion",
            "created": format.created,
            "model": format.model,
            "choices": choices,
            "usage": generation.usage(),
        }),
    ))
}

struct CompletionFormat {
    id: String,
    model: String,
    created: u64,
    return_token_ids: bool,
}

impl StreamFormat for CompletionFormat {
    fn delta(&self, d: &Delta) -> Value {
        let mut choice = json!({
            "index": d.index,
            "text": d.text,
            "logprobs": null,
            "finish_reason": d.finish_reason,
            "stop_reason": d.stop_reason,
        });
        if self.return_token_ids {
            choice["token_ids"] = json!(d.token_ids);
        }
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    fn usage(&self, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        })
    }
}
