//! The engine loop of a server (vLLM's `AsyncLLM` and its engine core's busy loop): the
//! [`LLMEngine`] runs on a thread of its own, and requests come and go while it steps.
//!
//! The HTTP handlers never touch the engine. They send [`Command`]s over a channel; the loop
//! takes every command that arrived before each step, so a new request joins the running batch
//! at the very next step (continuous batching), and an aborted one leaves it, its blocks freed,
//! before that step is scheduled. After each step the loop sends every request the token ids it
//! gained ([`EngineOutput`]); detokenizing them is the handler's work, on the async runtime's
//! threads, as in vLLM v1 where the engine core moves only token ids.
//!
//! When the engine is idle the loop blocks on the channel: an idle server uses no CPU.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use crate::error::{EngineError, Result};
use crate::llm_engine::{LLMEngine, Prompt};
use crate::sampling_params::SamplingParams;
use crate::sequence::{FinishReason, SeqId};
use crate::tokenizer::Tokenizer;

/// What a handler asks of the engine loop.
pub enum Command {
    /// Queue one HTTP request's prompts (several for `n > 1` or a list of prompts): all are
    /// added, or none. `reply` gets their ids (in order) or the reason they were refused;
    /// `outputs` then gets their tokens, tagged with each one's position in `requests`.
    Add {
        /// The HTTP request's id, for the log.
        request_id: String,
        requests: Vec<(Vec<u32>, SamplingParams)>,
        outputs: mpsc::UnboundedSender<EngineOutput>,
        reply: oneshot::Sender<Result<Vec<SeqId>>>,
    },
    /// Drop these requests wherever they are; unknown or finished ids are ignored.
    Abort(Vec<SeqId>, AbortReason),
}

/// Why the server drops a request before the engine finished it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// Its client went away: counted as aborted.
    ClientGone,
    /// A stop string ended it in the server (the engine sees tokens, not text): counted as a
    /// request that finished on a stop, as vLLM counts it.
    StopString,
}

/// What the loop sends a request after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineOutput {
    /// Tokens sampled for the `index`-th prompt of an [`Command::Add`] since the last output,
    /// and why it finished, if it did.
    Tokens {
        index: usize,
        new_token_ids: Vec<u32>,
        finish_reason: Option<FinishReason>,
    },
    /// The engine failed; no more tokens will come.
    Failed(String),
}

/// What the server needs to know of the loaded model.
pub struct ModelInfo {
    /// A copy of the engine's tokenizer (with its chat template), for the handlers.
    pub tokenizer: Tokenizer,
    /// Longest prompt + output one request may reach (the model's positions and the KV cache).
    pub max_model_len: usize,
    pub num_kv_blocks: usize,
    pub block_size: usize,
}

/// Where the engine is in its life.
#[derive(Clone)]
pub enum EngineStatus {
    /// The model is loading: requests get 503.
    Loading,
    Ready(Arc<ModelInfo>),
    /// Loading or a step failed: requests get 500.
    Failed(String),
}

/// State the loop shares with the handlers.
pub struct Shared {
    pub status: Mutex<EngineStatus>,
    pub metrics: Mutex<Metrics>,
}

impl Shared {
    pub fn status(&self) -> EngineStatus {
        lock(&self.status).clone()
    }
}

/// A mutex that a panicked holder poisoned still holds valid counters: take them.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The handlers' side of the engine loop.
#[derive(Clone)]
pub struct EngineHandle {
    commands: std::sync::mpsc::Sender<Command>,
    pub shared: Arc<Shared>,
}

/// Options of the loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopOptions {
    /// Print a line on stderr for every step in which a request joins or leaves the batch.
    pub log_steps: bool,
}

impl EngineHandle {
    /// Starts the engine thread: it runs `load` (building the engine there, so the server can
    /// answer 503 while the weights load), reports the outcome on the returned receiver, then
    /// serves commands until every handle is dropped.
    pub fn spawn(
        load: impl FnOnce() -> Result<LLMEngine> + Send + 'static,
        options: LoopOptions,
    ) -> std::io::Result<(Self, oneshot::Receiver<Result<(), String>>)> {
        let (commands, rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            status: Mutex::new(EngineStatus::Loading),
            metrics: Mutex::new(Metrics::default()),
        });
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let loop_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("engine-loop".into())
            .spawn(move || {
                let engine = match load().and_then(|e| model_info(&e).map(|info| (e, info))) {
                    Ok((engine, info)) => {
                        *lock(&loop_shared.status) = EngineStatus::Ready(Arc::new(info));
                        let _ = loaded_tx.send(Ok(()));
                        engine
                    }
                    Err(e) => {
                        *lock(&loop_shared.status) = EngineStatus::Failed(e.to_string());
                        let _ = loaded_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                EngineLoop::new(engine, loop_shared, options).run(rx);
            })?;
        Ok((EngineHandle { commands, shared }, loaded_rx))
    }

    /// Queues prompts (as token ids) and returns their ids and the receiver of their outputs.
    pub async fn add(
        &self,
        request_id: &str,
        requests: Vec<(Vec<u32>, SamplingParams)>,
    ) -> Result<(Vec<SeqId>, mpsc::UnboundedReceiver<EngineOutput>)> {
        let (outputs, rx) = mpsc::unbounded_channel();
        let (reply, reply_rx) = oneshot::channel();
        let stopped = || EngineError::Internal("the engine loop has stopped".into());
        self.commands
            .send(Command::Add {
                request_id: request_id.to_string(),
                requests,
                outputs,
                reply,
            })
            .map_err(|_| stopped())?;
        let ids = reply_rx.await.map_err(|_| stopped())??;
        Ok((ids, rx))
    }

    /// Drops requests (ignored if they already finished).
    pub fn abort(&self, ids: Vec<SeqId>, reason: AbortReason) {
        if !ids.is_empty() {
            // If the loop has stopped there is nothing left to free.
            let _ = self.commands.send(Command::Abort(ids, reason));
        }
    }
}

fn model_info(engine: &LLMEngine) -> Result<ModelInfo> {
    let mut tokenizer = Tokenizer::from_json_bytes(engine.tokenizer.to_json()?.as_bytes())?;
    tokenizer.chat_template = engine.tokenizer.chat_template.clone();
    Ok(ModelInfo {
        tokenizer,
        max_model_len: engine.max_model_len,
        num_kv_blocks: engine.num_kv_blocks,
        block_size: engine.config.cache.block_size,
    })
}

/// A request the loop is serving.
struct Live {
    /// Which prompt of its [`Command::Add`] it is.
    index: usize,
    outputs: mpsc::UnboundedSender<EngineOutput>,
    /// Output tokens sent so far.
    sent: usize,
    arrival: Instant,
    last_token: Option<Instant>,
}

struct EngineLoop {
    engine: LLMEngine,
    shared: Arc<Shared>,
    options: LoopOptions,
    live: HashMap<SeqId, Live>,
    /// Requests that left between two steps (aborted), for the step log.
    left: Vec<String>,
    /// Requests whose receiver was gone when the last step's tokens were sent.
    gone: Vec<SeqId>,
    /// Requests the engine finished on their length while their handler still listens: a stop
    /// string the handler finds in the last tokens makes it a stop after all (its abort then
    /// comes after the finish). Kept until the handler has let go of its receiver.
    finished_by_length: HashMap<SeqId, Listener>,
}

/// A finished request's handler, as [`EngineLoop::finished_by_length`] sees it.
struct Listener {
    outputs: mpsc::UnboundedSender<EngineOutput>,
    /// Its receiver was found dropped in the last pass: any abort it sent before has been
    /// handled by the next, so the entry can go then.
    closed: bool,
}

impl EngineLoop {
    fn new(engine: LLMEngine, shared: Arc<Shared>, options: LoopOptions) -> Self {
        let this = EngineLoop {
            engine,
            shared,
            options,
            live: HashMap::new(),
            left: Vec::new(),
            gone: Vec::new(),
            finished_by_length: HashMap::new(),
        };
        this.update_gauges();
        this
    }

    // ANCHOR: engine_loop
    fn run(mut self, commands: std::sync::mpsc::Receiver<Command>) {
        loop {
            if !self.engine.has_unfinished_requests() {
                // Idle: sleep until a command comes; every handle gone means the server ended.
                match commands.recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => return,
                }
            }
            // Everything that arrived during the last step joins (or leaves) before this one.
            while let Ok(command) = commands.try_recv() {
                self.handle(command);
            }
            self.forget_finished();
            self.abort_gone();
            if !self.engine.has_unfinished_requests() {
                self.update_gauges();
                continue;
            }
            if let Err(e) = self.step() {
                self.fail(e);
                return;
            }
        }
    }
    // ANCHOR_END: engine_loop

    fn handle(&mut self, command: Command) {
        match command {
            Command::Add {
                request_id,
                requests,
                outputs,
                reply,
            } => {
                let _span = tracing::info_span!("add_request", %request_id).entered();
                let _ = reply.send(self.add(requests, outputs));
            }
            Command::Abort(ids, reason) => {
                for id in ids {
                    let Some(live) = self.live.remove(&id) else {
                        // Finished on its length before the handler's stop string came.
                        if reason == AbortReason::StopString
                            && self.finished_by_length.remove(&id).is_some()
                        {
                            let mut m = lock(&self.shared.metrics);
                            m.requests_length -= 1;
                            m.requests_stop += 1;
                        }
                        continue;
                    };
                    let _span = tracing::info_span!("abort_request", seq = id.0, ?reason).entered();
                    self.engine.abort_request(id);
                    let mut m = lock(&self.shared.metrics);
                    match reason {
                        AbortReason::ClientGone => {
                            m.requests_aborted += 1;
                            self.left.push(format!("{} (abort)", id.0));
                        }
                        AbortReason::StopString => {
                            m.requests_stop += 1;
                            m.e2e_request_latency
                                .observe(live.arrival.elapsed().as_secs_f64());
                            self.left.push(format!("{} (stop string)", id.0));
                        }
                    }
                }
                self.update_gauges();
            }
        }
    }

    /// Adds every prompt or none (as `LLM::generate_requests`).
    fn add(
        &mut self,
        requests: Vec<(Vec<u32>, SamplingParams)>,
        outputs: mpsc::UnboundedSender<EngineOutput>,
    ) -> Result<Vec<SeqId>> {
        let mut ids = Vec::with_capacity(requests.len());
        let mut prompt_tokens = 0;
        for (ids_in, params) in requests {
            prompt_tokens += ids_in.len() as u64;
            match self.engine.add_request(Prompt::TokenIds(ids_in), params) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    for &id in &ids {
                        self.engine.abort_request(id);
                    }
                    return Err(e);
                }
            }
        }
        let now = Instant::now();
        for (index, &id) in ids.iter().enumerate() {
            self.live.insert(
                id,
                Live {
                    index,
                    outputs: outputs.clone(),
                    sent: 0,
                    arrival: now,
                    last_token: None,
                },
            );
        }
        lock(&self.shared.metrics).prompt_tokens += prompt_tokens;
        Ok(ids)
    }

    /// One engine step, then each request's new tokens out.
    fn step(&mut self) -> Result<()> {
        let step = self.engine.stats.num_steps + 1;
        let _span = tracing::debug_span!("serve_step", step).entered();
        let before: HashSet<SeqId> = self.engine.scheduler.running.iter().copied().collect();
        let finished = self.engine.step()?;
        let now = Instant::now();
        let mut left = std::mem::take(&mut self.left);
        let mut joined: Vec<SeqId> = self
            .engine
            .scheduler
            .running
            .iter()
            .filter(|id| !before.contains(id))
            .copied()
            .collect();
        for out in &finished {
            if !before.contains(&out.request_id) {
                joined.push(out.request_id);
            }
            let reason = out.finish_reason;
            left.push(format!("{} ({})", out.request_id.0, reason.as_str()));
            if let Some(live) = self.live.remove(&out.request_id) {
                if reason == FinishReason::Length {
                    let listener = Listener {
                        outputs: live.outputs.clone(),
                        closed: false,
                    };
                    self.finished_by_length.insert(out.request_id, listener);
                }
                self.deliver(live, &out.token_ids, Some(reason), now);
            }
        }
        for (&id, live) in self.live.iter_mut() {
            let Some(seq) = self.engine.scheduler.sequence(id) else {
                continue;
            };
            if seq.output_token_ids.len() > live.sent
                && !send_tokens(live, &seq.output_token_ids, None, now, &self.shared)
            {
                self.gone.push(id);
            }
        }
        self.update_gauges();
        if self.options.log_steps && (!joined.is_empty() || !left.is_empty()) {
            self.log_step(&joined, &left);
        }
        Ok(())
    }

    /// Aborts the requests nobody listens to any more. They wait until the commands that came
    /// during the step are handled: a handler that found a stop string sends its abort (with
    /// that reason) before it lets go of the receiver.
    fn abort_gone(&mut self) {
        for id in std::mem::take(&mut self.gone) {
            if self.live.remove(&id).is_some() {
                let _span =
                    tracing::info_span!("abort_request", seq = id.0, reason = "gone").entered();
                self.engine.abort_request(id);
                lock(&self.shared.metrics).requests_aborted += 1;
                self.left.push(format!("{} (gone)", id.0));
            }
        }
    }

    /// Drops the requests of [`EngineLoop::finished_by_length`] whose handler had let go
    /// already in the last pass, and marks those that have now.
    fn forget_finished(&mut self) {
        self.finished_by_length.retain(|_, l| {
            let keep = !l.closed;
            l.closed = l.outputs.is_closed();
            keep
        });
    }

    /// Sends a finished request its last tokens and counts it (before the tokens go, so that
    /// a handler that sees them finds the count made).
    fn deliver(&self, mut live: Live, tokens: &[u32], reason: Option<FinishReason>, now: Instant) {
        {
            let mut m = lock(&self.shared.metrics);
            match reason {
                Some(FinishReason::Stop) => m.requests_stop += 1,
                Some(FinishReason::Length) => m.requests_length += 1,
                None => {}
            }
            m.e2e_request_latency
                .observe(now.duration_since(live.arrival).as_secs_f64());
        }
        send_tokens(&mut live, tokens, reason, now, &self.shared);
    }

    fn update_gauges(&self) {
        let e = &self.engine;
        let bm = &e.scheduler.block_manager;
        let mut m = lock(&self.shared.metrics);
        m.num_requests_running = e.scheduler.num_running();
        m.num_requests_waiting = e.scheduler.num_waiting();
        m.num_requests_swapped = e.scheduler.num_swapped();
        m.kv_blocks_total = bm.num_total_blocks();
        m.kv_blocks_used = bm.num_total_blocks().saturating_sub(bm.num_free_blocks());
        m.prefix_cache_queries = e.stats.prefix_cache.queried_tokens;
        m.prefix_cache_hits = e.stats.prefix_cache.hit_tokens;
        m.num_steps = e.stats.num_steps;
    }

    /// One line: who joined and left the batch in this step, the queues and the cache after
    /// it, and the step's tokens.
    fn log_step(&self, joined: &[SeqId], left: &[String]) {
        let Some(s) = self.engine.last_step_stats() else {
            return;
        };
        let sched = &self.engine.scheduler;
        let bm = &sched.block_manager;
        let joined: Vec<String> = joined.iter().map(|id| id.0.to_string()).collect();
        eprintln!(
            "step {:>5}: joined [{}] left [{}] | {} prefill + {} decode tokens | now running {} \
             waiting {} swapped {} | KV {}/{} blocks used",
            s.step,
            joined.join(" "),
            left.join(" "),
            s.num_prefill_tokens,
            s.num_decode_tokens,
            sched.num_running(),
            sched.num_waiting(),
            sched.num_swapped(),
            bm.num_total_blocks().saturating_sub(bm.num_free_blocks()),
            bm.num_total_blocks(),
        );
    }

    /// A step failed: every request gets the error, and the server reports it from now on.
    fn fail(&mut self, e: EngineError) {
        tracing::error!(error = %e, "engine step failed");
        eprintln!("error: engine step failed: {e}");
        for (_, live) in self.live.drain() {
            let _ = live.outputs.send(EngineOutput::Failed(e.to_string()));
        }
        *lock(&self.shared.status) = EngineStatus::Failed(e.to_string());
    }
}

/// Sends `tokens[live.sent..]` and records their latencies; false if the client is gone.
fn send_tokens(
    live: &mut Live,
    tokens: &[u32],
    reason: Option<FinishReason>,
    now: Instant,
    shared: &Shared,
) -> bool {
    let new = tokens.get(live.sent..).unwrap_or_default().to_vec();
    if !new.is_empty() {
        let mut m = lock(&shared.metrics);
        m.generation_tokens += new.len() as u64;
        match live.last_token {
            None => m
                .time_to_first_token
                .observe(now.duration_since(live.arrival).as_secs_f64()),
            Some(last) => {
                // One token per step is the rule; were there several, they share the wait.
                let each = now.duration_since(last).as_secs_f64() / new.len() as f64;
                for _ in 0..new.len() {
                    m.inter_token_latency.observe(each);
                }
            }
        }
        live.last_token = Some(now);
    }
    live.sent = tokens.len();
    live.outputs
        .send(EngineOutput::Tokens {
            index: live.index,
            new_token_ids: new,
            finish_reason: reason,
        })
        .is_ok()
}
