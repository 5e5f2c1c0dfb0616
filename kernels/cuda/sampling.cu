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

// The warp's best (value, id), in every lane.
__device__ __forceinline__ void warp_best(float& best, u32& best_id) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        const float v = __shfl_xor_sync(0xffffffffu, best, offset);
        const u32 id = __shfl_xor_sync(0xffffffffu, best_id, offset);
        take_better(best, best_id, v, id);
    }
}

// The block's best (value, id), in thread 0 (0xffffffff: no logit but NaN).
__device__ __forceinline__ void block_best(float& best, u32& best_id) {
    __shared__ float s_val[32];
    __shared__ u32 s_id[32];
    warp_best(best, best_id);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        s_val[warp] = best;
        s_id[warp] = best_id;
    }
    __syncthreads();
    if (threadIdx.x == 0)
        for (int w = 1; w < (int)((blockDim.x + 31) / 32); w++) take_better(best, best_id, s_val[w], s_id[w]);
}

__device__ __forceinline__ void argmax_row(float best, u32 best_id, u32* out) {
    block_best(best, best_id);
    if (threadIdx.x == 0) out[blockIdx.x] = best_id == 0xffffffffu ? 0 : best_id;
}

// The row's argmax into out[blockIdx.x] (defined below, beside the vector loads it uses).
template <typename T>
__device__ void greedy_row(u32* out, const T* row, u32 vocab);

extern "C" __global__ void argmax_bf16_kernel(
    u32* __restrict__ out,                     // [num_seqs]
    const __nv_bfloat16* __restrict__ logits,  // [num_seqs, vocab_size]
    u32 vocab_size) {
    PDL_ENTRY();
    greedy_row(out, logits + (size_t)blockIdx.x * vocab_size, vocab_size);
}

extern "C" __global__ void argmax_f32_kernel(
    u32* __restrict__ out,            // [num_seqs]
    const float* __restrict__ logits, // [num_seqs, vocab_size]
    u32 vocab_size) {
    PDL_ENTRY();
    greedy_row(out, logits + (size_t)blockIdx.x * vocab_size, vocab_size);
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
// integer `u` (the same order as Rust's `f32::total_cmp`) in the high half, ~id in the low half
// (equal logits: the lower id is the larger key, as the CPU's stable sort puts it first). Keys
// are distinct, so every threshold is one candidate.
//
// Weights are exp((logit - max) / temperature), in (0, 1], summed in 2^-40 fixed point: sums
// are exact integers, so the result does not depend on the order threads add in, and the same
// (logits, params, seed, position) gives the same token on every run. The CPU sums f32 in
// sorted order instead: the two disagree only when the CPU's rounded cumulative mass lies
// within its rounding error of top_p or of the draw (see the test).
//
// Finding a threshold (`select`), one block per row, in two halves of the key:
//
//   1. The logit, by radix selection over `u`: a pass over the row adds each candidate's weight
//      (or 1, for top-k) to a histogram of the next digit of `u`, among the candidates whose
//      higher digits match those fixed so far; a block-wide scan of the bins from the top finds
//      the digit where the weight at or above first reaches the target. The first digit is 12
//      bits wide (4096 bins): logits cluster, and with 256 bins most of a warp would add to the
//      same few bins, serializing its atomics. bf16 logits (and f32 rows holding only bf16
//      values: checked on the first pass) have 16 significant bits, so one more 4-bit digit
//      fixes the logit; other f32 rows take two 10-bit digits.
//   2. The id, without more radix passes: every candidate with the chosen logit u* has the
//      same weight w, and they come in id order. With A = the weight above u*, the threshold is
//      the j-th of them for the smallest j with A + j w reaching the target: j is arithmetic,
//      and the j-th occurrence of u* in the row is found by counting matches per 256-logit tile
//      and scanning the counts.
//
// Passes over the row (it stays in L2): 1 for the max, 1 for the weights of the first digit
// (this one also gives the total, and serves top-p and the draw alike), then per threshold 1
// per further digit (1 for bf16 values, else 2) and 1 for the id. The draw searches all candidates, not only top-p's
// prefix: its target is below the kept mass, so its threshold lies inside that prefix anyway,
// and the first digit's histogram is shared. Histogram bins are two u32 halves with an exact
// carry, so each add is one or two native 32-bit shared atomics (a 64-bit shared atomicAdd is
// a compare-and-swap loop on sm_90).
//
// This computes the same function as the first version (sampling_reference.cu; same keys,
// same weights, same targets, same thresholds), so the two give the same token on every row.
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
    PDL_ENTRY();
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

// The logit's bits as an unsigned integer in the logit's order (that of Rust's f32::total_cmp),
// and back.
__device__ __forceinline__ u32 ordered_bits(float v) {
    const u32 b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float ordered_logit(u32 u) {
    return __uint_as_float((u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u);
}

// The sort key: larger = earlier in the CPU's order.
__device__ __forceinline__ u64 key_of(u32 u, u32 id) { return ((u64)u << 32) | (u64)(0xFFFFFFFFu - id); }

__device__ __forceinline__ u64 sort_key(float v, u32 id) { return key_of(ordered_bits(v), id); }

__device__ __forceinline__ u32 key_id(u64 key) { return 0xFFFFFFFFu - (u32)key; }

__device__ __forceinline__ float key_logit(u64 key) { return ordered_logit((u32)(key >> 32)); }

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

__device__ __forceinline__ u32 umin(u32 a, u32 b) { return a < b ? a : b; }

// Eight logits from index `base`, as f32: one 16-byte load for 8 bf16, two for 8 f32. The row
// must be 16-byte aligned and hold them all (`whole8`).
__device__ __forceinline__ void load8(const __nv_bfloat16* row, u32 base, float (&v)[8]) {
    const uint4 raw = *reinterpret_cast<const uint4*>(row + base);
    const u32 words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 8; k++)  // little-endian: element 2i is the low half of word i
        v[k] = __bfloat162float(__ushort_as_bfloat16((unsigned short)(words[k / 2] >> (16 * (k % 2)))));
}

__device__ __forceinline__ void load8(const float* row, u32 base, float (&v)[8]) {
    const float4 a = *reinterpret_cast<const float4*>(row + base);
    const float4 b = *reinterpret_cast<const float4*>(row + base + 4);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

// Whether logits base..base + 8 can be loaded by `load8`.
template <typename T>
__device__ __forceinline__ bool whole8(const T* row, u32 vocab, u32 base) {
    return (reinterpret_cast<size_t>(row) & 15) == 0 && base + 8 <= vocab;
}

// f(id, logit) for logits base..base + 8 that exist.
template <typename T, typename F>
__device__ __forceinline__ void visit8(const T* row, u32 vocab, u32 base, F&& f) {
    if (whole8(row, vocab, base)) {
        float v[8];
        load8(row, base, v);
#pragma unroll
        for (int k = 0; k < 8; k++) f(base + k, v[k]);
    } else {  // the row's tail, or an unaligned row: not unrolled (less code to compile)
#pragma unroll 1
        for (int k = 0; k < 8; k++)
            if (base + k < vocab) f(base + k, load_logit(row, base + k));
    }
}

// The argmax of a row by one block: each thread keeps the best of its groups of 8 consecutive
// logits (16-byte loads), then argmax_row merges the threads. At batch 1 the whole row is one
// block's, so the scan is a chain of trips to memory: GREEDY_GROUPS groups' loads are issued
// before any is compared. (Loading one logit per thread per trip, a 128256-logit bf16 row took
// 55 µs on the H200, Nsight Compute, 2026-11-29; 5% of a Llama-3.2-1B decode step.) Any order
// of visits gives the same answer: take_better is a total order (larger value, then lower id).
#define GREEDY_GROUPS 4

// This thread's best of logits [begin, vocab) of the row (begin a multiple of 8, so that a
// slice's 16-byte loads stay aligned).
template <typename T>
__device__ void greedy_scan(const T* row, u32 vocab, u32 begin, float& best, u32& best_id) {
    best = -INFINITY;
    best_id = 0xffffffffu;
    const u32 stride = blockDim.x * 8;
    u32 base = begin + threadIdx.x * 8;
    if ((reinterpret_cast<size_t>(row) & 15) == 0) {
        for (; base + (GREEDY_GROUPS - 1) * stride + 8 <= vocab; base += GREEDY_GROUPS * stride) {
            float v[GREEDY_GROUPS][8];
#pragma unroll
            for (int g = 0; g < GREEDY_GROUPS; g++) load8(row, base + g * stride, v[g]);
#pragma unroll
            for (int g = 0; g < GREEDY_GROUPS; g++)
#pragma unroll
                for (int k = 0; k < 8; k++) take_better(best, best_id, v[g][k], base + g * stride + k);
        }
    }
    for (; base < vocab; base += stride)
        visit8(row, vocab, base, [&](u32 i, float v) { take_better(best, best_id, v, i); });
}

template <typename T>
__device__ void greedy_row(u32* out, const T* row, u32 vocab) {
    float best;
    u32 best_id;
    greedy_scan(row, vocab, 0, best, best_id);
    argmax_row(best, best_id, out);
}

// A greedy row of a small batch split over GREEDY_SPLITS blocks (the grid's y). One block
// scans a whole row as a chain of trips to memory from one SM: 11.7 µs for Llama-3.2-1B's
// 128256 logits at batch 1 (H200, `lab bench --kernel-timeline`, 2026-12-02), against 0.06 µs
// of bytes at the copy bandwidth. Split, each block scans a slice in about one trip and leaves
// its best in greedy_partial_val / _id; the last block of the row to finish (a ticket per row) merges
// them in slice order with the same total order (larger value, then lower id), so the answer
// is the one-block answer, and resets the ticket for the next launch (or graph replay).
// The scratch is the module's own: launches on one stream run one after another (a PDL
// launch's blocks touch it only after their wait), and each GPU loads its own module.
#define GREEDY_SPLITS 16
// Larger batches keep a block per row: they were measured only at batch 1, and nano-vllm's
// workload (whose batches fall to 32 and fewer at its end) lost 1-3% of its output tokens a
// second with rows of up to 32 split (four runs, 2026-12-02; within the runs' noise, all four
// the same way).
#define GREEDY_SPLIT_MAX_ROWS 4
__device__ float greedy_partial_val[GREEDY_SPLIT_MAX_ROWS * GREEDY_SPLITS];
__device__ u32 greedy_partial_id[GREEDY_SPLIT_MAX_ROWS * GREEDY_SPLITS];
__device__ u32 greedy_tickets[GREEDY_SPLIT_MAX_ROWS];

template <typename T>
__device__ void greedy_row_split(u32* out, const T* row, u32 vocab) {
    const u32 r = blockIdx.x, g = blockIdx.y;
    const u32 slice = (vocab + GREEDY_SPLITS * 8 - 1) / (GREEDY_SPLITS * 8) * 8;
    const u32 begin = min(g * slice, vocab), end = min(begin + slice, vocab);
    float best;
    u32 best_id;
    greedy_scan(row, end, begin, best, best_id);
    block_best(best, best_id);
    __shared__ bool s_last;
    if (threadIdx.x == 0) {
        greedy_partial_val[r * GREEDY_SPLITS + g] = best;
        greedy_partial_id[r * GREEDY_SPLITS + g] = best_id;
        __threadfence();  // the partial is visible before the ticket says so
        s_last = atomicAdd(&greedy_tickets[r], 1u) == GREEDY_SPLITS - 1;
    }
    __syncthreads();
    if (!s_last || threadIdx.x >= 32) return;
    __threadfence();  // every other block's partial, seen through its ticket
    best = -INFINITY;
    best_id = 0xffffffffu;
    if (threadIdx.x < GREEDY_SPLITS) {
        best = __ldcg(&greedy_partial_val[r * GREEDY_SPLITS + threadIdx.x]);
        best_id = __ldcg(&greedy_partial_id[r * GREEDY_SPLITS + threadIdx.x]);
    }
    warp_best(best, best_id);
    if (threadIdx.x == 0) {
        out[r] = best_id == 0xffffffffu ? 0 : best_id;
        greedy_tickets[r] = 0;
    }
}

// f(id, logit) for every logit of the row; each thread takes 8 consecutive logits at a time.
template <typename T, typename F>
__device__ __forceinline__ void for_each_logit(const T* row, u32 vocab, F&& f) {
    for (u32 base = threadIdx.x * 8; base < vocab; base += blockDim.x * 8) visit8(row, vocab, base, f);
}

// Whether the candidate (u, id) has key >= lo (lo = 0: every logit is a candidate).
__device__ __forceinline__ bool at_or_above(u32 u, u32 id, u32 lo_u, u32 lo_id) {
    return u > lo_u || (u == lo_u && id <= lo_id);
}

// A histogram of u64 sums kept as two u32 halves. `lo` wraps; the add that wraps it (its
// atomicAdd returned an old value above old + x mod 2^32) carries 1 into `hi`. Exact and
// independent of the order of the adds, like a u64 sum, but each add is one native 32-bit
// shared atomic (two when the value or a carry reaches the high half).
struct Hist {
    u32* lo;  // [bins]
    u32* hi;  // [bins]
};

__device__ __forceinline__ void hist_add(const Hist& h, u32 bin, u64 x) {
    const u32 low = (u32)x;
    const u32 old = atomicAdd(&h.lo[bin], low);
    const u32 high = (u32)(x >> 32) + (old + low < old ? 1u : 0u);
    if (high != 0) atomicAdd(&h.hi[bin], high);
}

__device__ __forceinline__ u64 hist_get(const Hist& h, u32 bin) {
    return ((u64)h.hi[bin] << 32) | h.lo[bin];
}

__device__ __forceinline__ void hist_clear(const Hist& h, u32 bins) {
    for (u32 b = threadIdx.x; b < bins; b += blockDim.x) h.lo[b] = h.hi[b] = 0;
}

// The first digit of u: its top 12 bits (sign, exponent, 3 mantissa bits).
constexpr u32 FIRST_SHIFT = 20;
constexpr u32 FIRST_BINS = 1u << (32 - FIRST_SHIFT);
// Later digits: 4 bits for bf16 values, else two of 10 bits (at most LATER_BINS bins).
constexpr u32 LATER_BINS = 1024;
// The id search counts matches per TILE logits (a warp, 8 logits a lane), in at most
// MAX_GROUPS groups of consecutive tiles (one tile a group up to 2048 x 256 = 524288 logits).
constexpr u32 TILE = 256;
constexpr u32 MAX_GROUPS = 2 * LATER_BINS;

struct Scratch {
    u64 sums[33];       // block reductions and scans
    u64 above, bin;     // pick_digit: the chosen bin's weight above it, and its own
    int best, lowest;   // pick_digit: the bins that qualify
    u32 group, rank, id;  // the id search
};

struct Shared {
    u32 h1[2 * FIRST_BINS];  // the first digit's histogram (lo halves, then hi halves)
    u32 h2[2 * LATER_BINS];  // a later digit's; then the id search's counts per group
    Scratch sc;
};

// The sampler's shared memory, one per block (41 KB). The functions below name it directly
// rather than take a reference: through a reference, a function that is not inlined would
// address it with generic loads and atomics.
__shared__ Shared smem;

__device__ __forceinline__ Hist first_hist() { return Hist{smem.h1, smem.h1 + FIRST_BINS}; }
__device__ __forceinline__ Hist later_hist() { return Hist{smem.h2, smem.h2 + LATER_BINS}; }

// Inclusive prefix sum of x over the block, in thread order; `total`: the whole block's sum.
__device__ u64 block_scan(u64 x, u64* warp_sums /* [32] */, u64& total) {
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
#pragma unroll
    for (u32 offset = 1; offset < 32; offset *= 2) {
        const u64 y = __shfl_up_sync(0xffffffffu, x, offset);
        if (lane >= offset) x += y;
    }
    __syncthreads();  // warp_sums may still be read from a previous call
    if (lane == 31) warp_sums[warp] = x;
    __syncthreads();
    u64 s = lane < warps ? warp_sums[lane] : 0;
#pragma unroll
    for (u32 offset = 1; offset < 32; offset *= 2) {
        const u64 y = __shfl_up_sync(0xffffffffu, s, offset);
        if (lane >= offset) s += y;
    }
    total = __shfl_sync(0xffffffffu, s, 31);
    const u64 before = __shfl_sync(0xffffffffu, s, (warp + 31) % 32);  // warps before this one
    return x + (warp > 0 ? before : 0);
}

struct Digit {
    u32 d;       // the chosen bin
    u64 above;   // weight of the candidates above it (including the `above` passed in)
    u64 bin;     // its own weight
    bool missed; // no bin reached the target
};

// One digit of u: the largest bin d holding weight such that `above` (the weight above every
// bin) plus the bins >= d reach the target (exceed it when strict). If none does (`missed`:
// the candidates' total misses the target, or it did at an earlier digit), the smallest bin
// holding weight, so that the search ends at the smallest candidate, as the CPU's walk ends
// at its last kept token. The bins are scanned by the whole block: each thread sums a run of
// them, a block scan gives the weight above each run, and each thread checks its own bins.
// The histogram: the first digit's (`first`) or a later one's.
__device__ __noinline__ Digit pick_digit(bool first, u32 bins, u64 above, u64 target, bool strict, bool missed) {
    const Hist h = first ? first_hist() : later_hist();
    Scratch& sc = smem.sc;
    const u32 per = (bins + blockDim.x - 1) / blockDim.x;
    const u32 b0 = umin(threadIdx.x * per, bins), b1 = umin(b0 + per, bins);
    u64 mine = 0;
    for (u32 d = b0; d < b1; d++) mine += hist_get(h, d);
    if (threadIdx.x == 0) {  // the scan's barriers order this before the atomics below
        sc.best = -1;
        sc.lowest = (int)bins;
    }
    u64 total;
    const u64 inclusive = block_scan(mine, sc.sums, total);
    const u64 above_mine = above + (total - inclusive);  // above + the bins >= b1
    int best = -1, lowest = (int)bins;
    u64 run = above_mine;
    for (int d = (int)b1 - 1; d >= (int)b0; d--) {
        const u64 x = hist_get(h, d);
        if (x == 0) continue;
        lowest = d;
        if (best < 0) {
            run += x;
            if (strict ? run > target : run >= target) best = d;
        }
    }
    if (best >= 0) atomicMax(&sc.best, best);
    if (lowest < (int)bins) atomicMin(&sc.lowest, lowest);
    __syncthreads();
    const bool miss = missed || sc.best < 0;
    int chosen = miss ? sc.lowest : sc.best;
    if (chosen >= (int)bins) chosen = 0;  // no weight at all: ruled out by the callers
    if ((u32)chosen >= b0 && (u32)chosen < b1) {
        u64 a = above_mine;
        for (u32 d = (u32)chosen + 1; d < b1; d++) a += hist_get(h, d);
        sc.above = a;
        sc.bin = hist_get(h, (u32)chosen);
    }
    __syncthreads();
    const Digit r{(u32)chosen, sc.above, sc.bin, miss};
    __syncthreads();  // sc is reused by the next call
    return r;
}

// Bit k set: logit base + k is a candidate (id <= id_limit) with ordered bits u_star.
template <typename T>
__device__ __forceinline__ u32 match8(const T* row, u32 vocab, u32 base, u32 u_star, u32 id_limit) {
    u32 m = 0;
    visit8(row, vocab, base, [&](u32 i, float v) {
        if (i <= id_limit && ordered_bits(v) == u_star) m |= 1u << (i - base);
    });
    return m;
}

// The threshold: the largest key t among the candidates (keys >= lo) whose count (COUNT) or
// weight at or above t reaches `target` (exceeds it when strict); if none does, the smallest
// candidate holding weight. `smem.h1` already holds the first digit's histogram of these
// candidates. Returns t and the count or weight at or above it.
template <bool COUNT, typename T>
__device__ __noinline__ Selected select(const T* row, u32 vocab, u64 lo, float max, float temperature, u64 target,
                                        bool strict, bool bf16_values) {
    const u32 lo_u = (u32)(lo >> 32), lo_id = key_id(lo);
    const Hist h2 = later_hist();
    Scratch& sc = smem.sc;

    // 1. The logit u*, digit by digit.
    Digit dg = pick_digit(true, FIRST_BINS, 0, target, strict, false);
    u32 prefix = dg.d << FIRST_SHIFT;
    const int later = bf16_values ? 1 : 2;
    for (int l = 0; l < later; l++) {
        const u32 width = bf16_values ? 4 : 10;
        const u32 shift = FIRST_SHIFT - (u32)(l + 1) * width;
        const u32 bins = 1u << width, fixed = ~0u << (shift + width);
        hist_clear(h2, bins);
        __syncthreads();
        for_each_logit(row, vocab, [&](u32 i, float v) {
            const u32 u = ordered_bits(v);
            if ((u & fixed) != prefix || !at_or_above(u, i, lo_u, lo_id)) return;
            const u64 x = COUNT ? 1ull : weight(v, max, temperature);
            if (x != 0) hist_add(h2, (u >> shift) & (bins - 1), x);
        });
        __syncthreads();
        dg = pick_digit(false, bins, dg.above, target, strict, dg.missed);
        prefix |= dg.d << shift;
    }
    // bf16 values: the low 16 bits of u follow from the sign (0 if positive, 0xFFFF if not).
    const u32 u_star = bf16_values ? prefix | ((prefix & 0x80000000u) ? 0u : 0xFFFFu) : prefix;

    // 2. The id. The n candidates with logit u* each weigh w = bin / n; in id order, the j-th
    // is the threshold for the smallest j with above + j w reaching the target (all n when
    // missed). Count them per group of tiles, scan the counts, then one warp finds the j-th
    // inside its group.
    const u32 id_limit = u_star == lo_u ? lo_id : 0xFFFFFFFFu;
    const u32 tiles = (vocab + TILE - 1) / TILE;
    const u32 per = (tiles + MAX_GROUPS - 1) / MAX_GROUPS;
    const u32 groups = (tiles + per - 1) / per;
    u32* counts = smem.h2;  // [groups]; h2 is free again (pick_digit ends with a barrier)
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    for (u32 g = warp; g < groups; g += warps) {
        u32 c = 0;
        for (u32 t = g * per; t < umin((g + 1) * per, tiles); t++)
            c += __popc(match8(row, vocab, t * TILE + lane * 8, u_star, id_limit));
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) c += __shfl_xor_sync(0xffffffffu, c, offset);
        if (lane == 0) counts[g] = c;
    }
    __syncthreads();
    const u32 gper = (groups + blockDim.x - 1) / blockDim.x;
    const u32 g0 = umin(threadIdx.x * gper, groups), g1 = umin(g0 + gper, groups);
    u64 mine = 0;
    for (u32 g = g0; g < g1; g++) mine += counts[g];
    if (threadIdx.x == 0) {  // ordered before the writes below by the scan's barriers
        sc.group = 0xFFFFFFFFu;
        sc.id = 0xFFFFFFFFu;
    }
    u64 n;
    const u64 inclusive = block_scan(mine, sc.sums, n);
    const u64 w = n > 0 ? dg.bin / n : 0;
    u64 j;
    if (dg.missed) j = n;
    else if (w == 0 || target < dg.above) j = 1;  // cannot happen: dg.above < target, or == 0
    else if (strict) j = (target - dg.above) / w + 1;
    else j = (target - dg.above + w - 1) / w;
    j = j < 1 ? 1 : j;
    j = j > n ? n : j;
    u64 before = inclusive - mine;
    if (j > before && j <= inclusive) {
        for (u32 g = g0; g < g1; g++) {
            if (j <= before + counts[g]) {
                sc.group = g;
                sc.rank = (u32)(j - before);
                break;
            }
            before += counts[g];
        }
    }
    __syncthreads();
    if (warp == 0 && sc.group != 0xFFFFFFFFu) {
        const u32 g = sc.group;
        u32 rank = sc.rank;  // 1-based, among the group's matches
        for (u32 t = g * per; t < umin((g + 1) * per, tiles); t++) {
            const u32 base = t * TILE + lane * 8;
            const u32 m = match8(row, vocab, base, u_star, id_limit);
            const u32 c = __popc(m);
            u32 upto = c;  // matches in this tile up to and including this lane's
#pragma unroll
            for (u32 offset = 1; offset < 32; offset *= 2) {
                const u32 y = __shfl_up_sync(0xffffffffu, upto, offset);
                if (lane >= offset) upto += y;
            }
            const u32 in_tile = __shfl_sync(0xffffffffu, upto, 31);
            if (rank <= in_tile) {
                if (rank > upto - c && rank <= upto) {
                    u32 bits = m;
                    for (u32 q = rank - (upto - c); q > 1; q--) bits &= bits - 1;  // drop lower matches
                    sc.id = base + (u32)(__ffs(bits) - 1);
                }
                break;
            }
            rank -= in_tile;
        }
    }
    __syncthreads();
    const Selected r{key_of(u_star, sc.id), dg.above + j * w};
    __syncthreads();  // sc is reused by the next call
    return r;
}

// The first digit's weights over the candidates (keys >= lo), into smem.h1.
template <bool FILTER, typename T>
__device__ void weigh_first_digit(const T* row, u32 vocab, u64 lo, float max, float temperature) {
    const u32 lo_u = (u32)(lo >> 32), lo_id = key_id(lo);
    const Hist h1 = first_hist();
    hist_clear(h1, FIRST_BINS);
    __syncthreads();
    for_each_logit(row, vocab, [&](u32 i, float v) {
        const u32 u = ordered_bits(v);
        if (FILTER && !at_or_above(u, i, lo_u, lo_id)) return;
        const u64 x = weight(v, max, temperature);
        if (x != 0) hist_add(h1, u >> FIRST_SHIFT, x);
    });
    __syncthreads();
}

// One row: greedy (temperature 0) is `argmax`; otherwise top-k, softmax, top-p, draw.
template <typename T>
__device__ void sample_row(u32* out, const T* row, u32 vocab, float temperature, u32 top_k,
                           float top_p, u64 seed, u64 position) {
    if (temperature == 0.0f) {
        greedy_row(out, row, vocab);
        return;
    }
    // Pass 1: the largest logit (for a stable softmax); whether every logit is a bf16 value
    // (then u has 16 significant bits); for top-k, the first digit's counts.
    const Hist h1 = first_hist();
    const bool by_count = top_k > 0 && top_k < vocab;
    if (by_count) hist_clear(h1, FIRST_BINS);
    __syncthreads();
    u32 u_max = 0;
    bool bf16_values = true;
    for_each_logit(row, vocab, [&](u32 i, float v) {
        const u32 u = ordered_bits(v);
        u_max = u > u_max ? u : u_max;
        bf16_values = bf16_values && (__float_as_uint(v) & 0xFFFFu) == 0;
        if (by_count) hist_add(h1, u >> FIRST_SHIFT, 1);
    });
    const float max = ordered_logit((u32)block_reduce_u64<true>(u_max, smem.sc.sums));
    bf16_values = __syncthreads_and(bf16_values);

    // top-k: candidates are the keys >= the k-th key.
    u64 lo = 0;
    if (by_count) lo = select<true>(row, vocab, 0, max, temperature, top_k, false, bf16_values).key;

    // Pass 2: the first digit's weights; their sum is the softmax's denominator.
    if (lo == 0) weigh_first_digit<false>(row, vocab, lo, max, temperature);
    else weigh_first_digit<true>(row, vocab, lo, max, temperature);
    u64 total = 0;
    for (u32 b = threadIdx.x; b < FIRST_BINS; b += blockDim.x) total += hist_get(h1, b);
    total = block_reduce_u64<false>(total, smem.sc.sums);
    if (total == 0) {  // NaN or infinite max: no weight anywhere; 0xFFFFFFFF as the first version
        if (threadIdx.x == 0) out[blockIdx.x] = 0xFFFFFFFFu;
        return;
    }

    // top-p: the shortest prefix whose weight reaches top_p x total (mass >= top_p).
    u64 kept = total;
    if (top_p < 1.0f) {
        const u64 target = (u64)ceil((double)top_p * (double)total);
        kept = select<false>(row, vocab, lo, max, temperature, target, false, bf16_values).above;
    }

    // The draw: the first candidate whose cumulative weight exceeds draw x kept. It is searched
    // among all the candidates (keys >= lo, whose first digit smem.h1 holds): target < kept, so
    // the answer lies inside top-p's prefix.
    const double draw = philox_uniform(seed, position);
    const u64 target = (u64)floor(draw * (double)kept);
    const Selected s = select<false>(row, vocab, lo, max, temperature, target, true, bf16_values);
    if (threadIdx.x == 0) out[blockIdx.x] = key_id(s.key);
}

// Threads per row (kernels/src/sampling.rs launches this many): two rows' blocks per SM.
#define SAMPLE_THREADS 1024

#define SAMPLE_KERNEL(name, T)                                                                    \
    extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS, 2) name(                         \
        u32* __restrict__ out,                  /* [num_seqs] */                                  \
        const T* __restrict__ logits,           /* [num_seqs, vocab_size] */                      \
        const float* __restrict__ temperature,  /* [num_seqs]; 0 = greedy */                      \
        const u32* __restrict__ top_k,          /* [num_seqs]; 0 = off */                         \
        const float* __restrict__ top_p,        /* [num_seqs]; 1 = off */                         \
        const u64* __restrict__ seed,           /* [num_seqs] */                                  \
        const u64* __restrict__ position,       /* [num_seqs] */                                  \
        u32 vocab_size) {                                                                         \
        PDL_ENTRY();                                                                              \
        const u32 s = blockIdx.x;                                                                 \
        /* With a split grid (gridDim.y = GREEDY_SPLITS) greedy rows take every block of */       \
        /* their row; other rows take block y = 0 alone. */                                      \
        if (gridDim.y > 1 && temperature[s] == 0.0f) {                                            \
            greedy_row_split(out, logits + (size_t)s * vocab_size, vocab_size);                  \
            return;                                                                               \
        }                                                                                         \
        if (blockIdx.y > 0) return;                                                               \
        sample_row(out, logits + (size_t)s * vocab_size, vocab_size, temperature[s], top_k[s],    \
                   top_p[s], seed[s], position[s]);                                               \
    }

SAMPLE_KERNEL(sample_f32_kernel, float)
SAMPLE_KERNEL(sample_bf16_kernel, __nv_bfloat16)

// ---------------------------------------------------------------------------------------------
// vLLM's min_tokens: until a request has min_tokens output tokens its stop tokens (EOS, its
// stop_token_ids) cannot be sampled. The host lists the (row, id) pairs to ban this step; one
// thread per pair sets that logit to -inf, in place, before the sampler runs. The sampler then
// never picks it: argmax takes a -inf only when the whole row is -inf, and a -inf logit weighs
// exp(-inf) = 0, which no threshold search above ever selects (they skip bins without weight).
// Pairs outside the logits (an id past the vocabulary) are skipped.
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ void set_neg_inf(float* p) { *p = -INFINITY; }
__device__ __forceinline__ void set_neg_inf(__nv_bfloat16* p) { *p = __ushort_as_bfloat16((unsigned short)0xFF80u); }

#define MASK_KERNEL(name, T)                                                                      \
    extern "C" __global__ void name(                                                              \
        T* __restrict__ logits,          /* [num_seqs, vocab_size], masked in place */            \
        const u32* __restrict__ rows,    /* [num_banned] the logits row of each pair */           \
        const u32* __restrict__ ids,     /* [num_banned] the token id of each pair */             \
        u32 num_banned, u32 num_seqs, u32 vocab_size) {                                           \
        PDL_ENTRY();                                                                              \
        const u32 i = blockIdx.x * blockDim.x + threadIdx.x;                                      \
        if (i >= num_banned) return;                                                              \
        const u32 row = rows[i], id = ids[i];                                                     \
        if (row < num_seqs && id < vocab_size) set_neg_inf(logits + (size_t)row * vocab_size + id); \
    }

MASK_KERNEL(mask_logits_f32_kernel, float)
MASK_KERNEL(mask_logits_bf16_kernel, __nv_bfloat16)

// ---------------------------------------------------------------------------------------------
// Async scheduling (vLLM's --async-scheduling): a step is prepared while the step before it is
// still running, so a decode's input token (the one that step samples) is not known to the
// host. The host writes a placeholder and names the row of the previous step's `sampled` that
// will hold it; this copies those ids into place. It runs on the stream after the previous
// step's sampler and before this step's embedding, so the token never visits the host first.
// A row past `num_sampled` leaves the placeholder, which the embedding turns into NaN.
// ---------------------------------------------------------------------------------------------

#define TAKE_NONE 0xffffffffu

extern "C" __global__ void take_sampled_ids_kernel(
    u32* __restrict__ input_ids,        // [num_tokens]
    const u32* __restrict__ from_rows,  // [num_tokens] a row of `sampled`, or TAKE_NONE
    const u32* __restrict__ sampled,    // [num_sampled] the previous step's sampled ids
    u32 num_tokens, u32 num_sampled) {
    PDL_ENTRY();
    for (u32 t = blockIdx.x * blockDim.x + threadIdx.x; t < num_tokens; t += gridDim.x * blockDim.x) {
        const u32 r = from_rows[t];
        if (r != TAKE_NONE && r < num_sampled) input_ids[t] = sampled[r];
    }
}

// ---------------------------------------------------------------------------------------------
// The step's sampled ids to the host, written by the device into page-locked host memory that
// is mapped for it (unified addressing), instead of a copy-engine copy: on an H200 a copy of a
// few hundred bytes took about 7 µs of the stream's time, and under async scheduling the next
// step's sampler (which overwrites `sampled`) had to wait for it. Posted writes across PCIe,
// visible to the host once the stream has passed this kernel (the host waits for an event
// recorded after it).
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void send_sampled_ids_kernel(
    u32* __restrict__ host_ids,       // [num_sampled] page-locked host memory
    const u32* __restrict__ sampled,  // [num_sampled] this step's sampled ids
    u32 num_sampled) {
    PDL_ENTRY();
    for (u32 t = blockIdx.x * blockDim.x + threadIdx.x; t < num_sampled; t += gridDim.x * blockDim.x)
        host_ids[t] = sampled[t];
}
