//! Plausible wrong solutions of the stage 7 exercises, kept beside the reference (maintainers
//! only: built with `--features mutants`, never by a learner).
//!
//! Each file here has the signatures of one exercise. With no mutant selected it is the
//! engine's own code; with `INFERENCE_LAB_MUTANT=<name>` set it makes the mistake that `name`
//! stands for. `mutants.toml` lists every name with the test target that must catch it, and
//! `cargo xtask check` runs, for each one,
//!
//! ```text
//! INFERENCE_LAB_MUTANT=<name> cargo test -p stage7 --features mutants --test <test>
//! ```
//!
//! and requires a failing test: a mutant that passes is a hole in the exercise's tests.

pub mod memory_model;
pub mod parallel_state;

/// Whether the mutant `name` is selected (the environment variable `INFERENCE_LAB_MUTANT`).
pub fn active(name: &str) -> bool {
    std::env::var("INFERENCE_LAB_MUTANT").is_ok_and(|v| v == name)
}
