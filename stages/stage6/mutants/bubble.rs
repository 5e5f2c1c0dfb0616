//! Plausible wrong bubbles:
//!
//! - `bubble_own_span`: each stage on the clock only from its own first item to its own last,
//!   so the fill and the drain are not counted (one batch through 4 stages: no bubble at all).
//! - `bubble_drain_off_by_one`: the span counted as `last end − first start + 1`, one unit of
//!   drain too many.

use super::active;
use crate::{Bubble, TimedItem};

pub fn bubble(items: &[TimedItem], num_stages: usize) -> Bubble {
    let busy: u64 = items.iter().map(|i| i.end - i.start).sum();
    if active("bubble_own_span") {
        let total = (0..num_stages)
            .map(|s| {
                let own = items.iter().filter(|i| i.stage == s);
                let first = own.clone().map(|i| i.start).min().unwrap_or(0);
                let last = own.map(|i| i.end).max().unwrap_or(0);
                last - first
            })
            .sum::<u64>();
        Bubble {
            idle: total.saturating_sub(busy),
            total,
        }
    } else if active("bubble_drain_off_by_one") {
        let first = items.iter().map(|i| i.start).min().unwrap_or(0);
        let last = items.iter().map(|i| i.end).max().unwrap_or(0);
        let total = num_stages as u64 * (last - first + 1);
        Bubble {
            idle: total.saturating_sub(busy),
            total,
        }
    } else {
        engine::distributed::pipeline_schedule::bubble(items, num_stages)
    }
}
