//! The mutants check: plausible wrong solutions, kept beside the reference, each of which
//! must make its exercise's tests fail (as mutation testing does to a test suite).
//!
//! A stage registers its mutants in `stages/stageN/mutants/mutants.toml`:
//!
//! ```toml
//! [[mutant]]
//! name = "slot_mapping_last_block"  # unique in the stage; the value of INFERENCE_LAB_MUTANT
//! test = "slot_mapping"             # the test target tests/<test>.rs that must fail with it
//! what = "past the end of the table, falls back to the last block"
//! ```
//!
//! and switches them on in `mutants/*.rs` with `if active("slot_mapping_last_block") { .. }`.
//! Built with `--features mutants`, the stage is the reference until the environment variable
//! names a mutant. For each stage the check requires:
//!
//! - the registry parses, names are unique, each name appears in `mutants/*.rs` (a typo would
//!   otherwise select nothing and "survive") and every `active("..")` there is registered;
//! - with no mutant selected, every test target passes (the mutants build is the reference);
//! - with each mutant selected, its test target builds and at least one of its tests fails.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::exercises::{failed_tests, run_tests, test_targets, Config};
use crate::{Row, Workspace};

/// The environment variable that selects a mutant at run time.
pub const ENV: &str = "INFERENCE_LAB_MUTANT";

/// How many mutants the stages register, and how many of them their tests kill.
#[derive(Debug, Default, Clone, Copy)]
pub struct Count {
    pub registered: usize,
    pub killed: usize,
}

/// One `[[mutant]]` of a registry.
#[derive(Debug, PartialEq, Eq)]
pub struct Mutant {
    pub name: String,
    pub test: String,
    pub what: String,
}

/// The mutants rows of one stage: the registry, the run with no mutant, one row per mutant.
pub fn check_stage(ws: &Workspace, stage: &str, count: &mut Count) -> Vec<Row> {
    let targets = test_targets(&ws.root, stage);
    if targets.is_empty() {
        return Vec::new();
    }
    let dir = ws.root.join("stages").join(stage).join("mutants");
    let registry_name = format!("{stage} mutants registry");
    let mutants = match std::fs::read_to_string(dir.join("mutants.toml")) {
        Err(_) => {
            return vec![Row::new(
                format!("{stage} mutants"),
                false,
                "none registered (no mutants/mutants.toml): every exercise needs mutants",
            )]
        }
        Ok(text) => match parse_registry(&text) {
            Err(e) => return vec![Row::new(registry_name, false, format!("mutants.toml: {e}"))],
            Ok(m) if m.is_empty() => {
                return vec![Row::new(
                    format!("{stage} mutants"),
                    false,
                    "none registered (mutants.toml has no [[mutant]])",
                )]
            }
            Ok(m) => m,
        },
    };
    count.registered += mutants.len();
    let regressions_before = regression_files_status(ws, stage);

    let mut rows = Vec::new();
    let problems = registry_problems(&mutants, &rust_sources(&dir));
    rows.push(Row::new(
        registry_name,
        problems.is_empty(),
        if problems.is_empty() {
            format!("{} registered, each named in mutants/*.rs", mutants.len())
        } else {
            problems.join("; ")
        },
    ));

    // With no mutant selected, the mutants build is the reference: every test passes.
    let start = Instant::now();
    let mut baseline_ok: HashMap<&str, bool> = HashMap::new();
    let mut failures = Vec::new();
    let mut passed = 0;
    for target in &targets {
        let run = run_tests(ws, Config::Mutants, stage, target, None);
        match run.tests {
            None => failures.push(format!("{target} did not build or run")),
            Some(tests) => {
                let failed = failed_tests(&tests);
                passed += tests.len() - failed.len();
                if !failed.is_empty() {
                    failures.push(format!("{target}: {} failed", failed.join(", ")));
                }
                baseline_ok.insert(target, failed.is_empty() && !tests.is_empty());
            }
        }
    }
    rows.push(
        Row::new(
            format!("{stage} --features mutants, none selected"),
            failures.is_empty(),
            if failures.is_empty() {
                format!("{} targets, {passed} tests pass", targets.len())
            } else {
                failures.join("; ")
            },
        )
        .timed(start.elapsed().as_secs_f64()),
    );

    for m in &mutants {
        let row_name = format!("{stage} mutant {}", m.name);
        if !targets.contains(&m.test) {
            rows.push(Row::new(
                row_name,
                false,
                format!("no test target tests/{}.rs", m.test),
            ));
            continue;
        }
        if baseline_ok.get(m.test.as_str()) != Some(&true) {
            rows.push(Row::new(
                row_name,
                false,
                format!(
                    "not run: {} fails with no mutant selected, so a failure would prove nothing",
                    m.test
                ),
            ));
            continue;
        }
        let run = run_tests(ws, Config::Mutants, stage, &m.test, Some(&m.name));
        let row = match run.tests {
            None => Row::new(row_name, false, "did not build or run"),
            Some(tests) if tests.is_empty() => Row::new(row_name, false, "no tests"),
            Some(tests) => {
                let failed: Vec<&str> = tests
                    .iter()
                    .filter(|t| !t.passed)
                    .map(|t| t.name.as_str())
                    .collect();
                if failed.is_empty() {
                    println!("SURVIVED: {} ({})", m.name, m.what);
                    Row::new(
                        row_name,
                        false,
                        format!(
                            "SURVIVED: all {} tests of {} pass; the mutant: {}",
                            tests.len(),
                            m.test,
                            m.what
                        ),
                    )
                } else {
                    count.killed += 1;
                    Row::new(
                        row_name,
                        true,
                        format!(
                            "killed by {}: {}/{} fail ({})",
                            m.test,
                            failed.len(),
                            tests.len(),
                            abbreviate(&failed, 2)
                        ),
                    )
                }
            }
        };
        rows.push(row.timed(run.seconds));
    }

    let regressions_after = regression_files_status(ws, stage);
    if regressions_after != regressions_before {
        rows.push(Row::new(
            format!("{stage} mutants leave the tree clean"),
            false,
            format!(
                "the mutant runs wrote proptest regression files ({}): give the stage's \
                 proptest config failure_persistence: None, or commit only the reference's",
                regressions_after.unwrap_or_default().trim()
            ),
        ));
    }
    rows
}

/// `a, b and 3 more`.
fn abbreviate(names: &[&str], n: usize) -> String {
    let shown = names[..names.len().min(n)].join(", ");
    match names.len().saturating_sub(n) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// `git status` of the stage's proptest regression files, to notice a mutant run writing one.
fn regression_files_status(ws: &Workspace, stage: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=all", "--"])
        .arg(format!("stages/{stage}"))
        .current_dir(&ws.root)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter(|l| l.contains("proptest-regressions"))
            .map(|l| format!("{l}\n"))
            .collect(),
    )
}

/// Every `.rs` file under `dir`, with its text.
fn rust_sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    files.push((path, text));
                }
            }
        }
    }
    files
}

/// What is wrong between a registry and the mutants' code: duplicate names, registered names
/// the code never mentions (as a string literal), `active("..")` calls the registry lacks.
fn registry_problems(mutants: &[Mutant], sources: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for m in mutants {
        if !seen.insert(m.name.as_str()) {
            problems.push(format!("`{}` registered twice", m.name));
        }
        let literal = format!("\"{}\"", m.name);
        if !sources.iter().any(|(_, text)| text.contains(&literal)) {
            problems.push(format!("`{}` appears in no mutants/*.rs (a typo?)", m.name));
        }
    }
    for (path, text) in sources {
        let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            for (i, call) in line.match_indices("active(\"") {
                let rest = &line[i + call.len()..];
                let name = rest.split('"').next().unwrap_or_default();
                if !mutants.iter().any(|m| m.name == name) {
                    let file = path.file_name().unwrap_or_default().to_string_lossy();
                    problems.push(format!("`{name}` in {file} is not in mutants.toml"));
                }
            }
        }
    }
    problems
}

/// Reads the registry: `[[mutant]]` tables of `name`, `test` and `what`, each a one-line
/// string. Comments and blank lines are allowed; anything else is an error naming its line.
pub fn parse_registry(text: &str) -> Result<Vec<Mutant>, String> {
    // (first line, name, test, what) of each table, while reading.
    type Table = (usize, Option<String>, Option<String>, Option<String>);
    let mut tables: Vec<Table> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            let header: String = line
                .split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            if header != "[[mutant]]" {
                return Err(format!("line {n}: only [[mutant]] tables are expected"));
            }
            tables.push((n, None, None, None));
            continue;
        }
        let (key, rest) = line
            .split_once('=')
            .ok_or_else(|| format!("line {n}: expected [[mutant]] or key = \"value\""))?;
        let key = key.trim();
        let (value, after) =
            parse_string(rest.trim_start()).map_err(|e| format!("line {n}: {e}"))?;
        let after = after.trim_start();
        if !after.is_empty() && !after.starts_with('#') {
            return Err(format!(
                "line {n}: unexpected text after the value: {after}"
            ));
        }
        let table = tables
            .last_mut()
            .ok_or_else(|| format!("line {n}: `{key}` before the first [[mutant]]"))?;
        let slot = match key {
            "name" => &mut table.1,
            "test" => &mut table.2,
            "what" => &mut table.3,
            _ => {
                return Err(format!(
                    "line {n}: unknown key `{key}` (expected name, test, what)"
                ))
            }
        };
        if slot.replace(value).is_some() {
            return Err(format!("line {n}: `{key}` given twice in one [[mutant]]"));
        }
    }
    tables
        .into_iter()
        .map(|(n, name, test, what)| {
            let missing = |key: &str| format!("the [[mutant]] of line {n} has no `{key}`");
            let name = name
                .filter(|s| !s.is_empty())
                .ok_or_else(|| missing("name"))?;
            let test = test
                .filter(|s| !s.is_empty())
                .ok_or_else(|| missing("test"))?;
            let what = what
                .filter(|s| !s.is_empty())
                .ok_or_else(|| missing("what"))?;
            Ok(Mutant { name, test, what })
        })
        .collect()
}

/// A TOML basic string (`"..."`, with escapes) or literal string (`'...'`) on one line:
/// its value and the text after its closing quote.
fn parse_string(s: &str) -> Result<(String, &str), String> {
    if s.starts_with("\"\"\"") || s.starts_with("'''") {
        return Err("multi-line strings are not supported here".into());
    }
    if let Some(body) = s.strip_prefix('\'') {
        let end = body.find('\'').ok_or("unterminated string")?;
        return Ok((body[..end].to_string(), &body[end + 1..]));
    }
    let body = s.strip_prefix('"').ok_or("expected a string in quotes")?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &body[i + 1..])),
            '\\' => {
                let (_, e) = chars.next().ok_or("unterminated string")?;
                let hex_digits = match e {
                    'n' => {
                        value.push('\n');
                        continue;
                    }
                    't' => {
                        value.push('\t');
                        continue;
                    }
                    'r' => {
                        value.push('\r');
                        continue;
                    }
                    '"' | '\\' => {
                        value.push(e);
                        continue;
                    }
                    'u' => 4,
                    'U' => 8,
                    _ => return Err(format!("unknown escape \\{e}")),
                };
                let hex: String = (0..hex_digits)
                    .filter_map(|_| chars.next().map(|(_, h)| h))
                    .collect();
                let c = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("bad escape \\{e}{hex}"))?;
                value.push(c);
            }
            _ => value.push(c),
        }
    }
    Err("unterminated string".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &str = r#"
# Stage 3's mutants.
[[mutant]]
name = "slot_mapping_last_block"   # the source's token 49
test = "slot_mapping"
what = "past the end of the table, falls back to the last block (\"slot 129\")"

[[ mutant ]]
name = 'top_p_strict'
test = "sampler"
what = "top-p keeps tokens while the sum is > p, not >= p"
"#;

    #[test]
    fn reads_the_registry() {
        let m = parse_registry(REGISTRY).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name, "slot_mapping_last_block");
        assert_eq!(m[0].test, "slot_mapping");
        assert!(m[0].what.ends_with("(\"slot 129\")"));
        assert_eq!(m[1].name, "top_p_strict");
        assert_eq!(m[1].test, "sampler");
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let err = |text: &str| parse_registry(text).unwrap_err();
        assert!(err("[[mutant]]\nname = \"a\"\ntset = \"b\"\n").contains("line 3: unknown key"));
        assert!(err("[[mutant]]\nname = \"a\"\nwhat = \"w\"\n").contains("no `test`"));
        assert!(err("name = \"a\"\n").contains("before the first"));
        assert!(err("[[mutant]]\nname = \"a\"\nname = \"b\"\n").contains("twice"));
        assert!(err("[[mutant]]\nname = \"a\n").contains("unterminated"));
        assert!(err("[mutant]\n").contains("only [[mutant]]"));
        assert!(err("[[mutant]]\nname = a\n").contains("expected a string"));
    }

    #[test]
    fn finds_typos_and_unregistered_mutants() {
        let mutants = parse_registry(REGISTRY).unwrap();
        let code = |text: &str| vec![(PathBuf::from("sampler.rs"), text.to_string())];
        let both = "if active(\"slot_mapping_last_block\") {}\nif active(\"top_p_strict\") {}\n";
        assert!(registry_problems(&mutants, &code(both)).is_empty());
        let typo = "if active(\"slot_mapping_last_blok\") {}\nif active(\"top_p_strict\") {}\n";
        let problems = registry_problems(&mutants, &code(typo));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("`slot_mapping_last_block` appears in no"));
        assert!(problems[1].contains("`slot_mapping_last_blok` in sampler.rs is not in"));
        // A doc comment's example is not a mutant.
        let doc = format!("/// `active(\"example\")`\n{both}");
        assert!(registry_problems(&mutants, &code(&doc)).is_empty());
    }
}
