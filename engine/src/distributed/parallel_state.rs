//! Which ranks talk to which under TP×PP (vLLM's `parallel_state`): the rank layout and the
//! groups each rank belongs to.
//!
//! `world = tp × pp` ranks. World rank `r` is stage `pp_rank = r / tp`, slice
//! `tp_rank = r % tp`: tensor-parallel rank varies fastest, so a stage's TP ranks are
//! neighbours (`0..tp` is stage 0, `tp..2tp` stage 1, ...), as in vLLM, where that keeps a TP
//! group inside one node's NVLink domain. With tp = 2, pp = 2:
//!
//! ```text
//!              tp_rank 0   tp_rank 1
//!   stage 0    rank 0      rank 1       ← TP group {0, 1}: all-reduces every layer
//!   stage 1    rank 2      rank 3       ← TP group {2, 3}
//!                 ↑           ↑
//!              PP group    PP group      ← send/recv between consecutive stages
//!              {0, 2}      {1, 3}
//! ```
//!
//! Each rank gets two communicators ([`RankGroups`]): one [`CpuCommunicator`] group per stage
//! for its TP collectives (numbered by `tp_rank`), and one per TP slice across the stages for
//! the pipeline's point-to-point sends (numbered by `pp_rank`, so the previous stage is
//! `pp_rank − 1` and the next `pp_rank + 1`). Every rank of a stage holds the whole hidden
//! state after its all-reduces, so TP rank `t` of stage `s` sends to TP rank `t` of stage
//! `s + 1`: `tp` parallel pipelines, one per PP group. Two groups rather than one world group
//! keep the collectives' sequence numbers and timeouts per group, as NCCL communicators are.

use std::time::Duration;

use super::cpu_communicator::CpuCommunicator;

/// The shape of the world: `tp × pp` ranks (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankLayout {
    pub tp: usize,
    pub pp: usize,
}

// ANCHOR: rank_layout
impl RankLayout {
    /// `tp × pp`.
    pub fn world_size(&self) -> usize {
        self.tp * self.pp
    }

    /// `(pp_rank, tp_rank)` of world rank `rank`.
    pub fn coords(&self, rank: usize) -> (usize, usize) {
        (rank / self.tp, rank % self.tp)
    }

    /// The world rank of stage `pp_rank`'s slice `tp_rank`.
    pub fn world_rank(&self, pp_rank: usize, tp_rank: usize) -> usize {
        pp_rank * self.tp + tp_rank
    }

    /// The world ranks of stage `pp_rank`'s TP group, in TP order.
    pub fn tp_group(&self, pp_rank: usize) -> Vec<usize> {
        (0..self.tp).map(|t| self.world_rank(pp_rank, t)).collect()
    }

    /// The world ranks of slice `tp_rank`'s PP group, in stage order.
    pub fn pp_group(&self, tp_rank: usize) -> Vec<usize> {
        (0..self.pp).map(|p| self.world_rank(p, tp_rank)).collect()
    }

    /// The TP group world rank `rank` all-reduces with (itself included): its stage's ranks.
    pub fn tp_group_of(&self, rank: usize) -> Vec<usize> {
        self.tp_group(self.coords(rank).0)
    }

    /// The PP group world rank `rank` sends and receives in (itself included): its slice's
    /// rank on every stage.
    pub fn pp_group_of(&self, rank: usize) -> Vec<usize> {
        self.pp_group(self.coords(rank).1)
    }
}
// ANCHOR_END: rank_layout

/// One rank's place and its two communicators.
#[derive(Debug)]
pub struct RankGroups {
    pub world_rank: usize,
    pub pp_rank: usize,
    pub tp_rank: usize,
    /// Its stage's TP group (rank `tp_rank` of `tp`); a group of one at tp = 1.
    pub tp: CpuCommunicator,
    /// Its slice's PP group (rank `pp_rank` of `pp`); `None` at pp = 1.
    pub pp: Option<CpuCommunicator>,
}

/// Every rank's groups, in world-rank order; each element is moved into its rank's thread.
/// A receive that waits longer than `timeout` fails, in either group.
pub fn build_groups(layout: RankLayout, timeout: Duration) -> Vec<RankGroups> {
    let mut tp_groups: Vec<std::vec::IntoIter<CpuCommunicator>> = (0..layout.pp)
        .map(|_| CpuCommunicator::group(layout.tp, timeout).into_iter())
        .collect();
    let mut pp_groups: Vec<std::vec::IntoIter<CpuCommunicator>> = (0..layout.tp)
        .map(|_| CpuCommunicator::group(layout.pp, timeout).into_iter())
        .collect();
    (0..layout.world_size())
        .map(|world_rank| {
            let (pp_rank, tp_rank) = layout.coords(world_rank);
            // World order visits each TP group in TP order and each PP group in stage order.
            let tp = tp_groups[pp_rank].next().expect("one per TP rank");
            let pp = pp_groups[tp_rank].next().expect("one per stage");
            RankGroups {
                world_rank,
                pp_rank,
                tp_rank,
                tp,
                pp: (layout.pp > 1).then_some(pp),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::Communicator;

    #[test]
    fn tp_varies_fastest_and_groups_are_numbered_within() {
        let layout = RankLayout { tp: 2, pp: 3 };
        assert_eq!(layout.coords(3), (1, 1));
        assert_eq!(layout.world_rank(2, 0), 4);
        assert_eq!(layout.tp_group(1), [2, 3]);
        assert_eq!(layout.pp_group(1), [1, 3, 5]);
        assert_eq!(layout.tp_group_of(3), [2, 3]);
        assert_eq!(layout.pp_group_of(3), [1, 3, 5]);
        for g in build_groups(layout, Duration::from_secs(1)) {
            assert_eq!(layout.coords(g.world_rank), (g.pp_rank, g.tp_rank));
            assert_eq!((g.tp.rank(), g.tp.world_size()), (g.tp_rank, 2));
            let pp = g.pp.as_ref().unwrap();
            assert_eq!((pp.rank(), pp.world_size()), (g.pp_rank, 3));
        }
        let one = build_groups(RankLayout { tp: 2, pp: 1 }, Duration::from_secs(1));
        assert!(one.iter().all(|g| g.pp.is_none()));
    }

    /// A message sent down a PP group reaches the same TP slice of the next stage only.
    #[test]
    fn pp_groups_join_the_same_slice_of_consecutive_stages() {
        let mut groups = build_groups(RankLayout { tp: 2, pp: 2 }, Duration::from_secs(1));
        let (first, second) = groups.split_at_mut(2);
        for (t, g) in first.iter_mut().enumerate() {
            g.pp.as_mut().unwrap().send(&[t as f32 + 1.0], 1).unwrap();
        }
        for (t, g) in second.iter_mut().enumerate() {
            let mut buf = [0.0];
            g.pp.as_mut().unwrap().recv(&mut buf, 0).unwrap();
            assert_eq!(buf[0], t as f32 + 1.0);
        }
    }
}
