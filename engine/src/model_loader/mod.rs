//! Model files: GGUF → Hugging Face conversion and fetching known models live in the `gguf-hf`
//! crate (it needs nothing of the engine) and are re-exported here under their module names;
//! writing a model the engine holds as a Hugging Face directory lives here.
//!
//! [`hf_writer::save_model`] writes a model the engine holds (random weights of a real shape,
//! say) as a Hugging Face directory (`lab save-model`), for transformers to load;
//! [`random_conditioning`] first rescales random weights so that such a model's greedy tokens
//! depend on its whole context.
pub use gguf_hf::{
    dequant, fetch_model, gguf, gguf_metadata, gguf_to_hf, gguf_tokenizer, gguf_writer, hf_tensors,
    partial_dir, wheel,
};
pub mod gguf_blocks;
pub mod hf_writer;
pub mod pack_weights;
pub mod random_conditioning;
