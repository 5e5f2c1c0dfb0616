//! What the ranks exchange and how long it, and a decode step, take: the arithmetic behind
//! the planner's time estimates.
//!
//! A collective is costed with the alpha-beta model, `time = latency + bytes / bandwidth`,
//! where `bytes` is the traffic each GPU sends and `bandwidth` NCCL's *bus* bandwidth (the
//! figure NCCL's tests print, defined so that it is this per-GPU rate for every rank count).

use std::fmt;
use std::str::FromStr;

use super::memory_model::BF16_BYTES;

/// A link's cost: `latency_s + bytes / bytes_per_s`, and where the figures come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Bus bandwidth a collective reaches on large messages, bytes per second.
    pub bytes_per_s: f64,
    /// Fixed cost of one collective or send, seconds.
    pub latency_s: f64,
    /// Measured here (gpu.md) or a public figure, in words.
    pub source: &'static str,
}

/// NCCL all-reduce of bf16 on the 2 H200s over NVLink, measured 2026-11-28 (gpu.md):
/// (tensor bytes, seconds) at 1 MiB, 64 MiB and 1 GiB. With 2 ranks the ring traffic per GPU,
/// 2(N−1)/N × size, equals the size.
pub const NVLINK_H200_ALL_REDUCE: [(f64, f64); 3] = [
    ((1u64 << 20) as f64, 0.046e-3),
    ((64u64 << 20) as f64, 0.251e-3),
    ((1u64 << 30) as f64, 3.34e-3),
];

/// PCIe 5.0 x16, one direction: 32 GT/s × 16 lanes × 128/130 encoding / 8 bits = 63.0 GB/s.
/// The published link rate, an upper bound on what NCCL reaches; not measured here.
pub const PCIE5_X16_BYTES_PER_S: f64 = 32e9 * 16.0 * 128.0 / 130.0 / 8.0;

/// Between nodes: one InfiniBand NDR port per GPU, 400 Gb/s = 50 GB/s (the published rate of
/// an HGX H100/H200 node's network; not measured here).
pub const NDR_400G_BYTES_PER_S: f64 = 400e9 / 8.0;

/// The latency and bandwidth of the line through two (bytes, seconds) points:
/// `bandwidth = Δbytes / Δseconds`, `latency = seconds₁ − bytes₁ / bandwidth`.
pub fn fit_alpha_beta(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let bandwidth = (b.0 - a.0) / (b.1 - a.1);
    (a.1 - a.0 / bandwidth, bandwidth)
}

/// How the GPUs of one node are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interconnect {
    NvLink,
    Pcie,
}

impl Interconnect {
    /// The link's cost model. NVLink: the line through our 64 MiB and 1 GiB all-reduce
    /// measurements (about 45 µs and 326 GB/s; it predicts the 1 MiB point within 5%). PCIe:
    /// PCIe 5.0 x16's published rate, and NVLink's measured latency (NCCL's software cost
    /// of a collective, which we have not measured over PCIe: a lower bound there).
    pub fn link(self) -> Link {
        let [_, mid, big] = NVLINK_H200_ALL_REDUCE;
        let (latency_s, bytes_per_s) = fit_alpha_beta(mid, big);
        match self {
            Interconnect::NvLink => Link {
                bytes_per_s,
                latency_s,
                source: "NCCL all-reduce measured on 2 H200s over NVLink (gpu.md)",
            },
            Interconnect::Pcie => Link {
                bytes_per_s: PCIE5_X16_BYTES_PER_S,
                latency_s,
                source: "PCIe 5.0 x16 published rate (not measured); NVLink's measured latency",
            },
        }
    }
}

/// The link between nodes (used when a TP group or a pipeline boundary crosses one).
pub fn network_link() -> Link {
    let (latency_s, _) = fit_alpha_beta(NVLINK_H200_ALL_REDUCE[1], NVLINK_H200_ALL_REDUCE[2]);
    Link {
        bytes_per_s: NDR_400G_BYTES_PER_S,
        latency_s,
        source: "InfiniBand NDR 400 Gb/s per GPU, published rate (not measured)",
    }
}

impl FromStr for Interconnect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "nvlink" => Ok(Interconnect::NvLink),
            "pcie" => Ok(Interconnect::Pcie),
            _ => Err(format!("unknown interconnect `{s}` (use nvlink or pcie)")),
        }
    }
}

impl fmt::Display for Interconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interconnect::NvLink => "nvlink",
            Interconnect::Pcie => "pcie",
        })
    }
}

// ANCHOR: all_reduce
/// All-reduces a TP forward pass makes per layer: one after attention (o_proj is
/// row-parallel: each rank holds a partial sum of the output) and one after the MLP (down_proj,
/// likewise).
pub const ALL_REDUCES_PER_LAYER: usize = 2;

/// Bytes of the tensor one all-reduce sums: `tokens × hidden` bf16 values.
pub fn all_reduce_bytes(tokens: usize, hidden: usize) -> u64 {
    (tokens * hidden) as u64 * BF16_BYTES
}

/// Bytes each GPU sends in a ring all-reduce of `bytes` over `n` ranks: a reduce-scatter and an
/// all-gather of `n − 1` steps each, every step moving one `bytes / n` chunk: 2(N−1)/N × size.
pub fn ring_traffic_per_gpu(bytes: u64, n: usize) -> f64 {
    2.0 * (n as f64 - 1.0) / n as f64 * bytes as f64
}
// ANCHOR_END: all_reduce

/// Bytes that leave each GPU in a one-shot all-reduce of `bytes` over `n` ranks (vLLM's custom
/// all-reduce, `kernels::custom_all_reduce`): the rank writes its whole tensor into every
/// peer, so (N−1) × size: more than the ring's 2(N−1)/N from three ranks on, the same at two,
/// in one hop instead of 2(N−1).
pub fn one_shot_traffic_per_gpu(bytes: u64, n: usize) -> f64 {
    (n as f64 - 1.0) * bytes as f64
}

/// Bytes a pipeline stage sends the next per token: the hidden state and the residual stream,
/// bf16 (what vLLM's Llama passes between stages as `IntermediateTensors`).
pub fn p2p_bytes_per_token(hidden: usize) -> u64 {
    2 * hidden as u64 * BF16_BYTES
}

/// Seconds one collective or send of `traffic` bytes per GPU takes on `link`.
pub fn transfer_time(link: &Link, traffic: f64) -> f64 {
    link.latency_s + traffic / link.bytes_per_s
}

// ANCHOR: bubble
/// Share of a pipeline's stage-time slots doing work when `m` micro-batches pass through `s`
/// stages one after another: each stage works `m` slots out of the `m + s − 1` the last
/// micro-batch needs to leave the last stage, so `m / (m + s − 1)`.
pub fn bubble_efficiency(m: usize, s: usize) -> f64 {
    m as f64 / (m + s - 1) as f64
}

/// Seconds `m` micro-batches take through `s` stages of `stage_s` seconds each:
/// `(m + s − 1) × stage_s` (fill, steady state, drain).
pub fn pipeline_time(m: usize, s: usize, stage_s: f64) -> f64 {
    (m + s - 1) as f64 * stage_s
}
// ANCHOR_END: bubble

/// Seconds a kernel needs that moves `bytes` and does `flops`, at the larger of its two
/// bounds (the roofline): memory bandwidth or arithmetic peak.
pub fn roofline_time(bytes: f64, flops: f64, bytes_per_s: f64, flops_per_s: f64) -> f64 {
    (bytes / bytes_per_s).max(flops / flops_per_s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_nvlink_fit_reproduces_the_measurements_it_was_not_fitted_to() {
        let link = Interconnect::NvLink.link();
        // The line through 64 MiB and 1 GiB, by hand: Δ = 1 GiB − 64 MiB over 3.089 ms.
        let bw = ((1u64 << 30) - (64u64 << 20)) as f64 / (3.34e-3 - 0.251e-3);
        assert!((link.bytes_per_s - bw).abs() < 1.0);
        assert!((link.latency_s - (0.251e-3 - (64u64 << 20) as f64 / bw)).abs() < 1e-12);
        // The 1 MiB point (latency-bound) within 5%.
        let (b, t) = NVLINK_H200_ALL_REDUCE[0];
        let predicted = transfer_time(&link, ring_traffic_per_gpu(b as u64, 2));
        assert!((predicted / t - 1.0).abs() < 0.05, "{predicted} vs {t}");
        assert!((PCIE5_X16_BYTES_PER_S / 1e9 - 63.015).abs() < 0.01);
    }

    #[test]
    fn the_sources_q22_tensor_is_64_mib() {
        // TP=4, batch 16 × seq 512 tokens, hidden 4096: 8192 × 4096 × 2 bytes.
        assert_eq!(all_reduce_bytes(16 * 512, 4096), 64 << 20);
        // Each GPU sends 1.5× that in a 4-rank ring.
        assert_eq!(
            ring_traffic_per_gpu(64 << 20, 4),
            1.5 * (64u64 << 20) as f64
        );
        assert_eq!(p2p_bytes_per_token(8192), 32_768);
    }

    #[test]
    fn interconnect_names_round_trip() {
        for i in [Interconnect::NvLink, Interconnect::Pcie] {
            assert_eq!(i.to_string().parse::<Interconnect>(), Ok(i));
        }
        assert!("infiniband"
            .parse::<Interconnect>()
            .unwrap_err()
            .contains("nvlink"));
    }

    proptest! {
        #[test]
        fn ring_traffic_is_what_the_ring_steps_send(n in 1usize..64, chunks in 1u64..1000) {
            // 2(n−1) steps, each one chunk of bytes/n.
            let bytes = chunks * n as u64;
            let steps = 2 * (n as u64 - 1) * chunks;
            prop_assert_eq!(ring_traffic_per_gpu(bytes, n), steps as f64);
        }

        #[test]
        fn the_bubble_is_the_idle_share_of_the_slot_grid(m in 1usize..64, s in 1usize..16) {
            // Count the grid: stage j works micro-batch i in slot i + j.
            let slots = (0..m).flat_map(|i| (0..s).map(move |j| i + j)).max().unwrap() + 1;
            let busy = m * s;
            let eff = bubble_efficiency(m, s);
            prop_assert!((eff - busy as f64 / (slots * s) as f64).abs() < 1e-12);
            prop_assert!((pipeline_time(m, s, 2.0) - 2.0 * slots as f64).abs() < 1e-9);
        }

        #[test]
        fn a_fit_through_two_points_of_a_line_recovers_it(
            lat in 1e-6f64..1e-3, bw in 1e9f64..1e12, b1 in 1e3f64..1e6, db in 1e6f64..1e9,
        ) {
            let t = |b: f64| lat + b / bw;
            let (l, w) = fit_alpha_beta((b1, t(b1)), (b1 + db, t(b1 + db)));
            prop_assert!((l / lat - 1.0).abs() < 1e-6 && (w / bw - 1.0).abs() < 1e-6);
        }
    }
}
