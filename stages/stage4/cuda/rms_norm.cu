// Exercise 2 in CUDA C: RMSNorm, one block per token row. Your Rust kernel
// (src/rms_norm.rs), in CUDA: block_idx().x -> blockIdx.x, x.load(i) -> x[i],
// out.store(i, v) -> out[i] = v, block_sum(v).await -> block_sum(v) (cuda/block_reduce.cuh,
// compiled in front of this file).
// Test, on a machine with an NVIDIA GPU: cargo test -p stage4 --test cuda rms_norm
typedef unsigned int u32;

// out[t][i] = x[t][i] / sqrt(mean_j(x[t][j]^2) + eps) * weight[i], for row t = blockIdx.x.
extern "C" __global__ void rms_norm_kernel(
    float* __restrict__ out,           // [num_tokens, hidden_size]
    const float* __restrict__ x,       // [num_tokens, hidden_size]
    const float* __restrict__ weight,  // [hidden_size]
    float eps, u32 hidden_size) {
    // TODO (exercise 2): until you write it, `out` stays NaN and the test says so.
}
