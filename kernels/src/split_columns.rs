//! Splitting a fused projection's output (`[q | k | v]` per row) into contiguous parts, the
//! twin of `CpuBackend::split_columns`. Kernel: `cuda/split_columns.cu`.

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
}

impl SplitColumns {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("split_columns_kernel")?,
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
}
