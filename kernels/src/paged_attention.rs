//! Decode attention over the paged KV cache, the twin of `engine::ops::paged_attention` for
//! decode batches (one query row per sequence, at position `seq_len - 1`).
//! Kernel: `cuda/paged_attention.cu`.
//!
//! Single pass when every context fits one partition of [`PARTITION_SIZE`] tokens and the batch
//! alone gives the GPU enough blocks; split-K otherwise ([`PagedAttention::partitions`]): each
//! partition of a sequence gets its own block, and a reduce kernel, or the last of the blocks
//! to finish ([`SplitMerge`]), merges their softmax states. The merge needs a workspace,
//! allocated once ([`SplitKWorkspace`], for sequences × heads × [`max_partitions`] rows) and
//! grown only when a batch needs more. A small batch of short contexts can instead take the
//! wide single pass ([`PagedAttention::with_wide_single_pass`]): one block of 16 warps per
//! sequence and head group, the warps merged in shared memory, one launch.
//!
//! Inside a block, K/V tiles of 32 tokens stream into a ring of shared-memory buffers with
//! `cp.async` while the block computes on an earlier tile (the kernel's header explains the
//! layout); the ring is dynamic shared memory, sized by the head size. A second kernel, the
//! mma variant ([`DecodeKernel::MmaWarpRings`]), is built beside it for the bench to time.

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut, LaunchConfig,
};
use half::bf16;

use crate::error::{check_len, to_u32, KernelError, Result};
use crate::HEAD_DIMS;

pub(crate) const FILE: &str = "paged_attention.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/paged_attention.cu");

/// Most tokens of a split-K partition. A context longer than this is split. The kernel keeps a
/// partition's block-table entries in shared memory (`MAX_PARTITION` there, the same 512).
pub const PARTITION_SIZE: usize = 512;
/// Most partitions a small batch's contexts are split into to give the GPU more blocks.
pub const MAX_SMALL_BATCH_SPLIT: usize = 16;
/// Warps per block of every ring but the wide ones (`NUM_WARPS` in the kernel).
const WARPS: usize = 4;
/// The granule a partition is cut in (`TILE` in the kernel).
const TILE: usize = 32;

/// A decode kernel's ring of K/V tiles in shared memory: `stages` tiles of `tile` tokens
/// (`Ring<D, S, TT>` in the kernel, which explains the choice), and the kernel that walks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ring {
    pub tile: usize,
    pub stages: usize,
    pub kernel: DecodeKernel,
    /// Warps a block (4, or 16 for the wide single pass: `PagedAttention::with_wide_single_pass`).
    pub warps: usize,
}

/// The two decode kernels (`cuda/paged_attention.cu`): the same grid, partitions, split-K
/// outputs and online softmax, different work inside a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeKernel {
    /// `paged_attention_decode`: the four warps share each tile (three block barriers per
    /// tile), q·k and p·V on CUDA cores. The default until 2026-11-29; kept for the bench and
    /// for A/B runs ([`PagedAttention::with_kernel`]).
    Shared,
    /// `paged_attention_decode_mma`: each warp copies, scores and accumulates its own rows of
    /// every tile with its own running softmax (no block barrier until the final merge of
    /// the four warps), q·k and p·V on tensor cores (`mma.sync`, f32 accumulation). The
    /// default: on the H200 it reached 84% of copy bandwidth at head size 128 and 82% at 64
    /// where `Shared` reached 76% and 75% (kernel_bench, 2026-11-29, kernels/README.md).
    MmaWarpRings,
}

impl DecodeKernel {
    /// The kernels' name prefix.
    fn prefix(self) -> &'static str {
        match self {
            DecodeKernel::Shared => "paged_attention_decode",
            DecodeKernel::MmaWarpRings => "paged_attention_decode_mma",
        }
    }

    /// A short label for tables (kernel_bench, test messages).
    pub fn label(self) -> &'static str {
        match self {
            DecodeKernel::Shared => "shared tiles",
            DecodeKernel::MmaWarpRings => "mma, warp rings",
        }
    }
}

impl Ring {
    /// The default kernel's ring of `tile` tokens in `stages` stages.
    const fn shared(tile: usize, stages: usize) -> Self {
        Self {
            tile,
            stages,
            kernel: DecodeKernel::Shared,
            warps: WARPS,
        }
    }

    /// The mma variant's ring (each warp owns `tile / 4` rows of every stage).
    const fn mma(tile: usize, stages: usize) -> Self {
        Self::mma_wide(tile, stages, WARPS)
    }

    /// The mma variant with `warps` warps a block, each owning `tile / warps` rows of a stage.
    const fn mma_wide(tile: usize, stages: usize, warps: usize) -> Self {
        Self {
            tile,
            stages,
            kernel: DecodeKernel::MmaWarpRings,
            warps,
        }
    }

    /// `"32-token tiles x 2 stages, shared tiles"`: how tables name the ring.
    pub fn describe(&self) -> String {
        let warps = match self.warps {
            WARPS => String::new(),
            w => format!(", {w} warps"),
        };
        format!(
            "{}-token tiles x {} stages, {}{warps}",
            self.tile,
            self.stages,
            self.kernel.label()
        )
    }

    /// Dynamic shared memory of a launch: `stages` tiles of K rows and as many V rows of
    /// `head_dim` bf16. Past the 48 KB that a kernel gets by default, hence the opt-in at
    /// load time.
    fn bytes(self, head_dim: usize) -> usize {
        self.stages * 2 * self.tile * head_dim * 2
    }
}

/// The rings built for a head size, the one launched by default first (the others are kept
/// so that one bench run can time them side by side: [`PagedAttention::with_ring`]). First the
/// mma kernel ([`DecodeKernel::MmaWarpRings`]): 16 KB tiles (64 tokens at head size 64, 32 at
/// 128) in 2 stages, the default (H200, 2026-11-29: 84% of copy bandwidth at head size 128,
/// 82% at 64), in 3 stages (1 point less), and twice that tile in 2. Then the `Shared` kernel
/// it replaced: head size 64 in 64-token tiles of 2 and 3 stages and 32-token tiles of 4;
/// head size 128 in 32-token tiles of 2 (76% in the same run) and 3 stages. Last, the wide
/// ring of [`PagedAttention::with_wide_single_pass`] ([`wide_ring`]).
pub fn rings(head_dim: usize) -> &'static [Ring] {
    const D64: [Ring; 7] = [
        Ring::mma(64, 2),
        Ring::mma(64, 3),
        Ring::mma(128, 2),
        Ring::shared(64, 2),
        Ring::shared(64, 3),
        Ring::shared(32, 4),
        Ring::mma_wide(256, 2, 16),
    ];
    const D128: [Ring; 6] = [
        Ring::mma(32, 2),
        Ring::mma(32, 3),
        Ring::mma(64, 2),
        Ring::shared(32, 2),
        Ring::shared(32, 3),
        Ring::mma_wide(128, 2, 16),
    ];
    match head_dim {
        64 => &D64,
        128 => &D128,
        _ => &[],
    }
}

/// The wide ring built for a head size (16 warps, a tile of 16 tokens a warp at head size
/// 64, 8 at 128), the one [`PagedAttention::with_wide_single_pass`] launches.
pub fn wide_ring(head_dim: usize) -> Option<Ring> {
    rings(head_dim).iter().copied().find(|r| r.warps > WARPS)
}

/// The kernel NVRTC exports for head size `head_dim`, `ring` and `heads` query heads per block
/// (`DECODE`, `DECODE_MMA` and `DECODE_MMA_WIDE` in the kernel file).
fn decode_kernel_name(head_dim: usize, ring: Ring, heads: usize) -> String {
    let (prefix, t, s) = (ring.kernel.prefix(), ring.tile, ring.stages);
    match ring.warps {
        WARPS => format!("{prefix}_d{head_dim}_t{t}_s{s}_h{heads}"),
        w => format!("{prefix}_d{head_dim}_t{t}_s{s}_w{w}_h{heads}"),
    }
}

/// Head sizes with an instantiation: `crate::HEAD_DIMS`. Query heads per block (largest
/// dividing the group):
const HEADS_PER_BLOCK: [usize; 5] = [8, 4, 3, 2, 1];

/// Query heads per block for `num_heads` query heads over `num_kv_heads` KV heads: the largest
/// of [`HEADS_PER_BLOCK`] that divides the group (each K/V row read once for all of them).
/// `num_kv_heads` must divide `num_heads` (checked by `decode`).
fn heads_per_block(num_heads: usize, num_kv_heads: usize) -> usize {
    let group = num_heads / num_kv_heads.max(1);
    HEADS_PER_BLOCK
        .into_iter()
        .find(|&h| group.is_multiple_of(h))
        .unwrap_or(1)
}

/// The shape of a decode batch's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeShape {
    pub num_seqs: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub max_blocks_per_seq: usize,
}

/// Scratch for split-K: per (sequence, head, partition) the partial sum of values, the max
/// score and the sum of exponentials; per (sequence, head group) the counter that tells the
/// last block to finish that it is the last (zero between launches: the kernel resets it).
#[derive(Debug)]
pub struct SplitKWorkspace {
    tmp_out: CudaSlice<f32>,    // [num_seqs, num_heads, max_partitions, head_dim]
    max_logits: CudaSlice<f32>, // [num_seqs, num_heads, max_partitions]
    exp_sums: CudaSlice<f32>,   // [num_seqs, num_heads, max_partitions]
    tickets: CudaSlice<u32>,    // [num_seqs, head groups], at most as many as max_logits
}

impl SplitKWorkspace {
    /// A workspace for up to `rows = num_seqs * num_heads * max_partitions` partial results.
    pub fn new(stream: &Arc<CudaStream>, rows: usize, head_dim: usize) -> Result<Self> {
        let rows = rows.max(1);
        Ok(Self {
            tmp_out: stream.alloc_zeros(rows * head_dim.max(1))?,
            max_logits: stream.alloc_zeros(rows)?,
            exp_sums: stream.alloc_zeros(rows)?,
            tickets: stream.alloc_zeros(rows)?,
        })
    }

    fn ensure(&mut self, stream: &Arc<CudaStream>, rows: usize, head_dim: usize) -> Result<()> {
        if self.max_logits.len() < rows || self.tmp_out.len() < rows * head_dim {
            *self = Self::new(stream, rows, head_dim)?;
        }
        Ok(())
    }
}

/// How a split context's partitions are merged (the kernel's header compares the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitMerge {
    /// A second kernel, `paged_attention_reduce`: one block per sequence and query head.
    ReduceKernel,
    /// The last of a sequence's blocks to finish, counted with an atomic ticket: one launch.
    LastBlock,
}

/// The compiled decode kernels, by head size.
#[derive(Debug, Clone)]
pub struct PagedAttention {
    /// `decode[d][r][h]`: head size `HEAD_DIMS[d]`, ring `rings(HEAD_DIMS[d])[r]`,
    /// `HEADS_PER_BLOCK[h]` query heads per block.
    decode: Vec<Vec<Vec<CudaFunction>>>,
    /// The ring launched per head size (an index into [`rings`]; 0, the default, unless
    /// [`PagedAttention::with_ring`] chose another).
    ring: Vec<usize>,
    reduce: Vec<CudaFunction>,
    merge: SplitMerge,
    /// Fewest tokens of a small batch's partition; `None`: one tile of the ring launched.
    split_min_tokens: Option<usize>,
    /// The GPU's SMs, which a small batch's partitions are meant to fill.
    num_sms: usize,
    /// Whether the tensor-core kernel reads the tables and the older K/V rows before waiting
    /// for the previous kernel ([`PagedAttention::with_early_reads`]).
    early_reads: bool,
    /// Whether small batches are split to fill the SMs (the bench times both).
    small_batch_split: bool,
    /// Longest context a small batch runs in one pass of the wide ring instead of split
    /// (0: never; [`PagedAttention::with_wide_single_pass`]).
    wide_max_tokens: usize,
}

/// How a launch splits each sequence's context: `count` blocks per sequence and head group
/// (the grid's z), each taking an even share of the context in whole tiles, but at least
/// `min_tokens` (`partition_tokens` in the kernel). A CUDA graph recorded for one
/// `Partitions` stays right while contexts grow, as long as this stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partitions {
    pub count: usize,
    pub min_tokens: usize,
    /// One partition taken by the wide ring's block ([`PagedAttention::with_wide_single_pass`]).
    pub wide: bool,
}

/// The most partitions [`PagedAttention::partitions`] gives a batch whose contexts are at most
/// `max_model_len` tokens: what a split-K workspace is sized for, per sequence and head.
pub fn max_partitions(max_model_len: usize) -> usize {
    long_context_partitions(max_model_len).max(MAX_SMALL_BATCH_SPLIT)
}

/// Partitions that keep every partition of the longest context within [`PARTITION_SIZE`].
fn long_context_partitions(max_seq_len: usize) -> usize {
    max_seq_len.div_ceil(PARTITION_SIZE).max(1)
}

impl PagedAttention {
    pub(crate) fn load(module: &Arc<CudaModule>, num_sms: usize) -> Result<Self> {
        let load = |name: String, bytes: usize| -> Result<CudaFunction> {
            let f = module.load_function(&name)?;
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )?;
            Ok(f)
        };
        let mut decode = Vec::new();
        for d in HEAD_DIMS {
            let mut per_ring = Vec::new();
            for ring in rings(d) {
                let per_h = HEADS_PER_BLOCK
                    .iter()
                    .map(|&h| load(decode_kernel_name(d, *ring, h), ring.bytes(d)))
                    .collect::<Result<Vec<_>>>()?;
                per_ring.push(per_h);
            }
            decode.push(per_ring);
        }
        let reduce = HEAD_DIMS
            .iter()
            .map(|d| module.load_function(&format!("paged_attention_reduce_d{d}")))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Self {
            decode,
            ring: vec![0; HEAD_DIMS.len()],
            reduce,
            merge: SplitMerge::ReduceKernel,
            split_min_tokens: None,
            num_sms,
            early_reads: false,
            small_batch_split: true,
            wide_max_tokens: 0,
        })
    }

    /// The same kernels, the tensor-core one (`DecodeKernel::MmaWarpRings`) copying each
    /// sequence's block-table entries and its context's K/V rows before it waits for the
    /// previous kernel (programmatic dependent launch), all but the last token's row, which it
    /// copies after the wait, with q. Only for a decode step launched right after the kernel
    /// that wrote that step's K/V rows (the last token of each sequence) and nothing else the
    /// launch reads: then the context streams under that kernel's tail. Off unless asked for, as
    /// the contract is the caller's to keep; the engine's decode steps keep it and ask for it
    /// (`LAB_ATTENTION_EARLY=0` turns it off there). The shared-tile kernel ignores it.
    pub fn with_early_reads(mut self, early: bool) -> Self {
        self.early_reads = early;
        self
    }

    /// The same kernels, merging split contexts with `merge`.
    pub fn with_merge(mut self, merge: SplitMerge) -> Self {
        self.merge = merge;
        self
    }

    /// The same kernels, cutting a small batch's contexts into partitions of at least `tokens`
    /// (a multiple of 32; by default one tile of the ring launched).
    pub fn with_split_min_tokens(mut self, tokens: usize) -> Self {
        self.split_min_tokens = Some(tokens.div_ceil(TILE).max(1) * TILE);
        self
    }

    /// The same kernels, splitting small batches' contexts over more blocks or not.
    pub fn with_small_batch_split(mut self, split: bool) -> Self {
        self.small_batch_split = split;
        self
    }

    /// The same kernels, running a small batch (one [`PagedAttention::partitions`] would split)
    /// whose contexts are at most `max_tokens` long (capped at [`PARTITION_SIZE`]; 0: never) in
    /// one pass of the wide ring ([`wide_ring`]): one block of 16 warps per sequence and head
    /// group, the warps merged in shared memory, no reduce kernel. The split spreads a short
    /// context over many blocks to shorten its walk, then pays a second launch and a round
    /// trip through global memory to merge them; the wide block walks the same context in
    /// one or two tiles.
    pub fn with_wide_single_pass(mut self, max_tokens: usize) -> Self {
        self.wide_max_tokens = max_tokens.min(PARTITION_SIZE);
        self
    }

    /// How a decode batch of `num_seqs` sequences, the longest `max_seq_len` tokens, is split.
    ///
    /// Without a split a batch runs `num_seqs × head groups` blocks (a head group: the query
    /// heads of one KV head, or a part of them): 3 for SmolLM2-135M at batch 1, 8 for
    /// Llama-3.2-1B, on a GPU of 132 SMs, each block walking its whole context one tile after
    /// another. A small batch is therefore split into up to [`MAX_SMALL_BATCH_SPLIT`]
    /// partitions, as many as keep the grid near two blocks per SM, of at least one tile of
    /// the ring launched at `head_dim` each; merging them costs less than the walk it shortens;
    /// unless its contexts are within the wide single pass's reach
    /// ([`PagedAttention::with_wide_single_pass`]): then one partition, for the wide ring. A long
    /// context is split into partitions of at most [`PARTITION_SIZE`] tokens whatever the batch. The
    /// count depends on the batch size, and on `max_seq_len` only past `count × 512` tokens, so
    /// CUDA graphs keyed by it stay few.
    pub fn partitions(
        &self,
        num_seqs: usize,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        max_seq_len: usize,
    ) -> Partitions {
        let long = long_context_partitions(max_seq_len);
        let blocks = num_seqs * (num_heads / heads_per_block(num_heads, num_kv_heads));
        let small = if self.small_batch_split {
            (2 * self.num_sms / blocks.max(1)).clamp(1, MAX_SMALL_BATCH_SPLIT)
        } else {
            1
        };
        let wide = max_seq_len <= self.wide_max_tokens && wide_ring(head_dim).is_some();
        if small > long && wide {
            Partitions {
                count: 1,
                min_tokens: PARTITION_SIZE,
                wide: true,
            }
        } else if small > long {
            let tile = self.ring(head_dim).map_or(TILE, |r| r.tile);
            Partitions {
                count: small,
                min_tokens: self.split_min_tokens.unwrap_or(tile),
                wide: false,
            }
        } else {
            Partitions {
                count: long,
                min_tokens: PARTITION_SIZE,
                wide: false,
            }
        }
    }

    /// The same kernels, launching `ring` (one of [`rings`]`(head_dim)`) at `head_dim`; other
    /// head sizes are unchanged.
    pub fn with_ring(mut self, head_dim: usize, ring: Ring) -> Result<Self> {
        let d = HEAD_DIMS.iter().position(|&d| d == head_dim);
        let r = rings(head_dim).iter().position(|&r| r == ring);
        let (Some(d), Some(r)) = (d, r) else {
            return Err(KernelError::Unsupported {
                kernel: "paged_attention",
                what: format!(
                    "{ring:?} at head size {head_dim} (built: {:?})",
                    rings(head_dim)
                ),
            });
        };
        self.ring[d] = r;
        Ok(self)
    }

    /// The same kernels, launching `kernel`'s first ring (its fastest on the H200) at every
    /// head size.
    pub fn with_kernel(mut self, kernel: DecodeKernel) -> Result<Self> {
        for d in HEAD_DIMS {
            if let Some(&ring) = rings(d).iter().find(|r| r.kernel == kernel) {
                self = self.with_ring(d, ring)?;
            }
        }
        Ok(self)
    }

    /// The ring launched at `head_dim`.
    pub fn ring(&self, head_dim: usize) -> Option<Ring> {
        let d = HEAD_DIMS.iter().position(|&d| d == head_dim)?;
        rings(head_dim).get(self.ring[d]).copied()
    }

    /// `out[s, h] = softmax(q[s, h] · K[s]ᵀ · scale) · V[s]` over the `seq_lens[s]` cached tokens
    /// of sequence `s`, read through its block table. Query head `h` uses KV head
    /// `h / (num_heads / num_kv_heads)`. `max_seq_len` (the largest of `seq_lens`, known to the
    /// scheduler) sizes the grid. Contract, not checked on the device: `1 <= seq_lens[s] <=
    /// max_seq_len`, and block-table entries name blocks inside the caches.
    #[allow(clippy::too_many_arguments)] // mirrors the kernel's signature
    pub fn decode(
        &self,
        stream: &Arc<CudaStream>,
        workspace: &mut SplitKWorkspace,
        out: &mut CudaViewMut<'_, bf16>, // [num_seqs, num_heads, head_dim]
        query: &CudaView<'_, bf16>,      // [num_seqs, num_heads, head_dim]
        key_cache: &CudaView<'_, bf16>,  // [num_blocks, block_size, num_kv_heads, head_dim]
        value_cache: &CudaView<'_, bf16>, // [num_blocks, block_size, num_kv_heads, head_dim]
        block_tables: &CudaView<'_, u32>, // [num_seqs, max_blocks_per_seq]
        seq_lens: &CudaView<'_, u32>,    // [num_seqs]
        shape: &DecodeShape,
        scale: f32,
        max_seq_len: usize,
    ) -> Result<()> {
        const K: &str = "paged_attention";
        let s = shape;
        let unsupported = |what: String| KernelError::Unsupported { kernel: K, what };
        let d = HEAD_DIMS
            .iter()
            .position(|&d| d == s.head_dim)
            .ok_or_else(|| {
                unsupported(format!("head_dim {} (built: {HEAD_DIMS:?})", s.head_dim))
            })?;
        if s.num_kv_heads == 0 || !s.num_heads.is_multiple_of(s.num_kv_heads) {
            return Err(unsupported(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                s.num_heads, s.num_kv_heads
            )));
        }
        if max_seq_len > s.max_blocks_per_seq * s.block_size {
            return Err(unsupported(format!(
                "max_seq_len {max_seq_len} exceeds the block table ({} blocks of {})",
                s.max_blocks_per_seq, s.block_size
            )));
        }
        let h = HEADS_PER_BLOCK
            .iter()
            .position(|&h| h == heads_per_block(s.num_heads, s.num_kv_heads))
            .expect("heads_per_block returns one of HEADS_PER_BLOCK");
        let width = s.num_heads * s.head_dim;
        check_len(K, "query", query.len(), s.num_seqs * width)?;
        check_len(K, "out", out.len(), s.num_seqs * width)?;
        check_len(
            K,
            "block_tables",
            block_tables.len(),
            s.num_seqs * s.max_blocks_per_seq,
        )?;
        check_len(K, "seq_lens", seq_lens.len(), s.num_seqs)?;
        let kv_row = s.block_size * s.num_kv_heads * s.head_dim;
        check_len(
            K,
            "key_cache",
            key_cache.len(),
            key_cache.len() / kv_row.max(1) * kv_row,
        )?;
        check_len(K, "value_cache", value_cache.len(), key_cache.len())?;
        if s.num_seqs == 0 || max_seq_len == 0 {
            return Ok(());
        }

        // The launch depends on the batch only through `Partitions` (each block finds its
        // share of its own sequence's context on the device), so a CUDA graph captured for
        // (num_seqs, partitions) stays right while contexts grow.
        let p = self.partitions(
            s.num_seqs,
            s.num_heads,
            s.num_kv_heads,
            s.head_dim,
            max_seq_len,
        );
        let (parts, partition_size) = (p.count, p.min_tokens);
        workspace.ensure(stream, s.num_seqs * s.num_heads * parts, s.head_dim)?;
        let args = [
            to_u32(K, "num_heads", s.num_heads)?,
            to_u32(K, "num_kv_heads", s.num_kv_heads)?,
            to_u32(K, "block_size", s.block_size)?,
            to_u32(K, "max_blocks_per_seq", s.max_blocks_per_seq)?,
            to_u32(K, "min_partition", partition_size)?,
        ];
        let r = match p.wide {
            true => (rings(s.head_dim).iter())
                .position(|r| r.warps > WARPS)
                .expect("wide partitions only where a wide ring is built"),
            false => self.ring[d],
        };
        let ring = rings(s.head_dim)[r];
        let kernel = &self.decode[d][r][h];
        let cfg = LaunchConfig {
            grid_dim: (
                to_u32(K, "head chunks", s.num_heads / HEADS_PER_BLOCK[h])?,
                to_u32(K, "num_seqs", s.num_seqs)?,
                to_u32(K, "partitions", parts)?,
            ),
            block_dim: (32 * ring.warps as u32, 1, 1),
            shared_mem_bytes: ring.bytes(s.head_dim) as u32,
        };
        let ws = workspace;
        let mut launch = Launch::new(stream, kernel);
        launch
            .arg(&mut *out)
            .arg(&mut ws.tmp_out)
            .arg(&mut ws.max_logits);
        launch
            .arg(&mut ws.exp_sums)
            .arg(query)
            .arg(key_cache)
            .arg(value_cache);
        let merge_in_kernel = self.merge == SplitMerge::LastBlock;
        let no_tickets = 0u64; // a null pointer: the reduce kernel merges
        launch.arg(block_tables).arg(seq_lens);
        if merge_in_kernel {
            launch.arg(&mut ws.tickets);
        } else {
            launch.arg(&no_tickets);
        }
        launch.arg(&scale);
        for a in &args {
            launch.arg(a);
        }
        let early = u32::from(self.early_reads);
        launch.arg(&early);
        // SAFETY: the signature matches paged_attention_decode[_mma]_d*_h* (both DECODE_ARGS,
        // `early` last: reads before the wait only what the caller promises no earlier kernel
        // of the step writes, see `with_early_reads`);
        // the dynamic shared memory is the ring's bytes, as the kernel's Ring<D, S, TT>; out and
        // query hold num_seqs * num_heads * head_dim elements, the tables their shapes
        // (checked above); the workspace holds num_seqs * num_heads * parts rows (ensured).
        // Cache reads follow block tables and seq_lens, whose contents the caller guarantees
        // (documented above). Tickets: one per (sequence, head group), fewer than the
        // workspace's rows; each launch leaves them at zero. Null: the kernel leaves them alone.
        unsafe { launch.launch(cfg) }?;
        if parts == 1 || merge_in_kernel {
            return Ok(());
        }

        let reduce_cfg = LaunchConfig {
            grid_dim: (
                cfg.grid_dim.0 * HEADS_PER_BLOCK[h] as u32,
                cfg.grid_dim.1,
                1,
            ),
            block_dim: (s.head_dim as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (max_parts, psize) = (cfg.grid_dim.2, args[4]);
        let mut launch = Launch::new(stream, &self.reduce[d]);
        launch
            .arg(out)
            .arg(&ws.tmp_out)
            .arg(&ws.max_logits)
            .arg(&ws.exp_sums);
        launch.arg(seq_lens).arg(&max_parts).arg(&psize);
        // SAFETY: the signature matches paged_attention_reduce_d* (out, tmp_out, max_logits,
        // exp_sums, seq_lens, u32, u32); the grid is (num_heads, num_seqs), each block reads the
        // partitions of its sequence the decode kernel wrote (at most max_parts: both kernels
        // compute a partition's tokens with the same partition_tokens).
        unsafe { launch.launch(reduce_cfg) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cudarc::nvrtc::{compile_ptx_with_opts, sys, CompileOptions};

    /// Both kernels are built at every head size, the default first.
    #[test]
    fn every_head_size_builds_both_kernels_default_first() {
        for d in HEAD_DIMS {
            let r = rings(d);
            assert_eq!(
                r[0].kernel,
                DecodeKernel::MmaWarpRings,
                "d {d}: default first"
            );
            for k in [DecodeKernel::Shared, DecodeKernel::MmaWarpRings] {
                assert!(r.iter().any(|r| r.kernel == k), "d {d}: no {k:?}");
            }
            for ring in r {
                // The mma kernel gives each of its warps whole 8-token column blocks.
                assert_eq!(ring.tile % (8 * ring.warps), 0, "{ring:?}");
                // sm_90 allows 227 KB of shared memory per block; the static part is < 16 KB.
                assert!(ring.bytes(d) + 16 * 1024 <= 227 * 1024, "{ring:?} at d {d}");
            }
        }
    }

    /// NVRTC needs no GPU: the kernel file compiles (to PTX for sm_90; the assembler runs at
    /// start-up on the GPU machine) and exports every name `load` asks for, for both kernels.
    /// Skipped where libnvrtc is not found (CI).
    #[test]
    fn the_kernel_file_exports_every_decode_kernel_load_asks_for() {
        // SAFETY: only looks for the library; no NVRTC call.
        if !unsafe { sys::is_culib_present() } {
            eprintln!("skipped: libnvrtc was not found");
            return;
        }
        let common = include_str!("../cuda/common.cuh");
        let src = format!("{common}\n#line 1 \"{FILE}\"\n{SOURCE}");
        let opts = CompileOptions {
            arch: Some("compute_90"),
            include_paths: vec![crate::compile::cuda_include_dir()],
            options: vec!["--std=c++17".to_string()],
            ..Default::default()
        };
        let ptx = compile_ptx_with_opts(src, opts).expect("paged_attention.cu compiles");
        let ptx = ptx.to_src();
        for d in HEAD_DIMS {
            for &ring in rings(d) {
                for h in HEADS_PER_BLOCK {
                    let name = decode_kernel_name(d, ring, h);
                    assert!(ptx.contains(&format!(".entry {name}(")), "{name} missing");
                }
            }
            let reduce = format!(".entry paged_attention_reduce_d{d}(");
            assert!(ptx.contains(&reduce), "{reduce} missing");
        }
    }
}
