// Greedy sampling on the device: the CUDA twin of engine/src/sampler.rs's `argmax`.
// Index of the largest logit per row, the LOWEST index on ties (bf16 logits tie often, and
// transformers picks the first). NaN never wins; a row of NaN gives 0.
//
// One block per row. Each thread scans a strided slice, keeping its best (value, index); a
// warp-shuffle tree then a shared-memory pass merge them with the same tie rule, so the answer
// does not depend on the order the threads finish in.

__device__ __forceinline__ void take_better(float& best, u32& best_id, float v, u32 id) {
    if (v > best || (v == best && id < best_id)) {
        best = v;
        best_id = id;
    }
}

__device__ __forceinline__ void argmax_row(float best, u32 best_id, u32* out) {
    __shared__ float s_val[32];
    __shared__ u32 s_id[32];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        const float v = __shfl_xor_sync(0xffffffffu, best, offset);
        const u32 id = __shfl_xor_sync(0xffffffffu, best_id, offset);
        take_better(best, best_id, v, id);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        s_val[warp] = best;
        s_id[warp] = best_id;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)((blockDim.x + 31) / 32); w++) take_better(best, best_id, s_val[w], s_id[w]);
        out[blockIdx.x] = best_id == 0xffffffffu ? 0 : best_id;
    }
}

extern "C" __global__ void argmax_bf16_kernel(
    u32* __restrict__ out,                     // [num_seqs]
    const __nv_bfloat16* __restrict__ logits,  // [num_seqs, vocab_size]
    u32 vocab_size) {
    const __nv_bfloat16* row = logits + (size_t)blockIdx.x * vocab_size;
    float best = -INFINITY;
    u32 best_id = 0xffffffffu;
    for (u32 i = threadIdx.x; i < vocab_size; i += blockDim.x)
        take_better(best, best_id, __bfloat162float(row[i]), i);
    argmax_row(best, best_id, out);
}

extern "C" __global__ void argmax_f32_kernel(
    u32* __restrict__ out,            // [num_seqs]
    const float* __restrict__ logits, // [num_seqs, vocab_size]
    u32 vocab_size) {
    const float* row = logits + (size_t)blockIdx.x * vocab_size;
    float best = -INFINITY;
    u32 best_id = 0xffffffffu;
    for (u32 i = threadIdx.x; i < vocab_size; i += blockDim.x) take_better(best, best_id, row[i], i);
    argmax_row(best, best_id, out);
}

// ---------------------------------------------------------------------------------------------
// Random sampling on the device: the CUDA twin of engine/src/sampler.rs's `sample`, with the
// draw computed here by the twin of engine/src/philox.rs's `uniform(seed, position)`.
//
// The CPU sorts the row (largest logit first, lowest id first among equal logits), keeps the
// first top_k, takes softmax(logits / temperature) over them, keeps the shortest prefix whose
// mass reaches top_p, and walks that prefix with draw x kept mass. A sort of 128256 floats
// does not fit in a block's shared memory, and none of those steps needs one: each asks for a
// THRESHOLD in the sorted order.
//
//   - top-k: the key of the k-th candidate (k candidates lie at or above it);
//   - top-p: the largest key whose candidates at or above it weigh >= top_p x total;
//   - the draw: the largest key whose candidates at or above it weigh > draw x kept mass;
//     that candidate is the token.
//
// Sorted order = order of a 64-bit key: the logit's bits made order-preserving as an unsigned
// integer (the same order as Rust's `f32::total_cmp`) in the high half, ~id in the low half
// (equal logits: the lower id is the larger key, as the CPU's stable sort puts it first). Keys
// are distinct, so every threshold is one candidate.
//
// One block per row finds a threshold by radix selection, 8 bits at a time from the top: a
// pass over the row builds a 256-bin histogram of the next digit (count or weight) for the
// candidates that match the digits fixed so far; one thread walks the bins from the top,
// adding to the weight of everything above, and fixes the digit where the running sum first
// reaches the target. Eight passes fix the 64-bit key. No shared-memory sort, any vocabulary
// size, 26 passes over the row at most (the row stays in L2).
//
// Weights are exp((logit - max) / temperature), in (0, 1], summed in 2^-40 fixed point
// (u64 atomics): sums are exact integers, so the result does not depend on the order threads
// add in, and the same (logits, params, seed, position) gives the same token on every run.
// The CPU sums f32 in sorted order instead: the two disagree only when the CPU's rounded
// cumulative mass lies within its rounding error of top_p or of the draw (see the test).
// ---------------------------------------------------------------------------------------------

// Philox4x32-10, the twin of engine/src/philox.rs's philox4x32_10.
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
#pragma unroll
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k.x += 0x9E3779B9u;
            k.y += 0xBB67AE85u;
        }
        const u32 hi0 = __umulhi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
        const u32 hi1 = __umulhi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
        c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

// `uniform(seed, position)`: the position is the counter, the seed the key, the first output
// word's top 24 bits times 2^-24.
__device__ __forceinline__ float philox_uniform(u64 seed, u64 position) {
    const uint4 bits = philox4x32_10(make_uint4((u32)position, (u32)(position >> 32), 0u, 0u),
                                     make_uint2((u32)seed, (u32)(seed >> 32)));
    return (float)(bits.x >> 8) * (1.0f / 16777216.0f);
}

// For the test: the 128 bits and the uniform for each (seed, position).
extern "C" __global__ void philox_kernel(
    uint4* __restrict__ bits,           // [n]
    float* __restrict__ uniforms,       // [n]
    const u64* __restrict__ seeds,      // [n]
    const u64* __restrict__ positions,  // [n]
    u32 n) {
    const u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    bits[i] = philox4x32_10(make_uint4((u32)positions[i], (u32)(positions[i] >> 32), 0u, 0u),
                            make_uint2((u32)seeds[i], (u32)(seeds[i] >> 32)));
    uniforms[i] = philox_uniform(seeds[i], positions[i]);
}

__device__ __forceinline__ float load_logit(const float* row, u32 i) { return row[i]; }
__device__ __forceinline__ float load_logit(const __nv_bfloat16* row, u32 i) {
    return __bfloat162float(row[i]);
}

// The sort key: larger = earlier in the CPU's order.
__device__ __forceinline__ u64 sort_key(float v, u32 id) {
    const u32 b = __float_as_uint(v);
    const u32 ordered = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((u64)ordered << 32) | (u64)(0xFFFFFFFFu - id);
}

__device__ __forceinline__ u32 key_id(u64 key) { return 0xFFFFFFFFu - (u32)key; }

__device__ __forceinline__ float key_logit(u64 key) {
    const u32 ordered = (u32)(key >> 32);
    return __uint_as_float((ordered & 0x80000000u) ? (ordered & 0x7FFFFFFFu) : ~ordered);
}

// Fixed-point weight of a candidate: exp((v - max) / t) in units of 2^-40.
__device__ __forceinline__ u64 weight(float v, float max, float temperature) {
    return __float2ull_rn(expf((v - max) / temperature) * 1099511627776.0f);
}

// Block-wide reductions of u64 (max or sum); every thread gets the result.
template <bool MAX>
__device__ u64 block_reduce_u64(u64 x, u64* scratch /* [33] */) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        const u64 y = __shfl_xor_sync(0xffffffffu, x, offset);
        x = MAX ? (y > x ? y : x) : x + y;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // scratch may still be read from a previous call
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    if (threadIdx.x == 0) {
        u64 r = scratch[0];
        for (int w = 1; w < (int)(blockDim.x / 32); w++) r = MAX ? (scratch[w] > r ? scratch[w] : r) : r + scratch[w];
        scratch[32] = r;
    }
    __syncthreads();
    return scratch[32];
}

struct Selected {
    u64 key;    // the threshold candidate's key
    u64 above;  // count or weight of the candidates with key >= it
};

// Radix selection: the largest key t among the candidates (keys >= lo) such that the count
// (COUNT) or weight of the candidates with key >= t is >= target (or > target when STRICT).
// If no key qualifies (only when rounding left the target at the total), the smallest
// candidate: the CPU's "last kept token".
template <bool COUNT, bool STRICT, typename T>
__device__ Selected radix_select(const T* row, u32 vocab, u64 lo, float max, float temperature,
                                 u64 target, u64* hist /* [256] */, u64* shared /* [2] */) {
    u64 prefix = 0, above = 0, acc = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (u32 b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        // Keys sharing the digits fixed so far (none on the first pass).
        const u64 high_mask = shift == 56 ? 0 : ~0ull << (shift + 8);
        for (u32 i = threadIdx.x; i < vocab; i += blockDim.x) {
            const float v = load_logit(row, i);
            const u64 key = sort_key(v, i);
            if (key < lo || (key & high_mask) != prefix) continue;
            atomicAdd(&hist[(key >> shift) & 255], COUNT ? 1ull : weight(v, max, temperature));
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int chosen = -1, last = 0;
            for (int d = 255; d >= 0; d--) {
                if (hist[d] == 0) continue;
                const u64 sum = above + hist[d];
                if (STRICT ? sum > target : sum >= target) {
                    chosen = d;
                    break;
                }
                above = sum;
                last = d;
            }
            if (chosen < 0) {  // nothing reached the target: fall to the smallest candidate
                chosen = last;
                above -= hist[last];
            }
            shared[0] = prefix | ((u64)chosen << shift);
            shared[1] = above + hist[chosen];
        }
        __syncthreads();
        prefix = shared[0];
        acc = shared[1];
        above = acc - hist[(prefix >> shift) & 255];
        __syncthreads();  // before the next pass clears the histogram
    }
    return Selected{prefix, acc};
}

// One row: greedy (temperature 0) is `argmax`; otherwise top-k, softmax, top-p, draw.
template <typename T>
__device__ void sample_row(u32* out, const T* row, u32 vocab, float temperature, u32 top_k,
                           float top_p, u64 seed, u64 position) {
    __shared__ u64 hist[256];
    __shared__ u64 scratch[33];
    __shared__ u64 shared[2];
    if (temperature == 0.0f) {
        float best = -INFINITY;
        u32 best_id = 0xffffffffu;
        for (u32 i = threadIdx.x; i < vocab; i += blockDim.x) take_better(best, best_id, load_logit(row, i), i);
        argmax_row(best, best_id, out);
        return;
    }
    // The largest logit (the first candidate in sorted order) for a stable softmax.
    u64 top = 0;
    for (u32 i = threadIdx.x; i < vocab; i += blockDim.x) {
        const u64 key = sort_key(load_logit(row, i), i);
        top = key > top ? key : top;
    }
    top = block_reduce_u64<true>(top, scratch);
    const float max = key_logit(top);

    // top-k: candidates are the keys >= the k-th key.
    u64 lo = 0;
    if (top_k > 0 && top_k < vocab)
        lo = radix_select<true, false>(row, vocab, 0, max, temperature, top_k, hist, shared).key;

    // The softmax's denominator over the candidates.
    u64 total = 0;
    for (u32 i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = load_logit(row, i);
        if (sort_key(v, i) >= lo) total += weight(v, max, temperature);
    }
    total = block_reduce_u64<false>(total, scratch);

    // top-p: the shortest prefix whose weight reaches top_p x total (mass >= top_p).
    u64 kept = total;
    if (top_p < 1.0f) {
        const u64 target = (u64)ceil((double)top_p * (double)total);
        const Selected s = radix_select<false, false>(row, vocab, lo, max, temperature, target, hist, shared);
        lo = s.key;
        kept = s.above;
    }

    // The draw: the first candidate whose cumulative weight exceeds draw x kept.
    const double draw = philox_uniform(seed, position);
    const u64 target = (u64)floor(draw * (double)kept);
    const Selected s = radix_select<false, true>(row, vocab, lo, max, temperature, target, hist, shared);
    if (threadIdx.x == 0) out[blockIdx.x] = key_id(s.key);
}

#define SAMPLE_KERNEL(name, T)                                                                    \
    extern "C" __global__ void name(                                                              \
        u32* __restrict__ out,                  /* [num_seqs] */                                  \
        const T* __restrict__ logits,           /* [num_seqs, vocab_size] */                      \
        const float* __restrict__ temperature,  /* [num_seqs]; 0 = greedy */                      \
        const u32* __restrict__ top_k,          /* [num_seqs]; 0 = off */                         \
        const float* __restrict__ top_p,        /* [num_seqs]; 1 = off */                         \
        const u64* __restrict__ seed,           /* [num_seqs] */                                  \
        const u64* __restrict__ position,       /* [num_seqs] */                                  \
        u32 vocab_size) {                                                                         \
        const u32 s = blockIdx.x;                                                                 \
        sample_row(out, logits + (size_t)s * vocab_size, vocab_size, temperature[s], top_k[s],    \
                   top_p[s], seed[s], position[s]);                                               \
    }

SAMPLE_KERNEL(sample_f32_kernel, float)
SAMPLE_KERNEL(sample_bf16_kernel, __nv_bfloat16)
