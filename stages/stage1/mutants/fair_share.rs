//! Wrong fair shares: the engine's, with one mistake switched on by `INFERENCE_LAB_MUTANT`.

use std::cmp::Ordering;

use engine::core::fair_share as reference;
use engine::sequence::SeqId;

use super::active;

/// The engine's virtual time, or (`fair_ignores_weights`) every token costing 1.
pub fn advance_virtual_time(vt: f64, num_tokens: usize, weight: f64) -> f64 {
    if active("fair_ignores_weights") {
        return vt + num_tokens as f64;
    }
    reference::advance_virtual_time(vt, num_tokens, weight)
}

/// The engine's order, or the tenant furthest *ahead* first (`fair_heaviest_first`), or no
/// tie-break by arrival (`fair_no_arrival_tie_break`).
pub fn fair_order(a: (f64, SeqId), b: (f64, SeqId)) -> Ordering {
    if active("fair_heaviest_first") {
        return b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    }
    if active("fair_no_arrival_tie_break") {
        return a.0.total_cmp(&b.0);
    }
    reference::fair_order(a, b)
}
