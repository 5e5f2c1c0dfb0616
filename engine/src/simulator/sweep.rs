//! Sweeps of one setting over a workload, and the book's charts of them: the token budget
//! (which is also the largest prefill chunk) against time to first token, time per output
//! token and throughput; the arrival rate against throughput and latency, continuous and
//! static; the batch size (`max_num_seqs`, numbers only); and the busy seats of each step
//! under both schemes.
//!
//! Each point is a full simulation ([`simulate_continuous`] or [`simulate_static`]) with only
//! the swept setting changed; the KV cache keeps the size of the base config, as a real
//! device's would.

use serde::Serialize;

use super::metrics::{Percentiles, RunReport};
use super::plot::{LineChart, Series};
use super::simulate::{simulate_continuous, SimConfig};
use super::static_batching::simulate_static;
use super::step_cost::StepCost;
use super::workload::{Arrival, SimRequest, WorkloadSpec};
use crate::error::Result;

/// Time between output tokens, `(finish - first token) / (output_len - 1)`, of each request
/// that generates at least two tokens: what a streaming user sees once the answer has begun.
pub fn time_per_output_token(report: &RunReport, requests: &[SimRequest]) -> Percentiles {
    let tpot: Vec<f64> = (report.request_times.iter().zip(requests))
        .filter(|(_, r)| r.output_len >= 2)
        .filter_map(|(t, r)| Some((t.finish_s? - t.first_token_s?) / (r.output_len - 1) as f64))
        .collect();
    Percentiles::of(&tpot)
}

/// One token budget's continuous-batching run.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetPoint {
    pub max_num_batched_tokens: usize,
    pub steps: usize,
    pub output_tokens_per_s: f64,
    pub ttft_s: Percentiles,
    pub tpot_s: Percentiles,
    pub latency_s: Percentiles,
}

/// Continuous batching at each of `budgets` (`max_num_batched_tokens`).
pub fn budget_sweep(
    config: &SimConfig,
    requests: &[SimRequest],
    cost: &dyn StepCost,
    budgets: &[usize],
) -> Result<Vec<BudgetPoint>> {
    let _span = tracing::info_span!("budget_sweep", points = budgets.len()).entered();
    budgets
        .iter()
        .map(|&b| {
            let mut c = config.clone();
            c.engine.scheduler.max_num_batched_tokens = b;
            c.engine.validate()?;
            let r = simulate_continuous(&c, requests, cost, None)?;
            Ok(BudgetPoint {
                max_num_batched_tokens: b,
                steps: r.steps,
                output_tokens_per_s: r.output_tokens_per_s,
                ttft_s: r.ttft_s,
                tpot_s: time_per_output_token(&r, requests),
                latency_s: r.latency_s,
            })
        })
        .collect()
}

/// One scheme at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct SchemePoint {
    pub output_tokens_per_s: f64,
    pub mean_latency_s: f64,
    pub mean_ttft_s: f64,
    pub utilization: f64,
}

impl SchemePoint {
    fn of(r: &RunReport) -> Self {
        SchemePoint {
            output_tokens_per_s: r.output_tokens_per_s,
            mean_latency_s: r.latency_s.mean,
            mean_ttft_s: r.ttft_s.mean,
            utilization: r.utilization,
        }
    }
}

/// Both schemes at one `max_num_seqs`.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSizePoint {
    pub max_num_seqs: usize,
    pub continuous: SchemePoint,
    #[serde(rename = "static")]
    pub static_: SchemePoint,
}

/// Continuous and static batching at each of `sizes` (`max_num_seqs`).
pub fn batch_size_sweep(
    config: &SimConfig,
    requests: &[SimRequest],
    cost: &dyn StepCost,
    sizes: &[usize],
) -> Result<Vec<BatchSizePoint>> {
    let _span = tracing::info_span!("batch_size_sweep", points = sizes.len()).entered();
    sizes
        .iter()
        .map(|&n| {
            let mut c = config.clone();
            c.engine.scheduler.max_num_seqs = n;
            c.engine.validate()?;
            Ok(BatchSizePoint {
                max_num_seqs: n,
                continuous: SchemePoint::of(&simulate_continuous(&c, requests, cost, None)?),
                static_: SchemePoint::of(&simulate_static(&c, requests, cost)?),
            })
        })
        .collect()
}

/// Both schemes at one Poisson arrival rate.
#[derive(Debug, Clone, Serialize)]
pub struct LoadPoint {
    /// Requests per second offered.
    pub rate: f64,
    pub continuous: SchemePoint,
    #[serde(rename = "static")]
    pub static_: SchemePoint,
}

/// Continuous and static batching on `spec`'s workload with Poisson arrivals at each of
/// `rates` (requests/s). The seed is kept, so every point has the same requests, only closer
/// together or further apart.
pub fn load_sweep(
    config: &SimConfig,
    spec: &WorkloadSpec,
    cost: &dyn StepCost,
    rates: &[f64],
) -> Result<Vec<LoadPoint>> {
    let _span = tracing::info_span!("load_sweep", points = rates.len()).entered();
    rates
        .iter()
        .map(|&rate| {
            let requests = WorkloadSpec {
                arrival: Arrival::Poisson { rate },
                ..spec.clone()
            }
            .generate()?;
            Ok(LoadPoint {
                rate,
                continuous: SchemePoint::of(&simulate_continuous(config, &requests, cost, None)?),
                static_: SchemePoint::of(&simulate_static(config, &requests, cost)?),
            })
        })
        .collect()
}

/// Everything the book's plots show, as data.
#[derive(Debug, Clone, Serialize)]
pub struct Sweeps {
    /// The workload as given, under both schemes.
    pub continuous: RunReport,
    #[serde(rename = "static")]
    pub static_: RunReport,
    /// The same requests all arriving at t = 0 (an offline batch), under both schemes: the
    /// occupancy chart.
    pub offline_continuous: RunReport,
    pub offline_static: RunReport,
    pub budgets: Vec<BudgetPoint>,
    pub batch_sizes: Vec<BatchSizePoint>,
    pub loads: Vec<LoadPoint>,
}

/// Runs `spec`'s workload under both schemes and every sweep.
pub fn run_sweeps(
    config: &SimConfig,
    spec: &WorkloadSpec,
    cost: &dyn StepCost,
    budgets: &[usize],
    sizes: &[usize],
    rates: &[f64],
) -> Result<Sweeps> {
    let requests = &spec.generate()?;
    let offline = &WorkloadSpec {
        arrival: Arrival::AllAtOnce,
        ..spec.clone()
    }
    .generate()?;
    Ok(Sweeps {
        continuous: simulate_continuous(config, requests, cost, None)?,
        static_: simulate_static(config, requests, cost)?,
        offline_continuous: simulate_continuous(config, offline, cost, None)?,
        offline_static: simulate_static(config, offline, cost)?,
        budgets: budget_sweep(config, requests, cost, budgets)?,
        batch_sizes: batch_size_sweep(config, requests, cost, sizes)?,
        loads: load_sweep(config, spec, cost, rates)?,
    })
}

/// Steps averaged into one point of the occupancy chart.
const OCCUPANCY_WINDOW: usize = 50;

impl Sweeps {
    /// The charts, each with the file name it is written to.
    pub fn charts(&self) -> Vec<(&'static str, LineChart)> {
        let series = |name: &str, pts: Vec<(f64, f64)>| Series {
            name: name.into(),
            points: pts,
        };
        // Mean busy seats of each window of steps, at the window's last step.
        let busy = |r: &RunReport| {
            (r.busy_slots_per_step.chunks(OCCUPANCY_WINDOW).enumerate())
                .map(|(i, w)| {
                    let mean = w.iter().sum::<usize>() as f64 / w.len() as f64;
                    ((i * OCCUPANCY_WINDOW + w.len()) as f64, mean)
                })
                .collect::<Vec<_>>()
        };
        let by_budget = |f: &dyn Fn(&BudgetPoint) -> f64| {
            (self.budgets.iter())
                .map(|p| (p.max_num_batched_tokens as f64, f(p)))
                .collect::<Vec<_>>()
        };
        let ms = 1e3;
        let budget_chart = |file, title: &str, y: &str, log10_y: bool, s: Vec<Series>| {
            (
                file,
                LineChart {
                    title: title.into(),
                    x_label: "token budget per step (--max-num-batched-tokens)".into(),
                    y_label: y.into(),
                    log2_x: true,
                    log10_y,
                    markers: true,
                    series: s,
                },
            )
        };
        let curve = |f: fn(&LoadPoint) -> &SchemePoint| {
            (self.loads.iter())
                .map(|p| (f(p).output_tokens_per_s, f(p).mean_latency_s))
                .collect::<Vec<_>>()
        };
        vec![
            (
                "occupancy.svg",
                LineChart {
                    title: format!(
                        "Busy seats, the same requests all at t = 0 (mean of {OCCUPANCY_WINDOW} steps)"
                    ),
                    x_label: "step".into(),
                    y_label: "sequences doing useful work".into(),
                    log2_x: false,
                    log10_y: false,
                    markers: false,
                    series: vec![
                        series("continuous", busy(&self.offline_continuous)),
                        series("static", busy(&self.offline_static)),
                    ],
                },
            ),
            budget_chart(
                "budget_ttft.svg",
                "Time to first token vs token budget",
                "TTFT (ms, log scale)",
                true,
                vec![
                    series("p50", by_budget(&|p| p.ttft_s.p50 * ms)),
                    series("p90", by_budget(&|p| p.ttft_s.p90 * ms)),
                ],
            ),
            budget_chart(
                "budget_tpot.svg",
                "Time per output token vs token budget",
                "time per output token (ms)",
                false,
                vec![
                    series("p50", by_budget(&|p| p.tpot_s.p50 * ms)),
                    series("p99", by_budget(&|p| p.tpot_s.p99 * ms)),
                ],
            ),
            budget_chart(
                "budget_throughput.svg",
                "Throughput vs token budget",
                "output tokens per second",
                false,
                vec![series("continuous", by_budget(&|p| p.output_tokens_per_s))],
            ),
            (
                "latency_throughput.svg",
                LineChart {
                    title: "Latency vs throughput, one point per arrival rate".into(),
                    x_label: "output tokens per second".into(),
                    y_label: "mean request latency (s)".into(),
                    log2_x: false,
                    log10_y: false,
                    markers: true,
                    series: vec![
                        series("continuous", curve(|p| &p.continuous)),
                        series("static", curve(|p| &p.static_)),
                    ],
                },
            ),
        ]
    }
}
