//! Global memory: the GPU's HBM, where a kernel's inputs and outputs live.
//!
//! A [`Global`] is one allocation (`cudaMalloc`): the host fills it, every thread of a launch
//! may load from it and store to it, and every access is recorded by the warp instruction it
//! belongs to (`traffic.rs`), so a launch reports how many 32-byte sectors it moved.
//!
//! Where it differs from the GPU:
//! - Addresses are offsets inside the allocation, which starts at a 256-byte boundary as
//!   `cudaMalloc`'s do: alignment, which decides how many sectors an access touches, is right.
//! - An index past the end is an error that names the thread, the buffer and the index. On the
//!   GPU it is undefined: an "illegal address" error for the whole launch if you are lucky,
//!   another buffer's bytes if you are not.
//! - Blocks run one after another, so a block sees what earlier blocks stored. A GPU runs them
//!   in any order, at the same time: never rely on another block's stores within a launch.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::state::with_thread;
use super::traffic::Access;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A buffer in global memory holding `T`s (`f32`, `u32`, `u64`, ...), and a name that the
/// launch statistics and error messages use.
pub struct Global<T> {
    name: Rc<str>,
    id: u64,
    data: Box<[Cell<T>]>,
}

impl<T: Copy> Global<T> {
    /// A buffer holding a copy of `data` (`cudaMemcpy`, host to device).
    pub fn from_slice(name: &str, data: &[T]) -> Self {
        Global {
            name: name.into(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            data: data.iter().copied().map(Cell::new).collect(),
        }
    }

    /// A buffer of `len` copies of `value` (poison an output with NaN to see what a kernel
    /// left unwritten).
    pub fn filled(name: &str, len: usize, value: T) -> Self {
        Self::from_slice(name, &vec![value; len])
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The contents, back on the host (`cudaMemcpy`, device to host).
    pub fn to_vec(&self) -> Vec<T> {
        self.data.iter().map(Cell::get).collect()
    }

    /// `x[i]` in a kernel: one lane's part of a warp-wide load.
    #[track_caller]
    pub fn load(&self, i: usize) -> T {
        let site = std::panic::Location::caller();
        with_thread("Global::load", |l, t| {
            let Some(cell) = self.data.get(i) else {
                panic!(
                    "{}: load of {}[{i}] at {site} is out of bounds: `{}` has {} elements",
                    l.whereabouts(t),
                    self.name,
                    self.name,
                    self.len()
                )
            };
            let size = std::mem::size_of::<T>();
            let offset = (i * size) as u64;
            l.recorder
                .record(t, site, self.id, &self.name, Access::Load, offset, size);
            cell.get()
        })
    }

    /// `x[i] = value` in a kernel: one lane's part of a warp-wide store.
    #[track_caller]
    pub fn store(&self, i: usize, value: T) {
        let site = std::panic::Location::caller();
        with_thread("Global::store", |l, t| {
            let Some(cell) = self.data.get(i) else {
                panic!(
                    "{}: store to {}[{i}] at {site} is out of bounds: `{}` has {} elements",
                    l.whereabouts(t),
                    self.name,
                    self.name,
                    self.len()
                )
            };
            let size = std::mem::size_of::<T>();
            let offset = (i * size) as u64;
            l.recorder
                .record(t, site, self.id, &self.name, Access::Store, offset, size);
            cell.set(value);
        })
    }
}

impl<T> fmt::Debug for Global<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Global({:?}, {} elements)", self.name, self.data.len())
    }
}
