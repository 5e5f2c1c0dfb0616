//! The official `openai` Python client talks to `lab serve` unchanged
//! (`serve_common/openai_client.py`). Skipped, with the reason printed, where python3 has no
//! `openai` package; `LAB_PYTHON` names another interpreter (a virtual environment's, say).

mod serve_common;

use std::process::Command;

use serve_common::Server;

#[test]
fn the_official_openai_client_works_unchanged() {
    let python = std::env::var("LAB_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_openai = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_openai {
        eprintln!(
            "skipping: {python} cannot `import openai` (pip install openai, or set LAB_PYTHON \
             to a python that can)"
        );
        return;
    }
    let server = Server::start(&[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/serve_common/openai_client.py"
    );
    let out = Command::new(&python)
        .args([script, &server.url])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}\n{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
}
