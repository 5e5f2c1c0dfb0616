//! What a run measured: throughput, latency and time-to-first-token percentiles, and how
//! full the batch slots were.

use serde::Serialize;

/// One request's clock readings, in simulated (or measured) seconds from the start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestTimes {
    pub arrival_s: f64,
    /// End of the step that sampled its first token.
    pub first_token_s: Option<f64>,
    /// End of the step that sampled its last token.
    pub finish_s: Option<f64>,
}

/// Mean and nearest-rank percentiles of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Percentiles {
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Percentiles::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least p% of the sample at or below it.
        let at = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
        }
    }
}

// ANCHOR: run_report
/// One scheme (continuous or static batching) on one workload and cost model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    pub scheme: String,
    pub requests: usize,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub steps: usize,
    /// From the first arrival to the last request's last token.
    pub total_s: f64,
    /// Generated tokens per second of `total_s`.
    pub output_tokens_per_s: f64,
    /// Prompt and generated tokens per second of `total_s`.
    pub total_tokens_per_s: f64,
    /// Arrival to last token.
    pub latency_s: Percentiles,
    /// Arrival to first token.
    pub ttft_s: Percentiles,
    /// Busy slots over all slots: the mean over steps of (sequences doing useful work in the
    /// step) ÷ `max_num_seqs`.
    pub utilization: f64,
    pub preemptions: usize,
    /// Sequences doing useful work in each step (step 1 first).
    #[serde(skip)]
    pub busy_slots_per_step: Vec<usize>,
    /// Each request's times, in workload order.
    #[serde(skip)]
    pub request_times: Vec<RequestTimes>,
}
// ANCHOR_END: run_report

impl RunReport {
    /// Fills the summary fields from the per-request times and per-step slot counts.
    pub fn summarize(&mut self, max_num_seqs: usize) {
        let t = &self.request_times;
        let end = t.iter().filter_map(|r| r.finish_s).fold(0.0, f64::max);
        let start = t.iter().map(|r| r.arrival_s).fold(f64::INFINITY, f64::min);
        self.total_s = if t.is_empty() { 0.0 } else { end - start };
        let per_s = |n: usize| {
            if self.total_s > 0.0 {
                n as f64 / self.total_s
            } else {
                0.0
            }
        };
        self.output_tokens_per_s = per_s(self.output_tokens);
        self.total_tokens_per_s = per_s(self.output_tokens + self.prompt_tokens);
        let lat: Vec<f64> = t
            .iter()
            .filter_map(|r| Some(r.finish_s? - r.arrival_s))
            .collect();
        let ttft: Vec<f64> = t
            .iter()
            .filter_map(|r| Some(r.first_token_s? - r.arrival_s))
            .collect();
        self.latency_s = Percentiles::of(&lat);
        self.ttft_s = Percentiles::of(&ttft);
        self.steps = self.busy_slots_per_step.len();
        let busy: usize = self.busy_slots_per_step.iter().sum();
        self.utilization = if self.steps == 0 {
            0.0
        } else {
            busy as f64 / (self.steps * max_num_seqs) as f64
        };
    }
}
