//! Pipeline parallelism (and TP×PP) on the CPU, one thread per rank, against one rank.
//!
//! At TP 1 a pipeline runs exactly the ops one rank runs, in the same order, on the same
//! numbers: the stages only hand the residual stream and the last block's output from one
//! thread to the next. So PP alone must give bit-identical logits, and the tests say so. With
//! TP 2 the row-parallel partial sums are added in another order, so TP×PP is compared as
//! `tests/tensor_parallel.rs` compares TP: logits within `LOGIT_TOLERANCE`, greedy tokens equal
//! wherever the one-rank top-2 margin exceeds twice that, and almost every token compared.

use std::time::{Duration, Instant};

use engine::config::ModelConfig;
use engine::distributed::{CommOp, ExecutedSchedule, StageTimes};
use engine::model_executor::pipeline_parallel::get_pp_indices;
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, EngineParts, LLMEngine, Prompt, SamplingParams};

mod common;
use common::greedy_compare::{compare, generate, LOGIT_TOLERANCE};

/// A small Llama of `layers` layers: 4 query heads and 2 KV heads of 16, 300 ids.
fn shape(layers: usize, tied: bool) -> ModelConfig {
    ModelConfig {
        num_hidden_layers: layers,
        vocab_size: 300,
        tie_word_embeddings: tied,
        ..tiny_config()
    }
}

fn model(config: &ModelConfig, seed: u64) -> LoadedModel {
    LoadedModel {
        name: "test".into(),
        config: config.clone(),
        weights: ModelWeights::Random { seed },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    }
}

fn engine_config(tp: usize, pp: usize) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.cache.block_size = 4;
    c.cache.num_kv_blocks = Some(64);
    c.parallel.tensor_parallel_size = tp;
    c.parallel.pipeline_parallel_size = pp;
    c
}

fn engine(config: &ModelConfig, tp: usize, pp: usize) -> LLMEngine {
    LLMEngine::new(model(config, 5), engine_config(tp, pp)).unwrap()
}

/// Prompts of 3 to 19 tokens: several in a batch, so steps mix prefill and decode.
fn prompts(n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|p| {
            (0..3 + (p * 7) % 17)
                .map(|i| ((p * 31 + i * 13 + 5) % 259) as u32)
                .collect()
        })
        .collect()
}

#[test]
fn pp_alone_gives_the_same_logits_bit_for_bit() {
    // 5 layers: PP 2 runs 3 + 2, PP 3 runs 2 + 2 + 1 (the remainder before the last stage).
    for tied in [false, true] {
        let config = shape(5, tied);
        let prompts = prompts(5);
        let (want, _) = generate(&mut engine(&config, 1, 1), &prompts, 10);
        for pp in [2, 3, 5] {
            let (got, _) = generate(&mut engine(&config, 1, pp), &prompts, 10);
            for (w, g) in want.iter().zip(&got) {
                assert_eq!(w.token_ids, g.token_ids, "PP {pp} tied {tied}");
                assert_eq!(w.logits, g.logits, "PP {pp} tied {tied}: logits");
            }
        }
    }
}

#[test]
fn tp_2_times_pp_2_matches_one_rank() {
    for tied in [false, true] {
        let config = shape(4, tied);
        let prompts = prompts(5);
        let (want, _) = generate(&mut engine(&config, 1, 1), &prompts, 10);
        for (tp, pp) in [(2, 2), (2, 3)] {
            let what = format!("TP {tp} × PP {pp}, tied {tied}");
            let (got, _) = generate(&mut engine(&config, tp, pp), &prompts, 10);
            let (compared, total) = compare(&want, &got, &what);
            assert!(
                compared * 10 >= total * 9,
                "{what}: {compared} of {total} compared"
            );
        }
    }
}

#[test]
fn more_stages_than_layers_is_refused() {
    let err = LLMEngine::new(model(&shape(3, false), 0), engine_config(1, 4))
        .err()
        .expect("PP 4 of 3 layers must be refused")
        .to_string();
    assert!(
        err.contains("test has 3 layers; --pipeline-parallel-size must be at most 3"),
        "{err}"
    );
    let err = LLMEngine::new(model(&shape(3, false), 0), engine_config(1, 0))
        .err()
        .expect("PP 0 is refused")
        .to_string();
    assert!(
        err.contains("--pipeline-parallel-size must be at least 1"),
        "{err}"
    );
}

/// One prefill step of `t` tokens: every stage boundary is one send per TP slice of
/// 2 × t × hidden f32 (delta and residual, fused), received once by the next stage; each
/// stage's TP collectives are its own layers' (two all-reduces each, one more on the stage
/// that embeds, and the logits' gather on the last).
#[test]
fn one_step_sends_the_hidden_state_once_per_boundary() {
    let config = shape(5, false);
    let hidden = config.hidden_size;
    for (tp, pp) in [(1, 2), (1, 3), (2, 2), (2, 3)] {
        let mut engine = engine(&config, tp, pp);
        let prompt: Vec<u32> = (0..7).collect();
        let (out, steps) = generate(&mut engine, std::slice::from_ref(&prompt), 1);
        assert_eq!((out[0].token_ids.len(), steps), (1, 1));
        let stats = engine.comm_stats();
        assert_eq!(stats.len(), tp * pp);
        let bytes = (2 * prompt.len() * hidden * 4) as u64;
        let mut sends = 0;
        for (rank, s) in stats.iter().enumerate() {
            let (stage, what) = (rank / tp, format!("TP {tp} PP {pp} rank {rank}"));
            let send = s.op(CommOp::Send);
            let recv = s.op(CommOp::Recv);
            let sends_here = u64::from(stage + 1 < pp);
            assert_eq!(
                (send.calls, send.tensor_bytes, send.sent_bytes),
                (sends_here, sends_here * bytes, sends_here * bytes),
                "{what}"
            );
            let recvs_here = u64::from(stage > 0);
            assert_eq!(
                (recv.calls, recv.tensor_bytes),
                (recvs_here, recvs_here * bytes),
                "{what}"
            );
            sends += send.calls;
            let layers = get_pp_indices(config.num_hidden_layers, stage, pp).len() as u64;
            let all_reduces = if tp == 1 {
                0
            } else {
                2 * layers + u64::from(stage == 0)
            };
            assert_eq!(s.op(CommOp::AllReduce).calls, all_reduces, "{what}");
            let gathers = u64::from(tp > 1 && stage + 1 == pp);
            assert_eq!(s.op(CommOp::AllGather).calls, gathers, "{what}");
            assert_eq!(s.total().failures, 0);
        }
        assert_eq!(
            sends,
            ((pp - 1) * tp) as u64,
            "TP {tp} PP {pp}: (pp − 1) sends per slice"
        );
    }
}

#[test]
fn every_stage_reports_busy_and_idle_time_of_every_step() {
    let config = shape(4, false);
    let mut engine = engine(&config, 1, 3);
    let (_, steps) = generate(&mut engine, &prompts(3), 4);
    let times: Vec<StageTimes> = engine.stage_times();
    assert_eq!(times.len(), 3);
    let wall = times[0].busy + times[0].idle;
    for (stage, t) in times.iter().enumerate() {
        assert_eq!(t.steps, steps, "stage {stage}");
        assert!(t.busy > Duration::ZERO, "stage {stage}");
        // busy + idle is the steps' wall time, the same for every stage.
        assert_eq!(t.busy + t.idle, wall, "stage {stage}");
        assert!((0.0..1.0).contains(&t.idle_fraction()));
    }
    assert_eq!(
        times[0].recv_wait,
        Duration::ZERO,
        "the first stage receives nothing"
    );
    // A later stage waits at least while the stage before it computes.
    assert!(times[1].recv_wait > Duration::ZERO && times[2].recv_wait > Duration::ZERO);
    assert!(engine_single_has_no_stage_times());
}

fn engine_single_has_no_stage_times() -> bool {
    engine(&shape(2, false), 1, 1).stage_times().is_empty()
}

/// The engine's fused add + RMSNorm, except on stage 1's thread (TP rank 0).
fn fused_add_rms_norm_failing_on_stage_1(x: &mut [f32], res: &mut [f32], w: &[f32], eps: f32) {
    if std::thread::current().name() == Some("pp-1-tp-0") {
        panic!("injected failure");
    }
    engine::ops::rms_norm::fused_add_rms_norm(x, res, w, eps)
}

#[test]
fn a_stage_that_panics_fails_the_step_not_hangs() {
    for tp in [1, 2] {
        let mut parts = EngineParts::default();
        parts.kernels.fused_add_rms_norm = fused_add_rms_norm_failing_on_stage_1;
        let config = shape(3, false);
        let mut engine =
            LLMEngine::with_parts(model(&config, 0), engine_config(tp, 3), parts).unwrap();
        engine
            .add_request(Prompt::TokenIds(vec![1, 2, 3]), SamplingParams::greedy(4))
            .unwrap();
        let start = Instant::now();
        let err = engine.step().expect_err("the step fails").to_string();
        assert!(
            err.contains("pipeline stage 1, tensor-parallel rank 0) panicked")
                && err.contains("injected failure"),
            "{err}"
        );
        // Stage 2 learns at once that stage 1 is gone, not after the 60 s timeout.
        assert!(start.elapsed() < Duration::from_secs(20));
        let again = engine.step().expect_err("later steps fail too").to_string();
        assert!(again.contains("failed earlier"), "{again}");
    }
}

/// `lab generate --pp 2` and `--tp 2 --pp 2` print what the default prints.
#[test]
fn lab_generate_with_pp_prints_the_same_text() {
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(["generate", "--device", "cpu", "--max-tokens", "12"])
            .args(["--prompt", "hello world", "--prompt", "pipeline parallel"])
            .args(extra)
            .output()
            .expect("lab runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, one, err) = run(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(one.contains("output:"), "{one}");
    for extra in [
        &["--pp", "2"][..],
        &["--tp", "2", "--pp", "2"],
        &["--pipeline-parallel-size", "2"],
        &["--pp", "2", "--pipeline-micro-batches", "2"],
    ] {
        let (code, text, err) = run(extra);
        assert_eq!(code, Some(0), "{extra:?}: {err}");
        assert_eq!(text, one, "{extra:?}");
    }
    let (code, _, err) = run(&["--pp", "2", "--pipeline-micro-batches", "0"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--pipeline-micro-batches must be at least 1"),
        "{err}"
    );
    // The built-in tiny model has 2 layers.
    let (code, _, err) = run(&["--pp", "3"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--pipeline-parallel-size must be at most 2"),
        "{err}"
    );
}

/// The engine's fused add + RMSNorm, after a pause on stage 0's thread.
fn fused_add_rms_norm_slow_on_stage_0(x: &mut [f32], res: &mut [f32], w: &[f32], eps: f32) {
    if std::thread::current().name() == Some("pp-0-tp-0") {
        std::thread::sleep(Duration::from_millis(1500));
    }
    engine::ops::rms_norm::fused_add_rms_norm(x, res, w, eps)
}

#[test]
fn a_hung_stage_fails_the_next_one_after_the_timeout() {
    let mut parts = EngineParts::default();
    parts.kernels.fused_add_rms_norm = fused_add_rms_norm_slow_on_stage_0;
    let mut config = engine_config(1, 2);
    config.parallel.collective_timeout = Duration::from_millis(200);
    let mut engine = LLMEngine::with_parts(model(&shape(2, false), 0), config, parts).unwrap();
    engine
        .add_request(Prompt::TokenIds(vec![1, 2, 3]), SamplingParams::greedy(4))
        .unwrap();
    let start = Instant::now();
    let err = engine.step().expect_err("stage 1 times out").to_string();
    // Stage 1 waits 200 ms for stage 0's state, fails, and the executor waits 200 ms more.
    assert!(
        err.contains("rank 1: recv timed out") && err.contains("waiting for rank 0"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_millis(1400));
    drop(engine); // joins stage 0 once it wakes and finds stage 1 gone
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 8, ..Default::default() })]

    /// Random layer counts, stage counts and TP sizes: one step's logits match one rank's
    /// (bit for bit without TP).
    #[test]
    fn one_step_logits_match_one_rank(
        layers in 1usize..7,
        pp in 1usize..5,
        tp in 1usize..3,
        tied in proptest::prelude::any::<bool>(),
        seed in 0u64..1000,
    ) {
        let pp = pp.min(layers);
        let config = shape(layers, tied);
        let one = LLMEngine::new(model(&config, seed), engine_config(1, 1)).unwrap();
        let many = LLMEngine::new(model(&config, seed), engine_config(tp, pp)).unwrap();
        let prompts = prompts(3);
        let (want, _) = generate(&mut { one }, &prompts, 2);
        let (got, _) = generate(&mut { many }, &prompts, 2);
        for (w, g) in want.iter().zip(&got) {
            let diff = w.logits[0].iter().zip(&g.logits[0]).map(|(a, b)| (a - b).abs());
            let diff = diff.fold(0.0, f32::max);
            let tolerance = if tp == 1 { 0.0 } else { LOGIT_TOLERANCE };
            proptest::prop_assert!(diff <= tolerance, "TP {} PP {} of {} layers: {}", tp, pp, layers, diff);
        }
    }
}

fn engine_with_micro_batches(config: &ModelConfig, tp: usize, pp: usize, m: usize) -> LLMEngine {
    let mut c = engine_config(tp, pp);
    c.parallel.pipeline_micro_batches = Some(m);
    LLMEngine::new(model(config, 5), c).unwrap()
}

/// Splitting a step's sequences into micro-batches changes no bit: the kernels are batch
/// invariant and every sequence is computed whole within its micro-batch.
#[test]
fn micro_batches_give_the_same_logits_bit_for_bit() {
    let config = shape(5, false);
    let prompts = prompts(7);
    let (want, _) = generate(&mut engine(&config, 1, 1), &prompts, 6);
    for (pp, m) in [(2, 1), (2, 3), (3, 2), (3, 7), (4, 16)] {
        let (got, _) = generate(
            &mut engine_with_micro_batches(&config, 1, pp, m),
            &prompts,
            6,
        );
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.token_ids, g.token_ids, "PP {pp} M {m}");
            assert_eq!(w.logits, g.logits, "PP {pp} M {m}: logits");
        }
    }
    let (got, _) = generate(
        &mut engine_with_micro_batches(&config, 2, 2, 3),
        &prompts,
        6,
    );
    let (compared, total) = compare(&want, &got, "TP 2 × PP 2, M 3");
    assert!(compared * 10 >= total * 9, "{compared} of {total} compared");
}

#[test]
fn zero_micro_batches_is_refused() {
    let mut c = engine_config(1, 2);
    c.parallel.pipeline_micro_batches = Some(0);
    let err = LLMEngine::new(model(&shape(2, false), 0), c)
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("--pipeline-micro-batches must be at least 1"),
        "{err}"
    );
}

/// One step of `m` prefills through `pp` stages of a 4-layer model: the schedule it ran.
fn one_step_schedule(pp: usize, m: usize, tp: usize) -> (LLMEngine, ExecutedSchedule) {
    let mut engine = engine_with_micro_batches(&shape(4, false), tp, pp, m);
    for p in prompts(m) {
        engine
            .add_request(Prompt::TokenIds(p), SamplingParams::greedy(2))
            .unwrap();
    }
    engine.step().unwrap();
    let schedule = engine
        .pipeline_schedule()
        .expect("a pipeline records its schedule");
    (engine, schedule)
}

/// Three stages, three micro-batches: every stage runs 0, 1, 2 in order, stage s runs m at
/// tick s + m, each boundary carries one send per micro-batch, and the bubble is 2/5.
#[test]
fn three_stages_overlap_three_micro_batches() {
    let (mut engine, s) = one_step_schedule(3, 3, 1);
    assert_eq!((s.step, s.num_stages, s.num_micro_batches), (0, 3, 3));
    for stage in 0..3 {
        assert_eq!(s.stage_order(stage), [0, 1, 2], "stage {stage}");
    }
    for i in &s.items {
        assert_eq!(
            (i.tick_start, i.tick_end),
            (
                (i.stage + i.micro_batch) as u64,
                (i.stage + i.micro_batch + 1) as u64
            )
        );
        assert_eq!(i.num_seqs, 1);
        assert!(i.wall_end > i.wall_start && i.wall_end <= s.wall, "{i:?}");
    }
    assert!(s.overlaps());
    let b = s.bubble();
    assert_eq!(
        (b.idle, b.total),
        (6, 15),
        "3 stages × 5 ticks, 9 of them busy"
    );
    for (rank, st) in engine.comm_stats().iter().enumerate() {
        let sends = st.op(CommOp::Send).calls;
        assert_eq!(
            sends,
            if rank < 2 { 3 } else { 0 },
            "rank {rank}: one send per micro-batch"
        );
    }
    // Per stage, busy and idle of the step add up to its wall time.
    for stage in 0..3 {
        assert_eq!(s.busy(stage) + s.idle(stage), s.wall);
    }
}

/// With one stage there is no pipeline and no schedule.
#[test]
fn one_stage_records_no_schedule() {
    let (out, _) = generate(
        &mut engine_with_micro_batches(&shape(2, false), 2, 1, 4),
        &prompts(2),
        1,
    );
    assert_eq!(out.len(), 2);
    assert!(engine_with_micro_batches(&shape(2, false), 2, 1, 4)
        .pipeline_schedule()
        .is_none());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]

    /// Random micro-batch and stage counts: the schedule the engine ran, in ticks (each
    /// stage-forward of a micro-batch one tick, started at max(the stage's free time, its
    /// input's arrival)), has the bubble 1 − M/(M + S − 1) exactly, every stage runs the
    /// micro-batches in order, and stages overlap whenever M > 1 and S > 1 (a pipeline whose
    /// stage 0 waited for the last stage's tick before its next micro-batch would take M·S
    /// ticks and fail both). The ticks travel with the activations only: a pipeline serialized
    /// through another channel (a barrier after each micro-batch) keeps these ticks and is
    /// caught in wall-clock time by `stages_overlap_in_wall_clock_time`. S = 1 runs no
    /// pipeline: nothing idles, and no schedule is recorded.
    #[test]
    fn the_executed_bubble_is_one_minus_m_over_m_plus_s_minus_1(m in 1usize..=8, s in 1usize..=4, tp in 1usize..=2) {
        if s == 1 {
            let e = engine_with_micro_batches(&shape(4, false), tp, 1, m);
            proptest::prop_assert!(e.pipeline_schedule().is_none());
            return Ok(());
        }
        let (_, sched) = one_step_schedule(s, m, tp);
        proptest::prop_assert_eq!(sched.num_micro_batches, m);
        proptest::prop_assert_eq!(sched.items.len(), m * s);
        let b = sched.bubble();
        // idle / total == (S − 1) / (M + S − 1), in integers.
        proptest::prop_assert_eq!(b.total, (s * (m + s - 1)) as u64);
        proptest::prop_assert_eq!(b.idle * (m + s - 1) as u64, b.total * (s - 1) as u64);
        let efficiency = m as f64 / (m + s - 1) as f64;
        proptest::prop_assert!((b.efficiency() - efficiency).abs() < 1e-12);
        for stage in 0..s {
            proptest::prop_assert_eq!(sched.stage_order(stage), (0..m).collect::<Vec<_>>());
        }
        proptest::prop_assert_eq!(sched.overlaps(), m > 1);
        for stage in 0..s {
            proptest::prop_assert_eq!(sched.busy(stage) + sched.idle(stage), sched.wall);
        }
    }
}

/// The chapter's measurement (`cargo test -p engine --test pipeline_parallel -- --ignored
/// --nocapture measure`): one prefill step of a 8-layer Llama of hidden size 512 (random
/// weights) through 4 stages, for one request and for 8 requests in 1, 4 and 8 micro-batches;
/// prints what each stage ran, in ticks and in wall-clock time, and each stage's busy and idle
/// time. Not asserted against bounds: the times are this machine's.
#[test]
#[ignore]
fn measure_the_pipeline_on_this_cpu() {
    let config = ModelConfig {
        hidden_size: 512,
        intermediate_size: 1536,
        num_hidden_layers: 8,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        head_dim: 64,
        ..shape(8, false)
    };
    let run = |requests: usize, m: usize| {
        let mut c = engine_config(1, 4);
        c.cache.num_kv_blocks = Some(256);
        c.parallel.pipeline_micro_batches = Some(m);
        let mut engine = LLMEngine::new(model(&config, 1), c).unwrap();
        // Warm up the threads and caches with one step of the same shape, then measure.
        for round in 0..2 {
            for r in 0..requests {
                let prompt: Vec<u32> = (0..32)
                    .map(|i| ((r * 37 + i * 11 + round) % 250) as u32)
                    .collect();
                engine
                    .add_request(Prompt::TokenIds(prompt), SamplingParams::greedy(1))
                    .unwrap();
            }
            while engine.has_unfinished_requests() {
                engine.step().unwrap();
            }
        }
        engine.pipeline_schedule().unwrap()
    };
    for (requests, m) in [(1, 1), (8, 1), (8, 4), (8, 8)] {
        let s = run(requests, m);
        let b = s.bubble();
        println!(
            "\n{requests} request(s) of 32 tokens, S = 4, M = {m}: step {:.2} ms, bubble in ticks {}/{} = {:.3} (formula {:.3})",
            s.wall.as_secs_f64() * 1e3,
            b.idle,
            b.total,
            b.fraction(),
            1.0 - m as f64 / (m + 3) as f64
        );
        println!("stage  mb  seqs  ticks   start ms   end ms  recv wait ms");
        for i in &s.items {
            println!(
                "{:>5} {:>3} {:>5} {:>3}..{:<3} {:>8.2} {:>8.2} {:>10.2}",
                i.stage,
                i.micro_batch,
                i.num_seqs,
                i.tick_start,
                i.tick_end,
                i.wall_start.as_secs_f64() * 1e3,
                i.wall_end.as_secs_f64() * 1e3,
                i.recv_wait.as_secs_f64() * 1e3
            );
        }
        for stage in 0..4 {
            let (busy, idle) = (s.busy(stage), s.idle(stage));
            println!(
                "stage {stage}: busy {:.2} ms, idle {:.2} ms ({:.0}% idle)",
                busy.as_secs_f64() * 1e3,
                idle.as_secs_f64() * 1e3,
                100.0 * idle.as_secs_f64() / s.wall.as_secs_f64()
            );
        }
    }
}

/// The engine's fused add + RMSNorm after a 10 ms sleep, on every rank: each stage-forward
/// then takes tens of milliseconds, almost none of it on a core, so on any machine the stages
/// can overlap in wall-clock time.
fn fused_add_rms_norm_sleeping(x: &mut [f32], res: &mut [f32], w: &[f32], eps: f32) {
    std::thread::sleep(Duration::from_millis(10));
    engine::ops::rms_norm::fused_add_rms_norm(x, res, w, eps)
}

/// In wall-clock time too: stage s − 1 starts micro-batch m before stage s has finished m − 1
/// (a pipeline that serialized its micro-batches, through any channel, would not), and the
/// step takes well under the sum of its items.
#[test]
fn stages_overlap_in_wall_clock_time() {
    let mut parts = EngineParts::default();
    parts.kernels.fused_add_rms_norm = fused_add_rms_norm_sleeping;
    let mut c = engine_config(1, 3);
    c.parallel.pipeline_micro_batches = Some(3);
    let mut engine = LLMEngine::with_parts(model(&shape(3, false), 0), c, parts).unwrap();
    for p in prompts(3) {
        engine
            .add_request(Prompt::TokenIds(p), SamplingParams::greedy(1))
            .unwrap();
    }
    engine.step().unwrap();
    let s = engine.pipeline_schedule().unwrap();
    let item = |stage: usize, mb: usize| {
        s.items
            .iter()
            .find(|i| i.stage == stage && i.micro_batch == mb)
            .unwrap()
    };
    for stage in 1..3 {
        for mb in 1..3 {
            let (earlier, later) = (item(stage - 1, mb), item(stage, mb - 1));
            assert!(
                earlier.wall_start < later.wall_end,
                "stage {} started micro-batch {mb} at {:?}, after stage {stage} finished {} at {:?}",
                stage - 1,
                earlier.wall_start,
                mb - 1,
                later.wall_end
            );
        }
    }
    let sum: Duration = (0..3).map(|stage| s.busy(stage)).sum();
    assert!(
        s.wall.as_secs_f64() < 0.8 * sum.as_secs_f64(),
        "step {:?}, items {sum:?}",
        s.wall
    );
}
