//! The worker side of a step: the KV cache and the model runner that feeds the model.
pub mod cache_engine;
pub mod model_runner;
