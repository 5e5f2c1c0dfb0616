//! `lab` as a user runs it: output contract of `generate --json`, and one-line errors with a
//! non-zero exit for every kind of bad input (never a panic).

use std::path::Path;

use engine::tiny_model::write_tiny_model_dir;

mod common;
use common::lab_cli::lab;
use common::scratch_dir::ScratchDir;

/// A fresh copy of the tiny model's directory, to break in one way (removed when dropped).
fn model_dir(name: &str) -> ScratchDir {
    let dir = ScratchDir::child("lab-cli-", name);
    write_tiny_model_dir(&dir, 0).unwrap();
    dir
}

/// Runs `lab generate` on `dir` and expects exactly one line of error naming `needle`.
fn expect_error(dir: &Path, extra: &[&str], needle: &str) {
    let mut args = vec![
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "hello",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = lab(&args);
    assert_ne!(code, 0, "expected failure for {needle}; stdout: {stdout}");
    assert_ne!(code, 101, "lab panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "lab panicked: {stderr}");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "error should mention {needle:?}: {stderr}"
    );
}

#[test]
fn generate_json_contract() {
    let (code, stdout, stderr) = lab(&[
        "generate",
        "--model",
        "tiny",
        "--prompt",
        "Hello",
        "--prompt",
        "Bye",
        "--max-tokens",
        "5",
        "--temperature",
        "0",
        "--ignore-eos",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is one JSON array");
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for (o, prompt) in arr.iter().zip(["Hello", "Bye"]) {
        assert_eq!(o["prompt"], prompt, "input order kept");
        assert_eq!(o["token_ids"].as_array().unwrap().len(), 5);
        assert_eq!(
            o["prompt_token_ids"].as_array().unwrap().len(),
            prompt.len(),
            "one id per byte"
        );
        assert_eq!(o["finish_reason"], "length");
        assert!(o["text"].is_string());
    }
}

#[test]
fn model_directory_equals_model_in_code() {
    let dir = model_dir("same");
    let run = |model: &str| {
        lab(&[
            "generate",
            "--model",
            model,
            "--prompt",
            "abc",
            "--max-tokens",
            "8",
            "--ignore-eos",
            "--json",
        ])
        .1
    };
    assert_eq!(
        run(dir.to_str().unwrap()).replace(dir.to_str().unwrap(), ""),
        run("tiny")
    );
}

#[test]
fn truncated_safetensors() {
    let dir = model_dir("trunc");
    let f = dir.join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    expect_error(&dir, &[], "model.safetensors");
}

#[test]
fn garbled_safetensors() {
    let dir = model_dir("garbled");
    std::fs::write(
        dir.join("model.safetensors"),
        b"\xff\xff\xff\xff\x00\x00\x00\x00garbage",
    )
    .unwrap();
    expect_error(&dir, &[], "not a valid safetensors file");
}

/// Rewrites the safetensors header through `edit`, keeping the data.
fn edit_header(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let f = dir.join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_string(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text.as_bytes());
    out.extend(&bytes[8 + n..]);
    std::fs::write(&f, out).unwrap();
}

#[test]
fn missing_tensor() {
    let dir = model_dir("missing");
    // Renamed, not removed: the data offsets stay contiguous, as the format requires.
    edit_header(&dir, |h| {
        let t = h.remove("model.layers.1.mlp.up_proj.weight").unwrap();
        h.insert("model.layers.1.mlp.up_proj.weight_renamed".into(), t);
    });
    expect_error(&dir, &[], "model.layers.1.mlp.up_proj.weight");
}

#[test]
fn wrong_shape() {
    let dir = model_dir("shape");
    // Same byte count, transposed shape: only a shape check can tell.
    edit_header(&dir, |h| {
        h["model.layers.0.mlp.down_proj.weight"]["shape"] = serde_json::json!([128, 64]);
    });
    expect_error(&dir, &[], "shape");
}

#[test]
fn wrong_dtype() {
    let dir = model_dir("dtype");
    // I32 has 4 bytes per element like F32, so the file stays consistent.
    edit_header(&dir, |h| {
        h["model.norm.weight"]["dtype"] = serde_json::json!("I32");
    });
    expect_error(&dir, &[], "dtype");
}

#[test]
fn bad_config_json() {
    let dir = model_dir("config");
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    expect_error(&dir, &[], "config.json");
    let text = std::fs::read_to_string(model_dir("config2").join("config.json")).unwrap();
    let dir = model_dir("config3");
    std::fs::write(
        dir.join("config.json"),
        text.replace("\"num_hidden_layers\": 2,", ""),
    )
    .unwrap();
    expect_error(&dir, &[], "num_hidden_layers");
}

#[test]
fn bad_tokenizer_json() {
    let dir = model_dir("tokenizer");
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 42}").unwrap();
    expect_error(&dir, &[], "tokenizer.json");
}

#[test]
fn bad_requests_and_sampling_values() {
    let dir = model_dir("requests");
    let d = dir.to_str().unwrap();
    let (code, _, stderr) = lab(&["generate", "--model", d, "--prompt", ""]);
    assert_ne!(code, 0);
    assert!(stderr.contains("empty"), "{stderr}");
    let long = "x".repeat(100);
    let (code, _, stderr) = lab(&[
        "generate",
        "--model",
        d,
        "--prompt",
        &long,
        "--num-kv-blocks",
        "4",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("the prompt has 100 tokens"), "{stderr}");
    for (flag, value, needle) in [
        ("--temperature", "-1", "temperature"),
        ("--temperature", "nan", "temperature"),
        ("--top-p", "0", "top_p"),
        ("--top-p", "1.5", "top_p"),
        ("--top-k", "0", "top_k"),
        ("--max-tokens", "0", "max_tokens"),
        ("--block-size", "0", "block-size"),
        ("--num-kv-blocks", "0", "num-kv-blocks"),
    ] {
        expect_error(&dir, &[&format!("{flag}={value}")], needle);
    }
}

/// `--async-scheduling` and `--no-async-scheduling`: the last one given wins (as the prefix
/// caching pair); asked for with several ranks it is a one-line error, turned off (or left to
/// its default, off with ranks) the same run works.
#[test]
fn async_scheduling_flags_last_one_wins() {
    let dir = model_dir("async");
    let tp2 = ["--tp", "2", "--max-tokens", "2"];
    expect_error(
        &dir,
        &[&tp2[..], &["--no-async-scheduling", "--async-scheduling"]].concat(),
        "--async-scheduling",
    );
    let d = dir.to_str().unwrap();
    let base = ["generate", "--model", d, "--prompt", "hello"];
    for extra in [&["--async-scheduling", "--no-async-scheduling"][..], &[]] {
        let (code, _, stderr) = lab(&[&base[..], &tp2, extra].concat());
        assert_eq!(code, 0, "{extra:?}: {stderr}");
    }
}
