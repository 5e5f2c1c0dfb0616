// Exercise 2 in CUDA C, the reference: RMSNorm, one block per token row (yours:
// cuda/rms_norm.cu). Compiled after block_reduce.cuh.
typedef unsigned int u32;

extern "C" __global__ void rms_norm_kernel(
    float* __restrict__ out,           // [num_tokens, hidden_size]
    const float* __restrict__ x,       // [num_tokens, hidden_size]
    const float* __restrict__ weight,  // [hidden_size]
    float eps, u32 hidden_size) {
    const size_t row = (size_t)blockIdx.x * hidden_size;
    // Strided: in each pass, the lanes of a warp read neighbouring floats.
    float sum_sq = 0.0f;
    for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) {
        const float v = x[row + i];
        sum_sq += v * v;
    }
    const float inv_rms = 1.0f / sqrtf(block_sum(sum_sq) / hidden_size + eps);
    for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) {
        out[row + i] = weight[i] * (x[row + i] * inv_rms);
    }
}
