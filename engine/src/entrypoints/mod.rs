//! Serving over HTTP (vLLM's `vllm/entrypoints`): the engine loop on a thread of its own
//! ([`async_llm_engine`](crate::entrypoints::async_llm_engine)), an OpenAI-compatible API in
//! front of it ([`openai`](crate::entrypoints::openai)), and the counters it exposes
//! ([`metrics`](crate::entrypoints::metrics)). `lab serve` starts it; `lab bench-serve` loads it.
//!
//! ```text
//! client ──HTTP──▶ openai::api_server (tokio + axum; one task per request)
//!                   ├ tokenize, chat template, check lengths      (protocol, serving_*)
//!                   └ Command::Add ──▶ engine thread: LLMEngine::step in a loop
//!                                        each step: new token ids ──▶ the request's task
//!                   ◀─ detokenize incrementally, stop strings, SSE chunks
//! ```

pub mod async_llm_engine;
pub mod http_client;
pub mod metrics;
pub mod openai;
