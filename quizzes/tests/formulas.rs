//! The closed-form formulas the quiz explanations state, checked against the engine over
//! random inputs. If the engine's code changes (say, its slot mapping), these fail.

use engine::config::ModelConfig;
use engine::core::block::{blocks_needed, slot_for_position, BlockId};
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::model_executor::weights::{parameter_count, weight_bytes};
use engine::sequence::SeqId;
use engine::worker::cache_engine::{kv_cache_bytes_per_block, num_blocks_for_budget};
use proptest::prelude::*;
use quizzes::engine_calls::call;

fn args(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

fn config(layers: usize, heads: usize, group: usize, head_dim: usize, tied: bool) -> ModelConfig {
    let mut c = engine::tiny_model::tiny_config();
    c.num_hidden_layers = layers;
    c.num_key_value_heads = heads;
    c.num_attention_heads = heads * group;
    c.head_dim = head_dim;
    c.hidden_size = heads * group * head_dim;
    c.intermediate_size = 3 * head_dim;
    c.vocab_size = 1000 + layers;
    c.tie_word_embeddings = tied;
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// slot = table[p / B] · B + p mod B
    #[test]
    fn slot_formula(
        table in proptest::collection::vec(0u32..100_000, 1..20),
        block_size in 1usize..64,
        seed in any::<usize>(),
    ) {
        let position = seed % (table.len() * block_size);
        let blocks: Vec<BlockId> = table.iter().copied().map(BlockId).collect();
        let formula = table[position / block_size] as u64 * block_size as u64
            + (position % block_size) as u64;
        prop_assert_eq!(slot_for_position(&blocks, block_size, position).0, formula);
    }

    /// A position past the table's last block has no slot: the engine refuses it.
    #[test]
    fn no_slot_past_the_table(len in 1usize..8, block_size in 1usize..64, extra in 0usize..100) {
        let blocks: Vec<BlockId> = (0..len as u32).map(BlockId).collect();
        let position = len * block_size + extra;
        prop_assert!(std::panic::catch_unwind(|| slot_for_position(&blocks, block_size, position)).is_err());
    }

    /// blocks = ⌈n / B⌉, and the block manager allocates exactly that many.
    #[test]
    fn blocks_formula(n in 0usize..100_000, block_size in 1usize..256) {
        // Written out on purpose: this is the formula the quiz states, not a library call.
        #[allow(clippy::manual_div_ceil)]
        let formula = (n + block_size - 1) / block_size;
        prop_assert_eq!(blocks_needed(n, block_size), formula);
        let total = formula + 3;
        let mut m = BlockManager::new(block_size, Box::new(RefCountingAllocator::new(total)));
        prop_assert!(m.allocate_slots(SeqId(0), n));
        prop_assert_eq!(m.block_table(SeqId(0)).len(), formula);
        prop_assert_eq!(m.num_free_blocks(), 3);
    }

    /// KV bytes per block = 2 · layers · B · kv_heads · head_dim · bytes, and per token the same
    /// with B = 1; the CPU budget gives ⌊budget / bytes per f32 block⌋ blocks (at least 1).
    #[test]
    fn kv_cache_formulas(
        layers in 1usize..80, kv_heads in 1usize..16, group in 1usize..8,
        half_dim in 1usize..128, block_size in 1usize..64, bytes in 1usize..5,
        budget in 0usize..(1 << 34),
    ) {
        let c = config(layers, kv_heads, group, 2 * half_dim, false);
        let per_token = 2 * layers * kv_heads * 2 * half_dim * bytes;
        prop_assert_eq!(kv_cache_bytes_per_block(&c, 1, bytes), per_token);
        prop_assert_eq!(kv_cache_bytes_per_block(&c, block_size, bytes), block_size * per_token);
        let f32_block = 2 * layers * block_size * kv_heads * 2 * half_dim * 4;
        prop_assert_eq!(num_blocks_for_budget(&c, block_size, budget), (budget / f32_block).max(1));
    }

    /// GQA group size = query heads / KV heads.
    #[test]
    fn gqa_formula(kv_heads in 1usize..32, group in 1usize..16) {
        let c = config(2, kv_heads, group, 8, false);
        prop_assert_eq!(c.num_queries_per_kv(), group);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// params = V·h·(2, or 1 if tied) + L·(h·(H + 2·H_kv)·d + H·d·h + 3·h·I + 2·h) + h
    #[test]
    fn parameter_formula(
        layers in 1usize..40, kv_heads in 1usize..8, group in 1usize..5,
        half_dim in 1usize..16, tied in any::<bool>(),
    ) {
        let c = config(layers, kv_heads, group, 2 * half_dim, tied);
        let (v, h, i, d) = (c.vocab_size, c.hidden_size, c.intermediate_size, c.head_dim);
        let (q_heads, kv) = (c.num_attention_heads, c.num_key_value_heads);
        let per_layer = h * (q_heads + 2 * kv) * d + q_heads * d * h + 3 * h * i + 2 * h;
        let embeddings = v * h * if tied { 1 } else { 2 };
        prop_assert_eq!(parameter_count(&c), (embeddings + layers * per_layer + h) as u64);
    }

    /// bytes = ⌈params · bits / 8⌉, and the quiz's `weight_bytes` check is the engine's.
    #[test]
    fn weight_bytes_formula(layers in 1usize..40, half_dim in 1usize..16, bits in 1u64..33) {
        let c = config(layers, 2, 2, 2 * half_dim, false);
        let params = parameter_count(&c);
        prop_assert_eq!(weight_bytes(&c, bits), (params * bits).div_ceil(8));
        prop_assert_eq!(weight_bytes(&c, 16), 2 * params);
    }

    /// A mixed batch processes Σ prompt lengths + one token per decode, and allocates
    /// Σ ⌈prompt / B⌉ blocks plus one per decode whose new token starts a block.
    #[test]
    fn mixed_batch_formulas(
        prompts in proptest::collection::vec(1usize..300, 0..5),
        contexts in proptest::collection::vec(1usize..200, 0..6),
        block_size in 1usize..33,
    ) {
        let list = |v: &[usize]| format!("{v:?}");
        let run = |output: &str| {
            call("schedule_mixed_batch", &args(&format!(
                "prefill_lens = {}\ndecode_context_lens = {}\nblock_size = {block_size}\n\
                 max_num_batched_tokens = 4096\nnum_blocks = 100000\noutput = \"{output}\"",
                list(&prompts), list(&contexts)
            ))).unwrap() as usize
        };
        let tokens: usize = prompts.iter().sum::<usize>() + contexts.len();
        prop_assert_eq!(run("num_batched_tokens"), tokens);
        let prefill_blocks: usize = prompts.iter().map(|&p| p.div_ceil(block_size)).sum();
        prop_assert_eq!(run("prefill_blocks"), prefill_blocks);
        let decode_blocks = contexts.iter().filter(|&&c| c % block_size == 0).count();
        prop_assert_eq!(run("new_blocks"), prefill_blocks + decode_blocks);
        prop_assert_eq!(run("logits_rows"), prompts.len() + contexts.len());
    }

    /// Chunked prefill: step k processes min(budget, n − (k − 1)·budget) tokens, and only the
    /// step that reaches the last token computes a row of logits.
    #[test]
    fn chunked_prefill_formula(n in 1usize..3000, budget in 1usize..1024, k in 1usize..6) {
        let done = (k - 1) * budget;
        prop_assume!(done < n);
        let run = |output: &str| {
            call("chunked_prefill", &args(&format!(
                "prompt_len = {n}\nmax_num_batched_tokens = {budget}\nblock_size = 16\n\
                 step = {k}\noutput = \"{output}\""
            ))).unwrap() as usize
        };
        let tokens = budget.min(n - done);
        prop_assert_eq!(run("num_batched_tokens"), tokens);
        prop_assert_eq!(run("logits_rows"), usize::from(done + tokens == n));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// max_model_len = min(max_position_embeddings, num_blocks · block_size)
    #[test]
    fn max_model_len_formula(blocks in 1usize..400, block_size in 1usize..33) {
        let got = call("max_model_len", &args(&format!(
            "num_kv_blocks = {blocks}\nblock_size = {block_size}"
        ))).unwrap() as usize;
        let max_pos = engine::tiny_model::tiny_config().max_position_embeddings;
        prop_assert_eq!(got, max_pos.min(blocks * block_size));
    }
}

/// FCFS preemption picks the latest arrival among the running requests.
#[test]
fn fcfs_victim_is_the_latest_arrival() {
    for n in 2..6usize {
        let victim = call(
            "fcfs_preemption",
            &args(&format!(
                "block_size = 4\nnum_blocks = {}\nprompt_lens = {:?}\noutput = \"first_victim\"",
                2 * n,
                vec![8; n]
            )),
        )
        .unwrap();
        assert_eq!(victim as usize, n - 1);
    }
}

fn cost(n: usize, q: usize, h: usize, kv: usize, d: usize, output: &str) -> f64 {
    call(
        "attention_cost",
        &args(&format!(
            "seq_len = {n}\nquery_len = {q}\nnum_heads = {h}\nnum_kv_heads = {kv}\n\
             head_dim = {d}\ndtype_bytes = 2\noutput = \"{output}\""
        )),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Attention over the engine's paged attention: a chunk of q rows ending a sequence of n
    /// tokens computes q·(n − q) + q·(q + 1)/2 (row, key) pairs (a decode: n; a whole prompt:
    /// n·(n + 1)/2); 4·d·H FLOPs a pair; 2·(2·q·H·d + 2·n·KV·d) bytes in bf16.
    #[test]
    fn attention_cost_formulas(
        n in 1usize..100, q_seed in any::<usize>(), kv in 1usize..4, group in 1usize..4,
        d in 1usize..9,
    ) {
        let q = 1 + q_seed % n;
        let h = kv * group;
        let pairs = q * (n - q) + q * (q + 1) / 2;
        prop_assert_eq!(cost(n, q, h, kv, d, "pairs"), pairs as f64);
        prop_assert_eq!(cost(n, q, h, kv, d, "qk_flops"), (2 * d * h * pairs) as f64);
        prop_assert_eq!(cost(n, q, h, kv, d, "flops"), (4 * d * h * pairs) as f64);
        prop_assert_eq!(cost(n, q, h, kv, d, "bytes"), (2 * (2 * q * h * d + 2 * n * kv * d)) as f64);
    }

    /// A decode's intensity is H·n / (H + n·KV): below the group size H / KV, and closer to it
    /// the longer the context.
    #[test]
    fn decode_intensity_approaches_the_group_size(n in 1usize..300, kv in 1usize..4, group in 1usize..5) {
        let h = kv * group;
        let i = cost(n, 1, h, kv, 64, "intensity");
        let formula = (h * n) as f64 / (h + n * kv) as f64;
        prop_assert!((i - formula).abs() < 1e-12 * formula.max(1.0));
        prop_assert!(i < group as f64);
    }

    /// A warp of 32 threads loading `e`-byte elements `s` elements apart moves whole 32-byte
    /// sectors: contiguous (s = 1) is e sectors, 100% efficient; once e·s ≥ 32 every thread
    /// has a sector of its own, 32 sectors, e/32 efficient.
    #[test]
    fn warp_load_formulas(e in prop::sample::select(vec![1usize, 2, 4, 8, 16]), s in 1usize..40) {
        let run = |output: &str| call("warp_load", &args(&format!(
            "elem_bytes = {e}\nstride = {s}\noutput = \"{output}\""
        ))).unwrap();
        if s == 1 {
            prop_assert_eq!(run("sectors"), e as f64);
            prop_assert_eq!(run("efficiency_percent"), 100.0);
        }
        if e * s >= 32 {
            prop_assert_eq!(run("sectors"), 32.0);
            prop_assert_eq!(run("efficiency_percent"), 100.0 * e as f64 / 32.0);
        }
        prop_assert_eq!(run("bytes_moved"), 32.0 * run("sectors"));
    }
}

/// The kernel count of a step is (before + after) + layers · per layer: the same constant
/// and slope for every model; the CPU runs the fused qkv kernel as several ops.
#[test]
fn kernel_launches_formula() {
    let count = |model: &str, step: &str, backend: &str, output: &str| {
        call(
            "kernel_launches",
            &args(&format!(
                "model = \"{model}\"\nstep = \"{step}\"\nbackend = \"{backend}\"\noutput = \"{output}\""
            )),
        )
        .unwrap() as usize
    };
    let mut outside_layers = std::collections::BTreeSet::new();
    for model in ["tiny", "smollm2-135m", "llama-3.2-1b", "llama-2-7b"] {
        let layers = quizzes::engine_calls::model_config(model)
            .unwrap()
            .num_hidden_layers;
        for step in ["decode", "prefill"] {
            let per_layer = count(model, step, "cuda", "per_layer");
            let total = count(model, step, "cuda", "total");
            outside_layers.insert(total - layers * per_layer);
            assert!(count(model, step, "cpu", "per_layer") > per_layer);
        }
    }
    assert_eq!(outside_layers.len(), 1, "{outside_layers:?}");
}
