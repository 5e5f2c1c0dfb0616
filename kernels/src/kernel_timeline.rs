//! The kernel timeline: when every block of every kernel arrived at `griddepcontrol.wait`, and
//! when the wait let it go, in the GPU's own nanosecond clock (`%globaltimer`).
//!
//! Inside a CUDA graph the host sees one launch and one end; Nsight Compute times each kernel
//! alone, out of its place. But under programmatic dependent launch a kernel's blocks start
//! while the kernel before it still runs, issue their weight loads, and wait: what a batch-1
//! decode step costs is decided by how early each kernel's blocks became resident and how long
//! the chain after each wait is. The probe in `cuda/common.cuh`'s `wait_for_previous_kernel`
//! answers that, per block: the block's first thread records its arrival at the wait and its
//! release, the grid it belongs to (`%gridid`), its block index, its SM and the kernel file.
//!
//! Read per launch ([`launches`]), the first release of a kernel's blocks is when the kernel
//! before it had finished and its writes were visible, so the time from one kernel's first
//! release to the next one's is that kernel's share of the step on the critical path; its
//! blocks' arrivals say whether they were already waiting (resident, loads issued) when it was
//! let go, or arrived later (the previous kernel held the SMs, or the launch started late).
//!
//! The probe is compiled in only when asked (`KernelTimeline::prelude`, `lab bench
//! --kernel-timeline`), never tested at run time: kernels built without it are the engine's
//! usual ones, at no cost. With it, one thread a block claims a slot with an atomic before the
//! wait and stores 32 bytes after it, which moves a step's time a little: compare the step's
//! device time with and without it in the same run.

use std::sync::Arc;

use cudarc::driver::{CudaModule, CudaSlice, CudaStream, DevicePtr};

use crate::error::{KernelError, Result};

/// u64 words per record: grid id, arrival, release, `(block << 32) | (file << 16) | SM`.
const RECORD_WORDS: usize = 4;

/// The name of the sink variable every module holds (`cuda/common.cuh`).
const SINK: &str = "lab_timeline";

/// The device buffers the probe writes to, shared by every module.
#[derive(Debug)]
pub struct KernelTimeline {
    /// `[capacity, RECORD_WORDS]`.
    records: CudaSlice<u64>,
    /// Records claimed since the last [`KernelTimeline::take`].
    count: CudaSlice<u32>,
    capacity: u32,
}

/// `TimelineSink` of `cuda/common.cuh`, as the device lays it out.
#[repr(C)]
#[derive(Clone, Copy)]
struct Sink {
    records: u64,
    count: u64,
    capacity: u32,
    pad: u32,
}

/// One block's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRecord {
    /// The launch it belongs to (`%gridid`: distinct for the launches alive at one time).
    pub grid: u64,
    /// When its first thread reached `griddepcontrol.wait`, ns of the GPU's clock.
    pub arrived_ns: u64,
    /// When the wait returned: the previous kernel had finished and its writes were visible.
    pub released_ns: u64,
    /// Its linear block index in the grid.
    pub block: u32,
    /// Which kernel file (the order of the crate's `SOURCES`).
    pub file: u16,
    /// The SM it ran on.
    pub sm: u16,
}

impl BlockRecord {
    fn from_words(w: &[u64]) -> Self {
        BlockRecord {
            grid: w[0],
            arrived_ns: w[1],
            released_ns: w[2],
            block: (w[3] >> 32) as u32,
            file: ((w[3] >> 16) & 0xffff) as u16,
            sm: (w[3] & 0xffff) as u16,
        }
    }
}

/// What [`KernelTimeline::take`] read.
#[derive(Debug, Clone, Default)]
pub struct TimelineRecords {
    pub records: Vec<BlockRecord>,
    /// Blocks that found the buffer full (their launches are then incomplete).
    pub dropped: u64,
}

impl KernelTimeline {
    /// Device buffers for `capacity` block records (32 bytes each).
    pub fn new(stream: &Arc<CudaStream>, capacity: usize) -> Result<Self> {
        let capacity = u32::try_from(capacity)
            .ok()
            .filter(|&c| c > 0 && c < u32::MAX)
            .ok_or_else(|| KernelError::Unsupported {
                kernel: "kernel_timeline",
                what: format!(
                    "capacity {capacity}: expected 1 to {} records",
                    u32::MAX - 1
                ),
            })?;
        Ok(KernelTimeline {
            records: stream.alloc_zeros::<u64>(capacity as usize * RECORD_WORDS)?,
            count: stream.alloc_zeros::<u32>(1)?,
            capacity,
        })
    }

    /// The `#define`s that compile the probe into kernel file `file` (its index in
    /// [`crate::SOURCES`], which the records carry).
    pub(crate) fn prelude(file: usize) -> String {
        format!("#define LAB_KERNEL_TIMELINE\n#define LAB_KERNEL_FILE {file}\n")
    }

    /// Points `module`'s sink at these buffers (a module compiled with [`Self::prelude`]).
    pub(crate) fn attach(&self, module: &Arc<CudaModule>, stream: &Arc<CudaStream>) -> Result<()> {
        let (records, _r) = self.records.device_ptr(stream);
        let (count, _c) = self.count.device_ptr(stream);
        let sink = Sink {
            records,
            count,
            capacity: self.capacity,
            pad: 0,
        };
        let mut global = module.get_global(SINK, stream)?;
        if global.len() != std::mem::size_of::<Sink>() {
            return Err(KernelError::Unsupported {
                kernel: "kernel_timeline",
                what: format!(
                    "the module's {SINK} is {} bytes, expected {}",
                    global.len(),
                    std::mem::size_of::<Sink>()
                ),
            });
        }
        // SAFETY: `Sink` is `repr(C)` plain data of exactly the global's size (checked above),
        // laid out as `TimelineSink` in common.cuh (two pointers, a u32, padding).
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&sink as *const Sink).cast::<u8>(),
                std::mem::size_of::<Sink>(),
            )
        };
        stream.memcpy_htod(bytes, &mut global)?;
        stream.synchronize()?;
        Ok(())
    }

    /// Waits for the stream, reads the records written since the last call, and empties the
    /// buffer for the next.
    pub fn take(&mut self, stream: &Arc<CudaStream>) -> Result<TimelineRecords> {
        stream.synchronize()?;
        let claimed = stream.clone_dtoh(&self.count)?[0] as u64;
        let kept = claimed.min(self.capacity as u64) as usize;
        let words = if kept == 0 {
            Vec::new()
        } else {
            stream.clone_dtoh(&self.records.slice(0..kept * RECORD_WORDS))?
        };
        stream.memset_zeros(&mut self.count)?;
        stream.synchronize()?;
        Ok(TimelineRecords {
            records: words
                .chunks_exact(RECORD_WORDS)
                .map(BlockRecord::from_words)
                .collect(),
            dropped: claimed - kept as u64,
        })
    }
}

/// One launch, from its blocks' records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTimes {
    pub grid: u64,
    /// Its kernel file (the order of the crate's `SOURCES`).
    pub file: u16,
    /// Blocks recorded (the grid's size when every block's first thread waits).
    pub blocks: usize,
    /// Distinct SMs its blocks ran on.
    pub sms: usize,
    pub first_arrival_ns: u64,
    pub last_arrival_ns: u64,
    /// The previous kernel's end, as this one saw it.
    pub first_release_ns: u64,
    pub last_release_ns: u64,
}

impl LaunchTimes {
    /// The kernel file's name.
    pub fn file_name(&self) -> &'static str {
        crate::SOURCES
            .get(self.file as usize)
            .map_or("?", |(name, _)| name)
    }
}

/// The records grouped into launches, in the order they were let go (first release, then
/// first arrival). A grid id is reused once its launch is gone, so the records of one id are
/// split where a block index repeats: a launch records each of its blocks once.
pub fn launches(records: &[BlockRecord]) -> Vec<LaunchTimes> {
    let mut sorted: Vec<&BlockRecord> = records.iter().collect();
    sorted.sort_by_key(|r| (r.grid, r.released_ns, r.arrived_ns));
    let mut out: Vec<LaunchTimes> = Vec::new();
    let mut seen: std::collections::HashSet<u32> = Default::default();
    let mut sms: std::collections::HashSet<u16> = Default::default();
    for r in sorted {
        let same = out
            .last()
            .is_some_and(|l| l.grid == r.grid && l.file == r.file && !seen.contains(&r.block));
        if !same {
            if let Some(l) = out.last_mut() {
                l.sms = sms.len();
            }
            seen.clear();
            sms.clear();
            out.push(LaunchTimes {
                grid: r.grid,
                file: r.file,
                blocks: 0,
                sms: 0,
                first_arrival_ns: r.arrived_ns,
                last_arrival_ns: r.arrived_ns,
                first_release_ns: r.released_ns,
                last_release_ns: r.released_ns,
            });
        }
        let l = out.last_mut().expect("pushed above");
        seen.insert(r.block);
        sms.insert(r.sm);
        l.blocks += 1;
        l.first_arrival_ns = l.first_arrival_ns.min(r.arrived_ns);
        l.last_arrival_ns = l.last_arrival_ns.max(r.arrived_ns);
        l.first_release_ns = l.first_release_ns.min(r.released_ns);
        l.last_release_ns = l.last_release_ns.max(r.released_ns);
    }
    if let Some(l) = out.last_mut() {
        l.sms = sms.len();
    }
    out.sort_by_key(|l| (l.first_release_ns, l.first_arrival_ns));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(grid: u64, block: u32, arrived: u64, released: u64, sm: u16) -> BlockRecord {
        BlockRecord {
            grid,
            arrived_ns: arrived,
            released_ns: released,
            block,
            file: 9,
            sm,
        }
    }

    #[test]
    fn a_record_reads_back_from_its_words() {
        let w = [7u64, 100, 250, (513u64 << 32) | (9 << 16) | 131];
        assert_eq!(BlockRecord::from_words(&w), rec(7, 513, 100, 250, 131));
    }

    /// Two launches of one grid id (reused after the first ended) are told apart by the
    /// repeated block index, and launches come out in the order they were let go.
    #[test]
    fn records_group_into_launches_in_release_order() {
        let records = [
            // grid 5, first launch: blocks 0 and 1
            rec(5, 1, 90, 120, 1),
            rec(5, 0, 100, 110, 0),
            // grid 3: one block, let go between the two launches of grid 5
            rec(3, 0, 105, 130, 0),
            // grid 5 again: blocks 0 and 1, later
            rec(5, 0, 140, 150, 2),
            rec(5, 1, 141, 160, 2),
        ];
        let l = launches(&records);
        assert_eq!(l.len(), 3);
        assert_eq!((l[0].grid, l[0].blocks, l[0].sms), (5, 2, 2));
        assert_eq!((l[0].first_arrival_ns, l[0].last_arrival_ns), (90, 100));
        assert_eq!((l[0].first_release_ns, l[0].last_release_ns), (110, 120));
        assert_eq!((l[1].grid, l[1].blocks), (3, 1));
        assert_eq!((l[2].grid, l[2].blocks, l[2].sms), (5, 2, 1));
        assert_eq!((l[2].first_release_ns, l[2].last_release_ns), (150, 160));
        assert_eq!(l[0].file_name(), "gemv.cu");
    }

    #[test]
    fn no_records_no_launches() {
        assert!(launches(&[]).is_empty());
    }
}

#[cfg(test)]
mod compile_tests {
    /// NVRTC needs no GPU: where it is found (CI has none), every kernel file compiles with
    /// the probe in, and each module then holds the sink the host sets.
    #[test]
    fn every_kernel_file_compiles_with_the_probe() {
        // SAFETY: only looks for the library; no NVRTC call.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("skipped: libnvrtc was not found");
            return;
        }
        for (i, (file, source)) in crate::SOURCES.iter().enumerate() {
            let prelude = super::KernelTimeline::prelude(i);
            crate::compile::compile_with(file, &prelude, source, crate::compile::ARCH)
                .unwrap_or_else(|e| panic!("{file} with the timeline probe: {e}"));
        }
    }
}
