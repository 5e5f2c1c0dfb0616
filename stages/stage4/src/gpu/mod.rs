//! A small CUDA-like GPU that runs on the CPU: enough of the execution model to write the
//! engine's kernels the way they are written in CUDA C, run them anywhere, and *measure* the
//! memory traffic that decides their speed on a real GPU.
//!
//! ```text
//! CUDA C                                        here
//! ------                                        ----
//! __global__ void k(float* out, const float* x) async fn k(out: &Global<f32>, x: &Global<f32>)
//! k<<<grid, block>>>(out, x);                   launch("k", LaunchConfig::new(grid, block),
//!                                                      || k(&out, &x));
//! threadIdx.x, blockIdx.y, blockDim.x, gridDim  thread_idx().x, block_idx().y, block_dim().x, grid_dim()
//! x[i]          out[i] = v                      x.load(i)       out.store(i, v)
//! __shared__ float s[32];                       let s = shared::<f32>(32);
//! s[i]          s[i] = v                        s.get(i)        s.set(i, v)
//! __syncthreads();                              sync_threads().await;
//! __shfl_xor_sync(0xffffffff, v, 16)            shfl_xor(v, 16).await
//! ```
//!
//! Files, in the order to read them:
//!
//! ```text
//! dim.rs       Dim3, LaunchConfig, WARP_SIZE
//! builtins.rs  thread_idx(), block_idx(), block_dim(), grid_dim()
//! global.rs    Global<T>: a buffer in HBM; every load and store is recorded
//! traffic.rs   how recorded accesses become requests, sectors and efficiency (coalescing)
//! shared.rs    shared::<T>(len): per-block arrays, with a race check between barriers
//! sync.rs      sync_threads(), shfl_xor / shfl / shfl_down, warp_sum, warp_max
//! launch.rs    launch(): the executor, one block at a time, thread by thread between barriers
//! state.rs     the launch in progress (a thread-local the others read)
//! ```
//!
//! Each file says where the model differs from the hardware. The main differences: there are
//! no caches (every sector an instruction touches is counted as moved), no timing (the model
//! counts bytes, it does not predict microseconds), and blocks run one after another.

mod builtins;
mod dim;
mod global;
mod launch;
mod shared;
mod state;
mod sync;
mod traffic;

#[cfg(test)]
mod tests;

pub use builtins::{block_dim, block_idx, grid_dim, thread_idx};
pub use dim::{Dim3, LaunchConfig, MAX_THREADS_PER_BLOCK, WARP_SIZE};
pub use global::Global;
pub use launch::launch;
pub use shared::{shared, Shared, MAX_SHARED_BYTES};
pub use sync::{shfl, shfl_down, shfl_xor, sync_threads, warp_max, warp_sum, Lane};
pub use sync::{Shuffle, SyncThreads};
pub use traffic::{BufferTraffic, LaunchStats, Traffic, SECTOR_BYTES};
