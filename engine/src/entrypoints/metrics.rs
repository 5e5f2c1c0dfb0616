//! The server's counters in Prometheus' text format (vLLM's `vllm/v1/metrics/loggers.py`).
//!
//! The names are vLLM's, so a dashboard or alert written for a vLLM server reads ours:
//! `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`, `vllm:time_to_first_token_seconds`...
//! The engine thread updates them after every step; `GET /metrics` renders a snapshot.

use std::fmt::Write;

/// Upper bounds (seconds) of the time-to-first-token buckets: vLLM's, with finer ones below
/// 10 ms because the tiny model on a CPU answers in about a millisecond.
const TTFT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];
/// Upper bounds (seconds) of the inter-token latency and request latency buckets.
const ITL_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];

/// A Prometheus histogram: cumulative counts under fixed upper bounds, a sum and a count.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not yet cumulative; made so when rendered).
    counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one value (seconds).
    pub fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// What `GET /metrics` reports. Gauges are the engine's state after its last step; counters
/// and histograms add up over the server's life.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub num_requests_running: usize,
    pub num_requests_waiting: usize,
    pub num_requests_swapped: usize,
    /// KV-cache blocks held by requests (blocks parked in the prefix cache count as free: a new
    /// request can take them), and all of them.
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    /// Prompt tokens looked up in the prefix cache, and those found there.
    pub prefix_cache_queries: usize,
    pub prefix_cache_hits: usize,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    /// Requests that finished on a stop condition (a stop token, or a stop string found by the
    /// server), on a length limit, and those aborted because their client went away.
    pub requests_stop: u64,
    pub requests_length: u64,
    pub requests_aborted: u64,
    pub num_steps: usize,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_request_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            num_requests_running: 0,
            num_requests_waiting: 0,
            num_requests_swapped: 0,
            kv_blocks_used: 0,
            kv_blocks_total: 0,
            prefix_cache_queries: 0,
            prefix_cache_hits: 0,
            prompt_tokens: 0,
            generation_tokens: 0,
            requests_stop: 0,
            requests_length: 0,
            requests_aborted: 0,
            num_steps: 0,
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            inter_token_latency: Histogram::new(ITL_BUCKETS),
            e2e_request_latency: Histogram::new(ITL_BUCKETS),
        }
    }
}

impl Metrics {
    /// The fraction of the KV cache held by requests, 0 to 1.
    pub fn kv_cache_usage(&self) -> f64 {
        if self.kv_blocks_total == 0 {
            0.0
        } else {
            self.kv_blocks_used as f64 / self.kv_blocks_total as f64
        }
    }

    /// The Prometheus exposition text, every series labelled with the served model's name.
    pub fn render(&self, model_name: &str) -> String {
        let name = model_name.replace('\\', "\\\\").replace('"', "\\\"");
        let labels = format!("model_name=\"{name}\"");
        let mut out = String::new();
        let mut one = |metric: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {metric} {help}\n# TYPE {metric} {kind}\n{metric}{{{labels}}} {value}"
            );
        };
        one(
            "vllm:num_requests_running",
            "gauge",
            "Requests in the running batch.",
            self.num_requests_running.to_string(),
        );
        one(
            "vllm:num_requests_waiting",
            "gauge",
            "Requests waiting to be scheduled.",
            self.num_requests_waiting.to_string(),
        );
        one(
            "vllm:num_requests_swapped",
            "gauge",
            "Requests preempted by swap, their KV in host memory.",
            self.num_requests_swapped.to_string(),
        );
        one(
            "vllm:kv_cache_usage_perc",
            "gauge",
            "Fraction of KV-cache blocks held by requests (1 = full).",
            self.kv_cache_usage().to_string(),
        );
        one(
            "lab:kv_cache_blocks_used",
            "gauge",
            "KV-cache blocks held by requests (blocks parked in the prefix cache are free).",
            self.kv_blocks_used.to_string(),
        );
        one(
            "lab:kv_cache_blocks_total",
            "gauge",
            "KV-cache blocks in all.",
            self.kv_blocks_total.to_string(),
        );
        one(
            "vllm:prefix_cache_queries_total",
            "counter",
            "Prompt tokens looked up in the prefix cache.",
            self.prefix_cache_queries.to_string(),
        );
        one(
            "vllm:prefix_cache_hits_total",
            "counter",
            "Prompt tokens found in the prefix cache (their prefill skipped).",
            self.prefix_cache_hits.to_string(),
        );
        one(
            "vllm:prompt_tokens_total",
            "counter",
            "Prompt tokens of the requests admitted.",
            self.prompt_tokens.to_string(),
        );
        one(
            "vllm:generation_tokens_total",
            "counter",
            "Tokens generated.",
            self.generation_tokens.to_string(),
        );
        one(
            "lab:engine_steps_total",
            "counter",
            "Engine steps run.",
            self.num_steps.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP vllm:request_success_total Requests finished, by reason.\n\
             # TYPE vllm:request_success_total counter\n\
             vllm:request_success_total{{{labels},finished_reason=\"stop\"}} {}\n\
             vllm:request_success_total{{{labels},finished_reason=\"length\"}} {}\n\
             vllm:request_success_total{{{labels},finished_reason=\"abort\"}} {}",
            self.requests_stop, self.requests_length, self.requests_aborted
        );
        self.time_to_first_token.render(
            &mut out,
            "vllm:time_to_first_token_seconds",
            "From a request's arrival at the engine to its first token.",
            &labels,
        );
        self.inter_token_latency.render(
            &mut out,
            "vllm:inter_token_latency_seconds",
            "Between consecutive tokens of a request.",
            &labels,
        );
        self.e2e_request_latency.render(
            &mut out,
            "vllm:e2e_request_latency_seconds",
            "From a request's arrival at the engine to its last token.",
            &labels,
        );
        out
    }
}

/// The value of the series `name` (with any labels) in a rendered text, for tests and the load
/// generator: the first line that starts with `name` followed by `{` or a space.
pub fn read_metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut m = Metrics::default();
        for v in [0.0004, 0.003, 0.003, 100.0] {
            m.time_to_first_token.observe(v);
        }
        let text = m.render("tiny");
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"0.005\"} 3"
        ));
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"+Inf\"} 4"
        ));
        assert_eq!(
            read_metric(&text, "vllm:time_to_first_token_seconds_count"),
            Some(4.0)
        );
        assert_eq!(read_metric(&text, "vllm:num_requests_running"), Some(0.0));
    }
}
