//! Whether keeping the CPU pool's other workers hot through a step
//! ([`engine::backend::cpu_thread_pool::HotWorkers`], on unless `LAB_CPU_HOT_WORKERS=0`) makes
//! decode faster, measured so that the machine's drift cannot decide it: two engines of the
//! same model in one process, one with the workers kept hot and one without, each decoding
//! its own requests, their steps interleaved (the order swapped every pair) and timed one by
//! one. Prints each engine's median step and the median of the per-pair ratios.
//!
//! `cargo run --release -p engine --example hot_workers_ab [-- MODEL [STEPS [BATCH]]]`
//! (MODEL: `smollm2`, the default, from its GGUF blocks; a model directory; `tiny`. BATCH:
//! requests decoding together in each engine, 1 by default)
use std::time::Instant;

use engine::model_source::{load_model, ModelSpec};
use engine::{config::Device, EngineConfig, LLMEngine, Prompt, SamplingParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = ModelSpec::parse(&std::env::args().nth(1).unwrap_or_else(|| "smollm2".into()));
    let steps: usize = std::env::args().nth(2).map_or(Ok(300), |s| s.parse())?;
    let batch: usize = std::env::args().nth(3).map_or(Ok(1), |s| s.parse())?;
    let pool = engine::backend::cpu_thread_pool::build_global(None, true)?;
    println!(
        "{} threads, the main thread a worker: {}",
        pool.threads, pool.stepping_thread_is_worker
    );
    // The backend reads LAB_CPU_HOT_WORKERS when it is made: one engine each way.
    let mut engines = Vec::new();
    for hot in [false, true] {
        std::env::set_var("LAB_CPU_HOT_WORKERS", if hot { "1" } else { "0" });
        let model = load_model(&spec, false, 0)?;
        let config = EngineConfig {
            device: Device::Cpu,
            ..EngineConfig::default()
        };
        let mut engine = LLMEngine::new(model, config)?;
        let params = SamplingParams {
            temperature: 0.0,
            max_tokens: steps + 8,
            ignore_eos: true,
            ..SamplingParams::default()
        };
        for b in 0..batch {
            let prompt = (0..128u32)
                .map(|i| 100 + (i * 37 + b as u32 * 11) % 1000)
                .collect();
            engine.add_request(Prompt::TokenIds(prompt), params.clone())?;
        }
        engine.step()?; // the prefill, untimed
        engines.push(engine);
    }
    std::env::remove_var("LAB_CPU_HOT_WORKERS");
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for i in 0..steps {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for e in order {
            let t = Instant::now();
            engines[e].step()?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if e == 0 {
                off.push(ms)
            } else {
                on.push(ms)
            }
        }
    }
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let ratios: Vec<f64> = off.iter().zip(&on).map(|(a, b)| b / a).collect();
    let faster = ratios.iter().filter(|&&r| r < 1.0).count();
    println!(
        "{steps} pairs of decode steps at batch {batch}: off {:.3} ms, hot {:.3} ms (medians); hot / off per pair: \
         median {:.3}, hot faster in {faster} of {steps}",
        median(&off),
        median(&on),
        median(&ratios)
    );
    Ok(())
}
