//! The CPU kernels' pool built on the stepping thread ([`engine::backend::cpu_thread_pool`]).
//! The pool is global to the process, so this file is its own test binary with one test:
//! it builds the pool, then checks every later call against it.

use std::sync::atomic::{AtomicBool, Ordering};

use engine::backend::cpu_thread_pool::{build_global, CpuThreadPool};

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
    // The kernel log's thread-local subscriber sees the stepping thread's spans when it is
    // worker 0 as when it is outside the pool: the same ops and the same tokens.
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
