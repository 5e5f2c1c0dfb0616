//! Token embedding lookup, the twin of `CpuBackend::embedding`. Kernel: `cuda/embedding.cu`.

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut};
use half::bf16;

use crate::error::{check_len, to_u32, Result};
use crate::row_launch;

pub(crate) const FILE: &str = "embedding.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/embedding.cu");

/// The compiled lookup kernel.
#[derive(Debug, Clone)]
pub struct Embedding {
    kernel: CudaFunction,
}

impl Embedding {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("embedding_kernel")?,
        })
    }

    /// `out[t] = table[ids[t]]`; an id at or past `vocab_size` gives a row of NaN.
    pub fn embedding(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, bf16>, // [num_tokens, hidden_size]
        ids: &CudaView<'_, u32>,         // [num_tokens]
        table: &CudaView<'_, bf16>,      // [vocab_size, hidden_size]
        hidden_size: usize,
    ) -> Result<()> {
        let vocab = table.len().checked_div(hidden_size).unwrap_or(0);
        self.vocab_parallel(stream, out, ids, table, 0, vocab, hidden_size)
    }

    /// One tensor-parallel rank's lookup (vLLM's `VocabParallelEmbedding`): `table` holds rows
    /// `first_id ..` of a `vocab_size` vocabulary; an id another rank holds gives a row of
    /// zeros (the all-reduce after it adds the owner's row), one at or past `vocab_size` NaN.
    #[allow(clippy::too_many_arguments)] // the kernel's own arguments, each one a shape
    pub fn vocab_parallel(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, bf16>, // [num_tokens, hidden_size]
        ids: &CudaView<'_, u32>,         // [num_tokens]
        table: &CudaView<'_, bf16>,      // [table_rows, hidden_size]: ids first_id..
        first_id: usize,
        vocab_size: usize,
        hidden_size: usize,
    ) -> Result<()> {
        const K: &str = "embedding";
        let n = ids.len();
        check_len(K, "out", out.len(), n * hidden_size)?;
        let rows = table.len().checked_div(hidden_size).unwrap_or(0);
        check_len(K, "table", table.len(), rows * hidden_size)?;
        if n == 0 || hidden_size == 0 {
            return Ok(());
        }
        let (r, f, v, h) = (
            to_u32(K, "table_rows", rows)?,
            to_u32(K, "first_id", first_id)?,
            to_u32(K, "vocab_size", vocab_size)?,
            to_u32(K, "hidden_size", hidden_size)?,
        );
        let cfg = row_launch(n, crate::vector_units(hidden_size))?;
        let mut launch = Launch::new(stream, &self.kernel);
        launch
            .arg(out)
            .arg(ids)
            .arg(table)
            .arg(&r)
            .arg(&f)
            .arg(&v)
            .arg(&h);
        // SAFETY: the signature matches embedding_kernel (out, ids, table, u32 x 4); out holds
        // num_tokens rows (checked), and the kernel reads table row ids[t] - first_id only
        // when it is below table_rows, the rows `table` holds (checked).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
