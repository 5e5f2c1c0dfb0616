//! The Chrome trace format (what `chrome://tracing` and Perfetto open): one complete event
//! (`"ph": "X"`) per span, with its start and duration in microseconds, its thread as `tid`
//! and its fields as `args`; one metadata event (`"ph": "M"`) names each thread.

use serde_json::{json, Value};

use super::RecordedSpan;

/// `spans` (from [`super::SpanRecorder::spans`]) and the threads' names as a Chrome trace.
/// Spans that were never entered or never left are skipped.
pub fn chrome_trace(spans: &[RecordedSpan], threads: &[String]) -> Value {
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let mut events: Vec<Value> = threads
        .iter()
        .enumerate()
        .map(|(tid, name)| {
            json!({"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": name}})
        })
        .collect();
    for s in spans {
        let (Some(start), Some(end)) = (s.start, s.end) else {
            continue;
        };
        events.push(json!({
            "name": s.component(),
            "cat": s.name,
            "ph": "X",
            "ts": us(start),
            "dur": us(end.saturating_sub(start)),
            "pid": 0,
            "tid": s.thread,
            "args": s.fields,
        }));
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms"})
}
