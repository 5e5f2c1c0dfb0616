//! Exercise 1: your rank layout, by hand, against the engine's on every TP, PP up to 8, and
//! wired to the engine's communicators.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use engine::distributed::parallel_state::build_groups;
use engine::distributed::Communicator;
use proptest::prelude::*;
use stage7::parallel_state::{
    coords, pp_group_of, stage_ranks, tp_group_of, world_rank, RankLayout,
};

/// The module's picture: tp = 2, pp = 2.
#[test]
fn worked_example() {
    let l = RankLayout { tp: 2, pp: 2 };
    let expect = [(0, 0), (0, 1), (1, 0), (1, 1)];
    for (rank, &c) in expect.iter().enumerate() {
        assert_eq!(coords(l, rank), c, "coords of rank {rank} at tp 2 × pp 2");
        assert_eq!(world_rank(l, c.0, c.1), rank);
    }
    assert_eq!(stage_ranks(l, 0), [0, 1]);
    assert_eq!(stage_ranks(l, 1), [2, 3]);
    assert_eq!(tp_group_of(l, 3), [2, 3]);
    assert_eq!(pp_group_of(l, 3), [1, 3]);
}

/// The chapter's example: tp = 4, pp = 2, eight GPUs of one node.
#[test]
fn the_chapters_example() {
    let l = RankLayout { tp: 4, pp: 2 };
    assert_eq!(coords(l, 6), (1, 2), "rank 6 is stage 1, TP slice 2");
    assert_eq!(coords(l, 3), (0, 3));
    assert_eq!(world_rank(l, 1, 0), 4);
    assert_eq!(stage_ranks(l, 0), [0, 1, 2, 3]);
    assert_eq!(stage_ranks(l, 1), [4, 5, 6, 7]);
    assert_eq!(tp_group_of(l, 6), [4, 5, 6, 7]);
    assert_eq!(pp_group_of(l, 6), [2, 6]);
    assert_eq!(pp_group_of(l, 0), [0, 4]);
}

/// One dimension of size 1: pure PP (every rank its own stage) and pure TP (one stage).
#[test]
fn pure_pp_and_pure_tp() {
    let pp = RankLayout { tp: 1, pp: 5 };
    for r in 0..5 {
        assert_eq!(coords(pp, r), (r, 0));
        assert_eq!(stage_ranks(pp, r), [r]);
        assert_eq!(tp_group_of(pp, r), [r]);
        assert_eq!(pp_group_of(pp, r), (0..5).collect::<Vec<_>>());
    }
    let tp = RankLayout { tp: 5, pp: 1 };
    for r in 0..5 {
        assert_eq!(coords(tp, r), (0, r));
        assert_eq!(tp_group_of(tp, r), (0..5).collect::<Vec<_>>());
        assert_eq!(pp_group_of(tp, r), [r]);
    }
}

proptest! {
    #![proptest_config(common::proptest_config(128))]

    /// coords and world_rank are inverses, inside the grid.
    #[test]
    fn round_trip(tp in 1usize..=8, pp in 1usize..=8) {
        let l = RankLayout { tp, pp };
        for rank in 0..tp * pp {
            let (p, t) = coords(l, rank);
            prop_assert!(p < pp && t < tp, "rank {} → ({}, {}) at tp {} pp {}", rank, p, t, tp, pp);
            prop_assert_eq!(world_rank(l, p, t), rank);
        }
        for p in 0..pp {
            for t in 0..tp {
                prop_assert_eq!(coords(l, world_rank(l, p, t)), (p, t));
            }
        }
    }

    /// The stages' ranks (the TP groups) partition the world into runs of neighbours.
    #[test]
    fn tp_groups_are_contiguous_and_partition_the_ranks(tp in 1usize..=8, pp in 1usize..=8) {
        let l = RankLayout { tp, pp };
        let mut seen = BTreeSet::new();
        for p in 0..pp {
            let ranks = stage_ranks(l, p);
            prop_assert_eq!(ranks.len(), tp, "stage {} at tp {} pp {}: {:?}", p, tp, pp, ranks);
            prop_assert!(ranks.windows(2).all(|w| w[1] == w[0] + 1), "not neighbours: {:?}", ranks);
            for (t, &r) in ranks.iter().enumerate() {
                prop_assert_eq!(coords(l, r), (p, t), "rank {} listed in stage {}", r, p);
                prop_assert!(seen.insert(r), "rank {} in two stages", r);
            }
        }
        prop_assert_eq!(seen.len(), tp * pp);
        for rank in 0..tp * pp {
            let group = tp_group_of(l, rank);
            prop_assert_eq!(&group, &stage_ranks(l, coords(l, rank).0));
            prop_assert_eq!(group[coords(l, rank).1], rank);
        }
    }

    /// Each PP group holds one rank per stage, in stage order, all of one TP slice; the PP
    /// groups partition the world too.
    #[test]
    fn pp_groups_have_one_rank_per_stage(tp in 1usize..=8, pp in 1usize..=8) {
        let l = RankLayout { tp, pp };
        let mut seen = BTreeSet::new();
        for rank in 0..tp * pp {
            let (p, t) = coords(l, rank);
            let group = pp_group_of(l, rank);
            let stages: Vec<usize> = group.iter().map(|&r| coords(l, r).0).collect();
            prop_assert_eq!(stages, (0..pp).collect::<Vec<_>>(), "PP group of {}: {:?}", rank, group);
            prop_assert!(group.iter().all(|&r| coords(l, r).1 == t));
            prop_assert_eq!(group[p], rank);
            if p == 0 {
                for &r in &group {
                    prop_assert!(seen.insert(r), "rank {} in two PP groups", r);
                }
            }
        }
        prop_assert_eq!(seen.len(), tp * pp);
    }

    /// Rank for rank, the engine's layout (vLLM's).
    #[test]
    fn matches_the_engine(tp in 1usize..=8, pp in 1usize..=8) {
        let l = RankLayout { tp, pp };
        for rank in 0..tp * pp {
            prop_assert_eq!(coords(l, rank), l.coords(rank));
            prop_assert_eq!(tp_group_of(l, rank), l.tp_group_of(rank));
            prop_assert_eq!(pp_group_of(l, rank), l.pp_group_of(rank));
        }
        for p in 0..pp {
            prop_assert_eq!(stage_ranks(l, p), l.tp_group(p));
        }
    }
}

/// The engine's communicators for tp = 2 × pp = 3, one thread per rank: every rank all-reduces
/// its world rank over its TP communicator and gets the sum of the group your `tp_group_of`
/// names; then each passes its rank down its PP link, and what arrives comes from the rank
/// before it in your `pp_group_of`.
#[test]
fn the_engines_communicators_join_the_groups_you_name() {
    let l = RankLayout { tp: 2, pp: 3 };
    let groups = build_groups(l, Duration::from_secs(10));
    for g in &groups {
        assert_eq!(coords(l, g.world_rank), (g.pp_rank, g.tp_rank));
        let pos = |v: &[usize]| v.iter().position(|&r| r == g.world_rank);
        assert_eq!(pos(&tp_group_of(l, g.world_rank)), Some(g.tp.rank()));
        let pp = g.pp.as_ref().expect("pp = 3");
        assert_eq!(pos(&pp_group_of(l, g.world_rank)), Some(pp.rank()));
    }
    let threads: Vec<_> = groups
        .into_iter()
        .map(|mut g| {
            std::thread::spawn(move || {
                let rank = g.world_rank;
                let mut sum = [rank as f32];
                g.tp.all_reduce_sum(&mut sum).unwrap();
                let pp = g.pp.as_mut().unwrap();
                let mut from = None;
                if g.pp_rank > 0 {
                    let mut buf = [0.0];
                    pp.recv(&mut buf, g.pp_rank - 1).unwrap();
                    from = Some(buf[0] as usize);
                }
                if g.pp_rank + 1 < 3 {
                    pp.send(&[rank as f32], g.pp_rank + 1).unwrap();
                }
                (rank, sum[0] as usize, from)
            })
        })
        .collect();
    for t in threads {
        let (rank, sum, from) = t.join().unwrap();
        let expect: usize = tp_group_of(l, rank).iter().sum();
        assert_eq!(sum, expect, "rank {rank}'s all-reduce");
        let group = pp_group_of(l, rank);
        let me = group.iter().position(|&r| r == rank).unwrap();
        assert_eq!(
            from,
            me.checked_sub(1).map(|i| group[i]),
            "rank {rank} received"
        );
    }
}
