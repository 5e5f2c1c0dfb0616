//! Wrong batch composers: the engine's `compose_batch`, rewritten with switches.

use engine::config::SchedulerConfig;
use engine::core::batch_composer::{self as reference, BatchPlan};

use super::{active, any_active};

const MUTANTS: [&str; 7] = [
    "compose_prefill_first",
    "compose_fit_off_by_one",
    "compose_seats_off_by_one",
    "compose_skips_waiting_that_waits",
    "compose_chunks_without_chunked_prefill",
    "compose_running_ignore_budget_end",
    "compose_ignores_long_prefill_threshold",
];

/// The tokens one sequence may take before the budget: capped by the long-prefill threshold,
/// unless that rule is the one broken.
fn capped(uncomputed: usize, config: &SchedulerConfig) -> usize {
    let threshold = config.long_prefill_token_threshold;
    if threshold == 0 || active("compose_ignores_long_prefill_threshold") {
        uncomputed
    } else {
        uncomputed.min(threshold)
    }
}

/// The engine's composer, or a copy of it with one rule broken.
pub fn compose_batch(config: &SchedulerConfig, running: &[usize], waiting: &[usize]) -> BatchPlan {
    if !any_active(&MUTANTS) {
        return reference::compose_batch(config, running, waiting);
    }
    let mut budget = config.max_num_batched_tokens;
    let mut plan = BatchPlan::default();
    let admit = |plan: &mut BatchPlan, budget: &mut usize| {
        let mut i = 0;
        while i < waiting.len() {
            let uncomputed = capped(waiting[i], config);
            let seats_taken = running.len() + plan.waiting.len();
            let seats_full = if active("compose_seats_off_by_one") {
                seats_taken > config.max_num_seqs
            } else {
                seats_taken >= config.max_num_seqs
            };
            if *budget == 0 || seats_full {
                break;
            }
            let num_new = uncomputed.min(*budget);
            let cut = if active("compose_fit_off_by_one") {
                uncomputed >= *budget
            } else {
                num_new < uncomputed
            };
            let chunking =
                config.enable_chunked_prefill || active("compose_chunks_without_chunked_prefill");
            if cut && !chunking && uncomputed <= config.max_num_batched_tokens {
                if active("compose_skips_waiting_that_waits") {
                    i += 1;
                    continue;
                }
                break;
            }
            plan.waiting.push(num_new);
            *budget -= num_new;
            i += 1;
        }
    };
    if active("compose_prefill_first") {
        admit(&mut plan, &mut budget);
    }
    for &uncomputed in running {
        if budget == 0 && !active("compose_running_ignore_budget_end") {
            break;
        }
        let n = capped(uncomputed, config).min(budget);
        plan.running.push(n);
        budget -= n;
    }
    if !active("compose_prefill_first") {
        admit(&mut plan, &mut budget);
    }
    plan
}
