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
