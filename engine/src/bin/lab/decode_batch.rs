//! `lab bench --workload decode --batch-size N`: one decode step of N requests together, and
//! with several ranks what that step's collectives cost.
//!
//! N requests of decode-b1's fixed 128-token prompt (rotated by the request's index, so they
//! are N different requests) are prefilled together; then the 128 decode steps in which all N
//! decode are timed ([`decode_window`]; decode-b1 is the same window at N = 1). Each rank's
//! communicator counters are read just before and just after the window, so their differences
//! are the decode steps' own collectives, with no prefill in them.
//!
//! What the counters should say: the engine all-reduces a `[N, hidden]` tensor once after the
//! embedding (each rank holds a slice of the vocabulary; see `model_executor::llama`) and twice
//! per layer (after the row-parallel o_proj and down_proj); the LM head's logits are
//! all-gathered, not all-reduced. [`predicted_all_reduce_bytes`] is that closed form, printed
//! beside the counters.
//!
//! On a GPU the copy bandwidth is measured first, in the same run, and the step's time is
//! printed beside its floor at that bandwidth ([`step_floor_ms`]: the bytes a rank must read).

use std::time::Instant;

use engine::distributed::comm_model::ALL_REDUCES_PER_LAYER;
use engine::distributed::{CommOp, CommStats, OpStats, StageTimes};
use engine::model_executor::pipeline_parallel::get_pp_indices;
use engine::{LLMEngine, Prompt, SamplingParams};

use crate::decode_b1::{prompt, DECODE_STEPS, PROMPT_LEN};
use crate::nano_vllm::fit_vocab;

mod report;

pub use report::run;

/// One timed window: [`DECODE_STEPS`] steps, each decoding every request once.
pub struct Window {
    /// Host wall time of the steps.
    pub wall_s: f64,
    /// The device's part, where the backend measures it (GPU).
    pub device_s: Option<f64>,
    /// Each rank's communicator counters over the window, in world-rank order (empty with
    /// one rank).
    pub comm: Vec<CommStats>,
    /// Each rank's part of the steps and the time outside it over the window, in world-rank
    /// order (empty with one rank): where a step's host time goes besides the device.
    pub ranks: Vec<StageTimes>,
}

/// decode-b1's prompt fitted to `vocab`, rotated left by `i` for request `i`: N different
/// prompts of the same length (distinct for N up to [`PROMPT_LEN`]).
pub fn prompts(n: usize, vocab: usize) -> Vec<Vec<u32>> {
    let ids = fit_vocab(&prompt(), vocab);
    (0..n)
        .map(|i| {
            let mut p = ids.clone();
            p.rotate_left(i % PROMPT_LEN);
            p
        })
        .collect()
}

// ANCHOR: decode_window
/// Adds `prompts` as requests of `1 + DECODE_STEPS` tokens (greedy, EOS ignored), steps until
/// every one has its first token, then times the [`DECODE_STEPS`] steps that make the rest.
/// Every timed step must decode every request and nothing else; if one did not (a preemption,
/// a KV cache or context too short, prompts that did not reach their first token in the same
/// step) the window is refused, since its steps would not be steps of this batch. The engine
/// must be idle.
pub fn decode_window(engine: &mut LLMEngine, prompts: &[Vec<u32>]) -> anyhow::Result<Window> {
    let n = prompts.len();
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(1 + DECODE_STEPS)
    };
    let mut ids = Vec::with_capacity(n);
    for p in prompts {
        ids.push(engine.add_request(Prompt::TokenIds(p.clone()), params.clone())?);
    }
    // Prefill (several steps if the token budget chunks it) up to every first token.
    let waiting = |e: &LLMEngine| {
        let outputs = |id| e.scheduler.sequence(id).map(|s| s.output_token_ids.len());
        ids.iter().any(|&id| outputs(id) == Some(0))
    };
    while waiting(engine) {
        engine.step()?;
    }
    let comm_before = engine.comm_stats();
    let ranks_before = engine.stage_times();
    let device_before = engine.device_time();
    let t = Instant::now();
    for step in 1..=DECODE_STEPS {
        engine.step()?;
        let s = engine.last_step_stats().copied().unwrap_or_default();
        if s.num_decode_seqs != n || s.num_prefill_seqs != 0 {
            let (decodes, prefills) = (s.num_decode_seqs, s.num_prefill_seqs);
            anyhow::bail!(
                "decode step {step} of {DECODE_STEPS} at batch {n} decoded {decodes} requests \
                 and prefilled {prefills}, not {n} decodes alone (was a request preempted, or \
                 is the KV cache or the model's context shorter than {n} × {} tokens? see \
                 --num-kv-blocks)",
                PROMPT_LEN + DECODE_STEPS + 1
            );
        }
    }
    let wall_s = t.elapsed().as_secs_f64();
    let device_s = match (device_before, engine.device_time()) {
        (Some(a), Some(b)) => Some((b.total - a.total).as_secs_f64()),
        _ => None,
    };
    let comm_after = engine.comm_stats();
    anyhow::ensure!(
        !engine.has_unfinished_requests(),
        "requests were left after {DECODE_STEPS} decode steps at batch {n}"
    );
    let comm = comm_after.iter().zip(&comm_before).map(|(a, b)| a.since(b));
    let ranks_after = engine.stage_times();
    let ranks = ranks_after
        .iter()
        .zip(&ranks_before)
        .map(|(a, b)| a.since(b));
    Ok(Window {
        wall_s,
        device_s,
        comm: comm.collect(),
        ranks: ranks.collect(),
    })
}
// ANCHOR_END: decode_window

// ANCHOR: predicted_all_reduce_bytes
/// All-reduce tensor bytes of one decode step of `batch` rows on a rank of pipeline stage
/// `pp_rank` (of `pp`): two `[batch, hidden]` all-reduces per layer of its stage, and one
/// more after the embedding on the first stage, of `value_bytes` a value. With one TP rank
/// there are none.
pub fn predicted_all_reduce_bytes(
    c: &engine::config::ModelConfig,
    (tp, pp, pp_rank): (usize, usize, usize),
    batch: usize,
    value_bytes: u64,
) -> u64 {
    if tp < 2 {
        return 0;
    }
    let layers = get_pp_indices(c.num_hidden_layers, pp_rank, pp).len();
    let sites = ALL_REDUCES_PER_LAYER * layers + usize::from(pp_rank == 0);
    (sites * batch * c.hidden_size) as u64 * value_bytes
}
// ANCHOR_END: predicted_all_reduce_bytes

// ANCHOR: step_floor_ms
/// The least time a decode step of `batch` requests can take on a rank of `tp` (one pipeline
/// stage) at `copy_gb_s` (the copy bandwidth measured in the same run): the bf16 weights the
/// rank holds (`memory_model::weight_bytes_per_gpu`, its TP shards and replicated norms), each
/// read once, except that the embedding lookup reads one row of its table; plus the K
/// and V rows of every request's context in its KV cache (`kv_bytes_per_token_per_gpu`: KV
/// heads replicated when there are fewer than ranks), at the window's average context: the
/// prompt and half the decoded tokens. Every write is left out, so the figure is a lower bound.
pub fn step_floor_ms(
    c: &engine::config::ModelConfig,
    tp: usize,
    batch: usize,
    copy_gb_s: f64,
) -> f64 {
    use engine::distributed::memory_model::{
        kv_bytes_per_token_per_gpu, vocab_rows_per_rank, weight_bytes_per_gpu, BF16_BYTES,
    };
    let (tp, layers) = (tp.max(1), c.num_hidden_layers);
    let held = weight_bytes_per_gpu(c, tp, layers, true, true) as f64;
    let row = (c.hidden_size as u64 * BF16_BYTES) as f64;
    let table = vocab_rows_per_rank(c.vocab_size, tp) as f64 * row;
    // The lookup reads one row; the LM head reads its table whole (a tied model's one matrix).
    let weights = match c.tie_word_embeddings {
        true => held + row,
        false => held - table + row,
    };
    let context = (PROMPT_LEN + DECODE_STEPS / 2) as f64;
    let kv = batch as f64 * context * kv_bytes_per_token_per_gpu(c, tp, layers) as f64;
    1e3 * (weights + kv) / (copy_gb_s * 1e9)
}
// ANCHOR_END: step_floor_ms

/// The bytes of one value the all-reduces sum, and how they travel: bf16 on the GPUs (NCCL,
/// or the custom all-reduce); f32 through the host's communicator otherwise (the CPU engine
/// always; the rule is the executor's, `distributed::rank_devices::all_reduce_backend`).
pub fn all_reduce_values(engine: &engine::EngineConfig) -> (u64, &'static str) {
    let how = engine::distributed::rank_devices::all_reduce_backend(engine);
    (how.value_bytes(), how.describe())
}

/// Refuses a batch the engine cannot decode in one step.
pub fn check_batch_size(batch: usize, max_num_seqs: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=max_num_seqs).contains(&batch),
        "--batch-size {batch} must be between 1 and the engine's --max-num-seqs \
         ({max_num_seqs}): a decode step of N requests needs N sequences in one step"
    );
    Ok(())
}

/// The all-reduce row of `stats`.
pub fn all_reduce(stats: &CommStats) -> &OpStats {
    stats.op(CommOp::AllReduce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_distinct_rotations_of_decode_b1s() {
        let p = prompts(4, 259);
        assert_eq!(p[0], fit_vocab(&prompt(), 259));
        assert_eq!(p[3][..PROMPT_LEN - 3], p[0][3..]);
        for (i, a) in p.iter().enumerate() {
            assert_eq!(a.len(), PROMPT_LEN);
            assert!(p[i + 1..].iter().all(|b| a != b), "prompt {i} repeats");
        }
    }

    #[test]
    fn the_closed_form_counts_the_embedding_on_the_first_stage_only() {
        let c = engine::tiny_model::tiny_config(); // 2 layers, hidden 64
        let row = 64 * 4; // one row of f32
        assert_eq!(predicted_all_reduce_bytes(&c, (2, 1, 0), 8, 4), 5 * 8 * row);
        assert_eq!(predicted_all_reduce_bytes(&c, (2, 2, 0), 8, 4), 3 * 8 * row);
        assert_eq!(predicted_all_reduce_bytes(&c, (2, 2, 1), 8, 4), 2 * 8 * row);
        assert_eq!(predicted_all_reduce_bytes(&c, (1, 2, 0), 8, 4), 0);
    }

    #[test]
    fn the_floor_is_the_rooflines_bytes_on_one_gpu_and_a_ranks_share_on_several() {
        use crate::bench::roofline::{kv_bytes_per_token, weight_bytes_read};
        let bw = 1.0; // GB/s: the floor is then bytes / 1e6 in ms
        let context = (PROMPT_LEN + DECODE_STEPS / 2) as f64;
        let c = engine::tiny_model::tiny_config();
        let kv = 8.0 * context * kv_bytes_per_token(&c);
        // One GPU: the batch-1 roofline's bytes (computed another way: weights::weight_bytes).
        let one = step_floor_ms(&c, 1, 8, bw);
        let want = (weight_bytes_read(&c) + kv) / 1e6;
        assert!((one - want).abs() < 1e-9 * want, "{one} against {want}");
        // Smaller with more ranks, until the KV heads replicate: then only the weights shrink.
        let kvh = c.num_key_value_heads;
        let (split, over) = (
            step_floor_ms(&c, kvh, 8, bw),
            step_floor_ms(&c, 2 * kvh, 8, bw),
        );
        assert!(split < one && over < split, "{one} {split} {over}");
        let kv_of = |tp| step_floor_ms(&c, tp, 8, bw) - step_floor_ms(&c, tp, 0, bw);
        assert!((kv_of(kvh) - kv / kvh as f64 / 1e6).abs() < 1e-9);
        assert!((kv_of(2 * kvh) - kv_of(kvh)).abs() < 1e-12);
        // Untied or tied LM head, the same at one GPU as the roofline.
        for tied in [false, true] {
            let c = engine::config::ModelConfig {
                tie_word_embeddings: tied,
                ..c.clone()
            };
            let got = step_floor_ms(&c, 1, 0, bw);
            let want = weight_bytes_read(&c) / 1e6;
            assert!(
                (got - want).abs() < 1e-9 * want,
                "tied {tied}: {got} against {want}"
            );
        }
    }

    #[test]
    fn batch_size_zero_and_above_max_num_seqs_are_refused() {
        assert!(check_batch_size(0, 64).is_err());
        assert!(check_batch_size(65, 64).is_err());
        assert!(check_batch_size(64, 64).is_ok());
        assert!(check_batch_size(1, 64).is_ok());
    }
}
