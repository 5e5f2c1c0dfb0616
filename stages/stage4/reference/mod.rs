//! The reference solutions of the stage 4 exercises (built with `--features reference`; the
//! book shows each one folded, after its exercise). Read them once your own version passes.

pub mod block_reduce;
pub mod paged_attention;
pub mod reshape_and_cache;
pub mod rms_norm;
pub mod roofline;
