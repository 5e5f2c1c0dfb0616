//! The model: its weights (from safetensors or random), the Llama forward pass, and each
//! tensor-parallel rank's shard of the weights (`tensor_parallel`), and each pipeline stage's
//! layers (`pipeline_parallel`).
pub mod llama;
pub mod pipeline_parallel;
pub mod random_weights;
pub mod safetensors_loader;
pub mod tensor_parallel;
pub mod weights;
