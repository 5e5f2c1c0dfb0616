//! `lab generate --preemption-mode swap --num-kv-blocks <small> --stats`: the same tokens as
//! an unconstrained run, the swaps shown on stderr, stdout still the `--json` array; the
//! scheduling fields of `--prompts-file` objects; one-line errors for bad flags.

mod common;
use common::lab_cli::lab;
use common::scratch_dir::ScratchDir;

/// A prompts file holding `json`, removed when dropped.
fn prompts_file(name: &str, json: &str) -> ScratchDir {
    let path = ScratchDir::child("lab-preempt-", name);
    std::fs::write(&path, json).unwrap();
    path
}

/// Four prompts of 6 token ids, each with a priority and a tenant.
const PROMPTS: &str = r#"[
  {"prompt": [3, 40, 77, 114, 151, 188], "priority": 1, "tenant": "a"},
  {"prompt": [40, 77, 114, 151, 188, 225], "priority": 0, "tenant": "b"},
  [77, 114, 151, 188, 225, 22],
  {"prompt": [114, 151, 188, 225, 22, 59], "tenant": "a", "deadline_ms": 1}
]"#;

fn token_ids(json: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(json).expect("stdout is the JSON array");
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| o["token_ids"].clone())
        .collect()
}

fn generate(file: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "generate",
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--prompts-file",
        file,
        "--max-tokens",
        "10",
        "--ignore-eos",
        "--block-size",
        "4",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = lab(&args);
    assert_eq!(code, 0, "{stderr}");
    (stdout, stderr)
}

#[test]
fn swap_on_a_small_cache_gives_the_unconstrained_tokens_and_shows_the_swaps() {
    let file = prompts_file("swap.json", PROMPTS);
    let (roomy, _) = generate(file.to_str().unwrap(), &[]);
    for policy in ["fcfs", "priority", "fair", "qos"] {
        let mut flags = vec![
            "--preemption-mode",
            "swap",
            "--swap-space",
            "0.01",
            "--num-kv-blocks",
            "8",
            "--scheduling-policy",
            policy,
            "--stats",
        ];
        if matches!(policy, "fair" | "qos") {
            flags.extend(["--tenant-weight", "a=2"]);
        }
        let (stdout, stderr) = generate(file.to_str().unwrap(), &flags);
        assert_eq!(token_ids(&stdout), token_ids(&roomy), "{policy}");
        // The table's header, then the totals line with a swap count above 0.
        assert!(stderr.contains("swap_out"), "{stderr}");
        let totals = stderr.lines().last().unwrap();
        let swapped: usize = totals
            .split(" swapped out")
            .next()
            .and_then(|t| t.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no swap count in {totals:?}"));
        assert!(swapped > 0, "{policy}: no swaps: {stderr}");
    }
}

#[test]
fn bad_scheduling_flags_are_one_line_errors() {
    let file = prompts_file("bad.json", PROMPTS);
    for (extra, needle) in [
        (vec!["--preemption-mode", "sideways"], "preemption-mode"),
        (vec!["--swap-space=-1"], "swap-space"),
        (vec!["--scheduling-policy", "lottery"], "scheduling-policy"),
        (vec!["--tenant-weight", "a=0"], "positive"),
        (vec!["--tenant-weight", "a=2"], "applies to"),
        (vec!["--tenant-weight", "a"], "NAME=WEIGHT"),
    ] {
        let mut args = vec![
            "generate",
            "--model",
            "tiny",
            "--prompts-file",
            file.to_str().unwrap(),
        ];
        args.extend_from_slice(&extra);
        let (code, _, stderr) = lab(&args);
        assert_ne!(code, 0, "{extra:?}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
    let file = prompts_file("nested.json", r#"[{"prompt": {"prompt": "x"}}]"#);
    let (code, _, stderr) = lab(&[
        "generate",
        "--model",
        "tiny",
        "--prompts-file",
        file.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("string or token ids"), "{stderr}");
}
