//! The roofline's counts: multiply-adds times 2, and every tensor moved once.

use crate::roofline::{Bound, Cost, Machine};

// ANCHOR: roofline
pub fn linear_cost(
    tokens: usize,
    in_features: usize,
    out_features: usize,
    bytes_per_value: usize,
) -> Cost {
    let (m, k, n) = (tokens as f64, in_features as f64, out_features as f64);
    Cost {
        flops: 2.0 * m * k * n,
        bytes: bytes_per_value as f64 * (m * k + n * k + m * n), // x, W, y
    }
}

pub fn prefill_attention_cost(
    tokens: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    bytes_per_value: usize,
) -> Cost {
    let (n, h, kv, d) = (
        tokens as f64,
        num_heads as f64,
        num_kv_heads as f64,
        head_dim as f64,
    );
    // Per head: q·kᵀ is [n, d] by [d, n], then p·v is [n, n] by [n, d].
    let flops = h * (2.0 * n * n * d + 2.0 * n * n * d);
    let values = n * h * d + 2.0 * n * kv * d + n * h * d; // q, k and v, out
    Cost {
        flops,
        bytes: bytes_per_value as f64 * values,
    }
}

pub fn decode_attention_cost(
    context_len: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    bytes_per_value: usize,
) -> Cost {
    let (n, h, kv, d) = (
        context_len as f64,
        num_heads as f64,
        num_kv_heads as f64,
        head_dim as f64,
    );
    // Per head: one query row against n keys, then n values.
    let flops = h * (2.0 * n * d + 2.0 * n * d);
    let values = h * d + 2.0 * n * kv * d + h * d; // q, cached k and v, out
    Cost {
        flops,
        bytes: bytes_per_value as f64 * values,
    }
}

pub fn attainable_flops(machine: Machine, intensity: f64) -> f64 {
    machine.peak_flops.min(intensity * machine.bandwidth)
}

pub fn bound(machine: Machine, intensity: f64) -> Bound {
    if intensity < machine.ridge_point() {
        Bound::Memory
    } else {
        Bound::Compute
    }
}
// ANCHOR_END: roofline
