//! Splitting a fused projection's output (`[q | k | v]` per row) into contiguous parts, the
//! twin of `CpuBackend::split_columns`; and the other direction, the ranks' column slices of
//! an all-gather put side by side (tensor parallelism's logits). Kernel: `cuda/split_columns.cu`.

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut};
use half::bf16;

use crate::error::{check_len, to_u32, Result};
use crate::row_launch;

pub(crate) const FILE: &str = "split_columns.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/split_columns.cu");

/// The compiled split kernel.
#[derive(Debug, Clone)]
pub struct SplitColumns {
    kernel: CudaFunction,
    gather: CudaFunction,
}

impl SplitColumns {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("split_columns_kernel")?,
            gather: module.load_function("gather_rank_columns_kernel")?,
        })
    }

    /// `parts[p][r, j] = x[r, offset_p + j]`, where part `p` is `parts[p].len() / num_rows`
    /// wide and starts after the parts before it.
    pub fn split3(
        &self,
        stream: &Arc<CudaStream>,
        parts: [&mut CudaViewMut<'_, bf16>; 3], // [num_rows, w_p] each
        x: &CudaView<'_, bf16>,                 // [num_rows, w0 + w1 + w2]
        num_rows: usize,
    ) -> Result<()> {
        const K: &str = "split_columns";
        if num_rows == 0 {
            return check_len(K, "x", x.len(), 0);
        }
        let w: Vec<usize> = parts.iter().map(|p| p.len() / num_rows).collect();
        for (p, &wp) in parts.iter().zip(&w) {
            check_len(K, "part", p.len(), num_rows * wp)?;
        }
        let width: usize = w.iter().sum();
        check_len(K, "x", x.len(), num_rows * width)?;
        if width == 0 {
            return Ok(());
        }
        let w32 = [
            to_u32(K, "w0", w[0])?,
            to_u32(K, "w1", w[1])?,
            to_u32(K, "w2", w[2])?,
        ];
        let cfg = row_launch(num_rows, crate::vector_units(width))?;
        let [p0, p1, p2] = parts;
        let mut launch = Launch::new(stream, &self.kernel);
        launch.arg(p0).arg(p1).arg(p2).arg(x);
        launch.arg(&w32[0]).arg(&w32[1]).arg(&w32[2]);
        // SAFETY: the signature matches split_columns_kernel (3 outputs, x, 3 x u32); each
        // part holds num_rows rows of its width and x num_rows rows of their sum (checked).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }

    /// `out[r, c] = x[c / w, r, c % w]` for `c < cols`: every rank's `[num_rows, w]` slice of
    /// the columns, as an all-gather lays them out one after another, put side by side. The
    /// last rank's columns past `cols` (padding of a vocabulary the ranks do not divide) are
    /// dropped.
    pub fn gather_ranks(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, bf16>, // [num_rows, cols]
        x: &CudaView<'_, bf16>,          // [ranks, num_rows, w]
        ranks: usize,
        num_rows: usize,
        cols: usize,
    ) -> Result<()> {
        const K: &str = "gather_rank_columns";
        check_len(K, "out", out.len(), num_rows * cols)?;
        if ranks == 0 || num_rows == 0 || cols == 0 {
            return check_len(K, "x", x.len(), 0);
        }
        let w = x.len() / (ranks * num_rows);
        check_len(K, "x", x.len(), ranks * num_rows * w)?;
        if cols > ranks * w || cols + w <= ranks * w {
            // Only the last rank may hold padding, and less than a whole slice of it.
            let what = format!("{cols} columns from {ranks} ranks of {w}");
            return Err(crate::error::KernelError::Unsupported { kernel: K, what });
        }
        let args = [
            to_u32(K, "num_rows", num_rows)?,
            to_u32(K, "w", w)?,
            to_u32(K, "cols", cols)?,
        ];
        let cfg = row_launch(num_rows, crate::vector_units(cols))?;
        let mut launch = Launch::new(stream, &self.gather);
        launch
            .arg(out)
            .arg(x)
            .arg(&args[0])
            .arg(&args[1])
            .arg(&args[2]);
        // SAFETY: the signature matches gather_rank_columns_kernel (out, x, 3 x u32); out holds
        // num_rows rows of cols, x ranks blocks of num_rows rows of w, and every column read,
        // c - (c / w) · w < w for c < cols <= ranks · w, lies in x (all checked above).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
