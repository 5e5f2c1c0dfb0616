//! Fitting [`LinearCost`] to the engine's own step times.
//!
//! The engine runs a few small batches of different shapes (batch sizes × prompt lengths, a
//! few decode steps each), every step is timed, and the four coefficients are chosen by
//! least squares on *relative* error: decode steps are short and by far the most common, so
//! an absolute fit that nails the long prefill steps and misses decodes by 30% would misstate
//! every simulation. A coefficient that comes out negative (no physical meaning: work that
//! takes negative time) is fixed at zero and the rest refitted.

use super::engine_run::{run_engine, RecordedStep};
use super::rng::SplitMix64;
use super::step_cost::{LinearCost, StepCost, StepShape};
use super::workload::SimRequest;
use crate::error::{EngineError, Result};
use crate::llm_engine::LLMEngine;

/// One calibration run: `batch` requests of `prompt_len` prompt tokens, `output_len` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationRun {
    pub batch: usize,
    pub prompt_len: usize,
    pub output_len: usize,
}

/// The shapes `lab simulate --calibrate` measures: batch 1, 4 and 12 over prompts of 16, 96
/// and 256 tokens, 8 tokens out (prefills of 16 to 3,072 tokens, decodes of 1 to 12 rows at
/// contexts of 16 to 264).
pub fn default_plan() -> Vec<CalibrationRun> {
    let mut plan = Vec::new();
    for &batch in &[1, 4, 12] {
        for &prompt_len in &[16, 96, 256] {
            plan.push(CalibrationRun {
                batch,
                prompt_len,
                output_len: 8,
            });
        }
    }
    plan
}

/// Runs `plan` on `engine` (built with [`super::engine_run::recording_parts`]); returns each
/// step's shape and measured seconds. One warm-up run of the first shape is discarded.
pub fn measure(engine: &mut LLMEngine, plan: &[CalibrationRun]) -> Result<Vec<RecordedStep>> {
    let _span = tracing::info_span!("calibrate", runs = plan.len()).entered();
    let vocab = engine.model_config().vocab_size;
    let mut rng = SplitMix64::new(0xCA11B);
    let mut steps = Vec::new();
    for (i, run) in plan.first().into_iter().chain(plan).enumerate() {
        // Fresh random prompts every run, so no run hits another's prefix cache.
        let requests: Vec<SimRequest> = (0..run.batch)
            .map(|_| SimRequest {
                arrival_s: 0.0,
                prompt: (0..run.prompt_len)
                    .map(|_| rng.range(0, vocab - 1) as u32)
                    .collect(),
                output_len: run.output_len,
                tenant: String::new(),
            })
            .collect();
        let measured = run_engine(engine, &requests)?;
        if i > 0 {
            steps.extend(measured.steps);
        }
    }
    Ok(steps)
}

// ANCHOR: fit
/// Least squares on relative error, coefficients kept non-negative.
pub fn fit(samples: &[(StepShape, f64)]) -> Result<LinearCost> {
    let usable: Vec<&(StepShape, f64)> = samples.iter().filter(|(_, t)| *t > 0.0).collect();
    let mut active = [true; 4];
    loop {
        let cols: Vec<usize> = (0..4).filter(|&j| active[j]).collect();
        if usable.len() < cols.len() {
            return Err(EngineError::InvalidArgument(format!(
                "calibration needs at least {} timed steps, got {}",
                cols.len(),
                usable.len()
            )));
        }
        // Each row divided by its measured time: minimizes Σ ((predicted − t) / t)².
        // Columns are scaled to unit maximum so the normal equations are well conditioned.
        let rows: Vec<Vec<f64>> = (usable.iter())
            .map(|(s, t)| {
                let x = LinearCost::features(s);
                cols.iter().map(|&j| x[j] / t).collect()
            })
            .collect();
        let scale: Vec<f64> = (0..cols.len())
            .map(|k| {
                rows.iter()
                    .map(|r| r[k].abs())
                    .fold(0.0, f64::max)
                    .max(1e-300)
            })
            .collect();
        let k = cols.len();
        let mut a = vec![vec![0.0; k + 1]; k];
        for r in &rows {
            for i in 0..k {
                for j in 0..k {
                    a[i][j] += r[i] / scale[i] * r[j] / scale[j];
                }
                a[i][k] += r[i] / scale[i]; // the target is 1 (t / t)
            }
        }
        let solved = solve(a).ok_or_else(|| {
            EngineError::InvalidArgument(
                "calibration steps do not tell the coefficients apart (too few distinct \
                 shapes)"
                    .into(),
            )
        })?;
        let mut c = [0.0; 4];
        for (k, &j) in cols.iter().enumerate() {
            c[j] = solved[k] / scale[k];
        }
        match (0..4)
            .filter(|&j| active[j] && c[j] < 0.0)
            .min_by(|&a, &b| c[a].total_cmp(&c[b]))
        {
            Some(j) => active[j] = false,
            None => return Ok(LinearCost::from_coefficients(c)),
        }
    }
}
// ANCHOR_END: fit

/// Gaussian elimination with partial pivoting on an augmented `k × (k+1)` system.
fn solve(mut a: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let k = a.len();
    for col in 0..k {
        let pivot = (col..k).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (row, r) in a.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pivot_row[col];
                for (x, p) in r[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|i| a[i][k] / a[i][i]).collect())
}

/// Mean absolute relative error of `cost` on measured steps.
pub fn step_error(cost: &dyn StepCost, samples: &[(StepShape, f64)]) -> f64 {
    let errs: Vec<f64> = (samples.iter())
        .filter(|(_, t)| *t > 0.0)
        .map(|(s, t)| (cost.step_seconds(s) - t).abs() / t)
        .collect();
    errs.iter().sum::<f64>() / errs.len().max(1) as f64
}
