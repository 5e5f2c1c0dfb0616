//! Plausible wrong rank layouts:
//!
//! - `parallel_state_pp_major`: a consistent layout, but stage-fastest (rank = tp_rank · pp +
//!   pp_rank), so a stage's ranks are strided across the world and a TP group of 8 on two
//!   8-GPU nodes would all-reduce over the network every layer.
//! - `parallel_state_stage_rounds_up`: the stage of a rank is rank / tp rounded up, so every
//!   rank but the first of each stage lands one stage too far.
//! - `parallel_state_stage_range_inclusive`: the ranks of stage s run from s·tp through
//!   (s + 1)·tp inclusive: one rank too many, the next stage's first.

use engine::distributed::parallel_state::RankLayout;

use super::active;

pub fn coords(layout: RankLayout, rank: usize) -> (usize, usize) {
    if active("parallel_state_pp_major") {
        (rank % layout.pp, rank / layout.pp)
    } else if active("parallel_state_stage_rounds_up") {
        (rank.div_ceil(layout.tp), rank % layout.tp)
    } else {
        layout.coords(rank)
    }
}

pub fn world_rank(layout: RankLayout, pp_rank: usize, tp_rank: usize) -> usize {
    if active("parallel_state_pp_major") {
        tp_rank * layout.pp + pp_rank
    } else {
        layout.world_rank(pp_rank, tp_rank)
    }
}

pub fn stage_ranks(layout: RankLayout, pp_rank: usize) -> Vec<usize> {
    if active("parallel_state_pp_major") || active("parallel_state_stage_rounds_up") {
        (0..layout.tp)
            .map(|t| world_rank(layout, pp_rank, t))
            .collect()
    } else if active("parallel_state_stage_range_inclusive") {
        (pp_rank * layout.tp..=(pp_rank + 1) * layout.tp).collect()
    } else {
        layout.tp_group(pp_rank)
    }
}

pub fn tp_group_of(layout: RankLayout, rank: usize) -> Vec<usize> {
    if active("parallel_state_pp_major")
        || active("parallel_state_stage_rounds_up")
        || active("parallel_state_stage_range_inclusive")
    {
        stage_ranks(layout, coords(layout, rank).0)
    } else {
        layout.tp_group_of(rank)
    }
}

pub fn pp_group_of(layout: RankLayout, rank: usize) -> Vec<usize> {
    if active("parallel_state_pp_major") {
        let t = coords(layout, rank).1;
        (0..layout.pp).map(|p| world_rank(layout, p, t)).collect()
    } else {
        layout.pp_group_of(rank)
    }
}
