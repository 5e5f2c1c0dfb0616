//! The FMA units' peak rate: the compute ceiling of the linear layers at many tokens.
//!
//! A prefill's GEMMs, and a large batch's, are bound by arithmetic: one fused multiply-add (2
//! FLOPs) per weight per token. How many of those a core retires per second depends on the
//! vector width, the number of FMA units (one or two a core), and the clock the core keeps
//! while they run (some Intel cores slow down under 512-bit FMAs), so `lab bench` measures it
//! rather than looking it up. [`chains`] runs [`CHAINS`] independent chains of vector FMAs on
//! registers alone, with the instruction set a GEMM runs with: no loads, nothing else in the
//! way. An FMA takes about 4 cycles to give its result and a core starts up to two a cycle, so
//! eight chains in flight keep both units busy; twelve leave room (and fit AVX2's 16
//! registers with the two operands).
//!
//! Measured on a 2-core Intel Xeon (2026-12-01, AVX-512): 165-172 GFLOP/s a core, 329-335 on
//! both, two FMAs of 16 lanes a cycle at about 2.9 GHz. Against that, the GEMM's register
//! tile alone on one core with its weights in L2 ran 142-154 GFLOP/s at 8 tokens and 155-171
//! at 12, and the whole GEMM at 512 tokens on SmolLM2's shapes 219-278 on both cores
//! (`examples/cpu_gemm_speed.rs`): 66-84% of the peak.

use super::Isa;

/// Independent FMA chains per thread.
pub const CHAINS: usize = 12;

/// FLOPs of one call of [`chains`] with `iters` iterations: every chain's lanes, a multiply
/// and an add each.
pub fn flops(isa: Isa, iters: usize) -> f64 {
    let lanes = match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Neon => 4,
        Isa::Portable => 1,
    };
    (2 * CHAINS * lanes * iters) as f64
}

/// `iters` rounds of one FMA on each of [`CHAINS`] chains (`a = a · 0.99 + 0.001`, which
/// settles at 0.1 within a few thousand rounds: no overflow, no subnormals), with `isa`'s vectors on this thread. Returns the
/// chains' sum, for the caller to keep (`std::hint::black_box`) so that none is optimized
/// away.
pub fn chains(isa: Isa, iters: usize) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only detected where the CPU has AVX-512F.
        Isa::Avx512 => unsafe { x86::chains_avx512(iters) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only detected where the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { x86::chains_avx2(iters) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::chains(iters),
        _ => chains_portable(iters),
    }
}

fn chains_portable(iters: usize) -> f32 {
    let (x, y) = (std::hint::black_box(0.99f32), 0.001f32);
    let mut a = [1.0f32; CHAINS];
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = v.mul_add(x, y);
        }
    }
    a.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::CHAINS;

    /// Caller guarantees AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn chains_avx512(iters: usize) -> f32 {
        let (x, y) = (_mm512_set1_ps(0.99), _mm512_set1_ps(0.001));
        let mut a = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = _mm512_fmadd_ps(*v, x, y);
            }
        }
        a.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    /// Caller guarantees AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn chains_avx2(iters: usize) -> f32 {
        let (x, y) = (_mm256_set1_ps(0.99), _mm256_set1_ps(0.001));
        let mut a = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = _mm256_fmadd_ps(*v, x, y);
            }
        }
        let mut lanes = [0.0f32; 8];
        a.iter().fold(0.0, |s, &v| {
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            s + lanes.iter().sum::<f32>()
        })
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::CHAINS;

    pub fn chains(iters: usize) -> f32 {
        // SAFETY: NEON is part of every aarch64 CPU; these intrinsics only touch registers.
        unsafe {
            let (x, y) = (vdupq_n_f32(0.99), vdupq_n_f32(0.001));
            let mut a = [vdupq_n_f32(1.0); CHAINS];
            for _ in 0..iters {
                for v in a.iter_mut() {
                    *v = vfmaq_f32(y, *v, x);
                }
            }
            a.iter().map(|&v| vaddvq_f32(v)).sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_isa_settles_its_chains_at_the_fixed_point() {
        // a = a · 0.99 + 0.001 goes from 1 to 0.1 in every lane of every chain (0.9 · 0.99^n
        // away after n rounds): the sum is CHAINS × lanes × 0.1 only if the loop ran and no
        // chain or lane was dropped, and still far from it after a few rounds.
        for isa in Isa::available() {
            let lanes = flops(isa, 1) / (2 * CHAINS) as f64;
            let want = (CHAINS as f64 * lanes * 0.1) as f32;
            let sum = chains(isa, 5_000);
            assert!(
                (sum - want).abs() < 1e-3 * want,
                "{isa:?}: {sum} against {want}"
            );
            let early = chains(isa, 10);
            assert!(early > 1.5 * want, "{isa:?}: {early} after 10 rounds");
        }
    }
}
