//! GPU tests on a machine without one: skip with the reason printed, never fail or panic.

use engine::config::Device;

/// True when a CUDA device is usable; otherwise prints why the test is skipped (`Device`'s
/// resolve checks that the driver library is present before any driver call: cudarc panics
/// when asked blindly).
pub fn gpu_or_skip() -> bool {
    match Device::Cuda(0).resolve() {
        Ok(_) => true,
        Err(e) => {
            use std::io::Write;
            // Past the test harness's capture, so `cargo test` shows why nothing ran.
            let _ = writeln!(std::io::stderr(), "skipped: {e}");
            false
        }
    }
}

/// The smallest shape both backends run: the tiny model's vocabulary and 3 layers, 4 query and
/// 2 KV heads of `head_dim` (64 or 128, sizes the CUDA kernels are built for), hidden 256.
pub fn small_config(head_dim: usize) -> engine::config::ModelConfig {
    let mut c = engine::tiny_model::tiny_config();
    c.head_dim = head_dim;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.num_hidden_layers = 3;
    c
}

/// `c` with random weights (seed 7) and the tiny model's byte tokenizer.
pub fn random_model(c: &engine::config::ModelConfig) -> engine::model_source::LoadedModel {
    engine::model_source::LoadedModel {
        name: format!("random d{}", c.head_dim),
        config: c.clone(),
        weights: engine::model_source::ModelWeights::Random { seed: 7 },
        tokenizer: engine::tiny_model::tiny_tokenizer(),
        eos_token_ids: c.eos_token_ids.clone(),
    }
}
