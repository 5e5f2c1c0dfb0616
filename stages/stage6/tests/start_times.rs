//! Exercise 2: your start times against examples worked by hand, against the engine's on
//! random costs and orders, and against the ticks the engine's pipeline recorded.

mod common;

use engine::distributed::pipeline_schedule as reference;
use proptest::prelude::*;
use stage6::start_times::start_times;
use stage6::ScheduleError;

fn in_order(stages: usize, m: usize) -> Vec<Vec<usize>> {
    vec![(0..m).collect(); stages]
}

/// Every item costs 1: stage s starts micro-batch m at s + m.
#[test]
fn unit_costs_give_s_plus_m() {
    let start = start_times(&in_order(3, 3), &vec![vec![1; 3]; 3]).unwrap();
    assert_eq!(start, vec![vec![0, 1, 2], vec![1, 2, 3], vec![2, 3, 4]]);
}

/// The chapter's example: stage 0 costs 3 per item, stage 1 costs 1. Stage 1 waits for
/// every input (starts at 3, 6, 9), never for itself.
#[test]
fn a_slow_first_stage_makes_the_next_one_wait() {
    let start = start_times(&in_order(2, 3), &[vec![3, 3, 3], vec![1, 1, 1]]).unwrap();
    assert_eq!(start, vec![vec![0, 3, 6], vec![3, 6, 9]]);
}

/// Stage 1 costs 2: its items queue behind each other (it is the bottleneck).
#[test]
fn a_slow_second_stage_queues_its_items() {
    let start = start_times(&in_order(2, 3), &[vec![1, 1, 1], vec![2, 2, 2]]).unwrap();
    assert_eq!(start, vec![vec![0, 1, 2], vec![1, 3, 5]]);
}

/// Stage 1 takes micro-batch 1 first: it must wait for it even though 0 arrived earlier.
#[test]
fn a_stage_follows_its_own_order() {
    let start = start_times(&[vec![0, 1], vec![1, 0]], &[vec![1, 1], vec![1, 1]]).unwrap();
    assert_eq!(start, vec![vec![0, 1], vec![3, 2]]);
}

#[test]
fn bad_orders_and_shapes_are_errors() {
    let e = start_times(&[vec![0, 0]], &[vec![1, 1]]).unwrap_err();
    assert!(
        matches!(e, ScheduleError::NotAPermutation { stage: 0, .. }),
        "{e}"
    );
    let e = start_times(&[vec![0, 2]], &[vec![1, 1]]).unwrap_err();
    assert!(matches!(e, ScheduleError::NotAPermutation { .. }), "{e}");
    let e = start_times(&[vec![0, 1], vec![0, 1]], &[vec![1, 1]]).unwrap_err();
    assert!(
        matches!(
            e,
            ScheduleError::ShapeMismatch {
                orders: 2,
                costs: 1
            }
        ),
        "{e}"
    );
    assert_eq!(start_times(&[], &[]).unwrap(), Vec::<Vec<u64>>::new());
}

/// `(orders, costs)`: S stages, M micro-batches, random orders and costs 1..6.
fn schedules() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<Vec<u64>>)> {
    (1usize..=5, 1usize..=8).prop_flat_map(|(s, m)| {
        (
            prop::collection::vec(Just((0..m).collect::<Vec<_>>()).prop_shuffle(), s),
            prop::collection::vec(prop::collection::vec(1u64..6, m), s),
        )
    })
}

proptest! {
    #![proptest_config(common::proptest_config(128))]

    #[test]
    fn matches_the_engine((orders, cost) in schedules()) {
        prop_assert_eq!(start_times(&orders, &cost), reference::start_times(&orders, &cost));
    }
}

/// The engine's pipeline (4 stages, 3 micro-batches) recorded each item's start tick; your
/// start times for its stage orders with unit costs must be those ticks.
#[test]
fn replays_what_the_engines_pipeline_ran() {
    let schedule = common::engine_schedule(4, 3);
    let orders: Vec<Vec<usize>> = (0..4).map(|s| schedule.stage_order(s)).collect();
    let start = start_times(&orders, &vec![vec![1; 3]; 4]).unwrap();
    for item in &schedule.items {
        assert_eq!(
            start[item.stage][item.micro_batch], item.tick_start,
            "stage {} micro-batch {}",
            item.stage, item.micro_batch
        );
    }
}
