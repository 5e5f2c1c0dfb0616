// Exercise 4 in CUDA C, the reference: decode attention, one block per (head, sequence)
// (yours: cuda/paged_attention_decode.cu). Compiled after block_reduce.cuh. The launch gives
// the block max_seq_len floats of dynamic shared memory for the scores.
typedef unsigned int u32;

#define NEG_INF __int_as_float(0xff800000)

// Where key/value j of KV head kv_head starts in the cache, found through the block table.
__device__ __forceinline__ size_t kv_offset(const u32* table, u32 j, u32 block_size,
                                            u32 num_kv_heads, u32 kv_head, u32 head_dim) {
    const size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
    return (slot * num_kv_heads + kv_head) * head_dim;
}

extern "C" __global__ void paged_attention_decode_kernel(
    float* __restrict__ out,                // [num_seqs, num_heads, head_dim]
    const float* __restrict__ query,        // [num_seqs, num_heads, head_dim]
    const float* __restrict__ key_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    const float* __restrict__ value_cache,  // [num_blocks, block_size, num_kv_heads, head_dim]
    const u32* __restrict__ block_tables,   // [num_seqs, max_blocks_per_seq]
    const u32* __restrict__ seq_lens,       // [num_seqs]
    float scale, u32 num_kv_heads, u32 head_dim, u32 block_size, u32 max_blocks_per_seq) {
    extern __shared__ float scores[];  // [max_seq_len]
    const u32 head = blockIdx.x, seq = blockIdx.y, num_heads = gridDim.x;
    const u32 kv_head = head / (num_heads / num_kv_heads);
    const u32 seq_len = seq_lens[seq];
    const u32 warp = threadIdx.x / 32, lane = threadIdx.x % 32, num_warps = blockDim.x / 32;
    const float* q = query + ((size_t)seq * num_heads + head) * head_dim;
    const u32* table = block_tables + (size_t)seq * max_blocks_per_seq;

    // 1. Scores: a warp per key, its lanes across head_dim (coalesced key rows).
    for (u32 j = warp; j < seq_len; j += num_warps) {
        const float* k = key_cache + kv_offset(table, j, block_size, num_kv_heads, kv_head, head_dim);
        float dot = 0.0f;
        for (u32 d = lane; d < head_dim; d += 32) dot += q[d] * k[d];
        dot = warp_sum(dot);
        if (lane == 0) scores[j] = dot * scale;
    }
    __syncthreads();

    // 2. Softmax: the maximum first, so that expf never overflows.
    float m = NEG_INF;
    for (u32 j = threadIdx.x; j < seq_len; j += blockDim.x) m = fmaxf(m, scores[j]);
    m = block_max(m);
    float sum = 0.0f;
    for (u32 j = threadIdx.x; j < seq_len; j += blockDim.x) {
        const float p = expf(scores[j] - m);
        scores[j] = p;
        sum += p;
    }
    const float inv_sum = 1.0f / block_sum(sum);  // its barriers also publish the p's

    // 3. Weighted sum of values: thread d owns output dimension d (coalesced value rows).
    float* o = out + ((size_t)seq * num_heads + head) * head_dim;
    for (u32 d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (u32 j = 0; j < seq_len; j++) {
            acc += scores[j] *
                   value_cache[kv_offset(table, j, block_size, num_kv_heads, kv_head, head_dim) + d];
        }
        o[d] = acc * inv_sum;
    }
}
