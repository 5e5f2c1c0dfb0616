//! `lab bench` on a GPU: the ceilings measured before the engine starts
//! (`kernels::roofline`: a 1 GiB device-to-device copy and an 8192³ bf16 GEMM), and what a
//! benchmark's figures mean against them.
//!
//! What is counted (the minimum a step must do; padding rows of CUDA-graph batches, norms,
//! rotary, sampling and every write are left out, so the ratios are lower bounds):
//! - **bytes a batch-1 decode token reads**: every bf16 weight once, from
//!   `weights::weight_bytes(config, 16)`, except the embedding table of an untied model, of
//!   which the lookup reads one row (a tied model's one matrix is read whole by the LM head:
//!   it is counted once, as `weight_bytes` counts it); plus the K and V rows of the context
//!   of every layer.
//! - **linear FLOPs** (attention excluded): 2 per weight per token through the layers'
//!   projections (q, k, v, o, gate, up, down) for every token a step processed (preemption
//!   recomputes included: that work was done), and 2 per LM-head weight per sampled token
//!   (the LM head runs only on the rows that sample).
//! - **KV bytes decode attention reads**: each decode token reads the K and V rows of its whole
//!   context in every layer (prefill attention's reads are not counted).
//!
//! Copy bandwidth counts bytes read + written, as the kernels' GB/s do, so "% of copy" compares
//! like with like.

use engine::config::{Device, ModelConfig};
use engine::model_executor::weights::weight_bytes;
use kernels::roofline::Ceilings;

/// On a GPU, measures its ceilings (before the engine takes the memory) and prints them; on the
/// CPU, nothing.
pub fn measure(device: Device) -> anyhow::Result<Option<Ceilings>> {
    match device {
        Device::Cuda(ordinal) => {
            let c = kernels::roofline::measure(ordinal)?;
            println!("ceilings ({device}): {c}");
            Ok(Some(c))
        }
        Device::Cpu | Device::Auto => Ok(None),
    }
}

/// The ceilings as the JSON report carries them.
pub fn json(c: &Ceilings) -> serde_json::Value {
    serde_json::json!({
        "device_name": c.device_name,
        "copy_gb_s": c.copy_gb_s,
        "copy_ms": c.copy_ms,
        "gemm_tflop_s": c.gemm_tflop_s,
        "gemm_ms": c.gemm_ms,
    })
}

/// bf16 weight bytes one decode step reads (see the module doc).
pub fn weight_bytes_read(c: &ModelConfig) -> f64 {
    let all = weight_bytes(c, 16) as f64;
    let table = 2.0 * (c.vocab_size * c.hidden_size) as f64;
    let row = 2.0 * c.hidden_size as f64;
    if c.tie_word_embeddings {
        all + row
    } else {
        all - table + row
    }
}

/// bf16 K and V bytes one token of context holds, over all layers.
pub fn kv_bytes_per_token(c: &ModelConfig) -> f64 {
    (2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 2) as f64
}

/// Weights of the layers' projections (q, k, v, o, gate, up, down), which every token goes
/// through; the LM head's `vocab × hidden` is counted apart.
pub fn projection_params(c: &ModelConfig) -> f64 {
    let (h, i, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let (q, kv) = (c.num_attention_heads * d, c.num_key_value_heads * d);
    (c.num_hidden_layers * (h * (q + 2 * kv) + q * h + 3 * h * i)) as f64
}

/// FLOPs of the linear layers for `tokens` processed and `sampled` rows through the LM head.
pub fn linear_flops(c: &ModelConfig, tokens: usize, sampled: usize) -> f64 {
    let lm_head = (c.vocab_size * c.hidden_size) as f64;
    2.0 * (projection_params(c) * tokens as f64 + lm_head * sampled as f64)
}

/// Context tokens whose K and V decode attention reads for a request of `prompt` tokens that
/// makes `output` tokens: the first comes from the prefill, then decode token j (1..output)
/// attends to `prompt + j` tokens.
pub fn decode_context_tokens(prompt: usize, output: usize) -> f64 {
    let steps = output.saturating_sub(1) as f64;
    steps * prompt as f64 + steps * (steps + 1.0) / 2.0
}

/// Achieved rate `bytes / seconds` in GB/s, and its share of the copy ceiling in percent.
pub fn gb_s(bytes: f64, seconds: f64, c: &Ceilings) -> (f64, f64) {
    let rate = bytes / seconds / 1e9;
    (rate, 100.0 * rate / c.copy_gb_s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::model_executor::weights::parameter_count;

    fn config(name: &str) -> ModelConfig {
        let path = format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"));
        ModelConfig::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn a_tied_model_reads_its_matrix_once_and_an_untied_one_skips_the_table() {
        let tied = config("llama-3.2-1b.json");
        assert!(tied.tie_word_embeddings);
        // 1,235,814,400 parameters (Llama-3.2-1B): 2.47 GB of bf16, the figure.
        assert_eq!(parameter_count(&tied), 1_235_814_400);
        let h = 2.0 * tied.hidden_size as f64;
        assert_eq!(weight_bytes_read(&tied), 2.0 * 1_235_814_400.0 + h);
        // Layers + final norm + the matrix, counted from the shapes by hand.
        let untied = config("llama-2-7b.json");
        let (hs, v) = (untied.hidden_size as f64, untied.vocab_size as f64);
        let layers = 32.0 * (4.0 * hs * hs + 3.0 * hs * 11008.0 + 2.0 * hs);
        assert_eq!(
            weight_bytes_read(&untied),
            2.0 * (layers + hs + v * hs) + 2.0 * hs
        );
    }

    #[test]
    fn projections_and_lm_head_make_up_the_weights_but_norms_and_table() {
        let c = config("llama-3.2-1b.json");
        let norms = ((2 * c.num_hidden_layers + 1) * c.hidden_size) as f64;
        let matrix = (c.vocab_size * c.hidden_size) as f64;
        assert_eq!(
            projection_params(&c) + norms + matrix,
            parameter_count(&c) as f64
        );
        assert_eq!(linear_flops(&c, 10, 0), 20.0 * projection_params(&c));
        assert_eq!(linear_flops(&c, 0, 3), 6.0 * matrix);
        // 16 layers x 8 KV heads x 64 x (k, v) x 2 bytes.
        assert_eq!(kv_bytes_per_token(&c), 32_768.0);
    }

    #[test]
    fn decode_reads_the_context_of_every_token_after_the_first() {
        // Prompt 3, output 4: the prefill makes token 1; tokens 2..4 attend to 4, 5, 6.
        assert_eq!(decode_context_tokens(3, 4), 15.0);
        assert_eq!(decode_context_tokens(3, 1), 0.0);
        assert_eq!(decode_context_tokens(3, 0), 0.0);
    }
}
