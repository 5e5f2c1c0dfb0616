//! Preemption by swap on the GPU: the CUDA backend's `swap_blocks` copies blocks of a bf16
//! cache to host memory and back bit for bit, refuses bad input, and an engine on the GPU with
//! a small cache swaps, resumes and finishes every request. Without a GPU each test prints
//! `skipped: ...` and passes (CI has none; run these on a GPU machine).

use engine::backend::cuda_backend::CudaBackend;
use engine::backend::{Backend, DType, HostData, HostKvBlocks, SwapDirection};
use engine::config::Device;
use engine::core::preemption::PreemptionMode;
use engine::model_source::LoadedModel;
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};

mod common;
use common::gpu::{gpu_or_skip, random_model, small_config};

#[test]
fn cuda_swap_blocks_round_trip_bit_for_bit() {
    if !gpu_or_skip() {
        return;
    }
    let b = CudaBackend::new(0).expect("the GPU starts");
    // 4 blocks of 16 rows of width 128, small integers (exact in bf16).
    let (block_size, cols) = (16, 128);
    let data: Vec<f32> = (0..4 * block_size * cols)
        .map(|i| ((i * 7) % 251) as f32 - 125.0)
        .collect();
    let mut cache = b
        .upload(data.clone(), 4 * block_size, cols, DType::BF16)
        .unwrap();
    let mut host = HostKvBlocks::zeros(DType::BF16, 2, block_size, cols);
    b.swap_blocks(&mut cache, &mut host, &[(3, 0), (1, 1)], SwapDirection::Out)
        .unwrap();
    let n = block_size * cols;
    let HostData::BF16(h) = &host.data else {
        panic!("bf16 host blocks")
    };
    let h: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
    assert_eq!(&h[..n], &data[3 * n..4 * n]);
    assert_eq!(&h[n..], &data[n..2 * n]);
    let mut cache = b
        .zeros(4 * block_size, cols, DType::BF16)
        .expect("a zeroed cache");
    b.swap_blocks(&mut cache, &mut host, &[(0, 0), (2, 1)], SwapDirection::In)
        .unwrap();
    let back = b.download(&cache).unwrap();
    assert_eq!(&back[..n], &data[3 * n..4 * n]);
    assert_eq!(&back[2 * n..3 * n], &data[n..2 * n]);
    assert!(back[n..2 * n].iter().all(|&x| x == 0.0), "untouched");
    // Bad input: an error, never a panic.
    assert!(b
        .swap_blocks(&mut cache, &mut host, &[(4, 0)], SwapDirection::In)
        .is_err());
    let mut f32_host = HostKvBlocks::zeros(DType::F32, 2, block_size, cols);
    assert!(b
        .swap_blocks(&mut cache, &mut f32_host, &[(0, 0)], SwapDirection::Out)
        .is_err());
}

fn model() -> LoadedModel {
    random_model(&small_config(64))
}

#[test]
fn the_gpu_engine_swaps_and_finishes_every_request() {
    if !gpu_or_skip() {
        return;
    }
    let mut config = EngineConfig {
        device: Device::Cuda(0),
        ..EngineConfig::default()
    };
    config.cache.block_size = 16;
    config.cache.num_kv_blocks = Some(12);
    config.preemption.mode = PreemptionMode::Swap;
    config.preemption.swap_space_bytes = 64 << 20;
    let mut e = LLMEngine::new(model(), config).expect("engine on the GPU");
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(60)
    };
    for p in 0..4u32 {
        let ids = (0..40).map(|i| 3 + (p * 31 + i * 7) % 250).collect();
        e.add_request(Prompt::TokenIds(ids), params.clone())
            .unwrap();
    }
    let mut done = 0;
    while e.has_unfinished_requests() {
        for o in e.step().expect("step runs") {
            assert_eq!(o.token_ids.len(), 60);
            done += 1;
        }
    }
    assert_eq!(done, 4);
    let s = &e.stats;
    assert!(s.num_swapped_out > 0, "{s:?}");
    assert_eq!(s.blocks_swapped_out, s.blocks_swapped_in, "{s:?}");
}
