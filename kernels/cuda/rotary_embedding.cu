// Rotary position embedding (NeoX layout), the CUDA twin of engine/src/ops/rotary_embedding.rs.
//
// One block per token; its threads walk every (head, pair) of the token's query and key heads.
// Pair i of a head is (v[i], v[i + head_dim/2]), rotated by the angle cached for the token's
// position: x' = x cos - y sin, y' = y cos + x sin, in f32, rounded to bf16 once.
// The cos/sin cache stays f32 as on the CPU (it is small and read from L2).

extern "C" __global__ void rotary_embedding_kernel(
    const u32* __restrict__ positions,        // [num_tokens]
    __nv_bfloat16* __restrict__ query,        // [num_tokens, num_heads, head_dim], rotated in place
    __nv_bfloat16* __restrict__ key,          // [num_tokens, num_kv_heads, head_dim], rotated in place
    const float* __restrict__ cos_sin_cache,  // [max_position, head_dim]: head_dim/2 cos, then sin
    u32 num_heads, u32 num_kv_heads, u32 head_dim) {
    PDL_ENTRY();
    const u32 t = blockIdx.x;
    const u32 half = head_dim / 2;
    const float* cos = cos_sin_cache + (size_t)positions[t] * head_dim;
    const float* sin = cos + half;
    const u32 q_pairs = num_heads * half;
    const u32 all_pairs = (num_heads + num_kv_heads) * half;
    for (u32 p = threadIdx.x; p < all_pairs; p += blockDim.x) {
        __nv_bfloat16* head;
        u32 i;
        if (p < q_pairs) {
            head = query + ((size_t)t * num_heads + p / half) * head_dim;
            i = p % half;
        } else {
            const u32 kp = p - q_pairs;
            head = key + ((size_t)t * num_kv_heads + kp / half) * head_dim;
            i = kp % half;
        }
        const float x = __bfloat162float(head[i]), y = __bfloat162float(head[i + half]);
        const float c = cos[i], s = sin[i];
        head[i] = __float2bfloat16(x * c - y * s);
        head[i + half] = __float2bfloat16(y * c + x * s);
    }
}
