//! # Inference Lab's engine
//!
//! vLLM's design in small, readable Rust. A request travels through these modules in order:
//!
//! ```text
//! llm::LLM::generate                       the offline API
//!  └ llm_engine::LLMEngine::add_request    tokenize, validate → sequence::Sequence
//!  └ llm_engine::LLMEngine::step           one iteration of the engine loop:
//!     ├ core::scheduler::Scheduler::schedule        who runs, how many tokens each
//!     │   ├ core::batch_composer                    the budget: decodes first, then chunks
//!     │   ├ core::scheduling_policy                 FCFS order, preemption victim
//!     │   ├ core::block_manager / block_allocator   paged KV blocks, ref counts
//!     │   └ core::prefix_cache / block_hash         cached prefix blocks, found by hash
//!     ├ executor::Executor::execute_model           run the step on the worker(s)
//!     │   ├ worker::model_runner::prepare_inputs    ids, positions, slot mapping,
//!     │   │                                         attention::AttentionMetadata
//!     │   ├ backend::Backend::prepare_step          that layout into the backend, once a step
//!     │   ├ model_executor::llama                   the forward pass over backend::Backend
//!     │   │   └ ops::*                              CPU kernels: linear, rms_norm, rotary,
//!     │   │                                         reshape_and_cache, paged_attention
//!     │   └ sampler::sample                         greedy / temperature / top-k / top-p,
//!     │                                             with a philox::uniform draw per token
//!     │                                             → outputs::ModelRunnerOutput (token ids)
//!     └ Scheduler::update_from_output               append tokens, stop, free blocks
//! ```
//!
//! Every part a course stage has the learner rewrite (allocator, policy, schedule, input
//! preparation, kernels, sampler) is a field of `engine_parts::EngineParts`, passed to
//! `LLMEngine::with_parts`; `LLMEngine::new` uses the engine's own.
//!
//! Models come from Hugging Face directories (`config`, `model_executor::safetensors_loader`,
//! `tokenizer`, `chat_template`), from `model_loader` (GGUF → Hugging Face conversion, used by
//! `lab fetch-model smollm2`), or are built in code (`tiny_model`, `model_executor::random_weights`).
//!
//! `entrypoints` (the `serve` feature) puts the engine behind an OpenAI-compatible HTTP server:
//! the engine loop runs on its own thread, handlers send it requests and aborts, and each step's
//! new token ids come back to be detokenized incrementally (`detokenizer`) and streamed.
//!
//! Every backend op opens a `tracing` span named `kernel`; `kernel_log::record` lists them, in
//! order, for the steps run inside it (the kernel sequence of a forward step). `tracer` records
//! every span of a run (steps, ops, collectives, on every rank's thread) for the `tracer`
//! binary: a step timeline, where the time went, and a Chrome trace.
//!
//! `distributed` holds what splitting a model over ranks needs: `distributed::Communicator`
//! (all-reduce, all-gather, reduce-scatter, broadcast, send/recv, barrier, each counting its
//! bytes and time; `CpuCommunicator` runs ranks as threads with the `ring` all-reduce), and the
//! parallelism planner.
pub mod attention;
pub mod backend;
pub mod chat_template;
pub mod config;
pub mod core;
pub mod detokenizer;
pub mod distributed;
pub mod engine_parts;
/// The OpenAI-compatible HTTP server behind `lab serve` (the `serve` feature).
#[cfg(feature = "serve")]
pub mod entrypoints;
pub mod error;
pub mod executor;
pub mod kernel_log;
pub mod llm;
pub mod llm_engine;
pub mod min_tokens;
pub mod model_executor;
pub mod model_loader;
pub mod model_source;
pub mod ops;
pub mod outputs;
pub mod philox;
pub mod sampler;
pub mod sampling_params;
pub mod sequence;
pub mod simulator;
pub mod tiny_model;
pub mod tokenizer;
pub mod tracer;
pub mod worker;

pub use config::EngineConfig;
pub use engine_parts::EngineParts;
pub use error::{EngineError, Result};
pub use llm::LLM;
pub use llm_engine::{LLMEngine, Prompt, RequestOutput};
pub use sampling_params::SamplingParams;
