// Shared by every kernel file: the Rust side compiles each `.cu` file as this header followed by
// the file (NVRTC sees one source; it has no access to our source folder at run time).
//
// bf16 is the storage type of activations, weights and the KV cache; arithmetic is f32.
// A `uint4` moves 16 bytes = 8 bf16 in one load or store: the widest access a thread can issue,
// and the way to keep HBM busy with fewer instructions.
#include <cuda_bf16.h>

typedef unsigned int u32;
typedef unsigned long long u64;

// NVRTC has no <cmath>: spell the special values out.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#define QUIET_NAN __int_as_float(0x7fc00000)

// Eight bf16 values unpacked to f32.
struct f32x8 {
    float v[8];
};

__device__ __forceinline__ f32x8 unpack8(uint4 raw) {
    f32x8 out;
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(pairs[i]);
        out.v[2 * i] = f.x;
        out.v[2 * i + 1] = f.y;
    }
    return out;
}

__device__ __forceinline__ uint4 pack8(const f32x8& x) {
    uint4 raw;
    __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        pairs[i] = __floats2bfloat162_rn(x.v[2 * i], x.v[2 * i + 1]);
    }
    return raw;
}

// Sum over the block; every thread gets the result. `scratch` holds one float per warp.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int num_warps = (blockDim.x + 31) / 32;
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < num_warps; w++) total += scratch[w];
    return total;
}

// SiLU, x·sigmoid(x): SwiGLU's activation (silu_and_mul.cu, and gemv.cu's fused epilogue).
__device__ __forceinline__ float silu(float x) { return x / (1.0f + __expf(-x)); }

// Programmatic dependent launch (sm_90). A decode step is hundreds of kernels of a few
// microseconds each, and between two of them the GPU drains the first grid before it starts
// the second. Launched with the PDL attribute (kernels/src/launch.rs), a kernel's blocks may
// start while the previous kernel still runs; each kernel therefore
//   1. may prepare what does not depend on the previous kernel (a GEMV loads its weights),
//   2. waits for the previous grid to finish and its writes to be visible: `griddepcontrol.wait`
//      (a no-op when launched without the attribute), before reading any activation,
//   3. lets the next kernel start early: `griddepcontrol.launch_dependents`.
// Every kernel calls (2) before it reads or writes anything another kernel touches, so the
// order of reads and writes is the stream's order, as without PDL.
__device__ __forceinline__ void wait_for_previous_kernel() {
    asm volatile("griddepcontrol.wait;" ::: "memory");
}
__device__ __forceinline__ void allow_next_kernel() {
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
// Steps 2 and 3, for kernels with nothing to prepare.
#define PDL_ENTRY()                 \
    do {                            \
        wait_for_previous_kernel(); \
        allow_next_kernel();        \
    } while (0)

// Peer inboxes of the one-shot all-reduce (custom_all_reduce.cu has the protocol): rank r's
// inbox is [2 halves, ranks, capacity] bf16 in r's memory, every 32-bit word EMPTY until a
// sender writes it. Here because a row-parallel projection (skinny_gemm.cu) can push its
// output into the peers' inboxes itself, leaving the all-reduce only the receiving half.
#define CAR_MAX_RANKS 8
#define CAR_EMPTY 0xffffffffu

struct PeerPtrs {
    uint4* inbox[CAR_MAX_RANKS];  // rank r's inbox, as 16-byte vectors
};

// A word of two bf16 values as sent: never EMPTY. Only two NaNs with every bit set make EMPTY;
// they are sent as two canonical NaNs (0x7fc0), NaNs still.
__device__ __forceinline__ u32 sendable(u32 w) { return w == CAR_EMPTY ? 0x7fc07fc0u : w; }

// A volatile store is issued where it is written, not merged or held back to the kernel's end:
// a receiver polls for it.
__device__ __forceinline__ void store_volatile_u32(u32* p, u32 v) {
    asm volatile("st.volatile.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// Thread block clusters (sm_90): the blocks of a cluster run at once on neighbouring SMs and
// may read each other's shared memory. The barrier: every thread of every block of the cluster
// arrives (release: its writes, shared memory included, become visible to the cluster), then
// waits for the others (acquire). Split in two where a block has work between the halves.
__device__ __forceinline__ void cluster_arrive() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
    asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_sync() {
    cluster_arrive();
    cluster_wait();
}
// This block's rank in its cluster, and the cluster's blocks.
__device__ __forceinline__ u32 cluster_rank() {
    u32 r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
__device__ __forceinline__ u32 cluster_blocks() {
    u32 n;
    asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(n));
    return n;
}
// The shared address `addr` of this block, as the same offset in block `rank` of the cluster.
__device__ __forceinline__ u32 cluster_address(u32 addr, u32 rank) {
    u32 remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(addr), "r"(rank));
    return remote;
}
// The f32 at shared address `addr` of block `rank` of this cluster (the same offset as ours).
__device__ __forceinline__ float ld_cluster(u32 addr, u32 rank) {
    float v;
    asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(cluster_address(addr, rank)) : "memory");
    return v;
}
// The 16 bytes at shared address `addr` (16-byte aligned) of block `rank` of this cluster.
__device__ __forceinline__ uint4 ld_cluster_v4(u32 addr, u32 rank) {
    uint4 v;
    asm volatile("ld.shared::cluster.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(cluster_address(addr, rank))
                 : "memory");
    return v;
}
