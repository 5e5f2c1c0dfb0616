//! `lab plan` as a user runs it: the table and its recommendation, the `--json` contract, and
//! one-line errors with a non-zero exit for bad input (never a panic).

mod common;
use common::lab_cli::lab;

fn plan(model: &str, gpus: &str, memory: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "plan",
        "--model",
        model,
        "--gpus",
        gpus,
        "--gpu-memory",
        memory,
    ];
    args.extend_from_slice(&["--interconnect", "nvlink", "--goal", "latency"]);
    args.extend_from_slice(extra);
    lab(&args)
}

fn expect_error(model: &str, gpus: &str, memory: &str, needle: &str) {
    let (code, stdout, stderr) = plan(model, gpus, memory, &[]);
    assert_ne!(code, 0, "expected failure for {needle}; stdout: {stdout}");
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
fn the_table_marks_the_recommendation_and_gives_reasons() {
    let (code, stdout, stderr) = plan("llama-2-70b", "8", "141", &[]);
    assert_eq!(code, 0, "{stderr}");
    let marked: Vec<_> = stdout.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(marked.len(), 1, "{stdout}");
    assert!(marked[0].contains("TP=8×PP=1"), "{stdout}");
    assert!(
        stdout.contains("Recommended for latency: TP=8×PP=1"),
        "{stdout}"
    );
    assert!(stdout.contains("nvlink domain"), "{stdout}");
    // Every split with TP dividing 64 heads and TP·PP ≤ 8: 8 + 4 + 2 + 1 rows.
    let rows = stdout
        .lines()
        .filter(|l| l.starts_with("  TP=") || l.starts_with("* TP="));
    assert_eq!(rows.count(), 15, "{stdout}");
}

#[test]
fn json_names_the_recommendation_and_every_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/llama-3-8b.json");
    std::fs::copy(cfg, dir.path().join("config.json")).unwrap();
    let model = dir.path().to_str().unwrap();
    let extra = ["--json", "--goal", "throughput"];
    let (code, stdout, stderr) = lab(&[
        "plan",
        "--model",
        model,
        "--gpus",
        "4",
        "--gpu-memory",
        "80",
        "--interconnect",
        "pcie",
        extra[0],
        extra[1],
        extra[2],
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is one JSON object");
    assert_eq!(v["goal"], "throughput");
    assert_eq!(v["interconnect"], "pcie");
    let cands = v["candidates"].as_array().unwrap();
    // TP ∈ {1, 2, 4} (32 heads, 8 KV heads), PP up to 4 / TP: 4 + 2 + 1.
    assert_eq!(cands.len(), 7);
    let r = &v["recommended"];
    assert!(cands
        .iter()
        .any(|c| c["tp"] == r["tp"] && c["pp"] == r["pp"]));
    assert!(!v["reasons"].as_array().unwrap().is_empty());
    // A config file works as well as its directory.
    let (code, _, stderr) = plan(cfg, "2", "80", &["--json"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    expect_error("llama-2-70b", "0", "141", "--gpus must be at least 1");
    expect_error("llama-2-70b", "2", "24", "does not fit");
    expect_error("llama-2-70b", "8", "0", "--gpu-memory");
    expect_error("llama-2-70b", "8", "nan", "--gpu-memory");
    expect_error("no-such-model", "8", "80", "no-such-model");
    // Weights fit in 19.4 GB × 0.9, one sequence of 4096 tokens' KV does not.
    expect_error("llama-3-8b", "1", "19.4", "less than one sequence");
    let (code, _, stderr) = plan("llama-2-70b", "8", "80", &["--interconnect", "ib"]);
    assert_eq!(code, 2, "clap rejects an unknown interconnect: {stderr}");
}
