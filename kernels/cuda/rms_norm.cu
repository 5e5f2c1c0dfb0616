// RMSNorm, the CUDA twin of engine/src/ops/rms_norm.rs.
//
// One block per token row. Pass 1 sums the squares (f32), one block-wide reduction gives
// 1/rms, pass 2 scales and writes. Rows whose width is a multiple of 8 (and 16-byte aligned)
// move as uint4 vectors, and each thread keeps its first CACHED_VECS vectors in registers so
// that pass 2 reads nothing from memory again: each byte crosses HBM once in, once out.
//
// Rounding follows transformers: the fused add rounds the new residual to bf16 first (it is
// stored in bf16), the norm is computed from that rounded value in f32, and the output is
// rounded once.

#define CACHED_VECS 4

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<size_t>(p) & 15) == 0;
}

// transformers' norm output, 8 values at a time: weight * bf16(s * inv_rms), rounded to bf16.
__device__ __forceinline__ uint4 scale8(uint4 s, uint4 w, float inv_rms) {
    f32x8 f = unpack8(s);
    const f32x8 g = unpack8(w);
    for (int k = 0; k < 8; k++) f.v[k] = g.v[k] * __bfloat162float(__float2bfloat16(f.v[k] * inv_rms));
    return pack8(f);
}

// Pass 2 of the vector path: out vector i = scale8(stream vector i, weight vector i). The
// first CACHED_VECS of this thread's vectors (and their weights) are in registers; `tail(i)`
// gives the stream's vector i past them.
template <typename Tail>
__device__ __forceinline__ void write_normed(
    uint4* __restrict__ ov, const uint4 (&cache)[CACHED_VECS], const uint4 (&wcache)[CACHED_VECS],
    const uint4* __restrict__ wv, u32 nvec, float inv_rms, Tail tail) {
#pragma unroll
    for (int j = 0; j < CACHED_VECS; j++) {
        const u32 i = threadIdx.x + j * blockDim.x;
        if (i < nvec) ov[i] = scale8(cache[j], wcache[j], inv_rms);
    }
    for (u32 i = threadIdx.x + CACHED_VECS * blockDim.x; i < nvec; i += blockDim.x)
        ov[i] = scale8(tail(i), wv[i], inv_rms);
}

extern "C" __global__ void rms_norm_kernel(
    __nv_bfloat16* __restrict__ out,           // [num_tokens, hidden_size]
    const __nv_bfloat16* __restrict__ x,       // [num_tokens, hidden_size]
    const __nv_bfloat16* __restrict__ weight,  // [hidden_size]
    float eps, u32 hidden_size) {
    __shared__ float scratch[32];
    const size_t row = (size_t)blockIdx.x * hidden_size;
    const bool vec = hidden_size % 8 == 0 && aligned16(out) && aligned16(x) && aligned16(weight);
    if (vec) {
        const u32 nvec = hidden_size / 8;
        const uint4* xv = reinterpret_cast<const uint4*>(x + row);
        const uint4* wv = reinterpret_cast<const uint4*>(weight);
        uint4* ov = reinterpret_cast<uint4*>(out + row);
        // The weight before the wait for the previous kernel (it never depends on it), and
        // not after the reduction, where its load would be one more trip to memory.
        uint4 cache[CACHED_VECS], wcache[CACHED_VECS];
#pragma unroll
        for (int j = 0; j < CACHED_VECS; j++) {
            const u32 i = threadIdx.x + j * blockDim.x;
            if (i < nvec) wcache[j] = wv[i];
        }
        PDL_ENTRY();
        float sum_sq = 0.0f;
#pragma unroll
        for (int j = 0; j < CACHED_VECS; j++) {
            const u32 i = threadIdx.x + j * blockDim.x;
            if (i < nvec) {
                cache[j] = xv[i];
                f32x8 f = unpack8(cache[j]);
                for (int k = 0; k < 8; k++) sum_sq += f.v[k] * f.v[k];
            }
        }
        for (u32 i = threadIdx.x + CACHED_VECS * blockDim.x; i < nvec; i += blockDim.x) {
            f32x8 f = unpack8(xv[i]);
            for (int k = 0; k < 8; k++) sum_sq += f.v[k] * f.v[k];
        }
        const float inv_rms = rsqrtf(block_sum(sum_sq, scratch) / hidden_size + eps);
        // transformers: weight * (x * inv_rms).to(bf16)
        write_normed(ov, cache, wcache, wv, nvec, inv_rms, [&](u32 i) { return xv[i]; });
    } else {
        PDL_ENTRY();
        float sum_sq = 0.0f;
        for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) {
            const float v = __bfloat162float(x[row + i]);
            sum_sq += v * v;
        }
        const float inv_rms = rsqrtf(block_sum(sum_sq, scratch) / hidden_size + eps);
        for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) {
            const float n = __bfloat162float(__float2bfloat16(__bfloat162float(x[row + i]) * inv_rms));
            out[row + i] = __float2bfloat16(__bfloat162float(weight[i]) * n);
        }
    }
}

// residual += x; x = rms_norm(residual) * weight. Both buffers are updated in place.
extern "C" __global__ void fused_add_rms_norm_kernel(
    __nv_bfloat16* __restrict__ x,             // [num_tokens, hidden_size]; in: layer output, out: normed
    __nv_bfloat16* __restrict__ residual,      // [num_tokens, hidden_size]; in: stream, out: stream + x
    const __nv_bfloat16* __restrict__ weight,  // [hidden_size]
    float eps, u32 hidden_size) {
    __shared__ float scratch[32];
    const size_t row = (size_t)blockIdx.x * hidden_size;
    const bool vec = hidden_size % 8 == 0 && aligned16(x) && aligned16(residual) && aligned16(weight);
    if (vec) {
        const u32 nvec = hidden_size / 8;
        uint4* xv = reinterpret_cast<uint4*>(x + row);
        uint4* rv = reinterpret_cast<uint4*>(residual + row);
        const uint4* wv = reinterpret_cast<const uint4*>(weight);
        // The weight never depends on the previous kernel: load it before waiting for that
        // kernel, so under programmatic dependent launch the load overlaps its tail.
        uint4 wcache[CACHED_VECS], xs[CACHED_VECS], cache[CACHED_VECS];
        float sum_sq = 0.0f;
#pragma unroll
        for (int j = 0; j < CACHED_VECS; j++) {
            const u32 i = threadIdx.x + j * blockDim.x;
            if (i < nvec) wcache[j] = wv[i];
        }
        PDL_ENTRY();
        // Pass 1: r = bf16(x + r), stored; sum of squares of the stored value. Every load is
        // issued before the first store: with a store in between, the compiler must assume it
        // may change the next vector, and the loads wait for each other (Nsight Compute timed
        // the interleaved version at 6 µs for [32, 4096] on the H200, 2026-11-29).
#pragma unroll
        for (int j = 0; j < CACHED_VECS; j++) {
            const u32 i = threadIdx.x + j * blockDim.x;
            if (i < nvec) {
                xs[j] = xv[i];
                cache[j] = rv[i];
            }
        }
#pragma unroll
        for (int j = 0; j < CACHED_VECS; j++) {
            const u32 i = threadIdx.x + j * blockDim.x;
            if (i < nvec) {
                f32x8 a = unpack8(xs[j]), r = unpack8(cache[j]);
                for (int k = 0; k < 8; k++) r.v[k] += a.v[k];
                cache[j] = pack8(r);
                rv[i] = cache[j];
                r = unpack8(cache[j]);
                for (int k = 0; k < 8; k++) sum_sq += r.v[k] * r.v[k];
            }
        }
        for (u32 i = threadIdx.x + CACHED_VECS * blockDim.x; i < nvec; i += blockDim.x) {
            f32x8 a = unpack8(xv[i]), r = unpack8(rv[i]);
            for (int k = 0; k < 8; k++) r.v[k] += a.v[k];
            const uint4 packed = pack8(r);
            rv[i] = packed;
            r = unpack8(packed);
            for (int k = 0; k < 8; k++) sum_sq += r.v[k] * r.v[k];
        }
        const float inv_rms = rsqrtf(block_sum(sum_sq, scratch) / hidden_size + eps);
        // Pass 2: x = weight * bf16(r * inv_rms). Each thread re-reads only what it wrote.
        write_normed(xv, cache, wcache, wv, nvec, inv_rms, [&](u32 i) { return rv[i]; });
    } else {
        PDL_ENTRY();
        float sum_sq = 0.0f;
        for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) {
            const __nv_bfloat16 r = __float2bfloat16(
                __bfloat162float(x[row + i]) + __bfloat162float(residual[row + i]));
            residual[row + i] = r;
            const float v = __bfloat162float(r);
            sum_sq += v * v;
        }
        const float inv_rms = rsqrtf(block_sum(sum_sq, scratch) / hidden_size + eps);
        for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) {
            const float n = __bfloat162float(
                __float2bfloat16(__bfloat162float(residual[row + i]) * inv_rms));
            x[row + i] = __float2bfloat16(__bfloat162float(weight[i]) * n);
        }
    }
}

// The last layer's way out, for the rows a step samples from only: out[b] = rms_norm(s) *
// weight with s = bf16(residual[r] + delta[r]) (residual[r] alone when delta is null) and r =
// rows[b]. That is fused_add_rms_norm (or rms_norm) followed by a gather of the rows, in one
// launch, normalizing only the gathered rows and storing no new stream: nothing reads the
// stream after the last layer. A decode step then has one kernel fewer between its last layer
// and the LM head. The threads, the vectors each keeps and the order of the sums are those of
// the two kernels (same launch shape), so the output is theirs bit for bit. A row past
// num_tokens gives NaN, as the gather would.
extern "C" __global__ void add_rms_norm_rows_kernel(
    __nv_bfloat16* __restrict__ out,             // [num_rows, hidden_size]
    const __nv_bfloat16* __restrict__ delta,     // [num_tokens, hidden_size] or null
    const __nv_bfloat16* __restrict__ residual,  // [num_tokens, hidden_size]
    const u32* __restrict__ rows,                // [num_rows]: which rows, in order
    u32 num_tokens,
    const __nv_bfloat16* __restrict__ weight,    // [hidden_size]
    float eps, u32 hidden_size) {
    __shared__ float scratch[32];
    __nv_bfloat16* o = out + (size_t)blockIdx.x * hidden_size;
    const bool vec = hidden_size % 8 == 0 && aligned16(out) && aligned16(residual) &&
                     aligned16(weight) && (delta == nullptr || aligned16(delta));
    const u32 nvec = hidden_size / 8;
    const uint4* wv = reinterpret_cast<const uint4*>(weight);
    uint4 wcache[CACHED_VECS], cache[CACHED_VECS];
    if (vec) {
        // The weight before the wait: it never depends on the previous kernel.
#pragma unroll
        for (int j = 0; j < CACHED_VECS; j++) {
            const u32 i = threadIdx.x + j * blockDim.x;
            if (i < nvec) wcache[j] = wv[i];
        }
    }
    PDL_ENTRY();
    const u32 r = rows[blockIdx.x];  // written by this step's prepare_inputs: after the wait
    if (r >= num_tokens) {
        for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) o[i] = __float2bfloat16(QUIET_NAN);
        return;
    }
    const size_t row = (size_t)r * hidden_size;
    if (vec) {
        const uint4* rv = reinterpret_cast<const uint4*>(residual + row);
        const uint4* dv = delta ? reinterpret_cast<const uint4*>(delta + row) : nullptr;
        uint4* ov = reinterpret_cast<uint4*>(o);
        // The stream's value of vector i: the bf16 sum, as fused_add_rms_norm stores it.
        auto stream = [&](u32 i) {
            f32x8 s = unpack8(rv[i]);
            if (dv) {
                const f32x8 d = unpack8(dv[i]);
                for (int k = 0; k < 8; k++) s.v[k] += d.v[k];
            }
            return pack8(s);
        };
        float sum_sq = 0.0f;
#pragma unroll
        for (int j = 0; j < CACHED_VECS; j++) {
            const u32 i = threadIdx.x + j * blockDim.x;
            if (i < nvec) {
                cache[j] = stream(i);
                const f32x8 s = unpack8(cache[j]);
                for (int k = 0; k < 8; k++) sum_sq += s.v[k] * s.v[k];
            }
        }
        for (u32 i = threadIdx.x + CACHED_VECS * blockDim.x; i < nvec; i += blockDim.x) {
            const f32x8 s = unpack8(stream(i));
            for (int k = 0; k < 8; k++) sum_sq += s.v[k] * s.v[k];
        }
        const float inv_rms = rsqrtf(block_sum(sum_sq, scratch) / hidden_size + eps);
        write_normed(ov, cache, wcache, wv, nvec, inv_rms, stream);
    } else {
        auto stream = [&](u32 i) {
            const float s = __bfloat162float(residual[row + i]);
            return __bfloat162float(__float2bfloat16(delta ? s + __bfloat162float(delta[row + i]) : s));
        };
        float sum_sq = 0.0f;
        for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) {
            const float v = stream(i);
            sum_sq += v * v;
        }
        const float inv_rms = rsqrtf(block_sum(sum_sq, scratch) / hidden_size + eps);
        for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) {
            const float n = __bfloat162float(__float2bfloat16(stream(i) * inv_rms));
            o[i] = __float2bfloat16(__bfloat162float(weight[i]) * n);
        }
    }
}
