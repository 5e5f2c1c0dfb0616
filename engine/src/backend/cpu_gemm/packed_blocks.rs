//! A weight kept in its GGUF blocks (Q8_0 or Q4_1), packed into the GEMM's panels, and
//! dequantized inside the GEMM: in registers by the micro-kernel for a few tokens (decode:
//! [`BlockSlice`] and each instruction set's `tile_blocks`), or one `K` block at a time into
//! an L1 buffer for many ([`PackedBlocks::dequantize_panel`]; see `cpu_gemm::Dequantize`).
//!
//! ## Why the outputs are bitwise those of the f32 path
//! Dequantizing is arithmetic done one way: Q8_0's value is the `f32` product `d · q`, Q4_1's
//! is `d · q + m` (gguf-py's, and so transformers', multiply then add). The product is even
//! exact: `d` is an f16 (11 significant bits) and `q` has at most 8, so `d · q` fits in an
//! f32's 24 and only Q4_1's `+ m` rounds (which is also why a fused multiply-add would give the
//! same values). [`PackedBlocks::dequantize_panel`]
//! and the in-register kernels compute each element with that very expression (the kernels
//! lane by lane: widen, convert, multiply, add), the same as `gguf_hf::dequant::dequantize`
//! does when the f32 path widens the file. The GEMM then runs
//! the same micro-kernel on those values in the same `k` order (one FMA chain per output,
//! `K` blocks of [`KC`]): same inputs, same operations, same bits. Only where the weights
//! live changes: about 1.1 bytes per weight (Q8_0) or 0.75 (Q4_1) instead of 4.
//!
//! ## Layout
//! Like [`super::PackedWeight`], panels of `nr` output rows, `k`-major, so that a `K` block of
//! one panel dequantizes into exactly the `[kc][nr]` slice the f32 path reads:
//! - `scales`, `mins`: `[panels][k / 32][nr]`, the block's `d` (and `m`), widened from f16
//!   (exact: every f16 is an f32);
//! - `quants`: Q8_0 `[panels][k][nr]` signed bytes; Q4_1 `[panels][k][nr / 2]` bytes, where
//!   byte `j` of row `kk` holds output `j`'s nibble in its low half and output `j + nr / 2`'s
//!   in its high half. (The file pairs elements `i` and `i + 16` of one row's block in a byte
//!   instead; repacked so that one row `kk` of the panel is `nr / 2` contiguous bytes: a
//!   micro-kernel widens them once and takes the low nibbles for the panel's first half and
//!   the high ones for its second, in `k` order, one pass.)
//!
//! The last panel's missing rows are zero blocks (`d = m = 0`), which dequantize to `0.0` as the
//! f32 path's padding is.

use rayon::prelude::*;

use super::{Isa, KC};
use crate::backend::huge_pages::HugePageVec;
use gguf_hf::dequant::GgmlType;

/// Elements per quantized block (ggml's `QK8_0`, `QK4_1`).
pub const QK: usize = 32;

// The K block must hold whole quantized blocks, so a K block never splits one.
const _: () = assert!(KC.is_multiple_of(QK));

/// A weight `[n, k]` in Q8_0 or Q4_1 blocks, packed into panels of `nr` rows for one [`Isa`].
#[derive(Debug, Clone, PartialEq)]
pub struct PackedBlocks {
    pub isa: Isa,
    /// [`GgmlType::Q8_0`] or [`GgmlType::Q4_1`].
    pub format: GgmlType,
    /// Output features (rows).
    pub n: usize,
    /// Input features, a multiple of [`QK`].
    pub k: usize,
    /// `[panels][k / QK][nr]`: each block's scale `d`.
    pub scales: HugePageVec<f32>,
    /// `[panels][k / QK][nr]`: each block's minimum `m` (Q4_1; empty for Q8_0).
    pub mins: HugePageVec<f32>,
    /// Q8_0: `[panels][k][nr]`; Q4_1: `[panels][k / 2][nr]` (see the module doc).
    pub quants: HugePageVec<u8>,
    /// Bytes of quants ahead of its reads at which the micro-kernel prefetches this weight's
    /// blocks ([`Isa::blocks_prefetch_ahead`]; 0 = never). Speed only.
    pub prefetch_ahead: usize,
}

impl PackedBlocks {
    /// Packs `bytes`, the GGUF data of an `[n, k]` tensor of `format` (rows of `k / 32` blocks,
    /// Hugging Face's `[out, in]` order), for `isa`. `Err` for another format, a `k` that is not
    /// a whole number of blocks, or a length that does not match.
    pub fn pack(
        bytes: &[u8],
        format: GgmlType,
        n: usize,
        k: usize,
        isa: Isa,
    ) -> Result<Self, String> {
        if !matches!(format, GgmlType::Q8_0 | GgmlType::Q4_1) {
            return Err(format!("PackedBlocks: {format:?} is not Q8_0 or Q4_1"));
        }
        if !k.is_multiple_of(QK) {
            return Err(format!("PackedBlocks: k = {k} is not a multiple of {QK}"));
        }
        let (row_blocks, bb) = (k / QK, format.block_bytes());
        if Some(bytes.len()) != n.checked_mul(row_blocks * bb) {
            return Err(format!(
                "PackedBlocks: {} bytes for a {n}x{k} {format:?} tensor (want {})",
                bytes.len(),
                n * row_blocks * bb
            ));
        }
        let _span = tracing::debug_span!("pack_blocks", n, k, format = ?format).entered();
        let nr = isa.nr();
        let panels = n.div_ceil(nr);
        let q_per_row = if format == GgmlType::Q8_0 { k } else { k / 2 };
        let half = nr / 2;
        let mut scales = HugePageVec::zeroed(panels * row_blocks * nr);
        let mut mins = match format {
            GgmlType::Q4_1 => HugePageVec::zeroed(panels * row_blocks * nr),
            _ => HugePageVec::default(),
        };
        let mut quants = HugePageVec::zeroed(panels * q_per_row * nr);
        for p in 0..panels {
            for j in 0..nr.min(n - p * nr) {
                let row = &bytes[(p * nr + j) * row_blocks * bb..][..row_blocks * bb];
                for (b, block) in row.chunks_exact(bb).enumerate() {
                    let at = (p * row_blocks + b) * nr + j;
                    scales[at] = f16_at(block, 0);
                    if format == GgmlType::Q4_1 {
                        mins[at] = f16_at(block, 2);
                        // The file's byte i holds elements i (low) and i + 16 (high); here
                        // element e of row j goes to row 32·b + e, byte j % half, the low
                        // nibble for the panel's first half of rows, the high for its second.
                        let qs = &block[4..];
                        let (col, shift) = (j % half, 4 * (j / half));
                        for e in 0..QK {
                            let q = match e < QK / 2 {
                                true => qs[e] & 0x0f,
                                false => qs[e - QK / 2] >> 4,
                            };
                            quants[(p * k + b * QK + e) * half + col] |= q << shift;
                        }
                    } else {
                        for (i, &v) in block[2..].iter().enumerate() {
                            quants[(p * q_per_row + b * QK + i) * nr + j] = v;
                        }
                    }
                }
            }
        }
        Ok(PackedBlocks {
            isa,
            format,
            n,
            k,
            scales,
            mins,
            quants,
            prefetch_ahead: isa.blocks_prefetch_ahead(),
        })
    }

    /// Panel `p`'s `K` block `k0..k0 + kc` as it lies in memory, for the micro-kernels that
    /// dequantize in registers. `k0` and `kc` are multiples of [`QK`].
    pub fn k_block(&self, p: usize, k0: usize, kc: usize) -> BlockSlice<'_> {
        let nr = self.isa.nr();
        assert!(k0.is_multiple_of(QK) && kc.is_multiple_of(QK) && k0 + kc <= self.k);
        let s = (p * (self.k / QK) + k0 / QK) * nr..(p * (self.k / QK) + (k0 + kc) / QK) * nr;
        let q4 = self.format == GgmlType::Q4_1;
        let quants = match q4 {
            true => &self.quants[(p * self.k + k0) / 2 * nr..(p * self.k + k0 + kc) / 2 * nr],
            false => &self.quants[(p * self.k + k0) * nr..(p * self.k + k0 + kc) * nr],
        };
        BlockSlice {
            q4,
            scales: &self.scales[s.clone()],
            mins: if q4 { &self.mins[s] } else { &[] },
            quants,
        }
    }

    /// Panels of `nr` rows.
    pub(super) fn panels(&self) -> usize {
        self.n.div_ceil(self.isa.nr())
    }

    /// Bytes this weight takes in memory (the f32 path's is `4 · panels · nr · k`).
    pub fn bytes(&self) -> usize {
        (self.scales.len() + self.mins.len()) * 4 + self.quants.len()
    }

    /// Dequantizes panel `p`'s `K` block `k0..k0 + kc` into `out` `[kc][nr]`: the very values
    /// (see the module doc) the f32 path's packed panel holds there. `k0` and `kc` are
    /// multiples of [`QK`].
    ///
    /// The loop is compiled once per instruction set (AVX-512F, AVX2) so the compiler can
    /// vectorize it for the CPU: it changes the speed only, never a value, since every element
    /// is still one multiply and (Q4_1) one add, each rounded (Rust never fuses them).
    pub fn dequantize_panel(&self, p: usize, k0: usize, kc: usize, out: &mut Vec<f32>) {
        let nr = self.isa.nr();
        assert!(k0.is_multiple_of(QK) && kc.is_multiple_of(QK) && k0 + kc <= self.k);
        out.resize(kc * nr, 0.0);
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
                // SAFETY: AVX-512F was detected just above.
                unsafe { self.dequantize_avx512(p, k0, kc, out) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
                // SAFETY: AVX2 was detected just above.
                unsafe { self.dequantize_avx2(p, k0, kc, out) }
            }
            _ if nr == 16 => self.dequantize_nr::<16>(p, k0, kc, out),
            _ if nr == 32 => self.dequantize_nr::<32>(p, k0, kc, out),
            _ => unreachable!("panels of {nr} rows"),
        }
    }

    /// [`PackedBlocks::dequantize_panel`] vectorized for AVX-512F (panels of 32 rows).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn dequantize_avx512(&self, p: usize, k0: usize, kc: usize, out: &mut [f32]) {
        self.dequantize_nr::<32>(p, k0, kc, out)
    }

    /// [`PackedBlocks::dequantize_panel`] vectorized for AVX2 (panels of 16 rows).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn dequantize_avx2(&self, p: usize, k0: usize, kc: usize, out: &mut [f32]) {
        self.dequantize_nr::<16>(p, k0, kc, out)
    }

    /// The dequantization for panels of `NR` rows (a constant, so the row loops vectorize).
    #[inline(always)]
    fn dequantize_nr<const NR: usize>(&self, p: usize, k0: usize, kc: usize, out: &mut [f32]) {
        let row_blocks = self.k / QK;
        for (b, out) in out[..kc * NR].chunks_exact_mut(QK * NR).enumerate() {
            let sb = (p * row_blocks + k0 / QK + b) * NR;
            let d: &[f32; NR] = self.scales[sb..sb + NR].try_into().unwrap();
            match self.format {
                GgmlType::Q8_0 => {
                    let q = &self.quants[(p * self.k + k0 + b * QK) * NR..][..QK * NR];
                    for (o, q) in out.chunks_exact_mut(NR).zip(q.chunks_exact(NR)) {
                        for j in 0..NR {
                            o[j] = d[j] * (q[j] as i8 as f32);
                        }
                    }
                }
                _ => {
                    let m: &[f32; NR] = self.mins[sb..sb + NR].try_into().unwrap();
                    let q_at = (p * self.k + k0 + b * QK) * (NR / 2);
                    let q = &self.quants[q_at..][..QK * NR / 2];
                    for (o, q) in out.chunks_exact_mut(NR).zip(q.chunks_exact(NR / 2)) {
                        let (lo, hi) = o.split_at_mut(NR / 2);
                        for j in 0..NR / 2 {
                            // Multiply, round, add, round: gguf-py's `d * q + m`.
                            lo[j] = d[j] * ((q[j] & 0x0f) as f32) + m[j];
                            let h = j + NR / 2;
                            hi[j] = d[h] * ((q[j] >> 4) as f32) + m[h];
                        }
                    }
                }
            }
        }
    }

    /// Row `r` of the weight widened to f32 into `dst` `[k]` (the embedding lookup of a table
    /// kept only in blocks): the values [`PackedBlocks::to_f32`] gives, element by element.
    pub fn row_into(&self, r: usize, dst: &mut [f32]) {
        let nr = self.isa.nr();
        let (p, j, row_blocks) = (r / nr, r % nr, self.k / QK);
        assert!(
            r < self.n && dst.len() == self.k,
            "row_into: row {r} of {}",
            self.n
        );
        for (kk, v) in dst.iter_mut().enumerate() {
            let b = kk / QK;
            let at = (p * row_blocks + b) * nr + j;
            *v = match self.format {
                GgmlType::Q4_1 => {
                    let half = nr / 2;
                    let byte = self.quants[(p * self.k + kk) * half + j % half];
                    let q = if j < half { byte & 0x0f } else { byte >> 4 };
                    self.scales[at] * (q as f32) + self.mins[at]
                }
                _ => self.scales[at] * (self.quants[(p * self.k + kk) * nr + j] as i8 as f32),
            };
        }
    }

    /// The weight widened to f32 `[n, k]`, row-major (for tests and for a backend that needs
    /// the matrix itself).
    pub fn to_f32(&self) -> Vec<f32> {
        let nr = self.isa.nr();
        let mut w = vec![0.0f32; self.n * self.k];
        w.par_chunks_mut((nr * self.k).max(1))
            .enumerate()
            .for_each(|(p, rows)| {
                let mut panel = Vec::new();
                for k0 in (0..self.k).step_by(KC) {
                    let kc = KC.min(self.k - k0);
                    self.dequantize_panel(p, k0, kc, &mut panel);
                    for (j, row) in rows.chunks_exact_mut(self.k).enumerate() {
                        for c in 0..kc {
                            row[k0 + c] = panel[c * nr + j];
                        }
                    }
                }
            });
        w
    }
}

/// One panel's `K` block of `kc` (a multiple of [`QK`]) in its blocks, `nr` rows wide: what a
/// micro-kernel that dequantizes in registers reads instead of a `[kc][nr]` f32 slice.
///
/// The value of weight `(kk, j)` (row `kk` of the block, output `j` of the panel) is, with
/// `b = kk / 32` and `i = kk % 32`:
/// - Q8_0: `scales[b][j] · (quants[kk][j] as i8)`, one product (exact);
/// - Q4_1: `scales[b][j] · q + mins[b][j]`, a product then an add (one rounding), where `q` is
///   the low nibble of `quants[kk][j]` for `j < nr / 2` and the high nibble of
///   `quants[kk][j - nr / 2]` otherwise.
///
/// Every kernel computes exactly these values, so its weights are the f32 path's. (The SIMD
/// kernels compute Q4_1's as one fused multiply-add: the product `d · q` is exact, an f16 times
/// a 4-bit integer, so rounding it before the add, or not, makes no difference.)
#[derive(Debug, Clone, Copy)]
pub struct BlockSlice<'a> {
    /// Q4_1 (else Q8_0).
    pub q4: bool,
    /// `[kc / 32][nr]`.
    pub scales: &'a [f32],
    /// `[kc / 32][nr]` for Q4_1, empty for Q8_0.
    pub mins: &'a [f32],
    /// Q8_0 `[kc][nr]` signed bytes; Q4_1 `[kc][nr / 2]` bytes of two nibbles.
    pub quants: &'a [u8],
}

impl BlockSlice<'_> {
    /// Rows of `k` this slice holds.
    pub fn kc(&self, nr: usize) -> usize {
        self.scales.len() / nr * QK
    }

    /// Bytes of quants one block of `nr` columns takes.
    pub fn block_quant_bytes(&self, nr: usize) -> usize {
        if self.q4 {
            QK / 2 * nr
        } else {
            QK * nr
        }
    }

    /// Asks the cache for block `b`'s quants, scales and minimums before they are read (the
    /// micro-kernels pass a block some way ahead of the one they work on). A prefetch never
    /// faults, so a block past the slice, which lies in the panel's next `K` block, in the next
    /// panel or nowhere, is harmless; the pointers are only computed, never dereferenced.
    ///
    /// # Safety
    /// Calling it needs SSE, which every x86-64 CPU has; the micro-kernels that call it are
    /// compiled for AVX2 or AVX-512, which include it, so they call it as a safe function.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse")]
    #[inline]
    pub fn prefetch(&self, b: usize, nr: usize) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let q_bytes = self.block_quant_bytes(nr);
        let q = self.quants.as_ptr().wrapping_add(b * q_bytes);
        for line in (0..q_bytes).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(line).cast());
        }
        let s = self.scales.as_ptr().wrapping_add(b * nr).cast::<u8>();
        let m = self.mins.as_ptr().wrapping_add(b * nr).cast::<u8>();
        for line in (0..nr * 4).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(line).cast());
            if self.q4 {
                _mm_prefetch::<_MM_HINT_T0>(m.wrapping_add(line).cast());
            }
        }
    }

    /// Row `kk` of the dequantized block, `[nr]`, by the expressions of the type's doc (the
    /// portable kernel's, and the reference the SIMD ones are tested against).
    #[inline(always)]
    pub fn row<const NR: usize>(&self, kk: usize) -> [f32; NR] {
        let b = kk / QK;
        let d = &self.scales[b * NR..][..NR];
        let mut w = [0.0f32; NR];
        if self.q4 {
            let m = &self.mins[b * NR..][..NR];
            let q = &self.quants[kk * NR / 2..][..NR / 2];
            for j in 0..NR {
                let q = match j < NR / 2 {
                    true => q[j] & 0x0f,
                    false => q[j - NR / 2] >> 4,
                };
                // Multiply, round, add, round: gguf-py's `d * q + m`.
                w[j] = d[j] * (q as f32) + m[j];
            }
        } else {
            let q = &self.quants[kk * NR..][..NR];
            for j in 0..NR {
                w[j] = d[j] * (q[j] as i8 as f32);
            }
        }
        w
    }
}

/// The little-endian f16 at byte `at`, widened to f32 (exactly).
fn f16_at(block: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}
