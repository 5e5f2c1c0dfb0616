// A step's inputs onto the device in one launch: the engine's persistent input buffers
// (engine/src/backend/cuda_step.rs; vLLM's GPUModelRunner keeps the same kind) filled by a
// kernel instead of by copies.
//
// The host writes a step's metadata (token ids, positions, KV slots, sequence starts and
// lengths, sampling parameters: one packed run of arrays) and its block tables' used corner
// into page-locked memory. Moving them with the copy engine (`cuMemcpyHtoDAsync`, and a 2-D
// copy for the tables) cost the stream about 8 µs per copy between two decode steps' graphs on
// an H200, for a few KB: the copy engine's start, not the bytes. With unified addressing a
// kernel reads page-locked host memory itself, across PCIe: every thread loads its 16 bytes at
// once, one round trip for the whole step, and writes them where the step's kernels read them.
// Async scheduling's hand-over (a decode's input id replaced by the id the previous step
// sampled, which only the device has yet) happens on the way, so no second kernel is needed.
//
// The loads from `staged` come before the wait for the previous kernel: the host wrote those
// bytes before the launch, so under programmatic dependent launch the PCIe round trip overlaps
// the previous kernel's tail. What the previous step's kernels touched (they read `packed` and
// `tables`, their sampler wrote `sampled`) is written or read only after the wait.
//
// One item per thread: a 16-byte word of the packed arrays, or one block-table entry of the
// corner (`rows` rows of `used` entries, into the first columns of a `width`-wide matrix).

#define TAKE_NONE 0xffffffffu  // in from_rows: this token keeps its id (sampling.rs' TAKE_NONE)

extern "C" __global__ void prepare_inputs_kernel(
    uint4* __restrict__ packed,             // [packed_words] the step's arrays, on the device
    const uint4* __restrict__ staged,       // [packed_words] the same as the host wrote them
    u32 packed_words,
    u32 ids_word,                           // where the input ids start in `packed`, in words
    u32 from_rows_word,                     // where `from_rows` starts: [num_tokens] u32 rows
    u32 num_tokens,                         // of `sampled` (or TAKE_NONE); 0: no hand-over
    const u32* __restrict__ sampled,        // [num_sampled] the previous step's sampled ids
    u32 num_sampled,
    u32* __restrict__ tables,               // [>= rows, width] the device's block tables
    const u32* __restrict__ staged_tables,  // [rows, used] their corner; null: unchanged
    u32 rows, u32 used, u32 width) {
    const u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    const u32 table_items = staged_tables ? rows * used : 0;
    const u32 ids_words = (num_tokens + 3) / 4;
    const bool is_word = i < packed_words;
    const bool is_entry = !is_word && i - packed_words < table_items;
    const bool takes = is_word && i >= ids_word && i - ids_word < ids_words;

    // Every host read first: this thread's word or entry, and the rows its ids may take.
    uint4 word = make_uint4(0, 0, 0, 0), from = make_uint4(TAKE_NONE, TAKE_NONE, TAKE_NONE, TAKE_NONE);
    u32 entry = 0;
    if (is_word) word = staged[i];
    if (takes) from = staged[from_rows_word + (i - ids_word)];
    if (is_entry) entry = staged_tables[i - packed_words];
    wait_for_previous_kernel();
    allow_next_kernel();

    if (takes) {
        u32* ids = reinterpret_cast<u32*>(&word);
        const u32* rows_of = reinterpret_cast<const u32*>(&from);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const u32 t = (i - ids_word) * 4 + j;
            const u32 r = rows_of[j];
            if (t < num_tokens && r != TAKE_NONE && r < num_sampled) ids[j] = sampled[r];
        }
    }
    if (is_word) packed[i] = word;
    if (is_entry) {
        const u32 e = i - packed_words;
        tables[(size_t)(e / used) * width + e % used] = entry;
    }
}
