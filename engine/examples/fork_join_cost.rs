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
//! With `tasks` (workers kept hot) it compares two ways of sharing out a region of tasks of
//! 1 and 5 µs, alternated: rayon's loop, one task a job, and
//! [`engine::backend::cpu_thread_pool::for_each_task`] (a counter the threads take tasks from),
//! printing the time a region takes beyond its tasks' own (the best of 5 runs of 2,000).
//!
//! `cargo run --release -p engine --example fork_join_cost [-- outside | hot | tasks]`
//! (`RAYON_NUM_THREADS` sets the pool)
use rayon::prelude::*;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let outside = std::env::args().nth(1).as_deref() == Some("outside");
    let hot = std::env::args().nth(1).as_deref() == Some("hot");
    if std::env::args().nth(1).as_deref() == Some("tasks") {
        return regions_of_tasks();
    }
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

/// `tasks`: rayon's loop against `for_each_task`, the pool's other workers kept hot.
fn regions_of_tasks() -> Result<(), Box<dyn std::error::Error>> {
    use engine::backend::cpu_thread_pool::{build_global, for_each_task, HotWorkers};
    let threads = build_global(None, true)?.threads;
    let _hot = HotWorkers::start();
    // Busy work of a known length, by the clock (a counted loop's speed depends on how the
    // compiler lays it out at each call site).
    let spin = |us: f64| {
        let t = Instant::now();
        while t.elapsed().as_secs_f64() * 1e6 < us {
            std::hint::spin_loop();
        }
    };
    println!(
        "{threads} threads, other workers kept hot: {}; µs a region takes beyond its tasks \
         (rounds of `threads` tasks × the task's time)",
        _hot.is_some()
    );
    for tasks in [3usize, 18, 36, 60, 96] {
        for task_us in [1.0f64, 5.0] {
            let own = tasks.div_ceil(threads) as f64 * task_us;
            let mut best = [f64::INFINITY; 2];
            for _ in 0..5 {
                for (way, best) in best.iter_mut().enumerate() {
                    let reps = 2000;
                    let start = Instant::now();
                    for _ in 0..reps {
                        match way {
                            0 => (0..tasks)
                                .into_par_iter()
                                .with_max_len(1)
                                .for_each(|_| spin(task_us)),
                            _ => for_each_task(tasks, || (), |_, _| spin(task_us)),
                        }
                    }
                    let per = start.elapsed().as_secs_f64() / reps as f64 * 1e6 - own;
                    *best = best.min(per);
                }
            }
            println!(
                "{tasks:>3} tasks of {task_us} µs: rayon's loop {:>6.2}, for_each_task {:>6.2}",
                best[0], best[1]
            );
        }
    }
    Ok(())
}
