//! Errata, Stage 5: distributed inference (book/src/errata.md), the source's Days 19 and 20.
//!
//! Three claims the engine can now decide: how many collectives one tensor-parallel forward
//! pass makes (counted by the CPU tensor-parallel engine's communicators), what one GPU holds
//! for Llama-2-70B at TP 8 and at TP 4 × PP 2 (the planner's memory model on the model's own
//! config), and how many bytes Q22's all-reduces move (the planner's communication model,
//! checked against what the CPU communicator counts).

use std::time::Duration;

use engine::config::ModelConfig;
use engine::distributed::comm_model::{
    all_reduce_bytes, ring_traffic_per_gpu, ALL_REDUCES_PER_LAYER,
};
use engine::distributed::memory_model::{
    kv_bytes_per_token_per_gpu, layers_per_stage, vocab_rows_per_rank, weight_bytes_per_gpu,
};
use engine::distributed::{CommOp, Communicator, CpuCommunicator};
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};

/// Llama-2-70B's config as the planner reads it (engine/configs/llama-2-70b.json).
fn llama_2_70b() -> ModelConfig {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/configs/llama-2-70b.json"
    );
    ModelConfig::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn errata_a_tp_forward_pass_makes_two_all_reduces_per_layer_plus_the_embeddings_and_one_gather() {
    // A narrow random Llama with the source's 32 layers: hidden 64, 4 heads of 16, 259 ids.
    let config = ModelConfig {
        num_hidden_layers: 32,
        ..tiny_config()
    };
    let tp = 2;
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
    ec.parallel.tensor_parallel_size = tp;
    let mut engine = LLMEngine::new(model, ec).unwrap();
    let mut params = SamplingParams::greedy(1);
    params.ignore_eos = true;
    let prompt: Vec<u32> = (0..5).collect();
    engine
        .add_request(Prompt::TokenIds(prompt), params)
        .unwrap();
    // One step: the prefill, which samples the one token asked for.
    let mut steps = 0;
    while engine.has_unfinished_requests() {
        engine.step().unwrap();
        steps += 1;
    }
    assert_eq!(steps, 1);

    let stats = engine.comm_stats();
    assert_eq!(stats.len(), tp);
    let layers = config.num_hidden_layers;
    for s in &stats {
        let all_reduces = s.op(CommOp::AllReduce).calls;
        let gathers = s.op(CommOp::AllGather).calls;
        // The source's count is the layers' share: 2 per layer, 64 for 32 layers.
        assert_eq!(ALL_REDUCES_PER_LAYER * layers, 64);
        // The vocab-parallel embedding adds one, and sampling needs the logits gathered.
        assert_eq!(all_reduces, 64 + 1);
        assert_eq!(gathers, 1);
        assert_eq!(s.total().calls, 66, "no other collective");
        assert_eq!(s.total().failures, 0);
    }
}

#[test]
fn errata_q21_llama_2_70b_has_80_layers_and_17_25_gb_of_weights_per_gpu_either_way() {
    let c = llama_2_70b();
    assert_eq!(c.num_hidden_layers, 80, "the source says 32");
    let gb = |b: u64| b as f64 / 1e9;
    let round2 = |x: f64| (x * 100.0).round() / 100.0;

    // The whole model in bf16: one stage of one rank, first and last.
    let total = weight_bytes_per_gpu(&c, 1, 80, true, true);
    assert_eq!(round2(gb(total)), 137.95, "the source says 140 GB");

    // TP = 8: all 80 layers on every GPU, each an eighth of every layer and of the vocabulary.
    let tp8 = weight_bytes_per_gpu(&c, 8, 80, true, true);
    // TP = 4, PP = 2: 40 layers per stage; the first holds the embedding's shard, the last the
    // final norm and the LM head's.
    assert_eq!(layers_per_stage(80, 2), vec![40, 40], "the source says 16");
    let first = weight_bytes_per_gpu(&c, 4, 40, true, false);
    let last = weight_bytes_per_gpu(&c, 4, 40, false, true);
    for w in [tp8, first, last] {
        assert_eq!(round2(gb(w)), 17.25, "{w} bytes");
    }
    // Not exactly equal: the last stage also holds the final norm (8,192 values).
    assert_eq!(last - first, 8192 * 2);
    // The matrices and tables agree exactly (an eighth of each table at TP 8, a quarter of one
    // at TP 4); the RMSNorm weights are replicated, and TP 8's GPU holds 40 more layers' of
    // them: 40 × 2 × 8,192 values, 1.3 MB of 17.25 GB.
    assert_eq!(tp8 - last, 40 * 2 * 8192 * 2);

    // The KV cache per token of context is equal too: 80 layers × 1 KV head per rank at TP 8,
    // 40 layers × 2 KV heads at TP 4; K and V, 128 values each, bf16. 40 KiB per token.
    let kv8 = kv_bytes_per_token_per_gpu(&c, 8, 80);
    let kv4 = kv_bytes_per_token_per_gpu(&c, 4, 40);
    assert_eq!((kv8, kv4), (40 << 10, 40 << 10));
    // The source's "~10-20 GB" of KV cache is a batch size: 10 GB holds 244,140 tokens.
    assert_eq!(10_000_000_000 / kv8, 244_140);
}

#[test]
fn errata_q21_the_vocab_tables_are_split_too() {
    // Why TP 8 and TP 4 × PP 2 agree: each GPU holds 1/8 of every layer matrix and the
    // vocabulary tables are split as well (vLLM's VocabParallelEmbedding and ParallelLMHead).
    let c = llama_2_70b();
    assert_eq!(vocab_rows_per_rank(c.vocab_size, 8), 4000);
    assert_eq!(vocab_rows_per_rank(c.vocab_size, 4), 8000);
}

#[test]
fn errata_q22_each_gpu_sends_6_gib_per_forward_pass_not_4_gb() {
    let (tp, tokens, hidden, layers) = (4, 16 * 512, 4096, 32);
    let one = all_reduce_bytes(tokens, hidden);
    assert_eq!(one, 67_108_864);
    assert_eq!(one, 64 << 20, "64 MiB, which the source writes as 64 MB");
    let calls = (ALL_REDUCES_PER_LAYER * layers) as u64;
    assert_eq!(calls, 64);
    let tensor_total = calls * one;
    assert_eq!(tensor_total, 4 << 30, "4 GiB of tensors");
    assert_eq!(tensor_total, 4_294_967_296, "4.29e9 bytes, not 4e9");
    // What each GPU sends in a ring all-reduce: 2(N−1)/N of each tensor, 1.5× at N = 4.
    let sent = calls as f64 * ring_traffic_per_gpu(one, tp);
    assert_eq!(sent, (6u64 << 30) as f64, "6 GiB sent per GPU");
    // At the source's 600 GB/s that takes 10.7 ms, not its 6.7 ms.
    let ms = sent / 600e9 * 1e3;
    assert!((ms - 10.74).abs() < 0.01, "{ms}");
}

#[test]
fn errata_q22_the_cpu_communicator_sends_exactly_two_n_minus_one_over_n() {
    // One all-reduce of 4,096 f32 (16 KiB) over 4 ranks, counted by the engine's communicator.
    let (n, len) = (4, 4096);
    let group = CpuCommunicator::group(n, Duration::from_secs(10));
    let handles: Vec<_> = group
        .into_iter()
        .map(|mut comm| {
            std::thread::spawn(move || {
                let mut buf = vec![comm.rank() as f32 + 1.0; len];
                comm.all_reduce_sum(&mut buf).unwrap();
                assert!(buf.iter().all(|&x| x == 10.0), "1 + 2 + 3 + 4");
                *comm.stats().op(CommOp::AllReduce)
            })
        })
        .collect();
    let tensor = (len * 4) as u64;
    for h in handles {
        let ar = h.join().unwrap();
        assert_eq!((ar.calls, ar.tensor_bytes), (1, tensor));
        assert_eq!(ar.sent_bytes as f64, ring_traffic_per_gpu(tensor, n));
        assert_eq!(ar.sent_bytes, tensor * 3 / 2);
    }
}
