//! Shared by the stage 5 tests: proptest settings, and ranks as threads over the engine's
//! `CpuCommunicator`.
#![allow(dead_code)]

use std::time::Duration;

use engine::distributed::{CommError, CommStats, Communicator, CpuCommunicator};
use proptest::test_runner::{Config, RngSeed};

/// The seed of every proptest in stage 5: each run draws the same inputs, so a failure comes
/// back on every run.
pub const PROPTEST_SEED: u64 = 0x5EED_0005;

/// `cases` random inputs drawn from [`PROPTEST_SEED`]; no regression files written.
pub fn proptest_config(cases: u32) -> Config {
    Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(PROPTEST_SEED),
        ..Config::with_cases(cases)
    }
}

/// What one rank ended with: its buffer (or its error) and its communicator's counters.
pub struct RankResult {
    pub result: Result<Vec<f32>, CommError>,
    pub stats: CommStats,
}

/// Runs `f` on every rank of a group of `inputs.len()` ranks, one thread each, rank `r`
/// starting from `inputs[r]`; a receive waits at most `timeout`. A rank's panic (a `todo!`,
/// say) is re-raised here, with its message.
pub fn run_ranks(
    inputs: Vec<Vec<f32>>,
    timeout: Duration,
    f: fn(&mut dyn Communicator, &mut [f32]) -> Result<(), CommError>,
) -> Vec<RankResult> {
    let comms = CpuCommunicator::group(inputs.len(), timeout);
    let handles: Vec<_> = comms
        .into_iter()
        .zip(inputs)
        .map(|(mut comm, mut buf)| {
            std::thread::spawn(move || {
                let result = f(&mut comm, &mut buf).map(|()| buf);
                RankResult {
                    result,
                    stats: comm.stats().clone(),
                }
            })
        })
        .collect();
    let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    joined
        .into_iter()
        .map(|j| j.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        .collect()
}
