//! Attention over the paged KV cache: the metadata that describes a mixed batch, and the
//! attention backend trait the CPU and CUDA implementations share.
pub mod attention_metadata;
