//! GGML tensor types and their dequantization to `f32`.
//!
//! A GGUF stores each tensor as a run of *blocks*. Plain types (F32, F16, BF16) have one
//! element per block. Quantized types pack 32 elements into a few bytes plus a scale: the
//! values come back only approximately, but *deterministically* — so we dequantize with the
//! same arithmetic as the reference (gguf-py, which transformers uses): multiply in `f32`,
//! then add, never a fused multiply-add. Two correct converters then agree bit for bit.

use half::{bf16, f16};

/// The tensor element types this reader can turn into `f32`.
///
/// The numbers are ggml's type ids (`enum ggml_type` in llama.cpp), as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    /// Blocks of 32: `f16 d, f16 m, [u8; 16]` nibbles; value = d·q + m.
    Q4_1 = 3,
    /// Blocks of 32: `f16 d, [i8; 32]`; value = d·q.
    Q8_0 = 8,
    BF16 = 30,
}

/// Names of every ggml type id, so an error can say "Q4_K" instead of "12".
const GGML_TYPE_NAMES: [&str; 40] = [
    "F32",
    "F16",
    "Q4_0",
    "Q4_1",
    "Q4_2",
    "Q4_3",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q8_1",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "Q8_K",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ3_XXS",
    "IQ1_S",
    "IQ4_NL",
    "IQ3_S",
    "IQ2_S",
    "IQ4_XS",
    "I8",
    "I16",
    "I32",
    "I64",
    "F64",
    "IQ1_M",
    "BF16",
    "Q4_0_4_4",
    "Q4_0_4_8",
    "Q4_0_8_8",
    "TQ1_0",
    "TQ2_0",
    "IQ4_NL_4_4",
    "IQ4_NL_4_8",
    "IQ4_NL_8_8",
    "MXFP4",
];

/// Elements per block of every quantized type here (ggml's `QK8_0`, `QK4_1`).
const QK: usize = 32;

impl GgmlType {
    /// The type stored under ggml type id `id`, if this reader supports it.
    pub fn from_id(id: u32) -> Option<Self> {
        [Self::F32, Self::F16, Self::Q4_1, Self::Q8_0, Self::BF16]
            .into_iter()
            .find(|t| *t as u32 == id)
    }

    /// ggml's name for a type id, supported or not (`"Q4_K"`), for error messages.
    pub fn name_of_id(id: u32) -> &'static str {
        GGML_TYPE_NAMES
            .get(id as usize)
            .copied()
            .unwrap_or("unknown")
    }

    /// How many elements one block holds.
    pub fn block_elements(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_1 | Self::Q8_0 => QK,
        }
    }

    /// How many bytes one block takes in the file.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_1 => 2 + 2 + QK / 2,
            Self::Q8_0 => 2 + QK,
        }
    }

    /// Bytes taken by `n` elements, or `None` if `n` is not a whole number of blocks
    /// (or the size overflows).
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let per_block = self.block_elements() as u64;
        n.is_multiple_of(per_block)
            .then(|| (n / per_block).checked_mul(self.block_bytes() as u64))?
    }
}

/// Dequantizes `bytes`, holding `out.len()` elements of type `ty`, into `out`.
///
/// The caller checks `bytes.len() == ty.bytes_for(out.len())` first (the GGUF reader does, for
/// every tensor). With mismatched lengths this writes only the elements both sides cover: it
/// never panics, because it walks blocks with `chunks_exact` and `zip`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let block_bytes = ty.block_bytes();
    let blocks = bytes.chunks_exact(block_bytes);
    let outs = out.chunks_exact_mut(ty.block_elements());
    match ty {
        GgmlType::F32 => blocks
            .zip(outs)
            .for_each(|(b, o)| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => blocks.zip(outs).for_each(|(b, o)| o[0] = f16_at(b, 0)),
        GgmlType::BF16 => blocks
            .zip(outs)
            .for_each(|(b, o)| o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::Q8_0 => blocks.zip(outs).for_each(|(b, o)| dequantize_q8_0(b, o)),
        GgmlType::Q4_1 => blocks.zip(outs).for_each(|(b, o)| dequantize_q4_1(b, o)),
    }
}

/// The little-endian `f16` at byte `at`, widened to `f32` (exactly: every f16 is an f32).
fn f16_at(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

// ANCHOR: q8_0
/// One Q8_0 block: scale `d`, then 32 signed bytes. value = d·q.
fn dequantize_q8_0(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    for (o, &q) in out.iter_mut().zip(&block[2..]) {
        *o = d * (q as i8 as f32);
    }
}
// ANCHOR_END: q8_0

// ANCHOR: q4_1
/// One Q4_1 block: scale `d`, minimum `m`, then 16 bytes of 4-bit values.
///
/// The layout is not "two neighbours per byte": byte j holds element j in its low nibble and
/// element j+16 in its high nibble, so a SIMD kernel can unpack a whole half-block at once.
fn dequantize_q4_1(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    let m = f16_at(block, 2);
    let (low, high) = out.split_at_mut(QK / 2);
    for ((byte, lo), hi) in block[4..].iter().zip(low).zip(high) {
        // Multiply, round to f32, then add: the same two roundings as numpy's `d * q + m`.
        *lo = d * ((byte & 0x0f) as f32) + m;
        *hi = d * ((byte >> 4) as f32) + m;
    }
}
// ANCHOR_END: q4_1

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn type_ids_and_sizes() {
        assert_eq!(GgmlType::from_id(3), Some(GgmlType::Q4_1));
        assert_eq!(GgmlType::from_id(12), None);
        assert_eq!(GgmlType::name_of_id(12), "Q4_K");
        assert_eq!(GgmlType::name_of_id(1000), "unknown");
        assert_eq!(GgmlType::Q4_1.bytes_for(64), Some(40));
        assert_eq!(GgmlType::Q8_0.bytes_for(32), Some(34));
        assert_eq!(GgmlType::Q8_0.bytes_for(33), None);
        assert_eq!(GgmlType::BF16.bytes_for(3), Some(6));
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }

    #[test]
    fn q4_1_nibble_order_and_formula() {
        let (d, m) = (0.5f32, -1.0f32);
        let mut block = Vec::new();
        block.extend(f16_bytes(d));
        block.extend(f16_bytes(m));
        // Byte j: low nibble j % 16, high nibble 15 - j.
        block.extend((0u8..16).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_1, &block, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], d * j as f32 + m, "element {j}");
            assert_eq!(out[j + 16], d * (15 - j) as f32 + m, "element {}", j + 16);
        }
    }

    #[test]
    fn q8_0_is_signed() {
        let mut block = f16_bytes(0.25).to_vec();
        block.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q8_0, &block, &mut out);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[31], 3.75);
    }

    #[test]
    fn plain_types() {
        let mut out = [0f32; 2];
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        dequantize(GgmlType::F32, &f32s, &mut out);
        assert_eq!(out, [1.5, -2.0]);
        dequantize(
            GgmlType::F16,
            &[f16_bytes(0.75), f16_bytes(-3.0)].concat(),
            &mut out,
        );
        assert_eq!(out, [0.75, -3.0]);
        let bf: Vec<u8> = [1.0f32, -0.5]
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect();
        dequantize(GgmlType::BF16, &bf, &mut out);
        assert_eq!(out, [1.0, -0.5]);
    }

    #[test]
    fn short_input_does_not_panic() {
        let mut out = [7f32; 32];
        dequantize(GgmlType::Q8_0, &[0u8; 10], &mut out);
        assert_eq!(out, [7f32; 32]);
    }
}
