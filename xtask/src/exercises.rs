//! The exercise check: every test of every exercise fails on the stub with the stage's
//! `todo!` message, and passes on the reference.

use std::path::Path;
use std::process::Command;

use crate::{Row, Workspace};

/// The two ways the stage crates are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// The learner's files as committed: `todo!()` bodies.
    Stub,
    /// `RUSTFLAGS="--cfg reference"`: every exercise is the engine's implementation.
    Reference,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::Stub => "stub",
            Config::Reference => "reference",
        }
    }
}

/// A `cargo` command for one configuration, run from the workspace root, with its own
/// target directory and RUSTFLAGS (any inherited flags are dropped, so both builds are
/// reproducible).
pub fn cargo(ws: &Workspace, config: Config) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ws.root)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS");
    match config {
        Config::Stub => cmd.env("CARGO_TARGET_DIR", &ws.stub_target),
        Config::Reference => cmd
            .env("CARGO_TARGET_DIR", &ws.reference_target)
            .env("RUSTFLAGS", "--cfg reference"),
    };
    cmd
}

/// The stage crates: `stages/*` with a Cargo.toml, sorted.
pub fn stages(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("stages"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.path().join("Cargo.toml").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The stage's test targets (`tests/*.rs`), one per exercise (plus any end-to-end file).
fn test_targets(root: &Path, stage: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("stages").join(stage).join("tests"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "rs"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Outcome of one test in libtest's output.
struct TestResult {
    name: String,
    passed: bool,
    /// The captured output of a failed test (its `---- name stdout ----` section).
    failure_output: String,
}

/// Runs one test target; `None` if it did not build or run (the output is printed).
fn run_tests(ws: &Workspace, config: Config, stage: &str, target: &str) -> Option<Vec<TestResult>> {
    println!("== {stage}/{target} ({})", config.name());
    let out = cargo(ws, config)
        .args([
            "test",
            "-p",
            stage,
            "--test",
            target,
            "--no-fail-fast",
            "--color",
            "never",
        ])
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("test result:") {
        eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(parse_libtest(&stdout))
}

/// Reads `test NAME ... ok|FAILED` lines and the `---- NAME stdout ----` sections.
fn parse_libtest(stdout: &str) -> Vec<TestResult> {
    let mut results: Vec<TestResult> = stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("test ")?;
            let (name, outcome) = rest.rsplit_once(" ... ")?;
            Some(TestResult {
                name: name.to_string(),
                passed: outcome.trim() == "ok",
                failure_output: String::new(),
            })
        })
        .collect();
    let mut current: Option<usize> = None;
    for line in stdout.lines() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            current = results.iter().position(|r| r.name == name);
        } else if line == "failures:" || line.starts_with("test result:") {
            current = None;
        } else if let Some(i) = current {
            results[i].failure_output.push_str(line);
            results[i].failure_output.push('\n');
        }
    }
    results
}

/// The stub and reference checks of every exercise of one stage, one row each.
pub fn check_stage(ws: &Workspace, stage: &str) -> Vec<Row> {
    let todo = format!("not yet implemented: {stage}:");
    let mut rows = Vec::new();
    for target in test_targets(&ws.root, stage) {
        let name = format!("{stage}/{target}");
        // Stub: every test fails, and its output names the todo!.
        let row = match run_tests(ws, Config::Stub, stage, &target) {
            None => Row::new(format!("{name} stub"), false, "did not build or run"),
            Some(tests) => {
                let wrong: Vec<&str> = tests
                    .iter()
                    .filter(|t| t.passed || !t.failure_output.contains(&todo))
                    .map(|t| t.name.as_str())
                    .collect();
                let ok = !tests.is_empty() && wrong.is_empty();
                let detail = if tests.is_empty() {
                    "no tests".to_string()
                } else if ok {
                    format!("{}/{} fail with `{todo} ...`", tests.len(), tests.len())
                } else {
                    format!("pass or fail without the todo!: {}", wrong.join(", "))
                };
                Row::new(format!("{name} stub"), ok, detail)
            }
        };
        rows.push(row);
        // Reference: every test passes.
        let row = match run_tests(ws, Config::Reference, stage, &target) {
            None => Row::new(format!("{name} reference"), false, "did not build or run"),
            Some(tests) => {
                let failed: Vec<&str> = tests
                    .iter()
                    .filter(|t| !t.passed)
                    .map(|t| t.name.as_str())
                    .collect();
                for t in tests.iter().filter(|t| !t.passed) {
                    eprintln!("---- {} ----\n{}", t.name, t.failure_output);
                }
                let ok = !tests.is_empty() && failed.is_empty();
                let detail = if tests.is_empty() {
                    "no tests".to_string()
                } else if ok {
                    format!("{}/{} pass", tests.len(), tests.len())
                } else {
                    format!("failed: {}", failed.join(", "))
                };
                Row::new(format!("{name} reference"), ok, detail)
            }
        };
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::parse_libtest;

    #[test]
    fn reads_outcomes_and_failure_output() {
        let out = "running 2 tests\n\
                   test a ... ok\n\
                   test b ... FAILED\n\
                   \n\
                   failures:\n\
                   \n\
                   ---- b stdout ----\n\
                   thread 'b' panicked at x.rs:1:1:\n\
                   not yet implemented: stage1: b\n\
                   \n\
                   failures:\n    b\n\
                   \n\
                   test result: FAILED. 1 passed; 1 failed\n";
        let r = parse_libtest(out);
        assert_eq!(r.len(), 2);
        assert!(r[0].passed && !r[1].passed);
        assert!(r[1]
            .failure_output
            .contains("not yet implemented: stage1: b"));
        assert!(r[0].failure_output.is_empty());
    }
}
