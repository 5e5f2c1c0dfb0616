//! The CPU kernels' pool built on the stepping thread ([`engine::backend::cpu_thread_pool`]).
//! The pool is global to the process, so this file is its own test binary with one test:
//! it builds the pool, then checks every later call against it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::backend::cpu_thread_pool::{build_global, CpuThreadPool, HotWorkers};

#[test]
fn builds_once_on_the_stepping_thread_then_answers_or_refuses() {
    assert!(build_global(Some(0), true).is_err());
    let pool = build_global(Some(2), true).unwrap();
    assert_eq!(
        pool,
        CpuThreadPool {
            threads: 2,
            stepping_thread_is_worker: true
        }
    );
    // This thread is worker 0: a parallel region runs its first half right here.
    assert_eq!(rayon::current_thread_index(), Some(0));
    let here = std::thread::current().id();
    let ran_here = AtomicBool::new(false);
    rayon::join(
        || ran_here.store(std::thread::current().id() == here, Ordering::Relaxed),
        || (),
    );
    assert!(ran_here.load(Ordering::Relaxed));
    // The same call again: the same pool; anything else: a clear error, no panic.
    assert_eq!(build_global(Some(2), true).unwrap(), pool);
    let e = build_global(Some(3), true).unwrap_err().to_string();
    assert!(e.contains("already built (2 threads"), "{e}");
    let other = std::thread::spawn(|| build_global(Some(2), true)).join();
    assert!(other.unwrap().is_err());
    // Work handed to the pool from another thread is run by the other worker, even while
    // this one (worker 0) is not in a parallel region.
    let sum = std::thread::spawn(|| {
        use rayon::prelude::*;
        (0..1000u64).into_par_iter().sum::<u64>()
    })
    .join()
    .unwrap();
    assert_eq!(sum, 499_500);
    // A step keeps the other worker hot: only the stepping thread (worker 0) starts it; work
    // split here and work handed in from another thread still runs, on the other worker too,
    // while it loops; once dropped, the pool works as before.
    assert!(std::thread::spawn(HotWorkers::start)
        .join()
        .unwrap()
        .is_none());
    {
        let _hot = hot_workers_once_free();
        let there = std::sync::Mutex::new(None);
        rayon::join(
            || std::thread::sleep(std::time::Duration::from_millis(20)),
            || *there.lock().unwrap() = rayon::current_thread_index(),
        );
        assert_eq!(
            *there.lock().unwrap(),
            Some(1),
            "the other worker took the second half"
        );
        let handed_in = std::thread::spawn(|| {
            use rayon::prelude::*;
            (0..1000u64).into_par_iter().sum::<u64>()
        });
        assert_eq!(handed_in.join().unwrap(), 499_500);
    }
    use rayon::prelude::*;
    assert_eq!((0..1000u64).into_par_iter().sum::<u64>(), 499_500);
    // A worker busy elsewhere when a step starts: its loop is called off, not begun later
    // inside one of the step's tasks (where it would wait for the step's end, which waits
    // for that task): the step's regions still finish.
    let (busy, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (b, d) = (busy.clone(), done.clone());
    rayon::spawn(move || {
        b.store(true, Ordering::Release);
        std::thread::sleep(std::time::Duration::from_millis(50));
        d.store(true, Ordering::Release);
    });
    while !busy.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let hot = HotWorkers::start();
    assert!(hot.is_none(), "the other worker sleeps in a task: no loop");
    for _ in 0..100 {
        assert_eq!((0..1000u64).into_par_iter().sum::<u64>(), 499_500);
    }
    while !done.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    // Free again: the loop begins.
    drop(hot_workers_once_free());
    // The kernel log's thread-local subscriber sees the stepping thread's spans when it is
    // worker 0 (its steps keeping the other worker hot: this binary's only test sets the
    // variable) as when it is outside the pool (no hot loop there): the same ops and tokens.
    std::env::set_var("LAB_CPU_HOT_WORKERS", "1");
    let on_worker = traced_run();
    let outside = std::thread::spawn(traced_run).join().unwrap();
    assert_eq!(on_worker.0.len(), 3, "the request finished in three steps");
    assert!(
        on_worker.1.iter().any(|op| op == "linear"),
        "{:?}",
        on_worker.1
    );
    assert_eq!(on_worker, outside);
}

/// [`HotWorkers::start`] on this thread (worker 0), asked again until the other worker's loop
/// begins within the wait: a worker woken from sleep on a loaded machine may take longer.
fn hot_workers_once_free() -> HotWorkers {
    (0..1000)
        .find_map(|_| HotWorkers::start())
        .expect("the other worker's loop begins within 1000 tries")
}

/// The tiny model's prefill and two decodes of one prompt: its tokens and the kernel log.
fn traced_run() -> (Vec<u32>, Vec<String>) {
    use engine::model_source::{load_model, ModelSpec};
    use engine::{config::Device, EngineConfig, Prompt, SamplingParams};
    let config = EngineConfig {
        device: Device::Cpu,
        ..EngineConfig::default()
    };
    let model = load_model(&ModelSpec::Tiny, false, 0).unwrap();
    let mut engine = engine::LLMEngine::new(model, config).unwrap();
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: 3,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let prompt = Prompt::TokenIds((0..40).map(|i| 3 + i * 7 % 200).collect());
    engine.add_request(prompt, params).unwrap();
    let (mut tokens, mut ops) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (out, step_ops) = engine::kernel_log::record(|| engine.step());
        for o in out.unwrap() {
            tokens.extend(o.token_ids);
        }
        ops.extend(step_ops);
    }
    (tokens, ops)
}
