//! `--threads` on `lab generate`: it sizes the CPU kernels' pool, the tokens do not depend on
//! it (the GEMM's chains never do), and a bad value is one line of error.

use std::process::Command;

fn lab(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .output()
        .expect("lab runs");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

#[test]
fn thread_count_changes_no_token() {
    let run = |threads: &str| {
        let args = ["generate", "--prompt", "a b c", "--max-tokens", "8"];
        let (code, out, err) = lab(&[&args[..], &["--threads", threads]].concat());
        assert_eq!(code, 0, "{err}");
        out
    };
    assert_eq!(run("1"), run("3"));
}

#[test]
fn zero_threads_is_one_line_of_error() {
    let (code, _, err) = lab(&["generate", "--prompt", "a", "--threads", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--threads must be at least 1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
