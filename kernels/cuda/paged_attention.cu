// Decode attention over the paged KV cache, the CUDA twin of engine/src/ops/paged_attention.rs
// for the decode case: one query row per sequence, at position seq_len - 1, attending to cached
// tokens 0..seq_len (its own key is already in the cache: reshape_and_cache ran first).
//
// Decode attention does ~1 multiply-add per byte of KV it reads, so it is bound by HBM, and the
// whole design is about keeping enough bytes in flight with little arithmetic in the way.
//
// Work split. A block (4 warps) takes one sequence, HEADS query heads that share one KV head
// (GQA: each K/V row is read once for all of them), and one partition of the context. It walks
// the partition in tiles of TT tokens (TT = 32 at head size 128, 64 at head size 64: the same
// 16 KB of K and V per tile, so the same barriers per byte; see `Tile` below):
//
//   copy   K and V rows of future tiles stream into a ring of STAGES shared-memory buffers
//          with cp.async (global -> shared without passing through registers): STAGES - 1
//          tiles are in flight while the block computes on one. Registers no longer bound the
//          bytes in flight (the previous version loaded into registers: 128 of them per
//          thread, and a prefetch pushed that to 166 and lost occupancy).
//   q·k    lane t of every warp takes token t of the tile (and t + 32 when TT = 64); warp w takes a quarter of the head
//          dims. Each thread reads its key slice once, converts it to f32 once, and dots it
//          with all HEADS query heads (q sits in shared memory, read as broadcasts). The four
//          warps' partial dots are summed through shared memory: no shuffle per token.
//   softmax  warp h (of HEADS) sums the partials of head h for the 32 tokens and updates the
//          running max m and sum l once per tile (two 5-step warp reductions per 32 tokens,
//          not per token); p = exp(score - m) goes to shared memory, with the factor that
//          rescales what was accumulated so far.
//   p·V    each thread owns 8 dims (one 16-byte chunk) of the output for all HEADS heads and a
//          few tokens of the tile; a warp reads whole V rows, 16 bytes per lane, conflict-free.
//
// Shared memory rows are swizzled: chunk c of row r is stored at c ^ (r % 8). Without it the 32
// lanes of the q·k step, which read the same chunk of 32 different 256-byte rows, would all hit
// the same 4 banks (8-way conflicts); with it every 8 lanes cover all 32 banks.
//
// Single pass: one partition per sequence (contexts up to MAX_PARTITION tokens), the block
// writes the normalized output. Split-K: the grid's z dimension gives each sequence P blocks,
// and each takes one partition of its context (partition_tokens below: an even split into P,
// in whole tiles, but never under `min_partition` tokens); each writes its unnormalized
// (m, l, acc) to a workspace, and one of two merges combines them:
//     M = max_p m_p,  out = sum_p exp(m_p - M) acc_p / sum_p exp(m_p - M) l_p.
// Either a second kernel, paged_attention_reduce (one block per sequence and head), or the
// last of a sequence's blocks to finish (`tickets` not null): each block, once its partial
// state is written and fenced, takes a ticket from a per-(sequence, head group) counter; the
// block that draws the final ticket reads every partition's state back and writes the output,
// then sets the counter to zero for the next launch (the "threadfence reduction" of the CUDA
// samples). The second saves a kernel boundary and pays a fence, an atomic and a merge done by
// fewer threads; the Rust side picks one (`SplitMerge`), and kernel_bench times both.
// Split-K serves two ends. Long contexts: a partition holds at most MAX_PARTITION tokens (its
// block-table entries sit in shared memory), so the Rust side makes P at least
// ceil(max_seq_len / 512) and keeps min_partition = 512. Small batches: one block per sequence
// and KV head is 3 blocks for SmolLM2 at batch 1, on a GPU of 132 SMs, each walking the whole
// context tile after tile; there the Rust side asks for more partitions, min_partition = one
// tile, and each block walks a few tiles.

#define NUM_THREADS 128
#define NUM_WARPS (NUM_THREADS / 32)
#define TILE 32             // tokens per lane-row of q·k, and the granule partitions are cut in
#define MAX_PARTITION 512   // = PARTITION_SIZE on the Rust side: longest partition a block takes

// The ring: S stages of TT tokens' K and V rows; S - 1 tiles are in flight per block while it
// computes on one. Measured on the H200 (kernels/README.md): a deeper ring is slower, because
// it costs resident blocks (shared memory), and the block's arithmetic between barriers, not
// the bytes in flight, is what limits this kernel. At head size 128 (16 KB tiles of 32 tokens)
// 2 stages reach 79% of copy bandwidth against 77% for 3. At head size 64 a 32-token tile is
// 8 KB, and the block spends as many barriers and softmax updates on it as on 16 KB at head
// size 128: with a 4-stage ring that reached 68-69%. So head size 64 takes 64-token tiles (two
// tokens per lane in q·k and in the softmax), 16 KB per round as at head size 128. The Rust side
// sizes the dynamic shared memory from the same numbers (`Ring` in paged_attention.rs).
template <int D, int S, int TT>
struct Ring {
    static constexpr int STAGES = S;
    static constexpr int CHUNKS = D / 8;  // 16-byte chunks per K or V row
    static constexpr int STAGE_CHUNKS = 2 * TT * CHUNKS;
};

// 16 bytes global -> shared, asynchronously. `valid == false` writes zeros instead (src-size
// 0): a token past the end of the context then has k = 0 and v = 0, never stale bits that
// could be NaN (p = 0 times NaN is NaN).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    const u32 dst = (u32)__cvta_generic_to_shared(smem);
    const int src_bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
                 "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Wait until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ int swizzle(int row, int chunk) { return chunk ^ (row & 7); }

// Tokens per partition of a context of seq_len tokens split num_partitions ways: an even split
// rounded up to whole tiles, at least min_partition. The decode and reduce kernels must agree.
__device__ __forceinline__ u32 partition_tokens(u32 seq_len, u32 num_partitions, u32 min_partition) {
    const u32 even = ((seq_len + num_partitions - 1) / num_partitions + TILE - 1) / TILE * TILE;
    return max(even, min_partition);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Split-K, merged by the last of a sequence's `used` blocks (those with tokens) to finish: a
// block calls this once its partial state (tmp_out, max_logits, exp_sums of its partition) is
// written. The fence makes that state visible to the whole GPU before the block draws its
// ticket, so the block that draws the last ticket reads every partition's final values, and
// merges them: M = max_p m_p, out = sum_p exp(m_p - M) acc_p / sum_p exp(m_p - M) l_p.
template <int D, int HEADS>
__device__ __forceinline__ void merge_partitions_if_last(
    __nv_bfloat16* __restrict__ out,       // [num_seqs, num_heads, head_dim]
    const float* __restrict__ tmp_out,     // [num_seqs, num_heads, max_partitions, head_dim]
    const float* __restrict__ max_logits,  // [num_seqs, num_heads, max_partitions]
    const float* __restrict__ exp_sums,    // [num_seqs, num_heads, max_partitions]
    u32* __restrict__ tickets,             // [num_seqs, head groups], 0 between launches
    u32 seq, u32 seq_len, u32 partition_size, u32 num_heads, u32 first_head) {
    __shared__ bool s_last;
    const u32 num_partitions = gridDim.z;
    const u32 used = (seq_len + partition_size - 1) / partition_size;
    u32* ticket = tickets + (size_t)seq * gridDim.x + blockIdx.x;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(ticket, 1u) == used - 1;
    __syncthreads();
    if (!s_last) return;
    if (threadIdx.x == 0) *ticket = 0;  // for the next launch, which starts after this grid ends
    for (int idx = threadIdx.x; idx < HEADS * D; idx += NUM_THREADS) {
        const int h = idx / D, d = idx % D;
        const size_t head_row = (size_t)seq * num_heads + first_head + h;
        const size_t row0 = head_row * num_partitions;
        // __ldcg: through L2 only, never a line this SM's L1 may hold from before the fence.
        float big_m = -INFINITY;
        for (u32 p = 0; p < used; p++) big_m = fmaxf(big_m, __ldcg(max_logits + row0 + p));
        float big_l = 0.0f, o = 0.0f;
        for (u32 p = 0; p < used; p++) {
            const float f = __expf(__ldcg(max_logits + row0 + p) - big_m);
            big_l += __ldcg(exp_sums + row0 + p) * f;
            o += __ldcg(tmp_out + (row0 + p) * D + d) * f;
        }
        out[head_row * D + d] = __float2bfloat16(o / big_l);
    }
}

template <int D, int HEADS, int S, int TT>
__device__ __forceinline__ void paged_attention_decode(
    __nv_bfloat16* __restrict__ out,                // [num_seqs, num_heads, head_dim]
    float* __restrict__ tmp_out,                    // [num_seqs, num_heads, max_partitions, head_dim]
    float* __restrict__ max_logits,                 // [num_seqs, num_heads, max_partitions]
    float* __restrict__ exp_sums,                   // [num_seqs, num_heads, max_partitions]
    const __nv_bfloat16* __restrict__ query,        // [num_seqs, num_heads, head_dim]
    const __nv_bfloat16* __restrict__ key_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    const __nv_bfloat16* __restrict__ value_cache,  // [num_blocks, block_size, num_kv_heads, head_dim]
    const u32* __restrict__ block_tables,           // [num_seqs, max_blocks_per_seq]
    const u32* __restrict__ seq_lens,               // [num_seqs]
    u32* __restrict__ tickets,                      // [num_seqs, head groups], 0 between launches; or null
    float scale, u32 num_heads, u32 num_kv_heads, u32 block_size, u32 max_blocks_per_seq,
    u32 min_partition) {
    using R = Ring<D, S, TT>;
    constexpr int TPL = TT / TILE;                      // tokens per lane in q·k and softmax
    constexpr int CHUNKS = R::CHUNKS, STAGES = R::STAGES;
    constexpr int WARP_CHUNKS = CHUNKS / NUM_WARPS;     // q·k: chunks of a row per warp
    constexpr int GROUPS = NUM_THREADS / CHUNKS;        // p·V: token groups (8 or 16)
    constexpr int GROUP_TOKENS = TT / GROUPS;           // p·V: tokens per group per tile
    constexpr int HEADS_PER_WARP = (HEADS + NUM_WARPS - 1) / NUM_WARPS;  // softmax
    static_assert(CHUNKS >= 8 && CHUNKS % NUM_WARPS == 0 && TT % GROUPS == 0, "layout");
    static_assert(TT == TILE || TT == 2 * TILE, "one or two tokens per lane");
    static_assert(GROUPS * HEADS * D * 4 <= STAGES * R::STAGE_CHUNKS * 16, "merge fits the ring");

    // [STAGES][K, V][TT][CHUNKS] uint4, chunks swizzled; reused for the final merge.
    extern __shared__ uint4 s_ring[];
    __shared__ __align__(16) float s_q[HEADS][D];   // query rows, times scale (read as float4)
    __shared__ u32 s_table[MAX_PARTITION + 1];      // this partition's block-table entries
    __shared__ float s_part[NUM_WARPS][HEADS][TT];  // q·k partial dots, one per warp
    __shared__ float s_p[HEADS][TT];                // softmax weights of the tile
    __shared__ float s_corr[HEADS], s_m[HEADS], s_l[HEADS];

    const u32 first_head = blockIdx.x * HEADS, seq = blockIdx.y, part = blockIdx.z;
    const u32 kv_head = first_head / (num_heads / num_kv_heads);
    const u32 seq_len = seq_lens[seq];
    const u32 partition_size = partition_tokens(seq_len, gridDim.z, min_partition);
    const u32 start = part * partition_size;
    if (start >= seq_len) return;  // this sequence is shorter than the longest one
    const u32 end = min(start + partition_size, seq_len);
    const u32 num_tiles = (end - start + TT - 1) / TT;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    // The partition's block-table entries, once: the copies below then find a row's address
    // without a dependent global load in front of each tile.
    const u32 first_block = start / block_size;
    const u32 num_entries = (end - 1) / block_size - first_block + 1;  // <= MAX_PARTITION + 1
    const u32* table = block_tables + (size_t)seq * max_blocks_per_seq + first_block;
    for (u32 i = threadIdx.x; i < num_entries; i += NUM_THREADS) s_table[i] = table[i];
    __syncthreads();

    // Thread i copies chunks i, i + 128, ... of the tile: a warp reads two (D = 128) or four
    // (D = 64) whole rows, contiguous 256- or 128-byte runs of the cache.
    auto load_tile = [&](u32 tile, int stage) {
        uint4* k_dst = s_ring + stage * R::STAGE_CHUNKS;
        uint4* v_dst = k_dst + TT * CHUNKS;
#pragma unroll
        for (int i = 0; i < TT * CHUNKS / NUM_THREADS; i++) {
            const int idx = i * NUM_THREADS + threadIdx.x;
            const int r = idx / CHUNKS, c = idx % CHUNKS;
            const u32 tok = start + tile * TT + r;
            const bool valid = tok < end;
            size_t offset = 0;  // a valid address even when nothing is read from it
            if (valid) {
                const u32 block = s_table[tok / block_size - first_block];
                const size_t row = ((size_t)block * block_size + tok % block_size) * num_kv_heads + kv_head;
                offset = row * D + c * 8;
            }
            const int slot = r * CHUNKS + swizzle(r, c);
            cp_async16(k_dst + slot, key_cache + offset, valid);
            cp_async16(v_dst + slot, value_cache + offset, valid);
        }
    };
    // Fill the ring. A group is committed even when empty so that "group t" is always tile t.
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < num_tiles) load_tile(s, s);
        cp_async_commit();
    }
    // q (HEADS consecutive heads are contiguous), while the first tiles are on their way.
    const __nv_bfloat16* q_rows = query + ((size_t)seq * num_heads + first_head) * D;
    for (int i = threadIdx.x; i < HEADS * D; i += NUM_THREADS) {
        s_q[i / D][i % D] = __bfloat162float(q_rows[i]) * scale;
    }

    // Running softmax of the heads this warp owns (h = warp, warp + 4): same on every lane.
    float m_run[HEADS_PER_WARP], l_run[HEADS_PER_WARP];
#pragma unroll
    for (int j = 0; j < HEADS_PER_WARP; j++) {
        m_run[j] = -INFINITY;
        l_run[j] = 0.0f;
    }
    // p·V: this thread's chunk (8 output dims) and token group.
    const int chunk = threadIdx.x % CHUNKS, group = threadIdx.x / CHUNKS;
    float acc[HEADS][8];
#pragma unroll
    for (int h = 0; h < HEADS; h++)
#pragma unroll
        for (int i = 0; i < 8; i++) acc[h][i] = 0.0f;

    for (u32 t = 0; t < num_tiles; t++) {
        cp_async_wait<STAGES - 2>();  // this thread's copies of tile t have landed
        __syncthreads();              // everyone's have, and tile t - 1 is no longer read
        if (t + STAGES - 1 < num_tiles) load_tile(t + STAGES - 1, (t + STAGES - 1) % STAGES);
        cp_async_commit();
        const uint4* k_s = s_ring + (t % STAGES) * R::STAGE_CHUNKS;
        const uint4* v_s = k_s + TT * CHUNKS;

        // q·k: tokens `lane` (and `lane + 32`), dims of this warp's quarter, every head.
        float dot[TPL][HEADS];
#pragma unroll
        for (int u = 0; u < TPL; u++)
#pragma unroll
            for (int h = 0; h < HEADS; h++) dot[u][h] = 0.0f;
#pragma unroll
        for (int j = 0; j < WARP_CHUNKS; j++) {
            const int c = warp * WARP_CHUNKS + j;
#pragma unroll
            for (int u = 0; u < TPL; u++) {
                const int r = lane + TILE * u;
                const f32x8 k = unpack8(k_s[r * CHUNKS + swizzle(r, c)]);
#pragma unroll
                for (int h = 0; h < HEADS; h++) {
                    const float4 q0 = *reinterpret_cast<const float4*>(&s_q[h][c * 8]);
                    const float4 q1 = *reinterpret_cast<const float4*>(&s_q[h][c * 8 + 4]);
                    dot[u][h] += q0.x * k.v[0] + q0.y * k.v[1] + q0.z * k.v[2] + q0.w * k.v[3] +
                                 q1.x * k.v[4] + q1.y * k.v[5] + q1.z * k.v[6] + q1.w * k.v[7];
                }
            }
        }
#pragma unroll
        for (int u = 0; u < TPL; u++)
#pragma unroll
            for (int h = 0; h < HEADS; h++) s_part[warp][h][lane + TILE * u] = dot[u][h];
        __syncthreads();

        // Softmax update, one warp per head: TT scores, one max and one sum.
#pragma unroll
        for (int j = 0; j < HEADS_PER_WARP; j++) {
            const int h = warp + j * NUM_WARPS;
            if (h < HEADS) {  // warp-uniform
                float score[TPL], tile_max = -INFINITY;
#pragma unroll
                for (int u = 0; u < TPL; u++) {
                    const int r = lane + TILE * u;
                    float sc = 0.0f;
#pragma unroll
                    for (int w = 0; w < NUM_WARPS; w++) sc += s_part[w][h][r];
                    score[u] = start + t * TT + r < end ? sc : -INFINITY;
                    tile_max = fmaxf(tile_max, score[u]);
                }
                // The tile has at least one valid token, so m_new is finite; on the first tile
                // m_run = -inf and corr = exp(-inf) = 0. An invalid token's p is exp(-inf) = 0.
                const float m_new = fmaxf(m_run[j], warp_max(tile_max));
                const float corr = __expf(m_run[j] - m_new);
                float p_sum = 0.0f;
#pragma unroll
                for (int u = 0; u < TPL; u++) {
                    const float p = __expf(score[u] - m_new);
                    s_p[h][lane + TILE * u] = p;
                    p_sum += p;
                }
                l_run[j] = l_run[j] * corr + warp_sum(p_sum);
                m_run[j] = m_new;
                if (lane == 0) s_corr[h] = corr;
            }
        }
        __syncthreads();

        // p·V: rescale what this thread accumulated, add its tokens of the tile.
#pragma unroll
        for (int h = 0; h < HEADS; h++) {
            const float corr = s_corr[h];
#pragma unroll
            for (int i = 0; i < 8; i++) acc[h][i] *= corr;
        }
#pragma unroll
        for (int j = 0; j < GROUP_TOKENS; j++) {
            const int r = group * GROUP_TOKENS + j;
            const f32x8 v = unpack8(v_s[r * CHUNKS + swizzle(r, chunk)]);
#pragma unroll
            for (int h = 0; h < HEADS; h++) {
                const float p = s_p[h][r];
#pragma unroll
                for (int i = 0; i < 8; i++) acc[h][i] += p * v.v[i];
            }
        }
    }

    // Merge the token groups (they share m, so a plain sum) through the now idle ring.
    cp_async_wait<0>();
    __syncthreads();
    float* s_acc = reinterpret_cast<float*>(s_ring);  // [GROUPS][HEADS][D]
#pragma unroll
    for (int h = 0; h < HEADS; h++) {
        float4* dst = reinterpret_cast<float4*>(&s_acc[(group * HEADS + h) * D + chunk * 8]);
        dst[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
        dst[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
    }
#pragma unroll
    for (int j = 0; j < HEADS_PER_WARP; j++) {
        const int h = warp + j * NUM_WARPS;
        if (h < HEADS && lane == 0) {
            s_m[h] = m_run[j];
            s_l[h] = l_run[j];
        }
    }
    __syncthreads();
    const u32 num_partitions = gridDim.z;
    for (int idx = threadIdx.x; idx < HEADS * D; idx += NUM_THREADS) {
        const int h = idx / D, d = idx % D;
        float o = 0.0f;
#pragma unroll
        for (int g = 0; g < GROUPS; g++) o += s_acc[(g * HEADS + h) * D + d];
        const size_t head_row = (size_t)seq * num_heads + first_head + h;
        if (num_partitions == 1) {
            out[head_row * D + d] = __float2bfloat16(o / s_l[h]);
        } else {
            const size_t p = head_row * num_partitions + part;
            tmp_out[p * D + d] = o;
            if (d == 0) {
                max_logits[p] = s_m[h];
                exp_sums[p] = s_l[h];
            }
        }
    }
    if (num_partitions == 1 || tickets == nullptr) return;
    merge_partitions_if_last<D, HEADS>(out, tmp_out, max_logits, exp_sums, tickets, seq, seq_len,
                                       partition_size, num_heads, first_head);
}

template <int D>
__device__ __forceinline__ void paged_attention_reduce(
    __nv_bfloat16* __restrict__ out,       // [num_seqs, num_heads, head_dim]
    const float* __restrict__ tmp_out,     // [num_seqs, num_heads, max_partitions, head_dim]
    const float* __restrict__ max_logits,  // [num_seqs, num_heads, max_partitions]
    const float* __restrict__ exp_sums,    // [num_seqs, num_heads, max_partitions]
    const u32* __restrict__ seq_lens,      // [num_seqs]
    u32 max_partitions, u32 min_partition) {
    const u32 head = blockIdx.x, seq = blockIdx.y, num_heads = gridDim.x;
    const u32 seq_len = seq_lens[seq];
    const u32 partition_size = partition_tokens(seq_len, max_partitions, min_partition);
    const u32 used = (seq_len + partition_size - 1) / partition_size;
    const size_t head_row = (size_t)seq * num_heads + head;
    const float* ml = max_logits + head_row * max_partitions;
    const float* es = exp_sums + head_row * max_partitions;
    float big_m = -INFINITY;
    for (u32 p = 0; p < used; p++) big_m = fmaxf(big_m, ml[p]);
    for (u32 d = threadIdx.x; d < D; d += blockDim.x) {
        float big_l = 0.0f, o = 0.0f;
        for (u32 p = 0; p < used; p++) {
            const float f = __expf(ml[p] - big_m);
            big_l += es[p] * f;
            o += tmp_out[(head_row * max_partitions + p) * D + d] * f;
        }
        out[head_row * D + d] = __float2bfloat16(o / big_l);
    }
}

// ---------------------------------------------------------------------------------------------
// Variant "mma, warp rings" (timed beside the default by kernel_bench; not launched by the
// engine unless `PagedAttention::with_ring` picks it). Same grid, same partitions, same split-K
// outputs, same online softmax in f32; two changes to what limits the default kernel, the
// arithmetic between its three block barriers per tile:
//
//   1. No block barrier in the loop. Warp w owns rows w*WT .. w*WT + WT - 1 (WT = TT / 4
//      tokens) of every tile: it copies them itself (cp.async), waits for its own copies
//      (cp.async.wait_group + __syncwarp), and keeps its own running softmax (m, l) and
//      accumulator over its tokens, like a split-K partition inside the block. The four
//      warps' states are merged once, at the end (M = max m_w, l = sum e^(m_w - M) l_w, the
//      same formula as the split-K merge). A warp waits only on its own bytes; its next
//      copies are issued as soon as it (not the slowest warp) is done with a stage.
//   2. Both products on tensor cores (mma.sync, bf16 in, f32 accumulate), with the GQA heads
//      as one side of the mma, as FlashInfer does for grouped decode:
//        q·k  S[heads x 8 tokens] += Q[heads x 16 dims] K^T[16 dims x 8 tokens]  (m16n8k16;
//             heads fill rows 0..HEADS-1 of the 16, the rest are zero registers)
//        p·V  O^T[16 dims x 8 heads] += V^T[16 dims x 8 tokens] P^T[8 tokens x 8 heads]
//             (m16n8k8). The C fragment of q·k, c0/c1 = S[head g][tokens 2t, 2t+1], is
//             exactly the B fragment of P^T, so p goes from one product to the next in
//             registers, without shared memory.
//      Per warp and 8 tokens at head size 128: 8 + 16 mma and 8 ldmatrix, against 36 shared
//      loads, 256 FMAs and 64 conversions per thread per tile in the default kernel.
//
// Numerics. q·k: bf16 products are exact in f32, summed in f32 (q is not pre-scaled: the
// scale multiplies the f32 score). p·V: p is split into two bf16s, p = hi + lo (|lo| <=
// 2^-9 |p|), and both are multiplied, so the weights keep ~16 bits (f32 p in the default
// kernel; one bf16 would round each weight by up to 2^-9). V is bf16, exact. Accumulation f32.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 / m16n8k8"), g = lane / 4,
// t = lane % 4:
//   m16n8k16 A: reg0 = A[g][2t, 2t+1], reg1 = A[g+8][2t, 2t+1], reg2 = A[g][2t+8, +9],
//               reg3 = A[g+8][2t+8, +9];  B: reg0 = B[2t, 2t+1][g], reg1 = B[2t+8, +9][g]
//   m16n8k8  A: reg0 = A[g][2t, 2t+1], reg1 = A[g+8][2t, 2t+1];  B: reg0 = B[2t, 2t+1][g]
//   C (both):   c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]
// ldmatrix.x4 (lane 8j + i gives row i of matrix j): lane (g, t) gets row g, columns 2t, 2t+1
// of each matrix; with .trans, column g, rows 2t, 2t+1. A K or V row of the ring is one 8x8
// matrix per 16-byte chunk (8 tokens x 8 dims), so for K (B = K^T, B[k][n] = K[token n][dim
// k]) plain ldmatrix gives B registers, and for V (A = V^T, A[m][k] = V[token k][dim m])
// ldmatrix.trans gives A registers. The ring keeps the default kernel's swizzle, so the 8
// rows of a matrix (8 consecutive tokens, one chunk each) fall in 8 distinct bank groups.
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ void mma_bf16_16816(float c[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_bf16_1688(float c[4], u32 a0, u32 a1, u32 b0) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(b0));
}
// "memory": the ring is written by cp.async and reused across __syncwarp; keep the loads on
// their side of it.
__device__ __forceinline__ void ldsm_x4(u32 r[4], const uint4* row) {
    const u32 at = (u32)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(at) : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(u32 r[4], const uint4* row) {
    const u32 at = (u32)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(at) : "memory");
}
__device__ __forceinline__ u32 bf16x2_bits(__nv_bfloat162 v) { return *reinterpret_cast<u32*>(&v); }

template <int D, int HEADS, int S, int TT, int W>
__device__ __forceinline__ void paged_attention_decode_mma(
    __nv_bfloat16* __restrict__ out,                // [num_seqs, num_heads, head_dim]
    float* __restrict__ tmp_out,                    // [num_seqs, num_heads, max_partitions, head_dim]
    float* __restrict__ max_logits,                 // [num_seqs, num_heads, max_partitions]
    float* __restrict__ exp_sums,                   // [num_seqs, num_heads, max_partitions]
    const __nv_bfloat16* __restrict__ query,        // [num_seqs, num_heads, head_dim]
    const __nv_bfloat16* __restrict__ key_cache,    // [num_blocks, block_size, num_kv_heads, head_dim]
    const __nv_bfloat16* __restrict__ value_cache,  // [num_blocks, block_size, num_kv_heads, head_dim]
    const u32* __restrict__ block_tables,           // [num_seqs, max_blocks_per_seq]
    const u32* __restrict__ seq_lens,               // [num_seqs]
    u32* __restrict__ tickets,                      // [num_seqs, head groups], 0 between launches; or null
    float scale, u32 num_heads, u32 num_kv_heads, u32 block_size, u32 max_blocks_per_seq,
    u32 min_partition, u32 early,
    u32 head_group,                                 // which HEADS query heads: blockIdx.x, but in a cluster
    __nv_bfloat16* s_out) {                         // [HEADS, head_dim] in shared memory, or null: `out`
    using R = Ring<D, S, TT>;
    constexpr int CHUNKS = R::CHUNKS, STAGES = R::STAGES;
    constexpr int WT = TT / W;           // tokens of a tile this warp owns
    constexpr int SUBS = WT / 8;         // 8-token column blocks of q·k (k blocks of p·V)
    constexpr int KSTEPS = D / 16;       // q·k: 16-dim steps (m16n8k16)
    constexpr int MTILES = D / 16;       // p·V: 16-dim row blocks of O^T (m16n8k8)
    constexpr int COPIES = WT * CHUNKS / 32;  // 16-byte copies per lane per tile, K (and V)
    static_assert(HEADS <= 8, "heads are rows 0..7 of the mma");
    static_assert(WT % 8 == 0 && KSTEPS % 2 == 0 && MTILES % 2 == 0, "layout");
    static_assert(WT * CHUNKS % 32 == 0, "whole copies per lane");
    static_assert(W * HEADS * D * 4 <= STAGES * R::STAGE_CHUNKS * 16, "merge fits the ring");

    extern __shared__ uint4 s_ring[];               // [STAGES][K, V][TT][CHUNKS], swizzled
    __shared__ u32 s_table[MAX_PARTITION + 1];
    __shared__ float s_wm[W][8], s_wl[W][8];  // each warp's (m, l) per head

    // Early (see the header): the step's tables and the context's older K/V rows were written
    // before the previous kernel started, so they are read before waiting for it; only the
    // row it writes, each sequence's last token, and q wait.
    if (!early) {
        wait_for_previous_kernel();
        allow_next_kernel();
    }
    const u32 first_head = head_group * HEADS, seq = blockIdx.y, part = blockIdx.z;
    const u32 kv_head = first_head / (num_heads / num_kv_heads);
    const u32 seq_len = seq_lens[seq];
    const u32 partition_size = partition_tokens(seq_len, gridDim.z, min_partition);
    const u32 start = part * partition_size;
    if (start >= seq_len) return;  // early or not: a block may end without waiting
    const u32 end = min(start + partition_size, seq_len);
    const u32 num_tiles = (end - start + TT - 1) / TT;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t4 = lane % 4;
    const u32 fresh = seq_len - 1;  // the token whose K/V the previous kernel wrote

    const u32 first_block = start / block_size;
    const u32 num_entries = (end - 1) / block_size - first_block + 1;
    const u32* table = block_tables + (size_t)seq * max_blocks_per_seq + first_block;
    for (u32 i = threadIdx.x; i < num_entries; i += W * 32) s_table[i] = table[i];
    __syncthreads();  // the only barrier before the merge

    // This warp's rows of tile `tile`: a lane copies chunks lane, lane + 32, ... of them.
    // `rows`: ALL_ROWS, or all but the fresh token's (BUT_FRESH), or only it (ONLY_FRESH).
    enum { ALL_ROWS, BUT_FRESH, ONLY_FRESH };
    auto load_rows = [&](u32 tile, int stage, int rows = ALL_ROWS) {
        uint4* k_dst = s_ring + stage * R::STAGE_CHUNKS;
        uint4* v_dst = k_dst + TT * CHUNKS;
#pragma unroll
        for (int i = 0; i < COPIES; i++) {
            const int idx = i * 32 + lane;
            const int r = warp * WT + idx / CHUNKS, c = idx % CHUNKS;
            const u32 tok = start + tile * TT + r;
            if ((rows == BUT_FRESH && tok == fresh) || (rows == ONLY_FRESH && tok != fresh)) continue;
            const bool valid = tok < end;
            size_t offset = 0;
            if (valid) {
                const u32 block = s_table[tok / block_size - first_block];
                const size_t row = ((size_t)block * block_size + tok % block_size) * num_kv_heads + kv_head;
                offset = row * D + c * 8;
            }
            const int slot = r * CHUNKS + swizzle(r, c);
            cp_async16(k_dst + slot, key_cache + offset, valid);
            cp_async16(v_dst + slot, value_cache + offset, valid);
        }
    };
    if (early) {
        // Tile 0 but the fresh row before the wait; that row into the same copy group after it
        // (copies join a group when it is committed), then the other tiles as usual.
        load_rows(0, 0, BUT_FRESH);
        wait_for_previous_kernel();
        allow_next_kernel();
        load_rows(0, 0, ONLY_FRESH);
        cp_async_commit();
#pragma unroll
        for (int s = 1; s < STAGES - 1; s++) {
            if (s < num_tiles) load_rows(s, s);
            cp_async_commit();
        }
    } else {
#pragma unroll
        for (int s = 0; s < STAGES - 1; s++) {
            if (s < num_tiles) load_rows(s, s);
            cp_async_commit();
        }
    }

    // q as the A operand of q·k: row g = head first_head + g (zero past HEADS), bf16 as stored.
    u32 qa[KSTEPS][2];  // [k step][dims 2t.. , dims 2t+8..]
    {
        const __nv_bfloat16* q_row = query + ((size_t)seq * num_heads + first_head + g) * D;
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ks++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                __nv_bfloat162 v = __floats2bfloat162_rn(0.0f, 0.0f);
                if (g < HEADS) {
                    v.x = q_row[ks * 16 + half * 8 + 2 * t4];
                    v.y = q_row[ks * 16 + half * 8 + 2 * t4 + 1];
                }
                qa[ks][half] = bf16x2_bits(v);
            }
    }

    // This lane's softmax state is head g's (the same on the 4 lanes of a quad; l is the
    // lane's own share, summed over the quad at the end). acc[mt]: O^T rows (dims) mt*16 + g
    // and + 8, columns (heads) 2t and 2t + 1.
    float m_run = -INFINITY, l_run = 0.0f;
    float acc[MTILES][4];
#pragma unroll
    for (int mt = 0; mt < MTILES; mt++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[mt][i] = 0.0f;

    // ldmatrix addresses: lane 8j + i names row i of matrix j; the matrices are chunks.
    const int lrow = lane % 8, lmat = lane / 8;

    for (u32 t = 0; t < num_tiles; t++) {
        cp_async_wait<STAGES - 2>();  // this lane's copies of tile t have landed
        __syncwarp();                 // the warp's have; and its reads of tile t - 1 are done
        if (t + STAGES - 1 < num_tiles) load_rows(t + STAGES - 1, (t + STAGES - 1) % STAGES);
        cp_async_commit();
        const u32 first_tok = start + t * TT + warp * WT;
        if (first_tok >= end) continue;  // warp-uniform: the tail tile has none of this warp's tokens
        const uint4* k_s = s_ring + (t % STAGES) * R::STAGE_CHUNKS;
        const uint4* v_s = k_s + TT * CHUNKS;

        // q·k for this warp's WT tokens, 8 at a time.
        float sc[SUBS][2];
#pragma unroll
        for (int u = 0; u < SUBS; u++) {
            float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            const int r = warp * WT + u * 8 + lrow;
#pragma unroll
            for (int kk = 0; kk < KSTEPS / 2; kk++) {
                u32 b[4];  // chunks 4kk .. 4kk+3 of 8 rows: B of k steps 2kk and 2kk + 1
                ldsm_x4(b, k_s + r * CHUNKS + swizzle(r, 4 * kk + lmat));
                mma_bf16_16816(c, qa[2 * kk][0], 0u, qa[2 * kk][1], 0u, b[0], b[1]);
                mma_bf16_16816(c, qa[2 * kk + 1][0], 0u, qa[2 * kk + 1][1], 0u, b[2], b[3]);
            }
            // c0, c1: head g, tokens 2t, 2t+1 of the 8 (c2, c3: rows 8..15, padding).
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const u32 tok = first_tok + u * 8 + 2 * t4 + e;
                sc[u][e] = tok < end ? c[e] * scale : -INFINITY;
            }
        }

        // Online softmax over the warp's tokens of the tile: max over the quad's 4 lanes.
        float mx = -INFINITY;
#pragma unroll
        for (int u = 0; u < SUBS; u++) mx = fmaxf(mx, fmaxf(sc[u][0], sc[u][1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run, mx);  // finite: the warp has a valid token here
        const float corr = __expf(m_run - m_new);  // 0 on the warp's first tile
        m_run = m_new;
        u32 p_hi[SUBS], p_lo[SUBS];
        float p_sum = 0.0f;
#pragma unroll
        for (int u = 0; u < SUBS; u++) {
            const float p0 = __expf(sc[u][0] - m_new), p1 = __expf(sc[u][1] - m_new);
            p_sum += p0 + p1;
            const __nv_bfloat162 hi = __floats2bfloat162_rn(p0, p1);
            const float2 hf = __bfloat1622float2(hi);
            p_hi[u] = bf16x2_bits(hi);
            p_lo[u] = bf16x2_bits(__floats2bfloat162_rn(p0 - hf.x, p1 - hf.y));
        }
        l_run = l_run * corr + p_sum;

        // Rescale: this lane's accumulator columns are heads 2t and 2t + 1, whose factors
        // live on lanes 8t (g = 2t) and 8t + 4 (g = 2t + 1).
        const float corr0 = __shfl_sync(0xffffffffu, corr, 8 * t4);
        const float corr1 = __shfl_sync(0xffffffffu, corr, 8 * t4 + 4);
#pragma unroll
        for (int mt = 0; mt < MTILES; mt++) {
            acc[mt][0] *= corr0;
            acc[mt][1] *= corr1;
            acc[mt][2] *= corr0;
            acc[mt][3] *= corr1;
        }

        // p·V: O^T[dims x heads] += V^T[dims x 8 tokens] P^T[8 tokens x heads].
#pragma unroll
        for (int u = 0; u < SUBS; u++) {
            const int r = warp * WT + u * 8 + lrow;
#pragma unroll
            for (int mm = 0; mm < MTILES / 2; mm++) {
                u32 a[4];  // chunks 4mm .. 4mm+3 transposed: A of row blocks 2mm and 2mm + 1
                ldsm_x4_trans(a, v_s + r * CHUNKS + swizzle(r, 4 * mm + lmat));
                mma_bf16_1688(acc[2 * mm], a[0], a[1], p_hi[u]);
                mma_bf16_1688(acc[2 * mm + 1], a[2], a[3], p_hi[u]);
                mma_bf16_1688(acc[2 * mm], a[0], a[1], p_lo[u]);
                mma_bf16_1688(acc[2 * mm + 1], a[2], a[3], p_lo[u]);
            }
        }
    }

    // Merge the W warps' states through the idle ring: s_acc[warp][head][dim].
    cp_async_wait<0>();
    l_run += __shfl_xor_sync(0xffffffffu, l_run, 1);
    l_run += __shfl_xor_sync(0xffffffffu, l_run, 2);
    __syncthreads();  // every warp is done with the ring
    float* s_acc = reinterpret_cast<float*>(s_ring);
    if (t4 == 0) {
        s_wm[warp][g] = m_run;  // -inf (and l = 0, acc = 0) for a warp that saw no token
        s_wl[warp][g] = l_run;
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const int h = 2 * t4 + e;
        if (h < HEADS) {
            float* dst = s_acc + (warp * HEADS + h) * D;
#pragma unroll
            for (int mt = 0; mt < MTILES; mt++) {
                dst[mt * 16 + g] = acc[mt][e];
                dst[mt * 16 + g + 8] = acc[mt][2 + e];
            }
        }
    }
    __syncthreads();
    const u32 num_partitions = gridDim.z;
    for (int idx = threadIdx.x; idx < HEADS * D; idx += W * 32) {
        const int h = idx / D, d = idx % D;
        float big_m = -INFINITY;
#pragma unroll
        for (int w = 0; w < W; w++) big_m = fmaxf(big_m, s_wm[w][h]);
        float big_l = 0.0f, o = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) {
            const float f = __expf(s_wm[w][h] - big_m);  // 0 for a warp without tokens
            big_l += s_wl[w][h] * f;
            o += s_acc[(w * HEADS + h) * D + d] * f;
        }
        const size_t head_row = (size_t)seq * num_heads + first_head + h;
        if (num_partitions == 1) {
            const __nv_bfloat16 v = __float2bfloat16(o / big_l);
            if (s_out) s_out[h * D + d] = v;
            else out[head_row * D + d] = v;
        } else {
            const size_t p = head_row * num_partitions + part;
            tmp_out[p * D + d] = o;
            if (d == 0) {
                max_logits[p] = big_m;
                exp_sums[p] = big_l;
            }
        }
    }
    if (num_partitions == 1 || tickets == nullptr) return;
    merge_partitions_if_last<D, HEADS>(out, tmp_out, max_logits, exp_sums, tickets, seq, seq_len,
                                       partition_size, num_heads, first_head);
}

// The entry points NVRTC exports, one per (head size D, tile tokens T, ring stages S, query
// heads per block H): paged_attention_decode_d{D}_t{T}_s{S}_h{H}. The Rust side picks H as the
// largest of 8, 4, 3, 2, 1 that divides num_heads / num_kv_heads, the ring by head size
// (`rings` in paged_attention.rs: the default first, the others kept so that one bench run
// times them side by side), and launches with the ring's bytes of dynamic shared memory.
#define DECODE_ARGS                                                                            \
    __nv_bfloat16 *out, float *tmp_out, float *max_logits, float *exp_sums,                    \
        const __nv_bfloat16 *query, const __nv_bfloat16 *key_cache,                            \
        const __nv_bfloat16 *value_cache, const u32 *block_tables, const u32 *seq_lens,         \
        u32 *tickets, float scale, u32 num_heads, u32 num_kv_heads, u32 block_size, u32 max_blocks_per_seq,   \
        u32 min_partition, u32 early
#define DECODE_NAMES                                                                           \
    out, tmp_out, max_logits, exp_sums, query, key_cache, value_cache, block_tables, seq_lens, \
        tickets, scale, num_heads, num_kv_heads, block_size, max_blocks_per_seq, min_partition
// `early` (mma kernel only; the shared-tile kernel always waits first): read the block tables
// and the context's K/V rows before waiting for the previous kernel, all but each sequence's
// last token, which that kernel writes. The caller's promise: a decode step, whose previous
// kernel wrote no K/V row but those last tokens', nor the tables.
#define DECODE(D, T, S, H)                                                                     \
    extern "C" __global__ void __launch_bounds__(NUM_THREADS)                                  \
        paged_attention_decode_d##D##_t##T##_s##S##_h##H(DECODE_ARGS) {                        \
        PDL_ENTRY();                                                                           \
        (void)early;                                                                           \
        paged_attention_decode<D, H, S, T>(DECODE_NAMES);                                      \
    }
#define DECODE_HEADS(D, T, S) \
    DECODE(D, T, S, 1) DECODE(D, T, S, 2) DECODE(D, T, S, 3) DECODE(D, T, S, 4) DECODE(D, T, S, 8)
DECODE_HEADS(64, 64, 2) DECODE_HEADS(64, 64, 3) DECODE_HEADS(64, 32, 4)
DECODE_HEADS(128, 32, 2) DECODE_HEADS(128, 32, 3)
// The mma variant: paged_attention_decode_mma_d{D}_t{T}_s{S}_h{H}, 4 warps a block.
#define DECODE_MMA(D, T, S, H)                                                                 \
    extern "C" __global__ void __launch_bounds__(NUM_THREADS)                                  \
        paged_attention_decode_mma_d##D##_t##T##_s##S##_h##H(DECODE_ARGS) {                    \
        paged_attention_decode_mma<D, H, S, T, NUM_WARPS>(DECODE_NAMES, early, blockIdx.x, nullptr); \
    }
#define DECODE_MMA_HEADS(D, T, S)                                                              \
    DECODE_MMA(D, T, S, 1) DECODE_MMA(D, T, S, 2) DECODE_MMA(D, T, S, 3) DECODE_MMA(D, T, S, 4) \
        DECODE_MMA(D, T, S, 8)
// Per head size: 16 KB tiles as the default kernel's in 2 and 3 stages (a warp's copies of
// 1 or 2 tiles in flight while it computes), and 32 KB tiles in 2 stages (twice the tokens
// per warp per round: half the waits, softmax reductions and rescales of the accumulator per
// byte, at the price of resident blocks).
DECODE_MMA_HEADS(64, 64, 2) DECODE_MMA_HEADS(64, 64, 3) DECODE_MMA_HEADS(64, 128, 2)
DECODE_MMA_HEADS(128, 32, 2) DECODE_MMA_HEADS(128, 32, 3) DECODE_MMA_HEADS(128, 64, 2)
// The wide single pass: paged_attention_decode_mma_d{D}_t{T}_s{S}_w{W}_h{H}, W warps a block.
// For a small batch with short contexts (`PagedAttention::with_wide_single_pass`): one block
// per sequence and head group takes the whole context, its W warps splitting each tile as the
// four warps of the kernels above do, and merges their states in shared memory: the split-K
// partitions become warps, and the reduce kernel (a launch, and a round trip through global
// memory after a wait) goes away. A tile of T = 16 W tokens gives each warp 16 rows at head
// size 64 (8 at 128), and one tile holds a decode-b1 context (128-256 tokens): with early reads
// it is all in flight before the wait.
#define DECODE_MMA_WIDE(D, T, S, W, H)                                                         \
    extern "C" __global__ void __launch_bounds__(W * 32)                                       \
        paged_attention_decode_mma_d##D##_t##T##_s##S##_w##W##_h##H(DECODE_ARGS) {             \
        paged_attention_decode_mma<D, H, S, T, W>(DECODE_NAMES, early, blockIdx.x, nullptr);         \
    }
#define DECODE_MMA_WIDE_HEADS(D, T, S, W)                                                      \
    DECODE_MMA_WIDE(D, T, S, W, 1) DECODE_MMA_WIDE(D, T, S, W, 2) DECODE_MMA_WIDE(D, T, S, W, 3) \
        DECODE_MMA_WIDE(D, T, S, W, 4) DECODE_MMA_WIDE(D, T, S, W, 8)
DECODE_MMA_WIDE_HEADS(64, 256, 2, 16) DECODE_MMA_WIDE_HEADS(128, 128, 2, 16)
// ---------------------------------------------------------------------------------------------
// Decode attention and o_proj in one launch (`paged_attention_o_proj_*`, the wide single pass
// only; `PagedAttention::decode_o_proj`). At batch 1 o_proj is a kernel of its own whose work
// is tiny (the SmolLM2-135M shape's is 0.66 MB) and whose cost is a kernel boundary and a few
// dependent trips to memory after it: a build that skipped it (wrong tokens, right timing)
// ran the 135M shape's step 2.4 µs a layer faster and the 1B shape's 3.0.
//
// Work split: a thread block cluster per (sequence, head group) of C blocks. Block 0 is the
// wide pass above, its output (HEADS heads of D, bf16, as the unfused kernel stores it) kept in
// its shared memory. Blocks 1..C-1 each own a share of o_proj's rows: before anything else
// they copy their rows' HEADS·D columns of W_o (the columns this head group's output
// multiplies) into shared memory, which needs nothing from the previous kernel, so it streams
// while that kernel and the attention run. At the cluster barrier block 0's output is ready;
// each block reads it from block 0's shared memory (DSMEM) and dots it with its rows: a warp a
// row, lane l taking 16-byte chunks l, l + 32, ... of the row, then a warp sum.
//
// The output is o_proj's, unsummed: the head groups' columns are in different clusters, so
// each writes its partial sum, partials[seq, group, row] (f32), and the next kernel (the gate/up
// GEMV's norm prologue, gemv.cu) adds the groups in order and rounds to bf16, where the unfused
// o_proj would have rounded its sum: the same values up to the order of the f32 additions.
template <int D, int HEADS, int S, int TT, int W>
__device__ __forceinline__ void paged_attention_o_proj(
    __nv_bfloat16* __restrict__ out, float* __restrict__ tmp_out, float* __restrict__ max_logits,
    float* __restrict__ exp_sums, const __nv_bfloat16* __restrict__ query,
    const __nv_bfloat16* __restrict__ key_cache, const __nv_bfloat16* __restrict__ value_cache,
    const u32* __restrict__ block_tables, const u32* __restrict__ seq_lens, u32* __restrict__ tickets,
    float scale, u32 num_heads, u32 num_kv_heads, u32 block_size, u32 max_blocks_per_seq,
    u32 min_partition, u32 early,
    float* __restrict__ partials,          // [num_seqs, num_heads / HEADS, hidden]
    const __nv_bfloat16* __restrict__ w_o, // [hidden, num_heads * head_dim]
    u32 hidden) {
    constexpr int KC = HEADS * D;        // columns of W_o this head group multiplies
    constexpr int CH = KC / 8;           // 16-byte chunks of them a row
    constexpr int LANE_CHUNKS = (CH + 31) / 32;
    static_assert(KC % 8 == 0, "whole chunks");
    __shared__ __align__(16) __nv_bfloat16 s_attn[KC];  // block 0: the head group's output
    extern __shared__ uint4 s_w[];                       // blocks 1..: [rows, CH] of W_o
    const u32 rank = cluster_rank(), blocks = cluster_blocks();
    const u32 group = blockIdx.x / blocks, groups = gridDim.x / blocks, seq = blockIdx.y;

    if (rank == 0) {
        // A padded sequence (no tokens) returns from the pass without an output: zeros, then.
        for (int i = threadIdx.x; i < KC; i += W * 32) s_attn[i] = __float2bfloat16(0.0f);
        __syncthreads();
        paged_attention_decode_mma<D, HEADS, S, TT, W>(
            out, tmp_out, max_logits, exp_sums, query, key_cache, value_cache, block_tables, seq_lens,
            tickets, scale, num_heads, num_kv_heads, block_size, max_blocks_per_seq, min_partition,
            early, group, s_attn);
        __syncthreads();  // every thread's share of s_attn is written
        cluster_sync();   // the output is the cluster's
        cluster_sync();   // the peers have read it: the block may leave
        return;
    }

    // This block's rows: an even share of `hidden` over blocks 1..C-1.
    const u32 per = (hidden + blocks - 2) / (blocks - 1);
    const u32 r0 = (rank - 1) * per;
    const u32 rows = r0 < hidden ? min(per, hidden - r0) : 0;
    const size_t ld = (size_t)num_heads * D;
    const __nv_bfloat16* w_rows = w_o + (size_t)r0 * ld + (size_t)group * KC;
    for (u32 i = threadIdx.x; i < rows * CH; i += W * 32)
        cp_async16(s_w + i, w_rows + (size_t)(i / CH) * ld + (i % CH) * 8, true);
    cp_async_commit();
    allow_next_kernel();  // what this block reads of other kernels' output, block 0 waited for

    cluster_sync();  // block 0's output is in its shared memory
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    f32x8 x[LANE_CHUNKS] = {};
    const u32 s_attn_addr = (u32)__cvta_generic_to_shared(s_attn);
#pragma unroll
    for (int j = 0; j < LANE_CHUNKS; j++) {
        const int c = lane + 32 * j;
        if (c < CH) x[j] = unpack8(ld_cluster_v4(s_attn_addr + 16 * c, 0));
    }
    cluster_arrive();  // done with block 0's shared memory (its second barrier)
    cp_async_wait<0>();
    __syncthreads();  // every thread's copies of W_o have landed

    // Four rows a warp at once, so that their warp sums overlap.
    float* dst = partials + ((size_t)seq * groups + group) * hidden + r0;
    for (u32 r = warp * 4; r < rows; r += W * 4) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (r + i >= rows) break;
#pragma unroll
            for (int j = 0; j < LANE_CHUNKS; j++) {
                const int c = lane + 32 * j;
                if (c < CH) {
                    const f32x8 w = unpack8(s_w[(r + i) * CH + c]);
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[i] += w.v[e] * x[j].v[e];
                }
            }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) acc[i] = warp_sum(acc[i]);
        if (lane == 0) {
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (r + i < rows) dst[r + i] = acc[i];
        }
    }
    cluster_wait();  // the second barrier's other half (block 0 waits on it)
}
// paged_attention_o_proj_d{D}_t{T}_s{S}_w{W}_h{H}: the wide rings', launched in clusters of C
// blocks along x (grid: head groups · C, sequences) with max(the ring's bytes, a block's rows ·
// H · D bf16) of dynamic shared memory.
#define ATTENTION_O_PROJ(D, T, S, W, H)                                                        \
    extern "C" __global__ void __launch_bounds__(W * 32)                                       \
        paged_attention_o_proj_d##D##_t##T##_s##S##_w##W##_h##H(                               \
            DECODE_ARGS, float* partials, const __nv_bfloat16* w_o, u32 hidden) {              \
        paged_attention_o_proj<D, H, S, T, W>(DECODE_NAMES, early, partials, w_o, hidden);     \
    }
#define ATTENTION_O_PROJ_HEADS(D, T, S, W)                                                     \
    ATTENTION_O_PROJ(D, T, S, W, 1) ATTENTION_O_PROJ(D, T, S, W, 2)                            \
        ATTENTION_O_PROJ(D, T, S, W, 3) ATTENTION_O_PROJ(D, T, S, W, 4)                        \
            ATTENTION_O_PROJ(D, T, S, W, 8)
ATTENTION_O_PROJ_HEADS(64, 256, 2, 16) ATTENTION_O_PROJ_HEADS(128, 128, 2, 16)
#define REDUCE(D)                                                                              \
    extern "C" __global__ void paged_attention_reduce_d##D(                                    \
        __nv_bfloat16 *out, const float *tmp_out, const float *max_logits,                     \
        const float *exp_sums, const u32 *seq_lens, u32 max_partitions, u32 min_partition) {   \
        PDL_ENTRY();                                                                           \
        paged_attention_reduce<D>(out, tmp_out, max_logits, exp_sums, seq_lens,                \
                                  max_partitions, min_partition);                              \
    }
REDUCE(64) REDUCE(128)
