//! [`SpanRecorder`]: a `tracing` subscriber that records every span of the run.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One span as it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSpan {
    /// The span's name (`kernel`, `schedule`, `collective` ...).
    pub name: &'static str,
    /// The module that opened it.
    pub target: &'static str,
    /// Its fields, as text (`op`, `step`, `bytes` ...), updated by later `record` calls.
    pub fields: BTreeMap<String, String>,
    /// The span it opened inside (an index into the recorder's list), if any.
    pub parent: Option<usize>,
    /// The thread that first entered it, as a small number in order of first appearance, and
    /// that thread's name.
    pub thread: usize,
    /// From the recorder's start: first entered, last exited (`None` until entered/exited).
    pub start: Option<Duration>,
    pub end: Option<Duration>,
}

impl RecordedSpan {
    /// How long it was open (zero if it never closed).
    pub fn duration(&self) -> Duration {
        match (self.start, self.end) {
            (Some(s), Some(e)) => e.saturating_sub(s),
            _ => Duration::ZERO,
        }
    }

    /// The `op` field of a `kernel` span (`op (GPU)` for a [`GPU_KERNEL`]), else the span's
    /// name: what the tables group by.
    pub fn component(&self) -> String {
        match self.fields.get("op") {
            Some(op) if self.name == "kernel" => op.clone(),
            Some(op) if self.name == GPU_KERNEL => format!("{op} (GPU)"),
            _ => self.name.to_string(),
        }
    }

    /// Whether this is an op's run on the GPU rather than a span of the host.
    pub fn is_gpu_kernel(&self) -> bool {
        self.name == GPU_KERNEL
    }
}

/// The name of the spans made from the CUDA backend's per-op device times
/// ([`crate::backend::cuda_kernel_timer`]): each on a lane of its own, `<host thread> GPU`,
/// starting at the start of the host span the step ran in plus the op's offset from the step's
/// first event, as long as the GPU measured. (The GPU may start a step's first kernel a little
/// after that span starts: the lane is placed by the host's clock, its lengths are the GPU's.)
pub const GPU_KERNEL: &str = "gpu_kernel";

#[derive(Default)]
struct State {
    spans: Vec<RecordedSpan>,
    /// Every lane: a thread (its id) or a thread's GPU lane (no id), and its name.
    threads: Vec<(Option<std::thread::ThreadId>, String)>,
}

/// Records every span (all levels) with its fields, parent, thread and times. Install it as
/// the global default (`tracing::subscriber::set_global_default`) so that the ranks' threads
/// report to it too; read the spans with [`SpanRecorder::spans`].
#[derive(Clone)]
pub struct SpanRecorder {
    origin: Instant,
    state: Arc<Mutex<State>>,
}

impl Default for SpanRecorder {
    fn default() -> Self {
        SpanRecorder {
            origin: Instant::now(),
            state: Arc::default(),
        }
    }
}

thread_local! {
    /// The spans this thread is inside, innermost last (ids as the recorder gave them).
    static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Collect<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl SpanRecorder {
    /// Every span so far, in the order they were opened; thread names by thread number.
    pub fn spans(&self) -> (Vec<RecordedSpan>, Vec<String>) {
        let state = self.lock();
        let names = state.threads.iter().map(|(_, n)| n.clone()).collect();
        (state.spans.clone(), names)
    }

    /// The spans opened from the `first`-th on (say, after loading: `first` is the length of
    /// an earlier [`SpanRecorder::spans`]), their `parent` indices counted in the new list; a
    /// parent opened before `first` (a rank's `rank` span, opened at loading) becomes `None`.
    pub fn spans_since(&self, first: usize) -> (Vec<RecordedSpan>, Vec<String>) {
        let (mut spans, threads) = self.spans();
        let mut later = spans.split_off(first.min(spans.len()));
        for s in &mut later {
            s.parent = s.parent.and_then(|p| p.checked_sub(first));
        }
        (later, threads)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while recording leaves the spans as they were: still worth reading.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn thread_number(state: &mut State) -> usize {
        let me = std::thread::current();
        if let Some(i) = state
            .threads
            .iter()
            .position(|(id, _)| *id == Some(me.id()))
        {
            return i;
        }
        let name = me
            .name()
            .map_or_else(|| format!("{:?}", me.id()), str::to_string);
        state.threads.push((Some(me.id()), name));
        state.threads.len() - 1
    }

    /// The GPU lane of this thread's ops.
    fn gpu_lane(state: &mut State) -> usize {
        let host = Self::thread_number(state);
        let name = format!("{} GPU", state.threads[host].1);
        if let Some(i) = state
            .threads
            .iter()
            .position(|(id, n)| id.is_none() && *n == name)
        {
            return i;
        }
        state.threads.push((None, name));
        state.threads.len() - 1
    }

    /// A [`crate::backend::cuda_kernel_timer::TARGET`] event: one op's device time, as a
    /// [`GPU_KERNEL`] span on this thread's GPU lane.
    fn device_kernel(&self, event: &Event<'_>) {
        #[derive(Default)]
        struct Times {
            op: String,
            start_us: f64,
            device_us: f64,
        }
        impl Visit for Times {
            fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "op" {
                    self.op = value.to_string();
                }
            }
            fn record_f64(&mut self, field: &Field, value: f64) {
                match field.name() {
                    "start_us" => self.start_us = value,
                    "device_us" => self.device_us = value,
                    _ => {}
                }
            }
        }
        let mut t = Times::default();
        event.record(&mut t);
        let valid = |x: f64| x.is_finite() && x >= 0.0;
        if !valid(t.start_us) || !valid(t.device_us) {
            return;
        }
        let inside = STACK.with(|s| s.borrow().last().copied());
        let mut state = self.lock();
        let anchor = inside
            .and_then(|i| state.spans.get(i as usize - 1))
            .and_then(|s| s.start)
            .unwrap_or_else(|| self.origin.elapsed());
        let start = anchor + Duration::from_secs_f64(t.start_us / 1e6);
        let end = start + Duration::from_secs_f64(t.device_us / 1e6);
        let lane = Self::gpu_lane(&mut state);
        let mut fields = BTreeMap::new();
        fields.insert("op".to_string(), t.op);
        fields.insert("device_us".to_string(), format!("{:.1}", t.device_us));
        state.spans.push(RecordedSpan {
            name: GPU_KERNEL,
            target: crate::backend::cuda_kernel_timer::TARGET,
            fields,
            parent: None,
            thread: lane,
            start: Some(start),
            end: Some(end),
        });
    }
}

impl Subscriber for SpanRecorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = BTreeMap::new();
        span.record(&mut Collect(&mut fields));
        let parent = match span.parent() {
            Some(p) => Some(p.into_u64() as usize - 1),
            None if span.is_contextual() => {
                STACK.with(|s| s.borrow().last().map(|&i| i as usize - 1))
            }
            None => None,
        };
        let mut state = self.lock();
        let thread = Self::thread_number(&mut state);
        state.spans.push(RecordedSpan {
            name: span.metadata().name(),
            target: span.metadata().target(),
            fields,
            parent,
            thread,
            start: None,
            end: None,
        });
        // The n-th span (from 1: ids must be non-zero) has id n.
        Id::from_u64(state.spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut state = self.lock();
        if let Some(s) = state.spans.get_mut(span.into_u64() as usize - 1) {
            values.record(&mut Collect(&mut s.fields));
        }
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        if event.metadata().target() == crate::backend::cuda_kernel_timer::TARGET {
            self.device_kernel(event);
        }
    }

    fn enter(&self, span: &Id) {
        STACK.with(|s| s.borrow_mut().push(span.into_u64()));
        let now = self.origin.elapsed();
        let mut state = self.lock();
        let thread = Self::thread_number(&mut state);
        if let Some(s) = state.spans.get_mut(span.into_u64() as usize - 1) {
            if s.start.is_none() {
                s.start = Some(now);
                s.thread = thread;
            }
        }
    }

    fn exit(&self, span: &Id) {
        STACK.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(i) = s.iter().rposition(|&x| x == span.into_u64()) {
                s.remove(i);
            }
        });
        let now = self.origin.elapsed();
        if let Some(s) = self.lock().spans.get_mut(span.into_u64() as usize - 1) {
            s.end = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::{chrome_trace, device_bottlenecks};

    /// Device times as the CUDA backend reports them become spans on the thread's GPU lane,
    /// placed from the start of the span they were reported in, with the GPU's lengths; the
    /// host's bottleneck table leaves them out and the device table has them.
    #[test]
    fn device_kernel_events_become_spans_on_a_gpu_lane() {
        let recorder = SpanRecorder::default();
        tracing::subscriber::with_default(recorder.clone(), || {
            let _step = tracing::trace_span!("execute_model", step = 1).entered();
            for (op, start_us, device_us) in [("linear", 0.0, 4.0), ("sample", 10.0, 2.5)] {
                tracing::trace!(target: crate::backend::cuda_kernel_timer::TARGET, op, start_us, device_us);
            }
            tracing::trace!(target: crate::backend::cuda_kernel_timer::TARGET, op = "bad", start_us = f64::NAN, device_us = 1.0);
        });
        let (spans, threads) = recorder.spans();
        let step = &spans[0];
        let gpu: Vec<_> = spans.iter().filter(|s| s.is_gpu_kernel()).collect();
        assert_eq!(gpu.len(), 2, "two valid events, one NaN dropped: {gpu:?}");
        assert_eq!(
            threads[gpu[0].thread],
            format!("{} GPU", threads[step.thread])
        );
        assert_eq!(
            gpu[1].start.unwrap() - step.start.unwrap(),
            Duration::from_micros(10)
        );
        assert_eq!(gpu[1].duration(), Duration::from_nanos(2500));
        assert!(crate::tracer::bottlenecks(&spans)
            .iter()
            .all(|c| !c.name.ends_with("(GPU)")));
        let dev = device_bottlenecks(&spans);
        assert_eq!(dev[0].name, "linear (GPU)");
        assert_eq!(dev[0].self_time, Duration::from_micros(4));
        // The HTML page draws them on their lane, in their host op's colour (a GPU run once
        // made it look up a colour that was not there).
        let html = crate::tracer::html_timeline(&spans, &threads, "gpu lane");
        assert!(html.contains("linear (GPU)") && html.contains(" GPU"));
        let trace = chrome_trace(&spans, &threads);
        let lanes = trace["traceEvents"].as_array().unwrap();
        assert!(lanes
            .iter()
            .any(|e| e["ph"] == "M" && e["args"]["name"].as_str().unwrap().ends_with(" GPU")));
    }
}
