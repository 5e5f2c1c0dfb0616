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

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

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

/// The pool's other workers kept looking for work, instead of going to sleep, while the
/// stepping thread runs one forward pass; they sleep again once this is dropped.
///
/// Why: between two parallel regions of a step the stepping thread runs serial work (a norm,
/// a small attention, the next region's setup) for a few to tens of microseconds. That is long
/// enough for rayon's idle workers to go to sleep, and a sleeping worker takes microseconds to
/// wake when the next region's tasks appear: `examples/fork_join_cost.rs` on a 2-core AMD EPYC
/// measured 3.0-3.4 µs a region after 20 µs of serial work, 0.25-0.85 µs with the workers
/// kept hot, and a batch-1 decode step of SmolLM2 opens about 150 regions. The step itself
/// gained at most 2% there (`examples/hot_workers_ab.rs`), 3.5-6% on a 2-core Intel Xeon; the
/// CPU backend uses it unless `LAB_CPU_HOT_WORKERS=0`.
///
/// How: one job per worker other than 0 ([`rayon::spawn_broadcast`]) that loops on
/// [`rayon::yield_now`], which runs any task waiting in the pool (a region's stolen half, a
/// serving thread's tokenizer job) and returns at once when there is none, until the step ends;
/// idle, it spins, and after `SPINS_BEFORE_YIELDING` idle turns also yields its core to the
/// OS each turn. Each worker loops only while a step runs: an idle engine sleeps as before.
///
/// The one trap: rayon runs a queued job wherever a worker looks for work, also while that
/// worker waits inside another job. A loop that began inside a job of the step (a region's
/// stolen half waiting for its own halves) would sit on top of it until the step ends, and the
/// step cannot end without that job: a deadlock. So [`HotWorkers::start`] waits until every
/// loop has begun, before the step has made any job, and a loop that has not begun within
/// [`HotWorkers::START_WAIT`] is called off: it returns at once when it does begin. Nor does a
/// loop begin inside another one (the previous step's, still finishing its last
/// `yield_now`), which would stack one loop on another step after step.
#[derive(Debug)]
pub struct HotWorkers {
    state: Arc<HotState>,
}

/// What the stepping thread and the loops share: whether the step runs, and the loops' start.
#[derive(Debug)]
struct HotState {
    stepping: AtomicBool,
    /// Loops begun, or [`CALLED_OFF`] once the stepping thread stopped waiting for them.
    started: AtomicUsize,
}

const CALLED_OFF: usize = usize::MAX;

/// Idle turns of a [`HotWorkers`] loop that only spin before each turn also yields the core to
/// the OS: 4096 turns took 0.27 ms on the 2-core AMD EPYC, longer than the serial stretches
/// between a step's regions. (256, 17 µs, was too few there: a region after 20 µs of serial
/// work cost 3.2 µs again, as with no loop at all.)
const SPINS_BEFORE_YIELDING: u32 = 4096;

thread_local! {
    /// Whether this worker runs a [`HotWorkers`] loop (further down its stack, when it runs a
    /// task inside the loop).
    static IN_HOT_LOOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl HotWorkers {
    /// How long [`HotWorkers::start`] waits for the other workers to begin their loops (a
    /// sleeping worker wakes in microseconds; one busy with another thread's job may not).
    pub const START_WAIT: Duration = Duration::from_millis(1);

    /// Starts the hot loop on every other worker, when the calling thread is worker 0 of a
    /// pool of two or more (the stepping thread of [`build_global`] with `steps_here`); `None`
    /// otherwise (a rank of a group of threads, a pool of one, a thread outside the pool),
    /// and when the loops did not all begin within [`HotWorkers::START_WAIT`]: then nothing
    /// changes.
    pub fn start() -> Option<Self> {
        let others = rayon::current_num_threads().checked_sub(1)?;
        if rayon::current_thread_index() != Some(0) || others == 0 {
            return None;
        }
        let state = Arc::new(HotState {
            stepping: AtomicBool::new(true),
            started: AtomicUsize::new(0),
        });
        let shared = Arc::clone(&state);
        rayon::spawn_broadcast(move |ctx| {
            // Worker 0 is the stepping thread: it runs its copy when it next waits in a join,
            // and must return at once.
            if ctx.index() == 0 {
                return;
            }
            // Never inside another step's loop (its last `yield_now` may find this job): the
            // loops would nest one deeper each step.
            if IN_HOT_LOOP.get() {
                return;
            }
            // Begin only if the stepping thread still waits for this loop (nothing of the
            // step has run yet, so this worker is inside none of its jobs).
            let begun = shared
                .started
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n != CALLED_OFF).then(|| n + 1)
                });
            if begun.is_err() {
                return;
            }
            IN_HOT_LOOP.set(true);
            let mut idle = 0u32;
            while shared.stepping.load(Ordering::Acquire) {
                if rayon::yield_now() == Some(rayon::Yield::Executed) {
                    idle = 0;
                } else if idle < SPINS_BEFORE_YIELDING {
                    idle += 1;
                    std::hint::spin_loop();
                } else {
                    // A long serial stretch: let the OS run another thread on this core (a
                    // machine running more threads than cores would otherwise lose it).
                    std::thread::yield_now();
                }
            }
            IN_HOT_LOOP.set(false);
        });
        let deadline = Instant::now() + Self::START_WAIT;
        while state.started.load(Ordering::Acquire) < others {
            if Instant::now() > deadline {
                // Call off the loops that have not begun; those that have end with the drop.
                let late = state
                    .started
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < others).then_some(CALLED_OFF)
                    });
                if late.is_ok() {
                    state.stepping.store(false, Ordering::Release);
                    return None;
                }
                break; // the last one began meanwhile
            }
            std::hint::spin_loop();
        }
        Some(HotWorkers { state })
    }
}

impl Drop for HotWorkers {
    fn drop(&mut self) {
        self.state.stepping.store(false, Ordering::Release);
    }
}

/// Runs `task(state, i)` once for every `i` in `0..tasks` on the pool, each thread taking the
/// next index from one shared counter until none is left, with a `state` of its own from
/// `init` (scratch buffers): the parallel loop of the CPU kernels that split their work into
/// tasks (a GEMM's panels, attention's heads). Each task must write only what is its own: the
/// results are then the same whichever thread runs which task.
///
/// Why not `(0..tasks).into_par_iter()`: rayon splits such a loop in halves, each half waiting
/// to be stolen by the next idle thread and split again, so the last of `n` threads starts
/// about `log2(n)` steals after the first, and at the end every join waits for its half. On a
/// 16-core Intel Xeon (`examples/fork_join_cost.rs tasks`, workers kept hot, 2026-12-01; the
/// same dispatch with helpers taking from the front of the other runs) a
/// region of 18 to 96 tasks of 5 µs took 9.8-17.1 µs beyond its tasks' own time that way,
/// against 6.9-12.6 here (tasks of 1 µs: 11.4-15.7 against 11.7-13.4; 3 tasks: 4.4-4.8
/// against 3.0-3.5); on 2 cores both are within a microsecond. A decode step of SmolLM2
/// opens 121 GEMM regions; in the engine, batch-1 decode took 8% less time at 16 threads, 7%
/// at 8 and 17% at 4 (medians of three alternations with `LAB_CPU_TASKS=rayon`), and on 2
/// cores the two were even: the book's performance page has the runs.
///
/// How: the tasks are cut into one contiguous run per participant: a helper job per other
/// thread that can have a task (`in_place_scope` spawns, each stolen by an idle worker) and
/// the calling thread when it is a worker of the pool. Each takes its own run's tasks in order
/// from its front, then helps with what is left of the others' from their backs. A helper that no
/// thread got to before the work ran out is run by the caller as it waits for the scope, and
/// finds nothing left; so a worker that the OS has descheduled never holds the region up
/// unless it was already inside a task.
pub fn for_each_task<S>(
    tasks: usize,
    init: impl Fn() -> S + Sync,
    task: impl Fn(&mut S, usize) + Sync,
) {
    let threads = rayon::current_num_threads();
    let caller_works = rayon::current_thread_index().is_some();
    if tasks == 0 {
        return;
    }
    // (Regions of more than 2^32 tasks, which no kernel makes, also take rayon's loop: a
    // `TaskRun` counts in 32 bits.)
    if !counter_from_env() || tasks > u32::MAX as usize {
        // rayon's loop, one task a job (the engine before 2026-12-01), for the A/B.
        use rayon::prelude::*;
        return (0..tasks)
            .into_par_iter()
            .with_max_len(1)
            .for_each_init(&init, |state, i| task(state, i));
    }
    if tasks == 1 || threads == 1 && caller_works {
        let mut state = init();
        (0..tasks).for_each(|i| task(&mut state, i));
        return;
    }
    // A thread outside the pool (a rank of a group of threads) only hands the work over: its
    // rank's pool does the tasks, as rayon's own loop would.
    let helpers = match caller_works {
        true => (threads - 1).min(tasks - 1),
        false => threads.min(tasks),
    };
    // Each participant's own contiguous run of tasks, taken from its front, then what is left
    // of the others', taken from their backs: every thread streams neighbouring panels one
    // after the other, also once it helps another (the hardware prefetcher follows a thread
    // from one panel into the next only when the next is its neighbour: tasks taken in turn
    // from one counter decoded 4-11% slower on 2 cores, and helpers taking from the owner's
    // front made batch 8 about 8% slower).
    let parts = helpers + usize::from(caller_works);
    let runs: Vec<TaskRun> = (0..parts)
        .map(|p| TaskRun::new(p * tasks / parts, (p + 1) * tasks / parts))
        .collect();
    let joined = AtomicUsize::new(0);
    let claim = || {
        let me = joined.fetch_add(1, Ordering::Relaxed);
        let mut state = None;
        while let Some(i) = runs[me].take_front() {
            task(state.get_or_insert_with(&init), i);
        }
        for run in runs[me + 1..].iter().chain(&runs[..me]) {
            while let Some(i) = run.take_back() {
                task(state.get_or_insert_with(&init), i);
            }
        }
    };
    rayon::in_place_scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| claim());
        }
        if caller_works {
            claim();
        }
    });
}

/// One participant's run of [`for_each_task`]'s tasks, `front..back` still to do: its owner
/// takes them from the front, the others from the back, both ends in one atomic word (front
/// in the low half, back in the high) so that no task is taken twice.
struct TaskRun(AtomicU64);

impl TaskRun {
    /// `start <= end <= u32::MAX` ([`for_each_task`] sends larger regions to rayon's loop).
    fn new(start: usize, end: usize) -> Self {
        debug_assert!(start <= end && end <= u32::MAX as usize);
        TaskRun(AtomicU64::new((end as u64) << 32 | start as u64))
    }

    /// The first task left, for the run's owner.
    fn take_front(&self) -> Option<usize> {
        self.take(|front, back| (front, front + 1, back))
    }

    /// The last task left, for a helper.
    fn take_back(&self) -> Option<usize> {
        self.take(|front, back| (back - 1, front, back - 1))
    }

    /// `pick(front, back)` → (the task taken, the new front, the new back), while any is left.
    fn take(&self, pick: impl Fn(u64, u64) -> (u64, u64, u64)) -> Option<usize> {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            let (front, back) = (word & u64::from(u32::MAX), word >> 32);
            if front >= back {
                return None;
            }
            let (task, front, back) = pick(front, back);
            match self.0.compare_exchange_weak(
                word,
                back << 32 | front,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(task as usize),
                Err(now) => word = now,
            }
        }
    }
}

/// Whether [`for_each_task`] shares its tasks out from a counter: yes, unless the environment
/// variable `LAB_CPU_TASKS` is `rayon` (rayon's splitting, for A/B benchmarks: the values are
/// the same either way). Read once.
fn counter_from_env() -> bool {
    static COUNTER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *COUNTER.get_or_init(|| std::env::var("LAB_CPU_TASKS").as_deref() != Ok("rayon"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn for_each_task_runs_every_task_once() {
        for tasks in [0usize, 1, 2, 3, 17, 200] {
            let seen = Mutex::new(vec![0u32; tasks]);
            let states = AtomicUsize::new(0);
            for_each_task(
                tasks,
                || {
                    states.fetch_add(1, Ordering::Relaxed);
                    Vec::<usize>::new()
                },
                |mine, i| {
                    mine.push(i);
                    seen.lock().unwrap()[i] += 1;
                },
            );
            assert!(
                seen.into_inner().unwrap().iter().all(|&c| c == 1),
                "{tasks} tasks"
            );
            // A state per thread that ran a task at least, never one per task.
            let threads = rayon::current_num_threads() + 1;
            assert!(
                states.into_inner() <= threads.min(tasks.max(1)),
                "{tasks} tasks"
            );
        }
    }

    #[test]
    fn a_run_gives_each_task_once_from_either_end() {
        let run = TaskRun::new(3, 8);
        assert_eq!(run.take_front(), Some(3));
        assert_eq!(run.take_back(), Some(7));
        assert_eq!(run.take_back(), Some(6));
        assert_eq!(run.take_front(), Some(4));
        assert_eq!(run.take_front(), Some(5));
        assert_eq!((run.take_front(), run.take_back()), (None, None));
        let empty = TaskRun::new(2, 2);
        assert_eq!((empty.take_front(), empty.take_back()), (None, None));
    }

    #[test]
    fn for_each_task_inside_the_pool() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let sum = AtomicUsize::new(0);
        pool.install(|| {
            for_each_task(
                100,
                || (),
                |_, i| {
                    sum.fetch_add(i, Ordering::Relaxed);
                },
            )
        });
        assert_eq!(sum.into_inner(), 4950);
    }
}
