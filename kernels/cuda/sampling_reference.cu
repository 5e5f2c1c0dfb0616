// The first device sampler, kept beside its replacement (sampling.cu) as the baseline that
// kernel_bench times it against and the oracle the test compares it with, token for token:
// both compute the same thresholds over the same fixed-point weights, so they agree on every
// row, including the rows where either may differ from the CPU (see sampling.cu).
//
// Radix selection 8 bits at a time over the whole 64-bit (logit, id) key: eight passes over the
// row per threshold, each adding every matching candidate's weight to a 256-bin histogram with a
// 64-bit shared-memory atomicAdd. Sm_90 has no native 64-bit shared add: it is a compare-and-swap
// loop, and since logits cluster, the first pass sends most of a warp to the same 2-4 bins, so
// each atomic retries up to 32 times. Measured (Nsight Compute, H200, 256 rows x 49152, T 0.6):
// 324 us a launch. Compiled as part of sampling.cu's program (sampling.rs appends this file), so
// it uses that file's helpers (sort_key, weight, block_reduce_u64, Selected, load_logit).

// Radix selection: the largest key t among the candidates (keys >= lo) such that the count
// (COUNT) or weight of the candidates with key >= t is >= target (or > target when STRICT).
// If no key qualifies (only when rounding left the target at the total), the smallest
// candidate: the CPU's "last kept token".
template <bool COUNT, bool STRICT, typename T>
__device__ Selected radix_select_reference(const T* row, u32 vocab, u64 lo, float max, float temperature,
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
__device__ void sample_row_reference(u32* out, const T* row, u32 vocab, float temperature, u32 top_k,
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
        lo = radix_select_reference<true, false>(row, vocab, 0, max, temperature, top_k, hist, shared).key;

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
        const Selected s = radix_select_reference<false, false>(row, vocab, lo, max, temperature, target, hist, shared);
        lo = s.key;
        kept = s.above;
    }

    // The draw: the first candidate whose cumulative weight exceeds draw x kept.
    const double draw = philox_uniform(seed, position);
    const u64 target = (u64)floor(draw * (double)kept);
    const Selected s = radix_select_reference<false, true>(row, vocab, lo, max, temperature, target, hist, shared);
    if (threadIdx.x == 0) out[blockIdx.x] = key_id(s.key);
}

#define SAMPLE_REFERENCE_KERNEL(name, T)                                                                    \
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
        sample_row_reference(out, logits + (size_t)s * vocab_size, vocab_size, temperature[s], top_k[s],    \
                   top_p[s], seed[s], position[s]);                                               \
    }

SAMPLE_REFERENCE_KERNEL(sample_f32_reference_kernel, float)
SAMPLE_REFERENCE_KERNEL(sample_bf16_reference_kernel, __nv_bfloat16)
