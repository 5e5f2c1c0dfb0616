//! Grid and block shapes: CUDA's `dim3`, and the two of them that make a launch.

use std::fmt;

/// Threads per warp on every NVIDIA GPU so far.
pub const WARP_SIZE: usize = 32;

/// Most threads one block may have (a CUDA limit on every GPU since Fermi).
pub const MAX_THREADS_PER_BLOCK: usize = 1024;

/// A 3-D extent or index, as CUDA's `dim3`: `x` varies fastest.
///
/// `threadIdx`, `blockIdx`, `blockDim` and `gridDim` are all `Dim3`s
/// ([`thread_idx`](super::thread_idx) and friends). Most kernels use `x` only; the decode
/// attention of this stage puts the head in `x` and the sequence in `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dim3 {
    pub x: usize,
    pub y: usize,
    pub z: usize,
}

impl Dim3 {
    /// `(x, 1, 1)`.
    pub const fn x(x: usize) -> Self {
        Dim3 { x, y: 1, z: 1 }
    }

    /// `(x, y, 1)`.
    pub const fn xy(x: usize, y: usize) -> Self {
        Dim3 { x, y, z: 1 }
    }

    /// How many points the extent holds: `x · y · z`.
    pub const fn count(&self) -> usize {
        self.x * self.y * self.z
    }

    /// The `linear`-th point of this extent, `x` fastest (how CUDA numbers a block's threads:
    /// thread `(x, y, z)` is number `x + y·Dx + z·Dx·Dy`, and warps are cut from that order).
    pub const fn unflatten(&self, linear: usize) -> Dim3 {
        Dim3 {
            x: linear % self.x,
            y: linear / self.x % self.y,
            z: linear / (self.x * self.y),
        }
    }
}

impl From<usize> for Dim3 {
    fn from(x: usize) -> Self {
        Dim3::x(x)
    }
}

impl From<(usize, usize)> for Dim3 {
    fn from((x, y): (usize, usize)) -> Self {
        Dim3::xy(x, y)
    }
}

impl From<(usize, usize, usize)> for Dim3 {
    fn from((x, y, z): (usize, usize, usize)) -> Self {
        Dim3 { x, y, z }
    }
}

impl fmt::Display for Dim3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {}, {})", self.x, self.y, self.z)
    }
}

/// The shape of a launch, CUDA's `kernel<<<grid, block>>>`: `grid` blocks of `block` threads.
///
/// There is no dynamic shared-memory size: a kernel declares each shared array with
/// [`shared`](super::shared) and its length, which may be a kernel argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: Dim3,
    pub block: Dim3,
}

impl LaunchConfig {
    pub fn new(grid: impl Into<Dim3>, block: impl Into<Dim3>) -> Self {
        LaunchConfig {
            grid: grid.into(),
            block: block.into(),
        }
    }

    /// Panics, naming the kernel, on a shape CUDA would refuse to launch.
    pub(crate) fn validate(&self, kernel: &str) {
        let (g, b) = (self.grid, self.block);
        assert!(
            g.count() > 0 && b.count() > 0,
            "launch of `{kernel}`: grid {g} and block {b} must both be non-empty \
             (CUDA: invalid configuration argument)"
        );
        assert!(
            b.count() <= MAX_THREADS_PER_BLOCK,
            "launch of `{kernel}`: block {b} has {} threads, more than the {MAX_THREADS_PER_BLOCK} \
             a block may have",
            b.count()
        );
        assert!(
            b.z <= 64 && g.y < 65536 && g.z < 65536,
            "launch of `{kernel}`: grid {g} or block {b} is past CUDA's limits \
             (block z <= 64, grid y and z < 65536)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_numbered_x_fastest() {
        let d = Dim3 { x: 4, y: 3, z: 2 };
        assert_eq!(d.count(), 24);
        assert_eq!(d.unflatten(0), Dim3 { x: 0, y: 0, z: 0 });
        assert_eq!(d.unflatten(5), Dim3 { x: 1, y: 1, z: 0 });
        assert_eq!(d.unflatten(23), Dim3 { x: 3, y: 2, z: 1 });
    }
}
