//! Exercise 1: your `slot_for_position` against the engine's, then inside the engine.

mod common;

use engine::core::block::{self as reference, BlockId, SlotId};
use engine::core::scheduler_output::SchedulerOutput;
use engine::worker::model_runner::{self, ModelInput};
use engine::EngineParts;
use proptest::prelude::*;
use stage3::slot_mapping::slot_for_position;

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn matches_the_engine(
        table in prop::collection::vec(0u32..u32::MAX, 1..20),
        block_size in 1usize..64,
        pos_frac in 0.0f64..1.0,
    ) {
        let table: Vec<BlockId> = table.into_iter().map(BlockId).collect();
        let position = ((table.len() * block_size) as f64 * pos_frac) as usize;
        prop_assert_eq!(
            slot_for_position(&table, block_size, position),
            reference::slot_for_position(&table, block_size, position),
            "block_size {}, position {}", block_size, position
        );
    }
}

#[test]
fn worked_example() {
    let table = [BlockId(7), BlockId(2)];
    assert_eq!(slot_for_position(&table, 4, 0), SlotId(28));
    assert_eq!(slot_for_position(&table, 4, 3), SlotId(31));
    assert_eq!(slot_for_position(&table, 4, 4), SlotId(8));
    assert_eq!(slot_for_position(&table, 4, 7), SlotId(11));
}

/// The engine's `prepare_inputs`, with the slot mapping recomputed by yours.
fn prepare_with_your_slots(out: &SchedulerOutput, block_size: usize) -> ModelInput {
    let mut input = model_runner::prepare_inputs(out, block_size);
    input.attn_metadata.slot_mapping = out
        .scheduled
        .iter()
        .flat_map(|s| {
            (0..s.token_ids.len())
                .map(|j| slot_for_position(&s.block_table, block_size, s.start_position + j).0)
        })
        .collect();
    input
}

fn your_slot_mapping() -> EngineParts {
    EngineParts {
        prepare_inputs: prepare_with_your_slots,
        ..EngineParts::default()
    }
}

/// "With your slot mapping, the engine generates exactly the same tokens."
#[test]
fn engine_with_your_slot_mapping_generates_the_same_tokens() {
    common::assert_same_as_engine("your slot mapping", your_slot_mapping, &common::greedy());
    common::check_smollm2("your slot mapping", your_slot_mapping());
}
