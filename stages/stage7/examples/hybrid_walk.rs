//! One request walked through the ranks of a TP 2 × PP 2 run on the CPU, with the engine's own
//! counters and timings (the book's Stage 7 chapter shows this program's output).
//!
//! ```sh
//! cargo run --release -p stage7 --example hybrid_walk
//! ```
//!
//! A synthetic Llama (random weights) of 8 layers, hidden 256, 8 query heads and 4 KV heads of
//! 32, MLP 768, 1024 ids. One request of 12 prompt tokens, 4 new tokens, greedy: step 1 is the
//! prefill, steps 2-4 decode one token each. After every step the program reads each rank's
//! communicator counters (`LLMEngine::comm_stats`), busy and idle time
//! (`LLMEngine::stage_times`) and the pipeline's schedule (`LLMEngine::pipeline_schedule`), and
//! prints what that step added. Last, the same request on one rank: the tokens must agree.

use engine::config::ModelConfig;
use engine::distributed::parallel_state::RankLayout;
use engine::distributed::{CommOp, CommStats, StageTimes};
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};

const TP: usize = 2;
const PP: usize = 2;
const NEW_TOKENS: usize = 4;

fn shape() -> ModelConfig {
    ModelConfig {
        hidden_size: 256,
        intermediate_size: 768,
        num_hidden_layers: 8,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        head_dim: 32,
        vocab_size: 1024,
        ..tiny_config()
    }
}

fn engine(tp: usize, pp: usize) -> LLMEngine {
    let model = LoadedModel {
        name: "synthetic-8-layer".into(),
        config: shape(),
        weights: ModelWeights::Random { seed: 7 },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    };
    let mut c = EngineConfig::default();
    c.cache.block_size = 4;
    c.cache.num_kv_blocks = Some(32);
    c.parallel.tensor_parallel_size = tp;
    c.parallel.pipeline_parallel_size = pp;
    LLMEngine::new(model, c).expect("the engine starts")
}

fn prompt() -> Vec<u32> {
    (0..12).map(|i| (i * 37 + 11) % 1024).collect()
}

/// Runs the request to the end, calling `after_step` after every step; returns its tokens.
fn run(engine: &mut LLMEngine, mut after_step: impl FnMut(&mut LLMEngine, usize)) -> Vec<u32> {
    let mut params = SamplingParams::greedy(NEW_TOKENS);
    params.ignore_eos = true;
    engine
        .add_request(Prompt::TokenIds(prompt()), params)
        .expect("a valid request");
    let (mut step, mut tokens) = (0, Vec::new());
    while engine.has_unfinished_requests() {
        for out in engine.step().expect("the step runs") {
            tokens = out.token_ids;
        }
        step += 1;
        after_step(engine, step);
    }
    tokens
}

/// `calls × bytes` of one kind of call that this step added (`-` when none).
fn delta(now: &CommStats, before: &CommStats, op: CommOp) -> String {
    let (n, b) = (now.op(op), before.op(op));
    match n.calls - b.calls {
        0 => "-".into(),
        calls => format!("{calls} × {} B", (n.tensor_bytes - b.tensor_bytes) / calls),
    }
}

fn us(d: std::time::Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn main() {
    let c = shape();
    let layout = RankLayout { tp: TP, pp: PP };
    println!(
        "TP {TP} × PP {PP} on the CPU, one thread per rank ({} cores, {}): a synthetic Llama of \
         {} layers, hidden {}, {} heads and {} KV heads of {}, MLP {}, {} ids (random weights);\n\
         one request of {} prompt tokens, {NEW_TOKENS} new tokens, greedy.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH,
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.intermediate_size,
        c.vocab_size,
        prompt().len(),
    );
    let stages = engine::distributed::memory_model::layers_per_stage(c.num_hidden_layers, PP);
    println!("rank  stage  TP slice  layers  TP group  PP group");
    for rank in 0..layout.world_size() {
        let (p, t) = layout.coords(rank);
        let first: usize = stages[..p].iter().sum();
        println!(
            "{rank:>4}  {p:>5}  {t:>8}  {:>6}  {:>8}  {:>8}",
            format!("{}-{}", first, first + stages[p] - 1),
            format!("{:?}", layout.tp_group_of(rank)),
            format!("{:?}", layout.pp_group_of(rank)),
        );
    }

    let mut hybrid = engine(TP, PP);
    let world = layout.world_size();
    let mut stats_before = vec![CommStats::default(); world];
    let mut times_before = vec![StageTimes::default(); world];
    let tokens = run(&mut hybrid, |e, step| {
        let stats = e.comm_stats();
        let times = e.stage_times();
        let kind = if step == 1 { "prefill" } else { "decode" };
        println!("\nstep {step} ({kind}): what each rank's counters and clocks added");
        println!(
            "rank  all-reduce       all-gather    send          recv          busy µs  recv-wait µs  idle µs"
        );
        for r in 0..world {
            let (s, b) = (&stats[r], &stats_before[r]);
            let (t, tb) = (&times[r], &times_before[r]);
            println!(
                "{r:>4}  {:<15}  {:<12}  {:<12}  {:<12}  {:>7}  {:>12}  {:>7}",
                delta(s, b, CommOp::AllReduce),
                delta(s, b, CommOp::AllGather),
                delta(s, b, CommOp::Send),
                delta(s, b, CommOp::Recv),
                us(t.busy - tb.busy),
                us(t.recv_wait - tb.recv_wait),
                us(t.idle - tb.idle),
            );
        }
        if let Some(sched) = e.pipeline_schedule() {
            let items: Vec<String> = (sched.items.iter())
                .map(|i| {
                    format!(
                        "stage {} µ-batch {} ({} seq) {}-{} µs",
                        i.stage,
                        i.micro_batch,
                        i.num_seqs,
                        us(i.wall_start),
                        us(i.wall_end)
                    )
                })
                .collect();
            println!(
                "schedule: {} micro-batch(es), step wall {} µs: {}",
                sched.num_micro_batches,
                us(sched.wall),
                items.join("; ")
            );
        }
        stats_before = stats;
        times_before = times;
    });
    let single = run(&mut engine(1, 1), |_, _| {});
    println!("\ntokens at TP {TP} × PP {PP}: {tokens:?}");
    println!("tokens on one rank:   {single:?}");
    assert_eq!(
        tokens, single,
        "the hybrid run must give the one-rank tokens"
    );
}
