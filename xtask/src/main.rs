//! `cargo xtask check`: the maintainers' proof that the course works.
//!
//! ```text
//! for each stage crate stages/stageN, for each test file tests/<exercise>.rs:
//!   stub       cargo test -p stageN --test <exercise>                      every test FAILS, naming
//!                                                                          `not yet implemented: stageN:`
//!   reference  cargo test -p stageN --features reference --test <exercise> every test PASSES
//! mutants      for each [[mutant]] of stages/stageN/mutants/mutants.toml:
//!              INFERENCE_LAB_MUTANT=<name> cargo test -p stageN --features mutants --test <test>
//!                                                                          at least one test FAILS
//!              (and with no mutant selected, `--features mutants` passes every test)
//! clippy -D warnings on the workspace: stage crates as stubs, with reference, with mutants
//! book build (mdbook build book, no warnings) and quiz checks (quiz files unchanged)
//! ```
//!
//! The reference switch is a feature of each stage crate, so switching rebuilds the stage crate
//! and its tests, never the engine or its dependencies. Each phase prints its time; a summary
//! table (with a time per check) ends the run; any failure exits non-zero.

mod book_checks;
mod exercises;
mod mutants;
mod steps;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// One line of the summary table.
pub struct Row {
    pub name: String,
    /// "pass", "FAIL" or "skipped".
    pub status: &'static str,
    pub detail: String,
    /// Wall time of the command(s) behind this row, if it ran any.
    pub seconds: Option<f64>,
}

impl Row {
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            status: if ok { "pass" } else { "FAIL" },
            detail: detail.into(),
            seconds: None,
        }
    }

    pub fn skipped(name: impl Into<String>, detail: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            status: "skipped",
            detail: detail.into(),
            seconds: None,
        }
    }

    /// The same row with its wall time.
    pub fn timed(mut self, seconds: f64) -> Row {
        self.seconds = Some(seconds);
        self
    }

    fn failed(&self) -> bool {
        self.status == "FAIL"
    }
}

/// Where cargo runs: the workspace root. Every build goes to the workspace's target
/// directory (or `CARGO_TARGET_DIR`), the one the learner's `cargo test -p stageN` uses.
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    fn find() -> Workspace {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the workspace root")
            .to_path_buf();
        Workspace { root }
    }
}

/// The rows of a run, grouped in timed phases.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    /// (phase, seconds), in run order.
    phases: Vec<(&'static str, f64)>,
    mutants: mutants::Count,
}

impl Report {
    /// Runs one phase, prints its time and keeps its rows. A phase that yields a single
    /// untimed row gives that row the phase's time.
    fn phase(&mut self, name: &'static str, run: impl FnOnce() -> Vec<Row>) {
        println!("\n=== {name}");
        let start = Instant::now();
        let mut rows = run();
        let seconds = start.elapsed().as_secs_f64();
        if let [row] = &mut rows[..] {
            row.seconds.get_or_insert(seconds);
        }
        let failed = rows.iter().filter(|r| r.failed()).count();
        println!(
            "=== {name}: {} in {seconds:.1} s",
            if failed == 0 {
                "ok".to_string()
            } else {
                format!("{failed} FAILED")
            }
        );
        self.phases.push((name, seconds));
        self.rows.extend(rows);
    }

    fn print_summary(&self, seconds: f64) {
        let rows = &self.rows;
        let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(5);
        println!("\n== cargo xtask check: summary");
        println!(
            "{:<width$}  {:<7}  {:>7}  detail",
            "check", "result", "time"
        );
        println!("{:-<width$}  {:-<7}  {:->7}  {:-<40}", "", "", "", "");
        for r in rows {
            let time = r.seconds.map(|s| format!("{s:.1} s")).unwrap_or_default();
            println!(
                "{:<width$}  {:<7}  {:>7}  {}",
                r.name, r.status, time, r.detail
            );
        }
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(name, s)| format!("{name} {s:.0} s"))
            .collect();
        println!("phases: {}", phases.join(" · "));
        let failed = rows.iter().filter(|r| r.failed()).count();
        println!(
            "{} checks, {failed} failed; mutants: {} killed of {}; in {seconds:.0} s",
            rows.len(),
            self.mutants.killed,
            self.mutants.registered
        );
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["check"] => check(),
        _ => {
            eprintln!("usage: cargo xtask check");
            ExitCode::from(2)
        }
    }
}

fn check() -> ExitCode {
    let start = Instant::now();
    let ws = Workspace::find();
    let stages = exercises::stages(&ws.root);
    let mut report = Report::default();
    report.phase("stub tests", || {
        stages
            .iter()
            .flat_map(|s| exercises::check_stubs(&ws, s))
            .collect()
    });
    report.phase("reference tests", || {
        stages
            .iter()
            .flat_map(|s| exercises::check_reference(&ws, s))
            .collect()
    });
    let mut count = mutants::Count::default();
    report.phase("mutants", || {
        stages
            .iter()
            .flat_map(|s| mutants::check_stage(&ws, s, &mut count))
            .collect()
    });
    report.mutants = count;
    report.phase("clippy", || steps::clippy(&ws, &stages));
    report.phase("book", || vec![steps::book_build(&ws)]);
    report.phase("book checks", || book_checks::check_built_book(&ws));
    report.phase("quizzes", || vec![steps::quiz_checks(&ws)]);
    report.print_summary(start.elapsed().as_secs_f64());
    if report.rows.iter().any(Row::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
