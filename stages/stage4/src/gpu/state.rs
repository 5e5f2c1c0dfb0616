//! The launch in progress: what the executor and the kernel's threads share.
//!
//! A launch runs on the calling OS thread, one block after another, and the state of the
//! block that is running lives in a thread-local. The builtins (`thread_idx()`, ...), the
//! memory accesses and the barriers read it, which is why a kernel needs no "thread" argument,
//! as in CUDA C. Calling them outside a launch is an error that says so.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::Location;
use std::rc::Rc;

use super::dim::{Dim3, LaunchConfig, WARP_SIZE};
use super::traffic::{LaunchStats, Recorder};

/// A call site in the kernel's source: stands for one instruction (or one `__shared__`
/// declaration, or one barrier).
pub(crate) type Site = &'static Location<'static>;

/// What a thread is doing when the executor looks at it between two sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Can run (the executor polls it in the next sweep).
    Running,
    /// Waits at the `sync_threads()` called at this site.
    Barrier(Site),
    /// Waits for the other lanes of its warp at the shuffle called at this site.
    Warp(Site),
    /// Returned from the kernel.
    Done,
}

/// Where the lanes of one warp leave and pick up shuffled values.
#[derive(Debug, Default, Clone)]
pub(crate) struct WarpExchange {
    /// Per lane: its value (as bits) and the lane it reads from.
    pub posted: [Option<(u64, usize)>; WARP_SIZE],
    /// Per lane: the value it receives, once the whole warp has posted.
    pub results: [Option<u64>; WARP_SIZE],
}

/// One `shared::<T>(len)` declaration of the running block.
pub(crate) struct SharedDecl {
    pub array: Rc<dyn Any>,
    pub len: usize,
    pub type_name: &'static str,
}

/// The running launch, and the block of it that is running.
pub(crate) struct Launch {
    pub kernel: String,
    pub config: LaunchConfig,
    pub block_idx: Dim3,
    /// Barriers the running block has passed: shared-memory accesses are ordered across
    /// threads only by a change of epoch.
    pub epoch: u64,
    pub waits: Vec<Wait>,
    pub warps: Vec<WarpExchange>,
    pub shared: HashMap<Site, SharedDecl>,
    pub shared_bytes: usize,
    pub recorder: Recorder,
    pub stats: LaunchStats,
}

impl Launch {
    pub(crate) fn new(kernel: &str, config: LaunchConfig) -> Launch {
        Launch {
            kernel: kernel.to_string(),
            config,
            block_idx: Dim3::x(0),
            epoch: 0,
            waits: Vec::new(),
            warps: Vec::new(),
            shared: HashMap::new(),
            shared_bytes: 0,
            recorder: Recorder::default(),
            stats: LaunchStats {
                kernel: kernel.to_string(),
                ..LaunchStats::default()
            },
        }
    }

    /// `kernel `k`, block (b), thread (t)`: the start of every error message a thread causes.
    pub(crate) fn whereabouts(&self, thread: usize) -> String {
        format!(
            "kernel `{}`, block {}, thread {}",
            self.kernel,
            self.block_idx,
            self.config.block.unflatten(thread)
        )
    }
}

thread_local! {
    static LAUNCH: RefCell<Option<Launch>> = const { RefCell::new(None) };
    /// The thread (linear index in its block) whose code is running, if any.
    static THREAD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `f` on the launch and the current thread: only possible from a kernel's code.
pub(crate) fn with_thread<R>(what: &str, f: impl FnOnce(&mut Launch, usize) -> R) -> R {
    let Some(thread) = THREAD.get() else {
        panic!(
            "{what} was called outside a kernel: only the code of a kernel run by \
             `launch` has a thread (on the host, read a buffer with `to_vec()`)"
        )
    };
    LAUNCH.with_borrow_mut(|l| f(l.as_mut().expect("a thread runs inside a launch"), thread))
}

/// Runs `f` on the launch, from the executor (between polls).
pub(crate) fn with_launch<R>(f: impl FnOnce(&mut Launch) -> R) -> R {
    LAUNCH.with_borrow_mut(|l| f(l.as_mut().expect("inside a launch")))
}

pub(crate) fn set_thread(thread: Option<usize>) {
    THREAD.set(thread);
}

/// Installs a launch on this OS thread; removes it when dropped, on success or panic, so the
/// next launch starts clean.
pub(crate) struct LaunchGuard;

impl LaunchGuard {
    pub(crate) fn install(launch: Launch) -> LaunchGuard {
        let kernel = launch.kernel.clone();
        LAUNCH.with_borrow_mut(|l| {
            if let Some(running) = l {
                panic!(
                    "launch of `{kernel}` from inside kernel `{}`: a kernel cannot launch \
                     another one here (CUDA's dynamic parallelism is not modelled)",
                    running.kernel
                );
            }
            *l = Some(launch);
        });
        LaunchGuard
    }

    /// The statistics, at the end of a launch.
    pub(crate) fn finish(self) -> LaunchStats {
        LAUNCH.with_borrow_mut(|l| l.take().expect("inside a launch").stats)
    }
}

impl Drop for LaunchGuard {
    fn drop(&mut self) {
        THREAD.set(None);
        // `try_`: never panic while unwinding from a kernel's panic.
        let _ = LAUNCH.try_with(|l| l.try_borrow_mut().map(|mut l| l.take()));
    }
}
