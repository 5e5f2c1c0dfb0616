// y = x · Wᵀ (+ bias) for a few tokens: the decode-time twin of engine/src/ops/linear.rs.
//
// With 1 to 8 tokens a projection is a matrix-vector product: each weight is used by at most
// 8 multiply-adds, so the time is the time to stream W once (bf16, [n, k]) plus the launch.
// cuBLAS's GEMM kernels are tiled for reuse that is not there and cost 4-6 µs even for a
// 576 x 960 matrix; this kernel is a plain stream.
//
// Work split: a warp owns ROWS consecutive output features. Its 32 lanes walk the k dimension
// in 16-byte chunks (8 bf16), lane l taking chunks l, l + 32, ...: the warp reads 512
// contiguous bytes of each row per step (fully coalesced), with ROWS rows' loads in flight per
// lane. Each chunk of W is dotted with the same chunk of every token's x (x is tiny and stays
// in L1/L2). Partial sums (f32) are reduced across the warp with shuffles; lane 0 adds the bias
// and writes bf16. Requires k % 8 == 0 and 16-byte aligned rows (the Rust side checks and
// otherwise uses cuBLAS).
//
// Split-K (SPLIT = 8, the `_split` entry points): the block's 8 warps share ROWS features and
// divide k between them, thread i taking chunks i, i + 256, ...; the warps' partial sums meet in
// shared memory. A matrix with few rows and long ones (Llama-3.2-1B's o_proj and down: 2048
// rows) gives the plain split only 64 blocks for 132 SMs, each warp walking 2048-8192 columns
// one round trip after another; split, it has 512 blocks that each need one or two trips. The
// Rust side splits when the plain grid would leave SMs short of blocks and a row takes a warp
// more than one round trip.
//
// At these sizes a kernel costs its latency (a few µs inside a CUDA graph) more than its bytes,
// so the GEMV also takes the work of its neighbours in a decoder layer: the residual add and
// RMSNorm before the qkv and gate/up projections, and SiLU·mul after gate/up. A decode layer
// is then six kernels instead of nine (kernels/README.md has the measurement).

#define GEMV_THREADS 256
#define UNROLL 4  // 16-byte chunks of each row a lane loads at once

__device__ __forceinline__ float dot8(const f32x8& a, const f32x8& b) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) s = fmaf(a.v[i], b.v[i], s);
    return s;
}

// The UNROLL chunks c0, c0 + STRIDE, ... of the ROWS rows `rows` of W, for one lane. Past the end
// of a row the last valid chunk is loaded again (and never used).
// STRIDE is the chunk stride of one thread: 32 (a warp per row group) or 256 (split-K).
template <int ROWS, int STRIDE>
__device__ __forceinline__ void load_chunks(
    uint4 (&wraw)[UNROLL][ROWS],
    const __nv_bfloat16* __restrict__ w,  // [n, k]
    const u32 (&rows)[ROWS], u32 c0, u32 k, u32 chunks) {
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
        const u32 c = min(c0 + STRIDE * u, chunks - 1);
#pragma unroll
        for (int r = 0; r < ROWS; r++)
            wraw[u][r] = __ldg(reinterpret_cast<const uint4*>(w + (size_t)rows[r] * k) + c);
    }
}

// What the GEMV multiplies by W, chunk c of token t, as f32.
//
// Plain: x[t] itself. With the RMSNorm prologue (NORM): the input is the residual stream
// s = bf16(delta + residual) (or residual alone for the first layer, delta null), normalized
// exactly as rms_norm.cu does it, value by value: bf16(gamma * bf16(s * inv_rms[t])). So the
// fused kernel multiplies W by the same bf16 values the norm kernel would have written; only
// inv_rms may differ in its last bit (the sum of squares is added in another order).
struct Input {
    const uint4* x;         // plain: [M, chunks]
    const uint4* delta;     // NORM: [M, chunks] or null
    const uint4* residual;  // NORM: [M, chunks]
    const uint4* gamma;     // NORM: [chunks]
    u32 chunks;
};

__device__ __forceinline__ f32x8 stream_chunk(const Input& in, int t, u32 c) {
    f32x8 s = unpack8(__ldg(in.residual + (size_t)t * in.chunks + c));
    if (in.delta) {
        const f32x8 d = unpack8(__ldg(in.delta + (size_t)t * in.chunks + c));
#pragma unroll
        for (int i = 0; i < 8; i++) s.v[i] += d.v[i];
        s = unpack8(pack8(s));  // the stream is stored in bf16
    }
    return s;
}

// A chunk s of the stream normalized with the chunk g of gamma: bf16(g * bf16(s * inv_rms)).
__device__ __forceinline__ uint4 normed(f32x8 s, const f32x8& g, float inv_rms) {
#pragma unroll
    for (int i = 0; i < 8; i++) s.v[i] = g.v[i] * __bfloat162float(__float2bfloat16(s.v[i] * inv_rms));
    return pack8(s);  // the norm's output is bf16
}

// Chunk c of the stream s, normalized.
__device__ __forceinline__ f32x8 normed_chunk(f32x8 s, const Input& in, u32 c, float inv_rms) {
    return unpack8(normed(s, unpack8(__ldg(in.gamma + c)), inv_rms));
}

template <bool NORM>
__device__ __forceinline__ f32x8 input_chunk(const Input& in, int t, u32 c, float inv_rms) {
    if (!NORM) return unpack8(__ldg(in.x + (size_t)t * in.chunks + c));
    return normed_chunk(stream_chunk(in, t, c), in, c, inv_rms);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Split-K's first half of the cross-warp add: each (row, token) sum over the warp's lanes, stored
// by lane 0 into `slot` ([ROWS · M]: this warp's row of the block's shared sums), where after a
// barrier one thread adds the warps' rows in warp order.
template <int ROWS, int M>
__device__ __forceinline__ void warp_sums_to_shared(float (&acc)[ROWS][M], float* slot, u32 lane) {
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int t = 0; t < M; t++) acc[r][t] = warp_sum(acc[r][t]);
    if (lane == 0)
#pragma unroll
        for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int t = 0; t < M; t++) slot[r * M + t] = acc[r][t];
}

// What follows the products (the epilogue).
#define EPI_PLAIN 0  // out = y (+ bias)
#define EPI_GLU 1    // out = silu(gate) · up
#define EPI_ROPE 2   // q, k rotated by position; q out, k and v into the paged cache

#define PADDING_SLOT 0xffffffffffffffffull

// EPI_ROPE's operands: those of qkv_rotary_cache.cu, whose arithmetic it repeats.
struct Rope {
    __nv_bfloat16* key_cache;    // [num_blocks, block_size, num_kv_heads, head_dim]
    __nv_bfloat16* value_cache;  // [num_blocks, block_size, num_kv_heads, head_dim]
    const u32* positions;        // [M]
    const u64* slot_mapping;     // [M]; PADDING_SLOT: write q only
    const float* cos_sin_cache;  // [max_position, head_dim]: head_dim/2 cos, then sin
    u32 num_heads, num_kv_heads, head_dim;
};

// Row pair p of the qkv projection for EPI_ROPE: head u = p / (d/2) of the row [q | k | v]
// (query heads, then KV heads, then value heads), element i = p % (d/2): rows u·d + i and
// u·d + i + d/2, the two values rotary embedding turns together.
__device__ __forceinline__ u32 rope_row(u32 p, u32 head_dim) {
    const u32 half = head_dim / 2;
    return (p / half) * head_dim + p % half;
}

// What the EPI_ROPE epilogue of one row pair and token reads besides the products: the
// token's slot and the rotation's cosine and sine. Loaded at the kernel's start, before it
// waits for the previous kernel (they are the step's inputs, copied before its first kernel, and
// a constant table), so that the epilogue does not end the kernel with a chain of dependent
// loads (slot, position, then the table).
struct RopeOperands {
    u64 slot;
    float c, s;
};

__device__ __forceinline__ RopeOperands rope_operands(const Rope& r, u32 p, int t) {
    const u32 half = r.head_dim / 2;
    const float* cos = r.cos_sin_cache + (size_t)r.positions[t] * r.head_dim;
    return {r.slot_mapping[t], cos[p % half], cos[half + p % half]};
}

// The EPI_ROPE epilogue for row pair p of token t, whose projections are x (row rope_row) and
// y (that row + d/2), rounded to bf16 first as the unfused projection stores them.
__device__ __forceinline__ void rope_store(const Rope& r, __nv_bfloat16* __restrict__ q_out,
                                           u32 p, int t, float x, float y, RopeOperands o) {
    const u32 half = r.head_dim / 2, u = p / half, i = p % half;
    const u32 kv_row = r.num_kv_heads * r.head_dim;
    const u64 slot = o.slot;
    __nv_bfloat16* dst;
    bool rotate = true;
    if (u < r.num_heads) {
        dst = q_out + ((size_t)t * r.num_heads + u) * r.head_dim;
    } else if (slot == PADDING_SLOT) {
        return;  // a padding row: q only
    } else if (u < r.num_heads + r.num_kv_heads) {
        dst = r.key_cache + (size_t)slot * kv_row + (u - r.num_heads) * r.head_dim;
    } else {
        dst = r.value_cache + (size_t)slot * kv_row + (u - r.num_heads - r.num_kv_heads) * r.head_dim;
        rotate = false;
    }
    if (rotate) {
        const float c = o.c, sn = o.s;
        const float x0 = x;
        x = x0 * c - y * sn;
        y = y * c + x0 * sn;
    }
    dst[i] = __float2bfloat16(x);
    dst[i + half] = __float2bfloat16(y);
}

// y = x · Wᵀ (+ bias) for M tokens, with an optional RMSNorm prologue (NORM) and an epilogue
// (EPI): plain; SiLU·mul (W is gate_up [2d, k]; the warp's rows are gate rows f.. and the up
// rows d + f..; it writes silu(gate) · up [M, d], rounding gate and up to bf16 first, as the
// unfused kernels store them); or rotary + cache (W is qkv; the warp's rows are row pairs
// (rope_row(p), + d/2), rotated together). n is W's row count. SPLIT: warps that share a row
// group (1, or 8 for split-K, the whole block).
template <int M, int ROWS, bool NORM, int EPI, int SPLIT>
__device__ __forceinline__ void gemv(
    __nv_bfloat16* __restrict__ out,           // [M, EPI_GLU ? n / 2 : n]; EPI_ROPE: q [M, H·d]
    __nv_bfloat16* __restrict__ residual_out,  // NORM with delta: [M, k], the new stream
    const Input in,
    float eps,
    const __nv_bfloat16* __restrict__ w,       // [n, k]
    const __nv_bfloat16* __restrict__ bias,    // [n] or null (not with EPI_GLU)
    u32 n, u32 k, const Rope rope) {
    static_assert(SPLIT == 1 || SPLIT * 32 == GEMV_THREADS, "split-K takes the whole block");
    constexpr bool PAIRS = EPI != EPI_PLAIN;  // rows come in pairs: (gate, up) or a rotary pair
    constexpr int F = PAIRS ? ROWS / 2 : ROWS;  // output features (or pairs) per row group
    constexpr int STRIDE = 32 * SPLIT;        // chunks between one thread's consecutive chunks
    const u32 lane = threadIdx.x % 32;
    const u32 first = threadIdx.x % STRIDE;   // this thread's first chunk of a row
    const u32 warp = (blockIdx.x * GEMV_THREADS + threadIdx.x) / 32;  // in the grid
    const u32 group = SPLIT == 1 ? warp : blockIdx.x;                 // the row group
    const u32 width = PAIRS ? n / 2 : n;  // output features, or row pairs
    const u32 f0 = group * F;
    const u32 chunks = k / 8;
    const bool active = f0 < width;
    u32 rows[ROWS];  // rows of W this warp reads; past the end, the last feature again (unused)
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const u32 f = min(f0 + (r % F), width - 1);
        if (EPI == EPI_GLU) rows[r] = r >= F ? width + f : f;
        else if (EPI == EPI_ROPE) rows[r] = rope_row(f, rope.head_dim) + (r >= F ? rope.head_dim / 2 : 0);
        else rows[r] = f;
    }

    // UNROLL chunks per lane are loaded before any is used, so a short row (k = 576: at most 3
    // chunks per lane) costs one trip to memory, not one per chunk. The first batch is loaded
    // before waiting for the previous kernel (weights never depend on it): under programmatic
    // dependent launch that load overlaps the previous kernel's tail (common.cuh).
    uint4 wraw[UNROLL][ROWS];
    if (active) load_chunks<ROWS, STRIDE>(wraw, w, rows, first, k, chunks);
    // The thread that writes the outputs (lane 0, or thread 0 under split-K) loads what the
    // rotary epilogue needs now, under the same wait.
    constexpr int RF = EPI == EPI_ROPE ? F : 1, RM = EPI == EPI_ROPE ? M : 1;
    RopeOperands rope_in[RF][RM];
    if (EPI == EPI_ROPE && active && (SPLIT > 1 ? threadIdx.x == 0 : lane == 0)) {
#pragma unroll
        for (int r = 0; r < RF; r++)
#pragma unroll
            for (int t = 0; t < RM; t++) rope_in[r][t] = rope_operands(rope, min(f0 + r, width - 1), t);
    }
    wait_for_previous_kernel();
    allow_next_kernel();

    // One warp of the grid stores the new residual stream (every warp computes it for itself;
    // the stream read above stays unchanged, as other blocks still read it).
    if (NORM && in.delta && residual_out && warp == 0) {
        for (int t = 0; t < M; t++)
            for (u32 c = lane; c < chunks; c += 32)
                reinterpret_cast<uint4*>(residual_out)[(size_t)t * chunks + c] = pack8(stream_chunk(in, t, c));
    }
    if (!active) return;

    // The norm needs each token's sum of squares over the whole row before any product. For 1-2
    // tokens the lane keeps the stream chunks it reads for that sum (those of the first pass of
    // the loop below: all of them when k <= STRIDE * UNROLL * 8), so the products reuse them
    // instead of reading the input a second time; a dependent trip to memory fewer. Split-K:
    // each warp sums its own chunks, and the block adds the eight sums in shared memory (in one
    // fixed order, so every thread gets the same inv_rms).
    constexpr bool KEEP = NORM && M <= 2;
    __shared__ float s_sum[SPLIT > 1 ? SPLIT : 1][SPLIT > 1 ? ROWS * M : 1];
    f32x8 kept[KEEP ? UNROLL : 1][KEEP ? M : 1];
    float inv_rms[M];
#pragma unroll
    for (int t = 0; t < M; t++) {
        inv_rms[t] = 1.0f;
        if (NORM) {
            float sum_sq = 0.0f;
            // The first UNROLL chunks unrolled, so that `kept` is indexed by constants (held in
            // registers, not local memory); then the rest of a long row, in the same order.
#pragma unroll
            for (int u = 0; u < UNROLL; u++) {
                const u32 c = first + STRIDE * u;
                if (c < chunks) {
                    const f32x8 s = stream_chunk(in, t, c);
                    if (KEEP) kept[KEEP ? u : 0][KEEP ? t : 0] = s;
#pragma unroll
                    for (int i = 0; i < 8; i++) sum_sq += s.v[i] * s.v[i];
                }
            }
            for (u32 c = first + STRIDE * UNROLL; c < chunks; c += STRIDE) {
                const f32x8 s = stream_chunk(in, t, c);
#pragma unroll
                for (int i = 0; i < 8; i++) sum_sq += s.v[i] * s.v[i];
            }
            sum_sq = warp_sum(sum_sq);
            if (SPLIT > 1) {
                if (lane == 0) s_sum[SPLIT > 1 ? threadIdx.x / 32 : 0][t] = sum_sq;
                __syncthreads();
                sum_sq = 0.0f;
#pragma unroll
                for (int w = 0; w < SPLIT; w++) sum_sq += s_sum[w][t];
                __syncthreads();  // s_sum is reused for the products' sums below
            }
            inv_rms[t] = rsqrtf(sum_sq / k + eps);
        }
    }

    float acc[ROWS][M];
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int t = 0; t < M; t++) acc[r][t] = 0.0f;
    for (u32 c0 = first; c0 < chunks; c0 += STRIDE * UNROLL) {
        if (c0 != first) load_chunks<ROWS, STRIDE>(wraw, w, rows, c0, k, chunks);
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const u32 c = c0 + STRIDE * u;
            if (c >= chunks) break;
#pragma unroll
            for (int t = 0; t < M; t++) {
                const f32x8 xf = (KEEP && c0 == first)
                    ? normed_chunk(kept[KEEP ? u : 0][KEEP ? t : 0], in, c, inv_rms[t])
                    : input_chunk<NORM>(in, t, c, inv_rms[t]);
#pragma unroll
                for (int r = 0; r < ROWS; r++) acc[r][t] += dot8(unpack8(wraw[u][r]), xf);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int t = 0; t < M; t++) acc[r][t] = warp_sum(acc[r][t]);
    if (SPLIT > 1) {
        // The eight warps' sums of each (row, token), added by thread 0 in warp order.
        if (lane == 0)
#pragma unroll
            for (int r = 0; r < ROWS; r++)
#pragma unroll
                for (int t = 0; t < M; t++) s_sum[SPLIT > 1 ? threadIdx.x / 32 : 0][r * M + t] = acc[r][t];
        __syncthreads();
        if (threadIdx.x != 0) return;
#pragma unroll
        for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int t = 0; t < M; t++) {
                float sum = 0.0f;
#pragma unroll
                for (int w = 0; w < SPLIT; w++) sum += s_sum[w][r * M + t];
                acc[r][t] = sum;
            }
    } else if (lane != 0) {
        return;
    }
#pragma unroll
    for (int r = 0; r < F; r++) {
        const u32 f = f0 + r;
        if (f >= width) break;
#pragma unroll
        for (int t = 0; t < M; t++) {
            if (EPI == EPI_ROPE) {
                const u32 ra = rows[r], rb = rows[F + r];
                const float x = __bfloat162float(__float2bfloat16(acc[r][t] + (bias ? __bfloat162float(bias[ra]) : 0.0f)));
                const float y = __bfloat162float(__float2bfloat16(acc[F + r][t] + (bias ? __bfloat162float(bias[rb]) : 0.0f)));
                rope_store(rope, out, f, t, x, y, rope_in[EPI == EPI_ROPE ? r : 0][EPI == EPI_ROPE ? t : 0]);
                continue;
            }
            float y;
            if (EPI == EPI_GLU) {
                const float g = __bfloat162float(__float2bfloat16(acc[r][t]));
                const float up = __bfloat162float(__float2bfloat16(acc[F + r][t]));
                y = silu(g) * up;
            } else {
                y = acc[r][t] + (bias ? __bfloat162float(bias[f]) : 0.0f);
            }
            out[(size_t)t * width + f] = __float2bfloat16(y);
        }
    }
}

// The same norm + projection (+ SiLU·mul), with the norm computed once per block (the `_block`
// entry points), for large matrices. In `gemv` every warp normalizes the input itself: for
// Llama-3.2-1B's gate/up at one token that is 4096 warps each reading the residual stream, the
// delta and gamma (12 KB) through L2 beside the 16 KB of weights it streams, and summing squares
// before its first product. Here the block's threads do it once into shared memory, then each
// warp streams its rows dotting them with the shared input: the L2 traffic of the prologue falls
// by the number of row groups a block takes (8 warps x `groups` groups each).
//
// Bit for bit the unfused kernels: the sum of squares is added in rms_norm.cu's order (threads
// 0..T-1, T = norm_threads(chunks) as kernels/src/rms_norm.rs launches it, thread i taking
// chunks i, i + T, i + 2T, i + 3T, then block_sum's butterfly and warp order), so 1/rms is the
// norm kernel's to the last bit, and the products are added in `gemv`'s order (lane l takes
// chunks l, l + 32, ...; a warp's rows do not change any one row's order).
//
// A warp takes `groups` row groups one after another (block b: groups b·8·groups .. ), and loads
// the next group's first chunks before it reduces and stores the current one, so the stream does
// not stop while the warp's sums cross the shuffles. Needs chunks <= 4 x GEMV_THREADS (k <= 8192:
// rms_norm's threads fit the block) and M·k bf16 of dynamic shared memory (the Rust side checks
// the first, allows the second, and otherwise takes `gemv`).

// Threads rms_norm.rs gives a row of `chunks` 16-byte vectors: 4 vectors each, whole warps.
__device__ __forceinline__ u32 norm_threads(u32 chunks) {
    const u32 per_thread = (chunks + 3) / 4;
    return min(max((per_thread + 31) / 32 * 32, 32u), 1024u);
}

template <int M, int ROWS, int EPI>
__device__ __forceinline__ void gemv_block_norm(
    __nv_bfloat16* __restrict__ out,           // [M, EPI_GLU ? n / 2 : n]
    __nv_bfloat16* __restrict__ residual_out,  // with delta: [M, k], the new stream
    const Input in,
    float eps,
    const __nv_bfloat16* __restrict__ w,       // [n, k]
    const __nv_bfloat16* __restrict__ bias,    // [n] or null (not with EPI_GLU)
    u32 n, u32 k, u32 groups) {
    static_assert(EPI == EPI_PLAIN || EPI == EPI_GLU, "no rotary epilogue here");
    constexpr bool PAIRS = EPI == EPI_GLU;
    constexpr int F = PAIRS ? ROWS / 2 : ROWS;
    constexpr int WARPS = GEMV_THREADS / 32;
    extern __shared__ uint4 s_x[];  // [M, chunks]: the stream, then the normed input (bf16)
    __shared__ float s_part[M][WARPS];
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const u32 width = PAIRS ? n / 2 : n;
    const u32 chunks = k / 8;
    // Row group `g` of this warp: (block · groups + g) · WARPS + warp.
    auto group_rows = [&](u32 g, u32 (&rows)[ROWS]) {
        const u32 f0 = ((blockIdx.x * groups + g) * WARPS + warp) * F;
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            const u32 f = min(f0 + (r % F), width - 1);
            rows[r] = EPI == EPI_GLU && r >= F ? width + f : f;
        }
        return f0;
    };

    // The first group's first chunks, before waiting for the previous kernel (as in `gemv`),
    // and the chunks of gamma this thread normalizes (chunks tid, tid + 256, ...; a weight too).
    uint4 wraw[UNROLL][ROWS];
    u32 rows[ROWS];
    u32 f0 = group_rows(0, rows);
    if (f0 < width) load_chunks<ROWS, 32>(wraw, w, rows, lane, k, chunks);
    constexpr int GAMMA = 4;  // chunks <= 4 x GEMV_THREADS
    uint4 gamma[GAMMA];
#pragma unroll
    for (int j = 0; j < GAMMA; j++) {
        const u32 c = threadIdx.x + j * GEMV_THREADS;
        if (c < chunks) gamma[j] = __ldg(in.gamma + c);
    }
    wait_for_previous_kernel();
    allow_next_kernel();

    // The norm, as rms_norm.cu computes it: the stream into shared memory, the sum of squares
    // by threads 0..T-1 in that kernel's order; block 0 also stores the new stream.
    const u32 T = norm_threads(chunks);
    const bool store_stream = in.delta && residual_out && blockIdx.x == 0;
#pragma unroll
    for (int t = 0; t < M; t++) {
        if (threadIdx.x < T) {
            float sum_sq = 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const u32 c = threadIdx.x + j * T;
                if (c < chunks) {
                    const f32x8 s = stream_chunk(in, t, c);
                    const uint4 packed = pack8(s);
                    s_x[t * chunks + c] = packed;
                    if (store_stream) reinterpret_cast<uint4*>(residual_out)[(size_t)t * chunks + c] = packed;
                    for (int i = 0; i < 8; i++) sum_sq += s.v[i] * s.v[i];
                }
            }
#pragma unroll
            for (int offset = 16; offset > 0; offset /= 2) sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, offset);
            if (lane == 0) s_part[t][warp] = sum_sq;
        }
    }
    __syncthreads();
    float inv_rms[M];
#pragma unroll
    for (int t = 0; t < M; t++) {
        float total = 0.0f;
        for (u32 v = 0; v < T / 32; v++) total += s_part[t][v];
        inv_rms[t] = rsqrtf(total / k + eps);
    }
#pragma unroll
    for (int j = 0; j < GAMMA; j++) {
        const u32 c = threadIdx.x + j * GEMV_THREADS;
        if (c < chunks) {
            const f32x8 g = unpack8(gamma[j]);
#pragma unroll
            for (int t = 0; t < M; t++) s_x[t * chunks + c] = normed(unpack8(s_x[t * chunks + c]), g, inv_rms[t]);
        }
    }
    __syncthreads();

    for (u32 g = 0; g < groups && f0 < width; g++) {
        float acc[ROWS][M];
#pragma unroll
        for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int t = 0; t < M; t++) acc[r][t] = 0.0f;
        for (u32 c0 = lane; c0 < chunks; c0 += 32 * UNROLL) {
            if (c0 != lane) load_chunks<ROWS, 32>(wraw, w, rows, c0, k, chunks);
#pragma unroll
            for (int u = 0; u < UNROLL; u++) {
                const u32 c = c0 + 32 * u;
                if (c >= chunks) break;
#pragma unroll
                for (int t = 0; t < M; t++) {
                    const f32x8 xf = unpack8(s_x[t * chunks + c]);
#pragma unroll
                    for (int r = 0; r < ROWS; r++) acc[r][t] += dot8(unpack8(wraw[u][r]), xf);
                }
            }
        }
        // The next group's first chunks go out before this group's sums are reduced and stored.
        const u32 cur = f0;
        u32 next_rows[ROWS];
#pragma unroll
        for (int r = 0; r < ROWS; r++) next_rows[r] = rows[r];
        f0 = g + 1 < groups ? group_rows(g + 1, next_rows) : width;
        if (f0 < width) load_chunks<ROWS, 32>(wraw, w, next_rows, lane, k, chunks);
#pragma unroll
        for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int t = 0; t < M; t++) acc[r][t] = warp_sum(acc[r][t]);
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < F; r++) {
                const u32 f = cur + r;
                if (f >= width) break;
#pragma unroll
                for (int t = 0; t < M; t++) {
                    float y;
                    if (EPI == EPI_GLU) {
                        const float gt = __bfloat162float(__float2bfloat16(acc[r][t]));
                        const float up = __bfloat162float(__float2bfloat16(acc[F + r][t]));
                        y = silu(gt) * up;
                    } else {
                        y = acc[r][t] + (bias ? __bfloat162float(bias[f]) : 0.0f);
                    }
                    out[(size_t)t * width + f] = __float2bfloat16(y);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < ROWS; r++) rows[r] = next_rows[r];
    }
}

// `_block` entry points (the norm once per block), 4 rows per warp up to 2 tokens, 2 beyond (4
// rows at 3-4 tokens need more than the 128 registers that keep two blocks on an SM).
#define GEMV_BLOCK_NORM(M, ROWS)                                                                   \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS, 2) gemv_norm_m##M##_block(             \
        __nv_bfloat16* __restrict__ out, __nv_bfloat16* __restrict__ residual_out,                 \
        const __nv_bfloat16* __restrict__ delta, const __nv_bfloat16* __restrict__ residual,       \
        const __nv_bfloat16* __restrict__ gamma, float eps, const __nv_bfloat16* __restrict__ w,   \
        const __nv_bfloat16* __restrict__ bias, u32 n, u32 k, u32 groups) {                        \
        const Input in = {nullptr, reinterpret_cast<const uint4*>(delta),                          \
                          reinterpret_cast<const uint4*>(residual),                                \
                          reinterpret_cast<const uint4*>(gamma), k / 8};                           \
        gemv_block_norm<M, ROWS, EPI_PLAIN>(out, residual_out, in, eps, w, bias, n, k, groups);    \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS, 2) gemv_norm_glu_m##M##_block(         \
        __nv_bfloat16* __restrict__ out, __nv_bfloat16* __restrict__ residual_out,                 \
        const __nv_bfloat16* __restrict__ delta, const __nv_bfloat16* __restrict__ residual,       \
        const __nv_bfloat16* __restrict__ gamma, float eps, const __nv_bfloat16* __restrict__ w,   \
        u32 n, u32 k, u32 groups) {                                                                \
        const Input in = {nullptr, reinterpret_cast<const uint4*>(delta),                          \
                          reinterpret_cast<const uint4*>(residual),                                \
                          reinterpret_cast<const uint4*>(gamma), k / 8};                           \
        gemv_block_norm<M, ROWS, EPI_GLU>(out, residual_out, in, eps, w, nullptr, n, k, groups);   \
    }
GEMV_BLOCK_NORM(1, 4)
GEMV_BLOCK_NORM(2, 4)
GEMV_BLOCK_NORM(3, 2)
GEMV_BLOCK_NORM(4, 2)
GEMV_BLOCK_NORM(5, 2)
GEMV_BLOCK_NORM(6, 2)
GEMV_BLOCK_NORM(7, 2)
GEMV_BLOCK_NORM(8, 2)

// Entry points, one per token count (the accumulators live in registers, so M is a template
// argument); 2 rows per warp (4 at M = 1, for more loads in flight):
//   gemv_m{M}           y = x · Wᵀ (+ bias)
//   gemv_norm_m{M}      residual_out = delta + residual; y = rms_norm(residual_out) · Wᵀ (+ bias)
//   gemv_norm_glu_m{M}  the same, then silu(gate) · up
//   gemv_norm_rope_m{M} the norm, the qkv projection, then qkv_rotary_cache.cu's work: q
//                       rotated to q_out, k rotated and v into the paged cache
// and each again with the suffix `_split`: split-K over the block's 8 warps.
#define GEMV_VARIANT(M, ROWS, SPLIT, SUFFIX)                                                       \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_m##M##SUFFIX(                  \
        __nv_bfloat16* __restrict__ out, const __nv_bfloat16* __restrict__ x,                      \
        const __nv_bfloat16* __restrict__ w, const __nv_bfloat16* __restrict__ bias, u32 n,        \
        u32 k) {                                                                                   \
        const Input in = {reinterpret_cast<const uint4*>(x), nullptr, nullptr, nullptr, k / 8};    \
        gemv<M, ROWS, false, EPI_PLAIN, SPLIT>(out, nullptr, in, 0.0f, w, bias, n, k, Rope{});     \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_norm_m##M##SUFFIX(             \
        __nv_bfloat16* __restrict__ out, __nv_bfloat16* __restrict__ residual_out,                 \
        const __nv_bfloat16* __restrict__ delta, const __nv_bfloat16* __restrict__ residual,       \
        const __nv_bfloat16* __restrict__ gamma, float eps, const __nv_bfloat16* __restrict__ w,   \
        const __nv_bfloat16* __restrict__ bias, u32 n, u32 k) {                                    \
        const Input in = {nullptr, reinterpret_cast<const uint4*>(delta),                          \
                          reinterpret_cast<const uint4*>(residual),                                \
                          reinterpret_cast<const uint4*>(gamma), k / 8};                           \
        gemv<M, ROWS, true, EPI_PLAIN, SPLIT>(out, residual_out, in, eps, w, bias, n, k, Rope{});  \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_norm_glu_m##M##SUFFIX(         \
        __nv_bfloat16* __restrict__ out, __nv_bfloat16* __restrict__ residual_out,                 \
        const __nv_bfloat16* __restrict__ delta, const __nv_bfloat16* __restrict__ residual,       \
        const __nv_bfloat16* __restrict__ gamma, float eps, const __nv_bfloat16* __restrict__ w,   \
        u32 n, u32 k) {                                                                            \
        const Input in = {nullptr, reinterpret_cast<const uint4*>(delta),                          \
                          reinterpret_cast<const uint4*>(residual),                                \
                          reinterpret_cast<const uint4*>(gamma), k / 8};                           \
        gemv<M, ROWS, true, EPI_GLU, SPLIT>(out, residual_out, in, eps, w, nullptr, n, k, Rope{}); \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_norm_rope_m##M##SUFFIX(        \
        __nv_bfloat16* __restrict__ q_out, __nv_bfloat16* __restrict__ residual_out,               \
        const __nv_bfloat16* __restrict__ delta, const __nv_bfloat16* __restrict__ residual,       \
        const __nv_bfloat16* __restrict__ gamma, float eps, const __nv_bfloat16* __restrict__ w,   \
        const __nv_bfloat16* __restrict__ bias, u32 n, u32 k,                                      \
        __nv_bfloat16* __restrict__ key_cache, __nv_bfloat16* __restrict__ value_cache,            \
        const u32* __restrict__ positions, const u64* __restrict__ slot_mapping,                   \
        const float* __restrict__ cos_sin_cache, u32 num_heads, u32 num_kv_heads, u32 head_dim) {  \
        const Input in = {nullptr, reinterpret_cast<const uint4*>(delta),                          \
                          reinterpret_cast<const uint4*>(residual),                                \
                          reinterpret_cast<const uint4*>(gamma), k / 8};                           \
        const Rope rope = {key_cache, value_cache, positions, slot_mapping, cos_sin_cache,         \
                           num_heads, num_kv_heads, head_dim};                                     \
        gemv<M, ROWS, true, EPI_ROPE, SPLIT>(q_out, residual_out, in, eps, w, bias, n, k, rope);   \
    }
#define GEMV_ENTRY(M, ROWS) GEMV_VARIANT(M, ROWS, 1, ) GEMV_VARIANT(M, ROWS, 8, _split)
GEMV_ENTRY(1, 4)
GEMV_ENTRY(2, 2)
GEMV_ENTRY(3, 2)
GEMV_ENTRY(4, 2)
GEMV_ENTRY(5, 2)
GEMV_ENTRY(6, 2)
GEMV_ENTRY(7, 2)
GEMV_ENTRY(8, 2)

// ---------------------------------------------------------------------------------------------
// Split-K in one wave (the `_split_wave` entry points): the `_split` kernel's arithmetic for a
// plain projection, with the grid cut to the blocks the GPU holds at once, each block taking row
// groups blockIdx.x, blockIdx.x + gridDim.x, ... one after another.
//
// Why: Llama-3.2-1B's down projection at one token ([2048, 8192], 33.5 MB) is 512 split-K blocks
// for the 264 an H200 holds: two waves, and every block of the second starts its one trip to
// memory only after a block of the first has reduced, stored and left. Here the next group's
// loads go out as soon as the current group's chunks are multiplied, before its warp sums meet
// in shared memory, so the stream does not stop between groups (the `_block` kernels do the
// same for the norm-fed projections). The Rust side (`SplitGrid::OneWave`) takes it only where a
// block per group would need two waves at most: with many more groups than blocks, the fixed
// share of each block ends the launch later than blocks handed out as SMs free up.
//
// Bit for bit the `_split` entry points: thread i takes chunks i, i + 256, ... of each row, the
// eight warps' sums are added in warp order by thread 0, then the bias. The warps' sums go to
// two alternating halves of shared memory, so one barrier per group suffices: a half is written
// again only after the barrier that thread 0 reaches once it has read it.
template <int M, int ROWS>
__device__ __forceinline__ void gemv_split_wave(
    __nv_bfloat16* __restrict__ out,         // [M, n]
    const uint4* __restrict__ x,             // [M, k / 8]
    const __nv_bfloat16* __restrict__ w,     // [n, k]
    const __nv_bfloat16* __restrict__ bias,  // [n] or null
    u32 n, u32 k) {
    constexpr int WARPS = GEMV_THREADS / 32;
    __shared__ float s_sum[2][WARPS][ROWS * M];
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const u32 chunks = k / 8;
    const u32 groups = (n + ROWS - 1) / ROWS;
    auto group_rows = [&](u32 g, u32 (&rows)[ROWS]) {
#pragma unroll
        for (int r = 0; r < ROWS; r++) rows[r] = min(g * ROWS + r, n - 1);
    };
    uint4 wraw[UNROLL][ROWS];
    u32 rows[ROWS];
    u32 g = blockIdx.x;
    if (g < groups) {
        group_rows(g, rows);
        load_chunks<ROWS, GEMV_THREADS>(wraw, w, rows, threadIdx.x, k, chunks);
    }
    wait_for_previous_kernel();
    allow_next_kernel();
    for (u32 half = 0; g < groups; g += gridDim.x, half ^= 1) {
        float acc[ROWS][M];
#pragma unroll
        for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int t = 0; t < M; t++) acc[r][t] = 0.0f;
        for (u32 c0 = threadIdx.x; c0 < chunks; c0 += GEMV_THREADS * UNROLL) {
            if (c0 != threadIdx.x) load_chunks<ROWS, GEMV_THREADS>(wraw, w, rows, c0, k, chunks);
#pragma unroll
            for (int u = 0; u < UNROLL; u++) {
                const u32 c = c0 + GEMV_THREADS * u;
                if (c >= chunks) break;
#pragma unroll
                for (int t = 0; t < M; t++) {
                    const f32x8 xf = unpack8(__ldg(x + (size_t)t * chunks + c));
#pragma unroll
                    for (int r = 0; r < ROWS; r++) acc[r][t] += dot8(unpack8(wraw[u][r]), xf);
                }
            }
        }
        // The next group's first chunks go out before this group's sums meet.
        if (g + gridDim.x < groups) {
            group_rows(g + gridDim.x, rows);
            load_chunks<ROWS, GEMV_THREADS>(wraw, w, rows, threadIdx.x, k, chunks);
        }
        warp_sums_to_shared<ROWS, M>(acc, s_sum[half][warp], lane);
        __syncthreads();
        if (threadIdx.x == 0) {
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                const u32 f = g * ROWS + r;
                if (f >= n) break;
#pragma unroll
                for (int t = 0; t < M; t++) {
                    float sum = 0.0f;
#pragma unroll
                    for (int v = 0; v < WARPS; v++) sum += s_sum[half][v][r * M + t];
                    out[(size_t)t * n + f] = __float2bfloat16(sum + (bias ? __bfloat162float(bias[f]) : 0.0f));
                }
            }
        }
    }
}

#define GEMV_SPLIT_WAVE(M, ROWS)                                                                   \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_m##M##_split_wave(             \
        __nv_bfloat16* __restrict__ out, const __nv_bfloat16* __restrict__ x,                      \
        const __nv_bfloat16* __restrict__ w, const __nv_bfloat16* __restrict__ bias, u32 n,        \
        u32 k) {                                                                                   \
        gemv_split_wave<M, ROWS>(out, reinterpret_cast<const uint4*>(x), w, bias, n, k);          \
    }
GEMV_SPLIT_WAVE(1, 4)
GEMV_SPLIT_WAVE(2, 2)
GEMV_SPLIT_WAVE(3, 2)
GEMV_SPLIT_WAVE(4, 2)
GEMV_SPLIT_WAVE(5, 2)
GEMV_SPLIT_WAVE(6, 2)
GEMV_SPLIT_WAVE(7, 2)
GEMV_SPLIT_WAVE(8, 2)

// ---------------------------------------------------------------------------------------------
// Staged split-K (the `_staged` entry points): the split-K kernel's arithmetic, with a block's
// whole share of W copied into shared memory (cp.async) before it waits for the previous kernel.
//
// Why: Llama-3.2-1B's qkv (12.6 MB) and o_proj (8.4 MB) at one token stream at about half the
// copy bandwidth where gate/up and down reach ~80% (kernel_bench, H200, 2026-11-29). The split
// kernel gives them 768 and 512 blocks of 16 KB each: several waves, every block a short burst
// (one 16-byte load per thread and row), then barriers and a reduction, so an SM spends much of
// the launch with little in flight, and the ramp at the start and the drain at the end are a
// large part of a 3-8 µs launch. Here the grid is one wave (about one block per SM, `groups` row
// groups each), and each block issues all its loads at once: 64-96 KB per SM in flight, all of it
// before griddepcontrol.wait, so under programmatic dependent launch the weights stream while the
// previous kernel drains. After the wait only the input (and its norm) is left to read; each
// row group is then dotted from shared memory as its copies land (cp.async groups, oldest first),
// its warp sums go to shared memory, and one barrier later the block's first threads finish
// every output of every group at once (the `_split` kernel has one thread finish a group's).
//
// Bit for bit the `_split` entry points: every thread takes the same chunks (i, i + 256, ...) in
// the same order, the eight warps' sums meet in the same warp order, and the norm's sum of
// squares is added as there. What changes is which thread runs the epilogue of an output.
//
// Needs chunks <= STAGE_X_CHUNKS x GEMV_THREADS (k <= 8192: a thread keeps its input chunks in
// registers for all its row groups), groups <= STAGE_MAX_GROUPS, and groups · ROWS · k bf16 of
// dynamic shared memory (the Rust side keeps it <= 100 KB, so two blocks fit an SM: the next
// kernel's block can start its own copies beside this one).

#define STAGE_MAX_GROUPS 16
#define STAGE_X_CHUNKS 4

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    const u32 s = static_cast<u32>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most `pending` of this thread's copy groups are still in flight (more than 7:
// waits for 7, which only waits longer).
__device__ __forceinline__ void cp_async_wait(u32 pending) {
    switch (pending) {
        case 0: asm volatile("cp.async.wait_group 0;\n" ::: "memory"); break;
        case 1: asm volatile("cp.async.wait_group 1;\n" ::: "memory"); break;
        case 2: asm volatile("cp.async.wait_group 2;\n" ::: "memory"); break;
        case 3: asm volatile("cp.async.wait_group 3;\n" ::: "memory"); break;
        case 4: asm volatile("cp.async.wait_group 4;\n" ::: "memory"); break;
        case 5: asm volatile("cp.async.wait_group 5;\n" ::: "memory"); break;
        case 6: asm volatile("cp.async.wait_group 6;\n" ::: "memory"); break;
        default: asm volatile("cp.async.wait_group 7;\n" ::: "memory"); break;
    }
}

// Row r of the row group whose first feature (or pair) is f0, as `gemv` picks it.
template <int ROWS, int EPI>
__device__ __forceinline__ u32 group_row(u32 f0, int r, u32 width, const Rope& rope) {
    constexpr int F = EPI != EPI_PLAIN ? ROWS / 2 : ROWS;
    const u32 f = min(f0 + (r % F), width - 1);
    if (EPI == EPI_GLU) return r >= F ? width + f : f;
    if (EPI == EPI_ROPE) return rope_row(f, rope.head_dim) + (r >= F ? rope.head_dim / 2 : 0);
    return f;
}

template <int M, int ROWS, bool NORM, int EPI>
__device__ __forceinline__ void gemv_staged(
    __nv_bfloat16* __restrict__ out,           // [M, EPI_GLU ? n / 2 : n]; EPI_ROPE: q [M, H·d]
    __nv_bfloat16* __restrict__ residual_out,  // NORM with delta: [M, k], the new stream
    const Input in,
    float eps,
    const __nv_bfloat16* __restrict__ w,       // [n, k]
    const __nv_bfloat16* __restrict__ bias,    // [n] or null (not with EPI_GLU)
    u32 n, u32 k, u32 groups, const Rope rope) {
    constexpr bool PAIRS = EPI != EPI_PLAIN;
    constexpr int F = PAIRS ? ROWS / 2 : ROWS;
    constexpr int WARPS = GEMV_THREADS / 32;
    constexpr int XC = STAGE_X_CHUNKS;
    extern __shared__ uint4 s_w[];                      // [groups, ROWS, chunks]: this block's W
    __shared__ float s_sum[STAGE_MAX_GROUPS][WARPS][ROWS * M];  // every group's warp sums
    __shared__ float s_sq[WARPS][M];                             // the warps' sums of squares
    __shared__ RopeOperands s_rope[EPI == EPI_ROPE ? STAGE_MAX_GROUPS * F * M : 1];
    const u32 tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const u32 width = PAIRS ? n / 2 : n;
    const u32 chunks = k / 8;
    const u32 total = (width + F - 1) / F;  // row groups in the grid
    const u32 first_group = blockIdx.x * groups;
    if (first_group >= total) {
        wait_for_previous_kernel();
        allow_next_kernel();
        return;
    }
    const u32 count = min(groups, total - first_group);

    // Every copy first, one cp.async group per row group; each thread copies exactly the chunks
    // it will read (tid, tid + 256, ...), so its own wait makes them visible: no barrier.
    for (u32 g = 0; g < count; g++) {
        const u32 f0 = (first_group + g) * F;
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            const uint4* src = reinterpret_cast<const uint4*>(w + (size_t)group_row<ROWS, EPI>(f0, r, width, rope) * k);
            uint4* dst = s_w + ((size_t)g * ROWS + r) * chunks;
            for (u32 c = tid; c < chunks; c += GEMV_THREADS) cp_async16(dst + c, src + c);
        }
        cp_async_commit();
    }
    // What needs no previous kernel: gamma's chunks, and the rotary epilogue's operands (into
    // shared memory, by the thread that will use them: output j of group g is thread g·F·M + j).
    uint4 gamma[NORM ? XC : 1];
    if (NORM) {
#pragma unroll
        for (int u = 0; u < XC; u++) {
            const u32 c = tid + GEMV_THREADS * u;
            if (c < chunks) gamma[NORM ? u : 0] = __ldg(in.gamma + c);
        }
    }
    if (EPI == EPI_ROPE && tid < count * F * M) {
        const u32 g = tid / (F * M), r = tid % (F * M) / M, t = tid % M;
        s_rope[EPI == EPI_ROPE ? tid : 0] = rope_operands(rope, min((first_group + g) * F + r, width - 1), t);
    }
    wait_for_previous_kernel();
    allow_next_kernel();

    // The input, once for all row groups: x, or the residual stream normalized (sum of squares in
    // the `_split` kernel's order). Block 0 stores the new stream.
    uint4 xs[XC][M];
    if (NORM) {
        const bool store = in.delta && residual_out && blockIdx.x == 0;
#pragma unroll
        for (int t = 0; t < M; t++) {
            float sum_sq = 0.0f;
#pragma unroll
            for (int u = 0; u < XC; u++) {
                const u32 c = tid + GEMV_THREADS * u;
                if (c < chunks) {
                    const f32x8 s = stream_chunk(in, t, c);
                    xs[u][t] = pack8(s);  // exact: the stream is bf16
                    if (store) reinterpret_cast<uint4*>(residual_out)[(size_t)t * chunks + c] = xs[u][t];
#pragma unroll
                    for (int i = 0; i < 8; i++) sum_sq += s.v[i] * s.v[i];
                }
            }
            sum_sq = warp_sum(sum_sq);
            if (lane == 0) s_sq[warp][t] = sum_sq;
        }
        __syncthreads();
#pragma unroll
        for (int t = 0; t < M; t++) {
            float sum_sq = 0.0f;
#pragma unroll
            for (int v = 0; v < WARPS; v++) sum_sq += s_sq[v][t];
            const float inv_rms = rsqrtf(sum_sq / k + eps);
#pragma unroll
            for (int u = 0; u < XC; u++) {
                const u32 c = tid + GEMV_THREADS * u;
                if (c < chunks) xs[u][t] = normed(unpack8(xs[u][t]), unpack8(gamma[NORM ? u : 0]), inv_rms);
            }
        }
    } else {
#pragma unroll
        for (int t = 0; t < M; t++)
#pragma unroll
            for (int u = 0; u < XC; u++) {
                const u32 c = tid + GEMV_THREADS * u;
                if (c < chunks) xs[u][t] = __ldg(in.x + (size_t)t * chunks + c);
            }
    }

    // Each row group as its copies land: the products, the warp's shuffles, and its sums into
    // shared memory; no barrier between groups.
    for (u32 g = 0; g < count; g++) {
        cp_async_wait(count - 1 - g);  // this row group's copies have landed
        float acc[ROWS][M];
#pragma unroll
        for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int t = 0; t < M; t++) acc[r][t] = 0.0f;
        const uint4* wg = s_w + (size_t)g * ROWS * chunks;
#pragma unroll
        for (int u = 0; u < XC; u++) {
            const u32 c = tid + GEMV_THREADS * u;
            if (c >= chunks) break;
#pragma unroll
            for (int t = 0; t < M; t++) {
                const f32x8 xf = unpack8(xs[u][t]);
#pragma unroll
                for (int r = 0; r < ROWS; r++) acc[r][t] += dot8(unpack8(wg[(size_t)r * chunks + c]), xf);
            }
        }
        warp_sums_to_shared<ROWS, M>(acc, s_sum[g][warp], lane);
    }
    __syncthreads();

    // The epilogue: thread g·F·M + j finishes output j = r·M + t (feature or pair r, token t)
    // of row group g, adding the eight warps' sums in the `_split` kernel's order.
    if (tid >= count * F * M) return;
    const u32 g = tid / (F * M), r = tid % (F * M) / M, t = tid % M;
    const u32 f0 = (first_group + g) * F, f = f0 + r;
    if (f >= width) return;
    float a = 0.0f, b = 0.0f;  // rows r and F + r (pairs)
#pragma unroll
    for (int v = 0; v < WARPS; v++) {
        a += s_sum[g][v][r * M + t];
        if (PAIRS) b += s_sum[g][v][(F + r) * M + t];
    }
    if (EPI == EPI_ROPE) {
        const u32 ra = group_row<ROWS, EPI>(f0, r, width, rope), rb = group_row<ROWS, EPI>(f0, F + r, width, rope);
        const float x = __bfloat162float(__float2bfloat16(a + (bias ? __bfloat162float(bias[ra]) : 0.0f)));
        const float y = __bfloat162float(__float2bfloat16(b + (bias ? __bfloat162float(bias[rb]) : 0.0f)));
        rope_store(rope, out, f, t, x, y, s_rope[EPI == EPI_ROPE ? tid : 0]);
        return;
    }
    float y;
    if (EPI == EPI_GLU) {
        const float gt = __bfloat162float(__float2bfloat16(a));
        const float up = __bfloat162float(__float2bfloat16(b));
        y = silu(gt) * up;
    } else {
        y = a + (bias ? __bfloat162float(bias[f]) : 0.0f);
    }
    out[(size_t)t * width + f] = __float2bfloat16(y);
}

// `_staged` entry points, 1 to 3 tokens, rows per group as `gemv_m*` (4 at one token, 2
// beyond); two blocks per SM (<= 128 registers), so the next kernel's block fits beside this
// one. (At 4 tokens the input chunks a thread keeps, 64 registers, push it past 128: ptxas
// spilled ~160 bytes, so 4 tokens keep the `_split` kernels. NVRTC 13.0, sm_90: 68-72
// registers at one token, 92-94 at two, 126 at three, no spills; the `_split` kernels at one
// token take 94-161.) The arguments are the `_split` ones with `u32 groups` (row groups per
// block) after k.
#define GEMV_STAGED(M, ROWS)                                                                       \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS, 2) gemv_m##M##_staged(              \
        __nv_bfloat16* __restrict__ out, const __nv_bfloat16* __restrict__ x,                      \
        const __nv_bfloat16* __restrict__ w, const __nv_bfloat16* __restrict__ bias, u32 n,        \
        u32 k, u32 groups) {                                                                       \
        const Input in = {reinterpret_cast<const uint4*>(x), nullptr, nullptr, nullptr, k / 8};    \
        gemv_staged<M, ROWS, false, EPI_PLAIN>(out, nullptr, in, 0.0f, w, bias, n, k, groups, Rope{}); \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS, 2) gemv_norm_m##M##_staged(         \
        __nv_bfloat16* __restrict__ out, __nv_bfloat16* __restrict__ residual_out,                 \
        const __nv_bfloat16* __restrict__ delta, const __nv_bfloat16* __restrict__ residual,       \
        const __nv_bfloat16* __restrict__ gamma, float eps, const __nv_bfloat16* __restrict__ w,   \
        const __nv_bfloat16* __restrict__ bias, u32 n, u32 k, u32 groups) {                        \
        const Input in = {nullptr, reinterpret_cast<const uint4*>(delta),                          \
                          reinterpret_cast<const uint4*>(residual),                                \
                          reinterpret_cast<const uint4*>(gamma), k / 8};                           \
        gemv_staged<M, ROWS, true, EPI_PLAIN>(out, residual_out, in, eps, w, bias, n, k, groups, Rope{}); \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS, 2) gemv_norm_glu_m##M##_staged(     \
        __nv_bfloat16* __restrict__ out, __nv_bfloat16* __restrict__ residual_out,                 \
        const __nv_bfloat16* __restrict__ delta, const __nv_bfloat16* __restrict__ residual,       \
        const __nv_bfloat16* __restrict__ gamma, float eps, const __nv_bfloat16* __restrict__ w,   \
        u32 n, u32 k, u32 groups) {                                                                \
        const Input in = {nullptr, reinterpret_cast<const uint4*>(delta),                          \
                          reinterpret_cast<const uint4*>(residual),                                \
                          reinterpret_cast<const uint4*>(gamma), k / 8};                           \
        gemv_staged<M, ROWS, true, EPI_GLU>(out, residual_out, in, eps, w, nullptr, n, k, groups, Rope{}); \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS, 2) gemv_norm_rope_m##M##_staged(    \
        __nv_bfloat16* __restrict__ q_out, __nv_bfloat16* __restrict__ residual_out,               \
        const __nv_bfloat16* __restrict__ delta, const __nv_bfloat16* __restrict__ residual,       \
        const __nv_bfloat16* __restrict__ gamma, float eps, const __nv_bfloat16* __restrict__ w,   \
        const __nv_bfloat16* __restrict__ bias, u32 n, u32 k, u32 groups,                          \
        __nv_bfloat16* __restrict__ key_cache, __nv_bfloat16* __restrict__ value_cache,            \
        const u32* __restrict__ positions, const u64* __restrict__ slot_mapping,                   \
        const float* __restrict__ cos_sin_cache, u32 num_heads, u32 num_kv_heads, u32 head_dim) {  \
        const Input in = {nullptr, reinterpret_cast<const uint4*>(delta),                          \
                          reinterpret_cast<const uint4*>(residual),                                \
                          reinterpret_cast<const uint4*>(gamma), k / 8};                           \
        const Rope rope = {key_cache, value_cache, positions, slot_mapping, cos_sin_cache,         \
                           num_heads, num_kv_heads, head_dim};                                     \
        gemv_staged<M, ROWS, true, EPI_ROPE>(q_out, residual_out, in, eps, w, bias, n, k, groups, rope); \
    }
GEMV_STAGED(1, 4)
GEMV_STAGED(2, 2)
GEMV_STAGED(3, 2)
