//! One step's batch layout on the GPU (vLLM's persistent input buffers of `GPUModelRunner`).
//!
//! The host layout ([`ModelInput`]) is copied into device buffers allocated once, at the
//! largest step the engine will schedule ([`super::StepLimits`]), and reused by every step: a
//! recorded CUDA graph replays their addresses. A step borrows the buffers from the backend's
//! pool ([`StepPool`]) and gives them back when it is dropped.
//!
//! Block tables are copied at a fixed width (the longest sequence's block count), not the
//! batch's widest table, so the kernels' `max_blocks_per_seq` argument never changes. (That
//! costs a model with a long context dearly: Llama-3.2-1B allows 131,072 positions, 8,192
//! blocks, and a batch of 256 copies 8 MB of block tables a step. Copying only what changed,
//! as vLLM v1 does, is the way out; a width per graph is another.) A decode
//! batch that will replay a graph is padded to the graph's size with rows that belong to no
//! sequence: token 0 at position 0, a slot of [`PADDING_SLOT`] (the cache write skips it), a
//! context of one token through block 0, sampled greedily and then ignored.

use std::sync::{Arc, Mutex};

use kernels::cudarc::driver::{CudaSlice, CudaStream, CudaView};
use kernels::reshape_and_cache::PADDING_SLOT;

use super::{BackendError, Result, StepLimits, StepSampling};
use crate::sampler::SampleRow;
use crate::worker::model_runner::ModelInput;

/// Where each of a step's arrays sits in the packed buffer (bytes), for the step's sizes:
/// one after the other, each at a 16-byte boundary. A step's arrays are filled on the host in
/// this layout and copied with one host-to-device copy (each copy from pageable memory costs
/// the host several microseconds, and a step has twelve arrays). A decode step that replays a
/// graph always has the same sizes, so the same offsets: the addresses the graph recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packing {
    tokens: usize,
    seqs: usize,
    width: usize,
    input_ids: usize,       // u32 [tokens]
    positions: usize,       // u32 [tokens]
    slot_mapping: usize,    // u64 [tokens]
    query_start_loc: usize, // u32 [seqs + 1]
    seq_lens: usize,        // u32 [seqs]
    block_tables: usize,    // u32 [seqs, width]
    logits_indices: usize,  // u32 [logits]
    // How each logits row samples, [logits] each (kernels::sampling::RowParams).
    temperature: usize, // f32
    top_k: usize,       // u32
    top_p: usize,       // f32
    seed: usize,        // u64
    position: usize,    // u64
    /// Bytes used.
    end: usize,
}

impl Packing {
    /// The layout for `tokens` rows, `seqs` sequences (also the most logits rows) and block
    /// tables `width` wide.
    pub fn new(tokens: usize, seqs: usize, width: usize) -> Self {
        let mut at = 0;
        let mut next = |bytes: usize| {
            let offset = at;
            at = (at + bytes).next_multiple_of(16);
            offset
        };
        let mut p = Packing {
            tokens,
            seqs,
            width,
            input_ids: next(4 * tokens),
            positions: next(4 * tokens),
            slot_mapping: next(8 * tokens),
            query_start_loc: next(4 * (seqs + 1)),
            seq_lens: next(4 * seqs),
            block_tables: next(4 * seqs * width),
            logits_indices: next(4 * seqs),
            temperature: next(4 * seqs),
            top_k: next(4 * seqs),
            top_p: next(4 * seqs),
            seed: next(8 * seqs),
            position: next(8 * seqs),
            end: 0,
        };
        p.end = at;
        p
    }
}

/// Device memory for the largest step; a step's arrays are packed at its start ([`Packing`]).
#[derive(Debug)]
pub struct StepBuffers {
    packed: CudaSlice<u8>,
    /// The current step's layout.
    packing: Packing,
    /// The host side of the one copy, reused from step to step.
    staging: Vec<u8>,
    /// `[max_seqs]` the sampled ids, written on the device and read back after the step.
    pub sampled: Mutex<CudaSlice<u32>>,
    pub limits: StepLimits,
    /// Distinguishes one allocation of these buffers from the next (graphs read addresses).
    pub generation: u64,
}

/// The current step's array `$name` of `$t`, `$len` elements (a field of [`Packing`]).
macro_rules! packed_view {
    ($(#[$doc:meta])* $name:ident: $t:ty, $len:expr) => {
        $(#[$doc])*
        pub fn $name(&self) -> CudaView<'_, $t> {
            let p = &self.packing;
            let len = $len(p);
            let at = p.$name;
            // SAFETY: `Packing::new` placed this array at a 16-byte aligned offset with room
            // for `len` elements of `$t` below `p.end`, and the buffer holds at least `p.end`
            // bytes (checked in `prepare`); `$t` is plain data, any bytes are a valid value.
            unsafe { self.packed.slice(at..p.end).transmute::<$t>(len) }
                .expect("the packing leaves room for every array")
        }
    };
}

impl StepBuffers {
    pub fn new(stream: &Arc<CudaStream>, limits: StepLimits, generation: u64) -> Result<Self> {
        let (t, s) = (limits.max_num_tokens.max(1), limits.max_num_seqs.max(1));
        let width = limits.max_blocks_per_seq().max(1);
        let dev = |e| device("allocate step buffers", e);
        let capacity = Packing::new(t, s, width).end;
        Ok(StepBuffers {
            packed: stream.alloc_zeros(capacity).map_err(dev)?,
            packing: Packing::default(),
            staging: Vec::with_capacity(capacity),
            sampled: Mutex::new(stream.alloc_zeros(s).map_err(dev)?),
            limits,
            generation,
        })
    }

    packed_view!(
        /// `[tokens]` token ids.
        input_ids: u32, |p: &Packing| p.tokens
    );
    packed_view!(
        /// `[tokens]` positions.
        positions: u32, |p: &Packing| p.tokens
    );
    packed_view!(
        /// `[tokens]` cache slots ([`PADDING_SLOT`] for padding rows).
        slot_mapping: u64, |p: &Packing| p.tokens
    );
    packed_view!(
        /// `[seqs + 1]` each sequence's first row.
        query_start_loc: u32, |p: &Packing| p.seqs + 1
    );
    packed_view!(
        /// `[seqs]` context lengths.
        seq_lens: u32, |p: &Packing| p.seqs
    );
    packed_view!(
        /// `[seqs, width]` block tables.
        block_tables: u32, |p: &Packing| p.seqs * p.width
    );
    packed_view!(
        /// `[logits]` the rows that sample (at most `seqs`).
        logits_indices: u32, |p: &Packing| p.seqs
    );
    packed_view!(
        /// `[logits]` temperatures.
        temperature: f32, |p: &Packing| p.seqs
    );
    packed_view!(
        /// `[logits]` top-k (0: off).
        top_k: u32, |p: &Packing| p.seqs
    );
    packed_view!(
        /// `[logits]` top-p.
        top_p: f32, |p: &Packing| p.seqs
    );
    packed_view!(
        /// `[logits]` seeds.
        seed: u64, |p: &Packing| p.seqs
    );
    packed_view!(
        /// `[logits]` positions of the token drawn (the Philox counter).
        position: u64, |p: &Packing| p.seqs
    );
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
    block_tables: Vec<u32>,
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
    let packing = Packing::new(tokens, seqs, width);
    check(packing.end <= bufs.packed.len(), || {
        format!(
            "{} bytes of step arrays in a {}-byte buffer",
            packing.end,
            bufs.packed.len()
        )
    })?;
    let staging = &mut bufs.staging;
    if staging.len() < packing.end {
        staging.resize(packing.end, 0); // the gaps between arrays are never read
    }
    macro_rules! pack {
        ($($field:ident),*) => {$( put_all(&mut staging[packing.$field..], &host.$field); )*};
    }
    pack!(
        input_ids,
        positions,
        slot_mapping,
        query_start_loc,
        seq_lens,
        block_tables
    );
    pack!(logits_indices, temperature, top_k, top_p, seed, position);
    let mut dst = bufs.packed.slice_mut(0..packing.end);
    stream
        .memcpy_htod(&bufs.staging[..packing.end], &mut dst)
        .map_err(|e| device("copy step metadata", e))?;
    bufs.packing = packing;

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

/// Values that go into the packed buffer as the bytes the GPU reads (little-endian).
trait Packed: Copy {
    const SIZE: usize;
    fn put(self, out: &mut [u8]);
}

macro_rules! packed {
    ($($t:ty),*) => {$(
        impl Packed for $t {
            const SIZE: usize = size_of::<$t>();
            fn put(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
packed!(u32, u64, f32);

/// Writes `src` at the start of `dst`.
fn put_all<T: Packed>(dst: &mut [u8], src: &[T]) {
    for (d, &v) in dst.chunks_exact_mut(T::SIZE).zip(src) {
        v.put(d);
    }
}

/// The host arrays of `input`, block tables at `width`, padded to `padded` sequences.
fn layout(input: &ModelInput, padded: usize, width: usize) -> Result<HostStep> {
    let meta = &input.attn_metadata;
    let n = meta.num_seqs();
    let pad = padded - n;
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
        block_tables: vec![0; padded * width],
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
        h.block_tables[s * width..s * width + row.len()].copy_from_slice(row);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_arrays_are_aligned_disjoint_and_in_bounds() {
        for (t, s, w) in [(1, 1, 1), (7, 3, 5), (16384, 256, 128), (13, 13, 1)] {
            let p = Packing::new(t, s, w);
            let spans = [
                (p.input_ids, 4 * t),
                (p.positions, 4 * t),
                (p.slot_mapping, 8 * t),
                (p.query_start_loc, 4 * (s + 1)),
                (p.seq_lens, 4 * s),
                (p.block_tables, 4 * s * w),
                (p.logits_indices, 4 * s),
                (p.temperature, 4 * s),
                (p.top_k, 4 * s),
                (p.top_p, 4 * s),
                (p.seed, 8 * s),
                (p.position, 8 * s),
            ];
            for pair in spans.windows(2) {
                let ((a, len), (b, _)) = (pair[0], pair[1]);
                assert_eq!(a % 16, 0);
                assert!(a + len <= b, "{t} {s} {w}: arrays overlap");
            }
            let (last, len) = spans[spans.len() - 1];
            assert!(last + len <= p.end);
        }
        let mut out = [0u8; 12];
        put_all(&mut out, &[1u32, 0x0102_0304, u32::MAX]);
        assert_eq!(out, [1, 0, 0, 0, 4, 3, 2, 1, 255, 255, 255, 255]);
    }
}
