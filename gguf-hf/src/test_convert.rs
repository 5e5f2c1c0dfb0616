//! Tests of the GGUF → Hugging Face conversion: a tiny synthetic Llama built in the test, and
//! (when present in the cache) the real SmolLM2 conversion.

use std::path::Path;

use half::f16;
use safetensors::SafeTensors;
use serde_json::Value;

use super::gguf_to_hf::{convert_gguf_to_hf, ConvertError, HF_FILES};
use super::test_gguf::GgufBuilder;

const HIDDEN: u64 = 64;
const HEADS: u64 = 2;
const KV_HEADS: u64 = 1;
const HEAD_DIM: u64 = 32;
const FF: u64 = 64;

/// GPT-2's byte → printable character table (`bytes_to_unicode`): printable bytes stand for
/// themselves, the rest are shifted past 255 in order (so a space is `Ġ`).
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

/// A Q8_0 tensor whose element k of every row is `(k % 7) as i8 - 3`, scale 0.5.
fn q8_0(n_elements: u64) -> Vec<u8> {
    let block: Vec<u8> = [
        f16::from_f32(0.5).to_le_bytes().to_vec(),
        (0..32).map(|k| ((k % 7) as i8 - 3) as u8).collect(),
    ]
    .concat();
    block.repeat((n_elements / 32) as usize)
}

/// A one-layer Llama GGUF whose q projection row r holds the value r everywhere.
pub(crate) fn tiny_llama(pre: &str) -> GgufBuilder {
    tiny_llama_with_k(pre, q8_0(HIDDEN * KV_HEADS * HEAD_DIM))
}

/// [`tiny_llama`] with `k_bytes` as its Q8_0 k projection.
fn tiny_llama_with_k(pre: &str, k_bytes: Vec<u8>) -> GgufBuilder {
    let mut tokens = vec![
        "<|endoftext|>".to_string(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    tokens.extend(byte_level_alphabet());
    tokens.extend(["ĠĠ", "12", "he"].map(String::from));
    let vocab = tokens.len() as u64;
    let mut types = vec![1; tokens.len()];
    types[..3].fill(3);
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let ones = |n| vec![1.0f32; n as usize];
    let q_rows = HEADS * HEAD_DIM;
    let q: Vec<f32> = (0..q_rows)
        .flat_map(|r| vec![r as f32; HIDDEN as usize])
        .collect();
    let b = GgufBuilder::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", 1)
        .u32("llama.context_length", 128)
        .u32("llama.embedding_length", HIDDEN as u32)
        .u32("llama.feed_forward_length", FF as u32)
        .u32("llama.attention.head_count", HEADS as u32)
        .u32("llama.attention.head_count_kv", KV_HEADS as u32)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .u32("llama.rope.dimension_count", HEAD_DIM as u32)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", pre)
        .str_array("tokenizer.ggml.tokens", &token_refs)
        .i32_array("tokenizer.ggml.token_type", &types)
        .str_array("tokenizer.ggml.merges", &["Ġ Ġ", "1 2", "h e"])
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2)
        .bool("tokenizer.ggml.add_bos_token", false)
        .str("tokenizer.chat_template", "{{ messages }}");
    b.tensor(
        "token_embd.weight",
        &[HIDDEN, vocab],
        8,
        q8_0(HIDDEN * vocab),
    )
    .tensor_f32("output_norm.weight", &[HIDDEN], &ones(HIDDEN))
    .tensor_f32("blk.0.attn_norm.weight", &[HIDDEN], &ones(HIDDEN))
    .tensor_f32("blk.0.ffn_norm.weight", &[HIDDEN], &ones(HIDDEN))
    .tensor_f32("blk.0.attn_q.weight", &[HIDDEN, q_rows], &q)
    .tensor(
        "blk.0.attn_k.weight",
        &[HIDDEN, KV_HEADS * HEAD_DIM],
        8,
        k_bytes,
    )
    .tensor(
        "blk.0.attn_v.weight",
        &[HIDDEN, KV_HEADS * HEAD_DIM],
        8,
        q8_0(HIDDEN * KV_HEADS * HEAD_DIM),
    )
    .tensor(
        "blk.0.attn_output.weight",
        &[q_rows, HIDDEN],
        8,
        q8_0(q_rows * HIDDEN),
    )
    .tensor("blk.0.ffn_gate.weight", &[HIDDEN, FF], 8, q8_0(HIDDEN * FF))
    .tensor("blk.0.ffn_up.weight", &[HIDDEN, FF], 8, q8_0(HIDDEN * FF))
    .tensor("blk.0.ffn_down.weight", &[FF, HIDDEN], 8, q8_0(FF * HIDDEN))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The blocks handed to an engine that computes from them dequantize to exactly the f32 tensor
/// the converter writes, q/k un-permuted included (k's rows differ: row r has scale r + 1).
#[test]
fn blocks_in_hf_row_order_dequantize_to_the_converted_tensor() {
    use super::dequant::{dequantize, GgmlType};
    use super::gguf::GgufFile;
    use super::gguf_to_hf::LlamaParams;
    use super::hf_tensors::plan;
    let rows = (KV_HEADS * HEAD_DIM) as usize;
    let k_bytes: Vec<u8> = (0..rows)
        .flat_map(|r| {
            let block = [
                f16::from_f32(r as f32 + 1.0).to_le_bytes().to_vec(),
                (0..32).map(|k| ((k % 5) as i8 - 2) as u8).collect(),
            ]
            .concat();
            block.repeat(HIDDEN as usize / 32)
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tiny_llama_with_k("smollm", k_bytes)
        .write_to(tmp.path(), "tiny.gguf")
        .unwrap();
    let file = GgufFile::open(&path).unwrap();
    let params = LlamaParams::from_gguf(&file.header).unwrap();
    let mut quantized = 0;
    for t in plan(&file, &params).unwrap() {
        let want = t.to_f32().unwrap();
        match t.blocks().unwrap() {
            Some((ty, bytes)) => {
                assert_eq!(ty, GgmlType::Q8_0, "{}", t.hf_name);
                let mut got = vec![f32::NAN; want.len()];
                dequantize(ty, &bytes, &mut got);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{}", t.hf_name);
                quantized += 1;
            }
            None => assert!(t.hf_name.ends_with("norm.weight") || t.hf_name.contains("q_proj")),
        }
    }
    assert_eq!(quantized, 7, "embedding, k, v, o, gate, up, down");
}

#[test]
fn converts_a_tiny_llama() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tiny_llama("smollm")
        .write_to(tmp.path(), "tiny.gguf")
        .unwrap();
    let dest = tmp.path().join("out/tiny");
    convert_gguf_to_hf(&gguf, &dest).unwrap();
    assert!(HF_FILES.iter().all(|f| dest.join(f).is_file()));

    let config = read_json(&dest.join("config.json"));
    assert_eq!(config["num_key_value_heads"], 1);
    assert_eq!(config["head_dim"], 32);
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["bos_token_id"], 1);

    let bytes = std::fs::read(dest.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 2 + 9, "no lm_head when tied");
    let q = st.tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(q.shape(), [64, 64]);
    let row = |r: usize| f32::from_le_bytes(q.data()[r * 64 * 4..][..4].try_into().unwrap());
    // HF row t·16 + i of a head came from GGUF row 2i + t.
    assert_eq!(
        [row(0), row(1), row(16), row(17), row(32), row(48)],
        [0., 2., 1., 3., 32., 33.]
    );
    let embed = st.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(embed.shape()[1], 64);
    let first: Vec<f32> = embed.data()[..16]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(first, [-1.5, -1.0, -0.5, 0.0]);

    let tok = tokenizers::Tokenizer::from_file(dest.join("tokenizer.json")).unwrap();
    let ids = |text: &str| tok.encode(text, true).unwrap().get_ids().to_vec();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    assert_eq!(
        ids("<|im_start|>he<|im_end|>"),
        [1, id("he"), 2],
        "control tokens match whole"
    );
    assert_eq!(
        ids("12"),
        [id("1"), id("2")],
        "Digits splits before the `1 2` merge can apply"
    );
    assert_eq!(ids("a  2"), [id("a"), id("ĠĠ"), id("2")]);
    assert_eq!(tok.decode(&ids("a  2\n"), false).unwrap(), "a  2\n");
    let tc = read_json(&dest.join("tokenizer_config.json"));
    assert_eq!(
        (tc["bos_token"].as_str(), tc["add_bos_token"].as_bool()),
        (Some("<|im_start|>"), Some(false))
    );
}

#[test]
fn gpt2_pre_tokenizer_lets_digits_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("m");
    convert_gguf_to_hf(
        &tiny_llama("gpt2").write_to(tmp.path(), "t.gguf").unwrap(),
        &dest,
    )
    .unwrap();
    let tok = tokenizers::Tokenizer::from_file(dest.join("tokenizer.json")).unwrap();
    assert_eq!(
        tok.encode("12", true).unwrap().get_ids(),
        [tok.token_to_id("12").unwrap()]
    );
}

/// Failures name the problem and leave neither the destination nor a partial directory.
#[test]
fn failures_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            tiny_llama("smollm").tensor_f32("blk.0.attn_q.bias", &[64], &[0.; 64]),
            "attn_q.bias",
        ),
        (tiny_llama("llama-bpe"), "pre-tokenizer `llama-bpe`"),
        (tiny_llama("smollm").u32("llama.block_count", 2), "twice"),
    ];
    for (i, (builder, expected)) in cases.into_iter().enumerate() {
        let gguf = builder.write_to(tmp.path(), &format!("{i}.gguf")).unwrap();
        let err = convert_gguf_to_hf(&gguf, &tmp.path().join("out")).unwrap_err();
        assert!(err.to_string().contains(expected), "case {i}: {err}");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter().all(|n| n.to_string_lossy().ends_with(".gguf")),
        "left behind: {left:?}"
    );

    let gguf = tiny_llama("smollm")
        .write_to(tmp.path(), "ok.gguf")
        .unwrap();
    std::fs::create_dir(tmp.path().join("exists")).unwrap();
    let err = convert_gguf_to_hf(&gguf, &tmp.path().join("exists")).unwrap_err();
    assert!(matches!(err, ConvertError::DestinationExists(_)), "{err}");
}

/// The real SmolLM2 conversion, if `lab fetch-model smollm2` has been run on this machine.
#[test]
fn real_smollm2_tokenizer_if_present() {
    let Ok(cache) = super::fetch_model::cache_dir() else {
        return;
    };
    let dir = cache.join("models/SmolLM2-135M-Instruct");
    if !super::fetch_model::is_complete(&dir) {
        eprintln!(
            "skipped: {} not found (run `lab fetch-model smollm2`)",
            dir.display()
        );
        return;
    }
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let ids = |text: &str| tok.encode(text, true).unwrap().get_ids().to_vec();
    assert_eq!(ids("a  2"), [81, 256, 34]);
    assert_eq!(ids("List:\n\n1."), [6106, 42, 1116, 33, 30]);
    assert_eq!(
        ids("<|im_start|>user\nhi<|im_end|>"),
        [1, 4093, 198, 6004, 2]
    );
    let config = read_json(&dir.join("config.json"));
    assert_eq!(
        (
            config["num_attention_heads"].as_u64(),
            config["vocab_size"].as_u64()
        ),
        (Some(9), Some(49152))
    );
}
