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
    /// Bytes at the start of `held` decoded before the choice reached `min_tokens`: a stop
    /// string must end after them (vLLM checks stop strings only from then on).
    held_before_min: usize,
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
    stop: StopStrings,
    outputs: mpsc::UnboundedReceiver<EngineOutput>,
    info: Arc<ModelInfo>,
    engine: EngineHandle,
    seq_ids: Vec<SeqId>,
    unfinished: usize,
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
            .map(|p| Choice::new(p, params.skip_special_tokens))
            .collect::<Vec<_>>();
        Ok(Generation {
            prompt_token_ids: prompts,
            unfinished: choices.len(),
            choices,
            stop: StopStrings::new(params.stop.clone(), params.sampling.stop_token_ids.clone())
                .with_min_tokens(params.min_tokens),
            outputs,
            info,
            engine: serving.engine.clone(),
            seq_ids,
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
                if finish != Some(FinishReason::Stop) && delta.finish_reason == Some("stop") {
                    // Ended here, by a stop string: the engine can stop too (or, if it has
                    // just finished on its length, count it as a stop, as the client sees it).
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

    fn push(
        &mut self,
        index: usize,
        token_ids: &[u32],
        finish: Option<FinishReason>,
    ) -> Result<Delta, ApiError> {
        let mut delta =
            self.choices[index].push(&self.info.tokenizer, &self.stop, token_ids, finish)?;
        delta.index = index;
        Ok(delta)
    }
}

/// When a choice ends besides the engine's own stops: OpenAI's `stop` strings.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    strings: Vec<String>,
    /// The longest one's length in characters, less one: how much text to hold back.
    hold_back: usize,
    /// vLLM's `stop_token_ids`, to name the one that stopped a choice in `stop_reason`.
    stop_token_ids: Vec<u32>,
    /// vLLM's `min_tokens`: a stop string counts only where it ends in the text of a choice's
    /// `min_tokens`-th token or later.
    min_tokens: usize,
}

impl StopStrings {
    pub fn new(strings: Vec<String>, stop_token_ids: Vec<u32>) -> Self {
        let longest = strings.iter().map(|s| s.chars().count()).max();
        StopStrings {
            hold_back: longest.unwrap_or(1).saturating_sub(1),
            strings,
            stop_token_ids,
            min_tokens: 0,
        }
    }

    /// These stops, which end a choice only from its `min_tokens`-th token on.
    pub fn with_min_tokens(mut self, min_tokens: usize) -> Self {
        self.min_tokens = min_tokens;
        self
    }
}

impl Choice {
    /// A choice of a request whose prompt is `prompt_token_ids`.
    pub fn new(prompt_token_ids: &[u32], skip_special_tokens: bool) -> Self {
        Choice {
            detokenizer: IncrementalDetokenizer::new(prompt_token_ids, skip_special_tokens),
            held: String::new(),
            held_before_min: 0,
            text: String::new(),
            token_ids: Vec::new(),
            finish_reason: None,
            stop_reason: None,
        }
    }

    // ANCHOR: choice_push
    /// Decodes new tokens, ends the choice on a stop string or the engine's `finish`, and
    /// returns the text that is safe to send (its `index` is left 0 for the caller to set).
    pub fn push(
        &mut self,
        tokenizer: &Tokenizer,
        stop: &StopStrings,
        token_ids: &[u32],
        finish: Option<FinishReason>,
    ) -> Result<Delta, ApiError> {
        let mut taken = Vec::with_capacity(token_ids.len());
        for &id in token_ids {
            taken.push(id);
            self.token_ids.push(id);
            let piece = self.detokenizer.push(tokenizer, id)?;
            self.held.push_str(&piece);
            if self.token_ids.len() < stop.min_tokens {
                self.held_before_min = self.held.len(); // no stop may end in this text
                continue;
            }
            if self.find_stop(&stop.strings) {
                break; // the engine's later tokens are dropped: it is told to abort
            }
        }
        if let (None, Some(reason)) = (self.finish_reason, finish) {
            let rest = self.detokenizer.flush(tokenizer)?;
            self.held.push_str(&rest);
            // The engine ended it: any text still held is its last tokens'.
            if self.token_ids.len() < stop.min_tokens {
                self.held_before_min = self.held.len();
            }
            if !self.find_stop(&stop.strings) {
                self.finish_reason = Some(reason.as_str());
                let last = self.token_ids.last();
                if let Some(&t) = last.filter(|t| stop.stop_token_ids.contains(t)) {
                    self.stop_reason = Some(t.into());
                }
            }
        }
        // Send everything once finished; until then keep back the last `hold_back` characters,
        // which could be the start of a stop string that the next token completes.
        let keep = match self.finish_reason {
            Some(_) => 0,
            None => stop.hold_back,
        };
        let cut = match keep {
            0 => self.held.len(),
            _ => self
                .held
                .char_indices()
                .rev()
                .nth(keep - 1)
                .map_or(0, |(i, _)| i),
        };
        let text: String = self.held.drain(..cut).collect();
        self.held_before_min = self.held_before_min.saturating_sub(cut);
        self.text.push_str(&text);
        Ok(Delta {
            index: 0,
            text,
            token_ids: taken,
            finish_reason: self.finish_reason,
            stop_reason: self.stop_reason.clone(),
        })
    }
    // ANCHOR_END: choice_push

    /// Ends the choice at the earliest stop string in its held text that ends after the text
    /// decoded before `min_tokens` (the string itself is not output, as OpenAI's `stop`).
    /// Returns whether it did.
    fn find_stop(&mut self, stop: &[String]) -> bool {
        let (held, floor) = (&self.held, self.held_before_min);
        let first = stop
            .iter()
            .filter_map(|s| {
                let at = match floor {
                    0 => held.find(s.as_str()),
                    _ => held
                        .char_indices()
                        .map(|(i, _)| i)
                        .find(|&i| i + s.len() > floor && held[i..].starts_with(s.as_str())),
                };
                at.map(|at| (at, s))
            })
            .min_by_key(|&(at, _)| at);
        match first {
            Some((at, s)) => {
                self.held.truncate(at);
                self.finish_reason = Some("stop");
                self.stop_reason = Some(Value::String(s.clone()));
                true
            }
            None => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny_model::tiny_tokenizer;

    /// Feeds `text`'s tokens (one per byte) to a choice one at a time; returns the pieces sent
    /// and the choice. The engine says "length" with the last token unless a stop came first.
    fn run(text: &str, stop: &[&str]) -> (Vec<String>, Choice) {
        run_min(text, stop, 0)
    }

    /// As [`run`], with stops that count from the `min_tokens`-th token on.
    fn run_min(text: &str, stop: &[&str], min_tokens: usize) -> (Vec<String>, Choice) {
        let tok = tiny_tokenizer();
        let stop = StopStrings::new(stop.iter().map(|s| s.to_string()).collect(), vec![])
            .with_min_tokens(min_tokens);
        let ids = tok.encode(text).unwrap();
        let mut choice = Choice::new(&tok.encode("Say: ").unwrap(), true);
        let mut pieces = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let last = (i + 1 == ids.len()).then_some(FinishReason::Length);
            let d = choice.push(&tok, &stop, &[id], last).unwrap();
            pieces.push(d.text);
            if d.finish_reason.is_some() {
                break;
            }
        }
        (pieces, choice)
    }

    #[test]
    fn a_stop_string_across_tokens_never_leaks_even_in_part() {
        let (pieces, choice) = run("hello wörld ÉND and the rest", &["ÉND"]);
        assert_eq!(pieces.concat(), "hello wörld ");
        assert_eq!(choice.text, "hello wörld ");
        assert_eq!(choice.finish_reason, Some("stop"));
        assert_eq!(choice.stop_reason, Some(Value::from("ÉND")));
        // It stopped at the token that completed the string: "D" was the 17th byte.
        assert_eq!(choice.token_ids.len(), "hello wörld ÉND".len());
        for p in &pieces {
            assert!(
                !p.contains('É'),
                "{p:?} leaked the start of the stop string"
            );
        }
    }

    #[test]
    fn the_earliest_stop_string_wins_and_no_stop_sends_everything() {
        let (pieces, choice) = run("one, two; three", &["; ", "two"]);
        assert_eq!(pieces.concat(), "one, ");
        assert_eq!(choice.stop_reason, Some(Value::from("two")));
        let (pieces, choice) = run("nothing 🎉 to stop", &["xyz"]);
        assert_eq!(pieces.concat(), "nothing 🎉 to stop");
        assert_eq!(choice.finish_reason, Some("length"));
        assert_eq!(choice.stop_reason, None);
        // Held back: never more than two characters behind, until the end sends the rest.
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
    }

    #[test]
    fn a_stop_string_that_only_the_flush_completes_still_stops() {
        // The text ends inside a character: the flush adds U+FFFD, and the stop is found then.
        let tok = tiny_tokenizer();
        let stop = StopStrings::new(vec!["\u{FFFD}".into()], vec![]);
        let mut choice = Choice::new(&[], true);
        let ids = tok.encode("ab世").unwrap();
        let mut sent = String::new();
        for &id in &ids[..3] {
            sent += &choice.push(&tok, &stop, &[id], None).unwrap().text;
        }
        let d = choice
            .push(&tok, &stop, &[ids[3]], Some(FinishReason::Length))
            .unwrap();
        sent += &d.text;
        assert_eq!(sent, "ab");
        assert_eq!(d.finish_reason, Some("stop"));
    }

    #[test]
    fn before_min_tokens_no_stop_string_ends_a_choice() {
        // "ab" ends at token 2 and again at token 7; with min_tokens 3 only the second counts.
        let (pieces, choice) = run_min("ab cd ab ef", &["ab"], 3);
        assert_eq!(pieces.concat(), "ab cd ");
        assert_eq!(choice.finish_reason, Some("stop"));
        assert_eq!(choice.token_ids.len(), "ab cd ab".len());
        // A stop string that starts before the floor but ends at it counts (vLLM's check
        // looks back by the string's length): "cd" ends at token 5 = min_tokens.
        let (pieces, choice) = run_min("ab cd ef", &["cd"], 5);
        assert_eq!(pieces.concat(), "ab ");
        assert_eq!(choice.token_ids.len(), 5);
        // min_tokens 0 or 1 is the plain behaviour.
        for m in [0, 1] {
            let (pieces, choice) = run_min("ab cd ab ef", &["ab"], m);
            assert_eq!(pieces.concat(), "");
            assert_eq!(choice.token_ids.len(), 2);
        }
        // Never reached again: the choice runs to its end with the early stop string in it.
        let (pieces, choice) = run_min("xx ab cd", &["ab"], 6);
        assert_eq!(pieces.concat(), "xx ab cd");
        assert_eq!(choice.finish_reason, Some("length"));
    }
}
