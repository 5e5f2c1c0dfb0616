//! Copying a narrow host matrix into the left columns of a wider device matrix, in one call.
//!
//! A step's block tables live on the device at a fixed width (the model's longest context in
//! blocks), so that a recorded graph's kernels see one row stride on every replay. But a step
//! only needs each row's first few entries: a sequence of 2,000 tokens has 125 blocks of 16,
//! while Llama-3.2-1B's rows are 8,192 wide. Copying whole rows moves 8 MB a step at batch
//! 256; copying the `[rows, used]` corner moves what the step uses (128 KB there). The entries
//! right of the corner keep what earlier steps left, which is harmless: a kernel reads a
//! sequence's table only up to its length in blocks.
//!
//! The driver's 2-D copy (`cuMemcpy2DAsync`) does it in one call with two pitches: the host
//! rows are packed `used` wide, the device rows are `width` apart.

use std::sync::Arc;

use cudarc::driver::sys::{self, CUmemorytype, CUDA_MEMCPY2D};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut};

use crate::{KernelError, Result};

/// Copies `src` (`[rows, used]`, packed) into the first `used` columns of the first `rows`
/// rows of `dst` (`[_, width]`), on `stream`. A pageable `src` may be reused when the call
/// returns (the driver stages it first, as with cudarc's `memcpy_htod`); a page-locked one is
/// read by the copy engine later, and must stay unchanged until the stream has passed the copy.
pub fn copy_rows_htod<T: Copy>(
    stream: &Arc<CudaStream>,
    src: &[T], // [rows, used]
    used: usize,
    dst: &mut CudaSlice<T>, // [_, width]
    width: usize,
) -> Result<()> {
    if used == 0 || src.is_empty() {
        return Ok(());
    }
    let rows = src.len() / used;
    if !src.len().is_multiple_of(used) || used > width || rows * width > dst.len() {
        return Err(KernelError::Unsupported {
            kernel: "copy_rows_htod",
            what: format!(
                "{} values as rows of {used} into a buffer of {} rows of {width}",
                src.len(),
                dst.len() / width.max(1)
            ),
        });
    }
    let size = std::mem::size_of::<T>();
    let (dst_ptr, _record) = dst.device_ptr_mut(stream);
    let copy = CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
        srcHost: src.as_ptr().cast(),
        srcDevice: 0,
        srcArray: std::ptr::null_mut(),
        srcPitch: used * size,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: std::ptr::null_mut(),
        dstDevice: dst_ptr,
        dstArray: std::ptr::null_mut(),
        dstPitch: width * size,
        WidthInBytes: used * size,
        Height: rows,
    };
    // SAFETY: the source is `rows * used` live values of `T` borrowed for the call (the driver
    // stages pageable memory before returning; a page-locked source is read by the copy
    // engine later, so its owner must leave it unchanged until the stream has passed this
    // copy: `engine`'s step buffers record an event for that); the destination rectangle, `rows` rows of
    // `width` values from `dst`'s start, lies inside `dst` (checked above); the stream belongs
    // to the context `dst` was allocated in.
    unsafe { sys::cuMemcpy2DAsync_v2(&copy, stream.cu_stream()) }
        .result()
        .map_err(KernelError::Driver)
}
