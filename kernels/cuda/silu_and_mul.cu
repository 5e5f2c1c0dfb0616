// SwiGLU's activation, the CUDA twin of engine/src/ops/activation.rs:
// out[t, i] = silu(x[t, i]) * x[t, d + i], computed in f32 and rounded once (as vLLM does;
// transformers rounds silu's output to bf16 before the product, a difference below bf16 noise).
// blockIdx.x is the token, blockIdx.y a slice of its row (kernels/src/lib.rs's row_tiles_launch:
// a decode batch has few tokens, and one block per token would leave most SMs idle); rows that
// are a multiple of 8 wide move as 16-byte vectors.

extern "C" __global__ void silu_and_mul_kernel(
    __nv_bfloat16* __restrict__ out,      // [num_tokens, d]
    const __nv_bfloat16* __restrict__ x,  // [num_tokens, 2 * d]: gate then up
    u32 d) {
    PDL_ENTRY();
    const size_t t = blockIdx.x;
    const __nv_bfloat16* gate = x + t * 2 * d;
    const __nv_bfloat16* up = gate + d;
    __nv_bfloat16* o = out + t * d;
    const u32 first = blockIdx.y * blockDim.x + threadIdx.x, step = gridDim.y * blockDim.x;
    const bool vec = d % 8 == 0 &&
        ((reinterpret_cast<size_t>(x) | reinterpret_cast<size_t>(out)) & 15) == 0;
    if (vec) {
        for (u32 i = first; i < d / 8; i += step) {
            f32x8 g = unpack8(reinterpret_cast<const uint4*>(gate)[i]);
            const f32x8 u = unpack8(reinterpret_cast<const uint4*>(up)[i]);
            for (int k = 0; k < 8; k++) g.v[k] = silu(g.v[k]) * u.v[k];
            reinterpret_cast<uint4*>(o)[i] = pack8(g);
        }
    } else {
        for (u32 i = first; i < d; i += step) {
            o[i] = __float2bfloat16(silu(__bfloat162float(gate[i])) * __bfloat162float(up[i]));
        }
    }
}
