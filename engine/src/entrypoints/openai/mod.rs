//! The OpenAI API (vLLM's `vllm/entrypoints/openai`): the router ([`api_server`]), the request
//! and response bodies ([`protocol`]), what both endpoints share ([`serving_engine`]), and the
//! endpoints ([`serving_completion`], [`serving_chat`]).

pub mod api_server;
pub mod protocol;
pub mod serving_chat;
pub mod serving_completion;
pub mod serving_engine;
