//! The CPU kernels' thread pool, built on the thread that steps the engine.
//!
//! Every CPU kernel splits its work with rayon, over rayon's global pool. A batch-1 decode
//! step of SmolLM2 opens about 150 parallel regions (four projections and attention in each
//! of 30 layers, the LM head), each a few tens of microseconds of work. If the thread that
//! steps the engine is not one of the pool's, each region is a hand-off: the job goes into
//! the pool's queue, a sleeping worker is woken, and the stepping thread sleeps until the
//! job is done, so one step pays ~150 wake-ups and context switches. Built with
//! [`rayon::ThreadPoolBuilder::use_current_thread`], the stepping thread is the pool's worker
//! 0: a region is a join on a worker, which runs its own half of the work in place while
//! the other workers steal the rest (`lab bench`, SmolLM2 f32 and GGUF, 2 cores: +15-30%
//! decode tokens per second at batch 1; see the book's performance page).
//!
//! The pool is global, so it must be built once per process, on the right thread, before any
//! kernel (or anything else) touches rayon:
//! - `lab generate`, `lab bench` and the `tracer` binary step the engine on the main thread
//!   and build the pool there, before loading the model;
//! - `lab serve` steps the engine on a thread of its own (`engine-loop`) while the main thread
//!   waits on HTTP: the pool is built on the engine thread, in its loading closure. Built on
//!   the main thread instead it would count a thread that never runs kernels, and lose a
//!   worker.
//!
//! Two cases keep a pool of spawned workers only (the stepping thread outside it, as rayon's
//! default): tensor or pipeline parallelism in one process, where every rank steps on a
//! thread of its own and the caller only drives them; and a pool of one thread, which would
//! then be the stepping thread alone, so work that another thread hands to the pool (a serving
//! thread's tokenizer, say) would wait until the engine's next step.
//!
//! Spans are unaffected: every backend op opens its `kernel` span on the thread that calls it
//! (the stepping thread, pool worker or not), so [`crate::kernel_log::record`]'s thread-local
//! subscriber and the tracer's global one see the same spans as before.

use std::sync::Mutex;
use std::thread::ThreadId;

use crate::error::{EngineError, Result};

/// The pool that [`build_global`] built (or found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuThreadPool {
    /// Threads that run kernels, the stepping thread included when it is a worker.
    pub threads: usize,
    /// Whether the calling thread is one of the pool's workers (index 0).
    pub stepping_thread_is_worker: bool,
}

/// What a successful [`build_global`] was asked, so that a second identical call (a command
/// that loads twice) is answered with the same pool rather than an error.
struct Built {
    requested: Option<usize>,
    steps_here: bool,
    thread: ThreadId,
    pool: CpuThreadPool,
}

static BUILT: Mutex<Option<Built>> = Mutex::new(None);

/// Builds rayon's global pool for the CPU kernels: `threads` workers (`None`: the
/// `RAYON_NUM_THREADS` environment variable, else one per CPU this process may run on), the
/// calling thread one of them when `steps_here` (it steps the engine itself: one rank, world
/// size 1) and there are at least two.
///
/// Call it on the thread that will step the engine, before anything uses rayon. Errors, never
/// panics: `threads` of 0; or `threads` given and a pool already running that this function
/// did not build (something used rayon first, and the pool's size can no longer be set). With
/// `threads` of `None`, an already running pool is kept as it is (the stepping thread is then
/// not a worker: correct, only slower). A second call with the same arguments on the same
/// thread returns the same pool.
pub fn build_global(threads: Option<usize>, steps_here: bool) -> Result<CpuThreadPool> {
    if threads == Some(0) {
        return Err(EngineError::InvalidArgument(
            "the CPU thread pool needs at least 1 thread".into(),
        ));
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let thread = std::thread::current().id();
    if let Some(b) = built.as_ref() {
        if (b.requested, b.steps_here, b.thread) == (threads, steps_here, thread) {
            return Ok(b.pool);
        }
        return Err(EngineError::InvalidArgument(format!(
            "the CPU thread pool is already built ({} threads{}); it can be built once per \
             process",
            b.pool.threads,
            if b.pool.stepping_thread_is_worker {
                ", on another thread or with other settings"
            } else {
                ""
            }
        )));
    }
    let n = threads.unwrap_or_else(default_threads);
    let worker = steps_here && n >= 2;
    let mut builder = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("cpu-kernels-{i}"));
    if worker {
        builder = builder.use_current_thread();
    }
    let pool = match builder.build_global() {
        Ok(()) => CpuThreadPool {
            threads: rayon::current_num_threads(),
            stepping_thread_is_worker: worker,
        },
        Err(e) => match threads {
            Some(n) => {
                return Err(EngineError::InvalidArgument(format!(
                    "cannot size the CPU thread pool to {n} threads: it already runs ({e})"
                )))
            }
            // Keep the pool that runs (rayon's default, started by an earlier parallel call).
            None => CpuThreadPool {
                threads: rayon::current_num_threads(),
                stepping_thread_is_worker: false,
            },
        },
    };
    *built = Some(Built {
        requested: threads,
        steps_here,
        thread,
        pool,
    });
    Ok(pool)
}

/// Rayon's default size: `RAYON_NUM_THREADS` when it is a positive number, else one thread
/// per CPU this process may run on.
fn default_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
