//! The tracer's tables as data: one row per step (the timeline) and one per request, read off
//! the recorded spans. The binary prints them as Markdown and the HTML page renders the same
//! rows, so the two can never disagree.

use std::time::Duration;

use super::RecordedSpan;

/// One engine step, from its `schedule` and `execute_model` spans.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub step: String,
    /// When its scheduling began, from the first recorded span of the run.
    pub at: Duration,
    pub schedule: Duration,
    pub execute: Duration,
    pub seqs: String,
    pub tokens: String,
    /// The scheduler's decision, from the `schedule` span's fields ("" where not recorded).
    pub prefill_tokens: String,
    pub decode_tokens: String,
    pub preempted: String,
    /// The requests in the batch, as the `schedule` span lists them.
    pub requests: String,
}

/// One request's life: added, first scheduled, finished (steps and times where recorded).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    pub request: String,
    pub added_at: Option<Duration>,
    pub first_step: Option<String>,
    pub finished_step: Option<String>,
    pub finished_at: Option<Duration>,
    pub output_tokens: String,
}

fn field(s: &RecordedSpan, f: &str) -> String {
    s.fields.get(f).cloned().unwrap_or_default()
}

/// The first time any span of `spans` was entered: the zero of the tables and the timeline.
pub fn origin(spans: &[RecordedSpan]) -> Duration {
    spans
        .iter()
        .filter_map(|s| s.start)
        .min()
        .unwrap_or_default()
}

/// One row per `execute_model` span, with the `schedule` span of the same step.
pub fn step_rows(spans: &[RecordedSpan]) -> Vec<StepRow> {
    let zero = origin(spans);
    let schedules: Vec<&RecordedSpan> = spans.iter().filter(|s| s.name == "schedule").collect();
    spans
        .iter()
        .filter(|s| s.name == "execute_model")
        .map(|e| {
            let step = field(e, "step");
            let sched = schedules.iter().find(|s| field(s, "step") == step);
            let of_sched = |f: &str| sched.map(|s| field(s, f)).unwrap_or_default();
            StepRow {
                at: sched
                    .and_then(|s| s.start)
                    .or(e.start)
                    .unwrap_or_default()
                    .saturating_sub(zero),
                schedule: sched.map_or(Duration::ZERO, |s| s.duration()),
                execute: e.duration(),
                seqs: field(e, "seqs"),
                tokens: field(e, "tokens"),
                prefill_tokens: of_sched("prefill_tokens"),
                decode_tokens: of_sched("decode_tokens"),
                preempted: of_sched("preempted"),
                requests: of_sched("requests"),
                step,
            }
        })
        .collect()
}

/// One row per request that has an `add_request` span, in the order they were added: when it
/// joined, the first step whose batch held it, and the step it finished in.
pub fn request_rows(spans: &[RecordedSpan]) -> Vec<RequestRow> {
    let zero = origin(spans);
    let in_batch = |s: &RecordedSpan, id: &str| {
        s.name == "schedule" && field(s, "requests").split(' ').any(|r| r == id)
    };
    spans
        .iter()
        .filter(|s| s.name == "add_request" && s.fields.contains_key("request"))
        .map(|a| {
            let id = field(a, "request");
            let fin = spans
                .iter()
                .find(|s| s.name == "finish_request" && field(s, "request") == id);
            RequestRow {
                added_at: a.start.map(|t| t.saturating_sub(zero)),
                first_step: spans
                    .iter()
                    .find(|s| in_batch(s, &id))
                    .map(|s| field(s, "step")),
                finished_step: fin.map(|f| field(f, "step")),
                finished_at: fin.and_then(|f| f.start).map(|t| t.saturating_sub(zero)),
                output_tokens: fin.map(|f| field(f, "output_tokens")).unwrap_or_default(),
                request: id,
            }
        })
        .collect()
}

/// Milliseconds with three decimals, the tables' unit.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}
