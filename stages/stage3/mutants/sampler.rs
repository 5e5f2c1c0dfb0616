//! Plausible wrong samplers:
//!
//! - `sampler_greedy_last_max`: greedy keeps the *last* of equal largest logits (`>=`), so
//!   ties go to the highest id instead of the lowest (transformers keeps the first).
//! - `sampler_top_p_strict`: top-p stops at the first prefix whose mass *exceeds* p (`>`)
//!   instead of reaching it (`>=`): with mass exactly p it keeps one token too many.
//! - `sampler_top_p_before_top_k`: top-p over the softmax of *all* logits, then top-k; the
//!   engine takes the top k first and renormalizes before top-p.
//! - `sampler_temperature_after_top_p`: top-p on the untempered (temperature 1)
//!   probabilities; temperature applied only for the draw.
//! - `sampler_draw_not_scaled`: the draw `u` is not scaled by the kept mass, so after top-p
//!   cuts the tail the walk falls off the end and the last candidate wins too often.
//!
//! Each wrong version follows the engine's pipeline (stable sort, top-k, temperature and
//! softmax, top-p, the draw walked down the kept probabilities) except for its mistake.

use engine::sampling_params::SamplingParams;

use super::active;

#[derive(Clone, Copy, PartialEq)]
enum Mistake {
    TopPStrict,
    TopPBeforeTopK,
    TemperatureAfterTopP,
    DrawNotScaled,
}

/// `exp((z − max) / t)`, normalized, over `ids`.
fn softmax(logits: &[f32], ids: &[u32], t: f32) -> Vec<f32> {
    let max = logits[ids[0] as usize];
    let mut p: Vec<f32> = ids
        .iter()
        .map(|&i| ((logits[i as usize] - max) / t).exp())
        .collect();
    let total: f32 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= total);
    p
}

/// How many of the sorted probabilities top-p keeps.
fn top_p_keep(probs: &[f32], top_p: f32, strict: bool) -> usize {
    if top_p >= 1.0 {
        return probs.len();
    }
    let mut mass = 0.0;
    probs
        .iter()
        .position(|&p| {
            mass += p;
            if strict {
                mass > top_p
            } else {
                mass >= top_p
            }
        })
        .map_or(probs.len(), |i| i + 1)
}

fn wrong_sample(logits: &[f32], params: &SamplingParams, draw: f32, m: Mistake) -> u32 {
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let k = params.top_k.map_or(ids.len(), |k| k.max(1));
    let t = params.temperature;
    let mut probs = match m {
        Mistake::TopPBeforeTopK => {
            let probs = softmax(logits, &ids, t);
            let keep = top_p_keep(&probs, params.top_p, false).min(k);
            ids.truncate(keep);
            probs[..keep].to_vec()
        }
        Mistake::TemperatureAfterTopP => {
            ids.truncate(k);
            let keep = top_p_keep(&softmax(logits, &ids, 1.0), params.top_p, false);
            ids.truncate(keep);
            softmax(logits, &ids, t)
        }
        Mistake::TopPStrict | Mistake::DrawNotScaled => {
            ids.truncate(k);
            let probs = softmax(logits, &ids, t);
            let keep = top_p_keep(&probs, params.top_p, m == Mistake::TopPStrict);
            ids.truncate(keep);
            probs[..keep].to_vec()
        }
    };
    probs.truncate(ids.len());
    let total: f32 = probs.iter().sum();
    let mut draw = draw;
    if m != Mistake::DrawNotScaled {
        draw *= total;
    }
    for (&id, &p) in ids.iter().zip(&probs) {
        if draw < p {
            return id;
        }
        draw -= p;
    }
    *ids.last().expect("at least one candidate")
}

pub fn sample(logits: &[f32], params: &SamplingParams, draw: f32) -> u32 {
    let greedy = params.is_greedy();
    if greedy && active("sampler_greedy_last_max") {
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v >= logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let mistake = [
        ("sampler_top_p_strict", Mistake::TopPStrict),
        ("sampler_top_p_before_top_k", Mistake::TopPBeforeTopK),
        (
            "sampler_temperature_after_top_p",
            Mistake::TemperatureAfterTopP,
        ),
        ("sampler_draw_not_scaled", Mistake::DrawNotScaled),
    ]
    .into_iter()
    .find(|(name, _)| active(name));
    match mistake {
        Some((_, m)) if !greedy => wrong_sample(logits, params, draw, m),
        _ => engine::sampler::sample(logits, params, draw),
    }
}
