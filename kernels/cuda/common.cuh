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

// The GPU's nanosecond clock (%globaltimer), the same on every SM.
__device__ __forceinline__ u64 global_ns() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

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
//
// With -DLAB_KERNEL_TIMELINE (kernels/src/kernel_timeline.rs; the kernels are built with it
// only when asked, so the usual ones carry nothing of it) the wait also records, for each
// block, when its first thread arrived at the wait and when the wait let it go, on the GPU's
// nanosecond clock: inside a CUDA graph that shows when each kernel really started and ended
// (no profiler on the GPU machine shows kernels in place), and how early the next one's blocks
// were resident and had issued their weight loads.
#ifdef LAB_KERNEL_TIMELINE
// Where the records go; each module has its own copy of this variable, which the host sets.
struct TimelineSink {
    u64* records;  // [capacity, 4]: grid id, arrival ns, release ns, (block << 32) | (file << 16) | SM
    u32* count;    // records claimed so far (past capacity: dropped)
    u32 capacity;
};
__device__ TimelineSink lab_timeline;
#endif

__device__ __forceinline__ void wait_for_previous_kernel() {
#ifdef LAB_KERNEL_TIMELINE
    // The slot is claimed before the wait, so that its round trip to L2 overlaps the wait
    // instead of delaying the block after it; after the wait only stores, which do not stall.
    const bool first = threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
    const TimelineSink sink = lab_timeline;
    const u64 arrived = global_ns();
    const u32 slot = first && sink.records ? atomicAdd(sink.count, 1u) : 0xffffffffu;
#endif
    asm volatile("griddepcontrol.wait;" ::: "memory");
#ifdef LAB_KERNEL_TIMELINE
    if (slot < sink.capacity) {
        const u64 released = global_ns();
        u64 grid, sm;
        asm volatile("mov.u64 %0, %%gridid;" : "=l"(grid));
        asm volatile("{ .reg .u32 r; mov.u32 r, %%smid; cvt.u64.u32 %0, r; }" : "=l"(sm));
        const u64 block = blockIdx.x + (u64)gridDim.x * (blockIdx.y + (u64)gridDim.y * blockIdx.z);
        u64* r = sink.records + 4 * (u64)slot;
        r[0] = grid;
        r[1] = arrived;
        r[2] = released;
        r[3] = (block << 32) | ((u64)LAB_KERNEL_FILE << 16) | sm;
    }
#endif
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
