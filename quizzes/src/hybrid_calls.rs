//! The Stage 7 quiz's check functions: hybrid TP × PP, answered by the engine's rank layout,
//! memory model and planner.
//!
//! - `rank_place`: where world rank `rank` of a `tp × pp` world sits
//!   (`parallel_state::RankLayout`): its stage, its TP slice, the first rank of its TP group,
//!   or the rank it sends its hidden state to (the same slice of the next stage).
//! - `split_memory`: what one GPU of a `tp × pp` split of a model holds
//!   (`memory_model`): the weights of the stage that holds the most (or of stage `stage`), or
//!   the KV cache bytes per token of context.
//! - `plan`: what `lab plan` recommends for a model on `gpus` GPUs of `gpu_memory_gb` over
//!   NVLink (`planner::plan`): the TP size, PP size, copies side by side, a candidate's
//!   estimated batch-1 step in ms or its KV tokens per GPU.

use engine::config::ModelConfig;
use engine::distributed::comm_model::Interconnect;
use engine::distributed::memory_model::{
    layers_per_stage, stage_kv_bytes_per_token_per_gpu, stage_weight_bytes_per_gpu, tp_split_error,
};
use engine::distributed::parallel_state::RankLayout;
use engine::distributed::planner::{plan as make_plan, Goal, Hardware, Workload};

use crate::engine_calls::{float, int, model_config, text};

type Args = toml::Table;

/// The names [`call`] answers.
pub const FUNCTIONS: &[&str] = &["rank_place", "split_memory", "plan"];

/// A config of engine/configs by name (the 70B shapes too), else the quiz crate's names.
pub(crate) fn model(args: &Args) -> Result<ModelConfig, String> {
    let name = text(args, "model")?;
    let path = format!(
        "{}/../engine/configs/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    match std::fs::read_to_string(&path) {
        Ok(json) => ModelConfig::from_json(&json).map_err(|e| e.to_string()),
        Err(_) => model_config(name),
    }
}

fn rank_place(args: &Args) -> Result<f64, String> {
    let layout = RankLayout {
        tp: int(args, "tp")?,
        pp: int(args, "pp")?,
    };
    let rank = int(args, "rank")?;
    if layout.tp == 0 || layout.pp == 0 || rank >= layout.world_size() {
        return Err("need tp, pp >= 1 and rank < tp × pp".into());
    }
    let (pp_rank, tp_rank) = layout.coords(rank);
    let value = match text(args, "output")? {
        "stage" => pp_rank,
        "tp_rank" => tp_rank,
        "tp_group_first" => layout.tp_group_of(rank)[0],
        "sends_to" => *layout
            .pp_group_of(rank)
            .get(pp_rank + 1)
            .ok_or("the last stage sends to no stage")?,
        other => return Err(format!("unknown output `{other}`")),
    };
    Ok(value as f64)
}

fn split_memory(args: &Args) -> Result<f64, String> {
    let c = model(args)?;
    let (tp, pp) = (int(args, "tp")?, int(args, "pp")?);
    if let Some(why) = tp_split_error(&c, tp) {
        return Err(why);
    }
    if pp == 0 || pp > c.num_hidden_layers {
        return Err(format!("PP={pp} for {} layers", c.num_hidden_layers));
    }
    let per_stage = match text(args, "output")? {
        "weight_bytes" => stage_weight_bytes_per_gpu(&c, tp, pp),
        "kv_bytes_per_token" => stage_kv_bytes_per_token_per_gpu(&c, tp, pp),
        "layers" => layers_per_stage(c.num_hidden_layers, pp)
            .into_iter()
            .map(|l| l as u64)
            .collect(),
        other => return Err(format!("unknown output `{other}`")),
    };
    let value = match int(args, "stage") {
        Ok(s) => *per_stage.get(s).ok_or("`stage` is past the last stage")?,
        Err(_) => *per_stage.iter().max().expect("pp >= 1"),
    };
    Ok(value as f64)
}

fn plan(args: &Args) -> Result<f64, String> {
    let c = model(args)?;
    let hw = Hardware::new(
        int(args, "gpus")?,
        float(args, "gpu_memory_gb")?,
        Interconnect::NvLink,
    );
    let goal: Goal = text(args, "goal")?.parse()?;
    let p = make_plan(&c, &hw, &Workload::for_model(&c), goal).map_err(|e| e.to_string())?;
    let chosen = &p.candidates[p.recommended];
    let candidate = || -> Result<_, String> {
        let (tp, pp) = (int(args, "tp")?, int(args, "pp")?);
        (p.candidates.iter())
            .find(|x| x.tp == tp && x.pp == pp)
            .ok_or_else(|| format!("TP={tp}×PP={pp} is not a candidate"))
    };
    Ok(match text(args, "output")? {
        "tp" => chosen.tp as f64,
        "pp" => chosen.pp as f64,
        "replicas" => chosen.replicas as f64,
        "latency_ms" => candidate()?.latency_s * 1e3,
        "kv_tokens" => candidate()?.max_kv_tokens as f64,
        other => return Err(format!("unknown output `{other}`")),
    })
}

/// Calls the Stage 7 check function `name`.
pub fn call(name: &str, args: &Args) -> Result<f64, String> {
    match name {
        "rank_place" => rank_place(args),
        "split_memory" => split_memory(args),
        "plan" => plan(args),
        other => Err(format!("unknown Stage 7 check `{other}`")),
    }
}
