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
