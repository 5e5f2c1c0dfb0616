// Exercise 4 in CUDA C: decode attention, one block per (query head blockIdx.x, sequence
// blockIdx.y). Your Rust kernel (src/paged_attention.rs), in CUDA: shared::<f32>(max_seq_len)
// is the dynamic shared array `scores` below (the launch sizes it: max_seq_len floats),
// warp_sum / block_max / block_sum come from cuda/block_reduce.cuh (compiled in front of this
// file), and f32::NEG_INFINITY is NEG_INF.
// Test, on a machine with an NVIDIA GPU: cargo test -p stage4 --test cuda paged_attention
typedef unsigned int u32;

#define NEG_INF __int_as_float(0xff800000)

extern "C" __global__ void paged_attention_decode_kernel(
    float* __restrict__ out,                // [num_seqs, num_heads, head_dim]
    const float* __restrict__ query,        // [num_seqs, num_heads, head_dim]
    const float* __restrict__ key_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    const float* __restrict__ value_cache,  // [num_blocks, block_size, num_kv_heads, head_dim]
    const u32* __restrict__ block_tables,   // [num_seqs, max_blocks_per_seq]
    const u32* __restrict__ seq_lens,       // [num_seqs]
    float scale, u32 num_kv_heads, u32 head_dim, u32 block_size, u32 max_blocks_per_seq) {
    extern __shared__ float scores[];  // [max_seq_len]
    // TODO (exercise 4): until you write it, `out` stays NaN and the test says so.
}
