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
// Two main loops share the epilogues. The first (cp.async copies, mma.sync) was measured first
// (2026-11-30, H200): correct, but slower than cuBLAS at every 7B and 1B projection, 25-70% of
// copy against 58-88%, slower the more tokens; its warps were found waiting. The second (the
// Tensor Memory Accelerator and wgmma, sm_90a, further down) streams a 7B layer's projections
// at 66-94% of copy and is level with or ahead of cuBLAS at most of them; with a row tile's
// splits meeting in a thread block cluster it made the engine's 7B decode step at batch 32
// about 3-4% faster at TP 1 and TP 2, and the engine uses it by default (the book's
// performance page has the tables). The first stays as the version a GPU without sm_90a
// features runs, off by default, and as the comparison.
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

// Output (t, c) of a row tile: plain, row c of the tile from its sum `a`; SiLU·mul, column c
// from its gate sum `a` and up sum `b`, each rounded to bf16 first, as cuBLAS's output would be.
template <int EPI, int R>
__device__ __forceinline__ void sg_store_one(__nv_bfloat16* __restrict__ out, float a, float b, u32 t,
                                             u32 c, u32 tile, u32 n) {
    if (EPI == SG_EPI_GLU) {
        const u32 d = n / 2, j = tile * (R / 2) + c;
        if (j >= d) return;
        const float gate = __bfloat162float(__float2bfloat16(a));
        const float up = __bfloat162float(__float2bfloat16(b));
        out[(size_t)t * d + j] = __float2bfloat16(silu(gate) * up);
    } else {
        const u32 row = tile * R + c;
        if (row < n) out[(size_t)t * n + row] = __float2bfloat16(a);
    }
}

// Writes this tile's outputs from `sums` ([8·MT tokens][R + 4] f32, the tile's full sums).
template <int MT, int EPI, int R>
__device__ __forceinline__ void sg_store(__nv_bfloat16* __restrict__ out, const float* sums, u32 tile,
                                         u32 m, u32 n) {
    constexpr int LD = R + 4, THREADS = 2 * R;
    constexpr u32 COLS = EPI == SG_EPI_GLU ? R / 2 : R;  // outputs per token
    for (u32 i = threadIdx.x; i < m * COLS; i += THREADS) {
        const u32 t = i / COLS, c = i % COLS;
        const float up = EPI == SG_EPI_GLU ? sums[t * LD + R / 2 + c] : 0.0f;
        sg_store_one<EPI, R>(out, sums[t * LD + c], up, t, c, tile, n);
    }
}

// A block's accumulators (`acc[tt]` = rows warp·16 + g and + 8, tokens tt·8 + 2·t4 and + 1:
// the mma.sync m16n8 fragment, and wgmma's per 8 columns) into `sums` ([8·MT tokens][R + 4]).
template <int MT, int R>
__device__ __forceinline__ void sg_put_acc(float* sums, const float (&acc)[MT][4]) {
    constexpr int LD = R + 4;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
#pragma unroll
    for (int tt = 0; tt < MT; tt++) {
        const int t0 = tt * 8 + 2 * t4, r0 = warp * 16 + g;
        sums[t0 * LD + r0] = acc[tt][0];
        sums[(t0 + 1) * LD + r0] = acc[tt][1];
        sums[t0 * LD + r0 + 8] = acc[tt][2];
        sums[(t0 + 1) * LD + r0 + 8] = acc[tt][3];
    }
}

// What the mma.sync main loop ends with: this block's accumulators go to `sums` (the block's
// free shared memory, sg_put_acc); then either the output is written, or (split-K) this
// split's sums are published and the last block of the row tile adds every split's in order
// and writes the output.
template <int MT, int EPI, int R>
__device__ __forceinline__ void sg_finish(__nv_bfloat16* __restrict__ out, float* __restrict__ partials,
                                          u32* __restrict__ tickets, float* sums, const float (&acc)[MT][4],
                                          u32 m, u32 n) {
    constexpr int TOKENS = 8 * MT, THREADS = 2 * R, LD = R + 4;
    __shared__ u32 s_ticket;
    const u32 tile = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
    const int tid = threadIdx.x;
    sg_put_acc<MT, R>(sums, acc);
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

    const u32 tile = blockIdx.x, split = blockIdx.y;
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
    sg_finish<MT, EPI, R>(out, partials, tickets, reinterpret_cast<float*>(sg_ring), acc, m, n);
}

// ---------------------------------------------------------------------------------------------
// The same GEMM on Hopper's own machinery (sm_90a): the Tensor Memory Accelerator copies each
// stage's tiles, and warpgroup MMA (wgmma) multiplies them straight from shared memory.
//
// Why. The main loop above spends a cp.async per 16 bytes per thread, a __syncthreads per
// stage and a shared-memory load per mma operand, and on an H200 its warps were found waiting
// (0.56 eligible warps per scheduler, DRAM at 38%). Here one thread asks the TMA for a whole
// [rows × 64 k] tile with one instruction, the tile lands in shared memory already in the
// layout wgmma reads (the 128-byte swizzle: 16-byte chunk c of row r at chunk c ^ (r % 8)), and
// an mbarrier per stage counts its bytes in. A warpgroup (4 warps, 128 threads) multiplies
// 64 weight rows by the stage's tokens with four wgmma instructions (k = 16 each).
//
// The operands. wgmma computes D[64, N] += A[64, 16] · B[16, N] with M fixed at 64, so the
// weights are A (64 rows a warpgroup) and the tokens are B (N = 8·MT, from 8 to 32): Dᵀ =
// W · xᵀ. Both are "K-major" (k contiguous in each row), the layout W [n, k] and x [m, k]
// already have. A shared-memory matrix descriptor names a tile: its address, the stride
// between groups of 8 rows (8 × 128 bytes) and the swizzle; the k step j of a stage starts
// 32·j bytes into each 128-byte row. D's registers per thread follow mma.sync's m16n8
// fragment for each 8 tokens, so the epilogue's pieces (sg_put_acc, sg_store) are the ones above.
//
// The ring. All SG_TMA_STAGES slots are filled before the loop: the weights' copies before
// griddepcontrol.wait (they never depend on the previous kernel), x's after. A slot is copied
// again as soon as every warpgroup's wgmma has read it. Rows past the weight's end and tokens
// past m arrive as zeros (the TMA fills what lies outside the tensor), so no thread tests a
// bound in the loop.
//
// Split-K in a cluster. A row tile's splits are launched as one thread block cluster (1 ×
// splits × 1, at most 8), whose blocks run at once on neighbouring SMs and can read each
// other's shared memory. Each block leaves its f32 sums in its own shared memory; after a
// cluster barrier, block s adds the s-th share of the tile's outputs from every block, in split
// order (sg_finish_cluster). The first version wrote the splits' sums to global memory and let
// the last block to take a ticket add them, as the mma.sync loop does: on the H200 that was
// 13.97 µs for a TP 2 rank's o_proj at 32 tokens (4 splits), the cluster version 7.50.
#define SG_TMA_STAGES(R) ((R) == 64 ? 6 : 5)

// A CUtensorMap: 128 opaque bytes the host encodes (cuTensorMapEncodeTiled), passed by value.
struct __align__(64) TmaMap {
    u64 opaque[16];
};

__device__ __forceinline__ u32 smem_addr(const void* p) {
    return static_cast<u32>(__cvta_generic_to_shared(p));
}

// Where a row-parallel projection's output also goes (o_proj, down_proj under tensor
// parallelism): into slot `rank` of every peer's inbox of the one-shot all-reduce
// (custom_all_reduce.cu), each pair of outputs as soon as it is summed, so that the all-reduce
// after this kernel has nothing left to send and only receives. The push leaves when the
// tile's sums are ready instead of after the whole grid has finished, been flushed, and an
// all-reduce kernel has read the output back.
struct SgPush {
    PeerPtrs peers;
    const u32* counter;  // [CAR_MAX_BLOCKS]: this rank's all-reduce calls so far (all equal between kernels)
    u32 rank, ranks;
    u32 capacity;        // values in one inbox slot
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// One arrival that also says `bytes` more are coming from copies.
__device__ __forceinline__ void mbar_expect(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    u32 done = 0;
    while (!done) {
        asm volatile(
            "{\n.reg .pred p;\n"
            "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
    }
}
// Box (c0 = k, c1 = row) of `map` into shared memory at `dst`; its bytes count on `bar`.
__device__ __forceinline__ void tma_load(u32 dst, const TmaMap* map, int c0, int c1, u32 bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
        "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
        "l"(reinterpret_cast<u64>(map)), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}
// The descriptor of a K-major tile of 128-byte rows at `addr` with the 128-byte swizzle.
__device__ __forceinline__ u64 wgmma_desc(u32 addr) {
    return (u64)((addr & 0x3FFFF) >> 4)  // start address, 16-byte units
           | ((u64)1 << 16)              // leading byte offset: unused by swizzled K-major tiles
           | ((u64)(1024 >> 4) << 32)    // stride byte offset: 8 rows of 128 bytes
           | ((u64)1 << 62);             // 128-byte swizzle
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait_all() {
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Keeps the compiler from moving the accumulators' registers across the asynchronous wgmma.
template <int MT>
__device__ __forceinline__ void wgmma_fence_acc(float (&d)[MT][4]) {
#pragma unroll
    for (int tt = 0; tt < MT; tt++)
#pragma unroll
        for (int q = 0; q < 4; q++) asm volatile("" : "+f"(d[tt][q])::"memory");
}

#define SG_D4(t) "+f"(d[t][0]), "+f"(d[t][1]), "+f"(d[t][2]), "+f"(d[t][3])
// d[64 rows, 8·MT tokens] += A(desc_a)[64, 16] · B(desc_b)[16, 8·MT], both K-major.
template <int MT>
__device__ __forceinline__ void wgmma_step(float (&d)[MT][4], u64 desc_a, u64 desc_b);
template <>
__device__ __forceinline__ void wgmma_step<1>(float (&d)[1][4], u64 a, u64 b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3}, %4, %5, 1, 1, 1, 0, 0;\n"
        : SG_D4(0)
        : "l"(a), "l"(b));
}
template <>
__device__ __forceinline__ void wgmma_step<2>(float (&d)[2][4], u64 a, u64 b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, 1, 1, 1, 0, 0;\n"
        : SG_D4(0), SG_D4(1)
        : "l"(a), "l"(b));
}
template <>
__device__ __forceinline__ void wgmma_step<3>(float (&d)[3][4], u64 a, u64 b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n24k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11}, %12, %13, 1, 1, 1, 0, 0;\n"
        : SG_D4(0), SG_D4(1), SG_D4(2)
        : "l"(a), "l"(b));
}
template <>
__device__ __forceinline__ void wgmma_step<4>(float (&d)[4][4], u64 a, u64 b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, "
        "1, 1, 1, 0, 0;\n"
        : SG_D4(0), SG_D4(1), SG_D4(2), SG_D4(3)
        : "l"(a), "l"(b));
}
#undef SG_D4

// Outputs (t, c) and (t, c + 1) of a row tile (c even, plain epilogue), as one 32-bit word:
// into `out`, and, sendable, into every peer's inbox at the same place of this call's half
// (values from `half` on). A receiver checks 32-bit words, so the two values must arrive as
// one store, never as two 16-bit ones.
template <int R>
__device__ __forceinline__ void sg_store_pair_push(__nv_bfloat16* __restrict__ out, float a, float b, u32 t,
                                                   u32 c, u32 tile, u32 n, const SgPush& push, size_t half) {
    const u32 row = tile * R + c;  // n is even, so row + 1 < n whenever row < n
    if (row >= n) return;
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);  // a in the low half: out[row], as sg_store_one rounds it
    const u32 w = *reinterpret_cast<const u32*>(&v);
    const size_t at = (size_t)t * n + row;
    *reinterpret_cast<u32*>(out + at) = w;
    const u32 sent = sendable(w);
    for (u32 r = 0; r < push.ranks; r++) {
        if (r == push.rank) continue;
        u32* inbox = reinterpret_cast<u32*>(push.peers.inbox[r]);
        store_volatile_u32(inbox + (half + (size_t)push.rank * push.capacity + at) / 2, sent);
    }
}

// sg_finish for the TMA main loop, whose splits of a row tile are one cluster (1 × splits ×
// 1, so a block's rank in it is its split): no partial sums in global memory, no ticket. Each
// block puts its sums in its own shared memory; after a cluster barrier, block s adds up the
// s-th share of the tile's outputs from every block's shared memory, in split order 0, 1, ...
// (the same bits on every run, and the same as sg_finish's), and writes them; a second
// barrier keeps every block's shared memory alive until its peers have read it.
// With PUSH, every output goes out in pairs (sg_store_pair_push), in the same split order.
template <int MT, int EPI, int R, bool PUSH>
__device__ __forceinline__ void sg_finish_cluster(__nv_bfloat16* __restrict__ out, float* sums,
                                                  const float (&acc)[MT][4], u32 m, u32 n,
                                                  const SgPush* push) {
    constexpr int THREADS = 2 * R, LD = R + 4;
    const u32 tile = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
    const int tid = threadIdx.x;
    sg_put_acc<MT, R>(sums, acc);
    if (PUSH) {
        static_assert(!PUSH || EPI == SG_EPI_PLAIN, "only a plain projection is all-reduced");
        // This all-reduce call's number, as the receiving kernel will count it: every block of
        // the previous all-reduce has finished (this kernel waited for the kernel before it).
        const size_t half = (size_t)((push->counter[0] + 1) % 2) * push->ranks * push->capacity;
        const u32 pairs = m * (R / 2);
        if (splits > 1) cluster_sync();  // every split's sums are in its block's shared memory
        else __syncthreads();
        const u32 base = smem_addr(sums);
        const u32 share = (pairs + splits - 1) / splits, begin = split * share, end = min(pairs, begin + share);
        for (u32 i = begin + tid; i < end; i += THREADS) {
            const u32 t = i / (R / 2), c = 2 * (i % (R / 2));
            float a = 0.0f, b = 0.0f;
            for (u32 s = 0; s < splits; s++) {
                a += ld_cluster(base + 4 * (t * LD + c), s);
                b += ld_cluster(base + 4 * (t * LD + c + 1), s);
            }
            sg_store_pair_push<R>(out, a, b, t, c, tile, n, *push, half);
        }
        if (splits > 1) cluster_sync();  // no block leaves while a peer may still read its shared memory
        return;
    }
    if (splits == 1) {
        __syncthreads();
        sg_store<MT, EPI, R>(out, sums, tile, m, n);
        return;
    }
    cluster_sync();  // every split's sums are in its block's shared memory
    const u32 base = smem_addr(sums);
    const u32 cols = EPI == SG_EPI_GLU ? R / 2 : R, total = m * cols;
    const u32 share = (total + splits - 1) / splits, begin = split * share, end = min(total, begin + share);
    for (u32 i = begin + tid; i < end; i += THREADS) {
        const u32 t = i / cols, c = i % cols;
        float a = 0.0f, b = 0.0f;
        for (u32 s = 0; s < splits; s++) {
            a += ld_cluster(base + 4 * (t * LD + c), s);
            if (EPI == SG_EPI_GLU) b += ld_cluster(base + 4 * (t * LD + R / 2 + c), s);
        }
        sg_store_one<EPI, R>(out, a, b, t, c, tile, n);
    }
    cluster_sync();  // no block leaves while a peer may still read its shared memory
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// Launched in clusters of 1 × gridDim.y × 1: a row tile's splits (at most 8) are one cluster.
template <int MT, int EPI, int R, bool PUSH>
__device__ __forceinline__ void skinny_gemm_tma(
    __nv_bfloat16* __restrict__ out,  // [m, n] (plain) or [m, n / 2] (SiLU·mul)
    const TmaMap* w_map,              // W [n, k] bf16, boxes of [R / 2 rows, 64 k], 128-byte swizzle
    const TmaMap* x_map,              // x [m, k] bf16, boxes of [8·MT rows, 64 k], 128-byte swizzle
    u32 m, u32 n, u32 k, u32 k_per_split,
    const SgPush* push) {             // PUSH: the peers' inboxes the output also goes to

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int TOKENS = 8 * MT, S = SG_TMA_STAGES(R);
    constexpr u32 W_BYTES = R * 128, X_BYTES = TOKENS * 128, STAGE_BYTES = W_BYTES + X_BYTES;
    static_assert(W_BYTES % 1024 == 0 && X_BYTES % 1024 == 0, "every tile 1024-byte aligned");
    static_assert(TOKENS * (R + 4) * 4 <= S * STAGE_BYTES, "the epilogue fits the ring");
    extern __shared__ uint4 sg_ring[];  // [S][W: R rows, x: TOKENS rows][128 bytes], swizzled
    __shared__ __align__(8) u64 full[S];

    const u32 tile = blockIdx.x, split = blockIdx.y;
    const u32 k_begin = split * k_per_split, k_end = min(k, k_begin + k_per_split);
    const int num_stages = (int)((k_end - k_begin + SG_KC - 1) / SG_KC);
    const int tid = threadIdx.x, wg = tid / 128;
    // The swizzle's pattern repeats every 1024 bytes: the ring starts on such a boundary (the
    // launch asks for 1 KB more than the ring for this).
    const u32 ring = (smem_addr(sg_ring) + 1023) & ~1023u;
    // The two boxes of W rows a stage copies (plain: the tile's two halves; SiLU·mul: the tile's
    // gate rows and the matching up rows, d = n / 2 further).
    const int w_row0 = EPI == SG_EPI_GLU ? (int)(tile * (R / 2)) : (int)(tile * R);
    const int w_row1 = EPI == SG_EPI_GLU ? (int)(n / 2 + tile * (R / 2)) : (int)(tile * R + R / 2);

    auto copy_w = [&](int stage) {
        const u32 slot = ring + (stage % S) * STAGE_BYTES, bar = smem_addr(&full[stage % S]);
        const int kk = (int)(k_begin + stage * SG_KC);
        tma_load(slot, w_map, kk, w_row0, bar);
        tma_load(slot + W_BYTES / 2, w_map, kk, w_row1, bar);
    };
    auto copy_x = [&](int stage) {
        const u32 slot = ring + (stage % S) * STAGE_BYTES, bar = smem_addr(&full[stage % S]);
        tma_load(slot + W_BYTES, x_map, (int)(k_begin + stage * SG_KC), 0, bar);
    };

    if (tid == 0) {
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<u64>(w_map)) : "memory");
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<u64>(x_map)) : "memory");
#pragma unroll
        for (int s = 0; s < S; s++) mbar_init(smem_addr(&full[s]), 1);
        // The barriers' initialisation is seen by the TMA (another proxy) before its first copy.
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        for (int s = 0; s < S && s < num_stages; s++) {
            mbar_expect(smem_addr(&full[s]), STAGE_BYTES);
            copy_w(s);
        }
    }
    __syncthreads();  // the barriers are initialised before anyone waits on them
    wait_for_previous_kernel();
    allow_next_kernel();
    if (tid == 0) {
        for (int s = 0; s < S && s < num_stages; s++) copy_x(s);
    }

    float acc[MT][4];
#pragma unroll
    for (int tt = 0; tt < MT; tt++) acc[tt][0] = acc[tt][1] = acc[tt][2] = acc[tt][3] = 0.0f;

    // Each stage's wgmma group is waited for before its slot is copied again. (Keeping one
    // group in flight while the next is issued, wgmma.wait_group 1, measured the same on an
    // H200, 2026-11-30: the copies, not the multiplies, set the pace.)
    for (int i = 0; i < num_stages; i++) {
        const int slot = i % S;
        mbar_wait(smem_addr(&full[slot]), (u32)(i / S) & 1u);
        const u32 w_tile = ring + slot * STAGE_BYTES + wg * (64 * 128), x_tile = ring + slot * STAGE_BYTES + W_BYTES;
        wgmma_fence_acc<MT>(acc);
        wgmma_fence();
#pragma unroll
        for (int j = 0; j < SG_KC / 16; j++) {
            wgmma_step<MT>(acc, wgmma_desc(w_tile + 32 * j), wgmma_desc(x_tile + 32 * j));
        }
        wgmma_commit();
        wgmma_wait_all();
        wgmma_fence_acc<MT>(acc);
        __syncthreads();  // every warpgroup has read this slot: copy the stage S later into it
        if (tid == 0 && i + S < num_stages) {
            mbar_expect(smem_addr(&full[slot]), STAGE_BYTES);
            copy_w(i + S);
            copy_x(i + S);
        }
    }
    // Every copy issued has been waited for, so the ring is free for the epilogue's sums.
    float* sums = reinterpret_cast<float*>(reinterpret_cast<char*>(sg_ring) + (ring - smem_addr(sg_ring)));
    sg_finish_cluster<MT, EPI, R, PUSH>(out, sums, acc, m, n, push);
#else
    __trap();  // needs sm_90a: the Rust side launches it only on a GPU it was compiled for
#endif
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

// The TMA + wgmma main loop: 64 rows a block (one warpgroup) or 128 (two).
#define SKINNY_GEMM_TMA(MT, EPI, R, NAME)                                                           \
    extern "C" __global__ void __launch_bounds__(2 * R) NAME(                                       \
        __nv_bfloat16 *out, const __grid_constant__ TmaMap w_map,                                  \
        const __grid_constant__ TmaMap x_map, u32 m, u32 n, u32 k, u32 k_per_split) {              \
        skinny_gemm_tma<MT, EPI, R, false>(out, &w_map, &x_map, m, n, k, k_per_split, nullptr);     \
    }
SKINNY_GEMM_TMA(1, SG_EPI_PLAIN, 64, skinny_gemm_tma_t1)
SKINNY_GEMM_TMA(2, SG_EPI_PLAIN, 64, skinny_gemm_tma_t2)
SKINNY_GEMM_TMA(3, SG_EPI_PLAIN, 64, skinny_gemm_tma_t3)
SKINNY_GEMM_TMA(4, SG_EPI_PLAIN, 64, skinny_gemm_tma_t4)
SKINNY_GEMM_TMA(1, SG_EPI_GLU, 64, skinny_gemm_tma_glu_t1)
SKINNY_GEMM_TMA(2, SG_EPI_GLU, 64, skinny_gemm_tma_glu_t2)
SKINNY_GEMM_TMA(3, SG_EPI_GLU, 64, skinny_gemm_tma_glu_t3)
SKINNY_GEMM_TMA(4, SG_EPI_GLU, 64, skinny_gemm_tma_glu_t4)
SKINNY_GEMM_TMA(1, SG_EPI_PLAIN, 128, skinny_gemm_tma_r128_t1)
SKINNY_GEMM_TMA(2, SG_EPI_PLAIN, 128, skinny_gemm_tma_r128_t2)
SKINNY_GEMM_TMA(3, SG_EPI_PLAIN, 128, skinny_gemm_tma_r128_t3)
SKINNY_GEMM_TMA(4, SG_EPI_PLAIN, 128, skinny_gemm_tma_r128_t4)
SKINNY_GEMM_TMA(1, SG_EPI_GLU, 128, skinny_gemm_tma_glu_r128_t1)
SKINNY_GEMM_TMA(2, SG_EPI_GLU, 128, skinny_gemm_tma_glu_r128_t2)
SKINNY_GEMM_TMA(3, SG_EPI_GLU, 128, skinny_gemm_tma_glu_r128_t3)
SKINNY_GEMM_TMA(4, SG_EPI_GLU, 128, skinny_gemm_tma_glu_r128_t4)

// The plain projection that also pushes its output to the peers' all-reduce inboxes.
#define SKINNY_GEMM_TMA_PUSH(MT, R, NAME)                                                           \
    extern "C" __global__ void __launch_bounds__(2 * R) NAME(                                       \
        __nv_bfloat16 *out, const __grid_constant__ TmaMap w_map,                                  \
        const __grid_constant__ TmaMap x_map, u32 m, u32 n, u32 k, u32 k_per_split,                \
        const __grid_constant__ SgPush push) {                                                     \
        skinny_gemm_tma<MT, SG_EPI_PLAIN, R, true>(out, &w_map, &x_map, m, n, k, k_per_split, &push); \
    }
SKINNY_GEMM_TMA_PUSH(1, 64, skinny_gemm_tma_push_t1)
SKINNY_GEMM_TMA_PUSH(2, 64, skinny_gemm_tma_push_t2)
SKINNY_GEMM_TMA_PUSH(3, 64, skinny_gemm_tma_push_t3)
SKINNY_GEMM_TMA_PUSH(4, 64, skinny_gemm_tma_push_t4)
SKINNY_GEMM_TMA_PUSH(1, 128, skinny_gemm_tma_push_r128_t1)
SKINNY_GEMM_TMA_PUSH(2, 128, skinny_gemm_tma_push_r128_t2)
SKINNY_GEMM_TMA_PUSH(3, 128, skinny_gemm_tma_push_r128_t3)
SKINNY_GEMM_TMA_PUSH(4, 128, skinny_gemm_tma_push_r128_t4)
