//! Exercise 5: sampling, from a row of logits to the next token (vLLM's `Sampler`).
//!
//! - **Greedy** (`params.is_greedy()`, i.e. temperature 0): the argmax of the logits; on ties
//!   the lowest token id, as transformers.
//! - **Random**, in vLLM's order:
//!   1. sort the token ids by logit, largest first (a *stable* sort: ties keep id order);
//!   2. **top-k**: keep the first `k` (`params.top_k`, at least 1; `None` keeps all);
//!   3. **temperature** and softmax over the kept candidates:
//!      `p_i = exp((logit_i − max) / temperature)`, divided by their sum (subtracting the
//!      largest logit keeps `exp` from overflowing);
//!   4. **top-p**: keep the shortest prefix whose probabilities sum to at least `top_p`
//!      (always at least one token; `top_p >= 1` keeps all);
//!   5. **draw**: `u = rng.random::<f32>() * (sum of kept p)`; walk the candidates
//!      subtracting each `p` from `u`; return the first with `u < p` (the last if rounding
//!      leaves none).
//!
//! Each request has its own generator (`rng`), seeded by `params.seed`, so batching never
//! changes what a request draws. Draw exactly one `f32` per call and follow the steps in this
//! order: the tests compare your tokens with the engine's for the same seed.
//!
//! Test: `cargo test -p stage3 --test sampler`.

#[cfg(not(feature = "reference"))]
use engine::sampling_params::SamplingParams;
#[cfg(not(feature = "reference"))]
use rand::Rng;

#[cfg(feature = "reference")]
pub use engine::sampler::sample;

// HINT: `let mut ids: Vec<u32> = (0..logits.len() as u32).collect();`
//   `ids.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));` sorts largest
//   first and is stable. `total_cmp` orders floats without the `partial_cmp` unwrap.
//   For greedy, a loop that replaces the best only on a strictly larger value keeps the
//   lowest id on ties.

/// Chooses one token id from `logits` `[vocab]`.
#[cfg(not(feature = "reference"))]
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut impl Rng) -> u32 {
    todo!("stage3: sample in stages/stage3/src/sampler.rs — greedy argmax (lowest id on ties); else sort, top-k, softmax(logits / temperature), top-p, one draw of rng.random::<f32>()")
}
