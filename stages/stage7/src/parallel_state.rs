//! Exercise 1: which rank is which under TP × PP (vLLM's `parallel_state`).
//!
//! `world = tp × pp` ranks, numbered `0..world`. Each belongs to one pipeline stage
//! (`pp_rank`, `0..pp`) and holds one TP slice of that stage's layers (`tp_rank`, `0..tp`).
//! It talks to two groups: its **TP group**, the ranks of its own stage (it all-reduces with
//! them twice a layer), and its **PP group**, the ranks holding its slice on every stage (it
//! receives the hidden state from the previous one and sends it to the next). As in vLLM, the
//! ranks of a stage are neighbours, so that a TP group sits inside one node's NVLink domain:
//!
//! ```text
//! tp = 2, pp = 2       tp_rank 0   tp_rank 1
//!           stage 0    rank 0      rank 1       ← TP group {0, 1}
//!           stage 1    rank 2      rank 3       ← TP group {2, 3}
//!                      PP group    PP group
//!                      {0, 2}      {1, 3}
//! ```
//!
//! The contract, with a worked example for tp = 4, pp = 2, is in the book's Stage 7 chapter,
//! "Ranks and groups".
//!
//! Test: `cargo test -p stage7 --test parallel_state`.

pub use engine::distributed::parallel_state::RankLayout;

#[cfg(feature = "mutants")]
pub use crate::mutants::parallel_state::{
    coords, pp_group_of, stage_ranks, tp_group_of, world_rank,
};

// The engine's versions are methods of `RankLayout`; these bind them to the exercise's names.
#[cfg(all(feature = "reference", not(feature = "mutants")))]
mod reference {
    use super::RankLayout;
    pub fn coords(layout: RankLayout, rank: usize) -> (usize, usize) {
        layout.coords(rank)
    }
    pub fn world_rank(layout: RankLayout, pp_rank: usize, tp_rank: usize) -> usize {
        layout.world_rank(pp_rank, tp_rank)
    }
    pub fn stage_ranks(layout: RankLayout, pp_rank: usize) -> Vec<usize> {
        layout.tp_group(pp_rank)
    }
    pub fn tp_group_of(layout: RankLayout, rank: usize) -> Vec<usize> {
        layout.tp_group_of(rank)
    }
    pub fn pp_group_of(layout: RankLayout, rank: usize) -> Vec<usize> {
        layout.pp_group_of(rank)
    }
}
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use reference::*;

// HINT: write out the table above for tp = 3, pp = 2 by hand. Along a row (one stage), by how
//   much does the rank grow from one TP slice to the next? Down a column (one slice), by how
//   much from one stage to the next?
// HINT: `coords` and `world_rank` are inverses: every rank below `tp × pp` must come back to
//   itself. Check that your pair does before you write the groups.
// HINT: the ranks of a stage and the TP group of a rank are the same kind of list. Which of
//   your functions already tells you a rank's stage?

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// `(pp_rank, tp_rank)` of world rank `rank` (`rank < layout.world_size()`): its pipeline
/// stage and its TP slice.
pub fn coords(layout: RankLayout, rank: usize) -> (usize, usize) {
    todo!(
        "stage7: coords in stages/stage7/src/parallel_state.rs — the pipeline stage and TP \
         slice of a world rank"
    )
}

/// The world rank of stage `pp_rank`'s TP slice `tp_rank`.
#[cfg(not(feature = "reference"))]
pub fn world_rank(layout: RankLayout, pp_rank: usize, tp_rank: usize) -> usize {
    todo!(
        "stage7: world_rank in stages/stage7/src/parallel_state.rs — the world rank of a \
         (stage, TP slice)"
    )
}

/// The world ranks of pipeline stage `pp_rank`, in TP order.
#[cfg(not(feature = "reference"))]
pub fn stage_ranks(layout: RankLayout, pp_rank: usize) -> Vec<usize> {
    todo!(
        "stage7: stage_ranks in stages/stage7/src/parallel_state.rs — the ranks of one \
         pipeline stage"
    )
}

/// The TP group of world rank `rank` (itself included), in TP order: the ranks it
/// all-reduces with.
#[cfg(not(feature = "reference"))]
pub fn tp_group_of(layout: RankLayout, rank: usize) -> Vec<usize> {
    todo!(
        "stage7: tp_group_of in stages/stage7/src/parallel_state.rs — the ranks a rank \
         all-reduces with"
    )
}

/// The PP group of world rank `rank` (itself included), in stage order: the ranks it
/// receives the hidden state from and sends it to.
#[cfg(not(feature = "reference"))]
pub fn pp_group_of(layout: RankLayout, rank: usize) -> Vec<usize> {
    todo!(
        "stage7: pp_group_of in stages/stage7/src/parallel_state.rs — the ranks a rank's \
         hidden state travels through, one per stage"
    )
}
// ANCHOR_END: stub
