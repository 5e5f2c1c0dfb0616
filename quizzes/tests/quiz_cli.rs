//! A scripted session through the `lab-quiz` program (what `lab quiz` runs): answers from
//! stdin and from `--answers`, graded; `--progress` shows the scores.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A fresh XDG data directory for one test.
fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lab-quiz-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn quiz(data: &PathBuf, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab-quiz"))
        .args(args)
        .env("XDG_DATA_HOME", data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The answers a graded session printed ("wrong (answer: 192)").
fn shown_answers(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.split_once("(answer: "))
        .map(|(_, rest)| rest.trim_end_matches(')').to_string())
        .collect()
}

#[test]
fn a_scripted_session_is_graded_replayed_and_kept() {
    let data = data_dir("session");
    // First pass: "0" to everything; the program says what each answer was.
    let n = 30;
    let (ok, first) = quiz(&data, &["stage1", "--seed", "7"], &"0\n".repeat(n));
    assert!(ok, "{first}");
    assert!(first.contains("seed 7"), "{first}");
    let answers = shown_answers(&first);
    assert!(answers.len() >= 15, "{first}");
    // Same seed, the right answers: the same questions come back, all graded right.
    let file = data.join("answers.txt");
    std::fs::write(&file, answers.join("\n") + "\n").unwrap();
    let (ok, second) = quiz(
        &data,
        &["stage1", "--seed", "7", "--answers", file.to_str().unwrap()],
        "",
    );
    assert!(ok, "{second}");
    assert!(!second.contains("\nwrong"), "{second}");
    assert!(
        second.contains(&format!("{} of {} right", answers.len(), answers.len())),
        "{second}"
    );
    // The table: stage 1's slot questions went from wrong to right.
    let (ok, table) = quiz(&data, &["--progress"], "");
    assert!(ok, "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("stage1") && l.contains("slot_for_position"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("100%") && row.contains("up"), "{row}");
    assert!(data.join("inference-lab/quiz-progress.json").is_file());
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn end_of_input_keeps_what_was_answered() {
    let data = data_dir("eof");
    let (ok, out) = quiz(&data, &["1", "--seed", "3"], "0\n0\n");
    assert!(ok, "{out}");
    assert!(out.contains("end of input"), "{out}");
    assert!(out.contains("of 2 right"), "{out}");
    let (_, table) = quiz(&data, &["--progress"], "");
    assert!(table.lines().any(|l| l.starts_with("stage1")), "{table}");
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let data = data_dir("bad");
    let (ok, out) = quiz(&data, &["stage99"], "");
    assert!(
        !ok && out.contains("no quiz for chapter `stage99`"),
        "{out}"
    );
    let (ok, out) = quiz(&data, &["--seed", "x"], "");
    assert!(!ok && out.contains("--seed must be"), "{out}");
    let (_, out) = quiz(&data, &["--progress"], "");
    assert!(out.contains("No quiz answered yet"), "{out}");
    let _ = std::fs::remove_dir_all(&data);
}
