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

    /// The `op` field of a `kernel` span, else the span's name: what the tables group by.
    pub fn component(&self) -> String {
        match self.fields.get("op") {
            Some(op) if self.name == "kernel" => op.clone(),
            _ => self.name.to_string(),
        }
    }
}

#[derive(Default)]
struct State {
    spans: Vec<RecordedSpan>,
    threads: Vec<(std::thread::ThreadId, String)>,
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
        if let Some(i) = state.threads.iter().position(|(id, _)| *id == me.id()) {
            return i;
        }
        let name = me
            .name()
            .map_or_else(|| format!("{:?}", me.id()), str::to_string);
        state.threads.push((me.id(), name));
        state.threads.len() - 1
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

    fn event(&self, _event: &Event<'_>) {}

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
