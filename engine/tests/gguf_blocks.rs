//! `--model path/x.gguf` on the CPU computes from the file's Q8_0/Q4_1 blocks, and gives the
//! very logits and greedy tokens of the same model loaded as f32 (the Hugging Face directory
//! the GGUF converts to). The model: a two-layer Llama written as a GGUF here, every linear
//! layer in blocks (Q8_0 and Q4_1 mixed), an LM head untied or tied to the embedding table, a
//! byte-level GPT-2 tokenizer.

use engine::backend::cpu_backend::CpuBackend;
use engine::backend::{Backend, DType};
use engine::model_loader::dequant::GgmlType;
use engine::model_loader::gguf_blocks::keep_gguf_blocks;
use engine::model_loader::gguf_writer::GgufBuilder;
use engine::model_source::{load_model, ModelSpec, ModelWeights};
use engine::{SamplingParams, LLM};

const HIDDEN: u64 = 64;
const HEADS: u64 = 2;
const KV_HEADS: u64 = 1;
const HEAD_DIM: u64 = 32;
const FF: u64 = 96;
const LAYERS: u32 = 2;

/// GPT-2's byte → printable character table (`bytes_to_unicode`).
fn byte_level_alphabet() -> Vec<String> {
    let mut shifted = 0;
    (0u32..256)
        .map(|b| {
            let printable =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable {
                b
            } else {
                shifted += 1;
                255 + shifted
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect()
}

/// `n` random blocks of `format` (scales of a trained model's size: logits that vary).
fn blocks(format: GgmlType, n: u64, seed: &mut u64) -> Vec<u8> {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    };
    let mut out = Vec::new();
    for _ in 0..n / 32 {
        let d = (next() % 1000) as f32 / 1000.0 * 0.08 + 0.01;
        out.extend(half::f16::from_f32(d).to_le_bytes());
        if format == GgmlType::Q4_1 {
            out.extend(half::f16::from_f32(-8.0 * d).to_le_bytes());
        }
        let n = if format == GgmlType::Q4_1 { 16 } else { 32 };
        out.extend((0..n).map(|_| next() as u8));
    }
    out
}

fn write_model(dir: &std::path::Path, tied: bool) -> std::path::PathBuf {
    let mut tokens = vec![
        "<|endoftext|>".to_string(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    tokens.extend(byte_level_alphabet());
    let vocab = tokens.len() as u64;
    let mut types = vec![1; tokens.len()];
    types[..3].fill(3);
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let ones = vec![1.0f32; HIDDEN as usize];
    let mut b = GgufBuilder::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", LAYERS)
        .u32("llama.context_length", 256)
        .u32("llama.embedding_length", HIDDEN as u32)
        .u32("llama.feed_forward_length", FF as u32)
        .u32("llama.attention.head_count", HEADS as u32)
        .u32("llama.attention.head_count_kv", KV_HEADS as u32)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .u32("llama.rope.dimension_count", HEAD_DIM as u32)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .str_array("tokenizer.ggml.tokens", &token_refs)
        .i32_array("tokenizer.ggml.token_type", &types)
        .str_array("tokenizer.ggml.merges", &[])
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2)
        .bool("tokenizer.ggml.add_bos_token", false)
        .str("tokenizer.chat_template", "{{ messages }}");
    let (q8, q4) = (8, 3); // ggml type ids
    let mut seed = 1u64;
    let mut t = |b: GgufBuilder, name: &str, dims: [u64; 2], ty: u32| {
        let format = if ty == q8 {
            GgmlType::Q8_0
        } else {
            GgmlType::Q4_1
        };
        let data = blocks(format, dims[0] * dims[1], &mut seed);
        b.tensor(name, &dims, ty, data)
    };
    b = t(b, "token_embd.weight", [HIDDEN, vocab], q8);
    if !tied {
        b = t(b, "output.weight", [HIDDEN, vocab], q4);
    }
    b = b.tensor_f32("output_norm.weight", &[HIDDEN], &ones);
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    for i in 0..LAYERS {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        b = b.tensor_f32(&n("attn_norm"), &[HIDDEN], &ones).tensor_f32(
            &n("ffn_norm"),
            &[HIDDEN],
            &ones,
        );
        b = t(b, &n("attn_q"), [HIDDEN, q], q8);
        b = t(b, &n("attn_k"), [HIDDEN, kv], q8);
        b = t(b, &n("attn_v"), [HIDDEN, kv], q8);
        b = t(b, &n("attn_output"), [q, HIDDEN], q4);
        b = t(b, &n("ffn_gate"), [HIDDEN, FF], q4);
        b = t(b, &n("ffn_up"), [HIDDEN, FF], q4);
        b = t(b, &n("ffn_down"), [FF, HIDDEN], q8);
    }
    let name = if tied {
        "tiny-tied.gguf"
    } else {
        "tiny-q.gguf"
    };
    b.write_to(dir, name).unwrap()
}

#[test]
fn gguf_blocks_give_the_f32_models_logits_and_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    // The conversion goes to the cache: point it at the temporary directory (this test file
    // is its own process, and this its only test).
    std::env::set_var("INFERENCE_LAB_CACHE", tmp.path().join("cache"));
    for tied in [false, true] {
        check(&write_model(tmp.path(), tied), tied);
    }
}

fn check(gguf: &std::path::Path, tied: bool) {
    let gguf = gguf.to_path_buf();

    let from_gguf = load_model(&ModelSpec::Dir(gguf.clone()), false, 0).unwrap();
    let ModelWeights::Gguf { dir, .. } = &from_gguf.weights else {
        panic!("a .gguf loads as ModelWeights::Gguf")
    };
    let f32_dir = dir.clone();

    // Every linear layer, fused or not, and the untied LM head go to blocks on the CPU.
    let backend = CpuBackend::default();
    let config = from_gguf.config.clone();
    let mut weights = ModelWeights::Safetensors(f32_dir.clone())
        .load_into(&config, |t| {
            Ok(backend.upload(t.data, t.rows, t.cols, DType::F32)?)
        })
        .unwrap();
    let want = weights.layers[0].gate_up_proj.data.clone();
    let replaced = keep_gguf_blocks(&backend, &config, &mut weights, &gguf).unwrap();
    assert_eq!(replaced, 4 * LAYERS as usize + 1, "tied: {tied}");
    let layer = &weights.layers[1];
    assert!(layer.qkv_proj.blocks.is_some() && layer.down_proj.blocks.is_some());
    let embed = &weights.embed_tokens;
    assert!(!embed.data.is_empty(), "the lookup keeps f32");
    assert_eq!(embed.blocks.is_some(), tied, "blocks for the tied LM head");
    let got = backend.download(&weights.layers[0].gate_up_proj).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want), "blocks widen to the converted f32");

    let params = SamplingParams {
        ignore_eos: true,
        output_logits: true,
        ..SamplingParams::greedy(12)
    };
    let prompts = ["Hello, blocks!", "a", "The quick brown fox jumps over"];
    let run = |model| {
        let mut llm = LLM::new(model, Default::default()).unwrap();
        llm.generate(&prompts, &params).unwrap()
    };
    let blocks_out = run(from_gguf);
    let f32_out = run(load_model(&ModelSpec::Dir(f32_dir), false, 0).unwrap());
    let mut distinct = std::collections::HashSet::new();
    for (b, f) in blocks_out.iter().zip(&f32_out) {
        assert_eq!(b.token_ids, f.token_ids, "tied: {tied}");
        assert_eq!(b.logits.len(), f.logits.len());
        for (lb, lf) in b.logits.iter().zip(&f.logits) {
            assert_eq!(bits(lb), bits(lf), "logits differ");
        }
        distinct.extend(b.token_ids.iter().copied());
    }
    assert!(distinct.len() > 3, "the model's tokens vary: {distinct:?}");
}
