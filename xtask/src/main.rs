//! `cargo xtask check`: the maintainers' proof that the course works.
//!
//! ```text
//! for each stage crate stages/stageN, for each test file tests/<exercise>.rs:
//!   stub       cargo test -p stageN --test <exercise>            every test FAILS, naming
//!                                                                `not yet implemented: stageN:`
//!   reference  RUSTFLAGS="--cfg reference" cargo test ...        every test PASSES
//! clippy -D warnings on the stage crates and xtask, in both configurations
//! book build (mdbook build book, no warnings) and quiz checks (quiz files unchanged)
//! ```
//!
//! The reference configuration builds in `<target>/reference`, so switching RUSTFLAGS does not
//! rebuild everything each time. A summary table ends the run; any failure exits non-zero.

mod exercises;
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
}

impl Row {
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            status: if ok { "pass" } else { "FAIL" },
            detail: detail.into(),
        }
    }

    pub fn skipped(name: impl Into<String>, detail: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            status: "skipped",
            detail: detail.into(),
        }
    }
}

/// Where cargo runs and what it builds into.
pub struct Workspace {
    pub root: PathBuf,
    /// The learner's target directory: stub builds and clippy go here.
    pub stub_target: PathBuf,
    /// `--cfg reference` builds go here.
    pub reference_target: PathBuf,
}

impl Workspace {
    fn find() -> Workspace {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the workspace root")
            .to_path_buf();
        let stub_target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let reference_target = stub_target.join("reference");
        Workspace {
            root,
            stub_target,
            reference_target,
        }
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
    let mut rows = Vec::new();
    for stage in exercises::stages(&ws.root) {
        rows.extend(exercises::check_stage(&ws, &stage));
    }
    rows.extend(steps::clippy(&ws));
    rows.push(steps::book_build(&ws));
    rows.push(steps::quiz_checks(&ws));
    print_summary(&rows, start.elapsed().as_secs_f64());
    if rows.iter().any(|r| r.status == "FAIL") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_summary(rows: &[Row], seconds: f64) {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(5);
    println!("\n== cargo xtask check: summary");
    println!("{:<width$}  {:<7}  detail", "check", "result");
    println!("{:-<width$}  {:-<7}  {:-<40}", "", "", "");
    for r in rows {
        println!("{:<width$}  {:<7}  {}", r.name, r.status, r.detail);
    }
    let failed = rows.iter().filter(|r| r.status == "FAIL").count();
    println!("{} checks, {failed} failed, in {seconds:.0} s", rows.len());
}
