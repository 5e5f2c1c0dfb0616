// Exercise 3 in CUDA C, the reference: reshape_and_cache, one block per token (yours:
// cuda/reshape_and_cache.cu).
typedef unsigned int u32;
typedef unsigned long long u64;

// A padding row's slot (all ones; vLLM's -1 in int64): its key and value go nowhere.
#define PADDING_SLOT 0xffffffffffffffffull

extern "C" __global__ void reshape_and_cache_kernel(
    const float* __restrict__ key,      // [num_tokens, num_kv_heads, head_dim]
    const float* __restrict__ value,    // [num_tokens, num_kv_heads, head_dim]
    float* __restrict__ key_cache,      // [num_blocks, block_size, num_kv_heads, head_dim]
    float* __restrict__ value_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    const u64* __restrict__ slot_mapping,  // [num_tokens]
    u32 num_kv_heads, u32 head_dim, u32 block_size) {
    const u32 token = blockIdx.x;
    const u64 slot = slot_mapping[token];
    if (slot == PADDING_SLOT) return;  // the whole block: no barrier waits for it
    const u64 block = slot / block_size, offset = slot % block_size;
    const u32 row = num_kv_heads * head_dim;
    // Source and destination rows are both contiguous: element i to element i, lanes side by side.
    const size_t src = (size_t)token * row;
    const size_t dst = (size_t)(block * block_size + offset) * row;
    for (u32 i = threadIdx.x; i < row; i += blockDim.x) {
        key_cache[dst + i] = key[src + i];
        value_cache[dst + i] = value[src + i];
    }
}
