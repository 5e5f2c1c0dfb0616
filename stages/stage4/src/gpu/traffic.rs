//! Coalescing, counted: which 32-byte sectors each warp-wide memory instruction touches.
//!
//! On the GPU, the 32 lanes of a warp execute a load or store *together*, as one instruction
//! (one *request*). The memory system serves it in 32-byte *sectors*, the unit in which bytes
//! move between DRAM, the L2 cache and the SMs: 32 lanes reading 32 consecutive `f32`s (128
//! bytes, aligned) need 4 sectors; 32 lanes reading every 8th `f32` need 32 sectors to deliver
//! the same 128 useful bytes, and 7/8 of what moves is thrown away. That ratio is what
//! Nsight Compute reports as load (or store) efficiency; here it is [`Traffic::efficiency`].
//!
//! How the model finds "the same instruction" without a program counter: each call site of
//! `Global::load`/`store` in the kernel's source (file, line, column: Rust's
//! `#[track_caller]`) stands for one instruction, and the k-th time a lane executes it is
//! grouped with the k-th time every other lane of its warp executes it. That is exact when
//! the warp's lanes run the same iterations of a loop (or some lanes drop out at its end, as
//! in `for (i = threadIdx.x; i < n; i += blockDim.x)`), which is what coalescing analysis
//! assumes on paper too. Where it differs from the hardware: no caches (every sector an
//! instruction touches counts as transferred, even if an earlier instruction just brought it
//! in: a GPU's L1/L2 would often serve the repeat), and one access is one element (no 8- or
//! 16-byte vector loads).
//!
//! One transaction here is one sector; "transferred bytes" are sectors × 32.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::Location;
use std::rc::Rc;

/// The granule of global-memory traffic, in bytes.
pub const SECTOR_BYTES: usize = 32;

/// Loads or stores of one kind, summed over a launch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Warp-wide instructions (each counts once, whatever number of lanes took part).
    pub requests: u64,
    /// Bytes the lanes asked for: per instruction, the distinct bytes its lanes named (a value
    /// that all 32 lanes read counts once).
    pub requested_bytes: u64,
    /// Distinct 32-byte sectors each instruction touched, summed: the transactions.
    pub sectors: u64,
}

impl Traffic {
    /// What moved: `sectors × 32`.
    pub fn transferred_bytes(&self) -> u64 {
        self.sectors * SECTOR_BYTES as u64
    }

    /// `requested / transferred`, in `[0, 1]`: 1 when every byte moved was asked for. A launch
    /// that moved nothing is efficient (1).
    pub fn efficiency(&self) -> f64 {
        if self.sectors == 0 {
            1.0
        } else {
            self.requested_bytes as f64 / self.transferred_bytes() as f64
        }
    }

    /// Sectors per request: 4 for 32 lanes reading consecutive `f32`s, 32 for the worst case.
    pub fn sectors_per_request(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.sectors as f64 / self.requests as f64
        }
    }

    fn add(&mut self, other: &Traffic) {
        self.requests += other.requests;
        self.requested_bytes += other.requested_bytes;
        self.sectors += other.sectors;
    }
}

/// The loads and the stores of one buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferTraffic {
    pub loads: Traffic,
    pub stores: Traffic,
}

/// What a launch did to global memory, buffer by buffer (by the name each `Global` was given).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchStats {
    pub kernel: String,
    pub buffers: BTreeMap<String, BufferTraffic>,
    /// Shared memory one block declared, in bytes.
    pub shared_bytes_per_block: usize,
    /// `sync_threads()` barriers one block passed (the most any block passed).
    pub barriers_per_block: u64,
}

impl LaunchStats {
    /// The traffic of buffer `name` (zero if the kernel never touched it).
    pub fn buffer(&self, name: &str) -> BufferTraffic {
        self.buffers.get(name).copied().unwrap_or_default()
    }

    /// All loads of the launch.
    pub fn loads(&self) -> Traffic {
        let mut t = Traffic::default();
        self.buffers.values().for_each(|b| t.add(&b.loads));
        t
    }

    /// All stores of the launch.
    pub fn stores(&self) -> Traffic {
        let mut t = Traffic::default();
        self.buffers.values().for_each(|b| t.add(&b.stores));
        t
    }
}

impl fmt::Display for LaunchStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kernel `{}`: {} B of shared memory and {} barriers per block",
            self.kernel, self.shared_bytes_per_block, self.barriers_per_block
        )?;
        writeln!(
            f,
            "  {:<14} {:<6} {:>9} {:>12} {:>9} {:>12} {:>10}",
            "buffer", "access", "requests", "requested B", "sectors", "moved B", "efficiency"
        )?;
        for (name, b) in &self.buffers {
            for (kind, t) in [("load", &b.loads), ("store", &b.stores)] {
                if t.requests > 0 {
                    writeln!(
                        f,
                        "  {:<14} {:<6} {:>9} {:>12} {:>9} {:>12} {:>9.1}%",
                        name,
                        kind,
                        t.requests,
                        t.requested_bytes,
                        t.sectors,
                        t.transferred_bytes(),
                        100.0 * t.efficiency()
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    Load,
    Store,
}

/// One warp-wide instruction: (warp, call site, how many times each lane had run it before,
/// buffer, load or store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct InstrKey {
    warp: usize,
    site: &'static Location<'static>,
    occurrence: u32,
    buffer: u64,
    access: Access,
}

/// The accesses of one block, grouped into warp instructions; folded into [`LaunchStats`]
/// when the block ends.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// Times each (thread, call site) has run.
    occurrences: HashMap<(usize, &'static Location<'static>), u32>,
    /// Byte offsets (in the buffer) each instruction's lanes touched, and the element size.
    instructions: HashMap<InstrKey, (Vec<u64>, usize)>,
    names: HashMap<u64, Rc<str>>,
}

impl Recorder {
    /// Records that `thread` (linear, in its block) accessed `size` bytes at byte `offset` of
    /// buffer `buffer` from `site`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &mut self,
        thread: usize,
        site: &'static Location<'static>,
        buffer: u64,
        name: &Rc<str>,
        access: Access,
        offset: u64,
        size: usize,
    ) {
        let n = self.occurrences.entry((thread, site)).or_insert(0);
        let key = InstrKey {
            warp: thread / super::WARP_SIZE,
            site,
            occurrence: *n,
            buffer,
            access,
        };
        *n += 1;
        self.instructions
            .entry(key)
            .or_insert_with(|| (Vec::with_capacity(super::WARP_SIZE), size))
            .0
            .push(offset);
        self.names.entry(buffer).or_insert_with(|| name.clone());
    }

    /// Adds this block's instructions to `stats` and forgets them.
    pub(crate) fn fold_into(&mut self, stats: &mut LaunchStats) {
        for (key, (mut offsets, size)) in self.instructions.drain() {
            offsets.sort_unstable();
            offsets.dedup();
            let mut sectors: Vec<u64> = offsets.iter().map(|o| o / SECTOR_BYTES as u64).collect();
            sectors.dedup(); // sorted already: offsets were
            let name = self.names[&key.buffer].to_string();
            let b = stats.buffers.entry(name).or_default();
            let t = match key.access {
                Access::Load => &mut b.loads,
                Access::Store => &mut b.stores,
            };
            t.requests += 1;
            t.requested_bytes += (offsets.len() * size) as u64;
            t.sectors += sectors.len() as u64;
        }
        self.occurrences.clear();
    }
}
