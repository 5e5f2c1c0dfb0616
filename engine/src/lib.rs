//! Inference Lab's engine (map of the crate is filled in as modules land).
pub mod model_loader;
