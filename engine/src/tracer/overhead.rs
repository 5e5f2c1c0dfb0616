//! What tracing costs: the same workload run with no subscriber (tracing off: every span
//! site is one check of a cached "nobody listens") and under a [`SpanRecorder`] (on), runs
//! alternated so that both see the same warm caches; and the price of one span site when off,
//! from a loop of them. A benchmark, not a test: the binary prints it (`tracer --overhead N`).

use std::time::{Duration, Instant};

use super::workload::{run_workload, WorkloadRequest};
use super::SpanRecorder;
use crate::llm_engine::LLMEngine;

/// Median wall time of a workload's runs with tracing off and on, and what the spans were.
#[derive(Debug, Clone, PartialEq)]
pub struct Overhead {
    pub runs: usize,
    pub off: Duration,
    pub on: Duration,
    /// Spans one traced run recorded.
    pub spans_per_run: usize,
    /// One `trace_span!(...).entered()` with no subscriber, in nanoseconds.
    pub disabled_span_ns: f64,
}

impl Overhead {
    /// `on / off − 1`: the share tracing on adds.
    pub fn on_cost(&self) -> f64 {
        self.on.as_secs_f64() / self.off.as_secs_f64() - 1.0
    }

    /// The span sites' share of an untraced run: spans × the price of one disabled site.
    pub fn off_cost(&self) -> f64 {
        self.spans_per_run as f64 * self.disabled_span_ns * 1e-9 / self.off.as_secs_f64()
    }
}

/// Runs `requests` `runs` times each way on `engine` (whose ops must run on this thread: one
/// rank). Call it with no global subscriber installed, or "off" is not off.
pub fn measure_overhead(
    engine: &mut LLMEngine,
    requests: &[WorkloadRequest],
    runs: usize,
) -> crate::error::Result<Overhead> {
    let runs = runs.max(1);
    run_workload(engine, requests)?; // warm-up: first-touch allocations, lazy tables
    let (mut off, mut on, mut spans_per_run) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let t = Instant::now();
        run_workload(engine, requests)?;
        off.push(t.elapsed());
        let recorder = SpanRecorder::default();
        let t = Instant::now();
        tracing::subscriber::with_default(recorder.clone(), || run_workload(engine, requests))?;
        on.push(t.elapsed());
        spans_per_run = recorder.spans().0.len();
    }
    Ok(Overhead {
        runs,
        off: median(off),
        on: median(on),
        spans_per_run,
        disabled_span_ns: disabled_span_ns(),
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The price of a span site nobody listens to, averaged over a million.
fn disabled_span_ns() -> f64 {
    const N: u32 = 1_000_000;
    let t = Instant::now();
    for i in 0..N {
        let _span = tracing::trace_span!("kernel", op = "bench", i).entered();
        std::hint::black_box(&_span);
    }
    t.elapsed().as_secs_f64() * 1e9 / N as f64
}
