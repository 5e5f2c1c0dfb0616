//! SwiGLU's activation, the twin of `engine::ops::activation::silu_and_mul`.
//! Kernel: `cuda/silu_and_mul.cu`.

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut};
use half::bf16;

use crate::error::{check_len, to_u32, Result};
use crate::row_tiles_launch;

pub(crate) const FILE: &str = "silu_and_mul.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/silu_and_mul.cu");

/// The compiled activation kernel.
#[derive(Debug, Clone)]
pub struct SiluAndMul {
    kernel: CudaFunction,
}

impl SiluAndMul {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("silu_and_mul_kernel")?,
        })
    }

    /// `out[t, i] = silu(x[t, i]) * x[t, d + i]` for `i < d`.
    pub fn silu_and_mul(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, bf16>, // [num_tokens, d]
        x: &CudaView<'_, bf16>,          // [num_tokens, 2 * d]: gate then up
        num_tokens: usize,
    ) -> Result<()> {
        const K: &str = "silu_and_mul";
        if num_tokens == 0 {
            check_len(K, "out", out.len(), 0)?;
            return check_len(K, "x", x.len(), 0);
        }
        let d = out.len() / num_tokens;
        check_len(K, "out", out.len(), num_tokens * d)?;
        check_len(K, "x", x.len(), num_tokens * 2 * d)?;
        if d == 0 {
            return Ok(());
        }
        let d32 = to_u32(K, "d", d)?;
        let cfg = row_tiles_launch(num_tokens, crate::vector_units(d))?;
        let mut launch = Launch::new(stream, &self.kernel);
        launch.arg(out).arg(x).arg(&d32);
        // SAFETY: the signature matches silu_and_mul_kernel (out, x, u32); out holds
        // num_tokens * d elements and x twice that (checked above).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
