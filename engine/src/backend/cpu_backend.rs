//! The CPU backend: f32 tensors in host memory, kernels from [`crate::ops`], threads from rayon.
//!
//! It is the reference the other backends are checked against, so it computes in f32 only and
//! rejects other dtypes with [`BackendError::UnsupportedDType`]. Its memory is the host's, so
//! a step's metadata needs no copy: [`Backend::prepare_step`] keeps the [`ModelInput`] as is.
//!
//! Each op opens the same `kernel` span, with the same `op` name, as the CUDA backend's
//! launch of it, so [`crate::kernel_log`] records the same sequence on both (except that the
//! CPU runs `qkv_rotary_and_cache` as the trait's three calls, where the GPU has one kernel).
//!
//! A backend built [`with_communicator`](CpuBackend::with_communicator) is one rank of a
//! tensor-parallel group: its weights are that rank's shard
//! ([`crate::model_executor::tensor_parallel`]), its embedding table a vocabulary slice, and
//! [`Backend::all_reduce`] / [`Backend::all_gather_columns`] go through the communicator, each in
//! a `kernel` span (`all_reduce`, `all_gather`). Without one (world size 1) they do nothing and
//! open no span, so a single CPU's kernel sequence is what it always was.

pub use super::cpu_kernels::{
    CpuKernels, FusedAddRmsNormFn, PagedAttentionFn, RmsNormFn, RotaryEmbeddingFn,
};
use std::sync::{Mutex, OnceLock};

use super::cpu_gemm::{self, Isa, PackedBlocks, PackedWeight};
use super::cpu_thread_pool::HotWorkers;
use super::cuda_step::is_decode;
use super::swap_blocks::check_swap;
use super::{Backend, BackendError, DType, HostData, HostKvBlocks, Result, SwapDirection};
use crate::attention::attention_metadata::AttentionMetadata;
use crate::distributed::{CommStats, Communicator};
use crate::ops;
use crate::outputs::ModelRunnerOutput;
use crate::sampler::SampleFn;
use crate::worker::model_runner::ModelInput;

/// A row-major `[rows, cols]` f32 matrix in host memory (its dtype is always [`DType::F32`]).
#[derive(Debug, Clone, Default)]
pub struct CpuTensor {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    /// The same matrix packed into [`cpu_gemm`] panels: made at load for a model's linear
    /// weights ([`Backend::pack_weight`], which then empties `data`), or else the first time
    /// the tensor is a linear layer's weight, and kept: weights are packed once, activations
    /// never.
    pub packed: OnceLock<PackedWeight>,
    /// A weight kept in its GGUF blocks (Q8_0/Q4_1), instead of `data` (then empty) or beside
    /// it (a tied embedding table: the lookup reads `data`): a linear layer computes from the
    /// blocks ([`cpu_gemm::gemm_blocks`]), bitwise as from the dequantized f32 matrix, reading
    /// about a quarter of the bytes.
    pub blocks: Option<PackedBlocks>,
}

impl CpuTensor {
    /// A `[rows, cols]` matrix of `data`, not packed.
    pub fn new(data: Vec<f32>, rows: usize, cols: usize) -> Self {
        CpuTensor {
            data,
            rows,
            cols,
            packed: OnceLock::new(),
            blocks: None,
        }
    }

    /// Row `r` `[cols]` into `dst`, from wherever the matrix lives: the row-major `data`, or
    /// (a weight packed at load, whose `data` was dropped) the packed panels, or the blocks.
    /// `None` when `r` is past the last row.
    pub fn row_into(&self, r: usize, dst: &mut [f32]) -> Option<()> {
        if r >= self.rows {
            return None;
        }
        if !self.data.is_empty() {
            dst.copy_from_slice(&self.data[r * self.cols..(r + 1) * self.cols]);
        } else if let Some(packed) = self.packed.get() {
            packed.row_into(r, dst);
        } else if let Some(blocks) = &self.blocks {
            blocks.row_into(r, dst);
        } else {
            dst.copy_from_slice(&self.data[r * self.cols..(r + 1) * self.cols]);
        }
        Some(())
    }

    /// The matrix `[rows, cols]` row-major, from wherever it lives (see
    /// [`CpuTensor::row_into`]): borrowed when `data` holds it, else widened.
    pub fn matrix(&self) -> std::borrow::Cow<'_, [f32]> {
        match (self.data.is_empty(), self.packed.get(), &self.blocks) {
            (false, _, _) => self.data[..].into(),
            (true, Some(p), _) => p.to_f32().into(),
            (true, None, Some(b)) => b.to_f32().into(),
            (true, None, None) => self.data[..].into(),
        }
    }

    /// A `[n, k]` weight kept in its blocks (see [`CpuTensor::blocks`]).
    pub fn from_blocks(blocks: PackedBlocks) -> Self {
        CpuTensor {
            data: Vec::new(),
            rows: blocks.n,
            cols: blocks.k,
            packed: OnceLock::new(),
            blocks: Some(blocks),
        }
    }
}

/// Two tensors are equal when their matrices are (and their blocks, if any); whether one is
/// packed yet, and whether its row-major copy was dropped for the panels, does not matter.
impl PartialEq for CpuTensor {
    fn eq(&self, other: &Self) -> bool {
        (self.rows, self.cols, &self.blocks) == (other.rows, other.cols, &other.blocks)
            && self.matrix() == other.matrix()
    }
}

/// Runs the model on the CPU: whole (the default), or as one rank of a tensor-parallel group.
#[derive(Default)]
pub struct CpuBackend {
    pub kernels: CpuKernels,
    /// The instruction set of the linear layers' GEMM ([`Isa::detect`] unless set with
    /// [`CpuBackend::with_gemm_isa`]).
    pub gemm_isa: Isa,
    /// This rank's end of its group; `None` runs the whole model. A mutex because the
    /// communicator's calls take `&mut` and the backend's ops `&self`; only this rank's thread
    /// ever takes it.
    comm: Option<Mutex<Box<dyn Communicator>>>,
    /// `(rank, world_size)`, read without the lock; `(0, 1)` without a communicator.
    rank_world: (usize, usize),
    /// Whether a step keeps the pool's other workers hot
    /// ([`super::cpu_thread_pool::HotWorkers`]): unless `LAB_CPU_HOT_WORKERS=0`.
    hot_workers: bool,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("kernels", &self.kernels)
            .field("gemm_isa", &self.gemm_isa)
            .field("rank", &self.rank())
            .field("world_size", &self.world_size())
            .finish()
    }
}

impl CpuBackend {
    /// The whole model on the CPU with `kernels` (the engine's, or a learner's).
    pub fn new(kernels: CpuKernels) -> Self {
        ops::expf::prepare();
        CpuBackend {
            kernels,
            gemm_isa: Isa::detect(),
            comm: None,
            rank_world: (0, 1),
            hot_workers: hot_workers_from_env(),
        }
    }

    /// The same backend with its GEMM on `isa` (which this CPU must have: see
    /// [`Isa::available`]); weights already packed for another one keep theirs.
    pub fn with_gemm_isa(mut self, isa: Isa) -> Self {
        self.gemm_isa = isa;
        self
    }

    /// One rank of a tensor-parallel group: the collectives go through `comm`, and the
    /// weights it is given must be this rank's shard.
    pub fn with_communicator(kernels: CpuKernels, comm: Box<dyn Communicator>) -> Self {
        let rank_world = (comm.rank(), comm.world_size());
        ops::expf::prepare();
        CpuBackend {
            kernels,
            gemm_isa: Isa::detect(),
            comm: Some(Mutex::new(comm)),
            rank_world,
            hot_workers: hot_workers_from_env(),
        }
    }

    /// This rank's index in its group (0 without a communicator).
    pub fn rank(&self) -> usize {
        self.rank_world.0
    }

    /// The group's size (1 without a communicator).
    pub fn world_size(&self) -> usize {
        self.rank_world.1
    }

    /// Runs `f` on the communicator; `None` when there is none or the group has one rank.
    fn with_comm<R>(&self, f: impl FnOnce(&mut dyn Communicator) -> R) -> Option<R> {
        let comm = self.comm.as_ref().filter(|_| self.world_size() > 1)?;
        let mut comm = comm.lock().unwrap_or_else(|p| p.into_inner());
        Some(f(comm.as_mut()))
    }

    fn check_dtype(op: &'static str, dtype: DType) -> Result<()> {
        match dtype {
            DType::F32 => Ok(()),
            _ => Err(BackendError::UnsupportedDType {
                backend: "cpu",
                op,
                dtype,
                supported: DType::F32,
            }),
        }
    }

    fn f32_zeros(rows: usize, cols: usize) -> CpuTensor {
        CpuTensor::new(vec![0.0; rows * cols], rows, cols)
    }
}

/// Whether steps keep the pool's other workers hot ([`super::cpu_thread_pool::HotWorkers`]):
/// yes unless `LAB_CPU_HOT_WORKERS=0`. It cuts a parallel region's cost after serial work from
/// about 3 µs to under 1 (`examples/fork_join_cost.rs`). On a 2-core AMD EPYC the step gained
/// at most 2% and it was off by default; on a 2-core Intel Xeon (2026-11-30,
/// `examples/hot_workers_ab.rs`, steps of two engines interleaved) it made SmolLM2's decode
/// steps 3.5-6% faster: f32 at batch 1 and 8, and from the GGUF's blocks at batch 1, faster
/// in 80-92% of the pairs. A core spinning while a step runs is what OpenMP runtimes do too.
fn hot_workers_from_env() -> bool {
    std::env::var("LAB_CPU_HOT_WORKERS").map_or(true, |v| v.trim() != "0")
}

/// The CUDA backend's name for attention over `step`: its decode kernel runs a batch where
/// every sequence feeds one token and samples it, its prefill kernel every other batch.
fn attention_op(step: &ModelInput) -> &'static str {
    match is_decode(step) {
        true => "paged_attention_decode",
        false => "prefill_attention",
    }
}

/// `Err(ShapeMismatch)` unless `ok`; the detail is built only on failure.
fn ensure(ok: bool, op: &'static str, detail: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(BackendError::shape(op, detail()))
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type StepMetadata = ModelInput;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn default_dtype(&self) -> DType {
        DType::F32
    }

    fn upload(&self, data: Vec<f32>, rows: usize, cols: usize, dtype: DType) -> Result<CpuTensor> {
        Self::check_dtype("upload", dtype)?;
        let n = data.len();
        ensure(n == rows * cols, "upload", || {
            format!("{n} elements are not a {rows}x{cols} matrix")
        })?;
        Ok(CpuTensor::new(data, rows, cols))
    }

    fn upload_blocks(
        &self,
        format: gguf_hf::dequant::GgmlType,
        bytes: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Option<CpuTensor>> {
        let blocks = PackedBlocks::pack(bytes, format, rows, cols, self.gemm_isa)
            .map_err(|e| BackendError::shape("upload_blocks", e))?;
        Ok(Some(CpuTensor::from_blocks(blocks)))
    }

    fn attach_blocks(
        &self,
        t: &mut CpuTensor,
        format: gguf_hf::dequant::GgmlType,
        bytes: &[u8],
    ) -> Result<bool> {
        let blocks = PackedBlocks::pack(bytes, format, t.rows, t.cols, self.gemm_isa)
            .map_err(|e| BackendError::shape("attach_blocks", e))?;
        t.blocks = Some(blocks);
        Ok(true)
    }

    fn pack_weight(&self, t: &mut CpuTensor) -> Result<()> {
        if t.blocks.is_none() && t.packed.get().is_none() {
            let _span = tracing::debug_span!("pack_weight", rows = t.rows, cols = t.cols).entered();
            let packed = PackedWeight::pack(&t.data, t.rows, t.cols, self.gemm_isa);
            let _ = t.packed.set(packed);
        }
        // The panels (or the blocks) hold every value: the row-major copy is not needed.
        t.data = Vec::new();
        Ok(())
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        if t.data.is_empty() {
            return Ok(t.matrix().into_owned());
        }
        Ok(t.data.clone())
    }

    fn download_owned(&self, t: CpuTensor) -> Result<Vec<f32>> {
        match t.data.len() == t.rows * t.cols {
            true => Ok(t.data),
            false => self.download(&t), // packed or in blocks: unpacked into a new vector
        }
    }

    fn zeros(&self, rows: usize, cols: usize, dtype: DType) -> Result<CpuTensor> {
        Self::check_dtype("zeros", dtype)?;
        Ok(Self::f32_zeros(rows, cols))
    }

    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn dtype(&self, _t: &CpuTensor) -> DType {
        DType::F32
    }

    fn prepare_step(&self, input: ModelInput) -> Result<ModelInput> {
        let (t, meta) = (input.input_ids.len(), &input.attn_metadata);
        ensure(input.positions.len() == t, "prepare_step", || {
            format!("{} positions for {t} tokens", input.positions.len())
        })?;
        ensure(meta.num_tokens() == t, "prepare_step", || {
            format!("{} slots for {t} tokens", meta.num_tokens())
        })?;
        // The CPU runs a step when it is submitted: the model runner fills placeholders itself.
        ensure(input.from_previous_step.is_empty(), "prepare_step", || {
            "placeholder ids to take from a step in flight, on a backend without one".into()
        })?;
        Ok(input)
    }

    /// The default step (forward, then sampling on the host); with `LAB_CPU_HOT_WORKERS=1`
    /// the pool's other workers are kept hot through the forward pass, whose ~150 parallel
    /// regions may otherwise each wake a sleeping worker.
    fn run_step(
        &self,
        step: &ModelInput,
        forward: &mut dyn FnMut() -> Result<CpuTensor>,
        host_sample: SampleFn,
    ) -> Result<ModelRunnerOutput> {
        let mut hot_forward = || {
            let _hot = self.hot_workers.then(HotWorkers::start).flatten();
            forward()
        };
        super::sample_on_host(self, step, &mut hot_forward, host_sample)
    }

    fn embedding(&self, table: &CpuTensor, step: &ModelInput) -> Result<CpuTensor> {
        let _span = tracing::trace_span!("kernel", op = "embedding").entered();
        if self.world_size() > 1 {
            return self.vocab_parallel_embedding(table, step);
        }
        let (ids, h) = (&step.input_ids, table.cols);
        let mut data = vec![0.0; ids.len() * h];
        for (&id, dst) in ids.iter().zip(data.chunks_exact_mut(h.max(1))) {
            table.row_into(id as usize, dst).ok_or_else(|| {
                let vocab = table.rows;
                BackendError::shape("embedding", format!("token id {id} >= vocabulary {vocab}"))
            })?;
        }
        Ok(CpuTensor::new(data, ids.len(), h))
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> Result<CpuTensor> {
        let _span = tracing::trace_span!("kernel", op = "linear").entered();
        ensure(x.cols == w.cols, "linear", || {
            format!("x has {} columns, weight [{}, {}]", x.cols, w.rows, w.cols)
        })?;
        if let Some(b) = bias {
            ensure(b.data.len() == w.rows, "linear", || {
                format!("bias of {} for {} outputs", b.data.len(), w.rows)
            })?;
        }
        let mut out = Self::f32_zeros(x.rows, w.rows);
        if let Some(blocks) = &w.blocks {
            let bias = bias.map(|b| &b.data[..]);
            cpu_gemm::gemm_blocks(&mut out.data, &x.data, blocks, bias, x.rows);
            return Ok(out);
        }
        let packed = w
            .packed
            .get_or_init(|| PackedWeight::pack(&w.data, w.rows, w.cols, self.gemm_isa));
        cpu_gemm::gemm(
            &mut out.data,
            &x.data,
            packed,
            bias.map(|b| &b.data[..]),
            x.rows,
        );
        Ok(out)
    }

    fn rms_norm(&self, x: &CpuTensor, weight: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        let _span = tracing::trace_span!("kernel", op = "rms_norm").entered();
        ensure(weight.data.len() == x.cols, "rms_norm", || {
            format!("weight of {} for rows of {}", weight.data.len(), x.cols)
        })?;
        let mut out = Self::f32_zeros(x.rows, x.cols);
        (self.kernels.rms_norm)(&mut out.data, &x.data, &weight.data, eps);
        Ok(out)
    }

    fn fused_add_rms_norm(
        &self,
        x: &mut CpuTensor,
        res: &mut CpuTensor,
        w: &CpuTensor,
        eps: f32,
    ) -> Result<()> {
        let _span = tracing::trace_span!("kernel", op = "fused_add_rms_norm").entered();
        let (xs, rs) = ((x.rows, x.cols), (res.rows, res.cols));
        ensure(
            xs == rs && w.data.len() == x.cols,
            "fused_add_rms_norm",
            || format!("x {xs:?}, residual {rs:?}, weight of {}", w.data.len()),
        )?;
        (self.kernels.fused_add_rms_norm)(&mut x.data, &mut res.data, &w.data, eps);
        Ok(())
    }

    fn rotary_embedding(
        &self,
        step: &ModelInput,
        q: &mut CpuTensor,
        k: &mut CpuTensor,
        head_dim: usize,
        cos_sin_cache: &CpuTensor,
    ) -> Result<()> {
        let _span = tracing::trace_span!("kernel", op = "rotary_embedding").entered();
        let t = step.positions.len();
        ensure(q.rows == t && k.rows == t, "rotary_embedding", || {
            format!("q has {} rows, k {}, for {t} positions", q.rows, k.rows)
        })?;
        (self.kernels.rotary_embedding)(
            &step.positions,
            &mut q.data,
            &mut k.data,
            head_dim,
            &cos_sin_cache.data,
        );
        Ok(())
    }

    fn reshape_and_cache(
        &self,
        k: &CpuTensor,
        v: &CpuTensor,
        key_cache: &mut CpuTensor,
        value_cache: &mut CpuTensor,
        step: &ModelInput,
    ) -> Result<()> {
        let _span = tracing::trace_span!("kernel", op = "reshape_and_cache").entered();
        let slots = &step.attn_metadata.slot_mapping;
        let fits = k.rows == slots.len() && (v.rows, v.cols) == (k.rows, k.cols);
        ensure(
            fits && k.cols == key_cache.cols,
            "reshape_and_cache",
            || {
                let n = slots.len();
                format!(
                    "k {}x{}, v {}x{}, {n} slots",
                    k.rows, k.cols, v.rows, v.cols
                )
            },
        )?;
        let num_slots = key_cache.rows.min(value_cache.rows) as u64;
        if let Some(&bad) = slots.iter().find(|&&s| s >= num_slots) {
            let detail = format!("slot {bad} outside a cache of {num_slots} slots");
            return Err(BackendError::shape("reshape_and_cache", detail));
        }
        ops::cache_ops::reshape_and_cache(
            &k.data,
            &v.data,
            &mut key_cache.data,
            &mut value_cache.data,
            slots,
        );
        Ok(())
    }

    fn paged_attention(
        &self,
        q: &CpuTensor,
        key_cache: &CpuTensor,
        value_cache: &CpuTensor,
        num_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        step: &ModelInput,
    ) -> Result<CpuTensor> {
        // The CUDA backend's names, chosen by the same test (evaluated only when recorded).
        let _span = tracing::trace_span!("kernel", op = attention_op(step)).entered();
        let meta: &AttentionMetadata = &step.attn_metadata;
        ensure(q.rows == meta.num_tokens(), "paged_attention", || {
            format!("q has {} rows for {} tokens", q.rows, meta.num_tokens())
        })?;
        let mut out = Self::f32_zeros(q.rows, q.cols);
        (self.kernels.paged_attention)(
            &mut out.data,
            &q.data,
            &key_cache.data,
            &value_cache.data,
            num_kv_heads,
            head_dim,
            scale,
            meta,
        );
        Ok(out)
    }

    fn silu_and_mul(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let _span = tracing::trace_span!("kernel", op = "silu_and_mul").entered();
        ensure(x.cols.is_multiple_of(2), "silu_and_mul", || {
            format!("{} columns do not split into gate and up", x.cols)
        })?;
        let mut out = Self::f32_zeros(x.rows, x.cols / 2);
        ops::activation::silu_and_mul(&mut out.data, &x.data, x.rows);
        Ok(out)
    }

    /// The MLP's way in as two passes instead of three: [`Backend::add_rms_norm`], then the
    /// gate/up GEMM with SiLU·mul as its epilogue (`cpu_gemm::gemm_silu_and_mul`), the same
    /// bits as `linear` then `silu_and_mul` without storing the `[t, 2·inter]` projection or
    /// reading it back. (Halves that are not whole panels take the three calls.)
    fn add_rms_norm_gate_up(
        &self,
        delta: Option<CpuTensor>,
        residual: &mut CpuTensor,
        norm: &CpuTensor,
        eps: f32,
        w: &CpuTensor,
    ) -> Result<CpuTensor> {
        let x = self.add_rms_norm(delta, residual, norm, eps)?;
        let fits = match &w.blocks {
            Some(b) => cpu_gemm::silu_and_mul_fits(b.n, b.isa),
            None => {
                let isa = w.packed.get().map_or(self.gemm_isa, |p| p.isa);
                cpu_gemm::silu_and_mul_fits(w.rows, isa)
            }
        };
        if !fits || x.cols != w.cols {
            return self.silu_and_mul(&self.linear(&x, w, None)?);
        }
        let _span = tracing::trace_span!("kernel", op = "linear_silu_and_mul").entered();
        let mut out = Self::f32_zeros(x.rows, w.rows / 2);
        match &w.blocks {
            Some(blocks) => {
                cpu_gemm::gemm_blocks_silu_and_mul(&mut out.data, &x.data, blocks, x.rows)
            }
            None => {
                let packed = w
                    .packed
                    .get_or_init(|| PackedWeight::pack(&w.data, w.rows, w.cols, self.gemm_isa));
                cpu_gemm::gemm_silu_and_mul(&mut out.data, &x.data, packed, x.rows);
            }
        }
        Ok(out)
    }

    fn swap_blocks(
        &self,
        cache: &mut CpuTensor,
        host: &mut HostKvBlocks,
        mapping: &[(u32, u32)],
        direction: SwapDirection,
    ) -> Result<()> {
        let _span = tracing::trace_span!("kernel", op = "swap_blocks").entered();
        check_swap("cpu", cache.rows, cache.cols, DType::F32, host, mapping)?;
        let n = host.block_len();
        let HostData::F32(host_data) = &mut host.data else {
            unreachable!("check_swap compared the dtypes")
        };
        for &(device, block) in mapping {
            let d = device as usize * n..(device as usize + 1) * n;
            let h = block as usize * n..(block as usize + 1) * n;
            match direction {
                SwapDirection::Out => host_data[h].copy_from_slice(&cache.data[d]),
                SwapDirection::In => cache.data[d].copy_from_slice(&host_data[h]),
            }
        }
        Ok(())
    }

    fn split_columns(&self, x: &CpuTensor, widths: &[usize]) -> Result<Vec<CpuTensor>> {
        let _span = tracing::trace_span!("kernel", op = "split_columns").entered();
        let total: usize = widths.iter().sum();
        ensure(total == x.cols, "split_columns", || {
            format!("widths {widths:?} for {} columns", x.cols)
        })?;
        // Each part filled row by row as it is allocated (no zeros written first: at 512
        // tokens the zeros were as many bytes as the copy).
        let mut start = 0;
        let parts = widths
            .iter()
            .map(|&w| {
                let mut data = Vec::with_capacity(x.rows * w);
                for row in x.data.chunks_exact(x.cols.max(1)).take(x.rows) {
                    data.extend_from_slice(&row[start..start + w]);
                }
                start += w;
                CpuTensor::new(data, x.rows, w)
            })
            .collect();
        Ok(parts)
    }

    fn gather_rows(&self, x: &CpuTensor, step: &ModelInput) -> Result<CpuTensor> {
        let _span = tracing::trace_span!("kernel", op = "gather_rows").entered();
        let rows = &step.logits_indices;
        if let Some(&bad) = rows.iter().find(|&&r| r >= x.rows) {
            let detail = format!("row {bad} of a {}-row tensor", x.rows);
            return Err(BackendError::shape("gather_rows", detail));
        }
        let mut data = Vec::with_capacity(rows.len() * x.cols);
        for &r in rows {
            data.extend_from_slice(&x.data[r * x.cols..(r + 1) * x.cols]);
        }
        Ok(CpuTensor::new(data, rows.len(), x.cols))
    }

    fn comm_stats(&self) -> Option<CommStats> {
        let comm = self.comm.as_ref()?;
        // A poisoned lock only means a panic elsewhere on this thread; the counts still hold.
        let comm = comm.lock().unwrap_or_else(|p| p.into_inner());
        Some(comm.stats().clone())
    }

    fn all_reduce(&self, x: &mut CpuTensor) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let _span = tracing::trace_span!("kernel", op = "all_reduce").entered();
        self.with_comm(|c| c.all_reduce_sum(&mut x.data))
            .unwrap_or(Ok(()))?;
        Ok(())
    }

    fn all_gather_columns(&self, x: CpuTensor, cols: usize) -> Result<CpuTensor> {
        let (n, c) = (self.world_size(), x.cols);
        ensure(cols <= n * c, "all_gather_columns", || {
            format!("{cols} columns wanted from {n} ranks of {c}")
        })?;
        if n == 1 {
            return Ok(x); // the whole tensor already: no copy, no span
        }
        let _span = tracing::trace_span!("kernel", op = "all_gather").entered();
        // The communicator gathers whole buffers in rank order: [rank][row][col]. The model
        // wants each row's rank blocks side by side: [row][rank][col].
        let mut by_rank = vec![0.0; n * x.data.len()];
        self.with_comm(|comm| comm.all_gather(&x.data, &mut by_rank))
            .unwrap_or(Ok(()))?;
        let mut out = Self::f32_zeros(x.rows, cols);
        for (i, row) in out.data.chunks_exact_mut(cols.max(1)).enumerate() {
            for (r, dst) in row.chunks_mut(c.max(1)).enumerate() {
                let src = r * x.data.len() + i * c;
                dst.copy_from_slice(&by_rank[src..src + dst.len()]);
            }
        }
        Ok(out)
    }
}

impl CpuBackend {
    /// [`Backend::embedding`] over a vocabulary-parallel table (vLLM's
    /// `VocabParallelEmbedding`): every rank's shard has the same number of rows (the vocabulary
    /// padded to a multiple of the ranks), so rank `r` holds ids `r·rows .. (r+1)·rows`. An id
    /// outside them gives a row of zeros, and the all-reduce that follows adds in the one
    /// rank that holds it.
    fn vocab_parallel_embedding(&self, table: &CpuTensor, step: &ModelInput) -> Result<CpuTensor> {
        let (ids, h, rows) = (&step.input_ids, table.cols, table.rows);
        let start = self.rank() * rows;
        let vocab = self.world_size() * rows;
        let mut out = Self::f32_zeros(ids.len(), h);
        for (&id, dst) in ids.iter().zip(out.data.chunks_exact_mut(h.max(1))) {
            let id = id as usize;
            if id >= vocab {
                let detail = format!("token id {id} >= vocabulary {vocab}");
                return Err(BackendError::shape("embedding", detail));
            }
            if (start..start + rows).contains(&id) {
                table.row_into(id - start, dst);
            }
        }
        Ok(out)
    }
}
