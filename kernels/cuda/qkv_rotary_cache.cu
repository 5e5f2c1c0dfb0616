// The three steps between the fused qkv projection and attention, in one pass: split the row
// [q | k | v] (split_columns.cu), rotate q and k by the token's position (rotary_embedding.cu),
// write k and v into the paged cache at the token's slot (reshape_and_cache.cu). Same
// arithmetic as those kernels (rotation in f32 from bf16, rounded once), so the results are
// bit for bit theirs; one launch instead of three and no intermediate k and v in memory. At
// decode sizes every launch costs ~3 µs whatever it does, so this saves two per layer.
//
// blockIdx.x is the token, blockIdx.y a slice of its work (kernels/src/lib.rs's
// row_tiles_launch: a decode batch of 32 tokens as 32 blocks took 14 µs for Llama-2-7B's 64
// heads on the H200, each thread walking 16 rotary pairs one after another). A token's work
// items are its rotary pairs (q heads, then k heads), then its v row as 16-byte vectors (or
// single values when head_dim is not a multiple of 8). Rotated q goes to its own contiguous
// tensor (attention reads it); rotated k and plain v go straight into the caches. A padding row
// (slot PADDING_SLOT) writes q only.

#define PADDING_SLOT 0xffffffffffffffffull

extern "C" __global__ void qkv_rotary_cache_kernel(
    __nv_bfloat16* __restrict__ q_out,        // [num_tokens, num_heads, head_dim]
    __nv_bfloat16* __restrict__ key_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    __nv_bfloat16* __restrict__ value_cache,  // [num_blocks, block_size, num_kv_heads, head_dim]
    const __nv_bfloat16* __restrict__ qkv,    // [num_tokens, (num_heads + 2 num_kv_heads) * head_dim]
    const u32* __restrict__ positions,        // [num_tokens]
    const u64* __restrict__ slot_mapping,     // [num_tokens]
    const float* __restrict__ cos_sin_cache,  // [max_position, head_dim]: head_dim/2 cos, then sin
    u32 num_heads, u32 num_kv_heads, u32 head_dim) {
    PDL_ENTRY();
    const u32 t = blockIdx.x;
    const u32 half = head_dim / 2;
    const u32 kv_row = num_kv_heads * head_dim;
    const __nv_bfloat16* row = qkv + (size_t)t * (num_heads * head_dim + 2 * kv_row);
    const u64 slot = slot_mapping[t];
    const bool write_kv = slot != PADDING_SLOT;
    const float* cos = cos_sin_cache + (size_t)positions[t] * head_dim;
    const float* sin = cos + half;

    const u32 q_pairs = num_heads * half;
    const u32 all_pairs = write_kv ? (num_heads + num_kv_heads) * half : q_pairs;
    const u32 first = blockIdx.y * blockDim.x + threadIdx.x, step = gridDim.y * blockDim.x;
    for (u32 p = first; p < all_pairs; p += step) {
        const __nv_bfloat16* src;
        __nv_bfloat16* dst;
        u32 i;
        if (p < q_pairs) {
            const u32 h = p / half;
            i = p % half;
            src = row + h * head_dim;
            dst = q_out + ((size_t)t * num_heads + h) * head_dim;
        } else {
            const u32 kp = p - q_pairs, h = kp / half;
            i = kp % half;
            src = row + (num_heads + h) * head_dim;
            dst = key_cache + (size_t)slot * kv_row + h * head_dim;
        }
        const float x = __bfloat162float(src[i]), y = __bfloat162float(src[i + half]);
        const float c = cos[i], s = sin[i];
        dst[i] = __float2bfloat16(x * c - y * s);
        dst[i + half] = __float2bfloat16(y * c + x * s);
    }
    if (!write_kv) return;
    // v: the work items after the pairs, in the same slices (item all_pairs + j is vector or
    // value j of the row), so the blocks that finish the pairs early take the copy.
    const __nv_bfloat16* v = row + num_heads * head_dim + kv_row;
    __nv_bfloat16* vc = value_cache + (size_t)slot * kv_row;
    const bool vec = head_dim % 8 == 0 &&
        ((reinterpret_cast<size_t>(qkv) | reinterpret_cast<size_t>(value_cache)) & 15) == 0;
    const u32 units = vec ? kv_row / 8 : kv_row;
    // This thread's first item at or after all_pairs, in its arithmetic progression.
    u32 j = first >= all_pairs ? first - all_pairs : (step - (all_pairs - first) % step) % step;
    for (; j < units; j += step) {
        if (vec) reinterpret_cast<uint4*>(vc)[j] = reinterpret_cast<const uint4*>(v)[j];
        else vc[j] = v[j];
    }
}
