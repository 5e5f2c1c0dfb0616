//! What the scheduler does when the KV cache is full: how a victim gives its blocks back
//! (vLLM's `PreemptionMode`), and which running sequence is the victim.
//!
//! Two ways to free a running sequence's blocks:
//! - **Recompute**: drop its keys and values; it waits again and its prompt and output are
//!   prefilled together when it returns. Costs compute (one prefill of everything so far).
//! - **Swap**: copy its blocks to a swap space in host memory and back when it resumes. Costs
//!   two copies over the host link of `2 × layers × block_size × kv_width` elements per block,
//!   and host memory (`--swap-space`), but no recomputation.
//!
//! A prefill recomputes a sequence's cache in one batched pass that a GPU runs at its compute
//! ceiling, while a swap moves the same bytes twice over a link tens of times slower than its
//! memory, so for the lengths this engine serves recompute is the cheaper one, and it needs no
//! host memory: vLLM made it the default for the same reason, and dropped swap in its V1
//! engine. We keep both, because a swap keeps a long sequence's work when recomputing it
//! would cost more than the copies.

use std::str::FromStr;

use crate::error::EngineError;

// ANCHOR: preemption_mode
/// How a preempted sequence gives back its KV blocks (`--preemption-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreemptionMode {
    /// Free the blocks; prefill the sequence again later. The default: it needs no host
    /// memory, and a batched prefill is cheaper than two copies over the host link for the
    /// sequence lengths served here (the module's doc says why).
    #[default]
    Recompute,
    /// Copy the blocks to the host swap space; copy them back when the sequence resumes. A
    /// victim whose blocks do not fit the swap space is recomputed instead (and logged).
    Swap,
}
// ANCHOR_END: preemption_mode

impl FromStr for PreemptionMode {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "recompute" => Ok(PreemptionMode::Recompute),
            "swap" => Ok(PreemptionMode::Swap),
            other => Err(EngineError::InvalidArgument(format!(
                "--preemption-mode must be swap or recompute, got {other:?}"
            ))),
        }
    }
}

impl std::fmt::Display for PreemptionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PreemptionMode::Recompute => "recompute",
            PreemptionMode::Swap => "swap",
        })
    }
}

// ANCHOR: victim_selection
/// Which running sequence is preempted first (`--preemption-victim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VictimSelection {
    /// The one the scheduling policy ranks least important (under FCFS the latest arrival).
    /// The default: the policy's order then decides both who runs and who yields, so the
    /// sequence the policy serves first is never preempted while a later one runs, and
    /// every request finishes.
    #[default]
    Policy,
    /// The largest `priority` value (the least urgent), latest arrival among equals.
    LowestPriority,
    /// The latest arrival, whatever the policy.
    LatestArrival,
    /// The one holding the most KV blocks: one preemption frees the most memory. It may
    /// preempt the same long sequence again and again; the other two cannot starve anyone.
    MostBlocks,
}
// ANCHOR_END: victim_selection

impl FromStr for VictimSelection {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "policy" => Ok(VictimSelection::Policy),
            "lowest-priority" => Ok(VictimSelection::LowestPriority),
            "latest-arrival" => Ok(VictimSelection::LatestArrival),
            "most-blocks" => Ok(VictimSelection::MostBlocks),
            other => Err(EngineError::InvalidArgument(format!(
                "--preemption-victim must be policy, lowest-priority, latest-arrival or \
                 most-blocks, got {other:?}"
            ))),
        }
    }
}

/// The preemption knobs of an engine (vLLM keeps them in its `SchedulerConfig` and
/// `CacheConfig`; here they travel together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PreemptionConfig {
    pub mode: PreemptionMode,
    pub victim: VictimSelection,
    /// Host memory for swapped-out KV blocks, in bytes (`--swap-space`, given in GiB). Only
    /// read under [`PreemptionMode::Swap`]; 0 there means every victim is recomputed.
    pub swap_space_bytes: usize,
}

/// `--swap-space` in GiB (a fraction is fine: `0.001`) → bytes, or a one-line error.
pub fn swap_space_bytes(gib: f64) -> Result<usize, EngineError> {
    if !gib.is_finite() || gib < 0.0 {
        return Err(EngineError::InvalidArgument(format!(
            "--swap-space must be a number of GiB >= 0, got {gib}"
        )));
    }
    Ok((gib * (1u64 << 30) as f64) as usize)
}
