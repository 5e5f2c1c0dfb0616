//! `min_tokens`: a floor on how many tokens a request generates (vLLM's
//! `MinTokensLogitsProcessor`).
//!
//! A request ends when it samples one of its stop tokens: the model's EOS (unless it sets
//! `ignore_eos`) or one of its `stop_token_ids`. With `min_tokens = m`, the first `m` tokens it
//! samples must not end it. Checking afterwards and "not stopping" would keep an EOS in the
//! middle of the text; instead the stop tokens are made impossible to sample: while the request
//! has fewer than `m` output tokens, their logits are set to -inf before sampling. The sampler
//! then never sees them: greedy takes the largest remaining logit, and random sampling gives them
//! probability exp(-inf) = 0, so top-k, top-p and the draw are over the other tokens only.
//!
//! The model runner decides, per row, which ids are banned ([`banned_token_ids`]); the backend
//! applies the mask where the logits are: [`mask_logits`] on the CPU, a kernel on the GPU
//! (`kernels::sampling::Sampling::mask_logits`). The sampler itself is untouched, so a learner's
//! sampler (stage 3) gets the floor too. On the CPU one guard remains: should a sampler still
//! return a banned id (the engine's walk can run past its kept tokens by float rounding onto a
//! zero-probability one; a learner's may not skip -inf), the masked row's argmax is taken. The
//! GPU sampler never picks a zero-weight token.

/// The ids row sampling must not pick: every stop id of the request (`all_stop_token_ids`, see
/// [`crate::SamplingParams::all_stop_token_ids`]) while it has fewer than `min_tokens` output
/// tokens, else none.
pub fn banned_token_ids(
    all_stop_token_ids: &[u32],
    min_tokens: usize,
    num_output_tokens: usize,
) -> &[u32] {
    if num_output_tokens < min_tokens {
        all_stop_token_ids
    } else {
        &[]
    }
}

/// Sets the logit of every banned id to -inf, in place. Ids outside the row (a stop id the
/// vocabulary does not have, which can never be sampled anyway) are skipped.
pub fn mask_logits(logits: &mut [f32] /* [vocab] */, banned: &[u32]) {
    for &id in banned {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_only_below_the_floor() {
        let stops = [2, 7];
        assert_eq!(banned_token_ids(&stops, 3, 0), &stops);
        assert_eq!(banned_token_ids(&stops, 3, 2), &stops);
        assert!(banned_token_ids(&stops, 3, 3).is_empty());
        assert!(banned_token_ids(&stops, 0, 0).is_empty());
    }

    #[test]
    fn masks_ids_inside_the_row_only() {
        let mut row = vec![1.0, 2.0, 3.0];
        mask_logits(&mut row, &[1, 99]);
        assert_eq!(row, vec![1.0, f32::NEG_INFINITY, 3.0]);
        assert_eq!(crate::sampler::argmax(&row), 2);
    }
}
