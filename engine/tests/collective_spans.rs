//! Every communicator call opens a `collective` span with its op, tensor bytes, rank and the
//! bytes it sent: what the tracer's timeline and bandwidth columns read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::distributed::communicator::COLLECTIVE_SPAN;
use engine::distributed::{Communicator, CpuCommunicator};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span's fields, by name, as text.
type Fields = BTreeMap<String, String>;

/// Keeps the fields of this thread's `collective` spans, updated by later `record` calls.
#[derive(Default)]
struct Spans {
    spans: Arc<Mutex<Vec<Fields>>>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Spans {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_span() && meta.name() == COLLECTIVE_SPAN
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut spans = self.spans.lock().unwrap();
        let mut fields = Fields::new();
        span.record(&mut Collect(&mut fields));
        spans.push(fields);
        // The n-th span (from 1: ids must be non-zero) has id n.
        Id::from_u64(spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.spans.lock().unwrap();
        values.record(&mut Collect(&mut spans[span.into_u64() as usize - 1]));
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, _event: &Event<'_>) {}

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[test]
fn each_call_opens_a_collective_span_with_op_bytes_rank_and_sent() {
    let comms = CpuCommunicator::group(2, Duration::from_secs(20));
    let per_rank: Vec<Vec<Fields>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|mut comm| {
                s.spawn(move || {
                    let spans = Spans::default();
                    let log = spans.spans.clone();
                    tracing::subscriber::with_default(spans, || {
                        comm.all_reduce_sum(&mut [1.0; 6]).unwrap();
                        comm.barrier().unwrap();
                    });
                    let log = log.lock().unwrap().clone();
                    log
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, spans) in per_rank.iter().enumerate() {
        let field = |i: usize, name: &str| spans[i].get(name).cloned().unwrap_or_default();
        assert_eq!(spans.len(), 2, "rank {rank}: {spans:?}");
        assert_eq!(field(0, "op"), "all_reduce");
        assert_eq!(field(0, "bytes"), "24");
        assert_eq!(field(0, "rank"), rank.to_string());
        // Two ranks: 2(N − 1)/N × 24 bytes = 24.
        assert_eq!(field(0, "sent"), "24");
        assert_eq!(
            (field(1, "op"), field(1, "sent")),
            ("barrier".to_string(), "0".to_string())
        );
    }
}
