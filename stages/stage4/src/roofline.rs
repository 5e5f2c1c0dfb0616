//! Exercise 5: the roofline, the two-number model of what bounds a kernel.
//!
//! A GPU has two ceilings: the FLOPs it can do per second (`peak_flops`) and the bytes it can
//! move to and from its memory per second (`bandwidth`). A piece of work that does `F` FLOPs
//! on `B` bytes takes at least `max(F / peak_flops, B / bandwidth)`. Its *arithmetic
//! intensity* `F / B` (FLOPs per byte) says which one: below the *ridge point*
//! `peak_flops / bandwidth` the bytes take longer (memory-bound), above it the arithmetic
//! (compute-bound). The FLOP rate it can reach is `min(peak_flops, intensity · bandwidth)`.
//!
//! Counting rules, the same for every function here:
//! - A multiply-add is **2** FLOPs (one multiply, one add): `x · W` for a `[m, k]` by `[k, n]`
//!   product is `2·m·k·n` FLOPs. Only the matrix products are counted (softmax, scaling, norms
//!   are a rounding error next to them).
//! - Bytes are the least the work must move to and from memory: each input read once, each
//!   output written once, `bytes_per_value` bytes a value (2 for bf16).
//! - Attention: `num_heads` query heads of `head_dim`, sharing `num_kv_heads` KV heads (GQA).
//!   Every (query, key) pair a row attends to is counted: for a prompt of `N` tokens, `N²`
//!   pairs (all of them, as the FLOP counts of the source do; a causal kernel skips about
//!   half).
//!
//! Test: `cargo test -p stage4 --test roofline`.

#[cfg(feature = "mutants")]
pub use crate::mutants::roofline::{
    attainable_flops, bound, decode_attention_cost, linear_cost, prefill_attention_cost,
};
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use crate::reference::roofline::{
    attainable_flops, bound, decode_attention_cost, linear_cost, prefill_attention_cost,
};

// ANCHOR: types
/// The FLOPs a piece of work does and the bytes it moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub flops: f64,
    pub bytes: f64,
}

impl Cost {
    /// FLOPs per byte.
    pub fn intensity(&self) -> f64 {
        self.flops / self.bytes
    }
}

/// A GPU's two ceilings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Machine {
    /// FLOP/s.
    pub peak_flops: f64,
    /// Bytes/s.
    pub bandwidth: f64,
}

impl Machine {
    /// The intensity (FLOPs/byte) where the two ceilings meet.
    pub fn ridge_point(&self) -> f64 {
        self.peak_flops / self.bandwidth
    }
}

/// Our H200, as measured on 2026-11-28 (kernels/README.md, run 4): a bf16 GEMM 8192³ through
/// cuBLAS at 801.4 TFLOP/s, and a 1 GiB device-to-device copy at 4,223 GB/s (read + write).
/// Ridge point: 190 FLOPs/byte.
pub const H200_MEASURED: Machine = Machine {
    peak_flops: 801.4e12,
    bandwidth: 4223e9,
};

/// Which ceiling bounds a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Intensity below the ridge point: the bytes take longer than the FLOPs.
    Memory,
    /// Intensity at or above the ridge point.
    Compute,
}
// ANCHOR_END: types

// HINT: write each count as "how many multiply-adds, times 2". A linear layer: every output
//   element of every token is a dot product of `in_features` terms.
// HINT: attention per query head: q·k for each (query row, key) pair, then p·v for each pair
//   again. How many query rows, how many keys each, for a prompt of N tokens? For one decode
//   row over a context of N?
// HINT: which tensors must come from memory? A decode row reads the whole cached K and V of
//   its sequence, but only `num_kv_heads` of each.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// `y = x · Wᵀ` for `tokens` rows: `x` is `[tokens, in_features]`, `W` is
/// `[out_features, in_features]`, `y` is `[tokens, out_features]`.
pub fn linear_cost(
    tokens: usize,
    in_features: usize,
    out_features: usize,
    bytes_per_value: usize,
) -> Cost {
    todo!("stage4: linear_cost in stages/stage4/src/roofline.rs — 2 FLOPs per multiply-add; bytes of x, W and y")
}

#[cfg(not(feature = "reference"))]
/// Attention of a prompt of `tokens` tokens over itself (nothing cached before it): reads
/// q `[tokens, num_heads, head_dim]`, k and v `[tokens, num_kv_heads, head_dim]`, writes
/// out `[tokens, num_heads, head_dim]`.
pub fn prefill_attention_cost(
    tokens: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    bytes_per_value: usize,
) -> Cost {
    todo!("stage4: prefill_attention_cost in stages/stage4/src/roofline.rs — q·k and p·v for every (query, key) pair of every head; bytes of q, k, v, out")
}

#[cfg(not(feature = "reference"))]
/// Attention of one decode row over a context of `context_len` cached tokens (its own
/// included): reads q `[num_heads, head_dim]` and the cached k and v
/// `[context_len, num_kv_heads, head_dim]`, writes out `[num_heads, head_dim]`.
pub fn decode_attention_cost(
    context_len: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    bytes_per_value: usize,
) -> Cost {
    todo!("stage4: decode_attention_cost in stages/stage4/src/roofline.rs — q·k and p·v for each cached key of every head; bytes of q, the cached k and v, out")
}

#[cfg(not(feature = "reference"))]
/// The FLOP rate reachable at this intensity: `min(peak, intensity · bandwidth)`.
pub fn attainable_flops(machine: Machine, intensity: f64) -> f64 {
    todo!("stage4: attainable_flops in stages/stage4/src/roofline.rs — min(peak_flops, intensity · bandwidth)")
}

#[cfg(not(feature = "reference"))]
/// Which side of the ridge point this intensity is on.
pub fn bound(machine: Machine, intensity: f64) -> Bound {
    todo!("stage4: bound in stages/stage4/src/roofline.rs — Memory below machine.ridge_point(), Compute at or above")
}
// ANCHOR_END: stub
