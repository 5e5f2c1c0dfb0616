//! Exercise 2: your `prepare_inputs` against the engine's on random mixed batches, then
//! inside the engine.

mod common;

use engine::core::block::{blocks_needed, BlockId};
use engine::core::scheduler_output::{ScheduledSequence, SchedulerOutput};
use engine::sequence::SeqId;
use engine::worker::model_runner;
use engine::EngineParts;
use proptest::prelude::*;
use stage3::prepare_inputs::prepare_inputs;

/// A random batch: each sequence has computed `start` tokens and gets `n` more (a decode when
/// n == 1, a prefill or a chunk otherwise), with a block table just long enough.
fn batch(block_size: usize) -> impl Strategy<Value = SchedulerOutput> {
    let seq = (0usize..40, 1usize..12, any::<bool>(), any::<u64>());
    prop::collection::vec(seq, 0..6).prop_map(move |seqs| SchedulerOutput {
        scheduled: seqs
            .into_iter()
            .enumerate()
            .map(|(i, (start, n, needs_logits, salt))| ScheduledSequence {
                seq_id: SeqId(i as u64),
                token_ids: (0..n)
                    .map(|j| 3 + ((salt as usize + j) % 250) as u32)
                    .collect(),
                start_position: start,
                block_table: (0..blocks_needed(start + n, block_size))
                    .map(|b| BlockId(((salt as usize + 13 * b) % 1000) as u32))
                    .collect(),
                needs_logits,
            })
            .collect(),
        preempted: vec![],
    })
}

proptest! {
    #![proptest_config(common::proptest_config(128))]

    #[test]
    fn matches_the_engine_on_mixed_batches(
        (block_size, out) in (1usize..9).prop_flat_map(|bs| (Just(bs), batch(bs)))
    ) {
        prop_assert_eq!(
            prepare_inputs(&out, block_size),
            model_runner::prepare_inputs(&out, block_size),
            "block_size {}", block_size
        );
    }
}

fn seq(
    id: u64,
    start_position: usize,
    num_tokens: usize,
    table: &[u32],
    needs_logits: bool,
) -> ScheduledSequence {
    ScheduledSequence {
        seq_id: SeqId(id),
        token_ids: (0..num_tokens as u32)
            .map(|j| 100 * (id as u32 + 1) + j)
            .collect(),
        start_position,
        block_table: table.iter().copied().map(BlockId).collect(),
        needs_logits,
    }
}

/// The chapter's batch, block size 16: A decodes position 40 (table [3, 9, 4]), B is a
/// 20-token prefill (table [7, 2]). Every field, worked by hand.
#[test]
fn the_chapters_mixed_batch() {
    let out = SchedulerOutput {
        scheduled: vec![
            seq(0, 40, 1, &[3, 9, 4], true),
            seq(1, 0, 20, &[7, 2], true),
        ],
        preempted: vec![],
    };
    let input = prepare_inputs(&out, 16);
    let m = &input.attn_metadata;
    let b_ids: Vec<u32> = (200..220).collect();
    assert_eq!(input.input_ids, [&[100][..], &b_ids].concat(), "input_ids");
    let b_positions: Vec<usize> = (0..20).collect();
    assert_eq!(
        input.positions,
        [&[40][..], &b_positions].concat(),
        "positions"
    );
    let b_slots: Vec<u64> = (112..128).chain(32..36).collect();
    assert_eq!(
        m.slot_mapping,
        [&[72][..], &b_slots].concat(),
        "slot_mapping"
    );
    assert_eq!(
        m.query_start_loc,
        [0, 1, 21],
        "query_start_loc: A owns row 0, B rows 1 to 20"
    );
    assert_eq!(
        m.seq_lens,
        [41, 20],
        "seq_lens: tokens in the cache after this step"
    );
    assert_eq!(
        m.max_blocks_per_seq, 3,
        "max_blocks_per_seq: the longest table"
    );
    assert_eq!(
        m.block_tables,
        [3, 9, 4, 7, 2, 0],
        "block_tables, padded with 0"
    );
    assert_eq!(m.block_size, 16, "block_size");
    assert_eq!(
        input.logits_indices,
        [0, 20],
        "logits_indices: the last row of each sequence"
    );
}

/// A chunk that is not the prompt's last samples nothing; a later chunk starts at its
/// `start_position`, and its sequence's context includes the earlier chunks.
#[test]
fn a_middle_chunk_and_a_decode() {
    // Block size 4. A: chunk of positions 8 to 13 of a longer prompt (table [5, 1, 6, 2]);
    // B: decode at position 9 (table [3, 8, 7]).
    let out = SchedulerOutput {
        scheduled: vec![
            seq(0, 8, 6, &[5, 1, 6, 2], false),
            seq(1, 9, 1, &[3, 8, 7], true),
        ],
        preempted: vec![],
    };
    let input = prepare_inputs(&out, 4);
    let m = &input.attn_metadata;
    assert_eq!(input.positions, [8, 9, 10, 11, 12, 13, 9], "positions");
    assert_eq!(m.slot_mapping, [24, 25, 26, 27, 8, 9, 29], "slot_mapping");
    assert_eq!(
        m.query_start_loc,
        [0, 6, 7],
        "query_start_loc: A owns rows 0 to 5, B row 6"
    );
    assert_eq!(
        m.seq_lens,
        [14, 10],
        "seq_lens: context plus this step's tokens"
    );
    assert_eq!(m.block_tables, [5, 1, 6, 2, 3, 8, 7, 0], "block_tables");
    assert_eq!(input.logits_indices, [6], "logits_indices: only B samples");
}

#[test]
fn an_empty_batch_is_empty() {
    let input = prepare_inputs(&SchedulerOutput::default(), 16);
    let mut expected = engine::worker::model_runner::ModelInput::default();
    expected.attn_metadata.block_size = 16;
    expected.attn_metadata.query_start_loc = vec![0];
    assert_eq!(input, expected);
}

fn your_prepare_inputs() -> EngineParts {
    EngineParts {
        prepare_inputs,
        ..EngineParts::default()
    }
}

/// "With your input preparation, the engine generates exactly the same tokens."
#[test]
fn engine_with_your_prepare_inputs_generates_the_same_tokens() {
    common::assert_same_as_engine(
        "your prepare_inputs",
        your_prepare_inputs,
        &common::greedy(),
    );
    common::check_smollm2("your prepare_inputs", your_prepare_inputs());
}
