//! The CPU GEMM from weights kept in their GGUF blocks (Q8_0, Q4_1): on every instruction set
//! this machine has, its outputs are bitwise those of the f32 GEMM on the weights the GGUF
//! reader dequantizes (`gguf_hf::dequant`, what `lab fetch-model` writes to safetensors), and
//! it is batch invariant. Bad input is an `Err`.

use engine::backend::cpu_gemm::{
    gemm, gemm_blocks, gemm_blocks_with, Dequantize, Isa, PackedBlocks, PackedWeight, KC,
};
use engine::model_loader::dequant::{dequantize, GgmlType};
use proptest::prelude::*;

/// A pseudo-random generator (the tests need no crate for it).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// In [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
}

/// `n` rows of `k / 32` random blocks of `format`, with scales of a real model's size.
fn random_blocks(format: GgmlType, n: usize, k: usize, seed: u64) -> Vec<u8> {
    let mut g = Lcg(seed ^ 0x5eed);
    let mut bytes = Vec::new();
    for _ in 0..n * k / 32 {
        let d = half::f16::from_f32(g.unit() * 0.02);
        bytes.extend(d.to_le_bytes());
        if format == GgmlType::Q4_1 {
            bytes.extend(half::f16::from_f32(g.unit() * 0.1).to_le_bytes());
        }
        let quants = if format == GgmlType::Q4_1 { 16 } else { 32 };
        bytes.extend((0..quants).map(|_| g.next() as u8));
    }
    bytes
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

fn run_blocks(w: &PackedBlocks, x: &[f32], b: Option<&[f32]>, t: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; t * w.n];
    gemm_blocks(&mut out, x, w, b, t);
    out
}

/// [`run_blocks`] with the dequantization in registers or through the buffer.
fn run_blocks_with(
    w: &PackedBlocks,
    x: &[f32],
    b: Option<&[f32]>,
    t: usize,
    how: Dequantize,
) -> Vec<f32> {
    let mut out = vec![f32::NAN; t * w.n];
    gemm_blocks_with(&mut out, x, w, b, t, how);
    out
}

/// Both places the weights are dequantized in (each instruction set has its own kernel for
/// the registers).
const PATHS: [Dequantize; 2] = [Dequantize::InRegisters, Dequantize::Buffer];

fn run_f32(w: &PackedWeight, x: &[f32], b: Option<&[f32]>, t: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; t * w.n];
    gemm(&mut out, x, w, b, t);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Sizes cross every tile edge: tokens past each ISA's MR, outputs past each NR, `k`
    /// past the K block (in whole quantized blocks).
    #[test]
    fn blocks_equal_the_f32_gemm_on_dequantized_weights_and_are_batch_invariant(
        t in 1usize..26,
        k_blocks in 1usize..(KC / 32 + 3),
        n in 1usize..72,
        q4: bool,
        bias: bool,
        seed: u64,
    ) {
        let format = if q4 { GgmlType::Q4_1 } else { GgmlType::Q8_0 };
        let k = 32 * k_blocks;
        let bytes = random_blocks(format, n, k, seed);
        let mut w = vec![0.0f32; n * k];
        dequantize(format, &bytes, &mut w);
        let mut g = Lcg(seed);
        let x: Vec<f32> = (0..t * k).map(|_| g.unit()).collect();
        let b: Vec<f32> = (0..n).map(|_| g.unit()).collect();
        let b = bias.then_some(&b[..]);
        for isa in Isa::available() {
            let blocks = PackedBlocks::pack(&bytes, format, n, k, isa).unwrap();
            prop_assert_eq!(bits(&blocks.to_f32()), bits(&w), "{:?}: to_f32", isa);
            let want = run_f32(&PackedWeight::pack(&w, n, k, isa), &x, b, t);
            prop_assert_eq!(bits(&run_blocks(&blocks, &x, b, t)), bits(&want), "{:?}: auto", isa);
            for how in PATHS {
                let got = run_blocks_with(&blocks, &x, b, t, how);
                prop_assert_eq!(bits(&got), bits(&want), "{:?} {:?} {:?}: blocks vs f32", isa, how, format);
                for j in 0..t {
                    let alone = run_blocks_with(&blocks, &x[j * k..(j + 1) * k], b, 1, how);
                    prop_assert_eq!(bits(&alone), bits(&got[j * n..(j + 1) * n]), "{:?} {:?}: token {} alone", isa, how, j);
                }
                let rev: Vec<f32> = x.chunks(k).rev().flatten().copied().collect();
                let back: Vec<f32> = run_blocks_with(&blocks, &rev, b, t, how).chunks(n).rev().flatten().copied().collect();
                prop_assert_eq!(bits(&back), bits(&got), "{:?} {:?}: batch reversed", isa, how);
            }
        }
    }
}

/// SmolLM2-135M's MLP down projection shape (1536 → 576) past one token block of the GEMM's
/// threads (300 tokens), against the f32 path at batch 300, 8 and 1.
#[test]
fn model_sized_blocks_equal_f32_at_every_batch_size() {
    let (k, n, t) = (1536, 576, 300);
    let mut g = Lcg(7);
    let x: Vec<f32> = (0..t * k).map(|_| g.unit()).collect();
    for format in [GgmlType::Q8_0, GgmlType::Q4_1] {
        let bytes = random_blocks(format, n, k, 9);
        let mut w = vec![0.0f32; n * k];
        dequantize(format, &bytes, &mut w);
        let isa = Isa::detect();
        let want = run_f32(&PackedWeight::pack(&w, n, k, isa), &x, None, t);
        let blocks = PackedBlocks::pack(&bytes, format, n, k, isa).unwrap();
        assert!(blocks.bytes() * 3 < n * k * 4, "{format:?} is not smaller");
        for batch in [t, 8, 1] {
            for start in (0..t).step_by(batch.max(37)) {
                let rows = batch.min(t - start);
                let got = run_blocks(&blocks, &x[start * k..(start + rows) * k], None, rows);
                let want = &want[start * n..(start + rows) * n];
                assert_eq!(
                    bits(&got),
                    bits(want),
                    "{format:?}, batch {batch} at {start}"
                );
            }
        }
    }
}

#[test]
fn bad_blocks_are_errors() {
    let isa = Isa::Portable;
    let q8 = random_blocks(GgmlType::Q8_0, 2, 64, 1);
    assert!(PackedBlocks::pack(&q8, GgmlType::Q8_0, 2, 64, isa).is_ok());
    let short = PackedBlocks::pack(&q8[1..], GgmlType::Q8_0, 2, 64, isa).unwrap_err();
    assert!(short.contains("bytes"), "{short}");
    let odd_k = PackedBlocks::pack(&q8, GgmlType::Q8_0, 4, 34, isa).unwrap_err();
    assert!(odd_k.contains("multiple of 32"), "{odd_k}");
    let f16 = PackedBlocks::pack(&q8, GgmlType::F16, 2, 64, isa).unwrap_err();
    assert!(f16.contains("F16"), "{f16}");
}

/// The CPU backend's linear layer on a weight kept in blocks gives the bits of the same layer on
/// the dequantized weight uploaded as f32, with a bias, and `download` widens the blocks.
#[test]
fn cpu_backend_linear_from_blocks_equals_f32() {
    use engine::backend::cpu_backend::{CpuBackend, CpuTensor};
    use engine::backend::{Backend, DType};
    let (n, k, t) = (40, 96, 5);
    let b = CpuBackend::default();
    for format in [GgmlType::Q8_0, GgmlType::Q4_1] {
        let bytes = random_blocks(format, n, k, 11);
        let mut w = vec![0.0f32; n * k];
        dequantize(format, &bytes, &mut w);
        let mut g = Lcg(12);
        let x: Vec<f32> = (0..t * k).map(|_| g.unit()).collect();
        let bias: Vec<f32> = (0..n).map(|_| g.unit()).collect();
        let x = b.upload(x, t, k, DType::F32).unwrap();
        let bias = b.upload(bias, 1, n, DType::F32).unwrap();
        let w_f32 = b.upload(w.clone(), n, k, DType::F32).unwrap();
        let blocks = PackedBlocks::pack(&bytes, format, n, k, b.gemm_isa).unwrap();
        let w_blocks = CpuTensor::from_blocks(blocks);
        let want = b.linear(&x, &w_f32, Some(&bias)).unwrap();
        let got = b.linear(&x, &w_blocks, Some(&bias)).unwrap();
        assert_eq!(bits(&got.data), bits(&want.data), "{format:?}");
        assert_eq!(bits(&b.download(&w_blocks).unwrap()), bits(&w));
    }
}

/// One instruction set's in-register kernel (`tile_blocks`) against the f32 GEMM of the
/// portable path on the dequantized weights, on both formats, at 1 to 13 tokens (one register
/// tile and past it) and an output count that leaves the last panel partial. `false` when
/// this CPU lacks `isa` (the test then says so and checks nothing).
fn in_registers_equal_portable_f32(isa: Isa) -> bool {
    if !Isa::available().contains(&isa) {
        eprintln!("{isa:?} is not available on this CPU: not checked here");
        return false;
    }
    let (n, k) = (72, 32 * (KC / 32 + 3));
    for format in [GgmlType::Q8_0, GgmlType::Q4_1] {
        let bytes = random_blocks(format, n, k, 21);
        let mut w = vec![0.0f32; n * k];
        dequantize(format, &bytes, &mut w);
        let portable = PackedWeight::pack(&w, n, k, Isa::Portable);
        let blocks = PackedBlocks::pack(&bytes, format, n, k, isa).unwrap();
        let mut g = Lcg(22);
        for t in 1..=13 {
            let x: Vec<f32> = (0..t * k).map(|_| g.unit()).collect();
            let want = run_f32(&portable, &x, None, t);
            let got = run_blocks_with(&blocks, &x, None, t, Dequantize::InRegisters);
            assert_eq!(bits(&got), bits(&want), "{isa:?} {format:?} at {t} tokens");
        }
    }
    true
}

#[test]
fn avx512_in_registers_equals_the_f32_path() {
    in_registers_equal_portable_f32(Isa::Avx512);
}

#[test]
fn avx2_in_registers_equals_the_f32_path() {
    in_registers_equal_portable_f32(Isa::Avx2);
}

#[test]
fn neon_in_registers_equals_the_f32_path() {
    in_registers_equal_portable_f32(Isa::Neon);
}

#[test]
fn portable_in_registers_equals_the_f32_path() {
    assert!(in_registers_equal_portable_f32(Isa::Portable));
}

/// A weight packed at load (`Backend::pack_weight`) keeps one copy: its row-major `data` is
/// dropped, and `linear`, `download`, the row lookup and equality read the panels (f32) or
/// the blocks (a tied table kept in blocks) with the same bits as before.
#[test]
fn packing_at_load_drops_the_row_major_copy_and_changes_no_value() {
    use engine::backend::cpu_backend::CpuBackend;
    use engine::backend::{Backend, DType};
    let (n, k, t) = (40, 96, 3);
    let b = CpuBackend::default();
    let bytes = random_blocks(GgmlType::Q4_1, n, k, 31);
    let mut w = vec![0.0f32; n * k];
    dequantize(GgmlType::Q4_1, &bytes, &mut w);
    let mut g = Lcg(32);
    let x = b
        .upload((0..t * k).map(|_| g.unit()).collect(), t, k, DType::F32)
        .unwrap();
    let plain = b.upload(w.clone(), n, k, DType::F32).unwrap();
    let want = b.linear(&x, &plain, None).unwrap();
    // f32: packed into panels, the rows dropped.
    let mut packed = b.upload(w.clone(), n, k, DType::F32).unwrap();
    b.pack_weight(&mut packed).unwrap();
    assert!(packed.data.is_empty() && packed.packed.get().is_some());
    assert_eq!(
        bits(&b.linear(&x, &packed, None).unwrap().data),
        bits(&want.data)
    );
    assert_eq!(bits(&b.download(&packed).unwrap()), bits(&w));
    assert!(packed == plain);
    // A table with blocks attached (a tied LM head): the rows dropped, the lookup from blocks.
    let mut table = b.upload(w.clone(), n, k, DType::F32).unwrap();
    assert!(b.attach_blocks(&mut table, GgmlType::Q4_1, &bytes).unwrap());
    b.pack_weight(&mut table).unwrap();
    assert!(table.data.is_empty() && table.packed.get().is_none());
    assert_eq!(
        bits(&b.linear(&x, &table, None).unwrap().data),
        bits(&want.data)
    );
    for (r, want_row) in w.chunks_exact(k).enumerate() {
        for t in [&packed, &table] {
            let mut row = vec![f32::NAN; k];
            t.row_into(r, &mut row).unwrap();
            assert_eq!(bits(&row), bits(want_row), "row {r}");
        }
    }
    assert!(table.row_into(n, &mut vec![0.0; k]).is_none());
}

/// How far ahead the micro-kernels prefetch a weight's blocks changes the speed only: none, the
/// default and a distance past the whole weight give the same bits, in registers at decode
/// token counts (where the prefetch is) and through the buffer.
#[test]
fn prefetch_distance_changes_no_bits() {
    let (n, k) = (70, 3 * 32 + KC);
    let x: Vec<f32> = {
        let mut g = Lcg(9);
        (0..12 * k).map(|_| g.unit()).collect()
    };
    for format in [GgmlType::Q8_0, GgmlType::Q4_1] {
        let bytes = random_blocks(format, n, k, 11);
        for isa in Isa::available() {
            let mut w = PackedBlocks::pack(&bytes, format, n, k, isa).unwrap();
            for t in [1, 8, 12] {
                for how in PATHS {
                    let mut outs = Vec::new();
                    for ahead in [0, isa.blocks_prefetch_ahead(), w.bytes() + 4096] {
                        w.prefetch_ahead = ahead;
                        outs.push(bits(&run_blocks_with(&w, &x[..t * k], None, t, how)));
                    }
                    assert_eq!(outs[0], outs[1], "{format:?} {isa:?} {t} tokens {how:?}");
                    assert_eq!(outs[0], outs[2], "{format:?} {isa:?} {t} tokens {how:?}");
                }
            }
        }
    }
}

/// The epilogue from blocks: `gemm_blocks_silu_and_mul` is `gemm_blocks` then `silu_and_mul`,
/// bit for bit, on every instruction set, at a decode batch (in registers) and a prefill one
/// (dequantized into a buffer).
#[test]
fn silu_and_mul_epilogue_from_blocks() {
    use engine::backend::cpu_gemm::gemm_blocks_silu_and_mul;
    use engine::ops::activation::silu_and_mul;
    for isa in Isa::available() {
        for format in [GgmlType::Q8_0, GgmlType::Q4_1] {
            let (k, d) = (96, 2 * isa.nr());
            let bytes = random_blocks(format, 2 * d, k, 3);
            let blocks = PackedBlocks::pack(&bytes, format, 2 * d, k, isa).unwrap();
            for t in [1, 3, 30] {
                let mut g = Lcg(t as u64);
                let x: Vec<f32> = (0..t * k).map(|_| g.unit() * 8.0).collect();
                let gate_up = run_blocks(&blocks, &x, None, t);
                let mut want = vec![f32::NAN; t * d];
                silu_and_mul(&mut want, &gate_up, t);
                let mut got = vec![f32::NAN; t * d];
                gemm_blocks_silu_and_mul(&mut got, &x, &blocks, t);
                assert_eq!(bits(&got), bits(&want), "{isa:?} {format:?} t={t}");
            }
        }
    }
}
