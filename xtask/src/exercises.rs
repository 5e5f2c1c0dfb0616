//! The exercise check: every test of every exercise fails on the stub with the stage's
//! `todo!` message, and passes on the reference.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::{Row, Workspace};

/// The ways a stage crate is built: its Cargo features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// The learner's files as committed: `todo!()` bodies.
    Stub,
    /// `--features reference`: every exercise is the engine's implementation.
    Reference,
    /// `--features mutants`: the reference, except that the functions of `mutants/` switch
    /// to a wrong version when `INFERENCE_LAB_MUTANT` names one of theirs.
    Mutants,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::Stub => "stub",
            Config::Reference => "reference",
            Config::Mutants => "mutants",
        }
    }

    /// The stage crate's feature, if any.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Config::Stub => None,
            Config::Reference => Some("reference"),
            Config::Mutants => Some("mutants"),
        }
    }
}

/// A `cargo` command run from the workspace root, with no mutant selected.
pub fn cargo(ws: &Workspace) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ws.root).env_remove(crate::mutants::ENV);
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
pub fn test_targets(root: &Path, stage: &str) -> Vec<String> {
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
pub struct TestResult {
    pub name: String,
    pub passed: bool,
    /// The captured output of a failed test (its `---- name stdout ----` section).
    pub failure_output: String,
}

/// One `cargo test` of one test target: the tests' outcomes, `None` if it did not build or
/// run (its output is then printed), and its wall time.
pub struct TestRun {
    pub tests: Option<Vec<TestResult>>,
    pub seconds: f64,
}

/// Runs one test target of a stage in one configuration, with `mutant` selected if given.
///
/// Where failing is the expected outcome (stubs, mutants), proptest does not shrink: the
/// first failing input is enough, and shrinking a failure of the whole engine is slow.
pub fn run_tests(
    ws: &Workspace,
    config: Config,
    stage: &str,
    target: &str,
    mutant: Option<&str>,
) -> TestRun {
    let mut cmd = cargo(ws);
    cmd.args(["test", "-p", stage]);
    if let Some(feature) = config.feature() {
        cmd.args(["--features", feature]);
    }
    cmd.args(["--test", target, "--no-fail-fast", "--color", "never"]);
    if let Some(name) = mutant {
        cmd.env(crate::mutants::ENV, name);
    }
    if config == Config::Stub || mutant.is_some() {
        cmd.env("PROPTEST_MAX_SHRINK_ITERS", "0");
    }
    let label = match mutant {
        Some(name) => format!("mutant {name}"),
        None => config.name().to_string(),
    };
    println!("== {stage}/{target} ({label})");
    let start = Instant::now();
    let out = cmd.output().expect("cargo runs");
    let seconds = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("test result:") {
        eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        return TestRun {
            tests: None,
            seconds,
        };
    }
    TestRun {
        tests: Some(parse_libtest(&stdout)),
        seconds,
    }
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

/// The stub check of every exercise of one stage, one row each: every test fails, and its
/// output names the stage's `todo!`.
pub fn check_stubs(ws: &Workspace, stage: &str) -> Vec<Row> {
    let todo = format!("not yet implemented: {stage}:");
    test_targets(&ws.root, stage)
        .into_iter()
        .map(|target| {
            let name = format!("{stage}/{target} stub");
            let run = run_tests(ws, Config::Stub, stage, &target, None);
            let row = match run.tests {
                None => Row::new(name, false, "did not build or run"),
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
                    Row::new(name, ok, detail)
                }
            };
            row.timed(run.seconds)
        })
        .collect()
}

/// The reference check of every exercise of one stage, one row each: every test passes.
pub fn check_reference(ws: &Workspace, stage: &str) -> Vec<Row> {
    test_targets(&ws.root, stage)
        .into_iter()
        .map(|target| {
            let name = format!("{stage}/{target} reference");
            let run = run_tests(ws, Config::Reference, stage, &target, None);
            let row = match run.tests {
                None => Row::new(name, false, "did not build or run"),
                Some(tests) => {
                    let failed = failed_tests(&tests);
                    let ok = !tests.is_empty() && failed.is_empty();
                    let detail = if tests.is_empty() {
                        "no tests".to_string()
                    } else if ok {
                        format!("{}/{} pass", tests.len(), tests.len())
                    } else {
                        format!("failed: {}", failed.join(", "))
                    };
                    Row::new(name, ok, detail)
                }
            };
            row.timed(run.seconds)
        })
        .collect()
}

/// The names of the failed tests; their output is printed (a reference that fails is a bug
/// to read about).
pub fn failed_tests(tests: &[TestResult]) -> Vec<&str> {
    tests
        .iter()
        .filter(|t| !t.passed)
        .map(|t| {
            eprintln!("---- {} ----\n{}", t.name, t.failure_output);
            t.name.as_str()
        })
        .collect()
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
