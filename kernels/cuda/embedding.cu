// Token embedding lookup: out[t] = table[ids[t]], the CUDA twin of CpuBackend::embedding.
// One block per token. An id past the vocabulary writes a row of NaN rather than reading outside
// the table: the error shows up in the logits instead of as a silent wrong answer or a fault.
//
// Under tensor parallelism each rank holds a slice of the table (vLLM's VocabParallelEmbedding):
// rows first_id .. first_id + table_rows of the vocabulary. An id another rank holds gives a
// row of zeros here, and the all-reduce that follows adds in the one rank that has it. The
// whole table is the slice with first_id = 0 and table_rows = vocab_size.

extern "C" __global__ void embedding_kernel(
    __nv_bfloat16* __restrict__ out,          // [num_tokens, hidden_size]
    const u32* __restrict__ ids,              // [num_tokens]
    const __nv_bfloat16* __restrict__ table,  // [table_rows, hidden_size]: ids first_id..
    u32 table_rows, u32 first_id, u32 vocab_size, u32 hidden_size) {
    PDL_ENTRY();
    const size_t t = blockIdx.x;
    const u32 id = ids[t];
    __nv_bfloat16* o = out + t * hidden_size;
    if (id >= vocab_size) {
        for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) o[i] = __float2bfloat16(QUIET_NAN);
        return;
    }
    if (id < first_id || id - first_id >= table_rows) {  // another rank's row
        for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) o[i] = __float2bfloat16(0.0f);
        return;
    }
    const __nv_bfloat16* row = table + (size_t)(id - first_id) * hidden_size;
    const bool vec = hidden_size % 8 == 0 &&
        ((reinterpret_cast<size_t>(out) | reinterpret_cast<size_t>(table)) & 15) == 0;
    if (vec) {
        for (u32 i = threadIdx.x; i < hidden_size / 8; i += blockDim.x)
            reinterpret_cast<uint4*>(o)[i] = reinterpret_cast<const uint4*>(row)[i];
    } else {
        for (u32 i = threadIdx.x; i < hidden_size; i += blockDim.x) o[i] = row[i];
    }
}
