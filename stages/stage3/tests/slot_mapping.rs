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

    /// Any position the table does not cover panics, whatever the table and block size.
    #[test]
    fn a_position_past_any_table_panics(
        table in prop::collection::vec(0u32..1000, 1..8),
        block_size in 1usize..64,
        past in 0usize..200,
    ) {
        let table: Vec<BlockId> = table.into_iter().map(BlockId).collect();
        // The last position the table covers has a slot in its last block...
        let last = table.len() * block_size - 1;
        prop_assert_eq!(
            slot_for_position(&table, block_size, last),
            SlotId(table[table.len() - 1].0 as u64 * block_size as u64 + (block_size - 1) as u64)
        );
        // ...and the next ones have none.
        let position = last + 1 + past;
        let got = std::panic::catch_unwind(|| slot_for_position(&table, block_size, position));
        prop_assert!(
            got.is_err(),
            "position {} with {} blocks of {}: expected a panic, got {:?}",
            position, table.len(), block_size, got.unwrap()
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

/// The chapter's example: block table [5, 12, 8], block size 16.
#[test]
fn the_chapters_example() {
    let table = [BlockId(5), BlockId(12), BlockId(8)];
    for (position, slot) in [(0, 80), (15, 95), (16, 192), (33, 129), (47, 143)] {
        assert_eq!(
            slot_for_position(&table, 16, position),
            SlotId(slot),
            "position {position} of block table [5, 12, 8], block size 16"
        );
    }
}

/// Three blocks of 16 hold positions 0 to 47. Position 49 has no block: a published example put
/// it in slot 129 (the last block, offset 1), which is position 33's slot. Overwriting another
/// token's key and value is silent corruption; the contract is to panic.
#[test]
fn a_position_past_the_table_panics() {
    let table = [BlockId(5), BlockId(12), BlockId(8)];
    assert_eq!(slot_for_position(&table, 16, 47), SlotId(143));
    for position in [48, 49, 63, 64, 1000] {
        let got = std::panic::catch_unwind(|| slot_for_position(&table, 16, position));
        assert!(
            got.is_err(),
            "position {position} is past the 3 blocks of [5, 12, 8] (block size 16): expected a \
             panic, got {:?}",
            got.unwrap()
        );
    }
}

/// Block ids are `u32`, slots `u64`: block 100 000 000 of 64-token blocks starts at slot
/// 6 400 000 000, past `u32::MAX`.
#[test]
fn large_block_ids_do_not_overflow() {
    let table = [BlockId(3), BlockId(100_000_000), BlockId(u32::MAX)];
    assert_eq!(slot_for_position(&table, 64, 64 + 5), SlotId(6_400_000_005));
    assert_eq!(
        slot_for_position(&table, 64, 2 * 64 + 63),
        SlotId(u32::MAX as u64 * 64 + 63)
    );
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
