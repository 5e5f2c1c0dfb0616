//! Plausible wrong solutions of the stage 1 exercises, kept beside the reference.
//!
//! Built only with the `mutants` feature. Each function here has its exercise's signature and
//! behaves like the engine unless the environment variable `INFERENCE_LAB_MUTANT` names one
//! of its mutants; then it makes that one mistake. `mutants.toml` lists every mutant with the
//! test target that must fail with it, and `cargo xtask check` runs them:
//! `INFERENCE_LAB_MUTANT=<name> cargo test -p stage1 --features mutants --test <test>`.

pub mod block_allocator;
pub mod fair_share;
pub mod preemption;
pub mod scheduler;
pub mod swap_space;

/// Whether the mutant `name` is selected (`INFERENCE_LAB_MUTANT=name`).
pub fn active(name: &str) -> bool {
    std::env::var("INFERENCE_LAB_MUTANT").is_ok_and(|v| v == name)
}
