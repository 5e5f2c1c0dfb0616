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
/// Index of the largest value; the first one on ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
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
