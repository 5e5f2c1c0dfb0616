//! The safetensors loader reads the layouts Hugging Face writes: one file or shards with an
//! index, and f32, f16 or bf16 on disk. Each variant of the tiny model must generate exactly
//! what the same values in plain f32 generate.

use std::path::Path;

use engine::config::EngineConfig;
use engine::model_source::{load_model, ModelSpec};
use engine::tiny_model::write_tiny_model_dir;
use engine::{SamplingParams, LLM};
use safetensors::{Dtype, SafeTensors};

mod common;
use common::scratch_dir::ScratchDir;

/// A fresh copy of the tiny model's directory (removed when dropped).
fn fresh_dir(name: &str) -> ScratchDir {
    let dir = ScratchDir::child("lab-weights-", name);
    write_tiny_model_dir(&dir, 0).unwrap();
    dir
}

fn generate(dir: &Path) -> Vec<Vec<u32>> {
    let model = load_model(&ModelSpec::Dir(dir.to_path_buf()), false, 0).unwrap();
    let mut llm = LLM::new(model, EngineConfig::default()).unwrap();
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(16)
    };
    let out = llm.generate(&["Hello there", "1 2 3"], &params).unwrap();
    out.into_iter().map(|o| o.token_ids).collect()
}

/// (name, shape, f32 values) of every tensor in `dir/model.safetensors`.
fn tensors(dir: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let vals = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, t.shape().to_vec(), vals)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn write(path: &Path, tensors: &[(String, Vec<usize>, Dtype, Vec<u8>)]) {
    let views = tensors.iter().map(|(n, s, d, b)| {
        (
            n.clone(),
            safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
        )
    });
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn sharded_checkpoint_with_index() {
    let dir = fresh_dir("sharded");
    let want = generate(&dir);
    let all = tensors(&dir);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let (a, b) = all.split_at(all.len() / 2);
    let mut map = serde_json::Map::new();
    for (i, part) in [a, b].iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let t: Vec<_> = part
            .iter()
            .map(|(n, s, v)| (n.clone(), s.clone(), Dtype::F32, f32_bytes(v)))
            .collect();
        write(&dir.join(&file), &t);
        for (n, _, _) in part.iter() {
            map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(generate(&dir), want);
}

/// Writes the model in a 16-bit dtype, and a twin in f32 holding the same rounded values.
fn check_16_bit(dtype: Dtype, round: impl Fn(f32) -> (f32, [u8; 2])) {
    let narrow = fresh_dir(&format!("{dtype:?}"));
    let wide = fresh_dir(&format!("{dtype:?}-f32"));
    let all = tensors(&narrow);
    let (mut n16, mut n32) = (vec![], vec![]);
    for (name, shape, vals) in &all {
        let (rounded, bytes): (Vec<f32>, Vec<[u8; 2]>) = vals.iter().map(|&x| round(x)).unzip();
        n16.push((name.clone(), shape.clone(), dtype, bytes.concat()));
        n32.push((name.clone(), shape.clone(), Dtype::F32, f32_bytes(&rounded)));
    }
    write(&narrow.join("model.safetensors"), &n16);
    write(&wide.join("model.safetensors"), &n32);
    assert_eq!(generate(&narrow), generate(&wide));
}

#[test]
fn f16_weights() {
    check_16_bit(Dtype::F16, |x| {
        let h = half::f16::from_f32(x);
        (h.to_f32(), h.to_le_bytes())
    });
}

#[test]
fn bf16_weights() {
    check_16_bit(Dtype::BF16, |x| {
        let h = half::bf16::from_f32(x);
        (h.to_f32(), h.to_le_bytes())
    });
}
