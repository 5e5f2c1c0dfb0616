//! Exercise 4: your swap bookkeeping against the engine's, and the properties a swap must
//! keep: one host block per device block and no host block shared, the table's order
//! restored on swap-in, the host blocks given back, and no swap that does not fit.

mod common;

use std::collections::HashSet;

use engine::core::block::BlockId;
use engine::core::block_allocator::{BlockAllocator, RefCountingAllocator};
use engine::core::preemption::PreemptionMode;
use engine::core::swap_space as reference;
use proptest::prelude::*;
use stage1::swap_space::{preemption_choice, swap_in_copies, swap_out_copies, BlockCopy};

/// A device block table: `len` distinct blocks of a 64-block cache, in a random order.
fn device_table(max_len: usize) -> impl Strategy<Value = Vec<BlockId>> {
    (0..=max_len).prop_flat_map(|len| {
        Just((0..64).map(BlockId).collect::<Vec<_>>())
            .prop_shuffle()
            .prop_map(move |v| v[..len].to_vec())
    })
}

/// A host swap space of `total` blocks of which the first `held` are already taken (by
/// sequences swapped out earlier).
fn host_space(total: usize, held: usize) -> (RefCountingAllocator, Vec<BlockId>) {
    let mut host = RefCountingAllocator::new(total);
    let taken = (0..held.min(total))
        .map(|_| host.allocate().expect("within total"))
        .collect();
    (host, taken)
}

proptest! {
    #![proptest_config(common::proptest_config(128))]

    #[test]
    fn swap_out_matches_the_engine(table in device_table(12), total in 0usize..16, held in 0usize..8) {
        let (mut mine, _) = host_space(total, held);
        let (mut engines, _) = host_space(total, held);
        let got = swap_out_copies(&mut mine, &table);
        let want = reference::swap_out_copies(&mut engines, &table);
        prop_assert_eq!(got, want, "swap-out of {:?}", table);
        prop_assert_eq!(mine.num_free_blocks(), engines.num_free_blocks());
    }

    #[test]
    fn swap_out_gives_each_device_block_its_own_host_block(
        table in device_table(12), total in 0usize..16, held in 0usize..8,
    ) {
        let (mut host, taken) = host_space(total, held);
        let free_before = host.num_free_blocks();
        match swap_out_copies(&mut host, &table) {
            None => {
                prop_assert!(table.len() > free_before, "{} blocks fit in {} free host blocks, yet None", table.len(), free_before);
                prop_assert_eq!(host.num_free_blocks(), free_before, "a swap that does not fit must take no host block");
            }
            Some(copies) => {
                prop_assert!(table.len() <= free_before, "{} blocks swapped out with {} free host blocks", table.len(), free_before);
                let devices: Vec<BlockId> = copies.iter().map(|c| c.device).collect();
                prop_assert_eq!(&devices, &table, "copy i must read device block i of the table");
                let hosts: HashSet<BlockId> = copies.iter().map(|c| c.host).collect();
                prop_assert_eq!(hosts.len(), copies.len(), "a host block given twice: {:?}", copies);
                for c in &copies {
                    prop_assert!(!taken.contains(&c.host), "host block {:?} already held by another sequence", c.host);
                    prop_assert_eq!(host.ref_count(c.host), 1, "host block {:?} must have one owner", c.host);
                }
                prop_assert_eq!(host.num_free_blocks(), free_before - table.len());
            }
        }
    }

    #[test]
    fn swap_in_restores_the_table_in_order_and_frees_the_host(
        table in device_table(10), new_table in device_table(10), held in 0usize..4,
    ) {
        let n = table.len().min(new_table.len());
        let (table, new_table) = (&table[..n], &new_table[..n]);
        let (mut host, _) = host_space(16, held);
        let free_before = host.num_free_blocks();
        let out = swap_out_copies(&mut host, table).expect("16 host blocks hold 10");
        let host_table: Vec<BlockId> = out.iter().map(|c| c.host).collect();

        let mut engines = RefCountingAllocator::new(16);
        for _ in 0..held { engines.allocate(); }
        let engine_out = reference::swap_out_copies(&mut engines, table).expect("fits");
        let back = swap_in_copies(&mut host, &host_table, new_table);
        let engine_back = reference::swap_in_copies(&mut engines, &host_table, new_table);
        prop_assert_eq!(&out, &engine_out);
        prop_assert_eq!(&back, &engine_back, "swap-in differs from the engine's");

        prop_assert_eq!(back.len(), n);
        for i in 0..n {
            // Position i of the cache: old device block -> host block -> new device block.
            prop_assert_eq!(out[i].device, table[i]);
            prop_assert_eq!(back[i], BlockCopy { device: new_table[i], host: out[i].host },
                "position {} must come back from its own host block into new_table[{}]", i, i);
        }
        prop_assert_eq!(host.num_free_blocks(), free_before, "swap-in must give every host block back");
        for h in &host_table {
            prop_assert_eq!(host.ref_count(*h), 0, "host block {:?} still owned after swap-in", h);
        }
    }

    #[test]
    fn victims_swapped_out_one_after_another_share_no_host_block(
        tables in prop::collection::vec(device_table(5), 1..6), total in 0usize..20,
    ) {
        let mut host = RefCountingAllocator::new(total);
        let mut seen = HashSet::new();
        for t in &tables {
            if let Some(copies) = swap_out_copies(&mut host, t) {
                for c in copies {
                    prop_assert!(seen.insert(c.host), "host block {:?} given to two victims", c.host);
                }
            }
        }
        prop_assert_eq!(host.num_free_blocks(), total - seen.len());
    }
}

#[test]
fn a_victim_that_does_not_fit_is_recomputed() {
    for mode in [PreemptionMode::Recompute, PreemptionMode::Swap] {
        for blocks in 0..8 {
            for free in 0..8 {
                let want = if mode == PreemptionMode::Swap && blocks <= free {
                    PreemptionMode::Swap
                } else {
                    PreemptionMode::Recompute
                };
                assert_eq!(
                    preemption_choice(mode, blocks, free),
                    want,
                    "mode {mode}, victim of {blocks} blocks, {free} free host blocks"
                );
                assert_eq!(want, reference::preemption_choice(mode, blocks, free));
            }
        }
    }
}

#[test]
fn worked_example() {
    // The book's example: a victim with blocks [7, 2, 5], a swap space of 4 host blocks.
    let mut host = RefCountingAllocator::new(4);
    let table = [BlockId(7), BlockId(2), BlockId(5)];
    let out = swap_out_copies(&mut host, &table).expect("3 blocks fit in 4");
    assert_eq!(out.iter().map(|c| c.device).collect::<Vec<_>>(), table);
    assert_eq!(host.num_free_blocks(), 1);
    // A second victim of two blocks does not fit: nothing is taken, it is recomputed.
    assert_eq!(swap_out_copies(&mut host, &[BlockId(1), BlockId(3)]), None);
    assert_eq!(host.num_free_blocks(), 1);
    assert_eq!(
        preemption_choice(PreemptionMode::Swap, 2, 1),
        PreemptionMode::Recompute
    );
    // The first one resumes into device blocks [0, 9, 4].
    let hosts: Vec<BlockId> = out.iter().map(|c| c.host).collect();
    let back = swap_in_copies(&mut host, &hosts, &[BlockId(0), BlockId(9), BlockId(4)]);
    let pairs: Vec<(BlockId, BlockId)> = back.iter().map(|c| (c.host, c.device)).collect();
    assert_eq!(
        pairs,
        vec![
            (hosts[0], BlockId(0)),
            (hosts[1], BlockId(9)),
            (hosts[2], BlockId(4))
        ]
    );
    assert_eq!(host.num_free_blocks(), 4);
}
