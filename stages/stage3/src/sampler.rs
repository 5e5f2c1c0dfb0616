//! Exercise 6: sampling, from a row of logits to the next token (vLLM's `Sampler`).
//!
//! - **Greedy** (`params.is_greedy()`, i.e. temperature 0): the token with the largest logit;
//!   among equal largest logits, the lowest id, as transformers.
//! - **Random**: a distribution is built from the logits, cut down by top-k and top-p, and one
//!   token is drawn from what is left with the request's own generator (`rng`, seeded by
//!   `params.seed`, so batching never changes what a request draws).
//!
//! The tests compare your tokens with the engine's for the same seed, draw after draw, so the
//! contract is exact: the steps in the engine's order, how each cut treats ties and its
//! boundary, and how the one random number becomes a token. It is in the book's Stage 3
//! chapter, "Sampling", with examples worked by hand.
//!
//! Test: `cargo test -p stage3 --test sampler`.

#[cfg(not(feature = "reference"))]
use engine::sampling_params::SamplingParams;
#[cfg(not(feature = "reference"))]
use rand::Rng;

#[cfg(feature = "mutants")]
pub use crate::mutants::sampler::sample;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::sampler::sample;

// HINT: sort token ids, not logits, so you keep track of which token is which. Rust's
//   `sort_by` is stable; `f32::total_cmp` orders floats without `partial_cmp`'s `Option`.
// HINT: work the chapter's examples by hand first, the boundary one included (two equal
//   logits, `top_p = 0.5`): how many tokens survive?
// HINT: draw exactly one `rng.random::<f32>()` per call, and only for random sampling.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// Chooses one token id from `logits` `[vocab]`.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut impl Rng) -> u32 {
    todo!(
        "stage3: sample in stages/stage3/src/sampler.rs — greedy: the largest logit, \
         lowest id on ties; random: sort, top-k, temperature and softmax, top-p, one draw"
    )
}
// ANCHOR_END: stub
