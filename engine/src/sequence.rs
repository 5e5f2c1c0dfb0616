//! One request's state as it moves through the engine (vLLM's `Request` / `Sequence`).
//!
//! The single mechanism behind prefill, chunked prefill, decode and recompute: a sequence has
//! `num_tokens()` tokens (prompt + generated) and `num_computed_tokens` of them already have
//! their keys and values in the KV cache. Each step the scheduler grants it some new tokens;
//! when the computed count catches up with the token count, the model's last logits give the
//! next token. Preemption by recompute simply resets `num_computed_tokens` to 0.

use crate::sampling_params::SamplingParams;

/// Identifies a sequence; assigned in arrival order, so smaller means earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

/// Where a sequence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceStatus {
    Waiting,
    Running,
    /// Preempted by swap: its KV blocks are in the host swap space, its computed count kept.
    Swapped,
    Finished(FinishReason),
}

/// Why a request stopped (the strings are vLLM's and OpenAI's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// Hit an EOS or stop token.
    Stop,
    /// Hit `max_tokens` or the longest sequence the cache/model can hold.
    Length,
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A request's tokens, progress and sampling state.
#[derive(Debug, Clone)]
pub struct Sequence {
    pub seq_id: SeqId,
    pub prompt_token_ids: Vec<u32>,
    pub output_token_ids: Vec<u32>,
    /// Tokens whose keys/values are in the KV cache.
    pub num_computed_tokens: usize,
    pub status: SequenceStatus,
    pub params: SamplingParams,
    /// How many times it was preempted (for tests and the tracer).
    pub num_preemptions: usize,
    /// Raw logits of each generated token, if `params.output_logits`.
    pub logits: Vec<Vec<f32>>,
    /// When the engine queued it: SLA deadlines count from here.
    pub arrival_time: std::time::Instant,
    /// Tokens sampled by steps still in flight, whose values the host does not know yet
    /// (vLLM v1's `num_output_placeholders`). Only async scheduling has any: it schedules the
    /// next step before the last one's tokens come back, so each placeholder stands after
    /// `output_token_ids` until the step that sampled it completes ([`PLACEHOLDER_TOKEN_ID`]).
    pub num_output_placeholders: usize,
}

/// What [`Sequence::token_at`] returns for a placeholder: not a vocabulary id. The model runner
/// replaces it with the token the previous step sampled, on the device.
pub const PLACEHOLDER_TOKEN_ID: u32 = u32::MAX;

impl Sequence {
    pub fn new(seq_id: SeqId, prompt_token_ids: Vec<u32>, params: SamplingParams) -> Self {
        Sequence {
            seq_id,
            prompt_token_ids,
            output_token_ids: Vec::new(),
            num_computed_tokens: 0,
            status: SequenceStatus::Waiting,
            params,
            num_preemptions: 0,
            logits: Vec::new(),
            arrival_time: std::time::Instant::now(),
            num_output_placeholders: 0,
        }
    }

    /// Prompt plus generated tokens, placeholders included: what the scheduler schedules.
    pub fn num_tokens(&self) -> usize {
        self.num_known_tokens() + self.num_output_placeholders
    }

    /// Prompt plus the generated tokens whose values are known: what stop conditions count
    /// and what the prefix cache may hash.
    pub fn num_known_tokens(&self) -> usize {
        self.prompt_token_ids.len() + self.output_token_ids.len()
    }

    /// Token at position `i` of prompt ++ output ++ placeholders.
    pub fn token_at(&self, i: usize) -> u32 {
        let p = self.prompt_token_ids.len();
        if i < p {
            self.prompt_token_ids[i]
        } else {
            let o = &self.output_token_ids;
            assert!(
                i < self.num_tokens(),
                "token {i} of a {}-token sequence",
                self.num_tokens()
            );
            o.get(i - p).copied().unwrap_or(PLACEHOLDER_TOKEN_ID)
        }
    }

    // ANCHOR: num_uncomputed_tokens
    /// Tokens not yet in the KV cache.
    pub fn num_uncomputed_tokens(&self) -> usize {
        self.num_tokens() - self.num_computed_tokens
    }
    // ANCHOR_END: num_uncomputed_tokens

    pub fn is_finished(&self) -> bool {
        matches!(self.status, SequenceStatus::Finished(_))
    }
}
