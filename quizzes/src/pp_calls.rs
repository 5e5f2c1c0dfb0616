//! Quiz checks of Stage 6 (pipeline parallelism): every number is read off the schedule the
//! engine's CPU pipeline executed (one thread per stage), not computed from a formula.
//!
//! ```toml
//! check = { fn = "pipeline_executed", args = { stages = 4, micro_batches = 1, output = "efficiency" } }
//! ```

use engine::config::ModelConfig;
use engine::distributed::ExecutedSchedule;
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};

use crate::engine_calls::int;

/// The check functions this module answers.
pub const FUNCTIONS: &[&str] = &["pipeline_executed"];

/// One step of `micro_batches` prompts through `stages` stages in `micro_batches`
/// micro-batches, on a random-weight Llama of `max(stages, 4)` layers (hidden 64): the
/// schedule the engine's pipeline ran. Each shape runs once per process (a run starts one
/// thread per stage; the quiz templates ask several outputs of the same schedule).
pub fn executed_schedule(stages: usize, micro_batches: usize) -> Result<ExecutedSchedule, String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static RUNS: Mutex<Option<HashMap<(usize, usize), ExecutedSchedule>>> = Mutex::new(None);
    let key = (stages, micro_batches);
    let cached = || RUNS.lock().ok()?.as_ref()?.get(&key).cloned();
    if let Some(schedule) = cached() {
        return Ok(schedule);
    }
    let schedule = run_schedule(stages, micro_batches)?;
    if let Ok(mut runs) = RUNS.lock() {
        runs.get_or_insert_with(HashMap::new)
            .insert(key, schedule.clone());
    }
    Ok(schedule)
}

fn run_schedule(stages: usize, micro_batches: usize) -> Result<ExecutedSchedule, String> {
    if stages < 2 || micro_batches == 0 {
        return Err("a pipeline needs at least 2 stages and 1 micro-batch".into());
    }
    let config = ModelConfig {
        num_hidden_layers: stages.max(4),
        ..tiny_config()
    };
    let model = LoadedModel {
        name: "quiz-pipeline".into(),
        config,
        weights: ModelWeights::Random { seed: 6 },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    };
    let mut c = EngineConfig::default();
    c.cache.block_size = 4;
    c.cache.num_kv_blocks = Some(16 * micro_batches);
    c.parallel.pipeline_parallel_size = stages;
    c.parallel.pipeline_micro_batches = Some(micro_batches);
    let mut engine = LLMEngine::new(model, c).map_err(|e| e.to_string())?;
    for r in 0..micro_batches {
        let prompt: Vec<u32> = (0..4).map(|i| ((r * 13 + i * 5) % 250) as u32).collect();
        engine
            .add_request(Prompt::TokenIds(prompt), SamplingParams::greedy(1))
            .map_err(|e| e.to_string())?;
    }
    engine.step().map_err(|e| e.to_string())?;
    engine
        .pipeline_schedule()
        .ok_or_else(|| "the engine recorded no schedule".into())
}

/// Calls the check function `name` (one of [`FUNCTIONS`]).
pub fn call(name: &str, args: &toml::Table) -> Result<f64, String> {
    debug_assert_eq!(name, "pipeline_executed");
    let (s, m) = (int(args, "stages")?, int(args, "micro_batches")?);
    let schedule = executed_schedule(s, m)?;
    let bubble = schedule.bubble();
    let items = schedule.timed_items();
    let output = args.get("output").and_then(|v| v.as_str()).unwrap_or("");
    Ok(match output {
        // The step's length in ticks: the last item's end (the first starts at 0).
        "ticks" => items.iter().map(|i| i.end).max().unwrap_or(0) as f64,
        "busy_units" => (bubble.total - bubble.idle) as f64,
        "idle_units" => bubble.idle as f64,
        "efficiency" => bubble.efficiency(),
        "busy_stages_at_tick" => {
            let t = int(args, "tick")? as u64;
            items.iter().filter(|i| i.start <= t && t < i.end).count() as f64
        }
        "start_tick" => {
            let (stage, mb) = (int(args, "stage")?, int(args, "micro_batch")?);
            items
                .iter()
                .find(|i| i.stage == stage && i.micro_batch == mb)
                .ok_or_else(|| format!("no item for stage {stage}, micro-batch {mb}"))?
                .start as f64
        }
        other => return Err(format!("unknown output `{other}`")),
    })
}
