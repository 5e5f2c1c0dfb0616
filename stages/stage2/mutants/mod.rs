//! Plausible wrong solutions of the stage 2 exercises, kept beside the reference.
//!
//! Built only with the `mutants` feature. Each function here has its exercise's signature and
//! behaves like the engine unless the environment variable `INFERENCE_LAB_MUTANT` names one
//! of its mutants; then it makes that one mistake. `mutants.toml` lists every mutant with the
//! test target that must fail with it, and `cargo xtask check` runs them:
//! `INFERENCE_LAB_MUTANT=<name> cargo test -p stage2 --features mutants --test <test>`.

pub mod batch_composer;
pub mod continuous_batching;
pub mod static_batching;

/// Whether the mutant `name` is selected (`INFERENCE_LAB_MUTANT=name`).
pub fn active(name: &str) -> bool {
    std::env::var("INFERENCE_LAB_MUTANT").is_ok_and(|v| v == name)
}

/// Whether any of `names` is selected.
pub fn any_active(names: &[&str]) -> bool {
    names.iter().any(|m| active(m))
}
