//! `lab serve` with the real SmolLM2-135M-Instruct: 16 clients streaming at once each get
//! exactly `lab generate`'s tokens and text (text that real tokens make: multi-token words,
//! spaces, end-of-sequence). Skipped when the model is not fetched, unless
//! INFERENCE_LAB_REQUIRE_SMOLLM2 is set (as `scripts/test-all.sh` does); INFERENCE_LAB_SMOLLM2_DIR
//! names another copy.

mod serve_common;

use std::path::PathBuf;

use engine::model_loader::fetch_model::{cache_dir, is_complete, MODELS};
use serde_json::json;
use serve_common::{ids, lab_generate_model, stream, Server};

fn smollm2_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("INFERENCE_LAB_SMOLLM2_DIR") {
        return Some(PathBuf::from(dir));
    }
    let dir = cache_dir()
        .ok()
        .map(|c| c.join("models").join(MODELS[0].dir_name));
    match dir {
        Some(dir) if is_complete(&dir) => Some(dir),
        _ if std::env::var_os("INFERENCE_LAB_REQUIRE_SMOLLM2").is_some() => {
            panic!("INFERENCE_LAB_REQUIRE_SMOLLM2 is set but SmolLM2 is not fetched")
        }
        _ => None,
    }
}

#[test]
fn sixteen_concurrent_streams_on_smollm2_equal_lab_generate() {
    let Some(dir) = smollm2_dir() else {
        eprintln!("skipping: SmolLM2 is not fetched (run `lab fetch-model smollm2`)");
        return;
    };
    let dir = dir.to_str().expect("a UTF-8 path");
    let prompts: Vec<String> = (0..16)
        .map(|i| format!("Question {i}: what is {i} plus {}? Answer:", i * 3 + 1))
        .collect();
    let mut args = vec!["--max-tokens", "16", "--temperature", "0"];
    for p in &prompts {
        args.extend(["--prompt", p.as_str()]);
    }
    let expected = lab_generate_model(dir, &args);
    let server = Server::start_model(dir, &[]);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let server = &server;
                s.spawn(move || {
                    let body = json!({"prompt": p, "max_tokens": 16, "temperature": 0,
                                      "stream": true, "return_token_ids": true});
                    stream(server, "/v1/completions", &body)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (i, (got, want)) in results.iter().zip(&expected).enumerate() {
        assert!(got.done, "request {i} ended with [DONE]");
        assert_eq!(got.token_ids[0], ids(&want["token_ids"]), "request {i}");
        assert_eq!(got.text(0), want["text"].as_str().unwrap(), "request {i}");
        assert_eq!(
            got.finish_reasons[0].as_deref(),
            want["finish_reason"].as_str(),
            "request {i}"
        );
    }
    server.wait_idle();
}
