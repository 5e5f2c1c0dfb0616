//! What a worker returns from a step (vLLM v1's `ModelRunnerOutput`, `vllm/v1/outputs.py`).

// ANCHOR: model_runner_output
/// One step's result: the sampled token ids, and logits only for the requests that asked.
///
/// Sampling happens on the worker, next to the logits, so what crosses from the worker to the
/// engine is one `u32` per sequence instead of a `[sequences, vocab]` block of floats: for
/// SmolLM2's 49152-token vocabulary, 192 KiB per sequence per step, which on a GPU would cross
/// PCIe every step, and from another rank the network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRunnerOutput {
    /// The token each sequence with `needs_logits` sampled, in batch order.
    pub sampled_token_ids: Vec<u32>,
    /// Raw logits `[vocab]` for each of those sequences whose request set
    /// `SamplingParams::output_logits`; `None` for the others.
    pub logits: Vec<Option<Vec<f32>>>,
}
// ANCHOR_END: model_runner_output
