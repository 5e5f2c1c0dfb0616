//! The compute backend: where tensors live and how the model's kernels run on them.
//!
//! The Llama forward pass is written once, against this trait. The CPU backend (f32, rayon
//! threads) is the reference everyone can run; a CUDA backend implements the same operations
//! with NVRTC-compiled kernels and cuBLAS, so the model code never changes.
//!
//! Three rules make the trait fit a GPU as well as the CPU:
//! - **Tensors carry a dtype** ([`DType`]). The CPU computes in f32; a GPU keeps bf16. Weights
//!   and the KV cache are created in [`Backend::default_dtype`]; an op given a dtype it cannot
//!   compute in returns [`BackendError::UnsupportedDType`] naming the op.
//! - **Ops that can fail return `Result`.** Allocation, copies and kernel launches fail on a
//!   device; shape mismatches are reported, not asserted. Nothing here panics on bad input.
//! - **A step's metadata is prepared once.** The runner hands the host [`ModelInput`] to
//!   [`Backend::prepare_step`], one call per step, and every layer then reads the backend's
//!   [`Backend::StepMetadata`]: no layer takes a host slice. On a GPU that means one
//!   host→device copy per step instead of one per layer, and a decode step whose kernels read
//!   only device buffers at fixed addresses, which a CUDA graph can capture and replay.
pub mod cpu_backend;
pub mod cpu_gemm;
pub mod cpu_kernels;
pub mod cpu_thread_pool;
pub mod cuda_allocator;
pub mod cuda_backend;
pub mod cuda_graph;
pub mod cuda_kernel_timer;
pub mod cuda_step;
pub mod cuda_tensor;
pub mod cuda_tensor_parallel;
pub mod dtype;
pub mod error;
pub mod huge_pages;
pub mod swap_blocks;

pub use dtype::DType;
pub use error::BackendError;
pub use swap_blocks::{HostData, HostKvBlocks, SwapDirection};

use crate::config::{EngineConfig, ModelConfig};
use crate::outputs::ModelRunnerOutput;
use crate::sampler::{SampleFn, SampleRow};
use crate::worker::model_runner::ModelInput;

/// Result with [`BackendError`].
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// What every backend's step metadata keeps on the host: how each logits row is sampled.
pub trait StepSampling {
    /// `[num_logits]` in the order of the logits rows.
    fn sample_rows(&self) -> &[SampleRow];
}

impl StepSampling for ModelInput {
    fn sample_rows(&self) -> &[SampleRow] {
        &self.sample_rows
    }
}

/// Time measured on the device across steps ([`Backend::device_time`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeviceTime {
    pub total: std::time::Duration,
    pub steps: u64,
}

/// The largest step the engine will schedule, known once the KV cache is sized
/// ([`Backend::plan_steps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLimits {
    /// Tokens in one step (`max_num_batched_tokens`).
    pub max_num_tokens: usize,
    /// Sequences in one step (`max_num_seqs`).
    pub max_num_seqs: usize,
    /// Longest sequence, prompt and output (`max_model_len`).
    pub max_model_len: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Query heads, KV heads and head size: attention's workspaces are sized from them once,
    /// and decode attention's split depends on the heads.
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl StepLimits {
    /// Block-table width that holds the longest sequence.
    pub fn max_blocks_per_seq(&self) -> usize {
        self.max_model_len.div_ceil(self.block_size.max(1))
    }
}

/// Kernels of a decoder-only transformer over 2-D tensors `[rows, cols]`.
///
/// Activations are `[num_tokens, width]`; heads are views of the width. Weights use
/// Hugging Face's layout `[out_features, in_features]`.
pub trait Backend: Send + Sync {
    /// A 2-D tensor `[rows, cols]` of [`Backend::dtype`] elements in this backend's memory.
    type Tensor: Send + Sync;
    /// One step's batch layout in this backend's memory, built by [`Backend::prepare_step`]:
    /// input ids, positions, slot mapping, block tables, sequence lengths, query start
    /// locations and logits indices (the fields of [`ModelInput`]).
    ///
    /// A CUDA backend keeps persistent device buffers in the kernels' types (`u32` ids,
    /// positions, block tables, seq_lens and query_start_loc; `u64` slots), block tables padded
    /// to a fixed width (`max_model_len / block_size`) so that a captured graph's arguments
    /// never change, and fills them with one copy per step. The CPU backend's memory is the
    /// host's, so it keeps the [`ModelInput`] itself.
    type StepMetadata: Send + Sync + StepSampling;

    fn name(&self) -> &'static str;
    /// The dtype this backend keeps weights, activations and the KV cache in (vLLM's
    /// `model_config.dtype`).
    fn default_dtype(&self) -> DType;
    /// Copies host data `[rows, cols]` to the backend, converted to `dtype`.
    fn upload(
        &self,
        data: Vec<f32>,
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> Result<Self::Tensor>;
    /// Keeps a linear layer's weight `[rows, cols]` in its GGUF blocks (`bytes`: rows of whole
    /// Q8_0/Q4_1 blocks) when this backend computes from blocks with the very values of the
    /// dequantized f32 weight (the CPU backend does); `Ok(None)` (the default) when it does
    /// not, and the caller keeps the f32 upload.
    fn upload_blocks(
        &self,
        _format: gguf_hf::dequant::GgmlType,
        _bytes: &[u8],
        _rows: usize,
        _cols: usize,
    ) -> Result<Option<Self::Tensor>> {
        Ok(None)
    }
    /// [`Backend::upload_blocks`] for a weight that is also read as a matrix (a tied LM head
    /// is the embedding table): `t` keeps its f32 values for the lookup and gains the blocks
    /// for linear layers. `Ok(false)` (the default) on a backend without block tensors.
    fn attach_blocks(
        &self,
        _t: &mut Self::Tensor,
        _format: gguf_hf::dequant::GgmlType,
        _bytes: &[u8],
    ) -> Result<bool> {
        Ok(false)
    }
    /// Readies a weight `[rows, cols]` that linear layers read (and, for a tied embedding
    /// table, the lookup), once at load. The CPU backend packs it into its GEMM's panels
    /// (unless it is in blocks) and drops the row-major copy, which would otherwise double the
    /// model's memory; the lookup and [`Backend::download`] then read the packed form. The
    /// default does nothing.
    fn pack_weight(&self, _t: &mut Self::Tensor) -> Result<()> {
        Ok(())
    }
    /// Copies `t` `[rows, cols]` to the host as f32.
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// [`Backend::download`] of a tensor no longer needed: a backend whose tensors already
    /// live on the host as f32 hands the data over instead of copying it (the CPU's step
    /// returns `[seqs, vocab]` logits, 1.5 MB at batch 8 for SmolLM2). The default downloads.
    fn download_owned(&self, t: Self::Tensor) -> Result<Vec<f32>> {
        self.download(&t)
    }
    /// A `[rows, cols]` tensor of zeros in `dtype`.
    fn zeros(&self, rows: usize, cols: usize, dtype: DType) -> Result<Self::Tensor>;
    /// `(rows, cols)`.
    fn shape(&self, t: &Self::Tensor) -> (usize, usize);
    /// The element type of `t`.
    fn dtype(&self, t: &Self::Tensor) -> DType;

    /// Moves a step's host layout into the backend, once per step; the layers below read only
    /// the result.
    fn prepare_step(&self, input: ModelInput) -> Result<Self::StepMetadata>;

    /// Rows `step.input_ids` of `table` `[vocab, hidden]` → `[num_tokens, hidden]`.
    fn embedding(&self, table: &Self::Tensor, step: &Self::StepMetadata) -> Result<Self::Tensor>;
    /// `x · wᵀ + bias`: `[t, in] × [out, in]ᵀ (+ [1, out]) → [t, out]`.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;
    /// `x` `[t, hidden]` normalized and scaled by `weight` `[1, hidden]` → `[t, hidden]`.
    fn rms_norm(&self, x: &Self::Tensor, weight: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;
    /// `residual += x; x = rms_norm(residual)`, all `[t, hidden]`, `weight` `[1, hidden]`.
    fn fused_add_rms_norm(
        &self,
        x: &mut Self::Tensor,
        residual: &mut Self::Tensor,
        weight: &Self::Tensor,
        eps: f32,
    ) -> Result<()>;
    /// Rotates `q` `[t, heads·d]` and `k` `[t, kv_heads·d]` in place by `step.positions`,
    /// reading cosines and sines from `cos_sin_cache` `[max_position, d]` (f32 on every
    /// backend, as the CUDA kernel reads it).
    fn rotary_embedding(
        &self,
        step: &Self::StepMetadata,
        q: &mut Self::Tensor,
        k: &mut Self::Tensor,
        head_dim: usize,
        cos_sin_cache: &Self::Tensor,
    ) -> Result<()>;
    /// Writes `k`, `v` `[t, kv_heads·d]` into rows `step.slot_mapping` of `key_cache` and
    /// `value_cache` `[num_blocks·block_size, kv_heads·d]`.
    fn reshape_and_cache(
        &self,
        k: &Self::Tensor,
        v: &Self::Tensor,
        key_cache: &mut Self::Tensor,
        value_cache: &mut Self::Tensor,
        step: &Self::StepMetadata,
    ) -> Result<()>;
    /// Causal attention of `q` `[t, heads·d]` over the paged caches
    /// `[num_blocks·block_size, kv_heads·d]`, following `step`'s block tables → `[t, heads·d]`.
    #[allow(clippy::too_many_arguments)]
    fn paged_attention(
        &self,
        q: &Self::Tensor,
        key_cache: &Self::Tensor,
        value_cache: &Self::Tensor,
        num_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        step: &Self::StepMetadata,
    ) -> Result<Self::Tensor>;
    /// `[t, 2d] → [t, d]`: `silu(gate) * up`.
    fn silu_and_mul(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    // ANCHOR: swap_blocks
    /// Copies whole KV blocks between `cache` `[num_blocks·block_size, cols]` (one layer's
    /// keys or values) and `host` (the same layout in host memory, `host.block_size` rows a
    /// block), in `direction`: for each `(device block, host block)` pair of `mapping`, the
    /// block's rows, bit for bit (the host keeps the cache's dtype). Fails, copying nothing,
    /// if a block is out of range, the widths or dtypes differ; the copies are done when it
    /// returns. This default, for a backend that has no copy, says so (the engine's two
    /// backends both have one).
    fn swap_blocks(
        &self,
        _cache: &mut Self::Tensor,
        _host: &mut HostKvBlocks,
        _mapping: &[(u32, u32)],
        _direction: SwapDirection,
    ) -> Result<()> {
        Err(BackendError::shape(
            "swap_blocks",
            format!(
                "the {} backend cannot swap; use --preemption-mode recompute",
                self.name()
            ),
        ))
    }
    // ANCHOR_END: swap_blocks
    /// Splits `x` `[t, Σ widths]` into `[t, width]` pieces (q, k, v of a fused projection).
    fn split_columns(&self, x: &Self::Tensor, widths: &[usize]) -> Result<Vec<Self::Tensor>>;
    /// The steps between the fused qkv projection and attention: splits `qkv`
    /// `[t, (heads + 2·kv_heads)·d]` into q, k and v, rotates q and k by `step`'s positions,
    /// writes k and v into rows `step.slot_mapping` of the caches, and returns q
    /// `[t, heads·d]`. This default makes the three calls above; a backend may do them in one
    /// pass (the CUDA backend does: one kernel launch instead of three, and no k and v tensors).
    #[allow(clippy::too_many_arguments)]
    fn qkv_rotary_and_cache(
        &self,
        qkv: &Self::Tensor,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        cos_sin_cache: &Self::Tensor,
        key_cache: &mut Self::Tensor,
        value_cache: &mut Self::Tensor,
        step: &Self::StepMetadata,
    ) -> Result<Self::Tensor> {
        let (q_width, kv_width) = (num_heads * head_dim, num_kv_heads * head_dim);
        let [mut q, mut k, v]: [Self::Tensor; 3] = self
            .split_columns(qkv, &[q_width, kv_width, kv_width])?
            .try_into()
            .map_err(|p: Vec<_>| {
                BackendError::shape("split_columns", format!("{} parts", p.len()))
            })?;
        self.rotary_embedding(step, &mut q, &mut k, head_dim, cos_sin_cache)?;
        self.reshape_and_cache(&k, &v, key_cache, value_cache, step)?;
        Ok(q)
    }
    /// A block's way into the residual stream: `residual += delta` (when there is a delta:
    /// every block but the first layer's attention), then `rms_norm(residual)` with `weight`
    /// `[1, hidden]` → `[t, hidden]`, the input of the next block. `delta` is consumed: its
    /// memory holds the result, as `fused_add_rms_norm` does in place.
    fn add_rms_norm(
        &self,
        delta: Option<Self::Tensor>,
        residual: &mut Self::Tensor,
        weight: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor> {
        match delta {
            Some(mut x) => {
                self.fused_add_rms_norm(&mut x, residual, weight, eps)?;
                Ok(x)
            }
            None => self.rms_norm(residual, weight, eps),
        }
    }
    /// [`Backend::add_rms_norm`] then the block's first projection `w` `[n, hidden]`
    /// (+ `bias`) → `[t, n]`. This default makes the calls one after the other; a backend may
    /// make them one pass (the CUDA backend does for small decode batches: a GEMV that
    /// normalizes its own input, one launch instead of two).
    #[allow(clippy::too_many_arguments)]
    fn add_rms_norm_linear(
        &self,
        delta: Option<Self::Tensor>,
        residual: &mut Self::Tensor,
        norm: &Self::Tensor,
        eps: f32,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor> {
        let x = self.add_rms_norm(delta, residual, norm, eps)?;
        self.linear(&x, w, bias)
    }
    /// The MLP's way in: [`Backend::add_rms_norm`], the fused gate/up projection `w`
    /// `[2·inter, hidden]`, then SiLU·mul → `[t, inter]`. Three calls by default; one launch on
    /// the CUDA backend for small decode batches.
    fn add_rms_norm_gate_up(
        &self,
        delta: Option<Self::Tensor>,
        residual: &mut Self::Tensor,
        norm: &Self::Tensor,
        eps: f32,
        w: &Self::Tensor,
    ) -> Result<Self::Tensor> {
        let x = self.add_rms_norm(delta, residual, norm, eps)?;
        self.silu_and_mul(&self.linear(&x, w, None)?)
    }
    /// The attention block's way in, up to attention: [`Backend::add_rms_norm_linear`] through
    /// the qkv projection `w` `[(heads + 2·kv_heads)·d, hidden]` (+ `bias`), then
    /// [`Backend::qkv_rotary_and_cache`] → q `[t, heads·d]`, k and v in the caches. Two calls
    /// by default; one launch on the CUDA backend for small decode batches (a GEMV that
    /// normalizes its input, projects, rotates and writes the cache).
    #[allow(clippy::too_many_arguments)]
    fn add_rms_norm_qkv_rotary_cache(
        &self,
        delta: Option<Self::Tensor>,
        residual: &mut Self::Tensor,
        norm: &Self::Tensor,
        eps: f32,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        cos_sin_cache: &Self::Tensor,
        key_cache: &mut Self::Tensor,
        value_cache: &mut Self::Tensor,
        step: &Self::StepMetadata,
    ) -> Result<Self::Tensor> {
        let qkv = self.add_rms_norm_linear(delta, residual, norm, eps, w, bias)?;
        self.qkv_rotary_and_cache(
            &qkv,
            num_heads,
            num_kv_heads,
            head_dim,
            cos_sin_cache,
            key_cache,
            value_cache,
            step,
        )
    }
    /// Rows `step.logits_indices` of `x` `[t, hidden]`, in that order → `[num_logits, hidden]`.
    fn gather_rows(&self, x: &Self::Tensor, step: &Self::StepMetadata) -> Result<Self::Tensor>;
    /// The last stage's way out: the final [`Backend::add_rms_norm`] of the rows the step
    /// samples from only (`step.logits_indices`, in that order) → `[num_logits, hidden]`, the
    /// LM head's input. It takes the residual stream, which nothing reads after the last layer.
    /// This default normalizes every row, then gathers; the CUDA backend gathers as it
    /// normalizes, in one launch (a decode step's last kernels are each a few microseconds).
    fn add_rms_norm_gather(
        &self,
        delta: Option<Self::Tensor>,
        mut residual: Self::Tensor,
        norm: &Self::Tensor,
        eps: f32,
        step: &Self::StepMetadata,
    ) -> Result<Self::Tensor> {
        let hidden = self.add_rms_norm(delta, &mut residual, norm, eps)?;
        self.gather_rows(&hidden, step)
    }

    // ANCHOR: collectives
    /// Tensor parallelism's sum: `x` becomes the element-wise sum of every rank's `x` (after a
    /// row-parallel projection, each rank holds a partial sum of the full output). A backend
    /// that is not one rank of a group is the whole sum already: this default does nothing.
    fn all_reduce(&self, _x: &mut Self::Tensor) -> Result<()> {
        Ok(())
    }

    /// A row-parallel projection (o_proj, down_proj): `x · wᵀ`, `[t, in] × [out, in]ᵀ →
    /// [t, out]`, where each rank holds a slice of the `in` columns and so computes a partial
    /// sum, completed by [`all_reduce`](Self::all_reduce) (vLLM's `RowParallelLinear`). This
    /// default is exactly those two calls; a backend may fuse them (the CUDA backend's
    /// projection can send its output to the peers as it computes it).
    fn row_parallel_linear(&self, x: &Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor> {
        let mut y = self.linear(x, w, None)?;
        self.all_reduce(&mut y)?;
        Ok(y)
    }

    /// Tensor parallelism's gather of a column-parallel output: every rank's `x` `[t, c]`, in
    /// rank order, side by side → `[t, world·c]`, of which the first `cols` columns are kept
    /// (the vocabulary a vocab-parallel LM head padded to a multiple of the ranks, as vLLM's
    /// `LogitsProcessor` trims it). `x` is taken by value: one rank's gather is `x` itself, and
    /// this default returns it without a copy.
    fn all_gather_columns(&self, x: Self::Tensor, cols: usize) -> Result<Self::Tensor> {
        let (_, have) = self.shape(&x);
        if have != cols {
            let detail = format!("{have} columns on one rank, {cols} wanted");
            return Err(BackendError::shape("all_gather_columns", detail));
        }
        Ok(x)
    }
    // ANCHOR_END: collectives

    /// What this rank's collectives have cost so far (bytes, time, calls); `None` for a
    /// backend that is not one rank of a group.
    fn comm_stats(&self) -> Option<crate::distributed::CommStats> {
        None
    }

    /// Device time the steps have taken so far, and how many steps: the span from a step's
    /// first kernel to its sampled ids, measured on the device (CUDA events), for benchmarks
    /// that separate the GPU's time from the host's. `None` where ops run on the host.
    fn device_time(&self) -> Option<DeviceTime> {
        None
    }

    /// The kernel timeline's block records since the last call, where the kernels were built
    /// with its probe (`EngineConfig::kernel_timeline`, GPU only; `kernels::kernel_timeline`);
    /// `None` otherwise. Waits for the device.
    fn take_kernel_timeline(&self) -> Result<Option<kernels::kernel_timeline::TimelineRecords>> {
        Ok(None)
    }

    /// Tells the backend the largest steps it will be given, once the KV cache is sized and
    /// before the first step, so that it can allocate per-step buffers once (a CUDA graph
    /// replays fixed addresses). The CPU backend needs nothing.
    fn plan_steps(&mut self, _limits: &StepLimits) -> Result<()> {
        Ok(())
    }

    /// Bytes the KV cache may take, asked once the weights are loaded. The CPU gives the
    /// configured budget; a GPU what `--gpu-memory-utilization` leaves after the weights and
    /// the activations of the largest step.
    fn kv_cache_budget(&self, engine: &EngineConfig, _model: &ModelConfig) -> Result<usize> {
        Ok(engine.cache.kv_cache_memory_bytes)
    }

    /// One step: `forward` computes the logits `[num_logits, vocab]` of the step's sampling
    /// rows, then each row is sampled as `step`'s sample rows say. Returns the sampled ids, and
    /// the logits of the rows that asked for them.
    ///
    /// This default downloads the logits and samples on the host with `host_sample` (the
    /// engine's [`crate::sampler::sample`], or a learner's): right for the CPU, whose
    /// "download" is the tensor itself. A GPU backend samples in a kernel and may replay a
    /// recorded graph of the whole step instead of calling `forward`.
    fn run_step(
        &self,
        step: &Self::StepMetadata,
        forward: &mut dyn FnMut() -> Result<Self::Tensor>,
        host_sample: SampleFn,
    ) -> Result<ModelRunnerOutput> {
        sample_on_host(self, step, forward, host_sample)
    }

    /// Async scheduling: like [`Backend::run_step`], but a backend whose device runs apart
    /// from the host may return `None` as soon as the step is queued; [`Backend::wait_step`]
    /// then gives its output, steps in the order they were submitted. A step prepared after
    /// this one may take this one's sampled ids as inputs before the host has seen them
    /// ([`ModelInput::from_previous_step`]). This default runs the step at once.
    fn submit_step(
        &self,
        step: &Self::StepMetadata,
        forward: &mut dyn FnMut() -> Result<Self::Tensor>,
        host_sample: SampleFn,
    ) -> Result<Option<ModelRunnerOutput>> {
        self.run_step(step, forward, host_sample).map(Some)
    }

    /// The output of the oldest step [`Backend::submit_step`] left in flight, once it is done.
    fn wait_step(&self) -> Result<ModelRunnerOutput> {
        Err(BackendError::shape(
            "wait_step",
            "this backend runs every step when it is submitted",
        ))
    }
}

/// [`Backend::run_step`]'s default: `forward`, then the logits downloaded and each sample row
/// drawn on the host with `host_sample`. A backend that overrides `run_step` to wrap the
/// forward pass (the CPU's keeps its threads hot) calls this inside.
pub(crate) fn sample_on_host<B: Backend + ?Sized>(
    backend: &B,
    step: &B::StepMetadata,
    forward: &mut dyn FnMut() -> Result<B::Tensor>,
    host_sample: SampleFn,
) -> Result<ModelRunnerOutput> {
    let logits = forward()?;
    let (rows, vocab) = backend.shape(&logits);
    let logits = backend.download_owned(logits)?; // [num_logits, vocab]
    let sample_rows = step.sample_rows();
    if rows != sample_rows.len() {
        let detail = format!("{rows} logits rows for {} sample rows", sample_rows.len());
        return Err(BackendError::shape("run_step", detail));
    }
    // The CUDA backend's sampling kernel has this name too.
    let _span = tracing::trace_span!("kernel", op = "sample").entered();
    let mut output = ModelRunnerOutput::default();
    let mut masked = Vec::new(); // a row with min_tokens' bans applied, reused
    for (row, how) in logits.chunks_exact(vocab.max(1)).zip(sample_rows) {
        let to_sample = match how.banned_token_ids.is_empty() {
            true => row,
            false => {
                masked.clear();
                masked.extend_from_slice(row);
                crate::min_tokens::mask_logits(&mut masked, &how.banned_token_ids);
                &masked[..]
            }
        };
        let mut token = host_sample(to_sample, &how.params(), how.draw());
        if how.banned_token_ids.contains(&token) {
            // The mask should have made this impossible, but a sampler can still return
            // an id of probability 0: the engine's walk can run past its kept tokens by
            // float rounding, and a learner's may not skip -inf. Take the masked argmax.
            token = crate::sampler::argmax(to_sample);
        }
        output.sampled_token_ids.push(token);
        output.logits.push(how.output_logits.then(|| row.to_vec()));
    }
    Ok(output)
}
