// Exercise 1 in CUDA C, the reference: block reductions (yours: cuda/block_reduce.cuh).
// The test compiles this file in front of rms_norm.cu and paged_attention_decode.cu.
//
// Every thread of the block calls block_sum / block_max (they wait at barriers); blockDim.x is
// a multiple of 32. Each declares its own __shared__ slots, one per warp: as in CUDA, a
// __shared__ variable in a __device__ function is one array per block.
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

__device__ float block_sum(float v) {
    __shared__ float scratch[32];  // one slot per warp: 32 warps at most
    const u32 warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    v = warp_sum(v);
    __syncthreads();  // a previous call's threads may still be reading the slots
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;  // every thread adds the slots in the same order: the same bits
    for (u32 w = 0; w < blockDim.x / 32; w++) total += scratch[w];
    return total;
}

__device__ float block_max(float v) {
    __shared__ float scratch[32];
    const u32 warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = scratch[0];
    for (u32 w = 1; w < blockDim.x / 32; w++) m = fmaxf(m, scratch[w]);
    return m;
}
