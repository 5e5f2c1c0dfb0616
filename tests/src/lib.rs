//! Helpers for the workspace's end-to-end tests: finding the real model and reading the
//! reference data that `scripts/make_reference.py` made with Hugging Face transformers.

use std::path::PathBuf;

use serde::Deserialize;

/// The converted SmolLM2 directory, if `lab fetch-model smollm2` has run (CI runs it first).
/// `INFERENCE_LAB_SMOLLM2_DIR` points elsewhere.
pub fn smollm2_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("INFERENCE_LAB_SMOLLM2_DIR") {
        return Some(PathBuf::from(dir));
    }
    use engine::model_loader::fetch_model::{cache_dir, is_complete, MODELS};
    let dir = cache_dir()
        .ok()
        .map(|c| c.join("models").join(MODELS[0].dir_name));
    match dir {
        Some(dir) if is_complete(&dir) => Some(dir),
        // `scripts/test-all.sh` fetches the model first and sets this: there, a test that would
        // quietly skip the real model is a failure of the run, not a pass.
        _ if std::env::var_os("INFERENCE_LAB_REQUIRE_SMOLLM2").is_some() => panic!(
            "SmolLM2 is required (INFERENCE_LAB_REQUIRE_SMOLLM2 is set) but not fetched: \
             run `lab fetch-model smollm2`"
        ),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenizerCase {
    pub text: String,
    pub ids: Vec<u32>,
    pub decoded: String,
}

#[derive(Debug, Deserialize)]
pub struct Generation {
    pub id: String,
    pub chat: bool,
    pub prompt: String,
    #[serde(default)]
    pub chat_user_message: Option<String>,
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    pub first_step_top_logits: Vec<(u32, f32)>,
    pub step_margins: Vec<f32>,
}

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub logits_tolerance: f32,
    pub new_tokens: usize,
    pub tokenizer_cases: Vec<TokenizerCase>,
    pub generations: Vec<Generation>,
}

/// `tests/data/smollm2_reference.json`.
pub fn reference() -> Reference {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/smollm2_reference.json");
    let text = std::fs::read_to_string(path).expect("reference data is committed");
    serde_json::from_str(&text).expect("reference data parses")
}
