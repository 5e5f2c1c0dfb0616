// Splitting a fused projection's output into its parts: x = [q | k | v] per row, as the fused
// qkv GEMM writes it, becomes three contiguous matrices, the layout rotary, the cache write and
// attention read. The twin of CpuBackend::split_columns, for up to three parts (w2 may be 0).
// One block per row; rows whose widths are multiples of 8 move as 16-byte vectors.

extern "C" __global__ void split_columns_kernel(
    __nv_bfloat16* __restrict__ out0,     // [num_rows, w0]
    __nv_bfloat16* __restrict__ out1,     // [num_rows, w1]
    __nv_bfloat16* __restrict__ out2,     // [num_rows, w2]
    const __nv_bfloat16* __restrict__ x,  // [num_rows, w0 + w1 + w2]
    u32 w0, u32 w1, u32 w2) {
    PDL_ENTRY();
    const size_t r = blockIdx.x;
    const u32 width = w0 + w1 + w2;
    const __nv_bfloat16* row = x + r * width;
    const bool vec = (w0 | w1 | w2) % 8 == 0 &&
        ((reinterpret_cast<size_t>(x) | reinterpret_cast<size_t>(out0) |
          reinterpret_cast<size_t>(out1) | reinterpret_cast<size_t>(out2)) & 15) == 0;
    if (vec) {
        const uint4* src = reinterpret_cast<const uint4*>(row);
        for (u32 i = threadIdx.x; i < width / 8; i += blockDim.x) {
            const u32 c = i * 8;
            const uint4 v = src[i];
            if (c < w0) reinterpret_cast<uint4*>(out0 + r * w0)[c / 8] = v;
            else if (c < w0 + w1) reinterpret_cast<uint4*>(out1 + r * w1)[(c - w0) / 8] = v;
            else reinterpret_cast<uint4*>(out2 + r * w2)[(c - w0 - w1) / 8] = v;
        }
    } else {
        for (u32 c = threadIdx.x; c < width; c += blockDim.x) {
            const __nv_bfloat16 v = row[c];
            if (c < w0) out0[r * w0 + c] = v;
            else if (c < w0 + w1) out1[r * w1 + c - w0] = v;
            else out2[r * w2 + c - w0 - w1] = v;
        }
    }
}

// The other direction, for tensor parallelism: a vocabulary-parallel LM head leaves each rank
// the logits of its slice of the vocabulary, [num_rows, w]; NCCL's all-gather puts the ranks'
// buffers one after another, [ranks, num_rows, w]; sampling wants every row whole, the ranks'
// slices side by side, [num_rows, cols]. cols <= ranks · w: the last rank's slice may be padded
// (a vocabulary that does not divide by the ranks), and its padding columns are dropped.
// The twin of the rearrangement in CudaBackend::host_all_gather_columns. One block per row.
extern "C" __global__ void gather_rank_columns_kernel(
    __nv_bfloat16* __restrict__ out,      // [num_rows, cols]
    const __nv_bfloat16* __restrict__ x,  // [ranks, num_rows, w]
    u32 num_rows, u32 w, u32 cols) {
    PDL_ENTRY();
    const size_t r = blockIdx.x;
    const bool vec = (w | cols) % 8 == 0 &&
        ((reinterpret_cast<size_t>(x) | reinterpret_cast<size_t>(out)) & 15) == 0;
    if (vec) {
        // Eight columns never straddle two ranks' slices when w is a multiple of 8.
        for (u32 i = threadIdx.x; i < cols / 8; i += blockDim.x) {
            const u32 c = i * 8, rank = c / w;
            const uint4* src = reinterpret_cast<const uint4*>(x + ((size_t)rank * num_rows + r) * w);
            reinterpret_cast<uint4*>(out + r * cols)[i] = src[(c - rank * w) / 8];
        }
    } else {
        for (u32 c = threadIdx.x; c < cols; c += blockDim.x) {
            const u32 rank = c / w;
            out[r * cols + c] = x[((size_t)rank * num_rows + r) * w + c - rank * w];
        }
    }
}
