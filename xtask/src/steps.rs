//! The steps after the exercises: clippy, the book, the quizzes.

use std::path::Path;
use std::process::Command;

use crate::exercises::{cargo, Config};
use crate::{Row, Workspace};

/// `cargo clippy --all-targets -- -D warnings` on the stage crates and xtask, once per
/// configuration.
pub fn clippy(ws: &Workspace) -> Vec<Row> {
    let mut packages = vec!["xtask".to_string()];
    packages.extend(crate::exercises::stages(&ws.root));
    [Config::Stub, Config::Reference]
        .into_iter()
        .map(|config| {
            let mut cmd = cargo(ws, config);
            cmd.arg("clippy");
            for p in &packages {
                cmd.args(["-p", p]);
            }
            cmd.args(["--all-targets", "--", "-D", "warnings"]);
            println!("== clippy ({})", config.name());
            let out = cmd.output().expect("cargo runs");
            let ok = out.status.success();
            if !ok {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            }
            let detail = if ok {
                format!("{} clean", packages.join(", "))
            } else {
                "warnings or errors (printed above)".to_string()
            };
            Row::new(
                format!("clippy -D warnings ({})", config.name()),
                ok,
                detail,
            )
        })
        .collect()
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
