// Exercise 3 in CUDA C: reshape_and_cache, one block per token. Your Rust kernel
// (src/reshape_and_cache.rs), in CUDA.
// Test, on a machine with an NVIDIA GPU: cargo test -p stage4 --test cuda reshape_and_cache
typedef unsigned int u32;
typedef unsigned long long u64;

// A padding row's slot (all ones; vLLM's -1 in int64): its key and value go nowhere.
#define PADDING_SLOT 0xffffffffffffffffull

// Copies token blockIdx.x's key and value rows into slot slot_mapping[token] of the caches
// (block slot / block_size, offset slot % block_size), unless that slot is PADDING_SLOT.
extern "C" __global__ void reshape_and_cache_kernel(
    const float* __restrict__ key,      // [num_tokens, num_kv_heads, head_dim]
    const float* __restrict__ value,    // [num_tokens, num_kv_heads, head_dim]
    float* __restrict__ key_cache,      // [num_blocks, block_size, num_kv_heads, head_dim]
    float* __restrict__ value_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    const u64* __restrict__ slot_mapping,  // [num_tokens]
    u32 num_kv_heads, u32 head_dim, u32 block_size) {
    // TODO (exercise 3): until you write it, the caches stay NaN and the test says so.
}
