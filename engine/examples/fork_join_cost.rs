//! What one parallel region costs on this machine: the time rayon takes to hand tiny tasks to
//! the pool and wait for them (a fork/join), against the decode step's time it is part of.
//! A batch-1 decode step of SmolLM2 opens about 150 such regions that split work (4 GEMMs and
//! attention per layer × 30 layers, the LM head), each over a few tasks.
//!
//! The main thread is one of the pool's workers, as in `lab generate` and `lab bench`
//! ([`engine::backend::cpu_thread_pool`]); with the argument `outside` it is not (rayon's
//! default, and the engine before that change): every region is then a hand-off to the pool.
//! With `hot` the pool's other workers are kept looking for work throughout, as the CPU
//! backend keeps them during a step ([`engine::backend::cpu_thread_pool::HotWorkers`]).
//!
//! `cargo run --release -p engine --example fork_join_cost [-- outside | hot]`
//! (`RAYON_NUM_THREADS` sets the pool)
use rayon::prelude::*;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let outside = std::env::args().nth(1).as_deref() == Some("outside");
    let hot = std::env::args().nth(1).as_deref() == Some("hot");
    let pool = engine::backend::cpu_thread_pool::build_global(None, !outside)?;
    println!(
        "{} threads, the main thread {}",
        pool.threads,
        if pool.stepping_thread_is_worker {
            "one of them"
        } else {
            "outside the pool"
        }
    );
    let _hot = hot
        .then(engine::backend::cpu_thread_pool::HotWorkers::start)
        .flatten();
    println!("other workers kept hot: {}", _hot.is_some());
    let mut sink = vec![0u64; 64];
    for tasks in [2usize, 9, 18] {
        for spin_us in [0u64, 20, 100] {
            let reps = 20_000;
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let start = Instant::now();
                for i in 0..reps {
                    // The serial work between two regions (a small op on one thread).
                    let t = Instant::now();
                    while t.elapsed().as_micros() < spin_us as u128 {
                        std::hint::spin_loop();
                    }
                    sink[..tasks]
                        .par_iter_mut()
                        .for_each(|v| *v = v.wrapping_add(i));
                }
                let per = start.elapsed().as_secs_f64() / reps as f64 - spin_us as f64 * 1e-6;
                best = best.min(per);
            }
            println!(
                "{tasks:>3} tasks, {spin_us:>2} µs of serial work between regions: {:.2} µs per region",
                best * 1e6
            );
        }
    }
    std::hint::black_box(&sink);
    Ok(())
}
