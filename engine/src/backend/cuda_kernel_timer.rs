//! Device time of each op's kernels, measured with CUDA events: what the tracer shows in its
//! GPU lane and per-kernel table, and the time of every NCCL collective.
//!
//! On the host an op returns as soon as its kernels are queued, so a `kernel` span's host
//! time is the launch, not the run. The GPU's own clock is read through events: one recorded
//! on the stream before an op's first launch and one after its last; once the step's sampled
//! ids are back (the stream has passed every event by then), each pair's elapsed time is the
//! op's device time, and its offset from the step's first event places it on a timeline.
//!
//! Cost. An event record is a few µs of host time and sits between two kernels on the stream,
//! where it keeps the second from starting under the first (programmatic dependent launch) and
//! a CUDA graph from holding the step. So per-op timing is on only while a subscriber listens
//! for [`TARGET`] (the tracer's does; `lab` with `RUST_LOG` at trace too), and then the step
//! runs eagerly: the times are those of the kernels one after another, without the overlap of
//! a normal run, whose step time [`super::DeviceTime`] still measures with two events a step.
//! NCCL collectives are timed always: their time is part of what the communicator reports
//! (bytes, and the time spent in the calls), and a collective is tens of µs next to which an
//! event pair is noise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kernels::cudarc::driver::sys::CUevent_flags;
use kernels::cudarc::driver::{CudaContext, CudaEvent, CudaStream};

use crate::distributed::{CommOp, CommStats};

/// The `tracing` target of the per-op device times: one event per op and step, with fields
/// `op`, `start_us` (from the step's first event) and `device_us`.
pub const TARGET: &str = "device_kernel";

/// Whether a subscriber wants per-op device times now.
pub fn wanted() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::TRACE)
}

/// One op's events, read after the step.
struct Pending {
    op: &'static str,
    start: CudaEvent,
    end: CudaEvent,
    /// A collective's kind: its time also goes to the communicator's statistics.
    comm: Option<CommOp>,
}

/// The events of the step under way.
#[derive(Default)]
pub struct KernelTimer {
    /// Time every op (set per step from [`wanted`]); collectives are timed regardless.
    every_op: AtomicBool,
    /// The stream is being recorded into a CUDA graph: nothing runs until the replay, so no
    /// op is timed (an event recorded during a capture holds no time to read).
    recording: AtomicBool,
    pending: Mutex<Vec<Pending>>,
    /// Events whose times have been read, for the next steps: creating an event is a driver
    /// call, and a tensor-parallel decode step times two collectives per layer, every step.
    free: Mutex<Vec<CudaEvent>>,
}

/// An op's `kernel` span and, when timed, its start event; the end event is recorded when the
/// scope ends, after the op's last launch.
pub struct KernelScope<'a> {
    _span: tracing::span::EnteredSpan,
    timed: Option<Timed<'a>>,
}

struct Timed<'a> {
    timer: &'a KernelTimer,
    ctx: &'a Arc<CudaContext>,
    stream: &'a Arc<CudaStream>,
    op: &'static str,
    comm: Option<CommOp>,
    start: CudaEvent,
}

impl KernelTimer {
    /// An event that records a timestamp (CUDA's default events do; `disable_timing` ones
    /// not): a free one if there is one, else a new one.
    fn event(&self, ctx: &Arc<CudaContext>) -> Option<CudaEvent> {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        reused.or_else(|| ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).ok())
    }

    /// Times every op of the coming step, or only the collectives.
    pub fn time_every_op(&self, on: bool) {
        self.every_op.store(on, Ordering::Relaxed);
    }

    /// Whether the ops that follow are being recorded into a CUDA graph (then none is timed).
    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// Whether every op of this step is timed (the step must then run eagerly).
    pub fn times_every_op(&self) -> bool {
        self.every_op.load(Ordering::Relaxed)
    }

    /// The scope of op `op`: `span` entered, and a start event recorded when the op is timed
    /// (a collective of kind `comm` always is). Timing is best effort: an event that cannot
    /// be created or recorded leaves the op untimed, never fails it.
    pub fn scope<'a>(
        &'a self,
        ctx: &'a Arc<CudaContext>,
        stream: &'a Arc<CudaStream>,
        op: &'static str,
        comm: Option<CommOp>,
        span: tracing::Span,
    ) -> KernelScope<'a> {
        let _span = span.entered();
        let wanted = comm.is_some() || self.times_every_op();
        let timed = (wanted && !self.recording.load(Ordering::Relaxed))
            .then(|| self.event(ctx))
            .flatten()
            .filter(|start| start.record(stream).is_ok())
            .map(|start| Timed {
                timer: self,
                ctx,
                stream,
                op,
                comm,
                start,
            });
        KernelScope { _span, timed }
    }

    /// After the step (its stream has passed every event): each timed op's device time as a
    /// [`TARGET`] event, placed from `step_start`; collectives' times added to `stats`.
    pub fn report(&self, step_start: &CudaEvent, stats: Option<&Mutex<CommStats>>) {
        let pending = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        let mut read = Vec::with_capacity(2 * pending.len());
        for p in pending {
            let times = (p.start.elapsed_ms(&p.end), step_start.elapsed_ms(&p.start));
            read.extend([p.start, p.end]);
            let (Ok(ms), Ok(offset)) = times else {
                continue;
            };
            let (device_us, start_us) = (f64::from(ms) * 1e3, f64::from(offset) * 1e3);
            if let (Some(op), Some(stats)) = (p.comm, stats) {
                let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
                stats.add_time(op, std::time::Duration::from_secs_f64(device_us / 1e6));
            }
            tracing::trace!(target: TARGET, op = p.op, start_us, device_us);
        }
        // The stream is past them (their times were read): each can be recorded again.
        if let Ok(mut free) = self.free.lock() {
            free.extend(read);
        }
    }
}

impl Drop for KernelScope<'_> {
    fn drop(&mut self) {
        let Some(t) = self.timed.take() else { return };
        let Some(end) = (t.timer.event(t.ctx)).filter(|e| e.record(t.stream).is_ok()) else {
            return;
        };
        if let Ok(mut pending) = t.timer.pending.lock() {
            pending.push(Pending {
                op: t.op,
                start: t.start,
                end,
                comm: t.comm,
            });
        }
    }
}
