//! `lab quiz`: the chapters' quizzes in the terminal, with fresh numbers, graded by the engine.
//!
//! The quizzes live in the `quizzes` crate, which depends on the engine to compute every
//! answer; the engine's `lab` binary cannot depend on it back (Cargo refuses the cycle). So
//! `lab quiz` runs the quizzes crate's `lab-quiz` program, the way `git foo` runs `git-foo`:
//! first the one beside this executable (Cargo builds both into `target/<profile>/`), then one
//! on `PATH`. Its arguments pass through unchanged.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// `lab quiz [CHAPTER] [--seed S] [--answers FILE] [--progress]`.
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct QuizArgs {
    /// Passed to `lab-quiz`: [CHAPTER] [--seed S] [--answers FILE] [--progress].
    // (clap prints this comment as the help: the brackets are the usage's, not links.)
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// `lab-quiz` beside this executable, if it is there.
fn beside_lab() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.with_file_name(format!("lab-quiz{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

pub fn run(args: QuizArgs) -> anyhow::Result<()> {
    let program = beside_lab().unwrap_or_else(|| PathBuf::from("lab-quiz"));
    let status = match Command::new(&program).args(&args.args).status() {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "`lab quiz` runs the quizzes crate's `lab-quiz` program, which is not built: \
             run `cargo build -p quizzes --bin lab-quiz` (it goes beside `lab`)"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot run {}", program.display())),
    };
    // lab-quiz has printed its own error; pass its exit status on.
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
