//! Time spent inside a few named spans, per thread, summed: where a step's host time goes,
//! measured while the engine runs at full speed (`lab bench --workload decode --host-spans`).
//!
//! The tracer's [`super::span_recorder::SpanRecorder`] keeps every span of every op, and asks
//! the GPU backend to time each op with events, which runs the steps without CUDA graphs: the
//! right tool to see one step, the wrong one to time a step as it normally runs. This
//! subscriber is interested in the spans it is given by name and in nothing else: every other
//! callsite is disabled for good once registered (`Interest::never`), so the ops' spans and the
//! per-op GPU timing stay off, and the engine runs as without a subscriber, plus a clock read
//! on each enter and exit of the chosen spans (a few a step).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// One span name on one thread: how many times it was entered and for how long in all.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpanTotal {
    pub count: u64,
    pub total: Duration,
}

#[derive(Default)]
struct State {
    /// Live spans: id → name.
    live: HashMap<u64, &'static str>,
    /// (span name, thread name) → totals.
    totals: BTreeMap<(&'static str, String), SpanTotal>,
}

/// Sums the time spent in the spans named in `names` (see the [module docs](self)). Install it
/// as the global default so the ranks' threads report to it; read with [`SpanTotals::totals`].
#[derive(Clone)]
pub struct SpanTotals {
    names: &'static [&'static str],
    next_id: Arc<AtomicU64>,
    state: Arc<Mutex<State>>,
}

thread_local! {
    /// When this thread entered each span it is inside, innermost last.
    static ENTERED: RefCell<Vec<(u64, Instant)>> = const { RefCell::new(Vec::new()) };
}

impl SpanTotals {
    pub fn new(names: &'static [&'static str]) -> Self {
        SpanTotals {
            names,
            next_id: Arc::new(AtomicU64::new(1)),
            state: Arc::default(),
        }
    }

    fn wanted(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_span() && self.names.contains(&metadata.name())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The totals so far, by (span name, thread name).
    pub fn totals(&self) -> BTreeMap<(&'static str, String), SpanTotal> {
        self.lock().totals.clone()
    }

    /// Forgets the totals so far (say, those of a warm-up).
    pub fn reset(&self) {
        self.lock().totals.clear();
    }
}

impl Subscriber for SpanTotals {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.wanted(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.wanted(metadata)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().live.insert(id, span.metadata().name());
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &Id) {
        ENTERED.with_borrow_mut(|s| s.push((span.into_u64(), Instant::now())));
    }

    fn exit(&self, span: &Id) {
        let id = span.into_u64();
        let Some((_, since)) = ENTERED.with_borrow_mut(|s| {
            let at = s.iter().rposition(|&(i, _)| i == id)?;
            Some(s.remove(at))
        }) else {
            return;
        };
        let took = since.elapsed();
        let thread = std::thread::current()
            .name()
            .map_or_else(|| "unnamed".to_string(), str::to_string);
        let mut state = self.lock();
        let Some(&name) = state.live.get(&id) else {
            return;
        };
        let t = state.totals.entry((name, thread)).or_default();
        t.count += 1;
        t.total += took;
    }

    fn try_close(&self, span: Id) -> bool {
        self.lock().live.remove(&span.into_u64());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_only_the_named_spans_per_thread() {
        let totals = SpanTotals::new(&["wanted"]);
        tracing::subscriber::with_default(totals.clone(), || {
            for _ in 0..3 {
                let _s = tracing::debug_span!("wanted", step = 1).entered();
                let _inner = tracing::debug_span!("other").entered();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let got = totals.totals();
        assert_eq!(got.len(), 1, "{got:?}");
        let ((name, _thread), t) = got.iter().next().unwrap();
        assert_eq!(*name, "wanted");
        assert_eq!(t.count, 3);
        assert!(t.total >= Duration::from_millis(6), "{t:?}");
        totals.reset();
        assert!(totals.totals().is_empty());
    }
}
