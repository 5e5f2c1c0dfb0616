//! The steps after the exercises: clippy, the book, the quizzes.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::exercises::{cargo, Config};
use crate::{Row, Workspace};

/// `cargo clippy --workspace --all-targets -- -D warnings`, once per configuration of the
/// stage crates: the stubs, `--features reference` and `--features mutants` (as
/// `stageN/feature`, so one command covers every stage). The whole workspace, not only the
/// stage crates and xtask: it costs no more (the stage crates depend on most of it), and the
/// stub run is then the very command of `scripts/test-all.sh`, already up to date there.
pub fn clippy(ws: &Workspace, stages: &[String]) -> Vec<Row> {
    [Config::Stub, Config::Reference, Config::Mutants]
        .into_iter()
        .map(|config| {
            let mut cmd = cargo(ws);
            cmd.args(["clippy", "--workspace"]);
            if let Some(feature) = config.feature() {
                let features: Vec<String> =
                    stages.iter().map(|s| format!("{s}/{feature}")).collect();
                cmd.args(["--features", &features.join(",")]);
            }
            cmd.args(["--all-targets", "--", "-D", "warnings"]);
            println!("== clippy ({})", config.name());
            let start = Instant::now();
            let out = cmd.output().expect("cargo runs");
            let seconds = start.elapsed().as_secs_f64();
            let ok = out.status.success();
            if !ok {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            }
            let detail = if ok {
                "workspace clean".to_string()
            } else {
                first_diagnostic(&String::from_utf8_lossy(&out.stderr))
            };
            Row::new(
                format!("clippy -D warnings ({})", config.name()),
                ok,
                detail,
            )
            .timed(seconds)
        })
        .collect()
}

/// The first error or warning of a cargo log and where it points, for the summary.
fn first_diagnostic(log: &str) -> String {
    let mut lines = log.lines();
    let Some(first) = lines.by_ref().find(|l| {
        (l.starts_with("error") || l.starts_with("warning")) && !l.contains("build failed")
    }) else {
        return "failed (output printed above)".to_string();
    };
    match lines.next().map(str::trim).filter(|l| l.starts_with("-->")) {
        Some(place) => format!("{first} {place}"),
        None => first.to_string(),
    }
}

/// Hook for the book: `mdbook build book` must exit 0 and print no warning.
pub fn book_build(ws: &Workspace) -> Row {
    const NAME: &str = "book build";
    if !has_book(&ws.root) {
        println!("skipped: no book");
        return Row::skipped(NAME, "no book/book.toml");
    }
    println!("== mdbook build book");
    let out = match Command::new("mdbook")
        .args(["build", "book"])
        .current_dir(&ws.root)
        .output()
    {
        Ok(out) => out,
        Err(e) => return Row::new(NAME, false, format!("cannot run mdbook: {e}")),
    };
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    let ok = out.status.success() && warnings.is_empty();
    if !ok {
        eprintln!("{log}");
    }
    let detail = if !out.status.success() {
        format!("mdbook exited with {}", out.status)
    } else if !warnings.is_empty() {
        format!(
            "{} warning(s), first: {}",
            warnings.len(),
            warnings[0].trim()
        )
    } else {
        "built, no warnings".to_string()
    };
    Row::new(NAME, ok, detail)
}

/// Hook for the quizzes: after the book build the quiz files are unchanged (mdbook-quiz
/// writes question ids into them; those must be committed).
pub fn quiz_checks(ws: &Workspace) -> Row {
    const NAME: &str = "quiz files unchanged";
    if !has_book(&ws.root) {
        println!("skipped: no book");
        return Row::skipped(NAME, "no book/book.toml");
    }
    let status = Command::new("git")
        .args(["diff", "--exit-code", "--stat", "--", "quizzes/"])
        .current_dir(&ws.root)
        .status();
    match status {
        Ok(s) if s.success() => Row::new(NAME, true, "git diff --exit-code quizzes/ is clean"),
        Ok(_) => Row::new(
            NAME,
            false,
            "the build changed quizzes/: commit the ids it wrote",
        ),
        Err(e) => Row::new(NAME, false, format!("cannot run git: {e}")),
    }
}

fn has_book(root: &Path) -> bool {
    root.join("book").join("book.toml").is_file()
}

#[cfg(test)]
mod tests {
    use super::first_diagnostic;

    #[test]
    fn names_the_first_diagnostic_and_its_place() {
        let log = "    Checking stage3 v0.1.0\n\
                   error: float has excessive precision\n  \
                   --> stages/stage3/tests/rms_norm.rs:74:22\n   |\n\
                   error: could not compile `stage3` (test \"rms_norm\")\n\
                   warning: build failed, waiting for other jobs to finish...\n";
        assert_eq!(
            first_diagnostic(log),
            "error: float has excessive precision --> stages/stage3/tests/rms_norm.rs:74:22"
        );
        assert_eq!(
            first_diagnostic("Finished"),
            "failed (output printed above)"
        );
    }
}
