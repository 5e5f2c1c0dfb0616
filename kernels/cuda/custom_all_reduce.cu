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

// Vector i of every rank's staging buffer, added in rank order in f32 (so every rank adds in the
// same order and gets the same bits). __ldcv: fetched anew, never from a cache line of an
// earlier call.
__device__ __forceinline__ f32x8 rank_sum(const PeerPtrs& peers, u32 ranks, size_t i) {
    f32x8 sum = unpack8(__ldcv(peers.data[0] + i));
    for (u32 r = 1; r < ranks; r++) {
        const f32x8 v = unpack8(__ldcv(peers.data[r] + i));
#pragma unroll
        for (int j = 0; j < 8; j++) sum.v[j] += v.v[j];
    }
    return sum;
}

// Call c of block b: its number (the block's counter + 1) and the staging half it uses.
__device__ __forceinline__ u32 next_call(const u32* __restrict__ counter) {
    __shared__ u32 s_call;
    if (threadIdx.x == 0) s_call = counter[blockIdx.x] + 1;
    __syncthreads();
    return s_call;
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
    const u32 c = next_call(counter);
    const u32 vectors = n / 8, stride = gridDim.x * CAR_THREADS;
    const size_t half = (size_t)(c % 2) * (capacity / 8);  // this call's half, in vectors
    uint4* staged = const_cast<uint4*>(peers.data[rank]) + half;
    for (u32 i = blockIdx.x * CAR_THREADS + threadIdx.x; i < vectors; i += stride)
        staged[i] = reinterpret_cast<const uint4*>(x)[i];
    peer_barrier(peers, rank, ranks, c, spin_limit_ns);
    for (u32 i = blockIdx.x * CAR_THREADS + threadIdx.x; i < vectors; i += stride)
        reinterpret_cast<uint4*>(out)[i] = pack8(rank_sum(peers, ranks, half + i));
    if (threadIdx.x == 0) counter[blockIdx.x] = c;
    allow_next_kernel();
}

// The all-reduce with what follows it in a decoder layer (vLLM fuses the same pair): the sum
// joins the residual stream and is normalized, as fused_add_rms_norm_kernel (rms_norm.cu) does
// after the plain all-reduce:
//     s = bf16(sum over ranks of x);  residual = bf16(residual + s);
//     x = bf16(weight * bf16(residual * inv_rms)).
// One launch instead of two, and the sum never makes the round trip through memory between them.
//
// The norm needs whole rows, so here block b owns rows b, b + 32, ... (not a slice of vectors):
// it stages those rows, meets block b of each peer at the barrier as above, and normalizes them.
// Inside the block, a group of T threads takes one row, T = what rms_norm.rs launches for the
// row (norm_threads: 4 vectors per thread, whole warps), thread i vectors i, i + T, i + 2T,
// i + 3T; the sum of squares goes through the same butterfly and the same warp order as
// block_sum over T threads, so every value is fused_add_rms_norm's bit for bit. 512 / T groups
// take rows side by side. Needs cols % 8 == 0, T <= 512 (cols <= 16384) and 16-byte aligned
// rows; the Rust side checks and otherwise makes the two calls.

// Threads rms_norm.rs gives a row of `chunks` 16-byte vectors: 4 vectors each, whole warps.
__device__ __forceinline__ u32 car_norm_threads(u32 chunks) {
    const u32 per_thread = (chunks + 3) / 4;
    return min(max((per_thread + 31) / 32 * 32, 32u), 1024u);
}

extern "C" __global__ void __launch_bounds__(CAR_THREADS) custom_all_reduce_add_rms_norm_kernel(
    __nv_bfloat16* __restrict__ x,             // [rows, cols]; in: this rank's addend, out: normed
    __nv_bfloat16* __restrict__ residual,      // [rows, cols]; in: stream, out: stream + sum
    const __nv_bfloat16* __restrict__ weight,  // [cols]
    const PeerPtrs peers,
    u32* __restrict__ counter,                 // [CAR_MAX_BLOCKS]: calls so far, per block
    u32 rank, u32 ranks, u32 rows, u32 cols,   // cols % 8 == 0, rows * cols <= capacity
    u32 capacity, float eps, u64 spin_limit_ns) {
    constexpr int CACHED = 4;
    const u32 chunks = cols / 8, T = car_norm_threads(chunks), groups = CAR_THREADS / T;
    const u32 group = threadIdx.x / T, t = threadIdx.x % T;
    const bool in_group = group < groups;  // threads past the last whole group only stage
    // This block's rows: b, b + 32, ...; group g takes the k-th of them for k = g, g + groups, ...
    const u32 my_rows = rows > blockIdx.x ? (rows - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
    const uint4* wv = reinterpret_cast<const uint4*>(weight);
    uint4 w[CACHED];  // the weight never depends on the previous kernel: loaded before the wait
#pragma unroll
    for (int j = 0; j < CACHED; j++) {
        const u32 i = t + j * T;
        if (in_group && i < chunks) w[j] = wv[i];
    }
    wait_for_previous_kernel();  // and no early allow_next_kernel(): see the kernel above
    const u32 c = next_call(counter);
    const size_t half = (size_t)(c % 2) * (capacity / 8);
    uint4* staged = const_cast<uint4*>(peers.data[rank]) + half;
    uint4* xv = reinterpret_cast<uint4*>(x);
    for (u32 k = 0; k < my_rows; k++) {
        const size_t row = (size_t)(blockIdx.x + k * gridDim.x) * chunks;
        for (u32 i = threadIdx.x; i < chunks; i += CAR_THREADS) staged[row + i] = xv[row + i];
    }
    peer_barrier(peers, rank, ranks, c, spin_limit_ns);

    __shared__ float scratch[CAR_THREADS / 32];  // one partial sum per warp
    uint4* rv = reinterpret_cast<uint4*>(residual);
    for (u32 k0 = 0; k0 < my_rows; k0 += groups) {  // the same trip count in every thread
        const u32 k = k0 + group;
        const bool active = in_group && k < my_rows;
        const size_t row = (size_t)(blockIdx.x + k * gridDim.x) * chunks;
        uint4 r[CACHED];
        float sum_sq = 0.0f;
        if (active) {
            uint4 s[CACHED], res[CACHED];
#pragma unroll
            for (int j = 0; j < CACHED; j++) {
                const u32 i = t + j * T;
                if (i < chunks) {
                    s[j] = pack8(rank_sum(peers, ranks, half + row + i));  // the all-reduce's bf16
                    res[j] = rv[row + i];
                }
            }
#pragma unroll
            for (int j = 0; j < CACHED; j++) {
                const u32 i = t + j * T;
                if (i < chunks) {
                    f32x8 a = unpack8(s[j]), v = unpack8(res[j]);
                    for (int e = 0; e < 8; e++) v.v[e] += a.v[e];
                    r[j] = pack8(v);
                    rv[row + i] = r[j];
                    v = unpack8(r[j]);
                    for (int e = 0; e < 8; e++) sum_sq += v.v[e] * v.v[e];
                }
            }
        }
        // block_sum over this group's T threads: the butterfly, then its warps in order.
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, offset);
        __syncthreads();  // scratch may still be read by the previous trip
        if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = sum_sq;
        __syncthreads();
        if (!active) continue;
        float total = 0.0f;
        for (u32 wi = 0; wi < T / 32; wi++) total += scratch[group * (T / 32) + wi];
        const float inv_rms = rsqrtf(total / cols + eps);
#pragma unroll
        for (int j = 0; j < CACHED; j++) {
            const u32 i = t + j * T;
            if (i < chunks) {
                f32x8 v = unpack8(r[j]), g = unpack8(w[j]);
                for (int e = 0; e < 8; e++) v.v[e] = g.v[e] * __bfloat162float(__float2bfloat16(v.v[e] * inv_rms));
                xv[row + i] = pack8(v);
            }
        }
    }
    if (threadIdx.x == 0) counter[blockIdx.x] = c;
    allow_next_kernel();
}
