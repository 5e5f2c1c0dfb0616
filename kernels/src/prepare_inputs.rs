//! A step's inputs from page-locked host memory into the device's step buffers, by a kernel
//! (`cuda/prepare_inputs.cu`): the packed metadata arrays, the block tables' used corner, and
//! async scheduling's hand-over of the previous step's sampled ids, in one launch.
//!
//! The copy engine took about 8 µs of the stream's time per copy between two decode steps on
//! an H200, for a few KB; a kernel reading the host's bytes across PCIe takes one round trip,
//! and starts it before the previous kernel has ended. The host memory must be page-locked and
//! mapped into the device's address space: [`mapped_address`] asks the driver for that address
//! (with unified addressing, every 64-bit Linux system, it is the host pointer itself).

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::sys;
use cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, LaunchConfig, PinnedHostSlice,
    ValidAsZeroBits,
};

use crate::error::{to_u32, KernelError, Result};

pub(crate) const FILE: &str = "prepare_inputs.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/prepare_inputs.cu");

const THREADS: u32 = 256;
/// Bytes a thread moves of the packed arrays (one `uint4`).
const WORD: usize = 16;

/// The compiled kernel.
#[derive(Debug, Clone)]
pub struct PrepareInputs {
    kernel: CudaFunction,
}

/// Where a step lies in the staged host bytes, in bytes from their start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedStep {
    /// The packed arrays: `[0, packed_bytes)` of the staging memory, copied to the same
    /// offsets of the device's packed buffer. A multiple of 16.
    pub packed_bytes: usize,
    /// Async scheduling's hand-over, or `None`.
    pub handover: Option<Handover>,
    /// The block tables' corner, when it changed since the last copy; `None` leaves the
    /// device's tables as they are.
    pub tables: Option<TableCorner>,
}

/// `input_ids[t] = sampled[from_rows[t]]` where `from_rows[t]` names a row of `sampled`
/// (not [`crate::sampling::TAKE_NONE`], not past its end); the other ids keep the staged value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    /// Byte offsets, inside the packed arrays, of `input_ids` and `from_rows` (`[num_tokens]`
    /// u32 each; 16-byte aligned).
    pub ids_at: usize,
    pub from_rows_at: usize,
    pub num_tokens: usize,
}

/// `rows` rows of `used` u32 entries, packed, at byte `at` of the staging memory: copied into
/// the first `used` columns of the device's `[_, width]` tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableCorner {
    pub at: usize,
    pub rows: usize,
    pub used: usize,
}

/// The device address of page-locked host memory (`cuMemHostGetDevicePointer`): what a kernel
/// reads it through. Fails where the memory is not mapped for the device.
pub fn mapped_address<T: ValidAsZeroBits>(pinned: &PinnedHostSlice<T>) -> Result<u64> {
    let host = pinned.as_ptr()?;
    let mut address: sys::CUdeviceptr = 0;
    // SAFETY: `host` is the start of a live page-locked allocation made by the driver
    // (cuMemHostAlloc through cudarc); the call only writes `address`. Flags must be 0.
    unsafe { sys::cuMemHostGetDevicePointer_v2(&mut address, host as *mut _, 0) }
        .result()
        .map_err(KernelError::Driver)?;
    Ok(address)
}

impl PrepareInputs {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("prepare_inputs_kernel")?,
        })
    }

    /// Copies `step` from the staged host bytes at device address `staged` (`staged_len`
    /// bytes) into `packed` and `tables` (`[_, width]`), on `stream`, taking `sampled`'s ids
    /// where the hand-over names them.
    ///
    /// # Safety
    /// `staged` must be the device address ([`mapped_address`]) of at least `staged_len`
    /// bytes of page-locked host memory that stay allocated, and unchanged, until the stream
    /// has passed this launch (the kernel reads them then, not now).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn launch(
        &self,
        stream: &Arc<CudaStream>,
        packed: &mut CudaSlice<u8>, // [>= step.packed_bytes]
        staged: u64,
        staged_len: usize,
        step: &StagedStep,
        sampled: &CudaView<'_, u32>, // [num_sampled]
        tables: &mut CudaSlice<u32>, // [>= rows, width]
        width: usize,
    ) -> Result<()> {
        const K: &str = "prepare_inputs";
        let bad = |what: String| KernelError::Unsupported { kernel: K, what };
        let bytes = step.packed_bytes;
        if !bytes.is_multiple_of(WORD) || bytes > packed.len() || bytes > staged_len {
            return Err(bad(format!(
                "{bytes} packed bytes (a multiple of {WORD}) for a buffer of {} and {staged_len} staged",
                packed.len()
            )));
        }
        let (ids_word, from_word, num_tokens) = match step.handover {
            None => (0, 0, 0),
            Some(h) => {
                let words = h.num_tokens.div_ceil(4) * WORD;
                for (name, at) in [("input ids", h.ids_at), ("from_rows", h.from_rows_at)] {
                    if !at.is_multiple_of(WORD) || at + words > bytes {
                        return Err(bad(format!(
                            "{name} at byte {at} for {} tokens in {bytes} packed bytes",
                            h.num_tokens
                        )));
                    }
                }
                (h.ids_at / WORD, h.from_rows_at / WORD, h.num_tokens)
            }
        };
        let (table_at, rows, used) = match step.tables {
            None => (None, 0, 0),
            Some(c) => {
                let end = c.at + c.rows * c.used * 4;
                if !c.at.is_multiple_of(4)
                    || end > staged_len
                    || c.used > width
                    || (c.rows > 0 && c.used == 0)
                    || c.rows * width > tables.len()
                {
                    return Err(bad(format!(
                        "a table corner of {} rows x {} at byte {} ({staged_len} staged) into {} entries {width} wide",
                        c.rows,
                        c.used,
                        c.at,
                        tables.len()
                    )));
                }
                (Some(staged + c.at as u64), c.rows, c.used)
            }
        };
        let words = bytes / WORD;
        let items = words + rows * used;
        if items == 0 {
            return Ok(());
        }
        let args = (
            to_u32(K, "packed words", words)?,
            ids_word as u32, // < words
            from_word as u32,
            to_u32(K, "num_tokens", num_tokens)?,
            to_u32(K, "num_sampled", sampled.len())?,
            table_at.unwrap_or(0),
            to_u32(K, "rows", rows)?,
            to_u32(K, "used", used)?,
            to_u32(K, "width", width)?,
        );
        let blocks = to_u32(K, "items", items.div_ceil(THREADS as usize))?;
        let mut launch = Launch::new(stream, &self.kernel);
        launch
            .arg(&mut *packed)
            .arg(&staged)
            .arg(&args.0)
            .arg(&args.1)
            .arg(&args.2)
            .arg(&args.3)
            .arg(sampled)
            .arg(&args.4)
            .arg(&mut *tables)
            .arg(&args.5)
            .arg(&args.6)
            .arg(&args.7)
            .arg(&args.8);
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match prepare_inputs_kernel's signature in order and type
        // (device and host addresses as 64-bit pointers, then u32s); every word index is below
        // `words` (within `packed` and the staged bytes, checked), the hand-over's words lie
        // inside the packed arrays, table entries inside the staged bytes and `tables`
        // (checked), `sampled` is read below its length; the staged bytes' lifetime is the
        // caller's promise.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
