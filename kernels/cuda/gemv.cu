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

#define GEMV_THREADS 256
#define UNROLL 4  // 16-byte chunks of each row a lane loads at once

__device__ __forceinline__ float dot8(const f32x8& a, const f32x8& b) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) s = fmaf(a.v[i], b.v[i], s);
    return s;
}

template <int M, int ROWS>
__device__ __forceinline__ void gemv(
    __nv_bfloat16* __restrict__ out,           // [M, n]
    const __nv_bfloat16* __restrict__ x,       // [M, k]
    const __nv_bfloat16* __restrict__ w,       // [n, k]
    const __nv_bfloat16* __restrict__ bias,    // [n] or null
    u32 n, u32 k) {
    const u32 lane = threadIdx.x % 32;
    const u32 warp = (blockIdx.x * GEMV_THREADS + threadIdx.x) / 32;
    const u32 row0 = warp * ROWS;
    if (row0 >= n) return;
    const u32 chunks = k / 8;
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    float acc[ROWS][M];
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int t = 0; t < M; t++) acc[r][t] = 0.0f;

    // UNROLL chunks per lane are loaded before any is used, so a short row (k = 576: at most 3
    // chunks per lane) costs one trip to memory, not one per chunk.
    for (u32 c0 = lane; c0 < chunks; c0 += 32 * UNROLL) {
        uint4 wraw[UNROLL][ROWS];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const u32 c = min(c0 + 32 * u, chunks - 1);  // past the end: reload, then skipped
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                const u32 row = min(row0 + r, n - 1);  // rows past n recompute the last (discarded)
                wraw[u][r] = __ldg(reinterpret_cast<const uint4*>(w + (size_t)row * k) + c);
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const u32 c = c0 + 32 * u;
            if (c >= chunks) break;
#pragma unroll
            for (int t = 0; t < M; t++) {
                const f32x8 xf = unpack8(__ldg(xv + (size_t)t * chunks + c));
#pragma unroll
                for (int r = 0; r < ROWS; r++) acc[r][t] += dot8(unpack8(wraw[u][r]), xf);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
#pragma unroll
        for (int t = 0; t < M; t++) {
            float v = acc[r][t];
#pragma unroll
            for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
            acc[r][t] = v;
        }
    }
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            const u32 row = row0 + r;
            if (row >= n) break;
            const float b = bias ? __bfloat162float(bias[row]) : 0.0f;
#pragma unroll
            for (int t = 0; t < M; t++) out[(size_t)t * n + row] = __float2bfloat16(acc[r][t] + b);
        }
    }
}

// One entry point per token count (the accumulators live in registers, so M is a template
// argument); 2 rows per warp (4 at M = 1, for more loads in flight).
#define GEMV_ENTRY(M, ROWS)                                                                    \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_m##M(                      \
        __nv_bfloat16* __restrict__ out, const __nv_bfloat16* __restrict__ x,                   \
        const __nv_bfloat16* __restrict__ w, const __nv_bfloat16* __restrict__ bias, u32 n,     \
        u32 k) {                                                                               \
        gemv<M, ROWS>(out, x, w, bias, n, k);                                                  \
    }
GEMV_ENTRY(1, 4)
GEMV_ENTRY(2, 2)
GEMV_ENTRY(3, 2)
GEMV_ENTRY(4, 2)
GEMV_ENTRY(5, 2)
GEMV_ENTRY(6, 2)
GEMV_ENTRY(7, 2)
GEMV_ENTRY(8, 2)
