//! Exercises 2 to 4 on a real GPU: your `.cu` files (`cuda/*.cu`, with `cuda/block_reduce.cuh`
//! in front of the two that reduce) compiled by NVRTC, launched with the grids of the Rust
//! versions, and checked against the same CPU references (`engine::ops`) on fresh random
//! inputs: `cargo test -p stage4 --test cuda`. With `--features reference`, the reference
//! `.cu` files in `cuda/reference/` instead.
//!
//! Without an NVIDIA GPU (driver and NVRTC) every test prints `skipped: <why>` and passes:
//! this file is not in `tests/`, so `cargo xtask check` does not require it to fail on the
//! stubs. Inputs are fresh every run; the seed is printed, and `KERNELS_SEED=<seed>` repeats a
//! run (as the kernels crate's tests do).

mod common;

use common::{assert_close, compile, config, gpu_or_skip, Rng};
use engine::attention::attention_metadata::AttentionMetadata;
use engine::ops::{cache_ops, paged_attention, rms_norm};
use kernels::cudarc::driver::PushKernelArg;
use stage4::reshape_and_cache::PADDING_SLOT;

/// The sources under test: yours, or with `--features reference` the reference ones.
#[cfg(not(feature = "reference"))]
mod sources {
    pub const DIR: &str = "stages/stage4/cuda";
    pub const BLOCK_REDUCE: &str = include_str!("block_reduce.cuh");
    pub const RMS_NORM: &str = include_str!("rms_norm.cu");
    pub const RESHAPE_AND_CACHE: &str = include_str!("reshape_and_cache.cu");
    pub const PAGED_ATTENTION: &str = include_str!("paged_attention_decode.cu");
}
#[cfg(feature = "reference")]
mod sources {
    pub const DIR: &str = "stages/stage4/cuda/reference";
    pub const BLOCK_REDUCE: &str = include_str!("reference/block_reduce.cuh");
    pub const RMS_NORM: &str = include_str!("reference/rms_norm.cu");
    pub const RESHAPE_AND_CACHE: &str = include_str!("reference/reshape_and_cache.cu");
    pub const PAGED_ATTENTION: &str = include_str!("reference/paged_attention_decode.cu");
}

#[test]
fn rms_norm_cu_matches_the_engine() {
    let Some((ctx, s)) = gpu_or_skip() else {
        return;
    };
    let module = compile(
        sources::DIR,
        &ctx,
        &[
            ("block_reduce.cuh", sources::BLOCK_REDUCE),
            ("rms_norm.cu", sources::RMS_NORM),
        ],
    );
    let kernel = module.load_function("rms_norm_kernel").unwrap();
    let mut rng = Rng::fresh("rms_norm.cu");
    for (tokens, hidden, threads) in [(5, 100, 64), (3, 576, 128), (2, 4136, 256), (7, 1, 32)] {
        let (x, w) = (rng.f32s(tokens * hidden, 10.0), rng.f32s(hidden, 2.0));
        let eps = 1e-5f32;
        let (dx, dw) = (s.clone_htod(&x).unwrap(), s.clone_htod(&w).unwrap());
        let mut dout = s.clone_htod(&vec![f32::NAN; x.len()]).unwrap();
        let h = hidden as u32;
        let mut launch = s.launch_builder(&kernel);
        launch.arg(&mut dout).arg(&dx).arg(&dw).arg(&eps).arg(&h);
        // SAFETY: the arguments match rms_norm_kernel(float*, const float*, const float*,
        // float, u32); the grid has one block per row of `hidden` floats of out and x.
        unsafe { launch.launch(config((tokens, 1), threads, 0)) }.unwrap();
        let got = s.clone_dtoh(&dout).unwrap();
        let mut want = vec![0.0; x.len()];
        rms_norm::rms_norm(&mut want, &x, &w, eps);
        let what = format!("rms_norm.cu [{tokens}, {hidden}], {threads} threads");
        assert_close(&what, &got, &want, 1e-5);
    }
}

#[test]
fn reshape_and_cache_cu_writes_exactly_the_mapped_slots() {
    let Some((ctx, s)) = gpu_or_skip() else {
        return;
    };
    let module = compile(
        sources::DIR,
        &ctx,
        &[("reshape_and_cache.cu", sources::RESHAPE_AND_CACHE)],
    );
    let kernel = module.load_function("reshape_and_cache_kernel").unwrap();
    let mut rng = Rng::fresh("reshape_and_cache.cu");
    // (tokens, num_kv_heads, head_dim, num_blocks, block_size, threads)
    for (t, nkv, d, nb, bs, threads) in [
        (37, 8, 64, 10, 16, 128),
        (5, 3, 6, 4, 3, 32),
        (13, 5, 8, 7, 4, 64),
    ] {
        let row = nkv * d;
        // Every fifth token is padding: written nowhere.
        let slots: Vec<u64> = rng.permutation(nb * bs)[..t]
            .iter()
            .enumerate()
            .map(|(tok, &v)| if tok % 5 == 4 { PADDING_SLOT } else { v as u64 })
            .collect();
        let (key, value) = (rng.f32s(t * row, 1.0), rng.f32s(t * row, 1.0));
        let (dk, dv) = (s.clone_htod(&key).unwrap(), s.clone_htod(&value).unwrap());
        let dslots = s.clone_htod(&slots).unwrap();
        let nan = vec![f32::NAN; nb * bs * row];
        let (mut kc, mut vc) = (s.clone_htod(&nan).unwrap(), s.clone_htod(&nan).unwrap());
        let (nkv32, d32, bs32) = (nkv as u32, d as u32, bs as u32);
        let mut launch = s.launch_builder(&kernel);
        launch
            .arg(&dk)
            .arg(&dv)
            .arg(&mut kc)
            .arg(&mut vc)
            .arg(&dslots);
        launch.arg(&nkv32).arg(&d32).arg(&bs32);
        // SAFETY: the arguments match reshape_and_cache_kernel's; every slot but the padding
        // ones is below nb * bs, the caches' row count.
        unsafe { launch.launch(config((t, 1), threads, 0)) }.unwrap();
        let (got_k, got_v) = (s.clone_dtoh(&kc).unwrap(), s.clone_dtoh(&vc).unwrap());
        // The engine's cache write on the tokens that are not padding.
        let real: Vec<usize> = (0..t).filter(|&i| slots[i] != PADDING_SLOT).collect();
        let rows = |x: &[f32]| -> Vec<f32> {
            real.iter()
                .flat_map(|&i| x[i * row..][..row].to_vec())
                .collect()
        };
        let real_slots: Vec<u64> = real.iter().map(|&i| slots[i]).collect();
        let (mut want_k, mut want_v) = (nan.clone(), nan.clone());
        let (rk, rv) = (rows(&key), rows(&value));
        cache_ops::reshape_and_cache(&rk, &rv, &mut want_k, &mut want_v, &real_slots);
        for (name, got, want) in [
            ("key_cache", &got_k, &want_k),
            ("value_cache", &got_v, &want_v),
        ] {
            if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
                panic!(
                    "reshape_and_cache.cu [{t} tokens, {nkv} x {d}, block size {bs}]: {name}[{i}] \
                     (slot {}) is {}, it should be {}",
                    i / row,
                    got[i],
                    want[i]
                );
            }
        }
        println!(
            "reshape_and_cache.cu [{t} tokens, row {row}, {} slots]: exact",
            nb * bs
        );
    }
}

/// A decode batch to test: sequence lengths, KV heads, query heads per KV head, head size,
/// block size, threads per block, and a factor on the queries (large scores).
struct DecodeCase {
    seq_lens: &'static [usize],
    nkv: usize,
    group: usize,
    d: usize,
    bs: usize,
    threads: usize,
    q_scale: f32,
}

impl DecodeCase {
    #[allow(clippy::too_many_arguments)]
    const fn new(
        seq_lens: &'static [usize],
        nkv: usize,
        group: usize,
        d: usize,
        bs: usize,
        threads: usize,
        q_scale: f32,
    ) -> Self {
        DecodeCase {
            seq_lens,
            nkv,
            group,
            d,
            bs,
            threads,
            q_scale,
        }
    }
}

#[test]
fn paged_attention_decode_cu_matches_the_engine() {
    let Some((ctx, s)) = gpu_or_skip() else {
        return;
    };
    let module = compile(
        sources::DIR,
        &ctx,
        &[
            ("block_reduce.cuh", sources::BLOCK_REDUCE),
            ("paged_attention_decode.cu", sources::PAGED_ATTENTION),
        ],
    );
    let kernel = module
        .load_function("paged_attention_decode_kernel")
        .unwrap();
    let mut rng = Rng::fresh("paged_attention_decode.cu");
    let cases = [
        DecodeCase::new(&[1, 17, 300], 2, 3, 64, 16, 128, 1.0),
        DecodeCase::new(&[1000, 5], 8, 4, 128, 16, 256, 1.0),
        DecodeCase::new(&[33, 64, 7, 90], 3, 1, 16, 5, 64, 1.0),
        DecodeCase::new(&[70, 2048], 1, 2, 64, 16, 128, 30.0), // scores far past exp's range
    ];
    for case in cases {
        let DecodeCase {
            seq_lens,
            nkv,
            group,
            d,
            bs,
            threads,
            q_scale,
        } = case;
        let num_heads = nkv * group;
        let kv_row = nkv * d;
        let blocks: Vec<usize> = seq_lens.iter().map(|n| n.div_ceil(bs)).collect();
        let num_blocks = blocks.iter().sum::<usize>() + 2;
        let order = rng.permutation(num_blocks);
        let max_blocks = *blocks.iter().max().unwrap();
        let mut meta = AttentionMetadata {
            block_size: bs,
            max_blocks_per_seq: max_blocks,
            query_start_loc: (0..=seq_lens.len()).collect(),
            seq_lens: seq_lens.to_vec(),
            ..AttentionMetadata::default()
        };
        // Caches: random where a sequence has a token, NaN everywhere else.
        let mut kc = vec![f32::NAN; num_blocks * bs * kv_row];
        let mut vc = kc.clone();
        let mut next = 0;
        for (&len, &nb) in seq_lens.iter().zip(&blocks) {
            let table: Vec<u32> = order[next..next + nb].iter().map(|&b| b as u32).collect();
            next += nb;
            for p in 0..len {
                let slot = table[p / bs] as usize * bs + p % bs;
                kc[slot * kv_row..][..kv_row].copy_from_slice(&rng.f32s(kv_row, 2.0));
                vc[slot * kv_row..][..kv_row].copy_from_slice(&rng.f32s(kv_row, 2.0));
                if p == len - 1 {
                    meta.slot_mapping.push(slot as u64);
                }
            }
            meta.block_tables.extend(&table);
            meta.block_tables
                .extend(std::iter::repeat_n(0, max_blocks - nb));
        }
        let query = rng.f32s(seq_lens.len() * num_heads * d, 2.0 * q_scale);
        let scale = 1.0 / (d as f32).sqrt();
        let mut want = vec![f32::NAN; query.len()];
        paged_attention::paged_attention(&mut want, &query, &kc, &vc, nkv, d, scale, &meta);

        let lens: Vec<u32> = seq_lens.iter().map(|&n| n as u32).collect();
        let (dq, dkc, dvc) = (
            s.clone_htod(&query).unwrap(),
            s.clone_htod(&kc).unwrap(),
            s.clone_htod(&vc).unwrap(),
        );
        let (dtables, dlens) = (
            s.clone_htod(&meta.block_tables).unwrap(),
            s.clone_htod(&lens).unwrap(),
        );
        let mut dout = s.clone_htod(&vec![f32::NAN; query.len()]).unwrap();
        let (nkv32, d32, bs32, mb32) = (nkv as u32, d as u32, bs as u32, max_blocks as u32);
        let mut launch = s.launch_builder(&kernel);
        launch
            .arg(&mut dout)
            .arg(&dq)
            .arg(&dkc)
            .arg(&dvc)
            .arg(&dtables)
            .arg(&dlens);
        launch
            .arg(&scale)
            .arg(&nkv32)
            .arg(&d32)
            .arg(&bs32)
            .arg(&mb32);
        let max_len = *seq_lens.iter().max().unwrap();
        // SAFETY: the arguments match paged_attention_decode_kernel's; block tables hold
        // max_blocks entries per sequence, each a block of the caches; the dynamic shared
        // memory holds max_len floats, the longest sequence's scores.
        unsafe { launch.launch(config((num_heads, seq_lens.len()), threads, 4 * max_len)) }
            .unwrap();
        let got = s.clone_dtoh(&dout).unwrap();
        let what = format!(
            "paged_attention_decode.cu seq_lens {seq_lens:?}, {num_heads} heads over {nkv} KV \
             heads of {d}, block size {bs}, {threads} threads, queries x{q_scale}"
        );
        assert_close(&what, &got, &want, 1e-4);
    }
}
