//! Pipeline parallelism's split of the model: which contiguous layers each stage runs, and
//! which of the other weights it holds.
//!
//! Stage `s` of `pp` runs layers [`get_pp_indices`]`(L, s, pp)`: `L / pp` each, and the
//! remainder one extra to each of the stages just *before* the last (vLLM's `get_pp_indices`
//! without `VLLM_PP_LAYER_PARTITION`): the last stage already carries the final norm and the LM
//! head, so it is the one spared. 10 layers over 3 stages: `0..3, 3..7, 7..10`.
//!
//! The first stage holds the embedding table; the last the final norm and the LM head. With
//! tied embeddings the LM head *is* the embedding table, so the last stage loads its own copy
//! of it (as vLLM's `ParallelLMHead.tie_weights` does on a stage without the embedding). A
//! stage's other tensors are not read at all: each stage holds only what it runs.

use std::ops::Range;

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};

/// One rank's pipeline stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PpStage {
    /// `0..size`.
    pub rank: usize,
    /// The pipeline-parallel size.
    pub size: usize,
    /// The model's layers this stage runs, by their index in the whole model.
    pub layers: Range<usize>,
}

impl PpStage {
    /// Stage `rank` of `size` of a model of `num_layers` layers.
    pub fn new(num_layers: usize, rank: usize, size: usize) -> Self {
        PpStage {
            rank,
            size,
            layers: get_pp_indices(num_layers, rank, size),
        }
    }

    /// The whole model as one stage (no pipeline parallelism).
    pub fn whole(num_layers: usize) -> Self {
        PpStage::new(num_layers, 0, 1)
    }

    /// Embeds the token ids (holds the embedding table).
    pub fn is_first(&self) -> bool {
        self.rank == 0
    }

    /// Runs the final norm and the LM head, and samples.
    pub fn is_last(&self) -> bool {
        self.rank + 1 == self.size
    }

    /// Whether this stage holds the whole model tensor `name` (a Hugging Face name): a layer's
    /// tensor if the layer is the stage's, the embedding on the first stage (and on the last
    /// with tied embeddings), the final norm and `lm_head` on the last.
    pub fn holds(&self, name: &str, tied: bool) -> bool {
        if let Some(rest) = name.strip_prefix("model.layers.") {
            let layer = rest.split('.').next().and_then(|i| i.parse().ok());
            return layer.is_some_and(|i| self.layers.contains(&i));
        }
        match name {
            "model.embed_tokens.weight" => self.is_first() || (tied && self.is_last()),
            "model.norm.weight" | "lm_head.weight" => self.is_last(),
            _ => true,
        }
    }
}

// ANCHOR: get_pp_indices
/// The layers stage `pp_rank` of `pp_size` runs: contiguous, `num_layers / pp_size` each, the
/// remainder spread one apiece over the stages before the last, counting back from it (vLLM's
/// `get_pp_indices`). Every stage gets at least one layer when `pp_size <= num_layers`.
pub fn get_pp_indices(num_layers: usize, pp_rank: usize, pp_size: usize) -> Range<usize> {
    let base = num_layers / pp_size;
    let extra = num_layers % pp_size;
    // Stage s gets one more when it is among the `extra` stages right before the last one.
    let size = |s: usize| base + usize::from(s + 1 < pp_size && s + 1 + extra >= pp_size);
    let start: usize = (0..pp_rank).map(size).sum();
    start..start + size(pp_rank)
}
// ANCHOR_END: get_pp_indices

/// Refuses a pipeline-parallel size the model cannot be split into: every stage needs at least
/// one layer. `name` names the model in the message.
pub fn check_pipeline_parallel(config: &ModelConfig, name: &str, pp: usize) -> Result<()> {
    let layers = config.num_hidden_layers;
    if pp == 0 {
        return Err(EngineError::InvalidArgument(
            "--pipeline-parallel-size must be at least 1".into(),
        ));
    }
    if pp > layers {
        return Err(EngineError::InvalidArgument(format!(
            "{name} has {layers} layers; --pipeline-parallel-size must be at most {layers} \
             (every stage runs at least one layer)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_remainder_goes_to_the_stages_before_the_last() {
        let split = |l, pp| {
            (0..pp)
                .map(|s| get_pp_indices(l, s, pp))
                .collect::<Vec<_>>()
        };
        assert_eq!(split(10, 3), [0..3, 3..7, 7..10]);
        assert_eq!(split(5, 3), [0..2, 2..4, 4..5]);
        assert_eq!(split(12, 3), [0..4, 4..8, 8..12]);
        assert_eq!(split(2, 2), [0..1, 1..2]);
        assert_eq!(split(7, 1).len(), 1);
        assert_eq!(split(7, 1)[0], 0..7);
    }

    #[test]
    fn stages_hold_their_own_tensors() {
        let first = PpStage::new(4, 0, 2);
        let last = PpStage::new(4, 1, 2);
        assert!(first.holds("model.layers.1.mlp.down_proj.weight", false));
        assert!(!first.holds("model.layers.2.mlp.down_proj.weight", false));
        assert!(last.holds("model.layers.3.input_layernorm.weight", false));
        assert!(first.holds("model.embed_tokens.weight", false));
        assert!(!last.holds("model.embed_tokens.weight", false));
        assert!(
            last.holds("model.embed_tokens.weight", true),
            "tied: its own copy"
        );
        assert!(last.holds("lm_head.weight", false) && !first.holds("lm_head.weight", false));
        assert!(last.holds("model.norm.weight", false) && !first.holds("model.norm.weight", false));
    }

    proptest! {
        /// The stages cover the layers once, in order, each with one layer at least, sizes
        /// differing by one at most, the last never larger than the others.
        #[test]
        fn stages_tile_the_layers(layers in 1usize..80, pp in 1usize..12) {
            prop_assume!(pp <= layers);
            let ranges: Vec<Range<usize>> = (0..pp).map(|s| get_pp_indices(layers, s, pp)).collect();
            prop_assert_eq!(ranges[0].start, 0);
            prop_assert_eq!(ranges[pp - 1].end, layers);
            for w in ranges.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
            }
            let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
            let (lo, hi) = (*lens.iter().min().unwrap(), *lens.iter().max().unwrap());
            prop_assert!(lo >= 1 && hi - lo <= 1);
            prop_assert_eq!(lens[pp - 1], lo);
        }
    }
}
