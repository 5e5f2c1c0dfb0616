//! The model: its weights (from safetensors or random), and the Llama forward pass.
pub mod llama;
pub mod random_weights;
pub mod safetensors_loader;
pub mod weights;
