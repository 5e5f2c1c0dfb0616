//! `lab generate` on a prompts file whose prompts share a long prefix
//! (`engine/tests/prefix_caching_prompts.json`, the example the README points to): with the
//! prefix cache on (the default) `--stats` shows cached tokens, with
//! `--no-enable-prefix-caching` none, and the tokens are the same both ways.

use std::process::Command;

const PROMPTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/prefix_caching_prompts.json"
);

/// Runs `lab generate --json --stats` on the tiny model; returns the token ids of each
/// prompt and the (cached, queried) tokens of the stats' last line.
fn generate(extra: &[&str]) -> (Vec<Vec<u64>>, (usize, usize)) {
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["generate", "--model", "tiny", "--prompts-file", PROMPTS])
        .args([
            "--max-tokens",
            "6",
            "--json",
            "--stats",
            "--block-size",
            "16",
        ])
        .args(extra)
        .output()
        .expect("lab runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lab failed: {stderr}");
    // stdout is the --json array alone; the stats go to stderr.
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let tokens = json
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let ids = o["token_ids"].as_array().unwrap();
            ids.iter().map(|t| t.as_u64().unwrap()).collect()
        })
        .collect();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("prefix cache: "))
        .unwrap_or_else(|| panic!("no prefix cache line in --stats: {stderr}"));
    // "prefix cache: H of Q queried tokens cached (P%), E blocks evicted"
    let words: Vec<&str> = line.split_whitespace().collect();
    let (hit, queried) = (words[2].parse().unwrap(), words[4].parse().unwrap());
    (tokens, (hit, queried))
}

#[test]
fn a_shared_prefix_file_hits_the_cache_and_gives_the_same_tokens_as_without() {
    let (on, (hit, queried)) = generate(&[]);
    let (off, (no_hit, no_queried)) = generate(&["--no-enable-prefix-caching"]);
    assert_eq!(on, off, "the prefix cache changed the tokens");
    assert_eq!((no_hit, no_queried), (0, 0), "off means no lookups");
    // Five prompts of 276, 276, 286, 281 and 69 bytes (the tiny model's tokens): the first
    // four share 254 bytes, so the three after the first hit at least 15 blocks of 16 each
    // (in the same step as the first computes them); the fifth misses.
    assert_eq!(
        queried,
        276 + 276 + 286 + 281 + 69,
        "every prompt is looked up"
    );
    assert!(hit >= 3 * 15 * 16, "{hit} cached tokens");
    let (again, (hit_again, _)) =
        generate(&["--no-enable-prefix-caching", "--enable-prefix-caching"]);
    assert_eq!((again, hit_again), (on, hit), "the last flag wins");
}
