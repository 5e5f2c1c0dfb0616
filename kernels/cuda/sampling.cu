// Greedy sampling on the device: the CUDA twin of engine/src/sampler.rs's `argmax`.
// Index of the largest logit per row, the LOWEST index on ties (bf16 logits tie often, and
// transformers picks the first). NaN never wins; a row of NaN gives 0.
//
// One block per row. Each thread scans a strided slice, keeping its best (value, index); a
// warp-shuffle tree then a shared-memory pass merge them with the same tie rule, so the answer
// does not depend on the order the threads finish in.

__device__ __forceinline__ void take_better(float& best, u32& best_id, float v, u32 id) {
    if (v > best || (v == best && id < best_id)) {
        best = v;
        best_id = id;
    }
}

__device__ __forceinline__ void argmax_row(float best, u32 best_id, u32* out) {
    __shared__ float s_val[32];
    __shared__ u32 s_id[32];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        const float v = __shfl_xor_sync(0xffffffffu, best, offset);
        const u32 id = __shfl_xor_sync(0xffffffffu, best_id, offset);
        take_better(best, best_id, v, id);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        s_val[warp] = best;
        s_id[warp] = best_id;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)((blockDim.x + 31) / 32); w++) take_better(best, best_id, s_val[w], s_id[w]);
        out[blockIdx.x] = best_id == 0xffffffffu ? 0 : best_id;
    }
}

extern "C" __global__ void argmax_bf16_kernel(
    u32* __restrict__ out,                     // [num_seqs]
    const __nv_bfloat16* __restrict__ logits,  // [num_seqs, vocab_size]
    u32 vocab_size) {
    const __nv_bfloat16* row = logits + (size_t)blockIdx.x * vocab_size;
    float best = -INFINITY;
    u32 best_id = 0xffffffffu;
    for (u32 i = threadIdx.x; i < vocab_size; i += blockDim.x)
        take_better(best, best_id, __bfloat162float(row[i]), i);
    argmax_row(best, best_id, out);
}

extern "C" __global__ void argmax_f32_kernel(
    u32* __restrict__ out,            // [num_seqs]
    const float* __restrict__ logits, // [num_seqs, vocab_size]
    u32 vocab_size) {
    const float* row = logits + (size_t)blockIdx.x * vocab_size;
    float best = -INFINITY;
    u32 best_id = 0xffffffffu;
    for (u32 i = threadIdx.x; i < vocab_size; i += blockDim.x) take_better(best, best_id, row[i], i);
    argmax_row(best, best_id, out);
}
