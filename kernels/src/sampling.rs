//! Sampling on the device, so that only `[num_seqs]` ids cross to the host, not
//! `[num_seqs, vocab]` logits. Kernel: `cuda/sampling.cu`.
//!
//! - [`Sampling::argmax`]: the twin of `engine::sampler::argmax` (the lowest id among the
//!   largest logits).
//! - [`Sampling::sample`]: the twin of `engine::sampler::sample` for a batch of rows, each with
//!   its temperature (0 = greedy), top-k (0 = off), top-p (1 = off), seed and position; the
//!   draw is `engine::philox::uniform(seed, position)`, computed on the device by a twin of
//!   Philox4x32-10. Top-k, top-p and the draw are thresholds in the CPU's sorted order of
//!   (logit, id), found by radix selection over the logit's bits, then the id by counting:
//!   no sort, any vocabulary size; weights are summed in fixed point, so a row gives the same
//!   token on every run (see the `.cu`).
//! - [`Sampling::mask_logits`]: vLLM's `min_tokens`: sets listed (row, id) logits to -inf in
//!   place before sampling, so a request's stop tokens cannot be picked until it has
//!   `min_tokens` tokens. Both samplers then behave as the CPU's on the masked row.
//! - [`Sampling::take_sampled_ids`]: async scheduling's hand-over: a step's decodes take
//!   their input ids from the previous step's sampled ids on the device.
//! - [`Sampling::send_sampled_ids`]: the sampled ids written by the device into page-locked
//!   host memory, where the host reads them after the step.
//! - [`Sampling::sample_reference`]: the first version of the same sampler
//!   (`cuda/sampling_reference.cu`): the same function, so the same token on every row, by more
//!   passes over the row and contended 64-bit atomics. Kept as the test's oracle and
//!   `kernel_bench`'s baseline.

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut, LaunchConfig};
use half::bf16;

use crate::error::{check_len, to_u32, Result};

pub(crate) const FILE: &str = "sampling.cu";
/// `sampling.cu`, then the first version (`sampling_reference.cu`, which uses its helpers),
/// as one program.
pub(crate) const SOURCE: &str = concat!(
    include_str!("../cuda/sampling.cu"),
    "\n#line 1 \"sampling_reference.cu\"\n",
    include_str!("../cuda/sampling_reference.cu"),
);

/// Threads per row: a vocabulary is long (49k..128k), so a full block per row. The sample
/// kernels are compiled for at most this many (`SAMPLE_THREADS` in `sampling.cu`), with two
/// blocks per SM, so that a batch of 256 rows runs in one wave on 132 SMs.
const THREADS: u32 = 1024;

/// The compiled sampling kernels (bf16 logits, as the LM head writes them, and f32).
#[derive(Debug, Clone)]
pub struct Sampling {
    argmax_bf16: CudaFunction,
    argmax_f32: CudaFunction,
    sample_bf16: CudaFunction,
    sample_f32: CudaFunction,
    sample_bf16_reference: CudaFunction,
    sample_f32_reference: CudaFunction,
    philox: CudaFunction,
    mask_bf16: CudaFunction,
    mask_f32: CudaFunction,
    take_sampled_ids: CudaFunction,
    send_sampled_ids: CudaFunction,
}

/// In [`Sampling::take_sampled_ids`]' `from_rows`: this input token keeps its id.
pub const TAKE_NONE: u32 = u32::MAX;

/// Each row's sampling parameters, on the device, `[num_seqs]` each (a request's
/// `SamplingParams`, with its seed, and the position of the token it samples).
#[derive(Debug, Clone, Copy)]
pub struct RowParams<'a> {
    /// 0 = greedy (argmax, lowest id on ties).
    pub temperature: &'a CudaView<'a, f32>,
    /// Keep the k largest logits (equal logits: lowest ids first); 0 = keep all.
    pub top_k: &'a CudaView<'a, u32>,
    /// Keep the shortest prefix whose probability reaches top_p; 1.0 = keep all.
    pub top_p: &'a CudaView<'a, f32>,
    /// The request's seed: Philox's key.
    pub seed: &'a CudaView<'a, u64>,
    /// The sampled token's position: Philox's counter.
    pub position: &'a CudaView<'a, u64>,
}

impl Sampling {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            argmax_bf16: module.load_function("argmax_bf16_kernel")?,
            argmax_f32: module.load_function("argmax_f32_kernel")?,
            sample_bf16: module.load_function("sample_bf16_kernel")?,
            sample_f32: module.load_function("sample_f32_kernel")?,
            sample_bf16_reference: module.load_function("sample_bf16_reference_kernel")?,
            sample_f32_reference: module.load_function("sample_f32_reference_kernel")?,
            philox: module.load_function("philox_kernel")?,
            mask_bf16: module.load_function("mask_logits_bf16_kernel")?,
            mask_f32: module.load_function("mask_logits_f32_kernel")?,
            take_sampled_ids: module.load_function("take_sampled_ids_kernel")?,
            send_sampled_ids: module.load_function("send_sampled_ids_kernel")?,
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
        let mut launch = Launch::new(stream, &self.argmax_bf16);
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
        let mut launch = Launch::new(stream, &self.argmax_f32);
        launch.arg(out).arg(logits).arg(&vocab);
        // SAFETY: as in `argmax`, with f32 logits.
        unsafe { launch.launch(cfg(out_len(logits.len(), vocab))) }?;
        Ok(())
    }

    /// `out[s]` = the token `engine::sampler::sample` picks from `logits[s]` with row `s`'s
    /// parameters and the draw `engine::philox::uniform(seed[s], position[s])`.
    pub fn sample(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, u32>, // [num_seqs]
        logits: &CudaView<'_, bf16>,    // [num_seqs, vocab_size]
        params: &RowParams<'_>,
    ) -> Result<()> {
        self.launch_sample(
            (&self.sample_bf16, true),
            "sample",
            stream,
            out,
            logits,
            params,
        )
    }

    /// As [`Sampling::sample`], for f32 logits.
    pub fn sample_f32(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, u32>, // [num_seqs]
        logits: &CudaView<'_, f32>,     // [num_seqs, vocab_size]
        params: &RowParams<'_>,
    ) -> Result<()> {
        self.launch_sample(
            (&self.sample_f32, true),
            "sample_f32",
            stream,
            out,
            logits,
            params,
        )
    }

    /// As [`Sampling::sample`], by the first version of the kernel (same tokens, slower).
    pub fn sample_reference(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, u32>, // [num_seqs]
        logits: &CudaView<'_, bf16>,    // [num_seqs, vocab_size]
        params: &RowParams<'_>,
    ) -> Result<()> {
        let f = &self.sample_bf16_reference;
        self.launch_sample((f, false), "sample_reference", stream, out, logits, params)
    }

    /// As [`Sampling::sample_f32`], by the first version of the kernel (same tokens, slower).
    pub fn sample_f32_reference(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, u32>, // [num_seqs]
        logits: &CudaView<'_, f32>,     // [num_seqs, vocab_size]
        params: &RowParams<'_>,
    ) -> Result<()> {
        let f = &self.sample_f32_reference;
        self.launch_sample(
            (f, false),
            "sample_f32_reference",
            stream,
            out,
            logits,
            params,
        )
    }

    /// Sets `logits[rows[i], ids[i]]` to -inf for every i, in place (vLLM's `min_tokens`: a
    /// request's stop tokens, banned until it has `min_tokens` tokens). Pairs outside the
    /// logits (an id past the vocabulary) are skipped.
    pub fn mask_logits(
        &self,
        stream: &Arc<CudaStream>,
        logits: &mut CudaViewMut<'_, bf16>, // [num_seqs, vocab_size]
        num_seqs: usize,
        rows: &CudaView<'_, u32>, // [num_banned]
        ids: &CudaView<'_, u32>,  // [num_banned]
    ) -> Result<()> {
        let f = &self.mask_bf16;
        self.launch_mask(f, "mask_logits", stream, logits, num_seqs, rows, ids)
    }

    /// As [`Sampling::mask_logits`], for f32 logits.
    pub fn mask_logits_f32(
        &self,
        stream: &Arc<CudaStream>,
        logits: &mut CudaViewMut<'_, f32>, // [num_seqs, vocab_size]
        num_seqs: usize,
        rows: &CudaView<'_, u32>, // [num_banned]
        ids: &CudaView<'_, u32>,  // [num_banned]
    ) -> Result<()> {
        let f = &self.mask_f32;
        self.launch_mask(f, "mask_logits_f32", stream, logits, num_seqs, rows, ids)
    }

    /// Async scheduling: `input_ids[t] = sampled[from_rows[t]]` for every token whose row
    /// is not [`TAKE_NONE`] (and is below `sampled.len()`): decodes whose input the previous
    /// step sampled take it on the device, before the host has read it.
    pub fn take_sampled_ids(
        &self,
        stream: &Arc<CudaStream>,
        input_ids: &mut CudaViewMut<'_, u32>, // [num_tokens]
        from_rows: &CudaView<'_, u32>,        // [num_tokens]
        sampled: &CudaView<'_, u32>,          // [num_sampled]
    ) -> Result<()> {
        const K: &str = "take_sampled_ids";
        let n = input_ids.len();
        check_len(K, "from_rows", from_rows.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let (n32, s32) = (
            to_u32(K, "num_tokens", n)?,
            to_u32(K, "num_sampled", sampled.len())?,
        );
        let mut launch = Launch::new(stream, &self.take_sampled_ids);
        launch
            .arg(input_ids)
            .arg(from_rows)
            .arg(sampled)
            .arg(&n32)
            .arg(&s32);
        // SAFETY: the signature matches take_sampled_ids_kernel (input_ids, from_rows,
        // sampled, u32, u32); input_ids and from_rows hold num_tokens each (checked), and the
        // kernel reads `sampled` only below num_sampled, its length.
        unsafe { launch.launch(LaunchConfig::for_num_elems(n32)) }?;
        Ok(())
    }

    /// Writes `sampled` into page-locked host memory at device address `host_ids`
    /// ([`crate::prepare_inputs::mapped_address`]), which holds at least `host_len` ids; the
    /// host may read them once the stream has passed this launch (an event recorded after it).
    ///
    /// # Safety
    /// `host_ids` must be the device address of at least `host_len` u32 of page-locked host
    /// memory that stays allocated, and that the host neither reads nor writes, until the
    /// stream has passed this launch.
    pub unsafe fn send_sampled_ids(
        &self,
        stream: &Arc<CudaStream>,
        host_ids: u64,
        host_len: usize,
        sampled: &CudaView<'_, u32>, // [num_sampled]
    ) -> Result<()> {
        const K: &str = "send_sampled_ids";
        let n = sampled.len();
        if n > host_len {
            return Err(crate::KernelError::Shape {
                kernel: K,
                buffer: "host_ids",
                got: host_len,
                want: n,
            });
        }
        if n == 0 {
            return Ok(());
        }
        let n32 = to_u32(K, "num_sampled", n)?;
        let mut launch = Launch::new(stream, &self.send_sampled_ids);
        launch.arg(&host_ids).arg(sampled).arg(&n32);
        // SAFETY: the signature matches send_sampled_ids_kernel (u32* as a 64-bit address,
        // sampled, u32); it writes host_ids[0..n) (n <= host_len, checked) and reads sampled
        // below its length; the host memory's lifetime is the caller's promise.
        unsafe { launch.launch(LaunchConfig::for_num_elems(n32)) }?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_mask<T: cudarc::driver::DeviceRepr>(
        &self,
        function: &CudaFunction,
        kernel: &'static str,
        stream: &Arc<CudaStream>,
        logits: &mut CudaViewMut<'_, T>,
        num_seqs: usize,
        rows: &CudaView<'_, u32>,
        ids: &CudaView<'_, u32>,
    ) -> Result<()> {
        let n = rows.len();
        check_len(kernel, "ids", ids.len(), n)?;
        let Some(vocab) = self.check(kernel, num_seqs, logits.len())? else {
            return Ok(());
        };
        if n == 0 {
            return Ok(());
        }
        let (n32, seqs32) = (to_u32(kernel, "num_banned", n)?, num_seqs as u32);
        let mut launch = Launch::new(stream, function);
        launch
            .arg(logits)
            .arg(rows)
            .arg(ids)
            .arg(&n32)
            .arg(&seqs32)
            .arg(&vocab);
        // SAFETY: the signature matches mask_logits_*_kernel (logits, rows, ids, u32, u32,
        // u32); rows and ids hold num_banned each (checked), logits num_seqs rows of
        // vocab_size (checked; num_seqs fits u32 by `check`); the kernel writes only pairs
        // with row < num_seqs and id < vocab_size.
        unsafe { launch.launch(LaunchConfig::for_num_elems(n32)) }?;
        Ok(())
    }

    /// How the bf16 sample kernel fits an SM, as the driver reports it: for `kernel_bench`.
    pub fn sample_occupancy(&self) -> Result<KernelOccupancy> {
        let f = &self.sample_bf16;
        Ok(KernelOccupancy {
            registers: f.num_regs()?,
            local_bytes: f.local_size_bytes()?,
            shared_bytes: f.shared_size_bytes()?,
            blocks_per_sm: f.occupancy_max_active_blocks_per_multiprocessor(THREADS, 0, None)?,
            threads: THREADS,
        })
    }

    fn launch_sample<T: cudarc::driver::DeviceRepr>(
        &self,
        (function, split_greedy): (&CudaFunction, bool),
        kernel: &'static str,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, u32>,
        logits: &CudaView<'_, T>,
        p: &RowParams<'_>,
    ) -> Result<()> {
        let n = out.len();
        check_len(kernel, "temperature", p.temperature.len(), n)?;
        check_len(kernel, "top_k", p.top_k.len(), n)?;
        check_len(kernel, "top_p", p.top_p.len(), n)?;
        check_len(kernel, "seed", p.seed.len(), n)?;
        check_len(kernel, "position", p.position.len(), n)?;
        let Some(vocab) = self.check(kernel, n, logits.len())? else {
            return Ok(());
        };
        let mut launch = Launch::new(stream, function);
        launch
            .arg(out)
            .arg(logits)
            .arg(p.temperature)
            .arg(p.top_k)
            .arg(p.top_p)
            .arg(p.seed)
            .arg(p.position)
            .arg(&vocab);
        let rows = out_len(logits.len(), vocab);
        let mut config = cfg(rows);
        if split_greedy && rows as usize <= GREEDY_SPLIT_MAX_ROWS {
            config.grid_dim.1 = GREEDY_SPLITS;
        }
        // SAFETY: the signature matches sample_*_kernel (out, logits, temperature, top_k,
        // top_p, seed, position, u32); every per-row buffer holds num_seqs and logits num_seqs
        // rows of vocab_size (checked), one block per row (the grid's x), and with a split grid
        // at most GREEDY_SPLIT_MAX_ROWS rows, the kernel's scratch for split greedy rows.
        unsafe { launch.launch(config) }?;
        Ok(())
    }

    /// The device's Philox4x32-10, for checking it against `engine::philox`: for each
    /// (seed, position), `bits[4i..4i + 4]` = `philox4x32_10([position, 0, 0], seed)` and
    /// `uniforms[i]` = `uniform(seed, position)`.
    pub fn philox(
        &self,
        stream: &Arc<CudaStream>,
        bits: &mut CudaViewMut<'_, u32>,     // [n, 4]
        uniforms: &mut CudaViewMut<'_, f32>, // [n]
        seeds: &CudaView<'_, u64>,           // [n]
        positions: &CudaView<'_, u64>,       // [n]
    ) -> Result<()> {
        let n = seeds.len();
        check_len("philox", "bits", bits.len(), 4 * n)?;
        check_len("philox", "uniforms", uniforms.len(), n)?;
        check_len("philox", "positions", positions.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let n32 = to_u32("philox", "n", n)?;
        let mut launch = Launch::new(stream, &self.philox);
        launch
            .arg(bits)
            .arg(uniforms)
            .arg(seeds)
            .arg(positions)
            .arg(&n32);
        // SAFETY: the signature matches philox_kernel (uint4*, float*, u64*, u64*, u32); bits
        // holds 4n u32 (n uint4; cudarc allocations are 256-byte aligned), the others n.
        unsafe { launch.launch(LaunchConfig::for_num_elems(n32)) }?;
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

/// A kernel's resources and how many of its blocks one SM can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelOccupancy {
    /// Registers per thread.
    pub registers: i32,
    /// Local memory per thread (register spills), bytes.
    pub local_bytes: i32,
    /// Static shared memory per block, bytes.
    pub shared_bytes: i32,
    /// Blocks of `threads` threads resident on one SM at once.
    pub blocks_per_sm: u32,
    /// Threads per block.
    pub threads: u32,
}

/// Blocks a greedy row of a small batch is split over in `sample_*_kernel` (`GREEDY_SPLITS`
/// in `sampling.cu`), and the most rows that are split (`GREEDY_SPLIT_MAX_ROWS`: the kernel's
/// scratch); larger batches keep one block per row (`sampling.cu` says why).
const GREEDY_SPLITS: u32 = 16;
const GREEDY_SPLIT_MAX_ROWS: usize = 4;

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
