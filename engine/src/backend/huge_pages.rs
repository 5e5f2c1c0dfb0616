//! Weight buffers on 2 MiB pages: what lets a batch-1 decode step stream its weights at the
//! memory's rate.
//!
//! ## Why the page size matters to a decode step
//! A batch-1 decode step reads every weight once: 538 MB for SmolLM2-135M in f32, in 120
//! matrices of 1–7 MB and the 113 MB LM head. With the kernel's usual 4 KiB pages that is
//! 131,000 pages a token, and every one of them is a TLB miss (a Zen 4 core's second-level
//! TLB maps 12 MB of 4 KiB pages): a page-table walk on the path of the stream, and the
//! hardware prefetcher, which does not cross a 4 KiB page, starting over at every page. On
//! 2 MiB pages the same weights are 270 pages.
//!
//! Linux gives an anonymous mapping huge pages (transparent huge pages) only where it is
//! asked to, in the common setting `madvise` of `/sys/kernel/mm/transparent_hugepage/enabled`:
//! the region must be marked with `madvise(MADV_HUGEPAGE)` *before* it is first written, so
//! that the first write faults in a whole 2 MiB page, and only 2 MiB-aligned, 2 MiB-long
//! pieces of it can become huge pages. A `Vec` is neither aligned nor marked, and `vec![0.0;
//! n]` may already have touched its pages. [`HugePageVec`] maps its own memory instead:
//! aligned to 2 MiB, marked before the first write: its whole 2 MiB pieces, and its tail when
//! the tail is at least 1 MiB (see `huge_part`: a tail of 0.1 MiB does not get 2 MiB).
//! Measured on the 2-core Zen 4 (book: performance page, "Huge pages"), A B A B with
//! `LAB_HUGE_PAGES=off`: batch-1 decode of SmolLM2-135M f32 at 83–87% of the memory ceiling
//! measured beside each run (58.8 and 60.7 tokens/s), against 78–81% on 4 KiB pages.
//!
//! Where huge pages are not available (another OS, `never` in that file, a kernel without
//! them), the memory is ordinary pages: the same values, only slower. Buffers under 1 MiB
//! stay on the heap.

use std::fmt;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;
use memmap2::{MmapMut, MmapOptions};

/// A huge page on x86-64 and on aarch64 with 4 KiB base pages.
pub const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length, zero-initialized buffer of plain values (`f32`, `u8`), on 2 MiB pages where
/// the OS gives them (see the module doc). Reads and writes go through `&[T]` / `&mut [T]`.
pub struct HugePageVec<T: Pod> {
    storage: Storage<T>,
}

enum Storage<T> {
    /// Small buffers, and the fallback when mapping fails.
    Heap(Vec<T>),
    /// `map[offset..offset + len · size_of::<T>()]`, `offset` 2 MiB-aligned in memory.
    Mapped {
        map: MmapMut,
        offset: usize,
        len: usize,
    },
}

impl<T: Pod> HugePageVec<T> {
    /// `len` zeros.
    pub fn zeroed(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        let storage = match huge_part(bytes) > 0 && enabled() {
            true => map_huge(bytes).map_or_else(
                |_| Storage::Heap(vec![T::zeroed(); len]),
                |(map, offset)| Storage::Mapped { map, offset, len },
            ),
            false => Storage::Heap(vec![T::zeroed(); len]),
        };
        HugePageVec { storage }
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[T]) -> Self {
        let mut v = Self::zeroed(values.len());
        v.copy_from_slice(values);
        v
    }

    /// Whether the buffer is an aligned mapping marked for huge pages (the OS may still have
    /// given small ones: `AnonHugePages` in `/proc/self/smaps` tells).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }
}

/// Whether buffers go on huge pages: yes, unless the environment variable `LAB_HUGE_PAGES` is
/// `off` (for A/B benchmarks: the values are the same either way). Read once.
fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("LAB_HUGE_PAGES").as_deref() != Ok("off"))
}

/// An anonymous mapping with room for `bytes` from a 2 MiB boundary, marked for huge pages
/// before anything touches them (see [`huge_part`] for how much of it). Returns the mapping
/// and where the aligned region starts in it.
fn map_huge(bytes: usize) -> std::io::Result<(MmapMut, usize)> {
    let marked = huge_part(bytes);
    // One huge page more than needed, so that a 2 MiB boundary falls within the first one.
    let map = MmapOptions::new()
        .len(bytes.max(marked) + HUGE_PAGE)
        .map_anon()?;
    let offset = (HUGE_PAGE - map.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
    #[cfg(target_os = "linux")]
    if marked > 0 {
        // Advice only: an error (huge pages switched off) leaves small pages, which is fine.
        let _ = map.advise_range(memmap2::Advice::HugePage, offset, marked);
    }
    Ok((map, offset))
}

/// How many bytes of a `bytes`-long buffer to put on huge pages: every whole 2 MiB piece, and
/// the tail too when it is at least half a huge page. A huge page under the tail holds up to
/// 1 MiB that nothing uses (the slack is never written, but the page is faulted in whole);
/// leaving every tail on small pages was measured to cost more: SmolLM2-135M's o_proj
/// (1.27 MiB) and down_proj (3.4 MiB) streamed at 20 and 18 GB/s on one thread with their
/// tails on 4 KiB pages, against 28 and 29 on huge pages
/// (`examples/decode_weight_stream.rs`, Zen 4, 2026-11-29). For that model the rule costs
/// 41 MiB (8% of its 513 MiB of f32 weights) and leaves 5% of the bytes on small pages.
fn huge_part(bytes: usize) -> usize {
    let (whole, tail) = (bytes / HUGE_PAGE * HUGE_PAGE, bytes % HUGE_PAGE);
    match tail >= HUGE_PAGE / 2 {
        true => whole + HUGE_PAGE,
        false => whole,
    }
}

impl<T: Pod> Deref for HugePageVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.storage {
            Storage::Heap(v) => v,
            Storage::Mapped { map, offset, len } => {
                bytemuck::cast_slice(&map[*offset..*offset + len * std::mem::size_of::<T>()])
            }
        }
    }
}

impl<T: Pod> DerefMut for HugePageVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.storage {
            Storage::Heap(v) => v,
            Storage::Mapped { map, offset, len } => bytemuck::cast_slice_mut(
                &mut map[*offset..*offset + *len * std::mem::size_of::<T>()],
            ),
        }
    }
}

impl<T: Pod> Clone for HugePageVec<T> {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl<T: Pod + PartialEq> PartialEq for HugePageVec<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Pod> Default for HugePageVec<T> {
    fn default() -> Self {
        Self::zeroed(0)
    }
}

/// The length and where it lives, not the values (a weight has millions).
impl<T: Pod> fmt::Debug for HugePageVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HugePageVec")
            .field("len", &self.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_stay_on_the_heap_and_large_ones_are_aligned_mappings() {
        let small = HugePageVec::<f32>::zeroed(1000);
        assert!(!small.is_mapped());
        assert_eq!(small.len(), 1000);
        let large = HugePageVec::<f32>::zeroed(HUGE_PAGE / 4 * 3 + 5);
        assert!(large.is_mapped());
        assert_eq!(large.as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(large.len(), HUGE_PAGE / 4 * 3 + 5);
        assert!(large.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn whole_huge_pages_and_tails_of_half_a_page_or_more_are_marked() {
        let mib = 1 << 20;
        assert_eq!(huge_part(mib - 1), 0);
        assert_eq!(huge_part(mib), HUGE_PAGE);
        assert_eq!(huge_part(HUGE_PAGE), HUGE_PAGE);
        assert_eq!(huge_part(HUGE_PAGE + mib - 1), HUGE_PAGE);
        assert_eq!(huge_part(HUGE_PAGE + mib), 2 * HUGE_PAGE);
        assert!(!HugePageVec::<u8>::zeroed(mib - 1).is_mapped());
        assert!(HugePageVec::<u8>::zeroed(mib).is_mapped());
    }

    #[test]
    fn writes_read_back_and_clones_are_equal_copies() {
        for len in [0, 7, HUGE_PAGE + 3] {
            let mut a = HugePageVec::<u8>::zeroed(len);
            for (i, v) in a.iter_mut().enumerate() {
                *v = (i % 251) as u8;
            }
            let b = a.clone();
            assert_eq!(a, b);
            assert!(b.iter().enumerate().all(|(i, &v)| v == (i % 251) as u8));
            if len > 0 {
                a[len - 1] ^= 1;
                assert_ne!(a, b);
            }
        }
    }
}
