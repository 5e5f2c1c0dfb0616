// Prefill attention over the paged KV cache, FlashAttention-2 style: the CUDA twin of
// engine/src/ops/paged_attention.rs for a whole mixed batch. Sequence s contributes query rows
// query_start_loc[s] .. query_start_loc[s+1] (its n_new new tokens) at positions
// seq_len - n_new .. seq_len - 1; row at position p attends to cached tokens 0..=p, read through
// the block table. So a prompt, a chunk of a prompt after a cached prefix, and a decode row (a
// chunk of 1) are one case. Their keys and values are already in the cache (reshape_and_cache
// ran first). Query head h reads KV head h / (num_heads / num_kv_heads) (GQA).
//
// Never the score matrix. A block takes one (sequence, query head, tile of 16 * WARPS rows);
// each warp owns 16 rows. It walks the keys the tile needs (0 ..= the last row's position)
// BLOCK_N at a time: the block copies the keys and values of the tile into shared memory, each
// warp computes its 16 x BLOCK_N scores in registers, and keeps per row a running max m and sum
// l of exp(score - m) and the unnormalized output acc, rescaled by exp(m_old - m_new) when m
// grows (online softmax). At the end out = acc / l. Scores live only in registers, one tile
// at a time.
//
// Two stages: while the warps compute on one tile, cp.async copies the next one from the cache
// into the other half of shared memory (the copy engine writes shared memory directly, no
// registers), so the HBM/L2 latency hides behind the tensor-core work.
//
// Tensor cores. Both matmuls (S = Q K^T and acc += P V) use mma.sync m16n8k16 with bf16 inputs
// and f32 accumulators. Its register layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"),
// with g = lane / 4 and t = lane % 4:
//   A (16 x 16, row-major): reg0 = A[g][2t, 2t+1], reg1 = A[g+8][2t, 2t+1],
//                           reg2 = A[g][2t+8, 2t+9], reg3 = A[g+8][2t+8, 2t+9]
//   B (16 x 8):             reg0 = B[2t, 2t+1][g], reg1 = B[2t+8, 2t+9][g]
//   C (16 x 8, f32):        c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]
// Two facts make it fit: B = K^T means B[k][n] = K[n][k], so a B register is two adjacent
// dims of one key row (ldmatrix loads four such 8x8 pieces per instruction; for V, whose B
// registers hold two keys of one dim, ldmatrix.trans transposes on the way); and the C layout of two adjacent 8-key score blocks is exactly the A
// layout of P for 16 keys, so P goes from the first matmul to the second without shared memory.
// Every lane thus holds two rows (g and g+8) of its warp's 16; a row's max and sum are reduced
// over the 4 lanes that share g.
//
// Scores are kept in base 2 (q.k * scale * log2 e, then exp2): the same softmax, one multiply
// fewer per exponential.

#define BLOCK_N 64  // keys per shared-memory tile

__device__ __forceinline__ void mma_16816(float c[4], const u32 a[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a bf16 pair, the lower column in the low half (the mma operand convention).
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<u32*>(&v);
}

// Four 8x8 bf16 matrices from shared memory; lane 8i + r gives the address of row r of
// matrix i, and reg i of lane (g, t) gets row g, columns 2t, 2t+1 of matrix i (.trans: of its
// transpose).
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], const __nv_bfloat16* row) {
    const u32 at = (u32)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(at));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 r[4], const __nv_bfloat16* row) {
    const u32 at = (u32)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(at));
}

// 16 bytes global -> shared without passing through registers; completes at cp_async_wait.
__device__ __forceinline__ void cp_async_16(__nv_bfloat16* dst, const __nv_bfloat16* src) {
    const u32 at = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(at), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
// Waits until at most `N` of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Start copying keys and values kb .. kb + BLOCK_N into one stage of shared memory. Keys past
// last_pos become zeros and are not read: their slots may hold anything (NaN).
template <int D, int WARPS>
__device__ __forceinline__ void load_kv_tile(
    __nv_bfloat16* k_tile, __nv_bfloat16* v_tile,   // [BLOCK_N, D + 8] each, in shared memory
    const __nv_bfloat16* __restrict__ key_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    const __nv_bfloat16* __restrict__ value_cache,  // [num_blocks, block_size, num_kv_heads, head_dim]
    const u32* __restrict__ table,                  // [max_blocks_per_seq]: this sequence's
    u32 kb, u32 last_pos, u32 block_size, u32 num_kv_heads, u32 kv_head) {
    constexpr int LD = D + 8;
    for (int idx = threadIdx.x; idx < BLOCK_N * (D / 8); idx += WARPS * 32) {
        const int j = idx / (D / 8), c = idx % (D / 8);
        const u32 key = kb + j;
        __nv_bfloat16* kd = k_tile + j * LD + c * 8;
        __nv_bfloat16* vd = v_tile + j * LD + c * 8;
        if (key <= last_pos) {
            const size_t row =
                ((size_t)table[key / block_size] * block_size + key % block_size) * num_kv_heads +
                kv_head;
            cp_async_16(kd, key_cache + row * D + c * 8);
            cp_async_16(vd, value_cache + row * D + c * 8);
        } else {
            *reinterpret_cast<uint4*>(kd) = make_uint4(0, 0, 0, 0);
            *reinterpret_cast<uint4*>(vd) = make_uint4(0, 0, 0, 0);
        }
    }
}

template <int D, int WARPS>
__device__ __forceinline__ void prefill_attention(
    __nv_bfloat16* __restrict__ out,                // [num_tokens, num_heads, head_dim]
    const __nv_bfloat16* __restrict__ query,        // [num_tokens, num_heads, head_dim]
    const __nv_bfloat16* __restrict__ key_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    const __nv_bfloat16* __restrict__ value_cache,  // [num_blocks, block_size, num_kv_heads, head_dim]
    const u32* __restrict__ block_tables,           // [num_seqs, max_blocks_per_seq]
    const u32* __restrict__ seq_lens,               // [num_seqs]
    const u32* __restrict__ query_start_loc,        // [num_seqs + 1]
    float scale, u32 num_heads, u32 num_kv_heads, u32 block_size, u32 max_blocks_per_seq) {
    constexpr int BLOCK_M = 16 * WARPS;  // query rows per block
    constexpr int LD = D + 8;  // padded row: ldmatrix's 8 row reads hit distinct banks
    // [2 stages][k, v][BLOCK_N, LD]: 2 * 2 * BLOCK_N * LD bf16 (dynamic: 69,632 B for D = 128)
    extern __shared__ __align__(16) __nv_bfloat16 smem[];

    // The last tiles of a chunk see the most keys: start them first.
    const u32 tile = gridDim.x - 1 - blockIdx.x, seq = blockIdx.y, head = blockIdx.z;
    const u32 q_begin = query_start_loc[seq];
    const u32 n_new = query_start_loc[seq + 1] - q_begin;
    const u32 first_row = tile * BLOCK_M;
    if (first_row >= n_new) return;  // this chunk is shorter than the longest one
    const u32 rows = min((u32)BLOCK_M, n_new - first_row);
    const u32 first_pos = seq_lens[seq] - n_new + first_row;  // position of the tile's row 0
    const u32 last_pos = first_pos + rows - 1;                // no row sees a key past this
    const u32 kv_head = head / (num_heads / num_kv_heads);
    const u32* table = block_tables + (size_t)seq * max_blocks_per_seq;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const bool warp_has_rows = warp * 16 < (int)rows;
    // This lane's rows (g and g+8 of the warp's 16). Rows past the chunk get the last row's
    // position, so they stay finite; they are never written.
    u32 pos[2];
#pragma unroll
    for (int i = 0; i < 2; i++) pos[i] = first_pos + min((u32)(warp * 16 + g + 8 * i), rows - 1);

    // Q as A fragments, one per 16 dims, loaded once (zeros past the chunk).
    u32 qf[D / 16][4];
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const u32 row = warp * 16 + g + 8 * (r & 1);
            const int col = ks * 16 + 2 * t + 8 * (r >> 1);
            const size_t at = ((size_t)(q_begin + first_row + row) * num_heads + head) * D + col;
            qf[ks][r] = row < rows ? *reinterpret_cast<const u32*>(query + at) : 0u;
        }
    }

    float acc[D / 8][4];
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const float scale_log2 = scale * 1.4426950408889634f;

    load_kv_tile<D, WARPS>(smem, smem + BLOCK_N * LD, key_cache, value_cache, table, 0, last_pos,
                           block_size, num_kv_heads, kv_head);
    cp_async_commit();
    int stage = 0;
    for (u32 kb = 0; kb <= last_pos; kb += BLOCK_N, stage ^= 1) {
        // Prefetch the next tile into the other stage (an empty group past the end), then wait
        // for this one: this thread's copies (wait), then everyone's (barrier).
        if (kb + BLOCK_N <= last_pos) {
            __nv_bfloat16* next = smem + (stage ^ 1) * 2 * BLOCK_N * LD;
            load_kv_tile<D, WARPS>(next, next + BLOCK_N * LD, key_cache, value_cache, table,
                                   kb + BLOCK_N, last_pos, block_size, num_kv_heads, kv_head);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const __nv_bfloat16* k_tile = smem + stage * 2 * BLOCK_N * LD;
        const __nv_bfloat16* v_tile = k_tile + BLOCK_N * LD;

        if (warp_has_rows) {  // a short chunk (a decode row) leaves warps idle
            // S = Q K^T for this warp's 16 rows and the tile's keys, 8 keys per mma column block;
            // one ldmatrix gives the B registers of two 16-dim steps.
            float s[BLOCK_N / 8][4];
#pragma unroll
            for (int nb = 0; nb < BLOCK_N / 8; nb++) {
                s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
                const __nv_bfloat16* krow = k_tile + (nb * 8 + lane % 8) * LD + (lane / 8) * 8;
#pragma unroll
                for (int ks = 0; ks < D / 16; ks += 2) {
                    u32 b[4];
                    ldmatrix_x4(b, krow + ks * 16);
                    mma_16816(s[nb], qf[ks], b[0], b[1]);
                    mma_16816(s[nb], qf[ks + 1], b[2], b[3]);
                }
            }

            // Causal mask (only tiles that reach past this warp's first row need it), scale,
            // and the new running max per row.
            const bool diagonal = kb + BLOCK_N - 1 > first_pos + warp * 16;
            float m_new[2] = {m[0], m[1]};
#pragma unroll
            for (int nb = 0; nb < BLOCK_N / 8; nb++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const u32 key = kb + nb * 8 + 2 * t + (e & 1);
                    const bool seen = !diagonal || key <= pos[e >> 1];
                    const float v = seen ? s[nb][e] * scale_log2 : -INFINITY;
                    s[nb][e] = v;
                    m_new[e >> 1] = fmaxf(m_new[e >> 1], v);
                }
            }
#pragma unroll
            for (int i = 0; i < 2; i++) {
                m_new[i] = fmaxf(m_new[i], __shfl_xor_sync(0xffffffffu, m_new[i], 1));
                m_new[i] = fmaxf(m_new[i], __shfl_xor_sync(0xffffffffu, m_new[i], 2));
                // Key 0 is in the first tile and every row sees it, so m_new is finite here;
                // exp2(-inf) = 0 clears the empty state on the first tile.
                const float corr = exp2f(m[i] - m_new[i]);
                m[i] = m_new[i];
                l[i] *= corr;
#pragma unroll
                for (int nd = 0; nd < D / 8; nd++) {
                    acc[nd][2 * i] *= corr;
                    acc[nd][2 * i + 1] *= corr;
                }
            }

            // P = exp2(S - m); this lane's part of each row sum (summed over the quad at the end).
#pragma unroll
            for (int nb = 0; nb < BLOCK_N / 8; nb++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[nb][e] = exp2f(s[nb][e] - m[e >> 1]);
                    l[e >> 1] += s[nb][e];
                }
            }

            // acc += P V, 16 keys per step: P's A fragment is two adjacent score blocks, in bf16.
#pragma unroll
            for (int kk = 0; kk < BLOCK_N / 16; kk++) {
                const u32 a[4] = {
                    pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                    pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                    pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                    pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]),
                };
                // Matrices: keys kk*16 + (0, 8) x dims nd*8 + (0, 8), transposed: B registers.
                const __nv_bfloat16* vrow =
                    v_tile + (kk * 16 + (lane / 8 % 2) * 8 + lane % 8) * LD + (lane / 16) * 8;
#pragma unroll
                for (int nd = 0; nd < D / 8; nd += 2) {
                    u32 b[4];
                    ldmatrix_x4_trans(b, vrow + nd * 8);
                    mma_16816(acc[nd], a, b[0], b[1]);
                    mma_16816(acc[nd + 1], a, b[2], b[3]);
                }
            }
        }
        __syncthreads();  // every warp is done with this stage before it is refilled
    }

    if (!warp_has_rows) return;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        const u32 row = warp * 16 + g + 8 * i;
        if (row >= rows) continue;
        const float inv = 1.0f / l[i];
        __nv_bfloat16* o = out + ((size_t)(q_begin + first_row + row) * num_heads + head) * D + 2 * t;
#pragma unroll
        for (int nd = 0; nd < D / 8; nd++) {
            *reinterpret_cast<__nv_bfloat162*>(o + nd * 8) =
                __floats2bfloat162_rn(acc[nd][2 * i] * inv, acc[nd][2 * i + 1] * inv);
        }
    }
}

// The entry points NVRTC exports, per head size and warps per block (query tile of 16 * W
// rows). Grid: (ceil(max_query_len / (16 * W)), num_seqs, num_heads), W * 32 threads,
// 2 * 2 * BLOCK_N * (D + 8) * 2 bytes of dynamic shared memory.
#define PREFILL(D, W)                                                                          \
    extern "C" __global__ void __launch_bounds__(W * 32) prefill_attention_d##D##_w##W(        \
        __nv_bfloat16 *out, const __nv_bfloat16 *query, const __nv_bfloat16 *key_cache,        \
        const __nv_bfloat16 *value_cache, const u32 *block_tables, const u32 *seq_lens,         \
        const u32 *query_start_loc, float scale, u32 num_heads, u32 num_kv_heads,              \
        u32 block_size, u32 max_blocks_per_seq) {                                              \
        PDL_ENTRY();                                                                           \
        prefill_attention<D, W>(out, query, key_cache, value_cache, block_tables, seq_lens,       \
                             query_start_loc, scale, num_heads, num_kv_heads, block_size,      \
                             max_blocks_per_seq);                                              \
    }

PREFILL(64, 4) PREFILL(64, 8) PREFILL(128, 4) PREFILL(128, 8)
