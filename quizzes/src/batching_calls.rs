//! The Days 15-16 questions' check functions: continuous batching, token budgets, tenants,
//! prefix caching and preemption, each answered by driving the engine's own `Scheduler` (and
//! its block manager, policies and swap space) step by step with a fake model that samples
//! token 7 for every sequence that needs logits. Nothing here recomputes a formula.
//!
//! - `prefill_steps`: a long prompt admitted while `num_decodes` requests decode; how many
//!   steps until its first token, and how many of its tokens a given step computes.
//! - `budget_step`: one step that mixes decodes and new prompts under a token budget.
//! - `batching_run`: requests with given output lengths through a batch of `batch_size`
//!   slots, static (a new batch only when the last has finished) or continuous (a freed slot
//!   is refilled in the next step).
//! - `tenant_share`: tenants with weights under the `fair`, `qos` or `fcfs` policy; tokens or
//!   steps a tenant gets.
//! - `prefix_hit`: a second prompt sharing a prefix with a first one, prefix caching on.
//! - `preemption_cost`: the first preemption of a decode-only workload by swap or recompute;
//!   blocks copied or tokens computed again.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::config::SchedulerConfig;
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::preemption::{PreemptionConfig, PreemptionMode};
use engine::core::scheduler::Scheduler;
use engine::core::scheduler_output::SchedulerOutput;
use engine::core::scheduling_policy::{policy_from_name, SchedulingPolicy};
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence};

use crate::engine_calls::{int, text};

type Args = toml::Table;

/// The names [`call`] answers.
pub const FUNCTIONS: &[&str] = &[
    "prefill_steps",
    "budget_step",
    "batching_run",
    "tenant_share",
    "prefix_hit",
    "preemption_cost",
];

/// A step cap for every loop below: a workload that does not finish is an error, not a hang.
const MAX_STEPS: usize = 100_000;

fn list(args: &Args, key: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("argument `{key}` must be a list of non-negative integers");
    args.get(key)
        .and_then(|v| v.as_array())
        .ok_or_else(bad)?
        .iter()
        .map(|v| {
            v.as_integer()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// A scheduler with `max_num_seqs` slots, a token budget, chunked prefill on, and `num_blocks`
/// blocks of `block_size` tokens (prefix caching as asked).
fn scheduler(
    block_size: usize,
    num_blocks: usize,
    budget: usize,
    max_num_seqs: usize,
    policy: Box<dyn SchedulingPolicy>,
    prefix_caching: bool,
) -> Result<Scheduler, String> {
    if block_size == 0 || budget == 0 || max_num_seqs == 0 {
        return Err("block size, token budget and sequence slots must be at least 1".into());
    }
    let config = SchedulerConfig {
        max_num_seqs,
        max_num_batched_tokens: budget,
        enable_chunked_prefill: true,
        ..SchedulerConfig::default()
    };
    let blocks = BlockManager::new(block_size, Box::new(RefCountingAllocator::new(num_blocks)))
        .with_prefix_caching(prefix_caching);
    Ok(Scheduler::new(config, policy, blocks, vec![], usize::MAX))
}

fn fcfs() -> Box<dyn SchedulingPolicy> {
    policy_from_name("fcfs", &[]).expect("fcfs exists")
}

/// A request of `prompt` tokens that generates `max_tokens` tokens (no EOS: the fake model
/// samples token 7, which ends nothing).
fn request(id: u64, prompt: Vec<u32>, max_tokens: usize) -> Sequence {
    Sequence::new(SeqId(id), prompt, SamplingParams::greedy(max_tokens))
}

/// `len` distinct tokens starting at `first` (distinct so that no two blocks hash alike
/// unless a question makes them).
fn tokens(first: u32, len: usize) -> Vec<u32> {
    (first..first + len as u32).collect()
}

/// The model's side of a step: token 7 for each sequence that needs logits. Returns the ids
/// of the sequences that finished.
fn finish_step(s: &mut Scheduler, out: &SchedulerOutput) -> Vec<SeqId> {
    let n = out.scheduled.iter().filter(|x| x.needs_logits).count();
    s.update_from_output(out, &vec![7; n])
        .iter()
        .map(|seq| seq.seq_id)
        .collect()
}

/// Tokens `id` computes in this step (0 if it is not scheduled).
fn tokens_of(out: &SchedulerOutput, id: SeqId) -> usize {
    out.scheduled
        .iter()
        .find(|x| x.seq_id == id)
        .map_or(0, |x| x.token_ids.len())
}

/// `num_decodes` requests (16-token prompts, long outputs) are prefilled and decoding; then a
/// prompt of `prompt_len` arrives. `output`: `steps` (steps from its admission to the one that
/// samples its first token, that one included) or `chunk` (its tokens in step `step` after
/// its arrival, 1-based).
fn prefill_steps(args: &Args) -> Result<f64, String> {
    let budget = int(args, "max_num_batched_tokens")?;
    let num_decodes = int(args, "num_decodes").unwrap_or(0);
    let block_size = int(args, "block_size")?;
    let mut s = scheduler(block_size, 100_000, budget, 256, fcfs(), false)?;
    for i in 0..num_decodes {
        s.add_sequence(request(i as u64, tokens(1000 * i as u32, 16), 100_000));
    }
    // The decodes' prompts take one step (or more, if the budget is small).
    while s.num_waiting() > 0 {
        let out = s.schedule();
        finish_step(&mut s, &out);
    }
    let long = SeqId(num_decodes as u64);
    s.add_sequence(request(long.0, tokens(1, int(args, "prompt_len")?), 1));
    let want = text(args, "output")?;
    for step in 1..=MAX_STEPS {
        let out = s.schedule();
        let here = out.scheduled.iter().find(|x| x.seq_id == long);
        match want {
            "chunk" if step == int(args, "step")? => return Ok(tokens_of(&out, long) as f64),
            "steps" if here.is_some_and(|x| x.needs_logits) => return Ok(step as f64),
            "chunk" | "steps" => {}
            other => return Err(format!("unknown output `{other}`")),
        }
        finish_step(&mut s, &out);
    }
    Err("the prompt did not finish its prefill".into())
}

/// `num_decodes` decoding requests and new prompts of `prefill_lens` (in arrival order) in
/// one step under `max_num_batched_tokens`. `output`: `num_batched_tokens`, or `prefill_tokens`
/// of the prompt at `index` (0-based) in that step.
fn budget_step(args: &Args) -> Result<f64, String> {
    let budget = int(args, "max_num_batched_tokens")?;
    let num_decodes = int(args, "num_decodes")?;
    // The decodes' 16-token prompts are prefilled in one warm-up step under the same budget.
    if budget < 16 * num_decodes {
        return Err("the budget must hold the decodes' 16-token prompts".into());
    }
    let block_size = int(args, "block_size")?;
    let mut s = scheduler(block_size, 100_000, budget, 256, fcfs(), false)?;
    for i in 0..num_decodes {
        s.add_sequence(request(i as u64, tokens(1000 * i as u32, 16), 100_000));
    }
    let warm = s.schedule();
    finish_step(&mut s, &warm);
    if warm.scheduled.len() != num_decodes {
        return Err("the decodes' prompts did not fit one step".into());
    }
    let prompts = list(args, "prefill_lens")?;
    for (k, &p) in prompts.iter().enumerate() {
        s.add_sequence(request((num_decodes + k) as u64, tokens(1, p), 1));
    }
    let out = s.schedule();
    Ok(match text(args, "output")? {
        "num_batched_tokens" => out.num_batched_tokens(),
        "prefill_tokens" => {
            let index = int(args, "index")?;
            if index >= prompts.len() {
                return Err("index is not below the number of prompts".into());
            }
            tokens_of(&out, SeqId((num_decodes + index) as u64))
        }
        other => return Err(format!("unknown output `{other}`")),
    } as f64)
}

/// Requests whose outputs have `output_lens` tokens (8-token prompts), `repeat` times over,
/// through `batch_size` slots. `mode`: `static` (the next `batch_size` requests are admitted
/// only when every request of the batch has finished) or `continuous` (all queued at once; a
/// finished request's slot is refilled in the next step). `output`: `running` (sequences in
/// step `step`), `steps` (until all finish), `utilization` (percent of slot-steps that
/// computed a token) or `tokens_per_step` (output tokens per step).
fn batching_run(args: &Args) -> Result<f64, String> {
    let batch = int(args, "batch_size")?;
    let lens = list(args, "output_lens")?;
    let repeat = int(args, "repeat").unwrap_or(1);
    let all: Vec<usize> = (0..repeat).flat_map(|_| lens.iter().copied()).collect();
    if all.contains(&0) {
        return Err("every output length must be at least 1".into());
    }
    let mut s = scheduler(16, 100_000, 1 << 20, batch, fcfs(), false)?;
    let continuous = match text(args, "mode")? {
        "static" => false,
        "continuous" => true,
        other => return Err(format!("mode must be static or continuous, not `{other}`")),
    };
    let mut queue = all.iter().enumerate();
    let mut admit = |s: &mut Scheduler, n: usize| {
        for (i, &len) in queue.by_ref().take(n) {
            s.add_sequence(request(i as u64, tokens(1, 8), len));
        }
    };
    admit(&mut s, if continuous { all.len() } else { batch });
    let (mut steps, mut slot_steps_used, mut outputs) = (0usize, 0usize, 0usize);
    let mut running_at = BTreeMap::new();
    while s.has_unfinished() {
        if steps == MAX_STEPS {
            return Err("the requests did not finish".into());
        }
        let out = s.schedule();
        steps += 1;
        running_at.insert(steps, out.scheduled.len());
        slot_steps_used += out.scheduled.len();
        outputs += out.scheduled.iter().filter(|x| x.needs_logits).count();
        finish_step(&mut s, &out);
        if !continuous && !s.has_unfinished() {
            admit(&mut s, batch);
        }
    }
    Ok(match text(args, "output")? {
        "running" => running_at.get(&int(args, "step")?).copied().unwrap_or(0) as f64,
        "steps" => steps as f64,
        "utilization" => 100.0 * slot_steps_used as f64 / (batch * steps) as f64,
        "tokens_per_step" => outputs as f64 / steps as f64,
        other => return Err(format!("unknown output `{other}`")),
    })
}

/// One tenant of `tenant_share`: its name, weight, queued requests and arrival step.
struct Tenant {
    name: String,
    weight: f64,
    requests: usize,
    arrive_step: usize,
    /// Deadline of its requests (`qos`): 0 makes them overdue on arrival.
    deadline_ms: Option<u64>,
}

fn tenants(args: &Args) -> Result<Vec<Tenant>, String> {
    let bad = || "argument `tenants` must be a list of { name, weight, requests } tables";
    let list = args
        .get("tenants")
        .and_then(|v| v.as_array())
        .ok_or(bad())?;
    list.iter()
        .map(|v| {
            let t = v.as_table().ok_or(bad())?;
            Ok(Tenant {
                name: text(t, "name")?.to_string(),
                weight: crate::engine_calls::float(t, "weight")?,
                requests: int(t, "requests")?,
                arrive_step: int(t, "arrive_step").unwrap_or(0),
                deadline_ms: int(t, "deadline_ms").ok().map(|d| d as u64),
            })
        })
        .collect()
}

/// Tenants queue one-step requests (a prompt of `prompt_len` tokens, one output token) and
/// the budget is one prompt per step, so each step serves exactly one request: the one the
/// `policy` (`fcfs`, `fair` or `qos`, with the tenants' weights) puts first. A tenant's
/// requests are queued at the start of step `arrive_step` (0: before the first).
/// `output`: `tokens` of tenant `tenant` in the first `steps` steps, `percent` (its share of
/// all tokens of those steps), or `first_step` at which `tenant` is first served.
fn tenant_share(args: &Args) -> Result<f64, String> {
    let prompt_len = int(args, "prompt_len")?;
    let ts = tenants(args)?;
    let weights: Vec<(String, f64)> = ts.iter().map(|t| (t.name.clone(), t.weight)).collect();
    let policy = policy_from_name(text(args, "policy")?, &weights).map_err(|e| e.to_string())?;
    let mut s = scheduler(16, 100_000, prompt_len, 256, policy, false)?;
    let who = text(args, "tenant")?;
    let want = text(args, "output")?;
    let steps = int(args, "steps").unwrap_or(MAX_STEPS);
    let mut next_id = 0u64;
    let mut tenant_of = BTreeMap::new();
    let (mut served, mut total) = (0usize, 0usize);
    for step in 1..=steps {
        for t in ts.iter().filter(|t| t.arrive_step.max(1) == step) {
            for _ in 0..t.requests {
                let mut params = SamplingParams::greedy(1);
                params.tenant = t.name.clone();
                params.deadline = t.deadline_ms.map(Duration::from_millis);
                s.add_sequence(Sequence::new(SeqId(next_id), tokens(1, prompt_len), params));
                tenant_of.insert(SeqId(next_id), t.name.clone());
                next_id += 1;
            }
        }
        let out = s.schedule();
        let mine: usize = out
            .scheduled
            .iter()
            .filter(|x| tenant_of[&x.seq_id] == who)
            .map(|x| x.token_ids.len())
            .sum();
        if want == "first_step" && mine > 0 {
            return Ok(step as f64);
        }
        served += mine;
        total += out.num_batched_tokens();
        finish_step(&mut s, &out);
    }
    match want {
        "tokens" => Ok(served as f64),
        "percent" if total > 0 => Ok(100.0 * served as f64 / total as f64),
        "percent" => Err("no tokens were served".into()),
        "first_step" => Err(format!("tenant `{who}` was not served in {steps} steps")),
        other => Err(format!("unknown output `{other}`")),
    }
}

/// A first prompt of `prefix_len` shared tokens plus its own, is prefilled; then a second
/// prompt of `prompt_len` tokens, whose first `prefix_len` are the same, arrives (prefix
/// caching on). `output`: `hit_tokens` (the second prompt's tokens found cached) or
/// `computed_tokens` (its tokens computed in its first step).
fn prefix_hit(args: &Args) -> Result<f64, String> {
    let block_size = int(args, "block_size")?;
    let prefix_len = int(args, "prefix_len")?;
    let first_len = int(args, "first_len")?;
    let prompt_len = int(args, "prompt_len")?;
    if prefix_len > first_len || prefix_len > prompt_len || prompt_len == 0 {
        return Err("the shared prefix must fit both prompts".into());
    }
    let mut s = scheduler(block_size, 10_000, 1 << 20, 256, fcfs(), true)?;
    let prompt = |own: u32, len: usize| {
        let mut p = tokens(1, prefix_len);
        p.extend(tokens(own, len - prefix_len));
        p
    };
    s.add_sequence(request(0, prompt(10_000, first_len), 100));
    let out = s.schedule();
    finish_step(&mut s, &out);
    let before = s.block_manager.prefix_cache_stats();
    s.add_sequence(request(1, prompt(20_000, prompt_len), 100));
    let out = s.schedule();
    let stats = s.block_manager.prefix_cache_stats().since(&before);
    Ok(match text(args, "output")? {
        "hit_tokens" => stats.hit_tokens,
        "computed_tokens" => tokens_of(&out, SeqId(1)),
        other => return Err(format!("unknown output `{other}`")),
    } as f64)
}

/// Requests of `prompt_lens` that each generate `max_tokens` tokens, in a cache of
/// `num_blocks` blocks (FCFS, one step admits them all if it can), preempting by `mode`
/// (`swap`, with `swap_blocks` host blocks, or `recompute`). At the first preemption, the
/// victim's cost: `victim` (its id), `swapped_out_blocks` (device → host copies of that
/// step), `swapped_in_blocks` (host → device copies when it resumes) or `resume_tokens`
/// (tokens it computes from its resumption to the step that samples its next token: after a
/// swap only the token it was about to compute, after a recompute everything before it too).
fn preemption_cost(args: &Args) -> Result<f64, String> {
    let mode = match text(args, "mode")? {
        "swap" => PreemptionMode::Swap,
        "recompute" => PreemptionMode::Recompute,
        other => return Err(format!("mode must be swap or recompute, not `{other}`")),
    };
    let preemption = PreemptionConfig {
        mode,
        ..PreemptionConfig::default()
    };
    let swap_blocks = int(args, "swap_blocks").unwrap_or(10_000);
    let num_blocks = int(args, "num_blocks")?;
    let block_size = int(args, "block_size")?;
    let mut s = scheduler(block_size, num_blocks, 1 << 20, 256, fcfs(), false)?
        .with_preemption(preemption, swap_blocks);
    let max_tokens = int(args, "max_tokens")?;
    for (i, &p) in list(args, "prompt_lens")?.iter().enumerate() {
        s.add_sequence(request(i as u64, tokens(1000 * i as u32, p), max_tokens));
    }
    let want = text(args, "output")?;
    let mut victim = None;
    let (mut swapped_in, mut recomputed) = (0, 0);
    for _ in 0..MAX_STEPS {
        let out = s.schedule();
        let swaps = s.take_swaps();
        match victim {
            None => {
                let v = out.preempted.first().or(swaps.swapped_out.first()).copied();
                if let Some(v) = v {
                    victim = Some(v);
                    match want {
                        "victim" => return Ok(v.0 as f64),
                        "swapped_out_blocks" => return Ok(swaps.swap_out.len() as f64),
                        _ => {}
                    }
                }
            }
            Some(v) => {
                if swaps.swapped_in.contains(&v) {
                    swapped_in = swaps.swap_in.len();
                }
                recomputed += tokens_of(&out, v);
                if out
                    .scheduled
                    .iter()
                    .any(|x| x.seq_id == v && x.needs_logits)
                {
                    return Ok(match want {
                        "swapped_in_blocks" => swapped_in,
                        "resume_tokens" => recomputed,
                        other => return Err(format!("unknown output `{other}`")),
                    } as f64);
                }
            }
        }
        finish_step(&mut s, &out);
        if !s.has_unfinished() {
            break;
        }
    }
    Err("no preemption, or the victim never ran again".into())
}

/// Calls the check function `name` names.
pub fn call(name: &str, args: &Args) -> Result<f64, String> {
    match name {
        "prefill_steps" => prefill_steps(args),
        "budget_step" => budget_step(args),
        "batching_run" => batching_run(args),
        "tenant_share" => tenant_share(args),
        "prefix_hit" => prefix_hit(args),
        "preemption_cost" => preemption_cost(args),
        other => Err(format!("unknown batching check `{other}`")),
    }
}
