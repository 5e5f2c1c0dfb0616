// Decode attention over the paged KV cache, the CUDA twin of engine/src/ops/paged_attention.rs
// for the decode case: one query row per sequence, at position seq_len - 1, attending to cached
// tokens 0..seq_len (its own key is already in the cache: reshape_and_cache ran first).
//
// Work split. A block takes one sequence, HEADS query heads that share one KV head (GQA: the
// KV rows are read once for all of them), and one partition of the context. Within the block,
// a "thread group" of head_dim/8 threads holds one key row, 8 dims per thread as one 16-byte
// load; each group walks TOKENS tokens at a time (more loads in flight per thread) and keeps a
// running softmax (max m, sum l, weighted sum of values acc), rescaled when m grows. At the end
// the groups' states are merged through shared memory in a fixed order (deterministic).
//
// Single pass: one partition per sequence, the block writes the normalized output.
// Split-K, for long contexts: the context is cut into partitions of `partition_size` tokens so
// that more blocks share a long sequence; each writes its unnormalized (m, l, acc) to a
// workspace and paged_attention_reduce_kernel merges them:
//     M = max_p m_p,  out = sum_p exp(m_p - M) acc_p / sum_p exp(m_p - M) l_p.

#define NUM_THREADS 128
#define TOKENS 4

template <int D, int HEADS>
__device__ __forceinline__ void paged_attention_decode(
    __nv_bfloat16* __restrict__ out,                // [num_seqs, num_heads, head_dim]
    float* __restrict__ tmp_out,                    // [num_seqs, num_heads, max_partitions, head_dim]
    float* __restrict__ max_logits,                 // [num_seqs, num_heads, max_partitions]
    float* __restrict__ exp_sums,                   // [num_seqs, num_heads, max_partitions]
    const __nv_bfloat16* __restrict__ query,        // [num_seqs, num_heads, head_dim]
    const __nv_bfloat16* __restrict__ key_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    const __nv_bfloat16* __restrict__ value_cache,  // [num_blocks, block_size, num_kv_heads, head_dim]
    const u32* __restrict__ block_tables,           // [num_seqs, max_blocks_per_seq]
    const u32* __restrict__ seq_lens,               // [num_seqs]
    float scale, u32 num_heads, u32 num_kv_heads, u32 block_size, u32 max_blocks_per_seq,
    u32 partition_size) {
    constexpr int TPT = D / 8;  // threads per key row
    constexpr int NUM_GROUPS = NUM_THREADS / TPT;
    __shared__ float s_acc[NUM_GROUPS][HEADS][D];
    __shared__ float s_m[NUM_GROUPS][HEADS], s_l[NUM_GROUPS][HEADS];

    const u32 first_head = blockIdx.x * HEADS, seq = blockIdx.y, part = blockIdx.z;
    const u32 kv_head = first_head / (num_heads / num_kv_heads);
    const u32 seq_len = seq_lens[seq];
    const u32 start = part * partition_size;
    if (start >= seq_len) return;  // this sequence is shorter than the longest one
    const u32 end = min(start + partition_size, seq_len);
    const int group = threadIdx.x / TPT, lane = threadIdx.x % TPT;
    const u32* table = block_tables + (size_t)seq * max_blocks_per_seq;

    float q[HEADS][8], m[HEADS], l[HEADS], acc[HEADS][8];
#pragma unroll
    for (int h = 0; h < HEADS; h++) {
        const size_t q_row = ((size_t)seq * num_heads + first_head + h) * D;
        const f32x8 f = unpack8(reinterpret_cast<const uint4*>(query + q_row)[lane]);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            q[h][k] = f.v[k] * scale;
            acc[h][k] = 0.0f;
        }
        m[h] = -INFINITY;
        l[h] = 0.0f;
    }

    // Every group runs the same number of iterations, so the whole warp takes part in each
    // shuffle; tokens past `end` are masked instead of skipped.
    for (u32 base = start; base < end; base += NUM_GROUPS * TOKENS) {
        uint4 k_raw[TOKENS], v_raw[TOKENS];
        bool valid[TOKENS];
#pragma unroll
        for (int j = 0; j < TOKENS; j++) {
            const u32 tok = base + group * TOKENS + j;
            valid[j] = tok < end;
            k_raw[j] = v_raw[j] = make_uint4(0, 0, 0, 0);
            if (valid[j]) {
                const u32 block = table[tok / block_size];
                const size_t row = ((size_t)block * block_size + tok % block_size) * num_kv_heads + kv_head;
                k_raw[j] = reinterpret_cast<const uint4*>(key_cache + row * D)[lane];
                v_raw[j] = reinterpret_cast<const uint4*>(value_cache + row * D)[lane];
            }
        }
        float score[TOKENS][HEADS];
#pragma unroll
        for (int j = 0; j < TOKENS; j++) {
            const f32x8 k = unpack8(k_raw[j]);
#pragma unroll
            for (int h = 0; h < HEADS; h++) {
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < 8; i++) dot += q[h][i] * k.v[i];
#pragma unroll
                for (int offset = TPT / 2; offset > 0; offset /= 2)
                    dot += __shfl_xor_sync(0xffffffffu, dot, offset);
                score[j][h] = valid[j] ? dot : -INFINITY;
            }
        }
        f32x8 v[TOKENS];
#pragma unroll
        for (int j = 0; j < TOKENS; j++) v[j] = unpack8(v_raw[j]);
#pragma unroll
        for (int h = 0; h < HEADS; h++) {
            float m_new = m[h];
#pragma unroll
            for (int j = 0; j < TOKENS; j++) m_new = fmaxf(m_new, score[j][h]);
            if (m_new == -INFINITY) continue;  // no valid token seen yet by this group
            const float corr = __expf(m[h] - m_new);
            float p[TOKENS];
#pragma unroll
            for (int j = 0; j < TOKENS; j++) p[j] = __expf(score[j][h] - m_new);
            float l_new = l[h] * corr;
#pragma unroll
            for (int j = 0; j < TOKENS; j++) l_new += p[j];
            l[h] = l_new;
            m[h] = m_new;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float a = acc[h][i] * corr;
#pragma unroll
                for (int j = 0; j < TOKENS; j++) a += p[j] * v[j].v[i];
                acc[h][i] = a;
            }
        }
    }

    // Merge the groups' running softmaxes, then write.
#pragma unroll
    for (int h = 0; h < HEADS; h++) {
        if (lane == 0) {
            s_m[group][h] = m[h];
            s_l[group][h] = l[h];
        }
#pragma unroll
        for (int i = 0; i < 8; i++) s_acc[group][h][lane * 8 + i] = acc[h][i];
    }
    __syncthreads();
    const u32 num_partitions = gridDim.z;
    for (int idx = threadIdx.x; idx < HEADS * D; idx += NUM_THREADS) {
        const int h = idx / D, d = idx % D;
        float big_m = -INFINITY;
        for (int g = 0; g < NUM_GROUPS; g++) big_m = fmaxf(big_m, s_m[g][h]);
        float big_l = 0.0f, o = 0.0f;
        for (int g = 0; g < NUM_GROUPS; g++) {
            if (s_m[g][h] == -INFINITY) continue;  // a group that saw no token
            const float f = __expf(s_m[g][h] - big_m);
            big_l += s_l[g][h] * f;
            o += s_acc[g][h][d] * f;
        }
        const size_t head_row = (size_t)seq * num_heads + first_head + h;
        if (num_partitions == 1) {
            out[head_row * D + d] = __float2bfloat16(o / big_l);
        } else {
            const size_t p = head_row * num_partitions + part;
            tmp_out[p * D + d] = o;
            if (d == 0) {
                max_logits[p] = big_m;
                exp_sums[p] = big_l;
            }
        }
    }
}

template <int D>
__device__ __forceinline__ void paged_attention_reduce(
    __nv_bfloat16* __restrict__ out,       // [num_seqs, num_heads, head_dim]
    const float* __restrict__ tmp_out,     // [num_seqs, num_heads, max_partitions, head_dim]
    const float* __restrict__ max_logits,  // [num_seqs, num_heads, max_partitions]
    const float* __restrict__ exp_sums,    // [num_seqs, num_heads, max_partitions]
    const u32* __restrict__ seq_lens,      // [num_seqs]
    u32 max_partitions, u32 partition_size) {
    const u32 head = blockIdx.x, seq = blockIdx.y, num_heads = gridDim.x;
    const u32 used = (seq_lens[seq] + partition_size - 1) / partition_size;
    const size_t head_row = (size_t)seq * num_heads + head;
    const float* ml = max_logits + head_row * max_partitions;
    const float* es = exp_sums + head_row * max_partitions;
    float big_m = -INFINITY;
    for (u32 p = 0; p < used; p++) big_m = fmaxf(big_m, ml[p]);
    for (u32 d = threadIdx.x; d < D; d += blockDim.x) {
        float big_l = 0.0f, o = 0.0f;
        for (u32 p = 0; p < used; p++) {
            const float f = __expf(ml[p] - big_m);
            big_l += es[p] * f;
            o += tmp_out[(head_row * max_partitions + p) * D + d] * f;
        }
        out[head_row * D + d] = __float2bfloat16(o / big_l);
    }
}

// The entry points NVRTC exports, one per (head_dim, query heads per block). The Rust side
// picks HEADS as the largest of 8, 4, 3, 2, 1 that divides num_heads / num_kv_heads.
#define DECODE_ARGS                                                                            \
    __nv_bfloat16 *out, float *tmp_out, float *max_logits, float *exp_sums,                    \
        const __nv_bfloat16 *query, const __nv_bfloat16 *key_cache,                            \
        const __nv_bfloat16 *value_cache, const u32 *block_tables, const u32 *seq_lens,         \
        float scale, u32 num_heads, u32 num_kv_heads, u32 block_size, u32 max_blocks_per_seq,   \
        u32 partition_size
#define DECODE_NAMES                                                                           \
    out, tmp_out, max_logits, exp_sums, query, key_cache, value_cache, block_tables, seq_lens, \
        scale, num_heads, num_kv_heads, block_size, max_blocks_per_seq, partition_size
#define DECODE(D, H)                                                                           \
    extern "C" __global__ void __launch_bounds__(NUM_THREADS)                                  \
        paged_attention_decode_d##D##_h##H(DECODE_ARGS) {                                      \
        paged_attention_decode<D, H>(DECODE_NAMES);                                            \
    }
#define REDUCE(D)                                                                              \
    extern "C" __global__ void paged_attention_reduce_d##D(                                    \
        __nv_bfloat16 *out, const float *tmp_out, const float *max_logits,                     \
        const float *exp_sums, const u32 *seq_lens, u32 max_partitions, u32 partition_size) {  \
        paged_attention_reduce<D>(out, tmp_out, max_logits, exp_sums, seq_lens,                \
                                  max_partitions, partition_size);                             \
    }

DECODE(64, 1) DECODE(64, 2) DECODE(64, 3) DECODE(64, 4) DECODE(64, 8)
DECODE(128, 1) DECODE(128, 2) DECODE(128, 3) DECODE(128, 4) DECODE(128, 8)
REDUCE(64) REDUCE(128)
