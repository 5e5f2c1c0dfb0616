//! nano-vllm's benchmark workload (its `bench.py`), run offline on one engine.
//!
//! The workload: `random.seed(0)`; for each of 256 requests a prompt length
//! `randint(100, 1024)` and that many ids `randint(0, 10000)`; then, for each request in the
//! same order, an output length `randint(100, 1024)`; sampling at temperature 0.6 with EOS
//! ignored, so every request makes exactly its output length. With the defaults that is
//! 142,827 prompt and 133,966 output tokens. `py_random` draws the same numbers Python does,
//! so `scripts/bench_transformers_gpu.py` (which uses Python's own `random`) runs the very
//! same requests.
//!
//! Every request arrives at t = 0 and the engine steps until all are done, as nano-vllm's
//! `llm.generate` does. Besides throughput we time each request: TTFT (arrival to first
//! token) shows how long requests queue behind the batch, TPOT (the time per output token
//! after the first) how fast a running request advances.

use std::collections::HashMap;
use std::time::Instant;

use engine::{LLMEngine, Prompt, SamplingParams};

use crate::py_random::PyRandom;

/// nano-vllm's fixed numbers: the seed, the shortest prompt and output (unless the maximum is
/// smaller, when every length is the maximum), the largest id, the temperature.
const SEED: u64 = 0;
const MIN_LEN: usize = 100;
const MAX_ID: u32 = 10_000;
const TEMPERATURE: f32 = 0.6;

/// The requests: prompt ids and output lengths, in nano-vllm's order.
pub struct Workload {
    pub prompts: Vec<Vec<u32>>,
    pub max_tokens: Vec<usize>,
}

/// Draws the workload exactly as nano-vllm's `bench.py` does (all prompts first, then all
/// output lengths: the order of the draws is part of the workload).
pub fn workload(num_requests: usize, max_input_len: usize, max_output_len: usize) -> Workload {
    let mut rng = PyRandom::new(SEED);
    let len =
        |rng: &mut PyRandom, max: usize| rng.randint(MIN_LEN.min(max) as i64, max as i64) as usize;
    let prompts = (0..num_requests)
        .map(|_| {
            let n = len(&mut rng, max_input_len);
            (0..n)
                .map(|_| rng.randint(0, MAX_ID as i64) as u32)
                .collect()
        })
        .collect();
    let max_tokens = (0..num_requests)
        .map(|_| len(&mut rng, max_output_len))
        .collect();
    Workload {
        prompts,
        max_tokens,
    }
}

/// Ids above the vocabulary (only a toy model's: real ones have > 10,001 ids) wrap around it,
/// so the lengths, and so the work, stay nano-vllm's.
pub fn fit_vocab(ids: &[u32], vocab_size: usize) -> Vec<u32> {
    ids.iter().map(|&id| id % vocab_size as u32).collect()
}

/// What one run of the workload measured.
pub struct ServingResult {
    pub requests: usize,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub wall_s: f64,
    /// Seconds from arrival (t = 0) to each request's first token.
    pub ttft_s: Vec<f64>,
    /// Seconds from arrival to each request's last token.
    pub latency_s: Vec<f64>,
    /// Seconds per output token after the first, per request with at least two.
    pub tpot_s: Vec<f64>,
    pub steps: usize,
    pub preemptions: usize,
    /// Tokens the steps processed (prompts, decodes, and prompts recomputed after preemption).
    pub batched_tokens: usize,
}

/// Submits every request at t = 0 and steps until all are done.
///
/// First tokens are seen by looking, after each step, at the running sequences that have
/// output now and had none before (the scheduler's public state, so the engine needs no new
/// API); finish times come from the outputs `step` returns. Both are taken when `step`
/// returns, which is when its tokens exist on the host.
pub fn run(engine: &mut LLMEngine, w: &Workload) -> anyhow::Result<ServingResult> {
    let vocab = engine.model_config().vocab_size;
    let n = w.prompts.len();
    // Warm-up, as nano-vllm's bench does: one short request through every part of a step.
    let warm: Vec<u32> = w.prompts[0].iter().take(16).copied().collect();
    engine.add_request(Prompt::TokenIds(fit_vocab(&warm, vocab)), params(16, 0))?;
    while engine.has_unfinished_requests() {
        engine.step()?;
    }
    let before = engine.stats.clone();

    let t0 = Instant::now();
    let mut index = HashMap::with_capacity(n);
    for (i, (p, &m)) in w.prompts.iter().zip(&w.max_tokens).enumerate() {
        let id = engine.add_request(Prompt::TokenIds(fit_vocab(p, vocab)), params(m, i))?;
        index.insert(id, i);
    }
    let mut first: Vec<Option<f64>> = vec![None; n];
    let mut finish: Vec<Option<(f64, usize)>> = vec![None; n];
    let mut awaiting_first = n;
    while engine.has_unfinished_requests() {
        let finished = engine.step()?;
        let now = t0.elapsed().as_secs_f64();
        if awaiting_first > 0 {
            for id in &engine.scheduler.running {
                let seq = engine.scheduler.sequence(*id);
                let has_output = seq.is_some_and(|s| !s.output_token_ids.is_empty());
                let slot = &mut first[index[id]];
                if has_output && slot.is_none() {
                    *slot = Some(now);
                    awaiting_first -= 1;
                }
            }
        }
        for out in finished {
            let i = index[&out.request_id];
            if first[i].is_none() {
                first[i] = Some(now); // its first token was also its last
                awaiting_first -= 1;
            }
            finish[i] = Some((now, out.token_ids.len()));
        }
    }
    let wall_s = t0.elapsed().as_secs_f64();

    let mut ttft_s = Vec::with_capacity(n);
    let mut latency_s = Vec::with_capacity(n);
    let mut tpot_s = Vec::with_capacity(n);
    let mut output_tokens = 0;
    for (f, e) in first.iter().zip(&finish) {
        let (Some(first), Some((end, made))) = (f, e) else {
            anyhow::bail!("a request ended without its first or last token being seen");
        };
        ttft_s.push(*first);
        latency_s.push(*end);
        if *made >= 2 {
            tpot_s.push((end - first) / (made - 1) as f64);
        }
        output_tokens += made;
    }
    Ok(ServingResult {
        requests: n,
        prompt_tokens: w.prompts.iter().map(Vec::len).sum(),
        output_tokens,
        wall_s,
        ttft_s,
        latency_s,
        tpot_s,
        steps: engine.stats.num_steps - before.num_steps,
        preemptions: engine.stats.num_preemptions - before.num_preemptions,
        batched_tokens: engine.stats.num_batched_tokens - before.num_batched_tokens,
    })
}

/// nano-vllm's sampling: temperature 0.6 over the whole vocabulary, EOS ignored; seeded per
/// request (nano-vllm's draws are unseeded) so that runs repeat token for token.
fn params(max_tokens: usize, seed: usize) -> SamplingParams {
    SamplingParams {
        temperature: TEMPERATURE,
        ignore_eos: true,
        max_tokens,
        seed: Some(seed as u64),
        ..SamplingParams::default()
    }
}

/// The `p`-th percentile (0..=100) by linear interpolation between the two nearest ranks
/// (numpy's default, which the Python script computes the same way). `NaN` for no values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = p / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values printed by CPython 3.11.7 running nano-vllm's draws.

    #[test]
    fn the_default_workload_is_nano_vllms() {
        let w = workload(256, 1024, 1024);
        let lens: Vec<usize> = w.prompts.iter().map(Vec::len).collect();
        assert_eq!(lens[..5], [964, 724, 484, 508, 316]);
        assert_eq!(
            w.prompts[0][..8],
            [6311, 6890, 663, 4242, 8376, 7961, 6634, 4969]
        );
        assert_eq!(w.prompts[255][lens[255] - 3..], [6642, 9046, 1958]);
        assert_eq!(w.max_tokens[..8], [845, 312, 607, 843, 500, 882, 178, 577]);
        assert_eq!(w.max_tokens[253..], [895, 354, 312]);
        assert_eq!(lens.iter().sum::<usize>(), 142_827);
        assert_eq!(w.max_tokens.iter().sum::<usize>(), 133_966);
        // Every id and length, position-weighted: sum((k + 1) * x) over the flattened list.
        let weighted = |xs: &mut dyn Iterator<Item = u64>| -> u64 {
            xs.enumerate().map(|(k, x)| (k as u64 + 1) * x).sum()
        };
        let mut ids = w.prompts.iter().flatten().map(|&id| id as u64);
        assert_eq!(weighted(&mut ids), 50_928_653_710_071);
        let mut outs = w.max_tokens.iter().map(|&m| m as u64);
        assert_eq!(weighted(&mut outs), 17_171_475);
    }

    #[test]
    fn smaller_workloads_draw_in_the_same_order() {
        // Lengths above the maximum: every length is the maximum (randint(64, 64)).
        let w = workload(8, 64, 32);
        assert!(w.prompts.iter().all(|p| p.len() == 64));
        assert!(w.max_tokens.iter().all(|&m| m == 32));
        assert_eq!(w.prompts[7][62..], [2174, 5306]);
        let w = workload(8, 300, 200);
        let lens: Vec<usize> = w.prompts.iter().map(Vec::len).collect();
        assert_eq!(lens, [198, 217, 233, 200, 147, 116, 143, 139]);
        assert_eq!(w.max_tokens, [110, 166, 143, 100, 199, 110, 113, 154]);
        assert_eq!(w.prompts[7][137..], [936, 8903]);
    }

    #[test]
    fn percentile_interpolates_between_ranks() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 90.0) - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn every_request_is_timed_on_the_tiny_model() {
        let model = engine::model_source::load_model(
            &engine::model_source::ModelSpec::parse("tiny"),
            false,
            engine::model_source::DEFAULT_WEIGHT_SEED,
        )
        .unwrap();
        let mut config = engine::EngineConfig::default();
        config.scheduler.max_num_seqs = 4; // 6 requests: two must wait for the first batch
        let mut engine = LLMEngine::new(model, config).unwrap();
        let w = workload(6, 40, 12);
        let r = run(&mut engine, &w).unwrap();
        assert_eq!((r.requests, r.prompt_tokens, r.output_tokens), (6, 240, 72));
        assert_eq!((r.ttft_s.len(), r.tpot_s.len()), (6, 6));
        assert!(r.tpot_s.iter().all(|&t| t > 0.0));
        for i in 0..6 {
            assert!(
                0.0 < r.ttft_s[i] && r.ttft_s[i] < r.latency_s[i] && r.latency_s[i] <= r.wall_s
            );
        }
        // The last two got a slot only when one of the first four had finished.
        let first_done = percentile(&r.latency_s[..4], 0.0);
        assert!(r.ttft_s[4] > first_done && r.ttft_s[5] > first_done);
        assert_eq!(r.steps, 24, "two waves of 12 steps (a prefill, 11 decodes)");
    }
}
