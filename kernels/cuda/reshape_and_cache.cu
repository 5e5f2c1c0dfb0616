// Writing this step's keys and values into the paged KV cache: the CUDA twin of
// engine/src/ops/cache_ops.rs, with the same layout.
//
// Layout of one layer's cache: [num_blocks, block_size, num_kv_heads, head_dim], so slot
// `block * block_size + offset` is row `slot` of a [num_slots, num_kv_heads * head_dim] matrix
// and a token's key is one contiguous copy. One block per token; rows that are a multiple of 8
// wide move as 16-byte vectors.
//
// A slot of PADDING_SLOT (all ones) marks a padding row: a decode batch padded up to the size of a
// captured CUDA graph has rows that belong to no sequence, and their keys go nowhere.
#define PADDING_SLOT 0xffffffffffffffffull

extern "C" __global__ void reshape_and_cache_kernel(
    const __nv_bfloat16* __restrict__ key,    // [num_tokens, num_kv_heads, head_dim]
    const __nv_bfloat16* __restrict__ value,  // [num_tokens, num_kv_heads, head_dim]
    __nv_bfloat16* __restrict__ key_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    __nv_bfloat16* __restrict__ value_cache,  // [num_blocks, block_size, num_kv_heads, head_dim]
    const u64* __restrict__ slot_mapping,     // [num_tokens]
    u32 row) {                                // num_kv_heads * head_dim
    const u32 t = blockIdx.x;
    if (slot_mapping[t] == PADDING_SLOT) return;
    const size_t src = (size_t)t * row;
    const size_t dst = (size_t)slot_mapping[t] * row;
    const bool vec = row % 8 == 0 &&
        ((reinterpret_cast<size_t>(key) | reinterpret_cast<size_t>(value) |
          reinterpret_cast<size_t>(key_cache) | reinterpret_cast<size_t>(value_cache)) & 15) == 0;
    if (vec) {
    PDL_ENTRY();
        const uint4* k = reinterpret_cast<const uint4*>(key + src);
        const uint4* v = reinterpret_cast<const uint4*>(value + src);
        uint4* kc = reinterpret_cast<uint4*>(key_cache + dst);
        uint4* vc = reinterpret_cast<uint4*>(value_cache + dst);
        for (u32 i = threadIdx.x; i < row / 8; i += blockDim.x) {
            const uint4 kv = k[i], vv = v[i];  // both loads in flight before either store
            kc[i] = kv;
            vc[i] = vv;
        }
    } else {
        for (u32 i = threadIdx.x; i < row; i += blockDim.x) {
            key_cache[dst + i] = key[src + i];
            value_cache[dst + i] = value[src + i];
        }
    }
}
