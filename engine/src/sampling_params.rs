//! How one request wants its tokens chosen and when it wants to stop (vLLM's `SamplingParams`).

use crate::error::{EngineError, Result};

/// Sampling and stopping parameters of one request.
///
/// `temperature == 0` means greedy: the argmax of the raw logits, ties to the lowest id (as
/// transformers does). Otherwise logits are divided by the temperature, cut to the `top_k`
/// largest and to the smallest set whose probability reaches `top_p`, and sampled with the
/// random number `philox::uniform(seed, position)` of the new token's position, so a request
/// draws the same tokens whether it runs alone or batched with others, preempted or not.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the `k` most likely tokens; `None` keeps all.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability mass reaches `p`; 1.0 keeps all.
    pub top_p: f32,
    /// Seed of this request's random numbers; `None` draws one when the request arrives.
    pub seed: Option<u64>,
    /// Generate at most this many tokens.
    pub max_tokens: usize,
    /// Extra token ids that end the request (the model's EOS ids always do, unless ignored).
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past EOS (for benchmarks and exact-length comparisons).
    pub ignore_eos: bool,
    /// Generate at least this many tokens before a stop token (EOS or `stop_token_ids`) or a
    /// stop string may end the request (vLLM's `min_tokens`): until then the stop tokens'
    /// logits are -inf, so they cannot be sampled. 0 = no floor; at most `max_tokens`.
    pub min_tokens: usize,
    /// Return each step's raw logits in the output (for tests and inspection tools; costs
    /// `vocab_size` floats per generated token).
    pub output_logits: bool,
    /// Scheduling priority under the `priority` and `qos` policies: lower runs first (vLLM's
    /// convention); 0 by default. Other policies ignore it.
    pub priority: i32,
    /// The tenant the request is billed to under the `fair` and `qos` policies, which share
    /// the engine's tokens among tenants by weight; empty is the default tenant.
    pub tenant: String,
    /// Under the `qos` policy, the request should finish within this long of its arrival; once
    /// it is late it is served before every request that is not (earliest deadline first).
    pub deadline: Option<std::time::Duration>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: 1.0,
            seed: None,
            max_tokens: 16,
            stop_token_ids: vec![],
            ignore_eos: false,
            min_tokens: 0,
            output_logits: false,
            priority: 0,
            tenant: String::new(),
            deadline: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of up to `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        SamplingParams {
            temperature: 0.0,
            max_tokens,
            ..Default::default()
        }
    }

    /// Rejects values that have no meaning, naming the parameter.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::Sampling(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if self.top_k == Some(0) {
            return bad("top_k must be at least 1 (omit it to keep all tokens)".into());
        }
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1".into());
        }
        if self.min_tokens > self.max_tokens {
            return bad(format!(
                "min_tokens ({}) must be at most max_tokens ({})",
                self.min_tokens, self.max_tokens
            ));
        }
        Ok(())
    }

    /// Every token id that ends this request when sampled: its `stop_token_ids` and, unless it
    /// ignores EOS, the model's `eos_token_ids` (vLLM's `all_stop_token_ids`). These are the
    /// ids that `min_tokens` keeps from being sampled; sorted, without repeats.
    pub fn all_stop_token_ids(&self, eos_token_ids: &[u32]) -> Vec<u32> {
        let eos = if self.ignore_eos {
            &[][..]
        } else {
            eos_token_ids
        };
        let mut ids: Vec<u32> = self.stop_token_ids.iter().chain(eos).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// True when decoding is deterministic argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}
