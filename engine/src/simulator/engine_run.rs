//! The same workload on the real engine, timed: what the simulator is measured against.
//!
//! The engine is built with a schedule function that records each step's batch and shape
//! before returning it ([`recording_parts`]), so a run yields, per step, the batch the
//! scheduler chose, its [`StepShape`] and its wall time, and, per request, its arrival, first
//! and last token times on the wall clock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::metrics::{RequestTimes, RunReport};
use super::simulate::{request_params, BatchTrace};
use super::step_cost::StepShape;
use super::workload::SimRequest;
use crate::core::scheduler::Scheduler;
use crate::core::scheduler_output::SchedulerOutput;
use crate::core::scheduling_policy::SchedulingPolicy;
use crate::engine_parts::EngineParts;
use crate::error::Result;
use crate::llm_engine::{LLMEngine, Prompt};
use crate::sequence::SeqId;

/// One step of a real run: what was scheduled and how long the whole step took.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedStep {
    pub shape: StepShape,
    /// (sequence, first position, tokens) per batch entry, in batch order.
    pub batch: Vec<(SeqId, usize, usize)>,
    /// Sequences that sampled a token in this step.
    pub sampled: Vec<SeqId>,
    /// Wall seconds of `LLMEngine::step` (schedule, forward, sample, update).
    pub seconds: f64,
}

thread_local! {
    /// Steps scheduled on this thread since the last [`take_recorded`] (the engine schedules
    /// on the caller's thread).
    static RECORDED: RefCell<Vec<RecordedStep>> = const { RefCell::new(Vec::new()) };
}

/// `Scheduler::schedule`, recording the batch and its shape for [`take_recorded`].
pub fn recording_schedule(scheduler: &mut Scheduler) -> SchedulerOutput {
    let out = scheduler.schedule();
    if !out.is_empty() {
        let step = RecordedStep {
            shape: StepShape::of(&out, scheduler),
            batch: (out.scheduled.iter())
                .map(|s| (s.seq_id, s.start_position, s.token_ids.len()))
                .collect(),
            sampled: (out.scheduled.iter())
                .filter(|s| s.needs_logits)
                .map(|s| s.seq_id)
                .collect(),
            seconds: 0.0,
        };
        RECORDED.with(|r| r.borrow_mut().push(step));
    }
    out
}

/// The steps recorded since the last call.
pub fn take_recorded() -> Vec<RecordedStep> {
    RECORDED.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// The engine's own parts with `policy`, scheduling through [`recording_schedule`].
pub fn recording_parts(policy: Box<dyn SchedulingPolicy>) -> EngineParts {
    EngineParts {
        policy,
        schedule: recording_schedule,
        ..EngineParts::default()
    }
}

/// A timed run of the engine.
#[derive(Debug, Clone, Default)]
pub struct EngineRun {
    /// Measured on the wall clock, like a simulation's report.
    pub report: RunReport,
    pub steps: Vec<RecordedStep>,
}

impl EngineRun {
    pub fn batches(&self) -> BatchTrace {
        self.steps.iter().map(|s| s.batch.clone()).collect()
    }
}

// ANCHOR: run_engine
/// Runs `requests` on `engine` (built with [`recording_parts`]), adding each when the wall
/// clock passes its arrival, and times every step.
pub fn run_engine(engine: &mut LLMEngine, requests: &[SimRequest]) -> Result<EngineRun> {
    let _span = tracing::info_span!("simulator_engine_run", requests = requests.len()).entered();
    take_recorded(); // forget steps scheduled before this run
    let mut times: Vec<RequestTimes> = requests
        .iter()
        .map(|r| RequestTimes {
            arrival_s: r.arrival_s,
            ..Default::default()
        })
        .collect();
    let mut index: HashMap<SeqId, usize> = HashMap::new();
    let mut run = EngineRun::default();
    let start = Instant::now();
    let mut next = 0;
    loop {
        let now = start.elapsed().as_secs_f64();
        while next < requests.len() && requests[next].arrival_s <= now {
            let r = &requests[next];
            let id = engine.add_request(Prompt::TokenIds(r.prompt.clone()), request_params(r))?;
            index.insert(id, next);
            next += 1;
        }
        if !engine.has_unfinished_requests() {
            if next == requests.len() {
                break;
            }
            let wait = requests[next].arrival_s - start.elapsed().as_secs_f64();
            std::thread::sleep(Duration::from_secs_f64(wait.max(0.0)));
            continue;
        }
        let t0 = Instant::now();
        let finished = engine.step()?;
        let seconds = t0.elapsed().as_secs_f64();
        let end = start.elapsed().as_secs_f64();
        for mut step in take_recorded() {
            step.seconds = seconds;
            for id in &step.sampled {
                if let Some(&i) = index.get(id) {
                    times[i].first_token_s.get_or_insert(end);
                }
            }
            run.report.busy_slots_per_step.push(step.shape.num_seqs);
            run.steps.push(step);
        }
        for out in finished {
            if let Some(&i) = index.get(&out.request_id) {
                times[i].finish_s = Some(end);
            }
        }
    }
    run.report.scheme = "engine".into();
    run.report.requests = requests.len();
    run.report.prompt_tokens = requests.iter().map(|r| r.prompt.len()).sum();
    run.report.output_tokens = requests.iter().map(|r| r.output_len).sum();
    run.report.request_times = times;
    run.report.summarize(engine.config.scheduler.max_num_seqs);
    Ok(run)
}
// ANCHOR_END: run_engine
