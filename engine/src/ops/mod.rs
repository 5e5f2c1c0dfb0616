//! The CPU versions of the model's kernels. Each has the signature its CUDA twin will have:
//! flat row-major buffers with the shape written on every argument, so the two can be
//! compared element by element.
pub mod activation;
pub mod attention_simd;
pub mod cache_ops;
pub mod expf;
pub mod linear;
pub mod paged_attention;
pub mod rms_norm;
pub mod rotary_embedding;
