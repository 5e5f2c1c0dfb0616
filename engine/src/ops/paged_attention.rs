//! Causal attention whose keys and values are read from the paged KV cache through each
//! sequence's block table.

use std::sync::Mutex;

use super::attention_simd::{KeyRows, Simd, TransposedKeys};
use super::expf::exp_in_place;
use crate::attention::attention_metadata::AttentionMetadata;
use crate::backend::cpu_thread_pool::for_each_task;

// ANCHOR: paged_attention
#[allow(clippy::too_many_arguments)] // mirrors the CUDA kernel's signature
/// For each query token, attends over its sequence's cached tokens up to and including its
/// own position. Query head `h` uses KV head `h / (num_heads / num_kv_heads)` (GQA).
pub fn paged_attention(
    out: &mut [f32],     // [num_tokens, num_heads, head_dim]
    query: &[f32],       // [num_tokens, num_heads, head_dim]
    key_cache: &[f32],   // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &[f32], // [num_blocks, block_size, num_kv_heads, head_dim]
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
    meta: &AttentionMetadata,
) {
    let simd = Simd::detect(head_dim);
    paged_attention_with(
        simd,
        out,
        query,
        key_cache,
        value_cache,
        num_kv_heads,
        head_dim,
        scale,
        meta,
    );
}

#[allow(clippy::too_many_arguments)]
/// [`paged_attention`] with the inner loops' version chosen (benchmarks and tests compare
/// them; every version gives the same bits).
pub fn paged_attention_with(
    simd: Simd,
    out: &mut [f32],     // [num_tokens, num_heads, head_dim]
    query: &[f32],       // [num_tokens, num_heads, head_dim]
    key_cache: &[f32],   // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &[f32], // [num_blocks, block_size, num_kv_heads, head_dim]
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
    meta: &AttentionMetadata,
) {
    let num_tokens = meta.num_tokens();
    if num_tokens == 0 {
        return;
    }
    let width = query.len() / num_tokens; // num_heads * head_dim
    let num_heads = width / head_dim;
    let group = num_heads / num_kv_heads;
    let gw = group * head_dim; // the query heads of one KV head, in one row

    // One task per (KV head, run of up to QUERY_BLOCK consecutive rows of one sequence): the
    // `group` query heads of the run's rows read each cached key and value once per block of
    // keys, while it sits in L1. A decode row is a run of its own. Each task owns its rows'
    // outputs for its KV head in `by_kv_head` `[num_kv_heads, num_tokens, group · head_dim]`.
    let mut by_kv_head = vec![0.0f32; out.len()];
    let mut tasks = Vec::new();
    let mut rest = &mut by_kv_head[..];
    for kvh in 0..num_kv_heads {
        for s in 0..meta.num_seqs() {
            let (start, end) = (meta.query_start_loc[s], meta.query_start_loc[s + 1]);
            let first_pos = meta.seq_lens[s] - (end - start);
            for t0 in (start..end).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(end - t0);
                let (mine, tail) = rest.split_at_mut(rows * gw);
                let pos = first_pos + (t0 - start);
                tasks.push((
                    Run {
                        seq: s,
                        t0,
                        pos,
                        kvh,
                    },
                    mine,
                ));
                rest = tail;
            }
        }
    }
    let layer = Layer {
        query,
        key_cache,
        value_cache,
        shape: (num_kv_heads, group, head_dim),
        scale,
        meta,
    };
    // Each task's output behind a lock of its own, taken once by the one thread that runs it
    // (never contended: it only hands the `&mut` over to that thread).
    let tasks: Vec<Mutex<(Run, &mut [f32])>> = tasks.into_iter().map(Mutex::new).collect();
    for_each_task(tasks.len(), Scratch::default, |s, i| {
        let mut task = tasks[i].lock().unwrap_or_else(|e| e.into_inner());
        let (run, ref mut o) = *task;
        attend_run(s, o, &layer, run, simd)
    });
    // [kv head][token] → [token][kv head].
    for (t, row) in out.chunks_exact_mut(width).enumerate() {
        for (kvh, dst) in row.chunks_exact_mut(gw).enumerate() {
            dst.copy_from_slice(&by_kv_head[(kvh * num_tokens + t) * gw..][..gw]);
        }
    }
}

/// Rows per attention task: the run's keys are read once for all of them.
const QUERY_BLOCK: usize = 16;

/// Rows `t0..` of sequence `seq`, the first at position `pos`, for KV head `kvh`.
#[derive(Debug, Clone, Copy)]
struct Run {
    seq: usize,
    t0: usize,
    pos: usize,
    kvh: usize,
}

/// Keys per block of [`attend_run`]: 16 KB of keys (or values) stay in L1.
fn key_block(head_dim: usize) -> usize {
    (4096 / head_dim.max(1)).clamp(8, 512)
}

/// One task: `out[j][g] = softmax(q_jg · K[0..=pos+j] · scale) · V[0..=pos+j]` for the run's
/// rows `j` and the KV head's query heads `g`. Keys go by in blocks of [`key_block`]: every
/// row's scores for one block, then, after the softmax, every row's weighted values for one
/// block, so a block of keys or values comes from L2 once per task, not once per row and
/// head. Each output element is still one chain over the keys, in order.
fn attend_run(
    s: &mut Scratch,
    out: &mut [f32], // [rows, group, head_dim]
    layer: &Layer,
    run: Run,
    simd: Simd,
) {
    // With AVX-512 the whole task is compiled for it, so that the plain loops around the
    // vector ones (the softmax's maximum, subtraction and sums, the final scaling) use its
    // registers too; each lane does the scalar code's operations, so the bits are the same.
    // With AVX and FMA, the same for their 8-lane registers (compiled for baseline x86-64,
    // those loops would run 4 lanes at a time).
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: `Simd::Avx512` is only detected where the CPU has AVX-512F.
        Simd::Avx512 => return unsafe { attend_run_avx512(s, out, layer, run) },
        // SAFETY: `Simd::Avx` is only detected where the CPU has AVX and FMA.
        Simd::Avx => return unsafe { attend_run_avx(s, out, layer, run) },
        Simd::Portable => {}
    }
    attend_run_body(s, out, layer, run, simd)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,fma")]
unsafe fn attend_run_avx(s: &mut Scratch, out: &mut [f32], layer: &Layer, run: Run) {
    attend_run_body(s, out, layer, run, Simd::Avx)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_run_avx512(s: &mut Scratch, out: &mut [f32], layer: &Layer, run: Run) {
    attend_run_body(s, out, layer, run, Simd::Avx512)
}

/// What every task of one call reads.
struct Layer<'a> {
    query: &'a [f32],             // [num_tokens, num_heads, head_dim]
    key_cache: &'a [f32],         // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &'a [f32],       // [num_blocks, block_size, num_kv_heads, head_dim]
    shape: (usize, usize, usize), // (num_kv_heads, group, head_dim)
    scale: f32,
    meta: &'a AttentionMetadata,
}

/// [`attend_run`]'s work, inlined into each version.
#[inline(always)]
fn attend_run_body(
    s: &mut Scratch,
    out: &mut [f32], // [rows, group, head_dim]
    layer: &Layer,
    run: Run,
    simd: Simd,
) {
    let Layer {
        query,
        key_cache,
        value_cache,
        shape: (num_kv_heads, group, head_dim),
        scale,
        meta,
    } = *layer;
    let Scratch {
        rows,
        scores,
        inv,
        keys_t,
    } = s;
    let gw = group * head_dim;
    let width = num_kv_heads * gw;
    let num_rows = out.len() / gw;
    let num_keys = run.pos + num_rows; // the last row sees keys 0..=pos + num_rows - 1
    let sees = |j: usize| run.pos + j + 1; // row j's keys: 0..sees(j)

    // Cache row of each key position, following the block table.
    let (b, kv_row) = (meta.block_size, num_kv_heads * head_dim);
    let table = meta.block_table(run.seq);
    rows.clear();
    // Block by block: no division per key.
    rows.reserve(num_keys);
    rows.extend(
        table
            .iter()
            .flat_map(|&block| {
                let first = block as usize * b;
                (first..first + b).map(|slot| slot * kv_row + run.kvh * head_dim)
            })
            .take(num_keys),
    );
    let keys = KeyRows::new(rows, head_dim, key_cache.len().min(value_cache.len()));
    let kb = key_block(head_dim);

    // scores[j][g][p] = q_jg · k_p * scale, for p < sees(j)
    scores.resize(num_rows * group * num_keys, 0.0);
    let transpose = simd.transposes_keys(num_rows * group);
    for k0 in (0..num_keys).step_by(kb) {
        if transpose {
            // Copied dimension-major once, read by every row and head of the task.
            keys_t.fill(key_cache, keys.slice(k0..(k0 + kb).min(num_keys)));
        }
        for j in (0..num_rows).filter(|&j| sees(j) > k0) {
            let k1 = (k0 + kb).min(sees(j));
            let q = &query[(run.t0 + j) * width + run.kvh * gw..][..gw];
            if !transpose {
                // Every query head of the row in one pass over the block's keys.
                let sc = &mut scores[j * group * num_keys + k0..];
                simd.scores_heads(sc, num_keys, q, key_cache, keys.slice(k0..k1), scale);
                continue;
            }
            // The row's query heads together: each key load serves all of them.
            let sc = &mut scores[j * group * num_keys + k0..];
            keys_t.scores_heads(simd, sc, num_keys, q, k1 - k0, scale);
        }
    }
    // Softmax per row and query head, numerically stable (subtract the max), in place.
    for (i, sc) in scores.chunks_exact_mut(num_keys).enumerate() {
        let sc = &mut sc[..sees(i / group)];
        let max = max_of(sc);
        sc.iter_mut().for_each(|v| *v -= max);
        exp_in_place(sc); // f32::exp's bits, several at a time
    }
    // 1 / Σ per row and head, each Σ in the order of the keys.
    inv.clear();
    sums_in_order(scores, num_keys, |i| sees(i / group), inv);
    // out[j][g] = (Σ_p w[j][g][p] · v_p) / Σ
    // Head i = j * group + g's output is out[i * head_dim..] and its weights scores[i *
    // num_keys..]: the rows that see the whole block (all but the last few) are one run of
    // heads over the same keys, whose chains the vector code can run side by side.
    out.fill(0.0);
    for k0 in (0..num_keys).step_by(kb) {
        let k1 = (k0 + kb).min(num_keys);
        let whole = (0..num_rows).find(|&j| sees(j) >= k1).unwrap_or(num_rows);
        for j in (0..whole).filter(|&j| sees(j) > k0) {
            let k1 = sees(j); // inside this block
            let (o, w) = (
                &mut out[j * gw..][..gw],
                &scores[j * group * num_keys + k0..],
            );
            simd.add_weighted_values_heads(o, w, num_keys, value_cache, keys.slice(k0..k1));
        }
        if whole < num_rows {
            let (o, w) = (
                &mut out[whole * gw..],
                &scores[whole * group * num_keys + k0..],
            );
            simd.add_weighted_values_heads(o, w, num_keys, value_cache, keys.slice(k0..k1));
        }
    }
    for (o, &inv) in out.chunks_exact_mut(head_dim).zip(inv.iter()) {
        o.iter_mut().for_each(|o| *o *= inv);
    }
}

/// The largest of `v` (`-inf` if empty), as `f32::max` folds it, eight lanes at a time: a
/// maximum is the same in any order (a NaN is skipped either way; a `-0.0` found where
/// `+0.0` would be changes no `v - max` by more than the sign of a zero, and `exp` of either
/// zero is 1).
#[inline(always)]
fn max_of(v: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &x) in m.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    rest.iter()
        .chain(&m)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Pushes `1 / Σ_p w[i][p]` for every row `i` of `w` `[rows][stride]`, over `p < len(i)`,
/// each sum a chain in the order of `p` starting from `0.0`. The chains are independent, so
/// eight run side by side: an add waits for the one before it in its own chain only.
#[inline(always)]
fn sums_in_order(w: &[f32], stride: usize, len: impl Fn(usize) -> usize, inv: &mut Vec<f32>) {
    let rows = w.len() / stride.max(1);
    for i0 in (0..rows).step_by(8) {
        let m = 8.min(rows - i0);
        let mut sum = [0.0f32; 8];
        let mut done = 0;
        if m == 8 {
            done = (i0..i0 + 8).map(&len).min().unwrap_or(0);
            let w: [&[f32]; 8] = std::array::from_fn(|c| &w[(i0 + c) * stride..][..done]);
            for p in 0..done {
                for (s, w) in sum.iter_mut().zip(&w) {
                    *s += w[p];
                }
            }
        } else if m > 1 {
            // Fewer rows (a decode row's few query heads): their chains still interleave.
            done = (i0..i0 + m).map(&len).min().unwrap_or(0);
            let w: [&[f32]; 8] = std::array::from_fn(|c| match c < m {
                true => &w[(i0 + c) * stride..][..done],
                false => &[],
            });
            for p in 0..done {
                for (s, w) in sum[..m].iter_mut().zip(&w[..m]) {
                    *s += w[p];
                }
            }
        }
        for (c, s) in sum[..m].iter_mut().enumerate() {
            let i = i0 + c;
            *s = w[i * stride..][done..len(i)].iter().fold(*s, |s, &v| s + v);
        }
        inv.extend(sum[..m].iter().map(|s| 1.0 / s));
    }
}

/// One thread's buffers, reused by every task it runs.
#[derive(Default)]
struct Scratch {
    rows: Vec<usize>,       // [num_keys]: where each key (and value) starts in the cache
    scores: Vec<f32>,       // [rows, group, num_keys]: scores, then softmax weights
    inv: Vec<f32>,          // [rows, group]: 1 / Σ of each head's weights
    keys_t: TransposedKeys, // one block of keys, dimension-major (AVX-512 only)
}
// ANCHOR_END: paged_attention

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention_simd::dot_fused;

    /// The kernel as plain loops over one (token, KV head) at a time, its multiply-adds fused
    /// as the vector loops' are (since 2026-11-30; before, a multiply then an add): the
    /// blocked, vectorized kernel must give its bits.
    #[allow(clippy::too_many_arguments)]
    fn plain(
        out: &mut [f32],
        query: &[f32],
        key_cache: &[f32],
        value_cache: &[f32],
        num_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        meta: &AttentionMetadata,
    ) {
        let num_tokens = meta.num_tokens();
        let width = query.len() / num_tokens;
        let group = width / head_dim / num_kv_heads;
        let kv_row = num_kv_heads * head_dim;
        let mut row_info = Vec::new();
        for s in 0..meta.num_seqs() {
            let (start, end) = (meta.query_start_loc[s], meta.query_start_loc[s + 1]);
            let first_pos = meta.seq_lens[s] - (end - start);
            row_info.extend((0..end - start).map(|j| (s, first_pos + j)));
        }
        for (i, o) in out.chunks_mut(group * head_dim).enumerate() {
            let (t, kvh) = (i / num_kv_heads, i % num_kv_heads);
            let (s, pos) = row_info[t];
            let table = meta.block_table(s);
            let q = &query[t * width + kvh * group * head_dim..][..group * head_dim];
            let b = meta.block_size;
            let rows: Vec<usize> = (0..=pos)
                .map(|p| (table[p / b] as usize * b + p % b) * kv_row + kvh * head_dim)
                .collect();
            let mut scores = Vec::new();
            for &row in &rows {
                let k = &key_cache[row..][..head_dim];
                scores.extend(q.chunks_exact(head_dim).map(|qg| dot_fused(qg, k) * scale));
            }
            let (mut sums, mut maxes) = (vec![0.0f32; group], vec![f32::NEG_INFINITY; group]);
            for (j, &v) in scores.iter().enumerate() {
                maxes[j % group] = maxes[j % group].max(v);
            }
            for (j, v) in scores.iter_mut().enumerate() {
                *v = (*v - maxes[j % group]).exp();
                sums[j % group] += *v;
            }
            o.fill(0.0);
            for (p, &row) in rows.iter().enumerate() {
                let v = &value_cache[row..][..head_dim];
                for (g, og) in o.chunks_exact_mut(head_dim).enumerate() {
                    let w = scores[p * group + g];
                    og.iter_mut()
                        .zip(v)
                        .for_each(|(o, &v)| *o = w.mul_add(v, *o));
                }
            }
            for (g, og) in o.chunks_exact_mut(head_dim).enumerate() {
                let inv = 1.0 / sums[g];
                og.iter_mut().for_each(|o| *o *= inv);
            }
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
            })
            .collect()
    }

    /// A decode after 70 cached tokens, a 45-token chunk after 20 cached, and a 9-token first
    /// chunk, in shuffled blocks of 16: every version of the kernel this CPU has gives the
    /// plain loops' bits, for head sizes with and without a vector path (and with AVX-512,
    /// tasks that copy their keys dimension-major and tasks that read them in place).
    #[test]
    fn bitwise_the_plain_kernel() {
        let seqs: [(usize, usize); 3] = [(70, 1), (20, 45), (0, 9)];
        for (head_dim, kv_heads, group) in [(64, 3, 3), (8, 1, 4), (12, 2, 2), (128, 2, 1)] {
            let bs = 16;
            let blocks: usize = seqs.iter().map(|&(c, n)| (c + n).div_ceil(bs)).sum();
            let kv_row = kv_heads * head_dim;
            let cache_k = values(blocks * bs * kv_row, 1);
            let cache_v = values(blocks * bs * kv_row, 2);
            let mut meta = AttentionMetadata {
                block_size: bs,
                max_blocks_per_seq: 6,
                query_start_loc: vec![0],
                ..AttentionMetadata::default()
            };
            let mut next = 0u32;
            for &(cached, new) in &seqs {
                let nb = (cached + new).div_ceil(bs);
                // Blocks in reverse order, so no table is contiguous.
                let table: Vec<u32> = (0..nb as u32).rev().map(|b| next + b).collect();
                next += nb as u32;
                for p in cached..cached + new {
                    meta.slot_mapping
                        .push((table[p / bs] as usize * bs + p % bs) as u64);
                }
                meta.query_start_loc.push(meta.slot_mapping.len());
                meta.seq_lens.push(cached + new);
                meta.block_tables.extend(&table);
                meta.block_tables.extend(std::iter::repeat_n(0, 6 - nb));
            }
            let width = kv_heads * group * head_dim;
            let q = values(meta.num_tokens() * width, 3);
            let scale = 1.0 / (head_dim as f32).sqrt();
            let mut b = vec![f32::NAN; q.len()];
            plain(
                &mut b, &q, &cache_k, &cache_v, kv_heads, head_dim, scale, &meta,
            );
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for simd in Simd::available(head_dim) {
                let mut a = vec![f32::NAN; q.len()];
                paged_attention_with(
                    simd, &mut a, &q, &cache_k, &cache_v, kv_heads, head_dim, scale, &meta,
                );
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "{simd:?}, head_dim {head_dim}, {kv_heads}x{group} heads"
                );
            }
        }
    }
}
