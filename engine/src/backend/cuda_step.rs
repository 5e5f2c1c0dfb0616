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

use kernels::cudarc::driver::result::memcpy_htod_async;
use kernels::cudarc::driver::{
    CudaEvent, CudaSlice, CudaStream, CudaView, DevicePtrMut, DeviceRepr, PinnedHostSlice,
};
use kernels::prepare_inputs::{mapped_address, Handover, StagedStep, TableCorner};
use kernels::reshape_and_cache::PADDING_SLOT;
use kernels::sampling::{Sampling, TAKE_NONE};
use kernels::Kernels;

use super::{BackendError, Result, StepLimits, StepSampling};
use crate::sampler::SampleRow;
use crate::worker::model_runner::ModelInput;

/// Device buffers for the largest step, and the pinned host memory a step is staged in.
///
/// The host writes every per-step array, one after the other, into `staging` (page-locked),
/// and the block tables' used corner after them; one kernel (`kernels::prepare_inputs`) reads
/// those bytes across PCIe into `packed` at the same offsets and the corner into
/// `block_tables` ([`StepTransfer`]). Twelve copies from pageable memory, each staged by the
/// driver through a buffer of its own before it returns, had cost the host tens of
/// microseconds a step; two copy-engine copies from `staging` then cost the stream about 8 µs
/// each between two decode steps on an H200, time in which the GPU waits.
///
/// The offsets are a function of the step's (padded) token and sequence counts only
/// (`PackedLayout::new`): a decode step of n sequences always finds its arrays at the same
/// addresses, which is what a CUDA graph recorded for n sequences replays.
#[derive(Debug)]
pub struct StepBuffers {
    /// `[packed_bytes]`: the step's arrays, at `layout`'s offsets.
    packed: CudaSlice<u8>,
    /// The last step's offsets into `packed` (set by [`prepare`]).
    layout: PackedLayout,
    /// Page-locked host bytes: the packed arrays, then the block tables' used corner.
    staging: PinnedHostSlice<u8>,
    /// `staging`'s address on the device, where the driver mapped it (`None`: copies only).
    staging_address: Option<u64>,
    /// Recorded after the copies out of `staging`: the host may write it again once passed.
    staged: CudaEvent,
    pub block_tables: CudaSlice<u32>, // [max_seqs, width]
    /// The corner of `block_tables` last copied (its width, its rows), kept to skip a copy
    /// that would change nothing.
    uploaded_tables: (usize, Vec<u32>),
    /// `[max_seqs]` the sampled ids, written on the device and read back after the step.
    pub sampled: Mutex<CudaSlice<u32>>,
    pub limits: StepLimits,
    /// Distinguishes one allocation of these buffers from the next (graphs read addresses).
    pub generation: u64,
}

/// Where each array of a step sits in [`StepBuffers`]' packed bytes: `(offset, length)` in
/// elements of its type, offsets in bytes. 8-byte arrays first, every array 256-byte aligned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PackedLayout {
    slot_mapping: (usize, usize),    // u64 [tokens]
    seed: (usize, usize),            // u64 [seqs]
    position: (usize, usize),        // u64 [seqs]
    input_ids: (usize, usize),       // u32 [tokens]
    positions: (usize, usize),       // u32 [tokens]
    from_rows: (usize, usize),       // u32 [tokens]
    query_start_loc: (usize, usize), // u32 [seqs + 1]
    seq_lens: (usize, usize),        // u32 [seqs]
    logits_indices: (usize, usize),  // u32 [logits]
    temperature: (usize, usize),     // f32 [logits]
    top_k: (usize, usize),           // u32 [logits]
    top_p: (usize, usize),           // f32 [logits]
    /// Bytes used, up to the end of the last array.
    bytes: usize,
}

const PACK_ALIGN: usize = 256;

impl PackedLayout {
    /// The offsets for a step of `tokens` tokens, `seqs` sequences and `logits` sampled rows.
    fn new(tokens: usize, seqs: usize, logits: usize) -> Self {
        let mut end = 0;
        let mut place = |len: usize, elem: usize| {
            let at = end;
            end = (at + len * elem).next_multiple_of(PACK_ALIGN);
            (at, len)
        };
        let l = PackedLayout {
            slot_mapping: place(tokens, 8),
            seed: place(logits, 8),
            position: place(logits, 8),
            input_ids: place(tokens, 4),
            positions: place(tokens, 4),
            from_rows: place(tokens, 4),
            query_start_loc: place(seqs + 1, 4),
            seq_lens: place(seqs, 4),
            logits_indices: place(logits, 4),
            temperature: place(logits, 4),
            top_k: place(logits, 4),
            top_p: place(logits, 4),
            bytes: 0,
        };
        PackedLayout { bytes: end, ..l }
    }
}

/// A typed view of `(offset, len)` in `packed`.
fn view<T: DeviceRepr>(packed: &CudaSlice<u8>, (at, len): (usize, usize)) -> CudaView<'_, T> {
    // SAFETY: `at` is 256-byte aligned and `at + len * size_of::<T>()` lies inside `packed`
    // (PackedLayout::new placed it; StepBuffers::new sized `packed` for the largest step); the
    // arrays are u32, u64 and f32, for which every bit pattern is a value.
    unsafe { packed.slice(at..).transmute::<T>(len) }
        .expect("a packed array lies inside the packed buffer")
}

impl StepBuffers {
    pub fn new(stream: &Arc<CudaStream>, limits: StepLimits, generation: u64) -> Result<Self> {
        let (t, s) = (limits.max_num_tokens.max(1), limits.max_num_seqs.max(1));
        let width = limits.max_blocks_per_seq().max(1);
        let dev = |e| device("allocate step buffers", e);
        // A step fits when its tokens and sequences do ([`prepare`]); it samples at most one
        // row per sequence.
        let largest = PackedLayout::new(t, s, s).bytes;
        let ctx = stream.context();
        // SAFETY: the bytes are uninitialised until `prepare` writes a step's arrays; nothing
        // reads them before (the first copy out of them is of bytes just written).
        let staging = unsafe { ctx.alloc_pinned::<u8>(largest + s * width * 4) }.map_err(dev)?;
        Ok(StepBuffers {
            packed: stream.alloc_zeros(largest).map_err(dev)?,
            layout: PackedLayout::default(),
            staging_address: mapped_address(&staging).ok(),
            staging,
            staged: ctx.new_event(None).map_err(dev)?,
            block_tables: stream.alloc_zeros(s * width).map_err(dev)?,
            uploaded_tables: (0, Vec::new()),
            sampled: Mutex::new(stream.alloc_zeros(s).map_err(dev)?),
            limits,
            generation,
        })
    }

    /// `[tokens]` the step's token ids.
    pub fn input_ids(&self) -> CudaView<'_, u32> {
        view(&self.packed, self.layout.input_ids)
    }
    /// `[tokens]` each token's position in its sequence.
    pub fn positions(&self) -> CudaView<'_, u32> {
        view(&self.packed, self.layout.positions)
    }
    /// `[tokens]` each token's KV cache slot ([`PADDING_SLOT`] for a padding row).
    pub fn slot_mapping(&self) -> CudaView<'_, u64> {
        view(&self.packed, self.layout.slot_mapping)
    }
    /// `[seqs + 1]` where each sequence's tokens start.
    pub fn query_start_loc(&self) -> CudaView<'_, u32> {
        view(&self.packed, self.layout.query_start_loc)
    }
    /// `[seqs]` each sequence's context length.
    pub fn seq_lens(&self) -> CudaView<'_, u32> {
        view(&self.packed, self.layout.seq_lens)
    }
    /// `[logits]` the token rows whose logits are computed.
    pub fn logits_indices(&self) -> CudaView<'_, u32> {
        view(&self.packed, self.layout.logits_indices)
    }
    /// `[logits]` each sampled row's parameters (kernels::sampling::RowParams).
    pub fn temperature(&self) -> CudaView<'_, f32> {
        view(&self.packed, self.layout.temperature)
    }
    pub fn top_k(&self) -> CudaView<'_, u32> {
        view(&self.packed, self.layout.top_k)
    }
    pub fn top_p(&self) -> CudaView<'_, f32> {
        view(&self.packed, self.layout.top_p)
    }
    pub fn seed(&self) -> CudaView<'_, u64> {
        view(&self.packed, self.layout.seed)
    }
    pub fn position(&self) -> CudaView<'_, u64> {
        view(&self.packed, self.layout.position)
    }
}

/// How a step's bytes cross between host and device: its staged inputs in, its sampled ids
/// out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepTransfer {
    /// Kernels read and write page-locked host memory themselves: one reads the staged
    /// inputs (`kernels::prepare_inputs`, the hand-over of async scheduling included), one
    /// writes the sampled ids into the step's host slot (`Sampling::send_sampled_ids`). The
    /// default.
    Kernel,
    /// The copy engine: one copy for the packed arrays, a 2-D copy for the tables' corner,
    /// then the hand-over kernel; the ids back by a copy on a second stream
    /// (`LAB_STEP_TRANSFER=copy`, and wherever the driver did not map the memory for the device).
    Copy,
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
    from_rows: Vec<u32>,
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
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    stream: &Arc<CudaStream>,
    pool: &StepPool,
    limits: StepLimits,
    next_generation: &mut u64,
    input: ModelInput,
    pad_to: Option<usize>,
    kernels: &Kernels,
    via: StepTransfer,
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
    let takes_previous = !input.from_previous_step.is_empty();
    if !fits {
        // Every stream must be done with the old buffers before they are freed: the last
        // step's ids may still be on their way to the host on the backend's download stream
        // (a rare path: only a step larger than the planned limits gets here).
        stream
            .context()
            .synchronize()
            .map_err(|e| device("replace step buffers", e))?;
        // The previous step's sampled ids outlive its buffers when this step takes from them.
        let previous = match (&pooled, takes_previous) {
            (Some(old), true) => {
                let old = old.sampled.lock().map_err(|_| poisoned())?;
                Some(
                    stream
                        .clone_dtod(&*old)
                        .map_err(|e| device("keep sampled ids", e))?,
                )
            }
            _ => None,
        };
        drop(pooled.take()); // free the old ones first: the new ones may be large
        *next_generation += 1;
        let new = StepBuffers::new(stream, need, *next_generation)?;
        if let Some(previous) = previous {
            let mut sampled = new.sampled.lock().map_err(|_| poisoned())?;
            let n = previous.len().min(sampled.len());
            stream
                .memcpy_dtod(&previous.slice(0..n), &mut sampled.slice_mut(0..n))
                .map_err(|e| device("keep sampled ids", e))?;
        }
        pooled = Some(new);
    }
    let mut bufs = pooled.expect("filled above");
    let width = bufs.limits.max_blocks_per_seq().max(1);

    let host = layout(&input, padded, width)?;
    upload(
        stream,
        &mut bufs,
        &host,
        width,
        takes_previous,
        kernels,
        via,
    )?;

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

/// Writes `host` into the pinned staging bytes and moves it to the device, `via` one kernel or
/// the copy engine: the packed arrays to the same offsets of `packed`, the block tables' used
/// corner into the first columns of the `width`-wide device matrix (what lies right of the
/// corner, earlier steps' entries, is never read: a kernel stops at a sequence's length), and
/// where `takes_previous`, the previous step's sampled ids into the input ids.
fn upload(
    stream: &Arc<CudaStream>,
    bufs: &mut StepBuffers,
    host: &HostStep,
    width: usize,
    takes_previous: bool,
    kernels: &Kernels,
    via: StepTransfer,
) -> Result<()> {
    let dev = |e| device("copy step metadata", e);
    let l = PackedLayout::new(
        host.input_ids.len(),
        host.seq_lens.len(),
        host.logits_indices.len(),
    );
    let tables = host.block_tables.len() * 4;
    check(
        l.bytes <= bufs.packed.len() && l.bytes + tables <= bufs.staging.len(),
        || {
            format!(
                "a step of {} bytes for buffers of {}",
                l.bytes + tables,
                bufs.staging.len()
            )
        },
    )?;
    // The previous step's copies out of `staging` must have happened before it is rewritten.
    bufs.staged.synchronize().map_err(dev)?;
    let staging = bufs.staging.as_mut_slice().map_err(dev)?;
    fn put<T: bytemuck::Pod>(staging: &mut [u8], (at, len): (usize, usize), values: &[T]) {
        debug_assert_eq!(len, values.len());
        let raw: &[u8] = bytemuck::cast_slice(values);
        staging[at..at + raw.len()].copy_from_slice(raw);
    }
    put(staging, l.slot_mapping, &host.slot_mapping);
    put(staging, l.seed, &host.seed);
    put(staging, l.position, &host.position);
    put(staging, l.input_ids, &host.input_ids);
    put(staging, l.positions, &host.positions);
    put(staging, l.from_rows, &host.from_rows);
    put(staging, l.query_start_loc, &host.query_start_loc);
    put(staging, l.seq_lens, &host.seq_lens);
    put(staging, l.logits_indices, &host.logits_indices);
    put(staging, l.temperature, &host.temperature);
    put(staging, l.top_k, &host.top_k);
    put(staging, l.top_p, &host.top_p);
    // A decode batch's tables change only when a sequence enters a new block (every 16th token
    // at batch 1): the device keeps the corner last copied, so an unchanged one is not copied
    // again (each copy is a few microseconds of the stream's time between two steps).
    let same_tables = bufs.uploaded_tables.0 == host.block_table_width
        && bufs.uploaded_tables.1 == host.block_tables;
    if !same_tables {
        put(
            staging,
            (l.bytes, host.block_tables.len()),
            &host.block_tables,
        );
    }
    bufs.layout = l;
    if let (StepTransfer::Kernel, Some(address)) = (via, bufs.staging_address) {
        let _span = tracing::trace_span!("kernel", op = "prepare_inputs").entered();
        let step = StagedStep {
            packed_bytes: l.bytes,
            handover: takes_previous.then_some(Handover {
                ids_at: l.input_ids.0,
                from_rows_at: l.from_rows.0,
                num_tokens: l.input_ids.1,
            }),
            tables: (!same_tables).then_some(TableCorner {
                at: l.bytes,
                rows: host.block_tables.len() / host.block_table_width.max(1),
                used: host.block_table_width,
            }),
        };
        let sampled = bufs.sampled.lock().map_err(|_| poisoned())?;
        let staged_len = bufs.staging.len();
        // SAFETY: `address` is `staging`'s mapped address (StepBuffers::new), `staged_len`
        // bytes; `staging` lives as long as `bufs` and is not written again until `staged`,
        // recorded below after this launch on the same stream, has been passed.
        unsafe {
            kernels.prepare_inputs.launch(
                stream,
                &mut bufs.packed,
                address,
                staged_len,
                &step,
                &sampled.as_view(),
                &mut bufs.block_tables,
                width,
            )
        }
        .map_err(|e| device("prepare inputs", e))?;
        drop(sampled);
        if !same_tables {
            bufs.uploaded_tables = (host.block_table_width, host.block_tables.clone());
        }
        bufs.staged.record(stream).map_err(dev)?;
        return Ok(());
    }
    let (packed_host, rest) = staging.split_at(l.bytes);
    {
        let (dst, _record) = bufs.packed.device_ptr_mut(stream);
        // SAFETY: `dst` holds at least `l.bytes` (checked above); the source is page-locked
        // memory owned by `bufs`, not written again until `staged` (recorded below, after
        // this copy on the same stream) has been passed.
        unsafe { memcpy_htod_async(dst, packed_host, stream.cu_stream()) }.map_err(dev)?;
    }
    if !same_tables {
        // The table bytes just written, as u32 again (4-byte aligned: l.bytes is a multiple
        // of 256 in a page-aligned allocation).
        let table_values: &[u32] = bytemuck::try_cast_slice(&rest[..tables]).map_err(|e| {
            BackendError::shape("prepare_step", format!("staged block tables: {e:?}"))
        })?;
        kernels::copy_rows::copy_rows_htod(
            stream,
            table_values,
            host.block_table_width,
            &mut bufs.block_tables,
            width,
        )
        .map_err(|e| device("copy step metadata", e))?;
        bufs.uploaded_tables = (host.block_table_width, host.block_tables.clone());
    }
    bufs.staged.record(stream).map_err(dev)?;
    if takes_previous {
        take_sampled_ids(stream, &kernels.sampling, bufs)?;
    }
    Ok(())
}

/// Async scheduling: the tokens the previous step sampled (still in `bufs.sampled`, written
/// by that step's sampler earlier on this stream) become this step's input ids where
/// `from_rows` names them; queued after the upload, before the step's embedding.
fn take_sampled_ids(
    stream: &Arc<CudaStream>,
    sampling: &Sampling,
    bufs: &mut StepBuffers,
) -> Result<()> {
    let _span = tracing::trace_span!("kernel", op = "take_sampled_ids").entered();
    let l = bufs.layout;
    let sampled = bufs.sampled.lock().map_err(|_| poisoned())?;
    let dev = |e| device("take sampled ids", e);
    // `from_rows` lies after the input ids in `packed` (PackedLayout::new places them in that
    // order, apart): split there to hold one mutably and the other not.
    let (mut head, tail) = bufs.packed.split_at_mut(l.from_rows.0);
    let (ids_at, n) = l.input_ids;
    let mut ids = head.slice_mut(ids_at..);
    // SAFETY: both arrays are u32 (any bits are a value), 256-byte aligned (PackedLayout::new)
    // and inside `packed`; `transmute*` checks that each view holds `n` elements.
    let mut ids =
        unsafe { ids.transmute_mut::<u32>(n) }.ok_or_else(|| layout_error("input ids"))?;
    let from_rows = unsafe { tail.transmute::<u32>(n) }.ok_or_else(|| layout_error("from_rows"))?;
    sampling
        .take_sampled_ids(stream, &mut ids, &from_rows, &sampled.as_view())
        .map_err(dev)
}

fn layout_error(what: &str) -> BackendError {
    BackendError::shape(
        "prepare_step",
        format!("{what} outside the packed step buffer"),
    )
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
        from_rows: vec![TAKE_NONE; input.input_ids.len()],
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
    for &(token, row) in &input.from_previous_step {
        let slot = h.from_rows.get_mut(token);
        let slot = slot.ok_or_else(|| {
            BackendError::shape("prepare_step", format!("a placeholder at token {token}"))
        })?;
        *slot = to_u32("previous sampled row", row)?;
    }
    for s in 0..n {
        let row = meta.block_table(s);
        h.block_tables[s * used..s * used + row.len()].copy_from_slice(row);
    }
    let total = input.input_ids.len();
    for i in 0..pad {
        h.input_ids.push(0);
        h.positions.push(0);
        h.from_rows.push(TAKE_NONE);
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

#[cfg(test)]
mod tests {
    use super::PackedLayout;

    fn arrays(l: &PackedLayout) -> [(usize, usize, usize); 12] {
        [
            (l.slot_mapping.0, l.slot_mapping.1, 8),
            (l.seed.0, l.seed.1, 8),
            (l.position.0, l.position.1, 8),
            (l.input_ids.0, l.input_ids.1, 4),
            (l.positions.0, l.positions.1, 4),
            (l.from_rows.0, l.from_rows.1, 4),
            (l.query_start_loc.0, l.query_start_loc.1, 4),
            (l.seq_lens.0, l.seq_lens.1, 4),
            (l.logits_indices.0, l.logits_indices.1, 4),
            (l.temperature.0, l.temperature.1, 4),
            (l.top_k.0, l.top_k.1, 4),
            (l.top_p.0, l.top_p.1, 4),
        ]
    }

    /// Every array aligned, in order, apart from the others and inside `bytes`; and a step
    /// never needs more bytes than the largest one its buffers were sized for.
    #[test]
    fn arrays_are_aligned_apart_and_fit_the_largest_step() {
        for (t_max, s_max) in [(1, 1), (2048, 256), (8192, 64), (37, 37)] {
            let largest = PackedLayout::new(t_max, s_max, s_max).bytes;
            for (t, s, n) in [
                (1, 1, 1),
                (t_max, s_max, s_max),
                (t_max, 1, 1),
                (s_max, s_max, 1),
            ] {
                let (t, s, n) = (t.min(t_max), s.min(s_max), n.min(s.min(s_max)));
                let l = PackedLayout::new(t, s, n);
                assert!(l.bytes <= largest, "{t} {s} {n}: {} > {largest}", l.bytes);
                let mut end = 0;
                for (at, len, size) in arrays(&l) {
                    assert_eq!(at % 256, 0);
                    assert!(at >= end, "overlap at {at}");
                    end = at + len * size;
                }
                assert!(end <= l.bytes);
                assert_eq!(l.input_ids.1, t);
                assert_eq!(l.query_start_loc.1, s + 1);
                assert_eq!(l.top_p.1, n);
            }
        }
    }
}
