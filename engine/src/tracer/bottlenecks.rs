//! Where the time went: spans added up by component.

use std::collections::BTreeMap;
use std::time::Duration;

use super::RecordedSpan;

/// One row of the bottleneck table.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// A `kernel` span's `op`, or another span's name (`schedule`, `collective` ...).
    pub name: String,
    pub calls: usize,
    /// Time inside the component's spans, less the time in spans opened inside them (its own
    /// time): nested components are not counted twice.
    pub self_time: Duration,
    /// Its share of the time every span's own time adds up to, in [0, 1].
    pub share: f64,
}

// ANCHOR: own_time
/// Components by own time, largest first. A span's own time is its duration less its
/// children's on the same thread (a rank's thread's spans are its own, not its parent's).
/// The host's spans only: the GPU's ops run beside them ([`device_bottlenecks`]).
pub fn bottlenecks(spans: &[RecordedSpan]) -> Vec<Component> {
    table(spans, |s| !s.is_gpu_kernel())
}

/// The table over the spans `keep` takes.
fn table(spans: &[RecordedSpan], keep: impl Fn(&RecordedSpan) -> bool) -> Vec<Component> {
    let mut child_time = vec![Duration::ZERO; spans.len()];
    for s in spans {
        // (`get`: a parent outside the list, from a slice not re-indexed, counts as none.)
        if let Some(p) = s
            .parent
            .filter(|&p| spans.get(p).is_some_and(|q| q.thread == s.thread))
        {
            child_time[p] += s.duration();
        }
    }
    let mut by: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for (s, children) in spans.iter().zip(&child_time).filter(|(s, _)| keep(s)) {
        let own = s.duration().saturating_sub(*children);
        let e = by.entry(s.component()).or_default();
        e.0 += 1;
        e.1 += own;
    }
    let total: Duration = by.values().map(|(_, t)| *t).sum();
    let mut rows: Vec<Component> = by
        .into_iter()
        .map(|(name, (calls, self_time))| Component {
            name,
            calls,
            self_time,
            share: if total.is_zero() {
                0.0
            } else {
                self_time.as_secs_f64() / total.as_secs_f64()
            },
        })
        .collect();
    rows.sort_by(|a, b| b.self_time.cmp(&a.self_time).then(a.name.cmp(&b.name)));
    rows
}
// ANCHOR_END: own_time

/// The GPU's ops by device time, largest first (a step timed op by op: the CUDA backend's
/// per-op events, recorded while the tracer listens), shares of the GPU's total.
pub fn device_bottlenecks(spans: &[RecordedSpan]) -> Vec<Component> {
    table(spans, RecordedSpan::is_gpu_kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(
        name: &'static str,
        op: Option<&str>,
        parent: Option<usize>,
        ms: (u64, u64),
    ) -> RecordedSpan {
        let mut fields = BTreeMap::new();
        if let Some(op) = op {
            fields.insert("op".to_string(), op.to_string());
        }
        RecordedSpan {
            name,
            target: "test",
            fields,
            parent,
            thread: 0,
            start: Some(Duration::from_millis(ms.0)),
            end: Some(Duration::from_millis(ms.1)),
        }
    }

    /// A step of 10 ms holding a 6 ms kernel and a 1 ms one: own times 3, 6 and 1.
    #[test]
    fn nested_time_is_counted_once() {
        let spans = vec![
            span("execute_model", None, None, (0, 10)),
            span("kernel", Some("linear"), Some(0), (1, 7)),
            span("kernel", Some("rms_norm"), Some(0), (8, 9)),
        ];
        let rows = bottlenecks(&spans);
        let own: Vec<(&str, u64)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.self_time.as_millis() as u64))
            .collect();
        assert_eq!(own, [("linear", 6), ("execute_model", 3), ("rms_norm", 1)]);
        assert!((rows.iter().map(|r| r.share).sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((rows[0].share - 0.6).abs() < 1e-12);
    }
}
