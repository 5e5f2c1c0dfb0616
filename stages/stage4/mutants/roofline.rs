//! Plausible wrong roofline counts:
//!
//! - `roofline_mac_is_one_flop`: a multiply-add counted as 1 FLOP (the source's `N²·d` for
//!   q·kᵀ), in every cost.
//! - `roofline_prefill_qk_only`: prefill attention counts q·kᵀ and forgets p·v.
//! - `roofline_decode_kv_per_query_head`: a decode row reads k and v for every query head,
//!   as if there were no GQA.
//! - `roofline_ridge_inverted`: the ridge point as bandwidth / peak (bytes per FLOP), so
//!   almost everything looks compute-bound.

use super::active;
use crate::reference::roofline as reference;
use crate::roofline::{Bound, Cost, Machine};

fn halve_if_one_flop(c: Cost) -> Cost {
    if active("roofline_mac_is_one_flop") {
        Cost {
            flops: c.flops / 2.0,
            ..c
        }
    } else {
        c
    }
}

pub fn linear_cost(
    tokens: usize,
    in_features: usize,
    out_features: usize,
    bytes_per_value: usize,
) -> Cost {
    halve_if_one_flop(reference::linear_cost(
        tokens,
        in_features,
        out_features,
        bytes_per_value,
    ))
}

pub fn prefill_attention_cost(
    tokens: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    bytes_per_value: usize,
) -> Cost {
    let c = reference::prefill_attention_cost(
        tokens,
        num_heads,
        num_kv_heads,
        head_dim,
        bytes_per_value,
    );
    let c = if active("roofline_prefill_qk_only") {
        Cost {
            flops: c.flops / 2.0,
            ..c
        }
    } else {
        c
    };
    halve_if_one_flop(c)
}

pub fn decode_attention_cost(
    context_len: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    bytes_per_value: usize,
) -> Cost {
    let kv_heads = if active("roofline_decode_kv_per_query_head") {
        num_heads
    } else {
        num_kv_heads
    };
    halve_if_one_flop(reference::decode_attention_cost(
        context_len,
        num_heads,
        kv_heads,
        head_dim,
        bytes_per_value,
    ))
}

pub fn attainable_flops(machine: Machine, intensity: f64) -> f64 {
    reference::attainable_flops(machine, intensity)
}

pub fn bound(machine: Machine, intensity: f64) -> Bound {
    if active("roofline_ridge_inverted") {
        let inverted = Machine {
            peak_flops: machine.bandwidth,
            bandwidth: machine.peak_flops,
        };
        return reference::bound(inverted, intensity);
    }
    reference::bound(machine, intensity)
}
