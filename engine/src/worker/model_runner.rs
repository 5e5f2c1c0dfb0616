//! Turns the scheduler's decision into the model's inputs, runs the model, samples, and
//! returns the sampled token ids (vLLM's `GPUModelRunner`, on any backend).
//!
//! The batch is flat: every scheduled sequence's new tokens one after another, with no
//! padding. A decode contributes one row, a prefill chunk many; `AttentionMetadata` tells
//! attention where each sequence's rows start and how long its context is.
//!
//! The runner samples where the logits are, so that only token ids go back to the engine
//! ([`ModelRunnerOutput`]). For that it keeps, per request, what sampling needs (vLLM v1's
//! `CachedRequestState`): the parameters and the seed, given once when the request arrives.
//! The random number for a token is a pure function of (seed, position)
//! ([`crate::philox::uniform`]), so the runner keeps no generator state, and a preempted and
//! recomputed request draws exactly what it would have drawn.

use std::collections::{HashMap, VecDeque};

use crate::attention::attention_metadata::AttentionMetadata;
use crate::backend::{Backend, BackendError, Result};
use crate::core::block::slot_for_position;
use crate::core::scheduler_output::SchedulerOutput;
use crate::distributed::pipeline_stage::StageLink;
use crate::min_tokens;
use crate::model_executor::llama::{Hidden, LlamaForCausalLM, StageOutput};
use crate::outputs::ModelRunnerOutput;
use crate::sampler::{self, SampleFn, SampleRow};
use crate::sampling_params::SamplingParams;
use crate::sequence::{SeqId, PLACEHOLDER_TOKEN_ID};
use crate::worker::cache_engine::KvCache;

// ANCHOR: model_input
/// The flat inputs of one step, on the host. [`Backend::prepare_step`] moves them to the
/// backend once per step; the layers read only the backend's copy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInput {
    pub input_ids: Vec<u32>,   // [num_tokens]
    pub positions: Vec<usize>, // [num_tokens]
    pub attn_metadata: AttentionMetadata,
    /// Row of each sequence's last token, for the sequences that sample this step.
    pub logits_indices: Vec<usize>,
    /// How each of those rows is sampled, in the same order. Filled by the model runner from
    /// the requests' parameters after [`prepare_inputs`] (which leaves it empty).
    pub sample_rows: Vec<SampleRow>,
    /// Async scheduling: `(row of input_ids, row of the previous step's sampled ids)` for each
    /// input token that the previous step sampled and the host has not seen yet (its id in
    /// `input_ids` is a placeholder). The backend copies them in on the device. Filled by the
    /// model runner; empty otherwise.
    pub from_previous_step: Vec<(usize, usize)>,
}
// ANCHOR_END: model_input

/// A function that lays out a step's batch, like [`prepare_inputs`] (stage 3 swaps in the
/// learner's).
pub type PrepareInputsFn = fn(out: &SchedulerOutput, block_size: usize) -> ModelInput;

// ANCHOR: prepare_inputs
/// Lays out a scheduled batch: token ids, positions, slot mapping, block tables.
pub fn prepare_inputs(out: &SchedulerOutput, block_size: usize) -> ModelInput {
    let mut input = ModelInput::default();
    let meta = &mut input.attn_metadata;
    meta.block_size = block_size;
    meta.max_blocks_per_seq = out
        .scheduled
        .iter()
        .map(|s| s.block_table.len())
        .max()
        .unwrap_or(0);
    meta.query_start_loc.push(0);
    for s in &out.scheduled {
        for (j, &token) in s.token_ids.iter().enumerate() {
            let pos = s.start_position + j;
            input.input_ids.push(token);
            input.positions.push(pos);
            meta.slot_mapping
                .push(slot_for_position(&s.block_table, block_size, pos).0);
        }
        meta.query_start_loc.push(input.input_ids.len());
        meta.seq_lens.push(s.start_position + s.token_ids.len());
        let mut row: Vec<u32> = s.block_table.iter().map(|b| b.0).collect();
        row.resize(meta.max_blocks_per_seq, 0);
        meta.block_tables.extend(row);
        if s.needs_logits {
            input.logits_indices.push(input.input_ids.len() - 1);
        }
    }
    input
}
// ANCHOR_END: prepare_inputs

/// What the runner keeps about a request between its arrival and its end.
#[derive(Debug, Clone)]
struct CachedRequestState {
    /// As the engine hands them over: `stop_token_ids` holds every id that would end the
    /// request (the model's EOS too, unless it ignores EOS), which `min_tokens` bans.
    params: SamplingParams,
    /// The request's seed, or the one drawn for it at arrival if it gave none.
    seed: u64,
    /// The position of the request's first sampled token: its prompt length. A request first
    /// samples when its prompt is computed to the end (only the last chunk of a chunked or
    /// prefix-cached prefill samples), and that token is output 0; so output `i` sits at
    /// `prompt_len + i`, also when a preempted request is recomputed. Only `min_tokens` needs it.
    prompt_len: Option<usize>,
}

/// Owns the model and its KV cache on one backend, and samples.
pub struct ModelRunner<B: Backend> {
    pub model: LlamaForCausalLM<B>,
    pub kv_cache: KvCache<B>,
    /// Lays out each step's batch; [`prepare_inputs`] unless replaced.
    pub prepare_inputs: PrepareInputsFn,
    /// Picks each token; [`sampler::sample`] unless replaced.
    pub sample: SampleFn,
    requests: HashMap<SeqId, CachedRequestState>,
    /// Async scheduling: the steps submitted and not yet completed, oldest first; `Some` when
    /// the backend ran the step at once, `None` when its output is the backend's to wait for.
    in_flight: VecDeque<Option<ModelRunnerOutput>>,
    /// Async scheduling: each sequence's row among the last submitted step's sampled ids.
    last_sampled_rows: HashMap<SeqId, usize>,
}

impl<B: Backend> ModelRunner<B> {
    /// Allocates the KV cache; fails if the backend cannot hold it.
    pub fn new(model: LlamaForCausalLM<B>, num_blocks: usize, block_size: usize) -> Result<Self> {
        let kv_cache = KvCache::new(&model.backend, &model.config, num_blocks, block_size)?;
        Ok(ModelRunner {
            model,
            kv_cache,
            prepare_inputs,
            sample: sampler::sample,
            requests: HashMap::new(),
            in_flight: VecDeque::new(),
            last_sampled_rows: HashMap::new(),
        })
    }

    /// Remembers a new request's sampling parameters and seed until [`Self::remove_requests`].
    pub fn add_request(&mut self, id: SeqId, params: &SamplingParams, seed: u64) {
        let params = params.clone();
        self.requests.insert(
            id,
            CachedRequestState {
                params,
                seed,
                prompt_len: None,
            },
        );
    }

    /// Forgets finished or aborted requests.
    pub fn remove_requests(&mut self, ids: &[SeqId]) {
        for id in ids {
            self.requests.remove(id);
        }
    }

    /// Makes a step's swap copies between the KV cache and the host swap space, before the
    /// step's forward pass.
    pub fn swap_blocks(&mut self, ops: &crate::core::swap_space::SwapOps) -> Result<()> {
        self.kv_cache.swap(&self.model.backend, ops)
    }

    // ANCHOR: execute_model
    /// Runs one step: the forward pass, then one sampled token per sequence with
    /// `needs_logits`, in batch order.
    pub fn execute_model(&mut self, out: &SchedulerOutput) -> Result<ModelRunnerOutput> {
        let Some(input) = self.model_input(out) else {
            return Ok(ModelRunnerOutput::default());
        };
        // The step's layout moves to the backend once; every layer reads that copy.
        let step = self.model.backend.prepare_step(input)?;
        let (model, kv_cache) = (&self.model, &mut self.kv_cache);
        // The backend runs the forward pass and samples where the logits are: on the CPU with
        // `self.sample`; on a GPU in a kernel with the same draw (or by replaying a recorded
        // CUDA graph of the whole step), copying back only the token ids.
        model
            .backend
            .run_step(&step, &mut || model.forward(&step, kv_cache), self.sample)
    }
    // ANCHOR_END: execute_model

    // ANCHOR: submit_model
    /// Async scheduling: starts one step and returns, possibly before the device has run it
    /// ([`Self::complete_model`] gives its output). A decode whose input is a placeholder
    /// ([`crate::sequence::PLACEHOLDER_TOKEN_ID`]) takes the token its sequence sampled in the
    /// step submitted just before: from the host when that step's output is already there
    /// (the CPU runs a step when it is submitted), else on the device.
    pub fn submit_model(&mut self, out: &SchedulerOutput) -> Result<()> {
        let Some(mut input) = self.model_input(out) else {
            self.in_flight.push_back(Some(ModelRunnerOutput::default()));
            return Ok(());
        };
        let mut row = 0;
        for s in &out.scheduled {
            for (j, &id) in s.token_ids.iter().enumerate() {
                if id != PLACEHOLDER_TOKEN_ID {
                    continue;
                }
                let from = self.last_sampled_rows.get(&s.seq_id).copied();
                let from = from.ok_or_else(|| {
                    BackendError::shape(
                        "submit_model",
                        format!(
                            "a placeholder of sequence {} that no step sampled",
                            s.seq_id.0
                        ),
                    )
                })?;
                input.from_previous_step.push((row + j, from));
            }
            row += s.token_ids.len();
        }
        let sampling = out.scheduled.iter().filter(|s| s.needs_logits);
        self.last_sampled_rows = sampling.enumerate().map(|(i, s)| (s.seq_id, i)).collect();
        if let Some(Some(previous)) = self.in_flight.back() {
            // Already on the host: fill the placeholders here.
            for (token, from) in input.from_previous_step.drain(..) {
                let id = previous.sampled_token_ids.get(from).copied();
                input.input_ids[token] = id.ok_or_else(|| {
                    BackendError::shape("submit_model", format!("no sampled row {from}"))
                })?;
            }
        } else if self.in_flight.is_empty() && !input.from_previous_step.is_empty() {
            return Err(BackendError::shape(
                "submit_model",
                "placeholder tokens with no step in flight to take them from",
            ));
        }
        let step = self.model.backend.prepare_step(input)?;
        let (model, kv_cache) = (&self.model, &mut self.kv_cache);
        let output = model.backend.submit_step(
            &step,
            &mut || model.forward(&step, kv_cache),
            self.sample,
        )?;
        self.in_flight.push_back(output);
        Ok(())
    }
    // ANCHOR_END: submit_model

    /// Async scheduling: the output of the oldest step [`Self::submit_model`] started, once
    /// it has run.
    pub fn complete_model(&mut self) -> Result<ModelRunnerOutput> {
        match self.in_flight.pop_front() {
            Some(Some(output)) => Ok(output),
            Some(None) => self.model.backend.wait_step(),
            None => Err(BackendError::shape(
                "complete_model",
                "no step was submitted to complete",
            )),
        }
    }

    /// The step's inputs with their sample rows; `None` when nothing is scheduled.
    fn model_input(&mut self, out: &SchedulerOutput) -> Option<ModelInput> {
        let _span = tracing::debug_span!("prepare_inputs", seqs = out.scheduled.len()).entered();
        let mut input = (self.prepare_inputs)(out, self.kv_cache.block_size);
        if input.input_ids.is_empty() {
            return None;
        }
        for s in out.scheduled.iter().filter(|s| s.needs_logits) {
            let req = self
                .requests
                .get_mut(&s.seq_id)
                .expect("request added at arrival");
            // The position of the token being sampled: the one after the chunk's last.
            let position = s.start_position + s.token_ids.len();
            let prompt_len = *req.prompt_len.get_or_insert(position);
            let banned = min_tokens::banned_token_ids(
                &req.params.stop_token_ids,
                req.params.min_tokens,
                position.saturating_sub(prompt_len),
            );
            input.sample_rows.push(
                SampleRow::new(&req.params, req.seed, position).with_banned_token_ids(banned),
            );
        }
        Some(input)
    }

    /// Runs this rank's pipeline stage of one step ([`LlamaForCausalLM::forward_stage`]):
    /// every stage but the first receives the previous stage's [`Hidden`] state over `link`,
    /// runs its layers, and every stage but the last sends its state on and returns no
    /// tokens; the last samples, as [`Self::execute_model`] does. Every stage is given the
    /// same `out`, so they agree on the step's tokens and on an empty step.
    pub fn execute_stage(
        &mut self,
        out: &SchedulerOutput,
        link: &mut StageLink,
    ) -> Result<ModelRunnerOutput> {
        let Some(input) = self.model_input(out) else {
            return Ok(ModelRunnerOutput::default());
        };
        let tokens = input.input_ids.len();
        let step = self.model.backend.prepare_step(input)?;
        let (model, kv_cache) = (&self.model, &mut self.kv_cache);
        let (b, hidden) = (&model.backend, model.config.hidden_size);
        let dtype = b.default_dtype();
        let receive = |link: &mut StageLink| -> Result<Option<Hidden<B::Tensor>>> {
            if model.stage.is_first() {
                return Ok(None);
            }
            let h = link.recv_hidden(tokens, hidden)?;
            let delta = match h.delta {
                Some(d) => Some(b.upload(d, tokens, hidden, dtype)?),
                None => None,
            };
            let residual = b.upload(h.residual, tokens, hidden, dtype)?;
            Ok(Some(Hidden { delta, residual }))
        };
        if model.stage.is_last() {
            let mut forward = || match model.forward_stage(&step, kv_cache, receive(link)?)? {
                StageOutput::Logits(logits) => Ok(logits),
                StageOutput::Hidden(_) => Err(BackendError::shape(
                    "execute_stage",
                    "the last stage ended without logits",
                )),
            };
            return b.run_step(&step, &mut forward, self.sample);
        }
        let from_prev = receive(link)?;
        match model.forward_stage(&step, kv_cache, from_prev)? {
            StageOutput::Hidden(Hidden {
                delta: Some(delta),
                residual,
            }) => {
                link.send_hidden(&b.download(&delta)?, &b.download(&residual)?)?;
                Ok(ModelRunnerOutput::default())
            }
            _ => Err(BackendError::shape(
                "execute_stage",
                "a stage before the last must run at least one layer",
            )),
        }
    }
}
