//! Exercise 3: your bubble against examples worked by hand, against the engine's on random
//! schedules, and on the schedule the engine's pipeline ran.

mod common;

use engine::distributed::pipeline_schedule as reference;
use proptest::prelude::*;
use stage6::bubble::bubble;
use stage6::{Bubble, TimedItem};

/// The unit schedule of S stages and M micro-batches: stage s runs m in `s + m .. s + m + 1`.
fn unit(s: usize, m: usize) -> Vec<TimedItem> {
    let mut items = Vec::new();
    for stage in 0..s {
        for mb in 0..m {
            let t = (stage + mb) as u64;
            items.push(TimedItem {
                stage,
                micro_batch: mb,
                start: t,
                end: t + 1,
            });
        }
    }
    items
}

/// One batch through 4 stages: 4 ticks, each stage busy one of them: 12 of 16 idle, so the
/// pipeline computes 1/4 of the time.
#[test]
fn one_batch_through_four_stages_is_a_quarter_busy() {
    let b = bubble(&unit(4, 1), 4);
    assert_eq!(
        b,
        Bubble {
            idle: 12,
            total: 16
        }
    );
    assert_eq!(b.efficiency(), 0.25);
}

/// 4 micro-batches through 4 stages: 7 ticks; 12 of 28 idle, efficiency 4/7.
#[test]
fn four_micro_batches_through_four_stages() {
    assert_eq!(
        bubble(&unit(4, 4), 4),
        Bubble {
            idle: 12,
            total: 28
        }
    );
    assert_eq!(
        bubble(&unit(4, 8), 4),
        Bubble {
            idle: 12,
            total: 44
        }
    );
}

/// The fill and drain cost the same 12 stage-ticks whatever M is: S(S − 1).
#[test]
fn the_bubble_is_the_same_for_every_m_only_the_total_grows() {
    for m in 1..10 {
        assert_eq!(bubble(&unit(3, m), 3).idle, 6, "M = {m}");
    }
}

/// Stage 0 costs 3 per item, stage 1 costs 1 (the start-times example): a span of 10 units,
/// 9 + 3 of them busy, so 8 of 20 idle, most of it stage 1 waiting for its input.
#[test]
fn an_uneven_pipeline() {
    let items = [
        TimedItem {
            stage: 0,
            micro_batch: 0,
            start: 0,
            end: 3,
        },
        TimedItem {
            stage: 0,
            micro_batch: 1,
            start: 3,
            end: 6,
        },
        TimedItem {
            stage: 0,
            micro_batch: 2,
            start: 6,
            end: 9,
        },
        TimedItem {
            stage: 1,
            micro_batch: 0,
            start: 3,
            end: 4,
        },
        TimedItem {
            stage: 1,
            micro_batch: 1,
            start: 6,
            end: 7,
        },
        TimedItem {
            stage: 1,
            micro_batch: 2,
            start: 9,
            end: 10,
        },
    ];
    assert_eq!(bubble(&items, 2), Bubble { idle: 8, total: 20 });
}

#[test]
fn nothing_ran_no_bubble() {
    assert_eq!(bubble(&[], 4), Bubble::default());
}

/// Random schedules: random costs 1..6, laid out by the engine's start times.
fn timed() -> impl Strategy<Value = (Vec<TimedItem>, usize)> {
    (1usize..=5, 1usize..=8).prop_flat_map(|(s, m)| {
        prop::collection::vec(prop::collection::vec(1u64..6, m), s).prop_map(move |cost| {
            let start = reference::start_times(&vec![(0..m).collect(); s], &cost).unwrap();
            let mut items = Vec::new();
            for stage in 0..s {
                for mb in 0..m {
                    let t = start[stage][mb];
                    items.push(TimedItem {
                        stage,
                        micro_batch: mb,
                        start: t,
                        end: t + cost[stage][mb],
                    });
                }
            }
            (items, s)
        })
    })
}

proptest! {
    #![proptest_config(common::proptest_config(128))]

    #[test]
    fn matches_the_engine((items, s) in timed()) {
        prop_assert_eq!(bubble(&items, s), reference::bubble(&items, s));
    }
}

/// The engine's pipeline on (S, M) = (2, 3), (3, 1), (4, 4): your bubble of what it ran is
/// exactly (S − 1)/(M + S − 1) of S × (M + S − 1) ticks.
#[test]
fn the_engines_executed_schedule_has_the_closed_form_bubble() {
    for (s, m) in [(2, 3), (3, 1), (4, 4)] {
        let schedule = common::engine_schedule(s, m);
        let b = bubble(&schedule.timed_items(), s);
        let total = (s * (m + s - 1)) as u64;
        assert_eq!(
            b,
            Bubble {
                idle: (s * (s - 1)) as u64,
                total
            },
            "S {s} M {m}"
        );
        assert_eq!(b, schedule.bubble());
    }
}
