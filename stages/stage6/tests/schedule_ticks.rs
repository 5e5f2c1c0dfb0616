//! Exercise 1: your tick table against examples worked by hand, against the engine's on
//! random sizes, and against the schedule the engine's pipeline ran.

mod common;

use engine::distributed::pipeline_schedule as reference;
use proptest::prelude::*;
use stage6::schedule_ticks::schedule_ticks;
use stage6::WorkItem;

fn w(stage: usize, micro_batch: usize) -> WorkItem {
    WorkItem { stage, micro_batch }
}

/// The chapter's table: 4 stages, 4 micro-batches. Three ticks of fill, one tick with every
/// stage busy, three of drain.
#[test]
fn the_chapters_table_four_stages_four_micro_batches() {
    let ticks = schedule_ticks(4, 4);
    let want = vec![
        vec![w(0, 0)],
        vec![w(0, 1), w(1, 0)],
        vec![w(0, 2), w(1, 1), w(2, 0)],
        vec![w(0, 3), w(1, 2), w(2, 1), w(3, 0)],
        vec![w(1, 3), w(2, 2), w(3, 1)],
        vec![w(2, 3), w(3, 2)],
        vec![w(3, 3)],
    ];
    assert_eq!(ticks, want);
}

/// One batch through 4 stages: 4 ticks, one stage at a time.
#[test]
fn one_batch_visits_one_stage_per_tick() {
    assert_eq!(
        schedule_ticks(4, 1),
        vec![vec![w(0, 0)], vec![w(1, 0)], vec![w(2, 0)], vec![w(3, 0)]]
    );
}

/// Fewer micro-batches than stages: no tick has every stage busy.
#[test]
fn fewer_micro_batches_than_stages() {
    assert_eq!(
        schedule_ticks(4, 2),
        vec![
            vec![w(0, 0)],
            vec![w(0, 1), w(1, 0)],
            vec![w(1, 1), w(2, 0)],
            vec![w(2, 1), w(3, 0)],
            vec![w(3, 1)],
        ]
    );
    assert_eq!(
        schedule_ticks(1, 3),
        vec![vec![w(0, 0)], vec![w(0, 1)], vec![w(0, 2)]]
    );
}

#[test]
fn no_work_no_ticks() {
    assert!(schedule_ticks(0, 4).is_empty());
    assert!(schedule_ticks(4, 0).is_empty());
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

    #[test]
    fn matches_the_engine(s in 1usize..=8, m in 1usize..=12) {
        prop_assert_eq!(schedule_ticks(s, m), reference::schedule_ticks(s, m));
    }
}

/// Every item the engine's pipeline ran (3 stages, 4 micro-batches) is in your table at the
/// tick the engine's clock gave it, and your table has nothing else.
#[test]
fn matches_what_the_engines_pipeline_ran() {
    let schedule = common::engine_schedule(3, 4);
    let ticks = schedule_ticks(3, 4);
    assert_eq!(
        ticks.iter().map(Vec::len).sum::<usize>(),
        schedule.items.len()
    );
    for item in &schedule.items {
        let t = item.tick_start as usize;
        assert!(
            ticks
                .get(t)
                .is_some_and(|row| row.contains(&w(item.stage, item.micro_batch))),
            "the engine ran stage {} on micro-batch {} at tick {t}; your table: {:?}",
            item.stage,
            item.micro_batch,
            ticks.get(t)
        );
    }
}
