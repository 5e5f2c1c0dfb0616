//! The request tracer's engine side: what the engine's `tracing` spans become once someone
//! listens (the `tracer` binary does).
//!
//! The engine opens spans everywhere it does work: `schedule` and `execute_model` around each
//! step (with its number), a `kernel` span around every op (its `op`: `rms_norm`,
//! `paged_attention_decode`, `all_reduce` ...), `collective` spans inside the communicators
//! (bytes, rank), the pipeline's sends and receives, a `rank` span around everything a rank's
//! thread does. With no subscriber each costs one relaxed atomic load. [`SpanRecorder`] is a
//! subscriber that keeps every span's name, fields, thread and start and end times;
//! [`chrome_trace()`] writes them as a Chrome trace (open it in Perfetto),
//! [`html_timeline()`] as a self-contained HTML page with a swimlane per thread, and
//! [`bottlenecks()`] adds them up by component; [`report`] reads the step and request tables
//! off them; [`comm_check`] sets the all-reduce traffic the course's formulas predict beside
//! what the communicators counted; [`workload`] is a batch of requests to follow, and
//! [`overhead`] what tracing costs.
//! [`span_totals`] is the other kind of listener: it sums the time inside a few named spans
//! and leaves everything else off, to split a step's host time while the engine runs as fast
//! as it does untraced (`lab bench --workload decode --host-spans`).
//!
//! Times are the host's: on the GPU a `kernel` span is the launch, not the kernel's run.

pub mod bottlenecks;
pub mod chrome_trace;
pub mod comm_check;
pub mod html_timeline;
pub mod overhead;
pub mod report;
pub mod span_recorder;
pub mod span_totals;
pub mod workload;

pub use bottlenecks::{bottlenecks, device_bottlenecks, Component};
pub use chrome_trace::chrome_trace;
pub use comm_check::{
    measured_all_reduce, predicted_all_reduce, predicted_all_reduce_one_shot, AllReduceTraffic,
};
pub use html_timeline::html_timeline;
pub use overhead::{measure_overhead, Overhead};
pub use span_recorder::{RecordedSpan, SpanRecorder};
pub use span_totals::{SpanTotal, SpanTotals};
pub use workload::{parse_workload, run_workload, WorkloadRequest};
