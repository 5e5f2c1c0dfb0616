//! A caching allocator for a step's activations (the idea of PyTorch's CUDA caching allocator,
//! which vLLM runs on).
//!
//! Every op of a step returns a fresh tensor, and most die a few ops later. Taking each from
//! CUDA's stream-ordered pool (`cuMemAllocAsync`) is cheap when launched eagerly, but inside a
//! CUDA graph every allocation and every free becomes a graph node of its own, serialized
//! with the kernels: a decode layer of nine kernels recorded about twenty-seven nodes. Here a
//! dropped tensor's memory goes back to a free list instead, and the next tensor of the same
//! size class takes it: in steady state a step allocates nothing, and a recorded graph holds
//! only kernels.
//!
//! Reuse is safe without events because every op runs on the backend's one stream: a buffer
//! returned by an op that was launched earlier is only rewritten by ops launched later.
//!
//! A recording must not allocate (memory a graph allocates and does not free makes its next
//! launch fail), so a graph is recorded only after its key ran once eagerly with the same
//! shapes ([`super::cuda_graph`]), which leaves every buffer it needs in the free lists.
//! A miss while the stream is capturing is reported as an error rather than recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use half::bf16;
use kernels::cudarc::driver::sys::CUstreamCaptureStatus;
use kernels::cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut};

use super::cuda_step::device;
use super::{BackendError, Result};

/// No limit on the bytes kept until the backend knows its activation budget.
pub const UNLIMITED: usize = usize::MAX;

/// Free buffers by size class (elements), and how much they hold.
#[derive(Default)]
struct FreeLists {
    by_class: HashMap<usize, Vec<CudaSlice<bf16>>>,
    cached_bytes: usize,
    /// Most bytes kept in the lists; a buffer returned past it is freed.
    limit_bytes: usize,
}

/// The backend's activation allocator (one per backend, one stream).
pub struct CachingAllocator {
    stream: Arc<CudaStream>,
    free: Arc<Mutex<FreeLists>>,
}

/// The size class holding `len` elements: a power of two, or a quarter step between two
/// (so at most 25% of a buffer is unused), and at least 256 elements.
pub fn size_class(len: usize) -> usize {
    let len = len.max(256);
    let top = len.next_power_of_two();
    let quarter = (top / 8).max(1); // quarter steps of [top / 2, top]
    len.div_ceil(quarter) * quarter
}

impl CachingAllocator {
    pub fn new(stream: Arc<CudaStream>, limit_bytes: usize) -> Self {
        let free = FreeLists {
            limit_bytes,
            ..FreeLists::default()
        };
        CachingAllocator {
            stream,
            free: Arc::new(Mutex::new(free)),
        }
    }

    /// Sets the most bytes kept for reuse (the activation share of the memory budget).
    pub fn set_limit(&self, limit_bytes: usize) {
        if let Ok(mut f) = self.free.lock() {
            f.limit_bytes = limit_bytes;
        }
    }

    /// `len` uninitialized bf16 elements, from the free lists when one of the size fits.
    pub fn alloc(&self, op: &'static str, len: usize) -> Result<PooledSlice> {
        let class = size_class(len);
        let reused = {
            let mut f = self.free.lock().map_err(|_| poisoned())?;
            let slice = f.by_class.get_mut(&class).and_then(Vec::pop);
            if slice.is_some() {
                f.cached_bytes -= class * size_of::<bf16>();
            }
            slice
        };
        let (slice, keep) = match reused {
            Some(s) => (s, true),
            None => {
                // A miss while recording a graph becomes a graph allocation node, as in a plain
                // stream-ordered allocation; such memory belongs to the graph and must be freed
                // by it, so it never enters the free lists.
                let capturing = self.stream.capture_status().map_err(|e| device(op, e))?
                    != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
                // SAFETY: FFI allocation from the stream-ordered pool; every caller hands the
                // buffer to a kernel that writes its first `len` elements before any read.
                let s = unsafe { self.stream.alloc::<bf16>(class) }.map_err(|e| device(op, e))?;
                (s, !capturing)
            }
        };
        Ok(PooledSlice {
            slice: Some(slice),
            len,
            keep,
            free: Arc::clone(&self.free),
        })
    }
}

fn poisoned() -> BackendError {
    BackendError::shape(
        "cuda allocator",
        "a thread panicked while holding the free lists",
    )
}

/// A buffer from [`CachingAllocator`]: `len` elements of a size-class allocation, returned to
/// the free lists when dropped.
pub struct PooledSlice {
    slice: Option<CudaSlice<bf16>>,
    len: usize,
    /// Whether it goes back to the free lists when dropped (not if a graph allocated it).
    keep: bool,
    free: Arc<Mutex<FreeLists>>,
}

impl std::fmt::Debug for PooledSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledSlice")
            .field("len", &self.len)
            .finish()
    }
}

impl PooledSlice {
    fn inner(&self) -> &CudaSlice<bf16> {
        self.slice
            .as_ref()
            .expect("a PooledSlice holds its buffer until dropped")
    }

    /// The `len` elements asked for.
    pub fn view(&self) -> CudaView<'_, bf16> {
        self.inner().slice(0..self.len)
    }

    /// As [`PooledSlice::view`], writable.
    pub fn view_mut(&mut self) -> CudaViewMut<'_, bf16> {
        let len = self.len;
        self.slice
            .as_mut()
            .expect("a PooledSlice holds its buffer until dropped")
            .slice_mut(0..len)
    }
}

impl Drop for PooledSlice {
    fn drop(&mut self) {
        let Some(slice) = self.slice.take() else {
            return;
        };
        if !self.keep {
            return;
        }
        let Ok(mut f) = self.free.lock() else { return }; // poisoned: let cudarc free it
        let bytes = slice.len() * size_of::<bf16>();
        if f.cached_bytes.saturating_add(bytes) <= f.limit_bytes {
            f.cached_bytes += bytes;
            f.by_class.entry(slice.len()).or_default().push(slice);
        }
        // Otherwise `slice` drops here and goes back to CUDA's stream-ordered pool.
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_hold_the_length_and_waste_at_most_a_quarter() {
        for len in (1..5000).chain([65_536, 65_537, 1 << 20, 3 << 20, 1_000_003]) {
            let c = size_class(len);
            assert!(c >= len, "{len} -> {c}");
            if len > 256 {
                assert!(
                    (c - len) * 4 <= c,
                    "{len} -> {c} wastes more than a quarter"
                );
            }
            assert_eq!(size_class(c), c, "a class is its own class");
        }
        // Repeated shapes share one class: a decode step's buffers are reused exactly.
        assert_eq!(size_class(576), size_class(576));
        assert_eq!(size_class(600), 640);
    }
}
