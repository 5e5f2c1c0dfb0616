//! Prefill attention over the paged KV cache, FlashAttention-2 style: the twin of
//! `engine::ops::paged_attention` for a whole mixed batch (prompts, chunks of prompts after a
//! cached prefix, decode rows), never materializing the score matrix.
//! Kernel: `cuda/prefill_attention.cu`.
//!
//! The batch is described as `engine::attention::AttentionMetadata` describes it: sequence `s`
//! owns query rows `query_start_loc[s]..query_start_loc[s + 1]`, the last `n_new` of its
//! `seq_lens[s]` positions, and its keys and values (already written by `reshape_and_cache`)
//! are read through its block table. A block of the kernel takes one sequence, one query head
//! and a tile of 64 or 128 rows ([`BLOCK_MS`]); the grid is sized by the longest chunk,
//! `max_query_len`.
//!
//! For decode-only batches `paged_attention::decode` is the better kernel: here a chunk of one
//! row still occupies a whole block (one warp of 16 rows computes, the others only help load).

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut, LaunchConfig};
use half::bf16;

use crate::error::{check_len, to_u32, KernelError, Result};
use crate::HEAD_DIMS;

pub(crate) const FILE: &str = "prefill_attention.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/prefill_attention.cu");

/// Query rows per block, by variant: 4 or 8 warps of 16 rows (`W` in the kernel).
/// [`DEFAULT_BLOCK_M`] is the one `forward` uses unless [`PrefillAttention::with_block_m`]
/// picks the other.
pub const BLOCK_MS: [usize; 2] = [64, 128];
/// The faster variant on the H200 for prompts (6-16% over 64 rows, kernels/README.md); 64
/// wastes less on short chunks.
pub const DEFAULT_BLOCK_M: usize = 128;
/// Keys per shared-memory tile (`BLOCK_N` in the kernel).
const BLOCK_N: usize = 64;

/// Dynamic shared memory of one block: two stages of a key tile and a value tile, rows padded
/// by 8 bf16 (`2 * 2 * BLOCK_N * (D + 8) * 2` bytes; 69,632 for head size 128, past the 48 KiB
/// a kernel gets without asking).
const fn shared_bytes(head_dim: usize) -> usize {
    2 * 2 * BLOCK_N * (head_dim + 8) * 2
}

/// The shape of a mixed batch's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillShape {
    pub num_seqs: usize,
    /// Query rows in the batch: `query_start_loc[num_seqs]`.
    pub num_tokens: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub max_blocks_per_seq: usize,
}

/// The compiled prefill kernels, by head size and tile height.
#[derive(Debug, Clone)]
pub struct PrefillAttention {
    /// `kernels[d][m]`: head size `HEAD_DIMS[d]`, `BLOCK_MS[m]` query rows per block.
    kernels: Vec<Vec<CudaFunction>>,
    block_m: usize,
}

impl PrefillAttention {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        let mut kernels = Vec::new();
        for d in HEAD_DIMS {
            let mut per_d = Vec::new();
            for m in BLOCK_MS {
                let f = module.load_function(&format!("prefill_attention_d{d}_w{}", m / 16))?;
                f.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared_bytes(d) as i32,
                )?;
                per_d.push(f);
            }
            kernels.push(per_d);
        }
        Ok(Self {
            kernels,
            block_m: DEFAULT_BLOCK_M,
        })
    }

    /// The same kernels with `block_m` query rows per block (one of [`BLOCK_MS`]).
    pub fn with_block_m(mut self, block_m: usize) -> Result<Self> {
        if !BLOCK_MS.contains(&block_m) {
            return Err(KernelError::Unsupported {
                kernel: "prefill_attention",
                what: format!("block_m {block_m} (built: {BLOCK_MS:?})"),
            });
        }
        self.block_m = block_m;
        Ok(self)
    }

    /// Query rows per block of this variant.
    pub fn block_m(&self) -> usize {
        self.block_m
    }

    /// For every query row `r` of sequence `s` at position `p`:
    /// `out[r, h] = softmax(q[r, h] · K[s][0..=p]ᵀ · scale) · V[s][0..=p]`, keys and values read
    /// through the block table of `s`. Query head `h` uses KV head `h / (num_heads /
    /// num_kv_heads)`. `max_query_len` (the longest chunk, known to the scheduler) sizes the
    /// grid. Contract, not checked on the device: `query_start_loc` is non-decreasing from 0 to
    /// `num_tokens`, each chunk is at most `max_query_len` rows and at most `seq_lens[s]`, and
    /// block-table entries for positions below `seq_lens[s]` name blocks inside the caches.
    #[allow(clippy::too_many_arguments)] // mirrors the kernel's signature
    pub fn forward(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, bf16>, // [num_tokens, num_heads, head_dim]
        query: &CudaView<'_, bf16>,      // [num_tokens, num_heads, head_dim]
        key_cache: &CudaView<'_, bf16>,  // [num_blocks, block_size, num_kv_heads, head_dim]
        value_cache: &CudaView<'_, bf16>, // [num_blocks, block_size, num_kv_heads, head_dim]
        block_tables: &CudaView<'_, u32>, // [num_seqs, max_blocks_per_seq]
        seq_lens: &CudaView<'_, u32>,    // [num_seqs]
        query_start_loc: &CudaView<'_, u32>, // [num_seqs + 1]
        shape: &PrefillShape,
        scale: f32,
        max_query_len: usize,
    ) -> Result<()> {
        const K: &str = "prefill_attention";
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
        let width = s.num_heads * s.head_dim;
        check_len(K, "query", query.len(), s.num_tokens * width)?;
        check_len(K, "out", out.len(), s.num_tokens * width)?;
        check_len(
            K,
            "block_tables",
            block_tables.len(),
            s.num_seqs * s.max_blocks_per_seq,
        )?;
        check_len(K, "seq_lens", seq_lens.len(), s.num_seqs)?;
        check_len(K, "query_start_loc", query_start_loc.len(), s.num_seqs + 1)?;
        let kv_row = s.block_size * s.num_kv_heads * s.head_dim;
        if kv_row == 0 || !key_cache.len().is_multiple_of(kv_row) {
            return Err(unsupported(format!(
                "key_cache holds {} elements, not whole blocks of {kv_row}",
                key_cache.len()
            )));
        }
        check_len(K, "value_cache", value_cache.len(), key_cache.len())?;
        if s.num_seqs == 0 || s.num_tokens == 0 || max_query_len == 0 {
            return Ok(());
        }

        let cfg = LaunchConfig {
            grid_dim: (
                to_u32(K, "query tiles", max_query_len.div_ceil(self.block_m))?,
                to_u32(K, "num_seqs", s.num_seqs)?,
                to_u32(K, "num_heads", s.num_heads)?,
            ),
            block_dim: (2 * self.block_m as u32, 1, 1), // a warp per 16 rows
            shared_mem_bytes: shared_bytes(s.head_dim) as u32,
        };
        let args = [
            to_u32(K, "num_heads", s.num_heads)?,
            to_u32(K, "num_kv_heads", s.num_kv_heads)?,
            to_u32(K, "block_size", s.block_size)?,
            to_u32(K, "max_blocks_per_seq", s.max_blocks_per_seq)?,
        ];
        let m = BLOCK_MS
            .iter()
            .position(|&m| m == self.block_m)
            .expect("checked");
        let mut launch = Launch::new(stream, &self.kernels[d][m]);
        launch.arg(out).arg(query).arg(key_cache).arg(value_cache);
        launch.arg(block_tables).arg(seq_lens).arg(query_start_loc);
        launch.arg(&scale);
        for a in &args {
            launch.arg(a);
        }
        // SAFETY: the signature matches prefill_attention_d*_w* (out, query, key_cache,
        // value_cache, block_tables, seq_lens, query_start_loc, f32, 4 x u32); out and query
        // hold num_tokens * num_heads * head_dim elements and the tables their shapes (checked
        // above). Rows and cache reads follow query_start_loc, seq_lens and block tables, whose
        // contents the caller guarantees (documented above). The dynamic shared memory is what
        // the kernel indexes, and its limit was raised to that at load.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
