//! Rescaling random weights so that comparing two engines' greedy tokens tests something.
//!
//! Random weights with tied embeddings make a degenerate model: the residual stream still
//! holds the current token's embedding `e`, and the tied LM head scores every token `t` by
//! `⟨h, e_t⟩`, so the current token itself wins by `|e|²` (about `hidden/3` logits, against a
//! spread of `√(hidden/3)` for the others). Greedy decoding then repeats the last prompt token
//! forever, whatever attention computed: an engine with broken rotary embeddings or a broken KV
//! cache agrees with transformers on every token (measured: scripts/README.md).
//!
//! Two scalings fix it without changing the shape or the tied head:
//! - **Embeddings × s, final norm × 1/s** (`s < 1`): layer 0 sees the same input (RMSNorm
//!   cancels the scale), but the embedding's share of the residual stream shrinks, so the
//!   logits come from what the layers computed. With a tied head the final norm undoes `s`,
//!   keeping the logits' spread.
//! - **Queries × q** (`q > 1`): random q·k scores are nearly equal (softmax ≈ uniform), so
//!   attention averages the context and position barely matters. Larger queries make attention
//!   select by content and position, so rotary embeddings and the KV cache must be right. Too
//!   large and the model turns chaotic: bf16 rounding alone flips tokens.

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::model_executor::weights::{HostTensor, LlamaWeights};

/// How much to scale; `1.0` leaves a part unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conditioning {
    /// Factor on the token embeddings (undone on the final norm when the head is tied).
    pub embed_scale: f32,
    /// Factor on every layer's query projection (and its bias).
    pub query_scale: f32,
}

impl Default for Conditioning {
    fn default() -> Self {
        Conditioning {
            embed_scale: 1.0,
            query_scale: 1.0,
        }
    }
}

impl Conditioning {
    /// Both scales must be positive and finite.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("embed scale", self.embed_scale),
            ("query scale", self.query_scale),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(EngineError::InvalidArgument(format!(
                    "{name} must be a positive number, got {v}"
                )));
            }
        }
        Ok(())
    }
}

fn scale(t: &mut HostTensor, factor: f32) {
    t.data.iter_mut().for_each(|v| *v *= factor);
}

/// Applies `how` to `weights` in place.
pub fn condition(
    config: &ModelConfig,
    weights: &mut LlamaWeights<HostTensor>,
    how: Conditioning,
) -> Result<()> {
    how.validate()?;
    scale(&mut weights.embed_tokens, how.embed_scale);
    if config.tie_word_embeddings {
        scale(&mut weights.norm, 1.0 / how.embed_scale);
    }
    // The fused qkv_proj is [(heads + 2·kv_heads)·head_dim, hidden]: q is its first rows.
    let q_values = config.num_attention_heads * config.head_dim * config.hidden_size;
    for layer in &mut weights.layers {
        let q = &mut layer.qkv_proj.data[..q_values];
        q.iter_mut().for_each(|v| *v *= how.query_scale);
        if let Some(bias) = &mut layer.qkv_bias {
            let q_bias = config.num_attention_heads * config.head_dim;
            bias.data[..q_bias]
                .iter_mut()
                .for_each(|v| *v *= how.query_scale);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_executor::random_weights::random_weights;
    use crate::tiny_model::tiny_config;

    #[test]
    fn scales_embeddings_norm_and_queries_only() {
        let c = ModelConfig {
            tie_word_embeddings: true,
            attention_bias: true,
            ..tiny_config()
        };
        let before = random_weights(&c, 3);
        let mut after = random_weights(&c, 3);
        let how = Conditioning {
            embed_scale: 0.5,
            query_scale: 4.0,
        };
        condition(&c, &mut after, how).unwrap();
        let ratio = |a: &HostTensor, b: &HostTensor, i: usize| a.data[i] / b.data[i];
        assert_eq!(ratio(&after.embed_tokens, &before.embed_tokens, 5), 0.5);
        assert_eq!(ratio(&after.norm, &before.norm, 5), 2.0);
        let q_rows = c.num_attention_heads * c.head_dim;
        let (l0, b0) = (&after.layers[0], &before.layers[0]);
        let last_q = q_rows * c.hidden_size - 1;
        assert_eq!(ratio(&l0.qkv_proj, &b0.qkv_proj, last_q), 4.0);
        assert_eq!(
            ratio(&l0.qkv_proj, &b0.qkv_proj, last_q + 1),
            1.0,
            "k untouched"
        );
        let (bias, bias0) = (l0.qkv_bias.as_ref().unwrap(), b0.qkv_bias.as_ref().unwrap());
        assert_eq!(ratio(bias, bias0, q_rows - 1), 4.0);
        assert_eq!(ratio(bias, bias0, q_rows), 1.0);
        assert_eq!(l0.gate_up_proj.data, b0.gate_up_proj.data);
    }

    #[test]
    fn untied_head_keeps_the_final_norm() {
        let c = tiny_config(); // untied
        let mut w = random_weights(&c, 3);
        let norm = w.norm.data.clone();
        let how = Conditioning {
            embed_scale: 0.25,
            ..Conditioning::default()
        };
        condition(&c, &mut w, how).unwrap();
        assert_eq!(w.norm.data, norm);
    }

    #[test]
    fn rejects_non_positive_scales() {
        let c = tiny_config();
        let mut w = random_weights(&c, 3);
        for bad in [0.0, -1.0, f32::NAN] {
            let how = Conditioning {
                query_scale: bad,
                ..Conditioning::default()
            };
            assert!(condition(&c, &mut w, how).is_err());
        }
    }
}
