//! The planner's choice among its candidates, and the reasons for it in words: what fits, what
//! the goal's figure is, and what the alternatives would cost (a bigger TP group's
//! all-reduces, a pipeline's bubble, GPUs left idle).

use super::comm_model::ALL_REDUCES_PER_LAYER;
use super::planner::{Candidate, Goal, Hardware, Workload};
use crate::config::ModelConfig;

/// Candidates within this share of the best figure count as tied; the simpler one wins (fewer
/// GPUs for latency, fewer pipeline stages for throughput).
pub const TIE: f64 = 0.02;

/// Index of the candidate to recommend: the runnable one with the best figure for `goal`,
/// near-ties going to the simpler split. A TP group that spans nodes is chosen only when
/// nothing else runs: its all-reduces would cross the network, whose latency we have not
/// measured (the estimate charges NVLink's). `None` when nothing runs.
pub fn choose(candidates: &[Candidate], goal: Goal) -> Option<usize> {
    let runs = |i: &usize| candidates[*i].problem.is_none();
    let in_node = |i: &usize| runs(i) && !candidates[*i].tp_crosses_nodes;
    let any_in_node = (0..candidates.len()).any(|i| in_node(&i));
    let runnable =
        || (0..candidates.len()).filter(move |i| if any_in_node { in_node(i) } else { runs(i) });
    let c = |i: usize| &candidates[i];
    match goal {
        Goal::Latency => {
            let best = runnable().map(|i| c(i).latency_s).reduce(f64::min)?;
            runnable()
                .filter(|&i| c(i).latency_s <= best * (1.0 + TIE))
                .min_by_key(|&i| (c(i).tp * c(i).pp, c(i).pp))
        }
        Goal::Throughput => {
            let best = runnable()
                .map(|i| c(i).throughput_tokens_per_s)
                .reduce(f64::max)?;
            runnable()
                .filter(|&i| c(i).throughput_tokens_per_s >= best * (1.0 - TIE))
                .min_by_key(|&i| (c(i).pp, c(i).tp))
        }
    }
}

/// One line on why nothing runs, from the candidate that came closest.
pub fn closest_miss(candidates: &[Candidate], hw: &Hardware) -> String {
    let c = candidates.iter().max_by_key(|c| c.kv_room_bytes).unwrap();
    let why = c.problem.as_deref().unwrap_or("no room");
    format!(
        "even {} on {} GPUs of {:.0} GB: {why}; use more GPUs or larger ones",
        split(c),
        hw.gpus,
        hw.gpu_memory_bytes as f64 / 1e9
    )
}

/// `TP=4×PP=2`.
pub fn split(c: &Candidate) -> String {
    format!("TP={}×PP={}", c.tp, c.pp)
}

fn gb(bytes: f64) -> String {
    format!("{:.1} GB", bytes / 1e9)
}

fn ms(s: f64) -> String {
    format!("{:.2} ms", s * 1e3)
}

/// The reasons for recommending `candidates[chosen]`, one sentence each.
pub fn explain(
    model: &ModelConfig,
    hw: &Hardware,
    w: &Workload,
    goal: Goal,
    candidates: &[Candidate],
    chosen: usize,
) -> Vec<String> {
    let r = &candidates[chosen];
    let usable = hw.gpu_memory_bytes as f64 * w.utilization;
    let mut why = vec![format!(
        "{} on {} GPU(s): {} of weights per GPU of {} usable ({:.0}% of {}), leaving room for \
         {} tokens of KV cache ({} sequences of {} tokens).",
        split(r),
        r.tp * r.pp,
        gb(r.weight_bytes_per_gpu as f64),
        gb(usable),
        w.utilization * 100.0,
        gb(hw.gpu_memory_bytes as f64),
        r.max_kv_tokens,
        r.max_kv_tokens / w.context_tokens as u64,
        w.context_tokens
    )];
    why.push(match goal {
        Goal::Latency => format!(
            "Estimated batch-1 decode step: {} per token, {:.0}% of it communication.",
            ms(r.latency_s),
            r.latency_comm_share * 100.0
        ),
        Goal::Throughput => format!(
            "Estimated throughput: {:.0} output tokens/s from {} replica(s) at batch {} \
             ({} per step).",
            r.throughput_tokens_per_s,
            r.replicas,
            r.batch,
            ms(r.throughput_step_s)
        ),
    });
    if r.tp > 1 {
        let n = ALL_REDUCES_PER_LAYER * model.num_hidden_layers / r.pp;
        why.push(if r.tp_crosses_nodes {
            format!(
                "TP={} spans nodes: its {n} all-reduces per step go over the network.",
                r.tp
            )
        } else {
            format!(
                "TP={} fits in one node's {} domain ({} GPUs): each GPU runs {n} all-reduces \
                 per step, {:.0} bytes per token per layer ({:.0} sent by each GPU in a ring).",
                r.tp,
                hw.interconnect,
                hw.gpus_per_node,
                r.all_reduce_bytes_per_token_per_layer,
                r.ring_bytes_per_token_per_layer
            )
        });
    }
    if let Some(wide) = candidates
        .iter()
        .find(|c| c.tp_crosses_nodes && c.problem.is_none())
    {
        if !r.tp_crosses_nodes {
            why.push(format!(
                "{} would spread each all-reduce over {} nodes' network; not recommended \
                 (estimated {} per step, with a latency we have not measured there).",
                split(wide),
                wide.tp.div_ceil(hw.gpus_per_node),
                ms(wide.latency_s)
            ));
        }
    }
    why.extend(against_pipelines(r, candidates, goal));
    why.extend(against_more_tp(r, candidates, goal));
    if let Some(small) = candidates
        .iter()
        .filter(|c| c.problem.is_some())
        .max_by_key(|c| c.tp * c.pp)
    {
        let p = small.problem.as_deref().unwrap_or("");
        why.push(format!("Smaller splits do not fit: {} {p}.", split(small)));
    }
    if r.tp * r.pp < hw.gpus {
        why.push(match goal {
            Goal::Latency if r.replicas > 1 => format!(
                "It uses {} of {} GPUs; the other {} can serve {} more copies.",
                r.tp * r.pp,
                hw.gpus,
                hw.gpus - r.tp * r.pp,
                r.replicas - 1
            ),
            Goal::Latency => format!(
                "It uses {} of {} GPUs: no split with more, within a node, is over {:.0}% faster.",
                r.tp * r.pp,
                hw.gpus,
                TIE * 100.0
            ),
            Goal::Throughput => format!(
                "The {} GPUs hold {} copies side by side (data parallelism).",
                hw.gpus, r.replicas
            ),
        });
    }
    why
}

/// Why not a pipeline (if the choice has none), or what its bubble costs (if it has one).
fn against_pipelines(r: &Candidate, all: &[Candidate], goal: Goal) -> Option<String> {
    if r.pp > 1 {
        return Some(format!(
            "PP={} splits the {} layers {:?}; at {} micro-batches the pipeline works \
             {}/({}+{}−1) = {:.0}% of the time (its bubble), and each boundary sends {} bytes \
             per token.",
            r.pp,
            r.layers_per_stage.iter().sum::<usize>(),
            r.layers_per_stage,
            r.micro_batches,
            r.micro_batches,
            r.micro_batches,
            r.pp,
            r.bubble_efficiency * 100.0,
            r.p2p_bytes_per_token
        ));
    }
    // The same GPU count cut into stages instead.
    let alt = (all.iter())
        .filter(|c| c.pp > 1 && c.tp * c.pp == r.tp * r.pp && c.problem.is_none())
        .min_by_key(|c| c.pp)?;
    Some(match goal {
        Goal::Latency => format!(
            "{} on the same GPUs holds {} per GPU too, but a token crosses its {} stages one \
             after another: {} per step instead of {}.",
            split(alt),
            gb(alt.weight_bytes_per_gpu as f64),
            alt.pp,
            ms(alt.latency_s),
            ms(r.latency_s)
        ),
        Goal::Throughput => format!(
            "{} would give {:.0} tokens/s: with {} micro-batches its stages work {:.0}% of \
             the time, and each micro-batch reads a stage's weights again, so at decode \
             splitting the batch does not share the weight reads.",
            split(alt),
            alt.throughput_tokens_per_s,
            alt.micro_batches,
            alt.bubble_efficiency * 100.0
        ),
    })
}

/// What the next larger TP group would give.
fn against_more_tp(r: &Candidate, all: &[Candidate], goal: Goal) -> Option<String> {
    let next = (all.iter())
        .filter(|c| c.pp == r.pp && c.tp > r.tp && c.problem.is_none() && !c.tp_crosses_nodes)
        .min_by_key(|c| c.tp)?;
    Some(match goal {
        Goal::Latency => format!(
            "{} would take {} per step ({:.0}% communication).",
            split(next),
            ms(next.latency_s),
            next.latency_comm_share * 100.0
        ),
        Goal::Throughput => format!(
            "{} would give {:.0} tokens/s ({} replica(s) at batch {}).",
            split(next),
            next.throughput_tokens_per_s,
            next.replicas,
            next.batch
        ),
    })
}
