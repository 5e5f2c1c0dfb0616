//! The scheduler: each step, decide which requests run and how many tokens each computes
//! (vLLM v1's `Scheduler`, with v0's waiting/running queues kept explicit for teaching).
//!
//! One rule covers prefill, chunked prefill, decode and mixed batches: every scheduled
//! sequence gets `min(uncomputed tokens, remaining budget)` new tokens. A running sequence in
//! decode has one uncomputed token; a new prompt has all of its tokens; a prompt larger than
//! the budget is cut into chunks over several steps. When the KV cache cannot hold a running
//! sequence's new tokens, a running sequence is preempted ([`super::preemption`]): by
//! recompute (its blocks are freed and it returns to the waiting queue to be prefilled again
//! later) or by swap (its blocks are copied to the host and it waits in the swapped queue,
//! its computed tokens kept, until there is room to copy them back).
//!
//! Three queues, served in this order each step: running, then swapped (they resume before
//! any new admission: their work is done and holds host memory), then waiting.

mod swapping;

use std::collections::VecDeque;

use super::batch_composer::{running_chunk, waiting_chunk};
use super::block_manager::BlockManager;
use super::id_hash::IdHashMap;
use super::preemption::PreemptionConfig;
use super::scheduler_output::{ScheduledSequence, SchedulerOutput};
use super::scheduling_policy::SchedulingPolicy;
use super::swap_space::{SwapOps, SwapSpace};
use crate::config::SchedulerConfig;
use crate::sequence::{FinishReason, SeqId, Sequence, SequenceStatus};

/// Waiting, running and swapped queues over a block manager and a swap space.
pub struct Scheduler {
    config: SchedulerConfig,
    policy: Box<dyn SchedulingPolicy>,
    pub block_manager: BlockManager,
    seqs: IdHashMap<SeqId, Sequence>,
    /// Not yet running (new, or preempted), served in policy order. Public, with `running`,
    /// so that a schedule function written outside the engine (stage 1) can drive them.
    pub waiting: VecDeque<SeqId>,
    /// Have KV blocks and are being prefilled or decoded.
    pub running: Vec<SeqId>,
    /// Preempted by swap: their KV blocks are in `swap_space`, waiting to be copied back.
    pub swapped: VecDeque<SeqId>,
    preemption: PreemptionConfig,
    /// Host blocks of the swapped sequences (none unless the mode is swap).
    pub swap_space: SwapSpace,
    /// The block copies the current step needs, until the engine takes them.
    swaps: SwapOps,
    /// Token ids that end a request unless it sets `ignore_eos`.
    eos_token_ids: Vec<u32>,
    /// Longest sequence (prompt + output) the cache and model can hold.
    max_model_len: usize,
}

impl Scheduler {
    pub fn new(
        config: SchedulerConfig,
        policy: Box<dyn SchedulingPolicy>,
        block_manager: BlockManager,
        eos_token_ids: Vec<u32>,
        max_model_len: usize,
    ) -> Self {
        Scheduler {
            config,
            policy,
            block_manager,
            seqs: IdHashMap::default(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            swapped: VecDeque::new(),
            preemption: PreemptionConfig::default(),
            swap_space: SwapSpace::new(0),
            swaps: SwapOps::default(),
            eos_token_ids,
            max_model_len,
        }
    }

    /// Preempts as `preemption` says, swapping into a host space of `num_swap_blocks` blocks.
    pub fn with_preemption(mut self, preemption: PreemptionConfig, num_swap_blocks: usize) -> Self {
        self.preemption = preemption;
        self.swap_space = SwapSpace::new(num_swap_blocks);
        self
    }

    /// How this scheduler preempts.
    pub fn preemption(&self) -> &PreemptionConfig {
        &self.preemption
    }

    /// The model's end-of-sequence ids (they end a request unless it sets `ignore_eos`).
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// Queues a new request. The engine has already checked that it fits the cache.
    pub fn add_sequence(&mut self, seq: Sequence) {
        self.policy.on_arrival(&seq);
        self.waiting.push_back(seq.seq_id);
        self.seqs.insert(seq.seq_id, seq);
    }

    pub fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty() || !self.swapped.is_empty()
    }

    pub fn num_swapped(&self) -> usize {
        self.swapped.len()
    }

    /// The block copies the last `schedule` asked for (swap-outs, then swap-ins), which the
    /// worker must make before the step's forward pass; empties the list.
    pub fn take_swaps(&mut self) -> SwapOps {
        std::mem::take(&mut self.swaps)
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// The per-step limits this scheduler enforces.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The policy that orders the queues and picks preemption victims.
    pub fn policy(&self) -> &dyn SchedulingPolicy {
        self.policy.as_ref()
    }

    pub fn sequence(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    /// For the sampler, which advances the sequence's generator.
    pub fn sequence_mut(&mut self, id: SeqId) -> Option<&mut Sequence> {
        self.seqs.get_mut(&id)
    }

    // ANCHOR: schedule
    /// Builds the next step's batch under the token budget, preempting if blocks run out.
    /// Block copies for swaps wait in [`Scheduler::take_swaps`].
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut budget = self.config.max_num_batched_tokens;
        let mut out = SchedulerOutput::default();
        self.policy.begin_step(std::time::Instant::now());
        self.sort_by_policy();

        // 1. Running sequences first: they hold blocks already, and finishing them frees
        //    memory. Victims are taken from those not yet scheduled this step (the sequence
        //    itself last), so a sequence that was already scheduled is never preempted.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let seq = &self.seqs[&id];
            let num_new = running_chunk(seq.num_uncomputed_tokens(), budget, &self.config);
            let total = seq.num_computed_tokens + num_new;
            loop {
                if self.block_manager.allocate_slots(id, total) {
                    self.push_scheduled(&mut out, id, num_new);
                    budget -= num_new;
                    i += 1;
                    break;
                }
                let victim = self.select_victim_after(i);
                self.preempt_victim(victim, &mut out);
                if victim == id {
                    break; // it was the least important itself; the loop ends with it
                }
            }
        }

        // 2. Resume swapped sequences, unless this step preempted (the cache is full, and a
        //    step never swaps both ways: see `swap_space`).
        let preempted = !out.preempted.is_empty() || !self.swaps.swapped_out.is_empty();
        if !preempted {
            budget = self.resume_swapped(&mut out, budget);
        }

        // 3. Admit waiting sequences while budget, sequence slots and blocks last. After a
        //    preemption the cache is full: admitting more would only cause more preemption.
        //    Swapped sequences come first: nothing new starts while one still waits.
        while !preempted
            && self.swapped.is_empty()
            && budget > 0
            && self.running.len() < self.config.max_num_seqs
        {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let seq = &self.seqs[&id];
            // Prefix caching: the longest cached prefix of full blocks is computed already
            // and costs no budget (no blocks are found when caching is off).
            let cached = self.block_manager.get_computed_blocks(seq);
            let computed = seq.num_computed_tokens + cached.num_tokens;
            let uncomputed = seq.num_tokens() - computed;
            // Without chunked prefill a prompt that would be cut waits (see `waiting_chunk`).
            let Some(num_new) = waiting_chunk(uncomputed, budget, &self.config) else {
                break;
            };
            let total = computed + num_new;
            if !self
                .block_manager
                .allocate_slots_with_prefix(id, total, &cached)
            {
                break;
            }
            self.waiting.pop_front();
            self.running.push(id);
            let seq = self.seqs.get_mut(&id).unwrap();
            seq.status = SequenceStatus::Running;
            seq.num_computed_tokens = computed;
            self.push_scheduled(&mut out, id, num_new);
            budget -= num_new;
        }
        out
    }
    // ANCHOR_END: schedule

    /// Sorts the queues from most to least important.
    pub fn sort_by_policy(&mut self) {
        let (seqs, policy) = (&self.seqs, &self.policy);
        let cmp = |a: &SeqId, b: &SeqId| policy.compare(&seqs[a], &seqs[b]);
        self.running.sort_by(cmp);
        self.waiting.make_contiguous().sort_by(cmp);
        self.swapped.make_contiguous().sort_by(cmp);
    }

    /// Adds `id`'s next `num_new` tokens to the batch and tells the policy.
    fn push_scheduled(&mut self, out: &mut SchedulerOutput, id: SeqId, num_new: usize) {
        self.policy.on_scheduled(&self.seqs[&id], num_new);
        // Prefix caching: full blocks this step computes can be hit by requests after this one.
        let seq = &self.seqs[&id];
        let end = seq.num_computed_tokens + num_new;
        self.block_manager.cache_full_blocks(seq, end);
        out.scheduled.push(self.scheduled_sequence(id, num_new));
    }

    /// `id`'s next `num_new` uncomputed tokens, with its current block table.
    pub fn scheduled_sequence(&self, id: SeqId, num_new: usize) -> ScheduledSequence {
        let seq = &self.seqs[&id];
        let start = seq.num_computed_tokens;
        ScheduledSequence {
            seq_id: id,
            token_ids: (start..start + num_new).map(|i| seq.token_at(i)).collect(),
            start_position: start,
            block_table: self.block_manager.block_table(id).to_vec(),
            needs_logits: start + num_new == seq.num_tokens(),
        }
    }

    // ANCHOR: preempt
    /// The running sequence to preempt first: the one the policy ranks least important.
    /// (`running` is sorted by policy during `schedule`, so this is its last element.)
    pub fn select_victim(&self) -> Option<SeqId> {
        let (seqs, policy) = (&self.seqs, &self.policy);
        self.running
            .iter()
            .copied()
            .max_by(|a, b| policy.compare(&seqs[a], &seqs[b]))
    }

    /// Preemption by recompute: drop the sequence's KV blocks and send it back to wait. Its
    /// generated tokens are kept; when it runs again, prompt and output are prefilled together.
    pub fn preempt(&mut self, id: SeqId) {
        self.running.retain(|&r| r != id);
        self.block_manager.free(id);
        let seq = self.seqs.get_mut(&id).unwrap();
        seq.num_computed_tokens = 0;
        seq.status = SequenceStatus::Waiting;
        seq.num_preemptions += 1;
        self.waiting.push_front(id);
    }
    // ANCHOR_END: preempt

    // ANCHOR: update_from_output
    /// Applies a step's results: advances computed counts, appends sampled tokens, and
    /// finishes requests that hit a stop condition. `sampled` holds one token for each
    /// scheduled sequence with `needs_logits`, in batch order. Returns finished sequences.
    pub fn update_from_output(
        &mut self,
        output: &SchedulerOutput,
        sampled: &[u32],
    ) -> Vec<Sequence> {
        let mut sampled = sampled.iter();
        let mut finished = Vec::new();
        for s in &output.scheduled {
            let seq = self
                .seqs
                .get_mut(&s.seq_id)
                .expect("scheduled sequence exists");
            seq.num_computed_tokens += s.token_ids.len();
            if !s.needs_logits {
                continue;
            }
            let token = *sampled
                .next()
                .expect("one sampled token per sequence needing logits");
            seq.output_token_ids.push(token);
            if let Some(reason) = self.check_stop(s.seq_id, token) {
                finished.push(self.finish(s.seq_id, reason));
            }
        }
        finished
    }
    // ANCHOR_END: update_from_output

    /// Async scheduling, as the step `output` is scheduled: what [`Self::update_from_output`]
    /// would do once the step ran, except the sampled tokens, which are still on the device.
    /// The scheduled tokens count as computed, and every sequence that samples gets a
    /// placeholder token, so that the next `schedule` (called before this step's tokens come
    /// back) already runs its next decode (vLLM v1's `AsyncScheduler._update_after_schedule`).
    pub fn update_after_schedule(&mut self, output: &SchedulerOutput) {
        for s in &output.scheduled {
            let seq = self
                .seqs
                .get_mut(&s.seq_id)
                .expect("scheduled sequence exists");
            seq.num_computed_tokens += s.token_ids.len();
            if s.needs_logits {
                seq.num_output_placeholders += 1;
            }
        }
    }

    /// Async scheduling, once the step `output` has run: each sampled token replaces its
    /// sequence's oldest placeholder, and stop conditions are checked as in
    /// [`Self::update_from_output`]. A sequence that finished or was aborted while this step
    /// was in flight is skipped: the step computed one token too many for it, which is
    /// dropped. Returns the sequences that finished.
    pub fn update_from_async_output(
        &mut self,
        output: &SchedulerOutput,
        sampled: &[u32],
    ) -> Vec<Sequence> {
        let mut sampled = sampled.iter();
        let mut finished = Vec::new();
        for s in output.scheduled.iter().filter(|s| s.needs_logits) {
            let token = *sampled
                .next()
                .expect("one sampled token per sequence needing logits");
            let Some(seq) = self.seqs.get_mut(&s.seq_id) else {
                continue; // finished (or aborted) after this step was scheduled
            };
            seq.num_output_placeholders -= 1;
            seq.output_token_ids.push(token);
            if let Some(reason) = self.check_stop(s.seq_id, token) {
                finished.push(self.finish(s.seq_id, reason));
            }
        }
        finished
    }

    /// Removes a request wherever it is, freeing its blocks (vLLM's `abort_request`).
    /// Returns false if it is unknown or already finished.
    pub fn abort_sequence(&mut self, id: SeqId) -> bool {
        let Some(seq) = self.seqs.remove(&id) else {
            return false;
        };
        self.policy.on_finished(&seq);
        self.block_manager.free(id);
        self.swap_space.free(id);
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&w| w != id);
        self.swapped.retain(|&w| w != id);
        true
    }

    fn check_stop(&self, id: SeqId, token: u32) -> Option<FinishReason> {
        let seq = &self.seqs[&id];
        let p = &seq.params;
        // Below min_tokens no stop token ends it (as vLLM's check_stop). The sampler's mask
        // keeps them from being sampled; this only matters for a sampler that ignores it.
        let may_stop = seq.output_token_ids.len() >= p.min_tokens;
        if may_stop
            && ((!p.ignore_eos && self.eos_token_ids.contains(&token))
                || p.stop_token_ids.contains(&token))
        {
            return Some(FinishReason::Stop);
        }
        if seq.output_token_ids.len() >= p.max_tokens
            || seq.num_known_tokens() >= self.max_model_len
        {
            return Some(FinishReason::Length);
        }
        None
    }

    fn finish(&mut self, id: SeqId, reason: FinishReason) -> Sequence {
        self.block_manager.free(id);
        self.running.retain(|&r| r != id);
        // Under async scheduling a sequence may stop after a step that preempted it.
        match self.seqs[&id].status {
            SequenceStatus::Waiting => self.waiting.retain(|&w| w != id),
            SequenceStatus::Swapped => {
                self.swapped.retain(|&w| w != id);
                self.swap_space.free(id);
            }
            _ => {}
        }
        let mut seq = self.seqs.remove(&id).unwrap();
        self.policy.on_finished(&seq);
        seq.status = SequenceStatus::Finished(reason);
        seq
    }
}
