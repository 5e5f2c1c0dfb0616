//! CUDA's built-in variables, as functions: `threadIdx` is `thread_idx()`, and so on.
//!
//! They read the launch in progress (see `state.rs`), so a kernel body reads like CUDA C:
//!
//! ```text
//! CUDA C                                      here
//! int row = blockIdx.x;                       let row = block_idx().x;
//! for (int i = threadIdx.x; i < n;            let mut i = thread_idx().x;
//!      i += blockDim.x)                       while i < n { ...; i += block_dim().x; }
//! ```

use super::dim::Dim3;
use super::state::with_thread;

/// `threadIdx`: this thread's index in its block.
pub fn thread_idx() -> Dim3 {
    with_thread("thread_idx()", |l, t| l.config.block.unflatten(t))
}

/// `blockIdx`: this block's index in the grid.
pub fn block_idx() -> Dim3 {
    with_thread("block_idx()", |l, _| l.block_idx)
}

/// `blockDim`: the number of threads of a block, per dimension.
pub fn block_dim() -> Dim3 {
    with_thread("block_dim()", |l, _| l.config.block)
}

/// `gridDim`: the number of blocks of the grid, per dimension.
pub fn grid_dim() -> Dim3 {
    with_thread("grid_dim()", |l, _| l.config.grid)
}
