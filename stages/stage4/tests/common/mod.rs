//! Shared by the stage 4 tests: fixed-seed proptest settings, closeness, and the check that
//! a launch moved only the bytes it asked for.
#![allow(dead_code)]

use proptest::test_runner::{Config, RngSeed};
use stage4::gpu::{LaunchStats, Traffic};

/// The seed of every proptest in stage 4: each run draws the same inputs, so a failure
/// reproduces on every run.
pub const PROPTEST_SEED: u64 = 0x5EED_0004;

/// Proptest settings: `cases` random inputs drawn from [`PROPTEST_SEED`], shrinking kept short
/// (a wrong kernel fails every case), and no regression files written next to the tests.
pub fn proptest_config(cases: u32) -> Config {
    Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(PROPTEST_SEED),
        max_shrink_iters: 256,
        ..Config::with_cases(cases)
    }
}

/// The first `(index, yours, want)` with `|a − b| > tol · (1 + |b|)`, NaN included.
pub fn first_difference(yours: &[f32], want: &[f32], tol: f32) -> Option<(usize, f32, f32)> {
    assert_eq!(yours.len(), want.len(), "compared buffers differ in length");
    let far = |a: f32, b: f32| a.is_nan() || (a - b).abs() > tol * (1.0 + b.abs());
    (0..yours.len())
        .find(|&i| far(yours[i], want[i]))
        .map(|i| (i, yours[i], want[i]))
}

/// Asserts `yours` is within `tol` of `want` elementwise (see [`first_difference`]).
pub fn assert_close(what: &str, yours: &[f32], want: &[f32], tol: f32) {
    if let Some((i, a, b)) = first_difference(yours, want, tol) {
        panic!("{what}: element {i} is {a}, it should be {b}");
    }
}

/// Which of a buffer's accesses to check.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Loads,
    Stores,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Loads => "loads",
            Kind::Stores => "stores",
        }
    }
}

/// Asserts that every `kind` access of `buffer` in the launch moved only bytes it asked for
/// (100% efficiency: each warp instruction touched the fewest sectors its bytes allow, on
/// shapes where rows are whole sectors). On failure, prints the launch's whole table.
pub fn assert_coalesced(what: &str, stats: &LaunchStats, buffer: &str, kind: Kind) {
    let b = stats.buffer(buffer);
    let t: Traffic = match kind {
        Kind::Loads => b.loads,
        Kind::Stores => b.stores,
    };
    assert!(
        t.requests > 0,
        "{what}: the kernel made no {} of `{buffer}`\n{stats}",
        kind.name()
    );
    assert!(
        t.efficiency() == 1.0,
        "{what}: {} of `{buffer}` are not coalesced: {} bytes asked for, {} moved \
         ({} sectors for {} warp instructions, {:.1} per instruction; efficiency {:.1}%). \
         Let the 32 lanes of a warp take neighbouring elements.\n{stats}",
        kind.name(),
        t.requested_bytes,
        t.transferred_bytes(),
        t.sectors,
        t.requests,
        t.sectors_per_request(),
        100.0 * t.efficiency()
    );
}
