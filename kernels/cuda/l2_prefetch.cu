// Asks the L2 cache for a weight that a later kernel of the step will stream, while the kernels
// in between leave the memory bus idle. No CPU twin: it computes nothing and writes nothing.
//
// Why. At batch 1 a decoder layer alternates between kernels that stream weights at close to
// the memory's bandwidth (gate/up and down: 67 and 34 MB on Llama-3.2-1B) and kernels that are
// chains of dependent round trips and read little (the qkv projection's norm and epilogue,
// attention and its reduce, o_proj). During the second kind the bus is mostly idle. Launched
// before attention, this kernel has the L2 fetch the first part of the layer's gate/up weight
// in that idle time, so that the gate/up GEMV then reads that part from L2 instead of HBM.
//
// How. `cp.async.bulk.prefetch.L2` (sm_90) asks for up to 64 KiB per instruction and returns at
// once: a few threads issue the whole request and the grid ends. The buffer is `parts` equal
// parts of `part_bytes` (gate rows then up rows: 2 parts), and the first `bytes` of each part
// are asked for, so that the GEMV's first blocks, which read gate row j with up row j, find
// both in L2.
//
// Programmatic dependent launch: the requests go out before `griddepcontrol.wait` and the next
// kernel may launch at once, but the grid still waits for the previous kernel before it ends.
// It must: the next kernel's wait is for this grid only, so a grid that ended early would let
// attention read q, k and v before the projection that writes them had finished.

#define L2_PREFETCH_CHUNK 65536u  // bytes per request

extern "C" __global__ void l2_prefetch_kernel(
    const char* __restrict__ p,  // [parts, part_bytes]: the weight, as bytes
    unsigned long long part_bytes, u32 parts,
    unsigned long long bytes) {  // of each part to ask for: a multiple of 16, <= part_bytes
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const unsigned long long per_part = (bytes + L2_PREFETCH_CHUNK - 1) / L2_PREFETCH_CHUNK;
    const unsigned long long requests = per_part * parts;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < requests;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long part = i / per_part, at = (i % per_part) * L2_PREFETCH_CHUNK;
        const u32 size = (u32)min((unsigned long long)L2_PREFETCH_CHUNK, bytes - at);
        const char* src = p + part * part_bytes + at;
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(src), "r"(size) : "memory");
    }
#endif
    allow_next_kernel();
    wait_for_previous_kernel();
}
