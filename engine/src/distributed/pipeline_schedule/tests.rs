//! The schedule on examples worked by hand, and its closed forms over random sizes.

use super::*;
use proptest::prelude::*;

fn item(stage: usize, micro_batch: usize) -> WorkItem {
    WorkItem { stage, micro_batch }
}

#[test]
fn four_stages_four_micro_batches_fill_then_drain() {
    let ticks = schedule_ticks(4, 4);
    assert_eq!(ticks.len(), 7);
    assert_eq!(ticks[0], [item(0, 0)]);
    assert_eq!(ticks[3], [item(0, 3), item(1, 2), item(2, 1), item(3, 0)]);
    assert_eq!(ticks[6], [item(3, 3)]);
    // One batch: one stage at a time, 4 ticks.
    assert_eq!(
        schedule_ticks(4, 1),
        [[item(0, 0)], [item(1, 0)], [item(2, 0)], [item(3, 0)]]
    );
    assert!(schedule_ticks(0, 3).is_empty() && schedule_ticks(3, 0).is_empty());
}

#[test]
fn start_times_wait_for_the_slower_neighbour() {
    let order = vec![vec![0, 1, 2]; 2];
    // Stage 1 is twice as slow: its items queue up behind each other.
    let start = start_times(&order, &[vec![1, 1, 1], vec![2, 2, 2]]).unwrap();
    assert_eq!(start, [vec![0, 1, 2], vec![1, 3, 5]]);
    // Stage 0 is the slow one: stage 1 waits for each input.
    let start = start_times(&order, &[vec![3, 3, 3], vec![1, 1, 1]]).unwrap();
    assert_eq!(start, [vec![0, 3, 6], vec![3, 6, 9]]);
    let err = start_times(&[vec![0, 0]], &[vec![1, 1]]).unwrap_err();
    assert!(err.to_string().contains("not a permutation"), "{err}");
    let err = start_times(&[vec![0]], &[]).unwrap_err();
    assert!(matches!(err, ScheduleError::ShapeMismatch { .. }), "{err}");
}

#[test]
fn micro_batches_are_balanced_and_never_empty() {
    assert_eq!(split_micro_batches(10, 4), [0..3, 3..6, 6..8, 8..10]);
    assert_eq!(split_micro_batches(2, 4), [0..1, 1..2]);
    assert!(split_micro_batches(0, 4).is_empty());
    assert!(split_micro_batches(4, 0).is_empty());
}

#[test]
fn the_logical_clock_starts_at_the_later_of_free_and_arrival() {
    let mut c = LogicalClock::default();
    assert_eq!(c.finish(), (0, 1));
    c.arrival = 3;
    assert_eq!(c.finish(), (3, 4));
    assert_eq!(
        c.finish(),
        (4, 5),
        "arrival is reset: the next input is there"
    );
}

proptest! {
    /// The unit schedule: each item once, at tick s + m, and its bubble (S − 1)/(M + S − 1)
    /// exactly, whether read from the tick table or from `start_times` with unit costs.
    #[test]
    fn the_unit_schedule_has_the_closed_form_bubble(s in 1usize..=6, m in 1usize..=10) {
        let ticks = schedule_ticks(s, m);
        prop_assert_eq!(ticks.len(), m + s - 1);
        let mut items = Vec::new();
        for (t, row) in ticks.iter().enumerate() {
            for w in row {
                prop_assert_eq!(w.stage + w.micro_batch, t);
                items.push(TimedItem { stage: w.stage, micro_batch: w.micro_batch, start: t as u64, end: t as u64 + 1 });
            }
        }
        prop_assert_eq!(items.len(), s * m);
        let b = bubble(&items, s);
        prop_assert_eq!(b.total, (s * (m + s - 1)) as u64);
        prop_assert_eq!(b.idle * (m + s - 1) as u64, b.total * (s - 1) as u64);
        prop_assert!((b.efficiency() - pipeline_efficiency(m, s)).abs() < 1e-12);
        let start = start_times(&vec![(0..m).collect(); s], &vec![vec![1; m]; s]).unwrap();
        for it in &items {
            prop_assert_eq!(start[it.stage][it.micro_batch], it.start);
        }
    }
}
