// One-shot all-reduce over peer memory, for the small all-reduces of a tensor-parallel decode
// step (vLLM's custom all-reduce, in the push form of TensorRT-LLM's low-latency kernels): the
// twin of CpuCommunicator::all_reduce_sum, for 2-8 GPUs of one process that can reach each
// other's memory (NVLink; cuCtxEnablePeerAccess).
//
// Why not NCCL for these: at decode a step all-reduces [batch, hidden] (8 KB to 1 MB) twice per
// layer, and NCCL's ring needs 2(N-1) dependent hops, each a few µs of latency; the bytes take
// well under a µs on NVLink. Here every rank sends its whole tensor to every peer, and each
// sums what it received itself: more bytes (N-1 times the tensor instead of 2(N-1)/N), one hop.
//
// The push protocol: each rank *writes* its addend straight into every peer's inbox, and the
// data is its own flag. Rank r's inbox is [2, ranks, capacity] bf16, every word EMPTY (all bits
// set: two bf16 NaNs that no sender ever stores, see `sendable`) before the first call. Call c
// uses half c % 2; sender s writes its values into slot s of that half of each peer's inbox.
// The receiver polls its own inbox, in its own memory, until none of a vector's 32-bit words is
// EMPTY: a 32-bit store is never seen half done, so a word that is not EMPTY is the sender's
// (the 16-byte vector may arrive in pieces; each piece is checked). It adds the ranks in rank
// order (its own addend straight from `x`), so every rank gets the same bits, writes the sum,
// and sets the slots it read back to EMPTY.
//
// The send can also happen before this kernel: a row-parallel projection computed by
// skinny_gemm.cu's pushing epilogue (skinny_gemm_tma_push) writes each pair of its outputs,
// sendable, into the same slot of every peer's inbox as soon as the pair is summed, reading the
// call count from `counter[0]` (every block's count is the same between kernels). The
// receiving entry point (custom_all_reduce_receive_kernel) then skips step 1. The inbox words
// are the same either way, so the argument below holds for any mix of the two kinds of call.
// On two H200s, Llama-2-7B shape at batch 32, TP 2: 3.250, 3.219 → 3.168, 3.180 ms of device
// time a step (A B A B in one call, 2026-11-30; book/src/performance.md).
//
// What this saves against the first version (2026-11-29), which staged each rank's addend in
// its own memory, met the peers at a flag barrier (a system-scope fence, a flag store into each
// peer, a wait for theirs) and then read every peer's copy across NVLink: the staging copy, the
// fence, the flags and the read's round trip. What is left is one one-way trip of the data.
// On two H200s, Llama-2-7B shape at batch 32, TP 2: 3.649 → 3.464 ms of device time a step
// (book/src/performance.md).
//
// Why half c % 2 is free when call c writes it: a peer writes half c % 2 of this rank's inbox
// again at call c + 2. It launches call c + 2 only after its call c + 1 finished, which needed
// this rank's values of call c + 1, which this rank sends only once its call c finished (one
// stream), resets included; and a finished kernel's writes are visible to every later one. No
// counter of calls is needed across ranks beyond the one each block keeps: c counts the calls,
// in `counter[b]` (device memory, not an argument, so that a CUDA graph replaying the launch
// still counts); every block handles the same vectors at every call (the grid is always
// CAR_MAX_BLOCKS blocks), so block b's count is the count of every vector it touches.
//
// Every thread of every rank waits for the peers' values of its own vectors: the grid is kept to
// at most one block per SM (CAR_MAX_BLOCKS, well under the SM count), so all blocks of a launch
// are resident and no waiting block holds back a block that a peer waits for. A peer that never
// sends (its thread failed before its launch) must not keep this GPU spinning for ever: past
// `spin_limit_ns` of waiting the kernel traps, which fails this rank's stream with a launch
// error. (The engine's host gives up at its collective timeout, shorter than the limit it
// passes here, and reports that; the trap only frees the GPU.)

// CAR_MAX_RANKS, CAR_EMPTY, PeerPtrs and sendable() are in common.cuh: skinny_gemm.cu's
// pushing epilogue sends into the same inboxes.
#define CAR_THREADS 512
#define CAR_MAX_BLOCKS 32  // the grid (<= one block per SM)

__device__ __forceinline__ uint4 sendable4(uint4 v) {
    return make_uint4(sendable(v.x), sendable(v.y), sendable(v.z), sendable(v.w));
}

__device__ __forceinline__ bool arrived(uint4 v) {
    return v.x != CAR_EMPTY && v.y != CAR_EMPTY && v.z != CAR_EMPTY && v.w != CAR_EMPTY;
}

// Volatile: issued where written, never merged or cached in L1 (a poll must see the peer's
// store, and a send must leave now, not at the kernel's end).
__device__ __forceinline__ void store_volatile4(uint4* p, uint4 v) {
    asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y),
                 "r"(v.z), "r"(v.w)
                 : "memory");
}

__device__ __forceinline__ uint4 load_volatile4(const uint4* p) {
    uint4 v;
    asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p)
                 : "memory");
    return v;
}

// SEND: this kernel sends the addend itself (step 1 below). Without it, the kernel before it
// (skinny_gemm_tma_push) has already written the addend into every peer's inbox, the same
// words at the same places, as it computed them; this kernel only receives.
template <bool SEND>
__device__ __forceinline__ void custom_all_reduce(
    __nv_bfloat16* __restrict__ out,      // [n]: the sum, on every rank
    const __nv_bfloat16* __restrict__ x,  // [n]: this rank's addend
    const PeerPtrs& peers,
    u32* __restrict__ counter,            // [CAR_MAX_BLOCKS]: calls so far, per block (this rank's)
    u32 rank, u32 ranks, u32 n,           // n % 8 == 0, n <= capacity
    u32 capacity,                         // values in one inbox slot, a multiple of 8
    u64 spin_limit_ns) {                  // longest wait for a peer before the kernel traps
    // Not `allow_next_kernel()` here, as other kernels do: where ranks share a GPU, the next
    // kernel's blocks, started early, would wait in griddepcontrol.wait on SMs that a peer's
    // all-reduce needs to start, while this one waits for that peer. (With a GPU per rank,
    // letting it start early measured no faster: 3.475 against 3.464 ms a step, above.)
    // The call count is read before the wait, under the previous kernel's tail: only this
    // rank's previous all-reduce wrote it, and that one had finished (writes visible) before
    // the kernel after it passed its wait; a kernel lets the next one start only after its own
    // wait, so it had finished before this one launched.
    __shared__ u32 s_call;
    if (threadIdx.x == 0) s_call = counter[blockIdx.x] + 1;
    wait_for_previous_kernel();
    __syncthreads();
    const u32 c = s_call;
    const u32 vectors = n / 8, stride = gridDim.x * CAR_THREADS;
    const size_t slot = capacity / 8;                   // vectors per slot
    const size_t half = (size_t)(c % 2) * ranks * slot;  // this call's half, in vectors
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    // 1. Send: this rank's values into slot `rank` of every peer's inbox.
    for (u32 i = blockIdx.x * CAR_THREADS + threadIdx.x; SEND && i < vectors; i += stride) {
        const uint4 v = sendable4(xv[i]);
        for (u32 r = 0; r < ranks; r++) {
            if (r != rank) store_volatile4(peers.inbox[r] + half + rank * slot + i, v);
        }
    }
    // 2. Receive: each peer's vector from this rank's inbox, added in rank order; then reset.
    uint4* mine = peers.inbox[rank] + half;
    const u64 start = global_ns();
    for (u32 i = blockIdx.x * CAR_THREADS + threadIdx.x; i < vectors; i += stride) {
        f32x8 sum;
        for (u32 r = 0; r < ranks; r++) {
            uint4 v;
            if (r == rank) {
                v = sendable4(xv[i]);  // what the peers received from this rank, bit for bit
            } else {
                while (!arrived(v = load_volatile4(mine + r * slot + i))) {
                    if (global_ns() - start > spin_limit_ns) __trap();
                }
            }
            const f32x8 f = unpack8(v);
            if (r == 0) {
                sum = f;
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++) sum.v[j] += f.v[j];
            }
        }
        reinterpret_cast<uint4*>(out)[i] = pack8(sum);  // after this thread's reads of x[i]
        const uint4 empty = make_uint4(CAR_EMPTY, CAR_EMPTY, CAR_EMPTY, CAR_EMPTY);
        for (u32 r = 0; r < ranks; r++) {
            if (r != rank) mine[r * slot + i] = empty;
        }
    }
    if (threadIdx.x == 0) counter[blockIdx.x] = c;
    allow_next_kernel();
}

#define CUSTOM_ALL_REDUCE(SEND, NAME)                                                              \
    extern "C" __global__ void __launch_bounds__(CAR_THREADS)                                     \
        NAME(__nv_bfloat16* __restrict__ out, const __nv_bfloat16* __restrict__ x,               \
             const PeerPtrs peers, u32* __restrict__ counter, u32 rank, u32 ranks, u32 n,        \
             u32 capacity, u64 spin_limit_ns) {                                                  \
        custom_all_reduce<SEND>(out, x, peers, counter, rank, ranks, n, capacity, spin_limit_ns); \
    }
CUSTOM_ALL_REDUCE(true, custom_all_reduce_kernel)
CUSTOM_ALL_REDUCE(false, custom_all_reduce_receive_kernel)
