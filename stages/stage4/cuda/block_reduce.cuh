// Exercise 1 in CUDA C: block reductions. Your Rust version (src/block_reduce.rs), in CUDA:
//   warp_sum(v).await  -> warp_sum(v)          sync_threads().await -> __syncthreads()
//   shared::<f32>(32)  -> __shared__ float s[32];   s.get(i) / s.set(i, v) -> s[i] / s[i] = v
// The test compiles this file in front of rms_norm.cu and paged_attention_decode.cu
// (`cargo test -p stage4 --test cuda`, on a machine with an NVIDIA GPU).
//
// Every thread of the block calls block_sum / block_max (they wait at barriers); blockDim.x is
// a multiple of 32. As in CUDA, a __shared__ variable declared in a __device__ function is one
// array per block.
typedef unsigned int u32;

// Given: the sum (max) over the 32 lanes of the warp, in every lane.
__device__ __forceinline__ float warp_sum(float v) {
    for (int mask = 16; mask > 0; mask /= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int mask = 16; mask > 0; mask /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, mask));
    return v;
}

// The sum of v over every thread of the block, in every thread.
__device__ float block_sum(float v) {
    // TODO (exercise 1): warp_sum, one slot per warp in __shared__ memory, barriers, the slots
    // added in the same order by every thread.
    return 0.0f;
}

// The maximum of v over every thread of the block, in every thread.
__device__ float block_max(float v) {
    // TODO (exercise 1): as block_sum, with fmaxf.
    return 0.0f;
}
