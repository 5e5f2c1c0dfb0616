//! Exercise 1: your `RefCountingAllocator` against the engine's, then inside the engine.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use engine::core::block::BlockId;
use engine::core::block_allocator::{self as reference, BlockAllocator};
use engine::EngineParts;
use proptest::prelude::*;
use stage1::block_allocator::RefCountingAllocator;

#[derive(Debug, Clone)]
enum Op {
    Allocate,
    /// Fork the n-th owned handle (modulo the number owned).
    Fork(usize),
    /// Free the n-th owned handle.
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Allocate),
        1 => any::<usize>().prop_map(Op::Fork),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

    /// The same operations on both allocators: the same successes and failures, free counts and
    /// reference counts (block ids may differ: `owned` pairs yours with the engine's).
    #[test]
    fn matches_the_engine_on_random_operations(
        num_blocks in 0usize..12,
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let mut yours = RefCountingAllocator::new(num_blocks);
        let mut engine = reference::RefCountingAllocator::new(num_blocks);
        prop_assert_eq!(yours.num_total_blocks(), num_blocks, "num_total_blocks");
        prop_assert_eq!(yours.num_free_blocks(), num_blocks, "num_free_blocks of a new allocator");
        // One entry per owner: (your block, the engine's block).
        let mut owned: Vec<(BlockId, BlockId)> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate => {
                    let (y, e) = (yours.allocate(), engine.allocate());
                    prop_assert_eq!(y.is_some(), e.is_some(), "allocate with {} free", engine.num_free_blocks());
                    if let (Some(y), Some(e)) = (y, e) {
                        prop_assert!((y.0 as usize) < num_blocks, "block {:?} is out of range", y);
                        prop_assert!(owned.iter().all(|&(b, _)| b != y), "block {:?} was handed out twice", y);
                        owned.push((y, e));
                    }
                }
                Op::Fork(i) if !owned.is_empty() => {
                    let pair = owned[i % owned.len()];
                    yours.fork(pair.0);
                    engine.fork(pair.1);
                    owned.push(pair);
                }
                Op::Free(i) if !owned.is_empty() => {
                    let (y, e) = owned.swap_remove(i % owned.len());
                    yours.free(y);
                    engine.free(e);
                }
                _ => {}
            }
            prop_assert_eq!(yours.num_free_blocks(), engine.num_free_blocks(), "num_free_blocks");
            for &(y, e) in &owned {
                prop_assert_eq!(yours.ref_count(y), engine.ref_count(e), "ref_count of {:?}", y);
            }
        }
    }
}

/// The chapter's worked example: three blocks, one of them forked.
#[test]
fn the_chapters_worked_example() {
    let mut a = RefCountingAllocator::new(3);
    let counts = |a: &RefCountingAllocator, blocks: &[BlockId]| -> Vec<u32> {
        blocks.iter().map(|&b| a.ref_count(b)).collect()
    };
    let x = a.allocate().expect("3 free blocks");
    let y = a.allocate().expect("2 free blocks");
    assert_ne!(x, y);
    assert_eq!((counts(&a, &[x, y]), a.num_free_blocks()), (vec![1, 1], 1));
    a.fork(x);
    assert_eq!((counts(&a, &[x, y]), a.num_free_blocks()), (vec![2, 1], 1));
    a.free(x);
    assert_eq!((counts(&a, &[x, y]), a.num_free_blocks()), (vec![1, 1], 1));
    a.free(x);
    assert_eq!((counts(&a, &[x, y]), a.num_free_blocks()), (vec![0, 1], 2));
    assert_eq!(a.num_total_blocks(), 3);
}

/// Worked by hand: one block, two owners (a fork), freed twice.
#[test]
fn a_block_is_recycled_only_after_its_last_owner_frees_it() {
    let mut a = RefCountingAllocator::new(1);
    let b = a.allocate().expect("one free block");
    assert_eq!(a.allocate(), None, "no block is left");
    a.fork(b);
    assert_eq!(a.ref_count(b), 2, "fork adds an owner");
    a.free(b);
    assert_eq!(a.ref_count(b), 1, "one owner is left after the first free");
    assert_eq!(
        a.allocate(),
        None,
        "the block was handed out again while its other owner still holds it"
    );
    a.free(b);
    assert_eq!(a.ref_count(b), 0);
    assert_eq!(a.num_free_blocks(), 1, "the last free returns the block");
    assert_eq!(
        a.allocate(),
        Some(b),
        "a freed block can be allocated again"
    );
}

/// The trait: freeing a block that has no owner panics. Silently ignoring it would hide the
/// caller's bug until the block is handed out twice, far from the cause.
#[test]
fn a_double_free_panics() {
    let mut a = RefCountingAllocator::new(2);
    let b = a.allocate().expect("a free block");
    a.free(b);
    let second = catch_unwind(AssertUnwindSafe(|| a.free(b)));
    assert!(
        second.is_err(),
        "freeing {b:?} a second time returned normally; the trait says it panics"
    );
}

/// The trait: forking a block that has no owner panics.
#[test]
fn forking_a_free_block_panics() {
    let mut a = RefCountingAllocator::new(2);
    let b = a.allocate().expect("a free block");
    a.free(b);
    let fork = catch_unwind(AssertUnwindSafe(|| a.fork(b)));
    assert!(
        fork.is_err(),
        "forking the free block {b:?} returned normally; the trait says it panics"
    );
}

fn your_allocator() -> EngineParts {
    EngineParts {
        allocator: |n| Box::new(RefCountingAllocator::new(n)),
        ..EngineParts::default()
    }
}

/// "With your block allocator, the engine generates exactly the same tokens."
#[test]
fn engine_with_your_allocator_generates_the_same_tokens() {
    let preemptions =
        common::assert_same_as_engine("your allocator", your_allocator, common::tight_config());
    assert!(preemptions > 0, "the workload should fill the cache");
    common::check_smollm2("your allocator", your_allocator());
}
