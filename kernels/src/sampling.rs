//! Greedy sampling on the device, the twin of `engine::sampler::argmax`: the lowest id among
//! the largest logits, so that only `[num_seqs]` ids cross to the host, not `[num_seqs, vocab]`
//! logits. Kernel: `cuda/sampling.cu`.

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg,
};
use half::bf16;

use crate::error::{check_len, to_u32, Result};

pub(crate) const FILE: &str = "sampling.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/sampling.cu");

/// Threads per row: a vocabulary is long (49k..128k), so a full block per row.
const THREADS: u32 = 1024;

/// The compiled argmax kernels (bf16 logits, as the LM head writes them, and f32).
#[derive(Debug, Clone)]
pub struct Sampling {
    argmax_bf16: CudaFunction,
    argmax_f32: CudaFunction,
}

impl Sampling {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            argmax_bf16: module.load_function("argmax_bf16_kernel")?,
            argmax_f32: module.load_function("argmax_f32_kernel")?,
        })
    }

    /// `out[s]` = index of the largest of `logits[s]`, the lowest on ties; NaN never wins.
    pub fn argmax(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, u32>, // [num_seqs]
        logits: &CudaView<'_, bf16>,    // [num_seqs, vocab_size]
    ) -> Result<()> {
        let vocab = self.check("argmax", out.len(), logits.len())?;
        let Some(vocab) = vocab else { return Ok(()) };
        let mut launch = stream.launch_builder(&self.argmax_bf16);
        launch.arg(out).arg(logits).arg(&vocab);
        // SAFETY: the signature matches argmax_bf16_kernel (out, logits, u32); logits holds
        // num_seqs rows of vocab_size and out num_seqs (checked), one block per row.
        unsafe { launch.launch(cfg(out_len(logits.len(), vocab))) }?;
        Ok(())
    }

    /// As [`Sampling::argmax`], for f32 logits.
    pub fn argmax_f32(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, u32>, // [num_seqs]
        logits: &CudaView<'_, f32>,     // [num_seqs, vocab_size]
    ) -> Result<()> {
        let vocab = self.check("argmax_f32", out.len(), logits.len())?;
        let Some(vocab) = vocab else { return Ok(()) };
        let mut launch = stream.launch_builder(&self.argmax_f32);
        launch.arg(out).arg(logits).arg(&vocab);
        // SAFETY: as in `argmax`, with f32 logits.
        unsafe { launch.launch(cfg(out_len(logits.len(), vocab))) }?;
        Ok(())
    }

    /// The row width, or `None` when there is nothing to do.
    fn check(&self, kernel: &'static str, num_seqs: usize, len: usize) -> Result<Option<u32>> {
        if num_seqs == 0 {
            check_len(kernel, "logits", len, 0)?;
            return Ok(None);
        }
        let vocab = len / num_seqs;
        check_len(kernel, "logits", len, num_seqs * vocab)?;
        if vocab == 0 {
            return Err(crate::KernelError::Unsupported {
                kernel,
                what: "empty vocabulary".into(),
            });
        }
        to_u32(kernel, "num_seqs", num_seqs)?;
        to_u32(kernel, "vocab_size", vocab).map(Some)
    }
}

fn out_len(len: usize, vocab: u32) -> u32 {
    (len / vocab as usize) as u32
}

fn cfg(num_seqs: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (num_seqs, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}
