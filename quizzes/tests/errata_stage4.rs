//! Errata, Stage 4: attention's FLOPs, and so its arithmetic intensity (book/src/errata.md).
//!
//! The source counts `N × N × head_dim` FLOPs for QKᵀ in prefill and `1 × N × head_dim` in
//! decode: one FLOP per multiply-add. A multiply-add is two FLOPs (a multiply and an add), and
//! that is how every TFLOP/s ceiling counts, our measured GEMM's included (`2·M·N·K` per
//! second, `kernels/src/roofline.rs`). Counted one way and compared with a ceiling counted the
//! other, an operation lands at half its real intensity.
//!
//! The tests count the (query row, key) pairs the engine's own paged attention computes (from
//! what each row reads, `attention_cost` in `quizzes/src/gpu_calls.rs`), price each pair, and
//! compare with the source's figures and with the H200's ridge point.

use quizzes::engine_calls::call;

/// `attention_cost`'s `output` for one sequence of `seq_len` tokens, the last `query_len` of
/// them this step's rows, `heads` query and `kv_heads` KV heads of `d`, 2 bytes per element.
fn cost(
    seq_len: usize,
    query_len: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    output: &str,
) -> f64 {
    let args = format!(
        "seq_len = {seq_len}\nquery_len = {query_len}\nnum_heads = {heads}\n\
         num_kv_heads = {kv_heads}\nhead_dim = {d}\ndtype_bytes = 2\noutput = \"{output}\""
    );
    call("attention_cost", &toml::from_str(&args).unwrap()).unwrap()
}

/// The H200's ridge point, FLOPs per byte: the bf16 GEMM rate over the copy bandwidth, both
/// measured on 2026-11-28 (book/src/performance.md: 758–798 TFLOP/s, 4,194–4,223 GB/s). The
/// lowest and highest ratio those ranges allow.
const RIDGE: (f64, f64) = (758e12 / 4223e9, 798e12 / 4194e9);

#[test]
fn errata_decode_qk_is_two_flops_per_multiply_add() {
    let (n, d) = (512, 128);
    // The source: "Q @ K^T: 1 × N × head_dim FLOPs", "Total: ~2 × N × head_dim FLOPs".
    let source_qk = (n * d) as f64;
    let source_total = 2.0 * source_qk;
    // The engine's decode row reads n keys: n dot products of d multiply-adds.
    assert_eq!(cost(n, 1, 1, 1, d, "pairs"), n as f64);
    assert_eq!(cost(n, 1, 1, 1, d, "qk_flops"), 2.0 * source_qk);
    assert_eq!(cost(n, 1, 1, 1, d, "flops"), 2.0 * source_total);
    // The source's intensity, 0.5 FLOPs/byte ("(2 × N × head_dim) / (4 × N × head_dim)"), is
    // about 1 with the FLOPs counted right (a hair less: q and the output are bytes too).
    let intensity = cost(n, 1, 1, 1, d, "intensity");
    assert!((intensity - 1.0).abs() < 0.01, "{intensity}");
    // With grouped-query attention each key and value serves G query heads: about G.
    let llama_1b = cost(1024, 1, 32, 8, 64, "intensity");
    assert!((llama_1b - 4.0).abs() < 0.02, "{llama_1b}");
    // Either way far below the ridge: decode attention is memory-bound, as the source says.
    assert!(llama_1b < RIDGE.0);
}

#[test]
fn errata_prefill_qk_counts_two_flops_per_multiply_add_and_causal_attention_half_the_pairs() {
    let (n, d) = (512usize, 128usize);
    // The source: "Q @ K^T: N × N × head_dim FLOPs". The full N × N product is a GEMM of
    // [N, d] × [d, N]: N² dot products of d multiply-adds, 2·N²·d FLOPs.
    let source_qk = (n * n * d) as f64;
    let full_qk = 2.0 * (n * n * d) as f64;
    assert_eq!(full_qk, 2.0 * source_qk);
    // A causal kernel (the engine's) computes only the pairs on and below the diagonal,
    // N(N + 1)/2 of them: d·N(N + 1) FLOPs, close to the source's figure, but because half the
    // pairs cost twice what the source charges, not because its count was right.
    let pairs = cost(n, n, 1, 1, d, "pairs");
    assert_eq!(pairs, (n * (n + 1) / 2) as f64);
    assert_eq!(cost(n, n, 1, 1, d, "qk_flops"), (d * n * (n + 1)) as f64);
}

#[test]
fn errata_whether_a_512_token_prefill_is_compute_bound_depends_on_the_kv_heads() {
    // The source: "For N=512: 170 FLOPs/byte → COMPUTE-BOUND", from N/3, with one head's
    // Q, K and V read and nothing written.
    let source: f64 = 512.0 / 3.0;
    assert!((source - 170.67).abs() < 0.01);
    // Counted right (causal pairs, 2 FLOPs per multiply-add, the output written too), one KV
    // head per query head: (N + 1)/4 = 128, below the H200's ridge: not compute-bound there.
    let mha = cost(512, 512, 1, 1, 128, "intensity");
    assert!((mha - 513.0 / 4.0).abs() < 1e-9, "{mha}");
    assert!(mha < RIDGE.0, "{mha} vs ridge {RIDGE:?}");
    // With 4 query heads per KV head (Llama-3.2-1B), K and V cost a quarter as much per query
    // head: 0.4 · (N + 1) = 205, above it.
    let gqa = cost(512, 512, 32, 8, 64, "intensity");
    assert!((gqa - 0.4 * 513.0).abs() < 1e-9, "{gqa}");
    assert!(gqa > RIDGE.1, "{gqa} vs ridge {RIDGE:?}");
    // And the prompt length decides: at 256 tokens the same model is below it.
    assert!(cost(256, 256, 32, 8, 64, "intensity") < RIDGE.0);
}
