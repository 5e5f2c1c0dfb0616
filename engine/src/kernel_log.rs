//! The kernels a step launches, in order, as the backend itself reports them.
//!
//! Every backend op opens a `tracing` span named `kernel` whose `op` field names it
//! (`tracing::trace_span!("kernel", op = "linear")`), on the CPU as on the GPU, and a replayed
//! CUDA graph opens one named `cuda_graph_replay`. [`record`] installs a minimal `tracing`
//! subscriber on the calling thread for the length of a closure and returns those names in the
//! order they were opened:
//!
//! ```
//! # use engine::kernel_log;
//! let (_, ops) = kernel_log::record(|| {
//!     let _span = tracing::trace_span!("kernel", op = "rms_norm").entered();
//! });
//! assert_eq!(ops, ["rms_norm"]);
//! ```
//!
//! A span is a backend op, which is one kernel launch of ours with two exceptions worth
//! knowing: decode attention past one split-K partition adds a reduce kernel after the first,
//! and a cuBLAS call (`linear`) may launch more than one kernel inside the library (a bias is
//! a second GEMM). A profiler such as Nsight Systems shows those; the op sequence is the same.
//!
//! Nothing is recorded, and nothing costs more than the `tracing` macros' one atomic load per
//! span, unless [`record`] is running on that thread: the subscriber is never installed
//! globally. Spans opened on other threads (rayon's workers) are not seen; the backends open
//! theirs on the thread that calls the op, which is seen whether or not it is itself one of
//! rayon's workers (as `lab` makes the stepping thread: [`crate::backend::cpu_thread_pool`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// The name of the span each backend op opens around its launch.
pub const KERNEL_SPAN: &str = "kernel";
/// The name of the span a CUDA graph replay opens; [`record`] logs it under this name.
pub const GRAPH_REPLAY: &str = "cuda_graph_replay";

// ANCHOR: record
/// Runs `f` and returns its result with the `op` of every `kernel` span it opened on this
/// thread, in order (a CUDA graph replay appears as [`GRAPH_REPLAY`]).
pub fn record<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    keep_a_second_dispatcher();
    let log = KernelLog::default();
    let ops = log.ops.clone();
    let result = tracing::subscriber::with_default(log, f);
    let ops = std::mem::take(&mut *ops.lock().unwrap_or_else(|e| e.into_inner()));
    (result, ops)
}
// ANCHOR_END: record

/// tracing-core caches each span callsite's interest for the whole process, asking every
/// registered dispatcher; but while exactly one is registered it asks only the registering
/// thread's default. With [`record`]'s subscriber alone, a callsite first reached on another
/// thread (a test running beside this one) would be cached as "never", and `record` would
/// miss it for good. A dispatcher that wants nothing, registered once and kept, avoids that:
/// it records nothing and is nobody's default.
fn keep_a_second_dispatcher() {
    static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
}

/// A `tracing` subscriber that keeps the op names of `kernel` spans and graph replays.
#[derive(Default)]
struct KernelLog {
    ops: Arc<Mutex<Vec<String>>>,
    next_id: AtomicU64,
}

/// Whether `meta` is a span this log keeps.
fn wanted(meta: &Metadata<'_>) -> bool {
    meta.is_span() && (meta.name() == KERNEL_SPAN || meta.name() == GRAPH_REPLAY)
}

/// Reads the `op` field of a span's attributes.
#[derive(Default)]
struct OpField(Option<String>);

impl Visit for OpField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "op" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "op" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl Subscriber for KernelLog {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if wanted(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        wanted(meta)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        // Another subscriber's interest can enable a callsite this one does not want: check
        // again here.
        let meta = span.metadata();
        if wanted(meta) {
            let name = if meta.name() == KERNEL_SPAN {
                let mut op = OpField::default();
                span.record(&mut op);
                op.0.unwrap_or_else(|| "(kernel without op)".to_string())
            } else {
                meta.name().to_string()
            };
            self.ops
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(name);
        }
        // Span ids must be non-zero.
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, _event: &Event<'_>) {}

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_kernel_ops_and_graph_replays_in_order_and_nothing_else() {
        let ((), ops) = record(|| {
            let _a = tracing::trace_span!("kernel", op = "embedding").entered();
            let _b = tracing::info_span!("engine_start").entered();
            tracing::info!("an event");
            let _c = tracing::trace_span!("cuda_graph_replay", num_seqs = 1).entered();
            let _d = tracing::trace_span!("kernel", op = "linear", n = 3, k = 4).entered();
        });
        assert_eq!(ops, ["embedding", GRAPH_REPLAY, "linear"]);
    }

    #[test]
    fn records_only_while_installed_and_only_on_its_thread() {
        let span = || {
            let _s = tracing::trace_span!("kernel", op = "rms_norm").entered();
        };
        span(); // before: nobody listens
        let ((), ops) = record(|| {
            span();
            std::thread::spawn(span).join().unwrap(); // another thread: not seen
        });
        span(); // after
        assert_eq!(ops, ["rms_norm"]);
    }
}
