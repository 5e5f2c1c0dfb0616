//! Exercise 6: sampling, from a row of logits to the next token (vLLM's `Sampler`).
//!
//! - **Greedy** (`params.is_greedy()`, i.e. temperature 0): the token with the largest logit;
//!   among equal largest logits, the lowest id, as transformers.
//! - **Random**: a distribution is built from the logits, cut down by top-k and top-p, and one
//!   token is picked from what is left with `draw`, a uniform number in `[0, 1)`. The model
//!   runner computes it from the request's seed and the token's position
//!   (`engine::philox::uniform`), so batching never changes what a request draws; your
//!   function only turns it into a token.
//!
//! The tests compare your tokens with the engine's for the same draws, so the contract is
//! exact: the steps in the engine's order, how each cut treats ties and its boundary, and how
//! the one random number becomes a token. It is in the book's Stage 3 chapter, "Sampling", with
//! examples worked by hand.
//!
//! Test: `cargo test -p stage3 --test sampler`.

#[cfg(not(feature = "reference"))]
use engine::sampling_params::SamplingParams;

#[cfg(feature = "mutants")]
pub use crate::mutants::sampler::sample;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::sampler::sample;

// HINT: sort token ids, not logits, so you keep track of which token is which. Rust's
//   `sort_by` is stable; `f32::total_cmp` orders floats without `partial_cmp`'s `Option`.
// HINT: work the chapter's examples by hand first, the boundary one included (two equal
//   logits, `top_p = 0.5`): how many tokens survive?
// HINT: `draw` is used once, and only for random sampling: scale it by the mass that top-k
//   and top-p left, then walk down the kept probabilities.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// Chooses one token id from `logits` `[vocab]`, using `draw` (uniform in `[0, 1)`) if the
/// request samples at random; greedy ignores it.
pub fn sample(logits: &[f32], params: &SamplingParams, draw: f32) -> u32 {
    todo!(
        "stage3: sample in stages/stage3/src/sampler.rs — greedy: the largest logit, \
         lowest id on ties; random: sort, top-k, temperature and softmax, top-p, one draw"
    )
}
// ANCHOR_END: stub
