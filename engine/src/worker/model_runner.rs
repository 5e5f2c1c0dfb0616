//! Turns the scheduler's decision into the model's inputs, runs the model, returns logits
//! (vLLM's `GPUModelRunner`, on any backend).
//!
//! The batch is flat: every scheduled sequence's new tokens one after another, with no
//! padding. A decode contributes one row, a prefill chunk many; `AttentionMetadata` tells
//! attention where each sequence's rows start and how long its context is.

use crate::attention::attention_metadata::AttentionMetadata;
use crate::backend::Backend;
use crate::core::block::slot_for_position;
use crate::core::scheduler_output::SchedulerOutput;
use crate::model_executor::llama::LlamaForCausalLM;
use crate::worker::cache_engine::KvCache;

// ANCHOR: model_input
/// The flat inputs of one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInput {
    pub input_ids: Vec<u32>,   // [num_tokens]
    pub positions: Vec<usize>, // [num_tokens]
    pub attn_metadata: AttentionMetadata,
    /// Row of each sequence's last token, for the sequences that sample this step.
    pub logits_indices: Vec<usize>,
}
// ANCHOR_END: model_input

/// A function that lays out a step's batch, like [`prepare_inputs`] (stage 3 swaps in the
/// learner's).
pub type PrepareInputsFn = fn(out: &SchedulerOutput, block_size: usize) -> ModelInput;

// ANCHOR: prepare_inputs
/// Lays out a scheduled batch: token ids, positions, slot mapping, block tables.
pub fn prepare_inputs(out: &SchedulerOutput, block_size: usize) -> ModelInput {
    let mut input = ModelInput::default();
    let meta = &mut input.attn_metadata;
    meta.block_size = block_size;
    meta.max_blocks_per_seq = out
        .scheduled
        .iter()
        .map(|s| s.block_table.len())
        .max()
        .unwrap_or(0);
    meta.query_start_loc.push(0);
    for s in &out.scheduled {
        for (j, &token) in s.token_ids.iter().enumerate() {
            let pos = s.start_position + j;
            input.input_ids.push(token);
            input.positions.push(pos);
            meta.slot_mapping
                .push(slot_for_position(&s.block_table, block_size, pos).0);
        }
        meta.query_start_loc.push(input.input_ids.len());
        meta.seq_lens.push(s.start_position + s.token_ids.len());
        let mut row: Vec<u32> = s.block_table.iter().map(|b| b.0).collect();
        row.resize(meta.max_blocks_per_seq, 0);
        meta.block_tables.extend(row);
        if s.needs_logits {
            input.logits_indices.push(input.input_ids.len() - 1);
        }
    }
    input
}
// ANCHOR_END: prepare_inputs

/// Owns the model and its KV cache on one backend.
pub struct ModelRunner<B: Backend> {
    pub model: LlamaForCausalLM<B>,
    pub kv_cache: KvCache<B>,
    /// Lays out each step's batch; [`prepare_inputs`] unless replaced.
    pub prepare_inputs: PrepareInputsFn,
}

impl<B: Backend> ModelRunner<B> {
    pub fn new(model: LlamaForCausalLM<B>, num_blocks: usize, block_size: usize) -> Self {
        let kv_cache = KvCache::new(&model.backend, &model.config, num_blocks, block_size);
        ModelRunner {
            model,
            kv_cache,
            prepare_inputs,
        }
    }

    // ANCHOR: execute_model
    /// Runs one step; returns logits `[num sequences sampling, vocab]` on the host.
    pub fn execute_model(&mut self, out: &SchedulerOutput) -> Vec<f32> {
        let input = (self.prepare_inputs)(out, self.kv_cache.block_size);
        if input.input_ids.is_empty() {
            return Vec::new();
        }
        let logits = self.model.forward(
            &input.input_ids,
            &input.positions,
            &input.attn_metadata,
            &mut self.kv_cache,
            &input.logits_indices,
        );
        self.model.backend.download(&logits)
    }
    // ANCHOR_END: execute_model
}
