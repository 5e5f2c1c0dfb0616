//! Picks the next token from a row of logits (vLLM's `Sampler`). The model runner calls it,
//! on the worker, for each sequence that samples this step; only the token ids leave the
//! worker (see `outputs::ModelRunnerOutput`).
//!
//! Greedy is argmax, ties to the lowest id, exactly as transformers. Random sampling sorts the
//! candidates, keeps the top k, applies the temperature and softmax to them, keeps the top-p
//! prefix, then walks the renormalized distribution with one uniform number, `draw`. The caller
//! computes the draw from the request's seed and the token's position
//! ([`crate::philox::uniform`]), so the sampler holds no generator and a given
//! (logits, params, draw) always gives the same token.
//!
//! vLLM v1 divides by the temperature first, then applies top-k and top-p
//! (`vllm/v1/sample/sampler.py`). The distribution is the same: dividing logits by a positive
//! temperature keeps their order, so top-k keeps the same tokens either way, and in both
//! engines top-p sees the tempered probabilities. What differs: vLLM's top-k keeps every token
//! tied with the k-th logit (ours keeps exactly k, lowest ids first), and vLLM draws with an
//! exponential race, not one uniform number, so the same seed gives other tokens.

use crate::sampling_params::SamplingParams;

/// Picks a token from one row of logits with a uniform draw in `[0, 1)`, like [`sample`] (the
/// pluggable part of `EngineParts`; stage 3 swaps in the learner's).
pub type SampleFn = fn(logits: &[f32], params: &SamplingParams, draw: f32) -> u32;

// ANCHOR: sample
/// Chooses one token id from `logits` `[vocab]`, using `draw` (uniform in `[0, 1)`) if the
/// request samples at random; greedy ignores it.
pub fn sample(logits: &[f32], params: &SamplingParams, draw: f32) -> u32 {
    if params.is_greedy() {
        return argmax(logits);
    }
    // Candidates sorted by logit, largest first (stable: ties keep id order).
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    if let Some(k) = params.top_k {
        ids.truncate(k.max(1));
    }
    // Softmax of logits / temperature over the candidates.
    let max = logits[ids[0] as usize];
    let mut probs: Vec<f32> = ids
        .iter()
        .map(|&i| ((logits[i as usize] - max) / params.temperature).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    // Top-p: the smallest prefix whose mass reaches p (always at least one token).
    if params.top_p < 1.0 {
        let mut mass = 0.0;
        let keep = probs
            .iter()
            .position(|&p| {
                mass += p;
                mass >= params.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        ids.truncate(keep);
        probs.truncate(keep);
    }
    let total: f32 = probs.iter().sum();
    let mut draw = draw * total;
    for (&id, &p) in ids.iter().zip(&probs) {
        if draw < p {
            return id;
        }
        draw -= p;
    }
    *ids.last().expect("at least one candidate")
}
// ANCHOR_END: sample

// ANCHOR: argmax
/// Index of the largest value; the first one on ties. A NaN is never the largest (all NaN,
/// or empty: 0).
pub fn argmax(logits: &[f32]) -> u32 {
    // Two passes, because the obvious single loop (`if v > best { best = i }`) chains every
    // comparison to the one before it, over the whole vocabulary (49,152 for SmolLM2) for
    // each sequence of a step. The largest value first, in 16 lanes that the compiler turns
    // into one vector compare per chunk (a maximum is the same whichever lane finds it):
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = logits.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            if v > *m {
                *m = v;
            }
        }
    }
    let max = lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    // Then where it first occurs.
    logits.iter().position(|&v| v == max).unwrap_or(0) as u32
}
// ANCHOR_END: argmax

/// How one row of logits is sampled this step, as the worker hands it to the backend: the
/// request's sampling parameters, its seed, and the position of the token being chosen (the
/// draw is [`crate::philox::uniform`]`(seed, position)` on every backend).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    /// 0 = greedy.
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: f32,
    pub seed: u64,
    /// Position of the token being sampled (one past the last token fed this step).
    pub position: usize,
    /// Whether the request wants this row's raw logits back.
    pub output_logits: bool,
    /// Token ids this row must not sample: the request's stop ids while it has fewer than
    /// `min_tokens` output tokens ([`crate::min_tokens`]), else empty. The backend sets their
    /// logits to -inf before the sampler runs; the raw logits returned are unmasked.
    pub banned_token_ids: Vec<u32>,
}

impl SampleRow {
    pub fn new(params: &SamplingParams, seed: u64, position: usize) -> Self {
        SampleRow {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            seed,
            position,
            output_logits: params.output_logits,
            banned_token_ids: Vec::new(),
        }
    }

    /// This row with `banned` kept from being sampled (see [`Self::banned_token_ids`]).
    pub fn with_banned_token_ids(mut self, banned: &[u32]) -> Self {
        self.banned_token_ids = banned.to_vec();
        self
    }

    /// The parameters a [`SampleFn`] reads (temperature, top-k, top-p).
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            ..SamplingParams::default()
        }
    }

    /// This row's uniform draw in `[0, 1)`.
    pub fn draw(&self) -> f32 {
        crate::philox::uniform(self.seed, self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::argmax;

    /// The loop `argmax` replaces: the first index whose value beats every earlier one.
    fn first_largest(v: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &x) in v.iter().enumerate() {
            if x > v[best] {
                best = i;
            }
        }
        best as u32
    }

    #[test]
    fn argmax_is_the_first_largest_at_every_length_and_place() {
        // Lengths around the 16 lanes, the largest value in a lane, in the tail, tied.
        for len in [1, 2, 15, 16, 17, 31, 32, 33, 100] {
            for at in 0..len {
                let mut v: Vec<f32> = (0..len).map(|i| (i % 7) as f32 - 3.0).collect();
                v[at] = 10.0;
                assert_eq!(argmax(&v), at as u32, "len {len}, largest at {at}");
                let tie = (at + 5) % len;
                v[tie] = 10.0;
                assert_eq!(
                    argmax(&v),
                    at.min(tie) as u32,
                    "len {len}, tied at {at}, {tie}"
                );
            }
        }
        // Pseudo-random rows with many ties, against the one-pass loop.
        let mut s = 0x9E37_79B9_u32;
        for len in [49_152, 1_000, 3] {
            let v: Vec<f32> = (0..len)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    (s % 50) as f32
                })
                .collect();
            assert_eq!(argmax(&v), first_largest(&v), "len {len}");
        }
    }

    #[test]
    fn argmax_never_picks_nan_and_handles_infinities_and_empty_rows() {
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NAN; 20]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 20]), 0);
        let mut v = vec![f32::NAN; 40];
        v[33] = -1.0;
        assert_eq!(argmax(&v), 33);
        v[2] = f32::INFINITY;
        assert_eq!(argmax(&v), 2);
    }
}
