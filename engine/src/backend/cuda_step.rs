//! One step's batch layout on the GPU (vLLM's persistent input buffers of `GPUModelRunner`).
//!
//! The host layout ([`ModelInput`]) is copied into device buffers allocated once, at the
//! largest step the engine will schedule ([`super::StepLimits`]), and reused by every step: a
//! recorded CUDA graph replays their addresses. A step borrows the buffers from the backend's
//! pool ([`StepPool`]) and gives them back when it is dropped.
//!
//! Block tables sit on the device at a fixed width (the longest sequence's block count), not
//! the batch's widest table, so the kernels' `max_blocks_per_seq` argument never changes and
//! one graph serves every context length. A step copies only the used corner of that matrix:
//! its rows as wide as its longest table ([`kernels::copy_rows`]). Copying whole rows cost a
//! model with a long context dearly: Llama-3.2-1B allows 131,072 positions, 8,192 blocks, and
//! a batch of 256 copied 8 MB a step. A decode
//! batch that will replay a graph is padded to the graph's size with rows that belong to no
//! sequence: token 0 at position 0, a slot of [`PADDING_SLOT`] (the cache write skips it), a
//! context of one token through block 0, sampled greedily and then ignored.

use std::sync::{Arc, Mutex};

use kernels::cudarc::driver::{CudaSlice, CudaStream};
use kernels::reshape_and_cache::PADDING_SLOT;

use super::{BackendError, Result, StepLimits, StepSampling};
use crate::sampler::SampleRow;
use crate::worker::model_runner::ModelInput;

/// Device buffers for the largest step; a step uses a prefix of each.
#[derive(Debug)]
pub struct StepBuffers {
    pub input_ids: CudaSlice<u32>,       // [max_tokens]
    pub positions: CudaSlice<u32>,       // [max_tokens]
    pub slot_mapping: CudaSlice<u64>,    // [max_tokens]
    pub query_start_loc: CudaSlice<u32>, // [max_seqs + 1]
    pub seq_lens: CudaSlice<u32>,        // [max_seqs]
    pub block_tables: CudaSlice<u32>,    // [max_seqs, width]
    pub logits_indices: CudaSlice<u32>,  // [max_seqs]
    // How each logits row samples, `[max_seqs]` each (kernels::sampling::RowParams).
    pub temperature: CudaSlice<f32>,
    pub top_k: CudaSlice<u32>,
    pub top_p: CudaSlice<f32>,
    pub seed: CudaSlice<u64>,
    pub position: CudaSlice<u64>,
    /// `[max_seqs]` the sampled ids, written on the device and read back after the step.
    pub sampled: Mutex<CudaSlice<u32>>,
    pub limits: StepLimits,
    /// Distinguishes one allocation of these buffers from the next (graphs read addresses).
    pub generation: u64,
}

impl StepBuffers {
    pub fn new(stream: &Arc<CudaStream>, limits: StepLimits, generation: u64) -> Result<Self> {
        let (t, s) = (limits.max_num_tokens.max(1), limits.max_num_seqs.max(1));
        let width = limits.max_blocks_per_seq().max(1);
        let dev = |e| device("allocate step buffers", e);
        Ok(StepBuffers {
            input_ids: stream.alloc_zeros(t).map_err(dev)?,
            positions: stream.alloc_zeros(t).map_err(dev)?,
            slot_mapping: stream.alloc_zeros(t).map_err(dev)?,
            query_start_loc: stream.alloc_zeros(s + 1).map_err(dev)?,
            seq_lens: stream.alloc_zeros(s).map_err(dev)?,
            block_tables: stream.alloc_zeros(s * width).map_err(dev)?,
            logits_indices: stream.alloc_zeros(s).map_err(dev)?,
            temperature: stream.alloc_zeros(s).map_err(dev)?,
            top_k: stream.alloc_zeros(s).map_err(dev)?,
            top_p: stream.alloc_zeros(s).map_err(dev)?,
            seed: stream.alloc_zeros(s).map_err(dev)?,
            position: stream.alloc_zeros(s).map_err(dev)?,
            sampled: Mutex::new(stream.alloc_zeros(s).map_err(dev)?),
            limits,
            generation,
        })
    }
}

/// Where a backend keeps its step buffers between steps.
pub type StepPool = Arc<Mutex<Option<StepBuffers>>>;

/// The host-side facts about a step the kernels' launches need, and the step's buffers.
#[derive(Debug)]
pub struct CudaStepMetadata {
    bufs: Option<StepBuffers>,
    pool: StepPool,
    /// Rows of the (padded) batch.
    pub num_tokens: usize,
    /// Sequences in the (padded) batch.
    pub num_seqs: usize,
    /// Logits rows computed (padded).
    pub num_logits: usize,
    /// Block-table width as copied (fixed per buffer generation).
    pub max_blocks_per_seq: usize,
    pub block_size: usize,
    /// Longest context and longest chunk among the real sequences.
    pub max_seq_len: usize,
    pub max_query_len: usize,
    /// Every sequence feeds one token and samples: decode attention applies.
    pub is_decode: bool,
    /// The real rows' sampling (padding rows are not in it).
    pub sample_rows: Vec<SampleRow>,
}

impl CudaStepMetadata {
    pub fn bufs(&self) -> &StepBuffers {
        self.bufs
            .as_ref()
            .expect("buffers are returned only on drop")
    }
}

impl Drop for CudaStepMetadata {
    fn drop(&mut self) {
        if let (Some(bufs), Ok(mut pool)) = (self.bufs.take(), self.pool.lock()) {
            *pool = Some(bufs);
        }
    }
}

impl StepSampling for CudaStepMetadata {
    fn sample_rows(&self) -> &[SampleRow] {
        &self.sample_rows
    }
}

/// The step laid out on the host exactly as it will sit in the buffers.
struct HostStep {
    input_ids: Vec<u32>,
    positions: Vec<u32>,
    slot_mapping: Vec<u64>,
    query_start_loc: Vec<u32>,
    seq_lens: Vec<u32>,
    /// `[seqs, block_table_width]`: each row as wide as the step's longest table, not the
    /// device buffer's full width.
    block_tables: Vec<u32>,
    block_table_width: usize,
    logits_indices: Vec<u32>,
    temperature: Vec<f32>,
    top_k: Vec<u32>,
    top_p: Vec<f32>,
    seed: Vec<u64>,
    position: Vec<u64>,
}

/// Whether every sequence feeds exactly one token and samples it: a decode batch.
pub fn is_decode(input: &ModelInput) -> bool {
    let meta = &input.attn_metadata;
    let n = meta.num_seqs();
    meta.query_start_loc
        .iter()
        .enumerate()
        .all(|(i, &q)| q == i)
        && input.input_ids.len() == n
        && input.logits_indices.iter().copied().eq(0..n)
}

/// Copies `input` into the pool's buffers (allocating them, at `limits` or larger if the step
/// needs it, when the pool is empty or too small), padding a decode batch to `pad_to` rows.
pub fn prepare(
    stream: &Arc<CudaStream>,
    pool: &StepPool,
    limits: StepLimits,
    next_generation: &mut u64,
    input: ModelInput,
    pad_to: Option<usize>,
) -> Result<CudaStepMetadata> {
    let meta = &input.attn_metadata;
    let (t, n) = (input.input_ids.len(), meta.num_seqs());
    check(input.positions.len() == t, || {
        format!("{} positions for {t} tokens", input.positions.len())
    })?;
    check(meta.num_tokens() == t, || {
        format!("{} slots for {t} tokens", meta.num_tokens())
    })?;
    check(meta.query_start_loc.len() == n + 1, || {
        format!(
            "{} query starts for {n} sequences",
            meta.query_start_loc.len()
        )
    })?;
    check(
        input.sample_rows.len() == input.logits_indices.len(),
        || {
            let (s, l) = (input.sample_rows.len(), input.logits_indices.len());
            format!("{s} sample rows for {l} logits rows")
        },
    )?;
    let decode = is_decode(&input);
    let padded = match pad_to {
        Some(p) if decode && p >= n => p,
        _ => n,
    };
    let (tokens, seqs) = (t + (padded - n), padded);
    let max_query_len = (0..n)
        .map(|s| meta.query_start_loc[s + 1] - meta.query_start_loc[s])
        .max()
        .unwrap_or(0);

    // Buffers: the pool's, unless missing or too small for this step.
    let mut pooled = pool.lock().map_err(|_| poisoned())?.take();
    let need = StepLimits {
        max_num_tokens: tokens.max(limits.max_num_tokens),
        max_num_seqs: seqs.max(limits.max_num_seqs),
        max_model_len: (meta.max_blocks_per_seq * meta.block_size).max(limits.max_model_len),
        block_size: meta.block_size,
        ..limits
    };
    let fits = pooled.as_ref().is_some_and(|b| {
        let l = b.limits;
        l.block_size == need.block_size
            && l.max_num_tokens >= tokens
            && l.max_num_seqs >= seqs
            && l.max_blocks_per_seq() >= meta.max_blocks_per_seq
    });
    if !fits {
        drop(pooled.take()); // free the old ones first: the new ones may be large
        *next_generation += 1;
        pooled = Some(StepBuffers::new(stream, need, *next_generation)?);
    }
    let mut bufs = pooled.expect("filled above");
    let width = bufs.limits.max_blocks_per_seq().max(1);

    let host = layout(&input, padded, width)?;
    let dev = |e| device("copy step metadata", e);
    macro_rules! upload {
        ($field:ident) => {
            if !host.$field.is_empty() {
                let mut dst = bufs.$field.slice_mut(0..host.$field.len());
                stream.memcpy_htod(&host.$field, &mut dst).map_err(dev)?;
            }
        };
    }
    upload!(input_ids);
    upload!(positions);
    upload!(slot_mapping);
    upload!(query_start_loc);
    upload!(seq_lens);
    // [seqs, used] into the first columns of [max_seqs, width]; what lies right of the
    // corner (earlier steps' entries) is never read: a kernel stops at a sequence's length.
    kernels::copy_rows::copy_rows_htod(
        stream,
        &host.block_tables,
        host.block_table_width,
        &mut bufs.block_tables,
        width,
    )
    .map_err(|e| device("copy step metadata", e))?;
    upload!(logits_indices);
    upload!(temperature);
    upload!(top_k);
    upload!(top_p);
    upload!(seed);
    upload!(position);

    Ok(CudaStepMetadata {
        num_tokens: tokens,
        num_seqs: seqs,
        num_logits: host.logits_indices.len(),
        max_blocks_per_seq: width,
        block_size: meta.block_size,
        max_seq_len: meta.seq_lens.iter().copied().max().unwrap_or(0),
        max_query_len,
        is_decode: decode,
        sample_rows: input.sample_rows,
        bufs: Some(bufs),
        pool: pool.clone(),
    })
}

/// The host arrays of `input`, padded to `padded` sequences, block tables as wide as the
/// longest (at most `width`, the device buffer's).
fn layout(input: &ModelInput, padded: usize, width: usize) -> Result<HostStep> {
    let meta = &input.attn_metadata;
    let n = meta.num_seqs();
    let pad = padded - n;
    // At least one column: a padding row's context is one token through block 0.
    let used = (0..n)
        .map(|s| meta.block_table(s).len())
        .max()
        .unwrap_or(0)
        .max(1);
    check(used <= width, || {
        format!("a block table of {used} blocks for buffers {width} wide")
    })?;
    let to_u32 = |what: &str, v: usize| {
        u32::try_from(v).map_err(|_| BackendError::shape("prepare_step", format!("{what} {v}")))
    };
    let mut h = HostStep {
        input_ids: input.input_ids.clone(),
        positions: input
            .positions
            .iter()
            .map(|&p| to_u32("position", p))
            .collect::<Result<_>>()?,
        slot_mapping: meta.slot_mapping.clone(),
        query_start_loc: meta
            .query_start_loc
            .iter()
            .map(|&q| to_u32("query start", q))
            .collect::<Result<_>>()?,
        seq_lens: meta
            .seq_lens
            .iter()
            .map(|&l| to_u32("sequence length", l))
            .collect::<Result<_>>()?,
        block_tables: vec![0; padded * used],
        block_table_width: used,
        logits_indices: input
            .logits_indices
            .iter()
            .map(|&r| to_u32("logits row", r))
            .collect::<Result<_>>()?,
        temperature: input.sample_rows.iter().map(|r| r.temperature).collect(),
        top_k: input
            .sample_rows
            .iter()
            .map(|r| r.top_k.map_or(0, |k| k.min(u32::MAX as usize) as u32))
            .collect(),
        top_p: input.sample_rows.iter().map(|r| r.top_p).collect(),
        seed: input.sample_rows.iter().map(|r| r.seed).collect(),
        position: input
            .sample_rows
            .iter()
            .map(|r| r.position as u64)
            .collect(),
    };
    for s in 0..n {
        let row = meta.block_table(s);
        h.block_tables[s * used..s * used + row.len()].copy_from_slice(row);
    }
    let total = input.input_ids.len();
    for i in 0..pad {
        h.input_ids.push(0);
        h.positions.push(0);
        h.slot_mapping.push(PADDING_SLOT);
        h.query_start_loc
            .push(to_u32("query start", total + i + 1)?);
        h.seq_lens.push(1);
        h.logits_indices.push(to_u32("logits row", total + i)?);
        h.temperature.push(0.0);
        h.top_k.push(0);
        h.top_p.push(1.0);
        h.seed.push(0);
        h.position.push(0);
    }
    Ok(h)
}

fn check(ok: bool, detail: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(BackendError::shape("prepare_step", detail()))
    }
}

fn poisoned() -> BackendError {
    BackendError::shape(
        "prepare_step",
        "a previous step panicked holding the buffers",
    )
}

pub(crate) fn device(
    op: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> BackendError {
    BackendError::Device {
        backend: "cuda",
        op,
        source: Box::new(e),
    }
}
