//! Predicted against measured: the all-reduce traffic the course's formulas give for a run,
//! next to what the communicators counted in it.
//!
//! A tensor-parallel forward pass all-reduces once after the embedding (each rank holds a
//! slice of the vocabulary: the others' ids come out as zeros) and
//! [`ALL_REDUCES_PER_LAYER`] times per layer, each a `[tokens, hidden]` tensor
//! ([`all_reduce_bytes`] counts bf16; the CPU engine sums f32, so its tensors are twice
//! that); a ring sends [`ring_traffic_per_gpu`] of each from every rank, the one-shot kernel
//! (the custom all-reduce, for tensors up to its capacity) [`one_shot_traffic_per_gpu`].

use crate::distributed::comm_model::{
    all_reduce_bytes, one_shot_traffic_per_gpu, ring_traffic_per_gpu, ALL_REDUCES_PER_LAYER,
};
use crate::distributed::{CommOp, CommStats};

/// The all-reduce traffic of a run, per rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllReduceTraffic {
    pub calls: u64,
    /// Bytes of the tensors summed.
    pub tensor_bytes: u64,
    /// Bytes the rank sent.
    pub sent_bytes: f64,
}

// ANCHOR: predicted_all_reduce
/// What the formulas predict for steps of `step_tokens` tokens through `layers` layers of
/// width `hidden` over `ranks` ranks, values of `value_bytes` bytes (4 on the CPU, 2 on GPUs).
pub fn predicted_all_reduce(
    step_tokens: &[usize],
    layers: usize,
    hidden: usize,
    value_bytes: u64,
    ranks: usize,
) -> AllReduceTraffic {
    let per_pass = (1 + ALL_REDUCES_PER_LAYER * layers) as u64;
    // all_reduce_bytes counts bf16 (2 bytes a value): rescale to the run's values.
    let tensor_bytes: u64 = step_tokens
        .iter()
        .map(|&t| per_pass * all_reduce_bytes(t, hidden) / 2 * value_bytes)
        .sum();
    AllReduceTraffic {
        calls: per_pass * step_tokens.len() as u64,
        tensor_bytes,
        sent_bytes: ring_traffic_per_gpu(tensor_bytes, ranks),
    }
}
// ANCHOR_END: predicted_all_reduce

/// [`predicted_all_reduce`] where the group sums a tensor of at most `one_shot_values` values
/// with the one-shot kernel (its bytes sent: [`one_shot_traffic_per_gpu`]) and larger ones on
/// the ring: the custom all-reduce, whose buffers hold `one_shot_values`.
pub fn predicted_all_reduce_one_shot(
    step_tokens: &[usize],
    layers: usize,
    hidden: usize,
    value_bytes: u64,
    ranks: usize,
    one_shot_values: usize,
) -> AllReduceTraffic {
    let mut total = predicted_all_reduce(step_tokens, layers, hidden, value_bytes, ranks);
    total.sent_bytes = step_tokens
        .iter()
        .map(|&t| {
            let step = predicted_all_reduce(&[t], layers, hidden, value_bytes, ranks);
            match t * hidden <= one_shot_values {
                true => one_shot_traffic_per_gpu(step.tensor_bytes, ranks),
                false => step.sent_bytes,
            }
        })
        .sum();
    total
}

/// What one rank's communicator counted.
pub fn measured_all_reduce(stats: &CommStats) -> AllReduceTraffic {
    let op = stats.op(CommOp::AllReduce);
    AllReduceTraffic {
        calls: op.calls,
        tensor_bytes: op.tensor_bytes,
        sent_bytes: op.sent_bytes as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The course's TP = 4 example: batch 16 × 512 tokens of hidden 4096, 32 layers, bf16:
    /// 65 all-reduces of 64 MiB, each rank sending 1.5 × that.
    #[test]
    fn the_course_example() {
        let t = predicted_all_reduce(&[16 * 512], 32, 4096, 2, 4);
        assert_eq!(t.calls, 65);
        assert_eq!(t.tensor_bytes, 65 * 64 * (1 << 20));
        assert_eq!(t.sent_bytes, 1.5 * t.tensor_bytes as f64);
    }

    /// With the one-shot kernel a decode step's all-reduces leave each of 4 ranks 3× their
    /// size (the ring: 1.5×); a prefill too large for its buffers goes to the ring.
    #[test]
    fn one_shot_below_the_capacity_ring_above() {
        let (layers, hidden) = (32, 4096);
        let decode = predicted_all_reduce_one_shot(&[32], layers, hidden, 2, 4, 4 << 20);
        assert_eq!(decode.sent_bytes, 3.0 * decode.tensor_bytes as f64);
        let both = predicted_all_reduce_one_shot(&[32, 2048], layers, hidden, 2, 4, 4 << 20);
        let prefill = predicted_all_reduce(&[2048], layers, hidden, 2, 4);
        assert_eq!(both.sent_bytes, decode.sent_bytes + prefill.sent_bytes);
        assert_eq!(both.calls, 2 * 65);
        // Two ranks: one-shot and ring send the same.
        let two = predicted_all_reduce_one_shot(&[32], layers, hidden, 2, 2, 4 << 20);
        assert_eq!(two, predicted_all_reduce(&[32], layers, hidden, 2, 2));
    }
}
