//! Errata, the week in review (book/src/errata.md), the source's Day 21: its communication
//! timeline for TP = 4 counts the embedding once per layer. The engine's kernel log of one
//! forward pass decides how many times it runs.

use engine::config::ModelConfig;
use engine::distributed::comm_model::ALL_REDUCES_PER_LAYER;
use engine::kernel_log;
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};

#[test]
fn errata_day21_the_embedding_runs_once_per_forward_pass_not_once_per_layer() {
    // A narrow random Llama with the source's 32 layers, one rank, one prefill step.
    let config = ModelConfig {
        num_hidden_layers: 32,
        ..tiny_config()
    };
    let model = LoadedModel {
        name: "narrow-32-layer".into(),
        config: config.clone(),
        weights: ModelWeights::Random { seed: 7 },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    };
    let mut ec = EngineConfig::default();
    ec.cache.block_size = 4;
    ec.cache.num_kv_blocks = Some(16);
    let mut engine = LLMEngine::new(model, ec).unwrap();
    let mut params = SamplingParams::greedy(1);
    params.ignore_eos = true;
    engine
        .add_request(Prompt::TokenIds((0..5).collect()), params)
        .unwrap();
    let (finished, ops) = kernel_log::record(|| engine.step().unwrap());
    assert_eq!(
        finished.len(),
        1,
        "one step: the prefill makes the one token"
    );
    let count = |op: &str| ops.iter().filter(|o| *o == op).count();
    let layers = config.num_hidden_layers;
    // Once per pass, while the layers' own ops run once per layer.
    assert_eq!(count("embedding"), 1, "{ops:?}");
    // The MLP's gate/up GEMM with its SiLU·mul epilogue: once per layer (FC1 below).
    assert_eq!(count("linear_silu_and_mul"), layers);
    assert_eq!(count("prefill_attention"), layers);

    // The source's own per-op times (ms): embedding 2; per layer QKV 5, attention 10, o_proj
    // 5, FC1 8, FC2 8 and two all-reduces of 1; it puts the embedding in every layer (40 ms
    // a layer, 1280 ms). Counted as the engine runs them, and with the vocab-parallel
    // embedding's all-reduce (see "Collectives per tensor-parallel forward pass"):
    let embeddings = count("embedding") as u32;
    let all_reduces = (ALL_REDUCES_PER_LAYER * layers + 1) as u32;
    let compute_per_layer = 5 + 10 + 5 + 8 + 8;
    let total = 2 * embeddings + compute_per_layer * layers as u32 + all_reduces;
    assert_eq!((total, all_reduces), (1219, 65));
    assert_ne!(total, 1280, "the source's total");
}
