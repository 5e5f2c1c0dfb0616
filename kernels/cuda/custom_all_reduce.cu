// One-shot all-reduce over peer memory, for the small all-reduces of a tensor-parallel decode
// step (vLLM's custom all-reduce): the twin of CpuCommunicator::all_reduce_sum, for 2-8 GPUs
// of one process that can read each other's memory (NVLink; cuCtxEnablePeerAccess).
//
// Why not NCCL for these: at decode a step all-reduces [batch, hidden] (8 KB to 1 MB) twice per
// layer, and NCCL's ring needs 2(N-1) dependent hops, each a few µs of latency; the bytes take
// well under a µs on NVLink. Here every rank reads every peer's whole tensor straight from the
// peer's memory and sums it itself: more bytes (N-1 times the tensor instead of 2(N-1)/N), one
// hop.
//
// Each rank owns a staging buffer of two halves and a flag array, and knows every rank's
// (PeerPtrs: the same table on every rank, this rank's own entries included). Call c uses half
// c % 2. Block b of every rank handles the same slice of the tensor (16-byte vectors b·T + t,
// stepping by the grid), so block b only ever waits for block b of the peers:
//   1. stage: copy its slice of this rank's input into this rank's staging half;
//   2. barrier: make the copy visible to the system, tell each peer "block b staged call c"
//      (a store into the peer's flags), wait until every peer has told this rank the same;
//   3. sum: read the slice from every rank's staging half, in rank order (so every rank adds
//      in the same order and gets the same bits), add in f32, write bf16.
// No barrier at the end. A rank writes half c % 2 again at call c + 2, and that launch starts
// only once its call c + 1 has finished (one stream), every block of which passed the barrier
// of call c + 1 with the same block of each peer, which that block reaches only after its reads
// of call c. So no peer still reads the half being overwritten; the grid is always CAR_MAX_BLOCKS
// blocks, so "every block" covers every slice of every size of call. (A first version ended
// with a second barrier instead: one more round of system fences and flag waits per call.)
// c counts the calls: block b keeps it in `counter[b]` (device memory, not an argument, so that a
// CUDA graph replaying the launch still counts). Flags only grow, so a stale flag of an earlier
// call can never pass a wait.
//
// Memory model: the staging writes are ordered before the flag store by a system-scope fence
// (every thread fences its own writes, then the block synchronizes, then one thread per peer
// stores with release semantics); a waiter reads its flags with acquire semantics at system
// scope, which makes the peer's staging writes visible to its later loads.
//
// Every block of every rank spins until the same block of each peer arrives: the grid is kept to
// at most one block per SM (CAR_MAX_BLOCKS, well under the SM count), so all blocks of a launch
// are resident. A peer that never arrives (its thread failed before its launch) must not keep
// this GPU spinning for ever: past `spin_limit_ns` of waiting the kernel traps, which fails this
// rank's stream with a launch error. (The engine's host gives up at its collective timeout,
// shorter than the limit it passes here, and reports that; the trap only frees the GPU.)

#define CAR_MAX_RANKS 8
#define CAR_THREADS 512
#define CAR_MAX_BLOCKS 32  // the grid (<= one block per SM), and the flags' block dimension

struct PeerPtrs {
    const uint4* data[CAR_MAX_RANKS];  // rank r's staging buffer: [2, capacity] bf16, as 16-byte vectors
    u32* flags[CAR_MAX_RANKS];         // rank r's flags: [CAR_MAX_BLOCKS][ranks]
};

__device__ __forceinline__ void store_release(u32* p, u32 v) {
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ u32 load_acquire(const u32* p) {
    u32 v;
    asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// The barrier of call c for block b: this block's writes made visible, every peer told, every
// peer's word awaited.
__device__ __forceinline__ u64 global_ns() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ void peer_barrier(const PeerPtrs& peers, u32 rank, u32 ranks, u32 c,
                                             u64 spin_limit_ns) {
    __threadfence_system();
    __syncthreads();
    const u32 t = threadIdx.x;
    if (t < ranks) {
        // Flag [b][rank] of rank t: "rank `rank` has staged call c in block b". The layout does
        // not depend on the call's size: block b's flags are block b's, and only block b's
        // counter (the same on every rank) writes them.
        const size_t slot = (size_t)blockIdx.x * ranks;
        store_release(peers.flags[t] + slot + rank, c);
        const u32* mine = peers.flags[rank] + slot + t;
        const u64 start = global_ns();
        while (load_acquire(mine) < c) {
            if (global_ns() - start > spin_limit_ns) __trap();
        }
    }
    __syncthreads();
}

extern "C" __global__ void __launch_bounds__(CAR_THREADS) custom_all_reduce_kernel(
    __nv_bfloat16* __restrict__ out,      // [n]: the sum, on every rank
    const __nv_bfloat16* __restrict__ x,  // [n]: this rank's addend
    const PeerPtrs peers,
    u32* __restrict__ counter,            // [CAR_MAX_BLOCKS]: calls so far, per block (this rank's)
    u32 rank, u32 ranks, u32 n,           // n % 8 == 0, n <= capacity
    u32 capacity,                         // values in one staging half, a multiple of 8
    u64 spin_limit_ns) {                  // longest wait for a peer before the kernel traps
    // Not `allow_next_kernel()` here, as other kernels do: where ranks share a GPU, the next
    // kernel's blocks, started early, would wait in griddepcontrol.wait on SMs that a peer's
    // all-reduce needs to start, while this one spins for that peer.
    wait_for_previous_kernel();
    __shared__ u32 s_call;
    if (threadIdx.x == 0) s_call = counter[blockIdx.x] + 1;
    __syncthreads();
    const u32 c = s_call;
    const u32 vectors = n / 8, stride = gridDim.x * CAR_THREADS;
    const size_t half = (size_t)(c % 2) * (capacity / 8);  // this call's half, in vectors
    uint4* staged = const_cast<uint4*>(peers.data[rank]) + half;
    for (u32 i = blockIdx.x * CAR_THREADS + threadIdx.x; i < vectors; i += stride)
        staged[i] = reinterpret_cast<const uint4*>(x)[i];
    peer_barrier(peers, rank, ranks, c, spin_limit_ns);
    for (u32 i = blockIdx.x * CAR_THREADS + threadIdx.x; i < vectors; i += stride) {
        // __ldcv: fetched anew, never from a cache line of an earlier call.
        f32x8 sum = unpack8(__ldcv(peers.data[0] + half + i));
        for (u32 r = 1; r < ranks; r++) {
            const f32x8 v = unpack8(__ldcv(peers.data[r] + half + i));
#pragma unroll
            for (int j = 0; j < 8; j++) sum.v[j] += v.v[j];
        }
        reinterpret_cast<uint4*>(out)[i] = pack8(sum);
    }
    if (threadIdx.x == 0) counter[blockIdx.x] = c;
    allow_next_kernel();
}
