// y = x · Wᵀ for a decode batch of 5-32 tokens through a large weight ("skinny" GEMM: vLLM's
// name for its ROCm kernels of this kind), on tensor cores, with programmatic dependent launch.
//
// Why a kernel of ours next to cuBLAS. At 32 tokens a projection is still a stream of its
// weights (each weight is used 32 times: 32 FLOP per byte, far below what the tensor cores
// could do per byte read), so its time should be bytes ÷ bandwidth. cuBLAS's tiles reach
// 59-84% of the copy bandwidth on a Llama-2-7B TP 2 rank's projections (kernels/README.md), and
// a cuBLAS kernel cannot start reading its weights before the previous kernel ends. Here each
// block starts copying its weight tiles before `griddepcontrol.wait`, so under programmatic
// dependent launch the weights stream while the previous kernel (a norm, attention, an
// all-reduce) drains; the activations, which that kernel wrote, are copied after the wait.
//
// Measured (2026-11-30, H200): correct, but slower than cuBLAS at every 7B and 1B projection,
// 25-70% of copy against 58-88%, and slower the more tokens (the book's performance page has
// the table). A cp.async per 16 bytes and a barrier per 8 KB stage leave the warps waiting;
// cuBLAS's Hopper kernels feed wgmma from the Tensor Memory Accelerator. The engine keeps
// cuBLAS (LAB_SKINNY_MAX_TOKENS turns this on); this file is where a TMA + wgmma kernel starts.
//
// Layout. A block owns R = 64 or 128 weight rows (16 per warp) and a range of k (split-K,
// gridDim.y splits). It walks its k range in stages of 64 k values: per stage a [R rows × 64 k] tile of W and a
// [8·MT tokens × 64 k] tile of x, copied by cp.async into a ring of SG_STAGES stages, so that
// three stages are in flight while the fourth is multiplied. Each warp computes its 16 rows for
// every token: mma.sync m16n8k16 (bf16 in, f32 accumulate), A = its W rows, B = xᵀ, one mma per
// 8 tokens and 16 k.
//
// The k order inside an mma. The A fragment wants lane (g, t) to hold W[g][2t, 2t+1],
// W[g+8][2t, 2t+1], W[g][2t+8, 2t+9], W[g+8][2t+8, 2t+9], and B the same k indices of token g.
// A sum over k may take the k values in any order, as long as A and B agree. So a lane reads
// 8 consecutive k values (one 16-byte chunk) of row g, of row g+8 and of token g, and hands the
// mma the first four of each as its logical k = 2t, 2t+1, 2t+8, 2t+9, then the last four in a
// second mma: four lanes t = 0..3 cover 32 consecutive k values in two mmas, with one 16-byte
// shared-memory load per operand row instead of four 4-byte ones.
//
// Shared memory banks. A tile row is 128 bytes (8 chunks), so rows g and g+1 would put a
// chunk in the same banks. The 8 lanes of a load phase read chunks 0-3 (or 4-7) of two
// consecutive rows; storing chunk c of row r at slot c ^ 4·(r & 1) puts those 8 chunks in 8
// distinct 16-byte bank groups, and a copy phase (one row's 8 chunks) stays a permutation.
//
// Split-K. When the weight has few rows (o_proj and down of a TP rank: 4096 rows, 64 blocks),
// gridDim.y blocks share a row tile, each over a contiguous k range, and write their f32 sums to
// `partials`; the last of them to finish (an atomic ticket per row tile, as in
// paged_attention.cu's merge) adds the splits in order 0, 1, ... and writes the output. The
// order never depends on which block finishes last, so the result is the same on every run.
//
// Epilogues: plain (y rounded once to bf16), or SiLU·mul for gate_up: a block's R rows are then
// R / 2 gate rows j0.. and the R / 2 up rows d + j0.. (d = n / 2), and it writes
// silu(gate) · up for its R / 2 columns, rounding gate and up to bf16 first, as cuBLAS followed by
// silu_and_mul.cu does.

// R (a template parameter): weight rows per block, 16 per warp, so 2·R threads. 64 or 128.
#define SG_CHUNKS 8        // 16-byte chunks per tile row: 64 k values per stage
#define SG_KC (SG_CHUNKS * 8)
#define SG_STAGES 4
#define SG_EPI_PLAIN 0
#define SG_EPI_GLU 1

__device__ __forceinline__ int sg_slot(int row, int chunk) {
    return row * SG_CHUNKS + (chunk ^ ((row & 1) << 2));
}

// 16 bytes global → shared, or zeros where `valid` is false (nothing is read then).
__device__ __forceinline__ void sg_copy16(uint4* smem, const void* gmem, bool valid) {
    const u32 s = static_cast<u32>(__cvta_generic_to_shared(smem));
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void sg_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// At most SG_STAGES - 2 copy groups of this thread still in flight.
__device__ __forceinline__ void sg_wait_ring() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(SG_STAGES - 2) : "memory");
}
__device__ __forceinline__ void sg_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Not volatile: the mma has no effect beyond its outputs, so the compiler may interleave the
// independent mmas of several token tiles (each mma's result feeds the next one of its tile only).
__device__ __forceinline__ void sg_mma(float c[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The weight row that row `r` of row tile `tile` reads, or -1 past the weight's end.
template <int EPI, int R>
__device__ __forceinline__ int sg_weight_row(u32 tile, int r, u32 n) {
    if (EPI == SG_EPI_GLU) {
        const u32 d = n / 2, j = tile * (R / 2) + (r % (R / 2));
        if (j >= d) return -1;
        return (int)(r < R / 2 ? j : d + j);
    }
    const u32 row = tile * R + r;
    return row < n ? (int)row : -1;
}

// Writes this tile's outputs from `sums` ([8·MT tokens][R + 4] f32, the tile's full sums).
template <int MT, int EPI, int R>
__device__ __forceinline__ void sg_store(__nv_bfloat16* __restrict__ out, const float* sums, u32 tile,
                                         u32 m, u32 n) {
    constexpr int LD = R + 4, THREADS = 2 * R;
    if (EPI == SG_EPI_GLU) {
        const u32 d = n / 2, half = R / 2;
        for (u32 i = threadIdx.x; i < m * half; i += THREADS) {
            const u32 t = i / half, c = i % half, j = tile * half + c;
            if (j >= d) continue;
            const float g = __bfloat162float(__float2bfloat16(sums[t * LD + c]));
            const float up = __bfloat162float(__float2bfloat16(sums[t * LD + half + c]));
            out[(size_t)t * d + j] = __float2bfloat16(silu(g) * up);
        }
    } else {
        for (u32 i = threadIdx.x; i < m * R; i += THREADS) {
            const u32 t = i / R, r = i % R, row = tile * R + r;
            if (row < n) out[(size_t)t * n + row] = __float2bfloat16(sums[t * LD + r]);
        }
    }
}

template <int MT, int EPI, int R>
__device__ __forceinline__ void skinny_gemm(
    __nv_bfloat16* __restrict__ out,      // [m, n] (plain) or [m, n / 2] (SiLU·mul)
    float* __restrict__ partials,         // [row tiles, gridDim.y, 8·MT, R] when gridDim.y > 1
    u32* __restrict__ tickets,            // [row tiles], 0 between launches (the last block resets it)
    const __nv_bfloat16* __restrict__ x,  // [m, k]
    const __nv_bfloat16* __restrict__ w,  // [n, k]
    u32 m, u32 n, u32 k, u32 k_per_split) {
    constexpr int TOKENS = 8 * MT, THREADS = 2 * R;
    constexpr int STAGE_CHUNKS = (R + TOKENS) * SG_CHUNKS;
    constexpr int LD = R + 4;  // the epilogue's f32 rows, padded off the banks of their neighbours
    static_assert(TOKENS * LD * 4 <= SG_STAGES * STAGE_CHUNKS * 16, "the epilogue fits the ring");
    extern __shared__ uint4 sg_ring[];  // [SG_STAGES][W rows, then x rows][SG_CHUNKS], swizzled
    __shared__ u32 s_ticket;

    const u32 tile = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
    const u32 k_begin = split * k_per_split, k_end = min(k, k_begin + k_per_split);
    const int num_stages = (int)((k_end - k_begin + SG_KC - 1) / SG_KC);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;

    // Each thread copies the same rows and chunks of every stage: work out where once.
    constexpr int W_COPIES = R * SG_CHUNKS / THREADS;  // 4
    const int chunk = tid % SG_CHUNKS;
    const __nv_bfloat16* w_src[W_COPIES];
#pragma unroll
    for (int i = 0; i < W_COPIES; i++) {
        const int row = sg_weight_row<EPI, R>(tile, i * (THREADS / SG_CHUNKS) + tid / SG_CHUNKS, n);
        w_src[i] = row < 0 ? nullptr : w + (size_t)row * k + k_begin + chunk * 8;
    }
    auto load_w = [&](int stage, int slot) {
        uint4* dst = sg_ring + slot * STAGE_CHUNKS;
        const u32 kk = k_begin + stage * SG_KC + chunk * 8;
#pragma unroll
        for (int i = 0; i < W_COPIES; i++) {
            const int r = i * (THREADS / SG_CHUNKS) + tid / SG_CHUNKS;
            const bool valid = w_src[i] != nullptr && kk < k_end;
            sg_copy16(dst + sg_slot(r, chunk), valid ? w_src[i] + stage * SG_KC : w, valid);
        }
    };
    auto load_x = [&](int stage, int slot) {
        uint4* dst = sg_ring + slot * STAGE_CHUNKS + R * SG_CHUNKS;
        const u32 kk = k_begin + stage * SG_KC + chunk * 8;
#pragma unroll
        for (int i = 0; i < (TOKENS * SG_CHUNKS + THREADS - 1) / THREADS; i++) {
            const int r = i * (THREADS / SG_CHUNKS) + tid / SG_CHUNKS;
            if (r >= TOKENS) break;
            const bool valid = (u32)r < m && kk < k_end;
            sg_copy16(dst + sg_slot(r, chunk), valid ? x + (size_t)r * k + kk : x, valid);
        }
    };

    // The weights never depend on the previous kernel: start them before waiting for it.
#pragma unroll
    for (int s = 0; s < SG_STAGES - 1; s++) {
        if (s < num_stages) load_w(s, s);
        sg_commit();
    }
    wait_for_previous_kernel();
    allow_next_kernel();
#pragma unroll
    for (int s = 0; s < SG_STAGES - 1; s++) {
        if (s < num_stages) load_x(s, s);
        sg_commit();
    }
    // Groups so far: W0 W1 W2 X0 X1 X2, then one (W, x) group per iteration. Waiting until at
    // most SG_STAGES - 2 are in flight at iteration i leaves stage i's W and x landed.

    float acc[MT][4];
#pragma unroll
    for (int tt = 0; tt < MT; tt++) acc[tt][0] = acc[tt][1] = acc[tt][2] = acc[tt][3] = 0.0f;

    for (int i = 0; i < num_stages; i++) {
        sg_wait_ring();
        __syncthreads();  // every thread's copies of stage i landed; slot (i - 1) % S is free
        const int next = i + SG_STAGES - 1;
        if (next < num_stages) {
            load_w(next, next % SG_STAGES);
            load_x(next, next % SG_STAGES);
        }
        sg_commit();
        const uint4* wt = sg_ring + (i % SG_STAGES) * STAGE_CHUNKS;
        const uint4* xt = wt + R * SG_CHUNKS;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int c = h * 4 + t4;
            const uint4 lo = wt[sg_slot(warp * 16 + g, c)];
            const uint4 hi = wt[sg_slot(warp * 16 + g + 8, c)];
            uint4 b[MT];
#pragma unroll
            for (int tt = 0; tt < MT; tt++) b[tt] = xt[sg_slot(tt * 8 + g, c)];
            // Every tile's first mma, then every tile's second: MT independent mmas between
            // two that depend on each other.
#pragma unroll
            for (int tt = 0; tt < MT; tt++) sg_mma(acc[tt], lo.x, hi.x, lo.y, hi.y, b[tt].x, b[tt].y);
#pragma unroll
            for (int tt = 0; tt < MT; tt++) sg_mma(acc[tt], lo.z, hi.z, lo.w, hi.w, b[tt].z, b[tt].w);
        }
    }
    sg_wait_all();
    __syncthreads();  // the ring is free for the epilogue's sums

    // This block's sums as [token][row]: c0, c1 = rows g, tokens 2t, 2t+1; c2, c3 = row g + 8.
    float* sums = reinterpret_cast<float*>(sg_ring);
#pragma unroll
    for (int tt = 0; tt < MT; tt++) {
        const int t0 = tt * 8 + 2 * t4, r0 = warp * 16 + g;
        sums[t0 * LD + r0] = acc[tt][0];
        sums[(t0 + 1) * LD + r0] = acc[tt][1];
        sums[t0 * LD + r0 + 8] = acc[tt][2];
        sums[(t0 + 1) * LD + r0 + 8] = acc[tt][3];
    }
    __syncthreads();
    if (splits == 1) {
        sg_store<MT, EPI, R>(out, sums, tile, m, n);
        return;
    }

    // Split-K: publish this split's sums, then the last block of the tile adds them in order.
    float* mine = partials + ((size_t)tile * splits + split) * TOKENS * R;
    for (u32 i = tid; i < m * R; i += THREADS) mine[i] = sums[(i / R) * LD + i % R];
    __threadfence();  // the sums are visible device-wide before the ticket says so
    __syncthreads();
    if (tid == 0) s_ticket = atomicAdd(&tickets[tile], 1u);
    __syncthreads();
    if (s_ticket != splits - 1) return;
    __threadfence();  // read the other blocks' sums only after seeing every ticket
    const float* tile_partials = partials + (size_t)tile * splits * TOKENS * R;
    for (u32 i = tid; i < m * R; i += THREADS) {
        float total = 0.0f;
        for (u32 s = 0; s < splits; s++) total += __ldcg(tile_partials + (size_t)s * TOKENS * R + i);
        sums[(i / R) * LD + i % R] = total;
    }
    if (tid == 0) tickets[tile] = 0;  // ready for the next launch
    __syncthreads();
    sg_store<MT, EPI, R>(out, sums, tile, m, n);
}

#define SKINNY_GEMM(MT, EPI, R, NAME)                                                               \
    extern "C" __global__ void __launch_bounds__(2 * R) NAME(                                       \
        __nv_bfloat16 *out, float *partials, u32 *tickets, const __nv_bfloat16 *x,                 \
        const __nv_bfloat16 *w, u32 m, u32 n, u32 k, u32 k_per_split) {                            \
        skinny_gemm<MT, EPI, R>(out, partials, tickets, x, w, m, n, k, k_per_split);                \
    }
// Row tiles of 64 rows (4 warps) and of 128 (8 warps: half the activation reads per weight byte).
SKINNY_GEMM(1, SG_EPI_PLAIN, 64, skinny_gemm_t1)
SKINNY_GEMM(2, SG_EPI_PLAIN, 64, skinny_gemm_t2)
SKINNY_GEMM(3, SG_EPI_PLAIN, 64, skinny_gemm_t3)
SKINNY_GEMM(4, SG_EPI_PLAIN, 64, skinny_gemm_t4)
SKINNY_GEMM(1, SG_EPI_GLU, 64, skinny_gemm_glu_t1)
SKINNY_GEMM(2, SG_EPI_GLU, 64, skinny_gemm_glu_t2)
SKINNY_GEMM(3, SG_EPI_GLU, 64, skinny_gemm_glu_t3)
SKINNY_GEMM(4, SG_EPI_GLU, 64, skinny_gemm_glu_t4)
SKINNY_GEMM(1, SG_EPI_PLAIN, 128, skinny_gemm_r128_t1)
SKINNY_GEMM(2, SG_EPI_PLAIN, 128, skinny_gemm_r128_t2)
SKINNY_GEMM(3, SG_EPI_PLAIN, 128, skinny_gemm_r128_t3)
SKINNY_GEMM(4, SG_EPI_PLAIN, 128, skinny_gemm_r128_t4)
SKINNY_GEMM(1, SG_EPI_GLU, 128, skinny_gemm_glu_r128_t1)
SKINNY_GEMM(2, SG_EPI_GLU, 128, skinny_gemm_glu_r128_t2)
SKINNY_GEMM(3, SG_EPI_GLU, 128, skinny_gemm_glu_r128_t3)
SKINNY_GEMM(4, SG_EPI_GLU, 128, skinny_gemm_glu_r128_t4)
