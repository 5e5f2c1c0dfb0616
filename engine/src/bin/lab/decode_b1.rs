//! Batch-1 decode latency: milliseconds per token for one request alone.
//!
//! At batch 1 a decode step reads every weight to make one token, so this figure sits on
//! the memory-bandwidth roofline (or, when it is far above it, shows launch and host
//! overheads). Defined as transformers is timed in `scripts/bench_transformers_gpu.py`:
//! `(time(129 new tokens) - time(1 new token)) / 128`, i.e. the 128 decode steps after the
//! prefill step, for a fixed 128-token prompt (the first 128 ids of nano-vllm's first prompt:
//! `random.seed(0); randint(100, 1024); [randint(0, 10000) for _ in range(128)]`).

use engine::LLMEngine;

use crate::decode_batch;
use crate::py_random::PyRandom;

/// Prompt tokens, and decode steps timed after the prefill.
pub const PROMPT_LEN: usize = 128;
pub const DECODE_STEPS: usize = 128;

/// The fixed prompt (ids may exceed a toy vocabulary; the caller wraps them).
pub fn prompt() -> Vec<u32> {
    let mut rng = PyRandom::new(0);
    rng.randint(100, 1024); // nano-vllm's first prompt length, drawn first
    (0..PROMPT_LEN)
        .map(|_| rng.randint(0, 10_000) as u32)
        .collect()
}

/// Batch-1 decode time per token, median over the timed runs.
pub struct DecodeB1 {
    /// Wall time: host and device together, as a user sees it.
    pub ms_per_token: f64,
    /// The device's part, where the backend measures it (GPU): from each step's first kernel
    /// to its sampled ids. The rest of the wall time is the host's (scheduling, preparing the
    /// step's inputs, launching, reading the ids back), during which the device waits.
    pub device_ms_per_token: Option<f64>,
}

/// Median milliseconds per decode token over `runs` runs, after one warm-up run: the decode
/// window of `decode_batch` at batch 1. Greedy, EOS ignored. The engine must be idle (the
/// steps timed are this request's alone).
pub fn ms_per_token(engine: &mut LLMEngine, runs: usize) -> anyhow::Result<DecodeB1> {
    let prompts = decode_batch::prompts(1, engine.model_config().vocab_size);
    decode_batch::decode_window(engine, &prompts)?; // warm-up
    let mut times = Vec::with_capacity(runs);
    let mut device_times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let window = decode_batch::decode_window(engine, &prompts)?;
        times.push(1e3 * window.wall_s / DECODE_STEPS as f64);
        if let Some(device) = window.device_s {
            device_times.push(1e3 * device / DECODE_STEPS as f64);
        }
    }
    let median = |v: &[f64]| crate::nano_vllm::percentile(v, 50.0);
    Ok(DecodeB1 {
        ms_per_token: median(&times),
        device_ms_per_token: (!device_times.is_empty()).then(|| median(&device_times)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_the_start_of_nano_vllms_first() {
        let p = prompt();
        assert_eq!(p.len(), PROMPT_LEN);
        assert_eq!(p[..4], [6311, 6890, 663, 4242]); // printed by CPython
        assert_eq!(p[126..], [3584, 741]);
    }
}
