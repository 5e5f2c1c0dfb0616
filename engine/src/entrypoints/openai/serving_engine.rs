//! What completions and chat share (vLLM's `OpenAIServing`, `serving_engine.py`): the model
//! check, the 503 while loading, and [`Generation`], one HTTP request's prompts running in
//! the engine, turned into text pieces with stop strings applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use super::protocol::{ApiError, RequestParams, Usage};
use crate::detokenizer::IncrementalDetokenizer;
use crate::entrypoints::async_llm_engine::{
    AbortReason, EngineHandle, EngineOutput, EngineStatus, ModelInfo,
};
use crate::sequence::{FinishReason, SeqId};
use crate::tokenizer::Tokenizer;

/// The server's state, shared by every handler.
pub struct OpenAIServing {
    pub engine: EngineHandle,
    /// The name clients give in `model` (`--served-model-name`, else `--model`).
    pub model_name: String,
    /// When the server started (the model's `created`).
    pub created: u64,
    next_id: AtomicU64,
}

impl OpenAIServing {
    pub fn new(engine: EngineHandle, model_name: String) -> Self {
        OpenAIServing {
            engine,
            model_name,
            created: super::protocol::unix_time(),
            next_id: AtomicU64::new(0),
        }
    }

    /// A fresh response id: `cmpl-7`, `chatcmpl-8`.
    pub fn request_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The loaded model, or 503 while it loads (500 if it failed).
    pub fn ready(&self) -> Result<Arc<ModelInfo>, ApiError> {
        match self.engine.shared.status() {
            EngineStatus::Ready(info) => Ok(info),
            EngineStatus::Loading => Err(ApiError::new(
                503,
                "the model is still loading; retry in a moment",
            )),
            EngineStatus::Failed(why) => {
                Err(ApiError::new(500, format!("the engine failed: {why}")))
            }
        }
    }

    /// A request may name the served model or none; any other name is a 404, as in vLLM.
    pub fn check_model(&self, model: &Option<String>) -> Result<(), ApiError> {
        match model {
            Some(m) if *m != self.model_name => Err(ApiError::new(
                404,
                format!(
                    "The model `{m}` does not exist; this server serves `{}`.",
                    self.model_name
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// An error as a response: its status and OpenAI's JSON body.
pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &serde_json::to_value(e.body()).unwrap_or_default())
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A new piece of one choice's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The choice: `prompt_index * n + i`.
    pub index: usize,
    pub text: String,
    /// The tokens that arrived with it.
    pub token_ids: Vec<u32>,
    /// `stop` or `length` on the choice's last piece.
    pub finish_reason: Option<&'static str>,
    /// What stopped it: the stop string, or the stop token id (vLLM's `stop_reason`).
    pub stop_reason: Option<Value>,
}

/// One choice's decoding state.
pub struct Choice {
    detokenizer: IncrementalDetokenizer,
    /// Text decoded but not yet sent: it might be the start of a stop string.
    held: String,
    pub text: String,
    pub token_ids: Vec<u32>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<Value>,
}

// ANCHOR: generation
/// One HTTP request's prompts (each `n` times) in the engine. Dropping it before it finished
/// (the client went away) aborts what is still running, which frees its KV blocks.
pub struct Generation {
    pub prompt_token_ids: Vec<Vec<u32>>,
    pub choices: Vec<Choice>,
    stop: Vec<String>,
    /// Stop strings' longest length in characters, less one: how much text to hold back.
    hold_back: usize,
    outputs: mpsc::UnboundedReceiver<EngineOutput>,
    info: Arc<ModelInfo>,
    engine: EngineHandle,
    seq_ids: Vec<SeqId>,
    unfinished: usize,
    stop_token_ids: Vec<u32>,
}
// ANCHOR_END: generation

impl Drop for Generation {
    fn drop(&mut self) {
        let running: Vec<SeqId> = self
            .seq_ids
            .iter()
            .zip(&self.choices)
            .filter(|(_, c)| c.finish_reason.is_none())
            .map(|(&id, _)| id)
            .collect();
        if !running.is_empty() {
            tracing::info!(seqs = ?running, "client gone: aborting");
        }
        self.engine.abort(running, AbortReason::ClientGone);
    }
}

impl Generation {
    /// Checks each prompt against the model and queues them all (`n` choices each; choice `i`
    /// of a seeded request uses `seed + i`, so that the choices differ and each is
    /// reproducible). `default_max` is `max_tokens` when the request gave none (`None`: what
    /// the model has room for).
    pub async fn start(
        serving: &OpenAIServing,
        info: Arc<ModelInfo>,
        request_id: &str,
        prompts: Vec<Vec<u32>>,
        params: &RequestParams,
        default_max: Option<usize>,
    ) -> Result<Self, ApiError> {
        let mut requests = Vec::with_capacity(prompts.len() * params.n);
        for prompt in &prompts {
            let sampling = params.for_prompt(prompt.len(), info.max_model_len, default_max)?;
            for i in 0..params.n {
                let seed = sampling.seed.map(|s| s.wrapping_add(i as u64));
                requests.push((
                    prompt.clone(),
                    crate::SamplingParams {
                        seed,
                        ..sampling.clone()
                    },
                ));
            }
        }
        let (seq_ids, outputs) = serving.engine.add(request_id, requests).await?;
        tracing::info!(seqs = ?seq_ids, "queued");
        let choices = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p, params.n))
            .map(|p| Choice {
                detokenizer: IncrementalDetokenizer::new(p, params.skip_special_tokens),
                held: String::new(),
                text: String::new(),
                token_ids: Vec::new(),
                finish_reason: None,
                stop_reason: None,
            })
            .collect::<Vec<_>>();
        let hold_back = params.stop.iter().map(|s| s.chars().count()).max();
        Ok(Generation {
            prompt_token_ids: prompts,
            unfinished: choices.len(),
            choices,
            hold_back: hold_back.unwrap_or(1) - 1,
            stop: params.stop.clone(),
            outputs,
            info,
            engine: serving.engine.clone(),
            seq_ids,
            stop_token_ids: params.sampling.stop_token_ids.clone(),
        })
    }

    /// The next piece of some choice's text (`None` once every choice has finished). With
    /// `with_empty`, pieces that carry tokens but no text yet come too (for `token_ids`).
    pub async fn next(&mut self, with_empty: bool) -> Option<Result<Delta, ApiError>> {
        while self.unfinished > 0 {
            let (index, new_token_ids, finish) = match self.outputs.recv().await {
                Some(EngineOutput::Tokens {
                    index,
                    new_token_ids,
                    finish_reason,
                }) => (index, new_token_ids, finish_reason),
                Some(EngineOutput::Failed(why)) => {
                    return Some(Err(ApiError::new(500, format!("the engine failed: {why}"))))
                }
                None => return Some(Err(ApiError::new(500, "the engine loop stopped"))),
            };
            let Some(choice) = self.choices.get(index) else {
                continue;
            };
            if choice.finish_reason.is_some() {
                continue; // a stop string ended it; the engine's last tokens are dropped
            }
            let delta = match self.push(index, &new_token_ids, finish) {
                Ok(d) => d,
                Err(e) => return Some(Err(e)),
            };
            if delta.finish_reason.is_some() {
                self.unfinished -= 1;
                if finish.is_none() {
                    // Ended here, by a stop string: the engine can stop too.
                    let id = self.seq_ids[index];
                    self.engine.abort(vec![id], AbortReason::StopString);
                }
            }
            if delta.text.is_empty() && delta.finish_reason.is_none() && !with_empty {
                continue;
            }
            return Some(Ok(delta));
        }
        None
    }

    /// Runs every choice to its end (a non-streaming response).
    pub async fn finish(&mut self) -> Result<(), ApiError> {
        while let Some(delta) = self.next(false).await {
            delta?;
        }
        Ok(())
    }

    /// Prompt tokens (each prompt once, however many choices it has) and tokens generated.
    pub fn usage(&self) -> Usage {
        Usage::new(
            self.prompt_token_ids.iter().map(Vec::len).sum(),
            self.choices.iter().map(|c| c.token_ids.len()).sum(),
        )
    }

    /// Decodes a choice's new tokens, ends it on a stop string or the engine's finish, and
    /// returns the text that is safe to send.
    fn push(
        &mut self,
        index: usize,
        token_ids: &[u32],
        finish: Option<FinishReason>,
    ) -> Result<Delta, ApiError> {
        let tokenizer: &Tokenizer = &self.info.tokenizer;
        let choice = &mut self.choices[index];
        let mut taken = Vec::with_capacity(token_ids.len());
        for &id in token_ids {
            taken.push(id);
            choice.token_ids.push(id);
            let piece = choice.detokenizer.push(tokenizer, id)?;
            choice.held.push_str(&piece);
            if find_stop(choice, &self.stop) {
                break;
            }
        }
        if let (None, Some(reason)) = (choice.finish_reason, finish) {
            let rest = choice.detokenizer.flush(tokenizer)?;
            choice.held.push_str(&rest);
            if !find_stop(choice, &self.stop) {
                choice.finish_reason = Some(reason.as_str());
                let last = choice.token_ids.last();
                if let Some(&t) = last.filter(|t| self.stop_token_ids.contains(t)) {
                    choice.stop_reason = Some(t.into());
                }
            }
        }
        // Send everything once finished; until then keep back what could begin a stop string.
        let keep = if choice.finish_reason.is_some() {
            0
        } else {
            self.hold_back
        };
        let cut = choice
            .held
            .char_indices()
            .rev()
            .nth(keep.saturating_sub(1))
            .map_or(0, |(i, _)| i);
        let cut = if keep == 0 { choice.held.len() } else { cut };
        let text: String = choice.held.drain(..cut).collect();
        choice.text.push_str(&text);
        Ok(Delta {
            index,
            text,
            token_ids: taken,
            finish_reason: choice.finish_reason,
            stop_reason: choice.stop_reason.clone(),
        })
    }
}

/// Ends `choice` at the earliest stop string in its held text (the string itself is not
/// output, as OpenAI's `stop`). Returns whether it did.
fn find_stop(choice: &mut Choice, stop: &[String]) -> bool {
    let first = stop
        .iter()
        .filter_map(|s| choice.held.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|&(at, _)| at);
    match first {
        Some((at, s)) => {
            choice.held.truncate(at);
            choice.finish_reason = Some("stop");
            choice.stop_reason = Some(Value::String(s.clone()));
            true
        }
        None => false,
    }
}

/// How a streaming endpoint writes its chunks.
pub trait StreamFormat: Send + 'static {
    /// Chunks sent before any text (chat's role), given the number of choices.
    fn first(&self, _num_choices: usize) -> Vec<Value> {
        Vec::new()
    }
    fn delta(&self, delta: &Delta) -> Value;
    /// The last chunk with `stream_options.include_usage`: no choices, the usage.
    fn usage(&self, usage: Usage) -> Value;
}

enum Phase {
    Start,
    Running,
    Done,
    End,
}

fn sse(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// A server-sent-events response: one `data: {json}` event per piece, then `data: [DONE]`.
/// The body owns the [`Generation`]: when the client disconnects, the server drops the body,
/// and with it the generation, which aborts the requests.
pub fn stream_response(
    generation: Generation,
    format: impl StreamFormat,
    include_usage: bool,
    with_token_ids: bool,
) -> Response {
    let state = (generation, format, Phase::Start);
    let events = futures_util::stream::unfold(state, move |(mut g, f, phase)| async move {
        let event = match phase {
            Phase::Start => {
                let text: String = f.first(g.choices.len()).iter().map(sse).collect();
                (text, Phase::Running)
            }
            Phase::Running => match g.next(with_token_ids).await {
                Some(Ok(delta)) => (sse(&f.delta(&delta)), Phase::Running),
                Some(Err(e)) => (
                    sse(&serde_json::to_value(e.body()).unwrap_or_default()),
                    Phase::Done,
                ),
                None if include_usage => (sse(&f.usage(g.usage())), Phase::Done),
                None => ("data: [DONE]\n\n".to_string(), Phase::End),
            },
            Phase::Done => ("data: [DONE]\n\n".to_string(), Phase::End),
            Phase::End => return None,
        };
        let (text, next) = event;
        Some((Ok::<_, std::convert::Infallible>(text), (g, f, next)))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}
