//! Everything attention needs to know about a batch, passed explicitly (no global context).
//!
//! A batch is the concatenation of every scheduled sequence's new tokens ("query tokens").
//! Sequence `s` owns query rows `query_start_loc[s]..query_start_loc[s + 1]`, and after this
//! step its KV cache holds `seq_lens[s]` tokens, the query tokens being the last of them. So a
//! decode has query length 1, a prefill chunk query length > 1, and a first prefill chunk
//! `seq_len == query_len`; one kernel handles them all.

// ANCHOR: attention_metadata
/// The batch layout attention reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttentionMetadata {
    /// `[num_tokens]` cache slot of each query token (where its key/value are written).
    pub slot_mapping: Vec<u64>,
    /// `[num_seqs + 1]` first query row of each sequence, then the total.
    pub query_start_loc: Vec<usize>,
    /// `[num_seqs]` tokens in the cache after this step (context + new).
    pub seq_lens: Vec<usize>,
    /// `[num_seqs, max_blocks_per_seq]` block tables, padded with 0.
    pub block_tables: Vec<u32>,
    pub max_blocks_per_seq: usize,
    pub block_size: usize,
}
// ANCHOR_END: attention_metadata

impl AttentionMetadata {
    pub fn num_seqs(&self) -> usize {
        self.seq_lens.len()
    }

    pub fn num_tokens(&self) -> usize {
        self.slot_mapping.len()
    }

    /// Sequence `s`'s block table.
    pub fn block_table(&self, s: usize) -> &[u32] {
        &self.block_tables[s * self.max_blocks_per_seq..(s + 1) * self.max_blocks_per_seq]
    }
}
